"""Fixtures for the named-sandbox tests: namespaces that are checked for leaks when closed.

Every namespace made here is closed at teardown, and the test fails if anything is left behind:
a jailed process whose command line names the namespace's state directory, a mount under it, or
its pids cgroup.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from evaljail.sandboxes import SandboxLimits, SandboxNamespace

MIB = 1024 * 1024

#: Small limits so that quota tests are fast.
TEST_LIMITS = SandboxLimits(
    max_sandboxes=32,
    disk_bytes=16 * MIB,
    total_disk_bytes=512 * MIB,
    max_processes=32,
    default_timeout_ms=10_000,
)


def mounts_under(path: Path) -> list[str]:
    prefix = str(path)
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    return [p for p in points if p == prefix or p.startswith(prefix + "/")]


def processes_naming(path: Path) -> list[str]:
    out = subprocess.run(
        ["ps", "-eo", "pid=,args="], capture_output=True, text=True, check=True
    ).stdout
    return [line.strip() for line in out.splitlines() if str(path) in line]


def namespace_cgroup(ns: SandboxNamespace) -> Path | None:
    mech = ns._mechanisms
    return None if mech is None else mech.cgroup


def cgroup_pids(cgroup: Path | None) -> list[int]:
    """Every process in a namespace's cgroup tree (its commands and its jails started ahead)."""
    if cgroup is None or not cgroup.exists():
        return []
    return [
        int(pid)
        for d, _, _ in os.walk(cgroup)
        for pid in Path(d, "cgroup.procs").read_text().split()
    ]


def close_and_check(ns: SandboxNamespace) -> None:
    """Close ``ns`` and fail if it left a mount, a process or a cgroup behind."""
    cgroup = namespace_cgroup(ns)
    pids = cgroup_pids(cgroup)
    ns.close()
    root = ns.state_dir
    assert not mounts_under(root), f"mounts left behind: {mounts_under(root)}"
    assert not processes_naming(root), f"processes left behind: {processes_naming(root)}"
    alive = [pid for pid in pids if Path(f"/proc/{pid}").exists()]
    assert not alive, f"processes left behind: {alive}"
    if cgroup is not None:
        assert not cgroup.exists(), f"cgroup left behind: {cgroup}"


@pytest.fixture
def make_namespace() -> Iterator[Callable[..., SandboxNamespace]]:
    """``make_namespace(state_dir=None, **kwargs)``: a namespace closed and leak-checked at
    teardown (test limits unless ``limits=`` is given)."""
    made: list[SandboxNamespace] = []

    def make(state_dir: Path | None = None, **kwargs: Any) -> SandboxNamespace:
        kwargs.setdefault("limits", TEST_LIMITS)
        ns = SandboxNamespace(state_dir, **kwargs)
        made.append(ns)
        return ns

    yield make
    for ns in reversed(made):  # a later namespace may hold an earlier one's state directory
        close_and_check(ns)


@pytest.fixture(scope="module")
def shared_namespace() -> Iterator[SandboxNamespace]:
    """One namespace for a whole module (its sandboxes use distinct ids)."""
    ns = SandboxNamespace(limits=TEST_LIMITS)
    yield ns
    close_and_check(ns)
    assert not ns.state_dir.exists(), "a private state directory must be deleted by close()"
