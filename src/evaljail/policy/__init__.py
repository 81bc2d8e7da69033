"""Layer 1: what code is allowed (policy, static analysis) and what an eval must return."""

from ._policy import (
    ALWAYS_BLOCKED_BUILTINS,
    ALWAYS_BLOCKED_MODULES,
    CORE_IMPORTS,
    SCIENTIFIC_IMPORTS,
    Limits,
    Policy,
    Profile,
)
from .analysis import AnalysisReport, analyze

__all__ = [
    "ALWAYS_BLOCKED_BUILTINS",
    "ALWAYS_BLOCKED_MODULES",
    "CORE_IMPORTS",
    "SCIENTIFIC_IMPORTS",
    "AnalysisReport",
    "Limits",
    "Policy",
    "Profile",
    "analyze",
]
