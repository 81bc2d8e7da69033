"""Fixtures for the service tests.

- ``live``: a real ``evaljail serve`` subprocess (real jailed pool) on a free loopback port,
  with an API token, torn down at the end of the session with a check that it left no process
  behind;
- ``mock_client``: the app in process over the mock backend (no jail), for the app's own logic;
- ``threaded_server``: the app on uvicorn in a thread (for the remote backend without a jail).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from evaljail.runner import PythonRunner
from evaljail.service import create_app
from evaljail.settings import Settings

REPO = Path(__file__).resolve().parents[2]
EVALJAIL = Path(sys.executable).with_name("evaljail")
TOKEN = "test-token-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (children, grandchildren ...), by walking ``ps``."""
    out = subprocess.run(
        ["ps", "-eo", "pid=,ppid="], capture_output=True, text=True, check=True
    ).stdout
    children: dict[int, list[int]] = {}
    for line in out.splitlines():
        p, pp = (int(x) for x in line.split())
        children.setdefault(pp, []).append(p)
    found: set[int] = set()
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def alive(pids: set[int]) -> set[int]:
    """The pids of ``pids`` that still exist and are not zombies."""
    out = subprocess.run(
        ["ps", "-eo", "pid=,stat="], capture_output=True, text=True, check=True
    ).stdout
    live = set()
    for line in out.splitlines():
        p, stat = line.split(None, 1)
        if int(p) in pids and not stat.startswith("Z"):
            live.add(int(p))
    return live


def serve_env(port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EVALJAIL_", "PYTHON_"))}
    env |= {
        "EVALJAIL_PORT": str(port),
        "PYTHON_POOL_MIN_SIZE": "2",
        "PYTHON_POOL_MAX_SIZE": "4",
        "EVALJAIL_TIMEOUT_MS": "2000",
        "EVALJAIL_MAX_TIMEOUT_MS": "3000",
    }
    env |= extra
    return env


@dataclass
class Live:
    """A running ``evaljail serve``."""

    url: str
    proc: subprocess.Popen[bytes]
    log: Path
    token: str | None

    def client(self, *, token: str | None = None, **kw: Any) -> httpx.Client:
        tok = self.token if token is None else token
        headers = {"Authorization": f"Bearer {tok}"} if tok else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30.0, **kw)

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def start_server(log: Path, env: dict[str, str], timeout_s: float = 60.0) -> Live:
    port = int(env["EVALJAIL_PORT"])
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [str(EVALJAIL), "serve"], env=env, stdout=sink, stderr=sink, cwd=REPO
        )
    live = Live(url=url, proc=proc, log=log, token=env.get("EVALJAIL_API_TOKEN"))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"evaljail serve exited with {proc.returncode}:\n{live.log_tail()}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/health", timeout=1.0).status_code == 200:
                return live
        time.sleep(0.05)
    stop_server(live)
    raise RuntimeError(f"evaljail serve did not become healthy:\n{live.log_tail()}")


def stop_server(live: Live, timeout_s: float = 30.0) -> tuple[int, set[int]]:
    """SIGTERM, wait; returns the exit code and the processes it left alive."""
    below = descendants(live.proc.pid)
    if live.proc.poll() is None:
        live.proc.send_signal(signal.SIGTERM)
    try:
        code = live.proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        live.proc.kill()
        code = live.proc.wait(10)
    deadline = time.monotonic() + 5
    left = alive(below)
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = alive(below)
    for pid in left:  # do not leak into the next tests, but report it
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return code, left


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """The real service with a token, shared by the session's sandbox tests."""
    from tests.conftest import require_jail

    require_jail()
    log = tmp_path_factory.mktemp("live") / "serve.log"
    server = start_server(log, serve_env(free_port(), EVALJAIL_API_TOKEN=TOKEN))
    yield server
    code, left = stop_server(server)
    assert code == 0, f"evaljail serve exited with {code}:\n{server.log_tail()}"
    assert not left, f"evaljail serve left processes behind: {sorted(left)}"
    log_text = log.read_text(errors="replace")
    assert TOKEN not in log_text, "the API token leaked into the log"
    assert "while True: pass" not in log_text, "submitted code leaked into the log"


@pytest.fixture
def client(live: Live) -> Iterator[httpx.Client]:
    with live.client() as c:
        yield c


@pytest.fixture
def mock_settings() -> Settings:
    return Settings()


@contextlib.contextmanager
def threaded(app: Any) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a thread; yields its URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, log_config=None, access_log=False, lifespan="on", ws="none")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


@pytest.fixture
def threaded_server() -> Callable[..., contextlib.AbstractContextManager[str]]:
    return threaded


@pytest.fixture
def mock_runner(mock_settings: Settings) -> Iterator[PythonRunner]:
    runner = PythonRunner(backend="mock", settings=mock_settings)
    yield runner
    runner.close()


@pytest.fixture
def mock_app(mock_settings: Settings, mock_runner: PythonRunner) -> Any:
    return create_app(mock_settings, runner=mock_runner)
