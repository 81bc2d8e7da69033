"""The app's own logic over the in-process mock backend (no jail needed): error mapping,
readiness, auth, CORS, body limit, request ids, metrics registry, OpenAPI."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any

import httpx
import pytest

from evaljail.errors import (
    ERROR_TABLE,
    ConfigurationError,
    EvaljailError,
    QueueFullError,
    status_and_code,
)
from evaljail.policy import Policy
from evaljail.runner import MockBackend, PythonRunner, TraceItem
from evaljail.service import check_bind_security, create_app
from evaljail.service.errors import SERVICE_ERROR_CODES
from evaljail.settings import Settings
from evaljail.types import ExecutionResult, Outcome, TraceResult

from .conftest import threaded

EVAL = "def eval_ok(trace):\n    return (bool(trace.get('ok')), 'r')\n"


@pytest.fixture
def serve_mock() -> Callable[..., Any]:
    """``serve_mock(settings=..., backend=...)`` -> context manager yielding an httpx.Client."""

    import contextlib

    @contextlib.contextmanager
    def serve(
        settings: Settings | None = None, backend: Any = None, **client_kw: Any
    ) -> Iterator[httpx.Client]:
        s = settings or Settings()
        runner = PythonRunner(backend=backend or MockBackend(), settings=s)
        try:
            with (
                threaded(create_app(s, runner=runner)) as url,
                httpx.Client(base_url=url, timeout=10, **client_kw) as client,
            ):
                yield client
        finally:
            runner.close()

    return serve


class _Raising(MockBackend):
    """A backend whose every call raises ``exc``."""

    def __init__(self, exc: BaseException, health: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.exc = exc
        self._health = health

    def run_script(self, code: str, policy: Policy) -> Future[ExecutionResult]:
        raise self.exc

    def run_traces(self, *args: Any, **kwargs: Any) -> Future[None]:
        raise self.exc

    def health(self) -> dict[str, Any]:
        if self._health is None:
            raise self.exc
        return self._health


def test_execute_speaks_the_seed_protocol(serve_mock: Callable[..., Any]) -> None:
    with serve_mock() as c:
        r = c.post("/execute", json={"code": "print('  4  ')\nprint()", "timeout": 1000})
        body = r.json()
        assert r.status_code == 200
        assert body["success"] is True
        assert body["output"] == "4"  # trimmed, as the seed's executor does
        assert body["stdout"] == "  4  \n\n"
        assert body["error"] is None
        assert isinstance(body["executionTimeMs"], float)
        assert body["outcome"] == "ok"
        assert body["timeout_ms"] == 1000


def test_code_failure_is_200_with_success_false(serve_mock: Callable[..., Any]) -> None:
    with serve_mock() as c:
        r = c.post("/execute", json={"code": "raise KeyError('k')"})
        assert r.status_code == 200
        assert r.json()["success"] is False
        assert r.json()["error_type"] == "KeyError"


def test_form_content_type_is_accepted(serve_mock: Callable[..., Any]) -> None:
    """``curl -d`` sends application/x-www-form-urlencoded; the body is still JSON."""
    with serve_mock() as c:
        r = c.post(
            "/execute",
            content=b'{"code": "print(1)"}',
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert r.status_code == 200 and r.json()["output"] == "1"


def test_queue_full_is_503_with_retry_after(serve_mock: Callable[..., Any]) -> None:
    with serve_mock(backend=_Raising(QueueFullError("queue full"), health={})) as c:
        for path, body in (
            ("/execute", {"code": "print(1)"}),
            ("/execute/batch", {"code": EVAL, "traces": [{"trace_id": "a", "data": {}}]}),
        ):
            r = c.post(path, json=body)
            assert r.status_code == 503, path
            assert r.headers["retry-after"] == "1"
            assert r.json()["error"]["code"] == "queue_full"
        metrics = c.get("/metrics").text
        assert "evaljail_queue_full_rejections_total 2.0" in metrics


@pytest.mark.parametrize(
    ("health", "reason"),
    [
        ({"ready": False, "reason": "warming up"}, "warming up"),
        ({"status": "degraded"}, "degraded"),
    ],
)
def test_health_503_when_backend_not_ready(
    serve_mock: Callable[..., Any], health: dict[str, Any], reason: str
) -> None:
    with serve_mock(backend=_Raising(RuntimeError("x"), health=health)) as c:
        r = c.get("/health")
        assert r.status_code == 503
        assert r.headers["retry-after"] == "1"
        body = r.json()
        assert body["status"] == "unavailable"
        assert reason in body["reason"]
        assert body["error"]["code"] == "not_ready"


def test_health_503_when_backend_health_raises(serve_mock: Callable[..., Any]) -> None:
    with serve_mock(backend=_Raising(RuntimeError("secret detail"))) as c:
        r = c.get("/health")
        assert r.status_code == 503
        assert "secret detail" not in r.text


def test_unexpected_error_is_500_without_traceback(serve_mock: Callable[..., Any]) -> None:
    with serve_mock(backend=_Raising(RuntimeError("/srv/secret/path"), health={})) as c:
        r = c.post("/execute", json={"code": "print(1)"}, headers={"x-request-id": "abc-1"})
        assert r.status_code == 500
        err = r.json()["error"]
        assert err["code"] == "internal_error"
        assert err["request_id"] == "abc-1"
        assert "Traceback" not in r.text and "/srv/secret" not in r.text


def test_request_id_is_echoed_or_made(serve_mock: Callable[..., Any]) -> None:
    with serve_mock() as c:
        r = c.post("/execute", content=b"{", headers={"x-request-id": "client-42"})
        assert r.headers["x-request-id"] == "client-42"
        assert r.json()["error"]["request_id"] == "client-42"
        r = c.get("/nope", headers={"x-request-id": "bad id with spaces"})
        rid = r.headers["x-request-id"]
        assert rid != "bad id with spaces" and len(rid) == 32
        assert r.json()["error"]["request_id"] == rid


TOKEN = "s3cret-token-0123456789"


def test_token_guards_every_endpoint_but_health(serve_mock: Callable[..., Any]) -> None:
    settings = Settings(api_token=TOKEN)
    with serve_mock(settings=settings) as c:
        for method, path in (
            ("POST", "/execute"),
            ("POST", "/execute/batch"),
            ("POST", "/check"),
            ("GET", "/metrics"),
            ("GET", "/docs"),
            ("GET", "/openapi.json"),
            ("GET", "/no-such-endpoint"),
        ):
            for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": TOKEN}):
                r = c.request(method, path, json={"code": "print(1)"}, headers=headers)
                assert r.status_code == 401, (method, path, headers)
                assert r.json()["error"]["code"] == "unauthorized"
                assert r.headers["www-authenticate"].startswith("Bearer")
        ok = c.post(
            "/execute", json={"code": "print(1)"}, headers={"authorization": f"Bearer {TOKEN}"}
        )
        assert ok.status_code == 200
        public = c.get("/health").json()
        assert public == {"status": "ok", "version": public["version"]}
        full = c.get("/health", headers={"authorization": f"Bearer {TOKEN}"}).json()
        assert full["auth"] is True and "limits" in full


def test_cors_is_off_unless_configured(serve_mock: Callable[..., Any]) -> None:
    preflight = {
        "origin": "http://app.example",
        "access-control-request-method": "POST",
        "access-control-request-headers": "content-type",
    }
    with serve_mock() as c:
        r = c.options("/execute", headers=preflight)
        assert "access-control-allow-origin" not in r.headers
        r = c.post("/execute", json={"code": "print(1)"}, headers={"origin": "http://app.example"})
        assert "access-control-allow-origin" not in r.headers
    with serve_mock(settings=Settings(cors_origins=("http://app.example",))) as c:
        r = c.options("/execute", headers=preflight)
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == "http://app.example"
        r = c.options("/execute", headers={**preflight, "origin": "http://evil.example"})
        assert r.headers.get("access-control-allow-origin") != "http://evil.example"


@pytest.mark.parametrize(
    ("change", "refused"),
    [
        ({"origin": "http://evil.example"}, ["origin"]),
        ({"access-control-request-method": "PATCH"}, ["method"]),
        ({"access-control-request-headers": "x-evil"}, ["headers"]),
    ],
    ids=["origin", "method", "headers"],
)
def test_cors_refusal_is_a_json_error(
    serve_mock: Callable[..., Any], change: dict[str, str], refused: list[str]
) -> None:
    preflight = {
        "origin": "http://app.example",
        "access-control-request-method": "POST",
        "access-control-request-headers": "content-type",
        "x-request-id": "pre-1",
    }
    with serve_mock(settings=Settings(cors_origins=("http://app.example",))) as c:
        r = c.options("/execute", headers=preflight | change)
    assert r.status_code == 400
    assert r.headers["content-type"] == "application/json"
    assert r.headers["x-request-id"] == "pre-1"
    assert "origin" in r.headers["vary"].lower()
    error = r.json()["error"]
    assert error["code"] == "cors_rejected"
    assert error["details"] == {"refused": refused}
    assert error["request_id"] == "pre-1"


def test_body_deadline_holds_under_any_asgi_server(serve_mock: Callable[..., Any]) -> None:
    """The gate's body deadline does not depend on ``evaljail serve``'s protocol class: here
    the app runs on a stock uvicorn."""
    import socket

    with serve_mock(settings=Settings(read_timeout_ms=300)) as c:
        host, port = str(c.base_url).removeprefix("http://").rstrip("/").rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=20) as sock:
            sock.sendall(b"POST /execute HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{")
            reply = b""
            while b"request_timeout" not in reply:
                chunk = sock.recv(65536)
                assert chunk, reply
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 408 ")
        assert b"connection: close" in reply.lower()
        assert c.post("/execute", json={"code": "print(1)"}).status_code == 200


def test_body_limit_with_and_without_content_length(serve_mock: Callable[..., Any]) -> None:
    big = json.dumps({"code": "#" * (2 * 1024 * 1024)}).encode()
    with serve_mock(settings=Settings(max_body_mb=1)) as c:
        r = c.post("/execute", content=big)
        assert r.status_code == 413
        assert r.json()["error"]["code"] == "request_too_large"

        def chunks() -> Iterator[bytes]:
            for i in range(0, len(big), 65536):
                yield big[i : i + 65536]

        r = c.post("/execute", content=chunks())  # chunked: no Content-Length
        assert r.status_code == 413
        assert r.json()["error"]["code"] == "request_too_large"
        assert c.post("/execute", json={"code": "print(1)"}).status_code == 200


def test_batch_json_and_ndjson(serve_mock: Callable[..., Any]) -> None:
    traces = [{"trace_id": f"t{i}", "data": {"ok": i % 2 == 0}} for i in range(5)]
    with serve_mock() as c:
        body = c.post("/execute/batch", json={"code": EVAL, "traces": traces}).json()
        assert [r["trace_id"] for r in body["results"]] == [f"t{i}" for i in range(5)]
        assert [r["passed"] for r in body["results"]] == [True, False, True, False, True]
        assert body["counts"] == {"passed": 3, "failed": 2}
        assert set(body["results"][0]) >= {
            "trace_id", "success", "passed", "reason", "error", "execution_time_ms",
            "outcome", "error_type", "spec_violation", "cpu_ms", "memory_peak_kb", "index",
        }  # fmt: skip
        with c.stream(
            "POST",
            "/execute/batch",
            json={"code": EVAL, "traces": traces},
            headers={"accept": "application/x-ndjson"},
        ) as r:
            assert r.headers["content-type"].startswith("application/x-ndjson")
            lines = [json.loads(line) for line in r.iter_lines() if line]
        assert [ln["type"] for ln in lines] == ["result"] * 5 + ["summary"]
        assert sorted(ln["index"] for ln in lines[:-1]) == list(range(5))
        assert lines[-1]["total"] == 5 and lines[-1]["counts"] == {"passed": 3, "failed": 2}


def test_an_empty_function_name_means_find_it(serve_mock: Callable[..., Any]) -> None:
    """``""`` is what clients send for "not given" (``functionName ?? ""``): like a missing
    field, the one ``eval_*`` function is used, as the Python API does."""
    with serve_mock() as c:
        trace = {"trace_id": "t", "data": {"steps": []}}
        r = c.post("/execute/batch", json={"code": EVAL, "function_name": "", "traces": [trace]})
        assert r.status_code == 200, r.text
        assert [x["trace_id"] for x in r.json()["results"]] == ["t"]


def test_batch_with_no_traces(serve_mock: Callable[..., Any]) -> None:
    with serve_mock() as c:
        body = c.post("/execute/batch", json={"code": EVAL, "traces": []}).json()
        assert body["results"] == [] and body["counts"] == {}


def test_each_app_has_its_own_metrics_registry(mock_settings: Settings) -> None:
    runners = [PythonRunner(backend="mock", settings=mock_settings) for _ in range(2)]
    try:
        with (
            threaded(create_app(mock_settings, runner=runners[0])) as a,
            threaded(create_app(mock_settings, runner=runners[1])) as b,
        ):
            httpx.post(f"{a}/execute", json={"code": "print(1)"})
            text_a = httpx.get(f"{a}/metrics").text
            text_b = httpx.get(f"{b}/metrics").text
        assert 'evaljail_executions_total{kind="script",outcome="ok"} 1.0' in text_a
        assert 'evaljail_executions_total{kind="script"' not in text_b
        for name in (
            "evaljail_execution_seconds",
            "evaljail_http_request_seconds",
            "evaljail_queue_depth",
            "evaljail_pool_size",
            "evaljail_timeouts_total",
            "evaljail_memory_kills_total",
            "evaljail_jailed_cpu_seconds_total",
        ):
            assert name in text_a, name
    finally:
        for r in runners:
            r.close()


def test_openapi_documents_request_schemas(serve_mock: Callable[..., Any]) -> None:
    with serve_mock() as c:
        spec = c.get("/openapi.json").json()
        assert c.get("/docs").status_code == 200
    schemas = spec["components"]["schemas"]
    assert schemas["ExecuteRequest"]["additionalProperties"] is False
    assert set(schemas["ExecuteRequest"]["properties"]) == {"code", "timeout"}
    assert "TraceIn" in schemas
    body = spec["paths"]["/execute"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"]["$ref"].endswith("/ExecuteRequest")


def test_non_loopback_needs_a_token() -> None:
    with pytest.raises(ConfigurationError, match="EVALJAIL_API_TOKEN"):
        check_bind_security(Settings(host="0.0.0.0"))
    check_bind_security(Settings(host="0.0.0.0", api_token=TOKEN))
    check_bind_security(Settings(host="127.0.0.1"))
    check_bind_security(Settings(host="::1"))


def test_every_error_code_is_documented() -> None:
    """docs/service.md lists every code the service can answer with."""
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "service.md").read_text()
    codes = {code for _s, code in ERROR_TABLE.values()} | set(SERVICE_ERROR_CODES)
    missing = sorted(c for c in codes if f"`{c}`" not in doc)
    assert not missing, f"undocumented error codes: {missing}"


def test_status_and_code_cover_the_service_mapping() -> None:
    for cls, (status, code) in ERROR_TABLE.items():
        assert status_and_code(cls("x")) == (status, code)
    assert issubclass(QueueFullError, EvaljailError)


def test_trace_item_and_results_are_the_runners_types() -> None:
    """The remote client rebuilds these from the service's JSON; keep their shapes in sync."""
    from evaljail.remote import execution_result_from_json, trace_result_from_json

    item = TraceItem(index=3, trace_id="x", data_json="{}")
    tr = TraceResult(
        trace_id="x", index=3, success=True, outcome=Outcome.PASSED, passed=True, reason=""
    )
    assert trace_result_from_json(tr.to_dict(), index=item.index, trace_id=item.trace_id) == tr
    from evaljail.service.app import _execute_payload

    er = ExecutionResult(success=True, outcome=Outcome.OK, output="1\n", stdout="1\n")
    assert execution_result_from_json(_execute_payload(er, 5000)) == er


def test_json_logs_redact_code_and_secrets() -> None:
    import io
    import logging

    from evaljail.service.logs import JsonFormatter

    record = logging.makeLogRecord(
        {
            "name": "evaljail.service",
            "levelname": "INFO",
            "msg": "request",
            "request_id": "r1",
            "code": "import os; os.system('x')",
            "token": TOKEN,
            "status": 200,
        }
    )
    line = JsonFormatter().format(record)
    entry = json.loads(line)
    assert entry["request_id"] == "r1" and entry["status"] == 200
    assert entry["code"] == entry["token"] == "[redacted]"
    assert "os.system" not in line and TOKEN not in line
    assert io.StringIO(line).read().count("\n") == 0
