"""The Django admin for tasks, their history and their runs.

The admin is one more front door: it never assigns `status`. New tasks go through
`lifecycle.submit`, and Retry, Approve and Cancel are actions that call the lifecycle, declare
their permission (so a view-only staff user never sees them) and report the lifecycle's own
message for every task they could not move.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.widgets import AutocompleteSelectMultiple
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.text import Truncator

from vibe_project.http import actor_for, sentence

from . import actions, lifecycle, pipeline
from .actions import can
from .choices import ERROR_TYPES, Delivery, error_hint
from .lifecycle import TaskNotFound
from .lifecycle.intake import is_task_id, task_id
from .models import AuditEntry, Run, Task, TaskHistory

# An action moves tasks one transaction at a time; past this many, a person should use a
# narrower filter rather than hold the page for minutes.
ACTION_LIMIT = 500
# Messages listed one by one before the rest are summarised, so the page stays readable.
MESSAGE_LIMIT = 20

# What a person may still change on an existing task. Everything else belongs to the lifecycle
# or the workers.
EDITABLE_ON_CHANGE = ("goal", "priority")


def run_lifecycle_action(
    model_admin: admin.ModelAdmin,
    request: HttpRequest,
    ids: list,
    move: Callable[..., object],
    *,
    done: str,
    label: Callable[[object], str],
) -> None:
    """Call `move(id, actor=...)` for each id and tell the person what happened to each one.

    A refusal (illegal move, raced click, missing row) is the lifecycle's message, shown as a
    warning; it never becomes an error page, and the other rows still move.
    """
    if len(ids) > ACTION_LIMIT:
        model_admin.message_user(
            request,
            f"{len(ids)} rows selected; an action moves at most {ACTION_LIMIT} at once. "
            "Narrow the filter and try again. Nothing was changed.",
            messages.ERROR,
        )
        return
    actor = actor_for(request)
    moved: list = []
    refusals: list[str] = []
    for pk in ids:
        try:
            move(pk, actor=actor)
        except lifecycle.LifecycleError as exc:
            refusals.append(sentence(str(exc)) + ".")
        else:
            moved.append(pk)
    if moved:
        names = ", ".join(label(pk) for pk in moved[:MESSAGE_LIMIT])
        if len(moved) > MESSAGE_LIMIT:
            names += f" and {len(moved) - MESSAGE_LIMIT} more"
        model_admin.message_user(request, f"{sentence(done)}: {names}.", messages.SUCCESS)
    for text in refusals[:MESSAGE_LIMIT]:
        model_admin.message_user(request, text, messages.WARNING)
    if len(refusals) > MESSAGE_LIMIT:
        model_admin.message_user(
            request, f"{len(refusals) - MESSAGE_LIMIT} more were refused.", messages.WARNING
        )


# --- Inlines ----------------------------------------------------------------------------------


class DrillDownAdmin(admin.ModelAdmin):
    """A changelist whose date drill-down survives a hand-made URL.

    Django's date hierarchy refuses most bad years and months itself, but not a 20-digit one
    (OverflowError) nor the year 9999 (its end, year 10000, is a ValueError outside Django's
    own check), which would be a 500; they get the changelist's usual "invalid filter"
    redirect instead.
    """

    def get_changelist_instance(self, request: HttpRequest):
        try:
            return super().get_changelist_instance(request)
        except (OverflowError, ValueError) as exc:
            raise IncorrectLookupParameters(exc) from None


class ReadOnlyAdmin(DrillDownAdmin):
    """Records written only by the product (history, runs, the outbox): look, never touch."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


class _ReadOnlyInline(admin.TabularInline):
    """History and runs are written by the lifecycle and the workers, never in a form."""

    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


class TaskHistoryInline(_ReadOnlyInline):
    model = TaskHistory
    fields = ("created_at", "from_status", "to_status", "actor", "note")
    readonly_fields = fields
    ordering = ("created_at", "id")


class RunInline(_ReadOnlyInline):
    model = Run
    fields = (
        "attempt",
        "worker_name",
        "agent",
        "started_at",
        "duration_seconds",
        "exit_code",
        "outcome",
        "output_tail",
    )
    readonly_fields = fields
    ordering = ("started_at", "id")

    @admin.display(description="worker")
    def worker_name(self, obj: Run) -> str:
        return obj.worker_id or "—"

    @admin.display(description="output (tail)")
    def output_tail(self, obj: Run) -> str:
        text = (obj.stderr_tail or obj.stdout_tail or "")[-2000:]
        return format_html("<pre style='white-space:pre-wrap;max-width:60em'>{}</pre>", text)


