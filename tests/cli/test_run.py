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
        ('{"steps": []}\n', "traces.jsonl:1: a trace needs a string trace_id"),
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
