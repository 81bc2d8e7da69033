"""The one exception tree of evaljail.

A user's code failing is never an exception: it is a value (an :class:`~evaljail.types.Outcome`
on a result). These exceptions mean that *evaljail itself* could not do what was asked::

    EvaljailError
    ├── ConfigurationError          invalid settings or arguments (names the variable)
    ├── PolicyError                 a policy or request that cannot be honoured
    │   ├── SourceTooLargeError     source over the size limit
    │   ├── SourceTooComplexError   source nested too deeply to analyse safely
    │   └── EvalFunctionNotFoundError  no (or an ambiguous) eval_* function
    ├── IsolationError              the host cannot provide the required confinement
    │   └── IsolationUnavailableError  strict mode and a layer is missing
    ├── PoolError                   the worker pool failed
    │   ├── PoolClosedError         the pool is shut down
    │   ├── QueueFullError          the bounded queue is full (retry later)
    │   └── WorkerCrashedError      a worker died or stopped answering
    ├── RemoteError                 the remote executor failed
    │   └── RemoteUnavailableError  nothing listens at the executor URL
    └── SandboxError                a named sandbox failed
        ├── SandboxNotFoundError    no sandbox with that id
        │   └── SandboxFileNotFoundError  no such file in the sandbox
        ├── SandboxLimitError       too many sandboxes, or disk quota exhausted
        └── SandboxPathError        a file path escapes the workspace

Every class carries a stable ``code`` (used on the wire) and an HTTP ``status``; the service
maps errors with :data:`ERROR_TABLE` and a test checks that every class is in it.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ERROR_TABLE",
    "ConfigurationError",
    "EvalFunctionNotFoundError",
    "EvaljailError",
    "IsolationError",
    "IsolationUnavailableError",
    "PolicyError",
    "PoolClosedError",
    "PoolError",
    "QueueFullError",
    "RemoteError",
    "RemoteUnavailableError",
    "SandboxError",
    "SandboxFileNotFoundError",
    "SandboxLimitError",
    "SandboxNotFoundError",
    "SandboxPathError",
    "SourceTooComplexError",
    "SourceTooLargeError",
    "WorkerCrashedError",
]


class EvaljailError(Exception):
    """Root of every error evaljail raises on purpose."""

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = dict(details or {})


class ConfigurationError(EvaljailError):
    """A setting or argument is invalid; the message names it."""


class PolicyError(EvaljailError):
    """The request cannot be honoured under the policy."""


class SourceTooLargeError(PolicyError):
    """Source code is larger than the configured limit."""


class SourceTooComplexError(PolicyError):
    """Source code is nested too deeply to be analysed safely."""


class EvalFunctionNotFoundError(PolicyError):
    """The source defines no eval function, or several and none was named."""


class IsolationError(EvaljailError):
    """The host cannot confine code as required."""


class IsolationUnavailableError(IsolationError):
    """Strict mode was asked for and a required layer is missing."""


class PoolError(EvaljailError):
    """The worker pool could not run the execution."""


class PoolClosedError(PoolError):
    """The pool has been shut down."""


class QueueFullError(PoolError):
    """The bounded queue is full; retry later."""


class WorkerCrashedError(PoolError):
    """A jailed worker died or stopped answering."""


class RemoteError(EvaljailError):
    """The remote executor answered with an error."""


class RemoteUnavailableError(RemoteError):
    """Nothing answers at the remote executor URL."""


class SandboxError(EvaljailError):
    """A named sandbox operation failed."""


class SandboxNotFoundError(SandboxError):
    """No sandbox with that id exists."""


class SandboxFileNotFoundError(SandboxNotFoundError):
    """No such file or directory in the sandbox's workspace."""


class SandboxLimitError(SandboxError):
    """The sandbox cap or the disk quota is exhausted."""


class SandboxPathError(SandboxError):
    """A path escapes the sandbox workspace or is otherwise invalid."""


#: error class -> (HTTP status, stable wire code). Most specific classes first is not required:
#: lookups walk the MRO, but every concrete class is listed so the mapping is explicit.
ERROR_TABLE: dict[type[EvaljailError], tuple[int, str]] = {
    EvaljailError: (500, "internal_error"),
    ConfigurationError: (400, "invalid_configuration"),
    PolicyError: (422, "policy_error"),
    SourceTooLargeError: (413, "source_too_large"),
    SourceTooComplexError: (422, "source_too_complex"),
    EvalFunctionNotFoundError: (422, "eval_function_not_found"),
    IsolationError: (503, "isolation_error"),
    IsolationUnavailableError: (503, "isolation_unavailable"),
    PoolError: (503, "pool_error"),
    PoolClosedError: (503, "pool_closed"),
    QueueFullError: (503, "queue_full"),
    WorkerCrashedError: (503, "worker_crashed"),
    RemoteError: (502, "remote_error"),
    RemoteUnavailableError: (502, "remote_unavailable"),
    SandboxError: (500, "sandbox_error"),
    SandboxNotFoundError: (404, "sandbox_not_found"),
    SandboxFileNotFoundError: (404, "sandbox_file_not_found"),
    SandboxLimitError: (429, "sandbox_limit"),
    SandboxPathError: (400, "sandbox_path_invalid"),
}


def status_and_code(exc: EvaljailError) -> tuple[int, str]:
    """The HTTP status and stable code for ``exc`` (walks the class hierarchy)."""
    for cls in type(exc).__mro__:
        if cls in ERROR_TABLE:
            return ERROR_TABLE[cls]
    return ERROR_TABLE[EvaljailError]
