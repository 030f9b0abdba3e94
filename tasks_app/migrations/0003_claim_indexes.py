"""Cheaper claims: the claim index covers the whole claim order, and no duplicate worker index.

- `tasks_claimable_idx` gains `id`, the last key of the claim order, so PostgreSQL reads the
  next task straight off the index instead of sorting ties (SQLite already had the rowid).
- The foreign key's own index on `worker_id` (and PostgreSQL's `_like` twin) duplicated the
  leading column of `tasks_worker_idx`; every claim paid for writing it. Dropped with plain
  SQL so SQLite does not rebuild the whole table for it.
"""

import django.db.models.deletion
from django.db import migrations, models

FK_INDEX = "tasks_worker_id_7125cf29"


class Migration(migrations.Migration):
    dependencies = [
        ("tasks_app", "0002_roles"),
        ("workers_app", "0002_default_pool"),
    ]

    operations = [
        migrations.RemoveIndex(model_name="task", name="tasks_claimable_idx"),
        migrations.AddIndex(
            model_name="task",
            index=models.Index(
                condition=models.Q(("status", "pending")),
                fields=["lane", "-priority", "created_at", "id"],
                name="tasks_claimable_idx",
            ),
        ),
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="task",
                    name="worker",
                    field=models.ForeignKey(
                        blank=True,
                        db_column="worker_id",
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="tasks",
                        to="workers_app.worker",
                    ),
                ),
            ],
            database_operations=[
                migrations.RunSQL(
                    f"DROP INDEX IF EXISTS {FK_INDEX}",
                    reverse_sql=f"CREATE INDEX {FK_INDEX} ON tasks (worker_id)",
                ),
                migrations.RunSQL(
                    f"DROP INDEX IF EXISTS {FK_INDEX}_like",
                    reverse_sql=migrations.RunSQL.noop,
                ),
            ],
        ),
    ]
