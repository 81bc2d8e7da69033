"""Layer 3: a pool of warm, jailed zygotes with deadlines, scaling and recycling.

One dispatcher thread owns each worker process and talks to it over pipes; callers get
``concurrent.futures.Future`` objects, so neither the sync API nor an event loop ever blocks on a
worker. The pool keeps ``min_size`` core workers warm, grows to ``max_size`` under queue pressure,
shrinks after ``idle_timeout_s``, recycles a worker after ``recycle_after`` executions, and
replaces any worker that crashes or misses the backstop deadline (its own deadline plus grace),
or whose job is still running half a second after it was abandoned (its ``stop`` event set).
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import math
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import (
    ConfigurationError,
    IsolationUnavailableError,
    PoolClosedError,
    QueueFullError,
    WorkerCrashedError,
)
from .isolation.jail import worker_argv
from .isolation.probe import Capabilities, probe
from .isolation.seccomp import CHILD_DENIED_SYSCALLS, ZYGOTE_DENIED_SYSCALLS, build_program
from .policy import CORE_IMPORTS, SCIENTIFIC_IMPORTS, Policy, Profile
from .policy.outcomes import script_result, trace_result
from .types import ExecutionResult, Outcome, TraceItem, TraceResult
from .worker.protocol import (
    RESULT_TAG,
    FrameError,
    FrameReader,
    FrameTimeout,
    decode_frame,
    decode_result,
    encode_frame,
    write_all,
    write_all_v,
)

if TYPE_CHECKING:
    from .settings import Settings

__all__ = ["Pool", "PoolStats"]

_STARTUP_TIMEOUT_S = 60.0
_BACKSTOP_GRACE_S = 2.0
#: How often a dispatcher waiting on its worker checks whether the job was abandoned.
_STOP_POLL_S = 0.1
#: An abandoned job still running this long after it was noticed has its worker killed: its
#: remaining items (up to 64 traces, each up to its timeout) would hold the worker for nothing.
_ABANDONED_GRACE_S = 0.5
#: A job running longer than this holds its worker "for a while": only then does the pool grow
#: past cores + 1, so that quick jobs are not stuck behind slow ones. Below it, executions are
#: CPU-bound and short, and more workers than cores only add memory and context switches.
_SLOW_JOB_S = 0.1
_CPUS = os.cpu_count() or 1  #: read once: os.cpu_count() reads /sys on every call
#: Run by each scientific spare before it waits: pre-faults the pages a pandas eval touches.
_SCIENTIFIC_WARM_UP = "import pandas as pd\npd.DataFrame({'a': [1, 2]}).a.sum()\n"


@dataclass(frozen=True, slots=True, kw_only=True)
class PoolStats:
    size: int
    busy: int
    queued: int
    min_size: int
    max_size: int
    executions: int
    workers_started: int
    workers_replaced: int
    by_profile: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "busy": self.busy,
            "queue": self.queued,
            "min_size": self.min_size,
            "max_size": self.max_size,
            "executions": self.executions,
            "workers_started": self.workers_started,
            "workers_replaced": self.workers_replaced,
            "by_profile": dict(self.by_profile),
        }


# -- jobs and workers -------------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class _Job:
    profile: Profile
    mode: str
    code: str
    function: str | None
    items: Sequence[TraceItem] | None
    policy: Policy
    deadline: float  #: monotonic; the batch budget
    on_raw: Callable[[int, dict[str, Any]], None]
    on_done: Callable[[BaseException | None], None]
    stop: threading.Event | None = None  #: set: nobody wants the results any more


_RESULT_TAG = bytes([RESULT_TAG])


def _child_result(payload: bytes) -> dict[str, Any]:
    """A child's result as it wrote it: untrusted, so garbage becomes a sandbox failure."""
    try:
        raw = json.loads(payload)
    except ValueError:
        raw = None
    if not isinstance(raw, dict):
        return {"status": "internal", "error": "the execution sent a malformed result"}
    return raw


class _WorkerGone(WorkerCrashedError):
    """The worker was already dead when a job was handed to it: the job never started."""


class _Abandoned(WorkerCrashedError):
    """Nobody wanted the running job's results any more: its worker was killed."""


