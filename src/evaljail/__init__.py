"""evaljail: run untrusted Python eval functions against LLM-agent traces, safely and fast.

>>> from evaljail import PythonRunner
>>> with PythonRunner(timeout=5000) as runner:
...     runner.execute("print(2 + 2)").output
'4\\n'

The public surface is this module's ``__all__``; everything else is internal.
"""

from ._version import __version__
from .errors import EvaljailError
from .policy import Limits, Policy, Profile
from .policy.contract import ContractCheck, check_return
from .runner import MockBackend, PythonRunner
from .sandboxes import (
    ExecResult,
    FileEntry,
    Sandbox,
    SandboxInfo,
    SandboxLimits,
    SandboxNamespace,
    get_sandbox,
)
from .settings import Settings
from .types import BatchExecutionResult, ExecutionResult, Outcome, TraceResult, Violation

__all__ = [
    "BatchExecutionResult",
    "ContractCheck",
    "EvaljailError",
    "ExecResult",
    "ExecutionResult",
    "FileEntry",
    "Limits",
    "MockBackend",
    "Outcome",
    "Policy",
    "Profile",
    "PythonRunner",
    "Sandbox",
    "SandboxInfo",
    "SandboxLimits",
    "SandboxNamespace",
    "Settings",
    "TraceResult",
    "Violation",
    "__version__",
    "check_return",
    "get_sandbox",
]
