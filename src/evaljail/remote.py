"""The remote backend: ``PythonRunner`` talking to an evaljail executor service over HTTP.

Results are the same frozen dataclasses the local pool returns, rebuilt from the service's
JSON; the service's errors come back as the same exception classes (``queue_full`` raises
:class:`~evaljail.errors.QueueFullError`, and so on). Batches use the streamed NDJSON endpoint,
so ``on_result`` fires as each trace finishes on the server; large batches are sent in chunks
that fit the server's body limit.

The server applies its own policy (allowed imports, memory); the client chooses the time limit.

>>> runner = PythonRunner(executor_url="http://127.0.0.1:9999")   # doctest: +SKIP
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from ._version import __version__
from .errors import (
    ERROR_TABLE,
    EvaljailError,
    PoolClosedError,
    RemoteError,
    RemoteUnavailableError,
)
from .policy import Policy
from .types import ExecutionResult, Outcome, TraceResult, Violation

if TYPE_CHECKING:
    from .types import TraceItem

__all__ = ["RemoteBackend", "execution_result_from_json", "trace_result_from_json"]

_T = TypeVar("_T")

NDJSON = "application/x-ndjson"
#: How to start a service when nothing listens (the README's main command is ``scripts/serve``).
START_HINT = "start one with `evaljail serve` (or `scripts/serve` in an evaljail checkout)"
#: stable wire code -> exception class, the inverse of ERROR_TABLE.
_BY_CODE: dict[str, type[EvaljailError]] = {code: cls for cls, (_s, code) in ERROR_TABLE.items()}


# -- JSON -> results ---------------------------------------------------------------------------


def _protocol_error(what: str) -> RemoteError:
    return RemoteError(f"the executor sent an unexpected answer: {what}")


def _str(data: Mapping[str, Any], key: str, default: str = "") -> str:
    value = data.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise _protocol_error(f"{key!r} is {type(value).__name__}, not a string")
    return value


def _opt_str(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise _protocol_error(f"{key!r} is {type(value).__name__}, not a string")
    return value


def _num(data: Mapping[str, Any], key: str) -> float:
    value = data.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _protocol_error(f"{key!r} is not a number")
    return float(value)


def _bool(data: Mapping[str, Any], key: str, default: bool = False) -> bool:
    value = data.get(key, default)
    if not isinstance(value, bool):
        raise _protocol_error(f"{key!r} is not a boolean")
    return value


def _outcome(data: Mapping[str, Any], fallback: Outcome) -> Outcome:
    raw = data.get("outcome")
    if raw is None:  # an executor that predates outcomes (the seed's)
        return fallback
    try:
        return Outcome(raw)
    except ValueError:
        raise _protocol_error(f"unknown outcome {raw!r} (is the server newer?)") from None


def _violations(data: Mapping[str, Any]) -> tuple[Violation, ...]:
    raw = data.get("violations") or []
    if not isinstance(raw, list):
        raise _protocol_error("'violations' is not a list")
    try:
        return tuple(
            Violation(
                rule_id=str(v["rule_id"]),
                line=int(v["line"]),
                col=int(v["col"]),
                message=str(v["message"]),
                hint=str(v.get("hint", "")),
            )
            for v in raw
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise _protocol_error(f"malformed violation ({exc})") from exc


def execution_result_from_json(data: Any) -> ExecutionResult:
    """Rebuild an :class:`ExecutionResult` from a ``POST /execute`` answer."""
    if not isinstance(data, Mapping):
        raise _protocol_error("the /execute answer is not a JSON object")
    success = _bool(data, "success")
    stdout = _str(data, "stdout") if "stdout" in data else _str(data, "output")
    return ExecutionResult(
        success=success,
        outcome=_outcome(data, Outcome.OK if success else Outcome.ERROR),
        output=stdout,
        error=_opt_str(data, "error"),
        error_type=_opt_str(data, "error_type"),
        traceback=_opt_str(data, "traceback"),
        stdout=stdout,
        stderr=_str(data, "stderr"),
        execution_time_ms=_num(data, "executionTimeMs"),
        cpu_ms=_num(data, "cpu_ms"),
        memory_peak_kb=int(_num(data, "memory_peak_kb")),
        violations=_violations(data),
        degraded=_bool(data, "degraded"),
    )


def trace_result_from_json(data: Any, *, index: int, trace_id: str) -> TraceResult:
    """Rebuild a :class:`TraceResult` from one result of ``POST /execute/batch``."""
    if not isinstance(data, Mapping):
        raise _protocol_error("a batch result is not a JSON object")
    success = _bool(data, "success")
    passed = data.get("passed")
    if passed is not None and not isinstance(passed, bool):
        raise _protocol_error("'passed' is not a boolean")
    fallback = Outcome.ERROR
    if success and passed is not None:
        fallback = Outcome.PASSED if passed else Outcome.FAILED
    return TraceResult(
        trace_id=trace_id,
        index=index,
        success=success,
        outcome=_outcome(data, fallback),
        passed=passed,
        reason=_opt_str(data, "reason"),
        error=_opt_str(data, "error"),
        error_type=_opt_str(data, "error_type"),
        traceback=_opt_str(data, "traceback"),
        spec_violation=_opt_str(data, "spec_violation"),
        stdout=_str(data, "stdout"),
        stderr=_str(data, "stderr"),
        execution_time_ms=_num(data, "execution_time_ms"),
        cpu_ms=_num(data, "cpu_ms"),
        memory_peak_kb=int(_num(data, "memory_peak_kb")),
        degraded=_bool(data, "degraded"),
    )


# -- the backend -------------------------------------------------------------------------------


class RemoteBackend:
    """A :class:`~evaljail.runner.Backend` that runs code on an evaljail executor service.

    One ``httpx.Client`` (keep-alive connection pool) shared by a small thread pool; every
    method is thread-safe. ``token`` is sent as ``Authorization: Bearer``.
    """

    name = "remote"
    analyzes = True  #: the service applies static analysis itself

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        max_connections: int = 32,
        chunk_bytes: int = 4 * 1024 * 1024,
        connect_timeout_s: float = 5.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise RemoteError(f"executor URL must start with http:// or https://, got {url!r}")
        self.url = url.rstrip("/")
        headers = {"User-Agent": f"evaljail/{__version__}", "Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._client = httpx.Client(
            base_url=self.url,
            headers=headers,
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            timeout=httpx.Timeout(connect=connect_timeout_s, read=60.0, write=60.0, pool=None),
            transport=transport,
        )
        self._connect_timeout_s = connect_timeout_s
        self._chunk_bytes = max(chunk_bytes, 1024)
        self._threads = ThreadPoolExecutor(
            max_workers=max_connections, thread_name_prefix="evaljail-remote"
        )
        self._lock = threading.Lock()
        self._closed = False

    # -- plumbing -----------------------------------------------------------------------------

    def _submit(self, fn: Callable[..., _T], *args: Any) -> Future[_T]:
        with self._lock:
            if self._closed:
                raise PoolClosedError("this remote backend is closed")
            return self._threads.submit(fn, *args)

    def _timeout(self, read_s: float) -> httpx.Timeout:
        return httpx.Timeout(connect=self._connect_timeout_s, read=read_s, write=60.0, pool=None)

    def _transport_error(self, exc: httpx.TransportError) -> EvaljailError:
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            return RemoteUnavailableError(
                f"no evaljail executor is listening at {self.url}: {START_HINT}, or unset "
                "PYTHON_EXECUTOR_URL to run code in the local jail",
                details={"url": self.url},
            )
        return RemoteError(
            f"the executor at {self.url} failed to answer: {type(exc).__name__}: {exc}",
            details={"url": self.url},
        )

    def _http_error(self, status: int, body: bytes) -> EvaljailError:
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        return self._error_from_payload(payload, status)

    def _error_from_payload(self, payload: Any, status: int) -> EvaljailError:
        error = payload.get("error") if isinstance(payload, Mapping) else None
        if not isinstance(error, Mapping):
            return RemoteError(
                f"the executor at {self.url} answered HTTP {status}", details={"status": status}
            )
        code = str(error.get("code", ""))
        message = str(error.get("message", "")) or f"HTTP {status}"
        details = dict(error.get("details") or {})
        details |= {"status": status, "code": code, "request_id": error.get("request_id")}
        details["url"] = self.url
        if code == "unauthorized":
            return RemoteError(
                f"the executor at {self.url} refused the API token ({message}); set "
                "EVALJAIL_API_TOKEN to the server's token",
                details=details,
            )
        if code == "not_ready":
            return RemoteUnavailableError(
                f"the executor at {self.url} is not ready: {message}", details=details
            )
        cls = _BY_CODE.get(code, RemoteError)
        return cls(message, details=details)

    def _post_json(self, path: str, body: bytes, read_s: float) -> Any:
        try:
            response = self._client.post(
                path,
                content=body,
                headers={"Content-Type": "application/json"},
                timeout=self._timeout(read_s),
            )
        except httpx.TransportError as exc:
            raise self._transport_error(exc) from exc
        if response.status_code >= 400:
            raise self._http_error(response.status_code, response.content)
        try:
            return response.json()
        except ValueError as exc:
            raise _protocol_error("the body is not JSON") from exc

    # -- Backend protocol ---------------------------------------------------------------------

    def run_script(self, code: str, policy: Policy) -> Future[ExecutionResult]:
        return self._submit(self._execute, code, policy.limits.timeout_ms)

    def _execute(self, code: str, timeout_ms: int) -> ExecutionResult:
        body = json.dumps({"code": code, "timeout": timeout_ms}).encode()
        data = self._post_json("/execute", body, timeout_ms / 1000 + 60)
        return execution_result_from_json(data)

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
        timeout_ms = policy.limits.timeout_ms
        args = (code, function_name, list(items), timeout_ms, deadline, on_result, stop)
        return self._submit(self._batch, *args)

    def _chunks(self, code: str, items: list[TraceItem]) -> Iterator[list[TraceItem]]:
        """Consecutive slices of ``items`` whose request bodies stay under the chunk size."""
        budget = self._chunk_bytes - len(code.encode()) - 512
        chunk: list[TraceItem] = []
        size = 0
        for item in items:
            cost = len(item.data_json) + len(item.trace_id) + 32
            if chunk and (size + cost > budget or len(chunk) >= 10_000):
                yield chunk
                chunk, size = [], 0
            chunk.append(item)
            size += cost
        if chunk:
            yield chunk

    def _batch(
        self,
        code: str,
        function_name: str,
        items: list[TraceItem],
        timeout_ms: int,
        deadline: float,
        on_result: Callable[[int, TraceResult], None],
        stop: threading.Event | None,
    ) -> None:
        for chunk in self._chunks(code, items):
            if stop is not None and stop.is_set():
                return
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            if remaining_ms <= 0:
                for item in chunk:
                    on_result(item.index, _budget_exhausted(item))
                continue
            self._stream_chunk(
                code, function_name, chunk, timeout_ms, remaining_ms, on_result, stop
            )

    def _stream_chunk(
        self,
        code: str,
        function_name: str,
        chunk: list[TraceItem],
        timeout_ms: int,
        budget_ms: int,
        on_result: Callable[[int, TraceResult], None],
        stop: threading.Event | None,
    ) -> None:
        head = json.dumps(
            {
                "code": code,
                "function_name": function_name,
                "timeout": timeout_ms,
                "batch_timeout": budget_ms,
            }
        )
        traces = ",".join(
            f'{{"trace_id":{json.dumps(i.trace_id)},"data":{i.data_json}}}' for i in chunk
        )
        body = f'{head[:-1]},"traces":[{traces}]}}'.encode()
        seen: set[int] = set()
        read_s = (budget_ms + timeout_ms) / 1000 + 60
        try:
            with self._client.stream(
                "POST",
                "/execute/batch",
                content=body,
                headers={"Content-Type": "application/json", "Accept": NDJSON},
                timeout=self._timeout(read_s),
            ) as response:
                if response.status_code >= 400:
                    raise self._http_error(response.status_code, response.read())
                if not response.headers.get("content-type", "").startswith(NDJSON):
                    self._whole_batch(json.loads(response.read()), chunk, seen, on_result)
                else:
                    for line in response.iter_lines():
                        if stop is not None and stop.is_set():
                            return  # leaving closes the stream: the service stops the batch
                        if line.strip():
                            self._line(json.loads(line), chunk, seen, on_result, response)
        except httpx.TransportError as exc:
            raise self._transport_error(exc) from exc
        except ValueError as exc:  # JSONDecodeError
            raise _protocol_error(f"invalid JSON in the batch answer ({exc})") from exc
        if len(seen) != len(chunk):
            raise RemoteError(
                f"the executor at {self.url} ended the batch with {len(chunk) - len(seen)} "
                "traces unanswered",
                details={"url": self.url},
            )

    def _line(
        self,
        message: Any,
        chunk: list[TraceItem],
        seen: set[int],
        on_result: Callable[[int, TraceResult], None],
        response: httpx.Response,
    ) -> None:
        kind = message.get("type") if isinstance(message, Mapping) else None
        if kind == "result":
            self._emit(message, chunk, seen, on_result)
        elif kind == "error":
            raise self._error_from_payload(message, response.status_code)
        elif kind != "summary":
            raise _protocol_error(f"unknown stream line type {kind!r}")

    def _whole_batch(
        self,
        payload: Any,
        chunk: list[TraceItem],
        seen: set[int],
        on_result: Callable[[int, TraceResult], None],
    ) -> None:
        """A server that answered plain JSON instead of streaming."""
        results = payload.get("results") if isinstance(payload, Mapping) else None
        if not isinstance(results, list):
            raise _protocol_error("the batch answer has no 'results' list")
        for position, raw in enumerate(results):
            data = {"index": position, **raw} if isinstance(raw, Mapping) else raw
            self._emit(data, chunk, seen, on_result)

    @staticmethod
    def _emit(
        data: Any,
        chunk: list[TraceItem],
        seen: set[int],
        on_result: Callable[[int, TraceResult], None],
    ) -> None:
        index = data.get("index") if isinstance(data, Mapping) else None
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(chunk):
            raise _protocol_error(f"result index {index!r} is out of range")
        if index in seen:
            raise _protocol_error(f"two results for trace #{index}")
        seen.add(index)
        item = chunk[index]
        on_result(
            item.index, trace_result_from_json(data, index=item.index, trace_id=item.trace_id)
        )

    def health(self) -> dict[str, Any]:
        """The server's ``/health`` report, under ``server``; raises RemoteUnavailableError
        when nothing listens."""
        try:
            response = self._client.get("/health", timeout=self._timeout(10.0))
        except httpx.TransportError as exc:
            raise self._transport_error(exc) from exc
        try:
            server = response.json()
        except ValueError:
            server = {}
        if not isinstance(server, dict):
            server = {}
        status = server.get("status", "ok" if response.status_code == 200 else "unavailable")
        report: dict[str, Any] = {"backend": "remote", "url": self.url, "status": status}
        if response.status_code != 200:
            report["ready"] = False
            report["reason"] = server.get("reason") or f"HTTP {response.status_code}"
        report["server"] = server
        return report

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._threads.shutdown(wait=True, cancel_futures=True)
        self._client.close()


def _budget_exhausted(item: TraceItem) -> TraceResult:
    return TraceResult(
        trace_id=item.trace_id,
        index=item.index,
        success=False,
        outcome=Outcome.TIMEOUT,
        error="the batch time budget ran out before this trace started",
        error_type="TimeoutError",
    )
