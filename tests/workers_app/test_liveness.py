"""Liveness is a heartbeat everywhere; a stale worker can be retired; runfactory starts the pool.

Personas: an operator (may manage workers), a viewer (may only look), an unlinked chat user.
"""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.admin import helpers
from django.contrib.messages import get_messages
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from chatops_app.grammar import execute, status_reply, worker_reply
from tasks_app import actions, dashboard, lifecycle
from tasks_app.choices import Status
from tasks_app.models import AuditEntry, Task
from workers_app.management.commands import runfactory
from workers_app.management.commands.runworker import Command as RunWorker
from workers_app.models import Worker, WorkerStatus

pytestmark = pytest.mark.django_db

POOL = reverse("workers_app:pool")
ADMIN_WORKERS = reverse("admin:workers_app_worker_changelist")
HTMX = {"HTTP_HX_REQUEST": "true", "HTTP_HX_CURRENT_URL": "http://testserver/workers/"}


def beating(*worker_ids: str) -> None:
    Worker.objects.filter(pk__in=worker_ids).update(last_heartbeat=timezone.now())


def silent(*worker_ids: str, minutes: int = 7) -> None:
    then = timezone.now() - timedelta(minutes=minutes)
    Worker.objects.filter(pk__in=worker_ids).update(last_heartbeat=then)


def vibe(*args: str) -> str:
    out = StringIO()
    call_command("vibe", *args, stdout=out)
    return out.getvalue()


def audit_rows(action: str) -> list[tuple[str, str, str, str]]:
    return list(
        AuditEntry.objects.filter(action=action)
        .order_by("id")
        .values_list("actor", "door", "target", "outcome")
    )


def retire_row(worker_id: str):
    return AuditEntry.objects.filter(action="worker retired", target=worker_id).first()


@pytest.fixture
def qa_silent_but_set_online():
    """@qa-1's column says online; its process died seven minutes ago."""
    assert Worker.objects.get(pk="@qa-1").status == WorkerStatus.ONLINE
    silent("@qa-1")
    beating("@backend-1")
    return Worker.objects.get(pk="@qa-1")


# --- A stale worker is offline wherever it is shown or counted --------------------------------


def test_a_silent_worker_says_offline_with_how_long(qa_silent_but_set_online):
    worker = qa_silent_but_set_online
    assert worker.display_status == WorkerStatus.OFFLINE
    assert worker.liveness_text == "offline (no heartbeat for 7m)"
    assert Worker.objects.get(pk="@backend-1").liveness_text == "online"
    never = Worker.objects.get(pk="@ux-designer")
    assert never.last_heartbeat is None and never.liveness_text == "offline (no heartbeat yet)"


def test_vibe_status_counts_only_fresh_heartbeats_as_online(qa_silent_but_set_online):
    data = json.loads(vibe("status", "--json"))
    lanes = {row["lane"]: row for row in data["workers"]}
    assert lanes["qa"]["online"] == 0 and lanes["qa"]["capacity"] == 0
    assert lanes["backend"]["online"] == 1
    shown = {row["worker_id"]: row["shown_as"] for row in data["silent_workers"]}
    assert shown["@qa-1"] == "offline (no heartbeat for 7m)"
    assert "@backend-1" not in shown
    text = vibe("status")
    assert "qa: 1 (0 online" in text
    assert "@qa-1: offline (no heartbeat for 7m), set online" in text


def test_chat_status_and_worker_say_offline_for_a_silent_worker(qa_silent_but_set_online, viewer):
    reply = execute("status", user=viewer, actor="slack:U1", door="slack")
    assert reply.ok and "  • qa: 1 (0 online, 0/0 busy)" in reply.lines
    assert "  • @qa-1: offline (no heartbeat for 7m), set online" in reply.lines
    one = execute("worker qa-1", user=viewer, actor="slack:U1", door="slack")
    assert one.lines[0] == "lane qa, tier senior, offline (no heartbeat for 7m) (set to online)"
    assert one.data["alive"] is False and one.data["shown_as"].startswith("offline (no heartbeat")


def test_metrics_bar_counts_live_workers_only(qa_silent_but_set_online):
    qa = Worker.objects.get(pk="@qa-1")
    lifecycle.submit("Held by a dead worker", lane="qa", actor="cli", pipeline="none")
    lifecycle.claim_next(qa)  # its lease has not run out yet: active_tasks is 1
    silent("@qa-1")
    backend = Worker.objects.get(pk="@backend-1")
    lifecycle.submit("Held by a live worker", lane="backend", actor="cli", pipeline="none")
    lifecycle.claim_next(backend)
    metrics = dashboard.metrics()
    assert metrics.active_workers == 1  # @backend-1; not the silent @qa-1
    assert metrics.online_workers == 1
    assert metrics.total_workers == Worker.objects.count()


