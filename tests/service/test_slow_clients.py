"""Clients that stall, trickle, stop reading, leave or speak broken HTTP, against the real
``evaljail serve`` (jailed pool, its own uvicorn protocol) over loopback sockets.

Each test answers one finding of the service red-team report (F4-F7, F9-F11): what a client
gets, and that the server does not keep the connection, the memory or the workers for it.
"""

from __future__ import annotations

import gc
import json
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import Live, free_port, serve_env, start_server, stop_server

pytestmark = pytest.mark.sandbox

READ_TIMEOUT_S = 1.0
#: Long enough that a test which waits for it is clearly waiting in vain.
PATIENCE_S = 20.0


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """A server with short read and send deadlines, two workers and a queue of three."""
    from tests.conftest import require_jail

    require_jail()
    log = tmp_path_factory.mktemp("edge") / "serve.log"
    env = serve_env(
        free_port(),
        PYTHON_POOL_MIN_SIZE="2",
        PYTHON_POOL_MAX_SIZE="2",
        EVALJAIL_QUEUE_SIZE="3",
        EVALJAIL_MAX_TIMEOUT_MS="20000",
        EVALJAIL_READ_TIMEOUT_MS=str(int(READ_TIMEOUT_S * 1000)),
        EVALJAIL_SEND_TIMEOUT_MS="1000",
    )
    server = start_server(log, env)
    yield server
    code, left = stop_server(server)
    assert code == 0, f"evaljail serve exited with {code}:\n{server.log_tail()}"
    assert not left, f"evaljail serve left processes behind: {sorted(left)}"


# -- raw HTTP ----------------------------------------------------------------------------------


def _connect(live: Live, *, rcvbuf: int | None = None) -> socket.socket:
    host, port = live.url.removeprefix("http://").rsplit(":", 1)
    sock = socket.socket()
    if rcvbuf is not None:  # before connect, so that the window stays small
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect((host, int(port)))
    sock.settimeout(PATIENCE_S)
    return sock


def _head(sock: socket.socket, buf: bytearray) -> tuple[int, dict[str, str]]:
    """Read one response head (skipping ``100 Continue``); leftovers stay in ``buf``."""
    while True:
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed before a response head: {bytes(buf)[:200]!r}")
            buf += chunk
        raw, _, rest = bytes(buf).partition(b"\r\n\r\n")
        buf[:] = rest
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
        if status != 100:
            return status, headers


