"""What the core tells the rest of the factory, without knowing who listens.

The lifecycle and the workers send these; chatops_app's receivers turn them into outbox rows.
Both are sent inside the caller's transaction, so a receiver's rows commit or roll back with
the change that caused them: nothing is announced that did not happen.
"""

from __future__ import annotations

from django.dispatch import Signal

# A task stopped where a person must act (dead letter, blocked, awaiting approval or merge).
# Keyword arguments: task (the Task as moved), event (a NotificationEvent value), note (str).
attention_needed = Signal()

# The factory as a whole needs a person: a worker paused itself, the daily budget ran out.
# Keyword arguments: event (one of FACTORY_EVENTS), note, worker, data (dict), key (str).
# With a key the alert is recorded once only; a receiver returns True when this call recorded it.
factory_alert = Signal()
