"""The zygote: a warm, jailed interpreter that forks one confined child per execution.

It preloads the profile's modules once, keeps the seccomp program in memory, marks itself
non-dumpable (so no child can open its ``/proc/<pid>/mem``), and then serves requests from the
pool: for every execution (every trace of a batch) it forks a fresh child, enforces the
wall-clock deadline with SIGKILL, measures the child with ``wait4`` and answers with one frame.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib
import marshal
import mmap
import os
import select
import signal
import stat
import sys
import time
from types import CodeType
from typing import Any

from .child import (
    SOURCE_NAME,
    TRACE_HEADER,
    Context,
    SeccompFilter,
    compile_error,
    compile_source,
    spare_main,
)
from .guard import refuse_unpickling, restricted_builtins
from .protocol import (
    FRAME_HEADER,
    MAX_FRAME_BYTES,
    RESULT_HEAD_SIZE,
    FrameError,
    FrameTimeout,
    FrameTooLarge,
    decode_frame,
    encode_frame,
    encode_result,
    result_head,
    write_all,
    write_all_v,
)

__all__ = ["main"]

_PR_SET_DUMPABLE = 4
_REHEARSAL: dict[str, Any] = {
    "op": "run",
    "id": 0,
    "mode": "script",
    "code": "print(2 + 2)",
    "function": None,
    "policy": {"allowed_imports": [], "blocked_builtins": [], "limits": {"timeout_ms": 1}},
    "budget_ms": 1.0,
}
_RESULT_SLACK_BYTES = 1024 * 1024
_BUILTINS_CACHE_SIZE = 16
#: Modules every child may need on its error paths: import them once, here.
#: ``_strptime``: what ``datetime.strptime`` imports on first use (see ``guard``), loaded once
#: here rather than from disk in every child that parses a timestamp.
_ALWAYS_PRELOAD = ("traceback", "linecache", "ast", "marshal", "unicodedata", "_strptime")


class _Spare:
    """A pre-forked child waiting for its one request (``context``: forked for that batch)."""

    __slots__ = ("context", "pid", "result_fd", "work_fd")

    def __init__(self, pid: int, work_fd: int, result_fd: int, context: Context | None) -> None:
        self.pid = pid
        self.work_fd = work_fd
        self.result_fd = result_fd
        self.context = context

    def discard(self) -> None:
        for fd in (self.work_fd, self.result_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
        with contextlib.suppress(OSError):
            os.kill(self.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)


class _NoForkBuffer:
    """A growable buffer in memory that no child inherits (``MADV_DONTFORK``)."""

    def __init__(self, size: int) -> None:
        self._map = _dontfork_map(size)
        self.view = memoryview(self._map)

    def reserve(self, size: int, keep: int) -> None:
        """Room for ``size`` bytes, keeping the first ``keep``."""
        if size <= len(self._map):
            return
        bigger = _dontfork_map(2 * size)
        bigger[:keep] = self._map[:keep]
        self.view.release()
        self._map.close()
        self._map, self.view = bigger, memoryview(bigger)


def _read_fully(fd: int, view: memoryview) -> None:
    """Fill ``view`` from ``fd`` (blocking); FrameError when the peer closes first."""
    got = 0
    while got < len(view):
        n = os.readv(fd, [view[got:]])
        if not n:
            raise FrameError("the peer closed the pipe")
        got += n


class _Requests:
    """Reads the pool's frames, exactly, into memory no child inherits.

    Exact reads (a length, then that many bytes) leave nothing of the next request buffered
    in the zygote, and reading into a ``MADV_DONTFORK`` mapping keeps request bytes out of the
    zygote's heap: a spare forked before a request gets the request's frame as received.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._buf = _NoForkBuffer(1 << 16)
        self._size = 0

    def read(self) -> dict[str, Any]:
        """The next frame as a dict; raises FrameError on EOF or garbage."""
        head = FRAME_HEADER.size
        self._size = 0
        _read_fully(self.fd, self._buf.view[:head])
        (size,) = FRAME_HEADER.unpack_from(self._buf.view)
        if size > MAX_FRAME_BYTES:
            raise FrameError(f"frame of {size} bytes exceeds {MAX_FRAME_BYTES}")
        self._buf.reserve(head + size, keep=head)
        _read_fully(self.fd, self._buf.view[head : head + size])
        self._size = head + size
        return decode_frame(self._buf.view[head : self._size])

    def frame(self) -> memoryview:
        """The frame just read, as it came (length prefix included)."""
        return self._buf.view[: self._size]

    def read_into(self, view: memoryview) -> None:
        """Fill ``view`` with the bytes that follow the frame (a batch's traces)."""
        _read_fully(self.fd, view)


