"""PythonRunner behaviour that the backend contract suite does not cover."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import pytest

from evaljail import Outcome, Policy, PythonRunner, Settings
from evaljail.errors import ConfigurationError, EvalFunctionNotFoundError, PoolClosedError
from evaljail.policy.contract import check_return

pytestmark = pytest.mark.sandbox

EVAL = "def eval_steps(trace):\n    return len(trace.get('steps') or []) > 0, 'has steps'\n"


@pytest.fixture(scope="module")
def runner() -> Iterator[PythonRunner]:
    with PythonRunner(settings=Settings(pool_min_size=2, pool_max_size=2)) as r:
        yield r


def test_progress_callback_sees_every_trace(runner: PythonRunner) -> None:
    calls: list[tuple[int, int, str]] = []
    traces = [{"trace_id": f"t{i}", "data": {"steps": [1]}} for i in range(10)]
    runner.execute_batch(
        EVAL,
        None,
        traces,
        on_progress=lambda done, total, r: calls.append((done, total, r.trace_id)),
    )
    assert [c[0] for c in calls] == list(range(1, 11))
    assert {c[1] for c in calls} == {10}
    assert sorted(c[2] for c in calls) == sorted(t["trace_id"] for t in traces)


def test_bare_iofold_traces_are_accepted(runner: PythonRunner) -> None:
    batch = runner.execute_batch(EVAL, None, [{"trace_id": "x", "steps": []}])
    assert (batch.results[0].trace_id, batch.results[0].passed) == ("x", False)


def test_whole_batch_budget_ends_unstarted_traces(runner: PythonRunner) -> None:
    slow = "def eval_slow(trace):\n    while True:\n        pass\n"
    traces = [{"trace_id": str(i), "data": {}} for i in range(6)]
    batch = runner.execute_batch(slow, None, traces, timeout=400, batch_timeout_ms=900)
    assert [r.outcome for r in batch.results] == [Outcome.TIMEOUT] * 6
    assert batch.total_time_ms < 5000
    messages = {r.error for r in batch.results}
    assert "Batch time budget exhausted (batch_timeout_ms)" in messages


def test_per_trace_results_carry_resources(runner: PythonRunner) -> None:
    [result] = runner.execute_batch(EVAL, None, [{"trace_id": "a", "data": {}}]).results
    assert result.execution_time_ms > 0
    assert result.cpu_ms > 0
    assert result.memory_peak_kb > 0


def test_bad_input_is_refused_clearly(runner: PythonRunner) -> None:
    with pytest.raises(ConfigurationError, match="trace #1 must be an object"):
        runner.execute_batch(EVAL, None, [{"trace_id": "a", "data": {}}, "oops"])
    with pytest.raises(ConfigurationError, match="not JSON-serialisable"):
        runner.execute_batch(EVAL, None, [{"trace_id": "a", "data": {"x": object()}}])
    with pytest.raises(ConfigurationError, match=r"trace #0 \(deep\): data is nested too deep"):
        runner.execute_batch(EVAL, None, [{"trace_id": "deep", "data": _nested(5000)}])
    with pytest.raises(EvalFunctionNotFoundError, match="several eval functions"):
        runner.execute_batch(EVAL + EVAL.replace("eval_steps", "eval_two"), None, [])
    with pytest.raises(EvalFunctionNotFoundError, match="no eval function"):
        runner.execute_batch("x = 1", None, [])
    with pytest.raises(ConfigurationError, match="code must be a str"):
        runner.execute(b"print(1)")  # type: ignore[arg-type]


def test_trace_ids_are_strings_or_integers(runner: PythonRunner) -> None:
    """The message said "must be a string" although integers are accepted (and become text)."""
    batch = runner.execute_batch(EVAL, None, [{"trace_id": 42, "steps": []}, {"steps": [1]}])
    assert [r.trace_id for r in batch.results] == ["42", "1"]  # no id: named by position
    for bad, name in [(1.5, "float"), (None, "NoneType"), (True, "bool")]:
        with pytest.raises(ConfigurationError) as info:
            runner.execute_batch(EVAL, None, [{"trace_id": "a"}, {"trace_id": bad}])
        assert info.value.message == (
            f"trace #1: trace_id must be a string or an integer, got {name}"
        )


_BIG_EVAL = (
    "def eval_big(trace):\n"
    "    ok = trace['n'] == 10 ** 4400 and trace['l'] == [-(10 ** 5000), 3, 10 ** 4299]\n"
    "    return ok and trace['k'] == {'1' + '0' * 4301: 1}, str(trace['n'] % 997)\n"
)


@pytest.mark.parametrize("backend", ["local", "mock"])
def test_integers_past_the_digit_limit_reach_the_eval(runner: PythonRunner, backend: str) -> None:
    """CPython's json.dumps refuses ints of more than 4 300 digits; JSON has none, the
    service passes them on and the child decodes them. The API refused such a trace."""
    data = {"n": 10**4400, "l": (-(10**5000), 3, 10**4299), "k": {10**4301: 1}}
    traces = [{"trace_id": 10**4500, "data": data}, {"trace_id": "small", "data": {"n": 1}}]
    mock = PythonRunner(backend="mock") if backend == "mock" else None
    with mock or contextlib.nullcontext(runner) as r:
        big, small = r.execute_batch(_BIG_EVAL, None, traces).results
    assert (big.outcome, big.reason) == (Outcome.PASSED, str(10**4400 % 997))
    assert big.trace_id == "1" + "0" * 4500
    assert (small.outcome, small.reason) == (Outcome.FAILED, "1")


def test_unencodable_data_still_names_its_cause(runner: PythonRunner) -> None:
    loop: list[object] = [10**5000]
    loop.append(loop)
    with pytest.raises(ConfigurationError, match="Circular reference"):
        runner.execute_batch(EVAL, None, [{"trace_id": "a", "data": loop}])
    with pytest.raises(ConfigurationError, match="not JSON-serialisable"):
        runner.execute_batch(EVAL, None, [{"trace_id": "a", "data": [10**5000, object()]}])


def test_rejected_batch_reports_every_trace(runner: PythonRunner) -> None:
    batch = runner.execute_batch(
        "import os\ndef eval_x(trace):\n    return True, ''\n", None, [{"trace_id": "a"}]
    )
    assert batch.results[0].outcome is Outcome.REJECTED
    assert batch.violations


def test_closed_runner_refuses_work() -> None:
    r = PythonRunner(backend="mock")
    r.close()
    with pytest.raises(PoolClosedError):
        r.execute("print(1)")


def test_lone_surrogates_are_output_not_crashes(runner: PythonRunner) -> None:
    printed = runner.execute('print("a\\ud800b")')
    assert printed.outcome is Outcome.OK
    assert printed.stdout.startswith("a") and printed.stdout.endswith("b\n")
    code = "def eval_s(trace):\n    return True, trace['text'] + '\\udfff'\n"
    [result] = runner.execute_batch(
        code, None, [{"trace_id": "s", "data": {"text": "x\ud800"}}]
    ).results
    assert result.outcome is Outcome.PASSED
    assert result.reason is not None and result.reason.startswith("x")
    result.reason.encode("utf-8")  # valid text, whatever the eval returned


def test_async_batch_ends_when_the_backend_fails() -> None:
    import asyncio
    from concurrent.futures import Future

    from evaljail.errors import WorkerCrashedError
    from evaljail.runner import MockBackend

    class Failing(MockBackend):
        def run_traces(self, *args: object, **kwargs: object) -> Future[None]:
            future: Future[None] = Future()
            future.set_exception(WorkerCrashedError("boom"))
            return future

    async def consume() -> list[object]:
        with PythonRunner(backend=Failing()) as failing:
            return [r async for r in failing.aiter_batch(EVAL, None, [{"trace_id": "a"}])]

    with pytest.raises(WorkerCrashedError, match="boom"):
        asyncio.run(asyncio.wait_for(consume(), timeout=10))


def test_code_that_parses_but_does_not_compile_fails_alike_on_every_trace(
    runner: PythonRunner,
) -> None:
    """The first trace's child compiles the source itself, the zygote compiles it for the
    rest: both must report the same error."""
    code = "def eval_x(trace):\n    return True, ''\nreturn 5\n"
    batch = runner.execute_batch(code, None, [{"trace_id": str(i), "data": {}} for i in range(5)])
    errors = {(r.outcome, r.error_type, r.error) for r in batch.results}
    assert errors == {
        (Outcome.ERROR, "SyntaxError", "SyntaxError: 'return' outside function (<eval>, line 3)")
    }
    single = runner.execute("return 1")
    assert (single.outcome, single.error_type) == (Outcome.ERROR, "SyntaxError")


def _nested(depth: int) -> dict[str, object]:
    top: dict[str, object] = {}
    node = top
    for _ in range(depth):
        node["a"] = node = {}
    return top


@pytest.mark.parametrize(
    ("bad", "message"),
    [({"when": object()}, "data is not JSON"), (_nested(5000), "data is nested too deeply")],
)
def test_a_bad_trace_late_in_a_batch_refuses_the_whole_batch(
    runner: PythonRunner, bad: object, message: str
) -> None:
    """Traces are encoded chunk by chunk while earlier chunks already run: a trace that cannot
    be encoded still refuses the batch as a whole, and leaves no queued work behind."""
    traces: list[dict[str, object]] = [{"trace_id": f"t{i}", "data": {"i": i}} for i in range(300)]
    traces[250] = {"trace_id": "bad", "data": bad}
    with pytest.raises(ConfigurationError, match=rf"trace #250 \(bad\): {message}"):
        runner.execute_batch(EVAL, None, traces)
    for _ in range(100):
        if runner.health()["pool"]["queue"] == 0:
            break
        time.sleep(0.05)
    assert runner.health()["pool"]["queue"] == 0
    ok = runner.execute_batch(EVAL, None, traces[:5])
    assert [r.trace_id for r in ok.results] == [f"t{i}" for i in range(5)]
    assert all(r.success for r in ok.results)


def test_a_leading_byte_order_mark_is_ignored_as_cpython_does(runner: PythonRunner) -> None:
    """Editors on Windows save UTF-8 with a BOM; ``python3 file.py`` runs such a file."""
    assert runner.execute("\ufeffprint(6 * 7)").stdout == "42\n"
    assert runner.check("\ufeffx = 1") == ()
    batch = runner.execute_batch("\ufeff" + EVAL, None, [{"trace_id": "a", "data": {}}])
    assert batch.results[0].success
    # only at the very start: anywhere else it is still the syntax error CPython reports
    assert runner.execute("x = 1\n\ufeffprint(x)").outcome is Outcome.REJECTED


_RETURNS = [
    "(True, 'fine')", "(False, '')", "[True, 'x']", "True", "None", "(True, 'a', 1)", "()",
    "(1, 'x')", "(True, 5)", "(False, float('nan'))", "(True, float('inf'))", "(1.0, 'x')",
    "(True, 2**80)", "(2**80, 'x')", "(True, b'x')", "({'passed': True}, 'x')",
    "(x for x in ())", "(None, None)",
]  # fmt: skip


@pytest.mark.parametrize("expr", _RETURNS)
def test_the_jail_judges_a_return_value_as_plain_python_does(
    runner: PythonRunner, expr: str
) -> None:
    """The child describes the value, the host checks the contract: the verdict, the reason and
    the violation message must be those of checking the value in-process."""
    expected = check_return(eval(expr))  # a fixed, trusted expression
    code = f"def eval_x(trace):\n    return {expr}\n"
    [result] = runner.execute_batch(code, None, [{"trace_id": "a", "data": {}}]).results
    assert result.spec_violation == expected.violation
    assert result.passed == expected.passed
    assert result.reason == expected.reason
    if expected.message is not None:
        assert result.error == expected.message


@pytest.mark.parametrize(
    ("body", "error_type", "error"),
    [
        ("return trace['nope'], ''", "KeyError", "KeyError: 'nope'"),
        ("class E(Exception):\n        def __str__(self):\n            raise ValueError\n"
         "    raise E()", "E", "E: <exception str() failed>"),
        ("raise SystemExit(0)", "SystemExit", "SystemExit: 0"),
        ("raise SystemExit", "SystemExit", "SystemExit"),
        ("raise SystemExit(type('C', (), {'__str__': lambda s: 1 / 0})())", "SystemExit",
         "SystemExit: <exception str() failed>"),
    ],
)  # fmt: skip
def test_an_eval_that_raises_is_an_error_of_its_own_type(
    runner: PythonRunner, body: str, error_type: str, error: str
) -> None:
    """Whatever the eval raises, even an exception whose ``__str__`` fails or a SystemExit
    (an eval must return a verdict, not exit), is the eval's error: never a sandbox failure."""
    code = f"def eval_x(trace):\n    {body}\n"
    [result] = runner.execute_batch(code, None, [{"trace_id": "a", "data": {}}]).results
    assert (result.outcome, result.error_type, result.error) == (Outcome.ERROR, error_type, error)


