"""Attacks on named sandboxes, through the real jail: each gets a clear error or a killed command,
the host is untouched and the other sandboxes keep working.

Sentinels: a host file that commands must never read or change, and ``PWNED`` markers printed
only if an attack worked.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from evaljail.errors import SandboxError, SandboxLimitError, SandboxPathError
from evaljail.sandboxes import Sandbox, SandboxNamespace, get_sandbox

from .conftest import TEST_LIMITS

pytestmark = pytest.mark.sandbox

SENTINEL = "host-sentinel-9f3c"


@pytest.fixture(scope="module")
def host_secret(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A host directory with a file that no sandbox may read, write or delete."""
    root = tmp_path_factory.mktemp("host-secret")
    (root / "secret.txt").write_text(SENTINEL)
    yield root
    assert (root / "secret.txt").read_text() == SENTINEL, "a sandbox changed a host file"


@pytest.fixture(scope="module")
def planted(shared_namespace: SandboxNamespace, host_secret: Path) -> Sandbox:
    """A sandbox whose command planted symbolic links (and a FIFO) pointing out of it."""
    sandbox = get_sandbox(shared_namespace, "planted")
    secret = host_secret / "secret.txt"
    result = sandbox.exec(
        f"ln -s / root; ln -s /etc/passwd pw; ln -s {secret} s; ln -s {host_secret} sdir;"
        " ln -s ../../../../ up; mkdir -p real; ln -s /etc real/etc; mkfifo fifo;"
        " ln -s /proc/1/root procroot"
    )
    assert result.exit_code == 0, result.stderr
    return sandbox


ESCAPING_PATHS = {
    "dotdot": "../etc/passwd",
    "deep-dotdot": "../../../../../../etc/passwd",
    "inner-dotdot": "a/../../etc/passwd",
    "workspace-dotdot": "/workspace/../etc/passwd",
    "absolute": "/etc/passwd",
    "absolute-shadow": "/etc/shadow",
    "absolute-root": "/",
    "nul": "ok\x00/../../etc/passwd",
    "symlink-to-root": "root/etc/shadow",
    "symlink-to-root-passwd": "root/etc/passwd",
    "symlink-file": "pw",
    "symlink-host-file": "s",
    "symlink-host-dir": "sdir/secret.txt",
    "symlink-relative-up": "up/etc/passwd",
    "symlink-nested": "real/etc/passwd",
    "symlink-proc-root": "procroot/etc/passwd",
    "too-long": "a/" * 3000,
}


@pytest.mark.parametrize("path", list(ESCAPING_PATHS.values()), ids=list(ESCAPING_PATHS))
def test_read_file_never_leaves_the_workspace(planted: Sandbox, path: str) -> None:
    with pytest.raises(SandboxError) as info:
        data = planted.read_file(path)
        print("PWNED", data[:100])
    assert not isinstance(info.value, SandboxLimitError)


@pytest.mark.parametrize("path", list(ESCAPING_PATHS.values()), ids=list(ESCAPING_PATHS))
def test_write_file_never_leaves_the_workspace(
    planted: Sandbox, host_secret: Path, path: str
) -> None:
    with pytest.raises(SandboxError):
        planted.write_file(path, "PWNED")
    assert (host_secret / "secret.txt").read_text() == SENTINEL
    assert "PWNED" not in Path("/etc/passwd").read_text()
    assert not (host_secret / "PWNED").exists()


#: Deleting a planted link itself is allowed (the link goes, its target stays: tested below).
DELETE_PATHS = {k: v for k, v in ESCAPING_PATHS.items() if v not in ("pw", "s")}


@pytest.mark.parametrize("path", list(DELETE_PATHS.values()), ids=list(DELETE_PATHS))
def test_delete_file_never_leaves_the_workspace(
    planted: Sandbox, host_secret: Path, path: str
) -> None:
    with pytest.raises(SandboxError):
        planted.delete_file(path)
    assert (host_secret / "secret.txt").read_text() == SENTINEL


@pytest.mark.parametrize(
    "path", ["root", "sdir", "up", "real/etc", "procroot", "..", "/etc", "/", "pw/x"]
)
def test_list_files_never_leaves_the_workspace(planted: Sandbox, path: str) -> None:
    with pytest.raises(SandboxPathError):
        entries = planted.list_files(path)
        print("PWNED", entries)


