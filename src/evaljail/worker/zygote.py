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
import hashlib
import importlib
import json
import marshal
import os
import select
import signal
import sys
import time
from collections import OrderedDict
from typing import Any

from .child import SOURCE_NAME, SeccompFilter, spare_main
from .guard import restricted_builtins
from .protocol import FrameError, FrameReader, encode_frame, write_all

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
_CODE_CACHE_SIZE = 16
#: Modules every child may need on its error paths: import them once, here.
_ALWAYS_PRELOAD = ("traceback", "linecache", "ast", "marshal", "unicodedata")


class _Spare:
    """A pre-forked child waiting for its one request."""

    __slots__ = ("pid", "result_fd", "work_fd")

    def __init__(self, pid: int, work_fd: int, result_fd: int) -> None:
        self.pid = pid
        self.work_fd = work_fd
        self.result_fd = result_fd

    def discard(self) -> None:
        for fd in (self.work_fd, self.result_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
        with contextlib.suppress(OSError):
            os.kill(self.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)


class _Zygote:
    def __init__(self, req_fd: int, resp_fd: int, devnull_fd: int) -> None:
        self.req_fd = req_fd
        self.resp_fd = resp_fd
        self.devnull_fd = devnull_fd
        self.reader = FrameReader(req_fd)
        self.seccomp: SeccompFilter | None = None
        self.codes: OrderedDict[str, bytes | BaseException] = OrderedDict()
        self.builtins_cache: dict[tuple[tuple[str, ...], tuple[str, ...]], dict[str, Any]] = {}
        self.spare: _Spare | None = None
        self.to_reap: list[tuple[int, float]] = []
        self.executions = 0
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
        bpf_hex = message.get("seccomp_bpf")
        if bpf_hex:
            self.seccomp = SeccompFilter(bytes.fromhex(bpf_hex))
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
        gc.collect()
        gc.freeze()
        self.spare = self._fork_spare()
        self._rehearse()
        return {
            "op": "ready",
            "pid": os.getpid(),
            "preloaded": loaded,
            "failed": failed,
            "seccomp": self.seccomp is not None,
            "non_dumpable": dumpable_off,
            "python": sys.version.split()[0],
        }

    def _builtins_for(self, policy: dict[str, Any]) -> None:
        key = (tuple(policy["allowed_imports"]), tuple(policy["blocked_builtins"]))
        if key not in self.builtins_cache and len(self.builtins_cache) < _CODE_CACHE_SIZE:
            self.builtins_cache[key] = restricted_builtins(*key)

    # -- children ------------------------------------------------------------------------------

    def _fork_spare(self, *, warm: bool = True) -> _Spare:
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
                warm=warm,
                warm_code=self.warm_code,
            )
        os.close(work_r)
        os.close(result_w)
        return _Spare(pid, work_w, result_r)

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

    def _rehearse(self) -> None:
        """Walk the request path once with a dummy request, right after forking a spare.

        Forking made every page of the zygote copy-on-write; the first write to each one after
        that costs a fault (about 9 us on the VMs we measured, ~100 of them per request).
        Paying them here, while idle, keeps them off the next request's critical path.
        """
        frame = encode_frame(_REHEARSAL)
        message = json.loads(frame[4:])
        self.compile(message["code"])
        header = {
            "source": message["code"],
            "mode": message["mode"],
            "function": None,
            "policy": message["policy"],
        }
        encode_frame({**header, "code_len": 1, "trace_len": None})
        reply = {"status": "ok", "stdout": "", "stderr": "", "cpu_ms": 0.0, "maxrss_kb": 0}
        reply.update(op="result", id=0, index=0, elapsed_ms=0.0)
        encode_frame({**reply, "done": True})

    def _take_spare(self) -> _Spare:
        spare, self.spare = self.spare, None
        return spare if spare is not None else self._fork_spare()

    # -- requests ------------------------------------------------------------------------------

    def compile(self, source: str) -> bytes | BaseException:
        """The marshalled code object for ``source`` (cached), or the compile error."""
        key = hashlib.sha256(source.encode("utf-8", "surrogatepass")).hexdigest()
        cached = self.codes.get(key)
        if cached is not None:
            self.codes.move_to_end(key)
            return cached
        try:
            compiled: bytes | BaseException = marshal.dumps(compile(source, SOURCE_NAME, "exec"))
        except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError) as exc:
            compiled = exc
        self.codes[key] = compiled
        if len(self.codes) > _CODE_CACHE_SIZE:
            self.codes.popitem(last=False)
        return compiled

    def send(self, message: dict[str, Any]) -> None:
        write_all(self.resp_fd, encode_frame(message))

    def run(self, message: dict[str, Any]) -> None:
        request_id = message["id"]
        policy = message["policy"]
        source = message["code"]
        timeout_s = policy["limits"]["timeout_ms"] / 1000
        budget_end = time.monotonic() + message.get("budget_ms", 1e12) / 1000
        code = self.compile(source)
        self._builtins_for(policy)
        header = {
            "source": source,
            "mode": message["mode"],
            "function": message.get("function"),
            "policy": policy,
        }
        items = message.get("items") or [[0, None]]
        last = len(items) - 1
        for position, (index, trace_json) in enumerate(items):
            if isinstance(code, BaseException):
                result: dict[str, Any] = {
                    "status": "error",
                    "error_type": type(code).__name__,
                    "error": f"{type(code).__name__}: {code}",
                    "elapsed_ms": 0.0,
                }
            elif time.monotonic() >= budget_end:
                result = {"status": "budget", "elapsed_ms": 0.0}
            else:
                wall = min(timeout_s, max(budget_end - time.monotonic(), 0.001))
                trace = trace_json.encode("utf-8") if trace_json is not None else None
                result = self.execute(header, code, trace, policy, wall)
                if result.get("status") == "timeout" and wall < timeout_s:
                    result["status"] = "budget"  # cut short by the batch, not its own limit
            result.update(op="result", id=request_id, index=index)
            if position == last:
                # Answer, then tidy up: the pool may hand this worker's thread other work
                # (it queues in the pipe) while the zygote reaps and forks the next spare.
                self.send({**result, "done": True})
                self.reap()
                if self.spare is None:
                    self.spare = self._fork_spare(warm=True)
                self._rehearse()
                return
            self.send(result)
            self.reap()
            if self.spare is None:
                # Mid-batch spares skip the warm-up: it buys latency, and costs throughput.
                self.spare = self._fork_spare(warm=False)
        self.send({"op": "done", "id": request_id})

    def execute(
        self,
        header: dict[str, Any],
        code: bytes,
        trace: bytes | None,
        policy: dict[str, Any],
        wall_s: float,
    ) -> dict[str, Any]:
        self.executions += 1
        child = self._take_spare()
        started = time.perf_counter()
        work = encode_frame(
            {**header, "code_len": len(code), "trace_len": None if trace is None else len(trace)}
        )
        killed = None
        try:
            write_all(child.work_fd, work + code + (trace or b""))
        except OSError:
            killed = "crashed"
        with contextlib.suppress(OSError):
            os.close(child.work_fd)
        limit = 8 * int(policy["limits"]["output_bytes"]) + _RESULT_SLACK_BYTES
        deadline = started + wall_s
        reader = FrameReader(child.result_fd, limit=limit)
        frame: dict[str, Any] | None = None
        if killed is None:
            try:
                frame = reader.read(deadline=time.monotonic() + wall_s)
            except FrameError as exc:
                killed = "timeout" if "timed out" in str(exc) else None
                if "exceeds the limit" in str(exc):
                    killed = "oversized"
        os.close(child.result_fd)
        elapsed_ms = (time.perf_counter() - started) * 1000
        if frame is not None and killed is None:
            frame["elapsed_ms"] = round(elapsed_ms, 3)
            self.to_reap.append((child.pid, max(deadline, time.perf_counter() + 0.1)))
            return frame
        # no complete result: the child is dead, stuck or lying: kill it and ask the kernel
        with contextlib.suppress(OSError):
            os.kill(child.pid, signal.SIGKILL)
        _, status, usage = os.wait4(child.pid, 0)
        result: dict[str, Any]
        if killed == "timeout":
            result = {"status": "timeout"}
        elif killed == "oversized":
            result = {"status": "crashed", "error": "the result frame exceeded its size limit"}
        else:
            result = self._decode(status)
        result["elapsed_ms"] = round((time.perf_counter() - started) * 1000, 3)
        result["cpu_ms"] = round((usage.ru_utime + usage.ru_stime) * 1000, 3)
        result["maxrss_kb"] = usage.ru_maxrss
        if os.WIFSIGNALED(status):
            result["signal"] = os.WTERMSIG(status)
        return result

    def reap(self) -> None:
        """Wait for children that already answered; kill any that outlive their deadline."""
        while self.to_reap:
            pid, deadline = self.to_reap.pop()
            try:
                pidfd = os.pidfd_open(pid)
            except ProcessLookupError:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)
                continue
            try:
                ready, _, _ = select.select([pidfd], [], [], max(deadline - time.perf_counter(), 0))
                if not ready:
                    os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            finally:
                os.close(pidfd)

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
            while True:
                try:
                    message = self.reader.read()
                except FrameError:
                    return  # the pool went away
                op = message.get("op")
                if op == "run":
                    self.run(message)
                elif op == "ping":
                    self.send({"op": "pong", "executions": self.executions})
                elif op == "exit":
                    return
        finally:
            if self.spare is not None:
                self.spare.discard()


def _seal(root: str) -> None:
    """Make a writable tree read-only for everyone (the children may not chmod it back)."""
    if not os.path.isdir(root):
        return
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames:
            os.chmod(os.path.join(dirpath, name), 0o444)
        for name in dirnames:
            os.chmod(os.path.join(dirpath, name), 0o555)  # noqa: S103 - read-only is the point
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
        first = zygote.reader.read()
    except FrameError:
        return
    zygote.send(zygote.init(first))
    zygote.serve()
