"""HTTP routes of the named sandboxes (``/sandboxes/...``), over one :class:`SandboxNamespace`.

- ``POST   /sandboxes/{id}/exec``          run a shell command (creates the sandbox if needed)
- ``PUT    /sandboxes/{id}/files/{path}``  write a file from the raw body (creates the sandbox)
- ``GET    /sandboxes/{id}/files/{path}``  a file's bytes, or a directory's entries as JSON
- ``DELETE /sandboxes/{id}/files/{path}``  delete a file or a directory tree
- ``GET    /sandboxes``                    every live sandbox
- ``GET    /sandboxes/{id}``               one sandbox
- ``DELETE /sandboxes/{id}``               destroy a sandbox

Errors are evaljail exceptions raised as is (``SandboxNotFoundError`` 404, ``SandboxPathError``
and ``ConfigurationError`` 400, ``SandboxLimitError`` 429); the app's handlers render them. The
blocking work runs in threads, never on the event loop: commands, which hold their thread for up
to ``max_timeout_ms``, on threads of their own (at most ``max_running_commands`` run, beyond that
``429 sandbox_limit`` at once), everything else in the shared threadpool, which commands
therefore can never fill. Authentication is the app's: it includes this router with its
dependencies.

File paths in URLs are percent-encoded bytes: a name that is not UTF-8 (``bad%FFname``) reaches
the file it names, and listings give each entry's ``path_url`` in that form.
"""

from __future__ import annotations

import os
from typing import Annotated, Any, Literal
from urllib.parse import unquote_to_bytes

import anyio
import anyio.to_thread
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr
from starlette.concurrency import run_in_threadpool

from ..sandboxes import SandboxNamespace

__all__ = [
    "FileEntryOut",
    "FileListResponse",
    "FileWrittenResponse",
    "SandboxExecRequest",
    "SandboxExecResponse",
    "SandboxInfoOut",
    "SandboxListResponse",
    "build_sandbox_router",
]


class SandboxExecRequest(BaseModel):
    """One shell command for ``/bin/sh -c`` in the sandbox's jail."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    command: StrictStr = Field(min_length=1, max_length=100_000, description="a shell command")
    timeout: Annotated[StrictInt, Field(ge=1)] | None = Field(
        default=None, description="wall-clock limit in ms; capped at the namespace's maximum"
    )
    cwd: StrictStr | None = Field(
        default=None, description="working directory in the workspace (default /workspace)"
    )
    env: dict[StrictStr, StrictStr] | None = Field(
        default=None, description="variables added to the jail's clean environment"
    )
    keep_alive: StrictBool | None = Field(
        default=None, description="never reap this sandbox (unchanged when omitted)"
    )
    sleep_after: StrictStr | None = Field(
        default=None,
        description="reap after this long idle, e.g. '30s', '30m', '2h' (unchanged when "
        "omitted; '30m' for a new sandbox)",
    )


class SandboxExecResponse(BaseModel):
    """What the command did (a failing or killed command is a result, not an error)."""

    stdout: str
    stderr: str
    exit_code: int = Field(description="the shell's status; -9 when killed at the deadline")
    duration_ms: float
    timed_out: bool
    output_truncated: bool


class FileEntryOut(BaseModel):
    name: str = Field(description="the entry's name; U+FFFD for bytes that are not UTF-8")
    path: str = Field(description="relative to the workspace; U+FFFD for bytes not UTF-8")
    path_url: str = Field(
        description="the path's exact bytes percent-encoded: its URL below /files/"
    )
    utf8: bool = Field(description="false when name or path had bytes that are not UTF-8")
    kind: Literal["file", "directory", "symlink", "other"]
    size_bytes: int
    modified_at: float


class FileListResponse(BaseModel):
    path: str
    entries: list[FileEntryOut]


class FileWrittenResponse(BaseModel):
    path: str
    size_bytes: int


class SandboxInfoOut(BaseModel):
    sandbox_id: str
    keep_alive: bool
    sleep_after: str
    created_at: float
    last_used_at: float
    workspace_bytes: int
    disk_quota_bytes: int
    running_commands: int


class SandboxListResponse(BaseModel):
    sandboxes: list[SandboxInfoOut]


_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "invalid sandbox id, path or argument"},
    404: {"description": "no such sandbox (or file)"},
    429: {"description": "sandbox count, disk quota or running commands exhausted"},
}

#: Threads for commands beyond ``max_running_commands``: those refused at once by the namespace.
_REFUSAL_THREADS = 8


def _text(path: str) -> str:
    """A path for JSON: bytes that are not UTF-8 (surrogate-escaped) become U+FFFD."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _exact_path(request: Request, sandbox_id: str, path: str) -> str:
    """The ``{path}`` of a ``/files/`` URL with its exact bytes.

    The server decodes the URL as UTF-8 with U+FFFD for anything else, so ``bad%FFname`` would
    name a file that does not exist. The raw URL has the bytes; those that are not UTF-8 are
    spelt as Python spells file names (``os.fsdecode``), which the namespace's file calls turn
    back into the same bytes. Only used when it decodes to the path the router matched.
    """
    raw = request.scope.get("raw_path")
    if not isinstance(raw, bytes):
        return path
    marker = f"/sandboxes/{sandbox_id}/files/".encode()
    decoded = unquote_to_bytes(raw)
    start = decoded.find(marker)
    if start < 0:
        return path
    exact = decoded[start + len(marker) :]
    if exact.decode("utf-8", "replace") != path:
        return path
    return os.fsdecode(exact)


