"""The pool: warm-up, scaling, crash replacement, recycling, bounded queue, clean shutdown."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from evaljail import Outcome, Policy
from evaljail.errors import IsolationUnavailableError, PoolClosedError, QueueFullError
from evaljail.isolation.probe import Capabilities, Layer
from evaljail.pool import Pool

pytestmark = pytest.mark.sandbox

CRASH = (
    "import json\nctypes = json.codecs.sys.modules['importlib'].import_module('ctypes')\n"
    "ctypes.string_at(0)\n"
)


def _pids_alive(pids: list[int]) -> list[int]:
    out = subprocess.run(["ps", "-eo", "pid="], capture_output=True, text=True, check=True).stdout
    live = {int(p) for p in out.split()}
    return [p for p in pids if p in live]


def _dead(pid: int) -> bool:
    """Gone, or a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):  # ESRCH while the process exits
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def _wait_for(predicate: object, timeout_s: float = 10.0) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


def test_warms_min_size_and_shuts_down_without_orphans(no_leaked_jails: None) -> None:
    pool = Pool(min_size=3, max_size=4)
    pool.start()
    assert _wait_for(lambda: pool.stats().size == 3)
    pids = pool.worker_pids()
    assert len(pids) == 3
    assert pool.run_script("print('hi')", Policy()).result().stdout == "hi\n"
    pool.close()
    assert _pids_alive(pids) == []
    with pytest.raises(PoolClosedError):
        pool.run_script("print(1)", Policy())


def test_grows_under_pressure_and_shrinks_when_idle(no_leaked_jails: None) -> None:
    pool = Pool(min_size=1, max_size=3, idle_timeout_s=0.5)
    pool.start()
    slow = Policy().with_limits(timeout_ms=1500)
    futures = [pool.run_script("while True:\n    pass", slow) for _ in range(4)]
    assert _wait_for(lambda: pool.stats().size == 3)
    assert [f.result().outcome for f in futures] == [Outcome.TIMEOUT] * 4
    assert _wait_for(lambda: pool.stats().size == 1, timeout_s=10)
    pool.close()


def test_quick_jobs_do_not_grow_the_pool_past_cores_plus_one(no_leaked_jails: None) -> None:
    """A burst of short executions is CPU-bound: more workers than cores would only contend."""
    ceiling = (os.cpu_count() or 1) + 1
    pool = Pool(min_size=1, max_size=ceiling + 4)
    pool.start()
    futures = [pool.run_script("print(1)", Policy()) for _ in range(60)]
    assert [f.result(timeout=60).stdout for f in futures] == ["1\n"] * 60
    assert pool.stats().workers_started <= ceiling
    pool.close()


def test_slow_jobs_let_the_pool_grow_so_quick_ones_are_not_stuck(no_leaked_jails: None) -> None:
    ceiling = (os.cpu_count() or 1) + 1
    pool = Pool(min_size=1, max_size=ceiling + 1)
    pool.start()
    slow = Policy().with_limits(timeout_ms=4000)
    loops = [pool.run_script("while True:\n    pass", slow) for _ in range(ceiling)]
    assert _wait_for(lambda: pool.stats().busy == ceiling, timeout_s=30)
    time.sleep(0.2)  # the loops have now run for longer than a quick job would
    started = time.monotonic()
    quick = pool.run_script("print('through')", Policy())
    assert quick.result(timeout=30).stdout == "through\n"
    assert time.monotonic() - started < 3.0, "the quick job waited for a loop's timeout"
    assert not any(f.done() for f in loops)
    assert pool.stats().workers_started == ceiling + 1
    pool.close()


def test_a_crashing_execution_does_not_harm_the_worker(no_leaked_jails: None) -> None:
    pool = Pool(min_size=1, max_size=1)
    pool.start()
    unguarded = Policy(static_analysis=False)
    crashed = pool.run_script(CRASH, unguarded).result()
    assert crashed.outcome is Outcome.CRASHED
    assert "SIGSEGV" in (crashed.error or "")
    assert pool.run_script("print(6 * 7)", Policy()).result().stdout == "42\n"
    assert pool.stats().workers_replaced == 0
    pool.close()


