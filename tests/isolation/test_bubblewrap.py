"""bubblewrap argument rendering: pure, golden-tested."""

from __future__ import annotations

from evaljail.isolation.bubblewrap import BwrapSpec, build_args
from evaljail.isolation.jail import JAIL_WORKER_DIR, worker_argv, worker_env


def test_golden_minimal_spec() -> None:
    spec = BwrapSpec(ro_binds=("/opt/py",), tmpfs=(), env=(("PATH", "/usr/bin"),),
                     system_lib_dirs=("/lib",))  # fmt: skip
    assert build_args(spec, ["python", "-I"]) == [
        "bwrap", "--unshare-user", "--unshare-ipc", "--unshare-pid", "--unshare-uts",
        "--unshare-cgroup-try", "--unshare-net", "--uid", "65534", "--gid", "65534",
        "--hostname", "evaljail", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
        "--clearenv", "--setenv", "PATH", "/usr/bin", "--ro-bind-try", "/lib", "/lib",
        "--ro-bind", "/opt/py", "/opt/py", "--proc", "/proc", "--remount-ro", "/proc",
        "--dev", "/dev", "--size", "4096", "--tmpfs", "/dev/pts", "--remount-ro", "/dev/pts",
        "--chdir", "/", "--", "python", "-I",
    ]  # fmt: skip


def test_masked_proc_files_and_ptys() -> None:
    args = build_args(BwrapSpec(proc_masks=("/proc/keys",), ptys=True), ["x"])
    at = args.index("--proc")
    assert args[at + 4 : at + 7] == ["--ro-bind", "/dev/null", "/proc/keys"]
    assert "/dev/pts" not in args  # the devpts of --dev is left in place


def test_binds_come_after_tmpfs_so_a_runtime_under_tmp_stays_visible() -> None:
    args = build_args(BwrapSpec(ro_binds=("/tmp/venv",), tmpfs=("/tmp",)), ["x"])
    assert args.index("--tmpfs") < args.index("--ro-bind")


def test_network_is_unshared_unless_asked() -> None:
    assert "--unshare-net" in build_args(BwrapSpec(), ["x"])
    assert "--unshare-net" not in build_args(BwrapSpec(share_net=True), ["x"])


def test_worker_jail_exposes_no_home_etc_or_checkout() -> None:
    argv = worker_argv(jailed=True, scientific=False)
    binds = [argv[i + 1] for i, a in enumerate(argv) if a in ("--ro-bind", "--bind")]
    assert "/etc" not in binds and "/home" not in binds and "/" not in binds
    assert all(not b.endswith("/src") for b in binds)
    assert JAIL_WORKER_DIR in argv
    remounted = [argv[i + 1] for i, a in enumerate(argv) if a == "--remount-ro"]
    assert {"/", "/dev", "/proc"} <= set(remounted)
    at = argv.index("--proc")  # mounted, then made read-only: host sysctls stay out of reach
    assert argv[at : at + 4] == ["--proc", "/proc", "--remount-ro", "/proc"]
    tmpfs = [argv[i + 1] for i, a in enumerate(argv) if a == "--tmpfs"]
    assert tmpfs == ["/dev/pts"]  # nothing writable for the core profile
    assert "/dev/pts" in remounted  # an empty read-only cover: no ptys
    assert "--bind" not in argv
    masks = {argv[i + 2] for i, a in enumerate(argv) if argv[i + 1 : i + 2] == ["/dev/null"]}
    assert "/proc/keys" in masks and "/proc/slabinfo" in masks


def test_worker_environment_is_built_not_inherited() -> None:
    env = worker_env(scientific=True)
    assert env["OPENBLAS_NUM_THREADS"] == "1"
    assert env["MPLBACKEND"] == "Agg"
    assert not any("TOKEN" in k or "SECRET" in k for k in env)
    argv = worker_argv(jailed=True, scientific=True)
    assert "--clearenv" in argv
    assert "--tmpfs" in argv  # the sealed matplotlib cache