def test_symlinks_are_listed_not_followed(planted: Sandbox) -> None:
    kinds = {e.name: e.kind for e in planted.list_files()}
    assert kinds["root"] == kinds["s"] == kinds["sdir"] == "symlink"
    assert kinds["fifo"] == "other"
    assert planted.stat("s").kind == "symlink"


def test_fifo_does_not_hang_file_calls(planted: Sandbox) -> None:
    started = time.monotonic()
    with pytest.raises(SandboxPathError, match="not a regular file"):
        planted.read_file("fifo")
    with pytest.raises(SandboxPathError):
        planted.write_file("fifo", "x")
    assert time.monotonic() - started < 2


def test_a_fifo_swapped_in_for_a_directory_cannot_block_its_deletion(tmp_path: Path) -> None:
    """``delete_file`` of a directory walks it by descriptors; a command may swap a FIFO in
    for any directory between a check and an open. That open must fail at once: shutil's
    rmtree opened it without O_DIRECTORY and blocked for ever."""
    from evaljail.sandboxes import _remove_tree

    os.mkfifo(tmp_path / "swapped")
    parent = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        started = time.monotonic()
        with pytest.raises(NotADirectoryError):
            _remove_tree("swapped", parent)
        assert time.monotonic() - started < 2
    finally:
        os.close(parent)


def test_trees_of_any_depth_are_deleted(shared_namespace: SandboxNamespace) -> None:
    """No depth makes the file API raise RecursionError (a 500) or give up: past 128 open
    levels, delete_file moves the rest of the tree up and goes on (it used to refuse trees
    deeper than 128 levels, and a deep tree could then only go with rm -rf in a command)."""
    sandbox = get_sandbox(shared_namespace, "deep")
    for depth in (100, 1500):  # 1500: most of a 16 MiB workspace's 2048 inodes
        made = sandbox.exec(
            "mkdir t && cd t && python3 -c 'import os\n"
            f'for _ in range({depth}): os.mkdir("d"); os.chdir("d")\n'
            'open("leaf", "w").close()\' && echo ok'
        )
        assert made.stdout == "ok\n", made.stderr
        sandbox.delete_file("t")
        assert [e.name for e in sandbox.list_files("")] == []


def test_deleting_a_planted_link_removes_only_the_link(
    shared_namespace: SandboxNamespace, host_secret: Path
) -> None:
    sandbox = get_sandbox(shared_namespace, "unlinker")
    sandbox.exec(f"ln -s {host_secret} dirlink; ln -s {host_secret}/secret.txt filelink")
    sandbox.delete_file("dirlink")
    sandbox.delete_file("filelink")
    assert sandbox.list_files() == []
    assert (host_secret / "secret.txt").read_text() == SENTINEL


def test_symlink_swapped_in_during_writes(
    shared_namespace: SandboxNamespace, host_secret: Path
) -> None:
    """A command flips a directory and a symlink to a host directory while the host writes
    into it: the fd-by-fd walk must never write outside."""
    sandbox = get_sandbox(shared_namespace, "flipper")
    stop = threading.Event()

    def writer() -> None:
        while not stop.is_set():
            with contextlib.suppress(SandboxError):
                sandbox.write_file("d/PWNED", "x")

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        sandbox.exec(
            f"i=0; while [ $i -lt 300 ]; do rm -rf d; mkdir d; rm -rf d; ln -s {host_secret} d;"
            " rm -f d; i=$((i+1)); done",
            timeout=5000,
        )
    finally:
        stop.set()
        thread.join()
    assert sorted(p.name for p in host_secret.iterdir()) == ["secret.txt"]


def test_host_files_are_invisible(shared_namespace: SandboxNamespace, host_secret: Path) -> None:
    sandbox = get_sandbox(shared_namespace, "snoop")
    checks = [
        f"cat {host_secret}/secret.txt",
        "cat /etc/shadow",
        "cat /etc/hostname",
        "ls /home",
        f"ls {Path(__file__).resolve().parents[2]}",
        f"ls {shared_namespace.state_dir}",
        "ls /var /srv /opt /mnt /media /boot",
        "cat /root/.bash_history",
        "ls /sys",
    ]
    for command in checks:
        result = sandbox.exec(command + " && echo PWNED")
        assert "PWNED" not in result.stdout, command
        assert SENTINEL not in result.stdout
    assert sandbox.exec("hostname").stdout == "sandbox\n"


