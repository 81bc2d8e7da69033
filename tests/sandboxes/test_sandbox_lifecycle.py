"""Lifecycle of named sandboxes: reaper, keep_alive, destroy, caps, persistence, close."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from evaljail.errors import (
    ConfigurationError,
    SandboxError,
    SandboxLimitError,
    SandboxNotFoundError,
)
from evaljail.sandboxes import SandboxLimits, SandboxNamespace, get_sandbox

from .conftest import MIB, mounts_under

pytestmark = pytest.mark.sandbox

MakeNamespace = Callable[..., SandboxNamespace]


def _wait_until(predicate: Callable[[], bool], timeout_s: float) -> float:
    """Seconds until ``predicate()`` held; fails after ``timeout_s``."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout_s:
            pytest.fail(f"condition not met within {timeout_s} s")
        time.sleep(0.02)
    return time.monotonic() - started


def test_idle_sandbox_is_reaped_within_2s_of_sleep_after(make_namespace: MakeNamespace) -> None:
    ns = make_namespace()
    sandbox = get_sandbox(ns, "sleepy", sleep_after="1s")
    sandbox.write_file("f", "x")
    root = ns.state_dir / "sandboxes" / "sleepy"
    assert sandbox.exec("true").exit_code == 0
    last_use = time.monotonic()
    _wait_until(lambda: ns.usage()["sandboxes_live"] == 0 and not root.exists(), timeout_s=5)
    freed_after = time.monotonic() - last_use
    assert 1.0 <= freed_after <= 3.0, freed_after  # sleep_after + at most 2 s
    assert not mounts_under(root)
    with pytest.raises(SandboxNotFoundError):
        sandbox.exec("true")
    with pytest.raises(SandboxNotFoundError):
        ns.find("sleepy")
    fresh = get_sandbox(ns, "sleepy")  # the id can be used again: a new, empty sandbox
    assert fresh is not sandbox
    assert fresh.list_files() == []


def test_keep_alive_is_never_reaped(make_namespace: MakeNamespace) -> None:
    ns = make_namespace()
    kept = get_sandbox(ns, "kept", keep_alive=True, sleep_after="1s")
    gone = get_sandbox(ns, "gone", sleep_after="1s")
    kept.write_file("f", "still here")
    _wait_until(lambda: ns.usage()["sandboxes_live"] == 1, timeout_s=5)
    time.sleep(1.2)
    assert kept.read_file("f") == b"still here"
    with pytest.raises(SandboxNotFoundError):
        gone.info()
    # The latest get_sandbox options win: dropping keep_alive makes it reapable again.
    get_sandbox(ns, "kept", keep_alive=False, sleep_after="1s")
    _wait_until(lambda: ns.usage()["sandboxes_live"] == 0, timeout_s=5)


def test_a_running_command_keeps_its_sandbox(make_namespace: MakeNamespace) -> None:
    ns = make_namespace()
    sandbox = get_sandbox(ns, "busy", sleep_after="1s")
    result = sandbox.exec("sleep 2.2; echo done")
    assert result.stdout == "done\n"
    assert sandbox.exec("echo still").stdout == "still\n"  # idle time counts from the end


def test_activity_postpones_reaping(make_namespace: MakeNamespace) -> None:
    ns = make_namespace()
    sandbox = get_sandbox(ns, "active", sleep_after="1s")
    for _ in range(4):
        time.sleep(0.5)
        sandbox.write_file("tick", "x")  # file calls are activity too
    assert sandbox.read_file("tick") == b"x"


def test_destroy_frees_everything(make_namespace: MakeNamespace) -> None:
    ns = make_namespace()
    sandbox = get_sandbox(ns, "doomed")
    sandbox.write_file("data", b"z" * 100_000)
    root = ns.state_dir / "sandboxes" / "doomed"
    assert root.exists()
    sandbox.destroy()
    assert not root.exists() and not mounts_under(root)
    assert ns.usage()["sandboxes_live"] == 0
    assert ns.usage()["workspace_bytes"] == 0
    for call in (lambda: sandbox.exec("true"), lambda: sandbox.read_file("data"), sandbox.info):
        with pytest.raises(SandboxNotFoundError):
            call()
    sandbox.destroy()  # idempotent
    with pytest.raises(SandboxNotFoundError):
        ns.destroy("doomed")
    assert get_sandbox(ns, "doomed").list_files() == []


def test_destroy_kills_a_running_command(make_namespace: MakeNamespace) -> None:
    ns = make_namespace()
    sandbox = get_sandbox(ns, "interrupted")
    results: list[object] = []

    def run() -> None:
        try:
            results.append(sandbox.exec("sleep 60", timeout=30_000))
        except SandboxNotFoundError as exc:  # destroyed before the command started
            results.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    _wait_until(lambda: sandbox.info().running_commands == 1, timeout_s=5)
    started = time.monotonic()
    sandbox.destroy()
    thread.join(timeout=10)
    assert time.monotonic() - started < 5
    assert len(results) == 1
    assert isinstance(results[0], SandboxNotFoundError) or results[0].exit_code != 0  # type: ignore[attr-defined]


