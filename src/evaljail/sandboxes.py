"""Named sandboxes (the seed's "direct sandbox access"): a persistent, jailed workspace per id.

>>> with SandboxNamespace() as namespace:
...     sandbox = get_sandbox(namespace, "my-sandbox", keep_alive=False, sleep_after="30m")
...     sandbox.exec('python3 -c "print(2+2)"').stdout
'4\\n'

A :class:`SandboxNamespace` owns a set of sandboxes: their state directory, their limits, the
kernel mechanisms that enforce them and a housekeeping thread that frees idle ones and keeps
jails started ahead for the next commands. A
:class:`Sandbox` is a handle on one id; the same id gives the same handle until it is destroyed.

Every command runs as ``/bin/sh -c COMMAND`` in a fresh bubblewrap jail: all namespaces
unshared (no network at all), the system binaries and libraries and the Python runtime read-only,
a generated ``/etc/passwd``/``/etc/group`` and nothing else of ``/etc``, no home, no project
checkout, and one writable directory, the sandbox's own workspace at ``/workspace``. Limits:

- **disk**: each workspace is its own ext4 filesystem in a sparse image file, loop-mounted
  ``nosuid,nodev`` (when the service is root and loop devices work); its size *is* the quota and
  the kernel answers ``ENOSPC`` past it. Elsewhere a plain directory with ``RLIMIT_FSIZE`` and a
  size check after every command (weaker: see ``docs/sandboxes.md``);
- **processes**: a pids cgroup per command (``pids.max``, cgroup v1 or v2) when one can be
  created, else ``RLIMIT_NPROC`` (weak: not enforced for processes that map to host root);
- **memory** ``RLIMIT_AS`` per process, **CPU** ``RLIMIT_CPU`` (a backstop), **files**
  ``RLIMIT_NOFILE``, no core dumps; tmpfs mounts at ``/tmp`` and ``/dev/shm`` bounded in bytes
  and (when the service is root, which mounts them) in files; no ptys, host-wide ``/proc``
  files masked;
- **concurrency**: at most ``max_running_commands`` commands at once in a namespace;
- **time**: at the deadline the jail's PID namespace is killed (SIGKILL to bubblewrap's process
  group; ``--die-with-parent`` takes its PID 1 and with it every process of the namespace).

No process outlives the command that started it. Files survive between commands, and across a
restart of the namespace on the same state directory, until :meth:`Sandbox.destroy` or the
reaper (``sleep_after`` of inactivity, never for ``keep_alive`` sandboxes) frees them.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import functools
import itertools
import json
import logging
import math
import os
import queue
import re
import resource
import secrets
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .errors import (
    ConfigurationError,
    IsolationError,
    IsolationUnavailableError,
    SandboxError,
    SandboxFileNotFoundError,
    SandboxLimitError,
    SandboxNotFoundError,
    SandboxPathError,
)
from .isolation.bubblewrap import BwrapSpec, build_args, host_wide_proc_files
from .isolation.seccomp import SANDBOX_DENIED_SYSCALLS, build_program
from .settings import Settings
from .worker.protocol import write_all

__all__ = [
    "SANDBOX_ID_PATTERN",
    "WORKSPACE",
    "DiskBackend",
    "ExecResult",
    "FileEntry",
    "Sandbox",
    "SandboxInfo",
    "SandboxLimits",
    "SandboxNamespace",
    "get_sandbox",
    "parse_duration",
    "validate_sandbox_id",
]

_log = logging.getLogger("evaljail.sandboxes")

#: Where the workspace appears inside the jail (and the default working directory).
WORKSPACE = "/workspace"

#: The id grammar: an ASCII letter or digit, then up to 63 letters, digits, ``_``, ``.`` or ``-``.
#: Ids are used as directory and cgroup names, so nothing else is accepted.
SANDBOX_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")

#: ``"auto"`` picks ``"loop"`` when a trial loop mount works, else ``"directory"``.
DiskBackend = Literal["auto", "loop", "directory"]

_DURATION = re.compile(r"([1-9][0-9]{0,8})([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_MAX_SLEEP_AFTER_S = 30 * 86400
_MIB = 1024 * 1024
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_MAX_COMMAND_BYTES = 100_000  # below the kernel's 128 KiB per-argument limit
_MAX_PATH_BYTES = 4096
_MAX_ENV_VARS = 256
_META = "meta.json"
_TOOL_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
_KILL_GRACE_S = 1.0  # after a timeout kill, how long to drain what the command had written
_JAIL_UID = 65534
_PIDS_HEADROOM = 512  # the namespace-wide pids.max allows for lazily released charges
_SPARES = 2  # jails kept ready, already in their own cgroup

#: The fixed command of every jail: the real one arrives in ``EVALJAIL_COMMAND`` (with the rest of
#: the per-command arguments, see :meth:`SandboxNamespace._spawn`) and is evaluated as
#: ``sh -c`` would, after the variable is removed from the environment.
_SHIM = 'eval "unset EVALJAIL_COMMAND\n$EVALJAIL_COMMAND"'
_BWRAP_FAILED = b"bwrap: "


def parse_duration(text: str, *, name: str = "sleep_after") -> float:
    """Seconds in a duration such as ``"30s"``, ``"30m"``, ``"2h"`` or ``"1d"``.

    Strict: one positive integer and one unit, no spaces, at most 30 days. Anything else raises
    :class:`ConfigurationError` naming ``name``.
    """
    match = _DURATION.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ConfigurationError(
            f"invalid {name} {text!r}: expected a positive integer followed by s, m, h or d "
            "(for example '30s', '30m', '2h')",
            details={"field": name},
        )
    seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds > _MAX_SLEEP_AFTER_S:
        raise ConfigurationError(
            f"invalid {name} {text!r}: at most 30 days (use keep_alive for longer)",
            details={"field": name},
        )
    return float(seconds)


def validate_sandbox_id(sandbox_id: object) -> str:
    """``sandbox_id`` if it matches :data:`SANDBOX_ID_PATTERN`, else :class:`SandboxPathError`."""
    if not isinstance(sandbox_id, str) or SANDBOX_ID_PATTERN.fullmatch(sandbox_id) is None:
        shown = sandbox_id if not isinstance(sandbox_id, str) else sandbox_id[:80]
        raise SandboxPathError(
            f"invalid sandbox id {shown!r}: use 1 to 64 ASCII letters, digits, '_', '.' or '-', "
            "starting with a letter or digit",
            details={"field": "sandbox_id"},
        )
    return sandbox_id


def _split_path(path: object, *, allow_root: bool) -> tuple[str, ...]:
    """A workspace path as its components. Relative paths are relative to the workspace; an
    absolute path must be under ``/workspace``. ``..``, NUL bytes and over-long names are
    refused; symbolic links are never followed (see :func:`_open_dir`)."""
    if not isinstance(path, str):
        raise SandboxPathError("a path must be a string", details={"field": "path"})
    try:
        # A name that is not UTF-8 arrives as Python spells it (os.fsdecode: surrogateescape).
        raw = path.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise SandboxPathError(
            "invalid path: a lone surrogate that stands for no byte", details={"field": "path"}
        ) from None
    if "\x00" in path or len(raw) > _MAX_PATH_BYTES:
        raise SandboxPathError("invalid path: NUL byte or longer than 4096 bytes")
    rest = path
    if rest.startswith("/"):
        if rest != WORKSPACE and not rest.startswith(WORKSPACE + "/"):
            raise SandboxPathError(
                f"path {path!r} is outside the workspace: use a relative path or one under "
                f"{WORKSPACE}/",
                details={"path": path},
            )
        rest = rest[len(WORKSPACE) :]
    parts = tuple(p for p in rest.split("/") if p not in ("", "."))
    for part in parts:
        if part == "..":
            raise SandboxPathError(
                f"path {path!r} contains '..': paths may not leave the workspace",
                details={"path": path},
            )
        if len(part.encode("utf-8", "surrogateescape")) > 255:
            raise SandboxPathError(f"a component of {path!r} is longer than 255 bytes")
    if not parts and not allow_root:
        raise SandboxPathError(
            f"path {path!r} names the workspace itself, not a file", details={"path": path}
        )
    return parts


def _raw_name(text: str) -> bytes:
    """The bytes a file name stands for (``os.fsencode``; a stray surrogate becomes ``?``)."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace")


def _display(text: str) -> str:
    """A file name as valid Unicode: bytes that are not UTF-8 become U+FFFD."""
    return _raw_name(text).decode("utf-8", "replace")


def _os_error(exc: OSError, path: str, sandbox_id: str) -> SandboxError:
    """Translate a host-side file error into the sandbox error a caller can act on."""
    details = {"sandbox_id": sandbox_id, "path": _display(path)}
    code = exc.errno
    if code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return SandboxLimitError("the sandbox's disk quota is exhausted", details=details)
    if code == errno.ENOENT:
        return SandboxFileNotFoundError(
            f"no such file or directory in sandbox {sandbox_id!r}: {path!r}", details=details
        )
    if code == errno.ELOOP:
        return SandboxPathError(
            f"{path!r} goes through a symbolic link; file calls never follow symbolic links",
            details=details,
        )
    if code == errno.ENOTDIR:
        return SandboxPathError(f"a component of {path!r} is not a directory", details=details)
    if code == errno.EISDIR:
        return SandboxPathError(f"{path!r} is a directory", details=details)
    if code == errno.EEXIST:
        return SandboxPathError(f"{path!r} conflicts with an existing entry", details=details)
    if code in (errno.ENXIO, errno.EAGAIN, errno.ENODEV):
        return SandboxPathError(f"{path!r} is not a regular file", details=details)
    if code == errno.ENAMETOOLONG:
        return SandboxPathError(f"{path!r} is too long", details=details)
    return SandboxError(f"file operation on {path!r} failed: {exc.strerror}", details=details)


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

#: How many directory levels a tree walk of the service holds open at once (one descriptor each).
#: ``delete_file`` moves deeper subtrees up instead; a usage measurement refuses deeper trees.
_MAX_OPEN_DEPTH = 128

#: Prefix of the names under which a deletion moves subtrees too deep to hold open.
_DELETING = ".evaljail-deleting-"


