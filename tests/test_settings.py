"""Settings from the environment: nonsense is refused at start-up, production is hardened."""

from __future__ import annotations

import os
import secrets
import string
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from django.db.backends.sqlite3.base import DatabaseWrapper as SQLiteWrapper

from tasks_app.sqlite import read_pragmas
from vibe_project import settings as project_settings

REPO_ROOT = Path(__file__).resolve().parent.parent


def clean_env(var_dir: Path, **overrides: str) -> dict[str, str]:
    """The environment of a fresh start: none of our variables, a private var/ folder."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "VIBE_")) and key != "DATABASE_URL"
    }
    env["DJANGO_SETTINGS_MODULE"] = "vibe_project.settings"
    env["VIBE_VAR_DIR"] = str(var_dir)
    env.update(overrides)
    return env


def load_settings(var_dir: Path, **overrides: str) -> subprocess.CompletedProcess:
    code = "from django.conf import settings; print(settings.DEBUG, settings.VIBE_MAX_ATTEMPTS)"
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env=clean_env(var_dir, **overrides),
        capture_output=True,
        text=True,
        timeout=60,
    )


def random_secret_key() -> str:
    alphabet = string.ascii_letters + string.digits + "!@#%^&*(-_=+)"
    return "".join(secrets.choice(alphabet) for _ in range(50))


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DJANGO_DEBUG": "maybe"}, "DJANGO_DEBUG='maybe' is not a boolean; use 1 or 0."),
        ({"VIBE_MAX_ATTEMPTS": "x"}, "VIBE_MAX_ATTEMPTS='x' is not a whole number."),
        ({"VIBE_MAX_ATTEMPTS": "0"}, "VIBE_MAX_ATTEMPTS=0 must be at least 1."),
        ({"VIBE_RETRY_BASE_SECONDS": "soon"}, "VIBE_RETRY_BASE_SECONDS='soon' is not a number."),
        ({"VIBE_LEASE_SECONDS": "1"}, "VIBE_LEASE_SECONDS=1 must be at least 5."),
        (
            {"VIBE_SQLITE_BUSY_TIMEOUT_MS": "100"},
            "VIBE_SQLITE_BUSY_TIMEOUT_MS=100 must be at least",
        ),
        ({"DJANGO_DEBUG": "0"}, "DJANGO_SECRET_KEY must be set when DJANGO_DEBUG=0."),
        (
            {"DJANGO_DEBUG": "0", "DJANGO_SECRET_KEY": "k" * 50},
            "DJANGO_ALLOWED_HOSTS must be set when DJANGO_DEBUG=0.",
        ),
        ({"DATABASE_URL": "not a url"}, "DATABASE_URL is not a database URL I understand"),
        ({"VIBE_BASE_URL": "factory.example.com"}, "VIBE_BASE_URL='factory.example.com' must"),
        ({"VIBE_TIME_ZONE": "Mars/Base"}, "VIBE_TIME_ZONE='Mars/Base' is not a time zone"),
        ({"VIBE_LOG_LEVEL": "loud"}, "VIBE_LOG_LEVEL='LOUD' is not a log level"),
    ],
)
def test_nonsense_in_the_environment_stops_start_up(tmp_path, env, message):
    result = load_settings(tmp_path, **env)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert message in result.stderr


def test_a_clean_environment_starts_in_debug_with_a_kept_local_secret_key(tmp_path):
    first = load_settings(tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout.split() == ["True", "3"]
    key_file = tmp_path / "secret_key"
    key = key_file.read_text()
    assert len(key) >= 50
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert load_settings(tmp_path).returncode == 0
    assert key_file.read_text() == key  # the same key on the next start: sessions survive


@pytest.mark.parametrize(("raw", "value"), [("1", "True"), ("yes", "True"), ("off", "False")])
def test_debug_accepts_the_usual_spellings(tmp_path, raw, value):
    env = {"DJANGO_DEBUG": raw, "DJANGO_SECRET_KEY": "k" * 50, "DJANGO_ALLOWED_HOSTS": "a.b"}
    result = load_settings(tmp_path, **env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0] == value


def test_check_deploy_reports_no_issues_in_production(tmp_path):
    env = clean_env(
        tmp_path,
        DJANGO_DEBUG="0",
        DJANGO_SECRET_KEY=random_secret_key(),
        DJANGO_ALLOWED_HOSTS="example.com",
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout
    assert "WARNING" not in result.stdout + result.stderr


def test_env_helpers(monkeypatch):
    monkeypatch.setenv("VIBE_T_BOOL", " On ")
    monkeypatch.setenv("VIBE_T_INT", "42")
    monkeypatch.setenv("VIBE_T_FLOAT", "2.5")
    monkeypatch.setenv("VIBE_T_LIST", " a.example , ,b.example ")
    monkeypatch.setenv("VIBE_T_EMPTY", "  ")
    assert project_settings.env_bool("VIBE_T_BOOL", False) is True
    assert project_settings.env_bool("VIBE_T_EMPTY", True) is True
    assert project_settings.env_int("VIBE_T_INT", 1) == 42
    assert project_settings.env_int("VIBE_T_MISSING", 7) == 7
    assert project_settings.env_float("VIBE_T_FLOAT", 1.0) == 2.5
    assert project_settings.env_list("VIBE_T_LIST", []) == ["a.example", "b.example"]
    assert project_settings.env_list("VIBE_T_EMPTY", ["x"]) == ["x"]
    with pytest.raises(ImproperlyConfigured, match="must be at least 100"):
        project_settings.env_int("VIBE_T_INT", 1, minimum=100)
    with pytest.raises(ImproperlyConfigured, match="is not a number"):
        project_settings.env_float("VIBE_T_LIST", 1.0)


# --- SQLite pragmas ---------------------------------------------------------------------------

sqlite_only = pytest.mark.skipif(
    connection.vendor != "sqlite", reason="SQLite pragmas; PostgreSQL has none"
)


@sqlite_only
@pytest.mark.django_db
def test_sqlite_pragmas_read_back():
    pragmas = read_pragmas(connection)
    assert str(pragmas["journal_mode"]).lower() == "wal"
    assert pragmas["synchronous"] == 1  # NORMAL
    assert pragmas["busy_timeout"] >= 5000
    assert connection.settings_dict["OPTIONS"]["transaction_mode"] == "IMMEDIATE"


@sqlite_only
def test_a_database_that_refuses_the_pragmas_is_refused_at_connection(tmp_path, django_db_blocker):
    settings_dict = {
        **connection.settings_dict,
        "NAME": str(tmp_path / "stubborn.db"),
        "OPTIONS": {"init_command": "PRAGMA journal_mode=DELETE;PRAGMA synchronous=FULL;"},
    }
    probe = SQLiteWrapper(settings_dict, alias="pragma_probe")
    with django_db_blocker.unblock():
        try:
            with pytest.raises(ImproperlyConfigured, match="journal_mode is delete, not wal"):
                probe.ensure_connection()
        finally:
            probe.close()
