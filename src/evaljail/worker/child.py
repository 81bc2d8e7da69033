"""The per-execution child: forked from the zygote, confines itself, runs the code, reports.

Order matters and is the point of this module:

1. (forked ahead of need, as a *spare*) drop every descriptor but its two pipes (stdio becomes
   /dev/null) and add its seccomp filter (no new processes, no signals to others) to the one it
   inherits from the zygote (no sockets, exec, ptrace, mounts ...: see
   ``isolation.seccomp``), then wait for one request;
2. read and compile the request (a child forked for a running batch inherits it compiled and
   reads only its trace), then decode the trace (its memory belongs to the baseline);
3. rlimits: address space = current size + the memory limit, CPU seconds, no file writes,
   few descriptors, no core dumps;
4. the Python guard: restricted builtins, allow-list imports, bounded stdout/stderr;
5. run, then write exactly one result frame and ``_exit``.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import linecache
import marshal
import os
import resource
import struct
import sys
import traceback
from collections.abc import Callable
from types import CodeType
from typing import Any, NoReturn

from .guard import BoundedWriter, OutputLimitExceeded, describe_value, restricted_builtins
from .protocol import FRAME_HEADER, encode_frame, write_all

__all__ = [
    "SOURCE_NAME",
    "TRACE_HEADER",
    "Context",
    "SeccompFilter",
    "compile_error",
    "compile_source",
    "error_message",
    "spare_main",
    "user_traceback",
]

#: The filename user code is compiled under; tracebacks keep only frames from it.
SOURCE_NAME = "<eval>"

_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
_RESERVE_BYTES = 16 * 1024 * 1024  # head-room to report a MemoryError
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
#: What ``compile()`` raises for bad source (a result, not a sandbox failure).
_COMPILE_ERRORS = (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError)
#: What the zygote sends a child forked for a running batch: the trace's length, -1 for none.
TRACE_HEADER = struct.Struct(">q")


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))


class SeccompFilter:
    """A BPF program kept in memory by the zygote and installed by each child."""

    def __init__(self, bpf: bytes) -> None:
        self._buffer = ctypes.create_string_buffer(bpf, len(bpf))
        self._prog = _SockFprog(len(bpf) // 8, ctypes.cast(self._buffer, ctypes.c_void_p))
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._libc.prctl.restype = ctypes.c_int
        #: False once the process already has it (a zygote that installed its own filter)
        self.needs_no_new_privs = True

    def install(self) -> None:
        libc = self._libc
        if self.needs_no_new_privs and libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
        if libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(self._prog), 0, 0):
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP) failed")


def _address_space_bytes() -> int:
    fd = os.open("/proc/self/statm", os.O_RDONLY)
    try:
        pages = int(os.read(fd, 256).split()[0])
    finally:
        os.close(fd)
    return pages * _PAGE_SIZE


def _apply_rlimits(limits: dict[str, Any]) -> None:
    cpu = int(limits["cpu_seconds"])
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    nofile = int(limits["open_files"])
    resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
    base = _address_space_bytes()
    soft = base + int(limits["memory_bytes"])
    resource.setrlimit(resource.RLIMIT_AS, (soft, soft + _RESERVE_BYTES))


def _release_reserve() -> None:
    """After a MemoryError: let the child use its reserve to report it."""
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (hard, hard))


def user_traceback(exc: BaseException) -> str:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == SOURCE_NAME]
    lines = ["Traceback (most recent call last):\n"] if frames else []
    lines += traceback.format_list(frames)
    lines += traceback.format_exception_only(type(exc), exc)
    return "".join(lines)


def error_message(exc: BaseException) -> str:
    """``Type: message``, as the last line of a traceback; user code's ``__str__`` may fail."""
    try:
        text = str(exc)
    except Exception:
        text = "<exception str() failed>"  # what CPython's traceback prints then
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Context:
    """One request as each of its children sees it.

    The zygote prepares it once per batch, before forking the batch's children, so that a child
    only has to read its trace; a spare forked before its request arrived builds it from the
    request header instead.
    """

    __slots__ = (
        "builtins", "code", "function", "limits", "lines", "mode", "source", "stderr", "stdout"
    )  # fmt: skip

    def __init__(
        self,
        *,
        code: CodeType,
        source: str,
        mode: str,
        function: str | None,
        limits: dict[str, Any],
        builtins: dict[str, Any],
    ) -> None:
        self.code = code
        self.source = source
        self.lines = source.splitlines(True)
        self.mode = mode
        self.function = function
        self.limits = limits
        self.builtins = builtins
        # Made here, so a batch's children each get their own (copy-on-write) empty pair
        # instead of building one: fewer pages written per trace.
        self.stdout = BoundedWriter(int(limits["output_bytes"]), "stdout")
        self.stderr = BoundedWriter(int(limits["output_bytes"]), "stderr")