def test_a_script_that_exits_zero_succeeds_as_in_cpython(runner: PythonRunner) -> None:
    assert runner.execute("print('bye')\nraise SystemExit(0)").success
    failed = runner.execute("raise SystemExit(3)")
    assert (failed.success, failed.error) == (False, "SystemExit: 3")


def test_a_batch_keeps_a_bounded_amount_of_text_whatever_its_evals_print(
    runner: PythonRunner,
) -> None:
    """A megabyte of stdout and a megabyte of reason per trace: past the batch's budget each
    result keeps a KiB of each, marked; verdicts and outcomes are untouched."""
    budget = 3_000_000
    policy_runner = PythonRunner(
        policy=runner.policy.with_limits(batch_output_bytes=budget), backend=runner.backend
    )
    code = "def eval_x(trace):\n    print('o' * 1_000_000)\n    return True, 'r' * 1_000_000\n"
    batch = policy_runner.execute_batch(
        code, None, [{"trace_id": str(i), "data": {}} for i in range(12)]
    )
    assert [r.passed for r in batch.results] == [True] * 12
    kept = sum(len(r.stdout) + len(r.reason or "") for r in batch.results)
    assert kept <= budget + 12 * 2 * 1200
    cut = [r for r in batch.results if "output budget" in r.stdout]
    assert len(cut) >= 10
    assert all(len(r.reason or "") < 1200 and r.reason.startswith("r" * 1024) for r in cut)
    whole = [r for r in batch.results if len(r.stdout) == 1_000_001]
    assert len(whole) == 1  # the first result fits (2 M characters), the second does not


