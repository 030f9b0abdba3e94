"""Install the default worker pool: one builder per lane and the seed's three specialists."""

from django.db import migrations

DEFAULT_POOL = [
    # worker_id, lane, tier, capacity_limit, status, priority_score
    ("@backend-1", "backend", "senior", 2, "online", 60),
    ("@frontend-1", "frontend", "senior", 2, "online", 60),
    ("@qa-1", "qa", "senior", 2, "online", 60),
    # The seed's specialists, with the seed's values.
    ("@security-1", "security", "senior", 3, "online", 70),
    ("@ux-designer", "ux", "senior", 3, "online", 70),
    ("@data-analyst", "data", "senior", 3, "online", 70),
]


def install_pool(apps, schema_editor):
    Worker = apps.get_model("workers_app", "Worker")
    for worker_id, lane, tier, capacity, status, score in DEFAULT_POOL:
        Worker.objects.get_or_create(
            worker_id=worker_id,
            defaults={
                "lane": lane,
                "tier": tier,
                "capacity_limit": capacity,
                "status": status,
                "priority_score": score,
            },
        )


def remove_pool(apps, schema_editor):
    Worker = apps.get_model("workers_app", "Worker")
    Worker.objects.filter(worker_id__in=[row[0] for row in DEFAULT_POOL]).delete()


class Migration(migrations.Migration):
    dependencies = [("workers_app", "0001_initial")]
    operations = [migrations.RunPython(install_pool, remove_pool)]
