"""A run's transcript, written while the agent runs: ordered events, bounded per run.

The agent's reader threads `add` events as it prints them; the worker loop `flush`es them to
`RunEvent` rows every second or so, in order, with sequence numbers the task page polls after.
A run keeps at most `VIBE_TRANSCRIPT_MAX_BYTES` of event text: the first half as it came, then
the newest events, with one marker row saying how many in between were not kept.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

from django.conf import settings

from tasks_app.models import Run, RunEvent

from .adapters.base import SYSTEM, Event


def _size(event: Event) -> int:
    return len(event.text) + sum(len(str(v)) for v in event.data.values()) + 16


@dataclass
class _Kept:
    seq: int
    size: int


class TranscriptWriter:
    """One run's transcript; the run row keeps its event count and size."""

    def __init__(self, run: Run, *, max_bytes: int | None = None) -> None:
        self.run = run
        self.run_id = run.pk
        limit = max_bytes or settings.VIBE_TRANSCRIPT_MAX_BYTES
        self.head_budget = limit // 2
        self.tail_budget = limit - self.head_budget
        self.pending: list[Event] = []
        self.lock = threading.Lock()
        self.next_seq = 1
        self.stored_bytes = 0
        self.marker_seq: int | None = None  # reserved once the head is full
        self.tail: deque[_Kept] = deque()
        self.tail_bytes = 0
        self.dropped = 0

    def add(self, events: list[Event]) -> None:
        """From any thread: events in the order the agent printed them."""
        if events:
            with self.lock:
                self.pending.extend(events)

    def note(self, text: str, **data: object) -> None:
        """A line from the worker itself (a resume refused, a commit, a set-aside)."""
        self.add([Event(SYSTEM, text, {"by": "worker", **data})])

    def flush(self) -> int:
        """Write what came since the last flush; returns how many events were written."""
        with self.lock:
            events, self.pending = self.pending, []
        if not events:
            return 0
        rows = []
        for event in events:
            size = _size(event)
            if self.marker_seq is None and self.stored_bytes + size > self.head_budget:
                self.marker_seq = self.next_seq
                self.next_seq += 1
            seq = self.next_seq
            self.next_seq += 1
            rows.append(
                RunEvent(
                    run_id=self.run_id,
                    seq=seq,
                    kind=event.kind[:20],
                    text=event.text,
                    data=event.data,
                )
            )
            self.stored_bytes += size
            if self.marker_seq is not None:
                self.tail.append(_Kept(seq, size))
                self.tail_bytes += size
        RunEvent.objects.bulk_create(rows)
        self._trim()
        self.run.record(event_count=self.next_seq - 1, transcript_bytes=self.stored_bytes)
        return len(rows)

    def _trim(self) -> None:
        """Past the tail budget: drop the oldest tail events, count them on the marker."""
        gone: list[int] = []
        while self.tail_bytes > self.tail_budget and len(self.tail) > 1:
            kept = self.tail.popleft()
            self.tail_bytes -= kept.size
            self.stored_bytes -= kept.size
            gone.append(kept.seq)
        if not gone or self.marker_seq is None:  # the tail only fills once the marker is placed
            return
        RunEvent.objects.filter(run_id=self.run_id, seq__in=gone).delete()
        first = self.dropped == 0
        self.dropped += len(gone)
        text = f"[… {self.dropped} events not kept: the transcript keeps its head and its tail …]"
        if first:
            RunEvent.objects.create(
                run_id=self.run_id,
                seq=self.marker_seq,
                kind=SYSTEM,
                text=text,
                data={"by": "worker", "dropped": self.dropped},
            )
        else:
            RunEvent.objects.filter(run_id=self.run_id, seq=self.marker_seq).update(
                text=text, data={"by": "worker", "dropped": self.dropped}
            )
