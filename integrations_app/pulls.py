"""Opening the pull request of finished work, once, with what the reviews found.

Work whose last review passed with delivery "pull_request" waits in `opening_pr`. The sync loop
opens its pull request (head: the task's branch, base: its base branch or the repository's
default) and calls `lifecycle.pr_opened`. Never twice: GitHub refuses a second open pull
request for the same head with a 422 "A pull request already exists", which we answer by
finding that pull request and recording it, so a retry after a timeout that GitHub did act on
records the first one. Other refusals (no commits between the branches, a missing base) are
the task's: it is blocked with GitHub's message. Passing faults are raised to the loop, which
retries with backoff.
"""

from __future__ import annotations

import logging

from django.db.models import QuerySet

from tasks_app import costs, lifecycle, pipeline
from tasks_app.choices import Delivery, DeliveryState, Status
from tasks_app.models import Task

from .events import MARKER, task_link
from .github import GitHub, GitHubError, same_repo

logger = logging.getLogger(__name__)

ACTOR = "system"
MAX_TITLE = 200
MAX_BODY = 60_000  # GitHub's limit is 65,536 characters
MAX_FINDINGS_PER_REVIEW = 20


def waiting_to_open() -> QuerySet[Task]:
    """Work waiting for its pull request, oldest first."""
    return Task.objects.filter(
        status=Status.REVIEW_NEEDED,
        delivery=Delivery.PULL_REQUEST,
        delivery_state=DeliveryState.OPENING_PR,
        stage="",
    ).order_by("updated_at", "id")


def title(task: Task) -> str:
    first = (task.goal.strip().splitlines() or [f"Task #{task.pk}"])[0].strip()
    return first if len(first) <= MAX_TITLE else first[: MAX_TITLE - 1] + "…"


def _issue_line(task: Task, repo: str) -> str:
    """`Closes #N` for an issue of this repository, so merging closes it."""
    ref = task.github_issue or ""
    issue_repo, _, number = ref.rpartition("#")
    if not number.isdigit():
        return ""
    if same_repo(issue_repo, repo):
        return f"Closes #{number}"
    return f"From {ref}"


def _finding_line(finding: dict) -> str:
    where = str(finding.get("file") or "")
    if where and finding.get("line"):
        where += f":{finding['line']}"
    text = str(finding.get("title") or finding.get("detail") or "").strip()
    severity = str(finding.get("severity") or "").upper()
    return f"  - **{severity or 'NOTE'}**{f' `{where}`' if where else ''} {text}"


def _reviews_section(task: Task) -> list[str]:
    reviews = task.children.filter(
        review_round=task.review_round, status=Status.COMPLETED
    ).order_by("pipeline_step", "id")
    lines = []
    for item in reviews:
        label = pipeline.REVIEW_LABELS.get(item.lane, item.lane)
        score = f", score {item.score}" if item.score is not None else ""
        lines.append(
            f"- **{label[:1].upper() + label[1:]}** (task #{item.pk}): "
            f"{item.verdict or 'done'}{score}"
        )
        summary = str((item.result or {}).get("summary") or "").strip()
        if summary:
            lines.append(f"  {summary.splitlines()[0][:300]}")
        findings = item.findings
        lines += [_finding_line(f) for f in findings[:MAX_FINDINGS_PER_REVIEW]]
        if len(findings) > MAX_FINDINGS_PER_REVIEW:
            lines.append(f"  - … and {len(findings) - MAX_FINDINGS_PER_REVIEW} more")
    return lines or ["No reviews ran for this work."]


def body(task: Task, repo: str) -> str:
    """The pull request's description: goal, what the builder did, the reviews, cost, link."""
    summary = str((task.result or {}).get("summary") or "").strip()
    link = task_link(task)
    parts = [
        task.goal.strip()[:20_000],
        "## What the builder did",
        summary[:10_000] or "The builder left no summary.",
        "## Reviews",
        "\n".join(_reviews_section(task)),
        f"**Cost:** ${costs.task_total(task):.2f} (builder runs and reviews)",
        f"**Task:** [#{task.pk}]({link})" if link else f"**Task:** #{task.pk}",
    ]
    issue = _issue_line(task, repo)
    if issue:
        parts.append(issue)
    parts.append(MARKER.format(pk=task.pk))
    text = "\n\n".join(parts)
    if len(text) > MAX_BODY:
        text = (
            text[: MAX_BODY - 200] + "\n\n… (cut to GitHub's limit)\n\n" + MARKER.format(pk=task.pk)
        )
    return text


def _already_open(client: GitHub, task: Task, base: str) -> dict | None:
    found = client.find_open_pulls(task.branch)
    same_base = [pr for pr in found if (pr.get("base") or {}).get("ref") == base]
    return (same_base or found)[0] if found else None


def open_pull_request(task: Task, client: GitHub) -> str:
    """Open (or find) the task's pull request and record it; raises GitHubError to retry."""
    if not task.branch:
        lifecycle.delivery_failed(
            task.pk, error="the task has no branch to open a pull request from", actor=ACTOR
        )
        return f"task #{task.pk} blocked: no branch"
    base = task.base_branch or client.default_branch()
    try:
        pr = client.create_pull(
            head=task.branch, base=base, title=title(task), body=body(task, client.repo)
        )
    except GitHubError as exc:
        if exc.status == 422 and "already exists" in exc.github_message.lower():
            already = _already_open(client, task, base)
            if already is None:
                raise GitHubError(
                    f"GitHub says a pull request for {task.branch} exists but lists none open",
                    transient=True,
                ) from None
            pr = already
        elif exc.transient or exc.status == 401:
            # 401: the token is wrong for every task alike; fixing it fixes them all.
            raise
        else:
            lifecycle.delivery_failed(
                task.pk,
                error=f"GitHub refused the pull request (HTTP {exc.status}): {exc.github_message}",
                actor=ACTOR,
            )
            return f"task #{task.pk} blocked: {exc.github_message}"
    number, url = int(pr["number"]), str(pr.get("html_url") or "")
    lifecycle.pr_opened(task.pk, url=url, number=number, actor=ACTOR)
    return f"task #{task.pk}: pull request #{number} {url}"