def _response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One whole response: Content-Length bytes (what every error reply has), or up to EOF."""
    buf = bytearray()
    status, headers = _head(sock, buf)
    length = int(headers.get("content-length", 1 << 30))
    while len(buf) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
    return status, headers, bytes(buf[:length])


def _closed(sock: socket.socket) -> bool:
    """True once the server has closed the connection (EOF or reset)."""
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        return True
    return True


def _error(status: int, headers: dict[str, str], body: bytes, code: str) -> dict[str, Any]:
    assert headers["content-type"] == "application/json", (status, headers, body)
    error = json.loads(body)["error"]
    assert error["code"] == code, error
    assert set(error) == {"code", "message", "details", "request_id"}
    assert error["request_id"] == headers["x-request-id"]
    return dict(error)


def _health(live: Live) -> dict[str, Any]:
    with live.client() as c:
        return dict(c.get("/health").json())


def _wait_for(what: Callable[[], bool], timeout_s: float = PATIENCE_S) -> float:
    """Seconds until ``what()`` holds; fails the test if it never does."""
    start = time.monotonic()
    while not what():
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"not within {timeout_s} s: {what.__doc__ or what}")
        time.sleep(0.02)
    return time.monotonic() - start


def _pool(live: Live) -> dict[str, Any]:
    return dict(_health(live)["pool"])


_SPIN = "while True:\n    pass\n"
_SPIN_EVAL = "def eval_spin(trace):\n    while True:\n        pass\n"


def _post_raw(sock: socket.socket, path: str, payload: dict[str, Any], accept: str = "") -> None:
    body = json.dumps(payload).encode()
    extra = f"Accept: {accept}\r\n" if accept else ""
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{extra}"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )


def _idle(live: Live) -> bool:
    """the pool is whole, with nothing running and nothing queued"""
    pool = _pool(live)
    return bool(pool["busy"] == 0 and pool["queue"] == 0 and pool["size"] == pool["min_size"])


# -- F4: read deadlines ------------------------------------------------------------------------

STALLED_HEADS = {
    "partial-request-line": b"POST /exe",
    "headers-not-ended": b"POST /execute HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n",
}


@pytest.mark.parametrize("sent", STALLED_HEADS.values(), ids=STALLED_HEADS.keys())
def test_a_request_head_that_stalls_gets_408(edge: Live, sent: bytes) -> None:
    with _connect(edge) as sock:
        sock.sendall(sent)
        started = time.monotonic()
        status, headers, body = _response(sock)
        waited = time.monotonic() - started
        assert status == 408
        _error(status, headers, body, "request_timeout")
        assert headers["connection"] == "close"
        assert _closed(sock)
    assert waited >= READ_TIMEOUT_S * 0.9


def test_slowloris_headers_get_408(edge: Live) -> None:
    """One header line at a time, each well within any idle timeout: the head's deadline
    counts from its first byte."""
    with _connect(edge) as sock:
        sock.sendall(b"POST /execute HTTP/1.1\r\nHost: x\r\n")
        sock.settimeout(0.1)
        reply = b""
        for i in range(int(PATIENCE_S / 0.1)):
            try:
                reply = sock.recv(65536)
                break
            except TimeoutError:
                sock.sendall(f"X-Slow-{i}: y\r\n".encode())
        assert reply.startswith(b"HTTP/1.1 408 "), reply[:200]
        assert b'"request_timeout"' in reply


def test_an_idle_connection_is_closed(edge: Live) -> None:
    with _connect(edge) as sock:
        started = time.monotonic()
        assert sock.recv(65536) == b""  # closed, without a word: nothing was asked
        assert time.monotonic() - started < PATIENCE_S


BODIES = {
    "content-length-1-of-100": (b"Content-Length: 100\r\n", [b"{"]),
    "chunked-never-ends": (b"Transfer-Encoding: chunked\r\n", [b"1\r\n{\r\n"]),
    "trickle": (b"Content-Length: 1000\r\n", [b"{"] * 1000),
}


@pytest.mark.parametrize(("header", "parts"), BODIES.values(), ids=BODIES.keys())
def test_a_body_that_stalls_or_trickles_gets_408(
    edge: Live, header: bytes, parts: list[bytes]
) -> None:
    """The body must arrive within the read timeout of the head, however steadily it drips."""
    with _connect(edge) as sock:
        sock.sendall(b"POST /execute HTTP/1.1\r\nHost: x\r\n" + header + b"\r\n")
        sock.settimeout(0.05)
        reply = bytearray()
        for part in parts:  # a byte every 50 ms at most: never idle for long
            sock.sendall(part)
            try:
                reply += sock.recv(65536)
                break
            except TimeoutError:
                continue
        sock.settimeout(PATIENCE_S)
        status, headers = _head(sock, reply)
        length = int(headers["content-length"])
        while len(reply) < length:
            reply += sock.recv(65536)
        _error(status, headers, bytes(reply[:length]), "request_timeout")
        assert status == 408 and headers["connection"] == "close"
        assert _closed(sock)


def test_a_stalled_upload_is_not_work_in_flight(edge: Live) -> None:
    """An upload still arriving does not count in ``in_flight`` (shutdown drains only work)."""
    with _connect(edge) as sock:
        sock.sendall(
            b"POST /execute HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        assert sock.recv(65536).startswith(b"HTTP/1.1 100 ")  # the gate is reading the body
        assert _health(edge)["in_flight"] == 0


def test_shutdown_answers_a_stalled_upload_at_once(tmp_path: Path) -> None:
    """SIGTERM with an upload half-sent: a 503 JSON answer and a prompt exit, not a wait for
    the read deadline (here the default 30 s) or uvicorn's graceful-shutdown timeout."""
    live = start_server(tmp_path / "serve.log", serve_env(free_port(), PYTHON_POOL_MIN_SIZE="1"))
    try:
        with _connect(live) as sock:
            sock.sendall(
                b"POST /execute HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
                b"Expect: 100-continue\r\n\r\n"
            )
            assert sock.recv(65536).startswith(b"HTTP/1.1 100 ")
            sock.sendall(b"{")
            started = time.monotonic()
            live.proc.send_signal(signal.SIGTERM)
            status, headers, body = _response(sock)
            _error(status, headers, body, "not_ready")
            assert status == 503 and headers["retry-after"] == "1"
            code = live.proc.wait(PATIENCE_S)
            assert code == 0, live.log_tail()
            assert time.monotonic() - started < 10
    finally:
        _code, left = stop_server(live)
    assert not left
    assert "Exception in ASGI application" not in live.log.read_text()


