"""The executor HTTP service: ``create_app(settings)`` builds one FastAPI application.

Endpoints (docs/service.md is the reference; ``/docs`` serves the OpenAPI page):

- ``GET /health`` — ``{"status": "ok", ...}`` with the backend's own report, ``503`` when not
  ready;
- ``POST /execute`` — the iofold executor protocol: ``{code, timeout}`` ->
  ``{success, output, error, executionTimeMs, ...}``;
- ``POST /execute/batch`` — one eval over many traces; JSON, or NDJSON streamed as results
  finish with ``Accept: application/x-ndjson``;
- ``POST /check`` — static analysis only;
- ``GET /metrics`` — Prometheus text format;
- ``/sandboxes/...`` — named sandboxes, when that module is installed.

A user's code failing is ``200`` with ``success: false``; only bad requests are ``4xx`` and
only the service's own trouble is ``5xx`` (``503`` + ``Retry-After`` when the queue is full).
Nothing happens at import time: the application, its metrics registry and its runner belong to
one ``create_app`` call and its lifespan.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from .. import __version__
from ..errors import ConfigurationError, EvaljailError, QueueFullError, status_and_code
from ..runner import PythonRunner, TraceList
from ..settings import Settings
from ..types import ExecutionResult, Outcome, TraceItem, TraceResult, Violation
from .errors import (
    ApiError,
    clean_validation_errors,
    dumps,
    error_payload,
    install_error_handlers,
    request_id_of,
)
from .metrics import CONTENT_TYPE, ServiceMetrics
from .middleware import Cors, Gate
from .models import (
    BatchRequest,
    BatchResponse,
    CheckRequest,
    CheckResponse,
    ErrorResponse,
    ExecuteRequest,
    ExecuteResponse,
    HealthResponse,
)

__all__ = ["NDJSON", "check_bind_security", "create_app", "wait_until_warm"]

_log = logging.getLogger("evaljail.service")

NDJSON = "application/x-ndjson"
_M = TypeVar("_M", bound=BaseModel)
_T = TypeVar("_T")
#: Bodies up to this size are decoded and validated on the event loop (a thread hop costs more
#: than parsing them); larger ones in a thread, so that one big body does not stall every
#: other request.
_INLINE_BODY_BYTES = 64 * 1024
#: How many large bodies are decoded at once. One: decoding holds the GIL in long C calls
#: (json.loads of 8 MB: ~0.1 s), so two at once are no faster, and the event loop would wait
#: for both; and each body becomes many times its size in objects while it is decoded.
_LARGE_BODY_SLOTS = 1
#: HTTP status logged for a request whose client left before its answer (nobody receives it).
_CLIENT_LEFT = 499
_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in (
        (400, "invalid JSON"),
        (401, "missing or wrong token"),
        (413, "body or source too large"),
        (422, "invalid request"),
        (503, "not ready, or the queue is full (see Retry-After)"),
    )
}


def check_bind_security(settings: Settings) -> None:
    """Refuse to serve a non-loopback address without an API token (ConfigurationError)."""
    if not settings.is_loopback and not settings.api_token:
        raise ConfigurationError(
            f"refusing to listen on {settings.host}: binding a non-loopback address requires "
            "EVALJAIL_API_TOKEN (a bearer token of at least 16 characters)",
            details={"variable": "EVALJAIL_API_TOKEN"},
        )


def wait_until_warm(runner: PythonRunner, *, timeout_s: float = 60.0) -> bool:
    """Block until the backend's pool reports ``size >= min_size`` (True), or ``timeout_s``
    passes (False). Backends without a pool are warm at once."""
    end = time.monotonic() + timeout_s
    while True:
        pool = runner.health().get("pool")
        if not isinstance(pool, Mapping):
            return True
        size, minimum = pool.get("size"), pool.get("min_size")
        if not isinstance(size, int) or not isinstance(minimum, int) or size >= minimum:
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(0.02)


class _GcPause:
    """Pauses the cyclic garbage collector while large bodies are decoded.

    Decoding a body of many small containers (an 8 MB batch can hold millions of lists)
    triggers collections that each walk every container alive: ~90 % of the time (6.4 MB of
    small lists: 0.85 s, 0.09 s without them), spent holding the GIL, so that even a decoding
    thread stalls the event loop. Decoded JSON has no reference cycles: pausing loses nothing.
    Counted, so that overlapping decodes restore the collector only once, and only if it was on.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._restore = False

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            if self._users == 0:
                self._restore = gc.isenabled()
                gc.disable()
            self._users += 1
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                if self._users == 0 and self._restore:
                    gc.enable()


