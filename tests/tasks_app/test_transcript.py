"""A run's transcript and its cost: the live events endpoint, the task page, the metrics bar,
the pool and the `vibe` command, through the test client and `call_command` on the real
database."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from tasks_app import lifecycle
from tasks_app.models import Run, RunEvent, Task
from workers_app.models import Worker

pytestmark = pytest.mark.django_db


def running_task(goal: str = "Add rate limiting to the public API") -> tuple[Task, Run]:
    """A backend task a worker claimed, with its agent run still going."""
    task = lifecycle.submit(goal, lane="backend", actor="cli", priority=100)
    claimed = lifecycle.claim_next("@backend-1")
    assert claimed.pk == task.pk
    run = Run.objects.create(
        task=task,
        worker_id="@backend-1",
        attempt=1,
        agent="claude",
        kind="claude",
        role="builder",
    )
    return claimed, run


def add_events(run: Run, *events: tuple[str, str, dict]) -> list[RunEvent]:
    """Append events after the run's last one, as the worker's transcript writer does."""
    last = RunEvent.objects.filter(run=run).order_by("-seq").values_list("seq", flat=True).first()
    start = (last or 0) + 1
    rows = RunEvent.objects.bulk_create(
        RunEvent(run=run, seq=start + i, kind=kind, text=text, data=data)
        for i, (kind, text, data) in enumerate(events)
    )
    Run.objects.filter(pk=run.pk).update(event_count=start + len(rows) - 1)
    return rows


def events_url(task_id: int, run_id: int) -> str:
    return reverse("tasks_app:run_events", args=[task_id, run_id])


CONVERSATION = (
    ("system", "session started", {"session_id": "sess-1"}),
    ("message", "I will add a throttle to the API.", {}),
    ("tool_call", "cat api/throttling.py", {"name": "Bash", "id": "toolu_1"}),
    ("tool_result", "class Throttle: ...", {"id": "toolu_1", "is_error": False}),
    ("tool_call", "tests/test_throttle.py", {"name": "Write", "id": "toolu_2"}),
    ("tool_result", "permission denied: tests/", {"id": "toolu_2", "is_error": True}),
    ("error", "the agent hit its rate limit", {}),
    ("usage", "", {"model": "claude-sonnet-4", "input_tokens": 1200, "cost_usd": "0.0123"}),
)


# --- The events endpoint ----------------------------------------------------------------------


def test_events_after_a_seq_are_only_the_newer_ones(client, viewer):
    task, run = running_task()
    add_events(run, *CONVERSATION)
    client.force_login(viewer)
    response = client.get(events_url(task.pk, run.pk), {"after": 3})
    assert response.status_code == 200
    html = response.content.decode()
    assert 'data-seq="4"' in html and 'data-seq="8"' in html
    assert 'data-seq="3"' not in html and "I will add a throttle" not in html
    assert response["X-Transcript-Last-Seq"] == "8"
    assert response["X-Transcript-Running"] == "1"
    assert response["X-Transcript-More"] == "0"
    # A result whose call the page already has comes as its own row, named for the call.
    assert 'data-result-for="toolu_1"' in html


def test_nothing_new_is_an_empty_answer_with_its_headers(client, viewer):
    task, run = running_task()
    add_events(run, *CONVERSATION)
    client.force_login(viewer)
    response = client.get(events_url(task.pk, run.pk), {"after": 8})
    assert response.status_code == 200
    assert response.content == b""
    assert response["X-Transcript-Last-Seq"] == "8"
    assert response["X-Transcript-Running"] == "1"
    headers = "".join(f"{k}: {v}\r\n" for k, v in response.items())
    assert len(headers) + len(response.content) < 2048


def test_a_long_burst_comes_in_batches_and_says_more_is_waiting(client, viewer):
    task, run = running_task()
    add_events(run, *[("output", f"line {i}", {}) for i in range(700)])
    client.force_login(viewer)
    first = client.get(events_url(task.pk, run.pk), {"after": 0})
    assert first["X-Transcript-More"] == "1" and first["X-Transcript-Last-Seq"] == "500"
    rest = client.get(events_url(task.pk, run.pk), {"after": 500})
    assert rest["X-Transcript-More"] == "0" and rest["X-Transcript-Last-Seq"] == "700"
    assert rest.content.decode().count('class="tx tx-log tx-output"') == 200


def test_a_finished_run_says_so_and_brings_its_usage_line(client, viewer):
    task, run = running_task()
    add_events(run, ("message", "done", {}))
    Run.objects.filter(pk=run.pk).update(
        finished_at=timezone.now(),
        exit_code=0,
        outcome="completed",
        model="claude-sonnet-4",
        input_tokens=1200,
        output_tokens=300,
        cost_usd=Decimal("0.0123"),
        turns=4,
        session_id="sess-42",
        resumed=True,
    )
    client.force_login(viewer)
    response = client.get(events_url(task.pk, run.pk), {"after": 1})
    assert response["X-Transcript-Running"] == "0"
    html = response.content.decode()
    assert "<template data-run-usage>" in html and "<template data-run-state>" in html
    assert "1,200 in" in html and "$0.01" in html and "sess-42" in html and "resumed" in html
    assert "exit 0" in html and "completed" in html


def test_a_run_whose_task_moved_on_is_not_polled_any_more(client, viewer):
    task, run = running_task()
    lifecycle.fail(task.pk, worker_id="@backend-1", token=task.claim_token, error_type="timeout")
    client.force_login(viewer)
    response = client.get(events_url(task.pk, run.pk), {"after": 0})
    assert response["X-Transcript-Running"] == "0"


@pytest.mark.parametrize("after", ["abc", "-1", "1.5", "9" * 30, "²", "1e3", " 1"])
def test_a_bad_after_is_a_400_that_says_why(client, viewer, after):
    task, run = running_task()
    client.force_login(viewer)
    response = client.get(events_url(task.pk, run.pk), {"after": after})
    assert response.status_code == 400
    assert "is not a sequence number" in response.content.decode()


def test_unknown_task_or_run_and_a_run_of_another_task_are_404(client, viewer):
    task, run = running_task()
    other = lifecycle.submit("Something else", lane="qa", actor="cli")
    client.force_login(viewer)
    assert client.get(events_url(task.pk, run.pk + 1000)).status_code == 404
    assert client.get(events_url(task.pk + 1000, run.pk)).status_code == 404
    assert client.get(events_url(other.pk, run.pk)).status_code == 404
    assert client.get(events_url(task.pk, 10**25)).status_code == 404


def test_anonymous_goes_to_login_and_an_outsider_is_refused(client, outsider):
    task, run = running_task()
    response = client.get(events_url(task.pk, run.pk), {"after": 0})
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]
    client.force_login(outsider)
    assert client.get(events_url(task.pk, run.pk), {"after": 0}).status_code == 403


def test_the_live_poll_costs_a_fixed_few_queries(client, viewer):
    task, run = running_task()
    add_events(run, *[("output", f"line {i}", {}) for i in range(50)])
    client.force_login(viewer)
    client.get(events_url(task.pk, run.pk), {"after": 50})
    with CaptureQueriesContext(connection) as ctx:
        client.get(events_url(task.pk, run.pk), {"after": 50})
    app_queries = [q["sql"] for q in ctx.captured_queries if "task_run" in q["sql"]]
    assert len(app_queries) == 2, app_queries
    events_sql = next(q for q in app_queries if "task_run_events" in q)
    assert '"seq" > 50' in events_sql.replace("'", "") or 'seq" > 50' in events_sql


# --- The task page ----------------------------------------------------------------------------


def test_the_page_shows_tool_calls_collapsible_with_their_results_and_the_usage(client, viewer):
    task, run = running_task()
    add_events(run, *CONVERSATION)
    Run.objects.filter(pk=run.pk).update(
        model="claude-sonnet-4",
        input_tokens=1200,
        output_tokens=300,
        cost_usd=Decimal("0.0042"),
        turns=4,
        session_id="sess-42",
        resumed=True,
        note="resumed session sess-41 for rework round 2",
    )
    client.force_login(viewer)
    html = client.get(task.get_absolute_url()).content.decode()
    assert "I will add a throttle to the API." in html
    assert '<details data-tool-id="toolu_1">' in html
    summary = '<span class="tx-tool">Bash</span> <span class="tx-summary">cat api/throttling.py'
    assert summary in html
    # The result sits inside its call, not as a row of its own.
    call = html.split('<details data-tool-id="toolu_1">', 1)[1].split("</details>", 1)[0]
    assert "class Throttle: ..." in call
    assert 'data-result-for="toolu_1"' not in html
    assert 'class="tx-call-error"' in html and "permission denied: tests/" in html
    assert 'class="tx tx-error"' in html and "the agent hit its rate limit" in html
    assert "claude-sonnet-4" in html and "1,200 in" in html and "300 out" in html
    assert "$0.0042" in html and "4 turns" in html and "sess-42" in html
    assert ">resumed<" in html and "resumed session sess-41 for rework round 2" in html
    assert f'data-events-url="{events_url(task.pk, run.pk)}"' in html
    assert 'data-last-seq="8"' in html and 'data-running="1"' in html
    assert "js/transcript" in html


def test_a_plain_text_agent_reads_as_a_log(client, viewer):
    task, run = running_task()
    add_events(run, ("output", "Applied edit to api.py", {}), ("stderr", "warning: slow", {}))
    client.force_login(viewer)
    html = client.get(task.get_absolute_url()).content.decode()
    assert '<li class="tx tx-log tx-output" data-seq="1">Applied edit to api.py</li>' in html
    assert '<li class="tx tx-log tx-stderr" data-seq="2">warning: slow</li>' in html


def test_agent_text_is_escaped_in_the_transcript(client, viewer):
    task, run = running_task()
    add_events(
        run,
        ("message", "<script>alert(1)</script>", {}),
        ("tool_call", "<img src=x onerror=alert(2)>", {"name": "<b>x</b>", "id": '"><i>'}),
    )
    client.force_login(viewer)
    html = client.get(task.get_absolute_url()).content.decode()
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)" in html
    assert "<img src=x" not in html and "<b>x</b>" not in html and '"><i>' not in html


def test_a_long_transcript_shows_its_newest_events_and_the_earlier_ones_on_demand(client, viewer):
    task, run = running_task()
    add_events(run, *[("output", f"line {i}", {}) for i in range(1, 1201)])
    client.force_login(viewer)
    html = client.get(task.get_absolute_url()).content.decode()
    assert html.count('class="tx tx-log tx-output"') == 500
    assert 'data-seq="701"' in html and 'data-seq="700"' not in html
    earlier = f"{events_url(task.pk, run.pk)}?before=701"
    assert f'hx-get="{earlier}"' in html and "Show earlier events" in html
    chunk = client.get(earlier, HTTP_HX_REQUEST="true").content.decode()
    assert chunk.count('class="tx tx-log tx-output"') == 500
    assert 'data-seq="201"' in chunk and 'data-seq="700"' in chunk and 'data-seq="701"' not in chunk
    assert "?before=201" in chunk
    last = client.get(f"{events_url(task.pk, run.pk)}?before=201", HTTP_HX_REQUEST="true")
    text = last.content.decode()
    assert text.count('class="tx tx-log tx-output"') == 200 and "Show earlier" not in text
    # Without JavaScript the link opens a page of its own, with the way back.
    page = client.get(earlier).content.decode()
    assert "<!doctype html>" in page and f'href="/tasks/{task.pk}/"' in page
    assert page.count('class="tx tx-log tx-output"') == 500


def test_the_panel_refresh_leaves_the_transcripts_alone(client, viewer):
    task, run = running_task()
    add_events(run, *CONVERSATION)
    client.force_login(viewer)
    html = client.get(task.get_absolute_url()).content.decode()
    # The panel itself no longer reloads whole; only its summary part does.
    assert 'id="task-detail" class="detail" aria-labelledby="detail-title" data-task-url' in html
    assert f'hx-get="{task.get_absolute_url()}?part=summary"' in html
    part = client.get(
        task.get_absolute_url(), {"part": "summary"}, HTTP_HX_REQUEST="true"
    ).content.decode()
    assert 'id="task-summary"' in part and f'data-run-ids="{run.pk}"' in part
    assert "data-transcript" not in part and "I will add a throttle" not in part
    assert 'id="task-history" class="timeline" hx-swap-oob="true"' in part


def test_a_finished_task_summary_does_not_poll(client, viewer):
    task, run = running_task()
    Run.objects.filter(pk=run.pk).update(finished_at=timezone.now(), exit_code=0)
    lifecycle.complete(task.pk, worker_id="@backend-1", token=task.claim_token, result={})
    client.force_login(viewer)
    html = client.get(task.get_absolute_url()).content.decode()
    assert "?part=summary" not in html and 'data-running="0"' not in html


def test_the_detail_page_query_count_does_not_grow_with_runs_or_events(client, viewer):
    task, run = running_task()
    client.force_login(viewer)
    with CaptureQueriesContext(connection) as small:
        client.get(task.get_absolute_url())
    add_events(run, *CONVERSATION * 50)
    for attempt in (2, 3):
        extra = Run.objects.create(task=task, worker_id="@backend-1", attempt=attempt)
        add_events(extra, *CONVERSATION)
    with CaptureQueriesContext(connection) as large:
        client.get(task.get_absolute_url())
    assert len(large.captured_queries) == len(small.captured_queries) + 1  # the events query


# --- Costs ------------------------------------------------------------------------------------


def work_with_a_review() -> tuple[Task, Task]:
    """A backend task with a builder run ($0.50), completed, and its security review running
    with a run of its own ($0.25)."""
    task, run = running_task("Let admins impersonate users")
    Run.objects.filter(pk=run.pk).update(
        finished_at=timezone.now(), cost_usd=Decimal("0.50"), input_tokens=1000, output_tokens=10
    )
    lifecycle.complete(task.pk, worker_id="@backend-1", token=task.claim_token, result={})
    review = lifecycle.claim_next("@security-1")
    assert review.parent_id == task.pk
    Run.objects.create(
        task=review,
        worker_id="@security-1",
        attempt=1,
        role="reviewer",
        cost_usd=Decimal("0.25"),
        input_tokens=500,
        output_tokens=5,
    )
    return task, review


def test_the_task_page_shows_the_cost_of_the_work_and_a_review_its_share(client, viewer):
    task, review = work_with_a_review()
    client.force_login(viewer)
    html = client.get(task.get_absolute_url()).content.decode()
    assert '<span class="cost">$0.75</span> with its reviews' in html
    assert "1,500 tokens in · 15 out" in html
    review_html = client.get(review.get_absolute_url()).content.decode()
    assert '<span class="cost">$0.25</span> this review' in review_html
    assert f'<span class="cost">$0.75</span> for <a href="/tasks/{task.pk}/">#{task.pk}</a>' in (
        review_html
    )


def test_the_metrics_bar_shows_todays_spend_per_lane(client, viewer):
    work_with_a_review()
    old_task, old_run = running_task("Yesterday's work")
    Run.objects.filter(pk=old_run.pk).update(
        cost_usd=Decimal("9"), started_at=timezone.now() - timedelta(days=2)
    )
    client.force_login(viewer)
    html = client.get(reverse("tasks_app:metrics")).content.decode()
    assert "<dt>Spent today</dt><dd>$0.75</dd>" in html
    assert "backend $0.50 · security $0.25" in html
    board = client.get(reverse("tasks_app:board")).content.decode()
    assert "Spent today" in board and "$0.75" in board


def test_the_pool_shows_each_workers_spend_today_and_why_it_paused(client, viewer):
    work_with_a_review()
    Worker.objects.filter(pk="@qa-1").update(
        status="paused", status_reason="paused itself: the daily budget of $5.00 is spent"
    )
    client.force_login(viewer)
    html = client.get(reverse("workers_app:pool")).content.decode()
    assert re.search(r'<th scope="col">\s*Spent today\s*</th>', html)
    row = html.split("@backend-1", 1)[1].split("</tr>", 1)[0]
    assert '<td class="cost">$0.50</td>' in row
    security = html.split("@security-1", 1)[1].split("</tr>", 1)[0]
    assert '<td class="cost">$0.25</td>' in security
    qa = html.split("@qa-1", 1)[1].split("</tr>", 1)[0]
    assert '<td class="cost">$0.00</td>' in qa
    assert "paused itself: the daily budget of $5.00 is spent" in qa


# --- The vibe command -------------------------------------------------------------------------


def vibe(*args: str) -> str:
    out = StringIO()
    call_command("vibe", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_vibe_task_transcript_reads_like_a_log():
    task, run = running_task()
    add_events(run, *CONVERSATION, ("output", "plain line", {}))
    Run.objects.filter(pk=run.pk).update(
        model="claude-sonnet-4", cost_usd=Decimal("0.0123"), session_id="sess-42", resumed=True
    )
    text = vibe("task", str(task.pk), "--transcript")
    assert f"Task #{task.pk}" in text
    assert "── Run 1 · builder · claude · attempt 1 · on @backend-1 · running" in text
    assert "claude-sonnet-4 · $0.01 · session sess-42 · resumed" in text
    assert "[2] I will add a throttle to the API." in text
    assert "[3] ▸ Bash: cat api/throttling.py" in text
    assert "[4]   ↳ result:" in text and "      class Throttle: ..." in text
    assert "[6]   ↳ error:" in text
    assert "[7] ERROR: the agent hit its rate limit" in text
    assert "[9] | plain line" in text
    assert "Bash" not in vibe("task", str(task.pk))


def test_vibe_task_json_has_runs_with_usage_and_events():
    task, run = running_task()
    add_events(run, *CONVERSATION)
    Run.objects.filter(pk=run.pk).update(cost_usd=Decimal("0.0123"), input_tokens=1200, turns=3)
    data = json.loads(vibe("task", str(task.pk), "--json"))
    assert data["cost"]["cost_usd"] == "0.012300" and data["cost"]["input_tokens"] == 1200
    (shown,) = data["runs"]
    assert shown["id"] == run.pk and shown["cost_usd"] == "0.012300" and shown["turns"] == 3
    assert [e["seq"] for e in shown["events"]] == list(range(1, 9))
    assert shown["events"][2] == {
        "seq": 3,
        "kind": "tool_call",
        "text": "cat api/throttling.py",
        "data": {"name": "Bash", "id": "toolu_1"},
        "at": shown["events"][2]["at"],
    }


def test_vibe_status_shows_todays_spend_in_total_and_per_lane():
    work_with_a_review()
    text = vibe("status")
    assert "Spent today: $0.75" in text
    assert "  • backend: $0.50" in text and "  • security: $0.25" in text
    data = json.loads(vibe("status", "--json"))
    assert data["spend_today"] == {
        "total_usd": "0.750000",
        "by_lane": {"backend": "0.500000", "security": "0.250000"},
    }


def test_vibe_worker_shows_its_spend_today_and_status_reason():
    work_with_a_review()
    Worker.objects.filter(pk="@backend-1").update(
        status="paused", status_reason="paused itself: agent_auth on 3 runs in a row"
    )
    text = vibe("worker", "@backend-1")
    assert "spent today $0.50" in text
    assert "why: paused itself: agent_auth on 3 runs in a row" in text
    data = json.loads(vibe("worker", "@backend-1", "--json"))
    assert data["spend_today_usd"] == "0.500000"
    assert data["status_reason"] == "paused itself: agent_auth on 3 runs in a row"
