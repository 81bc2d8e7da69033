"""``evaljail run``: summaries, agreement with feedback, and line-numbered input errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

EVALJAIL = Path(sys.executable).with_name("evaljail")
OK_EVAL = "def eval_ok(trace):\n    return (True, '')\n"


def run(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(EVALJAIL), "run", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=_env(),
    )


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EVALJAIL_", "PYTHON_"))}
    return env | {"COLUMNS": "120", "PYTHON_POOL_MAX_SIZE": "4"}


@pytest.fixture
def ok_eval(tmp_path: Path) -> Path:
    path = tmp_path / "eval_ok.py"
    path.write_text(OK_EVAL)
    return path


@pytest.mark.sandbox
@pytest.mark.parametrize("name", ["eval_avg_step_duration", "eval_error_free_final_step"])
def test_fixture_eval_matches_expected_summary(
    fixtures_dir: Path, tmp_path: Path, name: str
) -> None:
    """Counts and contradictions over the 300 fixture traces equal expected_summary.json."""
    out = tmp_path / "report.json"
    proc = run(
        fixtures_dir / "evals" / f"{name}.py",
        fixtures_dir / "traces.jsonl",
        "--feedback",
        fixtures_dir / "feedback.jsonl",
        "--json",
        out,
    )
    assert proc.returncode == 0, proc.stderr
    want = json.loads((fixtures_dir / "expected_summary.json").read_text())["evals"][name]
    report = json.loads(out.read_text())
    summary, agreement = report["summary"], report["agreement"]
    assert (summary["passed"], summary["failed"]) == (want["passed"], want["failed"])
    assert summary["errors"] == want["errors"]
    assert summary["spec_violations"] == want["spec_violations"]
    assert summary["calls_with_stdout"] == want["calls_with_stdout"]
    assert agreement["contradiction_counts"] == want["contradictions"]
    assert agreement["agreements"] == want["agreements"]
    assert len(agreement["contradictions"]) == sum(want["contradictions"].values())
    assert len(report["results"]) == 300
    for metric in ("accuracy", "precision", "recall", "f1", "cohen_kappa"):
        assert metric in agreement
    assert "Summary" in proc.stdout and "Agreement with human feedback" in proc.stdout
    assert "Cohen's kappa" in proc.stdout
    # Every trace in exactly one row, by its rating: 59 traces are rated neutral, and with
    # eval_error_free_final_step none of them got a verdict (they were counted nowhere).
    buckets = ("compared", "no_verdict", "neutral", "unrated")
    assert sum(agreement[k] for k in buckets) == agreement["traces"] == 300
    assert agreement["neutral"] == 59
    assert _row(proc.stdout, "rated neutral (never contradicts)") == "59"
    rows = ("compared (verdict", "rated positive/negative, but no verdict", "not rated")
    assert sum(int(_row(proc.stdout, r)) for r in rows) == 300 - 59
    assert "-0.000" not in proc.stdout and "-0.0," not in out.read_text()
    if name == "eval_error_free_final_step":  # p_o == p_e: kappa is exactly 0, not -7.8e-16
        assert agreement["cohen_kappa"] == 0.0
        assert _row(proc.stdout, "Cohen's kappa") == "0.000"
    assert report["warnings"] == [] and "warning" not in proc.stderr


def _row(table: str, label: str) -> str:
    """The value of the first row of a printed table whose label starts with ``label``."""
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip("│ ").split("│")]
        if len(cells) == 2 and cells[0].startswith(label):
            return cells[1]
    raise AssertionError(f"no row {label!r} in:\n{table}")


@pytest.mark.sandbox
def test_json_array_traces_and_data_items(tmp_path: Path, ok_eval: Path) -> None:
    traces = tmp_path / "traces.json"
    traces.write_text(json.dumps([{"trace_id": "a", "steps": []}, {"trace_id": "b", "data": {}}]))
    proc = run(ok_eval, traces)
    assert proc.returncode == 0, proc.stderr
    assert "passed" in proc.stdout


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"trace_id": "a", "steps": []}\n{"trace_id": "b", "steps": [}\n',
         "traces.jsonl:2: invalid JSON"),
        ('{"trace_id": "a", "steps": []}\n\n\n42\n', "traces.jsonl:4: a trace must be a JSON object"),
        ('{"steps": []}\n', "traces.jsonl:1: a trace needs a trace_id (a string or an integer)"),
        ('{"trace_id": null}\n',
         "traces.jsonl:1: a trace needs a trace_id (a string or an integer), got null"),
        ('{"trace_id": "t-[red]x"}\n{"trace_id": "t-[red]x"}\n',
         "traces.jsonl:2: a duplicate trace id: 't-[red]x' (lines 1, 2)"),
    ],
)  # fmt: skip
def test_bad_traces_file_exits_2_with_the_line(
    tmp_path: Path, ok_eval: Path, content: str, expected: str
) -> None:
    traces = tmp_path / "traces.jsonl"
    traces.write_text(content)
    proc = run(ok_eval, traces)
    assert proc.returncode == 2
    assert expected in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_feedback_file_exits_2_with_the_line(tmp_path: Path, ok_eval: Path) -> None:
    traces = tmp_path / "traces.jsonl"
    traces.write_text('{"trace_id": "a", "steps": []}\n')
    feedback = tmp_path / "feedback.jsonl"
    feedback.write_text('{"trace_id": "a", "rating": "positive"}\n{"trace_id": "a", "rating": 5}\n')
    proc = run(ok_eval, traces, "--feedback", feedback)
    assert proc.returncode == 2
    assert "feedback.jsonl:2: rating must be" in proc.stderr


def test_missing_files_and_bad_evals(tmp_path: Path, ok_eval: Path) -> None:
    traces = tmp_path / "traces.jsonl"
    traces.write_text('{"trace_id": "a", "steps": []}\n')
    missing = run(tmp_path / "nope.py", traces)
    assert missing.returncode == 2 and "cannot read" in missing.stderr
    no_fn = tmp_path / "no_fn.py"
    no_fn.write_text("x = 1\n")
    result = run(no_fn, traces)
    assert result.returncode == 2 and "no eval function" in result.stderr
    broken = tmp_path / "broken.py"
    broken.write_text("def eval_x(trace):\n    return (True,\n")
    result = run(broken, traces)
    assert result.returncode == 1
    assert f"{broken}:2:" in result.stderr and "nothing ran" in result.stderr
    assert "Traceback" not in result.stderr


def test_duplicate_trace_ids_are_an_error_before_anything_runs(
    tmp_path: Path, ok_eval: Path
) -> None:
    """They were accepted, and a single rating counted once per copy (compared 2)."""
    traces = tmp_path / "traces.jsonl"
    traces.write_text('{"trace_id": "t", "steps": []}\n' * 2 + '{"trace_id": "u"}\n')
    feedback = tmp_path / "feedback.jsonl"
    feedback.write_text('{"trace_id": "t", "rating": "positive"}\n')
    out = tmp_path / "report.json"
    proc = run(ok_eval, traces, "--feedback", feedback, "--json", out)
    assert proc.returncode == 2, proc.stdout
    assert "traces.jsonl:2: a duplicate trace id: 't' (lines 1, 2)" in " ".join(proc.stderr.split())
    assert not out.exists() and "Summary" not in proc.stdout


def test_several_eval_functions_name_the_option(tmp_path: Path) -> None:
    two = tmp_path / "two.py"
    two.write_text(OK_EVAL + OK_EVAL.replace("eval_ok", "eval_other"))
    traces = tmp_path / "traces.jsonl"
    traces.write_text('{"trace_id": "a"}\n')
    proc = run(two, traces)
    assert proc.returncode == 2
    message = " ".join(proc.stderr.split())
    assert "several eval functions found (eval_ok, eval_other)" in message
    assert "--function eval_ok" in message


def test_an_unwritable_report_path_is_refused_before_the_run(tmp_path: Path, ok_eval: Path) -> None:
    """The report was lost: the whole run went first, then writing it failed."""
    traces = tmp_path / "traces.jsonl"
    traces.write_text('{"trace_id": "a"}\n')
    for out in (tmp_path / "missing" / "report.json", tmp_path):
        proc = run(ok_eval, traces, "--json", out)
        assert proc.returncode == 2
        assert "cannot write the --json report" in " ".join(proc.stderr.split())
        assert "Summary" not in proc.stdout


def test_error_messages_are_not_read_as_markup(tmp_path: Path, ok_eval: Path) -> None:
    traces = tmp_path / "traces.jsonl"
    traces.write_text('{"trace_id": "a"}\n')
    missing = tmp_path / "[bold]nope.py"
    proc = run(missing, traces)
    assert proc.returncode == 2
    assert "[bold]nope.py: cannot read" in " ".join(proc.stderr.split())


@pytest.mark.sandbox
def test_unusable_feedback_is_warned_about(tmp_path: Path, ok_eval: Path) -> None:
    """Ratings of unknown trace ids, and an empty feedback file, used to be silently ignored."""
    traces = tmp_path / "traces.jsonl"
    traces.write_text('{"trace_id": "a", "steps": []}\n{"trace_id": 7, "steps": []}\n')
    feedback = tmp_path / "feedback.jsonl"
    feedback.write_text(
        '{"trace_id": "a", "rating": "positive"}\n{"trace_id": "ghost", "rating": "negative"}\n'
        '{"trace_id": "7", "rating": "neutral"}\n{"trace_id": 8, "rating": "neutral"}\n'
    )
    out = tmp_path / "report.json"
    proc = run(ok_eval, traces, "--feedback", feedback, "--json", out)
    assert proc.returncode == 0, proc.stderr
    want = "feedback.jsonl: 2 ratings name traces not in the traces file, ignored: 'ghost', '8'"
    assert f"evaljail run: warning: {want}" in " ".join(proc.stderr.split())
    report = json.loads(out.read_text())
    assert report["warnings"] == [want]
    assert report["agreement"]["feedback_not_in_traces"] == ["ghost", "8"]
    assert (report["agreement"]["compared"], report["agreement"]["neutral"]) == (1, 1)
    assert _row(proc.stdout, "ratings of traces not in the file") == "2"

    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    proc = run(ok_eval, traces, "--feedback", empty, "--json", out)
    assert proc.returncode == 0, proc.stderr
    want = "empty.jsonl: no ratings in the file; nothing to compare"
    assert f"evaljail run: warning: {want}" in " ".join(proc.stderr.split())
    assert json.loads(out.read_text())["warnings"] == [want]


@pytest.mark.sandbox
def test_numbers_past_the_digit_limit_reach_the_eval(tmp_path: Path) -> None:
    """A 5 000-digit integer in a traces file was a traceback (ValueError from json)."""
    evaluator = tmp_path / "eval_big.py"
    evaluator.write_text(
        "def eval_big(trace):\n    return trace['n'] == 10 ** 5000 - 1, str(trace['n'] % 1000)\n"
    )
    traces = tmp_path / "traces.jsonl"
    traces.write_text('{"trace_id": "big", "n": ' + "9" * 5000 + "}\n")
    out = tmp_path / "report.json"
    proc = run(evaluator, traces, "--json", out)
    assert proc.returncode == 0, proc.stderr
    [result] = json.loads(out.read_text())["results"]
    assert (result["outcome"], result["reason"]) == ("passed", "999")


def test_figures_never_show_negative_zero() -> None:
    from evaljail.cli.run import _fmt, _no_negative_zero

    assert [_fmt(v) for v in (-0.0, -0.0004, -7.8e-16, 0.0)] == ["0.000"] * 4
    assert [_fmt(-0.5), _fmt(None), _fmt(-0.0, "{:.1f}")] == ["-0.500", "n/a", "0.0"]
    document = _no_negative_zero({"k": -0.0, "l": [-0.0, -1.5, 2], "s": "-0.0"})
    assert json.dumps(document) == '{"k": 0.0, "l": [0.0, -1.5, 2], "s": "-0.0"}'
