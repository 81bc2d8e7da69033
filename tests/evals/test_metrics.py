"""Agreement metrics, run summaries and the trace/feedback file readers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from evaljail.errors import ConfigurationError
from evaljail.evals.files import load_feedback, load_traces
from evaljail.evals.metrics import Rating, Verdict, compare
from evaljail.evals.summary import summarize, verdicts
from evaljail.types import Outcome, TraceResult


def _v(trace_id: str, passed: bool | None) -> Verdict:
    return Verdict(trace_id=trace_id, passed=passed, reason=f"r-{trace_id}")


def test_confusion_matrix_and_ratios() -> None:
    # tp: a b c, fp: d, fn: e f, tn: g h i j
    verdict = {"a": 1, "b": 1, "c": 1, "d": 1, "e": 0, "f": 0, "g": 0, "h": 0, "i": 0, "j": 0}
    rating = {"a": "positive", "b": "positive", "c": "positive", "d": "negative"}
    rating |= {"e": "positive", "f": "positive"} | dict.fromkeys("ghij", "negative")
    report = compare([_v(k, bool(v)) for k, v in verdict.items()], rating)
    assert (report.true_positive, report.false_positive) == (3, 1)
    assert (report.false_negative, report.true_negative) == (2, 4)
    assert report.accuracy == pytest.approx(0.7)
    assert report.precision == pytest.approx(0.75)
    assert report.recall == pytest.approx(0.6)
    assert report.f1 == pytest.approx(2 * 0.75 * 0.6 / 1.35)
    # p_o = 0.7; p_e = 0.4*0.5 + 0.6*0.5 = 0.5 -> kappa = 0.4
    assert report.cohen_kappa == pytest.approx(0.4)
    assert [c.trace_id for c in report.contradictions] == ["d", "e", "f"]
    assert [c.kind for c in report.contradictions] == [
        "negative_but_passed",
        "positive_but_failed",
        "positive_but_failed",
    ]


def test_neutral_never_contradicts_and_no_verdict_is_not_a_failure() -> None:
    report = compare(
        [_v("n1", True), _v("n2", False), _v("err", None), _v("free", True), _v("u", None)],
        {"n1": "neutral", "n2": "neutral", "err": "positive", "u": "neutral"},
    )
    assert report.contradictions == ()
    assert report.neutral == 3 and report.neutral_without_verdict == 1
    assert report.no_verdict == 1 and report.unrated == 1
    assert report.compared == 0
    assert report.accuracy is None and report.cohen_kappa is None and report.f1 is None


def test_every_trace_is_counted_exactly_once() -> None:
    """Each (rating, verdict) cell lands in one bucket, and the buckets add up to the traces:
    a neutral-rated or unrated trace without a verdict used to be counted nowhere."""
    cells = {
        "pos-pass": ("positive", True), "pos-none": ("positive", None),
        "neg-fail": ("negative", False), "neg-none": ("negative", None),
        "neu-pass": ("neutral", True), "neu-none": ("neutral", None),
        "free-fail": (None, False), "free-none": (None, None),
    }  # fmt: skip
    feedback = {k: rating for k, (rating, _) in cells.items() if rating is not None}
    feedback["ghost"] = "positive"  # rated, but not among the traces
    report = compare([_v(k, passed) for k, (_, passed) in cells.items()], feedback)
    assert (report.compared, report.no_verdict) == (2, 2)
    assert (report.neutral, report.neutral_without_verdict) == (2, 1)
    assert (report.unrated, report.unrated_without_verdict) == (2, 1)
    assert report.traces == len(cells)
    assert report.feedback_not_in_traces == ("ghost",)
    data = report.to_dict()
    assert data["compared"] + data["no_verdict"] + data["neutral"] + data["unrated"] == 8
    assert data["traces"] == 8 and data["feedback_not_in_traces"] == ["ghost"]


def test_a_trace_with_several_verdicts_is_refused() -> None:
    """Its one rating would otherwise be counted once per copy."""
    with pytest.raises(ValueError, match="'a' has several verdicts"):
        compare([_v("a", True), _v("b", True), _v("a", True)], {"a": "positive"})


def test_kappa_at_chance_is_exactly_zero() -> None:
    """No predicted positive, 1 positive and 6 negative ratings: p_o == p_e. In floats that
    was -7.8e-16, printed -0.000; the integer form gives 0.0 exactly."""
    report = compare(
        [_v(f"t{i}", False) for i in range(7)],
        {"t0": "positive"} | {f"t{i}": "negative" for i in range(1, 7)},
    )
    assert report.cohen_kappa == 0.0
    assert math.copysign(1.0, report.cohen_kappa) == 1.0
    assert report.precision is None and report.f1 == 0.0  # 2tp / (2tp + fp + fn)


def test_perfect_and_chance_agreement() -> None:
    perfect = compare([_v("a", True), _v("b", False)], {"a": "positive", "b": "negative"})
    assert perfect.cohen_kappa == pytest.approx(1.0)
    assert perfect.accuracy == 1.0
    same_label = compare([_v("a", True), _v("b", True)], {"a": "positive", "b": "positive"})
    assert same_label.accuracy == 1.0
    assert same_label.cohen_kappa is None  # both raters used one label: kappa undefined
    inverse = compare([_v("a", True), _v("b", False)], {"a": "negative", "b": "positive"})
    assert inverse.cohen_kappa == pytest.approx(-1.0)


def test_invalid_rating_is_refused() -> None:
    with pytest.raises(ValueError, match="maybe"):
        compare([_v("a", True)], {"a": "maybe"})


def test_report_to_dict_is_json() -> None:
    report = compare([_v("a", True)], {"a": Rating.NEGATIVE})
    data = json.loads(json.dumps(report.to_dict()))
    assert data["contradiction_counts"] == {"positive_but_failed": 0, "negative_but_passed": 1}
    assert data["contradictions"][0]["rating"] == "negative"


def test_contradictions_match_the_fixture_summary(fixtures_dir: Path) -> None:
    """The ground truth of every fixture eval, compared with the feedback, gives exactly the
    contradiction and agreement counts of expected_summary.json."""
    summary = json.loads((fixtures_dir / "expected_summary.json").read_text())
    feedback = load_feedback(fixtures_dir / "feedback.jsonl")
    assert summary["evals"]
    for name, want in summary["evals"].items():
        rows = [
            json.loads(line)
            for line in (fixtures_dir / "expected" / f"{name}.jsonl").read_text().splitlines()
        ]
        results = [_result_from_expected(i, row) for i, row in enumerate(rows)]
        report = compare(verdicts(results), feedback)
        assert report.positive_but_failed == want["contradictions"]["positive_but_failed"], name
        assert report.negative_but_passed == want["contradictions"]["negative_but_passed"], name
        assert report.agreements == want["agreements"], name
        counted = summarize(results)
        assert (counted.passed, counted.failed) == (want["passed"], want["failed"]), name
        assert counted.errors == want["errors"], name
        assert counted.spec_violations == want["spec_violations"], name


def _result_from_expected(index: int, row: dict[str, object]) -> TraceResult:
    trace_id = str(row["trace_id"])
    if row["error_type"]:
        return TraceResult(
            trace_id=trace_id,
            index=index,
            success=False,
            outcome=Outcome.ERROR,
            error_type=str(row["error_type"]),
        )
    if row["spec_violation"]:
        return TraceResult(
            trace_id=trace_id,
            index=index,
            success=False,
            outcome=Outcome.SPEC_VIOLATION,
            spec_violation=str(row["spec_violation"]),
        )
    passed = bool(row["passed"])
    return TraceResult(
        trace_id=trace_id,
        index=index,
        success=True,
        outcome=Outcome.PASSED if passed else Outcome.FAILED,
        passed=passed,
        reason=str(row["reason"]),
    )


def test_summary_counts_and_times() -> None:
    results = [
        TraceResult(trace_id="a", success=True, outcome=Outcome.PASSED, passed=True, reason="",
                    execution_time_ms=1.0, cpu_ms=2.0, stdout="x"),
        TraceResult(trace_id="b", success=False, outcome=Outcome.TIMEOUT, execution_time_ms=9.0),
        TraceResult(trace_id="c", success=False, outcome=Outcome.ERROR, error_type="KeyError",
                    execution_time_ms=3.0),
        TraceResult(trace_id="d", success=False, outcome=Outcome.SPEC_VIOLATION,
                    spec_violation="not_2_tuple", execution_time_ms=2.0),
    ]  # fmt: skip
    s = summarize(results)
    assert (s.traces, s.passed, s.failed, s.errored) == (4, 1, 0, 3)
    assert s.errors == {"KeyError": 1, "timeout": 1}
    assert s.spec_violations == {"not_2_tuple": 1}
    assert s.calls_with_stdout == 1
    assert (s.time_ms_p50, s.time_ms_max, s.time_ms_mean) == (2.0, 9.0, 3.75)
    assert s.cpu_ms_total == 2.0
    assert summarize([]).traces == 0


# -- files -------------------------------------------------------------------------------------


def test_jsonl_and_array_traces(tmp_path: Path) -> None:
    lines = tmp_path / "t.jsonl"
    lines.write_text('{"trace_id": "a", "steps": []}\n\n{"trace_id": "b", "data": {"x": 1}}\n')
    loaded = load_traces(lines)
    assert [(t.trace_id, t.line) for t in loaded] == [("a", 1), ("b", 3)]
    assert loaded[0].data == {"trace_id": "a", "steps": []}
    assert loaded[1].data == {"x": 1}
    array = tmp_path / "t.json"
    array.write_text('[\n  {"trace_id": "a", "steps": []},\n  {"trace_id": 7, "steps": []}\n]\n')
    assert [(t.trace_id, t.line) for t in load_traces(array)] == [("a", 2), ("7", 3)]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"trace_id": "a"}\n{"trace_id": "b"\n', "t.jsonl:2: invalid JSON"),
        ('{"trace_id": "a"}\n[1, 2]\n', "t.jsonl:2: a trace must be a JSON object"),
        (
            '{"trace_id": "a"}\n{"steps": []}\n',
            "t.jsonl:2: a trace needs a trace_id (a string or an integer)",
        ),
        (
            '{"trace_id": true}\n',
            "t.jsonl:1: a trace needs a trace_id (a string or an integer), got a boolean",
        ),
        (
            '{"trace_id": null}\n',
            "t.jsonl:1: a trace needs a trace_id (a string or an integer), got null",
        ),
        (
            '{"trace_id": 1.5}\n',
            "t.jsonl:1: a trace needs a trace_id (a string or an integer), got a number",
        ),
        (
            '{"trace_id": "a"}\n{"trace_id": "b"}\n\n{"trace_id": "a"}\n',
            "t.jsonl:4: a duplicate trace id: 'a' (lines 1, 4); every trace needs its own",
        ),
        (
            '{"trace_id": "1"}\n{"trace_id": "b"}\n{"trace_id": "b"}\n{"trace_id": 1}\n',
            "t.jsonl:3: 2 duplicate trace ids: 'b' (lines 2, 3), '1' (lines 1, 4); every",
        ),
        ('{"trace_id": "a", "data": 1, "x": 2}\n', "t.jsonl:1: a {trace_id, data} item"),
        ("\n\n", "t.jsonl:1: no traces"),
        ('[\n {"trace_id": "a"},\n {"trace_id": \n', "t.jsonl:4: invalid JSON"),
        ('[\n {"trace_id": "a"}\n {"trace_id": "b"}\n]', "t.jsonl:3: invalid JSON: expected ','"),
        ('[{"trace_id": "a"}]\n\nxyz', "t.jsonl:3: invalid JSON: extra data"),
    ],
)
def test_bad_trace_files_name_the_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(content)
    with pytest.raises(ConfigurationError) as info:
        load_traces(path)
    assert info.value.message.startswith(message), info.value.message
    assert info.value.details["line"] == int(message.split(":")[1])


def test_duplicate_trace_ids_are_all_named(tmp_path: Path) -> None:
    """Never accepted silently (a rating counted once per copy); every copy is named."""
    path = tmp_path / "t.json"
    ids = [f"t{i % 15}" for i in range(30)]  # 15 ids, each twice
    path.write_text("[\n" + ",\n".join(json.dumps({"trace_id": t}) for t in ids) + "\n]\n")
    with pytest.raises(ConfigurationError) as info:
        load_traces(path)
    message = info.value.message
    assert message.startswith("t.json:17: 15 duplicate trace ids: 't0' (lines 2, 17), ")
    assert "and 5 more;" in message
    assert info.value.details["duplicates"]["t14"] == [16, 31]
    assert len(info.value.details["duplicates"]) == 15


@pytest.mark.parametrize("layout", ["jsonl", "array"])
def test_integers_past_the_digit_limit_are_read(tmp_path: Path, layout: str) -> None:
    """CPython refuses int(str) past 4 300 digits; JSON has no limit, and the service and
    the child read such numbers. The file reader raised a bare ValueError (a traceback)."""
    big = "9" * 5000
    rows = [f'{{"trace_id": "a", "n": [{big}, -{big}]}}', f'{{"trace_id": {big}, "m": 1}}']
    path = tmp_path / "t.txt"
    path.write_text("\n".join(rows) if layout == "jsonl" else "[" + ",\n".join(rows) + "]")
    first, second = load_traces(path)
    assert first.data["n"] == [10**5000 - 1, -(10**5000 - 1)]
    assert second.trace_id == big and second.data["m"] == 1
    feedback = tmp_path / "f.jsonl"
    feedback.write_text(f'{{"trace_id": {big}, "rating": "positive"}}\n')
    assert load_feedback(feedback) == {big: Rating.POSITIVE}


def test_non_utf8_and_missing_files(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_bytes(b'{"trace_id": "a"}\n{"trace_id": "\xff"}\n')
    with pytest.raises(ConfigurationError, match=r"t\.jsonl:2: not UTF-8"):
        load_traces(path)
    with pytest.raises(ConfigurationError, match="cannot read"):
        load_traces(tmp_path / "missing.jsonl")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"trace_id": "a", "rating": "positive"}\n{"trace_id": "b", "rating": "meh"}\n',
         "f.jsonl:2: rating must be"),
        ('{"trace_id": "a", "rating": "positive"}\n{"trace_id": "a", "rating": "negative"}\n',
         "f.jsonl:2: trace 'a' is rated twice (first on line 1)"),
        ('{"rating": "positive"}\n',
         "f.jsonl:1: feedback needs a trace_id (a string or an integer)"),
        ('{"trace_id": null, "rating": "positive"}\n',
         "f.jsonl:1: feedback needs a trace_id (a string or an integer), got null"),
        ("nope\n", "f.jsonl:1: invalid JSON"),
        ('"x"\n', "f.jsonl:1: feedback must be a JSON object"),
    ],
)  # fmt: skip
def test_bad_feedback_files_name_the_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "f.jsonl"
    path.write_text(content)
    with pytest.raises(ConfigurationError) as info:
        load_feedback(path)
    assert info.value.message.startswith(message), info.value.message


def test_fixture_files_load(fixtures_dir: Path) -> None:
    traces = load_traces(fixtures_dir / "traces.jsonl")
    feedback = load_feedback(fixtures_dir / "feedback.jsonl")
    assert len(traces) == 300 and len(feedback) == 300
    assert {t.trace_id for t in traces} == set(feedback)
