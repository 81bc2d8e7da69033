"""Evaluating evals: agreement with human feedback, run summaries and input files."""

from .metrics import AgreementReport, Contradiction, Rating, Verdict, compare

__all__ = ["AgreementReport", "Contradiction", "Rating", "Verdict", "compare"]