_SLOW_EVAL = "def eval_slow(trace):\n    n = 0\n    while n < 600_000:\n        n += 1\n    return True, ''\n"
_SLOW_TRACES = [{"trace_id": str(i), "data": {}} for i in range(240)]


def _executions_once_idle(runner: PythonRunner) -> int:
    """The pool's execution count once nothing runs or waits (running chunks finish)."""
    stats = runner.backend.stats  # type: ignore[attr-defined]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        s = stats()
        if s.busy == 0 and s.queued == 0:
            return int(s.executions)
        time.sleep(0.05)
    raise AssertionError("the pool never went idle")


def test_closing_a_batch_early_runs_no_more_of_it(runner: PythonRunner) -> None:
    before = _executions_once_idle(runner)
    results = runner.iter_batch(_SLOW_EVAL, None, _SLOW_TRACES)
    taken = [next(results) for _ in range(3)]
    results.close()
    ran = _executions_once_idle(runner) - before
    assert len(taken) == 3
    # the chunks already running finish (at most a quarter of the batch here); no other starts
    assert ran < len(_SLOW_TRACES) // 2, ran
    assert runner.execute("print('next')").stdout == "next\n"


def test_cancelling_an_async_batch_runs_no_more_of_it(runner: PythonRunner) -> None:
    import asyncio

    before = _executions_once_idle(runner)

    async def cancel_soon() -> int:
        task = asyncio.ensure_future(runner.aexecute_batch(_SLOW_EVAL, None, _SLOW_TRACES))
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # wait with the loop still running, as a service would
        return await asyncio.to_thread(_executions_once_idle, runner)

    ran = asyncio.run(cancel_soon()) - before
    assert ran < len(_SLOW_TRACES) // 2, ran


