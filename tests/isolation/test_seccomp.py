"""The seccomp program: built by libseccomp, and really refusing calls in a child."""

from __future__ import annotations

import errno
import os

import pytest

from evaljail.isolation.probe import probe
from evaljail.isolation.seccomp import (
    CHILD_DENIED_SYSCALLS,
    DENIED_SYSCALLS,
    ZYGOTE_DENIED_SYSCALLS,
    build_program,
)
from evaljail.worker.child import SeccompFilter


def test_program_covers_the_dangerous_calls() -> None:
    program = build_program()
    assert program.instructions > len(program.denied) // 2
    for name in ("socket", "execve", "clone", "clone3", "fork", "ptrace", "mount", "bpf",
                 "unshare", "kill", "keyctl", "chmod"):  # fmt: skip
        assert name in DENIED_SYSCALLS
        assert name in program.denied or name == "fork"  # no fork(2) on some archs


def test_the_zygote_and_child_filters_add_up_to_the_whole_list() -> None:
    assert set(ZYGOTE_DENIED_SYSCALLS) | set(CHILD_DENIED_SYSCALLS) == set(DENIED_SYSCALLS)
    assert not set(ZYGOTE_DENIED_SYSCALLS) & set(CHILD_DENIED_SYSCALLS)
    assert "clone" not in ZYGOTE_DENIED_SYSCALLS and "kill" not in ZYGOTE_DENIED_SYSCALLS


def _in_child(action: str, *, split: bool = False) -> int:
    """``split``: the zygote's filter, then (in a grandchild) the child's, as the engine does."""
    filters = (
        [SeccompFilter(build_program(ZYGOTE_DENIED_SYSCALLS).bpf),
         SeccompFilter(build_program(CHILD_DENIED_SYSCALLS).bpf)]
        if split
        else [SeccompFilter(build_program().bpf)]
    )  # fmt: skip
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 99
        try:
            for flt in filters:
                flt.install()
            if action == "socket":
                import socket

                socket.socket()
            elif action == "fork":
                os.fork()
            elif action == "exec":
                os.execv("/bin/true", ["true"])
            elif action == "getpid":
                os.getpid()
                code = 0
        except PermissionError as exc:
            code = 1 if exc.errno == errno.EPERM else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.WEXITSTATUS(status)


@pytest.mark.parametrize("split", [False, True], ids=["one-filter", "zygote-then-child"])
@pytest.mark.parametrize("action", ["socket", "fork", "exec"])
def test_denied_calls_fail_with_eperm(action: str, split: bool) -> None:
    assert _in_child(action, split=split) == 1


@pytest.mark.parametrize("split", [False, True], ids=["one-filter", "zygote-then-child"])
def test_ordinary_calls_still_work(split: bool) -> None:
    assert _in_child("getpid", split=split) == 0


@pytest.mark.sandbox
def test_probe_reports_every_required_layer_on() -> None:
    caps = probe()
    assert caps.strict_ok, caps.missing
    assert {layer.name for layer in caps.layers} >= {
        "static_analysis", "namespaces", "seccomp", "rlimits", "timeouts"
    }  # fmt: skip


def test_the_probe_check_can_fail_and_never_forks_the_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The probe's socket() check really detects a filter that lets sockets through, and runs
    in a fresh interpreter: forking a threaded host (a service, a test runner) could deadlock
    the child on a lock another thread held."""
    from evaljail.isolation.probe import _seccomp_refuses_socket

    def no_fork() -> int:
        raise AssertionError("the probe forked the host process")

    monkeypatch.setattr(os, "fork", no_fork)
    assert _seccomp_refuses_socket(build_program())
    assert not _seccomp_refuses_socket(build_program(("ptrace",)))
