"""The static-analysis rule catalogue and the name sets the rules consult.

Rule ids are stable, kebab-case and documented in ``docs/static-analysis.md`` (a test keeps the
two in step). Every set here is an immutable constant: the checker holds no module-level state.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

__all__ = [
    "ATTRIBUTE_FUNCTIONS",
    "ATTRIBUTE_HOOKS",
    "BUILTIN_HINTS",
    "CLASS_FACTORY_ATTRIBUTES",
    "DYNAMIC_IMPORT_ATTRIBUTES",
    "FORMAT_METHODS",
    "FRAME_ATTRIBUTES",
    "INTROSPECTION_ATTRIBUTES",
    "ISINSTANCE_HOOKS",
    "MACHINERY_NAMES",
    "MODULE_ATTRIBUTES",
    "MODULE_GLOBALS_ATTRIBUTES",
    "PACKAGE_INTERNALS",
    "RAW_MEMORY_ATTRIBUTES",
    "RAW_MEMORY_PROTOCOLS",
    "RULES",
    "SAFE_DUNDER_ATTRIBUTES",
    "SAFE_DUNDER_NAMES",
    "STRING_EVALUATION_ATTRIBUTES",
    "SUPER_DUNDER_METHODS",
    "UNPICKLING_ATTRIBUTES",
    "Rule",
    "attribute_rule",
    "is_dunder",
    "normalize",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Rule:
    """One rule: its stable id, what it catches, and the default advice for a finding."""

    rule_id: str
    summary: str
    hint: str


_CATALOGUE: tuple[Rule, ...] = (
    Rule(
        rule_id="syntax-error",
        summary="the source does not parse as Python",
        hint="Fix the syntax error: the code must be valid Python 3.11.",
    ),
    Rule(
        rule_id="encoding-error",
        summary="the source bytes are not text in their declared encoding (UTF-8 by default)",
        hint="Save the file as UTF-8, or declare its encoding in a PEP 263 coding comment.",
    ),
    Rule(
        rule_id="import-not-allowed",
        summary="an import of a module that is not on the policy's allow-list",
        hint="Use only allowed modules; an operator can add one with --allow MODULE "
        "(CLI) or EVALJAIL_ALLOWED_IMPORTS.",
    ),
    Rule(
        rule_id="import-blocked",
        summary="an import of an always-blocked module (os, sys, subprocess, ...), also as a "
        "submodule (numpy.ctypeslib)",
        hint="Evals may not reach the operating system, the network, the interpreter or "
        "serialisation; work only with the trace passed in.",
    ),
    Rule(
        rule_id="relative-import",
        summary="a relative import (from . import x)",
        hint="An eval is a single file: import allowed top-level modules only.",
    ),
    Rule(
        rule_id="dynamic-import",
        summary="importing through a function (importlib.import_module and friends)",
        hint="Use a plain import statement of an allowed module.",
    ),
    Rule(
        rule_id="blocked-builtin",
        summary="a call to a blocked builtin (eval, exec, compile, open, __import__, globals, "
        "locals, vars, breakpoint, input, help, ...), or builtins.<blocked>",
        hint="This builtin is not available to evals.",
    ),
    Rule(
        rule_id="builtin-alias",
        summary="a blocked builtin, or getattr/setattr/delattr/hasattr, used as a value "
        "(e = eval, [exec], f(open), @eval, def f(x=open))",
        hint="Blocked builtins cannot be stored, passed or used as decorators; getattr and "
        "friends may only be called directly, with a string-literal name.",
    ),
    Rule(
        rule_id="blocked-name",
        summary="an interpreter-internal dunder name (__builtins__, __loader__, __spec__, "
        "__class__, ...) read, or bound by assignment, def, import, argument or pattern",
        hint="Interpreter internals are off limits; __name__, __doc__, __qualname__, "
        "__module__, __all__, __version__ and __slots__ are fine.",
    ),
    Rule(
        rule_id="dunder-attribute",
        summary="reading or writing a dunder attribute (x.__class__, __subclasses__, "
        "__globals__, __dict__, __mro__, ...), also through getattr, from-import or a "
        "class pattern",
        hint="Use type(x), isinstance() or a plain dict instead. Defining dunder methods is "
        "fine; reading dunder attributes is not, except __name__, __qualname__, __doc__, "
        "__module__, __version__ and super().__init__()-style calls.",
    ),
    Rule(
        rule_id="frame-attribute",
        summary="frame, generator, coroutine, async-generator, traceback or code-object "
        "internals (f_globals, f_back, gi_frame, cr_frame, ag_frame, tb_frame, co_code, ...)",
        hint="Frames, generators, tracebacks and code objects cannot be inspected; keep the "
        "state you need in your own variables.",
    ),
    Rule(
        rule_id="introspection-attribute",
        summary="type-hierarchy, garbage-collector and code-construction internals (mro, "
        "cell_contents, _getframe, get_referrers, attrgetter, CodeType, ...)",
        hint="Use isinstance()/issubclass() and plain attribute access instead.",
    ),
    Rule(
        rule_id="module-attribute",
        summary="a blocked module reached through another module's attribute (typing.sys, "
        "x._os, numpy.ctypeslib, from typing import sys), a helper that reads any loaded "
        "module's globals by name (enum's _convert_, global_enum), or an allowed package's "
        "internals (pandas.core, numpy._core, matplotlib.cbook)",
        hint="Modules re-exported by allowed modules are blocked like their import; use the "
        "packages' public API.",
    ),
    Rule(
        rule_id="string-evaluation",
        summary="library functions that evaluate strings as code (typing.get_type_hints, "
        "typing.ForwardRef, ._evaluate, ._eval_type, pandas .eval)",
        hint="These run code from strings with the unrestricted builtins; write the logic out.",
    ),
    Rule(
        rule_id="unpickling",
        summary="loading pickles, which runs any code the data names: pandas.read_pickle, "
        "pickle_compat, numpy.load with allow_pickle, numpy.lib.format.read_array, NpzFile",
        hint="Evals receive their data in the trace; parse JSON with json.loads.",
    ),
    Rule(
        rule_id="raw-memory",
        summary="numpy's and pandas' raw-memory protocols and views, which read and write "
        "memory at any address: __array_interface__, __array_struct__, __dataframe__ (defined "
        "or named), as_strided, from_dataframe, interchange, from_address",
        hint="Build arrays from Python values (numpy.array, pandas.DataFrame) instead.",
    ),
    Rule(
        rule_id="attribute-hook",
        summary="defining __getattr__ or __getattribute__ when the policy allows imports beyond "
        "the core list (numpy, pandas, matplotlib): numpy looks its raw-memory protocol up "
        "through them, so a hook answering a name built at run time reads and writes memory",
        hint="Give the class explicit attributes, or keep the values in a dict "
        "(obj['key'] instead of obj.key).",
    ),
    Rule(
        rule_id="class-factory",
        summary="making a class from a namespace at run time when the policy allows imports "
        "beyond the core list: type() with three or unpacked arguments, type used as a value "
        "or a base, the class type(x) returns called, passed or stored; enum's _create_",
        hint="Write a class statement; use type(x) only to compare it (type(x) is int), to read "
        "its name (type(x).__name__) or in isinstance().",
    ),
    Rule(
        rule_id="isinstance-hook",
        summary="defining __instancecheck__ or __subclasscheck__ (with __match_args__, a "
        "class pattern then reads any attribute of any object)",
        hint="Use plain isinstance() checks; custom instance checks are not available to evals.",
    ),
    Rule(
        rule_id="class-pattern",
        summary="a positional sub-pattern in a class pattern (reads the attributes that the "
        "class's __match_args__ names, which the source can hide)",
        hint="Use keyword sub-patterns, which name the attribute they read "
        "(case Step(name=n)), or a builtin type (case str(s)).",
    ),
    Rule(
        rule_id="dynamic-attribute",
        summary="getattr/setattr/delattr/hasattr whose name is not a string literal (or a "
        "name assigned a literal exactly once), or __match_args__ entries that are not literals",
        hint='Write the attribute name as a literal, getattr(obj, "name", default), or keep '
        "the values in a dict.",
    ),
    Rule(
        rule_id="format-string-attribute",
        summary='a str.format field that reads a dunder or internal attribute ("{0.__class__}")',
        hint="Format fields may use positions, names and indexes ({0}, {name}, {0[key]}) "
        "but not dunder or internal attributes.",
    ),
    Rule(
        rule_id="dynamic-format-string",
        summary=".format/.format_map/.vformat/.get_field on a format string that is not a "
        "literal (or a name assigned a literal exactly once)",
        hint="Call .format() on a string literal (or a name assigned one literal), or use an "
        "f-string or %-formatting.",
    ),
)

#: rule id -> rule, in catalogue order.
RULES: dict[str, Rule] = {rule.rule_id: rule for rule in _CATALOGUE}

#: Advice per blocked builtin (the ``blocked-builtin`` and ``builtin-alias`` hints).
BUILTIN_HINTS: dict[str, str] = {
    "eval": "Running code built from strings is not possible; parse data with json.loads "
    "and write the logic out.",
    "exec": "Running code built from strings is not possible; write the logic out.",
    "compile": "Compiling code is not possible; use re.compile for regular expressions.",
    "open": "Evals receive the trace as an argument and cannot read or write files.",
    "__import__": "Use a plain import statement of an allowed module.",
    "globals": "Keep named values in your own dict.",
    "locals": "Keep named values in your own dict.",
    "vars": "Keep named values in your own dict; use dict(obj) or explicit attributes.",
    "breakpoint": "Evals run non-interactively; return a reason string instead.",
    "input": "Evals run non-interactively; read what you need from the trace.",
    "help": "Evals run non-interactively.",
    "memoryview": "Raw memory views are not available; use bytes.",
    "exit": "Return (False, reason) instead of exiting.",
    "quit": "Return (False, reason) instead of exiting.",
    "copyright": "Interactive helpers are not available.",
    "credits": "Interactive helpers are not available.",
    "license": "Interactive helpers are not available.",
}

#: Builtins that look attributes up by a run-time name.
ATTRIBUTE_FUNCTIONS: frozenset[str] = frozenset({"getattr", "setattr", "delattr", "hasattr"})

#: Dunder names that may be read as plain names (``if __name__ == "__main__":``).
SAFE_DUNDER_NAMES: frozenset[str] = frozenset(
    {
        "__name__", "__doc__", "__debug__", "__qualname__", "__module__", "__all__",
        "__version__", "__slots__",
    }
)  # fmt: skip

#: Dunder names that may never be bound (assigned, def'd, imported as, used as a parameter).
MACHINERY_NAMES: frozenset[str] = frozenset(
    {
        "__builtins__", "__import__", "__loader__", "__spec__", "__package__", "__path__",
        "__file__", "__cached__", "__build_class__", "__class__", "__dict__", "__globals__",
        "__code__", "__closure__",
    }
)  # fmt: skip

#: Dunder attributes that are plain, harmless data (a str) and may be read: type(x).__name__.
SAFE_DUNDER_ATTRIBUTES: frozenset[str] = frozenset(
    {"__name__", "__qualname__", "__doc__", "__module__", "__version__"}
)

#: Dunder methods that may be reached through ``super()`` (cooperative initialisation and
#: operator delegation). Attribute lookup hooks (__getattribute__, __getattr__, __setattr__,
#: __delattr__), __reduce__ and friends are deliberately absent.
SUPER_DUNDER_METHODS: frozenset[str] = frozenset(
    {
        "__init__", "__new__", "__init_subclass__", "__post_init__", "__repr__", "__str__",
        "__format__", "__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__", "__hash__",
        "__bool__", "__len__", "__iter__", "__next__", "__contains__", "__getitem__",
        "__setitem__", "__delitem__", "__missing__", "__enter__", "__exit__", "__call__",
        "__add__", "__sub__", "__mul__", "__truediv__", "__floordiv__", "__mod__",
    }
)  # fmt: skip

#: Frame, generator, coroutine, async-generator, traceback and code-object internals
#: (CPython 3.11 to 3.14).
FRAME_ATTRIBUTES: frozenset[str] = frozenset(
    {
        # frames
        "f_back", "f_builtins", "f_code", "f_generator", "f_globals", "f_lasti", "f_lineno",
        "f_locals", "f_trace", "f_trace_lines", "f_trace_opcodes",
        # generators, coroutines, async generators
        "gi_code", "gi_frame", "gi_running", "gi_suspended", "gi_yieldfrom",
        "cr_await", "cr_code", "cr_frame", "cr_origin", "cr_running", "cr_suspended",
        "ag_await", "ag_code", "ag_frame", "ag_running", "ag_suspended",
        # tracebacks
        "tb_frame", "tb_lasti", "tb_lineno", "tb_next",
        # code objects
        "co_argcount", "co_branches", "co_cellvars", "co_code", "co_consts",
        "co_exceptiontable", "co_filename", "co_firstlineno", "co_flags", "co_freevars",
        "co_kwonlyargcount", "co_lines", "co_linetable", "co_lnotab", "co_name", "co_names",
        "co_nlocals", "co_positions", "co_posonlyargcount", "co_qualname", "co_stacksize",
        "co_varnames", "_co_code_adaptive", "_varname_from_oparg",
        # Python 2 spellings, still tried by escape kits
        "func_globals", "func_code", "func_closure",
    }
)  # fmt: skip

#: Non-dunder attributes that walk the type hierarchy, the heap or build code objects.
INTROSPECTION_ATTRIBUTES: frozenset[str] = frozenset(
    {
        "mro", "cell_contents", "_getframe", "_current_frames", "_current_exceptions",
        "getattr_static", "attrgetter", "methodcaller", "get_referrers", "get_referents",
        "get_objects", "CodeType", "FunctionType", "LambdaType", "CellType", "FrameType",
        "currentframe",
        # the real ``open`` as libraries keep it (numpy.lib._datasource._open, tarfile ...)
        "_open", "bltn_open", "builtin_open", "_builtin_open",
        # library helpers that call getattr/setattr with a name they are given, on an object
        # they are given: pandas' Apply._apply_str(None, fn, "__globals__"), numpy's
        # _wrapfunc(fn, "__getattribute__", "__globals__"), matplotlib's _setattr_cm ...
        "_apply_str", "_wrapfunc", "_wrapit", "_wrapreduction", "_wrapreduction_any_all",
        "temp_setattr", "_setattr_cm", "array_ufunc", "default_array_ufunc",
        "dispatch_ufunc_with_out", "dispatch_reduction_ufunc", "_inherit_from_data",
        "_highlight_value",
        # pandas sets a class attribute of any name to what an accessor class returns
        "register_dataframe_accessor", "register_series_accessor", "register_index_accessor",
    }
)  # fmt: skip

#: Attribute names (leading underscores ignored) under which allowed modules re-export
#: escape-grade modules: typing.sys, collections._sys, numpy.ctypeslib, ...
MODULE_ATTRIBUTES: frozenset[str] = frozenset(
    {
        "os", "sys", "builtins", "subprocess", "ctypes", "ctypeslib", "importlib", "imp",
        "marshal", "pickle", "cPickle", "gc", "inspect", "socket", "posix", "nt",
        "posixsubprocess", "f2py", "distutils", "multiprocessing", "pty", "shutil", "runpy",
        "operator",
        # blocked modules that allowed ones hold under these names (json.codecs, re.functools,
        # typing.contextlib, re.enum.bltns: the real builtins module, as enum imports it)
        "bltns", "codecs", "copyreg", "functools", "contextlib", "warnings", "sre",
        # and that third-party packages (not followed through real objects) keep:
        # matplotlib.logging.io, pandas.core.common.dis, matplotlib.tempfile ...
        "io", "logging", "traceback", "linecache", "tempfile", "dis", "ast", "tokenize",
        "threading", "thread", "platform", "pathlib", "mmap", "tarfile", "zipfile",
        "shelve", "dbm", "pdb", "code", "codeop", "signal", "resource", "select", "selectors",
        "asyncio", "concurrent", "ssl", "urllib", "http", "ftplib", "smtplib", "glob",
        "sysconfig", "site", "zipimport", "pkgutil", "webbrowser", "fcntl", "termios",
        # standard-library modules that hand out class factories or exec with real builtins,
        # kept by third-party modules: matplotlib.font_manager.dataclasses._create_fn runs
        # source with the real builtins, numpy._globals.enum.Enum and
        # pandas.errors.abc.ABCMeta make classes from a computed namespace
        "dataclasses", "enum", "abc",
    }
)  # fmt: skip

#: Library helpers that read or write the globals of any loaded module named by a string:
#: ``type(re.RegexFlag)._convert_(C, "X", "linecache", f)`` hands back ``linecache.os``,
#: ``enum.global_enum`` writes a class's members into ``sys.modules[cls.__module__]``.
MODULE_GLOBALS_ATTRIBUTES: frozenset[str] = frozenset({"_convert_", "_old_convert_", "global_enum"})

#: Internals of allowed third-party packages (exact names), full of helpers that import,
#: evaluate or look attributes up by a name they are given: pandas.core (computation, apply,
#: common), numpy._core, pandas._libs, pandas._testing, pandas.compat, matplotlib.cbook and
#: matplotlib._api. Evals use the packages' public API.
PACKAGE_INTERNALS: frozenset[str] = frozenset(
    {"core", "_core", "_libs", "_testing", "compat", "cbook", "_api"}
)

#: Attributes of library functions that evaluate strings as code, with real builtins.
STRING_EVALUATION_ATTRIBUTES: frozenset[str] = frozenset(
    {
        "get_type_hints", "ForwardRef", "_evaluate", "_eval_type", "evaluate_forward_ref", "eval",
        "_create_fn",  # dataclasses: exec of the lines it is given, with the real builtins
        "query",  # pandas' DataFrame.query: an expression engine with attribute access
        "computation",  # pandas.core.computation: Expr, Scope (frames), the eval engine
    }
)  # fmt: skip

#: Functions that unpickle (any name containing "pickle" is caught too: read_pickle,
#: pickle_compat, allow_pickle=...).
UNPICKLING_ATTRIBUTES: frozenset[str] = frozenset({"read_array", "NpzFile"})

#: Protocols through which numpy and pandas take a raw address from a Python object: an
#: ``__array_interface__`` whose ``data`` is ``(address, False)`` is read and written in place.
RAW_MEMORY_PROTOCOLS: frozenset[str] = frozenset(
    {"__array_interface__", "__array_struct__", "__dataframe__"}
)

#: Functions that view memory at a computed address or stride.
RAW_MEMORY_ATTRIBUTES: frozenset[str] = frozenset(
    {"as_strided", "from_dataframe", "interchange", "from_address", "from_buffer",
     "from_buffer_copy"}
)  # fmt: skip

#: Attribute-lookup hooks: with numpy importable, a hook that answers a name built at run time
#: (``"__array_" + "interface__"``) hands numpy an address to read and write.
ATTRIBUTE_HOOKS: frozenset[str] = frozenset({"__getattr__", "__getattribute__"})

#: Helpers that make a class from names given at run time (enum's functional API puts dunder
#: names straight into the class namespace), or hand out the builtin ``type`` itself
#: (``typing.get_origin(typing.Type)`` is ``type``, which the ``type`` checks cannot follow),
#: or a metaclass, under the names third-party modules keep them: ``pandas._typing.type_t`` is
#: ``type``, ``matplotlib.pyplot.Enum`` is ``enum.Enum`` (``Enum("E", [(name, value)])``),
#: ``numpy.lib._utils_impl.types.new_class`` calls ``type`` with what a callback put in the
#: namespace, ``pandas.errors.abc.ABCMeta`` and ``pandas.CategoricalDtype.type`` (see the guard,
#: which makes the Python-level metaclasses refuse the protocol at run time) are metaclasses.
CLASS_FACTORY_ATTRIBUTES: frozenset[str] = frozenset(
    {
        "_create_", "get_origin", "type_t", "new_class", "make_dataclass", "Enum", "IntEnum",
        "Flag", "IntFlag", "StrEnum", "ReprEnum", "EnumType", "EnumMeta", "ABCMeta",
    }
)  # fmt: skip

#: Metaclass hooks that make ``isinstance`` (and so ``case C(x)``) accept any object.
ISINSTANCE_HOOKS: frozenset[str] = frozenset({"__instancecheck__", "__subclasscheck__"})

#: Attributes that import modules by run-time name (matplotlib imports a backend named
#: ``module://os`` as the module ``os``).
DYNAMIC_IMPORT_ATTRIBUTES: frozenset[str] = frozenset(
    {
        "import_module", "load_module", "exec_module", "module_from_spec",
        "spec_from_file_location", "spec_from_loader", "load_backend_module",
        "switch_backend", "backend_registry", "_backend_module_name",
    }
)  # fmt: skip

#: Methods that interpret a format string (str.format, str.format_map, string.Formatter);
#: ``Formatter.get_field`` takes a single field name.
FORMAT_METHODS: frozenset[str] = frozenset({"format", "format_map", "vformat", "get_field"})

#: Builtin types whose class pattern takes one positional sub-pattern and binds the subject
#: itself (``case str(s)``): no attribute is read.
SELF_MATCHING_TYPES: frozenset[str] = frozenset(
    {"bool", "bytearray", "bytes", "dict", "float", "frozenset", "int", "list", "set", "str",
     "tuple"}
)  # fmt: skip


def normalize(name: str) -> str:
    """``name`` as Python sees an identifier: NFKC-normalised (``ｅｖａｌ`` is ``eval``)."""
    return name if name.isascii() else unicodedata.normalize("NFKC", name)


def is_dunder(name: str) -> bool:
    """True for ``__x__`` names (at least one character between the underscores)."""
    return len(name) > 4 and name.startswith("__") and name.endswith("__")


def attribute_rule(name: str) -> str | None:
    """The rule an access to attribute ``name`` breaks, or None when it is allowed.

    ``name`` is normalised first, so it may come from a string literal.
    """
    name = normalize(name)
    if name in RAW_MEMORY_PROTOCOLS or name in RAW_MEMORY_ATTRIBUTES:
        return "raw-memory"
    if name in CLASS_FACTORY_ATTRIBUTES:
        return "class-factory"
    if is_dunder(name):
        return None if name in SAFE_DUNDER_ATTRIBUTES else "dunder-attribute"
    if name in FRAME_ATTRIBUTES:
        return "frame-attribute"
    if name in INTROSPECTION_ATTRIBUTES:
        return "introspection-attribute"
    if (
        name.lstrip("_") in MODULE_ATTRIBUTES
        or name in MODULE_GLOBALS_ATTRIBUTES
        or name in PACKAGE_INTERNALS
    ):
        return "module-attribute"
    if name in UNPICKLING_ATTRIBUTES or "pickle" in name.lower():
        return "unpickling"
    if name in DYNAMIC_IMPORT_ATTRIBUTES:
        return "dynamic-import"
    if name in STRING_EVALUATION_ATTRIBUTES:
        return "string-evaluation"
    return None
