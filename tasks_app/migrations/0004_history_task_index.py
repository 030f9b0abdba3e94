"""Drop task_history's own index on task_id: task_history_task_idx (task_id, created_at) serves
every lookup by task, and each status change wrote one more index page for nothing.

A plain DROP INDEX, not the table rebuild an AlterField costs on SQLite, so a long history
upgrades at once.
"""

import django.db.models.deletion
from django.db import migrations, models

INDEX = "task_history_task_id_118b5d3f"  # the name Django gave the foreign key's index


class Migration(migrations.Migration):
    dependencies = [
        ("tasks_app", "0003_claim_indexes"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.RunSQL(
                    f"DROP INDEX IF EXISTS {INDEX}",
                    reverse_sql=f"CREATE INDEX {INDEX} ON task_history (task_id)",
                ),
            ],
            state_operations=[
                migrations.AlterField(
                    model_name="taskhistory",
                    name="task",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="history",
                        to="tasks_app.task",
                    ),
                ),
            ],
        ),
    ]
