"""Start-up refusals and clean shutdown of ``evaljail serve``."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from evaljail.service import create_app
from evaljail.settings import Settings

from .conftest import (
    EVALJAIL,
    alive,
    descendants,
    free_port,
    serve_env,
    start_server,
    stop_server,
    threaded,
)


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"EVALJAIL_PORT": "abc"}, "EVALJAIL_PORT"),
        ({"EVALJAIL_MEMORY_MB": "-3"}, "EVALJAIL_MEMORY_MB"),
        ({"PYTHON_POOL_MIN_SIZE": "9", "PYTHON_POOL_MAX_SIZE": "2"}, "PYTHON_POOL_MIN_SIZE"),
        ({"EVALJAIL_ISOLATION": "off"}, "EVALJAIL_ISOLATION"),
        ({"EVALJAIL_API_TOKEN": "short"}, "EVALJAIL_API_TOKEN"),
        ({"EVALJAIL_HOST": "0.0.0.0"}, "EVALJAIL_API_TOKEN"),
        ({"EVALJAIL_HOST": "not a host"}, "EVALJAIL_HOST"),
        ({"EVALJAIL_READ_TIMEOUT_MS": "5"}, "EVALJAIL_READ_TIMEOUT_MS"),
        ({"EVALJAIL_SEND_TIMEOUT_MS": "soon"}, "EVALJAIL_SEND_TIMEOUT_MS"),
    ],
    ids=[
        "port",
        "memory",
        "pool-sizes",
        "isolation",
        "short-token",
        "public-no-token",
        "host",
        "read-timeout",
        "send-timeout",
    ],
)
def test_invalid_configuration_exits_2_naming_the_variable(
    env: dict[str, str], needle: str
) -> None:
    full = serve_env(free_port()) | env
    proc = subprocess.run(
        [str(EVALJAIL), "serve"], env=full, capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("evaljail serve: ")


@pytest.mark.sandbox
def test_sigterm_drains_in_flight_work_and_leaves_nothing(tmp_path: Path) -> None:
    live = start_server(tmp_path / "serve.log", serve_env(free_port(), PYTHON_POOL_MIN_SIZE="1"))
    spin = "n = 0\nfor _ in range(6_000_000):\n    n += 1\nprint(n)"
    answer: dict[str, Any] = {}

    def slow_request() -> None:
        try:
            answer["r"] = httpx.post(
                f"{live.url}/execute", json={"code": spin, "timeout": 3000}, timeout=30
            )
        except httpx.HTTPError as exc:  # pragma: no cover - reported by the assert below
            answer["error"] = exc

    worker = threading.Thread(target=slow_request)
    worker.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # wait until the request is in flight
        metrics = httpx.get(f"{live.url}/metrics").text
        if "evaljail_http_in_flight_requests 2.0" in metrics:
            break
        time.sleep(0.01)
    code, left = stop_server(live)
    worker.join(30)
    assert "error" not in answer, answer
    assert answer["r"].status_code == 200
    assert answer["r"].json()["output"] == "6000000"
    assert code == 0, live.log_tail()
    assert not left, f"left behind: {sorted(left)}"
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{live.url}/health", timeout=2)
    log = live.log.read_text()
    assert spin not in log and "6_000_000" not in log  # logs never contain submitted code


@pytest.mark.sandbox
def test_port_in_use_exits_1_and_stops_the_pool(tmp_path: Path) -> None:
    live = start_server(tmp_path / "a.log", serve_env(free_port(), PYTHON_POOL_MIN_SIZE="1"))
    try:
        port = live.url.rsplit(":", 1)[1]
        proc = subprocess.Popen(
            [str(EVALJAIL), "serve"],
            env=serve_env(int(port), PYTHON_POOL_MIN_SIZE="1"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        _out, err = proc.communicate(timeout=60)
        assert proc.returncode == 1, err
        assert "Traceback" not in err
        assert not _children_of(proc.pid)
    finally:
        code, left = stop_server(live)
    assert code == 0 and not left


@pytest.mark.sandbox
def test_lifespan_builds_and_closes_its_own_pool() -> None:
    settings = Settings(pool_min_size=1, pool_max_size=2, port=free_port())
    app = create_app(settings)
    with threaded(app) as url:
        health = httpx.get(f"{url}/health").json()
        assert health["status"] == "ok" and health["backend"] == "local"
        assert httpx.post(f"{url}/execute", json={"code": "print(5)"}).json()["output"] == "5"
        pool = app.state.evaljail.runner.backend
        pids = set(pool.worker_pids())
        assert pids
    deadline = time.monotonic() + 10
    while alive(pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(pids)


def _children_of(pid: int) -> list[int]:
    ps = ["ps", "-eo", "pid=,ppid="]
    out = subprocess.run(ps, capture_output=True, text=True, check=True).stdout
    return [int(p) for p, pp in (line.split() for line in out.splitlines()) if int(pp) == pid]


@pytest.mark.sandbox
def test_sigint_is_a_clean_stop_too(tmp_path: Path) -> None:
    live = start_server(tmp_path / "serve.log", serve_env(free_port(), PYTHON_POOL_MIN_SIZE="1"))
    below = descendants(live.proc.pid)
    assert below  # the pool's jailed workers
    live.proc.send_signal(signal.SIGINT)
    assert live.proc.wait(30) == 0, live.log_tail()
    deadline = time.monotonic() + 5
    while alive(below) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(below)
    assert "Traceback" not in live.log.read_text()
