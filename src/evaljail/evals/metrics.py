"""Agreement between an eval's verdicts and human feedback (standard library only).

The eval is treated as a binary classifier whose positive class is "the trace is good":

- a verdict is ``passed`` (predicted positive) or ``failed`` (predicted negative); an execution
  that produced no verdict (error, timeout, spec violation ...) is *not* a verdict and is counted
  apart, never as a failure;
- a human rating is ``positive`` (actual positive), ``negative`` (actual negative) or
  ``neutral``; neutral ratings and traces without feedback are counted apart.

Only pairs of a verdict and a positive/negative rating enter the confusion matrix. A
**contradiction** is a ``positive`` rating with a failing verdict or a ``negative`` rating with a
passing one (DESIGN section 1); ``neutral`` never contradicts.

Every trace is counted exactly once, by its rating first:

- rated positive or negative: in the confusion matrix (``compared``) when the eval gave a
  verdict, in ``no_verdict`` when it did not;
- rated neutral: in ``neutral``, verdict or not (``neutral_without_verdict`` says how many had
  none);
- not rated: in ``unrated``, verdict or not (``unrated_without_verdict`` likewise);

so ``compared + no_verdict + neutral + unrated`` is the number of traces. Ratings of trace ids
that have no verdict at all (not in the traces) are listed in ``feedback_not_in_traces``.

Undefined ratios (a zero denominator) are ``None``, never ``0`` or ``NaN``. Cohen's kappa is
computed on the integer counts, so an exact 0 is ``0.0`` (not ``-7.8e-16``).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "AgreementReport",
    "Contradiction",
    "Rating",
    "Verdict",
    "compare",
]


class Rating(enum.StrEnum):
    """A human's judgement of one trace."""

    POSITIVE = "positive"
    NEGATIVE = "negative"
    NEUTRAL = "neutral"


@dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    """What the eval said about one trace. ``passed`` is None when it produced no verdict."""

    trace_id: str
    passed: bool | None
    reason: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Contradiction:
    """A trace on which the eval and the human disagree."""

    trace_id: str
    rating: Rating
    passed: bool
    reason: str | None

    @property
    def kind(self) -> str:
        """``positive_but_failed`` or ``negative_but_passed`` (the fixture summary's names)."""
        return "negative_but_passed" if self.passed else "positive_but_failed"

    def to_dict(self) -> dict[str, Any]:
        return {
            "trace_id": self.trace_id,
            "rating": self.rating.value,
            "passed": self.passed,
            "reason": self.reason,
            "kind": self.kind,
        }


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


