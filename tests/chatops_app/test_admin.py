"""The chat admin: links are managed here; the notification outbox is read-only."""

from __future__ import annotations

from django.urls import reverse

from chatops_app.models import ChatLink, DeliveryState, Notification, reply_to_click
from tasks_app import lifecycle


def test_notification_list_shows_delivery_state(client, viewer):
    task = lifecycle.submit("rotate secrets", lane="backend", risk="high", actor="cli")
    sent = Notification.objects.filter(task=task, channel="slack").get()
    Notification.objects.filter(pk=sent.pk).update(state=DeliveryState.SENT)
    Notification.objects.filter(task=task, channel="discord").update(
        state=DeliveryState.FAILED, attempts=5, last_error="HTTP 500 from the chat service"
    )
    viewer.is_staff = True
    viewer.save()
    client.force_login(viewer)
    url = reverse("admin:chatops_app_notification_changelist")
    response = client.get(url)
    assert response.status_code == 200
    body = response.content.decode()
    assert "Sent" in body
    assert "Failed (gave up)" in body
    assert "HTTP 500 from the chat service" in body
    response = client.get(url, {"state__exact": "failed"})
    assert [n.channel for n in response.context["cl"].result_list] == ["discord"]


def test_notifications_cannot_be_added_changed_or_deleted(client, superuser):
    task = lifecycle.submit("rotate secrets", lane="backend", risk="high", actor="cli")
    note = Notification.objects.filter(task=task).first()
    client.force_login(superuser)
    assert client.get(reverse("admin:chatops_app_notification_add")).status_code == 403
    url = reverse("admin:chatops_app_notification_change", args=[note.pk])
    assert client.get(url).status_code == 200
    client.post(url, {"state": "sent"})
    note.refresh_from_db()
    assert note.state == DeliveryState.PENDING
    delete = reverse("admin:chatops_app_notification_delete", args=[note.pk])
    assert client.post(delete, {"post": "yes"}).status_code == 403
    assert Notification.objects.filter(pk=note.pk).exists()


def test_superuser_links_a_chat_user(client, superuser, operator):
    client.force_login(superuser)
    response = client.post(
        reverse("admin:chatops_app_chatlink_add"),
        {"platform": "slack", "external_id": "U123", "user": operator.pk},
    )
    assert response.status_code == 302
    link = ChatLink.objects.get()
    assert (link.platform, link.external_id, link.user) == ("slack", "U123", operator)
    # The same chat user cannot be linked twice: a form error, not a 500.
    response = client.post(
        reverse("admin:chatops_app_chatlink_add"),
        {"platform": "slack", "external_id": "U123", "user": superuser.pk},
    )
    assert response.status_code == 200
    assert ChatLink.objects.count() == 1
    listing = client.get(reverse("admin:chatops_app_chatlink_changelist"), {"q": "otto"})
    assert "U123" in listing.content.decode()


def test_staff_with_link_permissions_still_cannot_link_chat_users(client, operator, superuser):
    from django.contrib.auth.models import Permission

    operator.is_staff = True
    operator.save()
    operator.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="chatops_app", codename__contains="link")
    )
    client.force_login(operator)
    response = client.post(
        reverse("admin:chatops_app_chatlink_add"),
        {"platform": "slack", "external_id": "U666", "user": superuser.pk},
    )
    assert response.status_code == 403
    assert not ChatLink.objects.exists()


def test_resend_failed_puts_failed_notifications_back_to_pending(client, superuser):
    task = lifecycle.submit("rotate secrets", lane="backend", risk="high", actor="cli")
    failed = Notification.objects.get(task=task, channel="discord")
    Notification.objects.filter(pk=failed.pk).update(
        state=DeliveryState.FAILED, attempts=5, last_error="invalid_auth"
    )
    sent = Notification.objects.get(task=task, channel="slack")
    Notification.objects.filter(pk=sent.pk).update(state=DeliveryState.SENT)
    client.force_login(superuser)
    response = client.post(
        reverse("admin:chatops_app_notification_changelist"),
        {"action": "resend", "_selected_action": [failed.pk, sent.pk]},
        follow=True,
    )
    assert "1 failed notification put back to pending." in response.content.decode()
    failed.refresh_from_db()
    assert (failed.state, failed.attempts, failed.next_attempt_at) == (
        DeliveryState.PENDING,
        0,
        None,
    )
    sent.refresh_from_db()
    assert sent.state == DeliveryState.SENT


def test_resend_is_not_offered_without_the_change_permission(client, viewer):
    viewer.is_staff = True
    viewer.save()
    client.force_login(viewer)
    response = client.get(reverse("admin:chatops_app_notification_changelist"))
    assert response.status_code == 200
    assert 'value="resend"' not in response.content.decode()


def test_a_clicks_response_url_is_not_shown_in_the_admin(client, superuser):
    secret_url = "https://hooks.example.test/actions/T1/123/s3cr3t"
    row = reply_to_click(secret_url, {"text": "Task #5 retried."}, task_id="5")
    client.force_login(superuser)
    body = client.get(reverse("admin:chatops_app_notification_change", args=[row.pk])).content
    assert secret_url.encode() not in body
    assert b"hidden: a credential" in body
    assert b"Task #5 retried." in body