class _Blob:
    """A batch's traces, read straight from the pool's pipe into memory no child inherits.

    ``MADV_DONTFORK`` keeps the traces out of every fork: a child sees only the trace it is
    sent, and forking does not copy page tables for them.
    """

    def __init__(self, reader: _Requests, size: int) -> None:
        self._map: mmap.mmap | None = None
        self.view = memoryview(b"")
        if size <= 0:
            return
        self._map = _dontfork_map(size)
        self.view = memoryview(self._map)
        reader.read_into(self.view)

    def close(self) -> None:
        self.view.release()
        if self._map is not None:
            with contextlib.suppress(BufferError):  # a slice is still alive: the GC unmaps it
                self._map.close()


class _ResultBuffer:
    """Where each child's result frame is read and relayed from: memory no child inherits.

    The child's frame is read at an offset that leaves room to write the envelope in front of
    its payload, so a result crosses the zygote in one read and one write, without entering
    the zygote's heap (where a later child could find what is left of it).
    """

    _AT = RESULT_HEAD_SIZE - FRAME_HEADER.size  # the child's length lands before its payload

    def __init__(self) -> None:
        self._buf = _NoForkBuffer(1 << 20)

    def read(self, fd: int, deadline: float, limit: int) -> int:
        """Read one frame from ``fd``; the size of its payload."""
        at = self._AT
        got = 0
        need = FRAME_HEADER.size
        while got < need:
            remaining = deadline - time.monotonic()
            ready, _, _ = select.select([fd], [], [], max(remaining, 0))
            if not ready:
                raise FrameTimeout("timed out waiting for a frame")
            want = at + max(need, got + 65536)
            self._buf.reserve(want, keep=at + got)
            n = os.readv(fd, [self._buf.view[at + got : want]])
            if not n:
                raise FrameError("the peer closed the pipe")
            got += n
            if need == FRAME_HEADER.size and got >= need:
                (size,) = FRAME_HEADER.unpack_from(self._buf.view, at)
                if size > limit:
                    raise FrameTooLarge(f"frame of {size} bytes exceeds the limit of {limit}")
                need += size
        return need - FRAME_HEADER.size

    def frame(
        self, request_id: int, index: int, elapsed_ms: float, done: bool, size: int
    ) -> memoryview:
        """The result frame for the payload just read, ready to write."""
        view = self._buf.view
        view[:RESULT_HEAD_SIZE] = result_head(request_id, index, elapsed_ms, done, size)
        return view[: RESULT_HEAD_SIZE + size]


def _dontfork_map(size: int) -> mmap.mmap:
    memory = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    with contextlib.suppress(OSError, AttributeError):
        memory.madvise(mmap.MADV_DONTFORK)
    return memory


