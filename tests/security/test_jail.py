"""Layers 2-4 on their own: every payload runs in the real jail with static analysis OFF.

Then the same table goes through static analysis alone, which must reject every payload: each
layer proves itself.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from evaljail import Outcome, Policy, Settings
from evaljail.policy.analysis import analyze
from evaljail.runner import PythonRunner

from .payloads_jail import PAYLOADS, JailPayload
from .payloads_static import PAYLOADS as STATIC_PAYLOADS
from .payloads_static import SENTINEL

pytestmark = pytest.mark.sandbox

REPO = Path(__file__).resolve().parents[2]
SECRET = "evaljail-test-secret-5b1f0c3e"


@pytest.fixture(scope="module")
def listeners() -> Iterator[tuple[socket.socket, socket.socket]]:
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(8)
    tcp.settimeout(0.05)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", tcp.getsockname()[1]))
    udp.settimeout(0.05)
    yield tcp, udp
    tcp.close()
    udp.close()


@pytest.fixture(scope="module")
def unguarded() -> Iterator[PythonRunner]:
    """A real jailed pool with layer 1 switched off; a secret sits in the service's env."""
    os.environ["EVALJAIL_TEST_SECRET"] = SECRET
    runner = PythonRunner(
        policy=Policy(static_analysis=False),
        settings=Settings(pool_min_size=2, pool_max_size=4),
    )
    yield runner
    runner.close()
    os.environ.pop("EVALJAIL_TEST_SECRET", None)


def _code(payload: JailPayload, port: int) -> str:
    return payload.code.format(secret=SECRET, repo=REPO, port=port)


def _assert_outcome(payload: JailPayload, result: object) -> None:
    from evaljail.types import ExecutionResult

    assert isinstance(result, ExecutionResult)
    if payload.expected == "any":
        return
    kind, _, error_type = payload.expected.partition(":")
    assert result.outcome is Outcome(kind), (result.outcome, result.error, result.stdout)
    if error_type == "OSError":  # EROFS, EACCES or ENOENT: all mean "not written"
        assert result.error_type in {"OSError", "PermissionError", "FileNotFoundError"}, result
    elif error_type:
        assert result.error_type == error_type, (result.error, result.traceback)


@pytest.mark.parametrize("payload", PAYLOADS, ids=[p.id for p in PAYLOADS])
def test_kernel_layers_hold_without_static_analysis(
    payload: JailPayload,
    unguarded: PythonRunner,
    listeners: tuple[socket.socket, socket.socket],
) -> None:
    tcp, udp = listeners
    port = tcp.getsockname()[1]
    result = unguarded.execute(_code(payload, port), timeout=payload.timeout_ms)
    assert "ESCAPED" not in result.stdout, f"{payload.id}: {result.stdout[:500]}"
    assert SECRET not in result.stdout + result.stderr + (result.error or "")
    _assert_outcome(payload, result)
    assert not result.degraded
    # nothing reached the listeners on the host's loopback
    with pytest.raises(TimeoutError):
        tcp.accept()
    with pytest.raises(TimeoutError):
        udp.recvfrom(64)


@pytest.mark.parametrize("payload", PAYLOADS, ids=[p.id for p in PAYLOADS])
def test_static_analysis_alone_rejects_every_jail_payload(payload: JailPayload) -> None:
    report = analyze(_code(payload, 1), Policy())
    assert report.violations, f"{payload.id} passed static analysis"


def test_pool_is_healthy_after_the_suite(unguarded: PythonRunner) -> None:
    result = unguarded.execute_batch(
        "def eval_ok(trace):\n    return len(trace['steps']) == 2, 'two steps'\n",
        None,
        [{"trace_id": "t1", "data": {"steps": [1, 2]}}, {"trace_id": "t2", "data": {"steps": []}}],
    )
    assert [(r.trace_id, r.passed, r.reason) for r in result.results] == [
        ("t1", True, "two steps"),
        ("t2", False, "two steps"),
    ]
    health = unguarded.health()
    assert health["pool"]["size"] >= 1
    assert not health["degraded"]


def test_state_does_not_leak_between_executions(unguarded: PythonRunner) -> None:
    first = unguarded.execute(
        "import json\njson.LEAK = 'secret-state'\njson.codecs.sys.modules['json'].X = 1\n"
        "json.codecs.sys.modules['builtins'].LEAKED = True\nprint('set')"
    )
    assert first.outcome is Outcome.OK
    for _ in range(4):  # whichever worker answers, none may remember
        second = unguarded.execute(
            "import json\nprint(hasattr(json, 'LEAK'), hasattr(json.codecs.sys.modules['builtins'], 'LEAKED'))"
        )
        assert second.stdout == "False False\n", second


