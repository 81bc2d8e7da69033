"""What one eval did over many traces: counts by outcome, errors by type, time per trace."""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..types import Outcome, TraceResult
from .metrics import Verdict

__all__ = ["RunSummary", "summarize", "verdicts"]


def _percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values (0 for none)."""
    if not sorted_values:
        return 0.0
    rank = min(max(1, math.ceil(fraction * len(sorted_values))), len(sorted_values))
    return sorted_values[rank - 1]


@dataclass(frozen=True, slots=True, kw_only=True)
class RunSummary:
    """Counts over the results of one batch (DESIGN section 1 vocabulary)."""

    traces: int
    passed: int
    failed: int
    errors: dict[str, int] = field(default_factory=dict)  #: exception type -> count
    spec_violations: dict[str, int] = field(default_factory=dict)  #: broken rule -> count
    outcomes: dict[str, int] = field(default_factory=dict)  #: every outcome -> count
    calls_with_stdout: int = 0
    time_ms_mean: float = 0.0
    time_ms_p50: float = 0.0
    time_ms_p95: float = 0.0
    time_ms_max: float = 0.0
    cpu_ms_total: float = 0.0

    @property
    def errored(self) -> int:
        """Results without a verdict (errors, timeouts, violations, rejections ...)."""
        return self.traces - self.passed - self.failed

    def to_dict(self) -> dict[str, Any]:
        return {
            "traces": self.traces,
            "passed": self.passed,
            "failed": self.failed,
            "errors": dict(self.errors),
            "spec_violations": dict(self.spec_violations),
            "outcomes": dict(self.outcomes),
            "calls_with_stdout": self.calls_with_stdout,
            "time_ms": {
                "mean": self.time_ms_mean,
                "p50": self.time_ms_p50,
                "p95": self.time_ms_p95,
                "max": self.time_ms_max,
            },
            "cpu_ms_total": self.cpu_ms_total,
        }


def summarize(results: Iterable[TraceResult]) -> RunSummary:
    """Count ``results``. An error is keyed by its exception type; an execution that ended
    without one (timeout, memory, crash ...) is keyed by its outcome."""
    items = list(results)
    errors: Counter[str] = Counter()
    violations: Counter[str] = Counter()
    outcomes: Counter[str] = Counter(r.outcome.value for r in items)
    for r in items:
        if r.outcome is Outcome.SPEC_VIOLATION:
            violations[r.spec_violation or "unknown"] += 1
        elif r.outcome is Outcome.ERROR:
            errors[r.error_type or "Error"] += 1
        elif not r.outcome.succeeded:
            errors[r.outcome.value] += 1
    times = sorted(r.execution_time_ms for r in items)
    return RunSummary(
        traces=len(items),
        passed=outcomes.get(Outcome.PASSED.value, 0),
        failed=outcomes.get(Outcome.FAILED.value, 0),
        errors=dict(sorted(errors.items())),
        spec_violations=dict(sorted(violations.items())),
        outcomes=dict(sorted(outcomes.items())),
        calls_with_stdout=sum(1 for r in items if r.stdout),
        time_ms_mean=round(statistics.fmean(times), 3) if times else 0.0,
        time_ms_p50=round(_percentile(times, 0.50), 3),
        time_ms_p95=round(_percentile(times, 0.95), 3),
        time_ms_max=round(times[-1], 3) if times else 0.0,
        cpu_ms_total=round(sum(r.cpu_ms for r in items), 3),
    )


def verdicts(results: Iterable[TraceResult]) -> list[Verdict]:
    """The eval's verdict on each trace (``passed`` None when it gave none)."""
    return [
        Verdict(
            trace_id=r.trace_id,
            passed=r.passed if r.outcome in (Outcome.PASSED, Outcome.FAILED) else None,
            reason=r.reason,
        )
        for r in results
    ]
