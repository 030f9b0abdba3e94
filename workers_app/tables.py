"""The worker pool's django-tables2 table.

The pool renders its rows through `partials/worker_row.html`, so a Pause/Resume click can swap
one row; the table here owns the columns, their headers and sorting.
"""

from __future__ import annotations

import django_tables2 as tables

from .models import Worker


class WorkerTable(tables.Table):
    worker_id = tables.Column(verbose_name="Worker")
    lane = tables.Column()
    tier = tables.Column()
    status = tables.Column()
    load = tables.Column(
        verbose_name="Load", accessor="active_tasks", order_by=("active_tasks", "capacity_limit")
    )
    heartbeat = tables.Column(
        verbose_name="Heartbeat", accessor="last_heartbeat", order_by=("-last_heartbeat",)
    )
    priority_score = tables.Column(verbose_name="Priority score")
    spend = tables.Column(verbose_name="Spent today", empty_values=(), orderable=False)
    current = tables.Column(verbose_name="Current tasks", empty_values=(), orderable=False)
    actions = tables.Column(verbose_name="Actions", empty_values=(), orderable=False)

    class Meta:
        model = Worker
        fields = ()
        sequence = (
            "worker_id",
            "lane",
            "tier",
            "status",
            "load",
            "heartbeat",
            "priority_score",
            "spend",
            "current",
            "actions",
        )
        template_name = "partials/pool_table.html"
        order_by = ("lane", "worker_id")
        attrs = {"class": "table pool-table"}
