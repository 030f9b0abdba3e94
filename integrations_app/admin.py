"""The Django admin for the GitHub door: what GitHub sent, what we did, what we still owe.

Read-only: these rows are written by the webhook and the sync loop. The lists answer "did the
merge of pull request #7 reach the factory?" and "why was issue #12 not commented on?".
"""

from __future__ import annotations

from django.contrib import admin
from django.utils.text import Truncator

from tasks_app.admin import ReadOnlyAdmin

from .models import GitHubEvent, IssueComment, SyncState, WebhookDelivery


@admin.register(GitHubEvent)
class GitHubEventAdmin(ReadOnlyAdmin):
    list_display = ("key", "kind", "source", "state", "attempts", "task", "short_outcome")
    list_filter = ("state", "kind", "source")
    search_fields = ("key", "outcome")
    date_hierarchy = "created_at"
    list_select_related = ("task",)

    @admin.display(description="outcome")
    def short_outcome(self, obj: GitHubEvent) -> str:
        return Truncator(obj.outcome).chars(80) or "—"


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin):
    list_display = ("delivery_id", "event", "action", "outcome", "received_at")
    list_filter = ("event",)
    search_fields = ("delivery_id", "outcome")
    date_hierarchy = "received_at"


@admin.register(IssueComment)
class IssueCommentAdmin(ReadOnlyAdmin):
    list_display = ("repo", "issue_number", "task", "state", "attempts", "last_error", "sent_at")
    list_filter = ("state",)
    search_fields = ("repo", "body", "last_error")
    list_select_related = ("task",)


@admin.register(SyncState)
class SyncStateAdmin(ReadOnlyAdmin):
    list_display = ("key", "etag", "value", "updated_at")
    search_fields = ("key",)
