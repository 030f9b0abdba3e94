"""Delivery on the board and the task page: the card's badge, the Delivery section and its
buttons for each state and role, Merge / Rebase and rework / Request changes through the action
view, the board's delivery filter, and the New task form's delivery choice.

Tasks are put in a delivery state by writing the row in the setup; every action itself goes
through the view, as a person's click does."""

from __future__ import annotations

import json
import re

import pytest
from django.urls import reverse
from django.utils import timezone

from tasks_app import lifecycle
from tasks_app.choices import Delivery, DeliveryState, Status
from tasks_app.models import Task, TaskHistory
from tests.workers_app.test_delivery import build_and_finish, teammate_pushes
from tests.workers_app.test_remote import Hosts
from workers_app.models import Worker

pytestmark = pytest.mark.django_db

BOARD_URL = "http://testserver/"
HTMX = {"HTTP_HX_REQUEST": "true", "HTTP_HX_CURRENT_URL": BOARD_URL}
PR_URL = "https://github.com/acme/shop/pull/12"


@pytest.fixture
def hosts(tmp_path, settings) -> Hosts:
    """Real git: a bare shared remote, this host's clone, and a worker to build on it."""
    settings.VIBE_GIT_REMOTE = None
    settings.VIBE_BASE_BRANCH = ""
    settings.VIBE_MERGE_STYLE = "merge"
    Worker.objects.create(worker_id="@b", lane="backend")
    return Hosts(tmp_path, settings)


def delivered(
    goal: str = "Add a /health endpoint",
    *,
    status: str = Status.REVIEW_NEEDED,
    delivery: str = Delivery.MERGE,
    state: str = DeliveryState.AWAITING_MERGE,
    **fields,
) -> Task:
    """A task as delivery leaves it: submitted for real, then its row set to the state."""
    task = lifecycle.submit(goal, lane="backend", actor="cli", pipeline="none", delivery=delivery)
    fields.setdefault("branch", f"vibe/test/task-{task.pk}-health")
    fields.setdefault("base_branch", "main")
    # updated_at moves as every lifecycle change moves it (the board caches cards by it).
    Task.objects.filter(pk=task.pk).update(
        status=status, delivery_state=state, updated_at=timezone.now(), **fields
    )
    return Task.objects.get(pk=task.pk)


def card_html(html: str, pk: int) -> str:
    match = re.search(rf'<article class="card[^"]*" id="card-{pk}".*?</article>', html, re.S)
    assert match, f"no card for task {pk}"
    return match.group(0)


def detail(client, user, task: Task) -> str:
    client.force_login(user)
    response = client.get(reverse("tasks_app:task_detail", args=[task.pk]))
    assert response.status_code == 200
    return response.content.decode()


def buttons(html: str, pk: int) -> set[str]:
    return {name for name in ("merge", "rebase", "rework") if f'id="detail-{name}-{pk}"' in html}


def post_action(client, user, task: Task, action: str, htmx: bool = True, follow=False, **data):
    client.force_login(user)
    url = reverse("tasks_app:task_action", args=[task.pk, action])
    headers = HTMX if htmx else {}
    form = {"origin": "detail", "shown": task.status, "next": f"/tasks/{task.pk}/", **data}
    return client.post(url, form, follow=follow, **headers)


# --- The card's badge ----------------------------------------------------------------------------


def test_card_badge_links_the_pull_request_number(client, viewer):
    task = delivered(delivery=Delivery.PULL_REQUEST, pr_number=12, pr_url=PR_URL, pr_state="open")
    client.force_login(viewer)
    card = card_html(client.get("/").content.decode(), task.pk)
    assert "delivery-badge delivery-awaiting_merge" in card
    assert (
        f'<a href="{PR_URL}" target="_blank" rel="noopener">pull request #12'
        '<span class="visually-hidden"> (opens in a new tab)</span></a> open'
    ) in card