def _remove_tree(name: str, parent_fd: int) -> None:
    """Delete the directory ``name`` under ``parent_fd`` and everything in it, by descriptors.

    ``shutil.rmtree`` checks an entry, then opens it without ``O_DIRECTORY``: a command that
    swaps a FIFO in between makes that open block for ever (or a device's open act). Here every
    open is ``O_DIRECTORY | O_NOFOLLOW | O_NONBLOCK`` (a FIFO, link or file fails at once) and
    the walk is a loop, so no depth makes it raise ``RecursionError``. At most
    ``_MAX_OPEN_DEPTH`` directories are open at once: a subdirectory below that depth is renamed
    into the top directory (the same filesystem, still inside the tree being deleted) and
    deleted from there, so a tree of any depth goes, with a bounded number of descriptors.
    """
    flags = _DIR_FLAGS | os.O_NONBLOCK
    stack = [(os.open(name, flags, dir_fd=parent_fd), name)]
    try:
        while stack:
            dir_fd = stack[-1][0]
            subdir: str | None = None
            with os.scandir(dir_fd) as entries:
                for entry in entries:
                    try:
                        os.unlink(entry.name, dir_fd=dir_fd)
                        continue
                    except FileNotFoundError:  # gone meanwhile (a command deleting too)
                        continue
                    except IsADirectoryError:
                        pass
                    subdir = entry.name
                    break
            if subdir is None:
                os.close(dir_fd)
                _, dir_name = stack.pop()
                os.rmdir(dir_name, dir_fd=stack[-1][0] if stack else parent_fd)
            elif len(stack) < _MAX_OPEN_DEPTH:
                try:
                    stack.append((os.open(subdir, flags, dir_fd=dir_fd), subdir))
                except FileNotFoundError:
                    continue
            else:
                moved = _DELETING + secrets.token_hex(8)
                os.rename(subdir, moved, src_dir_fd=dir_fd, dst_dir_fd=stack[0][0])
    finally:
        for dir_fd, _ in stack:
            os.close(dir_fd)


def _purge(path: Path) -> None:
    """Best-effort deletion of the directory ``path`` (cleanup): at any depth, never following
    links; a failure is logged."""
    try:
        parent = os.open(path.parent, _DIR_FLAGS)
    except OSError:
        return
    try:
        _remove_tree(path.name, parent)
    except FileNotFoundError:
        pass
    except OSError as exc:
        _log.warning("could not delete %s: %s", path, exc)
    finally:
        os.close(parent)


def _open_dir(root: Path, parts: tuple[str, ...], *, create: bool = False) -> int:
    """An fd on the directory ``root/parts...``, walked one component at a time with
    ``O_NOFOLLOW`` relative to the previous fd (openat-style): a symbolic link anywhere, even one
    planted by a command while we walk, makes the walk fail instead of leaving the workspace."""
    fd = os.open(root, _DIR_FLAGS)
    try:
        for part in parts:
            try:
                nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o755, dir_fd=fd)
                nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


def _kind(mode: int) -> Literal["file", "directory", "symlink", "other"]:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "other"


# ---------------------------------------------------------------------------------------------
# Values


@dataclass(frozen=True, slots=True, kw_only=True)
class SandboxLimits:
    """Limits of a namespace and of each of its sandboxes. Defaults suit a small shared host."""

    max_sandboxes: int = 32  #: live sandboxes at once (SandboxLimitError beyond)
    disk_bytes: int = 64 * _MIB  #: each workspace's quota (the size of its filesystem)
    total_disk_bytes: int = 2048 * _MIB  #: sum of the quotas of all live sandboxes
    memory_bytes: int = 512 * _MIB  #: RLIMIT_AS of every process of a command
    max_processes: int = 64  #: pids.max of each command (its own cgroup; all its processes)
    open_files: int = 256  #: RLIMIT_NOFILE
    tmp_bytes: int = 16 * _MIB  #: the size of the per-command tmpfs at /tmp (counts as memory)
    #: files and directories in each of /tmp and /dev/shm (each costs ~1 KiB of kernel memory)
    tmp_files: int = 8192
    #: commands running at once in the whole namespace (SandboxLimitError beyond)
    max_running_commands: int = 32
    output_bytes: int = 1 * _MIB  #: stdout and stderr are each truncated past this
    default_timeout_ms: int = 30_000
    max_timeout_ms: int = 600_000

    def __post_init__(self) -> None:
        for name in (
            "max_sandboxes", "disk_bytes", "total_disk_bytes", "memory_bytes", "max_processes",
            "open_files", "tmp_bytes", "tmp_files", "max_running_commands", "output_bytes",
            "default_timeout_ms", "max_timeout_ms",
        ):  # fmt: skip
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigurationError(
                    f"SandboxLimits.{name} must be a positive integer, got {value!r}",
                    details={"field": name},
                )
        if self.disk_bytes < 4 * _MIB:
            raise ConfigurationError("SandboxLimits.disk_bytes must be at least 4 MiB")
        if self.disk_bytes > self.total_disk_bytes:
            raise ConfigurationError("SandboxLimits.disk_bytes exceeds total_disk_bytes")
        if self.max_processes < 4:
            raise ConfigurationError("SandboxLimits.max_processes must be at least 4")
        if self.default_timeout_ms > self.max_timeout_ms:
            raise ConfigurationError("SandboxLimits.default_timeout_ms exceeds max_timeout_ms")


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecResult:
    """What one command did. A failing or killed command is a value, never an exception.

    ``exit_code`` is the shell's status (``128 + N`` when a process inside was killed by signal
    N, e.g. 153 for SIGXFSZ); ``-9`` when evaljail killed the jail at the deadline, with
    ``timed_out`` set. ``stdout``/``stderr`` are decoded as UTF-8 (invalid bytes replaced).
    """

    stdout: str
    stderr: str
    exit_code: int
    duration_ms: float
    timed_out: bool = False
    output_truncated: bool = False  #: stdout or stderr exceeded SandboxLimits.output_bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            "stdout": self.stdout,
            "stderr": self.stderr,
            "exit_code": self.exit_code,
            "duration_ms": self.duration_ms,
            "timed_out": self.timed_out,
            "output_truncated": self.output_truncated,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class FileEntry:
    """One entry of a workspace directory (symbolic links are reported, never followed).

    File names are bytes; ``name`` and ``path`` spell those that are not UTF-8 as Python does
    (``os.fsdecode``: each such byte as a surrogate ``\\udcXX``), so they round-trip through
    ``read_file``/``delete_file``. :meth:`to_dict` is valid Unicode for JSON.
    """

    name: str
    path: str  #: relative to the workspace, '/'-separated
    kind: Literal["file", "directory", "symlink", "other"]
    size_bytes: int
    modified_at: float  #: seconds since the epoch

    @property
    def utf8(self) -> bool:
        """True when the path is valid UTF-8 (``to_dict``'s ``name`` and ``path`` are exact)."""
        return _display(self.path) == self.path

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``name``/``path`` with U+FFFD for bytes that are not UTF-8 (then
        ``utf8`` is false), and ``path_url``, the exact bytes of ``path`` percent-encoded: the
        file's URL below ``/sandboxes/{id}/files/``."""
        return {
            "name": _display(self.name),
            "path": _display(self.path),
            "path_url": urllib.parse.quote(_raw_name(self.path), safe="/"),
            "utf8": self.utf8,
            "kind": self.kind,
            "size_bytes": self.size_bytes,
            "modified_at": self.modified_at,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class SandboxInfo:
    """A snapshot of one sandbox's state."""

    sandbox_id: str
    keep_alive: bool
    sleep_after: str
    created_at: float  #: seconds since the epoch
    last_used_at: float  #: seconds since the epoch
    workspace_bytes: int  #: disk used by the workspace (as of its last operation)
    disk_quota_bytes: int
    running_commands: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "sandbox_id": self.sandbox_id,
            "keep_alive": self.keep_alive,
            "sleep_after": self.sleep_after,
            "created_at": self.created_at,
            "last_used_at": self.last_used_at,
            "workspace_bytes": self.workspace_bytes,
            "disk_quota_bytes": self.disk_quota_bytes,
            "running_commands": self.running_commands,
        }


# ---------------------------------------------------------------------------------------------
# Internals


@dataclass(frozen=True, slots=True, kw_only=True)
class _Mechanisms:
    disk: Literal["loop", "directory"]
    cgroup: Path | None  #: this namespace's pids cgroup, None when unavailable
    cgroup_kind: str  #: "cgroup-v1-pids", "cgroup-v2-pids" or "rlimit-nproc"
    disable_userns: bool  #: bubblewrap supports --disable-userns
    #: (read-only binds, system library dirs, symlinks) of every jail, see _host_layout
    layout: tuple[tuple[str, ...], tuple[str, ...], tuple[tuple[str, str], ...]]
    #: /tmp and /dev/shm are tmpfs mounts the service makes per command, bounded in bytes and
    #: in inodes (needs root); else bubblewrap's, bounded in bytes only
    scratch: bool
    proc_masks: tuple[str, ...]  #: see isolation.bubblewrap.host_wide_proc_files


@dataclass(frozen=True, slots=True)
class _ChildSetup:
    """Runs in the forked child just before bubblewrap is exec'd (``preexec_fn``): joins the
    command's pids cgroup and sets the rlimits that every process of the command inherits. Only
    a write(2) and setrlimit(2) calls."""

    cgroup_procs_fd: int | None
    rlimits: tuple[tuple[int, int, int], ...]

    def __call__(self) -> None:
        if self.cgroup_procs_fd is not None:
            os.write(self.cgroup_procs_fd, b"0")
        for res, soft, hard in self.rlimits:
            resource.setrlimit(res, (soft, hard))


@dataclass(slots=True, eq=False)
class _Spare:
    """A bubblewrap started ahead of time, in its own cgroup with its rlimits, blocked reading
    the rest of its arguments from a pipe (``--args FD``); ``args_fd`` is the pipe's write end."""

    proc: subprocess.Popen[bytes]
    args_fd: int | None
    cgroup: Path | None
    scratch: Path | None = None  #: its /tmp and /dev/shm mounts (``_SCRATCH``), if the service's

    def send(self, request: bytes) -> None:
        """Write the arguments and close the pipe: bubblewrap goes on with the jail."""
        assert self.args_fd is not None
        view = memoryview(request)
        while view:
            view = view[os.write(self.args_fd, view) :]
        self.close_args()

    def close_args(self) -> None:
        """Close the write end once (a second close could hit a recycled fd number)."""
        fd, self.args_fd = self.args_fd, None
        if fd is not None:
            os.close(fd)

    def discard(self, root: Path | None) -> None:
        """Kill it and remove its cgroup (``root``: the namespace's cgroup)."""
        with contextlib.suppress(OSError):
            self.close_args()
        _kill_group(self.proc)
        self.proc.wait()
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()
        if self.cgroup is not None and root is not None:
            _remove_cgroup_tree(self.cgroup, root)
        _drop_scratch(self.scratch)