def test_runtime_and_system_are_read_only(shared_namespace: SandboxNamespace) -> None:
    import sys

    sandbox = get_sandbox(shared_namespace, "readonly")
    prefix = str(Path(sys.base_prefix).resolve())
    targets = ("/usr/bin/PWNED", f"{prefix}/PWNED", "/etc/PWNED", "/PWNED", "/etc/passwd",
               "/root/PWNED", "/dev/PWNED", "/proc/PWNED")  # fmt: skip
    for target in targets:
        result = sandbox.exec(f"echo x > {target} && echo PWNED")
        assert "PWNED" not in result.stdout, target
    assert not Path(f"{prefix}/PWNED").exists()


def test_kernel_settings_are_read_only(shared_namespace: SandboxNamespace) -> None:
    """When the service runs as root, the jail's user is root outside, and the kernel lets
    that uid write host-wide sysctls without any capability: /proc is mounted read-only."""
    sandbox = get_sandbox(shared_namespace, "sysctl")
    targets = ("/proc/sys/kernel/printk_ratelimit_burst", "/proc/sys/kernel/core_pattern",
               "/proc/self/oom_score_adj")  # fmt: skip
    for target in targets:  # each writes back what it read: harmless should it ever work
        result = sandbox.exec(f'v="$(cat {target})" && echo "$v" > {target} && echo PWNED')
        assert "PWNED" not in result.stdout, target
        assert "Read-only file system" in result.stderr, (target, result.stderr)


def test_hard_link_to_a_runtime_file_is_refused(shared_namespace: SandboxNamespace) -> None:
    sandbox = get_sandbox(shared_namespace, "hardlink")
    result = sandbox.exec("ln /etc/passwd hl && echo PWNED; ln /usr/bin/env hl2 && echo PWNED")
    assert "PWNED" not in result.stdout


def test_no_network(shared_namespace: SandboxNamespace) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    try:
        sandbox = get_sandbox(shared_namespace, "netless")
        code = (
            "import socket\n"
            f"for addr in [('127.0.0.1', {port}), ('1.1.1.1', 53), ('10.0.0.1', 80)]:\n"
            "    try:\n"
            "        socket.create_connection(addr, timeout=1); print('PWNED', addr)\n"
            "    except OSError as e:\n"
            "        print('refused', e.errno)\n"
        )
        sandbox.write_file("net.py", code)
        result = sandbox.exec("python3 net.py")
        assert "PWNED" not in result.stdout
        assert result.stdout.count("refused") == 3, result.stderr
        interfaces = sandbox.exec("cat /proc/net/dev").stdout
        assert "eth" not in interfaces and "ens" not in interfaces
    finally:
        listener.close()


def test_sleep_forever_is_killed(shared_namespace: SandboxNamespace) -> None:
    sandbox = get_sandbox(shared_namespace, "sleeper")
    started = time.monotonic()
    result = sandbox.exec("echo started; sleep infinity", timeout=800)
    elapsed = time.monotonic() - started
    assert result.timed_out and result.exit_code == -9
    assert result.stdout == "started\n"
    assert elapsed < 3
    assert sandbox.exec("echo alive").stdout == "alive\n"


def test_closing_stdout_does_not_escape_the_deadline(shared_namespace: SandboxNamespace) -> None:
    sandbox = get_sandbox(shared_namespace, "closer")
    result = sandbox.exec("exec >&- 2>&-; sleep 100", timeout=600)
    assert result.timed_out


def test_background_processes_do_not_outlive_the_command(
    shared_namespace: SandboxNamespace,
) -> None:
    sandbox = get_sandbox(shared_namespace, "daemon")
    started = time.monotonic()
    result = sandbox.exec(
        "(sleep 300 > /dev/null 2>&1 &); nohup sleep 300 >/dev/null 2>&1 & echo bg"
    )
    assert result.stdout == "bg\n" and not result.timed_out
    assert time.monotonic() - started < 3
    assert sandbox.exec("ps -e -o comm= | grep -c sleep").stdout.strip() == "0"