@pytest.mark.parametrize(
    ("state", "fields", "text"),
    [
        (DeliveryState.AWAITING_MERGE, {}, "awaiting merge into main"),
        (DeliveryState.CONFLICT, {"conflicts": ["a.py", "b.py"]}, "conflicts with main in 2 files"),
        (
            DeliveryState.MERGED,
            {"merge_commit": "abc123def4567890"},
            "merged into main as abc123def456",
        ),
        (DeliveryState.PUSHED, {}, "branch pushed"),
    ],
)
def test_card_badge_says_how_far_delivery_got(client, viewer, state, fields, text):
    status = Status.COMPLETED if state in ("merged", "pushed") else Status.REVIEW_NEEDED
    task = delivered(status=status, state=state, **fields)
    client.force_login(viewer)
    card = card_html(client.get("/").content.decode(), task.pk)
    assert f"delivery-badge delivery-{state}" in card
    assert text in card
    assert '<span class="visually-hidden">Delivery: </span>' in card


def test_a_conflict_badge_carries_a_warning_mark_besides_its_colour(client, viewer):
    task = delivered(state=DeliveryState.CONFLICT, conflicts=["a.py"])
    client.force_login(viewer)
    card = card_html(client.get("/").content.decode(), task.pk)
    assert '<span aria-hidden="true">⚠ </span>conflicts with main in 1 file' in card


def test_card_without_delivery_state_has_no_badge(client, viewer):
    task = lifecycle.submit("Write the changelog", lane="qa", actor="cli")
    client.force_login(viewer)
    assert "delivery-badge" not in card_html(client.get("/").content.decode(), task.pk)


def test_a_pull_request_address_that_is_not_a_web_address_is_no_link(client, viewer):
    task = delivered(delivery=Delivery.PULL_REQUEST, pr_number=12, pr_url="javascript:alert(1)")
    client.force_login(viewer)
    html = client.get("/").content.decode()
    assert "pull request #12 open" in card_html(html, task.pk)
    assert "javascript:alert" not in html
    assert "javascript:alert" not in detail(client, viewer, task)


# --- The task page's Delivery section ------------------------------------------------------------


def test_delivery_section_shows_mode_state_branches_and_conflicting_files(client, viewer):
    task = delivered(
        state=DeliveryState.CONFLICT,
        conflicts=["shop/cart.py", "shop/tests/test_cart.py"],
        head_commit="0123456789abcdef",
    )
    html = detail(client, viewer, task)
    section = html[html.index(f'id="delivery-{task.pk}"') :]
    assert "<dt>Mode</dt><dd>Merge</dd>" in section
    assert "conflicts with main in 2 files" in section
    assert f"<code>vibe/test/task-{task.pk}-health</code>" in section
    assert "<dt>Base branch</dt><dd><code>main</code></dd>" in section
    assert "<li><code>shop/cart.py</code></li><li><code>shop/tests/test_cart.py</code></li>" in (
        section
    )


def test_delivery_section_links_the_pull_request_and_names_the_merge_commit(client, viewer):
    task = delivered(
        status=Status.COMPLETED,
        delivery=Delivery.PULL_REQUEST,
        state=DeliveryState.MERGED,
        pr_number=12,
        pr_url=PR_URL,
        pr_state="merged",
        merge_commit="fedcba9876543210",
    )
    html = detail(client, viewer, task)
    assert f'<a href="{PR_URL}" target="_blank" rel="noopener">#12' in html
    assert " · merged</dd>" in html
    assert '<code title="fedcba9876543210">fedcba987654</code>' in html


def test_a_review_task_has_no_delivery_section(client, approver):
    work = delivered(status=Status.BLOCKED, state=DeliveryState.NONE)
    review = Task.objects.create(goal="Audit it", lane="security", stage="review", parent=work)
    Task.objects.filter(pk=review.pk).update(status=Status.BLOCKED)
    review.refresh_from_db()
    html = detail(client, approver, review)
    assert f'id="delivery-{review.pk}"' not in html
    assert buttons(html, review.pk) == set()