@pytest.mark.slow
def test_a_request_cut_off_by_the_end_of_shutdown_gets_a_json_503(tmp_path: Path) -> None:
    """uvicorn cancels what still runs when its graceful shutdown times out (here 1 + 10 s):
    a batch of 20 one-second traces on one worker is answered ``503 not_ready`` in JSON, not
    uvicorn's text/plain 500."""
    env = serve_env(
        free_port(),
        PYTHON_POOL_MIN_SIZE="1",
        PYTHON_POOL_MAX_SIZE="1",
        EVALJAIL_TIMEOUT_MS="1000",
        EVALJAIL_MAX_TIMEOUT_MS="1000",
    )
    live = start_server(tmp_path / "serve.log", env)
    try:
        with _connect(live) as sock:
            traces = [{"trace_id": str(i), "data": {}} for i in range(20)]
            _post_raw(sock, "/execute/batch", {"code": _SPIN_EVAL, "traces": traces})
            _wait_for(lambda: _pool(live)["busy"] == 1)
            live.proc.send_signal(signal.SIGTERM)
            status, headers, body = _response(sock)
            _error(status, headers, body, "not_ready")
            assert status == 503
        assert live.proc.wait(PATIENCE_S) == 0, live.log_tail()
    finally:
        _code, left = stop_server(live)
    assert not left


# -- F5: a client that stops reading -----------------------------------------------------------

_LOUD = "def eval_loud(trace):\n    print('x' * 500_000)\n    return True, ''\n"


