"""The worker pool page and its Pause/Resume/Retire buttons.

Reads the pool in a fixed number of queries (workers, their in-progress tasks in one go, today's
spend per worker in another), changes a worker only through the action table
(`tasks_app.actions.WORKER_ACTIONS`), and re-checks permissions on the server. Each row offers
what fits the worker's state: Pause to a live online worker, Resume to a live paused one, Retire
to a silent one; retired workers are left out unless asked for (`?retired=1`).
"""

from __future__ import annotations

from collections import defaultdict

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST
from django_tables2 import RequestConfig

from tasks_app import actions, costs, dashboard, lifecycle
from tasks_app.actions import require
from tasks_app.choices import Status
from tasks_app.models import Task
from vibe_project.http import (
    HtmxHttpRequest,
    actor_for,
    render_page,
    safe_next,
    sentence,
    viewer_required,
    wants_partial,
)

from .models import Worker
from .tables import WorkerTable

MAX_CURRENT_TASKS_SHOWN = 5


def _offer(workers: list[Worker], user) -> None:
    """Mark each row with the actions it offers this person (the server checks again)."""
    for worker in workers:
        worker.offered = actions.worker_actions_for(worker, user)


def current_tasks_by_worker(worker_ids: list[str]) -> dict[str, list[Task]]:
    """In-progress tasks of the given workers, in one query."""
    grouped: dict[str, list[Task]] = defaultdict(list)
    if not worker_ids:
        return grouped
    rows = (
        Task.objects.filter(status=Status.IN_PROGRESS, worker_id__in=worker_ids)
        .only("id", "goal", "worker_id", "lane")
        .order_by("started_at", "id")
    )
    for task in rows:
        grouped[task.worker_id].append(task)
    return grouped


def spend_today_by_worker(worker_ids: list[str]) -> dict[str, str]:
    """Today's spend of each worker, formatted for its row ($0.00 for one that spent nothing)."""
    spent = costs.today_by_worker()
    return {pk: costs.format_usd(spent.get(pk, costs.ZERO)) for pk in worker_ids}


@viewer_required
@require_GET
def pool(request: HtmxHttpRequest) -> HttpResponse:
    """The seed's Worker Pool: sortable, refreshed every 10 s; its table alone for htmx."""
    show_retired = request.GET.get("retired") == "1"
    table = WorkerTable(Worker.objects.all() if show_retired else Worker.objects.in_pool())
    RequestConfig(request, paginate=False).configure(table)
    workers = [row.record for row in table.rows]
    _offer(workers, request.user)
    context = {
        "show_retired": show_retired,
        "retired_count": 0 if show_retired else Worker.objects.retired().count(),
        "table": table,
        "workers": workers,
        "current": current_tasks_by_worker([w.pk for w in workers]),
        "spend": spend_today_by_worker([w.pk for w in workers]),
        "metrics": dashboard.metrics(),
        "sort": request.GET.get("sort", ""),
        "max_current": MAX_CURRENT_TASKS_SHOWN,
    }
    if wants_partial(request) and request.htmx.target == "pool":
        return render_page(request, "partials/pool.html", context)
    return render_page(request, "workers/pool.html", context)


@login_required
@require_POST
def worker_action(request: HttpRequest, worker_id: str, action: str) -> HttpResponse:
    """Pause, resume or retire one worker; swaps its row and shows the lifecycle's message."""
    chosen = actions.WORKER_ACTIONS.get(action)
    if chosen is None:
        raise Http404(f"there is no worker action called {action!r}")
    require(request.user, action, target=f"worker {worker_id.replace(chr(0), '')}"[:200])
    if "\x00" in worker_id:  # no worker has one, and PostgreSQL refuses it in a query (a 500)
        raise Http404(f"worker {worker_id!r} does not exist")
    get_object_or_404(Worker.objects.only("pk"), pk=worker_id)
    try:
        changed = chosen.perform(worker_id, actor=actor_for(request))  # a refusal is audited
    except lifecycle.LifecycleError as exc:
        messages.error(request, sentence(str(exc)))
    else:
        note = f" {chosen.note}" if chosen.note else ""
        if action == "resume" and not changed.is_alive:
            note = " It has no live process: it claims once it is started."
        messages.success(request, f"Worker {worker_id} {chosen.done}.{note}")
    if not wants_partial(request):
        return HttpResponseRedirect(safe_next(request, reverse("workers_app:pool")))
    worker = Worker.objects.get(pk=worker_id)
    _offer([worker], request.user)
    return render_page(
        request,
        "partials/worker_action_response.html",
        {
            "worker": worker,
            "current": current_tasks_by_worker([worker.pk]),
            "spend": spend_today_by_worker([worker.pk]),
            "metrics": dashboard.metrics(),
            "max_current": MAX_CURRENT_TASKS_SHOWN,
        },
    )
