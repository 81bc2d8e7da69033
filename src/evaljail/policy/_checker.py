"""The AST checker behind :func:`evaljail.policy.analysis.analyze`.

One iterative pass over the tree (no recursion, so no depth can overflow the Python stack) that

- measures nesting and stops at ``policy.limits.max_nesting``;
- checks every node, including decorators, default values, annotations, class bases and
  keywords, which it evaluates in the enclosing scope exactly as Python does;
- records name bindings per scope, so that a blocked builtin *shadowed by a function-local
  binding* (``def f(input): return input.strip()``) is not mistaken for the builtin.

Only function, lambda and comprehension scopes are trusted to shadow a builtin: a local binding
there makes the name local for the whole scope, so the builtin can never be reached through it.
Module and class bindings are not trusted (``if False: input = 1`` leaves ``input`` the builtin).

A class body looks names up in the namespace its metaclass's ``__prepare__`` returns, and a
mapping with ``__missing__`` can make *any* name there mean anything. So in a class body whose
metaclass is not certainly ``type`` (it has a ``metaclass=`` keyword or a base that is not an
untouched builtin type), no name is trusted to be the builtin or a module-level constant:
``case str(x)``, ``super().__init__`` and ``FMT.format(...)`` are judged as if the name were
unknown.

Checks that need the whole tree (shadowing, module-level string constants) are deferred to the
end of the pass. Findings carry the AST position (``col`` as a UTF-8 byte offset); the caller
turns them into :class:`~evaljail.types.Violation` values.
"""

from __future__ import annotations

import ast
import builtins
import enum
import functools
import importlib
import sys
import types
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ..errors import SourceTooComplexError
from ._format import field_attributes, format_attributes
from ._policy import Policy
from ._rules import (
    ATTRIBUTE_FUNCTIONS,
    ATTRIBUTE_HOOKS,
    BUILTIN_HINTS,
    FORMAT_METHODS,
    ISINSTANCE_HOOKS,
    MACHINERY_NAMES,
    MODULE_ATTRIBUTES,
    MODULE_GLOBALS_ATTRIBUTES,
    PACKAGE_INTERNALS,
    RAW_MEMORY_PROTOCOLS,
    RULES,
    SAFE_DUNDER_NAMES,
    SELF_MATCHING_TYPES,
    SUPER_DUNDER_METHODS,
    attribute_rule,
    is_dunder,
    normalize,
)