def test_cap_on_live_sandboxes(make_namespace: MakeNamespace) -> None:
    ns = make_namespace(limits=SandboxLimits(max_sandboxes=2, disk_bytes=8 * MIB))
    first = get_sandbox(ns, "one")
    get_sandbox(ns, "two")
    with pytest.raises(SandboxLimitError, match="too many sandboxes"):
        get_sandbox(ns, "three")
    assert get_sandbox(ns, "two") is not None  # existing ids still work
    first.destroy()
    assert get_sandbox(ns, "three").exec("echo ok").stdout == "ok\n"


def test_cap_on_total_disk(make_namespace: MakeNamespace) -> None:
    ns = make_namespace(limits=SandboxLimits(disk_bytes=8 * MIB, total_disk_bytes=20 * MIB))
    get_sandbox(ns, "a")
    get_sandbox(ns, "b")
    with pytest.raises(SandboxLimitError, match="disk") as info:
        get_sandbox(ns, "c")
    assert info.value.details["limit_bytes"] == 20 * MIB


def test_limits_are_validated() -> None:
    for bad in (
        {"max_sandboxes": 0},
        {"disk_bytes": 1024},
        {"disk_bytes": 64 * MIB, "total_disk_bytes": 32 * MIB},
        {"max_processes": 1},
        {"memory_bytes": -1},
        {"default_timeout_ms": 10, "max_timeout_ms": 5},
        {"open_files": True},
    ):
        with pytest.raises(ConfigurationError):
            SandboxLimits(**bad)  # type: ignore[arg-type]


