"""The Django admin for the worker pool.

A worker's `status` and `active_tasks` are kept by the lifecycle and the worker process, so the
form shows them read-only and saves only the fields a person changed; Pause, Resume and Retire
are the worker action table's rows (`tasks_app.actions`), with the `manage_workers` permission.
There is no bulk Delete: deleting a worker strips its name from its tasks and runs, so a worker
that ever worked is retired instead, and only a row that never did can be deleted.
A row added here is part of the configured pool (`managed`: runfactory starts it).
"""

from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from tasks_app import actions
from tasks_app.actions import can
from tasks_app.admin import ACTION_LIMIT, DrillDownAdmin, run_lifecycle_action
from tasks_app.ages import ago

from .models import Worker

# Set by the worker process or the lifecycle, never typed in.
RUNTIME_FIELDS = (
    "status",
    "display_status",
    "active_tasks",
    "last_heartbeat",
    "heartbeat_age_text",
    "hostname",
    "pid",
    "retired_at",
    "created_at",
    "updated_at",
)


@admin.register(Worker)
class WorkerAdmin(DrillDownAdmin):
    list_display = (
        "worker_id",
        "lane",
        "tier",
        "status",
        "display_status",
        "load",
        "heartbeat_age_text",
        "priority_score",
    )
    list_filter = ("lane", "tier", "status", "managed")
    search_fields = ("worker_id", "agent_profile", "hostname")
    ordering = ("lane", "worker_id")
    actions = ("pause_workers", "resume_workers", "retire_workers")

    @admin.display(description="shown as")
    def display_status(self, obj: Worker) -> str:
        """Offline when the heartbeat is stale, whatever the row says."""
        return obj.display_status

    @admin.display(description="active / capacity", ordering="active_tasks")
    def load(self, obj: Worker) -> str:
        return f"{obj.active_tasks}/{obj.capacity_limit}"

    @admin.display(description="heartbeat", ordering="last_heartbeat")
    def heartbeat_age_text(self, obj: Worker) -> str:
        return ago(obj.heartbeat_age)

    def get_fields(self, request: HttpRequest, obj=None):
        editable = ["tier", "capacity_limit", "priority_score", "agent_profile", "managed"]
        if obj is None:
            return ["worker_id", "lane", *editable]
        return ["worker_id", "lane", *editable, *RUNTIME_FIELDS]

    def get_readonly_fields(self, request: HttpRequest, obj=None):
        # A worker's id and lane are what its process registered with; changing them under a
        # running worker would orphan its tasks.
        return ("worker_id", "lane", *RUNTIME_FIELDS) if obj is not None else ()

    def save_model(self, request: HttpRequest, obj: Worker, form, change: bool) -> None:
        if not change:
            super().save_model(request, obj, form, change)
            return
        changed = [name for name in form.changed_data if name not in RUNTIME_FIELDS]
        if changed:
            # The worker writes its heartbeat and load concurrently: save only what changed.
            obj.save(update_fields=[*changed, "updated_at"])

    def get_changeform_initial_data(self, request: HttpRequest) -> dict:
        # A worker a person adds here is one runfactory should start.
        return {"managed": True, **super().get_changeform_initial_data(request)}

    def get_actions(self, request: HttpRequest):
        found = super().get_actions(request)
        found.pop("delete_selected", None)  # Retire keeps the attribution Delete would strip
        return found

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        if obj is not None and (obj.tasks.exists() or obj.runs.exists()):
            return False  # its tasks and runs would lose its name: retire it instead
        return super().has_delete_permission(request, obj)

    def has_manage_workers_permission(self, request: HttpRequest) -> bool:
        return can(request.user, "pause")

    def _act(self, request: HttpRequest, queryset: QuerySet, action: str) -> None:
        chosen = actions.WORKER_ACTIONS[action]
        ids = list(queryset.order_by("pk").values_list("pk", flat=True)[: ACTION_LIMIT + 1])
        # perform, not the lifecycle directly: a refused move is audited like at any door.
        run_lifecycle_action(self, request, ids, chosen.perform, done=chosen.done, label=str)

    @admin.action(description="Pause selected workers", permissions=["manage_workers"])
    def pause_workers(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._act(request, queryset, "pause")

    @admin.action(description="Resume selected workers", permissions=["manage_workers"])
    def resume_workers(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._act(request, queryset, "resume")

    @admin.action(
        description="Retire selected workers (stopped ones: kept for their tasks, hidden)",
        permissions=["manage_workers"],
    )
    def retire_workers(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._act(request, queryset, "retire")