def test_state_does_not_leak_between_traces(unguarded: PythonRunner) -> None:
    code = (
        "import json\n"
        "def eval_counter(trace):\n"
        "    seen = getattr(json, 'SEEN', [])\n"
        "    seen.append(trace['trace_id'])\n"
        "    json.SEEN = seen\n"
        "    return len(seen) == 1, ','.join(seen)\n"
    )
    traces = [{"trace_id": f"t{i}", "data": {"trace_id": f"t{i}"}} for i in range(12)]
    batch = unguarded.execute_batch(code, None, traces, timeout=2000)
    assert [r.reason for r in batch.results] == [f"t{i}" for i in range(12)]
    assert all(r.passed for r in batch.results)


_FORGE = (
    "import json\n"
    "sys = json.codecs.sys\n"
    "os = sys.modules['os']\n"
    "struct = sys.modules['importlib'].import_module('struct')\n"
    "def eval_forge(trace):\n"
    "    body = {body}\n"
    "    for fd in range(3, 32):\n"
    "        try:\n"
    "            os.write(fd, struct.pack('>I', len(body)) + body)\n"
    "        except OSError:\n"
    "            pass\n"
    "    os._exit(0)\n"
)


def test_a_forged_result_frame_cannot_end_or_steer_a_batch(unguarded: PythonRunner) -> None:
    """A child that writes its own frame decides only its own verdict, never the protocol's."""
    forged = (
        b'{"status":"ok","value":{"t":"tuple","len":2,"items":[{"t":"bool","v":true},'
        b'{"t":"str","v":"forged"}]},"done":true,"op":"done","id":0,"index":0,"elapsed_ms":-5}'
    )
    # enough traces that each worker's chunk holds several: a forged "done" in a chunk's first
    # result would otherwise end the chunk early
    traces = [{"trace_id": f"t{i}", "data": {"i": i}} for i in range(60)]
    batch = unguarded.execute_batch(_FORGE.format(body=repr(forged)), None, traces)
    assert [r.trace_id for r in batch.results] == [f"t{i}" for i in range(60)]
    assert [r.reason for r in batch.results] == ["forged"] * 60
    assert all(r.execution_time_ms >= 0 for r in batch.results)
    test_pool_is_healthy_after_the_suite(unguarded)


def test_a_malformed_result_frame_is_a_sandbox_failure(unguarded: PythonRunner) -> None:
    traces = [{"trace_id": f"t{i}", "data": {}} for i in range(3)]
    batch = unguarded.execute_batch(_FORGE.format(body=repr(b"\xff\xfe{{not json")), None, traces)
    assert [r.outcome for r in batch.results] == [Outcome.CRASHED] * 3
    assert all("malformed result" in (r.error or "") for r in batch.results), batch.results
    test_pool_is_healthy_after_the_suite(unguarded)


def test_a_result_frame_claiming_gigabytes_is_refused_unread(unguarded: PythonRunner) -> None:
    """The zygote checks a child's frame header against its output limit before reading on."""
    code = (
        "import json\nsys = json.codecs.sys\nos = sys.modules['os']\n"
        "struct = sys.modules['importlib'].import_module('struct')\n"
        "def eval_big(trace):\n"
        "    for fd in range(3, 32):\n"
        "        try:\n"
        "            os.write(fd, struct.pack('>I', 2**31) + b'{' * 4096)\n"
        "        except OSError:\n"
        "            pass\n"
        "    while True:\n"
        "        pass\n"
    )
    traces = [{"trace_id": f"t{i}", "data": {}} for i in range(2)]
    started = time.monotonic()
    batch = unguarded.execute_batch(code, None, traces, timeout=5000)
    assert [r.outcome for r in batch.results] == [Outcome.CRASHED] * 2
    assert all("size limit" in (r.error or "") for r in batch.results), batch.results
    assert time.monotonic() - started < 4, "the zygote waited for the child's deadline"
    test_pool_is_healthy_after_the_suite(unguarded)


