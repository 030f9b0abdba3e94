"""`outcomes.decide`: every rule that turns a finished run into its task's outcome."""

from __future__ import annotations

import json

import pytest

from workers_app.adapters.base import BUILDER, REVIEWER, Report
from workers_app.adapters.claude import ClaudeReader
from workers_app.outcomes import Finished, decide
from workers_app.runner import RunResult
from workers_app.workspace import Change

FENCE = "```"
PASS = {"verdict": "PASS", "score": 90, "findings": [], "summary": "Looks right."}
SNAPSHOT = {"branch": "vibe/task-7", "head_commit": "b" * 40, "diff_stat": " a.txt | 1 +"}
ONE_FILE = Change(base="a" * 40, head="b" * 40, files=[{"path": "a.txt", "added": 1, "removed": 0}])


def verdict_block(verdict: dict) -> str:
    return f"Reviewed the change.\n{FENCE}json\n{json.dumps(verdict, indent=2)}\n{FENCE}\n"


def result(exit_code: int | None = 0, *, stdout: str = "", stderr: str = "", timed_out=False):
    return RunResult(
        exit_code=exit_code, timed_out=timed_out, duration=1.0, stdout=stdout, stderr=stderr
    )


def finished(
    *,
    role: str = BUILDER,
    lane: str = "backend",
    run: RunResult | None = None,
    report: Report | None = None,
    change: Change | None = None,
    reviewer_changed: bool = False,
    snapshot: dict | None = None,
) -> Finished:
    return Finished(
        role=role,
        lane=lane,
        run=run or result(),
        report=report or Report(),
        timeout=600,
        change=change,
        reviewer_changed=reviewer_changed,
        snapshot=snapshot or {},
    )


def test_a_run_past_its_time_limit_is_a_timeout_whatever_it_reported():
    outcome = decide(
        finished(
            run=result(None, stdout="still thinking", timed_out=True),
            report=Report(success=True, final_text="done"),
            change=ONE_FILE,
        )
    )
    assert outcome.error_type == "timeout"
    assert "time limit of 600s" in outcome.error and "still thinking" in outcome.error


@pytest.mark.parametrize("error_type", ["agent_auth", "max_turns", "budget_exceeded"])
def test_the_agents_own_error_type_is_the_outcome(error_type):
    report = Report(success=False, error_type=error_type, error="the provider said no")
    outcome = decide(finished(run=result(1), report=report, change=ONE_FILE))
    assert (outcome.error_type, outcome.retry_after) == (error_type, None)
    assert outcome.error == f"the agent reported {error_type}: the provider said no"


def test_a_rate_limit_passes_the_providers_retry_after_through():
    report = Report(success=False, error_type="rate_limited", error="429", retry_after=37.0)
    outcome = decide(finished(run=result(1), report=report))
    assert (outcome.error_type, outcome.retry_after) == ("rate_limited", 37.0)


def test_a_non_zero_exit_is_agent_exit_with_the_agents_last_words():
    run = result(3, stdout="working\n", stderr="Traceback\nValueError: boom\n")
    outcome = decide(finished(run=run, change=ONE_FILE))
    assert outcome.error_type == "agent_exit"
    assert "status 3" in outcome.error and "ValueError: boom" in outcome.error


def test_an_agent_that_says_it_failed_fails_even_with_exit_0():
    report = Report(success=False, error="I could not finish the task")
    outcome = decide(finished(report=report, change=ONE_FILE))
    assert outcome.error_type == "agent_exit"
    assert "I could not finish the task" in outcome.error


def test_a_builder_that_changed_nothing_is_no_change():
    report = Report(success=True, final_text="All done!")
    outcome = decide(finished(report=report, change=Change(base="a" * 40, head="a" * 40)))
    assert outcome.error_type == "no_change"
    assert "All done!" in outcome.error


def test_a_builder_refused_its_tools_that_changed_nothing_is_permission_denied():
    report = Report(
        success=True, permission_denials=["Write: a.txt", "Bash: git commit", "Write: a.txt"]
    )
    outcome = decide(finished(report=report, change=Change(base="a" * 40, head="a" * 40)))
    assert outcome.error_type == "permission_denied"
    assert outcome.error.endswith("Bash: git commit, Write: a.txt")


