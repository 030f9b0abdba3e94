"""The history page: every transition, and the acts that moved no task, filterable."""

from __future__ import annotations

from urllib.parse import urlencode

from django.core.paginator import EmptyPage
from django.http import (
    HttpRequest,
    HttpResponse,
)
from django.utils.dateparse import parse_date
from django.views.decorators.http import require_GET
from django_tables2 import RequestConfig
from django_tables2.paginators import LazyPaginator

from vibe_project.http import render_page, viewer_required

from .choices import Lane, Status
from .models import AuditEntry, TaskHistory
from .tables import HistoryTable

HISTORY_PAGE_SIZE = 50
# Far beyond any real history, yet small enough that its SQL OFFSET fits a 64-bit integer.
MAX_HISTORY_PAGE = 10**9


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
            "audit": _audit_entries(values),
        },
    )


AUDIT_ROWS = 50


def _audit_entries(values: dict) -> list:
    """The latest acts that moved no task (workers paused, attempts refused), by the same actor
    filter; the admin's audit log has them all."""
    qs = AuditEntry.objects.all()
    if values["actor"]:
        qs = qs.filter(actor__icontains=values["actor"])
    if values["date"]:
        qs = qs.filter(created_at__date=parse_date(values["date"]))
    return list(qs[:AUDIT_ROWS])
