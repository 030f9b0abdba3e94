"""The kanban board, task detail, dead-letter panel, history and throughput pages.

Thin views in the healthchecks style: each reads through `dashboard`, changes through the action
table (`actions`, which checks the person's permission again on the server whatever the page
showed). One view serves both the whole page and its htmx partial (when `request.htmx`), so a
link without JavaScript still works.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Max, Q
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    HttpResponseRedirect,
)
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from vibe_project.http import (
    HtmxHttpRequest,
    actor_for,
    current_page,
    render_page,
    safe_next,
    sentence,
    viewer_required,
    wants_partial,
)
from workers_app import diffs
from workers_app.models import Worker

from . import actions, costs, dashboard, lifecycle
from .actions import can, require
from .choices import ERROR_TYPE_CHOICES, Lane, Risk, Status, error_hint
from .forms import SubmitTaskForm
from .models import Run, RunEvent, Task
from .stages import attach_stages

# --- Board ------------------------------------------------------------------------------------


def live_context(filters: dashboard.Filters) -> dict:
    """Everything inside the auto-refreshed region: metrics bar, columns, dead-letter panel."""
    board_metrics = dashboard.metrics(filters)
    counts = dashboard.column_counts(filters, board_metrics)
    query = filters.as_query()
    return {
        "metrics": board_metrics,
        "columns": dashboard.columns(filters, counts),
        "dead_letter": dashboard.dead_letter_rows(filters),
        "dead_letter_count": counts.get(Status.DEAD_LETTER, 0),
        "filters": filters,
        "filter_query": query,
        "live_url": reverse("tasks_app:board") + (f"?{query}" if query else ""),
        "detail_push_base": push_base(filters),
        "cards_per_column": dashboard.cards_per_column(),
        "off_board": dashboard.off_board(filters),
    }


@viewer_required
@require_GET
def board_page(request: HtmxHttpRequest) -> HttpResponse:
    """The kanban at `/`; its live region alone when htmx polls it (target `live`)."""
    filters = dashboard.Filters.from_query(request.GET)
    context = live_context(filters)
    context["filter_errors"] = filters.errors
    if wants_partial(request) and request.htmx.target == "live":
        # The filter form's Clear link and messages live outside the region: sent alongside.
        context["filter_state_oob"] = request.htmx.trigger == "filters"
        return render_page(request, "partials/live.html", context)

    context["worker_ids"] = list(Worker.objects.order_by("worker_id").values_list("pk", flat=True))
    context["lanes"] = Lane.choices
    context["error_types"] = ERROR_TYPE_CHOICES
    context["delivery_states"] = dashboard.DELIVERY_STATE_CHOICES
    context["statuses"] = dashboard.STATUS_CHOICES
    context["risks"] = Risk.choices
    if can(request.user, "submit"):
        context["submit_form"] = SubmitTaskForm()
    raw_task = request.GET.get("task", "").strip()
    if raw_task:
        # isascii: "²".isdigit() is True, but int("²") raises.
        is_id = raw_task.isascii() and raw_task.isdigit()
        task = Task.objects.filter(pk=int(raw_task)).first() if is_id else None
        if task is None:
            context["detail_missing"] = raw_task
        else:
            context.update(detail_context(task))
    return render_page(request, "tasks/board.html", context)


@viewer_required
@require_GET
def metrics_page(request: HttpRequest) -> HttpResponse:
    """The metrics bar alone, for anything that wants the headline numbers: the fragment for
    htmx, a page of its own (with a title and a language, for people and screen readers) when
    opened in a browser. The board's filters apply, as on the board."""
    filters = dashboard.Filters.from_query(request.GET)
    context = {"metrics": dashboard.metrics(filters), "filters": filters}
    if wants_partial(request):
        return render_page(request, "partials/metrics.html", context)
    return render_page(request, "tasks/metrics.html", context)


@viewer_required
@require_GET
def throughput_page(request: HttpRequest) -> HttpResponse:
    """The throughput chart: loaded after the board (it reads the history, so the board does not
    wait for it) and refreshed on its own slower clock; a page of its own without JavaScript."""
    context = {"throughput": dashboard.throughput()}
    if wants_partial(request):
        return render_page(request, "partials/throughput.html", context)
    return render_page(request, "tasks/throughput.html", context)


# --- Task detail ------------------------------------------------------------------------------