@dataclass(frozen=True, slots=True, kw_only=True)
class AgreementReport:
    """The confusion matrix of verdicts against feedback, and what follows from it."""

    true_positive: int = 0  #: passed, rated positive
    false_positive: int = 0  #: passed, rated negative (a contradiction)
    false_negative: int = 0  #: failed, rated positive (a contradiction)
    true_negative: int = 0  #: failed, rated negative
    neutral: int = 0  #: traces rated neutral, with or without a verdict
    neutral_without_verdict: int = 0  #: of ``neutral``, those the eval gave no verdict on
    unrated: int = 0  #: traces without feedback, with or without a verdict
    unrated_without_verdict: int = 0  #: of ``unrated``, those the eval gave no verdict on
    no_verdict: int = 0  #: rated positive/negative, but the eval produced no verdict
    contradictions: tuple[Contradiction, ...] = ()
    #: trace ids that were rated but are not among the verdicts, in feedback order
    feedback_not_in_traces: tuple[str, ...] = ()

    @property
    def traces(self) -> int:
        """Every trace compared, each counted once (see the module docstring)."""
        return self.compared + self.no_verdict + self.neutral + self.unrated

    @property
    def compared(self) -> int:
        """Pairs of a verdict and a positive/negative rating."""
        return self.true_positive + self.false_positive + self.false_negative + self.true_negative

    @property
    def agreements(self) -> int:
        return self.true_positive + self.true_negative

    @property
    def positive_but_failed(self) -> int:
        return self.false_negative

    @property
    def negative_but_passed(self) -> int:
        return self.false_positive

    @property
    def accuracy(self) -> float | None:
        return _ratio(self.agreements, self.compared)

    @property
    def precision(self) -> float | None:
        """Of the traces the eval passed, the share humans rated positive."""
        return _ratio(self.true_positive, self.true_positive + self.false_positive)

    @property
    def recall(self) -> float | None:
        """Of the traces humans rated positive, the share the eval passed."""
        return _ratio(self.true_positive, self.true_positive + self.false_negative)

    @property
    def f1(self) -> float | None:
        """``2tp / (2tp + fp + fn)``: 0.0 (not undefined) when the eval passed nothing but
        humans rated some trace positive, although precision is then undefined."""
        return _ratio(
            2 * self.true_positive,
            2 * self.true_positive + self.false_positive + self.false_negative,
        )

    @property
    def cohen_kappa(self) -> float | None:
        """Agreement corrected for chance: ``(p_o - p_e) / (1 - p_e)``.

        None when nothing was compared or when chance agreement is already total (both raters
        used a single, identical label, so kappa is undefined).
        """
        # (p_o - p_e) / (1 - p_e) multiplied through by n * n: exact integers until the one
        # division, so chance-level agreement is exactly 0.0 rather than float noise.
        n = self.compared
        eval_pos = self.true_positive + self.false_positive
        human_pos = self.true_positive + self.false_negative
        chance = eval_pos * human_pos + (n - eval_pos) * (n - human_pos)  # n * n * p_e
        if n == 0 or chance >= n * n:
            return None
        return (self.agreements * n - chance) / (n * n - chance)

    def to_dict(self) -> dict[str, Any]:
        return {
            "compared": self.compared,
            "agreements": self.agreements,
            "confusion": {
                "true_positive": self.true_positive,
                "false_positive": self.false_positive,
                "false_negative": self.false_negative,
                "true_negative": self.true_negative,
            },
            "traces": self.traces,
            "neutral": self.neutral,
            "neutral_without_verdict": self.neutral_without_verdict,
            "unrated": self.unrated,
            "unrated_without_verdict": self.unrated_without_verdict,
            "no_verdict": self.no_verdict,
            "feedback_not_in_traces": list(self.feedback_not_in_traces),
            "accuracy": self.accuracy,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "cohen_kappa": self.cohen_kappa,
            "contradiction_counts": {
                "positive_but_failed": self.positive_but_failed,
                "negative_but_passed": self.negative_but_passed,
            },
            "contradictions": [c.to_dict() for c in self.contradictions],
        }


def compare(verdicts: Iterable[Verdict], feedback: Mapping[str, Rating | str]) -> AgreementReport:
    """Compare the eval's verdicts with human ``feedback`` (``trace_id -> rating``).

    Contradictions are listed in the order of ``verdicts``. Raises ValueError on a rating that
    is not positive, negative or neutral, and on a trace id with several verdicts (its rating
    would otherwise count once per copy).
    """
    tp = fp = fn = tn = 0
    neutral = neutral_without = unrated = unrated_without = no_verdict = 0
    contradictions: list[Contradiction] = []
    seen: set[str] = set()
    for verdict in verdicts:
        if verdict.trace_id in seen:
            raise ValueError(f"trace {verdict.trace_id!r} has several verdicts")
        seen.add(verdict.trace_id)
        raw = feedback.get(verdict.trace_id)
        if raw is None:
            unrated += 1
            unrated_without += verdict.passed is None
            continue
        rating = Rating(raw)
        if rating is Rating.NEUTRAL:
            neutral += 1
            neutral_without += verdict.passed is None
            continue
        if verdict.passed is None:
            no_verdict += 1
            continue
        positive = rating is Rating.POSITIVE
        if verdict.passed and positive:
            tp += 1
        elif verdict.passed:
            fp += 1
        elif positive:
            fn += 1
        else:
            tn += 1
        if verdict.passed != positive:
            contradictions.append(
                Contradiction(
                    trace_id=verdict.trace_id,
                    rating=rating,
                    passed=verdict.passed,
                    reason=verdict.reason,
                )
            )
    not_in_traces: list[str] = []
    for trace_id, raw in feedback.items():
        if trace_id not in seen:
            Rating(raw)  # an invalid rating is refused wherever it is
            not_in_traces.append(trace_id)
    return AgreementReport(
        true_positive=tp,
        false_positive=fp,
        false_negative=fn,
        true_negative=tn,
        neutral=neutral,
        neutral_without_verdict=neutral_without,
        unrated=unrated,
        unrated_without_verdict=unrated_without,
        no_verdict=no_verdict,
        contradictions=tuple(contradictions),
        feedback_not_in_traces=tuple(not_in_traces),
    )
