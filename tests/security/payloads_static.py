"""Escape payloads that static analysis (layer 1) must reject, one rule id each.

A plain table of ``(id, code, expected_rule)`` so that every layer can reuse it: the static
tests assert ``expected_rule`` is among the findings; the jail tests run the same code with
static analysis switched off. Where a payload is a real attack, it prints :data:`SENTINEL`
only when the attack worked, so a jail test fails exactly when the sentinel shows up.
"""

from __future__ import annotations

SENTINEL = "EVALJAIL-ESCAPED"

_P = f"print({SENTINEL!r})"  # the code an attack tries to run

PAYLOADS: list[tuple[str, str, str]] = [
    # -- imports, every form ----------------------------------------------------------------
    ("import-os", f"import os\nos.system('echo {SENTINEL}')", "import-blocked"),
    ("import-os-path-as", f"import os.path as p\nprint({SENTINEL!r}, p.exists('/'))", "import-blocked"),
    ("from-os-import-system", f"from os import system\nsystem('echo {SENTINEL}')", "import-blocked"),
    ("import-subprocess", f"import subprocess\nsubprocess.run(['echo', {SENTINEL!r}])", "import-blocked"),
    ("import-sys-modules", f"import sys\nsys.modules['os'].system('echo {SENTINEL}')", "import-blocked"),
    ("import-socket", "import socket\nsocket.create_connection(('127.0.0.1', 9))", "import-blocked"),
    ("import-ctypes", f"import ctypes\nctypes.CDLL(None).system(b'echo {SENTINEL}')", "import-blocked"),
    ("import-builtins", f"import builtins\nbuiltins.exec({_P!r})", "import-blocked"),
    ("from-builtins-import-exec", f"from builtins import exec\nexec({_P!r})", "import-blocked"),
    ("import-importlib", f"import importlib\nimportlib.import_module('os').system('echo {SENTINEL}')", "import-blocked"),
    ("from-importlib-import-module", "from importlib import import_module\nimport_module('os')", "import-blocked"),
    ("import-pickle", "import pickle\npickle.loads(b'cos\\nsystem\\n(S\"id\"\\ntR.')", "import-blocked"),
    ("import-shutil", "import shutil\nshutil.rmtree('/tmp')", "import-blocked"),
    ("import-in-function", f"def f(trace):\n    import os\n    os.system('echo {SENTINEL}')", "import-blocked"),
    ("import-in-try", "try:\n    import posix\nexcept ImportError:\n    pass", "import-blocked"),
    ("import-blocked-submodule", "import numpy.ctypeslib", "import-blocked"),
    ("import-not-allowed", "import string", "import-not-allowed"),
    ("import-not-allowed-dotted", "import xml.etree.ElementTree as ET", "import-not-allowed"),
    ("relative-import", "from . import secrets", "relative-import"),
    ("relative-import-parent", "from ..config import API_TOKEN", "relative-import"),
    ("importlib-without-import", f"importlib.import_module('os').system('echo {SENTINEL}')", "dynamic-import"),
    ("dunder-import-call", f"__import__('os').system('echo {SENTINEL}')", "blocked-builtin"),
    ("dunder-import-alias", "imp = __import__\nimp('os')", "builtin-alias"),
    ("dunder-import-unicode", "__ｉmport__('os')", "blocked-builtin"),
    # -- blocked builtins, called or aliased --------------------------------------------------
    ("eval-call", f"eval({_P!r})", "blocked-builtin"),
    ("exec-call", f"exec({_P!r})", "blocked-builtin"),
    ("compile-call", f"exec(compile({_P!r}, 'x', 'exec'))", "blocked-builtin"),
    ("open-read", f"print({SENTINEL!r}, open('/etc/passwd').read())", "blocked-builtin"),
    ("open-write", "open('/tmp/evaljail-owned', 'w').write('x')", "blocked-builtin"),
    ("globals-builtins", f"globals()['__builtins__']['exec']({_P!r})", "blocked-builtin"),
    ("locals-call", "print(locals())", "blocked-builtin"),
    ("vars-call", "vars()", "blocked-builtin"),
    ("vars-of-object", "vars(object)", "blocked-builtin"),
    ("breakpoint-call", "breakpoint()", "blocked-builtin"),
    ("input-call", "input()", "blocked-builtin"),
    ("help-call", "help()", "blocked-builtin"),
    ("memoryview-call", "memoryview(b'x')", "blocked-builtin"),
    ("exit-call", "exit(0)", "blocked-builtin"),
    ("builtins-name-attribute", "builtins.open('/etc/passwd')", "blocked-builtin"),
    ("unicode-eval", f"ｅｖａｌ({_P!r})", "blocked-builtin"),
    ("unicode-exec-mixed", f"exｅc({_P!r})", "blocked-builtin"),
    ("global-declared-eval", f"def f():\n    global eval\n    return eval({_P!r})", "blocked-builtin"),
    ("class-body-shadow-not-trusted", f"class A:\n    eval = print\n    eval({_P!r})", "blocked-builtin"),
    ("comprehension-target-not-function-local", f"def f(xs):\n    [eval for eval in xs]\n    return eval({_P!r})", "blocked-builtin"),
    ("class-body-call", f"class A:\n    exec({_P!r})", "blocked-builtin"),
    ("class-keyword-smuggle", f"class A(metaclass=lambda *a: exec({_P!r})):\n    pass", "blocked-builtin"),
    ("annotation-smuggle", f"def f(x: exec({_P!r})):\n    pass", "blocked-builtin"),
    ("return-annotation-smuggle", f"def f() -> exec({_P!r}):\n    pass", "blocked-builtin"),
    ("fstring-smuggle", "x = f'''{exec(" + repr(_P) + ")}'''", "blocked-builtin"),
    ("except-clause-smuggle", f"try:\n    pass\nexcept exec({_P!r}):\n    pass", "blocked-builtin"),
    ("eval-alias", f"e = eval\ne({_P!r})", "builtin-alias"),
    ("exec-in-list", f"f = [exec]\nf[0]({_P!r})", "builtin-alias"),
    ("exec-in-dict", f"d = {{'run': exec}}\nd['run']({_P!r})", "builtin-alias"),
    ("open-as-argument", "print(list(map(open, ['/etc/passwd'])))", "builtin-alias"),
    ("eval-default-argument", f"def f(code, run=eval):\n    return run(code)\nf({_P!r})", "builtin-alias"),
    ("open-default-shadow", "def f(open=open):\n    return open('/etc/passwd').read()", "builtin-alias"),
    ("lambda-default-exec", f"g = lambda c, e=exec: e(c)\ng({_P!r})", "builtin-alias"),
    ("kwonly-default-exec", "def f(*, run=exec):\n    pass", "builtin-alias"),
    ("decorator-exec", f"@exec\n@lambda f: {_P!r}\ndef f():\n    pass", "builtin-alias"),
    ("class-attribute-alias", f"class A:\n    run = exec\nA.run({_P!r})", "builtin-alias"),
    ("walrus-alias", f"(e := exec)({_P!r})", "builtin-alias"),
    ("comprehension-alias", f"[f({_P!r}) for f in [exec]]", "builtin-alias"),
    ("type-three-arg-alias", "T = type('T', (), {'__getitem__': eval})\nT()['1']", "builtin-alias"),
    ("quit-alias", "q = quit", "builtin-alias"),
    ("license-private", "license._Printer__filenames", "builtin-alias"),
    ("getattr-alias", "g = getattr\ng((), '__class__')", "builtin-alias"),
    ("map-getattr", "list(map(getattr, [()], ['__class__']))", "builtin-alias"),
    # -- gadget chains through dunder attributes ----------------------------------------------
    ("subclasses-chain", "().__class__.__bases__[0].__subclasses__()", "dunder-attribute"),
    ("mro-chain", "''.__class__.__mro__[1].__subclasses__()", "dunder-attribute"),
    ("type-subclasses", "type.__subclasses__(object)", "dunder-attribute"),
    ("type-call-base", "type(()).__base__.__subclasses__()", "dunder-attribute"),
    ("object-subclasses", "object.__subclasses__()", "dunder-attribute"),
    ("lambda-globals", "(lambda: 0).__globals__['__builtins__']", "dunder-attribute"),
    ("function-code", "def f():\n    pass\nf.__code__.co_consts", "dunder-attribute"),
    ("init-globals", "class A:\n    pass\nA.__init__.__globals__", "dunder-attribute"),
    ("self-dict", "class A:\n    def m(self):\n        return self.__dict__", "dunder-attribute"),
    ("reduce-ex", "[].__reduce_ex__(2)[0].__globals__", "dunder-attribute"),
    ("print-self-builtins", f"print.__self__.exec({_P!r})", "dunder-attribute"),
    ("super-getattribute", "class A:\n    def m(self):\n        return super().__getattribute__('__class__')", "dunder-attribute"),
    ("class-assign", "class A:\n    pass\na = A()\na.__class__ = int", "dunder-attribute"),
    ("traceback-dunder", "try:\n    1 / 0\nexcept Exception as e:\n    tb = e.__traceback__", "dunder-attribute"),
    ("from-json-import-builtins", "from json import __builtins__ as b\nb['exec']('1')", "dunder-attribute"),
    ("unicode-dunder-attribute", "().__ｃlass__", "dunder-attribute"),
    ("match-class-pattern", "match ():\n    case object(__class__=c):\n        pass", "dunder-attribute"),
    # -- interpreter-internal names -----------------------------------------------------------
    ("builtins-name", f"__builtins__['exec']({_P!r})", "blocked-name"),
    ("builtins-name-attr", f"__builtins__.exec({_P!r})", "blocked-name"),
    ("loader-name", "__loader__.load_module('os')", "blocked-name"),
    ("spec-name", "__spec__.loader", "blocked-name"),
    ("build-class-name", "__build_class__", "blocked-name"),
    ("class-cell-name", "class A:\n    def m(self):\n        return __class__", "blocked-name"),
    ("assign-builtins", "__builtins__ = {'exec': print}", "blocked-name"),
    ("del-builtins", "del __builtins__", "blocked-name"),
    ("import-as-builtins", "import json as __builtins__", "blocked-name"),
    ("global-builtins", "def f():\n    global __builtins__", "blocked-name"),
    ("param-dunder-import", "def f(__import__):\n    return __import__('os')", "blocked-name"),
    ("except-as-builtins", "try:\n    pass\nexcept Exception as __builtins__:\n    pass", "blocked-name"),
    # -- frame / generator / coroutine / traceback walking -----------------------------------
    ("generator-frame-globals", "g = (x for x in [1])\nprint(g.gi_frame.f_globals)", "frame-attribute"),
    ("generator-frame-back", "def gen():\n    yield\ng = gen()\nnext(g)\ng.gi_frame.f_back.f_builtins", "frame-attribute"),
    ("coroutine-frame", "async def c():\n    pass\nc().cr_frame.f_globals", "frame-attribute"),
    ("async-generator-frame", "async def a():\n    yield 1\na().ag_frame", "frame-attribute"),
    ("traceback-frame-walk", "def f(tb):\n    return tb.tb_frame.f_back.f_globals", "frame-attribute"),
    ("traceback-next", "def f(tb):\n    return tb.tb_next.tb_frame", "frame-attribute"),
    ("frame-locals", "def f(frame):\n    return frame.f_locals", "frame-attribute"),
    ("generator-code", "def f(g):\n    return g.gi_code.co_code", "frame-attribute"),
    ("getattr-gi-frame", "getattr((x for x in []), 'gi_frame')", "frame-attribute"),
    ("getattr-f-globals", "def f(fr):\n    return getattr(fr, 'f_globals')", "frame-attribute"),
    ("match-frame-pattern", "def f(g):\n    match g:\n        case object(gi_frame=fr):\n            return fr", "frame-attribute"),
    # -- introspection and modules behind attributes -----------------------------------------
    ("mro-method", "str.mro()[1].__subclasses__()", "introspection-attribute"),
    ("getattr-mro", "getattr(str, 'mro')()", "introspection-attribute"),
    ("cell-contents", "def f(fn):\n    return fn.__closure__[0].cell_contents", "introspection-attribute"),
    ("gc-objects", "def f(gc):\n    return gc.get_objects()", "introspection-attribute"),
    ("code-type", "import typing\ntyping.types.CodeType", "introspection-attribute"),
    ("typing-sys", f"import typing\ntyping.sys.modules['os'].system('echo {SENTINEL}')", "module-attribute"),
    ("typing-sys-getframe", "import typing\ntyping.sys._getframe(0).f_globals", "module-attribute"),
    ("from-typing-import-sys", "from typing import sys\nsys.modules['os']", "module-attribute"),
    ("private-sys-alias", "import typing\ntyping.collections._sys", "module-attribute"),
    ("getattr-typing-sys", "import typing\ngetattr(typing, 'sys').modules", "module-attribute"),
    ("typing-operator-attrgetter", "import typing\ntyping.operator.attrgetter('__class__')(())", "module-attribute"),
    ("numpy-ctypeslib", "import numpy as np\nnp.ctypeslib.ctypes", "module-attribute"),
    # blocked modules that allowed ones keep under other names (found 2026-11-26)
    ("re-enum-bltns-exec", f"import re\nre.enum.bltns.exec({_P!r})", "module-attribute"),
    ("re-enum-bltns-aliased", f"import re\nb = re.enum.bltns\nb.exec({_P!r})", "module-attribute"),
    ("json-codecs-open", "import json\nprint(json.codecs.open('/etc/passwd').read())", "module-attribute"),
    ("re-functools", "import re\nre.functools.reduce", "module-attribute"),
    ("re-enum", "import re\nre.enum.EnumMeta", "module-attribute"),
    ("typing-types", "import typing\ntyping.types.FunctionType", "module-attribute"),
    ("from-re-import-enum", "from re import enum\nenum.Enum", "module-attribute"),
    ("from-json-decoder-chain", "from json import decoder\ndecoder.re.enum", "module-attribute"),
    ("re-private-sre", "import re\nre._compiler._sre.compile", "module-attribute"),
    ("getattr-re-enum", "import re\ngetattr(re, 'enum').EnumMeta", "module-attribute"),
    # -- string-built attribute names ---------------------------------------------------------
    ("getattr-concat", "getattr((), '__cla' + 'ss__')", "dynamic-attribute"),
    ("getattr-join", "getattr((), ''.join(['__cl', 'ass__']))", "dynamic-attribute"),
    ("getattr-fstring", "n = 'class'\ngetattr((), f'__{n}__')", "dynamic-attribute"),
    ("getattr-chr", "getattr((), chr(95) * 2 + 'class' + chr(95) * 2)", "dynamic-attribute"),
    ("getattr-reversed", "getattr((), '__ssalc__'[::-1])", "dynamic-attribute"),
    ("getattr-rebound-name", "name = 'x'\nname = '__class__'\ngetattr((), name)", "dynamic-attribute"),
    ("getattr-starred", "getattr(*[(), '__class__'])", "dynamic-attribute"),
    ("delattr-dynamic", "def f(obj, n):\n    delattr(obj, n)", "dynamic-attribute"),
    ("hasattr-dynamic", "def f(obj, n):\n    return hasattr(obj, n)", "dynamic-attribute"),
    ("setattr-dynamic", "def f(obj, n, v):\n    setattr(obj, n, v)", "dynamic-attribute"),
    ("getattr-literal-dunder", "getattr((), '__class__')", "dunder-attribute"),
    ("getattr-unicode-literal", "getattr((), '__ｃlass__')", "dunder-attribute"),
    ("getattr-escaped-literal", "getattr((), '\\x5f\\x5fclass\\x5f\\x5f')", "dunder-attribute"),
    ("getattr-constant-dunder", "N = '__globals__'\ndef f(fn):\n    return getattr(fn, N)", "dunder-attribute"),
    ("getattr-subclasses", "getattr(object, '__subclasses__')()", "dunder-attribute"),
    ("setattr-class", "def f(obj):\n    setattr(obj, '__class__', int)", "dunder-attribute"),
    # -- format strings -------------------------------------------------------------------------
    ("format-class", "'{0.__class__}'.format(())", "format-string-attribute"),
    ("format-map-globals", "def f(fn):\n    return '{f.__globals__}'.format_map({'f': fn})", "format-string-attribute"),
    ("format-auto-numbered", "'{.__class__.__base__}'.format(())", "format-string-attribute"),
    ("format-nested-spec", "'{0:{1.__class__}}'.format(1, ())", "format-string-attribute"),
    ("format-index-then-attribute", "def f(fn):\n    return '{0[0].__globals__[SECRET]}'.format([fn])", "format-string-attribute"),
    ("str-format-via-class", "str.format('{0.__class__}', ())", "format-string-attribute"),
    ("str-format-map-via-class", "str.format_map('{x.__class__}', {'x': ()})", "format-string-attribute"),
    ("formatter-vformat", "import string\nstring.Formatter().vformat('{0.__globals__}', (print,), {})", "format-string-attribute"),
    ("formatter-get-field", "def f(Formatter, fn):\n    return Formatter().get_field('0.__globals__', (fn,), {})", "format-string-attribute"),
    ("format-bound-method-alias", "fmt = '{0.__class__}'.format\nfmt(())", "format-string-attribute"),
    ("format-gi-frame", "def f(g):\n    return '{0.gi_frame.f_globals}'.format(g)", "format-string-attribute"),
    ("format-unicode-field", "'{0.__ｃlass__}'.format(())", "format-string-attribute"),
    ("format-constant", "FMT = '{0.__init__.__globals__}'\ndef f(o):\n    return FMT.format(o)", "format-string-attribute"),
    ("format-mro", "'{0.mro}'.format(str)", "format-string-attribute"),
    ("format-dynamic-concat", "fmt = '{0.__cla' + 'ss__}'\nfmt.format(())", "dynamic-format-string"),
    ("format-fstring-braces", "f'{{0.__class__}}'.format(())", "dynamic-format-string"),
    ("format-from-trace", "def eval_x(trace):\n    return True, trace['template'].format(trace)", "dynamic-format-string"),
    # -- class patterns as getattr: __match_args__ + isinstance hooks --------------------------
    (
        "match-args-instancecheck",
        "class Meta(type):\n    def __instancecheck__(cls, obj):\n        return True\n"
        "class Any(metaclass=Meta):\n    __match_args__ = ('__class__',)\n"
        "match ():\n    case Any(cls):\n        print(cls)",
        "isinstance-hook",
    ),
    ("match-args-dunder", "class A:\n    __match_args__ = ('__subclasses__',)", "dunder-attribute"),
    ("match-args-frame", "class A:\n    __match_args__ = ('gi_frame', 'x')", "frame-attribute"),
    ("match-args-dynamic", "class A:\n    __match_args__ = tuple(['__cla' + 'ss__'])", "dynamic-attribute"),
    ("match-args-entry-dynamic", "class A:\n    __match_args__ = ('__cla' + 'ss__',)", "dynamic-attribute"),
    ("match-args-type-dict", "A = type('A', (), {'__match_args__': ('__globals__',)})", "dunder-attribute"),
    ("match-args-dict-keyword", "ns = dict(__match_args__=('__class__',))", "dunder-attribute"),
    ("instancecheck-lambda", "class M(type):\n    __instancecheck__ = lambda c, o: True", "isinstance-hook"),
    ("instancecheck-type-dict", "M = type('M', (type,), {'__instancecheck__': lambda c, o: True})", "isinstance-hook"),
    ("subclasscheck-def", "class M(type):\n    def __subclasscheck__(cls, sub):\n        return True", "isinstance-hook"),
    # -- class patterns with a hidden __match_args__ and a lenient isinstance (red team) ------
    (
        "match-hashable-subclasshook",
        "import typing, json\nclass Any(typing.Hashable):\n    @classmethod\n"
        "    def __subclasshook__(cls, C):\n        return True\n"
        "    [__match_args__] = [('__globals__',)]\n"
        "match json.dumps:\n    case Any(g):\n"
        f"        g['__builtins__']['exec']({_P!r})",
        "class-pattern",
    ),
    (
        "match-namedtuple-fields-register",
        "import typing\nclass Fields(typing.NamedTuple):\n    gi_frame: object\n"
        "class Any(Fields, typing.Hashable):\n    pass\n"
        "def gen():\n    yield 1\ng = gen()\nAny.register(type(g))\n"
        "match g:\n    case Any(fr):\n        print(fr)",
        "class-pattern",
    ),
    (
        "match-args-for-target",
        "M = type('M', (type,), dict([('__instancecheck__', lambda c, o: True)]))\n"
        "class Any(metaclass=M):\n    for __match_args__ in [('__class__',)]:\n        pass\n"
        "match ():\n    case Any(t):\n        print(t)",
        "class-pattern",
    ),
    # -- a class namespace from a metaclass's __prepare__ makes any name mean anything --------
    (
        "prepare-namespace-format-constant",
        "import json\nF = '{0}'\nclass Meta(type):\n    @classmethod\n"
        "    def __prepare__(mcls, name, bases):\n        class NS(dict):\n"
        "            def __missing__(self, key):\n"
        "                if key == 'F':\n                    return '{0.__glo' + 'bals__[__name__]}'\n"
        "                raise KeyError(key)\n        return NS()\n"
        "class A(metaclass=Meta):\n    if F.format(json.dumps) == 'json':\n"
        f"        print({SENTINEL!r})",
        "dynamic-format-string",
    ),
    (
        "prepare-namespace-getattr-constant",
        "N = 'real'\nclass Meta(type):\n    @classmethod\n"
        "    def __prepare__(mcls, name, bases):\n        class NS(dict):\n"
        "            def __missing__(self, key):\n"
        "                if key == 'N':\n                    return '__cla' + 'ss__'\n"
        "                raise KeyError(key)\n        return NS()\n"
        "class A(metaclass=Meta):\n    t = getattr((), N)",
        "dynamic-attribute",
    ),
    (
        "prepare-namespace-match-str-frame",
        "import typing\nclass Fields(typing.NamedTuple):\n    gi_frame: object\n"
        "class Any(Fields, typing.Hashable):\n    pass\n"
        "def gen():\n    yield 1\ng = gen()\nAny.register(type(g))\n"
        "class Meta(type):\n    @classmethod\n    def __prepare__(mcls, name, bases):\n"
        "        class NS(dict):\n            def __missing__(self, key):\n"
        "                if key == 'str':\n                    return Any\n"
        "                raise KeyError(key)\n        return NS()\n"
        "class A(metaclass=Meta):\n    match g:\n        case str(fr):\n"
        f"            print({SENTINEL!r}, fr)",
        "class-pattern",
    ),
    (
        "prepare-inherited-metaclass-match-str",
        "import typing\nclass Fields(typing.NamedTuple):\n    gi_frame: object\n"
        "class Any(Fields, typing.Hashable):\n    pass\n"
        "def gen():\n    yield 1\ng = gen()\nAny.register(type(g))\n"
        "def prepare(mcls, name, bases):\n    class NS(dict):\n"
        "        def __missing__(self, key):\n"
        "            if key == 'str':\n                return Any\n"
        "            raise KeyError(key)\n    return NS()\n"
        "Meta = type('Meta', (type,), dict([('__pre' + 'pare__', classmethod(prepare))]))\n"
        "Base = Meta('Base', (), {})\n"
        "class A(Base):\n    match g:\n        case str(fr):\n"
        f"            print({SENTINEL!r}, fr)",
        "class-pattern",
    ),
    (
        "prepare-rebound-builtin-base",
        "def prepare(mcls, name, bases):\n    return {}\n"
        "Exception = type('M', (type,), dict([('__pre' + 'pare__', classmethod(prepare))]))('E', (), {})\n"
        "class A(Exception):\n    match 1:\n        case str(x):\n            pass",
        "class-pattern",
    ),
    # -- super() is only exempt from the dunder rule when it is the builtin ----------------------
    ("super-rebound-lambda", "import json\nsuper = lambda: json.dumps\nprint(super().__call__)", "dunder-attribute"),
    ("super-parameter", "def f(super):\n    return super().__init__", "dunder-attribute"),
    ("super-in-prepare-namespace", "class A(metaclass=M):\n    init = super().__init__", "dunder-attribute"),
    ("match-rebound-builtin", "str = type('S', (), {})\nmatch 1:\n    case str(x):\n        pass", "class-pattern"),
    ("match-keyword-format", "fmt = '{0.__glo' + 'bals__}'\nmatch fmt:\n    case str(format=f):\n        print(f(len))", "dynamic-format-string"),
    ("getattr-format-method", "fmt = '{0.__glo' + 'bals__}'\nf = getattr(fmt, 'format')\nprint(f(len))", "dynamic-format-string"),
    # -- blocked modules and the real open inside third-party packages -------------------------
    ("numpy-datasource-open", "import numpy\nnumpy.lib._datasource._open('/proc/self/status')", "introspection-attribute"),
    ("matplotlib-logging-io", "import matplotlib\nmatplotlib.logging.io.open('/proc/self/status')", "module-attribute"),
    ("pandas-common-dis", "import pandas\nprint(pandas.core.common.dis)", "module-attribute"),
    ("matplotlib-currentframe", "import matplotlib\nprint(matplotlib.logging.currentframe())", "module-attribute"),
    # -- library functions that evaluate strings with the real builtins ----------------------
    (
        "forwardref-evaluate",
        f"import typing\ntyping.ForwardRef(\"__import__('os').system('echo {SENTINEL}')\")._evaluate({{}}, {{}}, frozenset())",
        "string-evaluation",
    ),
    (
        "get-type-hints-string-annotation",
        f"import typing\ndef f(x: \"__import__('os').system('echo {SENTINEL}')\"):\n    pass\ntyping.get_type_hints(f, {{}})",
        "string-evaluation",
    ),
    ("from-typing-import-forwardref", "from typing import ForwardRef", "string-evaluation"),
    ("pandas-eval", "import pandas as pd\npd.eval('1 + 1')", "string-evaluation"),
    ("pandas-query", "import pandas as pd\npd.DataFrame({'a': [1]}).query('a > 0', engine='python')", "string-evaluation"),
    ("class-body-global-getattr", "def f(obj, name):\n    getattr = None\n    class A:\n        global getattr\n        r = getattr(obj, name)\n    return A.r", "dynamic-attribute"),
    # -- helpers that read any loaded module's globals by name (red team, 2026-11-27) ---------
    (
        "enum-convert-module-globals",
        "import re\nclass Base:\n    _use_args_ = False\n    _member_type_ = object\n"
        "    _value_repr_ = repr\n    __members__ = {}\n"
        "    def _generate_next_value_(name, start, count, last):\n        return name\n"
        "    def __init__(self, *a):\n        pass\n"
        "    def __init_subclass__(cls, **kw):\n        pass\n"
        "E = type(re.RegexFlag)\n"
        "Y = E._convert_(Base, 'Y', 'linecache', lambda n: n == 'os')\n"
        "os = Y._member_map_['os']._value_\n"
        f"print({SENTINEL!r}, os.getpid(), os.listdir('/'))",
        "module-attribute",
    ),
    (
        "enum-global-enum-replaces-import",
        "import re\nr = re\ne = r.enum\n"
        "def evil(name, g=None, l=None, fromlist=(), level=0):\n"
        f"    g['__builtins__']['exec']({_P!r}, {{'__builtins__': g['__builtins__']}})\n"
        "    raise ImportError(name)\n"
        "class C:\n    __module__ = 'builtins'\n    __members__ = {'__import__': evil}\n"
        "e.global_enum(C)\nre.compile(r'\\N{DIGIT ONE}')",
        "module-attribute",
    ),
    # -- library helpers that look attributes up by a name they are given -----------------------
    (
        "pandas-apply-str-getattr",
        "import pandas as pd\nimport json\n"
        "g = pd.core.apply.Apply._apply_str(None, json.dumps, '__glo' + 'bals__')\n"
        f"g['__builtins__']['exec']({_P!r}, {{'__builtins__': g['__builtins__']}})",
        "introspection-attribute",
    ),
    (
        "numpy-wrapfunc-getattribute",
        "import numpy as np\nimport json\n"
        "g = np._core.fromnumeric._wrapfunc(json.dumps, '__getattr' + 'ibute__', '__glo' + 'bals__')\n"
        f"g['__builtins__']['exec']({_P!r}, {{'__builtins__': g['__builtins__']}})",
        "introspection-attribute",
    ),
    ("pandas-register-accessor", "import pandas as pd\ndef f(name, cls):\n    return pd.api.extensions.register_series_accessor(name)(cls)", "introspection-attribute"),
    ("pandas-agg-dunder-name", "import pandas as pd\nprint(pd.Series([1]).agg('__class__'))", "dunder-attribute"),
    ("call-argument-frame-name", "def f(helper, g):\n    return helper(g, 'gi_frame')", "frame-attribute"),
    # -- pickles, which run any code they name ----------------------------------------------------
    (
        "pandas-read-pickle-file-like",
        "import pandas as pd\nclass F:\n"
        f"    d = b\"cbuiltins\\nexec\\n(S'print({SENTINEL!r})'\\ntR.\"\n    i = 0\n"
        "    def read(self, n=-1):\n        n = len(self.d) if n is None or n < 0 else n\n"
        "        r = self.d[self.i:self.i + n]\n        self.i += len(r)\n        return r\n"
        "    def readline(self):\n        j = self.d.find(b'\\n', self.i) + 1 or len(self.d)\n"
        "        r = self.d[self.i:j]\n        self.i = j\n        return r\n"
        "    def readinto(self, b):\n        r = self.read(len(b))\n        b[:len(r)] = r\n        return len(r)\n"
        "    def seek(self, *a):\n        return 0\n    def tell(self):\n        return self.i\n"
        "    def readable(self):\n        return True\n    def seekable(self):\n        return False\n"
        "    def close(self):\n        pass\n    def __iter__(self):\n        return iter([])\n"
        "pd.read_pickle(F())",
        "unpickling",
    ),
    (
        "numpy-load-allow-pickle",
        "import numpy as np\nclass F:\n"
        f"    d = b\"cbuiltins\\nexec\\n(S'print({SENTINEL!r})'\\ntR.\"\n    i = 0\n"
        "    def read(self, n=-1):\n        n = len(self.d) if n is None or n < 0 else n\n"
        "        r = self.d[self.i:self.i + n]\n        self.i += len(r)\n        return r\n"
        "    def readline(self):\n        j = self.d.find(b'\\n', self.i) + 1 or len(self.d)\n"
        "        r = self.d[self.i:j]\n        self.i = j\n        return r\n"
        "    def seek(self, p, w=0):\n        self.i = p if w == 0 else self.i + p\n        return self.i\n"
        "    def tell(self):\n        return self.i\n"
        "np.load(F(), allow_pickle=True)",
        "unpickling",
    ),
    ("numpy-load-positional-allow-pickle", "import numpy as np\ndef f(fileobj):\n    return np.load(fileobj, None, True)", "unpickling"),
    ("numpy-load-unpacked-keywords", "import numpy as np\ndef f(fileobj, kw):\n    return np.load(fileobj, **kw)", "unpickling"),
    (
        "pandas-pickle-compat-loads",
        f"import pandas as pd\npd.compat.pickle_compat.loads(b\"cbuiltins\\nexec\\n(S'print({SENTINEL!r})'\\ntR.\")",
        "unpickling",
    ),
    ("numpy-read-array", "from numpy.lib.format import read_array\ndef f(fp):\n    return read_array(fp, True)", "unpickling"),
    # -- pandas' expression engine and frame-capturing scopes -------------------------------------
    (
        "pandas-computation-expr",
        "import pandas as pd\nc = pd.core.computation\nx = 1\n"
        "e = c.expr.Expr('@x.__class__.__base__', engine='python', parser='pandas', "
        "env=c.scope.ensure_scope(0, local_dict={'x': x}))\n"
        f"print({SENTINEL!r}, e())",
        "string-evaluation",
    ),
    ("pandas-computation-scope-frames", f"from pandas.core.computation import scope\nprint({SENTINEL!r}, list(scope.Scope(level=0).scope))", "import-blocked"),
    # -- raw memory: numpy takes an address from an __array_interface__ ---------------------------
    (
        "numpy-array-interface-getattr",
        "import numpy as np\nimport json\nclass I:\n    def __init__(self, a, n):\n"
        "        self.a, self.n = a, n\n    def __getattr__(self, name):\n"
        "        if name == '__array_interface__':\n"
        "            return {'data': (self.a, False), 'typestr': '<i8', 'shape': (self.n,), 'version': 3}\n"
        "        raise AttributeError(name)\n"
        "holder = [None]\ng = int(np.asarray(I(id(json.dumps), 3))[2])\n"
        "np.asarray(I(g, 1))[0] += 1\nnp.asarray(I(int(np.asarray(I(id(holder), 4))[3]), 1))[0] = g\n"
        f"holder[0]['__builtins__']['exec']({_P!r}, {{'__builtins__': holder[0]['__builtins__']}})",
        "raw-memory",
    ),
    ("numpy-array-interface-property", "class I:\n    @property\n    def __array_interface__(self):\n        return {'data': (0, False), 'typestr': '<i8', 'shape': (1,)}", "raw-memory"),
    ("numpy-array-interface-type-dict", "I = type('I', (), {'__array_struct__': 1})", "raw-memory"),
    ("numpy-as-strided-objects", "import numpy as np\nv = np.lib.stride_tricks.as_strided(np.array([1], dtype=object), shape=(99,), strides=(8,))", "raw-memory"),
    ("enum-functional-create", "import re\nE = type(re.RegexFlag)._create_", "class-factory"),
    ("pandas-interchange", "import pandas as pd\ndef f(obj):\n    return pd.api.interchange.from_dataframe(obj)", "raw-memory"),
    # -- matplotlib: backends imported by name, str.format on a string it is given -------------
    (
        "matplotlib-backend-module-os",
        f"import matplotlib.backends\nos = matplotlib.backends.backend_registry.load_backend_module('module://os')\nprint({SENTINEL!r}, os.getpid())",
        "dynamic-import",
    ),
    ("matplotlib-backend-string", "import matplotlib\nmatplotlib.use('module://posix')", "dynamic-import"),
    (
        "matplotlib-str-method-formatter",
        "import matplotlib.ticker as t\nimport json\n"
        "if t.StrMethodFormatter('{x.__globals__[__name__]}')(json.dumps) == 'json':\n"
        f"    print({SENTINEL!r})",
        "format-string-attribute",
    ),
    (
        "matplotlib-str-method-formatter-dynamic",
        "import matplotlib.ticker as t\nimport json\n"
        "if t.StrMethodFormatter('{x.__glo' + 'bals__[__name__]}')(json.dumps) == 'json':\n"
        f"    print({SENTINEL!r})",
        "dynamic-format-string",
    ),
    ("format-literal-anywhere", "def f(formatter, fn):\n    return formatter('{0.__globals__}', fn)", "format-string-attribute"),
    ("get-origin-imported", "from typing import get_origin\nT = get_origin(list[int])", "class-factory"),
    # -- not Python at all ----------------------------------------------------------------------
    ("syntax-error", "def f(:\n    pass", "syntax-error"),
    ("null-byte", "x = 1\0", "syntax-error"),
]  # fmt: skip