class _Retired(Exception):
    """The zygote closed a spare's work pipe without sending it anything."""


def _read_exact(fd: int, size: int) -> bytes | bytearray:
    data = os.read(fd, size)
    if len(data) == size:
        return data
    if not data:
        raise _Retired
    buf = bytearray(size)
    buf[: len(data)] = data
    view = memoryview(buf)
    got = len(data)
    while got < size:
        n = os.readv(fd, [view[got:]])
        if not n:
            raise EOFError("the zygote closed the work pipe mid-request")
        got += n
    return buf


def _read_request(
    fd: int, builtins_cache: dict[tuple[tuple[str, ...], tuple[str, ...]], dict[str, Any]]
) -> Context | dict[str, Any]:
    """A spare's request, the pool's own frame as the zygote received it; compiled here.

    A compile error is the execution's result (the same one the zygote gives a batch)."""
    (size,) = FRAME_HEADER.unpack(_read_exact(fd, FRAME_HEADER.size))
    request = json.loads(_read_exact(fd, size))
    source = request["code"]
    code = compile_source(source)
    if not isinstance(code, CodeType):
        return compile_error(code)
    policy = request["policy"]
    key = (tuple(policy["allowed_imports"]), tuple(policy["blocked_builtins"]))
    return Context(
        code=code,
        source=source,
        mode=request["mode"],
        function=request.get("function"),
        limits=policy["limits"],
        builtins=builtins_cache.get(key) or restricted_builtins(*key),
    )


def compile_source(source: str) -> CodeType | BaseException:
    """The code object for ``source``, or the exception that says why it does not compile."""
    try:
        return compile(source, SOURCE_NAME, "exec")
    except _COMPILE_ERRORS as exc:
        return exc


def compile_error(exc: BaseException) -> dict[str, Any]:
    """The result of code that does not compile."""
    name = type(exc).__name__
    return {"status": "error", "error_type": name, "error": f"{name}: {exc}"[:4096]}


def _read_trace(fd: int) -> bytes | bytearray | None:
    """A batch child's request: the trace's length (-1: none), then its JSON bytes."""
    (size,) = TRACE_HEADER.unpack(_read_exact(fd, TRACE_HEADER.size))
    return _read_exact(fd, size) if size >= 0 else None


def spare_main(
    *,
    work_fd: int,
    result_fd: int,
    devnull_fd: int,
    close_fds: tuple[int, ...],
    seccomp: SeccompFilter | None,
    builtins_cache: dict[tuple[tuple[str, ...], tuple[str, ...]], dict[str, Any]],
    context: Context | None = None,
    warm: bool = True,
    warm_code: bytes | None = None,
) -> NoReturn:
    """A pre-forked child: confine what does not depend on the trace, wait, then run it.

    ``context`` is the request when the zygote forked this child for a batch it is running;
    without it, the child is a spare for whatever request comes next. Never returns: the
    child always leaves through ``os._exit``. It has never run user code before this execution
    and is discarded after it.
    """
    status = 70
    try:
        for fd in (0, 1, 2):
            os.dup2(devnull_fd, fd)
        for fd in close_fds:
            os.close(fd)
        if seccomp is not None:
            seccomp.install()
        request: Context | dict[str, Any]
        if context is None:
            if warm:
                _warm_up(builtins_cache, warm_code)
            request = _read_request(work_fd, builtins_cache)
        else:
            request = context
        trace_json = _read_trace(work_fd)
        os.close(work_fd)
        result = _run(request, trace_json) if isinstance(request, Context) else request
        usage = resource.getrusage(resource.RUSAGE_SELF)
        result["cpu_ms"] = round((usage.ru_utime + usage.ru_stime) * 1000, 3)
        result["maxrss_kb"] = usage.ru_maxrss
        write_all(result_fd, encode_frame(result))
        status = 0
    except _Retired:
        status = 0
    except BaseException as exc:
        with contextlib.suppress(BaseException):  # nothing left to report to
            write_all(
                result_fd,
                encode_frame({"status": "internal", "error": error_message(exc)[:2048]}),
            )
    os._exit(status)


