"""Layer 2, mount and namespaces: a :class:`BwrapSpec` rendered to bubblewrap arguments.

Rendering is a pure function (golden-tested); nothing here starts a process.
"""

from __future__ import annotations

import contextlib
import functools
import os
import stat
import sys
import sysconfig
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["BwrapSpec", "build_args", "host_wide_proc_files", "runtime_paths"]

#: System library directories the interpreter and its extension modules link against.
_SYSTEM_LIB_DIRS: tuple[str, ...] = ("/lib", "/lib64", "/usr/lib", "/usr/lib64")


def runtime_paths() -> tuple[str, ...]:
    """Host directories holding the Python runtime and its site-packages (read-only in jails).

    Only the interpreter's own prefix and the active environment's site-packages: never a
    home directory, a project checkout or /etc.
    """
    paths: list[str] = []
    for candidate in (
        sys.base_prefix,
        sys.prefix,
        sysconfig.get_paths()["purelib"],
        sysconfig.get_paths()["platlib"],
    ):
        path = str(Path(candidate).resolve())
        if Path(path).is_dir() and path not in paths:
            paths.append(path)
    # The venv's bin/python is a symlink into the base prefix: binding sys.prefix/bin is enough
    # when sys.prefix is a venv, but the venv root itself may hold only pyvenv.cfg and lib/.
    paths.sort(key=len)
    pruned: list[str] = []
    for p in paths:
        if not any(p == q or p.startswith(q + "/") for q in pruned):
            pruned.append(p)
    return tuple(pruned)


#: /proc files that describe the whole host, not the jail, and that container runtimes mask. The
#: jail's user is host root's uid when the service runs as root, and file modes alone let it read
#: those that the host keeps root-only (0400): physical page flags and counts, slab and vmalloc
#: statistics with addresses, timers; and root's key rings.
_PROC_MASKED = (
    "keys", "key-users", "kpagecgroup", "kpagecount", "kpageflags", "pagetypeinfo", "slabinfo",
    "vmallocinfo", "timer_list", "sched_debug", "latency_stats", "kcore", "kmsg",
)  # fmt: skip


@functools.cache
def host_wide_proc_files() -> tuple[str, ...]:
    """The /proc files a jail gets ``/dev/null`` (unopenable: nodev) bound over: those of
    ``_PROC_MASKED`` and every other top-level file the host keeps from other users, that exist
    on this kernel (a mount point that did not exist would fail the jail's set-up). A name of
    ``_PROC_MASKED`` counts whatever the host shows there (a container runtime may already have
    bound ``/dev/null`` over it: the jail's own procfs still has the file). Read once."""
    masks: list[str] = []
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if entry.name.isdigit() or entry.is_dir(follow_symlinks=False):
                continue
            mode = entry.stat(follow_symlinks=False).st_mode
            root_only = stat.S_ISREG(mode) and not mode & stat.S_IROTH
            if entry.name in _PROC_MASKED or root_only:
                masks.append(f"/proc/{entry.name}")
    return tuple(sorted(masks))


@dataclass(frozen=True, slots=True, kw_only=True)
class BwrapSpec:
    """What a jailed process may see. Defaults are the strictest that still run Python."""

    ro_binds: tuple[str, ...] = ()  #: host paths bound read-only at the same path
    ro_binds_to: tuple[tuple[str, str], ...] = ()  #: (host path, jail path) read-only binds
    rw_binds_to: tuple[tuple[str, str], ...] = ()  #: (host path, jail path) writable binds
    tmpfs: tuple[str, ...] = ("/tmp",)
    tmpfs_size_bytes: int = 1024 * 1024
    proc: bool = True  #: a procfs of the jail's own PID namespace, read-only
    proc_masks: tuple[str, ...] = ()  #: /proc files covered by /dev/null (host_wide_proc_files)
    dev: bool = True  #: a minimal /dev (null, zero, random, urandom, tty)
    #: ptys: --dev mounts a devpts instance whose ptys come from one host-wide pool
    #: (kernel.pty.max, shared with every container). Off: an empty read-only tmpfs covers
    #: /dev/pts, and /dev/ptmx, a link into it, leads nowhere.
    ptys: bool = False
    share_net: bool = False
    hostname: str = "evaljail"
    uid: int = 65534
    gid: int = 65534
    chdir: str = "/"
    env: tuple[tuple[str, str], ...] = field(
        default_factory=lambda: (("PATH", "/usr/bin:/bin"), ("LANG", "C.UTF-8"))
    )
    system_lib_dirs: tuple[str, ...] = _SYSTEM_LIB_DIRS
    extra_args: tuple[str, ...] = ()
    symlinks: tuple[tuple[str, str], ...] = ()  #: (target, jail path): ``--symlink`` after binds


def build_args(spec: BwrapSpec, command: Sequence[str], *, bwrap: str = "bwrap") -> list[str]:
    """The full argv: ``bwrap [options] -- command...``."""
    args: list[str] = [
        bwrap,
        "--unshare-user",
        "--unshare-ipc",
        "--unshare-pid",
        "--unshare-uts",
        "--unshare-cgroup-try",
    ]
    if not spec.share_net:
        args.append("--unshare-net")
    args += [
        "--uid", str(spec.uid),
        "--gid", str(spec.gid),
        "--hostname", spec.hostname,
        "--die-with-parent",
        "--new-session",
        "--cap-drop", "ALL",
        "--clearenv",
    ]  # fmt: skip
    for name, value in spec.env:
        args += ["--setenv", name, value]
    for lib in spec.system_lib_dirs:
        args += ["--ro-bind-try", lib, lib]
    for path in spec.tmpfs:
        args += ["--size", str(spec.tmpfs_size_bytes), "--tmpfs", path]
    # Binds come after the tmpfs mounts so that a runtime under /tmp stays visible.
    for path in spec.ro_binds:
        args += ["--ro-bind", path, path]
    for src, dst in spec.ro_binds_to:
        args += ["--ro-bind", src, dst]
    for src, dst in spec.rw_binds_to:
        args += ["--bind", src, dst]
    for target, path in spec.symlinks:
        args += ["--symlink", target, path]
    if spec.proc:
        # Read-only: when the service runs as root, the jail's user is root outside, and the
        # kernel lets root's uid write host-wide sysctls (/proc/sys) without any capability.
        args += ["--proc", "/proc", "--remount-ro", "/proc"]
        for path in spec.proc_masks:
            args += ["--ro-bind", "/dev/null", path]
    if spec.dev:
        args += ["--dev", "/dev"]
        if not spec.ptys:
            args += ["--size", "4096", "--tmpfs", "/dev/pts", "--remount-ro", "/dev/pts"]
    args += ["--chdir", spec.chdir, *spec.extra_args, "--", *command]
    return args
