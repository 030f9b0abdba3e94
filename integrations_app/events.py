"""GitHub events, handled once whichever way they arrived: the webhook or the poller.

Both doors turn what GitHub sent into a `Found` event (a key naming the event, a kind, and a
small payload of the same shape either way), `record` it (the unique key makes the first writer
the only one) and `handle` it. Handling claims the row with a compare-and-swap on
(`state`, `attempts`) and a lease, calls the lifecycle, and writes the outcome with the same
compare-and-swap. A passing fault (GitHub down while fetching a review's comments) leaves the
row pending with a backoff, and the sync loop's `retry_due` tries it again; a crash mid-way
lets the lease run out and the row come due again. The handlers are safe to run again: the
lifecycle refuses a second move, and an issue that already has a task gets no second one.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from tasks_app import actors, lifecycle
from tasks_app.choices import WAITING_DELIVERY, Delivery, Lane, Status
from tasks_app.models import Task

from .github import GitHub, GitHubError, same_repo
from .models import EventKind, EventState, GitHubEvent, IssueComment

logger = logging.getLogger(__name__)

LEASE = timedelta(minutes=5)  # longer than any handler's GitHub calls can take
PERMANENT_TRIES = 5  # a refusal (404, 422) or a bug: tried this often, then given up
RETRY_BASE_SECONDS = 30.0
RETRY_MAX_SECONDS = 3600.0
COMMAND = "/vibe do"
MARKER = "<!-- vibe-factory:task-{pk} -->"
SEVERITIES = ("CRITICAL", "HIGH", "MEDIUM", "LOW")
_SEVERITY_PREFIX = re.compile(r"^\W*(CRITICAL|HIGH|MEDIUM|LOW)\b\W*", re.IGNORECASE)


class NotYet(Exception):
    """The work is still under way (a rework round): try the event again once it waits."""


@dataclass
class Found:
    """An event worth acting on, in the shape both doors share."""

    key: str
    kind: str
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass
class Outcome:
    text: str
    task_id: int | None = None


# --- Events from what GitHub sent (webhook payloads and REST objects look alike) -----------


def login_of(obj: Any) -> str:
    return str((obj or {}).get("login") or "") if isinstance(obj, dict) else ""


def _label_names(issue: dict) -> list[str]:
    return [str(lb.get("name") or "") for lb in issue.get("labels") or () if isinstance(lb, dict)]


def pr_closed(repo: str, pr: dict, *, login: str = "") -> Found:
    """A pull request that is closed, merged or not (the key changes if it is reopened)."""
    number = int(pr["number"])
    by = login_of(pr.get("merged_by")) or login or login_of(pr.get("user"))
    return Found(
        f"pr:{repo.lower()}#{number}:closed:{pr.get('closed_at') or ''}",
        EventKind.PR_CLOSED,
        {
            "repo": repo,
            "number": number,
            "head": str((pr.get("head") or {}).get("ref") or ""),
            "merged": bool(pr.get("merged") or pr.get("merged_at")),
            "merge_commit": str(pr.get("merge_commit_sha") or ""),
            "login": by,
        },
    )


def review(repo: str, number: int, head: str, item: dict) -> Found | None:
    """A review that asked for changes; other reviews change nothing here."""
    if str(item.get("state") or "").lower() != "changes_requested":
        return None
    return Found(
        f"review:{item['id']}",
        EventKind.REVIEW,
        {
            "repo": repo,
            "number": int(number),
            "head": head,
            "review_id": int(item["id"]),
            "login": login_of(item.get("user")),
            "body": str(item.get("body") or ""),
        },
    )


def _issue_fields(issue: dict) -> dict:
    return {
        "title": str(issue.get("title") or ""),
        "body": str(issue.get("body") or ""),
        "labels": _label_names(issue),
        "is_pull_request": "pull_request" in issue,
        "open": str(issue.get("state") or "open") == "open",
    }


def labelled_issue(repo: str, issue: dict, *, login: str) -> Found | None:
    """An open issue (not a pull request) carrying the factory's label."""
    if "pull_request" in issue or str(issue.get("state") or "open") != "open":
        return None
    wanted = settings.VIBE_GITHUB_LABEL.lower()
    if wanted not in (name.lower() for name in _label_names(issue)):
        return None
    number = int(issue["number"])
    return Found(
        f"issue:{repo.lower()}#{number}",
        EventKind.ISSUE,
        {"repo": repo, "number": number, "login": login, **_issue_fields(issue)},
    )


def is_command(text: str) -> bool:
    return (text or "").lstrip().lower().startswith(COMMAND)


