"""The run-time Python guard of the per-execution child (mirrors static analysis).

This is defence in depth, *not* a security boundary by itself: Python-level sandboxes are
escapable, which is why the child is also confined by bubblewrap, seccomp and rlimits. The guard
makes the honest failure modes precise (``ImportError: import of 'os' is not allowed``) and
closes the easy doors: blocked builtins are absent, imports go through the allow-list, and
``getattr``/``setattr``/``delattr``/``hasattr`` refuse dunder and frame names.
"""

from __future__ import annotations

import builtins
import io
import math
import unicodedata
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any

__all__ = [
    "BoundedWriter",
    "OutputLimitExceeded",
    "describe_value",
    "refuse_unpickling",
    "restricted_builtins",
]

_FRAME_ATTRS = frozenset(
    {
        "f_globals", "f_locals", "f_builtins", "f_back", "f_code", "f_trace", "gi_frame",
        "gi_code", "gi_yieldfrom", "cr_frame", "cr_code", "cr_await", "ag_frame", "ag_code",
        "ag_await", "tb_frame", "tb_next", "co_code", "co_consts", "co_names", "func_globals",
        "func_code", "func_closure", "mro", "cell_contents", "_getframe", "_current_frames",
        "currentframe", "_convert_", "_old_convert_", "global_enum", "_apply_str", "_wrapfunc",
        "temp_setattr", "_setattr_cm",
    }
)  # fmt: skip


class OutputLimitExceeded(BaseException):
    """Raised inside user code when stdout or stderr passes the output cap.

    A BaseException so that ``except Exception`` in user code cannot swallow it.
    """


class BoundedWriter(io.TextIOBase):
    """A text stream that keeps at most ``limit`` characters, then stops the execution."""

    def __init__(self, limit: int, name: str) -> None:
        super().__init__()
        self._parts: list[str] = []
        self._size = 0
        self._limit = limit
        self._name = name
        self.truncated = False

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        room = self._limit - self._size
        if len(s) > room:
            self._parts.append(s[: max(room, 0)])
            self._size = self._limit
            self.truncated = True
            raise OutputLimitExceeded(self._name)
        self._parts.append(s)
        self._size += len(s)
        return len(s)

    def getvalue(self) -> str:
        text = "".join(self._parts)
        if self.truncated:
            text += f"\n[evaljail: {self._name} truncated at {self._limit} characters]\n"
        return text


def _bad_name(name: str) -> str | None:
    """Why ``name`` (an exact ``str``) may not be used as an attribute name (None: it may)."""
    norm = unicodedata.normalize("NFKC", name)
    if norm.startswith("__") and norm.endswith("__"):
        return f"access to dunder attribute {norm!r} is not allowed"
    if norm in _FRAME_ATTRS:
        return f"access to internal attribute {norm!r} is not allowed"
    return None


def _guarded_attr_fn(real: Callable[..., Any]) -> Callable[..., Any]:
    def guarded(obj: Any, name: Any, *args: Any) -> Any:
        if isinstance(name, str):
            # A str subclass can override startswith, __eq__ ... and ``normalize`` hands an
            # already normal string back as it is: check, and look up, an exact copy.
            name = "".join((name,)) if type(name) is not str else name
            why = _bad_name(name)
            if why is not None:
                raise AttributeError(why)
        return real(obj, name, *args)

    guarded.__name__ = real.__name__
    guarded.__qualname__ = real.__name__
    guarded.__doc__ = real.__doc__
    return guarded


#: Modules the runtime's own C code imports on first use: ``datetime``'s ``strftime``,
#: ``today``, ``timetuple`` and date format specs import ``time``; ``strptime`` imports
#: ``_strptime``. C code imports through ``PyImport_Import``, which calls ``__import__`` with
#: the caller's globals and an empty *list* as ``fromlist``; an ``import`` statement passes
#: None or a tuple. Only that signature, and only these names, get past the allow-list.
_RUNTIME_IMPORTS = frozenset({"time", "_strptime"})


