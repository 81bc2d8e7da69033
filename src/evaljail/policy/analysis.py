"""Static analysis (layer 1). PLACEHOLDER: parses only; the full rule set is being written."""

from __future__ import annotations

import ast
from dataclasses import dataclass

from ..errors import SourceTooLargeError
from ..types import Violation
from ._policy import Policy

__all__ = ["AnalysisReport", "analyze"]


@dataclass(frozen=True, slots=True, kw_only=True)
class AnalysisReport:
    """What static analysis found in one source."""

    violations: tuple[Violation, ...]
    tree: ast.Module | None  #: None when the source does not parse
    imports: frozenset[str]  #: every module name the source imports (full dotted names)

    @property
    def ok(self) -> bool:
        return not self.violations


def analyze(source: str | bytes, policy: Policy | None = None) -> AnalysisReport:
    policy = policy or Policy()
    if isinstance(source, bytes):
        source = source.decode("utf-8", errors="replace")
    if len(source.encode("utf-8", errors="replace")) > policy.limits.max_source_bytes:
        raise SourceTooLargeError("source too large")
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        v = Violation(
            rule_id="syntax-error", line=exc.lineno or 0, col=exc.offset or 0, message=str(exc)
        )
        return AnalysisReport(violations=(v,), tree=None, imports=frozenset())
    return AnalysisReport(violations=(), tree=tree, imports=frozenset())
