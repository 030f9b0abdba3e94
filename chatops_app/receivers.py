"""The core's signals, turned into outbox rows (connected in `ChatopsConfig.ready`)."""

from __future__ import annotations

from django.dispatch import receiver

from tasks_app.models import Task
from tasks_app.signals import attention_needed, factory_alert

from .models import Notification, Platform, notify_factory


@receiver(factory_alert, dispatch_uid="chatops_factory_alert")
def record_factory_alert(
    sender: object,
    *,
    event: str,
    note: str = "",
    worker: str = "",
    data: dict | None = None,
    key: str = "",
    **kwargs: object,
) -> bool:
    """True when this call recorded the alert (a keyed alert is recorded once only)."""
    return bool(notify_factory(event, note=note, worker=worker, data=data, key=key))


@receiver(attention_needed, dispatch_uid="chatops_attention_needed")
def notify_people(sender: object, *, task: Task, event: str, note: str, **kwargs: object) -> None:
    """One outbox row per platform, written in the move's transaction."""
    Notification.objects.bulk_create(
        [Notification(task=task, event=event, channel=p, note=note[:2000]) for p in Platform]
    )
