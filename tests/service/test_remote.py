"""The remote backend: PythonRunner over HTTP, against a mock-backed server (no jail) and the
real service (jail)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from evaljail.errors import (
    EvalFunctionNotFoundError,
    QueueFullError,
    RemoteError,
    RemoteUnavailableError,
)
from evaljail.remote import RemoteBackend
from evaljail.runner import MockBackend, PythonRunner
from evaljail.service import create_app
from evaljail.settings import Settings
from evaljail.types import Outcome

from .conftest import TOKEN, Live, free_port, threaded
from .test_app import _Raising

EVAL = "def eval_ok(trace):\n    print('seen', trace.get('n'))\n    return (bool(trace.get('ok')), 'r')\n"


@pytest.fixture
def mock_url() -> Iterator[str]:
    settings = Settings()
    runner = PythonRunner(backend="mock", settings=settings)
    with threaded(create_app(settings, runner=runner)) as url:
        yield url
    runner.close()


def _remote(url: str, **kw: Any) -> PythonRunner:
    return PythonRunner(backend=RemoteBackend(url, **kw), settings=Settings())


def test_execute_rebuilds_the_result(mock_url: str) -> None:
    with _remote(mock_url) as runner:
        ok = runner.execute("print('  hi  ')")
        assert ok.success and ok.outcome is Outcome.OK
        assert ok.output == ok.stdout == "  hi  \n"  # raw, like the local backend
        bad = runner.execute("{}['k']")
        assert bad.outcome is Outcome.ERROR and bad.error_type == "KeyError"


def test_batch_results_in_order_with_progress(mock_url: str) -> None:
    traces = [{"trace_id": f"t{i}", "ok": i % 2 == 0, "n": i} for i in range(7)]
    seen: list[int] = []
    with _remote(mock_url) as runner:
        batch = runner.execute_batch(
            EVAL, None, traces, on_progress=lambda done, total, r: seen.append(done)
        )
    assert seen == list(range(1, 8))
    assert [r.trace_id for r in batch.results] == [f"t{i}" for i in range(7)]
    assert [r.passed for r in batch.results] == [i % 2 == 0 for i in range(7)]
    assert batch.results[3].stdout == "seen 3\n"


def test_large_batches_are_sent_in_chunks(mock_url: str) -> None:
    traces = [{"trace_id": f"t{i}", "ok": True, "pad": "x" * 3000} for i in range(40)]
    with _remote(mock_url, chunk_bytes=16 * 1024) as runner:
        batch = runner.execute_batch(EVAL, "eval_ok", traces)
    assert [r.index for r in batch.results] == list(range(40))
    assert batch.passed == 40


def test_server_errors_come_back_as_the_same_classes(mock_url: str) -> None:
    with _remote(mock_url) as runner, pytest.raises(EvalFunctionNotFoundError):
        runner.execute_batch(EVAL, "eval_missing", [{"trace_id": "a"}])
    settings = Settings()
    busy = PythonRunner(backend=_Raising(QueueFullError("full"), health={}), settings=settings)
    with threaded(create_app(settings, runner=busy)) as url, _remote(url) as runner:
        with pytest.raises(QueueFullError) as info:
            runner.execute("print(1)")
        assert info.value.details["status"] == 503
    busy.close()


def test_wrong_token_is_explained() -> None:
    settings = Settings(api_token=TOKEN)
    runner = PythonRunner(backend=MockBackend(), settings=settings)
    with threaded(create_app(settings, runner=runner)) as url:
        with (
            _remote(url, token="wrong-token-0123456789") as remote,
            pytest.raises(RemoteError, match="EVALJAIL_API_TOKEN"),
        ):
            remote.execute("print(1)")
        with _remote(url, token=TOKEN) as remote:
            assert remote.execute("print(1)").output == "1\n"
            assert remote.health()["status"] == "ok"
    runner.close()


def test_nothing_listening_names_the_command() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with _remote(url) as runner:
        with pytest.raises(RemoteUnavailableError, match="evaljail serve"):
            runner.execute("print(1)")
        with pytest.raises(RemoteUnavailableError, match="evaljail serve"):
            runner.execute_batch(EVAL, None, [{"trace_id": "a"}])
        with pytest.raises(RemoteUnavailableError):
            runner.health()


def test_runner_picks_remote_from_settings(mock_url: str) -> None:
    with PythonRunner(settings=Settings(executor_url=mock_url)) as runner:
        assert runner.backend.name == "remote"
        assert runner.execute("print(3)").output == "3\n"


# -- against the real service ------------------------------------------------------------------


@pytest.mark.sandbox
def test_remote_matches_the_fixture_ground_truth(live: Live, fixtures_dir: Path) -> None:
    name = "eval_tool_success_rate"
    code = (fixtures_dir / "evals" / f"{name}.py").read_text()
    traces, expected = [], []
    with (
        (fixtures_dir / "traces.jsonl").open() as tf,
        (fixtures_dir / "expected" / f"{name}.jsonl").open() as ef,
    ):
        for line, want in zip(tf, ef, strict=True):
            if len(line) < 100_000:
                traces.append(json.loads(line))
                expected.append(json.loads(want))
            if len(traces) == 40:
                break
    with _remote(live.url, token=TOKEN) as runner:
        batch = runner.execute_batch(code, name, traces)
    assert len(batch.results) == 40
    for got, want in zip(batch.results, expected, strict=True):
        assert got.trace_id == want["trace_id"]
        assert (got.passed, got.reason, got.error_type, got.spec_violation) == (
            want["passed"],
            want["reason"],
            want["error_type"],
            want["spec_violation"],
        )
        assert got.degraded is False and got.cpu_ms > 0


@pytest.mark.sandbox
def test_remote_progress_arrives_while_the_batch_runs(live: Live) -> None:
    spin = "def eval_spin(trace):\n    n = 0\n    for _ in range(trace['n']):\n        n += 1\n    return (True, str(n))\n"
    traces = [{"trace_id": "slow", "n": 15_000_000}] + [
        {"trace_id": f"fast{i}", "n": 10} for i in range(3)
    ]
    stamps: list[tuple[str, float]] = []
    with _remote(live.url, token=TOKEN) as runner:
        started = time.monotonic()
        batch = runner.execute_batch(
            spin,
            None,
            traces,
            timeout=3000,
            on_progress=lambda d, t, r: stamps.append((r.trace_id, time.monotonic() - started)),
        )
    assert batch.passed == 4, batch.counts
    assert stamps[-1][0] == "slow"
    first_fast = min(t for name, t in stamps if name.startswith("fast"))
    assert stamps[-1][1] - first_fast > 0.1, stamps


@pytest.mark.sandbox
@pytest.mark.parametrize("backend", ["mock", "local", "remote"])
def test_same_outcomes_on_every_backend(backend: str, live: Live) -> None:
    """A small contract: the three backends agree on outcomes for the same code."""
    settings = Settings(pool_min_size=1, pool_max_size=2)
    if backend == "remote":
        runner = _remote(live.url, token=TOKEN)
    else:
        runner = PythonRunner(backend=backend, settings=settings)
    with runner:
        assert runner.execute("print(2 + 2)").output == "4\n"
        assert runner.execute("1/0").error_type == "ZeroDivisionError"
        evals = "def eval_a(t):\n    return (t['x'] > 1, 'big') if 'x' in t else (1, None)\n"
        batch = runner.execute_batch(
            evals,
            None,
            [{"trace_id": "p", "x": 2}, {"trace_id": "f", "x": 0}, {"trace_id": "v"}],
        )
    assert [r.outcome for r in batch.results] == [
        Outcome.PASSED,
        Outcome.FAILED,
        Outcome.SPEC_VIOLATION,
    ]
    assert batch.results[2].spec_violation == "non_bool_passed"


def test_closing_a_remote_batch_early_stops_it_on_the_service(live: Live) -> None:
    """The remote backend stops reading and closes the stream; the service stops the batch."""
    from .test_live import _SLOW, _executions_once_idle

    before = _executions_once_idle(live)
    traces = [{"trace_id": str(i), "data": {}} for i in range(240)]
    with _remote(live.url, token=TOKEN) as runner:
        results = runner.iter_batch(_SLOW, None, traces)
        assert next(results).success
        results.close()
    ran = _executions_once_idle(live) - before
    assert ran < len(traces) // 2, ran