def test_pool_shows_a_silent_worker_offline_and_offers_retire_not_resume(
    client, operator, qa_silent_but_set_online
):
    lifecycle.pause_worker("@qa-1", actor="cli")
    client.force_login(operator)
    html = client.get(POOL).content.decode()
    row = html[html.index("@qa-1</th>") :].split("</tr>")[0]
    assert "Offline (no heartbeat for 7m)" in row and "(set paused)" in row
    assert "Resume worker @qa-1" not in row
    assert "Retire worker @qa-1" in row
    backend = html[html.index("@backend-1</th>") :].split("</tr>")[0]
    assert "Pause worker @backend-1" in backend and "Retire" not in backend


def test_resume_is_offered_to_a_paused_worker_with_a_live_process(client, operator):
    lifecycle.pause_worker("@qa-1", actor="cli")
    beating("@qa-1")
    worker = Worker.objects.get(pk="@qa-1")
    offered = [a.name for a in actions.worker_actions_for(worker, operator)]
    assert offered == ["resume"]
    silent("@qa-1")
    worker.refresh_from_db()
    assert [a.name for a in actions.worker_actions_for(worker, operator)] == ["retire"]


def test_a_viewer_is_offered_nothing(viewer, qa_silent_but_set_online):
    assert actions.worker_actions_for(qa_silent_but_set_online, viewer) == []


# --- Retire: the lifecycle ----------------------------------------------------------------------


def test_retire_keeps_the_row_and_its_tasks_and_writes_an_audit_row(qa_silent_but_set_online):
    task = lifecycle.submit("Done long ago", lane="qa", actor="cli", pipeline="none")
    Task.objects.filter(pk=task.pk).update(worker_id="@qa-1", status=Status.COMPLETED)
    lifecycle.retire_worker("@qa-1", actor="user:otto")
    worker = Worker.objects.get(pk="@qa-1")
    assert worker.is_retired and worker.display_status == "retired"
    assert Task.objects.get(pk=task.pk).worker_id == "@qa-1"  # attribution kept
    row = retire_row("@qa-1")
    assert (row.actor, row.door, row.outcome) == ("user:otto", "web", "done")
    assert row.reason.startswith("online, last heartbeat ")


def test_a_live_worker_cannot_be_retired():
    beating("@qa-1")
    with pytest.raises(lifecycle.IllegalTransition, match="is running"):
        lifecycle.retire_worker("@qa-1", actor="cli")
    assert not Worker.objects.get(pk="@qa-1").is_retired


def test_a_worker_with_a_running_task_cannot_be_retired():
    task = lifecycle.submit("Still running", lane="qa", actor="cli", pipeline="none")
    lifecycle.claim_next(Worker.objects.get(pk="@qa-1"))
    silent("@qa-1")
    with pytest.raises(lifecycle.IllegalTransition, match=f"still holds #{task.pk}"):
        lifecycle.retire_worker("@qa-1", actor="cli")


def test_retiring_twice_or_a_missing_worker_is_refused(qa_silent_but_set_online):
    lifecycle.retire_worker("@qa-1", actor="cli")
    with pytest.raises(lifecycle.IllegalTransition, match="already retired"):
        lifecycle.retire_worker("@qa-1", actor="cli")
    with pytest.raises(lifecycle.WorkerNotFound):
        lifecycle.retire_worker("@nobody", actor="cli")


def test_retired_workers_are_hidden_from_the_pool_and_the_counts(
    client, viewer, qa_silent_but_set_online
):
    before = dashboard.metrics().total_workers
    lifecycle.retire_worker("@qa-1", actor="cli")
    assert dashboard.metrics().total_workers == before - 1
    assert "qa" not in {row["lane"] for row in status_reply().data["workers"]}
    assert "@qa-1" not in {w["worker_id"] for w in status_reply().data["silent_workers"]}
    client.force_login(viewer)
    html = client.get(POOL).content.decode()
    assert "@qa-1</th>" not in html
    assert "1 retired worker hidden." in html and "?retired=1" in html
    shown = client.get(POOL, {"retired": "1"}).content.decode()
    assert "@qa-1</th>" in shown and ">Retired<" in shown
    assert worker_reply("@qa-1").data["retired"] is True


