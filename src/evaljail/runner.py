"""``PythonRunner``: the public way to run code, with three interchangeable backends.

- ``"local"`` (default): a warm pool of jailed zygotes on this machine, no server needed;
- ``"remote"``: an evaljail executor service over HTTP (``executor_url=`` or
  ``PYTHON_EXECUTOR_URL``);
- ``"mock"``: runs code in this process, **not isolated**, for users' own unit tests.

All three return the same result types. Static analysis and the eval contract are applied here
(or by the remote service), so every backend reports the same outcomes for the same code.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import replace
from decimal import Decimal
from typing import Any, Protocol, TypeVar, overload

from .errors import ConfigurationError, EvalFunctionNotFoundError
from .policy import Policy, Profile
from .policy.analysis import AnalysisReport, analyze, parse_module
from .policy.contract import find_eval_function
from .policy.outcomes import script_result, trace_result
from .settings import Settings
from .types import (
    BatchExecutionResult,
    ExecutionResult,
    Outcome,
    TraceItem,
    TraceResult,
    Violation,
    loads_json,
    trace_id_text,
)
from .worker.child import SOURCE_NAME, error_message, user_traceback
from .worker.guard import describe_value

__all__ = [
    "Backend",
    "MockBackend",
    "ProgressCallback",
    "PythonRunner",
    "TraceItem",
    "TraceList",
]

_T = TypeVar("_T")
#: Sources longer than this are analysed in a thread by the async API.
_INLINE_ANALYSIS_CHARS = 16_384
#: Analysis reports (with their syntax trees) are cached for sources up to this size.
_CACHED_ANALYSIS_CHARS = 65_536
_ANALYSIS_CACHE_SIZE = 32

#: ``on_progress(done, total, result)`` after each trace finishes.
ProgressCallback = Callable[[int, int, TraceResult], None]


class TraceList(Sequence[TraceItem]):
    """A batch's traces: checked up front, each JSON-encoded the first time it is read.

    Accepts the seed's ``{"trace_id", "data"}`` items or bare iofold traces (``trace_id`` +
    ``steps``); ``TraceItem`` objects (data already JSON text) pass through. A ``trace_id`` is a
    string or an integer (``42`` becomes ``"42"``); without one, a trace is named by its
    position. A malformed item raises ConfigurationError here; data that cannot be encoded
    raises it when read. Integers of any length are encoded (JSON has no digit limit). The pool
    reads the list one chunk at a time as it hands chunks to workers, so encoding a large
    batch (~0.25 s per 40 MB) overlaps the jailed work instead of preceding it.
    """

    __slots__ = ("_data", "_ids", "_items")

    def __init__(self, traces: Iterable[Any]) -> None:
        self._items: list[TraceItem | None] = []
        self._ids: list[str] = []
        self._data: list[Any] = []
        for index, raw in enumerate(traces):
            if isinstance(raw, TraceItem):  # already encoded (the service's batches)
                item = raw if raw.index == index else replace(raw, index=index)
                self._items.append(item)
                self._ids.append(item.trace_id)
                self._data.append(None)
                continue
            if not isinstance(raw, Mapping):
                raise ConfigurationError(
                    f"trace #{index} must be an object, got {type(raw).__name__}",
                    details={"index": index},
                )
            trace_id = raw.get("trace_id", str(index))
            try:
                trace_id = trace_id_text(trace_id)
            except TypeError:
                raise ConfigurationError(
                    f"trace #{index}: trace_id must be a string or an integer, "
                    f"got {type(trace_id).__name__}",
                    details={"index": index},
                ) from None
            self._items.append(None)
            self._ids.append(trace_id)
            self._data.append(raw["data"] if "data" in raw else raw)

    def __len__(self) -> int:
        return len(self._items)

    @overload
    def __getitem__(self, key: int) -> TraceItem: ...
    @overload
    def __getitem__(self, key: slice) -> list[TraceItem]: ...
    def __getitem__(self, key: int | slice) -> TraceItem | list[TraceItem]:
        if isinstance(key, slice):
            return [self._item(i) for i in range(*key.indices(len(self._items)))]
        return self._item(key + len(self._items) if key < 0 else key)

    def trace_id(self, index: int) -> str:
        return self._ids[index]

    def _item(self, index: int) -> TraceItem:
        item = self._items[index]
        if item is None:
            data_json = _encode_trace(index, self._ids[index], self._data[index])
            item = TraceItem(index=index, trace_id=self._ids[index], data_json=data_json)
            self._items[index] = item
            self._data[index] = None  # the encoded form is all that is needed from here on
        return item


_TEXT_FIELDS = ("stdout", "stderr", "reason", "error", "traceback")
#: What each text field of a result keeps once its batch's output budget is spent.
_OVER_BUDGET_CHARS = 1024


class _OutputBudget:
    """Bounds the text one batch's results keep, whatever its evals print or return.

    Each trace may print up to ``output_bytes`` to each stream and return a reason as long,
    so a hostile eval over many small traces could otherwise make the host (or the service
    answering for it) hold gigabytes. Once ``limit`` characters are kept, each later result
    keeps the first KiB of each field, marked as cut; verdicts and outcomes are never touched.
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._used = 0
        self._lock = threading.Lock()

    def apply(self, result: TraceResult) -> TraceResult:
        texts = {name: getattr(result, name) for name in _TEXT_FIELDS}
        size = sum(len(text) for text in texts.values() if text)
        with self._lock:
            if self._used + size <= self._limit:
                self._used += size
                return result
        marker = f"\n[evaljail: cut, the batch's output budget ({self._limit} characters) is spent]"
        cut = {
            name: text[:_OVER_BUDGET_CHARS] + marker
            for name, text in texts.items()
            if text and len(text) > _OVER_BUDGET_CHARS
        }
        return replace(result, **cut) if cut else result