def _warm_up(
    builtins_cache: dict[tuple[tuple[str, ...], tuple[str, ...]], dict[str, Any]],
    warm_code: bytes | None,
) -> None:
    """Touch, while idle, the memory that a run will touch.

    Every page a forked child first writes costs a copy-on-write fault (about 9 us on the
    virtual machines we measured, 200+ of them for a trivial run). Walking the same path once
    with a harmless payload moves those faults off the critical path.
    """
    safe = next(iter(builtins_cache.values()), None)
    if safe is None:
        return
    code = compile("print(1)", SOURCE_NAME, "exec")
    writer = BoundedWriter(64, "stdout")
    saved = sys.stdout
    sys.stdout = writer
    try:
        exec(code, {"__builtins__": safe, "__name__": "__main__"})
        if warm_code is not None:  # the profile's own warm-up (e.g. a tiny DataFrame)
            exec(marshal.loads(warm_code), {"__builtins__": safe})  # noqa: S302
    except Exception:  # noqa: S110 - warming is best effort
        pass
    finally:
        sys.stdout = saved
    json.loads('{"code": "print(1)", "policy": {"limits": {"timeout_ms": 1}}}')
    _decode_trace(b'{"trace_id": "warm", "steps": [{"input": "x", "output": null}]}')
    encode_frame({"status": "ok", "stdout": writer.getvalue(), "stderr": "", "value": None})
    resource.getrlimit(resource.RLIMIT_AS)
    _address_space_bytes()


_SCAN: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def _decode_trace(data: bytes | bytearray) -> Any:
    """``json.loads`` for the host's own encoding, straight through the C scanner.

    The pure-Python layers of ``json.loads`` (encoding detection, decoder methods) are cold
    code in a fresh child: skipping them saves ~30 copy-on-write faults per trace.
    """
    text = data.decode("utf-8")
    # The trace as the client sent it: JSON has no digit limit, so a 5 000-digit number is
    # decoded too (the eval then meets CPython's limit only if it converts it to text).
    sys.set_int_max_str_digits(0)
    try:
        try:
            value, end = _SCAN(text, 0)
        except StopIteration:
            end = -1
        return value if end == len(text) else json.loads(text)
    finally:
        sys.set_int_max_str_digits(_INT_MAX_STR_DIGITS)


_INT_MAX_STR_DIGITS = sys.get_int_max_str_digits()


def _run(context: Context, trace_json: bytes | bytearray | None) -> dict[str, Any]:
    limits = context.limits
    mode = context.mode
    function_name = context.function
    out = context.stdout
    err = context.stderr
    result: dict[str, Any]
    trace = _decode_trace(trace_json) if trace_json is not None else None
    trace_json = None
    linecache.cache[SOURCE_NAME] = (len(context.source), None, context.lines, SOURCE_NAME)
    _apply_rlimits(limits)
    sys.stdout, sys.stderr, sys.stdin = out, err, None
    namespace: dict[str, Any] = {
        "__builtins__": context.builtins,
        "__name__": "__main__" if mode == "script" else "evaljail_eval",
    }
    try:
        exec(context.code, namespace)
        if mode == "script":
            result = {"status": "ok"}
        else:
            fn = namespace.get(function_name or "")
            if not callable(fn):
                raise NameError(f"eval function {function_name!r} is not defined")
            value = fn(trace)
            result = {
                "status": "ok",
                "value": describe_value(value, text_limit=int(limits["output_bytes"])),
            }
    except MemoryError:
        namespace.clear()
        trace = None
        _release_reserve()
        result = {"status": "memory", "error_type": "MemoryError"}
    except OutputLimitExceeded as exc:
        result = {"status": "output_limit", "stream": str(exc)}
    except SystemExit as exc:
        if exc.code in (None, 0) and mode == "script":  # an eval must return, not exit
            result = {"status": "ok"}
        else:
            result = {
                "status": "error",
                "error_type": "SystemExit",
                "error": error_message(exc)[:4096],
                "traceback": user_traceback(exc),
            }
    except BaseException as exc:
        result = {
            "status": "error",
            "error_type": type(exc).__name__,
            "error": error_message(exc)[:4096],
            "traceback": user_traceback(exc)[:16384],
        }
    sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
    if result["status"] == "ok" and (out.truncated or err.truncated):
        result = {"status": "output_limit", "stream": "stdout" if out.truncated else "stderr"}
    result["stdout"] = out.getvalue()
    result["stderr"] = err.getvalue()
    for key in ("stdout", "stderr", "error", "traceback"):
        text = result.get(key)
        if isinstance(text, str) and not text.isascii():
            result[key] = text.encode("utf-8", "replace").decode("utf-8")
    return result
