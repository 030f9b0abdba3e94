"""`Every`, the worker loop's clock for periodic duties, and `Backoff` after faults."""

from __future__ import annotations

from workers_app.timing import Backoff, Every


def test_a_duty_is_due_at_once_then_once_per_period():
    reaps = Every(1.0)
    assert reaps.due(100.0)
    assert not reaps.due(100.5)
    assert reaps.due(101.0)
    assert reaps.left(101.25) == 0.75


def test_soon_makes_a_duty_due_at_the_next_look_and_put_off_moves_it_on():
    claims = Every(2.0)
    assert claims.due(10.0)
    claims.soon()
    assert claims.due(10.1)
    claims.put_off(10.1, 0.5)  # after a fault: sooner than the period
    assert not claims.due(10.5)
    assert claims.due(10.6)


def test_backoff_doubles_up_to_its_cap_and_a_success_starts_over():
    backoff = Backoff(0.1, 0.4)
    pauses = [backoff.failed() for _ in range(4)]
    for pause, nominal in zip(pauses, (0.1, 0.2, 0.4, 0.4), strict=True):
        assert nominal * 0.8 <= pause <= nominal  # jittered down, never past the cap
    assert backoff.succeeded() == 4
    assert backoff.faults == 0
