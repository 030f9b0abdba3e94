"""A calm first run: `make run PORT=… HOST=…`, the first admin login kept where only its owner
can read it and repeated at the end of the start-up banner, one log line per refused request,
and the product's 404 page with the default (debug) settings too."""

from __future__ import annotations

import io
import logging
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command

from tasks_app import first_login

pytestmark = pytest.mark.django_db

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def var_dir(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    return tmp_path


def test_ensureadmin_keeps_the_login_in_a_file_only_its_owner_can_read(var_dir):
    out = io.StringIO()
    call_command("ensureadmin", stdout=out)
    saved = var_dir / first_login.FILE_NAME
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    password = next(line for line in out.getvalue().splitlines() if "password:" in line)
    password = password.split("password:", 1)[1].strip()
    assert f"password: {password}" in saved.read_text()
    assert str(saved) in out.getvalue() and "readable only by you" in out.getvalue()
    assert first_login.still_valid() == ("admin", password)


def test_the_saved_login_goes_once_the_password_is_changed(var_dir):
    call_command("ensureadmin", stdout=io.StringIO())
    admin = User.objects.get(username="admin")
    admin.set_password("a new one of my own")
    admin.save()
    assert first_login.still_valid() is None
    assert not (var_dir / first_login.FILE_NAME).exists()


def test_a_login_file_left_with_loose_permissions_is_tightened(var_dir):
    target = var_dir / first_login.FILE_NAME
    target.write_text("old")
    target.chmod(0o644)
    first_login.save("admin", "pw")
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_the_banner_ends_with_the_first_login(var_dir):
    from workers_app.management.commands.runfactory import Command

    call_command("ensureadmin", stdout=io.StringIO())
    _, password = first_login.still_valid()
    out = io.StringIO()
    command = Command(stdout=out)
    command._banner("0.0.0.0", 8001, False, [], None, "simulated")
    lines = out.getvalue().strip().splitlines()
    assert "http://localhost:8001/" in lines[0]
    assert lines[-1].startswith(f"First login: admin / {password}")
    assert str(var_dir / first_login.FILE_NAME) in lines[-1]


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_run_takes_a_port_and_a_host():
    result = subprocess.run(
        ["make", "-n", "--always-make", "run", "PORT=8001", "HOST=0.0.0.0"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "manage.py runfactory --host 0.0.0.0 --port 8001" in result.stdout


def test_a_refused_request_logs_one_line_with_its_reason(client, outsider, caplog):
    client.force_login(outsider)
    with caplog.at_level(logging.WARNING, logger="django.request"):
        response = client.get("/")
    assert response.status_code == 403
    (record,) = [r for r in caplog.records if r.name == "django.request"]
    assert record.exc_info is None and record.exc_text is None
    message = record.getMessage()
    assert message.startswith("Forbidden (Permission denied): /")
    assert "ask an administrator to add you to the Viewer group" in message
    assert "\n" not in message


@pytest.mark.parametrize("url", ["/no-such-page/", "/tasks/999999/"])
def test_the_products_404_page_with_debug_on(client, viewer, settings, url):
    settings.DEBUG = True
    client.force_login(viewer)
    response = client.get(url)
    assert response.status_code == 404
    html = response.content.decode()
    assert "css/vibe.css" in html and "There is nothing at this address" in html
    assert "technical" not in html.lower() and "Using the URLconf" not in html


def test_the_products_403_page_with_debug_on(client, outsider, settings):
    settings.DEBUG = True
    client.force_login(outsider)
    response = client.get("/")
    assert response.status_code == 403
    assert b"Not allowed" in response.content and b"css/vibe.css" in response.content
