"""The ``/sandboxes`` routes, through FastAPI's TestClient on a small app with only this router
(the full app, its auth and its error handlers belong to ``service/app.py``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient

from evaljail.errors import EvaljailError, status_and_code
from evaljail.sandboxes import SandboxLimits, SandboxNamespace
from evaljail.service.sandboxes import build_sandbox_router

from .conftest import MIB

pytestmark = pytest.mark.sandbox


def _app(namespace: SandboxNamespace) -> FastAPI:
    app = FastAPI()

    async def on_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, EvaljailError)
        status, code = status_and_code(exc)
        body = {"code": code, "message": exc.message, "details": exc.details, "request_id": "t"}
        return JSONResponse({"error": body}, status_code=status)

    app.add_exception_handler(EvaljailError, on_error)
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
