"""Requests no view should see."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, QueryDict

NUL_MESSAGE = "NUL characters are not allowed in a request"
# Their bodies are signed bytes the views verify before parsing: reading request.POST here
# would consume the stream they check (and a NUL there is for the signature to judge).
RAW_BODY_PATHS = ("/chatops/", "/integrations/")
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def _has_nul(data: QueryDict) -> bool:
    return any("\x00" in key or any("\x00" in v for v in values) for key, values in data.lists())


class RefuseNulMiddleware:
    """400 for a NUL anywhere in the path, the query string or a form's fields.

    PostgreSQL refuses a NUL in any text it is sent, so an admin filter, a history search, an
    autocomplete term or a worker's URL holding one was a 500; no person types one. Checked once
    here rather than in every view and every admin lookup.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if self._has_nul(request):
            return HttpResponseBadRequest(NUL_MESSAGE, content_type="text/plain; charset=utf-8")
        return self.get_response(request)

    @staticmethod
    def _has_nul(request: HttpRequest) -> bool:
        if "\x00" in request.path or _has_nul(request.GET):
            return True
        if request.method != "POST" or request.path.startswith(RAW_BODY_PATHS):
            return False
        return request.content_type in FORM_TYPES and _has_nul(request.POST)
