"""Budgets: per piece of work, per day in VIBE_TIME_ZONE, told once a day; what a run cost."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone

from chatops_app.models import Notification
from tasks_app import lifecycle
from tasks_app.choices import NotificationEvent
from tasks_app.models import Run, Task
from tests.conftest import REPO_ROOT
from vibe_project import settings as settings_module
from workers_app import budgets
from workers_app.adapters.base import Usage
from workers_app.models import Worker

NEW_YORK = ZoneInfo("America/New_York")


def _run(task: Task, cost: str | None, *, at: datetime | None = None, **fields) -> Run:
    run = Run.objects.create(task=task, cost_usd=None if cost is None else Decimal(cost), **fields)
    if at is not None:
        Run.objects.filter(pk=run.pk).update(started_at=at)
    return run


@pytest.fixture
def work(db) -> tuple[Task, Task]:
    """Backend work that finished its builder run, and the security review it spawned."""
    Worker.objects.create(worker_id="@budget-b", lane="backend")
    task = lifecycle.submit(
        "Add a health endpoint", lane="backend", actor="cli", pipeline="backend"
    )
    claimed = lifecycle.claim_next("@budget-b")
    lifecycle.complete(claimed.pk, worker_id="@budget-b", token=claimed.claim_token)
    review = Task.objects.get(parent=task)
    return Task.objects.get(pk=task.pk), review


# --- Per piece of work ------------------------------------------------------------------------


def test_no_task_budget_means_no_limit(work, settings):
    settings.VIBE_TASK_BUDGET_USD = None
    task, _review = work
    _run(task, "1000")

    assert budgets.task_budget_reached(task) is None
    assert budgets.budget_left(task) is None


def test_task_budget_counts_builder_and_review_runs_of_the_work(work, settings):
    settings.VIBE_TASK_BUDGET_USD = Decimal("2.00")
    task, review = work
    _run(task, "0.75")
    _run(task, None)  # a run whose cost is unknown counts nothing
    _run(review, "0.50")

    assert budgets.task_budget_reached(task) is None
    assert budgets.task_budget_reached(review) is None
    assert budgets.budget_left(review) == Decimal("0.75")

    _run(review, "0.75")  # exactly at the budget: reached

    reason = f"task #{task.pk} has spent $2.00 of its $2.00 budget (VIBE_TASK_BUDGET_USD)"
    assert budgets.task_budget_reached(task) == reason
    assert budgets.task_budget_reached(review) == reason
    assert budgets.budget_left(task) == Decimal("0")


def test_budget_left_never_goes_below_zero(work, settings):
    settings.VIBE_TASK_BUDGET_USD = Decimal("1")
    task, _review = work
    _run(task, "3.5")

    assert budgets.budget_left(task) == Decimal("0")
    assert "has spent $3.50 of its $1.00 budget" in budgets.task_budget_reached(task)


# --- Per day ------------------------------------------------------------------------------------


@pytest.fixture
def new_york(settings):
    settings.TIME_ZONE = "America/New_York"
    settings.VIBE_DAILY_BUDGET_USD = Decimal("10")


def _at(year, month, day, hour, minute=0, tz=NEW_YORK) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=tz)


def test_the_day_starts_at_midnight_in_vibe_time_zone(work, new_york):
    task, _review = work
    now = _at(2026, 6, 15, 10)
    _run(task, "9", at=_at(2026, 6, 14, 23, 59))  # yesterday in New York (03:59 UTC today)
    _run(task, "6", at=_at(2026, 6, 15, 0, 1))

    assert budgets.daily_budget_reached(now) is None

    _run(task, "4", at=_at(2026, 6, 15, 9))

    assert budgets.daily_budget_reached(now) == (
        "the factory has spent $10.00 today (2026-06-15, America/New_York) of its $10.00 "
        "daily budget (VIBE_DAILY_BUDGET_USD)"
    )
    assert budgets.daily_budget_reached(_at(2026, 6, 16, 0, 0)) is None  # a new day


def test_no_daily_budget_means_no_limit(work, settings):
    settings.VIBE_DAILY_BUDGET_USD = None
    task, _review = work
    _run(task, "1000000")

    assert budgets.daily_budget_reached() is None
    assert budgets.notify_daily_budget() is False
    assert not Notification.objects.filter(event=NotificationEvent.BUDGET_REACHED).exists()


def test_people_are_told_once_per_day(work, new_york):
    task, _review = work
    now = _at(2026, 6, 15, 10)

    assert budgets.notify_daily_budget(now) is False  # nothing spent yet

    _run(task, "12.5", at=_at(2026, 6, 15, 8))
    assert budgets.notify_daily_budget(now) is True
    assert budgets.notify_daily_budget(now + timedelta(hours=5)) is False

    rows = Notification.objects.filter(event=NotificationEvent.BUDGET_REACHED)
    assert sorted(rows.values_list("channel", flat=True)) == ["discord", "slack"]
    row = rows.get(channel="slack")
    assert row.task_id is None
    assert row.key == "budget_reached:2026-06-15"
    assert row.data == {
        "day": "2026-06-15",
        "time_zone": "America/New_York",
        "spent_usd": "12.500000",
        "budget_usd": "10",
    }

    _run(task, "11", at=_at(2026, 6, 16, 1))
    assert budgets.notify_daily_budget(_at(2026, 6, 16, 2)) is True  # the next day tells again
    assert rows.count() == 4


NOTIFY_SCRIPT = (
    "import django; django.setup(); "
    "from workers_app import budgets; print('told' if budgets.notify_daily_budget() else 'quiet')"
)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_racing_workers_tell_people_once(subprocess_env):
    Worker.objects.create(worker_id="@budget-r", lane="backend")
    task = lifecycle.submit("Spend money", lane="backend", actor="cli", pipeline="none")
    _run(task, "30", at=timezone.now())
    env = {**subprocess_env, "VIBE_DAILY_BUDGET_USD": "25"}

    procs = [
        subprocess.Popen(
            [sys.executable, "-c", NOTIFY_SCRIPT],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outputs = [proc.communicate(timeout=60) for proc in procs]

    assert [p.returncode for p in procs] == [0, 0, 0, 0], outputs
    said = sorted(out.strip() for out, _err in outputs)
    assert said == ["quiet", "quiet", "quiet", "told"], outputs
    assert Notification.objects.filter(event=NotificationEvent.BUDGET_REACHED).count() == 2


# --- What a run cost ----------------------------------------------------------------------------


def test_the_agents_own_figure_wins():
    usage = Usage(model="gpt-5", input_tokens=10**6, output_tokens=10**6, cost_usd=Decimal("0.42"))

    assert budgets.run_cost(usage) == Decimal("0.42")


def test_openai_tokens_are_priced_without_charging_cached_input_twice():
    # Codex counts cached tokens inside input_tokens.
    usage = Usage(
        model="gpt-5-codex", input_tokens=10_000, cache_read_tokens=4_000, output_tokens=2_000
    )

    assert budgets.run_cost(usage) == Decimal("0.028000")  # 6k×1.25 + 2k×10 + 4k×0.125, /1M


def test_claude_tokens_of_a_dated_model_use_its_family_price():
    usage = Usage(
        model="claude-sonnet-4-5-20250929",
        input_tokens=1_000,
        output_tokens=500,
        cache_read_tokens=10_000,
        cache_write_tokens=2_000,
    )

    assert budgets.run_cost(usage) == Decimal("0.021000")  # 1k×3 + 0.5k×15 + 10k×0.3 + 2k×3.75


def test_provider_prefixes_and_longest_names_pick_the_price():
    assert budgets.model_price("openai/gpt-5-mini")["input"] == Decimal("0.25")
    assert budgets.model_price("gemini-2.5-flash-lite")["output"] == Decimal("0.4")
    assert budgets.model_price("gemini/gemini-2.5-flash")["output"] == Decimal("2.5")
    assert budgets.model_price("gpt-5x") is None  # not a version of gpt-5


def test_unknown_model_or_no_tokens_is_no_figure():
    assert budgets.run_cost(Usage(model="my-local-llama", input_tokens=5, output_tokens=5)) is None
    assert budgets.run_cost(Usage(model="gpt-5")) is None
    assert budgets.run_cost(Usage(model="", input_tokens=5)) is None


def test_prices_come_from_settings(settings):
    settings.VIBE_MODEL_PRICES = settings_module.env_model_prices(
        "unset-var", {"m": {"input": 1, "output": 2}}
    )

    usage = Usage(model="m", input_tokens=1_000_000, output_tokens=500_000, cache_read_tokens=0)

    assert budgets.run_cost(usage) == Decimal("2.000000")


# --- The settings -------------------------------------------------------------------------------


def test_price_table_can_be_extended_and_overridden_as_json(monkeypatch):
    monkeypatch.setenv(
        "VIBE_TEST_PRICES",
        '{"gpt-5": {"input": 9, "output": 9},'
        ' "house-model": {"input": 0.5, "output": 1.5, "cache_read": 0}}',
    )

    prices = settings_module.env_model_prices(
        "VIBE_TEST_PRICES", settings_module.DEFAULT_MODEL_PRICES
    )

    assert prices["gpt-5"]["input"] == Decimal("9") and prices["gpt-5"]["cache_write"] == Decimal(
        "9"
    )
    assert prices["house-model"]["cache_read"] == Decimal("0")
    assert prices["claude-opus-4-5"]["output"] == Decimal("25")


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("VIBE_DAILY_BUDGET_USD", "lots", "is not an amount of dollars"),
        ("VIBE_TASK_BUDGET_USD", "0", "must be more than 0 dollars; unset it for no budget"),
        ("VIBE_TASK_BUDGET_USD", "-3", "must be more than 0 dollars"),
        ("VIBE_DAILY_BUDGET_USD", "NaN", "must be more than 0 dollars"),
        ("VIBE_WORKER_FAILURE_LIMIT", "0", "must be at least 1"),
        ("VIBE_MODEL_PRICES", "{not json", "is not valid JSON"),
        ("VIBE_MODEL_PRICES", '{"m": {"input": -1, "output": 1}}', "must be 0 or more"),
        ("VIBE_MODEL_PRICES", '{"m": {"input": 1}}', "needs at least input and output prices"),
        ("VIBE_MODEL_PRICES", '{"m": {"input": 1, "output": 1, "cahce": 1}}', "unknown key"),
        ("VIBE_GIT_AUTHOR", "just a name", "must look like 'Vibe Factory <vibe@example.com>'"),
    ],
)
def test_nonsense_settings_are_refused(name, value, message, tmp_path):
    env = {"PATH": "/usr/bin:/bin", "VIBE_VAR_DIR": str(tmp_path), name: value}

    done = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=REPO_ROOT,
        env={**env, "DJANGO_SETTINGS_MODULE": "vibe_project.settings"},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode != 0
    assert "ImproperlyConfigured" in done.stderr and message in done.stderr, done.stderr


def test_sensible_budget_settings_are_read(tmp_path):
    script = (
        "import django; django.setup(); from django.conf import settings as s; "
        "print(s.VIBE_TASK_BUDGET_USD, s.VIBE_DAILY_BUDGET_USD, s.VIBE_WORKER_FAILURE_LIMIT, "
        "repr(s.VIBE_GIT_AUTHOR))"
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "VIBE_VAR_DIR": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "vibe_project.settings",
        "VIBE_TASK_BUDGET_USD": "$2.50",
        "VIBE_DAILY_BUDGET_USD": "40",
        "VIBE_GIT_AUTHOR": "Vibe Bot <bot@example.com>",
    }

    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )

    assert done.stdout.split(maxsplit=3) == ["2.50", "40", "3", "'Vibe Bot <bot@example.com>'\n"]