@dataclass(slots=True)
class _State:
    """Everything one application instance owns."""

    settings: Settings
    metrics: ServiceMetrics
    runner: PythonRunner | None = None
    owns_runner: bool = False
    sandboxes: Any = None
    owns_sandboxes: bool = False
    phase: str = "starting"  #: starting -> ready -> stopping (or failed)
    reason: str = "the backend is starting"
    in_flight: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    started_at: float = field(default_factory=time.monotonic)
    large_bodies: asyncio.Semaphore = field(
        default_factory=lambda: asyncio.Semaphore(_LARGE_BODY_SLOTS)
    )
    gc_pause: _GcPause = field(default_factory=_GcPause)

    def enter(self) -> None:
        self.in_flight += 1
        self.metrics.in_flight.set(self.in_flight)
        self.idle.clear()

    def leave(self) -> None:
        self.in_flight -= 1
        self.metrics.in_flight.set(self.in_flight)
        if self.in_flight <= 0:
            self.idle.set()

    def ready_runner(self) -> PythonRunner:
        if self.phase != "ready" or self.runner is None:
            raise ApiError(503, "not_ready", self.reason, headers={"Retry-After": "1"})
        return self.runner

    def backend_health(self) -> Mapping[str, Any] | None:
        """For the metrics collector: the backend's report, None when not serving."""
        if self.phase != "ready" or self.runner is None:
            return None
        return self.runner.health()

    def sandbox_usage(self) -> Mapping[str, float] | None:
        usage = getattr(self.sandboxes, "usage", None)
        return usage() if callable(usage) else None


# -- request and response helpers --------------------------------------------------------------


async def _decoded(state: _State, body: bytes, decode: Callable[[bytes], _T]) -> _T:
    """``decode(body)``: inline for a small body; in a thread for a large one, at most
    ``_LARGE_BODY_SLOTS`` at a time and with the garbage collector paused."""
    if len(body) <= _INLINE_BODY_BYTES:
        return decode(body)

    def run() -> _T:
        with state.gc_pause():
            return decode(body)

    async with state.large_bodies:
        return await asyncio.to_thread(run)


async def _parse(request: Request, model: type[_M], state: _State) -> _M:
    """The body as ``model``: 400 ``invalid_json`` or 422 ``invalid_request`` otherwise.

    The content type is not required to be JSON (``curl -d`` sends a form type)."""
    body = await request.body()
    return await _decoded(state, body, lambda b: _decode(b, model))


def _decode(body: bytes, model: type[_M]) -> _M:
    if not body.strip():
        raise ApiError(400, "invalid_json", "the body is empty: send a JSON object")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(
            400, "invalid_json", f"the body is not UTF-8 (invalid byte at offset {exc.start})"
        ) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ApiError(
            400,
            "invalid_json",
            f"invalid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})",
            details={"line": exc.lineno, "column": exc.colno},
        ) from None
    except RecursionError:
        raise ApiError(400, "invalid_json", "invalid JSON: nested too deeply") from None
    except ValueError as exc:  # a number of more than 4 300 digits (CPython's int limit)
        raise ApiError(400, "invalid_json", f"invalid JSON: {str(exc)[:200]}") from None
    return _validated(model, data)


def _validated(model: type[_M], data: Any) -> _M:
    """``data`` as ``model``, or 422 ``invalid_request`` naming the first bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = clean_validation_errors(exc.errors(include_input=False, include_url=False))
        first = errors[0] if errors else {"loc": [], "msg": "invalid"}
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise ApiError(
            422,
            "invalid_request",
            f"{where}: {first['msg']}",
            details={"errors": errors},
        ) from None
    except RecursionError:
        raise ApiError(422, "invalid_request", "the request is nested too deeply") from None


class _RawTrace(msgspec.Struct, forbid_unknown_fields=True):
    trace_id: str | int
    data: msgspec.Raw


class _RawBatch(msgspec.Struct, forbid_unknown_fields=True):
    code: str
    traces: list[_RawTrace]
    function_name: str | None = None
    timeout: int | None = None
    batch_timeout: int | None = None


_RAW_BATCH = msgspec.json.Decoder(_RawBatch)


async def _parse_batch(request: Request, state: _State) -> tuple[BatchRequest, list[TraceItem]]:
    """A batch request, with each trace's data as JSON text ready for the jail."""
    body = await request.body()
    return await _decoded(state, body, _decode_batch)