# The task page renders each run's newest events; older ones come on demand ("show earlier").
TRANSCRIPT_FIRST_LOAD = 500
# One live poll answers at most this many events; the page asks again at once for the rest.
TRANSCRIPT_BATCH = 500
# Sequence numbers are an IntegerField: anything larger is not a position in a transcript.
MAX_SEQ = 2**31 - 1


@dataclass
class TranscriptItem:
    """One row of a transcript: an event, and for a tool call the result that answered it."""

    event: RunEvent
    result: RunEvent | None = None
    usage_text: str = ""

    @property
    def data(self) -> dict:
        return self.event.data if isinstance(self.event.data, dict) else {}

    @property
    def tool_id(self) -> str:
        return str(self.data.get("id") or "")

    @property
    def tool_name(self) -> str:
        return str(self.data.get("name") or "tool")

    @property
    def summary(self) -> str:
        return self.event.text or str(self.data.get("summary") or "")

    @property
    def is_error(self) -> bool:
        """A tool call whose result was an error, or a result that was one."""
        source = self.result if self.result is not None else self.event
        return isinstance(source.data, dict) and bool(source.data.get("is_error"))


@dataclass
class Transcript:
    run: Run
    items: list[TranscriptItem] = field(default_factory=list)
    first_seq: int = 0
    last_seq: int = 0
    diff: RunDiff | None = None  # a builder run's stored change

    @property
    def has_earlier(self) -> bool:
        # The worker always keeps a transcript's head, so seq 1 exists once anything was written.
        return self.first_seq > 1

    @property
    def earlier_before(self) -> int | None:
        return self.first_seq if self.has_earlier else None


def usage_text(data: dict) -> str:
    """'claude-sonnet-4 · 1,200 in · 300 out · 5,000 cached · $0.0123 · 4 turns'."""
    if not isinstance(data, dict):
        return ""
    parts = [str(data["model"])] if data.get("model") else []
    for key, label in (
        ("input_tokens", "in"),
        ("output_tokens", "out"),
        ("cache_read_tokens", "cache read"),
        ("cache_write_tokens", "cache write"),
    ):
        if isinstance(data.get(key), int):
            parts.append(f"{data[key]:,} {label}")
    cost = data.get("cost_usd")
    if cost not in (None, ""):
        amount = costs.parse_usd(cost)
        parts.append(costs.format_usd(amount) if amount is not None else str(cost))
    if isinstance(data.get("turns"), int):
        parts.append(f"{data['turns']} turn{'s' if data['turns'] != 1 else ''}")
    return " · ".join(parts)


def transcript_items(events: list[RunEvent]) -> list[TranscriptItem]:
    """Rows in order; a tool result goes inside the call it answers when both are here (the
    page's script moves a result that arrives in a later poll into its call the same way)."""
    items: list[TranscriptItem] = []
    calls: dict[str, TranscriptItem] = {}
    for event in events:
        data = event.data if isinstance(event.data, dict) else {}
        tool_id = str(data.get("id") or "")
        if event.kind == "tool_call":
            item = TranscriptItem(event)
            if tool_id:
                calls[tool_id] = item
            items.append(item)
        elif event.kind == "tool_result" and tool_id in calls and calls[tool_id].result is None:
            calls[tool_id].result = event
        elif event.kind == "usage":
            items.append(TranscriptItem(event, usage_text=usage_text(data)))
        else:
            items.append(TranscriptItem(event))
    return items


def run_transcripts(runs: list[Run], limit: int = TRANSCRIPT_FIRST_LOAD) -> list[Transcript]:
    """The newest `limit` events of every run, in two indexed queries whatever the run count."""
    transcripts = [Transcript(run) for run in runs]
    if not runs:
        return transcripts
    last = dict(
        RunEvent.objects.filter(run_id__in=[run.pk for run in runs])
        .values("run_id")
        .annotate(last=Max("seq"))
        .order_by()
        .values_list("run_id", "last")
    )
    wanted = Q()
    for run_id, last_seq in last.items():
        wanted |= Q(run_id=run_id, seq__gt=last_seq - limit)
    by_run: dict[int, list[RunEvent]] = {run_id: [] for run_id in last}
    if last:
        for event in RunEvent.objects.filter(wanted).order_by("run_id", "seq"):
            by_run[event.run_id].append(event)
    for transcript in transcripts:
        events = by_run.get(transcript.run.pk, [])
        if events:
            transcript.first_seq, transcript.last_seq = events[0].seq, events[-1].seq
        transcript.items = transcript_items(events)
    return transcripts


