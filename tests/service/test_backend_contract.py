"""One contract suite, three backends: the local jailed pool, the remote service, the mock.

The same calls must give the same outcomes whatever runs them (the mock only differs in being
unisolated, which its results say with ``degraded=True``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from evaljail import Outcome, PythonRunner, Settings

from .conftest import TOKEN, Live

EVAL = """
def eval_contract(trace):
    kind = trace["kind"]
    if kind == "pass":
        return True, "fine"
    if kind == "fail":
        return False, "not fine"
    if kind == "int":
        return 1, "one is not True"
    if kind == "none-reason":
        return True, None
    if kind == "bare":
        return True
    if kind == "triple":
        return True, "a", "b"
    return trace["missing"]
"""

CASES = [
    ("pass", Outcome.PASSED, True, "fine", None, None),
    ("fail", Outcome.FAILED, False, "not fine", None, None),
    ("int", Outcome.SPEC_VIOLATION, None, None, "non_bool_passed", None),
    ("none-reason", Outcome.SPEC_VIOLATION, None, None, "non_str_reason", None),
    ("bare", Outcome.SPEC_VIOLATION, None, None, "not_2_tuple", None),
    ("triple", Outcome.SPEC_VIOLATION, None, None, "not_2_tuple", None),
    ("raise", Outcome.ERROR, None, None, None, "KeyError"),
]


@pytest.fixture(scope="module")
def local_runner() -> Iterator[PythonRunner]:
    runner = PythonRunner(settings=Settings(pool_min_size=1, pool_max_size=2))
    yield runner
    runner.close()


JAILED = pytest.mark.sandbox


@pytest.fixture(
    params=[pytest.param("local", marks=JAILED), pytest.param("remote", marks=JAILED), "mock"]
)
def runner(request: pytest.FixtureRequest) -> Iterator[PythonRunner]:
    if request.param == "mock":
        with PythonRunner(backend="mock") as mock:
            yield mock
        return
    if request.param == "local":
        yield request.getfixturevalue("local_runner")
        return
    live: Live = request.getfixturevalue("live")
    with PythonRunner(executor_url=live.url, settings=Settings(api_token=TOKEN)) as remote:
        yield remote


def test_script_output(runner: PythonRunner) -> None:
    result = runner.execute("print(2 + 2)")
    assert (result.success, result.outcome, result.output) == (True, Outcome.OK, "4\n")
    assert result.execution_time_ms >= 0


def test_exception_is_a_value(runner: PythonRunner) -> None:
    result = runner.execute("def f():\n    raise ValueError('boom')\nf()")
    assert result.outcome is Outcome.ERROR
    assert result.error_type == "ValueError"
    assert "boom" in (result.error or "")
    assert 'File "<eval>", line 2' in (result.traceback or "")


def test_static_analysis_rejects_before_running(runner: PythonRunner) -> None:
    result = runner.execute("import os\nprint('ran')")
    assert result.outcome is Outcome.REJECTED
    assert not result.success
    assert result.stdout == ""
    assert result.violations and result.violations[0].line == 1


def test_batch_contract_and_order(runner: PythonRunner) -> None:
    traces = [{"trace_id": f"t-{kind}", "data": {"kind": kind}} for kind, *_ in CASES]
    batch = runner.execute_batch(EVAL, "eval_contract", traces)
    assert [r.trace_id for r in batch.results] == [t["trace_id"] for t in traces]
    for result, (kind, outcome, passed, reason, violation, error_type) in zip(
        batch.results, CASES, strict=True
    ):
        assert result.outcome is outcome, (kind, result)
        assert (result.passed, result.reason, result.spec_violation) == (passed, reason, violation)
        assert result.error_type == error_type, (kind, result)  # None unless the eval raised
    assert batch.total_time_ms > 0


def test_streaming_yields_every_trace_once(runner: PythonRunner) -> None:
    traces = [{"trace_id": str(i), "data": {"kind": "pass"}} for i in range(6)]
    seen = sorted(r.index for r in runner.iter_batch(EVAL, None, traces))
    assert seen == list(range(6))


def test_async_twins(runner: PythonRunner) -> None:
    async def go() -> tuple[str, int]:
        script = await runner.aexecute("print('async')")
        batch = await runner.aexecute_batch(
            EVAL, None, [{"trace_id": "a", "data": {"kind": "fail"}}]
        )
        return script.output, len(batch.results)

    assert asyncio.run(go()) == ("async\n", 1)


@JAILED
@pytest.mark.parametrize("backend", ["local", "remote"])
def test_timeout_is_reported(backend: str, request: pytest.FixtureRequest) -> None:
    if backend == "local":
        runner = request.getfixturevalue("local_runner")
        result = runner.execute("while True:\n    pass", timeout=300)
    else:
        live: Live = request.getfixturevalue("live")
        with PythonRunner(executor_url=live.url, settings=Settings(api_token=TOKEN)) as remote:
            result = remote.execute("while True:\n    pass", timeout=300)
    assert result.outcome is Outcome.TIMEOUT
    assert result.error == "Execution timeout exceeded 300ms"
