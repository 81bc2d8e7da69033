"""Named sandboxes get the kernel-surface seccomp profile, like the engine's children."""

from __future__ import annotations

import pytest

from evaljail import SandboxNamespace, get_sandbox
from evaljail.errors import SandboxFileNotFoundError, SandboxNotFoundError

pytestmark = pytest.mark.sandbox

# personality(0xffffffff) only queries the persona: it succeeds anywhere it is not filtered.
PERSONALITY = (
    'python3 -c "import ctypes; libc = ctypes.CDLL(None, use_errno=True); '
    'print(libc.personality(0xffffffff), ctypes.get_errno())"'
)


def test_every_command_runs_under_a_seccomp_filter() -> None:
    ns = SandboxNamespace()
    try:
        box = get_sandbox(ns, "seccomp-check")
        status = box.exec("grep '^Seccomp:' /proc/self/status")
        assert status.exit_code == 0, status
        assert status.stdout.split() == ["Seccomp:", "2"]
        denied = box.exec(PERSONALITY)
        assert denied.stdout.split() == ["-1", "1"], denied  # EPERM
        assert box.exec("echo still-works").stdout == "still-works\n"
    finally:
        ns.close()


def test_missing_file_has_its_own_error() -> None:
    ns = SandboxNamespace()
    try:
        box = get_sandbox(ns, "missing-file")
        with pytest.raises(SandboxFileNotFoundError) as info:
            box.read_file("nope.txt")
        assert isinstance(info.value, SandboxNotFoundError)  # still a 404 for old callers
    finally:
        ns.close()
