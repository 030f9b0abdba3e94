"""The worker pool page and its Pause/Resume buttons.

Reads the pool in a fixed number of queries (workers, their in-progress tasks in one go, today's
spend per worker in another), changes a worker only through `tasks_app.lifecycle`, and
re-checks permissions on the server.
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

from tasks_app import board, costs, lifecycle
from tasks_app.models import Status, Task
from tasks_app.permissions import require
from tasks_app.tables import WorkerTable
from tasks_app.views import actor_for, render_page, safe_next, viewer_required, wants_partial

from .models import Worker

WORKER_ACTIONS = {
    "pause": (lifecycle.pause_worker, "paused"),
    "resume": (lifecycle.resume_worker, "resumed"),
}
MAX_CURRENT_TASKS_SHOWN = 5


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
def pool(request: HttpRequest) -> HttpResponse:
    """The seed's Worker Pool: sortable, refreshed every 10 s; its table alone for htmx."""
    table = WorkerTable(Worker.objects.all())
    RequestConfig(request, paginate=False).configure(table)
    workers = [row.record for row in table.rows]
    context = {
        "table": table,
        "workers": workers,
        "current": current_tasks_by_worker([w.pk for w in workers]),
        "spend": spend_today_by_worker([w.pk for w in workers]),
        "metrics": board.metrics(),
        "sort": request.GET.get("sort", ""),
        "max_current": MAX_CURRENT_TASKS_SHOWN,
    }
    if wants_partial(request) and request.htmx.target == "pool":
        return render_page(request, "partials/pool.html", context)
    return render_page(request, "workers/pool.html", context)


@login_required
@require_POST
def worker_action(request: HttpRequest, worker_id: str, action: str) -> HttpResponse:
    """Pause or resume one worker; swaps its row and shows the lifecycle's message."""
    if action not in WORKER_ACTIONS:
        raise Http404(f"there is no worker action called {action!r}")
    require(request.user, action, target=f"worker {worker_id.replace(chr(0), '')}"[:200])
    if "\x00" in worker_id:  # no worker has one, and PostgreSQL refuses it in a query (a 500)
        raise Http404(f"worker {worker_id!r} does not exist")
    get_object_or_404(Worker.objects.only("pk"), pk=worker_id)
    change, past = WORKER_ACTIONS[action]
    try:
        change(worker_id, actor=actor_for(request))
    except lifecycle.LifecycleError as exc:
        text = str(exc)
        lifecycle.refused(action, f"worker {worker_id}", actor=actor_for(request), reason=text)
        messages.error(request, text[:1].upper() + text[1:])
    else:
        messages.success(request, f"Worker {worker_id} {past}.")
    if not wants_partial(request):
        return HttpResponseRedirect(safe_next(request, reverse("workers_app:pool")))
    worker = Worker.objects.get(pk=worker_id)
    return render_page(
        request,
        "partials/worker_action_response.html",
        {
            "worker": worker,
            "current": current_tasks_by_worker([worker.pk]),
            "spend": spend_today_by_worker([worker.pk]),
            "metrics": board.metrics(),
            "max_current": MAX_CURRENT_TASKS_SHOWN,
        },
    )
