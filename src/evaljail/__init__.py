"""evaljail: run untrusted Python eval functions against LLM-agent traces, safely and fast.

The public surface is this module's ``__all__``; everything else is internal.
"""

from .errors import EvaljailError
from .policy import Limits, Policy, Profile
from .settings import Settings
from .types import BatchExecutionResult, ExecutionResult, Outcome, TraceResult, Violation

__version__ = "0.1.0"

__all__ = [
    "BatchExecutionResult",
    "EvaljailError",
    "ExecutionResult",
    "Limits",
    "Outcome",
    "Policy",
    "Profile",
    "Settings",
    "TraceResult",
    "Violation",
    "__version__",
]
