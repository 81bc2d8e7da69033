"""What code may do: imports, builtins and limits. Immutable, validated, built from settings."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError

if TYPE_CHECKING:
    from ..settings import Settings

__all__ = [
    "ALWAYS_BLOCKED_BUILTINS",
    "ALWAYS_BLOCKED_MODULES",
    "CORE_IMPORTS",
    "SCIENTIFIC_IMPORTS",
    "Limits",
    "Policy",
    "Profile",
]

_MIB = 1024 * 1024

#: The default import allow-list (DESIGN section 1).
CORE_IMPORTS: frozenset[str] = frozenset({"json", "re", "typing", "math", "datetime", "difflib"})
#: What the scientific profile adds.
SCIENTIFIC_IMPORTS: frozenset[str] = frozenset({"numpy", "pandas", "matplotlib"})

#: Modules that can never be allowed, whatever the configuration says.
ALWAYS_BLOCKED_MODULES: frozenset[str] = frozenset(
    {
        "os", "sys", "subprocess", "socket", "urllib", "requests", "http", "ftplib", "smtplib",
        "pickle", "shelve", "dbm", "builtins", "importlib", "ctypes", "cffi", "posix", "nt",
        "io", "pty", "signal", "threading", "_thread", "multiprocessing", "asyncio", "select",
        "selectors", "fcntl", "resource", "mmap", "gc", "inspect", "code", "codeop", "marshal",
        "shutil", "tempfile", "pathlib", "glob", "runpy", "zipimport", "pkgutil", "site",
        "sysconfig", "platform", "webbrowser", "telnetlib", "ssl", "xmlrpc", "socketserver",
        "concurrent", "faulthandler", "tracemalloc", "traceback", "types", "weakref", "ast",
        "dis", "operator", "functools", "copyreg", "_io", "_posixsubprocess", "_socket",
        "_ctypes", "_pickle", "posixpath", "genericpath", "linecache", "tokenize", "codecs",
    }
)  # fmt: skip

#: Builtins that are always unavailable (DESIGN section 1).
ALWAYS_BLOCKED_BUILTINS: frozenset[str] = frozenset(
    {
        "eval", "exec", "compile", "__import__", "open", "globals", "locals", "vars",
        "breakpoint", "input", "help", "memoryview", "exit", "quit", "copyright", "credits",
        "license",
    }
)  # fmt: skip


class Profile(enum.StrEnum):
    """Which zygote runs the code: a plain one, or one with numpy/pandas preloaded."""

    CORE = "core"
    SCIENTIFIC = "scientific"


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """Per-execution limits. Every value is a real bound: there is no "unlimited"."""

    timeout_ms: int = 5000
    memory_bytes: int = 50 * _MIB  #: address space above the warm interpreter's baseline
    output_bytes: int = 1 * _MIB  #: stdout and stderr, each
    #: text a batch's results keep in all (stdout, stderr, reasons, errors, tracebacks); past
    #: it, each later result keeps the first KiB of each field
    batch_output_bytes: int = 64 * _MIB
    max_source_bytes: int = 1 * _MIB
    max_nesting: int = 200  #: AST nesting depth accepted by static analysis
    open_files: int = 32

    def __post_init__(self) -> None:
        for name, lo, hi in (
            ("timeout_ms", 1, 3_600_000),
            ("memory_bytes", 8 * _MIB, 64 * 1024 * _MIB),
            ("output_bytes", 1024, 256 * _MIB),
            ("batch_output_bytes", 1024, 64 * 1024 * _MIB),
            ("max_source_bytes", 1024, 64 * _MIB),
            ("max_nesting", 10, 10_000),
            ("open_files", 8, 1024),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise ConfigurationError(
                    f"limit {name} must be an integer between {lo} and {hi}, got {value!r}",
                    details={"field": name},
                )

    @property
    def cpu_seconds(self) -> int:
        """CPU-time soft limit: the wall-clock budget rounded up, plus one second."""
        return -(-self.timeout_ms // 1000) + 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "timeout_ms": self.timeout_ms,
            "memory_bytes": self.memory_bytes,
            "output_bytes": self.output_bytes,
            "cpu_seconds": self.cpu_seconds,
            "open_files": self.open_files,
        }


def _check_module_names(names: frozenset[str]) -> None:
    for name in names:
        if not isinstance(name, str) or not all(p.isidentifier() for p in name.split(".")):
            raise ConfigurationError(f"{name!r} is not a module name")
        if name.split(".")[0] in ALWAYS_BLOCKED_MODULES:
            raise ConfigurationError(
                f"module {name!r} is always blocked and cannot be allowed",
                details={"module": name},
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    """The whole answer to "what may this code do?" for one execution."""

    allowed_imports: frozenset[str] = CORE_IMPORTS
    profile: Profile = Profile.CORE
    limits: Limits = field(default_factory=Limits)
    blocked_modules: frozenset[str] = ALWAYS_BLOCKED_MODULES
    blocked_builtins: frozenset[str] = ALWAYS_BLOCKED_BUILTINS
    static_analysis: bool = True  #: switch layer 1 off only to test the other layers

    def __post_init__(self) -> None:
        object.__setattr__(self, "allowed_imports", frozenset(self.allowed_imports))
        _check_module_names(self.allowed_imports)
        if not self.blocked_modules >= ALWAYS_BLOCKED_MODULES:
            raise ConfigurationError("blocked_modules must include every always-blocked module")
        if not self.blocked_builtins >= ALWAYS_BLOCKED_BUILTINS:
            raise ConfigurationError("blocked_builtins must include every always-blocked builtin")

    @classmethod
    def core(cls, *, extra_imports: frozenset[str] | set[str] = frozenset(), **kw: Any) -> Policy:
        return cls(allowed_imports=CORE_IMPORTS | frozenset(extra_imports), **kw)

    @classmethod
    def scientific(
        cls, *, extra_imports: frozenset[str] | set[str] = frozenset(), **kw: Any
    ) -> Policy:
        """numpy, pandas and matplotlib on top of the core list, with a larger memory limit."""
        kw.setdefault("limits", Limits(memory_bytes=512 * _MIB))
        return cls(
            allowed_imports=CORE_IMPORTS | SCIENTIFIC_IMPORTS | frozenset(extra_imports),
            profile=Profile.SCIENTIFIC,
            **kw,
        )

    @classmethod
    def from_settings(cls, settings: Settings, *, profile: Profile = Profile.CORE) -> Policy:
        extra = frozenset(settings.allowed_imports)
        if profile is Profile.SCIENTIFIC:
            return cls.scientific(
                extra_imports=extra,
                limits=Limits(
                    timeout_ms=settings.timeout_ms, memory_bytes=settings.scientific_memory_bytes
                ),
            )
        return cls.core(
            extra_imports=extra,
            limits=Limits(timeout_ms=settings.timeout_ms, memory_bytes=settings.memory_bytes),
        )

    def with_limits(self, **changes: Any) -> Policy:
        return replace(self, limits=replace(self.limits, **changes))

    @property
    def beyond_core(self) -> bool:
        """True when an allowed import is outside the core list (numpy, pandas, matplotlib or
        an operator's addition). numpy and the packages that call it take a raw address from
        any object that answers ``__array_interface__``, so such policies also refuse the ways
        of answering it under a name built at run time (``attribute-hook``, ``class-factory``).
        """
        return not self.allowed_imports <= CORE_IMPORTS

    def allows_import(self, module: str) -> bool:
        top = module.split(".")[0]
        return top in self.allowed_imports and top not in self.blocked_modules

    def to_wire(self) -> dict[str, Any]:
        """The part of the policy the jailed worker needs, as plain JSON."""
        return {
            "allowed_imports": sorted(self.allowed_imports),
            "blocked_builtins": sorted(self.blocked_builtins),
            "profile": self.profile.value,
            "limits": self.limits.to_dict(),
        }