_SNOOP = (
    "import json\n"
    "sys = json.codecs.sys\n"
    "gc = sys.modules['gc']\n"
    "def eval_snoop(trace):\n"
    "    m = trace['look_for']\n"
    "    bad = [m + '-code', m + '-trace-'] + [\n"
    "        m + '-own-' + str(j) for j in range(trace['n']) if j != trace['i']]\n"
    "    mine = {id(b) for b in bad}\n"
    "    def hit(text):\n"
    "        return any(b in text for b in bad)\n"
    "    found = []\n"
    "    for obj in gc.get_objects() + gc.get_referents(*gc.get_objects()):\n"
    "        if id(obj) in mine:\n"
    "            continue\n"
    "        if isinstance(obj, str) and hit(obj):\n"
    "            found.append(obj[:60])\n"
    "        elif isinstance(obj, (bytes, bytearray)) and hit(obj.decode('utf-8', 'replace')):\n"
    "            found.append(bytes(obj[:60]))\n"
    "        elif type(obj).__name__ == 'code' and any(\n"
    "                isinstance(c, str) and hit(c) for c in obj.co_consts):\n"
    "            found.append(obj.co_name)\n"
    "    frame = sys._getframe().f_back\n"
    "    while frame is not None:\n"
    "        for value in list(frame.f_locals.values()):\n"
    "            if hit(repr(value)[:100000]):\n"
    "                found.append(frame.f_code.co_name)\n"
    "        frame = frame.f_back\n"
    "    return not found, repr(found)[:300]\n"
)


def test_a_child_finds_nothing_of_other_requests_or_other_traces() -> None:
    """What a later child inherits from the zygote holds no earlier request's code or data.

    One worker serves everything here, so the snooping child is forked from the very zygote
    that ran the earlier requests. Within a batch, a trace's child cannot see its siblings.
    """
    marker = "xq-" + "7c1e9a"  # never a literal of the snooping code
    runner = PythonRunner(
        policy=Policy(static_analysis=False),
        settings=Settings(pool_min_size=1, pool_max_size=1),
    )
    try:
        earlier = runner.execute(f"TOKEN = '{marker}-code'\nprint(TOKEN[:3])")
        assert earlier.stdout == "xq-\n"
        data = [{"trace_id": f"d{i}", "data": {"secret": f"{marker}-trace-{i}"}} for i in range(4)]
        runner.execute_batch("def eval_x(trace):\n    return True, 'ok'\n", None, data)
        probes = [{"trace_id": f"p{i}", "data": {"look_for": marker, "i": i, "n": 6,
                                                 "own": f"{marker}-own-{i}"}}
                  for i in range(6)]  # fmt: skip
        batch = runner.execute_batch(_SNOOP, None, probes, timeout=5000)
        for result in batch.results:
            assert result.outcome is Outcome.PASSED, (result.trace_id, result.reason, result.error)
    finally:
        runner.close()


def test_an_execution_holds_no_descriptor_but_its_own(unguarded: PythonRunner) -> None:
    """Spares are forked while other children run: none may inherit a pipe of another
    execution (its result could be read or forged). Back-to-back runs exercise that path."""
    code = (
        "import json\n"
        "os = json.codecs.sys.modules['os']\n"
        "print(sorted(int(fd) for fd in os.listdir('/proc/self/fd')))\n"
    )
    for _ in range(20):
        result = unguarded.execute(code)
        fds = json.loads(result.stdout)
        # stdin/stdout/stderr (/dev/null), the result pipe, and the listing's own descriptor
        assert len(fds) == 5 and fds[:3] == [0, 1, 2], result.stdout


def test_a_forged_frame_with_wrong_types_is_only_its_own_odd_result(
    unguarded: PythonRunner,
) -> None:
    """Every field of a child's frame is checked on the host: wrong types, absurd sizes and
    non-finite numbers neither crash the worker nor cost the host memory."""
    forged = (
        b'{"status":"ok","cpu_ms":"x","maxrss_kb":[1],"elapsed_ms":1e999,"stdout":5,'
        b'"value":{"t":"tuple","len":2147483647,"items":{"a":1}},"traceback":{}}'
    )
    traces = [{"trace_id": f"t{i}", "data": {}} for i in range(3)]
    batch = unguarded.execute_batch(_FORGE.format(body=repr(forged)), None, traces)
    assert [r.outcome for r in batch.results] == [Outcome.SPEC_VIOLATION] * 3
    assert all(r.cpu_ms == 0.0 and r.stdout == "" for r in batch.results)
    test_pool_is_healthy_after_the_suite(unguarded)


