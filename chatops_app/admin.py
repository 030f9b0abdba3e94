"""The Django admin for chat links and the notification outbox.

Notifications are written by the lifecycle and delivered by the sender, so they are read-only
here: the list exists to answer "did the message about task 42 get out, and if not, why?". The
one thing an admin may do is give `failed` rows fresh tries once the cause (a token, a channel)
is fixed.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.text import Truncator

from tasks_app.admin import DrillDownAdmin, ReadOnlyAdmin

from .models import ChatLink, Notification
from .outbox import resend_failed


@admin.register(ChatLink)
class ChatLinkAdmin(DrillDownAdmin):
    """Who a Slack or Discord user is here; they act with that person's permissions."""

    list_display = ("platform", "workspace", "external_id", "user", "created_at")
    list_filter = ("platform",)
    search_fields = ("external_id", "workspace", "user__username")
    list_select_related = ("user",)
    autocomplete_fields = ("user",)
    # The workspace is in the form so the unique (platform, workspace, id) check is a form error.
    fields = ("platform", "workspace", "external_id", "user", "created_at")
    readonly_fields = ("created_at",)

    # A link hands a chat identity someone's permissions: only superusers make or change one,
    # as with `vibe link`, so staff can never link themselves to a more powerful person.
    def has_add_permission(self, request) -> bool:
        return request.user.is_superuser

    def has_change_permission(self, request, obj=None) -> bool:
        return request.user.is_superuser


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "event",
        "task_link",
        "channel",
        "state",
        "attempts",
        "next_attempt_at",
        "short_error",
        "created_at",
        "sent_at",
    )
    list_filter = ("state", "event", "channel")
    search_fields = ("note", "last_error", "external_id", "worker", "key")
    date_hierarchy = "created_at"
    ordering = ("-id",)
    show_full_result_count = False
    fields = (
        "task_link",
        "worker",
        "event",
        "channel",
        "state",
        "note",
        "attempts",
        "next_attempt_at",
        "last_error",
        "external_id",
        "data_shown",
        "key",
        "created_at",
        "sent_at",
    )
    readonly_fields = fields
    actions = ("resend",)

    def has_resend_permission(self, request: HttpRequest) -> bool:
        """Resending changes a row's delivery state: the change permission rows otherwise lack."""
        return request.user.has_perm("chatops_app.change_notification")

    @admin.action(description="Resend failed notifications", permissions=["resend"])
    def resend(self, request: HttpRequest, queryset: QuerySet[Notification]) -> None:
        count = resend_failed(queryset.values_list("pk", flat=True))
        self.message_user(
            request,
            f"{count} failed notification{'s' if count != 1 else ''} put back to pending.",
            messages.SUCCESS if count else messages.WARNING,
        )

    @admin.display(description="task", ordering="task_id")
    def task_link(self, obj: Notification) -> str:
        if obj.task_id is None:
            return obj.subject  # a factory event: a worker or a day, no task
        url = reverse("admin:tasks_app_task_change", args=[obj.task_id])
        return format_html('<a href="{}">#{}</a>', url, obj.task_id)

    @admin.display(description="data")
    def data_shown(self, obj: Notification) -> dict:
        """A click's response_url lets anyone who holds it answer in the channel: not shown."""
        if "response_url" not in obj.data:
            return obj.data
        return {**obj.data, "response_url": "(hidden: a credential for this click's answer)"}

    @admin.display(description="last error")
    def short_error(self, obj: Notification) -> str:
        return Truncator(obj.last_error).chars(60) or "—"
