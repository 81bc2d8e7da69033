"""The capability probe: which isolation layers this host can provide, and why not.

``probe()`` really tries each mechanism (creates namespaces with bubblewrap, installs the seccomp
filter in a throw-away interpreter and checks that ``socket()`` is refused, sets rlimits), so a
report of "on" means it worked here, not that a binary exists.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import IsolationError
from .seccomp import SeccompProgram, build_program, libseccomp_version

__all__ = ["Capabilities", "Layer", "probe"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Layer:
    """One isolation layer: on or off, and the reason."""

    name: str
    enabled: bool
    detail: str
    required: bool = True  #: strict mode refuses to run without it


@dataclass(frozen=True, slots=True, kw_only=True)
class Capabilities:
    """What the probe found."""

    bwrap: str | None
    layers: tuple[Layer, ...]
    seccomp_program: SeccompProgram | None

    @property
    def strict_ok(self) -> bool:
        return all(layer.enabled for layer in self.layers if layer.required)

    @property
    def missing(self) -> tuple[str, ...]:
        return tuple(f"{layer.name}: {layer.detail}" for layer in self.layers
                     if layer.required and not layer.enabled)  # fmt: skip

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def to_dict(self) -> dict[str, dict[str, object]]:
        return {
            layer.name: {"enabled": layer.enabled, "detail": layer.detail,
                         "required": layer.required}
            for layer in self.layers
        }  # fmt: skip


def _probe_namespaces(bwrap: str | None) -> Layer:
    if bwrap is None:
        return Layer(
            name="namespaces",
            enabled=False,
            detail="bubblewrap (bwrap) not found; install it: apt-get install bubblewrap",
        )
    try:
        done = subprocess.run(
            [bwrap, "--unshare-all", "--die-with-parent", "--cap-drop", "ALL",
             "--ro-bind", "/", "/", "--", "/bin/true"],
            capture_output=True, text=True, timeout=10, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Layer(name="namespaces", enabled=False, detail=f"bwrap failed: {exc}")
    if done.returncode != 0:
        why = done.stderr.strip() or f"exit status {done.returncode}"
        return Layer(
            name="namespaces",
            enabled=False,
            detail=f"bwrap cannot create user/pid/net namespaces: {why} "
            "(check kernel.unprivileged_userns_clone / user.max_user_namespaces)",
        )
    version = subprocess.run(
        [bwrap, "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return Layer(name="namespaces", enabled=True, detail=f"{version} at {bwrap}: user, pid, "
                 "net, ipc, uts and cgroup namespaces")  # fmt: skip


#: Run by a fresh interpreter: install the filter read from stdin, then try socket().
_SECCOMP_CHECK = (
    "import socket\n"
    "from evaljail_worker.child import SeccompFilter\n"  # the very code the children use
    "SeccompFilter(bytes.fromhex(sys.stdin.read())).install()\n"
    "try:\n"
    "    socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()\n"
    "except PermissionError:\n"
    "    sys.exit(0)\n"
    "sys.exit(1)\n"
)


def _seccomp_refuses_socket(program: SeccompProgram) -> bool:
    """Install the filter in a throw-away interpreter and check that socket() is refused.

    A fresh process, not a fork: the host may have threads (a service, a test runner), and a
    forked child of a threaded process can deadlock on a lock some other thread held.
    """
    from .jail import LOAD_WORKER, host_worker_dir

    try:
        done = subprocess.run(
            [sys.executable, "-I", "-c", LOAD_WORKER + _SECCOMP_CHECK, str(host_worker_dir())],
            input=program.bpf.hex(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _probe_seccomp() -> tuple[Layer, SeccompProgram | None]:
    if "Seccomp:" not in Path("/proc/self/status").read_text():
        return Layer(name="seccomp", enabled=False, detail="kernel without seccomp"), None
    try:
        program = build_program()
    except IsolationError as exc:
        return Layer(name="seccomp", enabled=False, detail=exc.message), None
    if not _seccomp_refuses_socket(program):
        return Layer(
            name="seccomp", enabled=False, detail="the filter loaded but socket() was not refused"
        ), None
    return Layer(
        name="seccomp",
        enabled=True,
        detail=f"libseccomp {libseccomp_version()}: {len(program.denied)} system calls denied "
        f"({program.instructions} BPF instructions)",
    ), program


def _probe_rlimits() -> Layer:
    try:
        for res in (resource.RLIMIT_AS, resource.RLIMIT_CPU, resource.RLIMIT_FSIZE,
                    resource.RLIMIT_NOFILE, resource.RLIMIT_CORE):  # fmt: skip
            resource.getrlimit(res)
    except (OSError, ValueError, AttributeError) as exc:
        return Layer(name="rlimits", enabled=False, detail=f"rlimits unavailable: {exc}")
    return Layer(
        name="rlimits", enabled=True, detail="address space, CPU seconds, file size, descriptors"
    )


def _probe_cgroups() -> Layer:
    root = Path("/sys/fs/cgroup")
    if (root / "cgroup.controllers").is_file():
        writable = os.access(root / "cgroup.subtree_control", os.W_OK)
        detail = "cgroup v2" + (" (writable)" if writable else " (read-only)")
    elif (root / "pids").is_dir():
        writable = os.access(root / "pids", os.W_OK)
        detail = "cgroup v1 pids hierarchy" + (" (writable)" if writable else " (read-only)")
    else:
        return Layer(name="cgroups", enabled=False, detail="no cgroup hierarchy (optional)",
                     required=False)  # fmt: skip
    return Layer(
        name="cgroups",
        enabled=writable,
        detail=f"{detail}: named sandboxes cap processes per command; the eval engine relies "
        "on seccomp and rlimits instead (optional)",
        required=False,
    )


def probe(*, bwrap: str | None = None) -> Capabilities:
    """Find what this host supports. Runs in a few tens of milliseconds."""
    bwrap = bwrap or shutil.which("bwrap")
    seccomp_layer, program = _probe_seccomp()
    return Capabilities(
        bwrap=bwrap,
        layers=(
            Layer(name="static_analysis", enabled=True, detail="AST rules (always on)"),
            _probe_namespaces(bwrap),
            seccomp_layer,
            _probe_rlimits(),
            Layer(name="timeouts", enabled=True, detail="SIGKILL at the deadline, pool backstop"),
            _probe_cgroups(),
        ),
        seccomp_program=program,
    )
