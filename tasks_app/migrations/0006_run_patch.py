from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("tasks_app", "0005_run_agent_report"),
    ]

    operations = [
        migrations.AddField(
            model_name="run",
            name="patch",
            field=models.TextField(
                blank=True, db_default="", default="", help_text="git diff base..head, bounded."
            ),
        ),
    ]
