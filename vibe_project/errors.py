"""Refusals and missing pages as a person should meet them, in every setting.

With DEBUG on (the default for `make run`) Django answers a bad address with its yellow
technical page and logs every 403 with a full traceback, so one refused click filled the
terminal. Here: the product's own 404 page whatever DEBUG says, and one log line per refusal.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render


class ProductNotFoundMiddleware:
    """The product's 404 page while DEBUG is on (Django already uses it when DEBUG is off).

    A view that raises Http404 is answered in `process_exception`; an address no URL matches
    never reaches a view, so its technical page is swapped for ours on the way out. A view
    that returns a 404 of its own (an API's JSON, a plain-text answer) is left as it is.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if settings.DEBUG and response.status_code == 404 and request.resolver_match is None:
            return _not_found(request)
        return response

    def process_exception(self, request: HttpRequest, exception: Exception):
        if settings.DEBUG and isinstance(exception, Http404):
            return _not_found(request)
        return None


def _not_found(request: HttpRequest) -> HttpResponse:
    # Logged as "Not Found: /path" by Django's handler, like any 404.
    return render(request, "404.html", status=404)


class OneLineRefusals(logging.Filter):
    """A refused request (403) logs one line with the reason, not a traceback.

    A PermissionDenied is how a view says "not for you"; its stack says nothing a person
    needs, and the reason is in the exception's message.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "status_code", None) == 403 and record.exc_info:
            reason = str(record.exc_info[1] or "").strip()
            record.msg = record.getMessage() + (f" ({reason})" if reason else "")
            record.args = ()
            record.exc_info = None
            record.exc_text = None
        return True
