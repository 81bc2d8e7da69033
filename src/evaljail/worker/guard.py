"""The run-time Python guard of the per-execution child (mirrors static analysis).

This is defence in depth, *not* a security boundary by itself: Python-level sandboxes are
escapable, which is why the child is also confined by bubblewrap, seccomp and rlimits. The guard
makes the honest failure modes precise (``ImportError: import of 'os' is not allowed``) and
closes the easy doors: blocked builtins are absent, imports go through the allow-list,
``getattr``/``setattr``/``delattr``/``hasattr`` refuse dunder and frame names, a class statement
may not produce a class that answers numpy's raw-memory protocol, and the library classes that
answer attribute names from user data (pandas' labels, matplotlib's spines) refuse dunder names.
"""

from __future__ import annotations

import builtins
import io
import math
import sys
import unicodedata
from collections.abc import Callable, Iterable
from types import FrameType, ModuleType
from typing import Any

__all__ = [
    "BoundedWriter",
    "OutputLimitExceeded",
    "describe_value",
    "harden_libraries",
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


#: The core import allow-list (``policy.CORE_IMPORTS``; the jail does not import the policy
#: package, a test keeps the two equal). Beyond it numpy may be importable.
_CORE_IMPORTS = frozenset({"json", "re", "typing", "math", "datetime", "difflib"})

#: Protocols through which numpy and pandas take a raw address from an object
#: (``policy._rules.RAW_MEMORY_PROTOCOLS``).
_RAW_MEMORY_PROTOCOLS = frozenset({"__array_interface__", "__array_struct__", "__dataframe__"})

#: Attribute-lookup hooks, refused in classes when numpy may be importable.
_ATTRIBUTE_HOOKS = frozenset({"__getattr__", "__getattribute__"})

#: A class's own namespace, read through ``type``'s descriptor: a metaclass may define a
#: ``__dict__`` of its own.
_CLASS_DICT: Any = type.__dict__["__dict__"]

#: Library classes whose ``__getattr__`` answers names from user data: a pandas Series answers
#: an index label (``Series([iface], index=["__array_interface__"])``), a DataFrame a column,
#: matplotlib's ``Spines`` any key it was given. numpy asks them for its raw-memory protocol.
_LABEL_GETATTR = (("pandas.core.generic", "NDFrame"), ("matplotlib.spines", "Spines"))


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


def _exact(name: Any) -> Any:
    """An exact ``str`` copy of a ``str`` subclass (which could lie to checks), else ``name``."""
    return "".join((name,)) if isinstance(name, str) and type(name) is not str else name


def _is_dunder(name: str) -> bool:
    return len(name) > 4 and name[:2] == "__" and name[-2:] == "__"


def _refusing_dunders(original: Callable[[Any, str], Any]) -> Callable[[Any, str], Any]:
    def __getattr__(self: Any, name: str) -> Any:
        name = _exact(name)
        if isinstance(name, str) and _is_dunder(unicodedata.normalize("NFKC", name)):
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return original(self, name)

    __getattr__.__evaljail_hardened__ = True  # type: ignore[attr-defined]
    __getattr__.__wrapped__ = original  # type: ignore[attr-defined]
    return __getattr__


_REAL_BUILTINS = vars(builtins)


def _made_for_user_code() -> bool:
    """True when the nearest caller that is user code (restricted builtins) comes before any
    module body of a library: a class made while a library is imported is the library's."""
    frame: FrameType | None = sys._getframe(2)
    while frame is not None:
        if frame.f_builtins is not _REAL_BUILTINS:
            return True
        if frame.f_code.co_name == "<module>":
            return False
        frame = frame.f_back
    return False


def _refusing_protocol_new(original: Any) -> Any:
    def __new__(mcls: Any, *args: Any, **kwargs: Any) -> Any:
        cls = original(mcls, *args, **kwargs)
        if isinstance(cls, type) and _made_for_user_code():
            for key in _CLASS_DICT.__get__(cls):
                name = _exact(key)
                if isinstance(name, str) and unicodedata.normalize("NFKC", name) in (
                    _RAW_MEMORY_PROTOCOLS
                ):
                    raise TypeError(f"a class may not define {name!r} here")
        return cls

    __new__.__evaljail_hardened__ = True  # type: ignore[attr-defined]
    return staticmethod(__new__)


def _harden_metaclasses() -> None:
    """Make every loaded Python-level metaclass (``abc.ABCMeta``, ``enum.EnumType``, pandas'
    ``CategoricalDtypeType`` ...) refuse a namespace that answers numpy's raw-memory protocol:
    libraries keep them under names static analysis cannot all know
    (``pandas.CategoricalDtype.type("C", (), {name: interface})``). ``type`` itself cannot be
    changed; static analysis refuses the routes to it that are known."""
    pending = list(type.__subclasses__(type))
    seen: set[int] = set()
    while pending:
        meta = pending.pop()
        if id(meta) in seen:
            continue
        seen.add(id(meta))
        pending.extend(type.__subclasses__(meta))
        current = _CLASS_DICT.__get__(meta).get("__new__")
        if getattr(getattr(current, "__func__", None), "__evaljail_hardened__", False):
            continue
        try:
            meta.__new__ = _refusing_protocol_new(meta.__new__)  # type: ignore[method-assign]
        except (TypeError, AttributeError):  # immutable (C) metaclasses
            continue


def harden_libraries() -> None:
    """Make the loaded library classes that answer attribute names from user data refuse
    dunder names (numpy's raw-memory protocol among them). Idempotent; a no-op for libraries
    that are not loaded. Called whenever builtins are made and after every allowed import, so
    it runs in the zygote after preloading and in a child after it imports more."""
    for module_name, class_name in _LABEL_GETATTR:
        module = sys.modules.get(module_name)
        cls = getattr(module, class_name, None) if module is not None else None
        original = _CLASS_DICT.__get__(cls).get("__getattr__") if isinstance(cls, type) else None
        if original is None or getattr(original, "__evaljail_hardened__", False):
            continue
        cls.__getattr__ = _refusing_dunders(original)  # type: ignore[union-attr]
    _harden_metaclasses()


def _guarded_build_class(real: Callable[..., Any], hooks_refused: bool) -> Callable[..., Any]:
    """``__build_class__`` that refuses a class whose own namespace answers numpy's raw-memory
    protocol (and, when numpy may be importable, defines an attribute-lookup hook), however
    the names got there: a metaclass's ``__new__`` or ``__prepare__`` may add computed ones.

    Only class statements come here: ``type(name, bases, namespace)`` and other metaclass
    calls do not, and no Python-level hook can see them (``type`` is reachable from every
    class, ``type(int)``), so those are static analysis's to refuse."""
    refused = _RAW_MEMORY_PROTOCOLS | (_ATTRIBUTE_HOOKS if hooks_refused else frozenset())

    def __build_class__(*args: Any, **kwargs: Any) -> Any:
        cls = real(*args, **kwargs)
        if isinstance(cls, type):
            for key in _CLASS_DICT.__get__(cls):
                name = _exact(key)
                if isinstance(name, str) and unicodedata.normalize("NFKC", name) in refused:
                    raise TypeError(f"a class may not define {name!r} here")
        return cls

    __build_class__.__doc__ = real.__doc__
    return __build_class__


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
        loaded = len(sys.modules)
        module = real_import(name, globals, locals, fromlist, 0)
        if len(sys.modules) != loaded:  # new library code: harden what it brought
            harden_libraries()
        for item in fromlist or ():
            value = getattr(module, item, None) if isinstance(item, str) else None
            if isinstance(value, ModuleType) and value.__name__.split(".")[0] not in allowed:
                raise ImportError(f"import of {value.__name__!r} is not allowed")
        return module

    return guarded_import


def restricted_builtins(allowed_imports: Iterable[str], blocked: Iterable[str]) -> dict[str, Any]:
    """A fresh ``__builtins__`` dict without the blocked names and with guarded hooks.

    Also hardens the library classes already loaded (:func:`harden_libraries`): in the
    zygote, that is after preloading, so every child inherits it."""
    blocked_set = frozenset(blocked)
    allowed = frozenset(allowed_imports)
    safe = {k: v for k, v in vars(builtins).items() if k not in blocked_set}
    safe["__import__"] = _make_import(allowed, builtins.__import__)
    safe["__build_class__"] = _guarded_build_class(
        builtins.__build_class__, hooks_refused=not allowed <= _CORE_IMPORTS
    )
    harden_libraries()
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
