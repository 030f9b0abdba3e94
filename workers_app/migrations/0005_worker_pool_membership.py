"""Which rows are the pool: `managed` (started by runfactory) and `retired_at` (Retire).

Every row that exists when this runs was started by runfactory until now — the default pool's
and any a person or a one-off `runworker` added — so all of them stay managed and an upgrade starts
what it started before; a leftover one-off is retired (or unticked in the admin) from here on.
Rows made after this are managed only when added in the admin.
"""

from django.db import migrations, models


def keep_existing_rows_in_the_pool(apps, schema_editor):
    Worker = apps.get_model("workers_app", "Worker")
    Worker.objects.update(managed=True)


class Migration(migrations.Migration):
    dependencies = [("workers_app", "0004_instance")]

    operations = [
        migrations.AddField(
            model_name="worker",
            name="managed",
            field=models.BooleanField(
                db_default=False,
                default=False,
                help_text="Part of the configured pool: runfactory starts a worker process for "
                "it. Rows a one-off runworker created are not, until ticked here.",
                verbose_name="started by runfactory",
            ),
        ),
        migrations.AddField(
            model_name="worker",
            name="retired_at",
            field=models.DateTimeField(
                blank=True,
                help_text="Set by Retire: hidden from the pool and counts until it heartbeats "
                "again.",
                null=True,
            ),
        ),
        migrations.RunPython(keep_existing_rows_in_the_pool, migrations.RunPython.noop),
    ]