@pytest.mark.parametrize(
    ("status", "delivery", "state", "fields", "shown"),
    [
        ("review_needed", "merge", "awaiting_merge", {}, {"merge", "rework"}),
        ("review_needed", "merge", "conflict", {"conflicts": ["a.py"]}, {"rebase", "rework"}),
        ("review_needed", "pull_request", "awaiting_merge", {"pr_number": 3}, {"rework"}),
        ("review_needed", "pull_request", "opening_pr", {}, {"rework"}),
        ("completed", "branch", "pushed", {}, {"rework"}),
        ("completed", "branch", "pushed", {"branch": ""}, set()),
        ("completed", "merge", "merged", {}, set()),
        ("blocked", "branch", "", {}, {"rework"}),
        ("blocked", "pull_request", "pr_closed", {}, {"rework"}),
        ("pending", "merge", "", {}, set()),
        ("in_progress", "merge", "", {}, set()),
    ],
)
def test_delivery_buttons_follow_the_tasks_state(
    client, approver, status, delivery, state, fields, shown
):
    task = delivered(status=status, delivery=delivery, state=state, **fields)
    assert buttons(detail(client, approver, task), task.pk) == shown


@pytest.mark.parametrize(
    ("role", "shown"),
    [
        ("viewer", set()),
        ("operator", {"rework"}),
        ("approver", {"merge", "rework"}),
        ("outsider", None),  # not even the page
    ],
)
def test_delivery_buttons_follow_the_persons_role(request, client, role, shown):
    user = request.getfixturevalue(role)
    task = delivered()
    client.force_login(user)
    response = client.get(reverse("tasks_app:task_detail", args=[task.pk]))
    if shown is None:
        assert response.status_code == 403
        return
    assert buttons(response.content.decode(), task.pk) == shown


def test_operator_sees_rebase_and_rework_on_a_conflict(client, operator):
    task = delivered(state=DeliveryState.CONFLICT, conflicts=["a.py"])
    assert buttons(detail(client, operator, task), task.pk) == {"rebase", "rework"}


def test_the_request_changes_form_posts_a_required_comment_to_the_action(client, operator):
    task = delivered()
    html = detail(client, operator, task)
    form = html[html.index('class="rework-form"') :]
    form = form[: form.index("</form>")]
    url = reverse("tasks_app:task_action", args=[task.pk, "rework"])
    assert f'action="{url}"' in form and f'hx-post="{url}"' in form
    assert 'hx-target="#task-detail"' in form
    assert '<input type="hidden" name="origin" value="detail">' in form
    assert '<input type="hidden" name="shown" value="review_needed">' in form
    assert 'name="csrfmiddlewaretoken"' in form
    assert re.search(r'<textarea[^>]*name="comment"[^>]*maxlength="4000"[^>]*required', form)
    assert f'<label for="rework-comment-{task.pk}">What should change?</label>' in form


# --- The actions, through the view ----------------------------------------------------------------


@pytest.mark.parametrize("htmx", [True, False], ids=["htmx", "plain-form"])
def test_request_changes_sends_the_work_back_with_the_comment(client, operator, htmx):
    task = delivered()
    comment = "Return 503 while the database is down, not 500."
    response = post_action(client, operator, task, "rework", htmx=htmx, comment=comment)
    task.refresh_from_db()
    assert task.status == Status.PENDING
    assert task.delivery_state == DeliveryState.NONE
    assert task.context["findings"][0]["detail"] == comment
    assert task.context["changes_requested_by"] == "user:otto"
    last = TaskHistory.objects.filter(task=task).latest("id")
    assert last.actor == "user:otto" and last.to_status == Status.PENDING
    if htmx:
        assert response.status_code == 200
        html = response.content.decode()
        assert f"Task #{task.pk} sent back for changes." in html
        assert comment in html  # the panel now lists it under "Findings to rework"
    else:
        assert response.status_code == 302
        assert response["Location"] == f"/tasks/{task.pk}/"


@pytest.mark.parametrize("comment", ["", "   \n  "])
def test_an_empty_comment_changes_nothing_and_says_why(client, operator, comment):
    task = delivered()
    history = TaskHistory.objects.filter(task=task).count()
    response = post_action(client, operator, task, "rework", comment=comment)
    assert response.status_code == 200
    assert "Say what should change: the comment is empty" in response.content.decode()
    task.refresh_from_db()
    assert (task.status, task.delivery_state) == (Status.REVIEW_NEEDED, "awaiting_merge")
    assert TaskHistory.objects.filter(task=task).count() == history


def test_an_empty_comment_without_javascript_shows_the_message_on_the_page(client, operator):
    task = delivered()
    response = post_action(client, operator, task, "rework", htmx=False, comment="", follow=True)
    assert response.status_code == 200
    assert "Say what should change: the comment is empty" in response.content.decode()
    assert Task.objects.get(pk=task.pk).status == Status.REVIEW_NEEDED