#: The original raw-memory exploit (a computed ``__array_interface__`` answered by
#: ``__getattr__``): ``id(s)`` is the address of the ``str`` object, whose text follows its
#: header, so ``bytes(a)`` holds the secret only if numpy read the address it was given.
RAW_MEMORY_SECRET = "secret-marker-xyz"
_IFACE = '{"data": (id(s), False), "shape": (80,), "typestr": "|u1", "version": 3}'
_RAW_HEAD = f'import numpy as np\ns = {RAW_MEMORY_SECRET!r}\nk = "__array_" + "interface__"\n'

#: Payloads that only policies beyond the core allow-list must reject (numpy importable: any
#: object that answers ``__array_interface__`` under a name built at run time hands numpy an
#: address to read and write). Same format as :data:`PAYLOADS`; the core profile accepts them.
SCIENTIFIC_PAYLOADS: list[tuple[str, str, str]] = [
    (
        "numpy-computed-interface-getattr",
        f"{_RAW_HEAD}class C:\n    def __getattr__(self, n):\n"
        f"        if n.endswith('interface__'):\n            return {_IFACE}\n"
        "        raise AttributeError(n)\nprint(bytes(np.asarray(C())))",
        "attribute-hook",
    ),
    (
        "numpy-computed-interface-getattribute",
        f"{_RAW_HEAD}class C:\n    def __getattribute__(self, n):\n        return {_IFACE}\n"
        "print(bytes(np.asarray(C())))",
        "attribute-hook",
    ),
    ("getattr-hook-assigned", f"{_RAW_HEAD}class C:\n    __getattr__ = lambda self, n: {_IFACE}\nprint(bytes(np.asarray(C())))", "attribute-hook"),
    ("getattr-hook-loop-target", "class C:\n    for __getattr__ in [lambda self, n: 1]:\n        pass", "attribute-hook"),
    ("getattr-hook-imported-as", "class C:\n    from json import loads as __getattr__", "attribute-hook"),
    ("getattr-hook-dict-key", "import pandas as pd\nns = {'__getattr__': lambda self, n: 1}", "attribute-hook"),
    ("getattr-hook-keyword", "ns = dict(__getattribute__=lambda self, n: 1)", "attribute-hook"),
    ("getattr-hook-metaclass", "class M(type):\n    def __getattr__(cls, n):\n        return 1", "attribute-hook"),
    ("module-getattr", "def __getattr__(name):\n    return 1", "attribute-hook"),
    (
        "numpy-computed-interface-type-three-args",
        f"{_RAW_HEAD}C = type('C', (), {{k: property(lambda self: {_IFACE})}})\nprint(bytes(np.asarray(C())))",
        "class-factory",
    ),
    ("type-alias", f"{_RAW_HEAD}T = type\nC = T('C', (), {{k: {_IFACE}}})", "class-factory"),
    ("type-star-args", f"{_RAW_HEAD}a = ('C', (), {{k: {_IFACE}}})\nC = type(*a)", "class-factory"),
    ("type-keyword-args", "C = type('C', (), {}, **{})", "class-factory"),
    (
        "type-through-typing-get-origin",
        f"{_RAW_HEAD}import typing\nT = typing.get_origin(typing.Type)\n"
        f"C = T('C', (), {{k: property(lambda self: {_IFACE})}})\nprint(bytes(np.asarray(C())))",
        "class-factory",
    ),
    ("type-of-class-called", f"{_RAW_HEAD}C = type(int)('C', (), {{k: {_IFACE}}})", "class-factory"),
    ("type-of-class-stored", f"{_RAW_HEAD}T = type(int)\nC = T('C', (), {{k: {_IFACE}}})", "class-factory"),
    ("type-of-class-passed", "def make(t):\n    return t('C', (), {})\nmake(type(int))", "class-factory"),
    ("type-of-class-compared-with-object", "class E:\n    def __eq__(self, t):\n        return t('C', (), {})\ntype(int) == E()", "class-factory"),
    ("type-in-container", "ts = [type]\nC = ts[0]('C', (), {})", "class-factory"),
    (
        "metaclass-new-computed-key",
        f"{_RAW_HEAD}class M(type):\n    def __new__(m, name, bases, ns):\n        ns[k] = {_IFACE}\n"
        "        return super().__new__(m, name, bases, ns)\nclass C(metaclass=M):\n    pass\n"
        "print(bytes(np.asarray(C())))",
        "class-factory",
    ),
    (
        "metaclass-prepare-renaming-dict",
        f"{_RAW_HEAD}class D(dict):\n    def __setitem__(self, key, v):\n"
        "        dict.__setitem__(self, k if key == 'x' else key, v)\n"
        "class M(type(int)):\n    @classmethod\n    def __prepare__(m, name, bases):\n        return D()\n"
        f"class C(metaclass=M):\n    x = property(lambda self: {_IFACE})\nprint(bytes(np.asarray(C())))",
        "class-factory",
    ),
    # third-party modules keep standard-library class factories and exec helpers (third
    # red-team pass): dataclasses' _create_fn ran "return __import__('os')" with the real
    # builtins; type, enum.Enum, types.new_class and abc.ABCMeta made raw-memory classes
    ("matplotlib-dataclasses-create-fn", "import matplotlib.font_manager as fm\nf = fm.dataclasses._create_fn('f', [], [\"return __import__('os')\"])\nprint(f().listdir('/'))", "module-attribute"),
    ("create-fn-on-any-object", "def f(dc):\n    return dc._create_fn('f', [], ['return 1'])", "string-evaluation"),
    ("pandas-typing-type-t", f"{_RAW_HEAD}import pandas as pd\nC = pd._typing.type_t('C', (), {{k: {_IFACE}}})\nprint(bytes(np.asarray(C())))", "class-factory"),
    ("matplotlib-pyplot-enum-functional", f"{_RAW_HEAD}import matplotlib.pyplot as plt\nE = plt.Enum('E', [(k, {_IFACE})])\nprint(bytes(np.asarray(E)))", "class-factory"),
    ("numpy-types-new-class", f"{_RAW_HEAD}import numpy.lib._utils_impl as u\nC = u.types.new_class('C', (), {{}}, lambda ns: ns.update({{k: {_IFACE}}}))\nprint(bytes(np.asarray(C())))", "class-factory"),
    ("pandas-errors-abc-meta", f"{_RAW_HEAD}import pandas as pd\nC = pd.errors.abc.ABCMeta('C', (), {{k: {_IFACE}}})\nprint(bytes(np.asarray(C())))", "module-attribute"),
    ("numpy-globals-enum", "import numpy as np\nprint(np._globals.enum.EnumType)", "module-attribute"),
]  # fmt: skip
