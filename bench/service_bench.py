"""The executor service against a naive executor, side by side, over loopback HTTP.

Starts two servers:

- evaljail: ``evaljail serve`` (the jailed warm pool) on a free port;
- naive: a minimal standard-library HTTP server (this file, ``--naive-server``) that starts a
  ``python3 -`` subprocess per request (per trace, for batches) — what a simple executor does.

Then measures, for each: ``POST /execute`` latency of a trivial eval (p50/p95, one client,
keep-alive), requests/s at concurrency 32 with the error count (httpx async, and ``wrk`` when
it is installed: the Python client saturates near 300 req/s on 2 cores, so ``apt-get install
wrk`` for the service's real figure), and the wall time of one 1 000-trace
``POST /execute/batch`` (fixture traces repeated to 1 000, a light fixture eval). Prints a table
and one JSON line. Not a test.

    .venv/bin/python bench/service_bench.py [--quick] [--results bench/RESULTS.md]

Targets: p50 <= 5 ms and >= 10x faster than naive; >= 600 req/s at c=32 with zero errors;
1 000-trace batch <= 2 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO.parent / "shared" / "fixtures" / "public"
EVALJAIL = Path(sys.executable).with_name("evaljail")
BATCH_EVAL = "eval_no_step_errors"
#: The system interpreter, not a wrapper script (a pyenv shim alone costs ~200 ms a start).
PYTHON3 = (
    "/usr/bin/python3" if Path("/usr/bin/python3").exists() else os.path.realpath(sys.executable)
)
TRIVIAL = (
    "def eval_trivial(trace):\n"
    "    return (len(trace.get('steps', [])) >= 0, 'ok')\n"
    "print(eval_trivial({'steps': []}))\n"
)

# -- the naive executor ------------------------------------------------------------------------

_HARNESS = """
import json, sys
_src = {code!r}
_ns = {{}}
exec(compile(_src, "<eval>", "exec"), _ns)
_trace = json.loads(sys.stdin.read())
try:
    _passed, _reason = _ns[{fn!r}](_trace)
    print(json.dumps({{"passed": _passed, "reason": _reason}}))
except Exception as exc:
    print(json.dumps({{"error": type(exc).__name__ + ": " + str(exc)}}))
