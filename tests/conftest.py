"""Shared fixtures: the people who use the factory, and a database URL for real subprocesses."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from django.contrib.auth.models import Group, User
from django.db import connection

pytest_plugins = ["tests.standins.clis"]

REPO_ROOT = Path(__file__).resolve().parent.parent
AGENTS_DIR = REPO_ROOT / "tests" / "agents"


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings) -> None:
    """Real hashing costs ~0.3 s per persona; tests check permissions, not hash strength.

    The one override for the whole suite: autouse fixtures run before the personas, and the
    e2e live server runs in this process, so its logins use it too."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def _reinstall_migration_rows() -> None:
    """Put back the rows data migrations made (default pool, roles) after a flush."""
    from importlib import import_module

    from django.apps import apps

    pool = import_module("workers_app.migrations.0002_default_pool")
    pool.install_pool(apps, None)
    from workers_app.models import Worker

    # As migration 0005 leaves them: the default pool is what runfactory starts.
    Worker.objects.filter(pk__in=[row[0] for row in pool.DEFAULT_POOL]).update(managed=True)
    import_module("tasks_app.migrations.0002_roles").create_roles(apps, None)
    import_module("tasks_app.migrations.0008_delivery_roles").grant(apps, None)
    import_module("tasks_app.migrations.0010_submitter_role").grant(apps, None)


DB_FIXTURES = {"db", "transactional_db", "live_server", "django_db_reset_sequences"}


@pytest.fixture(autouse=True)
def _migration_rows(request) -> None:
    """Every database test starts with the rows a fresh `migrate` gives.

    A transactional test ends with a flush that empties every table, the default pool and the
    roles too; pytest-django runs those tests last, but a later one would otherwise start empty.
    """
    if not (
        request.node.get_closest_marker("django_db") or DB_FIXTURES & set(request.fixturenames)
    ):
        return
    request.getfixturevalue("_django_db_helper")
    from workers_app import workspace
    from workers_app.models import Worker

    workspace.instance_id.cache_clear()  # each test's database has its own instance id

    if not Worker.objects.filter(pk="@backend-1").exists() or not Group.objects.exists():
        _reinstall_migration_rows()


def _person(username: str, *groups: str, **extra) -> User:
    user = User.objects.create_user(username=username, password="pw-" + username, **extra)
    for name in groups:
        user.groups.add(Group.objects.get(name=name))
    return user


@pytest.fixture
def viewer(db) -> User:
    return _person("vera", "Viewer")


@pytest.fixture
def operator(db) -> User:
    return _person("otto", "Viewer", "Operator")


@pytest.fixture
def approver(db) -> User:
    return _person("alice", "Viewer", "Operator", "Approver")


@pytest.fixture
def outsider(db) -> User:
    return _person("mallory")


@pytest.fixture
def superuser(db) -> User:
    return User.objects.create_superuser("root", "root@example.com", "pw-root")


def database_url_for_subprocess() -> str:
    """The URL of the test database, for worker processes the tests start."""
    settings_dict = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{Path(settings_dict['NAME']).resolve()}"
    host = settings_dict.get("HOST") or "127.0.0.1"
    port = settings_dict.get("PORT") or 5432
    user = settings_dict.get("USER") or "postgres"
    return f"postgres://{user}@{host}:{port}/{settings_dict['NAME']}"


@pytest.fixture
def subprocess_env(transactional_db) -> dict[str, str]:
    """Environment for `manage.py` subprocesses that share this test's database."""
    env = dict(os.environ)
    env["DATABASE_URL"] = database_url_for_subprocess()
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("DJANGO_SETTINGS_MODULE", "vibe_project.settings")
    return env


@pytest.fixture
def python() -> str:
    return sys.executable