def describe_run(run: Run) -> Run:
    """Figures the run's usage line shows, worked out once (templates have no format_usd)."""
    run.cost_text = costs.format_usd(run.cost_usd) if run.cost_usd is not None else ""
    return run


def cost_context(task: Task, runs: list[Run]) -> dict:
    """The work's total over its builder runs, reviews and rework; a review's own share too."""
    root_id = costs.work_root_id(task)
    usage = costs.task_usage(root_id)
    context = {
        "work_usage": usage,
        "work_cost_text": costs.format_usd(usage["cost_usd"]),
        "work_root_id": root_id,
    }
    if root_id != task.pk:
        own = sum((run.cost_usd for run in runs if run.cost_usd is not None), costs.ZERO)
        context["own_cost_text"] = costs.format_usd(own)
    return context


def summary_context(task: Task, runs: list[Run]) -> dict:
    """What the panel's self-refreshing part shows: facts, cost, verdict, relations, history."""
    children = list(
        task.children.only(
            "id", "goal", "lane", "status", "stage", "verdict", "score", "result", "review_round"
        ).order_by("created_at", "id")
    )
    return {
        "task": task,
        "history": list(task.history.order_by("created_at", "id")),
        "run_ids": ",".join(str(run.pk) for run in runs),
        # While the task is in progress the facts refresh (a run may not have started yet).
        "live": task.status == Status.IN_PROGRESS,
        "running": any(run.is_running for run in runs) and task.status == Status.IN_PROGRESS,
        "children": children,
        "prerequisites": list(task.depends_on.only("id", "goal", "status").order_by("id")),
        "error_hint": error_hint(task.last_error_type),
        "delivery_moves": delivery_moves(task),
        "rework_findings": (task.context or {}).get("findings") or []
        if isinstance(task.context, dict)
        else [],
        **cost_context(task, runs),
        **diff_context(task, runs),
    }


def delivery_moves(task: Task) -> dict[str, bool]:
    """Which delivery buttons the action table offers in the task's state; the page also asks
    `can`, and the lifecycle decides in the end (a page a minute old may offer a move that is
    gone). A review is delivered with the work it reviews, so it offers none."""
    return {
        name: not task.is_review and actions.ACTIONS[name].offered(task)
        for name in DELIVERY_ACTIONS
    }


DELIVERY_ACTIONS = ("merge", "rebase", "rework")


def _task_runs(task: Task) -> list[Run]:
    # The tails stay out: the transcript shows the same lines, and a tail is up to 64 KB.
    # The patch too (up to 1 MB): diff_context reads the few that are shown, once.
    return [describe_run(run) for run in task.runs.defer("patch").order_by("started_at", "id")]


# A whole diff with at most this many changed lines opens every file; a larger one starts closed.
DIFF_OPEN_LINES = 400


@dataclass(eq=False)
class RunDiff:
    """One builder run's stored change, parsed for the page."""

    run: Run
    number: int  # the run's place in its task's runs list ("Run 2")
    files: list[diffs.FileDiff]
    notes: list[str]
    branch: str
    previous: RunDiff | None = None  # the builder run before it, for what this round changed
    unchanged: set[str] = field(default_factory=set)  # files the same as in `previous`

    @property
    def added(self) -> int:
        return sum(f.added for f in self.files)

    @property
    def removed(self) -> int:
        return sum(f.removed for f in self.files)

    @property
    def open(self) -> bool:
        return sum(f.changed_lines for f in self.files) <= DIFF_OPEN_LINES

    @property
    def rows(self) -> list[dict]:
        return [
            {"file": f, "unchanged": f.path in self.unchanged, "anchor": f"diff-{self.run.pk}-{i}"}
            for i, f in enumerate(self.files, start=1)
        ]

    @property
    def round_changed(self) -> int:
        """Files this run changed again or newly, compared with the builder run before it."""
        return len(self.files) - len(self.unchanged)