def command(repo: str, comment: dict, *, issue: dict | None = None) -> Found | None:
    """A `/vibe do` comment; the poller has no issue with it, the handler fetches it then."""
    text = str(comment.get("body") or "")
    if not is_command(text):
        return None
    if issue is not None:
        number = int(issue["number"])
    else:
        match = re.search(r"/issues/(\d+)$", str(comment.get("issue_url") or ""))
        if not match:
            return None
        number = int(match.group(1))
    payload = {
        "repo": repo,
        "number": number,
        "comment_id": int(comment["id"]),
        "login": login_of(comment.get("user")),
        "text": text,
    }
    if issue is not None:
        payload["issue"] = _issue_fields(issue)
    return Found(f"comment:{comment['id']}", EventKind.COMMAND, payload)


# --- Recording and handling -----------------------------------------------------------------


def record(found: Found, *, source: str) -> GitHubEvent | None:
    """Write the event's row; None when its key was seen before (it is handled, or being)."""
    try:
        with transaction.atomic():
            return GitHubEvent.objects.create(
                key=found.key[:200], kind=found.kind, source=source, payload=found.payload
            )
    except IntegrityError:
        return None


def _claim(event: GitHubEvent, now: datetime) -> int | None:
    token = event.attempts + 1
    taken = (
        GitHubEvent.objects.filter(pk=event.pk, state=EventState.PENDING, attempts=event.attempts)
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        .update(attempts=F("attempts") + 1, next_attempt_at=now + LEASE)
    )
    return token if taken == 1 else None


def _finish(event: GitHubEvent, token: int, **fields: Any) -> None:
    done = GitHubEvent.objects.filter(pk=event.pk, state=EventState.PENDING, attempts=token).update(
        **fields
    )
    if not done:
        logger.warning("GitHub event %s: another handler took it over; outcome dropped", event.key)


def backoff(attempts: int) -> timedelta:
    base = min(RETRY_MAX_SECONDS, RETRY_BASE_SECONDS * 2 ** min(max(attempts - 1, 0), 20))
    return timedelta(seconds=base * (0.5 + 0.5 * random.random()))


def handle(event: GitHubEvent, client: GitHub) -> str:
    """Handle one recorded event (if no one else holds it); returns what happened."""
    now = timezone.now()
    token = _claim(event, now)
    if token is None:
        return "being handled elsewhere"
    retry_after = 0.0
    try:
        outcome = HANDLERS[event.kind](event.payload, client)
    except GitHubError as exc:
        error, transient, retry_after = str(exc), exc.transient, exc.retry_after or 0.0
    except NotYet as exc:
        error, transient = str(exc), True
    except Exception as exc:  # a bug must not crash-loop the loop: tried a few times, then aside
        logger.exception("GitHub event %s: unexpected error", event.key)
        error, transient = f"internal error: {exc!r}", False
    else:
        _finish(
            event,
            token,
            state=EventState.DONE,
            outcome=outcome.text[:4000],
            task_id=outcome.task_id,
            next_attempt_at=None,
            handled_at=timezone.now(),
        )
        logger.info("GitHub event %s: %s", event.key, outcome.text)
        return outcome.text
    if not transient and token >= PERMANENT_TRIES:
        _finish(event, token, state=EventState.FAILED, outcome=error[:4000], next_attempt_at=None)
        logger.error("GitHub event %s failed for good: %s", event.key, error)
        return f"failed: {error}"
    delay = max(backoff(token), timedelta(seconds=retry_after))
    _finish(event, token, outcome=error[:4000], next_attempt_at=timezone.now() + delay)
    logger.warning(
        "GitHub event %s: attempt %s failed, next in %.0fs: %s",
        event.key,
        token,
        delay.total_seconds(),
        error,
    )
    return f"will retry: {error}"


def due(now: datetime | None = None) -> QuerySet[GitHubEvent]:
    now = now or timezone.now()
    return GitHubEvent.objects.filter(state=EventState.PENDING).filter(
        Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
    )


def retry_due(client: GitHub, *, limit: int = 20) -> int:
    """Handle events whose earlier try failed (or whose handler died); returns how many."""
    rows = list(due().order_by("created_at", "id")[:limit])
    for row in rows:
        handle(row, client)
    return len(rows)


# --- The handlers ---------------------------------------------------------------------------


