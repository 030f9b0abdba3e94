"""The GitHub sync loop: open pull requests, send issue comments, retry events, and poll.

`Syncer.run_once` does one pass of each job and says how much work it found; `run` drains
while there is work and sleeps otherwise, like the notification sender. Polling is for
factories GitHub cannot reach with its webhook: the same events, fetched with conditional GETs
(an unchanged answer is a 304 that costs none of the rate limit) and recorded in the same
table as webhook events, so each is handled once whichever way it arrived.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import DatabaseError, close_old_connections
from django.db.models import F, Q
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from tasks_app import lifecycle
from tasks_app.choices import WAITING_DELIVERY, Delivery
from tasks_app.models import Task

from . import events, pulls
from .github import GitHub, GitHubError
from .models import CommentState, EventSource, IssueComment, SyncState

logger = logging.getLogger(__name__)

COMMENT_LEASE = timedelta(minutes=2)
COMMENT_PERMANENT_TRIES = 5
# The first poll looks this far back for `/vibe do` comments.
COMMENTS_LOOKBACK = timedelta(days=1)
COMMENTS_CURSOR = "cursor:issue_comments"


@dataclass
class PassStats:
    opened: int = 0
    events: int = 0
    comments: int = 0
    polled: int = 0  # events the poll recorded
    errors: list[str] = field(default_factory=list)

    @property
    def handled(self) -> int:
        return self.opened + self.events + self.comments + self.polled


# --- Issue comments (an outbox) -------------------------------------------------------------


def _send_comment(row: IssueComment, client: GitHub, token: int) -> None:
    """Post the comment; after an unclear earlier try, look for it first (never post twice)."""
    marker = row.body.rsplit("\n", 1)[-1]
    if token > 1 and marker.startswith("<!--"):
        for comment in client.issue_comments(row.issue_number):
            if marker in str(comment.get("body") or ""):
                row.comment_id = comment.get("id")
                return
    answer = client.create_issue_comment(row.issue_number, row.body)
    row.comment_id = answer.get("id")


def send_due_comments(client: GitHub, *, limit: int = 20) -> int:
    """One pass over due comments; returns how many were tried."""
    now = timezone.now()
    rows = list(
        IssueComment.objects.filter(state=CommentState.PENDING)
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        .order_by("created_at", "id")[:limit]
    )
    for row in rows:
        token = row.attempts + 1
        taken = (
            IssueComment.objects.filter(
                pk=row.pk, state=CommentState.PENDING, attempts=row.attempts
            )
            .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
            .update(attempts=F("attempts") + 1, next_attempt_at=now + COMMENT_LEASE)
        )
        if not taken:
            continue
        mine = IssueComment.objects.filter(pk=row.pk, state=CommentState.PENDING, attempts=token)
        try:
            if row.repo.lower() != client.repo.lower():
                raise GitHubError(f"the comment is for {row.repo}, not {client.repo}")
            _send_comment(row, client, token)
        except GitHubError as exc:
            gave_up = not exc.transient and token >= COMMENT_PERMANENT_TRIES
            mine.update(
                state=CommentState.FAILED if gave_up else CommentState.PENDING,
                last_error=str(exc)[:2000],
                next_attempt_at=None if gave_up else timezone.now() + events.backoff(token),
            )
            logger.warning("comment on %s#%s: %s", row.repo, row.issue_number, exc)
            if exc.transient:
                break  # GitHub is down or limiting us: rest until the next pass
            continue
        mine.update(
            state=CommentState.SENT,
            comment_id=row.comment_id,
            sent_at=timezone.now(),
            next_attempt_at=None,
            last_error="",
        )
        logger.info("commented on %s#%s (task #%s)", row.repo, row.issue_number, row.task_id)
    return len(rows)


# --- Polling ----------------------------------------------------------------------------------


def _record_and_handle(found: events.Found | None, client: GitHub) -> int:
    if found is None:
        return 0
    row = events.record(found, source=EventSource.POLL)
    if row is None:
        return 0  # seen before, by the webhook or an earlier poll
    events.handle(row, client)
    return 1


def _poll_pull_requests(client: GitHub) -> int:
    """Merges, closes and reviews of the pull requests the factory is waiting on."""
    recorded = 0
    waiting = Task.objects.filter(
        stage="",
        delivery=Delivery.PULL_REQUEST,
        delivery_state__in=WAITING_DELIVERY,
        pr_number__isnull=False,
    ).exclude(pr_state__in=["closed", "merged"])
    for task in waiting.order_by("id"):
        number = task.pr_number
        if number is None or not task.pr_url.lower().endswith(
            f"/{client.repo.lower()}/pull/{number}"
        ):
            continue  # another repository's pull request (the setting changed since)
        try:
            recorded += _poll_pull_request(client, task, number)
        except GitHubError as exc:
            if exc.transient:
                raise  # GitHub is down or limiting us: the rest of the poll would fail too
            logger.warning("polling pull request #%s of task #%s: %s", task.pr_number, task.pk, exc)
    return recorded


def _poll_pull_request(client: GitHub, task: Task, number: int) -> int:
    """One pull request (`number`, the task's): closed (merged or not), else its reviews."""
    answer = client.pull(number, conditional=True)
    if not answer.not_modified and isinstance(answer.data, dict):
        closed = answer.data.get("state") == "closed"
        recorded = (
            _record_and_handle(events.pr_closed(client.repo, answer.data), client) if closed else 0
        )
        client.keep_etag(answer)
        if closed:
            return recorded
    recorded = 0
    answer = client.pull_reviews(number, conditional=True)
    if not answer.not_modified and isinstance(answer.data, list):
        for item in answer.data:
            if isinstance(item, dict) and item.get("id"):
                found = events.review(client.repo, number, task.branch, item)
                recorded += _record_and_handle(found, client)
        client.keep_etag(answer)
    return recorded


def _poll_issues(client: GitHub) -> int:
    """Open issues carrying the factory's label."""
    recorded = 0
    answer = client.labelled_issues(settings.VIBE_GITHUB_LABEL, conditional=True)
    if answer.not_modified or not isinstance(answer.data, list):
        return 0
    for issue in answer.data:
        if isinstance(issue, dict) and issue.get("number"):
            # Who labelled it is not in the list; the issue's author stands in for them.
            login = events.login_of(issue.get("user"))
            recorded += _record_and_handle(
                events.labelled_issue(client.repo, issue, login=login), client
            )
    client.keep_etag(answer)
    return recorded


def _poll_comments(client: GitHub, now: datetime) -> int:
    """Recent issue comments, for `/vibe do`; the cursor only moves when new ones arrive."""
    state = SyncState.objects.filter(key=COMMENTS_CURSOR).first()
    since = (
        state.value
        if state and state.value
        else (now - COMMENTS_LOOKBACK).strftime("%Y-%m-%dT%H:%M:%SZ")
    )
    answer = client.comments_since(since, conditional=True)
    if answer.not_modified or not isinstance(answer.data, list):
        return 0
    recorded, newest = 0, since
    for comment in answer.data:
        if not isinstance(comment, dict) or not comment.get("id"):
            continue
        recorded += _record_and_handle(events.command(client.repo, comment), client)
        updated = str(comment.get("updated_at") or comment.get("created_at") or "")
        if parse_datetime(updated) and updated > newest:
            newest = updated
    client.keep_etag(answer)
    if newest != since:
        # The next URL differs; the old one's ETag will never be asked for again.
        SyncState.objects.filter(key=f"etag:{answer.path}").delete()
        SyncState.objects.update_or_create(key=COMMENTS_CURSOR, defaults={"value": newest})
    return recorded


def poll(client: GitHub, now: datetime | None = None) -> int:
    """One poll of everything the webhook would have told us; returns events recorded."""
    now = now or timezone.now()
    return _poll_pull_requests(client) + _poll_issues(client) + _poll_comments(client, now)


# --- The loop ---------------------------------------------------------------------------------


class Syncer:
    """Everything the factory does with GitHub outside a web request."""

    def __init__(
        self,
        *,
        client: GitHub | None = None,
        poll_seconds: float | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stop = threading.Event()
        # The client's waits (rate limits) end at once on SIGTERM.
        self.client = client or GitHub(sleep=self._stop.wait)
        self.poll_seconds = (
            settings.VIBE_GITHUB_POLL_SECONDS if poll_seconds is None else poll_seconds
        )
        self.monotonic = monotonic
        self.next_poll = 0.0
        # Backoff per task whose pull request hit a passing fault: (failures, not before).
        self.pr_backoff: dict[int, tuple[int, float]] = {}

    def describe(self) -> list[str]:
        lines = [f"GitHub: {self.client.repo} via {self.client.api_url}"]
        if self.poll_seconds > 0:
            lines.append(f"polling every {self.poll_seconds:g}s (VIBE_GITHUB_POLL_SECONDS)")
        else:
            lines.append("not polling (VIBE_GITHUB_POLL_SECONDS=0): the webhook brings events")
        return lines

    def open_pull_requests(self) -> int:
        opened = 0
        for task in pulls.waiting_to_open()[:20]:
            if self._stop.is_set():
                break
            failures, not_before = self.pr_backoff.get(task.pk, (0, 0.0))
            if self.monotonic() < not_before:
                continue
            try:
                logger.info(pulls.open_pull_request(task, self.client))
            except lifecycle.LifecycleError as exc:
                logger.info("task #%s: %s", task.pk, exc)  # cancelled or moved meanwhile
            except GitHubError as exc:
                delay = events.backoff(failures + 1).total_seconds()
                if exc.retry_after:
                    delay = max(delay, exc.retry_after)
                self.pr_backoff[task.pk] = (failures + 1, self.monotonic() + delay)
                logger.warning(
                    "task #%s: pull request not opened yet, retrying in %.0fs: %s",
                    task.pk,
                    delay,
                    exc,
                )
                if exc.transient or exc.status == 401:
                    break  # GitHub is down, limiting us or refusing the token: rest
                continue
            self.pr_backoff.pop(task.pk, None)
            opened += 1
        return opened

    def run_once(self, *, force_poll: bool = False) -> PassStats:
        """One pass: open pull requests, retry events, poll (when due), send comments."""
        stats = PassStats()
        stats.opened = self._job(stats, "opening pull requests", self.open_pull_requests)
        stats.events = self._job(stats, "retrying events", lambda: events.retry_due(self.client))
        due = self.poll_seconds > 0 and (force_poll or self.monotonic() >= self.next_poll)
        if due and not self._stop.is_set():
            self.next_poll = self.monotonic() + self.poll_seconds
            stats.polled = self._job(stats, "polling", lambda: poll(self.client))
        # Last, so a comment the poll just queued goes out in the same pass.
        stats.comments = self._job(
            stats, "sending issue comments", lambda: send_due_comments(self.client)
        )
        return stats

    def _job(self, stats: PassStats, name: str, job: Callable[[], int]) -> int:
        """Run one job; GitHub being down or refusing shows in the stats, the others go on."""
        if self._stop.is_set():
            return 0
        try:
            return job()
        except GitHubError as exc:
            stats.errors.append(f"{name}: {exc}")
            logger.warning("GitHub sync, %s: %s", name, exc)
            return 0

    def run(self, *, interval: float = 5.0, once: bool = False) -> PassStats:
        """Pass after pass until stopped; with `once`, one pass (polling included) and return."""
        if once:
            return self.run_once(force_poll=True)
        total = PassStats()
        while not self._stop.is_set():
            try:
                stats = self.run_once()
            except DatabaseError:
                logger.exception("database error in the GitHub sync; trying again shortly")
                self._stop.wait(interval)
                close_old_connections()
                continue
            total.opened += stats.opened
            total.events += stats.events
            total.comments += stats.comments
            total.polled += stats.polled
            if stats.opened or stats.comments:
                continue  # more may be waiting: drain before sleeping
            self._stop.wait(interval)
            close_old_connections()
        return total

    def stop(self) -> None:
        """Ask the loop to exit after the call in flight (safe from a signal handler)."""
        self._stop.set()