def _source(code: object) -> str:
    """User code as a str, without the byte-order mark an editor may have saved at its start
    (CPython ignores one at the start of a file; ``compile()`` of a str refuses it)."""
    if not isinstance(code, str):
        raise ConfigurationError(f"code must be a str, got {type(code).__name__}")
    return code[1:] if code.startswith("\ufeff") else code


def _dumps(data: Any) -> str:
    try:
        data_json = json.dumps(data, ensure_ascii=False, allow_nan=True)
        if not data_json.isascii():
            data_json.encode("utf-8")  # lone surrogates raise here, not in a worker
    except UnicodeEncodeError:
        data_json = json.dumps(data, ensure_ascii=True, allow_nan=True)
    return data_json


def _int_text(value: int) -> str | None:
    """An int's JSON text when ``json.dumps`` cannot write it (over 4 300 digits), else None."""
    try:
        int.__repr__(value)
    except ValueError:
        return str(Decimal(int(value)))
    return None


def _dumps_big_ints(data: Any, error: ValueError) -> str:
    """``json.dumps`` of ``data`` with integers past CPython's 4 300-digit limit written out.

    JSON has no digit limit and the child decodes traces without one, so such a trace reaches
    the eval as it is. Each big integer is swapped for a unique placeholder string, then its
    digits replace the quoted placeholder in the text. Raises ``error`` again when the data
    holds no big integer (it failed for another reason, such as a circular reference).
    """
    nonce = secrets.token_hex(16)
    digits: list[str] = []
    active: set[int] = set()

    def key(k: Any) -> Any:
        text = _int_text(k) if isinstance(k, int) and not isinstance(k, bool) else None
        return k if text is None else text  # a JSON key is a string anyway

    def walk(value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            text = _int_text(value)
            if text is None:
                return value
            digits.append(text)
            return f"{nonce}:{len(digits) - 1}"
        if isinstance(value, dict | list | tuple):
            if id(value) in active:
                raise ValueError("Circular reference detected")  # as json.dumps says
            active.add(id(value))
            try:
                if isinstance(value, dict):
                    return {key(k): walk(v) for k, v in value.items()}
                return [walk(v) for v in value]
            finally:
                active.discard(id(value))
        return value

    walked = walk(data)
    if not digits:
        raise error
    return re.sub(f'"{nonce}:([0-9]+)"', lambda m: digits[int(m.group(1))], _dumps(walked))


def _encode_trace(index: int, trace_id: str, data: Any) -> str:
    try:
        try:
            data_json = _dumps(data)
        except ValueError as exc:  # maybe an integer of more than 4 300 digits
            data_json = _dumps_big_ints(data, exc)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(
            f"trace #{index} ({trace_id}): data is not JSON-serialisable: {exc}",
            details={"index": index, "trace_id": trace_id},
        ) from exc
    except RecursionError:
        raise ConfigurationError(
            f"trace #{index} ({trace_id}): data is nested too deeply to encode as JSON",
            details={"index": index, "trace_id": trace_id},
        ) from None
    return data_json


class Backend(Protocol):
    """What runs already-checked code. Implemented by the pool, the remote client and the mock."""

    name: str
    #: True when this backend applies static analysis itself (the remote service does).
    analyzes: bool

    def run_script(self, code: str, policy: Policy) -> Future[ExecutionResult]: ...

    def run_traces(
        self,
        code: str,
        function_name: str,
        items: Sequence[TraceItem],
        policy: Policy,
        *,
        deadline: float,
        on_result: Callable[[int, TraceResult], None],
        stop: threading.Event | None = None,
    ) -> Future[None]:
        """Run the eval over ``items``; call ``on_result(index, result)`` as each finishes.

        ``deadline`` is a ``time.monotonic()`` instant: traces not started by then end as
        timeouts. The future completes when every item has a result. Once ``stop`` is set
        (nobody wants the results any more) the backend starts no more traces and reports
        nothing more; the future may then never complete.
        """
        ...

    def health(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


def _rejected_script(violations: tuple[Violation, ...]) -> ExecutionResult:
    first = violations[0]
    return ExecutionResult(
        success=False,
        outcome=Outcome.REJECTED,
        error=f"Static analysis rejected the code: {first.message} (line {first.line}, "
        f"rule {first.rule_id})",
        error_type="PolicyViolation",
        violations=violations,
    )


def _rejected_trace(index: int, trace_id: str, violations: tuple[Violation, ...]) -> TraceResult:
    script = _rejected_script(violations)
    return TraceResult(
        index=index,
        trace_id=trace_id,
        success=False,
        outcome=Outcome.REJECTED,
        error=script.error,
        error_type=script.error_type,
    )


class PythonRunner:
    """Run Python code and eval functions in the jail.

    >>> runner = PythonRunner(timeout=5000)
    >>> runner.execute("print(2 + 2)").output
    '4\\n'
    """

    def __init__(
        self,
        timeout: int | None = None,
        *,
        memory_mb: int | None = None,
        policy: Policy | None = None,
        profile: Profile | str | None = None,
        backend: str | Backend = "auto",
        executor_url: str | None = None,
        settings: Settings | None = None,
    ) -> None:
        self._settings = settings or Settings.from_env()
        if policy is None:
            prof = Profile(profile) if profile is not None else Profile.CORE
            policy = Policy.from_settings(self._settings, profile=prof)
        if timeout is not None:
            policy = policy.with_limits(timeout_ms=int(timeout))
        if memory_mb is not None:
            policy = policy.with_limits(memory_bytes=int(memory_mb) * 1024 * 1024)
        self.policy = policy
        self._backend = self._make_backend(backend, executor_url)
        self._closed = False
        # Services see the same evals again and again: analyse each (source, policy) once.
        self._analysis_cache: OrderedDict[tuple[str, Policy], AnalysisReport] = OrderedDict()
        self._cache_lock = threading.Lock()

    # -- construction -------------------------------------------------------------------------

    def _make_backend(self, backend: str | Backend, executor_url: str | None) -> Backend:
        if not isinstance(backend, str):
            return backend
        url = executor_url or self._settings.executor_url
        if backend == "auto":
            backend = "remote" if url else "local"
        if backend == "mock":
            return MockBackend()
        if backend == "remote":
            if not url:
                raise ConfigurationError(
                    "the remote backend needs executor_url= or PYTHON_EXECUTOR_URL",
                    details={"variable": "PYTHON_EXECUTOR_URL"},
                )
            from .remote import RemoteBackend

            return RemoteBackend(url, token=self._settings.api_token)
        if backend == "local":
            from .pool import Pool

            pool = Pool.from_settings(self._settings)
            pool.start()
            return pool
        raise ConfigurationError(
            f"unknown backend {backend!r}: use 'local', 'remote' or 'mock'",
            details={"backend": backend},
        )

    @property
    def backend(self) -> Backend:
        return self._backend

    # -- policy helpers -----------------------------------------------------------------------

    def _policy_for(self, timeout: int | None) -> Policy:
        if timeout is None:
            return self.policy
        return self.policy.with_limits(timeout_ms=int(timeout))

    def check(self, code: str) -> tuple[Violation, ...]:
        """Static analysis only: every finding, nothing executed."""
        return analyze(_source(code), self.policy).violations

    def _analyze(self, code: str, policy: Policy) -> AnalysisReport | None:
        if self._backend.analyzes or not policy.static_analysis:
            return None
        if len(code) > _CACHED_ANALYSIS_CHARS:
            return analyze(code, policy)
        key = (code, policy)
        with self._cache_lock:
            report = self._analysis_cache.get(key)
            if report is not None:
                self._analysis_cache.move_to_end(key)
                return report
        report = analyze(code, policy)
        with self._cache_lock:
            self._analysis_cache[key] = report
            if len(self._analysis_cache) > _ANALYSIS_CACHE_SIZE:
                self._analysis_cache.popitem(last=False)
        return report

    # -- scripts ------------------------------------------------------------------------------

    def _submit_script(self, code: str, timeout: int | None) -> Future[ExecutionResult]:
        self._check_open()
        code = _source(code)
        policy = self._policy_for(timeout)
        report = self._analyze(code, policy)
        if report is not None and report.violations:
            done: Future[ExecutionResult] = Future()
            done.set_result(_rejected_script(report.violations))
            return done
        return self._backend.run_script(code, policy)

    def execute(self, code: str, *, timeout: int | None = None) -> ExecutionResult:
        """Run ``code`` as a script; ``output`` is what it printed."""
        return self._submit_script(code, timeout).result()

    async def aexecute(self, code: str, *, timeout: int | None = None) -> ExecutionResult:
        """``execute`` for an event loop. Cancelling it (an HTTP client that left) cancels the
        execution: skipped if it still waits for a worker, stopped if it runs."""
        future = await self._off_loop(
            code, lambda: self._submit_script(code, timeout), abandon=lambda f: f.cancel()
        )
        return await asyncio.wrap_future(future)

    @staticmethod
    async def _off_loop(
        code: object, start: Callable[[], _T], *, abandon: Callable[[_T], object]
    ) -> _T:
        """Run ``start`` (which analyses the source) in a thread when the source is large
        enough for parsing to stall an event loop; inline otherwise (a thread hop costs more
        than parsing a small eval). Cancelled while the thread runs, the thread still finishes:
        ``abandon`` then gets what it started, so that nothing runs for nobody."""
        if not (isinstance(code, str) and len(code) > _INLINE_ANALYSIS_CHARS):
            return start()
        lock = threading.Lock()
        cancelled = False
        started: list[_T] = []  #: what ``start`` returned, once it has, unless cancelled first

        def run() -> _T:
            result = start()
            with lock:
                if cancelled:
                    abandon(result)
                else:
                    started.append(result)
            return result

        try:
            return await asyncio.to_thread(run)
        except asyncio.CancelledError:  # the thread runs on: whichever of us is last abandons
            with lock:
                cancelled = True
                if started:
                    abandon(started[0])
            raise

    # -- batches ------------------------------------------------------------------------------

    def _start_batch(
        self,
        code: str,
        function_name: str | None,
        traces: Iterable[Any],
        timeout: int | None,
        batch_timeout_ms: int | None,
        on_result: Callable[[int, TraceResult], None],
        stop: threading.Event,
    ) -> tuple[TraceList, tuple[Violation, ...], Future[None]]:
        """Check and submit a batch; ``stop``, once set, abandons what has not run yet."""
        self._check_open()
        code = _source(code)
        policy = self._policy_for(timeout)
        items = TraceList(traces)
        report = self._analyze(code, policy)
        done: Future[None] = Future()
        if report is not None:
            if report.violations:
                for index in range(len(items)):
                    trace_id = items.trace_id(index)
                    on_result(index, _rejected_trace(index, trace_id, report.violations))
                done.set_result(None)
                return items, report.violations, done
            assert report.tree is not None
            function_name = find_eval_function(report.tree, function_name)
        elif not function_name:
            try:
                function_name = find_eval_function(parse_module(code), None)
            except SyntaxError as exc:
                raise EvalFunctionNotFoundError(f"code does not parse: {exc}") from exc
        budget_ms = batch_timeout_ms or max(policy.limits.timeout_ms * max(len(items), 1), 60_000)
        deadline = time.monotonic() + budget_ms / 1000
        output = _OutputBudget(policy.limits.batch_output_bytes)
        future = self._backend.run_traces(
            code, function_name, items, policy, deadline=deadline,
            on_result=lambda index, result: on_result(index, output.apply(result)), stop=stop,
        )  # fmt: skip
        return items, (), future

    def iter_batch(
        self,
        code: str,
        function_name: str | None,
        traces: Iterable[Any],
        *,
        timeout: int | None = None,
        batch_timeout_ms: int | None = None,
    ) -> Iterator[TraceResult]:
        """Yield each trace's result as soon as it finishes (``result.index`` gives its place)."""
        import queue

        q: queue.SimpleQueue[TraceResult | None] = queue.SimpleQueue()
        stop = threading.Event()
        items, _, future = self._start_batch(
            code, function_name, traces, timeout, batch_timeout_ms, lambda _i, r: q.put(r), stop
        )
        future.add_done_callback(lambda _f: q.put(None))
        remaining = len(items)
        try:
            while remaining:
                result = q.get()
                if result is None:
                    break
                remaining -= 1
                yield result
        finally:
            stop.set()  # left early (closed, or an error): run no more of this batch
        future.result()  # re-raise a backend failure

    def execute_batch(
        self,
        code: str,
        function_name: str | None,
        traces: Iterable[Any],
        *,
        timeout: int | None = None,
        batch_timeout_ms: int | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> BatchExecutionResult:
        """Run the eval over every trace, each in a fresh jailed process; results in input
        order."""
        started = time.perf_counter()
        results: dict[int, TraceResult] = {}
        lock = threading.Lock()
        total_box: list[int] = [0]

        def on_result(index: int, result: TraceResult) -> None:
            with lock:
                results[index] = result
                done = len(results)
            if on_progress is not None:
                on_progress(done, total_box[0], result)

        stop = threading.Event()
        items, violations, future = self._start_batch(
            code, function_name, [*traces], timeout, batch_timeout_ms, on_result, stop
        )
        total_box[0] = len(items)
        try:
            future.result()
        except BaseException:  # a backend failure, or the caller interrupted (Ctrl-C)
            stop.set()
            raise
        return BatchExecutionResult(
            results=tuple(results[i] for i in range(len(items))),
            total_time_ms=round((time.perf_counter() - started) * 1000, 3),
            violations=violations,
        )

    async def aiter_batch(
        self,
        code: str,
        function_name: str | None,
        traces: Iterable[Any],
        *,
        timeout: int | None = None,
        batch_timeout_ms: int | None = None,
    ) -> AsyncIterator[TraceResult]:
        loop = asyncio.get_running_loop()
        q: asyncio.Queue[TraceResult | None] = asyncio.Queue()

        stop = threading.Event()

        def on_result(_index: int, result: TraceResult) -> None:
            try:
                loop.call_soon_threadsafe(q.put_nowait, result)
            except RuntimeError:  # the loop is closed: nobody is left to read the rest
                stop.set()

        trace_list = [*traces]
        items, _, future = await self._off_loop(
            code,
            lambda: self._start_batch(
                code, function_name, trace_list, timeout, batch_timeout_ms, on_result, stop
            ),
            abandon=lambda _started: stop.set(),
        )
        future.add_done_callback(lambda _f: loop.call_soon_threadsafe(q.put_nowait, None))
        wrapped = asyncio.wrap_future(future)
        remaining = len(items)
        try:
            while remaining:
                result = await q.get()
                if result is None:
                    break
                remaining -= 1
                yield result
        finally:
            stop.set()  # closed early or cancelled (a client that went away): run no more
        await wrapped  # re-raise a backend failure

    async def aexecute_batch(
        self,
        code: str,
        function_name: str | None,
        traces: Iterable[Any],
        *,
        timeout: int | None = None,
        batch_timeout_ms: int | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> BatchExecutionResult:
        started = time.perf_counter()
        trace_list = [*traces]
        results: dict[int, TraceResult] = {}
        async for result in self.aiter_batch(
            code,
            function_name,
            trace_list,
            timeout=timeout,
            batch_timeout_ms=batch_timeout_ms,
        ):
            results[result.index] = result
            if on_progress is not None:
                on_progress(len(results), len(trace_list), result)
        return BatchExecutionResult(
            results=tuple(results[i] for i in sorted(results)),
            total_time_ms=round((time.perf_counter() - started) * 1000, 3),
        )

    # -- lifecycle ----------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        return self._backend.health()

    def _check_open(self) -> None:
        if self._closed:
            from .errors import PoolClosedError

            raise PoolClosedError("this PythonRunner is closed")

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._backend.close()

    def __enter__(self) -> PythonRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> PythonRunner:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.close)


class MockBackend:
    """Runs code **in this process, with no isolation at all**, for users' unit tests.

    Results have the same types as the real backends and carry ``degraded=True``. Pass
    ``responder`` to return canned results instead of running anything:
    ``responder(code, trace_or_None) -> ExecutionResult | TraceResult``.
    """

    name = "mock"
    analyzes = False

    def __init__(self, responder: Callable[[str, Any], Any] | None = None) -> None:
        self._responder = responder

    def run_script(self, code: str, policy: Policy) -> Future[ExecutionResult]:
        future: Future[ExecutionResult] = Future()
        if self._responder is not None:
            future.set_result(self._responder(code, None))
        else:
            raw = _run_in_process(code, policy, function_name=None, data=None)
            future.set_result(script_result(raw, policy, degraded=True))
        return future

    def run_traces(
        self,
        code: str,
        function_name: str,
        items: Sequence[TraceItem],
        policy: Policy,
        *,
        deadline: float,
        on_result: Callable[[int, TraceResult], None],
        stop: threading.Event | None = None,
    ) -> Future[None]:
        future: Future[None] = Future()
        for item in items:
            if stop is not None and stop.is_set():
                return future
            data = loads_json(item.data_json)
            if self._responder is not None:
                result = replace(self._responder(code, data), index=item.index)
            else:
                raw = _run_in_process(code, policy, function_name=function_name, data=data)
                result = trace_result(raw, item, policy, degraded=True)
            on_result(item.index, result)
        future.set_result(None)
        return future

    def health(self) -> dict[str, Any]:
        return {"backend": "mock", "isolated": False}

    def close(self) -> None:
        return None


def _run_in_process(
    code: str, policy: Policy, *, function_name: str | None, data: Any
) -> dict[str, Any]:
    """Run ``code`` here, unconfined, and report it as the jailed child would (a raw result)."""
    started = time.perf_counter()
    out, err = io.StringIO(), io.StringIO()
    namespace: dict[str, Any] = {"__name__": "evaljail_eval" if function_name else "__main__"}
    raw: dict[str, Any]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            exec(compile(code, SOURCE_NAME, "exec"), namespace)  # noqa: S102 - mock, documented
            raw = {"status": "ok"}
            if function_name:
                fn = namespace.get(function_name)
                if not callable(fn):
                    raise NameError(f"eval function {function_name!r} is not defined")
                limit = policy.limits.output_bytes
                raw["value"] = describe_value(fn(data), text_limit=limit)
    except Exception as exc:
        raw = {
            "status": "error",
            "error_type": type(exc).__name__,
            "error": error_message(exc),
            "traceback": user_traceback(exc),
        }
    raw.update(
        stdout=out.getvalue(),
        stderr=err.getvalue(),
        elapsed_ms=round((time.perf_counter() - started) * 1000, 3),
    )
    return raw
