from django.db import migrations, models
from django.db.models import Q


def backfill(apps, schema_editor):
    """Older rows: the event is the status moved to, and a failed attempt is read from its note
    as the throughput chart did before (dead letter, or "attempt N/M failed" back to pending)."""
    history = apps.get_model("tasks_app", "TaskHistory")
    failed = Q(to_status="dead_letter") | Q(
        from_status="in_progress", to_status="pending", note__startswith="attempt"
    )
    history.objects.filter(failed).update(event="failed")
    history.objects.filter(event="").update(event=models.F("to_status"))


class Migration(migrations.Migration):
    dependencies = [
        ("tasks_app", "0011_audit_log"),
    ]

    operations = [
        migrations.AddField(
            model_name="taskhistory",
            name="event",
            field=models.CharField(blank=True, db_default="", default="", max_length=30),
        ),
        migrations.AddField(
            model_name="taskhistory",
            name="error_type",
            field=models.CharField(blank=True, db_default="", default="", max_length=40),
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop),
    ]