@pytest.mark.parametrize(
    "bomb",
    [
        "f(){ f|f& }; f; sleep 30",
        "python3 -c 'import os\nwhile True:\n  try: os.fork()\n  except OSError: pass'",
    ],
    ids=["shell", "python"],
)
def test_fork_bomb_is_contained(shared_namespace: SandboxNamespace, bomb: str) -> None:
    sandbox = get_sandbox(shared_namespace, "bomber")
    bystander = get_sandbox(shared_namespace, "bystander")
    result = sandbox.exec(bomb, timeout=1500)
    assert result.timed_out or result.exit_code != 0
    assert bystander.exec("echo fine").stdout == "fine\n"
    assert sandbox.exec("echo recovered").stdout == "recovered\n"
    cgroup = shared_namespace._mechanisms.cgroup if shared_namespace._mechanisms else None
    if cgroup is not None:
        assert (cgroup / "pids.max").read_text().strip() != "max"  # the namespace backstop

        # exec() returns only once every process of the command is gone: what is left in the
        # namespace's cgroups are the (at most two) jails started ahead for the next commands
        # (polled: one may be between its fork and its exec right now).
        def leftovers() -> list[str]:
            found = []
            for d, _, _ in os.walk(cgroup):
                for pid in Path(d, "cgroup.procs").read_text().split():
                    with contextlib.suppress(OSError):
                        argv = Path(f"/proc/{pid}/cmdline").read_text().split("\0")
                        if "--args" not in argv:
                            found.append(f"{pid}: {argv}")
            return found

        deadline = time.monotonic() + 3
        while leftovers() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert leftovers() == []


def test_process_limit(shared_namespace: SandboxNamespace) -> None:
    sandbox = get_sandbox(shared_namespace, "counted")
    many = TEST_LIMITS.max_processes + 10
    result = sandbox.exec(
        f"i=0; while [ $i -lt {many} ]; do sleep 5 & i=$((i+1)); done; echo PWNED", timeout=3000
    )
    if shared_namespace.mechanisms()["process_limit"].startswith("cgroup"):
        assert "PWNED" not in result.stdout
        assert "fork" in result.stderr.lower()


def test_memory_limit(shared_namespace: SandboxNamespace) -> None:
    sandbox = get_sandbox(shared_namespace, "hungry")
    result = sandbox.exec("python3 -c 'x = bytearray(2 * 1024**3); print(\"PWNED\")'")
    assert "PWNED" not in result.stdout
    assert "MemoryError" in result.stderr


def test_disk_fill_is_limited(shared_namespace: SandboxNamespace) -> None:
    sandbox = get_sandbox(shared_namespace, "filler")
    neighbour = get_sandbox(shared_namespace, "neighbour")
    result = sandbox.exec("dd if=/dev/zero of=big bs=1M count=10000", timeout=20_000)
    assert result.exit_code != 0
    assert sandbox.info().workspace_bytes <= TEST_LIMITS.disk_bytes
    assert sandbox.stat("big").size_bytes <= TEST_LIMITS.disk_bytes
    with pytest.raises(SandboxLimitError):
        sandbox.write_file("more", b"x" * (2 * 1024 * 1024))
    assert neighbour.exec("echo ok > f && cat f").stdout == "ok\n"
    neighbour.write_file("g", b"y" * 1024 * 1024)
    sandbox.delete_file("big")
    assert sandbox.write_file("more", b"x" * 1024) == 1024


def test_many_small_files_are_limited(shared_namespace: SandboxNamespace) -> None:
    sandbox = get_sandbox(shared_namespace, "inodes")
    result = sandbox.exec(
        "i=0; while [ $i -lt 50000 ]; do : > f$i || exit 3; i=$((i+1)); done", timeout=20_000
    )
    assert result.exit_code != 0 or result.timed_out
    assert "No space left on device" in result.stderr or result.timed_out
    sandbox.exec("rm -f f*", timeout=20_000)


def test_tmp_is_small_and_per_command(shared_namespace: SandboxNamespace) -> None:
    sandbox = get_sandbox(shared_namespace, "tmpfill")
    result = sandbox.exec("dd if=/dev/zero of=/tmp/big bs=1M count=100")
    assert result.exit_code != 0
    assert sandbox.exec("ls -A /tmp").stdout == ""


def test_nested_namespaces_and_privileges_are_refused(shared_namespace: SandboxNamespace) -> None:
    sandbox = get_sandbox(shared_namespace, "nested")
    result = sandbox.exec(
        "unshare -Ur true && echo PWNED-userns; mount -t tmpfs x /tmp && echo PWNED-mount;"
        " grep CapEff /proc/self/status"
    )
    assert "PWNED" not in result.stdout
    assert "CapEff:\t0000000000000000" in result.stdout


