"""The eval contract: what an eval must return, and which function is the eval."""

from __future__ import annotations

import ast
from typing import Any, NamedTuple

import pytest

from evaljail.errors import EvalFunctionNotFoundError
from evaljail.policy.contract import (
    NON_BOOL_PASSED,
    NON_STR_REASON,
    NOT_2_TUPLE,
    check_return,
    eval_function_names,
    find_eval_function,
)


class _Verdict(NamedTuple):
    passed: bool
    reason: str


class _Int(int):
    pass


class _Str(str):
    pass


class _Decoded:
    """A value decoded from the jail that names its original type."""

    evaljail_type_name = "numpy.bool_"


# -- check_return -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "passed", "reason"),
    [
        pytest.param((True, "x"), True, "x", id="true-with-reason"),
        pytest.param((False, ""), False, "", id="false-empty-reason"),
        pytest.param((True, ""), True, "", id="true-empty-reason"),
        pytest.param((False, "line\nbreak ✓"), False, "line\nbreak ✓", id="unicode-reason"),
    ],
)
def test_valid_returns(value: Any, passed: bool, reason: str) -> None:
    check = check_return(value)
    assert check.ok
    assert check.violation is None
    assert check.message is None
    assert check.passed is passed
    assert check.reason == reason


@pytest.mark.parametrize(
    ("value", "violation", "type_in_message"),
    [
        pytest.param(True, NOT_2_TUPLE, "bool", id="bare-true"),
        pytest.param(False, NOT_2_TUPLE, "bool", id="bare-false"),
        pytest.param(None, NOT_2_TUPLE, "NoneType", id="none"),
        pytest.param("passed", NOT_2_TUPLE, "str", id="bare-str"),
        pytest.param([True, "x"], NOT_2_TUPLE, "list", id="list"),
        pytest.param({"passed": True, "reason": ""}, NOT_2_TUPLE, "dict", id="dict"),
        pytest.param(_Verdict(True, "x"), NOT_2_TUPLE, "_Verdict", id="namedtuple"),
        pytest.param((), NOT_2_TUPLE, "length 0", id="empty-tuple"),
        pytest.param((True,), NOT_2_TUPLE, "length 1", id="1-tuple"),
        pytest.param((True, "x", 1), NOT_2_TUPLE, "length 3", id="3-tuple"),
        pytest.param((1, "x"), NON_BOOL_PASSED, "int", id="one-as-passed"),
        pytest.param((0, "x"), NON_BOOL_PASSED, "int", id="zero-as-passed"),
        pytest.param(("yes", "x"), NON_BOOL_PASSED, "str", id="yes-as-passed"),
        pytest.param((None, "x"), NON_BOOL_PASSED, "NoneType", id="none-as-passed"),
        pytest.param((1.0, "x"), NON_BOOL_PASSED, "float", id="float-as-passed"),
        pytest.param((_Int(1), "x"), NON_BOOL_PASSED, "_Int", id="int-subclass-as-passed"),
        pytest.param((_Decoded(), "x"), NON_BOOL_PASSED, "numpy.bool_", id="decoded-type-name"),
        pytest.param((True, None), NON_STR_REASON, "NoneType", id="none-reason"),
        pytest.param((False, 123), NON_STR_REASON, "int", id="int-reason"),
        pytest.param((True, b"x"), NON_STR_REASON, "bytes", id="bytes-reason"),
        pytest.param((True, ["x"]), NON_STR_REASON, "list", id="list-reason"),
        pytest.param((True, _Str("x")), NON_STR_REASON, "_Str", id="str-subclass-reason"),
        pytest.param((1, None), NON_BOOL_PASSED, "int", id="verdict-checked-before-reason"),
    ],
)
def test_spec_violations(value: Any, violation: str, type_in_message: str) -> None:
    check = check_return(value)
    assert not check.ok
    assert check.violation == violation
    assert check.message is not None
    assert type_in_message in check.message
    assert check.passed is None
    assert check.reason is None


def test_bool_cannot_be_subclassed_so_true_and_false_are_the_only_verdicts() -> None:
    with pytest.raises(TypeError):
        type("MyBool", (bool,), {})


def test_numpy_bool_is_not_a_bool() -> None:
    np = pytest.importorskip("numpy")
    check = check_return((np.bool_(True), "x"))
    assert check.violation == NON_BOOL_PASSED
    assert check.message is not None
    assert "bool" in check.message


# -- find_eval_function -----------------------------------------------------------------------


def _tree(code: str) -> ast.Module:
    return ast.parse(code)


def test_one_eval_function() -> None:
    tree = _tree("import json\ndef helper(x):\n    pass\ndef eval_ok(trace):\n    return True, ''")
    assert find_eval_function(tree) == "eval_ok"
    assert eval_function_names(tree) == ["eval_ok"]


def test_async_eval_function_is_found() -> None:
    assert find_eval_function(_tree("async def eval_a(trace):\n    pass")) == "eval_a"


def test_several_eval_functions_need_a_name() -> None:
    tree = _tree("def eval_a(t):\n    pass\ndef eval_b(t):\n    pass")
    with pytest.raises(EvalFunctionNotFoundError) as info:
        find_eval_function(tree)
    assert info.value.details["candidates"] == ["eval_a", "eval_b"]
    assert "eval_a" in str(info.value)
    assert find_eval_function(tree, "eval_b") == "eval_b"


def test_no_eval_function() -> None:
    tree = _tree("def check(trace):\n    return True, ''")
    with pytest.raises(EvalFunctionNotFoundError) as info:
        find_eval_function(tree)
    assert info.value.details["candidates"] == []


def test_named_function_may_be_any_top_level_function() -> None:
    tree = _tree("def check(trace):\n    return True, ''\ndef eval_a(t):\n    pass")
    assert find_eval_function(tree, "check") == "check"


@pytest.mark.parametrize(
    "code",
    [
        pytest.param("def eval_a(t):\n    pass", id="missing"),
        pytest.param(
            "class C:\n    def eval_b(self, t):\n        pass\ndef eval_a(t):\n    pass",
            id="method",
        ),
        pytest.param(
            "def outer():\n    def eval_b(t):\n        pass\ndef eval_a(t):\n    pass", id="nested"
        ),
        pytest.param("eval_b = lambda t: (True, '')\ndef eval_a(t):\n    pass", id="lambda"),
    ],
)
def test_named_function_must_be_a_top_level_def(code: str) -> None:
    with pytest.raises(EvalFunctionNotFoundError) as info:
        find_eval_function(_tree(code), "eval_b")
    assert info.value.details["function_name"] == "eval_b"
    assert "eval_a" in str(info.value)  # names what is there


def test_nested_and_method_eval_functions_are_not_candidates() -> None:
    code = "class C:\n    def eval_m(self, t):\n        pass\ndef f():\n    def eval_n(t):\n        pass"
    assert eval_function_names(_tree(code)) == []