def _pr_task(repo: str, number: int, head: str) -> Task | None:
    """The work a pull request delivers: by its number in this repository, else its branch."""
    builders = Task.objects.filter(stage="", delivery=Delivery.PULL_REQUEST)
    found = (
        builders.filter(pr_number=number, pr_url__iendswith=f"/{repo}/pull/{number}")
        .order_by("-id")
        .first()
    )
    if found is None and head:
        # Only work whose pull request is not recorded yet: a second pull request someone
        # opened from the same branch must not move work that has its own.
        found = builders.filter(branch=head, pr_number__isnull=True).order_by("-id").first()
    return found


def _wait_while_under_way(task: Task, what: str) -> None:
    """A merge or review of work being reworked applies once the work waits for a merge again."""
    under_way = task.status in (Status.PENDING, Status.IN_PROGRESS) or (
        task.status == Status.REVIEW_NEEDED and task.delivery_state not in WAITING_DELIVERY
    )
    if under_way:
        raise NotYet(f"task #{task.pk} is {task.get_status_display().lower()}; {what} waits")


def _moved(call: Callable[..., Task], *args: Any, **kwargs: Any) -> tuple[Task | None, str]:
    """Run a lifecycle move; a refused move (already moved) is an answer, not a failure."""
    try:
        return call(*args, **kwargs), ""
    except lifecycle.LifecycleError as exc:
        logger.info("GitHub event: lifecycle refused: %s", exc)
        return None, str(exc)


def _handle_pr_closed(payload: dict, client: GitHub) -> Outcome:
    number = payload["number"]
    task = _pr_task(payload["repo"], number, payload.get("head", ""))
    if task is None:
        return Outcome(f"no task delivers pull request #{number}; nothing to do")
    actor = actors.github(payload.get("login") or "unknown")
    _wait_while_under_way(task, f"pull request #{number} being closed")
    if payload.get("merged"):
        done, refused = _moved(
            lifecycle.merged,
            task.pk,
            actor=actor,
            merge_commit=payload.get("merge_commit", ""),
            note=f"pull request #{number} merged on GitHub",
        )
        text = f"task #{task.pk} completed: pull request #{number} merged"
    else:
        done, refused = _moved(lifecycle.pr_closed, task.pk, actor=actor)
        text = f"task #{task.pk} blocked: pull request #{number} closed without merging"
    return Outcome(refused or text, task.pk)


def _finding(comment: dict) -> dict:
    """A review comment as a finding; a leading "HIGH:" (or similar) sets its severity."""
    body = str(comment.get("body") or "").strip()
    severity = "MEDIUM"
    match = _SEVERITY_PREFIX.match(body)
    if match:
        severity = match.group(1).upper()
        body = body[match.end() :].strip() or body
    line = comment.get("line") or comment.get("original_line")
    return {
        "severity": severity,
        "title": (body.splitlines() or [""])[0][:200] or "review comment",
        "detail": body,
        "file": str(comment.get("path") or ""),
        "line": line if isinstance(line, int) else None,
    }


def _handle_review(payload: dict, client: GitHub) -> Outcome:
    number = payload["number"]
    task = _pr_task(payload["repo"], number, payload.get("head", ""))
    if task is None:
        return Outcome(f"no task delivers pull request #{number}; nothing to do")
    _wait_while_under_way(task, f"the review of pull request #{number}")
    comments = client.review_comments(number, payload["review_id"])
    findings = [_finding(c) for c in comments if isinstance(c, dict)]
    login = payload.get("login") or "unknown"
    comment = payload.get("body", "").strip()[: lifecycle.MAX_COMMENT_LENGTH]
    if not comment and not findings:
        comment = f"{login} requested changes on pull request #{number}"
    done, refused = _moved(
        lifecycle.request_changes,
        task.pk,
        comment=comment,
        findings=findings,
        actor=actors.github(login),
    )
    text = f"task #{task.pk}: rework round with {len(findings)} finding(s) from {login}"
    return Outcome(refused or text, task.pk)


def issue_ref(repo: str, number: int) -> str:
    return f"{repo}#{number}"


def task_link(task: Task) -> str:
    path = task.get_absolute_url()
    return f"{settings.VIBE_BASE_URL}{path}" if settings.VIBE_BASE_URL else ""


def queue_task_link(task: Task, repo: str, number: int) -> IssueComment:
    """The comment that tells the issue which task took it on, sent by the sync loop."""
    link = task_link(task)
    where = f"[task #{task.pk}]({link})" if link else f"task #{task.pk}"
    body = (
        f"Vibe Factory took this issue on as {where} ({task.lane} lane). "
        f"Its pull request will say `Closes #{number}`.\n\n{MARKER.format(pk=task.pk)}"
    )
    row, _ = IssueComment.objects.get_or_create(
        key=f"task-link:{task.pk}",
        defaults={"repo": repo, "issue_number": number, "body": body, "task": task},
    )
    return row


