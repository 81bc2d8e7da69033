"""Regression check on the shared fixtures: the jail reproduces plain CPython's results.

The full 25 evals x 300 traces run in bench/engine_bench.py; here every kind of eval (clean,
buggy, anti-pattern, printing) runs over the first 60 traces, skipping the two slow ones.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from evaljail import Outcome, PythonRunner, Settings

pytestmark = pytest.mark.sandbox

SLOW = {"eval_no_banned_phrases", "eval_positive_sentiment"}
N = 60


@pytest.fixture(scope="module")
def runner() -> Iterator[PythonRunner]:
    with PythonRunner(settings=Settings(pool_min_size=2, pool_max_size=2)) as r:
        yield r


@pytest.fixture(scope="module")
def traces(fixtures_dir: Path) -> list[dict[str, Any]]:
    with (fixtures_dir / "traces.jsonl").open() as f:
        return [json.loads(line) for _, line in zip(range(N), f, strict=False)]


def _evals() -> list[str]:
    from tests.conftest import FIXTURES

    return sorted(p.stem for p in (FIXTURES / "evals").glob("eval_*.py") if p.stem not in SLOW)


@pytest.mark.parametrize("name", _evals())
def test_eval_reproduces_expected(
    name: str, runner: PythonRunner, traces: list[dict[str, Any]], fixtures_dir: Path
) -> None:
    code = (fixtures_dir / "evals" / f"{name}.py").read_text()
    with (fixtures_dir / "expected" / f"{name}.jsonl").open() as f:
        expected = [json.loads(line) for _, line in zip(range(N), f, strict=False)]
    batch = runner.execute_batch(code, name, traces)
    got = [
        {
            "trace_id": r.trace_id,
            "passed": r.passed,
            "reason": r.reason,
            "error_type": r.error_type if r.outcome is Outcome.ERROR else None,
            "spec_violation": r.spec_violation,
        }
        for r in batch.results
    ]
    assert got == expected


def test_debug_prints_are_captured_per_trace(
    runner: PythonRunner, traces: list[dict[str, Any]], fixtures_dir: Path
) -> None:
    code = (fixtures_dir / "evals" / "eval_final_answer_present.py").read_text()
    batch = runner.execute_batch(code, None, traces[:5])
    for result in batch.results:
        assert result.stdout.startswith("[debug] ")
        assert result.trace_id[:8] in result.stdout
