"""Layer 1 alone: every escape payload is rejected by static analysis with its rule id.

At the end, the run-time guard's own checks (``worker/guard.py``), in process.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from evaljail.policy import ALWAYS_BLOCKED_BUILTINS, Policy
from evaljail.policy.analysis import analyze
from evaljail.worker.guard import restricted_builtins
from tests.security.payloads_static import PAYLOADS


def test_table_is_large_and_ids_are_unique() -> None:
    ids = [payload_id for payload_id, _, _ in PAYLOADS]
    assert len(ids) >= 80
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize(
    ("code", "expected_rule"),
    [pytest.param(code, rule, id=payload_id) for payload_id, code, rule in PAYLOADS],
)
def test_static_analysis_rejects_payload(code: str, expected_rule: str) -> None:
    report = analyze(code, Policy())
    found = {v.rule_id for v in report.violations}
    assert not report.ok
    assert expected_rule in found, f"expected {expected_rule}, found {sorted(found)}"


@pytest.mark.parametrize(
    ("code", "expected_rule"),
    [pytest.param(code, rule, id=payload_id) for payload_id, code, rule in PAYLOADS],
)
def test_payload_still_rejected_under_scientific_profile(code: str, expected_rule: str) -> None:
    """A larger allow-list must not open any of these doors."""
    report = analyze(code, Policy.scientific())
    assert expected_rule in {v.rule_id for v in report.violations}


# -- the run-time guard (worker/guard.py), in this process --------------------------------------


class _SneakyName(str):
    """A str subclass that lies to the checks a guard might make with str methods."""

    def startswith(self, *args: object) -> bool:  # type: ignore[override]
        return False

    def endswith(self, *args: object) -> bool:  # type: ignore[override]
        return False

    def __eq__(self, other: object) -> bool:
        return False

    __hash__ = str.__hash__


@pytest.mark.parametrize("function", ["getattr", "hasattr", "setattr", "delattr"])
def test_guarded_attribute_functions_see_through_str_subclasses(function: str) -> None:
    safe = restricted_builtins(["json"], ALWAYS_BLOCKED_BUILTINS)
    args = (json.dumps, _SneakyName("__globals__"), *((1,) if function == "setattr" else ()))
    with pytest.raises(AttributeError, match="dunder attribute '__globals__'"):
        safe[function](*args)
    assert safe["getattr"](json, _SneakyName("dumps")) is json.dumps


def test_unpickling_hook_refuses_every_global() -> None:
    # In a child process: an audit hook cannot be removed from the process that adds it.
    code = (
        "import pickle, sys\n"
        "from evaljail.worker.guard import refuse_unpickling\n"
        "sys.addaudithook(refuse_unpickling)\n"
        "assert pickle.loads(pickle.dumps([1, 'a', {'b': 2.0}])) == [1, 'a', {'b': 2.0}]\n"
        "for loads in (pickle.loads, pickle._loads):\n"
        "    try:\n"
        "        loads(b'cbuiltins\\nexec\\n(S\"print(1)\"\\ntR.')\n"
        "    except PermissionError as exc:\n"
        "        assert 'builtins.exec' in str(exc), exc\n"
        "    else:\n"
        "        raise SystemExit('unpickled a global')\n"
        "print('refused')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert (done.returncode, done.stdout) == (0, "refused\n"), done.stderr
