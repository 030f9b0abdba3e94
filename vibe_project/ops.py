"""For the people who run the factory: a health check and a Prometheus exposition.

`/healthz` answers a load balancer: 200 when the database answers and every migration is
applied, 503 otherwise, and never any detail (it needs no login). `/metrics/prometheus` is read
from the database at scrape time by a collector of its own (so every web process reports the
same figures) and is guarded by a bearer token, `VIBE_METRICS_TOKEN`; without one it is off.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterator

from django.conf import settings
from django.db import DatabaseError, connection
from django.db.migrations.executor import MigrationExecutor
from django.db.models import Count, Sum
from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from chatops_app.models import DeliveryState as Outbox
from chatops_app.models import Notification
from tasks_app import costs
from tasks_app.choices import Status
from tasks_app.models import Run, Task
from workers_app.models import Worker

logger = logging.getLogger(__name__)


@never_cache
@require_GET
def healthz(request: HttpRequest) -> HttpResponse:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        loader = MigrationExecutor(connection).loader
        # Every migration of the code, not only the plan to the leaves: a gap in the middle
        # (one not applied under applied ones) counts too.
        pending = set(loader.graph.nodes) - set(loader.applied_migrations)
    except DatabaseError:
        logger.warning("health check: the database does not answer", exc_info=True)
        return HttpResponse("unavailable\n", status=503, content_type="text/plain")
    if pending:
        logger.warning("health check: %d migrations are not applied", len(pending))
        return HttpResponse("unavailable\n", status=503, content_type="text/plain")
    return HttpResponse("ok\n", content_type="text/plain")


class FactoryCollector:
    """Reads the figures from the database on each scrape."""

    def collect(self) -> Iterator[Metric]:
        tasks = GaugeMetricFamily(
            "vibe_tasks", "Tasks by status and lane.", labels=["status", "lane"]
        )
        for row in Task.objects.values("status", "lane").annotate(n=Count("id")).order_by():
            tasks.add_metric([row["status"], row["lane"]], row["n"])
        yield tasks

        dead = Task.objects.filter(status=Status.DEAD_LETTER).count()
        yield GaugeMetricFamily("vibe_dead_letter_tasks", "Tasks in the dead-letter queue.", dead)

        runs = CounterMetricFamily(
            "vibe_runs", "Agent runs (claims) by role and outcome.", labels=["role", "outcome"]
        )
        for row in Run.objects.values("role", "outcome").annotate(n=Count("id")).order_by():
            runs.add_metric([row["role"] or "builder", row["outcome"] or "running"], row["n"])
        yield runs

        failures = CounterMetricFamily(
            "vibe_run_failures", "Failed agent runs by failure type.", labels=["error_type"]
        )
        ok = ("", "completed", "released", "resume_refused")
        for row in (
            Run.objects.exclude(outcome__in=ok).values("outcome").annotate(n=Count("id")).order_by()
        ):
            failures.add_metric([row["outcome"]], row["n"])
        yield failures

        workers = GaugeMetricFamily(
            "vibe_workers",
            "Workers with a fresh heartbeat, of those the busy ones, and the silent ones: in the "
            "pool, set to work (not offline), but with no fresh heartbeat.",
            labels=["state"],
        )
        alive = Worker.objects.alive()
        workers.add_metric(["live"], alive.count())
        workers.add_metric(["busy"], alive.filter(active_tasks__gt=0).count())
        silent = Worker.objects.in_pool().exclude(pk__in=alive.values("pk"))
        workers.add_metric(["silent"], silent.exclude(status="offline").count())
        yield workers

        outbox = GaugeMetricFamily(
            "vibe_outbox_pending", "Chat notifications not yet delivered.", labels=["channel"]
        )
        for row in (
            Notification.objects.filter(state=Outbox.PENDING)
            .values("channel")
            .annotate(n=Count("id"))
            .order_by()
        ):
            outbox.add_metric([row["channel"]], row["n"])
        yield outbox

        total = Run.objects.aggregate(total=Sum("cost_usd"))["total"] or 0
        yield CounterMetricFamily("vibe_spend_usd", "What agents have cost, in USD.", float(total))
        yield GaugeMetricFamily(
            "vibe_spend_today_usd", "What agents cost today, in USD.", float(costs.today_total())
        )


REGISTRY = CollectorRegistry(auto_describe=False)
REGISTRY.register(FactoryCollector())


def _bearer_ok(request: HttpRequest) -> bool:
    token = settings.VIBE_METRICS_TOKEN
    given = request.headers.get("Authorization", "")
    if not token or not given.startswith("Bearer "):
        return False
    presented = given.removeprefix("Bearer ").strip()
    return presented.isascii() and hmac.compare_digest(presented.encode(), token.encode())


@never_cache
@require_GET
def prometheus(request: HttpRequest) -> HttpResponse:
    if not settings.VIBE_METRICS_TOKEN:
        return HttpResponse("metrics are off: set VIBE_METRICS_TOKEN\n", status=404)
    if not _bearer_ok(request):
        response = HttpResponse("a bearer token is needed\n", status=401)
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)
