"""The red team's smaller findings at the HTTP doors: admin drill-downs and NUL bytes (issue 11).

The NUL tests run on both databases: PostgreSQL refuses a NUL in any query (a 500 before the
middleware), SQLite stores it; either way the request is answered 400 before any view runs.
"""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from django.urls import reverse

from chatops_app.models import ChatLink
from tasks_app import lifecycle
from workers_app.models import Worker

pytestmark = pytest.mark.django_db

NUL_MESSAGE = "NUL characters are not allowed in a request"
HUGE_YEAR = "created_at__year=99999999999999999999"


@pytest.mark.parametrize(
    "changelist", ["admin:workers_app_worker_changelist", "admin:chatops_app_chatlink_changelist"]
)
def test_an_absurd_year_on_the_worker_and_chat_link_lists_is_an_invalid_filter(
    client, superuser, changelist
):
    ChatLink.objects.create(platform="slack", external_id="U024BE7LH", user=superuser)
    client.force_login(superuser)
    response = client.get(f"{reverse(changelist)}?{HUGE_YEAR}")
    assert response.status_code == 302
    assert response["Location"].endswith("?e=1")  # the changelist's own "invalid filter"


def assert_refused(response) -> None:
    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/plain")
    assert response.content.decode() == NUL_MESSAGE


@pytest.mark.parametrize(
    "url",
    [
        "/admin/tasks_app/task/?q=drop%00tables",
        "/admin/tasks_app/task/?status=pend%00ing",
        "/admin/tasks_app/task/?st%00atus=pending",
        "/history/?actor=cli%00",
        "/admin/autocomplete/?app_label=chatops_app&model_name=chatlink&field_name=user&term=a%00",
        "/admin/workers_app/worker/%40backend-1%00/change/",
        "/workers/?sort=%00",
    ],
    ids=[
        "admin-search",
        "admin-filter",
        "admin-filter-name",
        "history",
        "autocomplete",
        "worker-object",
        "pool-sort",
    ],
)
def test_a_nul_in_the_path_or_query_string_is_a_400(client, superuser, url):
    lifecycle.submit("Something to find", lane="backend", actor="cli")
    client.force_login(superuser)
    assert_refused(client.get(url))


def test_a_nul_in_a_worker_action_path_is_a_400(client, superuser):
    client.force_login(superuser)
    assert_refused(client.post("/workers/%40backend-1%00/pause/"))
    assert Worker.objects.get(pk="@backend-1").status != "paused"


def test_a_nul_in_a_form_field_is_a_400(client, superuser):
    client.force_login(superuser)
    body = urlencode({"goal": "Drop\x00 the tables", "lane": "backend"})
    form = "application/x-www-form-urlencoded"
    assert_refused(client.post(reverse("tasks_app:submit"), body, content_type=form))
    assert_refused(client.post(reverse("login"), {"username": "root\x00", "password": "x"}))
    # Multipart too, as a browser's file form sends it.
    response = client.post(
        reverse("admin:tasks_app_task_changelist"), {"action": "x\x00", "_selected_action": "1"}
    )
    assert_refused(response)


@pytest.mark.parametrize(
    "url",
    ["/chatops/slack/commands", "/chatops/discord/interactions", "/integrations/github/webhook"],
)
def test_signed_endpoints_get_their_raw_body_even_with_a_nul(client, url):
    """Their bodies are signed bytes the views verify first: the middleware leaves them alone."""
    response = client.post(
        url, "text=retry%001&user_id=U1", content_type="application/x-www-form-urlencoded"
    )
    assert response.content.decode() != NUL_MESSAGE  # the view's own answer (401, 403 or 503)
