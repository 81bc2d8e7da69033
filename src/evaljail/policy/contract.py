"""The eval contract: which function is the eval, and what it must return.

An eval is ``eval_<name>(trace: dict) -> tuple[bool, str]``. Anything else returned is a
*spec violation*, reported by name with the offending value's type, never coerced.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Any

from ..errors import EvalFunctionNotFoundError

__all__ = [
    "NON_BOOL_PASSED",
    "NON_STR_REASON",
    "NOT_2_TUPLE",
    "ContractCheck",
    "check_return",
    "eval_function_names",
    "find_eval_function",
]

NOT_2_TUPLE = "not_2_tuple"  #: not a tuple at all, or a tuple of the wrong length
NON_BOOL_PASSED = "non_bool_passed"  #: verdict is 1, "yes", None ... instead of a real bool
NON_STR_REASON = "non_str_reason"  #: reason is None, 123 ... instead of a str


@dataclass(frozen=True, slots=True, kw_only=True)
class ContractCheck:
    """The verdict on one returned value."""

    passed: bool | None = None
    reason: str | None = None
    violation: str | None = None  #: one of the constants above, or None when the value is valid
    message: str | None = None  #: human-readable explanation of the violation

    @property
    def ok(self) -> bool:
        return self.violation is None


def _type_name(value: Any) -> str:
    """The name of ``value``'s type; values decoded from the jail may carry their own."""
    name = getattr(value, "evaljail_type_name", None)
    return name if isinstance(name, str) else type(value).__name__


def check_return(value: Any) -> ContractCheck:
    """Validate what an eval returned. Order of checks: shape, verdict, reason."""
    if type(value) is not tuple:
        return ContractCheck(
            violation=NOT_2_TUPLE,
            message=f"eval must return a (bool, str) tuple, got {_type_name(value)}",
        )
    if len(value) != 2:
        return ContractCheck(
            violation=NOT_2_TUPLE,
            message=f"eval must return a (bool, str) tuple, got a tuple of length {len(value)}",
        )
    passed, reason = value
    if type(passed) is not bool:
        return ContractCheck(
            violation=NON_BOOL_PASSED,
            message=f"passed must be a bool (True or False), got {_type_name(passed)}",
        )
    if type(reason) is not str:
        return ContractCheck(
            violation=NON_STR_REASON,
            message=f'reason must be a str (use "" for none), got {_type_name(reason)}',
        )
    return ContractCheck(passed=passed, reason=reason)


def eval_function_names(tree: ast.Module) -> list[str]:
    """Top-level function definitions named ``eval_*``, in source order."""
    return [
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.name.startswith("eval_")
    ]


def _top_level_functions(tree: ast.Module) -> list[str]:
    return [n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]


def find_eval_function(tree: ast.Module, function_name: str | None = None) -> str:
    """The name of the function to call.

    With ``function_name`` it must be a top-level function of the source. Without, the source
    must define exactly one ``eval_*`` function.
    """
    if function_name:
        if function_name in _top_level_functions(tree):
            return function_name
        candidates = eval_function_names(tree)
        hint = f" (eval functions here: {', '.join(candidates)})" if candidates else ""
        raise EvalFunctionNotFoundError(
            f"function {function_name!r} is not defined at the top level of the code{hint}",
            details={"function_name": function_name, "candidates": candidates},
        )
    names = eval_function_names(tree)
    if not names:
        raise EvalFunctionNotFoundError(
            "no eval function found: define a top-level function named eval_<something>"
            "(trace) that returns (bool, str)",
            details={"candidates": []},
        )
    if len(names) > 1:
        raise EvalFunctionNotFoundError(
            f"several eval functions found ({', '.join(names)}): name the one to run",
            details={"candidates": names},
        )
    return names[0]
