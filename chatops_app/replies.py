"""What the grammar answers with: a `Reply` of plain text and data, and the helpers that
shape its lines (previews, ages, redaction for chat). Each door renders a Reply its own way."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from .redact import redact

DLQ_LIMIT = 10
SILENT_SHOWN = 10  # silent workers `status` names one by one
GOAL_PREVIEW = 60
ERROR_PREVIEW = 300
# In chat, one history note or finding shows at most this much (the page has the rest).
CHAT_NOTE_PREVIEW = 300
READ_PERMISSION = "tasks_app.view_task"
# The actions a chat button may carry; each platform encodes them its own way (its render.py).
BUTTON_ACTIONS = ("approve", "retry", "merge", "rebase")


@dataclass
class Button:
    action: str
    task_id: int
    label: str


@dataclass
class Reply:
    ok: bool
    title: str
    lines: list[str]
    data: dict
    public: bool = False
    buttons: list[Button] = field(default_factory=list)

    def as_text(self) -> str:
        return "\n".join([self.title, *self.lines]) if self.lines else self.title


def _refusal(message: str, **data) -> Reply:
    return Reply(ok=False, title=message, lines=[], data={"ok": False, "error": message, **data})


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _preview(goal: str, *, for_chat: bool = False) -> str:
    goal = " ".join((redact(goal) if for_chat else goal).split())
    return _clip(goal, GOAL_PREVIEW)


def _shown(text: str, limit: int | None, *, for_chat: bool) -> str:
    """Agent or error text for a reply line, cut to `limit` (None: whole). For chat it is
    redacted before the cut, so a cut never leaves half a key that no longer looks like one."""
    text = redact(text or "") if for_chat else (text or "")
    if limit is None:
        return text
    return _clip(text, limit) if for_chat else text[:limit]


def for_chat(reply: Reply) -> Reply:
    """`reply` as chat may show it: every line and the title passed through `redact`."""
    reply.title = redact(reply.title)
    reply.lines = [redact(line) for line in reply.lines]
    return reply


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None