"""


def _python(stdin: str, argv: list[str], timeout_s: float) -> tuple[bool, str, str]:
    try:
        proc = subprocess.run(
            argv, input=stdin, capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired:
        return False, "", "timeout"
    return proc.returncode == 0, proc.stdout, proc.stderr


class _NaiveHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    pool: ThreadPoolExecutor

    def log_message(self, format: str, *args: Any) -> None:
        return

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes; without TCP_NODELAY, Nagle's algorithm and the
        # client's delayed ACK add ~40 ms to every response, which is not the naive executor's
        # cost but a benchmark artifact (uvicorn sets it too).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _reply(self, status: int, payload: Any) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._reply(200, {"status": "ok"})

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        timeout_s = request.get("timeout", 5000) / 1000
        started = time.perf_counter()
        if self.path == "/execute":
            ok, out, err = _python(request["code"], [PYTHON3, "-"], timeout_s)
            self._reply(
                200,
                {
                    "success": ok,
                    "output": out.strip(),
                    "error": None if ok else err,
                    "executionTimeMs": (time.perf_counter() - started) * 1000,
                },
            )
            return
        harness = _HARNESS.format(code=request["code"], fn=request["function_name"])

        def one(trace: dict[str, Any]) -> dict[str, Any]:
            t0 = time.perf_counter()
            ok, out, err = _python(json.dumps(trace["data"]), [PYTHON3, "-c", harness], timeout_s)
            result = json.loads(out) if ok and out.strip() else {"error": err}
            return {"trace_id": trace["trace_id"], "success": "error" not in result, **result,
                    "execution_time_ms": (time.perf_counter() - t0) * 1000}  # fmt: skip

        results = list(self.pool.map(one, request["traces"]))
        self._reply(
            200, {"results": results, "total_time_ms": (time.perf_counter() - started) * 1000}
        )


def naive_server(port: int) -> None:
    _NaiveHandler.pool = ThreadPoolExecutor(os.cpu_count() or 2)
    ThreadingHTTPServer.request_queue_size = 128  # the default 5 resets connections at c=32
    server = ThreadingHTTPServer(("127.0.0.1", port), _NaiveHandler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server.serve_forever()


# -- a server that does nothing: the ceiling of this client on this machine --------------------

_NOOP_BODY = json.dumps({"success": True, "output": "(True, 'ok')", "error": None}).encode()


async def _noop_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(_NOOP_BODY))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": _NOOP_BODY})


def noop_server(port: int) -> None:
    import uvicorn

    uvicorn.run(_noop_app, host="127.0.0.1", port=port, log_config=None, access_log=False)


# -- measuring ---------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 120) -> None:
    import httpx

    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit(f"server at {url} exited with {proc.returncode}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        time.sleep(0.05)
    raise SystemExit(f"server at {url} did not become healthy")


@contextlib.contextmanager
def _server(
    argv: list[str], env: dict[str, str], url: str, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as sink:
        proc = subprocess.Popen(argv, env=env, stdout=sink, stderr=sink)
    try:
        _wait_healthy(url, proc)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def latency(url: str, n: int, warmup: int) -> dict[str, float]:
    import httpx

    times: list[float] = []
    errors = 0
    with httpx.Client(base_url=url, timeout=30) as client:
        for i in range(warmup + n):
            started = time.perf_counter()
            r = client.post("/execute", json={"code": TRIVIAL, "timeout": 5000})
            elapsed = (time.perf_counter() - started) * 1000
            ok = r.status_code == 200 and r.json().get("output") == "(True, 'ok')"
            if i >= warmup:
                times.append(elapsed)
                errors += not ok
    return {
        "n": n,
        "p50_ms": round(_pct(times, 50), 3),
        "p95_ms": round(_pct(times, 95), 3),
        "mean_ms": round(statistics.fmean(times), 3),
        "errors": errors,
    }


async def _throughput(url: str, total: int, concurrency: int) -> dict[str, float]:
    import httpx

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    remaining = [total]
    errors = [0]
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def worker() -> None:
            while remaining[0] > 0:
                remaining[0] -= 1
                try:
                    r = await client.post("/execute", json={"code": TRIVIAL, "timeout": 5000})
                    if r.status_code != 200 or r.json().get("output") != "(True, 'ok')":
                        errors[0] += 1
                except httpx.HTTPError:
                    errors[0] += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {
        "requests": total,
        "concurrency": concurrency,
        "seconds": round(elapsed, 3),
        "req_per_s": round(total / elapsed, 1),
        "errors": errors[0],
    }


def _process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process (its threads included, its children not)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def throughput(
    url: str, total: int, concurrency: int = 32, server_pid: int = 0
) -> dict[str, float]:
    """Requests/s, plus the CPU the client and the server process spent per request (on a
    2-core machine both compete with the jailed executions for the same cores)."""
    client0 = time.process_time()
    server0 = _process_cpu_s(server_pid) if server_pid else 0.0
    figures = asyncio.run(_throughput(url, total, concurrency))
    figures["client_cpu_ms_per_req"] = round((time.process_time() - client0) * 1000 / total, 2)
    if server_pid:
        server_s = _process_cpu_s(server_pid) - server0
        figures["server_cpu_ms_per_req"] = round(server_s * 1000 / total, 2)
    return figures


_WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = '{"code": "print(2 + 2)", "timeout": 5000}'
wrk.headers["Content-Type"] = "application/json"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("ERRORS %d\\n", e.connect + e.read + e.write + e.status + e.timeout))
end
"""


def wrk_throughput(url: str, seconds: int, concurrency: int = 32) -> dict[str, Any] | None:
    """Requests/s from ``wrk`` (a C load generator), when installed: the httpx client above
    tops out near 300 req/s on 2 cores, below what the service can take. Errors count
    connection failures, timeouts and every non-2xx answer."""
    wrk = shutil.which("wrk")
    if wrk is None:
        print(
            "wrk is not installed (Debian/Ubuntu: apt-get install wrk): the throughput target "
            "is judged on the httpx figure, which this client caps (see the no-op row)",
            file=sys.stderr,
        )
        return None
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(_WRK_SCRIPT)
    argv = [wrk, "-t2", f"-c{concurrency}", "-s", f.name, f"{url}/execute"]
    subprocess.run([*argv[:1], "-d3s", *argv[1:]], capture_output=True, check=True)  # warm-up
    out = subprocess.run(
        [*argv[:1], f"-d{seconds}s", *argv[1:]], capture_output=True, text=True, check=True
    ).stdout
    Path(f.name).unlink()
    rate = float(out.split("Requests/sec:")[1].split()[0])
    errors = int(out.split("ERRORS")[1].split()[0])
    latency_ms = out.split("Latency")[1].split()[0]
    return {"req_per_s": rate, "errors": errors, "mean_latency": latency_ms, "seconds": seconds}


