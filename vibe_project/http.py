"""What every page's view shares: the htmx-aware request, the Viewer gate, the safe "next" and
the one way a page is rendered (whole or as its htmx fragment)."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any
from urllib.parse import urlsplit

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, QueryDict
from django.middleware.csrf import get_token
from django.shortcuts import render
from django.utils.cache import patch_vary_headers
from django.utils.html import format_html
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.safestring import SafeString
from django_htmx.middleware import HtmxDetails

from tasks_app import actors

VIEW_PERMISSION = "tasks_app.view_task"


class HtmxHttpRequest(HttpRequest):
    """A request that passed django-htmx's middleware (its documented typing pattern)."""

    htmx: HtmxDetails


def viewer_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Login, then the Viewer role (or anything above it): an account in no group sees nothing."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.has_perm(VIEW_PERMISSION):
            raise PermissionDenied(
                f"{request.user.get_username()} may not see the factory yet; ask an "
                "administrator to add you to the Viewer group"
            )
        return view(request, *args, **kwargs)

    return login_required(wrapped)


def safe_next(request: HttpRequest, fallback: str) -> str:
    """The form's "next" when it stays on this site, else `fallback`: never an open redirect."""
    target = request.POST.get("next") or request.GET.get("next") or ""
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return fallback


def actor_for(request: HttpRequest) -> str:
    """How the history names a person acting from a page or the admin."""
    return actors.user(request.user.get_username())


def wants_partial(request: HttpRequest) -> bool:
    """An htmx request for a fragment (not a history restore, which needs the whole page)."""
    htmx: HtmxDetails | None = getattr(request, "htmx", None)
    return htmx is not None and bool(htmx) and not htmx.history_restore_request


def current_page(request: HttpRequest) -> tuple[str, QueryDict]:
    """The path and query of the page an htmx request came from (its HX-Current-URL)."""
    htmx = getattr(request, "htmx", None)
    parts = urlsplit((htmx.current_url if htmx else None) or "")
    return parts.path, QueryDict(parts.query)


def csrf_input(request: HttpRequest) -> SafeString:
    """The hidden CSRF field for forms that must also work without JavaScript."""
    return format_html(
        '<input type="hidden" name="csrfmiddlewaretoken" value="{}">', get_token(request)
    )


def render_page(
    request: HttpRequest, template: str, context: dict[str, Any], status: int = 200
) -> HttpResponse:
    """Render and mark the response as varying on HX-Request, so caches never mix the two."""
    # Rendered once per page rather than once per card form: the board has hundreds of them.
    context.setdefault("csrf_input", csrf_input(request))
    context.setdefault("next_url", request.get_full_path())
    response = render(request, template, context, status=status)
    patch_vary_headers(response, ("HX-Request",))
    return response


def sentence(text: str) -> str:
    """A lifecycle message as a page shows it: capitalised."""
    return text[:1].upper() + text[1:] if text else text