# --- Tasks ------------------------------------------------------------------------------------


class ErrorTypeFilter(admin.SimpleListFilter):
    """The known error types as fixed choices: no DISTINCT scan over every task per page view."""

    title = "last error type"
    parameter_name = "last_error_type"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list:
        return [(name, name) for name in ERROR_TYPES]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        return queryset.filter(last_error_type=value) if value else queryset


def _is_task_id(value: object) -> bool:
    try:
        task_id(str(value))
    except TaskNotFound:
        return False
    return True


class TaskIdsField(forms.ModelMultipleChoiceField):
    """Prerequisite ids: one that no task could have (not a whole number, or past 64 bits) is
    refused like any unknown task, before it reaches a query, where SQLite would overflow."""

    def _check_values(self, value):
        for pk in value:
            if not _is_task_id(pk):
                raise forms.ValidationError(
                    self.error_messages["invalid_pk_value"],
                    code="invalid_pk_value",
                    params={"pk": pk},
                )
        return super()._check_values(value)  # type: ignore[misc]  # private: not in the stubs


class TaskIdsWidget(AutocompleteSelectMultiple):
    """Shows a refused form again without looking up ids that cannot be tasks (Django's
    widget would pass them to a query and fail with a 500)."""

    def optgroups(self, name: str, value: Sequence[str], attr: dict | None = None) -> list:
        return super().optgroups(name, [v for v in value if _is_task_id(v)], attr)


class TaskAddForm(forms.ModelForm):
    """The add form: what `lifecycle.submit` takes, checked by the lifecycle's own rules."""

    pipeline = forms.ChoiceField(
        required=False,
        choices=[("", "Default for the lane")] + [(name, name) for name in pipeline.PIPELINES],
        help_text="Which reviews the work goes through when it is done.",
    )
    delivery = forms.ChoiceField(
        required=False,
        choices=[("", "Default (VIBE_DELIVERY)"), *Delivery.choices],
        help_text="How the reviewed work reaches the team: its branch, a merge, a pull request.",
    )

    class Meta:
        model = Task
        fields = ("goal", "lane", "priority", "risk", "pipeline", "delivery", "depends_on")

    def clean(self) -> dict:
        super().clean()
        data = self.cleaned_data
        if self.errors:
            return data
        priority: Any = data.get("priority")  # None too: validate_new says what is wrong
        spec = lifecycle.NewTask(
            goal=data.get("goal", ""),
            lane=data.get("lane", ""),
            priority=priority,
            risk=data.get("risk", ""),
            pipeline=data.get("pipeline") or None,
            delivery=data.get("delivery") or None,
        )
        try:
            lifecycle.validate_new(spec)
        except lifecycle.LifecycleError as exc:
            raise forms.ValidationError(sentence(str(exc))) from None
        return data


class TaskChangeForm(forms.ModelForm):
    class Meta:
        model = Task
        fields = EDITABLE_ON_CHANGE

    def clean_goal(self) -> str:
        goal = (self.cleaned_data.get("goal") or "").strip()
        if not goal:
            raise forms.ValidationError("The goal is empty; say what the task should achieve.")
        if len(goal) > lifecycle.MAX_GOAL_LENGTH:
            raise forms.ValidationError(
                f"The goal is {len(goal)} characters; the limit is {lifecycle.MAX_GOAL_LENGTH}."
            )
        return goal

    def clean_priority(self) -> int:
        priority = self.cleaned_data.get("priority")
        if priority is None or not 0 <= priority <= 100:
            raise forms.ValidationError("Priority must be a whole number from 0 to 100.")
        return priority


