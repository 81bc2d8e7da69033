"""The ``/sandboxes`` routes, through FastAPI's TestClient on a small app with only this router
(the full app, its auth and its error handlers belong to ``service/app.py``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import anyio.to_thread
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from evaljail.sandboxes import SandboxLimits, SandboxNamespace
from evaljail.service.errors import install_error_handlers
from evaljail.service.sandboxes import build_sandbox_router

from .conftest import MIB

pytestmark = pytest.mark.sandbox


def _app(namespace: SandboxNamespace) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)  # the service's own: an unexpected exception is a 500
    app.include_router(build_sandbox_router(namespace))
    return app


@pytest.fixture
def client(make_namespace: Callable[..., SandboxNamespace]) -> Iterator[TestClient]:
    ns = make_namespace(limits=SandboxLimits(max_sandboxes=3, disk_bytes=8 * MIB))
    with TestClient(_app(ns)) as test_client:
        yield test_client


def _error(response: Any) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details", "request_id"}
    return body["error"]  # type: ignore[no-any-return]


def test_exec_print_2_plus_2(client: TestClient) -> None:
    response = client.post(
        "/sandboxes/my-sandbox/exec", json={"command": 'python3 -c "print(2+2)"'}
    )
    assert response.status_code == 200
    body = response.json()
    assert body == {
        "stdout": "4\n",
        "stderr": "",
        "exit_code": 0,
        "duration_ms": body["duration_ms"],
        "timed_out": False,
        "output_truncated": False,
    }


def test_exec_options(client: TestClient) -> None:
    client.put("/sandboxes/opts/files/sub/x.txt", content=b"")
    response = client.post(
        "/sandboxes/opts/exec",
        json={
            "command": 'pwd; echo "$GREETING"; sleep 5',
            "timeout": 400,
            "cwd": "sub",
            "env": {"GREETING": "hi"},
            "keep_alive": True,
            "sleep_after": "2h",
        },
    )
    body = response.json()
    assert body["stdout"] == "/workspace/sub\nhi\n"
    assert body["timed_out"] is True and body["exit_code"] == -9
    info = client.get("/sandboxes/opts").json()
    assert (info["keep_alive"], info["sleep_after"]) == (True, "2h")
    # Omitted options leave the sandbox's settings as they are.
    client.post("/sandboxes/opts/exec", json={"command": "true"})
    assert client.get("/sandboxes/opts").json()["keep_alive"] is True


def test_files_round_trip(client: TestClient) -> None:
    payload = bytes(range(256)) * 10
    put = client.put("/sandboxes/files/files/dir/blob.bin", content=payload)
    assert put.status_code == 200
    assert put.json() == {"path": "dir/blob.bin", "size_bytes": len(payload)}
    got = client.get("/sandboxes/files/files/dir/blob.bin")
    assert got.status_code == 200
    assert got.headers["content-type"] == "application/octet-stream"
    assert got.content == payload
    listing = client.get("/sandboxes/files/files/dir")
    assert listing.headers["content-type"] == "application/json"
    assert [e["name"] for e in listing.json()["entries"]] == ["blob.bin"]
    root = client.get("/sandboxes/files/files/").json()
    assert [(e["name"], e["kind"]) for e in root["entries"]] == [("dir", "directory")]
    exec_ = client.post("/sandboxes/files/exec", json={"command": "wc -c < dir/blob.bin"})
    assert exec_.json()["stdout"].strip() == str(len(payload))
    assert client.delete("/sandboxes/files/files/dir/blob.bin").status_code == 204
    missing = client.get("/sandboxes/files/files/dir/blob.bin")
    assert missing.status_code == 404
    assert _error(missing)["code"] == "sandbox_file_not_found"
    assert client.delete("/sandboxes/files/files/dir").status_code == 204


def test_list_and_destroy(client: TestClient) -> None:
    assert client.get("/sandboxes").json() == {"sandboxes": []}
    client.post("/sandboxes/b/exec", json={"command": "true"})
    client.put("/sandboxes/a/files/f", content=b"x")
    listed = client.get("/sandboxes").json()["sandboxes"]
    assert [s["sandbox_id"] for s in listed] == ["a", "b"]
    assert set(listed[0]) == {
        "sandbox_id", "keep_alive", "sleep_after", "created_at", "last_used_at",
        "workspace_bytes", "disk_quota_bytes", "running_commands",
    }  # fmt: skip
    assert client.delete("/sandboxes/a").status_code == 204
    gone = client.delete("/sandboxes/a")
    assert gone.status_code == 404
    assert _error(gone)["code"] == "sandbox_not_found"
    assert [s["sandbox_id"] for s in client.get("/sandboxes").json()["sandboxes"]] == ["b"]


def test_reads_do_not_create_sandboxes(client: TestClient) -> None:
    for method, url in [
        ("GET", "/sandboxes/ghost"),
        ("GET", "/sandboxes/ghost/files/x"),
        ("DELETE", "/sandboxes/ghost/files/x"),
        ("DELETE", "/sandboxes/ghost"),
    ]:
        response = client.request(method, url)
        assert response.status_code == 404, url
        assert _error(response)["code"] == "sandbox_not_found"
    assert client.get("/sandboxes").json() == {"sandboxes": []}


@pytest.mark.parametrize(
    "path",
    [
        "..%2F..%2Fetc%2Fpasswd",
        "%2Fetc%2Fpasswd",
        "a%2F..%2F..%2Fetc%2Fshadow",
        "link%2Fetc%2Fpasswd",
        "pw",
    ],
)
def test_path_traversal_is_400(client: TestClient, path: str) -> None:
    client.post("/sandboxes/trav/exec", json={"command": "ln -s / link; ln -s /etc/passwd pw"})
    # Deleting the planted link "pw" itself is allowed (its target stays); reading and
    # writing through it are not.
    for method in ("GET", "PUT") if path == "pw" else ("GET", "PUT", "DELETE"):
        response = client.request(method, f"/sandboxes/trav/files/{path}", content=b"PWNED")
        assert response.status_code == 400, (method, path, response.text)
        assert _error(response)["code"] == "sandbox_path_invalid"
        assert "root:" not in response.text


@pytest.mark.parametrize("bad_id", ["%2E%2E", "-x", "a" * 300, "sandbox%C3%A9", "a%20b", ".env"])
def test_bad_ids_are_400(client: TestClient, bad_id: str) -> None:
    response = client.post(f"/sandboxes/{bad_id}/exec", json={"command": "true"})
    assert response.status_code == 400, response.text
    assert _error(response)["code"] == "sandbox_path_invalid"


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({}, 422),
        ({"command": ""}, 422),
        ({"command": "true", "timeout": "5"}, 422),
        ({"command": "true", "timeout": 0}, 422),
        ({"command": "true", "keep_alive": "yes"}, 422),
        ({"command": "true", "unknown": 1}, 422),
        ({"command": "true", "env": {"A": 1}}, 422),
        ({"command": "true", "sleep_after": "soon"}, 400),
        ({"command": "true", "env": {"A=B": "x"}}, 400),
        ({"command": "true", "cwd": "/etc"}, 400),
    ],
)
def test_bad_exec_bodies(client: TestClient, body: dict[str, Any], status: int) -> None:
    response = client.post("/sandboxes/bodies/exec", json=body)
    assert response.status_code == status, response.text
    if status == 400:
        assert _error(response)["code"] in ("invalid_configuration", "sandbox_path_invalid")


def test_timeouts_are_capped(make_namespace: Callable[..., SandboxNamespace]) -> None:
    ns = make_namespace(limits=SandboxLimits(default_timeout_ms=300, max_timeout_ms=500))
    with TestClient(_app(ns)) as client:
        response = client.post(
            "/sandboxes/capped/exec", json={"command": "sleep 5", "timeout": 10**7}
        )
        body = response.json()
        assert body["timed_out"] is True
        assert body["duration_ms"] < 2500


def test_limits_are_429(client: TestClient) -> None:
    for name in ("one", "two", "three"):
        assert client.post(f"/sandboxes/{name}/exec", json={"command": "true"}).status_code == 200
    response = client.post("/sandboxes/four/exec", json={"command": "true"})
    assert response.status_code == 429
    assert _error(response)["code"] == "sandbox_limit"
    too_big = client.put("/sandboxes/one/files/big", content=b"x" * (9 * MIB))
    assert too_big.status_code == 429


def test_openapi_documents_the_routes(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert set(paths) >= {
        "/sandboxes",
        "/sandboxes/{sandbox_id}",
        "/sandboxes/{sandbox_id}/exec",
        "/sandboxes/{sandbox_id}/files/{path}",
    }
    put = paths["/sandboxes/{sandbox_id}/files/{path}"]["put"]
    assert "application/octet-stream" in put["requestBody"]["content"]


def test_names_that_are_not_utf8_are_listed_read_and_deleted(client: TestClient) -> None:
    """File names are bytes. ``bad\\377name`` made every listing of its directory a 500 (the
    JSON encoder refused the surrogate that stands for the byte) and the file itself
    unreachable (the server decodes URLs as UTF-8, so ``bad%FFname`` named another file)."""
    made = client.post(
        "/sandboxes/bytes/exec",
        json={"command": "mkdir d; printf top > \"$(printf 'top\\377')\";"
                         " printf inner > \"d/$(printf 'bad\\377name')\"; touch d/ok"},
    )  # fmt: skip
    assert made.json()["exit_code"] == 0, made.json()
    root = client.get("/sandboxes/bytes/files/")
    assert root.status_code == 200, root.text
    assert {e["path_url"] for e in root.json()["entries"]} == {"d", "top%FF"}
    listing = client.get("/sandboxes/bytes/files/d")
    assert listing.status_code == 200, listing.text
    entries = {e["path_url"]: e for e in listing.json()["entries"]}
    bad = entries["d/bad%FFname"]
    assert (bad["name"], bad["path"], bad["utf8"], bad["kind"], bad["size_bytes"]) == (
        "bad\ufffdname",
        "d/bad\ufffdname",
        False,
        "file",
        5,
    )
    assert (entries["d/ok"]["path"], entries["d/ok"]["utf8"]) == ("d/ok", True)
    assert client.get("/sandboxes/bytes/files/d/bad%FFname").content == b"inner"
    assert client.get("/sandboxes/bytes/files/d/bad%EF%BF%BDname").status_code == 404
    assert client.delete("/sandboxes/bytes/files/d/bad%FFname").status_code == 204
    assert client.delete("/sandboxes/bytes/files/top%FF").status_code == 204
    assert [e["name"] for e in client.get("/sandboxes/bytes/files/d").json()["entries"]] == ["ok"]
    put = client.put("/sandboxes/bytes/files/new%FE", content=b"w")
    assert put.status_code == 200
    assert put.json() == {"path": "new\ufffd", "size_bytes": 1}
    shown = client.post("/sandboxes/bytes/exec", json={"command": "cat \"$(printf 'new\\376')\""})
    assert shown.json()["stdout"] == "w"


def _wait_for(predicate: Callable[[], bool], timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def _running(ns: SandboxNamespace) -> int:
    return sum(info.running_commands for info in ns.list_sandboxes())


def _start_sleepers(client: TestClient, count: int) -> list[threading.Thread]:
    body = {"command": "sleep 60", "timeout": 8_000}
    threads = [
        threading.Thread(
            target=client.post, args=(f"/sandboxes/sleeper{i % 2}/exec",), kwargs={"json": body}
        )
        for i in range(count)
    ]
    for thread in threads:
        thread.start()
    return threads


def test_long_commands_do_not_starve_the_other_routes(
    make_namespace: Callable[..., SandboxNamespace],
) -> None:
    """The routes were sync handlers on the shared threadpool (anyio's 40 threads) and a
    command holds its thread while it runs: 40 ``sleep`` commands made ``GET /sandboxes`` wait
    9.3 s, and could stall every sandbox route for 10 minutes. Scaled down: a 4-thread pool,
    4 sleeping commands, and every other route must still answer at once."""
    ns = make_namespace()
    with TestClient(_app(ns)) as client:

        def shrink() -> None:
            anyio.to_thread.current_default_thread_limiter().total_tokens = 4

        client.portal.call(shrink)  # type: ignore[union-attr]
        threads = _start_sleepers(client, 4)
        _wait_for(lambda: _running(ns) == 4)
        started = time.monotonic()
        assert client.get("/sandboxes").status_code == 200
        assert client.get("/sandboxes/sleeper0").status_code == 200
        assert client.put("/sandboxes/other/files/f", content=b"x").status_code == 200
        assert client.get("/sandboxes/other/files/f").content == b"x"
        assert client.get("/sandboxes/other/files/").status_code == 200
        assert client.delete("/sandboxes/other/files/f").status_code == 204
        waited = time.monotonic() - started
        for name in ("sleeper0", "sleeper1"):
            assert client.delete(f"/sandboxes/{name}").status_code == 204
        for thread in threads:
            thread.join(timeout=15)
        assert waited < 4, f"other routes waited {waited:.1f} s behind running commands"


def test_commands_past_the_cap_are_refused_at_once(
    make_namespace: Callable[..., SandboxNamespace],
) -> None:
    """At most ``max_running_commands`` run in a namespace; one more is ``429 sandbox_limit``
    at once (no thread held, no queue), and runs again once a slot is free."""
    ns = make_namespace(limits=SandboxLimits(max_running_commands=2, disk_bytes=8 * MIB))
    with TestClient(_app(ns)) as client:
        threads = _start_sleepers(client, 2)
        _wait_for(lambda: _running(ns) == 2)
        started = time.monotonic()
        refused = client.post("/sandboxes/third/exec", json={"command": "echo PWNED"})
        assert time.monotonic() - started < 2
        assert refused.status_code == 429
        error = _error(refused)
        assert error["code"] == "sandbox_limit"
        assert error["details"]["limit"] == "max_running_commands"
        assert refused.headers["retry-after"] == "1"  # busy, unlike a quota: retry soon
        assert ns.usage()["commands_refused_total"] == 1
        for name in ("sleeper0", "sleeper1"):
            client.delete(f"/sandboxes/{name}")
        for thread in threads:
            thread.join(timeout=15)
        again = client.post("/sandboxes/third/exec", json={"command": "echo ok"})
        assert again.json()["stdout"] == "ok\n"
