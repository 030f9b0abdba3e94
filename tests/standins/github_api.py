"""A stand-in for GitHub's REST API, and a sender of signed webhooks to the factory.

Point the client at it with `VIBE_GITHUB_API_URL=<url>` and `VIBE_GITHUB_TOKEN=TOKEN`. It keeps
one repository (`REPO`) in memory and answers what the factory calls:

    GET  /repos/{o}/{r}                                   the repository (default_branch)
    POST /repos/{o}/{r}/pulls                             open a pull request (422 if one is open)
    GET  /repos/{o}/{r}/pulls?head=o:branch&state=open    find pull requests
    GET  /repos/{o}/{r}/pulls/{n}                         one pull request
    GET  /repos/{o}/{r}/pulls/{n}/reviews                 its reviews
    GET  /repos/{o}/{r}/pulls/{n}/reviews/{id}/comments   one review's comments
    GET  /repos/{o}/{r}/issues?labels=…&state=open        issues
    GET  /repos/{o}/{r}/issues/{n}                        one issue
    GET  /repos/{o}/{r}/issues/comments?since=…           recent issue comments
    GET  /repos/{o}/{r}/issues/{n}/comments               an issue's comments
    POST /repos/{o}/{r}/issues/{n}/comments               comment on an issue
    GET  /repos/{o}/{r}/collaborators/{user}/permission   a user's permission

Every GET answer carries an ETag and a 304 for a matching If-None-Match; every answer carries
rate-limit headers. It records every request (`requests`), can be told to fail
(`fail_next(500)`, `fail_next(422, {...})`), to be rate-limited (`rate_limit_next`,
`secondary_limit_next`), and plays GitHub's side (`merge`, `close_pull`, `add_review`,
`add_issue`, `add_comment`), each returning the webhook payload GitHub would send, which
`send_webhook` signs and POSTs to the factory (a Django test client or a live server's URL).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from datetime import UTC, datetime
from typing import Any

from .http import Reply, Request, StandIn

TOKEN = "ghp_standin_token"
REPO = "octo/factory"
WEBHOOK_SECRET = "webhook-test-secret"
WEBHOOK_PATH = "/integrations/github/webhook"
RATE_LIMIT = 5000


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _user(login: str) -> dict:
    return {"login": login, "id": abs(hash(login)) % 10**8, "type": "User"}


class GitHubStandIn(StandIn):
    def __init__(self, repo: str = REPO, *, default_branch: str = "main") -> None:
        super().__init__()
        self.repo = repo
        self.owner = repo.split("/")[0]
        self.default_branch = default_branch
        self.pulls: dict[int, dict] = {}
        self.reviews: dict[int, list[dict]] = {}
        self.review_comments: dict[int, list[dict]] = {}
        self.issues: dict[int, dict] = {}
        self.comments: dict[int, list[dict]] = {}
        self.permissions: dict[str, str] = {}
        self.remaining = RATE_LIMIT
        self._numbers = itertools.count(1)
        self._ids = itertools.count(1000)
        self._state_lock = threading.Lock()
        self._limits: list[Reply] = []

    # --- Being told to fail -------------------------------------------------------------

    def rate_limit_next(self, seconds: float = 1.0) -> None:
        """The next request gets a primary rate limit: 403, none left, reset in `seconds`."""
        reset = str(int(time.time() + seconds))
        body = {"message": "API rate limit exceeded for user ID 1."}
        headers = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset}
        self._limits.append(Reply.json(body, 403, **headers))

    def secondary_limit_next(self, retry_after: int = 1) -> None:
        """The next request gets a secondary rate limit: 429 with Retry-After."""
        body = {"message": "You have exceeded a secondary rate limit."}
        self._limits.append(Reply.json(body, 429, **{"Retry-After": str(retry_after)}))

    # --- GitHub's side of things (each returns the webhook payload GitHub would send) ------

    def _repository(self) -> dict:
        return {
            "full_name": self.repo,
            "name": self.repo.split("/")[1],
            "owner": _user(self.owner),
            "default_branch": self.default_branch,
            "html_url": f"https://github.com/{self.repo}",
        }

    def add_pull(self, head: str, base: str = "main", *, title: str = "t", body: str = "") -> dict:
        with self._state_lock:
            number = next(self._numbers)
            pr = {
                "number": number,
                "id": next(self._ids),
                "html_url": f"https://github.com/{self.repo}/pull/{number}",
                "state": "open",
                "title": title,
                "body": body,
                "head": {"ref": head, "label": f"{self.owner}:{head}", "sha": "a" * 40},
                "base": {"ref": base, "label": f"{self.owner}:{base}"},
                "user": _user("vibe-bot"),
                "merged": False,
                "merged_at": None,
                "merged_by": None,
                "merge_commit_sha": None,
                "closed_at": None,
                "created_at": now_iso(),
                "updated_at": now_iso(),
            }
            self.pulls[number] = pr
            self.reviews[number] = []
        return pr

    def merge(self, number: int, *, by: str = "maria") -> dict:
        pr = self.pulls[number]
        pr.update(
            state="closed",
            merged=True,
            merged_at=now_iso(),
            closed_at=now_iso(),
            merged_by=_user(by),
            merge_commit_sha="m" * 40,
            updated_at=now_iso(),
        )
        return self.pr_payload("closed", pr, by)

    def close_pull(self, number: int, *, by: str = "maria") -> dict:
        pr = self.pulls[number]
        pr.update(state="closed", closed_at=now_iso(), updated_at=now_iso())
        return self.pr_payload("closed", pr, by)

    def pr_payload(self, action: str, pr: dict, by: str) -> dict:
        return {
            "action": action,
            "number": pr["number"],
            "pull_request": json.loads(json.dumps(pr)),
            "repository": self._repository(),
            "sender": _user(by),
        }

    def add_review(
        self,
        number: int,
        *,
        state: str = "CHANGES_REQUESTED",
        body: str = "",
        comments: list[dict] | None = None,
        by: str = "rita",
    ) -> dict:
        """A submitted review; `comments` are {"path", "line", "body"} dicts."""
        with self._state_lock:
            review_id = next(self._ids)
            item = {
                "id": review_id,
                "user": _user(by),
                "body": body,
                "state": state,
                "submitted_at": now_iso(),
                "html_url": f"https://github.com/{self.repo}/pull/{number}#review-{review_id}",
            }
            self.reviews.setdefault(number, []).append(item)
            self.review_comments[review_id] = [
                {
                    "id": next(self._ids),
                    "pull_request_review_id": review_id,
                    "path": c["path"],
                    "line": c.get("line"),
                    "original_line": c.get("line"),
                    "body": c["body"],
                    "user": _user(by),
                }
                for c in comments or []
            ]
        pr = self.pulls[number]
        return {
            "action": "submitted",
            "review": {**item, "state": state.lower()},
            "pull_request": json.loads(json.dumps(pr)),
            "repository": self._repository(),
            "sender": _user(by),
        }

    def add_issue(
        self, title: str, body: str = "", *, labels: tuple[str, ...] = ("vibe",), by: str = "ivan"
    ) -> dict:
        """An open issue; the payload is the `issues.labeled` delivery for its first label."""
        with self._state_lock:
            number = next(self._numbers)
            issue = {
                "number": number,
                "id": next(self._ids),
                "title": title,
                "body": body,
                "state": "open",
                "labels": [{"name": name} for name in labels],
                "user": _user(by),
                "html_url": f"https://github.com/{self.repo}/issues/{number}",
                "created_at": now_iso(),
                "updated_at": now_iso(),
            }
            self.issues[number] = issue
            self.comments[number] = []
        return {
            "action": "labeled",
            "label": {"name": labels[0] if labels else ""},
            "issue": json.loads(json.dumps(issue)),
            "repository": self._repository(),
            "sender": _user(by),
        }

    def add_comment(self, number: int, body: str, *, by: str = "walt") -> dict:
        """A comment on an issue; the payload is the `issue_comment.created` delivery."""
        comment = self._comment(number, body, by)
        return {
            "action": "created",
            "comment": comment,
            "issue": json.loads(json.dumps(self.issues[number])),
            "repository": self._repository(),
            "sender": _user(by),
        }

    def _comment(self, number: int, body: str, by: str) -> dict:
        with self._state_lock:
            comment_id = next(self._ids)
            comment = {
                "id": comment_id,
                "body": body,
                "user": _user(by),
                "issue_url": f"{self.url}/repos/{self.repo}/issues/{number}",
                "html_url": f"https://github.com/{self.repo}/issues/{number}#c{comment_id}",
                "created_at": now_iso(),
                "updated_at": now_iso(),
            }
            self.comments.setdefault(number, []).append(comment)
        return comment

    # --- What was asked -----------------------------------------------------------------

    def calls(self, method: str, path_prefix: str) -> list[Request]:
        return [
            r
            for r in self.requests
            if r.method == method and r.path.split("?")[0] == path_prefix.split("?")[0]
        ]

    # --- Answering ----------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        self.remaining = max(self.remaining - 1, 0)
        return {
            "X-RateLimit-Limit": str(RATE_LIMIT),
            "X-RateLimit-Remaining": str(max(self.remaining, 1)),
            "X-RateLimit-Reset": str(int(time.time()) + 3600),
        }

    def _json(self, request: Request, body: Any, status: int = 200) -> Reply:
        headers = self._headers()
        raw = json.dumps(body, sort_keys=True)
        if request.method == "GET" and status == 200:
            etag = '"' + hashlib.sha1(raw.encode()).hexdigest() + '"'  # noqa: S324
            headers["ETag"] = etag
            if request.headers.get("if-none-match") == etag:
                return Reply(304, b"", headers)  # unchanged: costs no rate limit on GitHub
        return Reply.json(body, status, **headers)

    def _error(self, request: Request, status: int, message: str, errors: list | None = None):
        body: dict[str, Any] = {"message": message, "documentation_url": "https://docs.github.com"}
        if errors:
            body["errors"] = errors
        return Reply.json(body, status, **self._headers())

    def handle(self, request: Request) -> Reply:
        if self._limits:
            return self._limits.pop(0)
        auth = request.headers.get("authorization", "")
        if auth not in (f"Bearer {TOKEN}", f"token {TOKEN}"):
            return self._error(request, 401, "Bad credentials")
        parsed = urllib.parse.urlsplit(request.path)
        query = dict(urllib.parse.parse_qsl(parsed.query))
        prefix = f"/repos/{self.repo}"
        if not parsed.path.lower().startswith(prefix.lower()):
            return self._error(request, 404, "Not Found")
        rest = parsed.path[len(prefix) :]
        return self._route(request, request.method, rest, query)

    def _route(self, request: Request, method: str, rest: str, query: dict) -> Reply:
        match = re.fullmatch
        if method == "GET" and rest == "":
            return self._json(request, self._repository())
        if rest == "/pulls":
            if method == "POST":
                return self._create_pull(request)
            found = list(self.pulls.values())
            if query.get("head"):
                found = [p for p in found if p["head"]["label"] == query["head"]]
            state = query.get("state", "open")
            if state != "all":
                found = [p for p in found if p["state"] == state]
            return self._json(request, found)
        if m := match(r"/pulls/(\d+)", rest):
            pr = self.pulls.get(int(m.group(1)))
            return self._json(request, pr) if pr else self._error(request, 404, "Not Found")
        if m := match(r"/pulls/(\d+)/reviews", rest):
            return self._json(request, self.reviews.get(int(m.group(1)), []))
        if m := match(r"/pulls/(\d+)/reviews/(\d+)/comments", rest):
            return self._json(request, self.review_comments.get(int(m.group(2)), []))
        if rest == "/issues" and method == "GET":
            labels = {x for x in query.get("labels", "").split(",") if x}
            state = query.get("state", "open")
            found = [
                i
                for i in self.issues.values()
                if (state == "all" or i["state"] == state)
                and labels <= {lb["name"] for lb in i["labels"]}
            ]
            return self._json(request, found)
        if rest == "/issues/comments" and method == "GET":
            since = query.get("since", "")
            found = [c for cs in self.comments.values() for c in cs if c["updated_at"] >= since]
            found.sort(key=lambda c: (c["created_at"], c["id"]))
            return self._json(request, found)
        if m := match(r"/issues/(\d+)", rest):
            issue = self.issues.get(int(m.group(1)))
            return self._json(request, issue) if issue else self._error(request, 404, "Not Found")
        if m := match(r"/issues/(\d+)/comments", rest):
            number = int(m.group(1))
            if number not in self.issues:
                return self._error(request, 404, "Not Found")
            if method == "POST":
                body = (request.json or {}).get("body", "")
                return self._json(request, self._comment(number, body, "vibe-bot"), 201)
            return self._json(request, self.comments.get(number, []))
        if m := match(r"/collaborators/([^/]+)/permission", rest):
            login = urllib.parse.unquote(m.group(1))
            permission = self.permissions.get(login, "none")
            legacy = {"maintain": "write", "triage": "read"}.get(permission, permission)
            body = {"permission": legacy, "role_name": permission, "user": _user(login)}
            return self._json(request, body)
        return self._error(request, 404, "Not Found")

    def _create_pull(self, request: Request) -> Reply:
        data = request.json or {}
        head, base = str(data.get("head") or ""), str(data.get("base") or "")
        if not head or not base or not data.get("title"):
            return self._error(request, 422, "Validation Failed", [{"code": "missing_field"}])
        label = head if ":" in head else f"{self.owner}:{head}"
        for pr in self.pulls.values():
            if pr["state"] == "open" and pr["head"]["label"] == label and pr["base"]["ref"] == base:
                return self._error(
                    request,
                    422,
                    "Validation Failed",
                    [
                        {
                            "resource": "PullRequest",
                            "code": "custom",
                            "message": f"A pull request already exists for {label}.",
                        }
                    ],
                )
        pr = self.add_pull(
            label.split(":", 1)[1], base, title=data["title"], body=data.get("body", "")
        )
        return self._json(request, pr, 201)


# --- Webhooks to the factory -------------------------------------------------------------------


def sign(body: bytes, secret: str = WEBHOOK_SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def webhook_headers(
    event: str, body: bytes, *, secret: str | None = WEBHOOK_SECRET, delivery: str | None = None
) -> dict[str, str]:
    headers = {
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "User-Agent": "GitHub-Hookshot/standin",
    }
    if secret is not None:
        headers["X-Hub-Signature-256"] = sign(body, secret)
    return headers


def send_webhook(
    target: Any,
    event: str,
    payload: dict | bytes,
    *,
    secret: str | None = WEBHOOK_SECRET,
    delivery: str | None = None,
    signature: str | None = None,
) -> tuple[int, str]:
    """Sign `payload` and POST it as GitHub would; returns (status, text).

    `target` is a Django test client, or a live server's base URL. `secret=None` sends it
    unsigned; `signature=` sends that signature instead of the right one (a forgery).
    """
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = webhook_headers(event, body, secret=secret, delivery=delivery)
    if signature is not None:
        headers["X-Hub-Signature-256"] = signature
    if isinstance(target, str):
        req = urllib.request.Request(
            target.rstrip("/") + WEBHOOK_PATH, data=body, method="POST", headers=headers
        )
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
    response = target.post(
        WEBHOOK_PATH, data=body, content_type="application/json", headers=headers
    )
    return response.status_code, response.content.decode()