def diff_context(task: Task, own_runs: list[Run]) -> dict:
    """The work's change for the summary: its latest builder run's stored diff, parsed.

    A review shows the diff of the work it reviews. Each builder run's diff is base..head of
    the whole work; a rework round's own part is the files whose diff differs from the round
    before (worked out from the stored text, so no git is needed here). One query.
    """
    root_id = costs.work_root_id(task)
    runs = list(
        Run.objects.filter(task_id=root_id)
        .exclude(patch="")
        .only("id", "task_id", "patch", "base_commit", "head_commit", "attempt", "role")
        .order_by("started_at", "id")
    )
    numbers: dict[int, int] = {}
    if runs:
        ids = (
            [run.pk for run in own_runs]
            if root_id == task.pk
            else Run.objects.filter(task_id=root_id)
            .order_by("started_at", "id")
            .values_list("id", flat=True)
        )
        numbers = {pk: n for n, pk in enumerate(ids, start=1)}
    branch = task.branch
    if root_id != task.pk:
        branch = Task.objects.filter(pk=root_id).values_list("branch", flat=True).first() or ""
    run_diffs: dict[int, RunDiff] = {}
    previous: RunDiff | None = None
    for run in runs:
        current = RunDiff(
            run=run,
            number=numbers.get(run.pk, 0),
            files=diffs.parse(run.patch),
            notes=diffs.notes(run.patch),
            branch=branch,
            previous=previous,
        )
        if previous is not None:
            before = {f.path: f.text for f in previous.files}
            current.unchanged = {f.path for f in current.files if before.get(f.path) == f.text}
        run_diffs[run.pk] = previous = current
    return {"run_diffs": run_diffs, "work_diff": previous, "work_is_own": root_id == task.pk}


def detail_context(task: Task) -> dict:
    """A task with its timeline, runs and their transcripts, relations and cost, in a fixed
    number of queries whatever the number of runs and events."""
    runs = _task_runs(task)
    context = summary_context(task, runs)
    context["runs"] = runs
    # The task's last error text belongs to the attempt that failed with it: shown under that
    # run (and above, in red, only while it is the task's state).
    failed = [run for run in runs if task.last_error_type and run.outcome == task.last_error_type]
    context["error_run_id"] = failed[-1].pk if failed else None
    context["transcripts"] = run_transcripts(runs)
    for transcript in context["transcripts"]:
        transcript.diff = context["run_diffs"].get(transcript.run.pk)
    return context


def _load_task(pk: int) -> Task:
    return get_object_or_404(Task.objects.select_related("worker", "parent"), pk=pk)


@viewer_required
@require_GET
def task_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """`/tasks/<id>/`: a page of its own, or the panel that opens in place on the board.

    `?part=summary` (htmx) is the panel's self-refreshing part alone: it never re-renders the
    transcripts, so what a person opened in them stays open while the task runs.
    """
    task = _load_task(pk)
    if wants_partial(request) and request.GET.get("part") == "summary":
        runs = _task_runs(task)
        context = {**summary_context(task, runs), "refresh": True}
        return render_page(request, "partials/task_summary.html", context)
    context = detail_context(task)
    if wants_partial(request):
        return render_page(request, "partials/task_detail.html", context)
    return render_page(request, "tasks/task_detail.html", context)


def _seq_param(request: HttpRequest, name: str) -> int | None:
    """A sequence number from the query string; None when absent; ValueError when nonsense."""
    raw = request.GET.get(name)
    if raw is None or raw == "":
        return None
    if not (raw.isascii() and raw.isdigit()) or int(raw) > MAX_SEQ:
        raise ValueError(
            f"{name}={raw[:40]!r} is not a sequence number; "
            f"give a whole number from 0 to {MAX_SEQ} (the last event you have)"
        )
    return int(raw)