def test_the_scientific_tmp_is_sealed_wherever_the_runtime_lives() -> None:
    """The scientific jail's /tmp (matplotlib's cache) is sealed read-only by the zygote, also
    when the runtime itself is mounted under /tmp (a checkout in /tmp): nothing written there
    by one execution can reach the next."""
    runner = PythonRunner(
        policy=Policy.scientific(static_analysis=False),
        settings=Settings(pool_min_size=1, pool_max_size=2),  # a core and a scientific worker
    )
    code = (
        "import json, pandas\n"
        "os = json.codecs.sys.modules['os']\n"
        "tried = []\n"
        "for path in ('/tmp/evaljail-leak', '/tmp/' + sorted(os.listdir('/tmp'))[0] + '/x'):\n"
        "    try:\n"
        "        os.close(os.open(path, os.O_CREAT | os.O_WRONLY))\n"
        "        tried.append('WROTE')\n"
        "    except OSError as exc:\n"
        "        tried.append(type(exc).__name__)\n"
        "try:\n"
        "    os.chmod('/tmp', 0o777)\n"
        "    tried.append('CHMOD')\n"
        "except OSError as exc:\n"
        "    tried.append(type(exc).__name__)\n"
        "print(tried)\n"
    )
    try:
        result = runner.execute(code)
        assert result.outcome is Outcome.OK, (result.error, result.stderr)
        assert "WROTE" not in result.stdout and "CHMOD" not in result.stdout, result.stdout
        assert "PermissionError" in result.stdout
    finally:
        runner.close()


@pytest.mark.parametrize(
    ("payload_id", "error"),
    [
        ("pandas-read-pickle-file-like", "PermissionError: unpickling is not allowed"),
        ("numpy-load-allow-pickle", "UnpicklingError"),  # numpy wraps the PermissionError
    ],
)
def test_unpickling_is_refused_in_the_jail_without_static_analysis(
    payload_id: str, error: str
) -> None:
    """The zygote's audit hook refuses every global a pickle names, however the allowed
    libraries reach an unpickler (here a file-like object static analysis cannot see)."""
    code = {pid: text for pid, text, _ in STATIC_PAYLOADS}[payload_id]
    runner = PythonRunner(
        policy=Policy.scientific(static_analysis=False),
        settings=Settings(pool_min_size=1, pool_max_size=2),
    )
    try:
        result = runner.execute(code)
        assert SENTINEL not in result.stdout, result.stdout
        assert result.outcome is Outcome.ERROR, (result.outcome, result.error)
        assert (result.error or "").startswith(error), result.error
    finally:
        runner.close()


_ANSWER_THEN_LINGER = (
    "import json\n"
    "sys = json.codecs.sys\n"
    "os = sys.modules['os']\n"
    "imp = sys.modules['importlib'].import_module\n"
    "struct, time = imp('struct'), imp('time')\n"
    "body = json.dumps({'status': 'ok', 'stdout': f'pid {os.getpid()}', 'stderr': ''}).encode()\n"
    "for fd in range(3, 32):\n"
    "    try:\n"
    "        os.write(fd, struct.pack('>I', len(body)) + body)\n"
    "    except OSError:\n"
    "        pass\n"
    "time.sleep(20)  # asleep: its CPU limit never fires, its deadline is far away\n"
)

_PROCESS_STATE = (
    "import json\n"
    "os = json.codecs.sys.modules['os']\n"
    "try:\n"
    "    print(json.codecs.open('/proc/{pid}/stat').read().rsplit(')', 1)[1].split()[0])\n"
    "except OSError:\n"
    "    print('gone')\n"
)


def test_an_execution_that_answers_early_does_not_outlive_its_answer() -> None:
    """A child may write its own result frame and then try to stay: it would share the worker
    with the executions that follow (other tenants') and could meddle with them. The zygote
    kills it as soon as it has its answer."""
    with PythonRunner(
        policy=Policy(static_analysis=False),
        settings=Settings(pool_min_size=1, pool_max_size=1),  # the next run: the same zygote
    ) as runner:
        started = time.monotonic()
        lingering = runner.execute(_ANSWER_THEN_LINGER, timeout=20_000)
        assert time.monotonic() - started < 5
        assert lingering.outcome is Outcome.OK and lingering.stdout.startswith("pid "), lingering
        pid = int(lingering.stdout.split()[1])
        # SIGKILL is sent right after the answer is relayed; the next execution, on the other
        # core, may still see the dying process running its exit ('R') for a moment. It slept
        # 20 s, so anything but a kill leaves it 'S' for far longer than this bound.
        seen = []
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            state = runner.execute(_PROCESS_STATE.replace("{pid}", str(pid)))
            assert state.outcome is Outcome.OK, state.error
            seen.append(state.stdout.strip())
            if seen[-1] in {"gone", "Z"}:
                break
        assert seen[-1] in {"gone", "Z"}, f"pid {pid} is still {seen[-1]!r} ({seen[:5]}...)"
        assert "S" not in seen, seen  # never seen asleep again: killed, not just running on