def test_a_client_that_stops_reading_is_dropped(edge: Live) -> None:
    """A streamed batch of ~20 MB of output to a client that reads nothing: once nothing has
    drained for the send timeout, the connection is dropped and the request ends, instead of
    the results waiting in the server's memory for as long as the client stays connected."""
    body = json.dumps(
        {"code": _LOUD, "traces": [{"trace_id": str(i), "data": {}} for i in range(40)]}
    ).encode()
    with _connect(edge, rcvbuf=4096) as sock:
        sock.sendall(
            b"POST /execute/batch HTTP/1.1\r\nHost: x\r\nAccept: application/x-ndjson\r\n"
            + f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        # ... and read nothing until the server gave up on it
        _wait_for(lambda: "client stopped reading; connection dropped" in edge.log_tail(400))
        _wait_for(lambda: _health(edge)["in_flight"] == 0)
        received = bytearray()
        try:
            while chunk := sock.recv(1 << 20):
                received += chunk
        except ConnectionResetError:
            pass
    assert b'"type":"summary"' not in received  # cut off: the stream never finished


# -- F6: clients that leave stop their work ----------------------------------------------------


def test_a_client_that_leaves_stops_its_running_execution(edge: Live) -> None:
    """Without the stop, the worker would spin for the full 20 s timeout."""
    _wait_for(lambda: _idle(edge))
    replaced = _pool(edge)["workers_replaced"]
    with _connect(edge) as sock:
        _post_raw(sock, "/execute", {"code": _SPIN, "timeout": 20_000})
        _wait_for(lambda: _pool(edge)["busy"] >= 1)
    assert _wait_for(lambda: _idle(edge)) < 10
    assert _pool(edge)["workers_replaced"] > replaced
    assert "client left; execution stopped" in edge.log_tail(400)
    with edge.client() as c:  # the pool is whole again
        assert c.post("/execute", json={"code": "print(7)"}).json()["output"] == "7"


def test_a_client_that_leaves_takes_its_execution_out_of_the_queue(edge: Live) -> None:
    """Both workers busy for another client; a queued execution whose client left never runs."""
    _wait_for(lambda: _idle(edge))
    before = _pool(edge)["executions"]
    with ThreadPoolExecutor(2) as holders:
        held = [
            holders.submit(
                lambda: httpx.post(
                    f"{edge.url}/execute", json={"code": _SPIN, "timeout": 2000}, timeout=30
                ).json()
            )
            for _ in range(2)
        ]
        _wait_for(lambda: _pool(edge)["busy"] == 2)
        with _connect(edge) as sock:
            _post_raw(sock, "/execute", {"code": "print(1)"})
            _wait_for(lambda: _pool(edge)["queue"] == 1)
        assert [f.result()["outcome"] for f in held] == ["timeout", "timeout"]
    _wait_for(lambda: _idle(edge))
    assert _pool(edge)["executions"] - before == 2  # the holders' only


@pytest.mark.parametrize("accept", ["application/json", "application/x-ndjson"])
def test_a_client_that_leaves_stops_its_running_batch_chunks(edge: Live, accept: str) -> None:
    """The client leaves while the batch's first traces run (before any result): the chunks on
    the workers stop too, instead of spinning to their 20 s timeouts."""
    _wait_for(lambda: _idle(edge))
    with _connect(edge) as sock:
        traces = [{"trace_id": str(i), "data": {}} for i in range(4)]
        _post_raw(
            sock,
            "/execute/batch",
            {"code": _SPIN_EVAL, "traces": traces, "timeout": 20_000},
            accept,
        )
        _wait_for(lambda: _pool(edge)["busy"] == 2)
    assert _wait_for(lambda: _idle(edge)) < 10
    assert "client left; batch stopped" in edge.log_tail(400)


# -- F10: a small queue ------------------------------------------------------------------------


def test_a_batch_with_more_chunks_than_queue_places_runs(edge: Live) -> None:
    """The queue has three places; a 12-trace batch (12 chunks on an idle pool before) runs."""
    _wait_for(lambda: _idle(edge))
    code = "def eval_n(trace):\n    return trace['n'] % 2 == 0, str(trace['n'])\n"
    traces = [{"trace_id": f"t{i}", "data": {"n": i}} for i in range(12)]
    with edge.client() as c:
        r = c.post("/execute/batch", json={"code": code, "traces": traces})
    assert r.status_code == 200, r.text
    assert [x["reason"] for x in r.json()["results"]] == [str(i) for i in range(12)]


def test_queue_full_says_how_many_wait(edge: Live) -> None:
    """With both workers held and the three places taken, the 503 tells the truth."""
    _wait_for(lambda: _idle(edge))
    with ThreadPoolExecutor(5) as clients:

        def post(payload: dict[str, Any]) -> httpx.Response:
            return httpx.post(f"{edge.url}/execute", json=payload, timeout=30)

        held = [clients.submit(post, {"code": _SPIN, "timeout": 3000}) for _ in range(2)]
        _wait_for(lambda: _pool(edge)["busy"] == 2)
        queued = [clients.submit(post, {"code": "print(2)"}) for _ in range(3)]
        _wait_for(lambda: _pool(edge)["queue"] == 3)
        r = post({"code": "print(3)"})
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        error = r.json()["error"]
        assert error["code"] == "queue_full"
        assert error["details"] == {"queue_size": 3, "waiting": 3}
        assert "3 jobs waiting" in error["message"]
        assert all(f.result().status_code == 200 for f in held + queued)


# -- F7: large bodies are parsed off the event loop --------------------------------------------


def test_large_bodies_do_not_stall_other_requests(live: Live) -> None:
    """Three ~7.8 MB bodies of 2.6 M empty lists, which the fast parser declines (NaN): decoding
    each took ~1 s of the event loop (0.9-1.7 s measured), during which nothing else was
    answered. Decoded in a thread with the collector paused, the longest wait is the longest
    single C call (json.loads: ~0.1 s; 0.23 s measured for the three bodies). The bound is set
    by that call timed here, in the same run, so that a loaded machine moves both sides."""
    lists = ",".join(["[]"] * 2_600_000)
    body = (
        '{"code": "def eval_x(t):\\n    return True, \\"\\"\\n", "function_name": "nope",'
        f' "traces": [{{"trace_id": 1, "data": [NaN, {lists}]}}]}}'
    ).encode()
    stop = threading.Event()
    waits: list[float] = []

    def probe() -> None:
        with live.client() as c:
            while not stop.is_set():
                started = time.monotonic()
                c.get("/metrics")
                waits.append(time.monotonic() - started)

    def post() -> int:
        with live.client() as c:
            return c.post("/execute/batch", content=body, timeout=60).status_code

    # The waits are measured here: this process's own collector, with a whole suite's objects
    # on its heap, would stall the probe for longer than the server does.
    gc.collect()
    gc.disable()
    started = time.monotonic()
    json.loads(body)  # the one C call the server cannot split
    single_call_s = time.monotonic() - started
    bound_s = max(0.6, 4 * single_call_s)  # the old loop stalled ~10 calls' time per body
    prober = threading.Thread(target=probe)
    prober.start()
    try:
        with ThreadPoolExecutor(3) as senders:
            statuses = list(senders.map(lambda _: post(), range(3)))
    finally:
        stop.set()
        prober.join()
        gc.enable()
    assert statuses == [422, 422, 422]
    assert max(waits) < bound_s, (bound_s, sorted(waits)[-5:])


# -- F9 and F11: every error is JSON; HEAD ------------------------------------------------------

MALFORMED = {
    "bad-chunk-size": b"POST /execute HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    "negative-content-length": b"POST /execute HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
    "two-content-lengths": b"POST /execute HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n{",
    "te-gzip-chunked": b"POST /execute HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
    "nul-in-header": b"GET /health HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
    "space-in-header-name": b"GET /health HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n",
    "not-http": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64 + b"\r\n\r\n",
    "te-and-cl": b"POST /execute HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
}  # fmt: skip


@pytest.mark.parametrize("raw", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_http_is_a_json_400_and_closes(edge: Live, raw: bytes) -> None:
    with _connect(edge) as sock:
        sock.sendall(raw)
        status, headers, body = _response(sock)
        assert status == 400
        _error(status, headers, body, "bad_request")
        assert headers["connection"] == "close"
        assert _closed(sock)


def test_head_health_and_metrics(edge: Live) -> None:
    with edge.client() as c:
        for path in ("/health", "/metrics"):
            r = c.head(path)
            assert r.status_code == 200, (path, r.text)
            assert r.content == b""
            assert r.headers["content-type"].startswith(("application/json", "text/plain"))


# -- second pass: bodies declared too large -----------------------------------------------------


def _max_body(live: Live) -> int:
    return int(_health(live)["limits"]["max_body_bytes"])


def test_a_body_too_large_to_drain_gets_413_and_close(edge: Live) -> None:
    """A declared length beyond what the gate drains (limit + 64 MiB) is refused without
    reading the body: the connection cannot be reused, so the 413 must say ``close`` (it
    promised keep-alive, and the next request on the connection was then read as body)."""
    length = _max_body(edge) + 65 * 1024 * 1024
    with _connect(edge) as sock:
        sock.sendall(
            f"POST /execute HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n".encode()
        )
        status, headers, body = _response(sock)
        _error(status, headers, body, "request_too_large")
        assert status == 413
        assert headers.get("connection") == "close", headers
        assert _closed(sock)


def test_expect_continue_with_a_too_large_body_gets_413_at_once(edge: Live) -> None:
    """A client that waits for ``100 Continue`` before sending a body over the limit gets the
    413 instead (RFC 9110 section 10.1.1), not an invitation to upload what is then thrown away."""
    length = _max_body(edge) + 1
    with _connect(edge) as sock:
        sock.sendall(
            f"POST /execute HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n"
            "Expect: 100-continue\r\n\r\n".encode()
        )
        buf = bytearray()
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            assert chunk, bytes(buf)
            buf += chunk
        assert bytes(buf).startswith(b"HTTP/1.1 413 "), bytes(buf)[:200]
        assert b"\r\nconnection: close\r\n" in bytes(buf).lower()
        assert _closed(sock)


def test_a_pipelined_partial_head_gets_408(edge: Live) -> None:
    """The start of a second request sent with the first (pipelined) and never finished: its
    head deadline runs from the end of the first answer. It had none: only the 30 s keep-alive
    timeout closed the connection, silently."""
    body = json.dumps({"code": "print(1)"}).encode()
    with _connect(edge) as sock:
        sock.sendall(
            b"POST /execute HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
            + b"GET /health HTTP/1.1\r\nHo"
        )
        buf = bytearray()
        status, headers = _head(sock, buf)
        assert status == 200
        length = int(headers["content-length"])
        while len(buf) < length:
            buf += sock.recv(65536)
        del buf[:length]
        status, headers = _head(sock, buf)  # within PATIENCE_S (20 s), unlike the 30 s close
        assert status == 408
        assert headers["connection"] == "close"
        length = int(headers["content-length"])
        while len(buf) < length:
            buf += sock.recv(65536)
        _error(status, headers, bytes(buf[:length]), "request_timeout")
        assert _closed(sock)
