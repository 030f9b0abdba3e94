"""Every status change of a task or a worker, in one place.

Admin actions, kanban buttons, Slack, Discord, the CLI and the workers all call these functions,
so each change behaves the same from every front door. Each function:

- writes in one transaction (IMMEDIATE on SQLite, so writers queue instead of failing); what
  it reads and checks before that transaction, the write checks again;
- moves the row with a compare-and-swap on the status it expects, so a double click or two racing
  workers change the task once and the loser gets a clear `LifecycleError`;
- writes exactly one `TaskHistory` row per change, with the acting front door as `actor` and
  the move as `event`;
- tells people (the `attention_needed` signal) in the same transaction, so nothing is lost.

The modules: `errors`, `intake` (checking new work), `moves` (the compare-and-swap), `people`
(people's moves, ORM), `claims` (the workers' side, on `_sql`'s measured statements),
`reviews`, `delivery`, `workers`, `audit`.
"""

# The error catalogue and the actor helpers were public names of the one-file lifecycle; their
# homes are now `choices` and `actors`, and they stay importable from here for existing callers.
from ..actors import DOORS, door_of
from ..choices import ERROR_TYPES, INFRASTRUCTURE_ERRORS, ErrorType, error_hint
from .audit import audit, refused
from .claims import (
    MAX_ERROR_LENGTH,
    claim_next,
    complete,
    complete_and_claim,
    fail,
    heartbeat,
    release,
    requeue_expired,
)
from .delivery import (
    MAX_CHANGED_FILES,
    delivery_failed,
    merged,
    pr_closed,
    pr_opened,
    record_conflicts,
)
from .errors import (
    IllegalTransition,
    InvalidInput,
    LeaseLost,
    LifecycleError,
    TaskNotFound,
    WorkerNotFound,
)
from .intake import MAX_GOAL_LENGTH, MAX_KEY_LENGTH, NewTask, validate_new
from .moves import WAKE_CHANNEL
from .people import (
    CANCEL_CHANNEL,
    EDITABLE,
    MAX_COMMENT_LENGTH,
    REWORKABLE,
    approve,
    cancel,
    edit,
    give_back_attempt,
    request_changes,
    retry,
    submit,
    submit_many,
)
from .workers import (
    pause_worker,
    resume_worker,
    retire_worker,
    set_worker_status,
    worker_heartbeat,
)

__all__ = [
    "CANCEL_CHANNEL",
    "DOORS",
    "ERROR_TYPES",
    "INFRASTRUCTURE_ERRORS",
    "ErrorType",
    "door_of",
    "error_hint",
    "EDITABLE",
    "MAX_CHANGED_FILES",
    "MAX_COMMENT_LENGTH",
    "MAX_ERROR_LENGTH",
    "MAX_GOAL_LENGTH",
    "MAX_KEY_LENGTH",
    "REWORKABLE",
    "WAKE_CHANNEL",
    "IllegalTransition",
    "InvalidInput",
    "LeaseLost",
    "LifecycleError",
    "NewTask",
    "TaskNotFound",
    "WorkerNotFound",
    "approve",
    "audit",
    "cancel",
    "claim_next",
    "complete",
    "complete_and_claim",
    "delivery_failed",
    "edit",
    "fail",
    "give_back_attempt",
    "heartbeat",
    "merged",
    "pause_worker",
    "pr_closed",
    "pr_opened",
    "record_conflicts",
    "refused",
    "release",
    "request_changes",
    "requeue_expired",
    "resume_worker",
    "retire_worker",
    "retry",
    "set_worker_status",
    "submit",
    "submit_many",
    "validate_new",
    "worker_heartbeat",
]
