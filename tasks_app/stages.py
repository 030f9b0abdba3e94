"""A goal's stage strip on its card: builder → reviewers → QA, each with its state or verdict,
read for every card of a board in one query."""

from __future__ import annotations

from dataclasses import dataclass

from . import pipeline
from .choices import Lane, Status
from .models import Task

# Where a person is needed: a review stuck here keeps its own card on the board.
NEEDS_PERSON = (Status.BLOCKED, Status.DEAD_LETTER)


@dataclass(frozen=True)
class _Review:
    """The few columns of a review a stage strip shows (read as tuples: the board reads a few
    hundred of them a refresh, and model instances cost ten times as much)."""

    pk: int
    parent_id: int
    lane: str
    status: str
    verdict: str
    score: int | None
    review_round: int
    pipeline_step: int


_REVIEW_COLUMNS = (
    "id",
    "parent_id",
    "lane",
    "status",
    "verdict",
    "score",
    "review_round",
    "pipeline_step",
)


@dataclass(frozen=True)
class Stage:
    """One step of a goal's way through its pipeline, as its card shows it."""

    name: str  # "Builder", "Security", "QA"
    state: str  # waiting, working, done, rework, failed, queued, running, passed, stuck
    verdict: str = ""
    score: int | None = None
    task_id: int | None = None
    earlier: bool = False  # the result of the previous review round, while this one is built

    @property
    def words(self) -> str:
        """The state in words for the strip (a verdict chip says pass and fail)."""
        return STAGE_WORDS.get(self.state, self.state)


STAGE_WORDS = {
    "waiting": "waiting",
    "working": "working",
    "done": "done",
    "rework": "reworking",
    "failed": "failed",
    "queued": "queued",
    "running": "reviewing",
    "stuck": "needs a person",
    "upcoming": "not yet",
}
_STAGE_NAMES: dict[str, str] = {
    Lane.SECURITY: "Security",
    Lane.UX: "UX",
    Lane.DATA: "Data",
    Lane.QA: "QA",
}


def _builder_state(goal: Task, started: bool) -> str:
    status = goal.status
    if status == Status.IN_PROGRESS:
        return "working"
    if status in (Status.REVIEW_NEEDED, Status.COMPLETED) or started:
        return "done"
    if status in NEEDS_PERSON:
        return "failed"
    return "rework" if goal.review_round else "waiting"


def _review_state(review: _Review) -> str:
    if review.status == Status.COMPLETED:
        return "passed" if review.verdict != "FAIL" else "failed"
    if review.status == Status.IN_PROGRESS:
        return "running"
    if review.status in NEEDS_PERSON:
        return "stuck"
    return "queued"


def stage_strip(goal: Task, reviews: list[_Review]) -> list[Stage]:
    """Builder, then each reviewer of the goal's pipeline, with verdict and score when in.

    Each reviewer shows its review of the goal's current round; while a rework is built, the
    previous round's verdict stays visible, marked as earlier. A goal with no pipeline, or one
    whose first build has not reached a review yet, has no strip (it would say nothing).
    """
    steps = pipeline.steps(goal.pipeline)
    if not steps:
        return []
    latest: dict[tuple[int, str], _Review] = {}
    for review in sorted(reviews, key=lambda r: (r.review_round, r.pk)):
        if review.status != Status.CANCELLED and review.review_round <= goal.review_round:
            latest[(review.pipeline_step, review.lane)] = review
    started = any(r.review_round == goal.review_round for r in latest.values())
    strip = [Stage("Builder", _builder_state(goal, started))]
    for index, step in enumerate(steps):
        for lane in step.lanes:
            name = _STAGE_NAMES.get(lane, Lane(lane).label if lane in Lane.values else lane)
            shown = latest.get((index, lane))
            if shown is None:
                strip.append(Stage(name, "upcoming"))
                continue
            earlier = shown.review_round < goal.review_round
            strip.append(
                Stage(
                    name,
                    _review_state(shown),
                    verdict=shown.verdict if shown.status == Status.COMPLETED else "",
                    score=shown.score if shown.status == Status.COMPLETED else None,
                    task_id=shown.pk,
                    earlier=earlier,
                )
            )
    if strip[0].state in ("waiting", "working", "failed") and all(
        stage.state == "upcoming" for stage in strip[1:]
    ):
        return []  # no review has happened yet: the strip would say nothing
    return strip


def attach_stages(cards: list[Task]) -> None:
    """Give each goal card its stage strip (`card.stages`) and a key for the fragment cache
    (`card.stages_key`): its HTML changes when a review moves, not only when the goal does.
    One query for all the cards' reviews, whatever their number."""
    goals = {card.pk: card for card in cards if not card.stage}
    by_goal: dict[int, list[_Review]] = {pk: [] for pk in goals}
    if goals:
        rows = Task.objects.filter(parent_id__in=list(goals)).order_by()
        for row in rows.values_list(*_REVIEW_COLUMNS):
            review = _Review(*row)
            by_goal[review.parent_id].append(review)
    stuck = _stuck_prerequisites(cards)
    for card in cards:
        card.stages = stage_strip(card, by_goal[card.pk]) if card.pk in goals else []
        card._stuck_prerequisites = stuck.get(card.pk, [])
        card.stages_key = tuple(
            (s.name, s.state, s.verdict, s.score, s.earlier) for s in card.stages
        ) + tuple(card._stuck_prerequisites)


STUCK = (Status.CANCELLED, Status.DEAD_LETTER, Status.BLOCKED)


def _stuck_prerequisites(cards: list[Task]) -> dict[int, list[tuple[int, str]]]:
    """For waiting cards, the prerequisites that cannot finish without a person: one query."""
    out: dict[int, list[tuple[int, str]]] = {}
    if not cards:
        return out
    through = Task.depends_on.through
    # Over every card shown (not only the waiting ones), so the board's query count is the same
    # whichever columns have cards.
    rows = (
        through.objects.filter(
            from_task_id__in=[c.pk for c in cards],
            from_task__status__in=(Status.PENDING, Status.AWAITING_APPROVAL),
            to_task__status__in=STUCK,
        )
        .order_by("from_task_id", "to_task_id")
        .values_list("from_task_id", "to_task_id", "to_task__status")
    )
    for card_id, pk, status in rows:
        out.setdefault(card_id, []).append((pk, Status(status).label.lower()))
    return out
