"""New work as it comes in: a task's fields checked before anything is written, then created."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from django.conf import settings

from .. import pipeline
from ..choices import Lane, Risk
from .errors import InvalidInput, TaskNotFound

MAX_GOAL_LENGTH = 10_000
# Task ids are 64-bit: a larger number names no task (and must not reach the database).
ID_LIMIT = 2**63


def check_actor(actor: object) -> str:
    """The actor of a change (see `tasks_app.actors`), which every change needs."""
    if not actor or not isinstance(actor, str):
        raise InvalidInput("every change needs an actor, such as 'user:alice' or 'cli'")
    return actor[:200]


def is_task_id(pk: int) -> bool:
    return 1 <= pk < ID_LIMIT


def task_id(value: object) -> int:
    """A task id from what a person typed or a caller passed; TaskNotFound when it is none."""
    try:
        pk = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise TaskNotFound(f"{value!r} is not a task id; task ids are whole numbers") from None
    if not is_task_id(pk):
        raise TaskNotFound(f"task {pk} does not exist")
    return pk


@dataclass
class NewTask:
    goal: str
    lane: str
    priority: int = 50
    risk: str = Risk.LOW
    depends_on: Sequence[int] = ()
    pipeline: str | None = None
    max_attempts: int | None = None
    delivery: str | None = None
    github_issue: str = ""
    key: str = ""  # an idempotency key: the same key again is the same task


MAX_KEY_LENGTH = 200


def validate_new(spec: NewTask) -> NewTask:
    """The spec as it will be stored, or InvalidInput naming the first thing wrong with it."""
    goal = _checked_goal(spec.goal)
    _check_kind(spec)
    max_attempts = spec.max_attempts or settings.VIBE_MAX_ATTEMPTS
    if max_attempts < 1:
        raise InvalidInput("max_attempts must be at least 1")
    depends_on = _checked_prerequisites(spec.depends_on)
    try:
        chosen = pipeline.pipeline_for(spec.lane, spec.pipeline)
        delivery = pipeline.delivery_for(chosen, spec.delivery)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    return NewTask(
        goal=goal,
        lane=spec.lane,
        priority=spec.priority,
        risk=spec.risk,
        depends_on=depends_on,
        pipeline=chosen,
        max_attempts=max_attempts,
        delivery=delivery,
        github_issue=str(spec.github_issue or "")[:300],
        key=checked_key(spec.key),
    )


def _checked_goal(goal: object) -> str:
    text = (goal or "").strip() if isinstance(goal, str) else ""
    if not text:
        raise InvalidInput("the goal is empty; say what the task should achieve")
    if len(text) > MAX_GOAL_LENGTH:
        raise InvalidInput(f"the goal is {len(text)} characters; the limit is {MAX_GOAL_LENGTH}")
    check_storable(text, "the goal")
    return text


def _check_kind(spec: NewTask) -> None:
    """Lane, risk and priority: each one of its allowed values."""
    if spec.lane not in Lane.values:
        raise InvalidInput(f"unknown lane {spec.lane!r}; choose one of {', '.join(Lane.values)}")
    if spec.risk not in Risk.values:
        raise InvalidInput(f"unknown risk {spec.risk!r}; choose one of {', '.join(Risk.values)}")
    if isinstance(spec.priority, bool) or not isinstance(spec.priority, int):
        raise InvalidInput(f"priority must be a whole number, not {spec.priority!r}")
    if not 0 <= spec.priority <= 100:
        raise InvalidInput(f"priority {spec.priority} is out of range; use 0 to 100")


def _checked_prerequisites(depends_on: Sequence[int] | None) -> list[int]:
    try:
        ids = [int(pk) for pk in depends_on or ()]
    except (TypeError, ValueError):
        raise InvalidInput(
            f"prerequisites must be task ids (whole numbers), not {list(depends_on or ())!r}"
        ) from None
    for pk in ids:
        if not is_task_id(pk):  # beyond the id column: no such task (and no OverflowError)
            raise InvalidInput(f"task {pk} does not exist (named as a prerequisite)")
    return ids


def check_storable(text: str, what: str) -> None:
    """Text every database can hold: PostgreSQL refuses NUL, neither encodes a lone surrogate."""
    if "\x00" in text:
        raise InvalidInput(f"{what} holds a NUL character")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(f"{what} is not valid Unicode text (a lone surrogate)") from None


def checked_key(key: object) -> str:
    key = (key or "").strip() if isinstance(key, str) else ""
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidInput(f"the idempotency key is {len(key)} characters; the limit is 200")
    check_storable(key, "the idempotency key")
    return key