class _Worker:
    """The host's handle on one jailed zygote process."""

    def __init__(self, argv: list[str], init: dict[str, Any], profile: Profile) -> None:
        self.profile = profile
        self.executions = 0
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            close_fds=True,
            env={},
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._in = self.proc.stdin.fileno()
        self._reader = FrameReader(self.proc.stdout.fileno())
        self._stderr_tail: collections.deque[bytes] = collections.deque(maxlen=64)
        threading.Thread(target=self._drain_stderr, daemon=True, name="evaljail-stderr").start()
        try:
            write_all(self._in, encode_frame(init))
            ready = self._reader.read(time.monotonic() + _STARTUP_TIMEOUT_S)
        except (FrameError, OSError) as exc:
            self.kill()
            raise WorkerCrashedError(
                f"a jailed worker failed to start: {exc}; stderr: {self.stderr_tail()}"
            ) from exc
        if ready.get("op") != "ready":
            self.kill()
            raise WorkerCrashedError(f"unexpected first frame from a worker: {ready.get('op')}")
        self.info = ready

    def _drain_stderr(self) -> None:
        stream = self.proc.stderr
        assert stream is not None
        with contextlib.suppress(OSError, ValueError):
            for line in iter(stream.readline, b""):
                self._stderr_tail.append(line[:512])

    def stderr_tail(self) -> str:
        return b"".join(self._stderr_tail).decode("utf-8", "replace")[-2000:]

    def run(self, job: _Job, request_id: int, *, busy: bool = False) -> None:
        """Send one job and relay its results; raises WorkerCrashedError on any breakage.

        ``busy``: more jobs were waiting, so the zygote should not spend time making its next
        spare fast to start (it will be used at once, warm or not).
        """
        items = job.items
        message: dict[str, Any] = {
            "op": "run",
            "id": request_id,
            "mode": job.mode,
            "code": job.code,
            "function": job.function,
            "policy": job.policy.to_wire(),
            "budget_ms": max((job.deadline - time.monotonic()) * 1000, 1.0),
            "busy": busy,
        }
        blobs: list[bytes] = []
        if items is not None:
            blobs = [i.data_json.encode("utf-8") for i in items]
            message["items"] = [[i.index, len(b)] for i, b in zip(items, blobs, strict=True)]
            message["blob_len"] = sum(len(b) for b in blobs)
        per_item_s = job.policy.limits.timeout_ms / 1000 + _BACKSTOP_GRACE_S
        if not self.alive():
            raise _WorkerGone("the worker died while idle")
        try:
            write_all_v(self._in, [encode_frame(message), *blobs])
        except OSError as exc:
            raise _WorkerGone(f"the worker died while idle: {exc}") from exc
        noticed: list[float] = []  #: when the job was first seen abandoned
        try:
            while True:
                body = self._read_result(job, time.monotonic() + per_item_s, noticed)
                if body[:1] != _RESULT_TAG:
                    frame = decode_frame(body)
                    if frame.get("op") != "done" or frame.get("id") != request_id:
                        raise WorkerCrashedError("a worker answered out of turn")
                    return
                answered_id, index, elapsed_ms, done, payload = decode_result(body)
                if answered_id != request_id:
                    raise WorkerCrashedError("a worker answered out of turn")
                self.executions += 1
                raw = _child_result(payload)
                raw["elapsed_ms"] = elapsed_ms
                job.on_raw(index, raw)
                if done:  # the last result carries the end of the job
                    return
        except (FrameError, OSError) as exc:
            time.sleep(0.05)  # let the stderr drain catch the worker's last words
            raise WorkerCrashedError(
                f"a jailed worker stopped answering: {exc}",
                details={"stderr": self.stderr_tail()},
            ) from exc

    def _read_result(self, job: _Job, deadline: float, noticed: list[float]) -> bytes:
        """The worker's next frame; kills the worker (_Abandoned) once the job's ``stop`` has
        been set for ``_ABANDONED_GRACE_S`` (quick remaining items finish within it)."""
        stop = job.stop
        if stop is None:
            return self._reader.read_raw(deadline)
        while True:
            now = time.monotonic()
            if stop.is_set():
                if not noticed:
                    noticed.append(now)
                elif now - noticed[0] >= _ABANDONED_GRACE_S:
                    self.kill()
                    raise _Abandoned("the job was abandoned; its worker was stopped")
            try:
                return self._reader.read_raw(min(deadline, now + _STOP_POLL_S))
            except FrameTimeout:
                if time.monotonic() >= deadline:
                    raise

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        with contextlib.suppress(OSError, FrameError):
            write_all(self._in, encode_frame({"op": "exit"}))
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.kill()
        self._close_pipes()

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        self._close_pipes()

    def _close_pipes(self) -> None:
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