class _Zygote:
    def __init__(self, req_fd: int, resp_fd: int, devnull_fd: int) -> None:
        self.req_fd = req_fd
        self.resp_fd = resp_fd
        self.devnull_fd = devnull_fd
        self.requests = _Requests(req_fd)
        self.seccomp: SeccompFilter | None = None
        self.results = _ResultBuffer()
        self.builtins_cache: dict[tuple[tuple[str, ...], tuple[str, ...]], dict[str, Any]] = {}
        self.spare: _Spare | None = None
        self.to_reap: list[tuple[int, float]] = []
        self.executions = 0
        self.answered = 0  #: a child whose result was read: killed once it is relayed
        self.warm_code: bytes | None = None
        self._libc_fork = ctypes.PyDLL(None, use_errno=True).fork

    # -- start-up ------------------------------------------------------------------------------

    def init(self, message: dict[str, Any]) -> dict[str, Any]:
        loaded: list[str] = []
        failed: dict[str, str] = {}
        for name in (*_ALWAYS_PRELOAD, *message.get("preload", [])):
            try:
                importlib.import_module(name)
                loaded.append(name)
            except Exception as exc:
                failed[name] = f"{type(exc).__name__}: {exc}"
        # For good, in the zygote and so in every child: the jail never unpickles, and the
        # allowed libraries unpickle in more places than static analysis can name.
        sys.addaudithook(refuse_unpickling)
        child_bpf = message.get("child_seccomp_bpf")
        if child_bpf:
            self.seccomp = SeccompFilter(bytes.fromhex(child_bpf))
        policy = message.get("policy")
        if policy:
            self._builtins_for(policy)
        for path in message.get("seal", []):
            _seal(path)
        warm = message.get("warm_code")
        if warm:
            self.warm_code = marshal.dumps(compile(warm, SOURCE_NAME, "exec"))
        libc = ctypes.CDLL(None, use_errno=True)
        dumpable_off = libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) == 0
        zygote_bpf = message.get("seccomp_bpf")
        if zygote_bpf:  # from here on the zygote itself is confined, all but process control
            SeccompFilter(bytes.fromhex(zygote_bpf)).install()
            if self.seccomp is not None:
                self.seccomp.needs_no_new_privs = False
        gc.collect()
        gc.freeze()
        return {
            "op": "ready",
            "pid": os.getpid(),
            "preloaded": loaded,
            "failed": failed,
            "seccomp": bool(zygote_bpf) and self.seccomp is not None,
            "non_dumpable": dumpable_off,
            "python": sys.version.split()[0],
        }

    def _builtins_for(self, policy: dict[str, Any]) -> dict[str, Any]:
        key = (tuple(policy["allowed_imports"]), tuple(policy["blocked_builtins"]))
        safe = self.builtins_cache.get(key)
        if safe is None:
            safe = restricted_builtins(*key)
            if len(self.builtins_cache) < _BUILTINS_CACHE_SIZE:
                self.builtins_cache[key] = safe
        return safe

    # -- children ------------------------------------------------------------------------------

    def _fork_spare(self, context: Context | None = None, *, warm: bool = True) -> _Spare:
        work_r, work_w = os.pipe()
        result_r, result_w = os.pipe()
        pid = self._fork()
        if pid == 0:  # the spare child
            spare_main(
                work_fd=work_r,
                result_fd=result_w,
                devnull_fd=self.devnull_fd,
                close_fds=(work_w, result_r, self.req_fd, self.resp_fd, self.devnull_fd),
                seccomp=self.seccomp,
                builtins_cache=self.builtins_cache,
                context=context,
                # the warm-up buys a spare's latency; mid-batch it only costs throughput
                warm=warm and context is None,
                warm_code=self.warm_code,
            )
        os.close(work_r)
        os.close(result_w)
        return _Spare(pid, work_w, result_r, context)

    def _fork(self) -> int:
        """fork(2) without CPython's Python-level at-fork hooks.

        The zygote is single-threaded and the child never returns to the zygote's loop, so the
        hooks (thread bookkeeping, reseeding, lock re-initialisation) only cost copy-on-write
        faults. Called through ``PyDLL`` so the GIL stays held across the call.
        """
        pid = int(self._libc_fork())
        if pid < 0:
            raise OSError(ctypes.get_errno(), "fork failed")
        return pid

    def _ready_spare(self, *, warm: bool = True) -> None:
        """Between requests: a spare for whatever comes next.

        When idle (``warm``), the spare warms up and the zygote rehearses its request path, so
        that the next request finds both fast. When the pool has more work queued, the next
        request is already on its way: warming would only cost CPU that it needs.
        """
        if self.spare is not None and self.spare.context is not None:
            self.spare.discard()  # forked for a batch that is over
            self.spare = None
        if self.spare is None:
            self.spare = self._fork_spare(warm=warm)
        if warm:
            self._rehearse()

    def _rehearse(self) -> None:
        """Walk the request path once with a dummy request, right after forking a spare.

        Forking made every page of the zygote copy-on-write; the first write to each one after
        that costs a fault (about 3-9 us on the VMs we measured, ~100 of them per request).
        Paying them here, while idle, keeps them off the next request's critical path.
        """
        frame = encode_frame(_REHEARSAL)
        message = decode_frame(memoryview(frame)[FRAME_HEADER.size :])
        work = [frame, TRACE_HEADER.pack(-1)]
        del message, work
        encode_result(0, 0, 0.0, True, b'{"status":"ok","stdout":"4\\n","stderr":""}')

    def _take_spare(self, context: Context | None) -> _Spare:
        spare, self.spare = self.spare, None
        if spare is not None and spare.context is not None and spare.context is not context:
            spare.discard()
            spare = None
        return spare if spare is not None else self._fork_spare(context)

    # -- requests ------------------------------------------------------------------------------

    def send(self, message: dict[str, Any]) -> None:
        write_all(self.resp_fd, encode_frame(message))

    def run(self, message: dict[str, Any]) -> None:
        blob = _Blob(self.requests, int(message.get("blob_len") or 0))
        try:
            self._run(message, blob.view)
        finally:
            blob.close()

    def _run(self, message: dict[str, Any], traces: memoryview) -> None:
        request_id = int(message["id"])
        policy = message["policy"]
        source = message["code"]
        mode = message["mode"]
        function = message.get("function")
        timeout_s = policy["limits"]["timeout_ms"] / 1000
        budget_end = time.monotonic() + message.get("budget_ms", 1e12) / 1000
        limit = 8 * int(policy["limits"]["output_bytes"]) + _RESULT_SLACK_BYTES
        # Compiled here only for children forked mid-batch, which inherit it; a spare forked
        # before the request compiles the source itself (the zygote's faults cost the same).
        compiled: CodeType | BaseException | None = None
        entries: list[list[int]] = message.get("items") or [[0, -1]]
        context: Context | None = None  # made once this request needs a child of its own
        offset = 0
        last = len(entries) - 1
        for position, (index, size) in enumerate(entries):
            trace = traces[offset : offset + size] if size >= 0 else None
            offset += max(size, 0)
            elapsed_ms = 0.0
            payload: int | bytes
            work: list[bytes | memoryview]
            if isinstance(compiled, BaseException):
                payload = _encode_payload(compile_error(compiled))
            elif time.monotonic() >= budget_end:
                payload = _encode_payload({"status": "budget"})
            else:
                wall = min(timeout_s, max(budget_end - time.monotonic(), 0.001))
                spare = self._take_spare(context)
                work = [TRACE_HEADER.pack(-1 if trace is None else len(trace))]
                if spare.context is None:  # forked before this request: send the request too
                    work.insert(0, self.requests.frame())
                if trace is not None:
                    work.append(trace)
                # a timeout cut short by the batch's budget is the budget's, not the trace's
                cut = "budget" if wall < timeout_s else "timeout"
                payload, elapsed_ms = self.execute(spare, work, wall, limit, cut)
            trace = None
            work = []
            done = position == last
            if isinstance(payload, int):  # the child's own frame, relayed as it wrote it
                frame = self.results.frame(request_id, index, elapsed_ms, done, payload)
                write_all(self.resp_fd, frame)
                frame.release()
            else:
                write_all(self.resp_fd, encode_result(request_id, index, elapsed_ms, done, payload))
            if self.answered:
                with contextlib.suppress(OSError):
                    os.kill(self.answered, signal.SIGKILL)
                self.answered = 0
            if done:
                return
            self.reap()
            if compiled is None:
                compiled = compile_source(source)
            if self.spare is None and isinstance(compiled, CodeType):
                if context is None:
                    context = Context(
                        code=compiled, source=source, mode=mode, function=function,
                        limits=policy["limits"], builtins=self._builtins_for(policy),
                    )  # fmt: skip
                self.spare = self._fork_spare(context)
        self.send({"op": "done", "id": request_id})

    def execute(
        self,
        child: _Spare,
        work: list[bytes | memoryview],
        wall_s: float,
        limit: int,
        cut: str,
    ) -> tuple[int | bytes, float]:
        """Hand ``work`` to a spare and wait for its result.

        Returns the size of the child's result frame, left in ``self.results``, or a result the
        zygote wrote itself (the child died, timed out or lied), and the elapsed time.
        """
        self.executions += 1
        started = time.perf_counter()
        killed = None
        try:
            write_all_v(child.work_fd, work)
        except OSError:
            killed = "crashed"
        with contextlib.suppress(OSError):
            os.close(child.work_fd)
        deadline = started + wall_s
        size = -1
        if killed is None:
            try:
                size = self.results.read(child.result_fd, time.monotonic() + wall_s, limit)
            except FrameTimeout:
                killed = cut
            except FrameTooLarge:
                killed = "oversized"
            except FrameError:  # closed early or garbled: the child's exit status says why
                pass
        os.close(child.result_fd)
        if size >= 0 and killed is None:
            elapsed_ms = round((time.perf_counter() - started) * 1000, 3)
            # Answered: it has nothing left to do. Killed once its result is relayed (off the
            # critical path), before anything else is forked or run, so that it cannot stay
            # behind (sleeping, under its CPU limit) to meddle with the executions that follow.
            self.answered = child.pid
            self.to_reap.append((child.pid, max(deadline, time.perf_counter() + 0.1)))
            return size, elapsed_ms
        # no complete result: the child is dead, stuck or lying: kill it and ask the kernel
        with contextlib.suppress(OSError):
            os.kill(child.pid, signal.SIGKILL)
        _, status, usage = os.wait4(child.pid, 0)
        result: dict[str, Any]
        if killed in ("timeout", "budget"):
            result = {"status": killed}
        elif killed == "oversized":
            result = {"status": "crashed", "error": "the result frame exceeded its size limit"}
        else:
            result = self._decode(status)
        elapsed_ms = round((time.perf_counter() - started) * 1000, 3)
        result["cpu_ms"] = round((usage.ru_utime + usage.ru_stime) * 1000, 3)
        result["maxrss_kb"] = usage.ru_maxrss
        if os.WIFSIGNALED(status):
            result["signal"] = os.WTERMSIG(status)
        return _encode_payload(result), elapsed_ms

    def reap(self) -> None:
        """Collect children that have exited; kill any still running past its deadline.

        Never waits: a child's exit takes ~0.3 ms here (tearing down its memory), and waiting
        for it delayed the next spare's fork, and so the next request.
        """
        now = time.perf_counter()
        running = []
        for pid, deadline in self.to_reap:
            try:
                gone = os.waitpid(pid, os.WNOHANG)[0] != 0
            except ChildProcessError:
                gone = True
            if not gone and now >= deadline:  # answered, then kept running: stop it
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)
                gone = True
            if not gone:
                running.append((pid, deadline))
        self.to_reap = running

    def _await_request(self) -> None:
        """Wait for the pool's next frame, stopping any child that outlives its deadline."""
        while self.to_reap:
            timeout = max(min(d for _, d in self.to_reap) - time.perf_counter(), 0.0)
            ready, _, _ = select.select([self.req_fd], [], [], timeout)
            self.reap()
            if ready:
                return

    @staticmethod
    def _decode(status: int) -> dict[str, Any]:
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            if sig in (signal.SIGXCPU, signal.SIGKILL):
                return {"status": "cpu"}
            return {"status": "crashed", "error": f"killed by signal {signal.Signals(sig).name}"}
        code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -1
        return {"status": "crashed", "error": f"exited with status {code} and no result"}

    def serve(self) -> None:
        try:
            self._ready_spare()
            while True:
                self._await_request()
                try:
                    message = self.requests.read()
                except FrameError:
                    return  # the pool went away
                op = message.get("op")
                if op == "run":
                    self.run(message)
                    busy = bool(message.get("busy"))
                    del message  # the next spare must not inherit this request
                    self.reap()
                    self._ready_spare(warm=not busy)
                elif op == "ping":
                    self.send({"op": "pong", "executions": self.executions})
                elif op == "exit":
                    return
        finally:
            if self.spare is not None:
                self.spare.discard()


