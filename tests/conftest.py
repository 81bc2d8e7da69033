"""Shared test configuration.

Tests marked ``sandbox`` need the real jail. On a host without it they skip, unless
``EVALJAIL_REQUIRE_SANDBOX=1`` (set by ``.ci/run``), which turns every such skip into a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO.parent / "shared" / "fixtures" / "public"


def _jail_available() -> tuple[bool, str]:
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return False, "bubblewrap (bwrap) is not installed"
    probe = subprocess.run(
        [bwrap, "--unshare-all", "--ro-bind", "/", "/", "--", "/bin/true"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    if probe.returncode != 0:
        return False, f"bwrap cannot create namespaces here: {probe.stderr.strip()}"
    return True, ""


_JAIL: tuple[bool, str] | None = None


def _jail_cached() -> tuple[bool, str]:
    global _JAIL
    if _JAIL is None:
        _JAIL = _jail_available()
    return _JAIL


def require_jail() -> None:
    """Skip without the jail, or fail under ``EVALJAIL_REQUIRE_SANDBOX=1`` (CI)."""
    ok, why = _jail_cached()
    if ok:
        return
    if os.environ.get("EVALJAIL_REQUIRE_SANDBOX") == "1":
        pytest.fail(f"EVALJAIL_REQUIRE_SANDBOX=1 but the jail is unavailable: {why}", pytrace=False)
    pytest.skip(f"no jail on this host: {why}")


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("sandbox") is not None:
        require_jail()


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.fail(f"shared fixtures not found at {FIXTURES}", pytrace=False)
    return FIXTURES


def jail_processes() -> list[str]:
    """Command lines of every live bwrap process started from this checkout's runtime."""
    out = subprocess.run(
        ["ps", "-eo", "pid=,args="], capture_output=True, text=True, check=True
    ).stdout
    return [line.strip() for line in out.splitlines() if "bwrap" in line and "evaljail" in line]


@pytest.fixture
def no_leaked_jails() -> Iterator[None]:
    """Fail the test if it leaves jailed processes behind."""
    before = set(jail_processes())
    yield
    after = set(jail_processes()) - before
    assert not after, f"test leaked jailed processes: {sorted(after)}"