# -- the pool ---------------------------------------------------------------------------------


class Pool:
    """Warm jailed workers. Implements the runner's Backend protocol."""

    name = "local"
    analyzes = False

    def __init__(
        self,
        *,
        min_size: int = 3,
        max_size: int = 15,
        queue_size: int = 10_000,
        isolation: str = "strict",
        idle_timeout_s: float = 60.0,
        recycle_after: int = 5_000,
        scientific_min_size: int = 0,
        capabilities: Capabilities | None = None,
    ) -> None:
        if not 0 <= min_size <= max_size or max_size < 1:
            raise ConfigurationError(
                f"pool sizes must satisfy 0 <= min ({min_size}) <= max ({max_size}), max >= 1"
            )
        if isolation not in ("strict", "degraded"):
            raise ConfigurationError(f"isolation must be 'strict' or 'degraded', not {isolation!r}")
        self.min_size = min_size
        self.max_size = max_size
        self.queue_size = queue_size
        self.isolation = isolation
        self.idle_timeout_s = idle_timeout_s
        self.recycle_after = recycle_after
        self.scientific_min_size = scientific_min_size
        self._caps = capabilities
        self._lock = threading.RLock()  # guards all pool state
        #: Idle workers of each profile wait on their own condition (over the same lock).
        self._wakeups = {p: threading.Condition(self._lock) for p in Profile}
        self._queues: dict[Profile, collections.deque[_Job]] = {p: collections.deque()
                                                                for p in Profile}  # fmt: skip
        self._workers: dict[Profile, int] = dict.fromkeys(Profile, 0)
        self._starting: dict[Profile, int] = dict.fromkeys(Profile, 0)
        self._idle: dict[Profile, int] = dict.fromkeys(Profile, 0)
        #: when each busy worker's current job started, by worker
        self._running: dict[Profile, dict[int, float]] = {p: {} for p in Profile}
        self._leaving = 0  #: workers giving their slot to a starved profile
        self._live: set[_Worker] = set()
        self._threads: set[threading.Thread] = set()
        self._ids = itertools.count(1)
        self._closed = False
        self._started = False
        self._executions = 0
        self._workers_started = 0
        self._workers_replaced = 0
        self._jailed = True
        self._seccomp_hex: str | None = None
        self._child_seccomp_hex: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Pool:
        return cls(
            min_size=settings.pool_min_size,
            max_size=settings.pool_max_size,
            queue_size=settings.queue_size,
            isolation=settings.isolation,
        )

    # -- start-up ------------------------------------------------------------------------------

    @property
    def capabilities(self) -> Capabilities:
        if self._caps is None:
            self._caps = probe()
        return self._caps

    @property
    def degraded(self) -> bool:
        return not (self._jailed and self._seccomp_hex is not None)

    def start(self) -> None:
        """Probe the host, refuse unsafe modes, and warm ``min_size`` core workers."""
        if self._started:
            return
        caps = self.capabilities
        if not caps.strict_ok and self.isolation == "strict":
            raise IsolationUnavailableError(
                "strict isolation is not available on this host: "
                + "; ".join(caps.missing)
                + ". Fix the host (see `evaljail doctor`) or set EVALJAIL_ISOLATION=degraded "
                "for development only.",
                details={"missing": list(caps.missing)},
            )
        self._jailed = caps.layer("namespaces").enabled
        if caps.seccomp_program is not None:  # split in two: see CHILD_DENIED_SYSCALLS
            self._seccomp_hex = build_program(ZYGOTE_DENIED_SYSCALLS).bpf.hex()
            self._child_seccomp_hex = build_program(
                CHILD_DENIED_SYSCALLS, arg_rules=(), unknown_from=None
            ).bpf.hex()
        self._started = True
        # Fail fast and loudly: wait here for the first worker, started by its own thread.
        first_ready = threading.Event()
        errors: list[BaseException] = []
        self._grow(Profile.CORE, ready=first_ready, errors=errors)
        first_ready.wait()
        if errors:
            self.close()
            raise errors[0]
        if not self.degraded:
            try:
                self.self_test()
            except IsolationUnavailableError:
                self.close()
                raise
        for _ in range(self.min_size - 1):
            self._grow(Profile.CORE)
        for _ in range(self.scientific_min_size):
            self._grow(Profile.SCIENTIFIC)

    def self_test(self) -> None:
        """Prove the confinement on a real execution: no host files, no host sysctls, no
        sockets, no fork.

        Runs with static analysis off (layer 1 must not be what stops it) and raises
        IsolationUnavailableError if any door is open.
        """
        probe_code = (
            "import json\nsys = json.codecs.sys\nos = sys.modules['os']\nopen_doors = []\n"
            "try:\n    os.stat('/etc/passwd')\n    open_doors.append('host /etc')\n"
            "except OSError:\n    pass\n"
            "try:\n    os.fork()\n    open_doors.append('fork')\nexcept OSError:\n    pass\n"
            "if os.access('/proc/sys/kernel/core_pattern', os.W_OK):\n"
            "    open_doors.append('host sysctls')\n"
            "_socket = sys.modules['importlib'].import_module('_socket')\n"
            "try:\n    _socket.socket()\n    open_doors.append('socket')\n"
            "except OSError:\n    pass\n"
            "print(','.join(open_doors) or 'closed')\n"
        )
        result = self.run_script(probe_code, Policy(static_analysis=False)).result(timeout=60)
        if result.stdout.strip() != "closed":
            raise IsolationUnavailableError(
                f"confinement self-test failed: {result.stdout.strip() or result.error}",
                details={"stdout": result.stdout, "error": result.error},
            )

    def _init_message(self, profile: Profile) -> dict[str, Any]:
        message: dict[str, Any] = {
            "op": "init",
            "preload": sorted(CORE_IMPORTS),
            "seccomp_bpf": self._seccomp_hex,
            "child_seccomp_bpf": self._child_seccomp_hex,
            "policy": Policy.core().to_wire(),
        }
        if profile is Profile.SCIENTIFIC:
            message.update(
                preload=[*message["preload"], "numpy", "pandas", "matplotlib",
                         "matplotlib.pyplot"],
                policy=Policy.scientific().to_wire(),
                seal=["/tmp"],
                warm_code=_SCIENTIFIC_WARM_UP,
            )  # fmt: skip
        return message

    def _spawn_worker(self, profile: Profile) -> _Worker:
        with self._lock:
            if self._closed:
                raise WorkerCrashedError("the pool is shutting down")
        argv = worker_argv(jailed=self._jailed, scientific=profile is Profile.SCIENTIFIC,
                           bwrap=self.capabilities.bwrap or "bwrap")  # fmt: skip
        worker = _Worker(argv, self._init_message(profile), profile)
        with self._lock:
            self._workers_started += 1
        return worker

    def _grow(
        self,
        profile: Profile,
        *,
        ready: threading.Event | None = None,
        errors: list[BaseException] | None = None,
    ) -> None:
        """Start one more worker. Its dispatcher thread spawns it and owns it for life: bwrap's
        ``--die-with-parent`` follows the *thread* that started it, so no other thread may."""
        with self._lock:
            total = sum(self._workers.values()) + sum(self._starting.values())
            if self._closed or total >= self.max_size:
                if ready is not None:
                    ready.set()
                return
            self._starting[profile] += 1
            thread = threading.Thread(target=self._own, args=(profile, ready, errors),
                                      daemon=True, name=f"evaljail-{profile.value}")  # fmt: skip
            self._threads.add(thread)
        thread.start()

    def _own(
        self,
        profile: Profile,
        ready: threading.Event | None,
        errors: list[BaseException] | None,
    ) -> None:
        try:
            worker = self._spawn_worker(profile)
        except WorkerCrashedError as exc:
            with self._lock:
                self._starting[profile] -= 1
                self._threads.discard(threading.current_thread())
                self._fail_queue_if_orphaned(profile)
            if errors is not None:
                errors.append(exc)
            if ready is not None:
                ready.set()
            return
        with self._lock:
            self._starting[profile] -= 1
            self._workers[profile] += 1
            self._live.add(worker)
        if ready is not None:
            ready.set()
        self._serve(worker)

    def _floor(self, profile: Profile) -> int:
        return self.min_size if profile is Profile.CORE else self.scientific_min_size

    def _starved(self) -> Profile | None:
        """(lock held) A profile with work queued, no worker, and no room to start one.

        The workers of the other profile then give up their slots, one at a time, as each
        becomes idle: otherwise a pool full of core workers (``PYTHON_POOL_MAX_SIZE`` reached,
        or min = max) would keep a scientific request waiting for ever.
        """
        slots = sum(self._workers.values()) + sum(self._starting.values()) - self._leaving
        if slots < self.max_size:
            return None
        for profile in Profile:
            if self._queues[profile] and not self._workers[profile] + self._starting[profile]:
                return profile
        return None

    def _refill(self, exited: Profile) -> None:
        """After a worker of ``exited`` stopped: start what the pool now lacks, within max_size.

        First a worker for a profile with work waiting and none to do it, then the replacement
        of the one that stopped when its queue is not empty, then each profile's floor.
        """
        with self._lock:
            if self._closed:
                return
            wanted: list[Profile] = []
            for profile in Profile:
                if self._queues[profile] and not self._workers[profile] + self._starting[profile]:
                    wanted.append(profile)
            if self._queues[exited] and exited not in wanted:
                wanted.append(exited)
            for profile in Profile:
                have = self._workers[profile] + self._starting[profile] + wanted.count(profile)
                wanted += [profile] * max(self._floor(profile) - have, 0)
            for profile in wanted:
                self._grow(profile)  # re-entrant lock; each checks max_size again

    def _fail_queue_if_orphaned(self, profile: Profile) -> None:
        """(lock held) No worker of this profile can start: fail what waits for one."""
        if self._workers[profile] or self._starting[profile]:
            return
        queue = self._queues[profile]
        while queue:
            job = queue.popleft()
            job.on_done(WorkerCrashedError(f"no {profile.value} worker could be started"))

    # -- dispatch ------------------------------------------------------------------------------

    def _serve(self, worker: _Worker) -> None:
        profile = worker.profile
        queue = self._queues[profile]
        wakeup = self._wakeups[profile]
        yielded = ran = False
        try:
            while True:
                with self._lock:
                    self._idle[profile] += 1
                    idle_since = time.monotonic()
                    while not self._closed and not queue and self._starved() is None:
                        waited = time.monotonic() - idle_since
                        if waited >= self.idle_timeout_s and self._workers[profile] > \
                                self._floor(profile):  # fmt: skip
                            self._idle[profile] -= 1
                            return
                        wakeup.wait(timeout=max(self.idle_timeout_s - waited, 0.05))
                    self._idle[profile] -= 1
                    if self._closed:
                        return
                    # Give the slot to a starved profile when idle, or once this worker has run
                    # a job: a new worker always runs one first, or two profiles with work
                    # queued would hand one slot back and forth without running anything.
                    if self._starved() is not None and (ran or not queue):
                        self._leaving += 1
                        yielded = True
                        return
                    job = queue.popleft()
                    busy = bool(queue)
                error: BaseException | None = None
                if job.stop is not None and job.stop.is_set():
                    continue  # abandoned while it waited: nothing to run, nobody to tell
                if job.items is not None and time.monotonic() >= job.deadline:
                    for item in job.items:  # the batch budget ran out while this waited
                        job.on_raw(item.index, {"status": "budget", "elapsed_ms": 0.0})
                    job.on_done(None)
                    continue
                with self._lock:
                    self._running[profile][id(worker)] = time.monotonic()
                try:
                    worker.run(job, next(self._ids), busy=busy)
                except _WorkerGone:
                    with self._lock:  # nothing ran: give the job to the next worker
                        queue.appendleft(job)
                        self._workers_replaced += 1
                        wakeup.notify()
                    return
                except WorkerCrashedError as exc:
                    error = exc
                except Exception as exc:
                    worker.kill()
                    error = WorkerCrashedError(f"the pool failed to run a job: {exc!r}")
                with self._lock:
                    self._running[profile].pop(id(worker), None)
                ran = True
                job.on_done(error)
                if error is not None or not worker.alive():
                    with self._lock:
                        self._workers_replaced += 1
                    return
                if worker.executions >= self.recycle_after:
                    return
        finally:
            with self._lock:
                self._running[profile].pop(id(worker), None)
                self._workers[profile] -= 1
                if yielded:
                    self._leaving -= 1
                self._live.discard(worker)
                self._threads.discard(threading.current_thread())
            if worker.alive():
                worker.stop()
            else:
                worker.kill()
            self._refill(profile)

    def _submit(self, job: _Job) -> None:
        with self._lock:
            if self._closed:
                raise PoolClosedError("the pool is shut down")
            if not self._started:
                raise PoolClosedError("the pool is not started")
            queue = self._queues[job.profile]
            waiting = sum(len(q) for q in self._queues.values())
            if waiting >= self.queue_size:
                raise QueueFullError(
                    f"the execution queue is full ({waiting} jobs waiting for a worker, "
                    f"limit {self.queue_size}); retry later",
                    details={"queue_size": self.queue_size, "waiting": waiting},
                )
            queue.append(job)
            pressure = len(queue) > self._idle[job.profile] + self._starting[job.profile]
            workers = self._workers[job.profile] + self._starting[job.profile]
            if pressure and workers >= max(self.min_size, _CPUS + 1):
                # Past cores + 1, another worker helps only if the busy ones are held by slow
                # jobs (a queued quick job should not wait for them). Batch chunks are slow but
                # CPU-bound: they never grow the pool past that.
                now = time.monotonic()
                held = any(now - t > _SLOW_JOB_S for t in self._running[job.profile].values())
                pressure = held and job.items is None
            # Wake a worker of this job's profile: a shared condition could wake a worker of
            # the other profile, which would find its own queue empty and sleep on.
            self._wakeups[job.profile].notify()
            if self._starved() is job.profile:  # an idle worker of the other profile yields
                for profile, wakeup in self._wakeups.items():
                    if profile is not job.profile:
                        wakeup.notify()
        if pressure:
            self._grow(job.profile)

    # -- Backend protocol ----------------------------------------------------------------------

    @staticmethod
    def _route(policy: Policy, code: str) -> Profile:
        """The scientific zygote only for code that mentions a scientific module."""
        if policy.profile is Profile.SCIENTIFIC and any(m in code for m in SCIENTIFIC_IMPORTS):
            return Profile.SCIENTIFIC
        return Profile.CORE

    def run_script(self, code: str, policy: Policy) -> Future[ExecutionResult]:
        """The future stays cancellable until it has its result: cancelling it (an HTTP client
        that left) skips the job if it still waits, or stops its worker if it runs."""
        future: Future[ExecutionResult] = Future()
        stop = threading.Event()
        future.add_done_callback(lambda f: stop.set() if f.cancelled() else None)
        degraded = self.degraded
        box: list[ExecutionResult] = []

        def on_raw(_index: int, raw: dict[str, Any]) -> None:
            result = script_result(raw, policy, degraded=degraded)
            box.append(result)
            with self._lock:
                self._executions += 1
            with contextlib.suppress(InvalidStateError):  # cancelled meanwhile
                future.set_result(result)

        def on_done(error: BaseException | None) -> None:
            if box:
                return
            if error is None:
                error = WorkerCrashedError("the worker finished without a result")
            with contextlib.suppress(InvalidStateError):
                future.set_exception(error)

        self._submit(_Job(
            profile=self._route(policy, code), mode="script", code=code, function=None,
            items=None, policy=policy,
            deadline=time.monotonic() + policy.limits.timeout_ms / 1000 + 60,
            on_raw=on_raw, on_done=on_done, stop=stop,
        ))  # fmt: skip
        return future

    def run_traces(
        self,
        code: str,
        function_name: str,
        items: Sequence[TraceItem],
        policy: Policy,
        *,
        deadline: float,
        on_result: Callable[[int, TraceResult], None],
        stop: threading.Event | None = None,
    ) -> Future[None]:
        future: Future[None] = Future()
        future.set_running_or_notify_cancel()
        if not items:
            future.set_result(None)
            return future
        profile = self._route(policy, code)
        degraded = self.degraded
        by_index: dict[int, TraceItem] = {}  # filled chunk by chunk, before each is submitted
        remaining = [len(items)]
        delivered: set[int] = set()
        state = threading.Lock()
        with self._lock:
            workers = max(self._workers[profile] + self._starting[profile], 1)
            workers = min(max(workers, self.min_size), self.max_size)
            free = self.queue_size - sum(len(q) for q in self._queues.values())
        chunk = max(1, min(64, math.ceil(len(items) / (workers * 4))))
        # A batch needs no more places in the queue than are free: with a small
        # EVALJAIL_QUEUE_SIZE its chunks get larger instead of the batch never fitting.
        chunk = max(chunk, math.ceil(len(items) / max(free, 1)))

        def finish_one(index: int, result: TraceResult) -> None:
            if stop is not None and stop.is_set():
                return
            with state:
                if index in delivered:
                    return
                delivered.add(index)
                remaining[0] -= 1
                last = remaining[0] == 0
            with self._lock:
                self._executions += 1
            on_result(index, result)
            if last:
                future.set_result(None)

        def on_raw(index: int, raw: dict[str, Any]) -> None:
            if stop is not None and stop.is_set():  # ran, but nobody wants it: count it only
                with self._lock:
                    self._executions += 1
                return
            item = by_index.get(index)
            if item is not None:
                finish_one(index, trace_result(raw, item, policy, degraded=degraded))

        def make_on_done(part: Sequence[TraceItem]) -> Callable[[BaseException | None], None]:
            def on_done(error: BaseException | None) -> None:
                for item in part:
                    if item.index not in delivered:
                        why = str(error) if error else "the worker finished without a result"
                        finish_one(item.index, TraceResult(
                            index=item.index, trace_id=item.trace_id, success=False,
                            outcome=Outcome.CRASHED, error=f"Process crashed: {why}",
                            error_type="WorkerCrashed", degraded=degraded,
                        ))  # fmt: skip

            return on_done

        submitted: list[_Job] = []
        try:
            for start in range(0, len(items), chunk):
                # Reading a chunk may encode it (a TraceList): earlier chunks already run.
                part = items[start : start + chunk]
                by_index.update((item.index, item) for item in part)
                job = _Job(
                    profile=profile, mode="eval", code=code, function=function_name,
                    items=part, policy=policy, deadline=deadline, on_raw=on_raw,
                    on_done=make_on_done(part), stop=stop,
                )  # fmt: skip
                self._submit(job)
                submitted.append(job)
        except BaseException:
            self._withdraw(submitted)  # a bad trace or a full queue: the batch never started
            raise
        return future

    def _withdraw(self, jobs: list[_Job]) -> None:
        """Take a failed batch's chunks out of the queue (running ones finish, unreported)."""
        with self._lock:
            for job in jobs:
                queue = self._queues[job.profile]
                with contextlib.suppress(ValueError):
                    queue.remove(job)

    def stats(self) -> PoolStats:
        with self._lock:
            size = sum(self._workers.values())
            idle = sum(self._idle.values())
            return PoolStats(
                size=size,
                busy=size - idle,
                queued=sum(len(q) for q in self._queues.values()),
                min_size=self.min_size,
                max_size=self.max_size,
                executions=self._executions,
                workers_started=self._workers_started,
                workers_replaced=self._workers_replaced,
                by_profile={p.value: n for p, n in self._workers.items()},
            )

    def health(self) -> dict[str, Any]:
        caps = self.capabilities
        return {
            "backend": self.name,
            "isolation_mode": self.isolation,
            "degraded": self.degraded,
            "layers": caps.to_dict(),
            "pool": self.stats().to_dict(),
        }

    def worker_pids(self) -> list[int]:
        """Host pids of the bubblewrap processes (for tests and diagnostics)."""
        with self._lock:
            return [w.proc.pid for w in self._live]

    def close(self, timeout_s: float = 10.0) -> None:
        """Finish running jobs, fail queued ones, stop every worker; no orphans."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            queued = [job for q in self._queues.values() for job in q]
            for q in self._queues.values():
                q.clear()
            for wakeup in self._wakeups.values():
                wakeup.notify_all()
            threads = list(self._threads)
        for job in queued:
            job.on_done(PoolClosedError("the pool shut down before this job ran"))
        end = time.monotonic() + timeout_s
        for thread in threads:
            thread.join(max(end - time.monotonic(), 0.1))
        with self._lock:
            leftovers = list(self._live)
        for worker in leftovers:
            worker.kill()

    def __enter__(self) -> Pool:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
