"""django-tables2 table for the history page."""

from __future__ import annotations

import django_tables2 as tables
from django.utils.html import format_html

from .choices import Lane, Status
from .models import TaskHistory


def _status_label(value: str) -> str:
    return Status(value).label if value in Status.values else (value or "—")


class HistoryTable(tables.Table):
    created_at = tables.DateTimeColumn(verbose_name="When", format="Y-m-d H:i:s")
    task = tables.Column(verbose_name="Task", accessor="task_id", order_by=("task_id",))
    lane = tables.Column(verbose_name="Lane", accessor="task__lane")
    from_status = tables.Column(verbose_name="From")
    to_status = tables.Column(verbose_name="To")
    actor = tables.Column()
    note = tables.Column(orderable=False)

    class Meta:
        model = TaskHistory
        fields = ()
        sequence = ("created_at", "task", "lane", "from_status", "to_status", "actor", "note")
        template_name = "partials/history_table.html"
        order_by = ("-created_at",)
        attrs = {"class": "table history-table"}
        empty_text = "No history matches these filters."

    def render_task(self, record: TaskHistory) -> str:
        return format_html(
            '<a href="{}">#{}</a> <span class="goal-snippet">{}</span>',
            record.task.get_absolute_url(),
            record.task_id,
            record.task.goal[:60],
        )

    def render_lane(self, record: TaskHistory) -> str:
        # `value` would be the choice's label ("Backend"), not the lane the CSS class needs.
        value = record.task.lane
        label = Lane(value).label if value in Lane.values else value
        return format_html('<span class="lane lane-{}">{}</span>', value, label)

    def render_from_status(self, value: str) -> str:
        return _status_label(value) if value else "—"

    def render_to_status(self, value: str) -> str:
        return format_html('<span class="status status-{}">{}</span>', value, _status_label(value))