def _make_import(
    allowed: frozenset[str], real_import: Callable[..., ModuleType]
) -> Callable[..., ModuleType]:
    def guarded_import(
        name: str,
        globals: dict[str, Any] | None = None,
        locals: dict[str, Any] | None = None,
        fromlist: Iterable[str] | None = (),
        level: int = 0,
    ) -> ModuleType:
        if level != 0:
            raise ImportError("relative imports are not allowed")
        if name == "__future__":  # ``from __future__ import annotations``: a compiler directive
            return real_import(name, globals, locals, fromlist, 0)
        if type(fromlist) is list and not fromlist and name in _RUNTIME_IMPORTS:
            return real_import(name, globals, locals, fromlist, 0)
        if not isinstance(name, str) or name.split(".")[0] not in allowed:
            raise ImportError(f"import of {name!r} is not allowed", name=str(name))
        module = real_import(name, globals, locals, fromlist, 0)
        for item in fromlist or ():
            value = getattr(module, item, None) if isinstance(item, str) else None
            if isinstance(value, ModuleType) and value.__name__.split(".")[0] not in allowed:
                raise ImportError(f"import of {value.__name__!r} is not allowed")
        return module

    return guarded_import


def restricted_builtins(allowed_imports: Iterable[str], blocked: Iterable[str]) -> dict[str, Any]:
    """A fresh ``__builtins__`` dict without the blocked names and with guarded hooks."""
    blocked_set = frozenset(blocked)
    safe = {k: v for k, v in vars(builtins).items() if k not in blocked_set}
    safe["__import__"] = _make_import(frozenset(allowed_imports), builtins.__import__)
    for name in ("getattr", "setattr", "delattr", "hasattr"):
        safe[name] = _guarded_attr_fn(getattr(builtins, name))
    return safe


def refuse_unpickling(event: str, args: tuple[Any, ...]) -> None:
    """An audit hook (``sys.addaudithook``) that refuses every global a pickle names.

    Unpickling runs whatever callable the data names with the real builtins, and the allowed
    libraries unpickle data they are handed in more places than any name list can follow
    (``pandas.read_pickle`` of a file-like object, ``numpy.load(..., allow_pickle=True)``,
    ``pandas.compat.pickle_compat.loads``, joblib in an extra package ...). The jail's own
    machinery never unpickles (it speaks JSON and marshal), so a child may install this hook
    for good before it runs user code: audit hooks cannot be removed, and every unpickler (the
    C one and the pure-Python one) raises ``pickle.find_class`` before it resolves a global.
    """
    if event == "pickle.find_class":
        raise PermissionError(f"unpickling is not allowed (the data names {args[0]}.{args[1]})")


def describe_value(value: Any, *, text_limit: int, depth: int = 0) -> dict[str, Any]:
    """An eval's return value as plain JSON that keeps exact types for the contract check.

    Never calls user-defined methods except ``repr`` on unknown objects (guarded, truncated).
    """
    kind = type(value)
    if kind is bool:
        return {"t": "bool", "v": value}
    if kind is str:
        text = value[:text_limit]
        if not text.isascii():  # lone surrogates cannot leave as UTF-8
            text = text.encode("utf-8", "replace").decode("utf-8")
        return {"t": "str", "v": text}
    if value is None:
        return {"t": "NoneType"}
    if kind is int:
        return {"t": "int", "v": value if -(2**53) < value < 2**53 else 0}
    if kind is float:
        return {"t": "float", "v": value if math.isfinite(value) else 0.0}  # JSON has no NaN
    if kind is tuple and depth == 0:
        return {
            "t": "tuple",
            "len": len(value),
            "items": [describe_value(v, text_limit=text_limit, depth=1) for v in value[:3]],
        }
    try:
        text = repr(value)[:200]
    except BaseException:
        text = "<unrepresentable>"
    return {"t": kind.__name__, "r": text}
