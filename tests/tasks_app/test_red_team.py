"""The red team's smaller findings at the CLI and the lifecycle's front door (issue 11)."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command

from chatops_app.models import ChatLink
from tasks_app import lifecycle
from tasks_app.models import AuditEntry, Run, RunEvent, Task

pytestmark = pytest.mark.django_db

ESCAPES = "\x1b]0;pwned\x07\x1b[2J\x9b31m\x7f\r"


def vibe(*args: str) -> str:
    out = StringIO()
    call_command("vibe", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


# --- an inactive user named by --as -----------------------------------------------------------


@pytest.fixture
def retired_root(db) -> User:
    """A superuser whose account was switched off: they keep every flag but is_active."""
    return User.objects.create_superuser("oldroot", "old@example.com", "pw", is_active=False)


@pytest.mark.parametrize(
    "args",
    [
        ("link", "slack", "U024BE7LH", "oldroot"),
        ("unlink", "slack", "U024BE7LH"),
        ("submit", "Drop the tables", "--lane", "backend"),
        ("cancel", "1"),
        ("pause", "@backend-1"),
        ("status",),
        ("dlq",),
        ("task", "1"),
        ("reap",),
    ],
    ids=lambda args: args[0],
)
def test_an_inactive_user_named_by_as_is_refused_by_every_subcommand(retired_root, args):
    lifecycle.submit("Something to cancel", lane="backend", actor="cli")
    ChatLink.objects.create(platform="slack", external_id="U024BE7LH", user=retired_root)
    with pytest.raises(CommandError, match="user oldroot is inactive"):
        vibe(*args, "--as", "oldroot")
    assert ChatLink.objects.get().external_id == "U024BE7LH"  # neither re-linked nor unlinked
    assert Task.objects.get().status == "pending"


def test_an_inactive_users_refused_action_is_audited(retired_root):
    task = lifecycle.submit("Keep running", lane="backend", actor="cli")
    with pytest.raises(CommandError, match="user oldroot is inactive"):
        vibe("cancel", str(task.pk), "--as", "oldroot")
    entry = AuditEntry.objects.get(outcome="refused")
    assert (entry.action, entry.actor, entry.door) == ("cancel", "user:oldroot", "cli")
    assert "inactive" in entry.reason


# --- terminal escape sequences in text output ---------------------------------------------------


def test_vibe_task_shows_agent_controlled_control_characters_as_visible_escapes():
    task = lifecycle.submit(f"Fix {ESCAPES} the banner", lane="backend", actor="cli")
    Task.objects.filter(pk=task.pk).update(
        last_error_type="agent_exit", last_error=f"boom{ESCAPES}\nsecond line\tok"
    )
    run = Run.objects.create(task=task, worker_id="@backend-1", attempt=1, role="builder")
    RunEvent.objects.create(run=run, seq=1, kind="output", text=f"agent says{ESCAPES}")

    out = vibe("task", str(task.pk), "--transcript")
    assert not any(ch in out for ch in "\x1b\x07\x9b\x7f\r")
    assert "Fix \\x1b]0;pwned\\x07\\x1b[2J\\x9b31m\\x7f\\x0d the banner" in out
    assert "agent says\\x1b]0;pwned" in out
    assert "\tok" in out  # tabs and newlines are text, not control
    # --json is for scripts: JSON escapes every control character itself, the data stays exact.
    data = json.loads(vibe("task", str(task.pk), "--json"))
    assert data["goal"] == f"Fix {ESCAPES} the banner"


def test_cli_error_lines_show_control_characters_as_visible_escapes():
    """The one error line on stderr is text the CLI prints too."""
    from chatops_app.management.commands.vibe import Command

    err = StringIO()
    command = Command(stdout=StringIO(), stderr=err)
    command._called_from_command_line = True  # as `manage.py vibe …`: one line, exit status 1
    options = vars(command.create_parser("manage.py", "vibe").parse_args(["pause", "@a\x1b[2J"]))
    with pytest.raises(SystemExit):
        command.execute(*options.pop("args", ()), **options)
    assert "\x1b" not in err.getvalue()
    assert "worker @a\\x1b[2J does not exist" in err.getvalue()


# --- --from-file inputs that used to traceback ------------------------------------------------


def task_file(tmp_path, *lines: str):
    path = tmp_path / "tasks.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


FIRST = json.dumps({"goal": "A fine first task", "lane": "backend"})


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"goal": "half a character \\ud800", "lane": "backend"}', "not valid Unicode"),
        ('{"goal": "' + "\\udc00" + '", "lane": "backend"}', "not valid Unicode"),
        ('{"goal": "nul \\u0000 byte", "lane": "backend"}', "NUL character"),
        ('{"goal": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
        ('{"goal": "big", "priority": ' + "9" * 5000 + "}", "not valid JSON"),
    ],
    ids=["lone-high-surrogate", "lone-low-surrogate", "nul", "deep-nesting", "huge-number"],
)
def test_from_file_refuses_bad_lines_naming_the_line_and_submits_nothing(tmp_path, line, message):
    path = task_file(tmp_path, FIRST, line)
    with pytest.raises(CommandError, match=f"^{path}: line 2: .*{message}"):
        vibe("submit", "--from-file", path)
    assert not Task.objects.exists()


@pytest.mark.parametrize(
    ("goal", "message"),
    [
        ("nul \x00 in the goal", "NUL character"),
        ("a lone \ud800 surrogate", "not valid Unicode"),
    ],
)
def test_validate_new_refuses_goals_no_database_can_store(goal, message):
    with pytest.raises(lifecycle.InvalidInput, match=message):
        lifecycle.validate_new(lifecycle.NewTask(goal=goal, lane="backend"))
    with pytest.raises(lifecycle.InvalidInput, match=message):
        lifecycle.submit(goal, lane="backend", actor="cli")
    with pytest.raises(lifecycle.InvalidInput, match="not valid Unicode"):
        lifecycle.submit("fine goal", lane="backend", actor="cli", key="key-\udfff")
    assert not Task.objects.exists()