_RAW_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


def build_sandbox_router(namespace: SandboxNamespace) -> APIRouter:
    """The ``/sandboxes`` routes over ``namespace`` (the caller owns and closes it)."""
    router = APIRouter(prefix="/sandboxes", tags=["sandboxes"], responses=_ERRORS)
    max_timeout_ms = namespace.limits.max_timeout_ms
    # Commands hold their thread for as long as they run (up to max_timeout_ms): on the shared
    # threadpool (40 threads), 40 sleeping commands stalled every other route for their whole
    # run. They get their own threads; the namespace refuses those past max_running_commands.
    command_threads = anyio.CapacityLimiter(
        namespace.limits.max_running_commands + _REFUSAL_THREADS
    )

    @router.post("/{sandbox_id}/exec", response_model=SandboxExecResponse)
    async def exec_command(sandbox_id: str, body: SandboxExecRequest) -> dict[str, Any]:
        """Run a command in the sandbox, creating it if needed. ``429 sandbox_limit`` (details
        ``limit: max_running_commands``) when the namespace already runs its maximum."""

        def run() -> dict[str, Any]:
            sandbox = namespace.get(
                sandbox_id, keep_alive=body.keep_alive, sleep_after=body.sleep_after
            )
            timeout = None if body.timeout is None else min(body.timeout, max_timeout_ms)
            result = sandbox.exec(body.command, timeout=timeout, cwd=body.cwd, env=body.env)
            return result.to_dict()

        return await anyio.to_thread.run_sync(run, limiter=command_threads)

    @router.put(
        "/{sandbox_id}/files/{path:path}",
        response_model=FileWrittenResponse,
        openapi_extra=_RAW_BODY,
    )
    async def put_file(sandbox_id: str, path: str, request: Request) -> dict[str, Any]:
        """Write the raw request body to ``path`` (parents created), creating the sandbox."""
        content = await request.body()
        exact = _exact_path(request, sandbox_id, path)

        def write() -> int:
            return namespace.get(sandbox_id).write_file(exact, content)

        size = await run_in_threadpool(write)
        return {"path": _text(exact), "size_bytes": size}

    @router.get(
        "/{sandbox_id}/files/{path:path}",
        response_class=Response,
        responses={
            200: {
                "description": "a file's bytes, or a directory's entries",
                "content": {
                    "application/octet-stream": {},
                    "application/json": {
                        "schema": FileListResponse.model_json_schema(
                            ref_template="#/components/schemas/{model}"
                        )
                    },
                },
            }
        },
    )
    def get_file(sandbox_id: str, path: str, request: Request) -> Response:
        """A file's content (``application/octet-stream``) or, for a directory, its entries."""
        path = _exact_path(request, sandbox_id, path)
        sandbox = namespace.find(sandbox_id)
        if sandbox.stat(path).kind == "directory":
            entries = [e.to_dict() for e in sandbox.list_files(path)]
            return JSONResponse({"path": _text(path), "entries": entries})
        return Response(content=sandbox.read_file(path), media_type="application/octet-stream")

    @router.delete("/{sandbox_id}/files/{path:path}", status_code=204, response_class=Response)
    def delete_file(sandbox_id: str, path: str, request: Request) -> Response:
        """Delete a file, a symbolic link or a directory tree."""
        namespace.find(sandbox_id).delete_file(_exact_path(request, sandbox_id, path))
        return Response(status_code=204)

    @router.get("", response_model=SandboxListResponse)
    def list_sandboxes() -> dict[str, Any]:
        """Every live sandbox."""
        return {"sandboxes": [info.to_dict() for info in namespace.list_sandboxes()]}

    @router.get("/{sandbox_id}", response_model=SandboxInfoOut)
    def get_sandbox_info(sandbox_id: str) -> dict[str, Any]:
        """One sandbox's state."""
        return namespace.find(sandbox_id).info().to_dict()

    @router.delete("/{sandbox_id}", status_code=204, response_class=Response)
    def destroy_sandbox(sandbox_id: str) -> Response:
        """Kill the sandbox's commands and delete its workspace."""
        namespace.destroy(sandbox_id)
        return Response(status_code=204)

    return router