def test_a_retired_worker_that_heartbeats_again_is_back():
    silent("@qa-1")
    lifecycle.retire_worker("@qa-1", actor="cli")
    assert not Worker.objects.in_pool().filter(pk="@qa-1").exists()
    assert not Worker.objects.configured_pool().filter(pk="@qa-1").exists()
    lifecycle.worker_heartbeat("@qa-1")  # someone started it
    worker = Worker.objects.get(pk="@qa-1")
    assert not worker.is_retired and worker.display_status == WorkerStatus.ONLINE
    assert Worker.objects.configured_pool().filter(pk="@qa-1").exists()
    assert not Worker.objects.retired().exists()


# --- Retire from every door ---------------------------------------------------------------------


def test_retire_from_the_pool_page(client, operator, qa_silent_but_set_online):
    client.force_login(operator)
    url = reverse("workers_app:worker_action", args=["@qa-1", "retire"])
    response = client.post(url, **HTMX)
    assert response.status_code == 200
    html = response.content.decode()
    assert "Worker @qa-1 retired." in html and "its tasks keep its name" in html
    assert Worker.objects.get(pk="@qa-1").is_retired
    assert retire_row("@qa-1").actor == "user:otto"


def test_retire_of_a_live_worker_from_the_pool_shows_why_and_is_audited(client, operator):
    beating("@qa-1")
    client.force_login(operator)
    url = reverse("workers_app:worker_action", args=["@qa-1", "retire"])
    response = client.post(url, **HTMX)
    assert response.status_code == 200 and b"is running" in response.content
    assert audit_rows("retire") == [("user:otto", "web", "worker @qa-1", "refused")]


def test_a_viewer_may_not_retire_from_the_pool(client, viewer, qa_silent_but_set_online):
    client.force_login(viewer)
    url = reverse("workers_app:worker_action", args=["@qa-1", "retire"])
    assert client.post(url).status_code == 403
    assert not Worker.objects.get(pk="@qa-1").is_retired
    assert audit_rows("retire") == [("user:vera", "web", "worker @qa-1", "refused")]


def _admin_login(client, user):
    user.is_staff = True
    user.save(update_fields=["is_staff"])
    client.force_login(user)


def test_retire_from_the_admin_and_no_bulk_delete(client, operator, qa_silent_but_set_online):
    _admin_login(client, operator)
    form = client.get(ADMIN_WORKERS).context["action_form"]
    names = {name for name, _ in form.fields["action"].choices}
    assert "retire_workers" in names and "delete_selected" not in names
    data = {"action": "retire_workers", helpers.ACTION_CHECKBOX_NAME: ["@qa-1", "@backend-1"]}
    response = client.post(ADMIN_WORKERS, {**data, "index": 0})
    said = [str(m) for m in get_messages(response.wsgi_request)]
    assert "Retired: @qa-1." in said
    assert any("Worker @backend-1 is running" in m for m in said)  # live: refused
    assert retire_row("@qa-1").actor == "user:otto"
    assert audit_rows("retire") == [("user:otto", "web", "worker @backend-1", "refused")]


def test_the_admin_cannot_delete_a_worker_that_has_tasks(client, superuser):
    lifecycle.submit("Attributed", lane="qa", actor="cli", pipeline="none")
    lifecycle.claim_next(Worker.objects.get(pk="@qa-1"))
    client.force_login(superuser)
    qa = reverse("admin:workers_app_worker_delete", args=["@qa-1"])
    assert client.get(qa).status_code == 403
    Worker.objects.create(worker_id="@typo-1", lane="qa")
    typo = reverse("admin:workers_app_worker_delete", args=["@typo-1"])
    assert client.get(typo).status_code == 200  # a row that never worked may go


def test_a_viewer_has_no_retire_action_in_the_admin(client, viewer):
    _admin_login(client, viewer)
    response = client.get(ADMIN_WORKERS)
    form = response.context["action_form"] if response.status_code == 200 else None
    assert not form or "retire_workers" not in {n for n, _ in form.fields["action"].choices}