__all__ = ["Checker", "Finding"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Finding:
    """A violation before its column is converted from UTF-8 bytes to characters."""

    rule_id: str
    line: int
    col_offset: int  #: 0-based UTF-8 byte offset, as the AST gives it
    message: str
    hint: str


class _Kind(enum.Enum):
    MODULE = "module"
    CLASS = "class"
    FUNCTION = "function"
    COMPREHENSION = "comprehension"


class _Scope:
    """Names bound in one scope and names it declares ``global``."""

    __slots__ = ("bases", "bound", "declared_global", "kind", "parent")

    def __init__(
        self, kind: _Kind, parent: _Scope | None, bases: tuple[str, ...] | None = ()
    ) -> None:
        self.kind = kind
        self.parent = parent
        self.bound: set[str] = set()
        self.declared_global: set[str] = set()
        #: A class body's bases when each is a builtin type's name (the metaclass is ``type``
        #: unless one of those names is rebound); None: the metaclass may be anything.
        self.bases = bases

    def binding_scope(self) -> _Scope:
        """Where a walrus binds: the nearest scope that is not a comprehension."""
        scope = self
        while scope.kind is _Kind.COMPREHENSION and scope.parent is not None:
            scope = scope.parent
        return scope

    def may_be_builtin(self, name: str) -> bool:
        """False only when a function-like scope is certain to shadow the builtin ``name``."""
        scope: _Scope | None = self
        while scope is not None:
            if name in scope.declared_global:  # a class body's ``global`` too
                return True
            if scope.kind in (_Kind.FUNCTION, _Kind.COMPREHENSION) and name in scope.bound:
                return False
            scope = scope.parent
        return True


_ATTRIBUTE_MESSAGES: dict[str, str] = {
    "dunder-attribute": "access to dunder attribute {name!r}",
    "frame-attribute": "access to frame/generator/traceback/code internal {name!r}",
    "introspection-attribute": "access to introspection attribute {name!r}",
    "module-attribute": "access to blocked module {name!r} through an attribute",
    "dynamic-import": "{name!r} imports modules by run-time name",
    "string-evaluation": "{name!r} evaluates strings as code",
    "unpickling": "{name!r} loads pickles, which run any code they name",
    "raw-memory": "{name!r} reads and writes memory at any address",
    "class-factory": "{name!r} makes a class from names given at run time",
}

#: Format strings given to ``matplotlib.ticker.StrMethodFormatter`` (and the formatters that
#: ``set_major_formatter("...")`` builds from a string) go to ``str.format`` unchecked.
_FORMAT_GADGETS = frozenset({"StrMethodFormatter"})

#: What numpy's and pandas' raw-memory protocols are.
_RAW = "a protocol through which numpy and pandas read and write memory at any address"

#: The protocol numpy looks up on any object it is given.
_RAW_NAME = "'__array_interface__'"

#: Builtins that take a class and only compare it, test against it or print it.
_TYPE_CONSUMERS = frozenset({"isinstance", "issubclass", "print", "str", "repr", "id", "hash"})

#: ``numpy.load(file, mmap_mode, allow_pickle)``: the third positional argument unpickles.
_LOAD_FUNCTIONS = frozenset({"load"})

#: ``case C(x)`` reads ``subject.<C.__match_args__[0]>``: the names are attribute names.
_MATCH_ARGS = "__match_args__"

#: Fields that never hold a node worth visiting (contexts, operators, plain values).
_LEAF_FIELDS = frozenset(
    {"ctx", "op", "ops", "type_comment", "kind", "conversion", "is_async", "level", "id", "attr"}
)

_Handler = Callable[[ast.AST, int, _Scope], None]


def _attribute_message(rule: str, name: str) -> str:
    if rule == "module-attribute" and name in MODULE_GLOBALS_ATTRIBUTES:
        return f"{name!r} reads and writes the globals of any loaded module named by a string"
    if rule == "module-attribute" and name in PACKAGE_INTERNALS:
        return f"access to {name!r}, an allowed package's internals"
    return _ATTRIBUTE_MESSAGES[rule].format(name=name)


def _str_constant(node: ast.AST | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def _is_super_call(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "super"
    )


#: Builtin classes whose metaclass is ``type`` (whose namespace is a plain dict).
_BUILTIN_TYPES = frozenset(name for name, value in vars(builtins).items() if type(value) is type)


def _single_argument(call: ast.Call) -> bool:
    """``f(x)``: one positional argument, not unpacked, no keywords."""
    return len(call.args) == 1 and not isinstance(call.args[0], ast.Starred) and not call.keywords


def _plain_bases(node: ast.ClassDef) -> tuple[str, ...] | None:
    """The names of ``node``'s bases if its metaclass is ``type`` unless one of them is
    rebound (each base a builtin type's name, no ``metaclass=``); None: it may be anything."""
    if any(k.arg is None or k.arg == "metaclass" for k in node.keywords):
        return None
    if not all(isinstance(b, ast.Name) and b.id in _BUILTIN_TYPES for b in node.bases):
        return None
    return tuple(b.id for b in node.bases if isinstance(b, ast.Name))


class Checker:
    """Run every rule over one parsed module. Use once: ``Checker(policy).run(tree)``."""

    def __init__(self, policy: Policy) -> None:
        self._policy = policy
        self._max_depth = policy.limits.max_nesting
        self._watched = policy.blocked_builtins | ATTRIBUTE_FUNCTIONS
        self.findings: list[Finding] = []
        self.imports: set[str] = set()
        self._stack: list[tuple[ast.AST, int, _Scope]] = []
        self._callee: dict[int, ast.Call] = {}  # id(call.func) -> call
        self._name_uses: list[tuple[ast.Name, _Scope]] = []
        #: (where, method, names one of which must be a constant, scope they are read in)
        self._pending_formats: list[tuple[ast.AST, str, tuple[ast.Name, ...], _Scope]] = []
        self._binding_counts: Counter[str] = Counter()
        self._string_assignments: dict[str, str] = {}  # NAME = "literal", any scope
        self._star_import = False  # ``from m import *`` binds names nobody can count
        self._module_names: dict[str, str] = {}  # name -> module it was bound to by an import
        self._chains: list[ast.Attribute] = []  # attribute chains rooted at a plain name
        self._self_matching: list[tuple[ast.Name, _Scope]] = []  # ``case str(s)``, unless rebound
        self._super_dunders: list[tuple[ast.Attribute, _Scope]] = []  # ``super().__init__``
        self._format_fields: dict[tuple[str, str], list[tuple[str, str]]] = {}
        #: numpy may be importable: attribute hooks and run-time classes are refused
        self._beyond_core = policy.beyond_core
        self._type_names: dict[int, _Scope] = {}  # id(Name 'type' read) -> its scope
        self._fields: dict[type[ast.AST], tuple[str, ...]] = {}
        self._handlers: dict[type[ast.AST], _Handler] = {
            ast.FunctionDef: self._function,  # type: ignore[dict-item]
            ast.AsyncFunctionDef: self._function,  # type: ignore[dict-item]
            ast.Lambda: self._lambda,  # type: ignore[dict-item]
            ast.ClassDef: self._class,  # type: ignore[dict-item]
            ast.ListComp: self._comprehension,  # type: ignore[dict-item]
            ast.SetComp: self._comprehension,  # type: ignore[dict-item]
            ast.GeneratorExp: self._comprehension,  # type: ignore[dict-item]
            ast.DictComp: self._comprehension,  # type: ignore[dict-item]
            ast.NamedExpr: self._named_expr,  # type: ignore[dict-item]
            ast.Name: self._name,  # type: ignore[dict-item]
            ast.Global: self._global,  # type: ignore[dict-item]
            ast.Nonlocal: self._global,  # type: ignore[dict-item]
            ast.Import: self._import,  # type: ignore[dict-item]
            ast.ImportFrom: self._import_from,  # type: ignore[dict-item]
            ast.ExceptHandler: self._except_handler,  # type: ignore[dict-item]
            ast.MatchAs: self._match_capture,  # type: ignore[dict-item]
            ast.MatchStar: self._match_capture,  # type: ignore[dict-item]
            ast.MatchMapping: self._match_mapping,  # type: ignore[dict-item]
            ast.MatchClass: self._match_class,  # type: ignore[dict-item]
            ast.Attribute: self._attribute,  # type: ignore[dict-item]
            ast.Call: self._call,  # type: ignore[dict-item]
            ast.Assign: self._assign,  # type: ignore[dict-item]
            ast.AnnAssign: self._assign,  # type: ignore[dict-item]
            ast.AugAssign: self._assign,  # type: ignore[dict-item]
            ast.Dict: self._dict,  # type: ignore[dict-item]
            ast.Constant: self._constant_node,  # type: ignore[dict-item]
            ast.Pass: self._leaf,
            ast.Break: self._leaf,
            ast.Continue: self._leaf,
        }

    # -- driver -------------------------------------------------------------------------------

    def run(self, tree: ast.Module) -> list[Finding]:
        """Check ``tree``; raise SourceTooComplexError when it nests deeper than the limit."""
        module = _Scope(_Kind.MODULE, None)
        self._stack.append((tree, 0, module))
        handlers = self._handlers
        limit = self._max_depth
        while self._stack:
            node, depth, scope = self._stack.pop()
            if depth > limit:
                raise SourceTooComplexError(
                    f"source nests deeper than {limit} levels (line {getattr(node, 'lineno', 0)})",
                    details={"max_nesting": limit, "line": getattr(node, "lineno", 0)},
                )
            handler = handlers.get(type(node))
            if handler is None:
                self._children(node, depth, scope)
            else:
                handler(node, depth, scope)
        self._resolve_names()
        self._resolve_formats()
        self._resolve_module_chains()
        self._resolve_class_patterns()
        self._resolve_super_dunders()
        if self._type_names:
            self._resolve_class_factories(tree)
        return self.findings

    def _push(self, node: ast.AST | None, depth: int, scope: _Scope) -> None:
        if node is not None:
            self._stack.append((node, depth + 1, scope))

    def _children(self, node: ast.AST, depth: int, scope: _Scope) -> None:
        push = self._stack.append
        fields = self._fields.get(type(node))
        if fields is None:
            fields = tuple(f for f in node._fields if f not in _LEAF_FIELDS)
            self._fields[type(node)] = fields
        depth += 1
        for field in fields:
            value = getattr(node, field, None)
            if type(value) is list:
                for item in value:
                    if isinstance(item, ast.AST):
                        push((item, depth, scope))
            elif isinstance(value, ast.AST):
                push((value, depth, scope))

    def _leaf(self, node: ast.AST, depth: int, scope: _Scope) -> None:
        """Nodes without children worth checking (pass, break, continue)."""

    def _constant_node(self, node: ast.Constant, depth: int, scope: _Scope) -> None:
        """Any string literal may end up where a library formats it, names an attribute with
        it or imports by it (``StrMethodFormatter("{x.__class__}")``, a dict key
        ``"__array_interface__"``, a backend ``"module://os"``): check them all."""
        value = node.value
        if type(value) is not str:
            return
        if "{" in value:
            self._check_format(value, node, "format")
        if value.startswith("__") and normalize(value) in RAW_MEMORY_PROTOCOLS:
            self._report("raw-memory", node, f"the string {normalize(value)!r} names {_RAW}")
        if "module://" in value:
            self._report(
                "dynamic-import", node, "'module://' names a module for matplotlib to import"
            )

    # -- findings -----------------------------------------------------------------------------

    def _report(self, rule_id: str, node: ast.AST, message: str, hint: str | None = None) -> None:
        line, col = getattr(node, "lineno", 1), getattr(node, "col_offset", 0)
        if isinstance(node, ast.Attribute) and node.end_lineno and node.end_col_offset:
            # Point at the attribute name, not at the start of ``a.b.c.__class__``.
            line = node.end_lineno
            col = max(node.end_col_offset - len(node.attr.encode("utf-8")), 0)
        self.findings.append(
            Finding(
                rule_id=rule_id,
                line=line,
                col_offset=col,
                message=message,
                hint=RULES[rule_id].hint if hint is None else hint,
            )
        )

    def _check_attribute_name(self, name: str, node: ast.AST, context: str = "") -> None:
        rule = attribute_rule(name)
        if rule is not None:
            self._report(rule, node, f"{context}{_attribute_message(rule, normalize(name))}")

    def _bind(self, name: str, scope: _Scope, node: ast.AST) -> None:
        """Record a binding of ``name`` in ``scope``; interpreter internals may not be bound."""
        if name in MACHINERY_NAMES:
            self._report("blocked-name", node, f"binding the interpreter-internal name {name!r}")
        elif name in ISINSTANCE_HOOKS:
            self._report("isinstance-hook", node, f"defining {name!r}")
        elif name in RAW_MEMORY_PROTOCOLS:
            self._report("raw-memory", node, f"defining {name!r}, {_RAW}")
        elif name in ATTRIBUTE_HOOKS:
            self._attribute_hook(name, node)
        scope.bound.add(name)
        self._binding_counts[name] += 1

    def _attribute_hook(self, name: str, node: ast.AST) -> None:
        if self._beyond_core:
            self._report(
                "attribute-hook",
                node,
                f"defining {name!r}: numpy looks {_RAW_NAME} up through it, so it could answer "
                "a name built at run time with an address to read and write",
            )

    def _constant(self, node: ast.AST, scope: _Scope) -> str | None:
        """A string literal, or a name bound exactly once in the whole source, to a literal,
        read where names mean what they are bound to (``scope``: where ``node`` is evaluated).

        Such a name can only ever hold that literal (or be unbound), whatever scope reads it,
        except in a class body whose namespace may be a mapping of the source's own making.
        """
        literal = _str_constant(node)
        if literal is not None:
            return literal
        if (
            isinstance(node, ast.Name)
            and not self._star_import
            and self._binding_counts[node.id] == 1
            and self._plain_namespace(scope)
        ):
            return self._string_assignments.get(node.id)
        return None

    def _plain_namespace(self, scope: _Scope) -> bool:
        """True when names read in ``scope`` are looked up in plain dicts (the module's, a
        class's made by ``type``) or fast locals: not in a metaclass's ``__prepare__`` mapping.
        Known only once every binding has been counted."""
        current: _Scope | None = scope
        while current is not None and current.kind is _Kind.CLASS:
            bases = current.bases
            if bases is None:
                return False
            if not bases:
                return True  # ``class A:``: type's namespace; outer scopes are not consulted
            if self._star_import or any(self._binding_counts[b] for b in bases):
                return False
            current = current.parent  # where the bases' names were looked up
        return True

    def _builtin(self, name: str, scope: _Scope) -> bool:
        """True when ``name`` read in ``scope`` is certainly the builtin of that name."""
        return (
            not self._star_import
            and not self._binding_counts[name]
            and scope.may_be_builtin(name)
            and self._plain_namespace(scope)
        )

    # -- scopes -------------------------------------------------------------------------------

    def _arguments(self, args: ast.arguments, depth: int, outer: _Scope, inner: _Scope) -> None:
        for default in args.defaults:
            self._push(default, depth, outer)
        for kw_default in args.kw_defaults:
            self._push(kw_default, depth, outer)
        for arg in (*args.posonlyargs, *args.args, args.vararg, *args.kwonlyargs, args.kwarg):
            if arg is not None:
                self._bind(arg.arg, inner, arg)
                self._push(arg.annotation, depth, outer)

    def _function(
        self, node: ast.FunctionDef | ast.AsyncFunctionDef, depth: int, scope: _Scope
    ) -> None:
        self._bind(node.name, scope, node)
        inner = _Scope(_Kind.FUNCTION, scope)
        for decorator in node.decorator_list:
            self._push(decorator, depth, scope)
        self._arguments(node.args, depth, scope, inner)
        self._push(node.returns, depth, scope)
        for param in getattr(node, "type_params", ()):  # Python 3.12+: ``def f[T]()``
            self._bind(param.name, inner, param)
            self._push(param, depth, inner)
        for stmt in node.body:
            self._push(stmt, depth, inner)

    def _lambda(self, node: ast.Lambda, depth: int, scope: _Scope) -> None:
        inner = _Scope(_Kind.FUNCTION, scope)
        self._arguments(node.args, depth, scope, inner)
        self._push(node.body, depth, inner)

    def _class(self, node: ast.ClassDef, depth: int, scope: _Scope) -> None:
        self._bind(node.name, scope, node)
        inner = _Scope(_Kind.CLASS, scope, _plain_bases(node))
        for expr in (*node.decorator_list, *node.bases, *node.keywords):
            self._push(expr, depth, scope)
        for param in getattr(node, "type_params", ()):  # Python 3.12+: ``class C[T]:``
            self._bind(param.name, inner, param)
            self._push(param, depth, inner)
        for stmt in node.body:
            self._push(stmt, depth, inner)

    def _comprehension(
        self,
        node: ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp,
        depth: int,
        scope: _Scope,
    ) -> None:
        inner = _Scope(_Kind.COMPREHENSION, scope)
        for index, generator in enumerate(node.generators):
            # The first iterable is evaluated in the enclosing scope, the rest inside.
            self._push(generator.iter, depth, scope if index == 0 else inner)
            self._push(generator.target, depth, inner)
            for condition in generator.ifs:
                self._push(condition, depth, inner)
        if isinstance(node, ast.DictComp):
            self._push(node.key, depth, inner)
            self._push(node.value, depth, inner)
        else:
            self._push(node.elt, depth, inner)

    def _named_expr(self, node: ast.NamedExpr, depth: int, scope: _Scope) -> None:
        # The grammar only allows a plain name as the target of ``:=``.
        self._bind(node.target.id, scope.binding_scope(), node.target)
        self._push(node.value, depth, scope)

    def _name(self, node: ast.Name, depth: int, scope: _Scope) -> None:
        name = node.id
        if isinstance(node.ctx, ast.Load):
            if (
                is_dunder(name)
                and name not in SAFE_DUNDER_NAMES
                and name not in self._policy.blocked_builtins
            ):
                self._report("blocked-name", node, f"name {name!r} is an interpreter internal")
            if name in self._watched:
                self._name_uses.append((node, scope))
            if name == "type" and self._beyond_core:
                self._type_names[id(node)] = scope
        else:
            self._bind(name, scope, node)

    def _global(self, node: ast.Global | ast.Nonlocal, depth: int, scope: _Scope) -> None:
        for name in node.names:
            if name in MACHINERY_NAMES:
                self._report(
                    "blocked-name", node, f"declaring the interpreter-internal name {name!r}"
                )
            if isinstance(node, ast.Global):
                scope.declared_global.add(name)
            else:
                scope.bound.add(name)

    def _except_handler(self, node: ast.ExceptHandler, depth: int, scope: _Scope) -> None:
        if node.name:
            self._bind(node.name, scope, node)
        self._children(node, depth, scope)

    def _match_capture(self, node: ast.MatchAs | ast.MatchStar, depth: int, scope: _Scope) -> None:
        if node.name:
            self._bind(node.name, scope, node)
        self._children(node, depth, scope)

    def _match_mapping(self, node: ast.MatchMapping, depth: int, scope: _Scope) -> None:
        if node.rest:
            self._bind(node.rest, scope, node)
        self._children(node, depth, scope)

    def _match_class(self, node: ast.MatchClass, depth: int, scope: _Scope) -> None:
        # ``case C(attr=p)`` reads ``subject.attr``: a getattr in disguise.
        for name in node.kwd_attrs:
            self._check_attribute_name(name, node, f"class pattern keyword {name}=: ")
            if normalize(name) in FORMAT_METHODS:
                self._report(
                    "dynamic-format-string",
                    node,
                    f"class pattern keyword {name}= captures a format method; the format "
                    "string it is given is not checked",
                )
        # ``case C(p)`` reads ``subject.<C.__match_args__[0]>``. __match_args__ can be made in
        # too many ways (NamedTuple fields, loops, type() with a built dict ...) and isinstance
        # faked in too many (ABC.register, __subclasshook__ ...) to follow: only builtin types,
        # which bind the subject itself, take a positional sub-pattern.
        if node.patterns:
            cls = node.cls
            if (
                isinstance(cls, ast.Name)
                and cls.id in SELF_MATCHING_TYPES
                and len(node.patterns) == 1
                and scope.may_be_builtin(cls.id)
            ):
                self._self_matching.append((cls, scope))
            else:
                self._report(
                    "class-pattern",
                    node.patterns[0],
                    f"positional sub-pattern in 'case {ast.unparse(cls)}(...)'",
                )
        self._children(node, depth, scope)

    def _assign(
        self, node: ast.Assign | ast.AnnAssign | ast.AugAssign, depth: int, scope: _Scope
    ) -> None:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        literal = _str_constant(node.value)
        plain = not isinstance(node, ast.AugAssign)
        if plain and len(targets) == 1 and isinstance(targets[0], ast.Name) and literal is not None:
            self._string_assignments[targets[0].id] = literal
        if node.value is not None and any(
            isinstance(t, ast.Name) and t.id == _MATCH_ARGS for t in targets
        ):
            self._check_match_args(node.value)
        self._children(node, depth, scope)

    def _dict(self, node: ast.Dict, depth: int, scope: _Scope) -> None:
        # A class namespace built by hand: type("C", (), {"__match_args__": (...)}).
        for key, value in zip(node.keys, node.values, strict=True):
            name = _str_constant(key)
            if name == _MATCH_ARGS:
                self._check_match_args(value)
            elif name in ISINSTANCE_HOOKS:
                self._report("isinstance-hook", key or node, f"defining {name!r}")
            elif name in ATTRIBUTE_HOOKS:
                self._attribute_hook(name, key or node)
            # a raw-memory protocol name as a key is reported with every string literal
        self._children(node, depth, scope)

    def _check_match_args(self, value: ast.AST) -> None:
        """``__match_args__`` must be a literal tuple of allowed attribute names."""
        entries = value.elts if isinstance(value, ast.Tuple | ast.List) else None
        if entries is None:
            self._report("dynamic-attribute", value, "__match_args__ that is not a literal tuple")
            return
        for entry in entries:
            name = _str_constant(entry)
            if name is None:
                self._report(
                    "dynamic-attribute", entry, "__match_args__ entry that is not a string literal"
                )
            else:
                self._check_attribute_name(name, entry, "__match_args__ entry: ")

    # -- imports ------------------------------------------------------------------------------

    def _check_module(self, module: str, node: ast.AST) -> None:
        parts = module.split(".")
        blocked = self._policy.blocked_modules
        for end in range(1, len(parts) + 1):
            prefix = ".".join(parts[:end])
            if prefix in blocked:
                self._report("import-blocked", node, f"module {prefix!r} is always blocked")
                return
        for part in parts[1:]:
            if attribute_rule(part) is not None or part.lstrip("_") in MODULE_ATTRIBUTES:
                self._report("import-blocked", node, f"submodule {part!r} of {module!r} is blocked")
                return
        if not self._policy.allows_import(module):
            allowed = ", ".join(sorted(self._policy.allowed_imports))
            self._report(
                "import-not-allowed",
                node,
                f"module {module!r} is not on the import allow-list",
                f"Allowed modules: {allowed}. {RULES['import-not-allowed'].hint}",
            )

    def _import(self, node: ast.Import, depth: int, scope: _Scope) -> None:
        for alias in node.names:
            self.imports.add(alias.name)
            self._check_module(alias.name, alias)
            self._bind(alias.asname or alias.name.split(".")[0], scope, alias)
            bound = alias.name if alias.asname else alias.name.split(".")[0]
            self._module_names[alias.asname or bound] = bound

    def _import_from(self, node: ast.ImportFrom, depth: int, scope: _Scope) -> None:
        module = node.module or ""
        names = ", ".join(a.name for a in node.names)
        if node.level:
            dotted = "." * node.level + module
            self.imports.add(dotted)
            self._report("relative-import", node, f"relative import 'from {dotted} import {names}'")
        elif module == "__future__":
            self.imports.add(module)  # a compiler directive, not a run-time import
        else:
            self.imports.add(module)
            self._check_module(module, node)
            for alias in node.names:
                if alias.name != "*":
                    self._check_attribute_name(
                        alias.name, alias, f"'from {module} import {alias.name}': "
                    )
                    self._check_imported_value(module, alias)
        for alias in node.names:
            if alias.name == "*":
                self._star_import = True
            else:
                self._bind(alias.asname or alias.name, scope, alias)

    # -- attributes, calls, format strings ----------------------------------------------------

    def _attribute(self, node: ast.Attribute, depth: int, scope: _Scope) -> None:
        name = node.attr
        root = node.value
        while isinstance(root, ast.Attribute):
            root = root.value
        if isinstance(root, ast.Name):
            self._chains.append(node)
        if name in SUPER_DUNDER_METHODS and _is_super_call(node.value):
            self._super_dunders.append((node, scope))  # allowed if ``super`` is the builtin
        else:
            self._check_attribute_name(name, node)
        if (
            isinstance(node.value, ast.Name)
            and node.value.id == "builtins"
            and name in self._policy.blocked_builtins
        ):
            self._report(
                "blocked-builtin",
                node,
                f"'builtins.{name}' is a blocked builtin",
                BUILTIN_HINTS.get(name),
            )
        if name in FORMAT_METHODS:
            self._format_method(node, scope)
        self._push(node.value, depth, scope)

    def _call(self, node: ast.Call, depth: int, scope: _Scope) -> None:
        self._callee[id(node.func)] = node
        for keyword in node.keywords:  # dict(__match_args__=...), Meta("C", (), {}, ...)
            if keyword.arg == _MATCH_ARGS:
                self._check_match_args(keyword.value)
            elif keyword.arg in ISINSTANCE_HOOKS:
                self._report("isinstance-hook", keyword, f"defining {keyword.arg!r}")
            elif keyword.arg in RAW_MEMORY_PROTOCOLS:
                self._report("raw-memory", keyword, f"defining {keyword.arg!r}, {_RAW}")
            elif keyword.arg in ATTRIBUTE_HOOKS:
                self._attribute_hook(keyword.arg, keyword)
            elif (
                keyword.arg is not None
                and "pickle" in keyword.arg.lower()
                and not (isinstance(keyword.value, ast.Constant) and keyword.value.value is False)
            ):
                self._report("unpickling", keyword, f"{keyword.arg}= lets a loader unpickle")
        func = node.func
        called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        if called not in ATTRIBUTE_FUNCTIONS:  # those check their name argument themselves
            for argument in (*node.args, *(k.value for k in node.keywords)):
                self._attribute_name_argument(argument, called)
        if called in _LOAD_FUNCTIONS and (
            len(node.args) >= 3 or any(k.arg is None for k in node.keywords)
        ):
            self._report(
                "unpickling",
                node,
                f"{called}() with a third positional argument or unpacked keywords "
                "(numpy.load's allow_pickle)",
            )
        elif called in _FORMAT_GADGETS:
            first = node.args[0] if node.args else None
            if isinstance(first, ast.Name):  # maybe a constant; known at the end
                self._pending_formats.append((node, f"{called}()", (first,), scope))
            elif _str_constant(first) is None:  # a literal is checked like every literal
                self._report(
                    "dynamic-format-string",
                    node,
                    f"{called}() with a format string that is not a literal",
                )
        self._children(node, depth, scope)

    def _attribute_name_argument(self, argument: ast.AST, called: str | None) -> None:
        """``s.agg("__class__")``, ``helper(fn, "__getattribute__", "__globals__")``: library
        functions that look an attribute up by a name they are given are too many to list, so
        a dunder or frame-internal name passed to any call is reported (``"__main__"`` aside).
        """
        name = _str_constant(argument)
        if name is None or name == "__main__":
            return
        rule = attribute_rule(name)
        if rule in ("dunder-attribute", "frame-attribute"):
            message = _attribute_message(rule, normalize(name))
            self._report(rule, argument, f"{message}, as an argument to {called or 'a call'}()")

    def _format_method(self, node: ast.Attribute, scope: _Scope) -> None:
        """``<fmt>.format(...)``, ``str.format(<fmt>, ...)``, ``Formatter().vformat(<fmt>)``."""
        receiver = _str_constant(node.value)
        if receiver is not None:
            self._check_format(receiver, node.value, node.attr)
            return
        call = self._callee.get(id(node))
        first = call.args[0] if call is not None and call.args else None
        argument = _str_constant(first)
        if first is not None and argument is not None:
            self._check_format(argument, first, node.attr)
            return
        # Maybe a module-level constant; known only once the whole tree has been seen.
        candidates = tuple(n for n in (node.value, first) if isinstance(n, ast.Name))
        self._pending_formats.append((node, f".{node.attr}", candidates, scope))

    def _check_format(self, fmt: str, node: ast.AST, method: str) -> None:
        key = (fmt, "get_field" if method == "get_field" else "format")
        bad = self._format_fields.get(key)  # one constant may be used many times: parse once
        if bad is None:
            fields: Iterable[tuple[str, str]]
            if method == "get_field":  # Formatter().get_field("0.attr", args, kwargs)
                fields = [(fmt, name) for name in field_attributes(fmt)]
            else:
                fields = format_attributes(fmt)
            bad = [(f, n) for f, n in fields if attribute_rule(n) is not None]
            self._format_fields[key] = bad
        for field, name in bad:
            self._report(
                "format-string-attribute",
                node,
                f"format field '{{{field}}}' reads attribute {normalize(name)!r}",
            )

    # -- what allowed modules really hold ------------------------------------------------------

    def _forbidden(self, value: object) -> str | None:
        """Why ``value``, found inside an allowed module, may not be touched (None: it may)."""
        if isinstance(value, types.ModuleType):
            if self._policy.allows_import(value.__name__):
                return None
            return f"the module {value.__name__!r}, which is not on the import allow-list"
        name = _blocked_builtin_objects(self._policy.blocked_builtins).get(id(value))
        return None if name is None else f"the blocked builtin {name!r}"

    def _check_imported_value(self, module: str, alias: ast.alias) -> None:
        """``from json import codecs``: what the name really is in the allowed module."""
        if not self._policy.allows_import(module):
            return
        holder = _stdlib_module(module)
        value = getattr(holder, alias.name, None) if holder is not None else None
        if value is None:
            return
        why = self._forbidden(value)
        if why is not None:
            if attribute_rule(alias.name) is None:  # else its name was reported already
                self._report(
                    "module-attribute", alias, f"'from {module} import {alias.name}' gives {why}"
                )
        elif isinstance(value, types.ModuleType):
            self._module_names[alias.asname or alias.name] = value.__name__

    def _resolve_module_chains(self) -> None:
        """``re.enum.bltns``, ``typing.types``: follow attribute chains that start at an imported
        (standard-library, allowed) module through the real objects, and report the first step
        that reaches a module off the allow-list or a blocked builtin, under whatever name the
        library keeps it. Names bound otherwise (assignments, arguments) are not followed: the
        name-based rules and the jail's other layers cover those.

        A chain's outer nodes were recorded before its inner ones, so in reverse each node
        extends an already resolved one by a single step: linear in the source's size."""
        resolved: dict[int, object] = {}  # id(node) -> what it names; absent: not followed
        for node in reversed(self._chains):
            base = node.value
            value: object
            if isinstance(base, ast.Name):
                module = self._module_names.get(base.id)
                if module is None or not self._policy.allows_import(module):
                    continue
                value = _stdlib_module(module)
                if value is None:
                    continue
            elif id(base) in resolved:
                value = resolved[id(base)]
            else:
                continue
            if is_dunder(node.attr):
                continue  # reported by the dunder rule; never evaluated here
            try:
                value = getattr(value, node.attr)
            except Exception:  # noqa: S112 - an AttributeError at run time: nothing to follow
                continue
            why = self._forbidden(value)
            if why is None:
                resolved[id(node)] = value
            elif attribute_rule(node.attr) is None:  # else its name was reported already
                self._report("module-attribute", node, f"'{ast.unparse(node)}' is {why}")

    def _resolve_class_patterns(self) -> None:
        """``case str(s)`` is the builtin ``str`` only if no binding anywhere renames it."""
        for cls, scope in self._self_matching:
            if not self._builtin(cls.id, scope):
                self._report(
                    "class-pattern",
                    cls,
                    f"positional sub-pattern in 'case {cls.id}(...)', and {cls.id!r} may not "
                    "be the builtin here (it is rebound in this source, or read in a class "
                    "body whose metaclass may map names to anything)",
                )

    def _resolve_super_dunders(self) -> None:
        """``super().__init__`` is exempt from the dunder rule only if ``super`` is the
        builtin: ``super = lambda: obj`` (or a class namespace) makes it ``obj.__init__``."""
        for node, scope in self._super_dunders:
            if not self._builtin("super", scope):
                self._check_attribute_name(node.attr, node, "'super' may not be the builtin here: ")

    def _resolve_class_factories(self, tree: ast.Module) -> None:
        """With numpy importable, a class made at run time can carry a computed
        ``__array_interface__`` (``type("C", (), {k: v})``), and so can one made by any
        metaclass. ``type`` is allowed only as ``type(x)`` with one argument (or in
        ``isinstance``, ``issubclass`` and ``is``), and what ``type(x)`` returns (maybe a
        metaclass: ``type(int)`` is ``type``) only compared, printed, tested against or read an
        attribute of: never called, subclassed, stored or passed on. Shadowing is honoured
        where it is certain (a function-local ``type``)."""
        candidates = {
            key
            for key, scope in self._type_names.items()
            if scope.may_be_builtin("type") or not self._plain_namespace(scope)
        }
        if not candidates:
            return
        compared: set[int] = set()  # type(x) calls inside a class-only comparison's tuples
        for parent in ast.walk(tree):  # breadth first: a comparison before its operands
            if isinstance(parent, ast.Compare) and self._type_comparison(parent):
                stack: list[ast.AST] = [parent.left, *parent.comparators]
                while stack:
                    operand = stack.pop()
                    if isinstance(operand, ast.Tuple | ast.List | ast.Set):
                        stack.extend(operand.elts)
                    compared.add(id(operand))
            for child in ast.iter_child_nodes(parent):
                if id(child) in compared:
                    continue
                if id(child) in candidates:
                    self._type_name_use(parent, child)
                elif (
                    isinstance(child, ast.Call)
                    and id(child.func) in candidates
                    and _single_argument(child)
                ):
                    self._type_result_use(parent, child)

    def _type_name_use(self, parent: ast.AST, node: ast.AST) -> None:
        if isinstance(parent, ast.Call) and parent.func is node:
            if _single_argument(parent):
                return
            unpacked = any(isinstance(a, ast.Starred) for a in parent.args) or any(
                k.arg is None for k in parent.keywords
            )
            how = "unpacked arguments" if unpacked else f"{len(parent.args)} arguments"
            self._report(
                "class-factory",
                parent,
                f"type() with {how} makes a class from a namespace built at run time, which "
                f"can answer {_RAW_NAME} with an address to read and write",
            )
            return
        if self._type_test(parent, node) or (
            isinstance(parent, ast.Compare)
            and all(isinstance(op, ast.Is | ast.IsNot) for op in parent.ops)
        ):
            return
        self._report(
            "class-factory",
            node,
            "'type' used as a value (stored, passed, called through another name or "
            "subclassed): it makes classes from namespaces built at run time",
        )

    def _type_result_use(self, parent: ast.AST, call: ast.Call) -> None:
        if (
            (isinstance(parent, ast.Attribute) and parent.value is call)
            or isinstance(parent, ast.FormattedValue)
            or self._type_test(parent, call)
            or (isinstance(parent, ast.Compare) and self._type_comparison(parent))
        ):
            return
        self._report(
            "class-factory",
            call,
            "the class type(...) returns may be a metaclass (type(int) is type), which makes "
            "classes from namespaces built at run time: compare it, print it or read its "
            "name, but do not call, subclass, store or pass it",
        )

    def _type_test(self, parent: ast.AST, node: ast.AST) -> bool:
        """``node`` is an argument of a builtin that only tests or shows a class
        (``isinstance``, ``print`` ...), a name the source never rebinds."""
        return (
            isinstance(parent, ast.Call)
            and parent.func is not node
            and isinstance(parent.func, ast.Name)
            and parent.func.id in _TYPE_CONSUMERS
            and not self._binding_counts[parent.func.id]
            and not self._star_import
            and any(a is node for a in parent.args)
        )

    def _type_comparison(self, node: ast.Compare) -> bool:
        """``type(x) is y`` never calls anything; ``type(x) == int`` and ``type(x) in (int,
        str)`` call ``type.__eq__`` only when every operand is a class (a user object's
        ``__eq__`` would be handed the class)."""
        if all(isinstance(op, ast.Is | ast.IsNot) for op in node.ops):
            return True
        return all(self._class_expression(o) for o in (node.left, *node.comparators))

    def _class_expression(self, node: ast.AST) -> bool:
        if isinstance(node, ast.Tuple | ast.List | ast.Set):
            return all(self._class_expression(e) for e in node.elts)
        if isinstance(node, ast.Call):
            return id(node.func) in self._type_names and _single_argument(node)
        if isinstance(node, ast.Name):
            return (
                node.id in _BUILTIN_TYPES
                and not self._binding_counts[node.id]
                and not self._star_import
            )
        if isinstance(node, ast.Constant):
            return node.value is None
        root = node
        while isinstance(root, ast.Attribute):
            root = root.value
        return (
            root is not node
            and isinstance(root, ast.Name)
            and root.id in self._module_names
            and self._binding_counts[root.id] == 1
        )

    def _first_forbidden(self, value: object, attrs: list[str]) -> tuple[int, str] | None:
        """Follow ``attrs`` from ``value``: the first step that may not be touched, and why."""
        for position, attr in enumerate(attrs):
            if is_dunder(attr):
                return None  # reported by the dunder rule; never evaluated here
            try:
                value = getattr(value, attr)
            except Exception:
                return None
            why = self._forbidden(value)
            if why is not None:
                return position, why
        return None

    def _resolve_formats(self) -> None:
        for node, method, candidates, scope in self._pending_formats:
            for candidate in candidates:
                value = self._constant(candidate, scope)
                if value is not None:
                    self._check_format(value, candidate, method.strip(".()"))
                    break
            else:
                self._report(
                    "dynamic-format-string",
                    node,
                    f"'{method}' on a format string that is not a literal",
                )

    def _resolve_names(self) -> None:
        blocked = self._policy.blocked_builtins
        for node, scope in self._name_uses:
            name = node.id
            if not scope.may_be_builtin(name):
                continue
            call = self._callee.get(id(node))
            if name in blocked:
                if call is None:
                    self._report(
                        "builtin-alias",
                        node,
                        f"blocked builtin {name!r} used as a value",
                        BUILTIN_HINTS.get(name),
                    )
                else:
                    self._report(
                        "blocked-builtin",
                        node,
                        f"call to blocked builtin {name!r}",
                        BUILTIN_HINTS.get(name),
                    )
            elif call is None:
                self._report(
                    "builtin-alias", node, f"{name!r} used as a value; call it directly instead"
                )
            else:
                self._attribute_call(name, call, scope)

    def _attribute_call(self, function: str, call: ast.Call, scope: _Scope) -> None:
        """``getattr(obj, name, ...)`` and friends: the name must be a safe literal."""
        args = call.args
        unpacked = any(isinstance(a, ast.Starred) for a in args[:2]) or (
            len(args) < 2 and any(k.arg is None for k in call.keywords)
        )
        if unpacked:
            self._report("dynamic-attribute", call, f"{function}() with an unpacked argument list")
            return
        if len(args) < 2:
            return  # a TypeError at run time, nothing is looked up
        literal = self._constant(args[1], scope)
        if literal is None:
            self._report(
                "dynamic-attribute",
                args[1],
                f"{function}() with an attribute name that is not a string literal",
            )
            return
        self._check_attribute_name(literal, args[1], f"{function}(..., {normalize(literal)!r}): ")
        if function == "getattr" and normalize(literal) in FORMAT_METHODS:
            self._report(
                "dynamic-format-string",
                args[1],
                f"getattr(..., {literal!r}) hides the format string the method will be given",
            )
        target = args[0]
        if not isinstance(target, ast.Name) or attribute_rule(literal) is not None:
            return
        module = self._module_names.get(target.id)
        allowed = module is not None and self._policy.allows_import(module)
        holder = _stdlib_module(module) if module is not None and allowed else None
        found = self._first_forbidden(holder, [literal]) if holder is not None else None
        if found is not None:
            self._report(
                "module-attribute", call, f"{function}({target.id}, {literal!r}) is {found[1]}"
            )


#: Standard-library modules never imported to look inside them (they act on import).
_NO_IMPORT = frozenset({"this", "antigravity", "turtle", "turtledemo", "tkinter", "idlelib"})


@functools.lru_cache(maxsize=256)
def _stdlib_module(name: str) -> types.ModuleType | None:
    """The standard-library module ``name``, to see what it holds; None for third-party modules
    (importing them in the host costs too much) and for the few that act on import.

    Only a top-level module is ever imported here; a submodule is used only if its package
    has imported it already, so that source naming ``pkg.__main__`` or a test module cannot
    make the host run it."""
    top = name.split(".")[0]
    if top not in sys.stdlib_module_names or top in _NO_IMPORT:
        return None
    if "." in name:
        return sys.modules.get(name)
    try:
        return importlib.import_module(name)
    except Exception:
        return None


@functools.lru_cache(maxsize=8)
def _blocked_builtin_objects(blocked: frozenset[str]) -> dict[int, str]:
    return {id(getattr(builtins, name)): name for name in blocked if hasattr(builtins, name)}