#: Well past the size analysed inline: analysis runs in a thread for ~0.7 s.
_PADDING = "x = 1\n" * 50_000


def test_cancelling_aexecute_while_its_source_is_analysed_runs_nothing() -> None:
    """A client that leaves while a large source is still being analysed (in a thread) must
    not leave its execution to run for nobody: here a 30 s loop on the only worker, which
    would hold the next request for 30 s."""
    import asyncio

    runner = PythonRunner(settings=Settings(pool_min_size=1, pool_max_size=1))
    try:

        async def cancel_during_analysis() -> None:
            task = asyncio.ensure_future(
                runner.aexecute(_PADDING + "while True:\n    pass\n", timeout=30_000)
            )
            await asyncio.sleep(0.05)  # the analysis thread is still at work
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(cancel_during_analysis())  # returns once the analysis thread has finished
        started = time.monotonic()
        assert runner.execute("print('next')").stdout == "next\n"
        assert time.monotonic() - started < 15
    finally:
        runner.close()


def test_cancelling_an_async_batch_during_analysis_runs_none_of_it(runner: PythonRunner) -> None:
    import asyncio

    before = _executions_once_idle(runner)

    async def cancel_during_analysis() -> int:
        task = asyncio.ensure_future(
            runner.aexecute_batch(_PADDING + _SLOW_EVAL, None, _SLOW_TRACES)
        )
        await asyncio.sleep(0.05)  # the analysis thread is still at work
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.get_running_loop().shutdown_default_executor()  # the thread has finished
        # Blocking, with the loop still open as in a service (a closed loop stops a batch).
        return _executions_once_idle(runner)

    ran = asyncio.run(cancel_during_analysis()) - before
    assert ran < len(_SLOW_TRACES) // 2, ran


