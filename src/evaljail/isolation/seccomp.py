"""Layer 2, system calls: a seccomp-BPF program built once with libseccomp.

The host builds the program (libseccomp through ctypes) and hands the raw BPF bytes to each
jailed worker; the per-execution child installs them with ``prctl(PR_SET_SECCOMP)`` so the code
inside the jail needs neither libseccomp nor anything beyond the standard library.

Denied calls fail with ``EPERM`` (so Python raises ``PermissionError`` — a precise, testable
outcome). System calls of a foreign architecture (i386 ``int 0x80``, x32) kill the process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from dataclasses import dataclass

from ..errors import IsolationError

__all__ = [
    "CHILD_DENIED_SYSCALLS",
    "DENIED_SYSCALLS",
    "EVAL_ARG_RULES",
    "FIRST_UNKNOWN_SYSCALL",
    "SANDBOX_DENIED_SYSCALLS",
    "ZYGOTE_DENIED_SYSCALLS",
    "ArgRule",
    "SeccompProgram",
    "build_program",
    "libseccomp_version",
]

#: The kernel's attack surface: tracing, namespaces, mounts, keyrings, BPF, io_uring, modules,
#: clocks ... Denied to eval executions and to named sandboxes' shell commands alike.
_KERNEL_SURFACE: tuple[str, ...] = (
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    "mount", "umount2", "pivot_root", "chroot", "unshare", "setns", "fsopen", "fsmount",
    "fsconfig", "fspick", "move_mount", "open_tree", "mount_setattr",
    "keyctl", "add_key", "request_key", "bpf", "perf_event_open", "userfaultfd",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "reboot", "swapon", "swapoff", "syslog", "acct", "quotactl", "personality",
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "sethostname",
    "setdomainname", "iopl", "ioperm", "name_to_handle_at", "open_by_handle_at",
    "lookup_dcookie", "move_pages", "migrate_pages", "vhangup", "uselib", "nfsservctl",
)  # fmt: skip

#: IPC objects live in the jail's IPC namespace, not the process's: they outlive it (state for
#: the next execution) and their memory, like a memfd's, escapes RLIMIT_AS.
_MEMORY_OUTSIDE_LIMITS: tuple[str, ...] = (
    "shmget", "shmat", "shmdt", "shmctl", "msgget", "msgsnd", "msgrcv", "msgctl", "semget",
    "semop", "semtimedop", "semctl", "mq_open", "mq_unlink", "mq_timedsend", "mq_timedreceive",
    "mq_notify", "mq_getsetattr", "memfd_create",
)  # fmt: skip

#: Watching the runtime's files: a side channel on the host; and a host-wide per-uid budget
#: (when the service runs as root, the jail's user is root's: 128 inotify instances in all).
_HOST_WIDE_WATCHES: tuple[str, ...] = (
    "inotify_init", "inotify_init1", "inotify_add_watch", "fanotify_init", "fanotify_mark",
)  # fmt: skip

#: What an eval execution may never do: the kernel surface, plus everything an eval never needs.
DENIED_SYSCALLS: tuple[str, ...] = (
    # network
    "socket", "socketpair", "connect", "bind", "listen", "accept", "accept4",
    # new programs and new processes or threads
    "execve", "execveat", "fork", "vfork", "clone", "clone3",
    # signalling other processes
    "kill", "tkill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo", "pidfd_open",
    "pidfd_send_signal",
    *_KERNEL_SURFACE,
    "mbind", "set_mempolicy", "seccomp",
    # metadata of the few writable paths (the scientific profile's sealed /tmp): no unsealing
    "chmod", "fchmod", "fchmodat", "chown", "fchown", "lchown", "fchownat", "utime", "utimes",
    "futimesat", "utimensat", "setxattr", "lsetxattr", "fsetxattr", "removexattr",
    "lremovexattr", "fremovexattr",
    *_MEMORY_OUTSIDE_LIMITS,
    # other processes' scheduling (the zygote's would be inherited by every later child)
    "setpriority", "sched_setscheduler", "sched_setparam", "sched_setattr", "sched_setaffinity",
    "ioprio_set",
    *_HOST_WIDE_WATCHES,
)  # fmt: skip

#: What a zygote keeps to manage its children: fork them (``clone``) and kill them. The
#: zygote installs the rest of ``DENIED_SYSCALLS`` on itself once; each child adds a second,
#: tiny filter for these two, so an execution is under exactly ``DENIED_SYSCALLS``. The kernel
#: compiles every filter installed, and one per execution of the whole list cost ~0.13 ms of
#: CPU per execution (measured A/B, back-to-back executions: 2.54-2.71 vs 2.75-2.99 ms).
CHILD_DENIED_SYSCALLS: tuple[str, ...] = ("clone", "kill")

#: The zygote's own filter: everything an execution may not do but what it needs for children.
ZYGOTE_DENIED_SYSCALLS: tuple[str, ...] = tuple(
    name for name in DENIED_SYSCALLS if name not in CHILD_DENIED_SYSCALLS
)

#: For named sandboxes, whose shell commands must fork and exec: the kernel surface only.
SANDBOX_DENIED_SYSCALLS: tuple[str, ...] = (
    *_KERNEL_SURFACE,
    *_MEMORY_OUTSIDE_LIMITS,
    *_HOST_WIDE_WATCHES,
)

#: System calls from this number up are newer than anything the runtime uses (Linux 6.6+:
#: ``fchmodat2``, ``cachestat``, ``mseal``, the ``*xattrat`` family ...; the number is the same
#: on every architecture since 5.1). A filter answers them ``ENOSYS``, as a kernel that lacks
#: them would, so C libraries fall back to the older calls (which the filter does see).
FIRST_UNKNOWN_SYSCALL = 450
_LAST_SYSCALL = 511


@dataclass(frozen=True, slots=True)
class ArgRule:
    """Deny ``syscall`` when its argument ``arg`` matches: ``ne`` (64-bit ``!= value``) or
    ``masked_eq`` (``arg & 0xffffffff == value``: the kernel reads these as 32-bit ints, so
    high bits must not slip a value past the filter)."""

    syscall: str
    arg: int
    op: str
    value: int


_F_SETOWN, _F_SETSIG, _F_SETOWN_EX, _F_SETLEASE, _F_NOTIFY = 8, 10, 15, 1024, 1026
_FIOSETOWN, _SIOCSPGRP = 0x8901, 0x8902

#: Argument-level denials for eval executions. ``kill`` is denied, but a descriptor's owner
#: gets a signal of the owner's choosing (``F_SETOWN`` + ``F_SETSIG``): that would reach the
#: zygote and later children. ``prlimit64`` only on the calling process (pid 0).
EVAL_ARG_RULES: tuple[ArgRule, ...] = (
    *(ArgRule("fcntl", 1, "masked_eq", cmd)
      for cmd in (_F_SETOWN, _F_SETSIG, _F_SETOWN_EX, _F_SETLEASE, _F_NOTIFY)),
    *(ArgRule("ioctl", 1, "masked_eq", cmd) for cmd in (_FIOSETOWN, _SIOCSPGRP)),
    ArgRule("prlimit64", 0, "ne", 0),
)  # fmt: skip

_SCMP_ACT_ALLOW = 0x7FFF0000
_SCMP_ACT_KILL_PROCESS = 0x80000000


def _scmp_act_errno(errno: int) -> int:
    return 0x00050000 | (errno & 0x0000FFFF)


class _ArgCmp(ctypes.Structure):
    """``struct scmp_arg_cmp``."""

    _fields_ = (
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    )


_SCMP_CMP_NE = 1
_SCMP_CMP_MASKED_EQ = 7


@dataclass(frozen=True, slots=True)
class SeccompProgram:
    """A compiled filter: raw ``struct sock_filter`` bytes, ready for ``PR_SET_SECCOMP``."""

    bpf: bytes
    denied: tuple[str, ...]  #: the syscalls this kernel knows that the filter denies

    @property
    def instructions(self) -> int:
        return len(self.bpf) // 8


def _load() -> ctypes.CDLL:
    name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    try:
        lib = ctypes.CDLL(name, use_errno=True)
    except OSError as exc:
        raise IsolationError(
            "libseccomp is not installed (apt-get install libseccomp2)",
            details={"library": name},
        ) from exc
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    lib.seccomp_syscall_resolve_name.restype = ctypes.c_int
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add.restype = ctypes.c_int
    lib.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint]
    lib.seccomp_rule_add_array.restype = ctypes.c_int
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(_ArgCmp)
    ]  # fmt: skip
    lib.seccomp_export_bpf.restype = ctypes.c_int
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.seccomp_attr_set.restype = ctypes.c_int
    lib.seccomp_attr_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32]
    return lib


def libseccomp_version() -> str | None:
    """``"2.5.4"`` or None when libseccomp cannot be loaded."""
    try:
        lib = _load()
    except IsolationError:
        return None

    class _Version(ctypes.Structure):
        _fields_ = (("major", ctypes.c_uint), ("minor", ctypes.c_uint), ("micro", ctypes.c_uint))

    lib.seccomp_version.restype = ctypes.POINTER(_Version)
    v = lib.seccomp_version().contents
    return f"{v.major}.{v.minor}.{v.micro}"


_SCMP_FLTATR_ACT_BADARCH = 2
_SCMP_FLTATR_CTL_NNP = 3
_SCMP_FLTATR_CTL_OPTIMIZE = 8  # libseccomp >= 2.5; 2 = a binary tree over syscall numbers


def build_program(
    denied: tuple[str, ...] = DENIED_SYSCALLS,
    *,
    arg_rules: tuple[ArgRule, ...] = EVAL_ARG_RULES,
    unknown_from: int | None = FIRST_UNKNOWN_SYSCALL,
) -> SeccompProgram:
    """Compile the filter: allow by default, ``EPERM`` for ``denied`` and ``arg_rules``,
    ``ENOSYS`` from ``unknown_from`` up, kill on a foreign architecture."""
    lib = _load()
    ctx = lib.seccomp_init(_SCMP_ACT_ALLOW)
    if not ctx:
        raise IsolationError("seccomp_init failed")
    try:
        # The child sets no_new_privs itself; a foreign architecture kills the process.
        lib.seccomp_attr_set(ctx, _SCMP_FLTATR_CTL_NNP, 0)
        lib.seccomp_attr_set(ctx, _SCMP_FLTATR_ACT_BADARCH, _SCMP_ACT_KILL_PROCESS)
        lib.seccomp_attr_set(ctx, _SCMP_FLTATR_CTL_OPTIMIZE, 2)  # older libseccomp: linear
        known: list[str] = []
        for name in denied:
            nr = lib.seccomp_syscall_resolve_name(name.encode())
            if nr < 0:  # __NR_SCMP_ERROR: this kernel/arch has no such call
                continue
            rc = lib.seccomp_rule_add(ctx, _scmp_act_errno(1), nr, 0)
            if rc < 0:
                raise IsolationError(f"seccomp_rule_add({name}) failed: {os.strerror(-rc)}")
            known.append(name)
        for rule in arg_rules:
            nr = lib.seccomp_syscall_resolve_name(rule.syscall.encode())
            if nr < 0:
                continue
            if rule.op == "ne":
                cmp = _ArgCmp(rule.arg, _SCMP_CMP_NE, rule.value, 0)
            else:
                cmp = _ArgCmp(rule.arg, _SCMP_CMP_MASKED_EQ, 0xFFFFFFFF, rule.value)
            rc = lib.seccomp_rule_add_array(ctx, _scmp_act_errno(1), nr, 1, ctypes.byref(cmp))
            if rc < 0:
                raise IsolationError(f"seccomp rule on {rule.syscall} failed: {os.strerror(-rc)}")
        if unknown_from is not None:
            named = {lib.seccomp_syscall_resolve_name(n.encode()) for n in known}
            for nr in range(unknown_from, _LAST_SYSCALL + 1):
                if nr not in named:
                    rc = lib.seccomp_rule_add(ctx, _scmp_act_errno(errno.ENOSYS), nr, 0)
                    if rc < 0:
                        raise IsolationError(
                            f"seccomp rule on syscall {nr} failed: {os.strerror(-rc)}"
                        )
        read_fd, write_fd = os.pipe()
        try:
            rc = lib.seccomp_export_bpf(ctx, write_fd)
            os.close(write_fd)
            write_fd = -1
            if rc < 0:
                raise IsolationError(f"seccomp_export_bpf failed: {os.strerror(-rc)}")
            chunks = []
            while chunk := os.read(read_fd, 65536):
                chunks.append(chunk)
        finally:
            os.close(read_fd)
            if write_fd >= 0:
                os.close(write_fd)
    finally:
        lib.seccomp_release(ctx)
    bpf = b"".join(chunks)
    if not bpf or len(bpf) % 8:
        raise IsolationError(f"libseccomp exported a malformed program ({len(bpf)} bytes)")
    return SeccompProgram(bpf=bpf, denied=tuple(known))
