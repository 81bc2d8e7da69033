"""The named-sandbox library: exec, files, environment, ids and arguments (real jail)."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pytest

from evaljail.errors import (
    ConfigurationError,
    SandboxError,
    SandboxNotFoundError,
    SandboxPathError,
)
from evaljail.sandboxes import (
    ExecResult,
    Sandbox,
    SandboxNamespace,
    get_sandbox,
    parse_duration,
    validate_sandbox_id,
)

pytestmark = pytest.mark.sandbox

REPO = Path(__file__).resolve().parents[2]


def test_python_print_2_plus_2(shared_namespace: SandboxNamespace) -> None:
    sandbox = get_sandbox(shared_namespace, "my-sandbox")
    result = sandbox.exec('python3 -c "print(2+2)"')
    assert isinstance(result, ExecResult)
    assert result.stdout == "4\n"
    assert result.stderr == ""
    assert result.exit_code == 0
    assert not result.timed_out
    assert result.duration_ms > 0


def test_exit_code_and_stderr(shared_namespace: SandboxNamespace) -> None:
    result = get_sandbox(shared_namespace, "codes").exec("echo oops >&2; exit 7")
    assert (result.exit_code, result.stderr, result.stdout) == (7, "oops\n", "")


def test_same_id_same_sandbox_and_files_persist(shared_namespace: SandboxNamespace) -> None:
    first = get_sandbox(shared_namespace, "persist")
    assert get_sandbox(shared_namespace, "persist") is first
    assert first.exec("echo kept > note.txt").exit_code == 0
    again = get_sandbox(shared_namespace, "persist")
    assert again.exec("cat /workspace/note.txt").stdout == "kept\n"
    assert again.read_file("note.txt") == b"kept\n"


def test_file_calls_round_trip(shared_namespace: SandboxNamespace) -> None:
    sandbox = get_sandbox(shared_namespace, "files")
    assert sandbox.write_file("deep/er/data.bin", b"\x00\x01\xff") == 3
    assert sandbox.write_file("/workspace/text.txt", "héllo") == len("héllo".encode())
    assert sandbox.read_file("deep/er/data.bin") == b"\x00\x01\xff"
    assert sandbox.read_file("./text.txt") == "héllo".encode()
    assert sandbox.exec("od -An -tx1 deep/er/data.bin").stdout.split() == ["00", "01", "ff"]
    names = [(e.name, e.kind) for e in sandbox.list_files()]
    assert names == [("deep", "directory"), ("text.txt", "file")]
    (entry,) = sandbox.list_files("deep/er")
    assert (entry.path, entry.size_bytes) == ("deep/er/data.bin", 3)
    assert sandbox.stat("text.txt").kind == "file"
    sandbox.write_file("text.txt", "short")  # replaces, truncating
    assert sandbox.read_file("text.txt") == b"short"
    sandbox.delete_file("text.txt")
    sandbox.delete_file("deep")  # a whole tree
    assert sandbox.list_files() == []
    with pytest.raises(SandboxNotFoundError):
        sandbox.read_file("text.txt")
    with pytest.raises(SandboxNotFoundError):
        sandbox.delete_file("nothing-here")
    with pytest.raises(SandboxPathError):
        sandbox.read_file("")  # the workspace itself is not a file
    sandbox.write_file("d/f", "x")
    with pytest.raises(SandboxPathError, match="is a directory"):
        sandbox.read_file("d")
    with pytest.raises(SandboxPathError, match="not a directory"):
        sandbox.list_files("d/f")
    with pytest.raises(SandboxPathError, match="not a directory"):
        sandbox.write_file("d/f/g", "x")


def test_files_written_by_commands_are_readable_and_owned_by_the_jail_user(
    shared_namespace: SandboxNamespace,
) -> None:
    sandbox = get_sandbox(shared_namespace, "owner")
    sandbox.write_file("from-host.txt", "host")
    result = sandbox.exec("stat -c '%U %a' from-host.txt; echo more >> from-host.txt; id -un")
    assert result.stdout == "sandbox 644\nsandbox\n"
    assert sandbox.read_file("from-host.txt") == b"hostmore\n"


def test_cwd(shared_namespace: SandboxNamespace) -> None:
    sandbox = get_sandbox(shared_namespace, "cwd")
    sandbox.write_file("sub/dir/x", "")
    assert sandbox.exec("pwd").stdout == "/workspace\n"
    assert sandbox.exec("pwd", cwd="sub/dir").stdout == "/workspace/sub/dir\n"
    assert sandbox.exec("pwd", cwd="/workspace/sub").stdout == "/workspace/sub\n"
    for bad in ("missing", "sub/dir/x"):
        with pytest.raises(SandboxPathError):
            sandbox.exec("pwd", cwd=bad)
    for escaping in ("..", "/etc", "/", "sub/../.."):
        with pytest.raises(SandboxPathError):
            sandbox.exec("pwd", cwd=escaping)


def test_clean_environment(
    shared_namespace: SandboxNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVALJAIL_TEST_SECRET", "s3cr3t-from-the-host")
    sandbox = get_sandbox(shared_namespace, "env")
    result = sandbox.exec("env; cat /proc/1/environ /proc/self/environ | tr '\\0' '\\n'")
    assert "s3cr3t" not in result.stdout
    assert "EVALJAIL_TEST_SECRET" not in result.stdout
    names = {line.split("=", 1)[0] for line in sandbox.exec("env").stdout.splitlines()}
    assert names == {"PATH", "HOME", "USER", "LOGNAME", "LANG", "TMPDIR", "PWD"}
    with_env = sandbox.exec('echo "$FOO|$BAR"', env={"FOO": "bar", "BAR": "a b=c"})
    assert with_env.stdout == "bar|a b=c\n"
    # The caller's env= is per command: nothing carries over.
    assert sandbox.exec('echo "[$FOO]"').stdout == "[]\n"


def test_python_runtime_only(shared_namespace: SandboxNamespace) -> None:
    sandbox = get_sandbox(shared_namespace, "runtime")
    result = sandbox.exec(
        "python3 -c 'import sys, json, sqlite3; print(sys.version_info[:2] >= (3, 11))'"
    )
    assert result.stdout == "True\n", result.stderr
    assert sandbox.exec("ls -A /root").stdout == ".pyenv\n" or sys.base_prefix.startswith("/usr")
    assert sandbox.exec("ls /etc").stdout.split() == ["group", "passwd"]


def test_two_sandboxes_do_not_see_each_other(shared_namespace: SandboxNamespace) -> None:
    alice = get_sandbox(shared_namespace, "alice")
    bob = get_sandbox(shared_namespace, "bob")
    alice.write_file("secret.txt", "alice-only")
    assert alice.exec("cat secret.txt").stdout == "alice-only"
    assert bob.exec("ls -A /workspace").stdout == ""
    # Everything writable or private in bob's jail, searched for alice's file and content.
    found = bob.exec(
        "find / \\( -path /proc -o -path /usr -o -path /lib -o -path /lib64 -o -path /root \\)"
        " -prune -o -name secret.txt -print 2>/dev/null;"
        " grep -rl alice-only /workspace /tmp /etc /dev/shm 2>/dev/null; true"
    )
    assert found.stdout == "", found.stdout
    with pytest.raises(SandboxNotFoundError):
        bob.read_file("secret.txt")


def test_concurrent_get_sandbox_returns_one_sandbox(shared_namespace: SandboxNamespace) -> None:
    got: list[Sandbox] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def grab() -> None:
        try:
            barrier.wait()
            got.append(get_sandbox(shared_namespace, "racy"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=grab) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(got) == 8 and all(s is got[0] for s in got)
    assert [i.sandbox_id for i in shared_namespace.list_sandboxes()].count("racy") == 1


def test_concurrent_commands_in_one_sandbox(shared_namespace: SandboxNamespace) -> None:
    sandbox = get_sandbox(shared_namespace, "parallel")
    results: list[ExecResult] = []

    def run(i: int) -> None:
        results.append(sandbox.exec(f"echo {i} > f{i}; cat f{i}"))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.stdout for r in results) == [f"{i}\n" for i in range(6)]
    assert len(sandbox.list_files()) == 6


def test_output_is_capped(make_namespace) -> None:  # type: ignore[no-untyped-def]
    from evaljail.sandboxes import SandboxLimits

    from .conftest import MIB

    ns = make_namespace(limits=SandboxLimits(output_bytes=1000, disk_bytes=8 * MIB))
    result = get_sandbox(ns, "chatty").exec("yes | head -c 100000; echo err >&2")
    assert result.output_truncated
    assert result.stdout.startswith("y\ny\n")
    assert len(result.stdout.encode()) < 1100
    assert "output truncated at 1000 bytes" in result.stdout
    assert result.stderr == "err\n"


def test_usage_counters(make_namespace) -> None:  # type: ignore[no-untyped-def]
    ns = make_namespace()
    assert ns.usage() == {
        "sandboxes_live": 0.0,
        "commands_total": 0.0,
        "commands_timed_out_total": 0.0,
        "sandbox_seconds_total": 0.0,
        "workspace_bytes": 0.0,
        "commands_running": 0.0,
        "commands_refused_total": 0.0,
    }
    sandbox = get_sandbox(ns, "metered")
    sandbox.exec("head -c 300000 /dev/zero > blob")
    sandbox.exec("sleep 5", timeout=200)
    usage = ns.usage()
    assert usage["sandboxes_live"] == 1
    assert usage["commands_total"] == 2
    assert usage["commands_timed_out_total"] == 1
    assert 0.2 <= usage["sandbox_seconds_total"] < 3
    assert usage["workspace_bytes"] >= 300_000
    info = sandbox.info()
    assert info.workspace_bytes >= 300_000 and info.running_commands == 0


def test_mechanisms_reported(shared_namespace: SandboxNamespace) -> None:
    mech = shared_namespace.mechanisms()
    assert set(mech) >= {"isolation", "network", "disk_quota", "process_limit"}
    if os.geteuid() == 0:
        assert mech["disk_quota"].startswith("loop")


# -- ids and arguments ---------------------------------------------------------------------------

BAD_IDS = {
    "empty": "",
    "dotdot": "..",
    "traversal": "../x",
    "slash": "a/b",
    "absolute": "/etc",
    "too-long": "a" * 300,
    "65-chars": "a" * 65,
    "unicode": "sandbox-é",
    "space": "a b",
    "leading-dot": ".hidden",
    "leading-dash": "-rf",
    "nul": "a\x00b",
    "newline": "a\n",
    "not-a-string": 5,
    "none": None,
}


@pytest.mark.parametrize("bad_id", list(BAD_IDS.values()), ids=list(BAD_IDS))
def test_bad_ids_are_refused(shared_namespace: SandboxNamespace, bad_id: object) -> None:
    with pytest.raises(SandboxPathError, match="invalid sandbox id"):
        get_sandbox(shared_namespace, bad_id)  # type: ignore[arg-type]
    with pytest.raises(SandboxPathError):
        shared_namespace.find(bad_id)  # type: ignore[arg-type]


def test_good_ids() -> None:
    for good in ("a", "A9", "my-sandbox", "x.y_z-1", "a" * 64, "0"):
        assert validate_sandbox_id(good) == good


@pytest.mark.parametrize(
    "bad",
    ["", "30", "30x", "1.5h", "-1s", "0s", " 30s", "30s ", "30 s", "30S", "1h30m", "31d", "s"],
)
def test_bad_durations(bad: str) -> None:
    with pytest.raises(ConfigurationError, match="sleep_after"):
        parse_duration(bad)


def test_durations() -> None:
    assert parse_duration("30s") == 30
    assert parse_duration("30m") == 1800
    assert parse_duration("2h") == 7200
    assert parse_duration("1d") == 86400


def test_bad_get_arguments(shared_namespace: SandboxNamespace) -> None:
    with pytest.raises(ConfigurationError):
        get_sandbox(shared_namespace, "args", sleep_after="soon")
    with pytest.raises(ConfigurationError):
        get_sandbox(shared_namespace, "args", keep_alive="yes")  # type: ignore[arg-type]
    with pytest.raises(SandboxNotFoundError):
        shared_namespace.find("args")  # a refused call creates nothing


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"command": ""}, "command"),
        ({"command": "   "}, "command"),
        ({"command": "echo \x00"}, "command"),
        ({"command": "x" * 200_000}, "command"),
        ({"command": 5}, "command"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": -1}, "timeout"),
        ({"timeout": True}, "timeout"),
        ({"timeout": "5"}, "timeout"),
        ({"timeout": 1.5}, "timeout"),
        ({"timeout": 10**9}, "timeout"),
        ({"env": {"A=B": "x"}}, "env"),
        ({"env": {"1A": "x"}}, "env"),
        ({"env": {"A": "x\x00y"}}, "env"),
        ({"env": {"A": 1}}, "env"),
        ({"env": ["A"]}, "env"),
    ],
)
def test_bad_exec_arguments(
    shared_namespace: SandboxNamespace, kwargs: dict[str, object], field: str
) -> None:
    sandbox = get_sandbox(shared_namespace, "exec-args")
    call = {"command": "true", **kwargs}
    with pytest.raises(ConfigurationError) as info:
        sandbox.exec(**call)  # type: ignore[arg-type]
    assert info.value.details["field"] == field


def test_write_file_content_type(shared_namespace: SandboxNamespace) -> None:
    with pytest.raises(ConfigurationError):
        get_sandbox(shared_namespace, "content").write_file("x", 5)  # type: ignore[arg-type]


def test_closed_namespace_refuses(make_namespace) -> None:  # type: ignore[no-untyped-def]
    ns = make_namespace()
    sandbox = get_sandbox(ns, "late")
    ns.close()
    with pytest.raises(SandboxError, match="closed"):
        get_sandbox(ns, "late")
    with pytest.raises(SandboxError):
        sandbox.exec("true")


def test_tmp_without_the_service_mounts(make_namespace, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Where the service cannot mount (not root), /tmp and /dev/shm are bubblewrap's tmpfs:
    still fresh per command and bounded in bytes, and reported as not bounded in files."""
    monkeypatch.setattr(SandboxNamespace, "_probe_scratch", lambda self: "not running as root")
    ns = make_namespace()
    assert "file count not bounded" in ns.mechanisms()["tmp"]
    sandbox = get_sandbox(ns, "fallback")
    for where in ("/tmp", "/dev/shm"):
        result = sandbox.exec(
            f"echo x > {where}/f && cat {where}/f && head -c 20000000 /dev/zero > {where}/big"
        )
        assert result.stdout == "x\n" and "No space left" in result.stderr, result
    assert sandbox.exec("ls -A /tmp /dev/shm").stdout == "/dev/shm:\n\n/tmp:\n"
    assert not (ns.state_dir / "run").exists() or not any((ns.state_dir / "run").iterdir())
