import django.db.models.functions.datetime
from django.db import migrations, models

import workers_app.models


class Migration(migrations.Migration):
    dependencies = [
        ("workers_app", "0003_worker_status_reason"),
    ]

    operations = [
        migrations.CreateModel(
            name="Instance",
            fields=[
                (
                    "id",
                    models.PositiveSmallIntegerField(default=1, primary_key=True, serialize=False),
                ),
                (
                    "instance_id",
                    models.CharField(
                        default=workers_app.models._new_instance_id, max_length=12, unique=True
                    ),
                ),
                (
                    "created_at",
                    models.DateTimeField(
                        auto_now_add=True, db_default=django.db.models.functions.datetime.Now()
                    ),
                ),
            ],
            options={
                "db_table": "factory_instance",
                "constraints": [
                    models.CheckConstraint(
                        condition=models.Q(("id", 1)), name="factory_instance_one_row"
                    )
                ],
            },
        ),
    ]
