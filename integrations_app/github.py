"""A small GitHub REST client on the standard library: the calls the factory needs, no more.

Plain `urllib.request` with the token, the base URL from VIBE_GITHUB_API_URL (tests point it at
a stand-in on 127.0.0.1), GitHub's media type and API version, and a timeout on every call.

- Conditional GETs: `get(..., conditional=True)` sends the ETag kept in `SyncState`; a 304 comes
  back as `Response(not_modified=True)` and costs none of the rate limit. The caller stores the
  new ETag with `keep_etag` only once it has recorded what the answer said, so a crash between
  the two means the answer is fetched again, never skipped.
- Rate limits: when an answer says `X-RateLimit-Remaining: 0`, the next call waits until
  `X-RateLimit-Reset`; a 403 or 429 that is a rate limit (Retry-After, or no requests left)
  waits and tries once more. Waits longer than `max_wait` raise `RateLimited` instead, so a
  loop is never stuck for an hour inside one call. The sleep is injectable (the sync loop
  passes its stop event's `wait`, so SIGTERM ends a wait at once).
- Every failure is a `GitHubError` carrying GitHub's own message and whether a later try may
  work (`transient`: 5xx, network faults, rate limits).
"""

from __future__ import annotations

import http.client
import json
import logging
import re
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from workers_app.workspace import WorkspaceError, git_remote, workspace_root

from .models import SyncState

logger = logging.getLogger(__name__)

USER_AGENT = "vibe-factory/0.1"
API_VERSION = "2022-11-28"
DEFAULT_TIMEOUT = 15.0
# A rate limit that resets later than this is reported, not slept through inside one call.
DEFAULT_MAX_WAIT = 120.0
# GitHub's advice for a secondary rate limit without Retry-After: wait at least a minute.
SECONDARY_LIMIT_WAIT = 60.0
WRITE_PERMISSIONS = frozenset({"admin", "maintain", "write"})


