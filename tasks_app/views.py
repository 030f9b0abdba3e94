"""The kanban board, task detail, dead-letter panel, history and throughput pages.

Thin views in the healthchecks style: each reads through `board`, changes through `lifecycle`,
and checks `permissions` again on the server whatever the page showed. One view serves both the
whole page and its htmx partial (when `request.htmx`), so a link without JavaScript still works.
"""

from __future__ import annotations

from functools import wraps
from urllib.parse import urlencode, urlsplit

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import EmptyPage
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, QueryDict
from django.middleware.csrf import get_token
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils.cache import patch_vary_headers
from django.utils.dateparse import parse_date
from django.utils.html import format_html
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_tables2 import RequestConfig
from django_tables2.paginators import LazyPaginator

from . import board, lifecycle
from .models import Lane, Status, Task, TaskHistory
from .permissions import ACTION_PERMISSIONS, can, require
from .tables import HistoryTable

TASK_ACTIONS = {
    "retry": (lifecycle.retry, "retried"),
    "approve": (lifecycle.approve, "approved"),
    "cancel": (lifecycle.cancel, "cancelled"),
}
HISTORY_PAGE_SIZE = 50
# Far beyond any real history, yet small enough that its SQL OFFSET fits a 64-bit integer.
MAX_HISTORY_PAGE = 10**9


# --- Helpers ----------------------------------------------------------------------------------


def actor_for(request: HttpRequest) -> str:
    """How the history names a person acting from the dashboard."""
    return f"user:{request.user.get_username()}"


def allowed_actions(user) -> dict[str, bool]:
    """Which buttons to show; the action views check again, so hiding is only a courtesy."""
    return {action: can(user, action) for action in ACTION_PERMISSIONS}


def wants_partial(request: HttpRequest) -> bool:
    """An htmx request for a fragment (not a history restore, which needs the whole page)."""
    htmx = getattr(request, "htmx", None)
    return bool(htmx) and not htmx.history_restore_request


def render_page(request: HttpRequest, template: str, context: dict, status: int = 200):
    """Render and mark the response as varying on HX-Request, so caches never mix the two."""
    context.setdefault("can", allowed_actions(request.user))
    # Rendered once per page rather than once per card form: the board has hundreds of them.
    context.setdefault("csrf_input", csrf_input(request))
    context.setdefault("next_url", request.get_full_path())
    response = render(request, template, context, status=status)
    patch_vary_headers(response, ("HX-Request",))
    return response


def csrf_input(request: HttpRequest) -> str:
    """The hidden CSRF field for forms that must also work without JavaScript."""
    return format_html(
        '<input type="hidden" name="csrfmiddlewaretoken" value="{}">', get_token(request)
    )


def safe_next(request: HttpRequest, fallback: str) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return fallback


def _current_page(request: HttpRequest) -> tuple[str, QueryDict]:
    """The path and query of the page an htmx request came from (its HX-Current-URL)."""
    htmx = getattr(request, "htmx", None)
    current = (htmx.current_url if htmx else None) or ""
    parts = urlsplit(current)
    return parts.path, QueryDict(parts.query)


def _message_text(text: str) -> str:
    return text[:1].upper() + text[1:] if text else text


VIEW_PERMISSION = "tasks_app.view_task"