def test_a_dead_worker_is_replaced(no_leaked_jails: None) -> None:
    pool = Pool(min_size=1, max_size=1)
    pool.start()
    [pid] = pool.worker_pids()
    subprocess.run(["kill", "-9", str(pid)], check=True)
    assert _wait_for(lambda: _dead(pid))
    # The job met a dead worker before it started: it goes to the replacement, not to the bin.
    assert pool.run_script("print('after')", Policy()).result().stdout == "after\n"
    assert pool.stats().workers_replaced == 1
    assert _wait_for(lambda: pool.stats().size == 1 and pool.worker_pids() != [pid])
    assert pool.run_script("print('again')", Policy()).result().stdout == "again\n"
    pool.close()


def test_workers_are_recycled_after_n_executions(no_leaked_jails: None) -> None:
    pool = Pool(min_size=1, max_size=1, recycle_after=5)
    pool.start()
    [first] = pool.worker_pids()
    for i in range(7):
        assert pool.run_script(f"print({i})", Policy()).result().stdout == f"{i}\n"
    assert _wait_for(lambda: pool.worker_pids() and pool.worker_pids() != [first])
    assert pool.stats().workers_started >= 2
    pool.close()


def test_bounded_queue_refuses_instead_of_growing(no_leaked_jails: None) -> None:
    pool = Pool(min_size=1, max_size=1, queue_size=2)
    pool.start()
    slow = Policy().with_limits(timeout_ms=1000)
    running = pool.run_script("while True:\n    pass", slow)
    assert _wait_for(lambda: pool.stats().queued == 0 and pool.stats().busy == 1)
    queued = [pool.run_script("print(1)", Policy()) for _ in range(2)]
    with pytest.raises(QueueFullError):
        pool.run_script("print(1)", Policy())
    assert running.result().outcome is Outcome.TIMEOUT
    assert [f.result().stdout for f in queued] == ["1\n", "1\n"]
    pool.close()


def test_close_fails_queued_work_and_finishes_running_work(no_leaked_jails: None) -> None:
    pool = Pool(min_size=1, max_size=1)
    pool.start()
    # ~1 s of work: still running when close() comes, whatever the machine's speed
    running = pool.run_script("x = sum(range(30_000_000))\nprint(x > 0)", Policy())
    queued = pool.run_script("print(1)", Policy())
    assert _wait_for(lambda: pool.stats().busy == 1 and pool.stats().queued == 1)
    pool.close()
    assert running.result().stdout == "True\n"
    with pytest.raises(PoolClosedError):
        queued.result()


def test_strict_mode_refuses_a_host_without_the_jail() -> None:
    caps = Capabilities(
        bwrap=None,
        layers=(Layer(name="namespaces", enabled=False, detail="bwrap not found"),),
        seccomp_program=None,
    )
    pool = Pool(min_size=1, max_size=1, capabilities=caps)
    with pytest.raises(IsolationUnavailableError, match="bwrap not found"):
        pool.start()


def test_degraded_mode_runs_and_labels_every_result(no_leaked_jails: None) -> None:
    caps = Capabilities(
        bwrap=None,
        layers=(Layer(name="namespaces", enabled=False, detail="bwrap not found"),),
        seccomp_program=None,
    )
    pool = Pool(min_size=1, max_size=1, isolation="degraded", capabilities=caps)
    pool.start()
    result = pool.run_script("print('unsafe')", Policy()).result()
    assert result.stdout == "unsafe\n"
    assert result.degraded
    assert pool.health()["degraded"] is True
    pool.close()


def test_each_profile_wakes_its_own_workers(no_leaked_jails: None) -> None:
    pool = Pool(min_size=2, max_size=4, scientific_min_size=1)
    pool.start()
    assert _wait_for(lambda: pool.stats().by_profile == {"core": 2, "scientific": 1}, 60)
    sci = Policy.scientific()
    code = "import pandas as pd\nprint(int(pd.DataFrame({'a': [1, 2]}).a.sum()))"
    started = time.monotonic()
    for _ in range(5):  # every job must reach the idle scientific worker at once
        assert pool.run_script(code, sci).result(timeout=20).stdout == "3\n"
        assert pool.run_script("print('core')", Policy()).result(timeout=20).stdout == "core\n"
    assert time.monotonic() - started < 15
    assert pool.stats().by_profile == {"core": 2, "scientific": 1}
    pool.close()