@dataclass(slots=True, eq=False)
class _State:
    """The mutable record behind one sandbox id (guarded by ``cond``)."""

    sandbox_id: str
    root: Path
    backend: Literal["loop", "directory"]
    disk_bytes: int
    keep_alive: bool
    sleep_after: str
    sleep_after_s: float
    created_at: float
    last_used: float  #: time.monotonic()
    cond: threading.Condition = field(default_factory=threading.Condition)
    ready: threading.Event = field(default_factory=threading.Event)
    gone: threading.Event = field(default_factory=threading.Event)
    failed: bool = False
    destroyed: bool = False
    mounted: bool = False
    busy: int = 0
    running: int = 0
    procs: set[subprocess.Popen[bytes]] = field(default_factory=set)
    usage_bytes: int = 0
    over_quota: bool = False
    unmeasured: str = ""  #: why the workspace could not be measured (directory backend)
    handle: Sandbox | None = None

    @property
    def ws(self) -> Path:
        return self.root / "ws"

    @property
    def image(self) -> Path:
        return self.root / "disk.img"

    @property
    def meta(self) -> Path:
        return self.root / _META


@dataclass(slots=True)
class _Stats:
    commands_total: int = 0
    commands_timed_out_total: int = 0
    commands_refused_total: int = 0  #: refused because max_running_commands were running
    sandbox_seconds_total: float = 0.0


def _run_tool(argv: list[str], what: str) -> None:
    """Run a host tool (mkfs, mount, umount) from an argv list; SandboxError on failure."""
    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={"PATH": _TOOL_PATH, "LANG": "C"},
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SandboxError(f"{what} failed: {exc}") from exc
    if done.returncode != 0:
        raise SandboxError(
            f"{what} failed (exit {done.returncode}): {done.stderr.strip()[:500]}",
            details={"tool": Path(argv[0]).name},
        )


def _tool(name: str) -> str | None:
    return shutil.which(name, path=_TOOL_PATH)


def _is_mount(path: Path) -> bool:
    with contextlib.suppress(OSError):
        return os.path.ismount(path)
    return False


def _unmount(path: Path) -> None:
    """Unmount a workspace; lazily when something still holds it."""
    umount = _tool("umount") or "umount"
    try:
        _run_tool([umount, str(path)], "umount")
    except SandboxError:
        _run_tool([umount, "-l", str(path)], "umount -l")


_MS_NOSUID, _MS_NODEV, _MNT_DETACH = 0x2, 0x4, 0x2
#: The per-command scratch mounts, under ``<state dir>/run/cmd-N/``, and where each one appears.
_SCRATCH = (("tmp", "/tmp"), ("shm", "/dev/shm"))


@functools.cache
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [
        ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p,
    ]  # fmt: skip
    libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
    return libc


def _mount_tmpfs(target: Path, *, size_bytes: int, inodes: int) -> None:
    """mount(2) a ``nosuid,nodev`` tmpfs of ``size_bytes`` and at most ``inodes`` files and
    directories on ``target`` (mode 1777, like ``/tmp``). Needs ``CAP_SYS_ADMIN``."""
    options = f"size={size_bytes},nr_inodes={inodes},mode=1777".encode()
    path = os.fsencode(target)
    if _libc().mount(b"evaljail", path, b"tmpfs", _MS_NOSUID | _MS_NODEV, options) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(target))


def _detach(target: Path) -> None:
    """umount2(``target``, MNT_DETACH): gone from the host at once, freed with its last user."""
    if _libc().umount2(os.fsencode(target), _MNT_DETACH) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(target))


def _drop_scratch(scratch: Path | None) -> None:
    """Detach a command's scratch mounts and remove their directory (idempotent)."""
    if scratch is None:
        return
    for name, _ in _SCRATCH:
        with contextlib.suppress(OSError):  # EINVAL: not (or no longer) mounted
            _detach(scratch / name)
        with contextlib.suppress(OSError):
            (scratch / name).rmdir()
    with contextlib.suppress(OSError):
        scratch.rmdir()


def _clear_run_dir(run: Path) -> None:
    """Detach and delete every scratch mount left under ``run`` (by a crashed process too)."""
    with contextlib.suppress(OSError):
        for scratch in run.iterdir():
            _drop_scratch(scratch)
    if run.is_dir() and not _mounts_below(run):
        _purge(run)


def _mounts_below(path: Path) -> list[str]:
    """Mount points at or under ``path`` in this process's mount table."""
    prefix = str(path)
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    points = [line.split()[4].replace("\\040", " ") for line in lines if len(line.split()) > 4]
    return [p for p in points if p == prefix or p.startswith(prefix + "/")]


#: What every inode of a ``directory``-backend workspace costs at least: empty files and links
#: allocate no block but use the host filesystem's inodes (the loop backend has ~8 k per 64 MiB).
_MIN_ENTRY_BYTES = 4096


def _dir_usage(root: Path) -> int:
    """Bytes charged to the directory ``root``: what each entry allocates, at least
    ``_MIN_ENTRY_BYTES`` per entry (symbolic links not followed, hard links counted per name).

    A loop over descriptors, never recursion: ``os.fwalk`` raised ``RecursionError`` on a
    1 000-level tree, which disabled the quota. A tree deeper than ``_MAX_OPEN_DEPTH`` raises
    ``OSError(EMLINK)``: the caller must treat an unmeasured workspace as over its quota.
    Entries that a running command removes or swaps during the walk are skipped.
    """
    flags = _DIR_FLAGS | os.O_NONBLOCK
    total = 0
    first = os.open(root, flags)
    stack: list[tuple[int, Iterator[os.DirEntry[str]]]] = []
    try:
        stack.append((first, os.scandir(first)))
    except BaseException:
        os.close(first)
        raise
    try:
        while stack:
            dir_fd, entries = stack[-1]
            entry = next(entries, None)
            if entry is None:
                stack.pop()
                entries.close()  # type: ignore[attr-defined]
                os.close(dir_fd)
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            total += max(st.st_blocks * 512, _MIN_ENTRY_BYTES)
            if not stat.S_ISDIR(st.st_mode):
                continue
            if len(stack) >= _MAX_OPEN_DEPTH:
                raise OSError(errno.EMLINK, f"directory tree deeper than {_MAX_OPEN_DEPTH} levels")
            try:
                sub = os.open(entry.name, flags, dir_fd=dir_fd)
            except (FileNotFoundError, NotADirectoryError):
                continue  # removed, or swapped for a FIFO, link or file meanwhile
            except OSError as exc:
                if exc.errno != errno.ELOOP:
                    raise
                continue
            try:
                stack.append((sub, os.scandir(sub)))
            except BaseException:
                os.close(sub)
                raise
    finally:
        for dir_fd, entries in stack:
            entries.close()  # type: ignore[attr-defined]
            os.close(dir_fd)
    return total


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL bubblewrap's process group. Its PID 1 inside the jail has PDEATHSIG=SIGKILL
    (``--die-with-parent``), and when a PID namespace's init dies the kernel kills every
    process in it, so this takes down the whole command however many times it forked."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()


def _cgroup_pids(cgroup: Path) -> list[int]:
    try:
        return [int(p) for p in (cgroup / "cgroup.procs").read_text().split()]
    except (OSError, ValueError):
        return []


def _kill_members(cgroup: Path, root: Path, pids: list[int]) -> None:
    """SIGKILL ``pids`` through pidfds, each only if it is still a member of ``cgroup`` (so a
    recycled pid is never hit)."""
    suffix = "/" + str(cgroup.relative_to(root.parent))
    for pid in pids:
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            continue
        try:
            lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
            if any(line.endswith(suffix) for line in lines):
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        except OSError:
            pass
        finally:
            os.close(pidfd)


def _remove_cgroup_tree(cgroup: Path, root: Path, *, timeout_s: float = 2.0) -> bool:
    """Kill every process in ``cgroup`` and below (``root`` is the namespace's cgroup), wait
    until they are gone and remove the directories. True when ``cgroup`` no longer exists."""
    deadline = time.monotonic() + timeout_s
    while True:
        dirs = [Path(d) for d, _subdirs, _files in os.walk(cgroup)]
        dirs.sort(key=lambda d: len(d.parts), reverse=True)
        busy = False
        for d in dirs:
            pids = _cgroup_pids(d)
            if pids:
                busy = True
                _kill_members(d, root, pids)
        if not busy:
            for d in dirs:
                with contextlib.suppress(OSError):
                    d.rmdir()
            if not cgroup.exists():
                return True
        if time.monotonic() >= deadline:
            _log.error("cgroup %s still holds processes after %.1f s", cgroup, timeout_s)
            return False
        time.sleep(0.005)


def _find_pids_cgroup() -> tuple[Path, str] | None:
    """Where this process may create a pids cgroup: (directory, kind), or None."""
    try:
        mountinfo = Path("/proc/self/mountinfo").read_text()
        own = Path("/proc/self/cgroup").read_text()
    except OSError:
        return None
    v1_mount: Path | None = None
    v2_mount: Path | None = None
    for line in mountinfo.splitlines():
        pre, _, post = line.partition(" - ")
        fields_pre, fields_post = pre.split(), post.split()
        if len(fields_pre) < 5 or len(fields_post) < 3:
            continue
        fstype, options = fields_post[0], fields_post[2].split(",")
        if fstype == "cgroup" and "pids" in options:
            v1_mount = Path(fields_pre[4])
        elif fstype == "cgroup2" and v2_mount is None:
            v2_mount = Path(fields_pre[4])
    for line in own.splitlines():
        hier, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        rel = path.lstrip("/")
        if v1_mount is not None and "pids" in controllers.split(","):
            return v1_mount / rel, "cgroup-v1-pids"
        if v2_mount is not None and hier == "0" and not controllers:
            base = v2_mount / rel
            try:
                enabled = (base / "cgroup.subtree_control").read_text().split()
            except OSError:
                continue
            if "pids" in enabled:
                return base, "cgroup-v2-pids"
    return None


def _host_layout(
    runtime_prefixes: tuple[str, ...],
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[tuple[str, str], ...]]:
    """What every jail shows of the host, read-only: /usr/bin, the system libraries and the
    Python runtime prefixes. Top-level directories that are symbolic links on the host (merged
    /usr: /bin, /lib...) become the same symbolic links in the jail instead of extra mounts."""
    ro: list[str] = []
    libs: list[str] = []
    symlinks: list[tuple[str, str]] = []
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        host = Path(top)
        if host.is_symlink():
            symlinks.append((str(host.readlink()), top))
        elif host.is_dir():
            (libs if top.startswith("/lib") else ro).append(top)
    ro.append("/usr/bin")
    libs += [d for d in ("/usr/lib", "/usr/lib32", "/usr/lib64", "/usr/libx32") if Path(d).is_dir()]
    for prefix in runtime_prefixes:
        covered = any(prefix == p or prefix.startswith(p + "/") for p in (*ro, *libs))
        if not covered and Path(prefix).is_dir():
            ro.append(prefix)
    return tuple(ro), tuple(libs), tuple(symlinks)