def batch(url: str, n_traces: int) -> dict[str, Any]:
    import httpx

    traces: list[dict[str, Any]] = []
    with (FIXTURES / "traces.jsonl").open() as f:
        base = [json.loads(line) for line in f]
    while len(traces) < n_traces:
        for t in base[: n_traces - len(traces)]:
            traces.append({"trace_id": f"{t['trace_id']}#{len(traces)}", "data": t})
    code = (FIXTURES / "evals" / f"{BATCH_EVAL}.py").read_text()
    body = json.dumps(
        {"code": code, "function_name": BATCH_EVAL, "traces": traces, "timeout": 5000}
    ).encode()
    started = time.perf_counter()
    r = httpx.post(
        f"{url}/execute/batch",
        content=body,
        headers={"Content-Type": "application/json"},
        timeout=600,
    )
    wall = time.perf_counter() - started
    results = r.json().get("results", []) if r.status_code == 200 else []
    return {
        "traces": n_traces,
        "body_mb": round(len(body) / 1e6, 1),
        "status": r.status_code,
        "wall_s": round(wall, 3),
        "results": len(results),
        "passed": sum(1 for x in results if x.get("passed") is True),
        "failed": sum(1 for x in results if x.get("passed") is False),
    }


# -- the report --------------------------------------------------------------------------------


@dataclass
class Figures:
    evaljail: dict[str, Any]
    naive: dict[str, Any]