def test_state_survives_a_restart(make_namespace: MakeNamespace, tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    first = make_namespace(state_dir)
    sandbox = get_sandbox(first, "durable", keep_alive=True)
    sandbox.write_file("notes/a.txt", "remember me")
    sandbox.exec("echo from-a-command > b.txt")
    with pytest.raises(SandboxError, match="in use"):
        SandboxNamespace(state_dir)  # one namespace per state directory at a time
    first.close()
    assert not mounts_under(state_dir)  # closed: unmounted, but kept on disk
    assert (state_dir / "sandboxes" / "durable" / "meta.json").exists()

    second = make_namespace(state_dir)
    (info,) = second.list_sandboxes()
    assert (info.sandbox_id, info.keep_alive) == ("durable", True)
    again = second.find("durable")
    assert again.read_file("notes/a.txt") == b"remember me"
    assert again.exec("cat b.txt notes/a.txt").stdout == "from-a-command\nremember me"
    again.destroy()
    second.close()
    assert list((state_dir / "sandboxes").iterdir()) == []


def test_restarted_namespace_reaps_by_last_use(
    make_namespace: MakeNamespace, tmp_path: Path
) -> None:
    state_dir = tmp_path / "state"
    first = make_namespace(state_dir)
    get_sandbox(first, "old", sleep_after="1s").write_file("x", "y")
    first.close()
    time.sleep(1.1)
    second = make_namespace(state_dir)
    assert [i.sandbox_id for i in second.list_sandboxes()] == ["old"]
    second.find("old")  # finding is not activity... but get/exec/file calls are
    _wait_until(lambda: second.usage()["sandboxes_live"] == 0, timeout_s=3)


def test_incomplete_sandboxes_are_cleaned_at_start(
    make_namespace: MakeNamespace, tmp_path: Path
) -> None:
    state_dir = tmp_path / "state"
    (state_dir / "sandboxes" / "half-made" / "ws").mkdir(parents=True, mode=0o700)
    state_dir.chmod(0o700)
    ns = make_namespace(state_dir)
    assert ns.list_sandboxes() == []
    assert not (state_dir / "sandboxes" / "half-made").exists()


def test_private_state_dir_is_deleted_on_close(make_namespace: MakeNamespace) -> None:
    ns = make_namespace()
    get_sandbox(ns, "temp").write_file("f", "x")
    root = ns.state_dir
    ns.close()
    assert not root.exists()
    ns.close()  # idempotent


def test_unsafe_state_dirs_are_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    with pytest.raises(ConfigurationError, match="not writable by group or others"):
        SandboxNamespace(shared)
    link = tmp_path / "link"
    link.symlink_to(tmp_path)
    with pytest.raises(ConfigurationError, match="symbolic link"):
        SandboxNamespace(link)


def test_settings_sandbox_dir_is_used(make_namespace: MakeNamespace, tmp_path: Path) -> None:
    from evaljail.settings import Settings

    ns = make_namespace(settings=Settings(sandbox_dir=tmp_path / "from-settings"))
    assert ns.state_dir == (tmp_path / "from-settings").resolve()
    assert ns.mechanisms()["persistence"] == "state dir"


def test_directory_backend_quota(make_namespace: MakeNamespace) -> None:
    """The fallback for hosts without loop mounts: RLIMIT_FSIZE per file and a size check
    after every command."""
    ns = make_namespace(disk_backend="directory", limits=SandboxLimits(disk_bytes=4 * MIB))
    assert ns.mechanisms()["disk_quota"].startswith("directory")
    sandbox = get_sandbox(ns, "plain")
    result = sandbox.exec("dd if=/dev/zero of=big bs=1M count=100")
    assert result.exit_code != 0  # SIGXFSZ (or EFBIG) at the quota
    assert sandbox.stat("big").size_bytes <= 4 * MIB
    # Several files under the per-file limit can together go over: the check after the
    # command then refuses further writes and commands until files are deleted.
    sandbox.exec("for i in 1 2 3; do head -c 3000000 /dev/zero > f$i; done")
    with pytest.raises(SandboxLimitError):
        sandbox.write_file("more", "x")
    with pytest.raises(SandboxLimitError):
        sandbox.exec("true")
    for name in ("big", "f1", "f2", "f3"):
        sandbox.delete_file(name)
    assert sandbox.exec("echo ok").stdout == "ok\n"
    with pytest.raises(SandboxLimitError):
        sandbox.write_file("huge", b"x" * (5 * MIB))


#: A directory tree deeper than Python's recursion limit, in a fraction of a second.
_DEEP_TREE = 'mkdir t && cd t && python3 -c \'import os\nfor _ in range(1100): os.mkdir("d"); os.chdir("d")\''


def test_directory_backend_deep_tree_cannot_disable_the_quota(
    make_namespace: MakeNamespace, tmp_path: Path
) -> None:
    """The size check walked the workspace recursively (os.fwalk): a 1 100-level tree made it
    raise RecursionError after every call, the quota was never checked again (16 MiB written in
    a 4 MiB sandbox), destroy() failed, and the namespace could not even start on its state
    directory. An unmeasurable workspace now counts as over its quota, and the tree goes with
    delete_file or destroy."""
    state_dir = tmp_path / "state"
    limits = SandboxLimits(disk_bytes=4 * MIB)
    ns = make_namespace(state_dir, disk_backend="directory", limits=limits)
    sandbox = get_sandbox(ns, "deep", keep_alive=True)
    assert sandbox.exec(_DEEP_TREE).exit_code == 0
    for call in (lambda: sandbox.exec("head -c 3000000 /dev/zero > f"),
                 lambda: sandbox.write_file("f", b"x" * 3_000_000)):  # fmt: skip
        with pytest.raises(SandboxLimitError, match="cannot be measured"):
            call()
    ns.close()
    again = make_namespace(state_dir, disk_backend="directory", limits=limits)  # starts
    sandbox = again.find("deep")
    with pytest.raises(SandboxLimitError, match="cannot be measured"):
        sandbox.exec("true")
    sandbox.delete_file("t")
    assert sandbox.exec("echo ok").stdout == "ok\n"
    assert sandbox.exec(_DEEP_TREE).exit_code == 0
    sandbox.destroy()
    assert not (state_dir / "sandboxes" / "deep").exists()
    assert get_sandbox(again, "deep").list_files() == []


def test_directory_backend_counts_files_not_only_bytes(make_namespace: MakeNamespace) -> None:
    """Empty files allocate no block: 10 000 of them measured 0 bytes, so a sandbox could
    exhaust the host filesystem's inodes. Each entry now counts at least 4 KiB (the loop
    backend's filesystem has one inode per 8 KiB of quota)."""
    ns = make_namespace(disk_backend="directory", limits=SandboxLimits(disk_bytes=4 * MIB))
    sandbox = get_sandbox(ns, "empties")
    made = sandbox.exec(
        "mkdir many && python3 -c 'import os\nfor i in range(10000): os.mknod(f\"many/{i}\")'"
    )
    assert made.exit_code == 0, made.stderr
    assert sandbox.info().workspace_bytes >= 10_000 * 4096
    with pytest.raises(SandboxLimitError):
        sandbox.exec("touch PWNED")
    sandbox.delete_file("many")
    assert sandbox.exec("echo ok").stdout == "ok\n"


def test_missing_bubblewrap_fails_closed(make_namespace: MakeNamespace) -> None:
    from evaljail.errors import IsolationUnavailableError

    ns = make_namespace(bwrap="/nonexistent/bwrap")
    with pytest.raises(IsolationUnavailableError, match="bubblewrap"):
        get_sandbox(ns, "never")
    assert ns.list_sandboxes() == []


def test_jail_set_up_failure_is_an_error_not_a_result(make_namespace: MakeNamespace) -> None:
    import shutil

    ns = make_namespace(disk_backend="directory")
    sandbox = get_sandbox(ns, "broken")
    shutil.rmtree(ns.state_dir / "sandboxes" / "broken" / "ws")  # behind the namespace's back
    with pytest.raises(SandboxError, match="could not be set up"):
        sandbox.exec("echo never")