def _bwrap_supports_disable_userns(bwrap: str) -> bool:
    try:
        out = subprocess.run(
            [bwrap, "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    match = re.search(r"(\d+)\.(\d+)", out)
    return match is not None and (int(match.group(1)), int(match.group(2))) >= (0, 8)


def _release_state_dir(root: str, private: bool, lock_fd: int, cgroup: str | None) -> None:
    """Last-resort cleanup (``close()`` or garbage collection / interpreter exit): unmount every
    workspace under ``root``, remove this namespace's cgroup, release the lock and, for a private
    temporary state directory, delete it."""
    sandboxes = Path(root) / "sandboxes"
    if sandboxes.is_dir():
        for entry in sandboxes.iterdir():
            ws = entry / "ws"
            if _is_mount(ws):
                with contextlib.suppress(SandboxError):
                    _unmount(ws)
    if cgroup is not None:
        _remove_cgroup_tree(Path(cgroup), Path(cgroup))
    _clear_run_dir(Path(root) / "run")
    with contextlib.suppress(OSError):
        os.close(lock_fd)
    if private:
        _purge(Path(root))


# ---------------------------------------------------------------------------------------------
# Public API


class Sandbox:
    """A handle on one named sandbox. Obtain it with :func:`get_sandbox`; every method raises
    :class:`SandboxNotFoundError` once the sandbox has been destroyed or reaped."""

    __slots__ = ("__weakref__", "_namespace", "_state")

    def __init__(self, namespace: SandboxNamespace, state: _State) -> None:
        self._namespace = namespace
        self._state = state

    def __repr__(self) -> str:
        return f"<Sandbox {self._state.sandbox_id!r}>"

    @property
    def id(self) -> str:
        """The sandbox's id."""
        return self._state.sandbox_id

    @property
    def keep_alive(self) -> bool:
        return self._state.keep_alive

    @property
    def sleep_after(self) -> str:
        return self._state.sleep_after

    def exec(
        self,
        command: str,
        *,
        timeout: int | None = None,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> ExecResult:
        """Run ``/bin/sh -c command`` in a fresh jail on this sandbox's workspace.

        ``timeout`` is in milliseconds (as ``PythonRunner(timeout=5000)``), default
        ``SandboxLimits.default_timeout_ms``; ``cwd`` a workspace path (default ``/workspace``);
        ``env`` variables added to the jail's small clean environment (nothing of the host's).
        """
        return self._namespace._exec(self._state, command, timeout=timeout, cwd=cwd, env=env)

    def write_file(self, path: str, content: bytes | str) -> int:
        """Create or replace a file (parent directories are created); returns its size.

        ``str`` content is encoded as UTF-8. :class:`SandboxLimitError` when the quota is full.
        """
        return self._namespace._write_file(self._state, path, content)

    def read_file(self, path: str) -> bytes:
        """The content of a regular file of the workspace (symbolic links are not followed)."""
        return self._namespace._read_file(self._state, path)

    def list_files(self, path: str = "") -> list[FileEntry]:
        """The entries of a workspace directory (default: the workspace itself), sorted."""
        return self._namespace._list_files(self._state, path)

    def stat(self, path: str) -> FileEntry:
        """One entry of the workspace (a symbolic link is reported as such, not followed)."""
        return self._namespace._stat(self._state, path)

    def delete_file(self, path: str) -> None:
        """Delete a file, a symbolic link, or a directory with everything in it."""
        self._namespace._delete_file(self._state, path)

    def info(self) -> SandboxInfo:
        """A snapshot of this sandbox's state."""
        return self._namespace._info(self._state, check=True)

    def destroy(self) -> None:
        """Kill running commands and delete the workspace. Idempotent."""
        self._namespace._destroy_state(self._state, reason="destroyed")


class SandboxNamespace:
    """The owner of a set of named sandboxes: state directory, limits, mechanisms, reaper.

    ``state_dir``: where workspaces and their metadata live; default ``settings.sandbox_dir``,
    else a private temporary directory that :meth:`close` deletes. On a given directory,
    sandboxes survive :meth:`close` and a restart: a new namespace finds them again (and reaps
    them by the time they were last used). One namespace at a time may hold a directory.

    The namespace does I/O lazily: the disk and cgroup probes run when the first sandbox is
    created, the reaper thread starts with the first sandbox. Use it as a context manager or
    call :meth:`close`.
    """

    def __init__(
        self,
        state_dir: str | os.PathLike[str] | None = None,
        *,
        limits: SandboxLimits | None = None,
        settings: Settings | None = None,
        disk_backend: DiskBackend = "auto",
        runtime_prefixes: tuple[str, ...] | None = None,
        bwrap: str = "bwrap",
        reap_interval_s: float = 0.25,
    ) -> None:
        if disk_backend not in ("auto", "loop", "directory"):
            raise ConfigurationError(
                f"disk_backend must be 'auto', 'loop' or 'directory', got {disk_backend!r}"
            )
        if not 0.01 <= reap_interval_s <= 60:
            raise ConfigurationError("reap_interval_s must be between 0.01 and 60 seconds")
        self._limits = limits if limits is not None else SandboxLimits()
        self._disk_backend: DiskBackend = disk_backend
        self._bwrap = bwrap
        self._reap_interval_s = reap_interval_s
        self._runtime_prefixes = (
            tuple(runtime_prefixes)
            if runtime_prefixes is not None
            else (str(Path(sys.base_prefix).resolve()),)
        )
        if state_dir is None and settings is not None:
            state_dir = settings.sandbox_dir
        self._private = state_dir is None
        self._root = self._prepare_state_dir(state_dir)
        self._lock = threading.RLock()
        self._states: dict[str, _State] = {}
        self._stats = _Stats()
        self._running = 0  # commands in progress in the whole namespace (guarded by _slots)
        self._slots = threading.Lock()
        self._command_ids = itertools.count(1)
        self._closed = False
        self._mechanisms: _Mechanisms | None = None
        self._bwrap_path: str | None = None
        self._seccomp_bpf: bytes | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._housekeeper: threading.Thread | None = None
        self._spares: queue.SimpleQueue[_Spare] = queue.SimpleQueue()
        self._retired: queue.SimpleQueue[Path] = queue.SimpleQueue()  # scratch to unmount
        self._spare_count = 0  # spares made and not yet taken (guarded by self._lock)
        self._lock_fd = self._take_lock()
        self._finalizer: weakref.finalize[[str, bool, int, str | None], SandboxNamespace] | None = (
            None
        )
        try:
            self._write_etc()
            _clear_run_dir(self._root / "run")  # scratch mounts of a process that crashed
            (self._root / "sandboxes").mkdir(mode=0o700, exist_ok=True)
            self._load()
        except BaseException:
            os.close(self._lock_fd)
            if self._private:
                _purge(self._root)
            raise
        self._arm_finalizer(cgroup=None)
        if self._states:
            self._start_housekeeper()  # sandboxes found on disk are reaped like new ones

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> SandboxNamespace:
        """The service's namespace: state in ``EVALJAIL_SANDBOX_DIR`` (persistent) when set,
        else a private temporary directory (sandboxes end with the process); limits from the
        ``EVALJAIL_SANDBOX_*`` settings unless ``limits`` is given."""
        if kwargs.get("limits") is None:
            disk = settings.sandbox_disk_mb * _MIB
            kwargs["limits"] = SandboxLimits(
                max_sandboxes=settings.sandbox_max,
                disk_bytes=disk,
                total_disk_bytes=max(SandboxLimits().total_disk_bytes, disk),
                memory_bytes=settings.sandbox_memory_mb * _MIB,
                max_running_commands=settings.sandbox_max_running,
            )
        return cls(settings=settings, **kwargs)

    # -- set-up ------------------------------------------------------------------------------

    @staticmethod
    def _prepare_state_dir(state_dir: str | os.PathLike[str] | None) -> Path:
        if state_dir is None:
            return Path(tempfile.mkdtemp(prefix="evaljail-sandboxes-")).resolve()
        path = Path(state_dir).absolute()
        if path.is_symlink():
            raise ConfigurationError(
                f"sandbox state directory {str(path)!r} must not be a symbolic link",
                details={"variable": "EVALJAIL_SANDBOX_DIR"},
            )
        try:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            st = path.lstat()
        except OSError as exc:
            raise ConfigurationError(
                f"cannot create sandbox state directory {str(path)!r}: {exc.strerror}",
                details={"variable": "EVALJAIL_SANDBOX_DIR"},
            ) from exc
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
            raise ConfigurationError(
                f"sandbox state directory {str(path)!r} must be a directory owned by this user "
                "and not writable by group or others",
                details={"variable": "EVALJAIL_SANDBOX_DIR"},
            )
        return path.resolve()

    def _take_lock(self) -> int:
        fd = os.open(self._root / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SandboxError(
                f"sandbox state directory {str(self._root)!r} is in use by another namespace",
                details={"state_dir": str(self._root)},
            ) from None
        return fd

    def _arm_finalizer(self, *, cgroup: Path | None) -> None:
        if self._finalizer is not None:
            self._finalizer.detach()
        self._finalizer = weakref.finalize(
            self,
            _release_state_dir,
            str(self._root),
            self._private,
            self._lock_fd,
            None if cgroup is None else str(cgroup),
        )

    def _write_etc(self) -> None:
        """A passwd and a group naming only the jail's user: the jail sees nothing else of
        /etc."""
        etc = self._root / "etc"
        etc.mkdir(mode=0o755, exist_ok=True)
        (etc / "passwd").write_text(
            f"sandbox:x:{_JAIL_UID}:{_JAIL_UID}:sandbox:{WORKSPACE}:/bin/sh\n"
        )
        (etc / "group").write_text(f"sandbox:x:{_JAIL_UID}:\n")

    def _load(self) -> None:
        """Find the sandboxes a previous namespace left in this state directory."""
        now_wall, now_mono = time.time(), time.monotonic()
        for entry in sorted((self._root / "sandboxes").iterdir()):
            if SANDBOX_ID_PATTERN.fullmatch(entry.name) is None or not entry.is_dir():
                _log.warning("ignoring unexpected entry in sandbox state directory: %s", entry)
                continue
            try:
                meta = json.loads((entry / _META).read_text())
                mtime = (entry / _META).stat().st_mtime
                backend = meta["backend"]
                if backend not in ("loop", "directory"):
                    raise ValueError(backend)
                state = _State(
                    sandbox_id=entry.name,
                    root=entry,
                    backend=backend,
                    disk_bytes=int(meta["disk_bytes"]),
                    keep_alive=bool(meta["keep_alive"]),
                    sleep_after=str(meta["sleep_after"]),
                    sleep_after_s=parse_duration(str(meta["sleep_after"])),
                    created_at=float(meta["created_at"]),
                    last_used=now_mono - max(0.0, now_wall - mtime),
                )
            except (OSError, ValueError, KeyError, TypeError, ConfigurationError) as exc:
                # No (or a broken) meta.json: a creation or destruction that never finished.
                _log.warning("removing incomplete sandbox %s (%s)", entry.name, exc)
                self._remove_tree(entry)
                continue
            state.mounted = state.backend == "directory" or _is_mount(state.ws)
            state.ready.set()
            self._states[state.sandbox_id] = state
            self._refresh_usage(state)

    def _probe(self) -> _Mechanisms:
        """Find the disk and process-count mechanisms (once, at the first sandbox)."""
        with self._lock:
            if self._mechanisms is not None:
                return self._mechanisms
            bwrap = shutil.which(self._bwrap)
            if bwrap is None:
                raise IsolationUnavailableError(
                    f"bubblewrap ({self._bwrap!r}) is not installed: sandboxes cannot run",
                    details={"layer": "namespaces"},
                )
            self._bwrap_path = bwrap
            disk: Literal["loop", "directory"] = "directory"
            if self._disk_backend in ("auto", "loop"):
                why = self._probe_loop()
                if why is None:
                    disk = "loop"
                elif self._disk_backend == "loop":
                    raise IsolationUnavailableError(
                        f"loop-mounted workspaces are unavailable: {why}",
                        details={"layer": "disk_quota"},
                    )
                else:
                    _log.warning("sandbox disk quota falls back to accounting: %s", why)
            scratch_why = self._probe_scratch()
            if scratch_why is not None:
                _log.warning("sandbox /tmp bounded in bytes only, not in files: %s", scratch_why)
            cgroup, kind = self._make_cgroup()
            self._mechanisms = _Mechanisms(
                disk=disk,
                cgroup=cgroup,
                cgroup_kind=kind,
                disable_userns=_bwrap_supports_disable_userns(bwrap),
                layout=_host_layout(self._runtime_prefixes),
                scratch=scratch_why is None,
                proc_masks=host_wide_proc_files(),
            )
            self._arm_finalizer(cgroup=cgroup)
            return self._mechanisms

    def _probe_loop(self) -> str | None:
        """None if a trial ext4 image can be made, loop-mounted and unmounted; else why not."""
        if os.geteuid() != 0:
            return "not running as root"
        if not Path("/dev/loop-control").exists():
            return "no /dev/loop-control"
        if not (_tool("mkfs.ext4") and _tool("mount") and _tool("umount")):
            return "mkfs.ext4, mount or umount is missing"
        trial = self._root / ".probe"
        self._remove_tree(trial)
        try:
            trial.mkdir(mode=0o700)
            (trial / "ws").mkdir()
            self._make_image(trial / "disk.img", 4 * _MIB)
            self._mount(trial / "disk.img", trial / "ws")
            _unmount(trial / "ws")
        except (OSError, SandboxError) as exc:
            return str(exc)
        finally:
            self._remove_tree(trial)
        return None

    def _probe_scratch(self) -> str | None:
        """None if this process can mount the per-command tmpfs (``_make_scratch``); else why
        not."""
        if os.geteuid() != 0:
            return "not running as root"
        trial = self._root / "run" / "probe"
        try:
            self._make_scratch(trial)
        except SandboxError as exc:
            return str(exc)
        finally:
            _drop_scratch(trial)
        return None

    def _make_scratch(self, scratch: Path) -> None:
        """Mount a command's /tmp and /dev/shm under ``scratch``: tmpfs instances bounded in
        bytes (``tmp_bytes``) and in files (``tmp_files``). bubblewrap's ``--tmpfs`` sets only
        ``size=``; its inode count defaults to half the host's RAM pages, and empty files cost
        kernel memory, not bytes (measured: 370 000 files in 2.5 s, +463 MiB of slab, 0 bytes
        used)."""
        limits = self._limits
        try:
            scratch.parent.mkdir(mode=0o700, exist_ok=True)
            scratch.mkdir(mode=0o700)
            for name, _ in _SCRATCH:
                (scratch / name).mkdir(mode=0o700)
                _mount_tmpfs(scratch / name, size_bytes=limits.tmp_bytes, inodes=limits.tmp_files)
        except OSError as exc:
            _drop_scratch(scratch)
            raise SandboxError(f"cannot mount a command's /tmp: {exc}") from exc

    def _make_cgroup(self) -> tuple[Path | None, str]:
        found = _find_pids_cgroup()
        if found is None:
            return None, "rlimit-nproc"
        base, kind = found
        # Remove what namespaces of dead processes left behind.
        with contextlib.suppress(OSError):
            for stale in base.glob("evaljail-*"):
                pid = stale.name.split("-")[1]
                if pid.isdigit() and not _pid_alive(int(pid)):
                    _remove_cgroup_tree(stale, stale, timeout_s=0.5)
        cgroup = base / f"evaljail-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            cgroup.mkdir()
            total = self._limits.max_sandboxes * self._limits.max_processes + _PIDS_HEADROOM
            (cgroup / "pids.max").write_text(str(total))
        except OSError as exc:
            with contextlib.suppress(OSError):
                cgroup.rmdir()
            _log.warning("no pids cgroup for sandboxes (%s): falling back to RLIMIT_NPROC", exc)
            return None, "rlimit-nproc"
        return cgroup, kind

    @staticmethod
    def _make_image(image: Path, size: int) -> None:
        with image.open("wb") as f:
            f.truncate(size)
        mkfs = _tool("mkfs.ext4") or "mkfs.ext4"
        _run_tool(
            [
                mkfs, "-q", "-F", "-m", "0", "-i", "8192", "-O", "^has_journal",
                "-E", f"lazy_itable_init=1,root_owner={os.geteuid()}:{os.getegid()}",
                "-L", "evaljail", str(image),
            ],
            "mkfs.ext4",
        )  # fmt: skip

    @staticmethod
    def _mount(image: Path, target: Path) -> None:
        mount = _tool("mount") or "mount"
        _run_tool(
            [mount, "-t", "ext4", "-o", "loop,nosuid,nodev,noatime", str(image), str(target)],
            "mount",
        )

    def _remove_tree(self, path: Path) -> None:
        """Unmount (if needed) and delete a sandbox directory."""
        ws = path / "ws"
        if _is_mount(ws):
            with contextlib.suppress(SandboxError):
                _unmount(ws)
        if _is_mount(ws):
            _log.error("cannot unmount %s: leaving it in place", ws)
            return
        _purge(path)

    # -- public ------------------------------------------------------------------------------

    @property
    def state_dir(self) -> Path:
        """Where the workspaces live (a private temporary directory by default)."""
        return self._root

    @property
    def limits(self) -> SandboxLimits:
        return self._limits

    def mechanisms(self) -> dict[str, str]:
        """How each limit is enforced on this host (runs the probes if needed)."""
        mech = self._probe()
        return {
            "isolation": "bubblewrap: user, pid, ipc, uts, cgroup and network namespaces",
            "network": "none (own network namespace, no interfaces up)",
            "disk_quota": (
                "loop-mounted ext4 image per sandbox"
                if mech.disk == "loop"
                else "directory: RLIMIT_FSIZE and a size check after every command"
            ),
            "process_limit": mech.cgroup_kind,
            "tmp": (
                "tmpfs per command mounted by the service (size and file count bounded)"
                if mech.scratch
                else "bubblewrap tmpfs per command (size bounded, file count not bounded)"
            ),
            "nested_user_namespaces": "disabled" if mech.disable_userns else "allowed",
            "persistence": "ephemeral (private temp dir)" if self._private else "state dir",
        }

    def get(
        self, sandbox_id: str, *, keep_alive: bool | None = None, sleep_after: str | None = None
    ) -> Sandbox:
        """The sandbox named ``sandbox_id``, created if needed.

        ``keep_alive``/``sleep_after`` given here replace the sandbox's settings; None keeps
        them (defaults ``False``/``"30m"`` for a new sandbox). Concurrent calls for one id get
        the same handle. :class:`SandboxLimitError` past the count or total-disk cap.
        """
        validate_sandbox_id(sandbox_id)
        if keep_alive is not None and not isinstance(keep_alive, bool):
            raise ConfigurationError(
                "keep_alive must be a boolean", details={"field": "keep_alive"}
            )
        sleep_s = parse_duration(sleep_after) if sleep_after is not None else None
        while True:
            creator = False
            with self._lock:
                self._check_open()
                state = self._states.get(sandbox_id)
                if state is None:
                    self._check_caps()
                    state = self._new_state(sandbox_id, keep_alive, sleep_after, sleep_s)
                    self._states[sandbox_id] = state
                    creator = True
            if creator:
                self._provision(state)
                self._start_housekeeper()
            else:
                state.ready.wait()
                if state.failed or state.destroyed:
                    state.gone.wait()
                    continue
            with state.cond:
                if state.destroyed:
                    continue
                changed = False
                if keep_alive is not None and keep_alive != state.keep_alive:
                    state.keep_alive, changed = keep_alive, True
                if (
                    sleep_after is not None
                    and sleep_s is not None
                    and (sleep_after != state.sleep_after)
                ):
                    state.sleep_after, state.sleep_after_s, changed = sleep_after, sleep_s, True
                state.last_used = time.monotonic()
                if changed:
                    self._write_meta(state)
                if state.handle is None:
                    state.handle = Sandbox(self, state)
                return state.handle

    def find(self, sandbox_id: str) -> Sandbox:
        """The existing sandbox ``sandbox_id``; :class:`SandboxNotFoundError` if there is none."""
        validate_sandbox_id(sandbox_id)
        with self._lock:
            self._check_open()
            state = self._states.get(sandbox_id)
        if state is not None:
            state.ready.wait()
        if state is None or state.failed or state.destroyed:
            raise SandboxNotFoundError(
                f"no sandbox {sandbox_id!r}", details={"sandbox_id": sandbox_id}
            )
        with state.cond:
            if state.handle is None:
                state.handle = Sandbox(self, state)
            return state.handle

    def destroy(self, sandbox_id: str) -> None:
        """Destroy the sandbox ``sandbox_id``; :class:`SandboxNotFoundError` if there is none."""
        self.find(sandbox_id).destroy()

    def list_sandboxes(self) -> list[SandboxInfo]:
        """Every live sandbox, by id."""
        with self._lock:
            states = sorted(self._states.values(), key=lambda s: s.sandbox_id)
        infos = []
        for state in states:
            if state.ready.is_set() and not state.failed and not state.destroyed:
                infos.append(self._info(state, check=False))
        return infos

    def usage(self) -> dict[str, float]:
        """Counters for ``/metrics``: live sandboxes, commands run and timed out, command wall
        time in seconds, and workspace bytes in use."""
        with self._lock:
            live = [s for s in self._states.values() if not s.destroyed and not s.failed]
            return {
                "sandboxes_live": float(len(live)),
                "commands_total": float(self._stats.commands_total),
                "commands_timed_out_total": float(self._stats.commands_timed_out_total),
                "sandbox_seconds_total": self._stats.sandbox_seconds_total,
                "workspace_bytes": float(sum(s.usage_bytes for s in live)),
                "commands_running": float(self._running),
                "commands_refused_total": float(self._stats.commands_refused_total),
            }

    def close(self) -> None:
        """Stop the reaper, kill running commands and release the state directory.

        Workspaces on a given state directory are kept (a new namespace finds them); a private
        temporary state directory is deleted with everything in it. Idempotent.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            states = list(self._states.values())
        self._stop.set()
        self._wake.set()
        if self._housekeeper is not None:
            self._housekeeper.join(timeout=10)
        self._discard_spares()
        self._drop_retired()
        for state in states:
            if self._private:
                self._destroy_state(state, reason="closed")
                continue
            self._quiesce(state)
            with state.cond:
                if state.backend == "loop" and state.mounted and _is_mount(state.ws):
                    with contextlib.suppress(SandboxError):
                        _unmount(state.ws)
                state.mounted = False
        if self._finalizer is not None:
            self._finalizer()

    def __enter__(self) -> SandboxNamespace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<SandboxNamespace {str(self._root)!r} sandboxes={len(self._states)}>"

    # -- lifecycle ---------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise SandboxError("the sandbox namespace is closed")

    def _check_caps(self) -> None:
        """Under ``self._lock``: may one more sandbox be created?"""
        limits = self._limits
        live = [s for s in self._states.values() if not s.failed]
        if len(live) >= limits.max_sandboxes:
            raise SandboxLimitError(
                f"too many sandboxes: {len(live)} live (limit {limits.max_sandboxes}); "
                "destroy one or wait for idle ones to be reaped",
                details={"limit": limits.max_sandboxes, "live": len(live)},
            )
        reserved = sum(s.disk_bytes for s in live)
        if reserved + limits.disk_bytes > limits.total_disk_bytes:
            raise SandboxLimitError(
                f"sandbox disk exhausted: {reserved} of {limits.total_disk_bytes} bytes are "
                f"reserved by live sandboxes, a new one needs {limits.disk_bytes}",
                details={"limit_bytes": limits.total_disk_bytes, "reserved_bytes": reserved},
            )

    def _new_state(
        self,
        sandbox_id: str,
        keep_alive: bool | None,
        sleep_after: str | None,
        sleep_s: float | None,
    ) -> _State:
        return _State(
            sandbox_id=sandbox_id,
            root=self._root / "sandboxes" / sandbox_id,
            backend="directory",  # decided in _provision
            disk_bytes=self._limits.disk_bytes,
            keep_alive=bool(keep_alive),
            sleep_after=sleep_after or "30m",
            sleep_after_s=sleep_s if sleep_s is not None else 1800.0,
            created_at=time.time(),
            last_used=time.monotonic(),
        )

    def _provision(self, state: _State) -> None:
        """Create the workspace of a new sandbox; on failure forget the id again."""
        try:
            mech = self._probe()
            state.backend = mech.disk
            self._remove_tree(state.root)  # leftovers of an interrupted destruction
            state.root.mkdir(mode=0o700)
            state.ws.mkdir(mode=0o755)
            if state.backend == "loop":
                self._make_image(state.image, state.disk_bytes)
                self._mount(state.image, state.ws)
                with contextlib.suppress(OSError):
                    (state.ws / "lost+found").rmdir()
                state.ws.chmod(0o755)
            state.mounted = True
            self._write_meta(state)  # the commit point: a sandbox exists once it has meta.json
            self._refresh_usage(state)
        except BaseException:
            state.failed = True
            with self._lock:
                if self._states.get(state.sandbox_id) is state:
                    del self._states[state.sandbox_id]
            with contextlib.suppress(Exception):
                self._remove_tree(state.root)
            state.ready.set()
            state.gone.set()
            raise
        state.ready.set()

    def _write_meta(self, state: _State) -> None:
        meta = {
            "version": 1,
            "sandbox_id": state.sandbox_id,
            "backend": state.backend,
            "disk_bytes": state.disk_bytes,
            "keep_alive": state.keep_alive,
            "sleep_after": state.sleep_after,
            "created_at": state.created_at,
        }
        tmp = state.root / (_META + ".tmp")
        tmp.write_text(json.dumps(meta))
        tmp.replace(state.meta)

    def _kill_running(self, state: _State) -> None:
        """Under ``state.cond``: kill every command of the sandbox (each ``exec`` then waits
        for the last process of its command and removes its cgroup)."""
        for proc in list(state.procs):
            _kill_group(proc)

    def _quiesce(self, state: _State) -> None:
        """Kill the sandbox's commands and wait until no operation is in progress."""
        with state.cond:
            self._kill_running(state)
            if not state.cond.wait_for(lambda: state.busy == 0, timeout=10):
                _log.error("sandbox %s still busy after 10 s", state.sandbox_id)

    def _destroy_state(self, state: _State, *, reason: str) -> None:
        with state.cond:
            if state.destroyed or state.failed:
                return
            state.destroyed = True
            with contextlib.suppress(OSError):
                state.meta.unlink()  # the commit point: from here on the sandbox is gone
            self._kill_running(state)
            if not state.cond.wait_for(lambda: state.busy == 0, timeout=10):
                _log.error("sandbox %s still busy after 10 s; destroying anyway", state.sandbox_id)
        try:
            self._remove_tree(state.root)
        finally:
            with self._lock:
                if self._states.get(state.sandbox_id) is state:
                    del self._states[state.sandbox_id]
            state.gone.set()
            _log.info("sandbox %s %s", state.sandbox_id, reason)

    def _start_housekeeper(self) -> None:
        with self._lock:
            if self._housekeeper is not None or self._closed:
                return
            self._housekeeper = threading.Thread(
                target=self._housekeeping, name="evaljail-sandboxes", daemon=True
            )
            self._housekeeper.start()

    def _housekeeping(self) -> None:
        """The namespace's background thread: keeps jails started ahead and reaps idle sandboxes
        (every ``reap_interval_s``, so a sandbox goes at most that long after its time)."""
        while not self._stop.is_set():
            try:
                self._drop_retired()
                self._refill_spares()
                self._reap_once()
            except Exception:  # the housekeeper must survive any one failure
                _log.exception("sandbox housekeeping failed")
            self._wake.wait(self._reap_interval_s)
            self._wake.clear()

    def _refill_spares(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                if self._spare_count >= _SPARES:
                    return
                self._spare_count += 1
            try:
                spare = self._spawn()
            except BaseException:
                with self._lock:
                    self._spare_count -= 1
                raise
            self._spares.put(spare)

    def _drop_retired(self) -> None:
        """Unmount the scratch mounts of finished commands (off their critical path: an
        unmount waits ~2 ms for the kernel to release the mount)."""
        while True:
            try:
                scratch = self._retired.get_nowait()
            except queue.Empty:
                return
            _drop_scratch(scratch)

    def _discard_spares(self) -> None:
        root = self._mechanisms.cgroup if self._mechanisms is not None else None
        while True:
            try:
                spare = self._spares.get_nowait()
            except queue.Empty:
                return
            with self._lock:
                self._spare_count -= 1
            spare.discard(root)

    def _spawn(self) -> _Spare:
        """Start a jail ahead of its command: ``bwrap --args FD -- /bin/sh -c SHIM``, in a fresh
        pids cgroup with its own ``pids.max`` and with the command's rlimits, blocked until the
        per-command arguments (binds, environment with the command, working directory) arrive.

        Why ahead of time: moving a process into a cgroup costs ~9 ms of RCU synchronisation on
        cgroup v1, which would otherwise be paid on every command. Why a cgroup per command and
        not per sandbox: the kernel releases the pids charge of exited tasks lazily (measured: up
        to ~50 stale charges after fast commands), so a counter shared by successive commands
        fails forks spuriously; a fresh cgroup starts from zero, and the namespace's cgroup keeps
        a total with headroom as a backstop.
        """
        mech = self._probe()
        number = next(self._command_ids)
        scratch: Path | None = None
        if mech.scratch:
            scratch = self._root / "run" / f"cmd-{number}"
            self._make_scratch(scratch)
        cgroup: Path | None = None
        procs_fd: int | None = None
        seccomp_fd: int | None = None
        try:
            read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        except OSError as exc:
            _drop_scratch(scratch)
            raise SandboxError(f"cannot start a sandbox jail: {exc}") from exc
        try:
            if mech.cgroup is not None:
                cgroup = mech.cgroup / f"cmd-{number}"
                cgroup.mkdir()
                (cgroup / "pids.max").write_text(str(self._limits.max_processes))
                procs_fd = os.open(cgroup / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)
            setup = _ChildSetup(cgroup_procs_fd=procs_fd, rlimits=self._rlimits(mech))
            bwrap = self._bwrap_path or self._bwrap
            seccomp_fd = self._seccomp_fd()
            seccomp_args = ["--seccomp", str(seccomp_fd)] if seccomp_fd is not None else []
            proc = subprocess.Popen(
                [bwrap, *seccomp_args, "--args", str(read_fd), "--", "/bin/sh", "-c", _SHIM],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env={},
                close_fds=True,
                pass_fds=(read_fd,) if seccomp_fd is None else (read_fd, seccomp_fd),
                start_new_session=True,
                preexec_fn=setup,  # noqa: PLW1509 - only write(2)/setrlimit(2), then bwrap
            )
        except (OSError, subprocess.SubprocessError) as exc:
            os.close(write_fd)
            if cgroup is not None:
                with contextlib.suppress(OSError):
                    cgroup.rmdir()
            _drop_scratch(scratch)
            raise SandboxError(f"cannot start a sandbox jail: {exc}") from exc
        finally:
            os.close(read_fd)
            if procs_fd is not None:
                os.close(procs_fd)
            if seccomp_fd is not None:
                os.close(seccomp_fd)
        return _Spare(proc=proc, args_fd=write_fd, cgroup=cgroup, scratch=scratch)

    def _seccomp_fd(self) -> int | None:
        """A pipe holding the sandbox seccomp program, for bubblewrap's ``--seccomp FD``.

        bubblewrap installs it just before the command runs (after its own mounts), so every
        process of every command is filtered. None where libseccomp is unavailable.
        """
        if self._seccomp_bpf is None:
            try:
                self._seccomp_bpf = build_program(SANDBOX_DENIED_SYSCALLS, arg_rules=()).bpf
            except IsolationError:
                self._seccomp_bpf = b""
        if not self._seccomp_bpf:
            return None
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        try:
            write_all(write_fd, self._seccomp_bpf)  # well under the pipe's 64 KiB buffer
        finally:
            os.close(write_fd)
        return read_fd

    def _take_spare(self) -> _Spare:
        """A jail started ahead, or a new one when none is ready (a cold start)."""
        try:
            spare = self._spares.get_nowait()
        except queue.Empty:
            spare = self._spawn()
        else:
            with self._lock:
                self._spare_count -= 1
        self._wake.set()
        return spare

    def _reap_once(self) -> None:
        now = time.monotonic()
        with self._lock:
            candidates = [
                s
                for s in self._states.values()
                if s.ready.is_set()
                and not s.keep_alive
                and not s.destroyed
                and not s.failed
                and s.busy == 0
                and now - s.last_used >= s.sleep_after_s
            ]
        for state in candidates:
            with state.cond:
                idle = time.monotonic() - state.last_used >= state.sleep_after_s
                if state.busy or state.keep_alive or not idle:
                    continue
            self._destroy_state(state, reason=f"reaped after {state.sleep_after} idle")

    # -- operations --------------------------------------------------------------------------

    @contextlib.contextmanager
    def _use(self, state: _State, *, command: bool = False) -> Iterator[None]:
        """Mark the sandbox busy (so neither the reaper nor destroy frees it mid-operation),
        mounting its workspace if a previous namespace left it unmounted."""
        with state.cond:
            if state.destroyed or state.failed:
                raise SandboxNotFoundError(
                    f"sandbox {state.sandbox_id!r} has been destroyed",
                    details={"sandbox_id": state.sandbox_id},
                )
            if self._closed:
                raise SandboxError("the sandbox namespace is closed")
            if not state.mounted:
                if state.backend == "loop" and not _is_mount(state.ws):
                    self._mount(state.image, state.ws)
                state.mounted = True
            state.busy += 1
            if command:
                state.running += 1
        try:
            yield
        finally:
            with state.cond:
                state.busy -= 1
                if command:
                    state.running -= 1
                state.last_used = time.monotonic()
                state.cond.notify_all()
            if not state.destroyed:
                with contextlib.suppress(OSError):
                    os.utime(state.meta)  # persisted "last used" for a restarted namespace
                self._refresh_usage(state)

    def _refresh_usage(self, state: _State) -> None:
        if state.backend == "loop":
            if state.mounted and _is_mount(state.ws):
                try:
                    vfs = os.statvfs(state.ws)
                    state.usage_bytes = (vfs.f_blocks - vfs.f_bfree) * vfs.f_frsize
                except OSError:
                    pass
            else:
                with contextlib.suppress(OSError):
                    state.usage_bytes = state.image.stat().st_blocks * 512
            return
        try:
            state.usage_bytes = _dir_usage(state.ws)
        except OSError as exc:
            # Fail closed: a workspace that cannot be measured may hold anything.
            state.unmeasured = exc.strerror or str(exc)
            state.over_quota = True
            return
        state.unmeasured = ""
        state.over_quota = state.usage_bytes > state.disk_bytes

    def _info(self, state: _State, *, check: bool) -> SandboxInfo:
        if check and (state.destroyed or state.failed):
            raise SandboxNotFoundError(
                f"sandbox {state.sandbox_id!r} has been destroyed",
                details={"sandbox_id": state.sandbox_id},
            )
        idle = time.monotonic() - state.last_used
        return SandboxInfo(
            sandbox_id=state.sandbox_id,
            keep_alive=state.keep_alive,
            sleep_after=state.sleep_after,
            created_at=state.created_at,
            last_used_at=time.time() - idle,
            workspace_bytes=state.usage_bytes,
            disk_quota_bytes=state.disk_bytes,
            running_commands=state.running,
        )

    def _check_quota(self, state: _State) -> None:
        if state.over_quota and state.unmeasured:
            raise SandboxLimitError(
                f"the workspace of sandbox {state.sandbox_id!r} cannot be measured against its "
                f"disk quota ({state.unmeasured}): delete the deepest directories with "
                "delete_file first",
                details={"sandbox_id": state.sandbox_id, "quota_bytes": state.disk_bytes},
            )
        if state.over_quota:
            raise SandboxLimitError(
                f"sandbox {state.sandbox_id!r} is over its disk quota "
                f"({state.usage_bytes} of {state.disk_bytes} bytes): delete files first",
                details={"sandbox_id": state.sandbox_id, "quota_bytes": state.disk_bytes},
            )

    def _spec(
        self,
        state: _State,
        mech: _Mechanisms,
        cwd: str,
        env: tuple[tuple[str, str], ...],
        scratch: Path | None,
    ) -> BwrapSpec:
        ro, libs, symlinks = mech.layout
        path = ":".join([*(f"{p}/bin" for p in self._runtime_prefixes), "/usr/bin", "/bin"])
        base_env = {
            "PATH": path,
            "HOME": WORKSPACE,
            "USER": "sandbox",
            "LOGNAME": "sandbox",
            "LANG": "C.UTF-8",
            "TMPDIR": "/tmp",
        }
        base_env.update(env)
        etc = self._root / "etc"
        scratch_args: list[str] = []
        if scratch is None:  # bubblewrap's tmpfs: bounded in bytes, not in files
            scratch_args += ["--size", str(self._limits.tmp_bytes), "--tmpfs", "/dev/shm"]
        else:
            for name, jail_path in _SCRATCH:
                scratch_args += ["--bind", str(scratch / name), jail_path]
            # A runtime prefix under /tmp, hidden by the bind above, is bound again on top.
            for prefix in ro:
                if prefix.startswith("/tmp/"):
                    scratch_args += ["--ro-bind", prefix, prefix]
        return BwrapSpec(
            ro_binds=ro,
            system_lib_dirs=libs,
            ro_binds_to=((str(etc / "passwd"), "/etc/passwd"), (str(etc / "group"), "/etc/group")),
            rw_binds_to=((str(state.ws), WORKSPACE),),
            tmpfs=("/tmp",) if scratch is None else (),
            tmpfs_size_bytes=self._limits.tmp_bytes,
            hostname="sandbox",
            uid=_JAIL_UID,
            gid=_JAIL_UID,
            chdir=cwd,
            env=tuple(base_env.items()),
            symlinks=symlinks,
            proc_masks=mech.proc_masks,
            # The jail's root and /dev are unbounded tmpfs mounts of bubblewrap's: read-only once
            # set up, so only /workspace (quota), /tmp and /dev/shm (size-limited) are writable.
            # No ptys (BwrapSpec.ptys) and host-wide /proc files masked, as in every jail.
            extra_args=(
                *(("--disable-userns",) if mech.disable_userns else ()),
                *scratch_args,
                *("--remount-ro", "/dev", "--remount-ro", "/"),
            ),
        )

    def _rlimits(self, mech: _Mechanisms) -> tuple[tuple[int, int, int], ...]:
        """The rlimits of every process of a command. They are set when the jail is started
        ahead of its command, so the CPU limit is a backstop at the longest allowed timeout (the
        wall clock kills first) and the file size limit is the whole quota."""
        limits = self._limits
        cpu = math.ceil(limits.max_timeout_ms / 1000) + 1
        out = [
            (resource.RLIMIT_AS, limits.memory_bytes, limits.memory_bytes),
            (resource.RLIMIT_CPU, cpu, cpu + 1),
            (resource.RLIMIT_FSIZE, limits.disk_bytes, limits.disk_bytes),
            (resource.RLIMIT_NOFILE, limits.open_files, limits.open_files),
            (resource.RLIMIT_CORE, 0, 0),
        ]
        if mech.cgroup is None:
            out.append((resource.RLIMIT_NPROC, limits.max_processes, limits.max_processes))
        return tuple(out)

    def _exec(
        self,
        state: _State,
        command: str,
        *,
        timeout: int | None,
        cwd: str | None,
        env: Mapping[str, str] | None,
    ) -> ExecResult:
        if not isinstance(command, str) or not command.strip():
            raise ConfigurationError(
                "command must be a non-empty string", details={"field": "command"}
            )
        if "\x00" in command or len(command.encode("utf-8", "surrogatepass")) > _MAX_COMMAND_BYTES:
            raise ConfigurationError(
                f"command must not contain NUL bytes or exceed {_MAX_COMMAND_BYTES} bytes",
                details={"field": "command"},
            )
        timeout_ms = self._limits.default_timeout_ms if timeout is None else timeout
        if (
            not isinstance(timeout_ms, int)
            or isinstance(timeout_ms, bool)
            or not 1 <= timeout_ms <= self._limits.max_timeout_ms
        ):
            raise ConfigurationError(
                f"timeout must be an integer number of milliseconds between 1 and "
                f"{self._limits.max_timeout_ms}, got {timeout!r}",
                details={"field": "timeout"},
            )
        cwd_parts = _split_path(cwd if cwd is not None else WORKSPACE, allow_root=True)
        env_items = self._validate_env(env)
        mech = self._probe()
        with self._command_slot(), self._use(state, command=True):
            self._check_quota(state)
            if cwd_parts:
                try:
                    os.close(_open_dir(state.ws, cwd_parts))
                except OSError as exc:
                    raise SandboxPathError(
                        f"cwd {cwd!r} is not a directory of the workspace ({exc.strerror})",
                        details={"sandbox_id": state.sandbox_id, "path": str(cwd)},
                    ) from exc
            jail_cwd = "/".join((WORKSPACE, *cwd_parts))
            env_all = (*env_items, ("EVALJAIL_COMMAND", command))
            spare = self._take_spare()
            try:
                spec = self._spec(state, mech, jail_cwd, env_all, spare.scratch)
                # Every option of the jail but the fixed command (which _spawn put on the argv).
                options = build_args(spec, [], bwrap="")[1:-1]
                request = b"".join(
                    arg.encode("utf-8", "surrogateescape") + b"\0" for arg in options
                )
                result = self._run(state, spare, request, timeout_ms)
            finally:
                if spare.args_fd is not None:  # never handed its arguments: _run did not run
                    spare.discard(mech.cgroup)
                if spare.cgroup is not None and mech.cgroup is not None:
                    # After a kill the PID namespace dies asynchronously: wait for the last
                    # process, so that nothing of this command outlives exec().
                    _remove_cgroup_tree(spare.cgroup, mech.cgroup)
                if spare.scratch is not None:  # unmounted by the housekeeper, or by close()
                    self._retired.put(spare.scratch)
                    self._wake.set()
        with self._lock:
            self._stats.commands_total += 1
            self._stats.commands_timed_out_total += int(result.timed_out)
            self._stats.sandbox_seconds_total += result.duration_ms / 1000
        return result

    @contextlib.contextmanager
    def _command_slot(self) -> Iterator[None]:
        """Hold one of the namespace's ``max_running_commands`` slots for a command, or refuse
        at once: a caller (an HTTP thread) never waits behind other sandboxes' commands."""
        limit = self._limits.max_running_commands
        with self._slots:
            if self._running >= limit:
                self._stats.commands_refused_total += 1
                raise SandboxLimitError(
                    f"too many sandbox commands running: {self._running} (limit {limit}); "
                    "retry when one has finished",
                    details={"limit": "max_running_commands", "max_running_commands": limit},
                )
            self._running += 1
        try:
            yield
        finally:
            with self._slots:
                self._running -= 1

    @staticmethod
    def _validate_env(env: Mapping[str, str] | None) -> tuple[tuple[str, str], ...]:
        if env is None:
            return ()
        if not isinstance(env, Mapping) or len(env) > _MAX_ENV_VARS:
            raise ConfigurationError(
                f"env must be a mapping of at most {_MAX_ENV_VARS} names to strings",
                details={"field": "env"},
            )
        items = []
        for name, value in env.items():
            if not isinstance(name, str) or _ENV_NAME.fullmatch(name) is None:
                raise ConfigurationError(
                    f"invalid environment variable name {name!r}", details={"field": "env"}
                )
            if not isinstance(value, str) or "\x00" in value or len(value) > 32_768:
                raise ConfigurationError(
                    f"environment variable {name}: value must be a string without NUL bytes "
                    "of at most 32768 characters",
                    details={"field": "env"},
                )
            items.append((name, value))
        return tuple(items)

    def _run(self, state: _State, spare: _Spare, request: bytes, timeout_ms: int) -> ExecResult:
        """Hand the arguments to a ready jail, collect the output until it exits or the
        deadline, kill at the deadline; the process is always reaped."""
        proc = spare.proc
        started = time.monotonic()
        deadline = started + timeout_ms / 1000
        with state.cond:
            state.procs.add(proc)
            if state.destroyed or self._closed:
                _kill_group(proc)
        cap = self._limits.output_bytes
        out, err = bytearray(), bytearray()
        truncated = timed_out = False
        try:
            assert proc.stdout is not None and proc.stderr is not None
            try:
                spare.send(request)
            except OSError as exc:
                if state.destroyed:
                    raise SandboxNotFoundError(
                        f"sandbox {state.sandbox_id!r} was destroyed before the command started",
                        details={"sandbox_id": state.sandbox_id},
                    ) from exc
                raise SandboxError(f"the sandbox jail died before its command: {exc}") from exc
            buffers = {proc.stdout.fileno(): out, proc.stderr.fileno(): err}
            with selectors.DefaultSelector() as sel:
                for fd in buffers:
                    os.set_blocking(fd, False)
                    sel.register(fd, selectors.EVENT_READ)
                while sel.get_map():
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        if timed_out:
                            break  # killed and drained for _KILL_GRACE_S: give up on the pipes
                        timed_out = True
                        _kill_group(proc)
                        deadline = time.monotonic() + _KILL_GRACE_S
                        continue
                    for key, _ in sel.select(remaining):
                        try:
                            chunk = os.read(key.fd, 65536)
                        except BlockingIOError:
                            continue
                        if not chunk:
                            sel.unregister(key.fd)
                            continue
                        buf = buffers[key.fd]
                        room = cap - len(buf)
                        if room > 0:
                            buf += chunk[:room]
                        if len(chunk) > room:
                            truncated = True
            if not timed_out:
                try:
                    proc.wait(timeout=max(deadline - time.monotonic(), 0))
                except subprocess.TimeoutExpired:
                    timed_out = True
        finally:
            if proc.poll() is None:
                _kill_group(proc)
            proc.wait()
            with contextlib.suppress(OSError):
                spare.close_args()
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
            with state.cond:
                state.procs.discard(proc)
        duration_ms = (time.monotonic() - started) * 1000
        if proc.returncode == 1 and not out and err.startswith(_BWRAP_FAILED):
            # bubblewrap could not set the jail up (the command never ran).
            raise SandboxError(
                "the sandbox jail could not be set up: "
                + err.decode("utf-8", "replace").strip()[:500],
                details={"sandbox_id": state.sandbox_id},
            )
        marker = f"\n[evaljail: output truncated at {cap} bytes]\n".encode()
        if truncated:
            for stream in (out, err):
                if len(stream) >= cap:
                    stream.extend(marker)
        return ExecResult(
            stdout=out.decode("utf-8", "replace"),
            stderr=err.decode("utf-8", "replace"),
            exit_code=-signal.SIGKILL if timed_out else proc.returncode,
            duration_ms=round(duration_ms, 3),
            timed_out=timed_out,
            output_truncated=truncated,
        )

    # -- files -------------------------------------------------------------------------------

    def _write_file(self, state: _State, path: str, content: bytes | str) -> int:
        parts = _split_path(path, allow_root=False)
        if isinstance(content, str):
            data = content.encode("utf-8")
        elif isinstance(content, bytes | bytearray | memoryview):
            data = bytes(content)
        else:
            raise ConfigurationError("content must be bytes or str", details={"field": "content"})
        with self._use(state):
            self._check_quota(state)
            if state.backend == "directory" and state.usage_bytes + len(data) > state.disk_bytes:
                raise SandboxLimitError(
                    f"writing {len(data)} bytes would exceed the disk quota of sandbox "
                    f"{state.sandbox_id!r} ({state.disk_bytes} bytes)",
                    details={"sandbox_id": state.sandbox_id, "quota_bytes": state.disk_bytes},
                )
            if len(data) > state.disk_bytes:
                raise SandboxLimitError(
                    f"{len(data)} bytes exceed the disk quota of sandbox {state.sandbox_id!r}",
                    details={"sandbox_id": state.sandbox_id, "quota_bytes": state.disk_bytes},
                )
            try:
                parent = _open_dir(state.ws, parts[:-1], create=True)
                try:
                    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
                    fd = os.open(parts[-1], flags, 0o644, dir_fd=parent)
                finally:
                    os.close(parent)
                try:
                    if not stat.S_ISREG(os.fstat(fd).st_mode):
                        raise OSError(errno.ENXIO, "not a regular file")
                    os.ftruncate(fd, 0)
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view) :]
                finally:
                    os.close(fd)
            except OSError as exc:
                raise _os_error(exc, path, state.sandbox_id) from exc
        return len(data)

    def _read_file(self, state: _State, path: str) -> bytes:
        parts = _split_path(path, allow_root=False)
        with self._use(state):
            try:
                parent = _open_dir(state.ws, parts[:-1])
                try:
                    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
                    fd = os.open(parts[-1], flags, dir_fd=parent)
                finally:
                    os.close(parent)
                try:
                    mode = os.fstat(fd).st_mode
                    if stat.S_ISDIR(mode):
                        raise OSError(errno.EISDIR, "is a directory")
                    if not stat.S_ISREG(mode):
                        raise OSError(errno.ENXIO, "not a regular file")
                    chunks = []
                    remaining = state.disk_bytes  # a file cannot be larger than the quota
                    while remaining > 0:
                        chunk = os.read(fd, min(remaining, 1 << 20))
                        if not chunk:
                            break
                        chunks.append(chunk)
                        remaining -= len(chunk)
                    return b"".join(chunks)
                finally:
                    os.close(fd)
            except OSError as exc:
                raise _os_error(exc, path, state.sandbox_id) from exc

    def _entry(self, name: str, rel: str, st: os.stat_result) -> FileEntry:
        return FileEntry(
            name=name,
            path=rel,
            kind=_kind(st.st_mode),
            size_bytes=st.st_size,
            modified_at=st.st_mtime,
        )

    def _list_files(self, state: _State, path: str) -> list[FileEntry]:
        parts = _split_path(path, allow_root=True)
        prefix = "/".join(parts)
        with self._use(state):
            try:
                fd = _open_dir(state.ws, parts)
                try:
                    entries = []
                    with os.scandir(fd) as it:
                        for item in it:
                            st = item.stat(follow_symlinks=False)
                            rel = f"{prefix}/{item.name}" if prefix else item.name
                            entries.append(self._entry(item.name, rel, st))
                finally:
                    os.close(fd)
            except OSError as exc:
                raise _os_error(exc, path, state.sandbox_id) from exc
        return sorted(entries, key=lambda e: e.name)

    def _stat(self, state: _State, path: str) -> FileEntry:
        parts = _split_path(path, allow_root=True)
        with self._use(state):
            try:
                if not parts:
                    return self._entry("", "", state.ws.lstat())
                parent = _open_dir(state.ws, parts[:-1])
                try:
                    st = os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
                finally:
                    os.close(parent)
            except OSError as exc:
                raise _os_error(exc, path, state.sandbox_id) from exc
        return self._entry(parts[-1], "/".join(parts), st)

    def _delete_file(self, state: _State, path: str) -> None:
        parts = _split_path(path, allow_root=False)
        with self._use(state):
            try:
                parent = _open_dir(state.ws, parts[:-1])
                try:
                    st = os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
                    if stat.S_ISDIR(st.st_mode):
                        _remove_tree(parts[-1], parent)
                    else:
                        os.unlink(parts[-1], dir_fd=parent)
                finally:
                    os.close(parent)
            except OSError as exc:
                raise _os_error(exc, path, state.sandbox_id) from exc


def get_sandbox(
    namespace: SandboxNamespace,
    sandbox_id: str,
    keep_alive: bool = False,
    sleep_after: str = "30m",
) -> Sandbox:
    """The seed's ``getSandbox(env.SANDBOX, id, {keepAlive, sleepAfter})``: the sandbox named
    ``sandbox_id`` in ``namespace``, created if needed (the same id gives the same sandbox).

    ``keep_alive=True`` exempts it from the reaper; otherwise it is destroyed after
    ``sleep_after`` (``"30s"``, ``"30m"``, ``"2h"``, ``"1d"``) without any operation. The options
    of the latest call win.
    """
    return namespace.get(sandbox_id, keep_alive=keep_alive, sleep_after=sleep_after)