class GitHubError(Exception):
    """A GitHub call that did not succeed; the message is GitHub's, for a person to read."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        transient: bool = False,
        retry_after: float | None = None,
        github_message: str = "",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.transient = transient
        self.retry_after = retry_after
        self.github_message = github_message or message


class RateLimited(GitHubError):
    """GitHub asked us to wait longer than we wait inside one call."""

    retry_after: float  # always known: it is how long GitHub asked us to wait

    def __init__(self, message: str, *, retry_after: float, status: int | None = None) -> None:
        super().__init__(message, status=status, transient=True, retry_after=retry_after)


class NotConfigured(GitHubError):
    pass


@dataclass
class Response:
    status: int
    data: Any
    headers: dict[str, str] = field(default_factory=dict)
    path: str = ""
    not_modified: bool = False

    @property
    def etag(self) -> str:
        return self.headers.get("etag", "")


# --- Which repository ---------------------------------------------------------------------

_REMOTE_PATTERNS = (
    re.compile(
        r"^(?:https?|git|ssh)://(?:[^@/]+@)?[^/]+(?::\d+)?/(?P<repo>[^/]+/[^/]+?)(?:\.git)?/?$"
    ),
    re.compile(r"^(?:[^@/]+@)?[^:/]+:(?P<repo>[^/]+/[^/]+?)(?:\.git)?/?$"),
)


def repo_from_remote_url(url: str) -> str:
    """'owner/name' from a git remote URL (https, ssh:// or scp-like git@host:owner/name.git)."""
    url = (url or "").strip()
    for pattern in _REMOTE_PATTERNS:
        match = pattern.match(url)
        if match:
            return match.group("repo")
    return ""


def _remote_url() -> str:
    root = workspace_root()
    if root is None or not (root / ".git").exists():
        return ""
    try:
        remote = git_remote(root)
    except WorkspaceError:
        return ""
    if not remote:
        return ""
    try:
        done = subprocess.run(
            ["git", "remote", "get-url", remote],
            cwd=root,
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=15,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.decode("utf-8", "replace").strip() if done.returncode == 0 else ""


def configured_repo() -> str:
    """VIBE_GITHUB_REPO, else owner/name read from the workspace's git remote URL."""
    repo = (settings.VIBE_GITHUB_REPO or "").strip().strip("/")
    if repo:
        if repo.count("/") != 1:
            raise NotConfigured(f"VIBE_GITHUB_REPO={repo!r} is not owner/name")
        return repo
    repo = repo_from_remote_url(_remote_url())
    if not repo:
        raise NotConfigured(
            "cannot tell which GitHub repository to use: set VIBE_GITHUB_REPO=owner/name "
            "(or give VIBE_WORKSPACE a remote whose URL names it)"
        )
    return repo


def same_repo(a: str, b: str) -> bool:
    """GitHub's owner and repository names are case-insensitive."""
    return bool(a) and a.lower() == (b or "").lower()


# --- Errors -------------------------------------------------------------------------------


def github_message(body: Any, fallback: str = "") -> str:
    """GitHub's `message`, followed by each `errors[].message` (where the real reason is)."""
    if not isinstance(body, dict):
        return fallback
    parts = [str(body.get("message") or "").strip()]
    for error in body.get("errors") or ():
        if isinstance(error, dict):
            text = error.get("message") or " ".join(
                str(error[k]) for k in ("resource", "field", "code") if error.get(k)
            )
        else:
            text = str(error)
        if text:
            parts.append(str(text).strip())
    text = ": ".join(p for p in parts if p)
    return text or fallback


def _seconds(raw: Any) -> float | None:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None
    return value if value >= 0 else None


# --- The client -----------------------------------------------------------------------------


class GitHub:
    """One repository's REST API. `clock` and `sleep` are injectable for tests and shutdown."""

    def __init__(
        self,
        *,
        token: str | None = None,
        api_url: str | None = None,
        repo: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_wait: float = DEFAULT_MAX_WAIT,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Any] = time.sleep,
    ) -> None:
        self.token = settings.VIBE_GITHUB_TOKEN if token is None else token
        self.api_url = (api_url or settings.VIBE_GITHUB_API_URL).rstrip("/")
        self._repo = repo
        self.timeout = timeout
        self.max_wait = max_wait
        self.clock = clock
        self.sleep = sleep
        self.blocked_until = 0.0
        self._default_branch = ""

    @property
    def repo(self) -> str:
        if not self._repo:
            self._repo = configured_repo()
        return self._repo

    # --- Requests -------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        payload: Any = None,
        *,
        params: dict[str, Any] | None = None,
        conditional: bool = False,
    ) -> Response:
        """One call; a rate limit is waited out (once) when it is short enough."""
        if not self.token:
            raise NotConfigured("VIBE_GITHUB_TOKEN is not set")
        if params:
            path = f"{path}?{urllib.parse.urlencode(params)}"
        for attempt in (1, 2):
            self._wait_for_rate_limit(path)
            try:
                return self._send(method, path, payload, conditional=conditional)
            except RateLimited as exc:
                if attempt == 2 or exc.retry_after > self.max_wait:
                    raise
                logger.warning("%s; waiting %.0fs", exc, exc.retry_after)
        raise AssertionError("unreachable")  # pragma: no cover

    def get(self, path: str, *, params: dict[str, Any] | None = None, **kw: Any) -> Response:
        return self.request("GET", path, params=params, **kw)

    def _wait_for_rate_limit(self, path: str) -> None:
        wait = self.blocked_until - self.clock()
        if wait <= 0:
            return
        if wait > self.max_wait:
            raise RateLimited(
                f"GitHub's rate limit is used up; it resets in {wait:.0f}s", retry_after=wait
            )
        logger.info("GitHub rate limit: waiting %.1fs before %s", wait, path)
        self.sleep(wait)
        left = self.blocked_until - self.clock()
        if left > 0:  # the wait was cut short (shutdown): do not spend a request on a refusal
            raise RateLimited(
                f"GitHub's rate limit resets in {left:.0f}s; stopped waiting", retry_after=left
            )

    def _note_rate_limit(self, headers: dict[str, str]) -> float | None:
        """Remember when requests may start again; returns the wait if none are left."""
        if headers.get("x-ratelimit-remaining") != "0":
            return None
        reset = _seconds(headers.get("x-ratelimit-reset"))
        if reset is None:
            return None
        wait = max(reset - self.clock(), 0.0) + 1.0  # reset is whole seconds: a margin
        self.blocked_until = max(self.blocked_until, self.clock() + wait)
        return wait

    def _send(self, method: str, path: str, payload: Any, *, conditional: bool) -> Response:
        url = self.api_url + path
        data = json.dumps(payload).encode() if payload is not None else None
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        req.add_header("Accept", "application/vnd.github+json")
        req.add_header("X-GitHub-Api-Version", API_VERSION)
        req.add_header("User-Agent", USER_AGENT)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        etag = _stored_etag(path) if conditional else ""
        if etag:
            req.add_header("If-None-Match", etag)
        what = f"GitHub {method} {path.split('?')[0]}"
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310
                headers = {k.lower(): v for k, v in resp.headers.items()}
                raw = resp.read()
                status = resp.status
        except urllib.error.HTTPError as exc:
            headers = {k.lower(): v for k, v in (exc.headers or {}).items()}
            self._note_rate_limit(headers)
            if exc.code == 304:
                return Response(304, None, headers, path, not_modified=True)
            raise self._error(exc, headers, what) from None
        except (OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise GitHubError(
                f"{what}: could not reach GitHub ({reason})", transient=True
            ) from None
        self._note_rate_limit(headers)
        try:
            body = json.loads(raw.decode("utf-8", "replace")) if raw else None
        except ValueError:
            body = None
        return Response(status, body, headers, path)

    def _error(
        self, exc: urllib.error.HTTPError, headers: dict[str, str], what: str
    ) -> GitHubError:
        try:
            raw = exc.read()
            body = json.loads(raw.decode("utf-8", "replace")) if raw else {}
        except (OSError, ValueError):
            body = {}
        message = github_message(body, str(exc.reason or f"HTTP {exc.code}"))
        text = f"{what}: GitHub answered HTTP {exc.code} ({message})"
        if exc.code in (403, 429):
            wait = _seconds(headers.get("retry-after"))
            if wait is None and headers.get("x-ratelimit-remaining") == "0":
                wait = max(self.blocked_until - self.clock(), 1.0)
            if wait is None and (exc.code == 429 or "rate limit" in message.lower()):
                wait = SECONDARY_LIMIT_WAIT
            if wait is not None:
                self.blocked_until = max(self.blocked_until, self.clock() + wait)
                return RateLimited(text, retry_after=wait, status=exc.code)
        if exc.code == 401:
            text += "; check VIBE_GITHUB_TOKEN"
        return GitHubError(text, status=exc.code, transient=exc.code >= 500, github_message=message)

    def keep_etag(self, response: Response) -> None:
        """Store the answer's ETag, once what it said is safely recorded."""
        if response.not_modified or not response.etag:
            return
        SyncState.objects.update_or_create(
            key=_etag_key(response.path), defaults={"etag": response.etag[:200]}
        )

    # --- The calls the factory makes -------------------------------------------------------

    def _repo_path(self, rest: str = "") -> str:
        return f"/repos/{self.repo}{rest}"

    def default_branch(self) -> str:
        if not self._default_branch:
            data = self.get(self._repo_path()).data or {}
            self._default_branch = str(data.get("default_branch") or "main")
        return self._default_branch

    def create_pull(self, *, head: str, base: str, title: str, body: str) -> dict:
        payload = {"head": head, "base": base, "title": title, "body": body}
        return self.request("POST", self._repo_path("/pulls"), payload).data or {}

    def find_open_pulls(self, head: str) -> list[dict]:
        """Open pull requests whose head is this branch of our repository."""
        owner = self.repo.split("/")[0]
        params = {"head": f"{owner}:{head}", "state": "open"}
        data = self.get(self._repo_path("/pulls"), params=params).data
        return data if isinstance(data, list) else []

    def pull(self, number: int, *, conditional: bool = False) -> Response:
        return self.get(self._repo_path(f"/pulls/{number}"), conditional=conditional)

    def pull_reviews(self, number: int, *, conditional: bool = False) -> Response:
        params = {"per_page": 100}
        path = self._repo_path(f"/pulls/{number}/reviews")
        return self.get(path, params=params, conditional=conditional)

    def review_comments(self, number: int, review_id: int) -> list[dict]:
        path = self._repo_path(f"/pulls/{number}/reviews/{review_id}/comments")
        data = self.get(path, params={"per_page": 100}).data
        return data if isinstance(data, list) else []

    def labelled_issues(self, label: str, *, conditional: bool = False) -> Response:
        params = {"labels": label, "state": "open", "per_page": 100}
        return self.get(self._repo_path("/issues"), params=params, conditional=conditional)

    def issue(self, number: int) -> dict:
        return self.get(self._repo_path(f"/issues/{number}")).data or {}

    def comments_since(self, since: str, *, conditional: bool = False) -> Response:
        params = {"since": since, "sort": "created", "direction": "asc", "per_page": 100}
        path = self._repo_path("/issues/comments")
        return self.get(path, params=params, conditional=conditional)

    def issue_comments(self, number: int) -> list[dict]:
        path = self._repo_path(f"/issues/{number}/comments")
        data = self.get(path, params={"per_page": 100}).data
        return data if isinstance(data, list) else []

    def create_issue_comment(self, number: int, body: str) -> dict:
        path = self._repo_path(f"/issues/{number}/comments")
        return self.request("POST", path, {"body": body}).data or {}

    def can_write(self, login: str) -> bool:
        """Whether `login` has write access (admin, maintain or write) to the repository."""
        quoted = urllib.parse.quote(login, safe="")
        try:
            data = self.get(self._repo_path(f"/collaborators/{quoted}/permission")).data or {}
        except GitHubError as exc:
            if exc.status == 404:  # not a collaborator at all
                return False
            raise
        granted = {str(data.get("permission") or ""), str(data.get("role_name") or "")}
        return bool(granted & WRITE_PERMISSIONS)


def _etag_key(path: str) -> str:
    return f"etag:{path}"[:500]


def _stored_etag(path: str) -> str:
    return (
        SyncState.objects.filter(key=_etag_key(path)).values_list("etag", flat=True).first() or ""
    )