def viewer_required(view):
    """Login, then the Viewer role (or anything above it): an account in no group sees nothing."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs):
        if not request.user.has_perm(VIEW_PERMISSION):
            raise PermissionDenied(
                f"{request.user.get_username()} may not see the factory yet; ask an "
                "administrator to add you to the Viewer group"
            )
        return view(request, *args, **kwargs)

    return login_required(wrapped)


# --- Board ------------------------------------------------------------------------------------


def live_context(filters: board.Filters) -> dict:
    """Everything inside the auto-refreshed region: metrics bar, columns, dead-letter panel."""
    board_metrics = board.metrics()
    counts = board.column_counts(filters, board_metrics)
    query = filters.as_query()
    return {
        "metrics": board_metrics,
        "columns": board.columns(filters, counts),
        "dead_letter": board.dead_letter_rows(filters),
        "dead_letter_count": counts.get(Status.DEAD_LETTER, 0),
        "filters": filters,
        "filter_query": query,
        "live_url": reverse("tasks_app:board") + (f"?{query}" if query else ""),
        "detail_push_base": push_base(filters),
        "cards_per_column": board.cards_per_column(),
    }


@viewer_required
@require_GET
def board_page(request: HttpRequest) -> HttpResponse:
    """The kanban at `/`; its live region alone when htmx polls it (target `live`)."""
    filters = board.Filters.from_query(request.GET)
    context = live_context(filters)
    if wants_partial(request) and request.htmx.target == "live":
        return render_page(request, "partials/live.html", context)

    from workers_app.models import Worker

    context["filter_errors"] = filters.errors
    context["worker_ids"] = list(Worker.objects.order_by("worker_id").values_list("pk", flat=True))
    context["lanes"] = Lane.choices
    context["error_types"] = board.ERROR_TYPE_CHOICES
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
    """The metrics bar alone: two queries, for anything that wants the headline numbers."""
    return render_page(request, "partials/metrics.html", {"metrics": board.metrics()})


@viewer_required
@require_GET
def throughput_page(request: HttpRequest) -> HttpResponse:
    """The throughput chart: loaded after the board (it reads the history, so the board does not
    wait for it) and refreshed on its own slower clock; a page of its own without JavaScript."""
    context = {"throughput": board.throughput()}
    if wants_partial(request):
        return render_page(request, "partials/throughput.html", context)
    return render_page(request, "tasks/throughput.html", context)


# --- Task detail ------------------------------------------------------------------------------


def detail_context(task: Task) -> dict:
    """A task with its timeline, runs, prerequisites, parent and reviews: five queries."""
    children = list(
        task.children.only(
            "id", "goal", "lane", "status", "stage", "verdict", "score", "result", "review_round"
        ).order_by("created_at", "id")
    )
    runs = list(task.runs.select_related(None).order_by("started_at", "id"))
    return {
        "task": task,
        "history": list(task.history.order_by("created_at", "id")),
        "runs": runs,
        "running": any(run.is_running for run in runs) and task.status == Status.IN_PROGRESS,
        "children": children,
        "prerequisites": list(task.depends_on.only("id", "goal", "status").order_by("id")),
        "error_hint": lifecycle.error_hint(task.last_error_type),
        "rework_findings": (task.context or {}).get("findings") or []
        if isinstance(task.context, dict)
        else [],
    }


def _load_task(pk: int) -> Task:
    return get_object_or_404(Task.objects.select_related("worker", "parent"), pk=pk)


@viewer_required
@require_GET
def task_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """`/tasks/<id>/`: a page of its own, or the panel that opens in place on the board."""
    task = _load_task(pk)
    context = detail_context(task)
    if wants_partial(request):
        return render_page(request, "partials/task_detail.html", context)
    return render_page(request, "tasks/task_detail.html", context)


# --- Buttons ----------------------------------------------------------------------------------


@login_required
@require_POST
def task_action(request: HttpRequest, pk: int, action: str) -> HttpResponse:
    """Retry, approve or cancel one task through the lifecycle, then swap what changed.

    A refused or raced click (someone else already retried) shows the lifecycle's message and
    re-renders the current state; it is never an error page.
    """
    if action not in TASK_ACTIONS:
        raise Http404(f"there is no task action called {action!r}")
    require(request.user, action)
    before = get_object_or_404(Task.objects.only("id", "status"), pk=pk).status
    # What the page showed decides what to swap: after a raced click the stale card must move.
    shown = request.POST.get("shown", "")
    if shown in Status.values:
        before = shown
    change, past = TASK_ACTIONS[action]
    try:
        change(pk, actor=actor_for(request))
    except lifecycle.LifecycleError as exc:
        messages.error(request, _message_text(str(exc)))
    else:
        messages.success(request, f"Task #{pk} {past}.")

    if not wants_partial(request):
        return HttpResponseRedirect(safe_next(request, reverse("tasks_app:task_detail", args=[pk])))
    return _action_response(request, pk, before)


def _action_response(request: HttpRequest, pk: int, before: str) -> HttpResponse:
    """The clicked piece (card, dead-letter row or detail panel), plus out-of-band swaps: the
    card moved to its new column, the metrics bar, the column counts and the message."""
    origin = request.POST.get("origin", "card")
    if origin not in {"card", "row", "detail"}:
        origin = "card"
    path, query = _current_page(request)
    on_board = path == reverse("tasks_app:board")
    filters = board.Filters.from_query(query) if on_board else board.Filters()
    if origin == "detail":
        task = _load_task(pk)
        context = detail_context(task)
    else:
        task = board.card_queryset().get(pk=pk)
        context = {"task": task}
    moved = task.status != before
    context.update(
        origin=origin,
        card=task,
        moved=moved,
        on_board=on_board,
        before=before,
        shown_in_column=task.status in board.BOARD_STATUSES,
    )
    if on_board:
        board_metrics = board.metrics()
        context.update(
            metrics=board_metrics,
            counts=board.column_counts(filters, board_metrics),
            detail_push_base=push_base(filters),
        )
    return render_page(request, "partials/action_response.html", context)


def push_base(filters: board.Filters) -> str:
    """The board URL with its filters, ready for `task=<id>`: an open task survives a reload."""
    query = filters.as_query()
    return reverse("tasks_app:board") + (f"?{query}&" if query else "?")


# --- Dead letter: retry all shown -------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
def retry_all(request: HttpRequest) -> HttpResponse:
    """Retry every dead-letter task matching the board's filters, after a confirmation that
    names how many tasks will move. The confirmation lists their ids, so the POST moves exactly
    the tasks the person saw counted, never ones that arrived in between."""
    require(request.user, "retry")
    if request.method == "GET":
        filters = board.Filters.from_query(request.GET)
        ids = board.dead_letter_ids(filters)
        query = filters.as_query()
        return render_page(
            request,
            "tasks/retry_all_confirm.html",
            {
                "filters": filters,
                "ids": ids,
                "limit": board.RETRY_ALL_LIMIT,
                "back_url": reverse("tasks_app:board") + (f"?{query}" if query else ""),
            },
        )

    back = safe_next(request, reverse("tasks_app:board"))
    raw_ids = request.POST.getlist("ids")
    try:
        ids = list(dict.fromkeys(int(value) for value in raw_ids))
    except ValueError:
        messages.error(request, "The list of tasks to retry was not understood; nothing changed.")
        return HttpResponseRedirect(back)
    if not ids:
        messages.info(request, "There were no dead-letter tasks to retry; nothing changed.")
        return HttpResponseRedirect(back)
    if len(ids) > board.RETRY_ALL_LIMIT:
        messages.error(
            request,
            f"At most {board.RETRY_ALL_LIMIT} tasks can be retried at once; nothing changed.",
        )
        return HttpResponseRedirect(back)

    moved, refused = 0, []
    for task_id in ids:
        try:
            lifecycle.retry(task_id, actor=actor_for(request))
            moved += 1
        except lifecycle.LifecycleError as exc:
            refused.append(str(exc))
    if moved:
        messages.success(request, f"Retried {moved} task{'s' if moved != 1 else ''}.")
    if refused:
        more = f" (and {len(refused) - 3} more)" if len(refused) > 3 else ""
        messages.warning(
            request,
            f"{len(refused)} could not be retried: " + "; ".join(refused[:3]) + more + ".",
        )
    return HttpResponseRedirect(back)


# --- History ----------------------------------------------------------------------------------


def _history_filters(request: HttpRequest) -> tuple[dict[str, str], list[str]]:
    """lane, status, actor and date from the query string; a bad value is dropped and named."""
    errors: list[str] = []
    # NUL never appears in stored text, and PostgreSQL refuses it in a query (a 500).
    values = {
        key: request.GET.get(key, "").replace("\x00", "").strip()[:200]
        for key in ("lane", "status", "actor", "date")
    }
    if values["lane"] and values["lane"] not in Lane.values:
        errors.append(f"Unknown lane “{values['lane']}”; showing every lane.")
        values["lane"] = ""
    if values["status"] and values["status"] not in Status.values:
        errors.append(f"Unknown status “{values['status']}”; showing every status.")
        values["status"] = ""
    if values["date"]:
        try:
            parsed = parse_date(values["date"])
        except ValueError:
            parsed = None
        if parsed is None:
            errors.append(f"“{values['date']}” is not a date like 2025-01-31; showing every day.")
            values["date"] = ""
    return values, errors


@viewer_required
@require_GET
def history_page(request: HttpRequest) -> HttpResponse:
    """The seed's Task History view: every transition, newest first, filterable and paginated."""
    values, errors = _history_filters(request)
    qs = TaskHistory.objects.select_related("task").only(
        "id",
        "task_id",
        "from_status",
        "to_status",
        "actor",
        "note",
        "created_at",
        "task__id",
        "task__lane",
        "task__goal",
    )
    if values["lane"]:
        qs = qs.filter(task__lane=values["lane"])
    if values["status"]:
        qs = qs.filter(to_status=values["status"])
    if values["actor"]:
        qs = qs.filter(actor__icontains=values["actor"])
    if values["date"]:
        qs = qs.filter(created_at__date=parse_date(values["date"]))
    table = HistoryTable(qs)
    # Sorting from the query; the page size is ours, and the page number is checked here, since
    # an absurd one makes an OFFSET the database cannot hold (a 500, not an empty page).
    RequestConfig(request, paginate=False).configure(table)
    raw_page = request.GET.get("page", "")
    page = int(raw_page) if raw_page.isascii() and raw_page.isdigit() else 1
    try:
        table.paginate(
            paginator_class=LazyPaginator,
            per_page=HISTORY_PAGE_SIZE,
            page=page if 1 <= page <= MAX_HISTORY_PAGE else 1,
        )
    except EmptyPage:
        table.paginate(paginator_class=LazyPaginator, per_page=HISTORY_PAGE_SIZE, page=1)
    query = urlencode([(k, v) for k, v in values.items() if v])
    return render_page(
        request,
        "tasks/history.html",
        {
            "table": table,
            "values": values,
            "filter_errors": errors,
            "lanes": Lane.choices,
            "statuses": Status.choices,
            "filter_query": query,
        },
    )