def _markdown(report: dict[str, Any]) -> str:
    e, n = report["evaljail"], report["naive"]
    day = datetime.date.today().isoformat()
    lines = [
        f"## {day} — executor service vs naive executor (`bench/service_bench.py`)",
        "",
        f"Machine: {report['machine']}. Python {report['python']}, kernel {report['kernel']}. "
        f"evaljail pool: min {report['pool_min']}, max {report['pool_max']}; naive: one "
        "`python3 -` per request (per trace in batches, "
        f"{report['cpus']} in parallel).",
        "",
        "| Measure | evaljail | naive | ratio | target |",
        "|---|---|---|---|---|",
        f"| `/execute` trivial eval p50 | {e['latency']['p50_ms']} ms | "
        f"{n['latency']['p50_ms']} ms | {report['ratios']['p50']}x | <= 5 ms, >= 10x |",
        f"| `/execute` trivial eval p95 | {e['latency']['p95_ms']} ms | "
        f"{n['latency']['p95_ms']} ms | {report['ratios']['p95']}x | |",
        f"| req/s at concurrency 32 (errors) | {e['throughput']['req_per_s']} "
        f"({e['throughput']['errors']}) | {n['throughput']['req_per_s']} "
        f"({n['throughput']['errors']}) | {report['ratios']['throughput']}x | >= 600, 0 errors |",
        f"| ... client CPU per request (httpx async) | "
        f"{e['throughput']['client_cpu_ms_per_req']} ms | "
        f"{n['throughput']['client_cpu_ms_per_req']} ms | | |",
        f"| ... server-process CPU per request (jailed children not included) | "
        f"{e['throughput']['server_cpu_ms_per_req']} ms | "
        f"{n['throughput']['server_cpu_ms_per_req']} ms | | |",
        f"| ... same client against a server that does nothing (raw ASGI on uvicorn) | "
        f"{report['noop_ceiling']['req_per_s']} req/s | | | ceiling of this client here |",
    ]
    ew, nw = e.get("wrk"), n.get("wrk")
    if ew and nw:
        lines.append(
            f"| req/s at concurrency 32, `wrk` (errors incl. non-2xx) | {ew['req_per_s']} "
            f"({ew['errors']}) | {nw['req_per_s']} ({nw['errors']}) | "
            f"{report['ratios']['throughput_wrk']}x | >= 600, 0 errors |"
        )
    lines += [
        f"| 1 000-trace `/execute/batch` ({BATCH_EVAL}, {e['batch']['body_mb']} MB) | "
        f"{e['batch']['wall_s']} s | {n['batch']['wall_s']} s | {report['ratios']['batch']}x "
        "| <= 2 s |",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--naive-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--noop-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="fewer requests (a smoke run)")
    parser.add_argument("--results", type=Path, help="append a dated markdown section here")
    parser.add_argument(
        "--pool-max", type=int, default=int(os.environ.get("PYTHON_POOL_MAX_SIZE", "15"))
    )
    args = parser.parse_args()
    if args.naive_server:
        naive_server(args.naive_server)
        return
    if args.noop_server:
        noop_server(args.noop_server)
        return

    scale = 0.2 if args.quick else 1.0
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EVALJAIL_", "PYTHON_"))}
    ev_port, nv_port = _free_port(), _free_port()
    ev_url, nv_url = f"http://127.0.0.1:{ev_port}", f"http://127.0.0.1:{nv_port}"
    ev_env = env | {
        "EVALJAIL_PORT": str(ev_port),
        "EVALJAIL_MAX_BODY_MB": "256",
        "PYTHON_POOL_MAX_SIZE": str(args.pool_max),
    }
    logs = Path(tempfile.mkdtemp(prefix="evaljail-bench-"))
    report: dict[str, Any] = {
        "benchmark": "service",
        "machine": f"{os.cpu_count()}-core {platform.machine()}",
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "pool_min": 3,
        "pool_max": args.pool_max,
    }
    with _server([str(EVALJAIL), "serve"], ev_env, ev_url, logs / "evaljail.log") as proc:
        print("evaljail: latency ...", file=sys.stderr)
        e_lat = latency(ev_url, int(1000 * scale), 50)
        print("evaljail: throughput ...", file=sys.stderr)
        throughput(ev_url, 200, 32)  # warm-up: let the pool grow
        e_thr = throughput(ev_url, int(6000 * scale), 32, server_pid=proc.pid)
        e_wrk = wrk_throughput(ev_url, 10 if not args.quick else 3)
        print("evaljail: batch ...", file=sys.stderr)
        batch(ev_url, 100)
        e_bat = batch(ev_url, 1000)
    naive_argv = [sys.executable, str(Path(__file__).resolve()), "--naive-server", str(nv_port)]
    with _server(naive_argv, env, nv_url, logs / "naive.log") as proc:
        print("naive: latency ...", file=sys.stderr)
        n_lat = latency(nv_url, int(100 * scale), 5)
        print("naive: throughput ...", file=sys.stderr)
        n_thr = throughput(nv_url, int(640 * scale), 32, server_pid=proc.pid)
        n_wrk = wrk_throughput(nv_url, 10 if not args.quick else 3)
        print("naive: batch ...", file=sys.stderr)
        n_bat = batch(nv_url, 1000)
    np_port = _free_port()
    np_url = f"http://127.0.0.1:{np_port}"
    noop_argv = [sys.executable, str(Path(__file__).resolve()), "--noop-server", str(np_port)]
    with _server(noop_argv, env, np_url, logs / "noop.log") as proc:
        print("no-op server: throughput ...", file=sys.stderr)
        report["noop_ceiling"] = throughput(np_url, int(4000 * scale), 32, server_pid=proc.pid)
    report["evaljail"] = {"latency": e_lat, "throughput": e_thr, "wrk": e_wrk, "batch": e_bat}
    report["naive"] = {"latency": n_lat, "throughput": n_thr, "wrk": n_wrk, "batch": n_bat}
    report["ratios"] = {
        "p50": round(n_lat["p50_ms"] / e_lat["p50_ms"], 1),
        "p95": round(n_lat["p95_ms"] / e_lat["p95_ms"], 1),
        "throughput": round(e_thr["req_per_s"] / max(n_thr["req_per_s"], 1e-9), 1),
        "batch": round(n_bat["wall_s"] / e_bat["wall_s"], 1),
    }
    if e_wrk and n_wrk:
        report["ratios"]["throughput_wrk"] = round(e_wrk["req_per_s"] / n_wrk["req_per_s"], 1)
    best = e_wrk or e_thr  # the load generator that is not the bottleneck, when there is one
    report["targets_met"] = {
        "p50_le_5ms": e_lat["p50_ms"] <= 5,
        "p50_10x_naive": report["ratios"]["p50"] >= 10,
        "req_per_s_ge_600_no_errors": best["req_per_s"] >= 600 and best["errors"] == 0,
        "batch_1000_le_2s": e_bat["wall_s"] <= 2 and e_bat["results"] == 1000,
    }
    markdown = _markdown(report)
    print(markdown)
    print(json.dumps(report))
    if args.results:
        with args.results.open("a") as f:
            f.write("\n" + markdown)


if __name__ == "__main__":
    main()
