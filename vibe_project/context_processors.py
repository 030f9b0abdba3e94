"""What every template may ask: `can.retry`, `can.pause`… for the person viewing the page."""

from __future__ import annotations

from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject

from tasks_app.actions import ACTION_PERMISSIONS, can


def permissions(request: HttpRequest) -> dict[str, object]:
    """Which buttons to show; the action views check again, so hiding is only a courtesy.

    Worked out only when a template asks (the admin and the error pages never do).
    """
    user = getattr(request, "user", None)
    return {"can": SimpleLazyObject(lambda: {name: can(user, name) for name in ACTION_PERMISSIONS})}