def _decode_batch(body: bytes) -> tuple[BatchRequest, list[TraceItem]]:
    """A batch request, with each trace's data kept as the JSON text the client sent.

    The request comes back without its traces (the items are what the runner needs): the
    decoded traces are freed here, in the decoding thread, not by the event loop afterwards.

    Traces are most of a batch's bytes and the service never looks inside them: decoding them
    here only to encode them again for the jail cost ~0.35 s per 40 MB. msgspec checks the
    JSON and hands back each ``data`` as raw bytes; the envelope (everything but the data) is
    then validated by the same pydantic model as always. Anything the fast path does not
    accept, valid or not, takes the general path, which gives the same errors as before, and
    encodes each trace's data here (in the decoding thread, for a large body) rather than on
    the event loop while the batch is submitted.
    """
    try:
        raw = _RAW_BATCH.decode(body)
        items = [
            TraceItem(index=i, trace_id=str(t.trace_id), data_json=bytes(t.data).decode("utf-8"))
            for i, t in enumerate(raw.traces)
        ]
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError):
        req = _decode(body, BatchRequest)
        traces = TraceList({"trace_id": t.trace_id, "data": t.data} for t in req.traces)
        return req.model_copy(update={"traces": []}), traces[0 : len(traces)]
    except RecursionError:  # msgspec nests as deep as Python's recursion limit, like json
        raise ApiError(400, "invalid_json", "invalid JSON: nested too deeply") from None
    envelope: dict[str, Any] = {
        "code": raw.code,
        "function_name": raw.function_name,
        "traces": [{"trace_id": t.trace_id, "data": None} for t in raw.traces],
    }
    for name in ("timeout", "batch_timeout"):
        if getattr(raw, name) is not None:
            envelope[name] = getattr(raw, name)
    return _validated(BatchRequest, envelope).model_copy(update={"traces": []}), items


