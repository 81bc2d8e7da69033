"""The wire format of the executor service, as pydantic models.

Requests are strict: unknown fields are rejected (``extra="forbid"``), types are not coerced
(``"5000"`` is not a timeout, ``1`` is not code). Responses are documented here for the OpenAPI
page; the handlers build them as plain dicts (one JSON encoding, no second validation), and
clients must ignore fields they do not know.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

__all__ = [
    "BatchRequest",
    "BatchResponse",
    "BatchSummaryLine",
    "CheckRequest",
    "CheckResponse",
    "ErrorBody",
    "ErrorResponse",
    "ExecuteRequest",
    "ExecuteResponse",
    "HealthResponse",
    "TraceIn",
    "TraceResultOut",
    "ViolationOut",
]

#: A client-chosen time limit in milliseconds; values above the server's maximum are capped.
TimeoutMs = Annotated[StrictInt, Field(ge=1, description="milliseconds; capped at the maximum")]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Response(BaseModel):
    model_config = ConfigDict(extra="allow")


class ExecuteRequest(_Request):
    """Run ``code`` as a script (the iofold executor protocol)."""

    code: StrictStr = Field(description="Python source, run as a script")
    timeout: TimeoutMs | None = Field(
        default=None, description="wall-clock limit in ms (default: EVALJAIL_TIMEOUT_MS)"
    )


class TraceIn(_Request):
    """One trace of a batch."""

    trace_id: StrictStr | StrictInt = Field(description="returned with the trace's result")
    data: Any = Field(description="the trace, passed to the eval function as is")


class BatchRequest(_Request):
    """Run one eval function over many traces, each in a fresh jailed process."""

    code: StrictStr = Field(description="Python source defining the eval function")
    function_name: StrictStr | None = Field(
        default=None,
        description='the function to call (default, or "": the one eval_* function)',
    )
    traces: list[TraceIn] = Field(max_length=100_000)
    timeout: TimeoutMs | None = Field(default=None, description="per-trace limit in ms")
    batch_timeout: TimeoutMs | None = Field(
        default=None,
        description="whole-batch budget in ms; traces not started by then end as timeouts",
    )


class CheckRequest(_Request):
    """Static analysis only: nothing is executed."""

    code: StrictStr


class ViolationOut(BaseModel):
    """One static-analysis finding."""

    rule_id: str
    line: int
    col: int
    message: str
    hint: str = ""


class ExecuteResponse(_Response):
    """The seed's four fields first; the rest are evaljail's additions."""

    success: bool
    output: str = Field(description="stdout with surrounding whitespace trimmed")
    error: str | None
    executionTimeMs: float  #: the iofold protocol's name
    outcome: str = Field(description="ok, error, timeout, memory, output_limit, rejected, ...")
    stdout: str = Field(description="stdout as printed (truncated with a marker at the cap)")
    stderr: str
    error_type: str | None
    traceback: str | None = Field(description="the submitted code's own traceback, if it raised")
    violations: list[ViolationOut]
    cpu_ms: float
    memory_peak_kb: int
    timeout_ms: int = Field(description="the time limit that was applied")
    degraded: bool = Field(description="true when some isolation layer was off")


class TraceResultOut(_Response):
    """The result of the eval on one trace."""

    trace_id: str
    index: int = Field(description="position of the trace in the request")
    success: bool
    passed: bool | None
    reason: str | None
    error: str | None
    execution_time_ms: float
    outcome: str
    error_type: str | None
    traceback: str | None
    spec_violation: str | None = Field(description="non_bool_passed, non_str_reason or not_2_tuple")
    stdout: str
    stderr: str
    cpu_ms: float
    memory_peak_kb: int
    degraded: bool


class BatchResponse(_Response):
    """Every trace's result, in request order."""

    results: list[TraceResultOut]
    total_time_ms: float
    counts: dict[str, int] = Field(description="results per outcome")
    violations: list[ViolationOut] = Field(description="static-analysis findings, if rejected")


class BatchSummaryLine(_Response):
    """The last line of a streamed (``application/x-ndjson``) batch.

    Each earlier line is a :class:`TraceResultOut` with ``"type": "result"``, in the order the
    traces finished (``index`` gives each one's place). A failure after streaming began ends
    the stream with ``{"type": "error", "error": {...}}`` instead.
    """

    type: str = "summary"
    total: int
    total_time_ms: float
    counts: dict[str, int]
    violations: list[ViolationOut]


class CheckResponse(_Response):
    ok: bool = Field(description="true when static analysis found nothing")
    violations: list[ViolationOut]


class HealthResponse(_Response):
    """``status`` is ``ok``; the rest describes the backend (isolation layers, pool ...)."""

    status: str
    version: str
    backend: str


class ErrorBody(BaseModel):
    code: str = Field(description="stable machine-readable code (see docs/service.md)")
    message: str
    details: dict[str, Any]
    request_id: str


class ErrorResponse(BaseModel):
    """Every error response has this shape."""

    error: ErrorBody