@admin.register(Task)
class TaskAdmin(DrillDownAdmin):
    list_display = (
        "id",
        "short_goal",
        "lane",
        "status",
        "priority",
        "risk",
        "worker_name",
        "attempts",
        "last_error_type",
        "updated_at",
    )
    list_display_links = ("id", "short_goal")
    list_filter = ("lane", "status", "delivery_state", "delivery", "risk", ErrorTypeFilter)
    search_fields = ("goal",)
    date_hierarchy = "created_at"
    ordering = ("-id",)
    list_per_page = 50
    # Counting a million rows on every page view is the slow part of a changelist.
    show_full_result_count = False
    autocomplete_fields = ("depends_on",)
    inlines = (TaskHistoryInline, RunInline)
    actions = ("retry_tasks", "approve_tasks", "cancel_tasks", "merge_tasks")

    readonly_on_change = (
        "id",
        "lane",
        "status",
        "risk",
        "pipeline",
        "stage",
        "parent_link",
        "worker",
        "attempt_count",
        "max_attempts",
        "last_error_type",
        "last_error",
        "error_hint",
        "review_round",
        "pipeline_step",
        "prerequisites",
        "approved_by",
        "approved_at",
        "claim_token",
        "lease_expires_at",
        "not_before",
        "verdict",
        "score",
        "findings_list",
        "summary",
        "context",
        "branch",
        "head_commit",
        "diff_stat",
        "created_at",
        "updated_at",
        "started_at",
        "finished_at",
    )

    # --- list columns ---

    @admin.display(description="goal", ordering="goal")
    def short_goal(self, obj: Task) -> str:
        return Truncator(obj.goal).chars(70)

    @admin.display(description="worker", ordering="worker_id")
    def worker_name(self, obj: Task) -> str:
        # The worker's id is its primary key: no join needed for the list.
        return obj.worker_id or "—"

    @admin.display(description="attempts", ordering="attempt_count")
    def attempts(self, obj: Task) -> str:
        return f"{obj.attempt_count}/{obj.max_attempts}"

    # --- read-only detail ---

    @admin.display(description="parent task")
    def parent_link(self, obj: Task) -> str:
        if not obj.parent_id:
            return "—"
        url = reverse("admin:tasks_app_task_change", args=[obj.parent_id])
        return format_html('<a href="{}">#{}</a>', url, obj.parent_id)

    @admin.display(description="prerequisites")
    def prerequisites(self, obj: Task) -> str:
        rows = obj.depends_on.order_by("pk").values_list("pk", "status")
        if not rows:
            return "—"
        return format_html_join(
            ", ",
            '<a href="{}">#{}</a> ({})',
            (
                (reverse("admin:tasks_app_task_change", args=[pk]), pk, status)
                for pk, status in rows
            ),
        )

    @admin.display(description="what to do")
    def error_hint(self, obj: Task) -> str:
        return error_hint(obj.last_error_type) or "—"

    @admin.display(description="findings")
    def findings_list(self, obj: Task) -> str:
        findings = obj.findings
        if not findings:
            return "—"
        return format_html(
            "<ul>{}</ul>",
            format_html_join(
                "",
                "<li><strong>{}</strong> {}{}</li>",
                (
                    (
                        f.get("severity", ""),
                        f.get("title", ""),
                        f" ({f['file']})" if f.get("file") else "",
                    )
                    for f in findings
                ),
            ),
        )

    @admin.display(description="summary")
    def summary(self, obj: Task) -> str:
        result = obj.result if isinstance(obj.result, dict) else {}
        return result.get("summary") or "—"

    # --- forms ---

    def get_form(self, request: HttpRequest, obj=None, change: bool = False, **kwargs):
        kwargs["form"] = TaskChangeForm if obj is not None else TaskAddForm
        return super().get_form(request, obj, change=change, **kwargs)

    def formfield_for_manytomany(self, db_field, request: HttpRequest, **kwargs):
        if db_field.name == "depends_on":
            kwargs["form_class"] = TaskIdsField
            kwargs["widget"] = TaskIdsWidget(db_field, self.admin_site, using=kwargs.get("using"))
        return super().formfield_for_manytomany(db_field, request, **kwargs)

    def get_fields(self, request: HttpRequest, obj=None):
        if obj is None:
            return list(TaskAddForm.Meta.fields)
        return list(EDITABLE_ON_CHANGE) + list(self.readonly_on_change)

    def get_readonly_fields(self, request: HttpRequest, obj=None):
        if obj is None:
            return ()
        if obj.status not in lifecycle.EDITABLE:  # running or finished: what ran stays as it was
            return tuple(EDITABLE_ON_CHANGE) + tuple(self.readonly_on_change)
        return self.readonly_on_change

    def get_inlines(self, request: HttpRequest, obj=None):
        # A task being added has no history or runs yet.
        return self.inlines if obj is not None else ()

    def save_model(self, request: HttpRequest, obj: Task, form, change: bool) -> None:
        if not change:
            data = form.cleaned_data
            task = lifecycle.submit(
                data["goal"],
                lane=data["lane"],
                actor=actor_for(request),
                priority=data["priority"],
                risk=data["risk"],
                depends_on=[t.pk for t in data.get("depends_on") or ()],
                pipeline=data.get("pipeline") or None,
                delivery=data.get("delivery") or None,
            )
            # The admin goes on to save the form's relations and log the addition against
            # `obj`, so it becomes the row the lifecycle created.
            obj.pk = task.pk
            obj._state.adding = False
            obj.refresh_from_db()
            return
        changed = {name: form.cleaned_data[name] for name in form.changed_data}
        edits = {name: value for name, value in changed.items() if name in EDITABLE_ON_CHANGE}
        if edits:
            # Through the lifecycle: a history row with old and new values, approval re-asked.
            try:
                lifecycle.edit(obj.pk, actor=actor_for(request), **edits)
            except lifecycle.LifecycleError as exc:
                self.message_user(request, f"Nothing was changed: {exc}.", messages.ERROR)
            obj.refresh_from_db()

    def save_related(self, request: HttpRequest, form, formsets, change: bool) -> None:
        if not change:
            return  # lifecycle.submit already set the prerequisites
        super().save_related(request, form, formsets, change)

    # --- actions ---

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return can(request.user, "retry")

    def has_approve_permission(self, request: HttpRequest) -> bool:
        return can(request.user, "approve")

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        return can(request.user, "cancel")

    def has_merge_permission(self, request: HttpRequest) -> bool:
        return can(request.user, "merge")

    def _act(self, request: HttpRequest, queryset: QuerySet, name: str, done: str) -> None:
        ids = list(queryset.order_by("pk").values_list("pk", flat=True)[: ACTION_LIMIT + 1])
        action = actions.ACTIONS[name]
        run_lifecycle_action(
            self, request, ids, action.perform, done=done, label=lambda pk: f"#{pk}"
        )

    @admin.action(
        description="Retry selected tasks (dead letter or blocked)", permissions=["retry"]
    )
    def retry_tasks(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._act(request, queryset, "retry", "retried, back to pending")

    @admin.action(description="Approve selected high-risk tasks", permissions=["approve"])
    def approve_tasks(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._act(request, queryset, "approve", "approved, now pending")

    @admin.action(description="Cancel selected tasks", permissions=["cancel"])
    def cancel_tasks(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._act(request, queryset, "cancel", "cancelled")

    @admin.action(
        description="Merge selected tasks into their base branch (awaiting merge)",
        permissions=["merge"],
    )
    def merge_tasks(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._act(request, queryset, "merge", "merged")


@admin.register(TaskHistory)
class TaskHistoryAdmin(ReadOnlyAdmin):
    """Append-only: readable by anyone allowed to view it, changeable by nobody."""

    list_display = ("created_at", "task_link", "from_status", "to_status", "actor", "short_note")
    list_filter = ("to_status", "from_status")
    search_fields = ("actor", "note")
    date_hierarchy = "created_at"
    ordering = ("-created_at", "-id")
    show_full_result_count = False
    list_per_page = 100

    @admin.display(description="task", ordering="task_id")
    def task_link(self, obj: TaskHistory) -> str:
        url = reverse("admin:tasks_app_task_change", args=[obj.task_id])
        return format_html('<a href="{}">#{}</a>', url, obj.task_id)

    @admin.display(description="note")
    def short_note(self, obj: TaskHistory) -> str:
        return Truncator(obj.note).chars(90)

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str):
        """A bare number finds that task's history, as people type `42` to mean task #42."""
        term = search_term.strip().lstrip("#")
        if term.isascii() and term.isdigit():  # "²".isdigit() too, but int() refuses it
            pk = int(term)
            # Beyond the id column no task can match, and the database would refuse the number.
            if not is_task_id(pk):
                return queryset.none(), False
            return queryset.filter(task_id=pk), False
        return super().get_search_results(request, queryset, search_term)


@admin.register(Run)
class RunAdmin(ReadOnlyAdmin):
    """Agent runs, like build logs: read-only."""

    list_display = (
        "id",
        "task_link",
        "worker",
        "attempt",
        "agent",
        "exit_code",
        "duration_seconds",
        "outcome",
        "started_at",
    )
    list_filter = ("outcome", "agent")
    search_fields = ("stdout_tail", "stderr_tail", "outcome")
    date_hierarchy = "started_at"
    ordering = ("-id",)
    show_full_result_count = False

    @admin.display(description="task", ordering="task_id")
    def task_link(self, obj: Run) -> str:
        url = reverse("admin:tasks_app_task_change", args=[obj.task_id])
        return format_html('<a href="{}">#{}</a>', url, obj.task_id)


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdmin):
    """People's acts that moved no task, and every refusal: look, never touch."""

    list_display = ("created_at", "actor", "door", "action", "target", "outcome", "reason")
    list_filter = ("outcome", "door", "action")
    search_fields = ("actor", "target", "reason")
    ordering = ("-created_at", "-id")
    show_full_result_count = False
    list_per_page = 100