def _encode_payload(result: dict[str, Any]) -> bytes:
    """A result the zygote writes itself, encoded like a child's."""
    return encode_frame(result)[4:]


def _seal(root: str) -> None:
    """Make a writable tree read-only for everyone (the children may not chmod it back).

    Only the tree's own filesystem: a runtime installed under it (a checkout in /tmp) is
    bind-mounted read-only on top and is neither ours to change nor changeable.
    """
    if not os.path.isdir(root):
        return
    device = os.stat(root).st_dev
    files: list[str] = []
    dirs: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if os.lstat(os.path.join(dirpath, d)).st_dev == device]
        dirs += [os.path.join(dirpath, d) for d in dirnames]
        files += [os.path.join(dirpath, f) for f in filenames]
    for path in files:
        info = os.lstat(path)
        if info.st_dev == device and not stat.S_ISLNK(info.st_mode):  # a link has no mode
            os.chmod(path, 0o444)
    for path in reversed(dirs):
        os.chmod(path, 0o555)  # noqa: S103 - read-only is the point
    os.chmod(root, 0o555)  # noqa: S103


def main() -> None:
    """Entry point inside the jail: fd 0 carries requests, fd 1 answers, fd 2 is the log."""
    req_fd = os.dup(0)
    resp_fd = os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    zygote = _Zygote(req_fd, resp_fd, devnull)
    try:
        first = zygote.requests.read()
    except FrameError:
        return
    zygote.send(zygote.init(first))
    zygote.serve()
