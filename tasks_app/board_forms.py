"""The board's forms that make or move work: New task, and retry every dead letter shown."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseRedirect,
)
from django.urls import reverse
from django.views.decorators.http import require_http_methods
from django_htmx.http import trigger_client_event

from vibe_project.http import actor_for, render_page, safe_next, sentence, wants_partial

from . import dashboard, lifecycle
from .actions import require
from .choices import Status
from .forms import SubmitTaskForm

# --- Submitting ---------------------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
def submit_task(request: HttpRequest) -> HttpResponse:
    """The board's "New task" form, through the lifecycle like `vibe submit`.

    With htmx the form swaps itself (empty after a submit, with its errors otherwise) and the
    board refreshes; without JavaScript a submit goes back to the board, and a refused one shows
    this form's own page with what was typed kept.
    """
    require(request.user, "submit")
    if request.method == "GET":
        return render_page(request, "tasks/submit.html", {"submit_form": SubmitTaskForm()})
    form = SubmitTaskForm(request.POST)
    task = None
    if form.is_valid():
        data = form.cleaned_data
        try:
            task = lifecycle.submit(
                data["goal"],
                lane=data["lane"],
                actor=actor_for(request),
                priority=data["priority"],
                risk=data["risk"],
                delivery=data["delivery"],
                key=data.get("key") or "",
            )
        except lifecycle.LifecycleError as exc:
            form.add_error(None, sentence(str(exc)))
    if task is None:
        messages.error(request, "The task was not submitted; see the form for why.")
        partial = wants_partial(request)
        template = "partials/submit_form.html" if partial else "tasks/submit.html"
        return render_page(request, template, {"submit_form": form, "oob_messages": partial})

    waits = task.status == Status.AWAITING_APPROVAL
    if getattr(task, "was_submitted_before", False):
        messages.info(request, f"Task #{task.pk} was already submitted from this form.")
    else:
        messages.success(
            request,
            f"Task #{task.pk} submitted."
            + (" It is high risk, so it waits for an approver." if waits else ""),
        )
    if not wants_partial(request):
        return HttpResponseRedirect(safe_next(request, reverse("tasks_app:board")))
    response = render_page(
        request,
        "partials/submit_form.html",
        {"submit_form": SubmitTaskForm(), "oob_messages": True},
    )
    # After the settle, so the board's refresh starts once this request counts as done (a poll
    # sent during an action is dropped, see vibe.js).
    return trigger_client_event(response, "vibe:submitted", after="settle")


# --- Dead letter: retry all shown -------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
def retry_all(request: HttpRequest) -> HttpResponse:
    """Retry every dead-letter task matching the board's filters, after a confirmation that
    names how many tasks will move. The confirmation lists their ids, so the POST moves exactly
    the tasks the person saw counted, never ones that arrived in between."""
    require(request.user, "retry")
    if request.method == "GET":
        filters = dashboard.Filters.from_query(request.GET)
        ids = dashboard.dead_letter_ids(filters)
        query = filters.as_query()
        return render_page(
            request,
            "tasks/retry_all_confirm.html",
            {
                "filters": filters,
                "ids": ids,
                "limit": dashboard.RETRY_ALL_LIMIT,
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
    if len(ids) > dashboard.RETRY_ALL_LIMIT:
        messages.error(
            request,
            f"At most {dashboard.RETRY_ALL_LIMIT} tasks can be retried at once; nothing changed.",
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