def test_rebase_and_rework_asks_the_builder_to_resolve_the_conflicts(client, operator):
    task = delivered(state=DeliveryState.CONFLICT, conflicts=["shop/cart.py"])
    response = post_action(client, operator, task, "rebase")
    assert response.status_code == 200
    assert f"Task #{task.pk} sent back to rebase." in response.content.decode()
    task.refresh_from_db()
    assert task.status == Status.PENDING and task.conflicts == []
    assert "shop/cart.py" in task.context["findings"][0]["detail"]


def test_operator_may_not_merge(client, operator):
    task = delivered()
    response = post_action(client, operator, task, "merge")
    assert response.status_code == 403
    assert Task.objects.get(pk=task.pk).delivery_state == DeliveryState.AWAITING_MERGE


def test_a_refused_merge_shows_the_reason_not_an_error_page(client, approver):
    task = delivered(delivery=Delivery.PULL_REQUEST, pr_number=12, pr_url=PR_URL)
    response = post_action(client, approver, task, "merge")
    assert response.status_code == 200
    html = response.content.decode()
    assert "is delivered as a pull request, not merged by the factory" in html
    assert 'class="message message-error"' in html
    assert Task.objects.get(pk=task.pk).delivery_state == DeliveryState.AWAITING_MERGE


def test_a_conflicting_merge_lists_the_files_and_offers_rebase(client, approver, hosts):
    task = lifecycle.submit(
        "Change the app", lane="backend", actor="cli", pipeline="none", delivery="merge"
    )
    task = build_and_finish(task, {"app.py": "print('mine')\n"})
    assert task.delivery_state == DeliveryState.AWAITING_MERGE
    teammate_pushes(hosts, "app.py", "print('theirs')\n")

    response = post_action(client, approver, task, "merge")
    assert response.status_code == 200
    html = response.content.decode()
    assert "conflicts with main in 1 file (app.py); nothing was merged" in html
    assert "<li><code>app.py</code></li>" in html  # the panel, re-rendered in its new state
    assert buttons(html, task.pk) == {"rebase", "rework"}
    task.refresh_from_db()
    assert (task.status, task.delivery_state) == (Status.REVIEW_NEEDED, DeliveryState.CONFLICT)


def test_an_approver_merges_from_the_task_page(client, approver, hosts):
    task = lifecycle.submit(
        "Add hello", lane="backend", actor="cli", pipeline="none", delivery="merge"
    )
    task = build_and_finish(task, {"hello.txt": "hi\n"})
    response = post_action(client, approver, task, "merge")
    assert response.status_code == 200
    assert f"Task #{task.pk} merged." in response.content.decode()
    task.refresh_from_db()
    assert (task.status, task.delivery_state) == (Status.COMPLETED, DeliveryState.MERGED)
    assert hosts.remote_head("main") == task.merge_commit


# --- The board's delivery filter ----------------------------------------------------------------


def test_the_delivery_filter_narrows_the_board(client, viewer):
    waiting = delivered("Waiting for a merge")
    merged = delivered("Merged already", status=Status.COMPLETED, state=DeliveryState.MERGED)
    plain = lifecycle.submit("Not delivered yet", lane="qa", actor="cli")
    client.force_login(viewer)

    html = client.get("/?delivery=awaiting_merge").content.decode()
    assert f'id="card-{waiting.pk}"' in html
    assert f'id="card-{merged.pk}"' not in html and f'id="card-{plain.pk}"' not in html
    assert '<option value="awaiting_merge" selected>Awaiting merge</option>' in html

    html = client.get("/?delivery=merged").content.decode()
    assert f'id="card-{merged.pk}"' in html and f'id="card-{waiting.pk}"' not in html


def test_the_delivery_filter_keeps_the_query_convention(client, viewer):
    client.force_login(viewer)
    html = client.get("/?delivery=conflict&lane=backend").content.decode()
    # The live region refreshes with the same filters, and an opened task keeps them too.
    assert 'hx-get="/?lane=backend&amp;delivery=conflict"' in html
    assert "Clear</a>" in html