def _json(payload: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(
        dumps(payload), status_code=status, media_type="application/json", headers=headers
    )


def _violations(violations: tuple[Violation, ...]) -> list[dict[str, Any]]:
    return [v.to_dict() for v in violations]


def _execute_payload(result: ExecutionResult, timeout_ms: int) -> dict[str, Any]:
    """The seed's four fields first, then everything a remote client needs to rebuild the
    result."""
    return {
        "success": result.success,
        "output": result.output.strip(),
        "error": result.error,
        "executionTimeMs": result.execution_time_ms,
        "outcome": result.outcome.value,
        "stdout": result.stdout,
        "stderr": result.stderr,
        "error_type": result.error_type,
        "traceback": result.traceback,
        "violations": _violations(result.violations),
        "cpu_ms": result.cpu_ms,
        "memory_peak_kb": result.memory_peak_kb,
        "timeout_ms": timeout_ms,
        "degraded": result.degraded,
    }


def _trace_payload(result: TraceResult) -> dict[str, Any]:
    return result.to_dict()


# -- the application ---------------------------------------------------------------------------


def _optional_sandboxes(
    settings: Settings, namespace: Any
) -> tuple[Any, bool, Callable[[Any], Any] | None]:
    """(namespace, whether we built it, router builder) when the named-sandbox modules exist."""
    try:
        routes = importlib.import_module("evaljail.service.sandboxes")
    except ModuleNotFoundError as exc:
        if exc.name not in ("evaljail.service.sandboxes", "evaljail.sandboxes"):
            raise
        return None, False, None
    build_router: Callable[[Any], Any] | None = getattr(routes, "build_sandbox_router", None)
    if build_router is None:
        return None, False, None
    if namespace is not None:
        return namespace, False, build_router
    core = importlib.import_module("evaljail.sandboxes")
    cls = getattr(core, "SandboxNamespace", None)
    if cls is None:
        _log.warning("named sandboxes disabled: evaljail.sandboxes has no SandboxNamespace")
        return None, False, None
    factory = getattr(cls, "from_settings", None)
    built = factory(settings) if callable(factory) else cls(settings=settings)
    return built, True, build_router


def _cap_timeout(requested: int | None, runner: PythonRunner, settings: Settings) -> int:
    wanted = requested if requested is not None else runner.policy.limits.timeout_ms
    return max(1, min(wanted, settings.max_timeout_ms))


def _timeout_arg(timeout_ms: int, runner: PythonRunner) -> int | None:
    """None when ``timeout_ms`` is the runner's default (saves deriving a policy per call)."""
    return None if timeout_ms == runner.policy.limits.timeout_ms else timeout_ms


def create_app(
    settings: Settings,
    *,
    runner: PythonRunner | None = None,
    sandbox_namespace: Any = None,
) -> FastAPI:
    """Build the service.

    Without ``runner`` the lifespan starts a local jailed pool (``backend="local"``, so that a
    ``PYTHON_EXECUTOR_URL`` pointing at this very service cannot make it call itself) and
    closes it at shutdown; a given runner is used as is and left to its owner to close.
    Shutdown first stops reporting ready, then waits for requests in flight.
    """
    state = _State(settings=settings, metrics=ServiceMetrics(version=__version__), runner=runner)
    state.metrics.set_sources(health=state.backend_health, usage=state.sandbox_usage)
    namespace, owns_namespace, build_router = _optional_sandboxes(settings, sandbox_namespace)
    state.sandboxes = namespace
    state.owns_sandboxes = owns_namespace

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        state.idle = asyncio.Event()
        state.idle.set()
        if state.runner is None:
            try:
                state.runner = await asyncio.to_thread(
                    PythonRunner, settings=settings, backend="local"
                )
            except EvaljailError as exc:
                state.phase, state.reason = "failed", f"the backend failed to start: {exc}"
                _log.error("backend failed to start", extra={"error_type": type(exc).__name__})
                raise
            state.owns_runner = True
            await asyncio.to_thread(wait_until_warm, state.runner)
        state.phase, state.reason = "ready", ""
        _log.info("ready", extra={"backend": state.runner.backend.name})
        try:
            yield
        finally:
            state.phase, state.reason = "stopping", "the service is shutting down"
            grace_s = settings.max_timeout_ms / 1000 + 5
            try:
                await asyncio.wait_for(state.idle.wait(), timeout=grace_s)
            except TimeoutError:
                _log.warning("shutdown: requests still in flight", extra={"n": state.in_flight})
            if state.owns_runner and state.runner is not None:
                await asyncio.to_thread(state.runner.close)
            close = getattr(state.sandboxes, "close", None)
            if state.owns_sandboxes and callable(close):
                await asyncio.to_thread(close)
            _log.info("stopped")

    app = FastAPI(
        title="evaljail executor",
        version=__version__,
        description="Runs untrusted Python eval functions against LLM-agent traces in a jail. "
        "Compatible with the iofold Python executor protocol.",
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
        redirect_slashes=False,
    )
    app.state.evaljail = state
    install_error_handlers(app)

    @app.get(
        "/health",
        response_model=HealthResponse,
        responses={503: {"model": ErrorResponse, "description": "not ready"}},
        summary="Liveness and readiness, with the backend's report",
    )
    async def health(request: Request) -> Response:
        if state.phase != "ready" or state.runner is None:
            return _not_ready(request, state.reason)
        runner = state.runner
        try:
            info = await asyncio.to_thread(runner.health)
        except Exception as exc:
            _log.warning("backend health check failed", exc_info=exc)
            return _not_ready(request, f"the backend health check failed ({type(exc).__name__})")
        reported = info.get("status")
        if info.get("ready") is False or (
            isinstance(reported, str) and reported not in ("ok", "ready", "healthy")
        ):
            reason = info.get("reason") or f"the backend reports {reported or 'not ready'}"
            return _not_ready(request, str(reason))
        payload: dict[str, Any] = {"status": "ok", "version": __version__}
        if not request.scope.get("state", {}).get("authenticated", True):
            return _json(payload)
        payload |= {
            "backend": runner.backend.name,
            "uptime_s": round(time.monotonic() - state.started_at, 3),
            "in_flight": max(state.in_flight - 1, 0),
            "limits": {
                "timeout_ms": runner.policy.limits.timeout_ms,
                "max_timeout_ms": settings.max_timeout_ms,
                "memory_bytes": runner.policy.limits.memory_bytes,
                "max_body_bytes": settings.max_body_bytes,
            },
            "auth": settings.api_token is not None,
            "sandboxes": state.sandboxes is not None,
        }
        for key, value in info.items():
            if key != "status":
                payload.setdefault(key, value)
        return _json(payload)

    def _not_ready(request: Request, reason: str) -> Response:
        payload = {"status": "unavailable", "reason": reason}
        payload |= error_payload("not_ready", reason, request_id_of(request))
        return _json(payload, status=503, headers={"Retry-After": "1"})

    @app.post(
        "/execute",
        response_model=ExecuteResponse,
        responses=_ERRORS,
        openapi_extra=_body(ExecuteRequest),
        summary="Run a script (iofold executor protocol)",
    )
    async def execute(request: Request) -> Response:
        req = await _parse(request, ExecuteRequest, state)
        runner = state.ready_runner()
        timeout_ms = _cap_timeout(req.timeout, runner, settings)
        try:
            result = await _while_connected(
                request, runner.aexecute(req.code, timeout=_timeout_arg(timeout_ms, runner))
            )
        except QueueFullError:
            state.metrics.rejected_busy.inc()
            raise
        except _ClientLeft:
            rid = request_id_of(request)
            _log.info("client left; execution stopped", extra={"request_id": rid})
            return Response(status_code=_CLIENT_LEFT)
        state.metrics.observe_execution(result)
        return _json(_execute_payload(result, timeout_ms))

    @app.post(
        "/execute/batch",
        response_model=BatchResponse,
        responses=_ERRORS
        | {200: {"content": {NDJSON: {}}, "description": "JSON, or NDJSON when accepted"}},
        openapi_extra=_body(BatchRequest),
        summary="Run an eval over many traces (streamed with Accept: application/x-ndjson)",
    )
    async def execute_batch(request: Request) -> Response:
        req, items = await _parse_batch(request, state)
        runner = state.ready_runner()
        timeout_ms = _cap_timeout(req.timeout, runner, settings)
        budget_cap = max(settings.max_timeout_ms * max(len(items), 1), 60_000)
        batch_ms = min(req.batch_timeout, budget_cap) if req.batch_timeout else None
        started = time.perf_counter()
        results = runner.aiter_batch(
            req.code,
            req.function_name,
            items,
            timeout=_timeout_arg(timeout_ms, runner),
            batch_timeout_ms=batch_ms,
        )
        try:
            # errors before any result are HTTP errors; a client gone meanwhile stops it all
            first = await _while_connected(request, anext(results, None))
        except QueueFullError:
            state.metrics.rejected_busy.inc()
            raise
        except _ClientLeft:
            await _aclose(results)
            _log.info("client left; batch stopped", extra={"request_id": request_id_of(request)})
            return Response(status_code=_CLIENT_LEFT)
        if NDJSON in request.headers.get("accept", ""):
            return StreamingResponse(
                _stream(state, runner, req.code, first, results, len(items), started, request),
                media_type=NDJSON,
                headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
            )
        collected: dict[int, TraceResult] = {}

        async def collect() -> None:
            try:
                if first is not None:
                    collected[first.index] = first
                    state.metrics.observe_execution(first)
                async for result in results:
                    collected[result.index] = result
                    state.metrics.observe_execution(result)
            finally:
                await _aclose(results)

        try:
            await _while_connected(request, collect())
        except _ClientLeft:  # nobody reads the answer: the batch was stopped
            _log.info("client left; batch stopped", extra={"request_id": request_id_of(request)})
            return Response(status_code=_CLIENT_LEFT)
        ordered = [collected[i] for i in sorted(collected)]
        violations = await _rejection_findings(runner, req.code, ordered)
        counts: dict[str, int] = {}
        for r in ordered:
            counts[r.outcome.value] = counts.get(r.outcome.value, 0) + 1
        return _json(
            {
                "results": [_trace_payload(r) for r in ordered],
                "total_time_ms": round((time.perf_counter() - started) * 1000, 3),
                "counts": counts,
                "violations": violations,
            }
        )

    @app.post(
        "/check",
        response_model=CheckResponse,
        responses=_ERRORS,
        openapi_extra=_body(CheckRequest),
        summary="Static analysis only; nothing runs",
    )
    async def check(request: Request) -> Response:
        req = await _parse(request, CheckRequest, state)
        runner = state.ready_runner()
        violations = await asyncio.to_thread(runner.check, req.code)
        return _json({"ok": not violations, "violations": _violations(violations)})

    @app.get(
        "/metrics",
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus text"}},
        summary="Prometheus metrics",
    )
    async def metrics() -> Response:
        body = await asyncio.to_thread(state.metrics.render)
        return Response(body, media_type=CONTENT_TYPE)

    # Probes that use HEAD get the GET answer's status and headers (uvicorn sends no body).
    app.add_api_route("/health", health, methods=["HEAD"], include_in_schema=False)
    app.add_api_route("/metrics", metrics, methods=["HEAD"], include_in_schema=False)

    if build_router is not None and namespace is not None:
        app.include_router(build_router(namespace))

    _install_openapi(app, (ExecuteRequest, BatchRequest, CheckRequest), settings)
    app.add_middleware(
        Gate,
        state=state,
        token=settings.api_token,
        max_body_bytes=settings.max_body_bytes,
        read_timeout_s=settings.read_timeout_ms / 1000,
    )
    if settings.cors_origins:
        app.add_middleware(
            Cors,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["authorization", "content-type", "accept", "x-request-id"],
            expose_headers=["x-request-id", "retry-after"],
        )
    return app


class _ClientLeft(Exception):
    """The client disconnected before its answer was ready."""


async def _while_connected(request: Request, work: Awaitable[_T]) -> _T:
    """Await ``work``; cancel it and raise _ClientLeft if the client disconnects first.

    A client that gave up (a timeout, a retry) would otherwise keep the pool busy with work
    nobody will read: cancelling an execution's future takes it out of the queue (or stops its
    worker), and closing a batch's iterator stops its traces.
    """
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        gone.cancel()
    if task.cancelled():
        raise _ClientLeft
    return task.result()  # or re-raise what the work raised


async def _disconnected(request: Request) -> None:
    """Returns when the client has gone (the body was read already: nothing else can come)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _aclose(iterator: AsyncIterator[Any]) -> None:
    """Close an async generator early (stops waiting on the backend for it)."""
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        await aclose()


async def _rejection_findings(
    runner: PythonRunner, code: str, results: list[TraceResult]
) -> list[dict[str, Any]]:
    """Static-analysis findings for a batch that was rejected (empty otherwise)."""
    if not any(r.outcome is Outcome.REJECTED for r in results):
        return []
    return _violations(await asyncio.to_thread(runner.check, code))


async def _stream(
    state: _State,
    runner: PythonRunner,
    code: str,
    first: TraceResult | None,
    results: AsyncIterator[TraceResult],
    total: int,
    started: float,
    request: Request,
) -> AsyncIterator[bytes]:
    """NDJSON lines: each result as it finishes, then a summary (or an error) line."""
    counts: dict[str, int] = {}
    rejected = False
    try:

        def line(result: TraceResult) -> bytes:
            nonlocal rejected
            state.metrics.observe_execution(result)
            counts[result.outcome.value] = counts.get(result.outcome.value, 0) + 1
            rejected = rejected or result.outcome is Outcome.REJECTED
            return dumps({"type": "result", **_trace_payload(result)}) + b"\n"

        if first is not None:
            yield line(first)
        async for result in results:
            yield line(result)
        violations = _violations(await asyncio.to_thread(runner.check, code)) if rejected else []
        yield (
            dumps(
                {
                    "type": "summary",
                    "total": total,
                    "total_time_ms": round((time.perf_counter() - started) * 1000, 3),
                    "counts": counts,
                    "violations": violations,
                }
            )
            + b"\n"
        )
    except EvaljailError as exc:
        _status, code_ = status_and_code(exc)
        _log.warning(
            "batch stream failed",
            extra={"request_id": request_id_of(request), "error_type": type(exc).__name__},
        )
        payload = error_payload(code_, exc.message, request_id_of(request), exc.details)
        yield dumps({"type": "error", **payload}) + b"\n"
    except Exception as exc:
        _log.error(
            "batch stream failed",
            exc_info=exc,
            extra={"request_id": request_id_of(request), "error_type": type(exc).__name__},
        )
        payload = error_payload("internal_error", "internal error", request_id_of(request))
        yield dumps({"type": "error", **payload}) + b"\n"
    finally:
        await _aclose(results)


def _body(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI ``requestBody`` for a handler that parses its body itself."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
            },
        }
    }


def _install_openapi(
    app: FastAPI, request_models: tuple[type[BaseModel], ...], settings: Settings
) -> None:
    """Add the request models (parsed by hand, so FastAPI does not see them) to the schema."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        components = schema.setdefault("components", {})
        schemas = components.setdefault("schemas", {})
        for model in request_models:
            js = model.model_json_schema(ref_template="#/components/schemas/{model}")
            for name, definition in js.pop("$defs", {}).items():
                schemas.setdefault(name, definition)
            schemas[model.__name__] = js
        if settings.api_token:
            components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
            schema["security"] = [{"bearer": []}]
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