def _lane(labels: list[str], text: str = "") -> str:
    """`/vibe do frontend` or a `vibe:frontend` label; else the backend lane."""
    words = text.lstrip()[len(COMMAND) :].split()
    if words and words[0].lower() in Lane.values:
        return words[0].lower()
    prefix = f"{settings.VIBE_GITHUB_LABEL.lower()}:"
    for name in labels:
        lane = name.lower().removeprefix(prefix) if name.lower().startswith(prefix) else ""
        if lane in Lane.values:
            return lane
    return Lane.BACKEND


def _task_for_issue(payload: dict, issue: dict, *, login: str, text: str = "") -> Outcome:
    repo, number = payload["repo"], payload["number"]
    ref = issue_ref(repo, number)
    existing = Task.objects.filter(github_issue__iexact=ref, stage="").order_by("id").first()
    if existing is not None:
        queue_task_link(existing, repo, number)
        return Outcome(f"issue {ref} already has task #{existing.pk}", existing.pk)
    goal = f"{issue['title'].strip()}\n\n{issue['body'].strip()}".strip()
    task, refused = _moved(
        lifecycle.submit,
        goal[: lifecycle.MAX_GOAL_LENGTH],
        lane=_lane(issue.get("labels") or [], text),
        actor=actors.github(login or "unknown"),
        delivery=Delivery.PULL_REQUEST,
        github_issue=ref,
        key=f"github:{ref}",  # one task per issue, even when a label and a comment race
    )
    if task is None:
        return Outcome(f"issue {ref} was not taken on: {refused}")
    if getattr(task, "was_submitted_before", False):
        return Outcome(f"issue {ref} already has task #{task.pk}", task.pk)
    queue_task_link(task, repo, number)
    return Outcome(f"issue {ref} became task #{task.pk}", task.pk)


def _handle_issue(payload: dict, client: GitHub) -> Outcome:
    return _task_for_issue(payload, payload, login=payload.get("login", ""))


def _handle_command(payload: dict, client: GitHub) -> Outcome:
    login = payload.get("login") or ""
    if not login or not client.can_write(login):
        return Outcome(f"/vibe do from {login or 'someone unknown'} ignored: no write access")
    issue = payload.get("issue")
    if issue is None:
        issue = _issue_fields(client.issue(payload["number"]))
    if issue.get("is_pull_request"):
        return Outcome("/vibe do on a pull request ignored; use it on an issue")
    if not issue.get("open", True):
        return Outcome(f"/vibe do on closed issue #{payload['number']} ignored")
    return _task_for_issue(payload, issue, login=login, text=payload.get("text", ""))


HANDLERS: dict[str, Callable[[dict[str, Any], GitHub], Outcome]] = {
    EventKind.PR_CLOSED: _handle_pr_closed,
    EventKind.REVIEW: _handle_review,
    EventKind.ISSUE: _handle_issue,
    EventKind.COMMAND: _handle_command,
}


# --- The webhook's side ---------------------------------------------------------------------


def from_webhook(event: str, payload: dict, repo: str) -> Found | str:
    """The event a webhook delivery carries, or why it is ignored."""
    action = str(payload.get("action") or "")
    full_name = str((payload.get("repository") or {}).get("full_name") or "")
    if not same_repo(full_name, repo):
        return f"ignored: {full_name or 'no repository'} is not {repo}"
    sender = login_of(payload.get("sender"))
    try:
        if event == "pull_request" and action == "closed":
            return pr_closed(repo, payload["pull_request"], login=sender)
        if event == "pull_request_review" and action == "submitted":
            pr = payload["pull_request"]
            head = str((pr.get("head") or {}).get("ref") or "")
            found = review(repo, pr["number"], head, payload["review"])
            return found or "ignored: the review did not request changes"
        if event == "issues" and action == "labeled":
            label = str((payload.get("label") or {}).get("name") or "")
            if label.lower() != settings.VIBE_GITHUB_LABEL.lower():
                return f"ignored: label {label!r} is not {settings.VIBE_GITHUB_LABEL!r}"
            found = labelled_issue(repo, payload["issue"], login=sender)
            return found or "ignored: not an open issue"
        if event == "issue_comment" and action == "created":
            found = command(repo, payload["comment"], issue=payload["issue"])
            return found or f"ignored: the comment is not {COMMAND}"
    except (KeyError, TypeError, ValueError) as exc:
        return f"ignored: the {event} payload lacks {exc}"
    return f"ignored: {event}{'.' + action if action else ''}"