def test_a_worker_added_in_the_admin_is_in_the_pool(client, superuser):
    client.force_login(superuser)
    add = reverse("admin:workers_app_worker_add")
    assert client.get(add).context["adminform"].form.initial["managed"] is True
    data = {
        "worker_id": "@docs-1",
        "lane": "backend",
        "tier": "junior",
        "capacity_limit": 1,
        "priority_score": 50,
        "agent_profile": "",
        "managed": "on",
    }
    assert client.post(add, data).status_code == 302
    assert Worker.objects.get(pk="@docs-1").managed is True


def test_retire_from_the_cli(qa_silent_but_set_online):
    out = vibe("retire", "qa-1")
    assert out.startswith("@qa-1 retired: out of the pool")
    assert retire_row("@qa-1").actor == "cli"
    with pytest.raises(CommandError, match="already retired"):
        vibe("retire", "@qa-1")
    assert audit_rows("retire") == [("cli", "cli", "worker @qa-1", "refused")]


def test_retire_from_the_cli_as_a_viewer_is_refused(viewer, qa_silent_but_set_online):
    with pytest.raises(CommandError, match="does not have the permission to retire"):
        vibe("retire", "@qa-1", "--as", "vera")
    assert not Worker.objects.get(pk="@qa-1").is_retired
    assert audit_rows("retire") == [("user:vera", "cli", "@qa-1", "refused")]


def test_pause_resume_retire_from_chat(operator, qa_silent_but_set_online):
    beating("@backend-1")
    reply = execute("pause backend-1", user=operator, actor="slack:U1", door="slack")
    assert reply.ok and reply.title.startswith("Worker @backend-1 paused")
    reply = execute("resume @backend-1", user=operator, actor="slack:U1", door="slack")
    assert reply.ok and reply.lines == []  # it is alive: nothing more to say
    reply = execute("retire qa-1", user=operator, actor="discord:42", door="discord")
    assert reply.ok and reply.data["status"] == "retired"
    assert retire_row("@qa-1").door == "discord"
    refused = execute("retire backend-1", user=operator, actor="slack:U1", door="slack")
    assert not refused.ok and "is running" in refused.title
    assert audit_rows("retire") == [("slack:U1", "slack", "worker @backend-1", "refused")]


def test_chat_worker_actions_need_a_linked_person_with_the_permission(
    viewer, qa_silent_but_set_online
):
    unlinked = execute("retire qa-1", user=None, actor="slack:U9", door="slack")
    assert not unlinked.ok and "not linked" in unlinked.title
    looker = execute("pause qa-1", user=viewer, actor="slack:U2", door="slack")
    assert not looker.ok and "workers_app.manage_workers" in looker.title
    assert not Worker.objects.get(pk="@qa-1").is_retired
    assert audit_rows("retire") == [("slack:U9", "slack", "worker @qa-1", "refused")]
    assert audit_rows("pause") == [("slack:U2", "slack", "worker @qa-1", "refused")]


def test_resuming_a_stopped_worker_says_it_has_no_process(operator):
    lifecycle.pause_worker("@qa-1", actor="cli")
    silent("@qa-1")
    reply = execute("resume qa-1", user=operator, actor="slack:U1", door="slack")
    assert reply.ok and reply.lines == ["It has no live process: it claims once it is started."]


# --- runfactory starts the configured pool ------------------------------------------------------


def test_the_migrated_default_pool_is_managed():
    assert set(Worker.objects.filter(managed=True).values_list("pk", flat=True)) >= {
        "@backend-1",
        "@frontend-1",
        "@qa-1",
        "@security-1",
        "@ux-designer",
        "@data-analyst",
    }


def test_a_row_a_one_off_runworker_creates_is_not_managed():
    options = {"lane": "backend", "tier": None, "capacity": None}
    cmd = RunWorker(stdout=StringIO())
    cmd._register("@one-off-1", options)
    assert Worker.objects.get(pk="@one-off-1").managed is False


def test_runfactory_starts_managed_rows_that_are_not_retired():
    Worker.objects.create(worker_id="@one-off-1", lane="backend")  # as runworker makes it
    silent("@ux-designer")
    lifecycle.retire_worker("@ux-designer", actor="cli")
    pool = list(Worker.objects.configured_pool().order_by("lane", "worker_id"))
    children = runfactory.worker_children(pool, "python", None, "simulated")
    names = [child.name for child in children]
    assert "@one-off-1" not in names and "@ux-designer" not in names
    assert {"@backend-1", "@qa-1", "@security-1"} <= set(names)
    backend = next(c for c in children if c.name == "@backend-1")
    assert backend.argv[2:] == ["runworker", "@backend-1", "--agent", "simulated"]
    assert backend.keep_tail