def test_a_builder_with_a_change_completes_with_its_summary_and_the_snapshot():
    report = Report(success=True, final_text="Added a.txt with a greeting.")
    outcome = decide(finished(report=report, change=ONE_FILE, snapshot=SNAPSHOT))
    assert outcome.ok
    assert outcome.result == {"summary": "Added a.txt with a greeting.", **SNAPSHOT}


def test_a_builder_summary_falls_back_to_the_last_lines_of_stdout():
    stdout = "".join(f"line {n}\n" for n in range(100))
    outcome = decide(finished(run=result(0, stdout=stdout), change=ONE_FILE))
    assert outcome.ok
    assert outcome.result["summary"].splitlines() == [f"line {n}" for n in range(70, 100)]


def test_a_builder_outside_git_completes_without_a_change_to_look_at():
    outcome = decide(finished(report=Report(final_text="Wrote the notes."), change=None))
    assert outcome.ok and outcome.result == {"summary": "Wrote the notes."}


def test_a_reviewer_that_changed_files_is_reviewer_modified_even_with_a_verdict():
    report = Report(success=True, final_text=verdict_block(PASS))
    outcome = decide(finished(role=REVIEWER, lane="security", report=report, reviewer_changed=True))
    assert outcome.error_type == "reviewer_modified"
    assert "set aside" in outcome.error


def test_a_reviewer_verdict_in_its_final_message_completes_the_review():
    report = Report(success=True, final_text=verdict_block(PASS))
    outcome = decide(finished(role=REVIEWER, lane="security", report=report, snapshot=SNAPSHOT))
    assert outcome.ok
    assert outcome.result["verdict"] == "PASS" and outcome.result["score"] == 90
    assert outcome.result["summary"] == "Looks right."
    assert outcome.result["head_commit"] == SNAPSHOT["head_commit"]


def test_a_plain_text_reviewers_verdict_is_read_from_its_stdout():
    run = result(0, stdout="checking…\n" + verdict_block(PASS))
    outcome = decide(finished(role=REVIEWER, lane="qa", run=run, report=Report()))
    assert outcome.ok and outcome.result["verdict"] == "PASS"


def test_a_malformed_verdict_block_is_bad_verdict():
    report = Report(final_text=f'{FENCE}json\n{{"verdict": "PASS", "findings": [,]\n{FENCE}\n')
    outcome = decide(finished(role=REVIEWER, lane="security", report=report))
    assert outcome.error_type == "bad_verdict"
    assert outcome.error.startswith("bad verdict: ")


def test_a_missing_verdict_is_bad_verdict():
    outcome = decide(finished(role=REVIEWER, lane="security", report=Report(final_text="LGTM")))
    assert outcome.error_type == "bad_verdict"


def test_a_stream_json_reviewers_verdict_is_read_from_its_final_message_not_raw_stdout():
    # In the raw stream the verdict is inside a JSON string: its newlines and quotes escaped,
    # so no fenced block can be found there; the reader's final message holds it plainly.
    lines = [
        {"type": "system", "subtype": "init", "session_id": "s-1", "model": "claude-sonnet-4-5"},
        {"type": "assistant", "message": {"content": [{"type": "text", "text": "Reviewing."}]}},
        {
            "type": "result",
            "subtype": "success",
            "is_error": False,
            "result": verdict_block(PASS),
            "session_id": "s-1",
            "num_turns": 2,
            "total_cost_usd": 0.01,
        },
    ]
    stdout = "".join(json.dumps(line) + "\n" for line in lines)
    reader = ClaudeReader()
    for line in stdout.splitlines():
        reader.feed(line)
    report = reader.finish(0, stdout, "")
    assert FENCE + "json\n" not in stdout  # the block only exists once the string is decoded
    outcome = decide(
        finished(role=REVIEWER, lane="security", run=result(0, stdout=stdout), report=report)
    )
    assert outcome.ok, outcome.error
    assert outcome.result["verdict"] == "PASS"