PANDAS_SUM = "import pandas as pd\nprint(int(pd.DataFrame({'a': [1, 2]}).a.sum()))"


@pytest.mark.parametrize("size", [1, 2])
def test_a_full_pool_gives_a_slot_to_a_profile_without_workers(
    no_leaked_jails: None, size: int
) -> None:
    """min = max, all core: a scientific request used to wait for ever for a slot."""
    pool = Pool(min_size=size, max_size=size, idle_timeout_s=0.5)
    pool.start()
    assert _wait_for(lambda: pool.stats().by_profile == {"core": size, "scientific": 0}, 30)
    sci = pool.run_script(PANDAS_SUM, Policy.scientific())
    assert sci.result(timeout=60).stdout == "3\n"
    assert pool.run_script("print('core')", Policy()).result(timeout=60).stdout == "core\n"
    # the scientific worker retires when idle and the core floor comes back
    assert _wait_for(lambda: pool.stats().by_profile == {"core": size, "scientific": 0}, 30)
    assert pool.stats().size <= size
    pool.close()


def test_a_busy_full_pool_yields_a_slot_once_its_job_ends(no_leaked_jails: None) -> None:
    pool = Pool(min_size=1, max_size=1)
    pool.start()
    slow = Policy().with_limits(timeout_ms=1500)
    loop = pool.run_script("while True:\n    pass", slow)
    assert _wait_for(lambda: pool.stats().busy == 1, timeout_s=30)
    sci = pool.run_script(PANDAS_SUM, Policy.scientific())
    assert sci.result(timeout=60).stdout == "3\n"
    assert loop.result(timeout=5).outcome is Outcome.TIMEOUT
    assert pool.stats().size <= 1
    pool.close()


def test_one_slot_serves_both_profiles_without_handing_it_back_and_forth(
    no_leaked_jails: None,
) -> None:
    """max = 1 with work of both profiles queued at once: each new worker runs a job before it
    yields (a worker that yielded at once would leave the two profiles trading the slot)."""
    pool = Pool(min_size=1, max_size=1)
    pool.start()
    sci = Policy.scientific()
    futures = []
    for i in range(2):
        futures.append(pool.run_script(f"print({i})", Policy()))
        futures.append(pool.run_script(PANDAS_SUM, sci))
    outputs = [f.result(timeout=90).stdout for f in futures]
    assert outputs == ["0\n", "3\n", "1\n", "3\n"]
    assert pool.stats().workers_started <= 6  # the first, then at most one per hand-over
    pool.close()


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
        if current != pid:
            found.append(current)
    return found


def test_the_zygote_itself_runs_under_seccomp(no_leaked_jails: None) -> None:
    """Defence in depth: the zygote confines itself (all but fork and kill, which it needs for
    its children) before it serves; its children add the rest."""
    pool = Pool(min_size=1, max_size=1)
    pool.start()
    assert pool.run_script("print(1)", Policy()).result().stdout == "1\n"

    def pythons() -> list[str]:
        found = []
        for bwrap in pool.worker_pids():
            for pid in _descendants(bwrap):
                try:
                    status = Path(f"/proc/{pid}/status").read_text()
                except (FileNotFoundError, ProcessLookupError):  # a child that just exited
                    continue
                if "\nName:\tpython" in "\n" + status and "State:\tZ" not in status:
                    found.append(status)
        return found

    # the zygote forks its next spare after answering: wait for it to be there
    assert _wait_for(lambda: len(pythons()) >= 2), "no spare beside the zygote"
    for status in pythons():
        assert "Seccomp:\t2" in status and "NoNewPrivs:\t1" in status, status[:400]
    pool.close()
