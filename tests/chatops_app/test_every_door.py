"""Every task action of the table (tasks_app/actions.py), and submit, through every door.

Each cell is a live request: a signed Slack slash command, a signed Discord command, and the CLI
with `--as`. The person who may act gets the same reply title at each door, and the task moves
once; the person who may not is refused at each door, with the same words in chat, and nothing
moves. The merge itself is git's business (tests/chatops_app/test_chat_delivery.py merges a real
repository); here it is stood in for, so the doors are what is tested.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from io import StringIO

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.core.management import CommandError, call_command

from chatops_app import grammar
from chatops_app.models import ChatLink
from tasks_app import actions, lifecycle
from tasks_app.actions import ACTION_PERMISSIONS
from tasks_app.choices import Status
from tasks_app.models import Task, TaskHistory
from tests.chatops_app import doors
from tests.chatops_app.factories import dead_letter_task

pytestmark = pytest.mark.django_db

SLACK_IDS = {"operator": "U0OTTO", "approver": "U0ALICE", "viewer": "U0VERA"}
DISCORD_IDS = {"operator": "300000000000000001", "approver": "300000000000000002"}
DISCORD_IDS["viewer"] = "300000000000000003"


@pytest.fixture(autouse=True)
def key(settings) -> Ed25519PrivateKey:
    settings.VIBE_SLACK_SIGNING_SECRET = doors.SLACK_SECRET
    private = Ed25519PrivateKey.generate()
    settings.VIBE_DISCORD_PUBLIC_KEY = doors.public_hex(private)
    return private


@pytest.fixture
def people(operator, approver, viewer) -> dict:
    found = {"operator": operator, "approver": approver, "viewer": viewer}
    for persona, user in found.items():
        ChatLink.objects.create(platform="slack", external_id=SLACK_IDS[persona], user=user)
        ChatLink.objects.create(platform="discord", external_id=DISCORD_IDS[persona], user=user)
    return found


@pytest.fixture
def merges(monkeypatch) -> None:
    """`delivery.merge` without git: the task is marked merged as the real one would."""
    from workers_app import delivery

    def merge(task_id, *, actor):
        task = lifecycle.merged(task_id, actor=actor, merge_commit="abc123")
        return delivery.Merged(task=task, commit="abc123", pushed_to="")

    monkeypatch.setattr(delivery, "merge", merge)


def _delivering(delivery_state: str) -> Task:
    task = Task.objects.create(
        goal="Add the hello page",
        lane="backend",
        status=Status.REVIEW_NEEDED,
        delivery="merge",
        delivery_state=delivery_state,
        branch="vibe/test/task",
        base_branch="main",
        conflicts=["app.py"] if delivery_state == "conflict" else [],
    )
    return task


@dataclass(frozen=True)
class Case:
    action: str
    allowed: str  # the persona who may
    refused: str  # one who may not
    arguments: str = ""  # after the id ("" for none)

    def ready(self, worker) -> Task:
        """A task this action applies to."""
        if self.action == "approve":
            return lifecycle.submit("Drop a column", lane="backend", actor="cli", risk="high")
        if self.action == "retry":
            return dead_letter_task(worker)
        if self.action == "cancel":
            return lifecycle.submit("Stop me", lane="backend", actor="cli")
        return _delivering("conflict" if self.action == "rebase" else "awaiting_merge")

    def moved(self, task: Task) -> bool:
        task.refresh_from_db()
        if self.action == "merge":
            return task.delivery_state == "merged"
        return task.status == (Status.CANCELLED if self.action == "cancel" else Status.PENDING)


CASES = [
    Case("approve", allowed="approver", refused="operator"),
    Case("retry", allowed="operator", refused="viewer"),
    Case("cancel", allowed="operator", refused="viewer"),
    Case("merge", allowed="approver", refused="operator"),
    Case("rework", allowed="operator", refused="viewer", arguments="Use the new logo"),
    Case("rebase", allowed="operator", refused="viewer", arguments="Keep their header"),
]


def test_the_cases_cover_every_action_of_the_table():
    assert sorted(case.action for case in CASES) == sorted(actions.ACTIONS)


def _slack(client, text: str, persona: str) -> str:
    return doors.slack_command(client, text, SLACK_IDS[persona]).json()["text"]


def _discord(client, key, text: str, persona: str) -> str:
    sub, *rest = text.split(" ", 2)
    options: list[dict] = []
    if rest:
        options.append({"type": 4, "name": "id", "value": int(rest[0])})
    if len(rest) > 1:
        options.append({"type": 3, "name": "comment", "value": rest[1]})
    data = {"id": "2", "name": "vibe", "type": 1, "options": [{"type": 1, "name": sub}]}
    if options:
        data["options"][0]["options"] = options
    interaction = doors.discord_interaction(2, data, DISCORD_IDS[persona])
    response = doors.discord_post(client, key, json.dumps(interaction).encode())
    return response.json()["data"]["content"]


def _cli(text: str, persona_user) -> str:
    action, task_id, *comment = text.split(" ", 2)
    out = StringIO()
    call_command("vibe", action, task_id, *comment, "--as", persona_user.username, stdout=out)
    return out.getvalue()


def _unescape_discord(content: str) -> str:
    return re.sub(r"\\(.)", r"\1", content).replace("**", "")


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.action)
@pytest.mark.parametrize("door", ["slack", "discord", "cli"])
def test_the_person_who_may_acts_and_every_door_says_the_same(
    client, key, people, worker, merges, case, door
):
    task = case.ready(worker)
    text = f"{case.action} {task.pk}" + (f" {case.arguments}" if case.arguments else "")
    expected = grammar.TITLES[case.action].format(pk=task.pk, base="main")

    if door == "slack":
        answer = _slack(client, text, case.allowed)
    elif door == "discord":
        answer = _unescape_discord(_discord(client, key, text, case.allowed))
    else:
        answer = _cli(text, people[case.allowed])

    assert answer.splitlines()[0] == expected, answer
    assert case.moved(task)
    assert TaskHistory.objects.filter(task=task).last().actor.split(":")[0] in (
        "slack",
        "discord",
        "user",
    )


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.action)
@pytest.mark.parametrize("door", ["slack", "discord", "cli"])
def test_the_person_who_may_not_is_refused_at_every_door(
    client, key, people, worker, merges, case, door
):
    task = case.ready(worker)
    text = f"{case.action} {task.pk}" + (f" {case.arguments}" if case.arguments else "")
    user = people[case.refused]
    permission = ACTION_PERMISSIONS[case.action]
    before = (task.status, task.delivery_state)

    if door == "slack":
        answer = _slack(client, text, case.refused)
    elif door == "discord":
        answer = _unescape_discord(_discord(client, key, text, case.refused))
    else:
        with pytest.raises(CommandError) as refused:
            _cli(text, user)
        answer = str(refused.value)

    if door == "cli":  # the shell's check: the same person, action and permission
        assert f"{user.username} does not have the permission to {case.action}" in answer
        assert f"({permission})" in answer
    else:
        assert answer.removeprefix("⚠️ ").splitlines()[0] == (
            f"{user.username} does not have the permission to {case.action} tasks ({permission})."
        )
    task.refresh_from_db()
    assert (task.status, task.delivery_state) == before


@pytest.mark.parametrize("door", ["slack", "discord"])
def test_submit_from_chat_answers_with_the_id_and_link(client, key, people, door, settings):
    settings.VIBE_BASE_URL = "https://factory.example.com"
    if door == "slack":
        answer = _slack(client, "submit frontend key:k-7 Add a dark theme <b>now</b>", "operator")
    else:
        data = {
            "id": "2",
            "name": "vibe",
            "type": 1,
            "options": [
                {
                    "type": 1,
                    "name": "submit",
                    "options": [  # in the order a person filled them in
                        {"type": 3, "name": "goal", "value": "Add a dark theme <b>now</b>"},
                        {"type": 3, "name": "key", "value": "k-7"},
                        {"type": 3, "name": "lane", "value": "frontend"},
                    ],
                }
            ],
        }
        interaction = doors.discord_interaction(2, data, DISCORD_IDS["operator"])
        response = doors.discord_post(client, key, json.dumps(interaction).encode())
        answer = _unescape_discord(response.json()["data"]["content"])

    task = Task.objects.get(idempotency_key="k-7")
    assert (task.lane, task.goal, task.status) == (
        "frontend",
        "Add a dark theme <b>now</b>",
        "pending",
    )
    assert answer.splitlines()[0] == f"Task #{task.pk} submitted to the frontend lane"
    assert f"https://factory.example.com/tasks/{task.pk}/" in answer
    assert task.history.get().actor.startswith(f"{door}:")


def test_submit_needs_the_add_permission_and_a_link(client, key, people):
    answer = _slack(client, "submit backend Anything at all", "viewer")
    assert answer == "vera does not have the permission to submit tasks (tasks_app.add_task)."
    unlinked = doors.slack_command(client, "submit backend Anything", "U0NOBODY").json()["text"]
    assert unlinked.startswith("You are not linked to a Vibe Factory user, so you cannot submit")
    assert "vibe link slack U0NOBODY" in unlinked
    assert not Task.objects.exists()


def test_submit_with_the_same_key_twice_makes_one_task(people):
    operator = people["operator"]
    first = grammar.execute(
        "submit qa key:once Check the login", user=operator, actor="slack:U0OTTO", door="slack"
    )
    again = grammar.execute(
        "submit qa key:once Check the login", user=operator, actor="slack:U0OTTO", door="slack"
    )
    assert first.ok and again.ok
    assert again.title == f"Task #{first.data['id']} was already submitted with key 'once'"
    assert again.data["existing"] and Task.objects.count() == 1


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("submit nowhere Do it", "unknown lane 'nowhere'"),
        ("submit backend risk:extreme Do it", "unknown risk 'extreme'"),
        ("submit backend priority:high Do it", "priority 'high' is not a whole number"),
        ("submit backend priority:101 Do it", "priority 101 is out of range"),
    ],
)
def test_submit_refuses_bad_input_with_the_lifecycles_words(people, text, error):
    reply = grammar.execute(text, user=people["operator"], actor="slack:U0OTTO", door="slack")
    assert not reply.ok and error in reply.title
    assert not Task.objects.exists()


def test_a_high_risk_submission_waits_for_approval_with_a_button(people):
    reply = grammar.execute(
        "submit backend risk:high priority:80 Drop the old tables",
        user=people["operator"],
        actor="discord:1",
        door="discord",
    )
    task = Task.objects.get()
    assert reply.title == f"Task #{task.pk} submitted; high risk, it waits for approval"
    assert (task.risk, task.priority, task.status) == ("high", 80, Status.AWAITING_APPROVAL)
    assert [(b.action, b.task_id) for b in reply.buttons] == [("approve", task.pk)]


# --- Several ids at once -----------------------------------------------------------------------


def test_retry_of_several_ids_answers_each(client, people, worker):
    first, second = dead_letter_task(worker), dead_letter_task(worker, goal="second")
    pending = lifecycle.submit("Fine as it is", lane="backend", actor="cli")

    answer = _slack(client, f"retry {first.pk} #{second.pk},{pending.pk} {first.pk}", "operator")

    lines = answer.splitlines()
    assert lines[0] == "2 of 3 tasks retried"
    assert lines[1:] == [
        f"✓ Task #{first.pk} reset to pending (attempts cleared)",
        f"✓ Task #{second.pk} reset to pending (attempts cleared)",
        f"✗ task {pending.pk} is pending; only dead letter or blocked tasks can be retried",
    ]
    assert Task.objects.filter(status=Status.PENDING).count() == 3


def test_cancel_of_several_ids_from_discord(client, key, people):
    tasks = [lifecycle.submit(f"Stop {n}", lane="backend", actor="cli") for n in range(3)]
    data = {
        "id": "2",
        "name": "vibe",
        "type": 1,
        "options": [
            {
                "type": 1,
                "name": "cancel",
                "options": [
                    {"type": 3, "name": "more", "value": f"{tasks[1].pk} {tasks[2].pk}"},
                    {"type": 4, "name": "id", "value": tasks[0].pk},
                ],
            }
        ],
    }
    interaction = doors.discord_interaction(2, data, DISCORD_IDS["operator"])
    content = doors.discord_post(client, key, json.dumps(interaction).encode()).json()["data"]
    assert _unescape_discord(content["content"]).splitlines()[0] == "3 of 3 tasks cancelled"
    assert set(Task.objects.values_list("status", flat=True)) == {Status.CANCELLED}


def test_several_ids_by_someone_who_may_not_are_refused_once_and_each_audited(people, worker):
    from tasks_app.models import AuditEntry

    ids = [dead_letter_task(worker).pk for _ in range(3)]
    reply = grammar.execute(
        "retry " + " ".join(map(str, ids)),
        user=people["viewer"],
        actor="slack:U0VERA",
        door="slack",
    )
    assert reply.title == "vera does not have the permission to retry tasks (tasks_app.retry_task)."
    refused = AuditEntry.objects.filter(outcome="refused", action="retry")
    assert sorted(refused.values_list("target", flat=True)) == sorted(f"task {pk}" for pk in ids)
    assert not Task.objects.filter(status=Status.PENDING).exists()


def test_the_cli_takes_several_ids_and_exits_1_when_one_is_refused(worker):
    dead = dead_letter_task(worker)
    pending = lifecycle.submit("Fine", lane="backend", actor="cli")
    out = StringIO()
    with pytest.raises(CommandError, match="1 of 2 tasks retried"):
        call_command("vibe", "retry", str(dead.pk), str(pending.pk), stdout=out)
    assert f"✓ Task #{dead.pk} reset to pending" in out.getvalue()
    assert f"✗ task {pending.pk} is pending" in out.getvalue()
    out = StringIO()
    call_command("vibe", "cancel", str(dead.pk), str(pending.pk), stdout=out)
    assert out.getvalue().splitlines()[0] == "2 of 2 tasks cancelled"


def test_cli_retry_all_lists_what_it_will_do_and_asks_first(worker, monkeypatch, capsys):
    timeouts = [dead_letter_task(worker, error_type="timeout") for _ in range(2)]
    other = dead_letter_task(worker, error_type="agent_exit")
    monkeypatch.setattr("sys.stdin", StringIO("n\n"))
    err = StringIO()
    with pytest.raises(CommandError, match="nothing was retried"):
        call_command("vibe", "retry", "--all", "--error", "timeout", stdout=StringIO(), stderr=err)
    listing = err.getvalue()
    assert "This retries 2 tasks:" in listing
    assert f"#{timeouts[0].pk} (backend, timeout)" in listing
    assert f"#{other.pk}" not in listing
    assert not Task.objects.filter(status=Status.PENDING).exists()

    monkeypatch.setattr("sys.stdin", StringIO("yes\n"))
    out = StringIO()
    call_command("vibe", "retry", "--all", "--lane", "backend", stdout=out, stderr=StringIO())
    assert out.getvalue().splitlines()[0] == "3 of 3 tasks retried"
    assert Task.objects.filter(status=Status.PENDING).count() == 3


def test_cli_retry_all_with_yes_does_not_ask(worker, monkeypatch):
    task = dead_letter_task(worker)
    monkeypatch.setattr("sys.stdin", StringIO(""))  # would answer "no"
    out = StringIO()
    call_command("vibe", "retry", "--all", "--yes", "--json", stdout=out)
    data = json.loads(out.getvalue())
    assert data["ok"] and data["id"] == task.pk
    out = StringIO()
    call_command("vibe", "retry", "--all", "--yes", stdout=out)
    assert out.getvalue().strip() == "Nothing to retry"


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["retry"], "say which tasks"),
        (["retry", "5", "--all"], "give task ids or --all, not both"),
        (["retry", "5", "--lane", "qa"], "go with --all"),
    ],
)
def test_cli_retry_usage_errors(args, error):
    with pytest.raises(CommandError, match=error):
        call_command("vibe", *args, stdout=StringIO())


def test_cli_retry_all_is_refused_before_listing_for_someone_who_may_not(viewer, worker):
    dead_letter_task(worker)
    err = StringIO()
    with pytest.raises(CommandError, match="does not have the permission to retry"):
        call_command("vibe", "retry", "--all", "--as", viewer.username, stderr=err)
    assert "This retries" not in err.getvalue()
