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
from tests.security.payloads_static import PAYLOADS, SCIENTIFIC_PAYLOADS


def test_table_is_large_and_ids_are_unique() -> None:
    ids = [payload_id for payload_id, _, _ in (*PAYLOADS, *SCIENTIFIC_PAYLOADS)]
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


@pytest.mark.parametrize(
    ("code", "expected_rule"),
    [pytest.param(code, rule, id=payload_id) for payload_id, code, rule in SCIENTIFIC_PAYLOADS],
)
def test_raw_memory_routes_rejected_beyond_the_core_allow_list(
    code: str, expected_rule: str
) -> None:
    """numpy importable: classes may not answer a computed __array_interface__."""
    for policy in (Policy.scientific(), Policy.core(extra_imports={"string"})):
        found = {v.rule_id for v in analyze(code, policy).violations}
        assert expected_rule in found, f"expected {expected_rule}, found {sorted(found)}"


@pytest.mark.parametrize(
    "code",
    [
        pytest.param(code, id=payload_id)
        for payload_id, code, rule in SCIENTIFIC_PAYLOADS
        if "numpy" not in code and "pandas" not in code
    ],
)
def test_attribute_hooks_and_class_factories_stay_allowed_in_the_core_profile(code: str) -> None:
    """json, re, typing ... read no raw memory: AttrDict-style classes and type() are fine."""
    found = {v.rule_id for v in analyze(code, Policy()).violations}
    assert not found & {"attribute-hook", "class-factory"}, sorted(found)


@pytest.mark.parametrize(
    "code",
    [
        "def f(x):\n    return type(x).__name__, type(x) is int, type(x) == int\n",
        "def f(x):\n    return type(x) in (int, float), type(x) not in [str, type(None)]\n",
        "def f(x):\n    return isinstance(x, type), issubclass(type(x), int), f'{type(x)}'\n",
        "def f(x):\n    print(type(x), str(type(x)), repr(type(x)))\n",
        "import numpy as np\ndef f(x):\n    return type(x) == np.ndarray or type(x) is list\n",
        "def f(step):\n    type = step['type']\n    return type.upper(), type == 'tool'\n",
        "class A:\n    def __init__(self):\n        self.x = 1\n    def __repr__(self):\n"
        "        return type(self).__name__\n",
    ],
)
def test_ordinary_uses_of_type_pass_in_the_scientific_profile(code: str) -> None:
    report = analyze(code, Policy.scientific())
    found = {v.rule_id for v in report.violations}
    assert "class-factory" not in found and "attribute-hook" not in found, report.violations


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


def test_guard_constants_mirror_the_policy() -> None:
    from evaljail.policy import CORE_IMPORTS
    from evaljail.policy._rules import ATTRIBUTE_HOOKS, RAW_MEMORY_PROTOCOLS
    from evaljail.worker import guard

    assert guard._CORE_IMPORTS == CORE_IMPORTS
    assert guard._RAW_MEMORY_PROTOCOLS == RAW_MEMORY_PROTOCOLS
    assert guard._ATTRIBUTE_HOOKS == ATTRIBUTE_HOOKS


_PREPARED = (
    "class D(dict):\n"
    "    def __setitem__(self, key, value):\n"
    "        dict.__setitem__(self, NAME if key == 'x' else key, value)\n"
    "class M(type(int)):\n"
    "    @classmethod\n"
    "    def __prepare__(m, name, bases):\n"
    "        return D()\n"
    "class C(metaclass=M):\n"
    "    x = 1\n"
)


@pytest.mark.parametrize(
    ("name", "core", "scientific"),
    [("__array_" + "interface__", False, False), ("__get" + "attr__", True, False)],
)
def test_guarded_build_class_sees_names_a_metaclass_adds(
    name: str, core: bool, scientific: bool
) -> None:
    for imports, allowed in ((["json"], core), (["json", "numpy"], scientific)):
        safe = restricted_builtins(imports, ALWAYS_BLOCKED_BUILTINS)
        namespace = {"__builtins__": safe, "NAME": name}
        if allowed:
            exec(_PREPARED, namespace)
        else:
            with pytest.raises(TypeError, match="may not define"):
                exec(_PREPARED, namespace)


def test_harden_libraries_refuses_dunder_labels_only() -> None:
    import numpy as np
    import pandas as pd
    from matplotlib.spines import Spines

    from evaljail.worker.guard import harden_libraries

    harden_libraries()
    harden_libraries()  # idempotent: one wrapper, not two
    assert not hasattr(pd.core.generic.NDFrame.__getattr__.__wrapped__, "__wrapped__")
    name = "__array_" + "interface__"
    series = pd.Series([{"data": (0, False), "shape": (1,), "typestr": "|u1"}], index=[name])
    assert not hasattr(series, name)
    assert pd.Series([1], index=["a"]).a == 1
    spines = Spines()
    spines[name] = {}
    spines["left"] = 1
    assert not hasattr(spines, name) and spines.left == 1
    assert np.asarray(pd.Series([1, 2])).tolist() == [1, 2]
