"""Environment -> one validated, immutable settings object.

Nothing else in evaljail reads the environment. Every variable is optional; an invalid value
raises :class:`~evaljail.errors.ConfigurationError` naming the variable. This module uses only
the standard library so that ``import evaljail`` stays light and the core may depend on it.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal

from .errors import ConfigurationError

__all__ = ["ENV_VARS", "IsolationMode", "Settings"]

IsolationMode = Literal["strict", "degraded"]

_MIB = 1024 * 1024


def _int_in(lo: int, hi: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise ValueError(f"expected an integer, got {raw!r}") from None
        if not lo <= value <= hi:
            raise ValueError(f"must be between {lo} and {hi}, got {value}")
        return value

    return parse


def _host(raw: str) -> str:
    value = raw.strip()
    if not value:
        raise ValueError("must not be empty")
    if value != "localhost":
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(f"expected an IP address or 'localhost', got {raw!r}") from None
    return value


def _names(raw: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in raw.split(",") if n.strip())
    for name in names:
        if not all(part.isidentifier() for part in name.split(".")):
            raise ValueError(f"{name!r} is not a module name")
    return names


def _isolation(raw: str) -> str:
    value = raw.strip().lower()
    if value not in ("strict", "degraded"):
        raise ValueError(f"expected 'strict' or 'degraded', got {raw!r}")
    return value


def _url(raw: str) -> str:
    value = raw.strip().rstrip("/")
    if not value.startswith(("http://", "https://")):
        raise ValueError(f"expected an http:// or https:// URL, got {raw!r}")
    return value


def _token(raw: str) -> str:
    value = raw.strip()
    if len(value) < 16:
        raise ValueError("must be at least 16 characters")
    return value


def _origins(raw: str) -> tuple[str, ...]:
    return tuple(o.strip() for o in raw.split(",") if o.strip())


def _path(raw: str) -> Path:
    if not raw.strip():
        raise ValueError("must not be empty")
    return Path(raw.strip())


#: environment variable -> (settings field, parser). The README's configuration table mirrors it.
ENV_VARS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "PYTHON_EXECUTOR_URL": ("executor_url", _url),
    "PYTHON_POOL_MIN_SIZE": ("pool_min_size", _int_in(0, 64)),
    "PYTHON_POOL_MAX_SIZE": ("pool_max_size", _int_in(1, 256)),
    "EVALJAIL_HOST": ("host", _host),
    "EVALJAIL_PORT": ("port", _int_in(0, 65535)),
    "EVALJAIL_TIMEOUT_MS": ("timeout_ms", _int_in(1, 600_000)),
    "EVALJAIL_MAX_TIMEOUT_MS": ("max_timeout_ms", _int_in(1, 3_600_000)),
    "EVALJAIL_MEMORY_MB": ("memory_mb", _int_in(8, 65_536)),
    "EVALJAIL_SCIENTIFIC_MEMORY_MB": ("scientific_memory_mb", _int_in(8, 65_536)),
    "EVALJAIL_ALLOWED_IMPORTS": ("allowed_imports", _names),
    "EVALJAIL_API_TOKEN": ("api_token", _token),
    "EVALJAIL_ISOLATION": ("isolation", _isolation),
    "EVALJAIL_MAX_BODY_MB": ("max_body_mb", _int_in(1, 1024)),
    "EVALJAIL_QUEUE_SIZE": ("queue_size", _int_in(1, 1_000_000)),
    "EVALJAIL_READ_TIMEOUT_MS": ("read_timeout_ms", _int_in(100, 3_600_000)),
    "EVALJAIL_SEND_TIMEOUT_MS": ("send_timeout_ms", _int_in(100, 3_600_000)),
    "EVALJAIL_CORS_ORIGINS": ("cors_origins", _origins),
    "EVALJAIL_SANDBOX_DIR": ("sandbox_dir", _path),
    "EVALJAIL_SANDBOX_MAX": ("sandbox_max", _int_in(1, 100_000)),
    "EVALJAIL_SANDBOX_DISK_MB": ("sandbox_disk_mb", _int_in(4, 1_048_576)),
    "EVALJAIL_SANDBOX_MEMORY_MB": ("sandbox_memory_mb", _int_in(16, 1_048_576)),
    "EVALJAIL_SANDBOX_MAX_RUNNING": ("sandbox_max_running", _int_in(1, 10_000)),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Every knob of evaljail, with secure defaults."""

    executor_url: str | None = None
    pool_min_size: int = 3
    pool_max_size: int = 15
    host: str = "127.0.0.1"
    port: int = 9999
    timeout_ms: int = 5000
    max_timeout_ms: int = 30_000
    memory_mb: int = 50
    scientific_memory_mb: int = 512
    allowed_imports: tuple[str, ...] = ()
    api_token: str | None = None
    isolation: str = "strict"
    max_body_mb: int = 8
    queue_size: int = 10_000
    #: A request's head must arrive within this time of its first byte (or of the connection
    #: opening), and its body within this time of its head: ``408`` otherwise.
    read_timeout_ms: int = 30_000
    #: A client that accepts none of a pending response for this long is disconnected.
    send_timeout_ms: int = 30_000
    cors_origins: tuple[str, ...] = ()
    sandbox_dir: Path | None = None
    #: Named sandboxes (``SandboxLimits``): live sandboxes at once, each workspace's quota, the
    #: address space of each process of a command, and commands running at once.
    sandbox_max: int = 32
    sandbox_disk_mb: int = 64
    sandbox_memory_mb: int = 512
    sandbox_max_running: int = 32

    def __post_init__(self) -> None:
        if self.pool_min_size > self.pool_max_size:
            raise ConfigurationError(
                f"PYTHON_POOL_MIN_SIZE ({self.pool_min_size}) must not exceed "
                f"PYTHON_POOL_MAX_SIZE ({self.pool_max_size})",
                details={"variable": "PYTHON_POOL_MIN_SIZE"},
            )
        if self.timeout_ms > self.max_timeout_ms:
            raise ConfigurationError(
                f"EVALJAIL_TIMEOUT_MS ({self.timeout_ms}) must not exceed "
                f"EVALJAIL_MAX_TIMEOUT_MS ({self.max_timeout_ms})",
                details={"variable": "EVALJAIL_TIMEOUT_MS"},
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read every ``PYTHON_*``/``EVALJAIL_*`` variable; unset or empty ones keep defaults."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for var, (name, parse) in ENV_VARS.items():
            raw = env.get(var)
            if raw is None or raw.strip() == "":
                continue
            try:
                values[name] = parse(raw)
            except ValueError as exc:
                raise ConfigurationError(
                    f"invalid {var}: {exc}", details={"variable": var}
                ) from None
        return cls(**values)

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with some fields replaced (validated again)."""
        known = {f.name for f in fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise ConfigurationError(f"unknown settings: {', '.join(sorted(unknown))}")
        return replace(self, **changes)

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        return ipaddress.ip_address(self.host).is_loopback

    @property
    def memory_bytes(self) -> int:
        return self.memory_mb * _MIB

    @property
    def scientific_memory_bytes(self) -> int:
        return self.scientific_memory_mb * _MIB

    @property
    def max_body_bytes(self) -> int:
        return self.max_body_mb * _MIB