@viewer_required
@require_GET
def run_events(request: HttpRequest, pk: int, run_id: int) -> HttpResponse:
    """`/tasks/<id>/runs/<run>/events/?after=SEQ`: the run's events after SEQ, as transcript rows.

    The task page's script polls this every second or two while the run lasts. The headers say
    the last sequence number (`X-Transcript-Last-Seq`), whether the run still runs
    (`X-Transcript-Running`) and whether more is waiting (`X-Transcript-More`); with nothing new
    the body is empty. `?before=SEQ` is the page of events before SEQ ("show earlier").
    """
    try:
        after = _seq_param(request, "after")
        before = _seq_param(request, "before")
    except ValueError as exc:
        return HttpResponseBadRequest(str(exc), content_type="text/plain; charset=utf-8")
    # The run's state is read before its events: a run seen finished has written them all.
    run = (
        Run.objects.filter(pk=run_id, task_id=pk)
        .select_related("task")
        .only("id", "task_id", "finished_at", "task__id", "task__status")
        .first()
    )
    if run is None:
        raise Http404(f"task {pk} has no run {run_id}")
    running = run.is_running and run.task.status == Status.IN_PROGRESS
    events = RunEvent.objects.filter(run_id=run.pk)
    if before is not None:
        rows = list(events.filter(seq__lt=before).order_by("-seq")[: TRANSCRIPT_FIRST_LOAD + 1])
        earlier = len(rows) > TRANSCRIPT_FIRST_LOAD
        rows = rows[:TRANSCRIPT_FIRST_LOAD][::-1]
        context: dict[str, object] = {
            "items": transcript_items(rows),
            "earlier_url": request.path,
            "earlier_before": rows[0].seq if rows and earlier else None,
        }
        if not wants_partial(request):  # the "show earlier" link without JavaScript
            context.update(task=run.task, run=run)
            return render_page(request, "tasks/run_events.html", context)
        return render(request, "partials/transcript_events.html", context)

    after = after or 0
    rows = list(events.filter(seq__gt=after).order_by("seq")[: TRANSCRIPT_BATCH + 1])
    more = len(rows) > TRANSCRIPT_BATCH
    rows = rows[:TRANSCRIPT_BATCH]
    last_seq = rows[-1].seq if rows else after
    if rows or not running:
        context = {"items": transcript_items(rows)}
        if not running:
            finished = describe_run(Run.objects.defer("stdout_tail", "stderr_tail").get(pk=run.pk))
            context["finished_run"] = finished
        response = render(request, "partials/transcript_events.html", context)
    else:
        response = HttpResponse(b"", content_type="text/html; charset=utf-8")
    response["X-Transcript-Last-Seq"] = str(last_seq)
    response["X-Transcript-Running"] = "1" if running else "0"
    response["X-Transcript-More"] = "1" if more else "0"
    response["Cache-Control"] = "no-store"
    return response


# --- Buttons ----------------------------------------------------------------------------------


@login_required
@require_POST
def task_action(request: HttpRequest, pk: int, action: str) -> HttpResponse:
    """One task action from the table (retry, merge, request changes…), then swap what changed.

    A refused or raced click (someone else already retried) shows the lifecycle's message and
    re-renders the current state; it is never an error page.
    """
    chosen = actions.get(action)
    if chosen is None:
        raise Http404(f"there is no task action called {action!r}")
    require(request.user, chosen.permission_name, target=f"task {pk}")
    before = get_object_or_404(Task.objects.only("id", "status"), pk=pk).status
    # What the page showed decides what to swap: after a raced click the stale card must move.
    shown = request.POST.get("shown", "")
    if shown in Status.values:
        before = shown
    try:
        chosen.perform(pk, actor=actor_for(request), comment=request.POST.get("comment", ""))
    except lifecycle.LifecycleError as exc:
        messages.error(request, sentence(str(exc)))
    else:
        messages.success(request, f"Task #{pk} {chosen.done}.")

    if not wants_partial(request):
        return HttpResponseRedirect(safe_next(request, reverse("tasks_app:task_detail", args=[pk])))
    return _action_response(request, pk, before)


def _action_response(request: HttpRequest, pk: int, before: str) -> HttpResponse:
    """The clicked piece (card, dead-letter row or detail panel), plus out-of-band swaps: the
    card moved to its new column, the metrics bar, the column counts and the message."""
    origin = request.POST.get("origin", "card")
    if origin not in {"card", "row", "detail"}:
        origin = "card"
    path, query = current_page(request)
    on_board = path == reverse("tasks_app:board")
    filters = dashboard.Filters.from_query(query) if on_board else dashboard.Filters()
    if origin == "detail":
        task = _load_task(pk)
        context = detail_context(task)
    else:
        task = dashboard.card_queryset().get(pk=pk)
        context = {"task": task}
    attach_stages([task])
    moved = task.status != before
    context.update(
        origin=origin,
        card=task,
        moved=moved,
        on_board=on_board,
        before=before,
        shown_in_column=dashboard.has_card(task, filters),
    )
    if on_board:
        board_metrics = dashboard.metrics(filters)
        context.update(
            metrics=board_metrics,
            counts=dashboard.column_counts(filters, board_metrics),
            detail_push_base=push_base(filters),
        )
    return render_page(request, "partials/action_response.html", context)


def push_base(filters: dashboard.Filters) -> str:
    """The board URL with its filters, ready for `task=<id>`: an open task survives a reload."""
    query = filters.as_query()
    return reverse("tasks_app:board") + (f"?{query}&" if query else "?")
