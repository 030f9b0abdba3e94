"""The auditors' output contract: a fenced JSON verdict block at the end of the output."""

from __future__ import annotations

import pytest

from tasks_app.verdicts import MAX_FINDINGS, VerdictError, parse_verdict, validate_result


def block(body: str) -> str:
    return f"Checked the diff.\n\n```json\n{body}\n```\n"


def test_a_good_verdict_is_normalised():
    output = block(
        '{"verdict": "fail", "score": 41.6, "summary": "two issues",'
        ' "findings": [{"severity": "critical", "title": "SQLi", "file": "db.py"},'
        ' {"severity": "LOW", "title": "typo", "detail": "line 3"}]}'
    )
    assert parse_verdict(output, lane="security") == {
        "verdict": "FAIL",
        "score": 42,
        "summary": "two issues",
        "findings": [
            {"severity": "CRITICAL", "title": "SQLi", "detail": "", "file": "db.py"},
            {"severity": "LOW", "title": "typo", "detail": "line 3", "file": ""},
        ],
    }


def test_the_last_block_wins():
    output = block('{"verdict": "FAIL"}') + "then I fixed it\n" + block('{"verdict": "PASS"}')
    assert parse_verdict(output)["verdict"] == "PASS"


def test_an_unlabelled_fence_is_accepted():
    assert parse_verdict('```\n{"verdict": "PASS"}\n```')["verdict"] == "PASS"


@pytest.mark.parametrize("output", ["", "all good!", '{"verdict": "PASS"}', None])
def test_a_missing_block(output):
    with pytest.raises(VerdictError, match="no fenced ```json verdict block found"):
        parse_verdict(output)


def test_invalid_json():
    with pytest.raises(VerdictError, match="the verdict block is not valid JSON: Expecting"):
        parse_verdict(block('{"verdict": "PASS",}'))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('["PASS"]', "the verdict block must be a JSON object"),
        ('{"score": 10}', '"verdict" must be "PASS" or "FAIL", got None'),
        ('{"verdict": "MAYBE"}', '"verdict" must be "PASS" or "FAIL", got \'MAYBE\''),
        ('{"verdict": "PASS", "score": 101}', '"score" must be a number from 0 to 100, got 101'),
        ('{"verdict": "PASS", "score": -1}', '"score" must be a number from 0 to 100, got -1'),
        (
            '{"verdict": "PASS", "score": "90"}',
            "\"score\" must be a number from 0 to 100, got '90'",
        ),
        ('{"verdict": "PASS", "score": true}', '"score" must be a number from 0 to 100, got True'),
        ('{"verdict": "PASS", "findings": "none"}', '"findings" must be a list'),
        ('{"verdict": "PASS", "findings": ["x"]}', "finding 1 must be an object"),
        (
            '{"verdict": "FAIL", "findings": [{"severity": "BLOCKER", "title": "x"}]}',
            "finding 1: severity must be CRITICAL|HIGH|MEDIUM|LOW, got 'BLOCKER'",
        ),
        (
            '{"verdict": "FAIL", "findings": [{"title": "x"}]}',
            "finding 1: severity must be CRITICAL|HIGH|MEDIUM|LOW, got None",
        ),
        (
            '{"verdict": "FAIL", "findings": [{"severity": "LOW", "title": "a"},'
            ' {"severity": "LOW"}]}',
            "finding 2: finding field 'title' is required",
        ),
        (
            '{"verdict": "FAIL", "findings": [{"severity": "LOW", "title": 5}]}',
            "finding 1: field 'title' must be a string, not int",
        ),
        ('{"verdict": "PASS", "summary": ["a"]}', "field 'summary' must be a string, not list"),
    ],
)
def test_contract_violations_say_what_is_wrong(body, message):
    with pytest.raises(VerdictError) as excinfo:
        parse_verdict(block(body))
    assert str(excinfo.value) == message


def test_the_ux_audit_must_give_a_score():
    with pytest.raises(VerdictError, match='the UX audit must give a "score" from 0 to 100'):
        parse_verdict(block('{"verdict": "PASS"}'), lane="ux")
    assert parse_verdict(block('{"verdict": "PASS", "score": 0}'), lane="ux")["score"] == 0
    assert parse_verdict(block('{"verdict": "PASS"}'), lane="security")["score"] is None


def test_null_findings_mean_none_and_long_lists_are_capped():
    assert validate_result({"verdict": "PASS", "findings": None})["findings"] == []
    many = [{"severity": "LOW", "title": f"n{i}"} for i in range(MAX_FINDINGS + 50)]
    assert len(validate_result({"verdict": "FAIL", "findings": many})["findings"]) == MAX_FINDINGS


def test_long_text_is_truncated():
    result = validate_result({"verdict": "PASS", "summary": "s" * 10_000})
    assert len(result["summary"]) == 4000