def test_an_unknown_delivery_filter_is_ignored_and_said_so(client, viewer):
    task = delivered()
    client.force_login(viewer)
    html = client.get("/?delivery=shipped").content.decode()
    assert (
        "Delivery state: Select a valid choice. shipped is not one of the available choices."
        in html
    )
    assert f'id="card-{task.pk}"' in html


def test_the_filter_offers_every_delivery_state(client, viewer):
    client.force_login(viewer)
    html = client.get("/").content.decode()
    select = html[html.index('<select id="f-delivery"') :]
    select = select[: select.index("</select>")]
    for value, label in DeliveryState.choices:
        if value:
            assert f'<option value="{value}">{label}</option>' in select


# --- Submitting with a delivery -----------------------------------------------------------------


def test_submit_with_delivery_merge_stores_it(client, superuser):
    client.force_login(superuser)
    response = client.post(
        reverse("tasks_app:submit"),
        {
            "goal": "Add a /health endpoint",
            "lane": "backend",
            "priority": "60",
            "risk": "low",
            "delivery": "merge",
            "next": "/",
        },
    )
    assert response.status_code == 302 and response["Location"] == "/"
    task = Task.objects.get(goal="Add a /health endpoint")
    assert (task.delivery, task.status, task.priority) == ("merge", Status.PENDING, 60)
    assert task.history.get().actor == "user:root"


def test_submit_from_the_board_with_htmx_swaps_the_form_and_refreshes_the_board(client, superuser):
    client.force_login(superuser)
    response = client.post(
        reverse("tasks_app:submit"),
        {
            "goal": "Open a PR",
            "lane": "frontend",
            "priority": "50",
            "risk": "high",
            "delivery": "pull_request",
        },
        **HTMX,
    )
    assert response.status_code == 200
    assert json.loads(response["HX-Trigger-After-Settle"]) == {"vibe:submitted": {}}
    task = Task.objects.get(goal="Open a PR")
    assert task.delivery == Delivery.PULL_REQUEST
    html = response.content.decode()
    assert f"Task #{task.pk} submitted. It is high risk, so it waits for an approver." in html
    assert '<form id="submit-task"' in html
    assert 'placeholder="What should the agent achieve?"></textarea>' in html  # empty again
    assert 'id="messages" class="messages" role="status" aria-live="polite" hx-swap-oob' in html


def test_a_refused_submit_keeps_what_was_typed_and_says_why(client, superuser):
    client.force_login(superuser)
    response = client.post(
        reverse("tasks_app:submit"),
        {"goal": "   ", "lane": "backend", "priority": "101", "risk": "low", "delivery": "merge"},
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert "Goal: This field is required." in html
    assert "Priority: Ensure this value is less than or equal to 100." in html
    assert '<option value="merge" selected>Merge</option>' in html
    assert not Task.objects.exists()


def test_the_delivery_select_defaults_to_the_factory_setting(client, superuser, settings):
    settings.VIBE_DELIVERY = "pull_request"
    client.force_login(superuser)
    html = client.get("/").content.decode()
    assert '<select id="n-delivery" name="delivery"' in html
    assert '<option value="pull_request" selected>Pull request</option>' in html


def test_people_without_the_submit_permission_see_no_form_and_cannot_post(client, viewer):
    client.force_login(viewer)
    assert 'id="submit-task"' not in client.get("/").content.decode()
    response = client.post(
        reverse("tasks_app:submit"),
        {
            "goal": "Sneak in",
            "lane": "backend",
            "priority": "50",
            "risk": "low",
            "delivery": "merge",
        },
    )
    assert response.status_code == 403
    assert not Task.objects.filter(goal="Sneak in").exists()


def test_operators_and_submitters_may_submit_from_the_board(client, operator):
    from django.contrib.auth.models import Group, User

    submitter = User.objects.create_user("sue", password="pw-sue")
    submitter.groups.add(Group.objects.get(name="Submitter"))
    for person in (operator, submitter):
        client.force_login(person)
        assert 'id="submit-task"' in client.get("/").content.decode()
        form = {"goal": f"Work by {person.username}", "lane": "backend", "priority": "50"}
        client.post(reverse("tasks_app:submit"), {**form, "risk": "low", "delivery": "branch"})
        task = Task.objects.get(goal=f"Work by {person.username}")
        assert task.history.get().actor == f"user:{person.username}"