def test_kill_all_inside_only_kills_the_jail(shared_namespace: SandboxNamespace) -> None:
    sandbox = get_sandbox(shared_namespace, "killer")
    sandbox.exec("kill -9 -1; kill -9 1")
    assert os.getpid() > 0  # still here
    assert get_sandbox(shared_namespace, "bystander").exec("echo fine").stdout == "fine\n"


# -- host-wide kernel resources (red-team findings on tmpfs inodes, ptys and /proc) --------------

#: Creates empty files in a directory until an error or 20 000 files; prints "count errno".
_MKNOD_LOOP = """
import os, sys
where, made, err = sys.argv[1], 0, 0
try:
    while made < 20000:
        os.mknod(f"{where}/e{made}")
        made += 1
except OSError as exc:
    err = exc.errno
print(made, err)
"""


@pytest.mark.parametrize("where", ["/tmp", "/dev/shm"])
def test_tmp_and_shm_bound_their_file_count(shared_namespace: SandboxNamespace, where: str) -> None:
    """Empty files cost kernel memory (~1.3 KiB of slab each), not bytes: with bubblewrap's
    ``--size`` alone, a command made 370 000 of them in 2.5 s (+463 MiB of host slab, ``df``
    0 bytes used). Each mount now holds at most ``tmp_files`` (8192) files and directories."""
    if os.geteuid() != 0:  # the service mounts them only as root; documented fallback
        assert "file count not bounded" in shared_namespace.mechanisms()["tmp"]
        return
    sandbox = get_sandbox(shared_namespace, "tmpfiles")
    result = sandbox.exec(f"python3 -c '{_MKNOD_LOOP}' {where}", timeout=20_000)
    made, err = (int(x) for x in result.stdout.split())
    assert made < 8192, f"PWNED: {made} empty files in {where}"
    assert err == errno.ENOSPC
    assert sandbox.exec(f"touch {where}/fine && ls -A {where}").stdout == "fine\n"
    assert "file count bounded" in shared_namespace.mechanisms()["tmp"]


PTY_PAYLOADS = {
    "openpty": "import os; os.openpty()",
    "ptmx": "import os; os.open('/dev/ptmx', os.O_RDWR | os.O_NOCTTY)",
    "pts-ptmx": "import os; os.open('/dev/pts/ptmx', os.O_RDWR | os.O_NOCTTY)",
    "pty-fork": "import pty, os; pid, fd = pty.fork(); pid or os._exit(0)",
    "pts-write": "open('/dev/pts/x', 'w')",
}


@pytest.mark.parametrize("code", list(PTY_PAYLOADS.values()), ids=list(PTY_PAYLOADS))
def test_ptys_are_not_reachable(shared_namespace: SandboxNamespace, code: str) -> None:
    """bubblewrap's ``--dev`` mounts a devpts instance whose ptys come from the host-wide pool
    (``kernel.pty.max``, shared with every container): 240 opens raised the host's
    ``kernel/pty/nr`` by 240. No command needs a terminal: /dev/pts is an empty read-only
    tmpfs and /dev/ptmx leads nowhere."""
    sandbox = get_sandbox(shared_namespace, "ptys")
    result = sandbox.exec(f'python3 -c "{code}" && echo PWNED')
    assert "PWNED" not in result.stdout
    assert sandbox.exec("ls -A /dev/pts").stdout == ""


#: /proc files that describe the whole host, readable by file mode alone when the jail's user
#: is host root (the service runs as root): physical page state, slab and vmalloc addresses,
#: timers, root's key rings.
HOST_WIDE_PROC = ["kpageflags", "kpagecount", "kpagecgroup", "pagetypeinfo", "slabinfo",
                  "vmallocinfo", "timer_list", "keys", "key-users"]  # fmt: skip


@pytest.mark.parametrize("name", HOST_WIDE_PROC)
def test_host_wide_proc_files_are_masked(shared_namespace: SandboxNamespace, name: str) -> None:
    sandbox = get_sandbox(shared_namespace, "procfiles")
    result = sandbox.exec(f"head -c 64 /proc/{name} > /dev/null && echo PWNED")
    assert "PWNED" not in result.stdout, f"/proc/{name} is readable"