_DATES = """from __future__ import annotations
from datetime import date, datetime


def eval_dates(trace: dict) -> tuple[bool, str]:
    stamp = datetime.strptime(trace["at"], "%Y-%m-%d %H:%M")
    parts = [stamp.strftime("%d/%m/%Y"), f"{stamp:%H.%M}", str(stamp.timetuple().tm_yday)]
    return date.today() > stamp.date(), " ".join(parts)
"""


def test_datetime_and_future_imports_work_as_in_cpython(runner: PythonRunner) -> None:
    """``strftime``, ``strptime``, ``today`` and date format specs import ``time`` and
    ``_strptime`` from C code, and ``from __future__`` is an import too: none of it may trip
    the run-time import guard while the modules themselves stay off the allow-list."""
    assert runner.check(_DATES) == ()
    namespace: dict[str, object] = {}
    exec(compile(_DATES, "<eval>", "exec"), namespace)
    expected = namespace["eval_dates"]({"at": "2024-02-29 13:05"})  # type: ignore[operator]
    batch = runner.execute_batch(
        _DATES, None, [{"trace_id": "t", "data": {"at": "2024-02-29 13:05"}}]
    )
    (result,) = batch.results
    assert result.outcome is Outcome.PASSED, (result.error, result.traceback)
    assert (result.passed, result.reason) == expected == (True, "29/02/2024 13.05 60")
    script = runner.execute("from __future__ import annotations\nprint('ok')")
    assert (script.success, script.output) == (True, "ok\n"), script.error


@pytest.mark.parametrize("module", ["time", "_strptime"])
def test_the_runtime_s_own_imports_are_not_the_user_s(module: str) -> None:
    """What C code may import is still refused to an ``import`` statement (static analysis
    off, so that the run-time guard answers)."""
    with PythonRunner(
        policy=Policy(static_analysis=False), settings=Settings(pool_min_size=1, pool_max_size=1)
    ) as unguarded:
        for code in (f"import {module}", f"from {module} import *"):
            result = unguarded.execute(code)
            assert result.outcome is Outcome.ERROR and result.error_type == "ImportError", code
            assert f"import of '{module}' is not allowed" in (result.error or "")
