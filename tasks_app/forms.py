"""Forms the pages post: the board's "New task". Field checks only; the lifecycle has the rules."""

from __future__ import annotations

import uuid

from django import forms
from django.conf import settings

from .choices import Delivery, Lane, Risk
from .lifecycle import MAX_GOAL_LENGTH


class SubmitTaskForm(forms.Form):
    """What `lifecycle.submit` takes from a person on the board, like `vibe submit`."""

    goal = forms.CharField(max_length=MAX_GOAL_LENGTH, strip=True, label="Goal")
    lane = forms.ChoiceField(choices=Lane.choices, label="Lane")
    priority = forms.IntegerField(min_value=0, max_value=100, initial=50, label="Priority")
    risk = forms.ChoiceField(choices=Risk.choices, initial=Risk.LOW, label="Risk")
    delivery = forms.ChoiceField(choices=Delivery.choices, label="Delivery")
    # One per form shown: a double click or a resent POST makes the task once.
    key = forms.CharField(required=False, max_length=200, widget=forms.HiddenInput)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # Read per form, not at import: the setting is the factory's default for new work.
        self.fields["delivery"].initial = settings.VIBE_DELIVERY
        self.fields["key"].initial = f"board:{uuid.uuid4().hex}"
