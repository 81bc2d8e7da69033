"""Static analysis (layer 1): the report, positions, encodings, limits, scoping and policy."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from evaljail.errors import ConfigurationError, SourceTooComplexError, SourceTooLargeError
from evaljail.policy import ALWAYS_BLOCKED_BUILTINS, Policy
from evaljail.policy._rules import RULES
from evaljail.policy.analysis import AnalysisReport, analyze
from tests.conftest import FIXTURES, REPO
from tests.policy.realistic_evals import ACCEPTED
from tests.security.payloads_static import PAYLOADS

FIXTURE_EVALS = sorted((FIXTURES / "evals").glob("*.py"))


def rules(code: str | bytes, policy: Policy | None = None) -> list[str]:
    return [v.rule_id for v in analyze(code, policy).violations]


# -- accepted code ----------------------------------------------------------------------------


def test_enough_realistic_evals() -> None:
    assert len(ACCEPTED) >= 30
    assert len({name for name, _ in ACCEPTED}) == len(ACCEPTED)


@pytest.mark.parametrize("code", [pytest.param(c, id=i) for i, c in ACCEPTED])
def test_accepts_realistic_eval(code: str) -> None:
    report = analyze(code)
    assert report.violations == ()
    assert report.ok


def test_fixture_evals_exist() -> None:
    assert len(FIXTURE_EVALS) == 25


@pytest.mark.parametrize("path", [pytest.param(p, id=p.stem) for p in FIXTURE_EVALS])
def test_accepts_fixture_eval(path: Path) -> None:
    report = analyze(path.read_bytes())
    assert report.violations == ()


# -- the report -------------------------------------------------------------------------------


def test_report_of_clean_source() -> None:
    report = analyze("import json\nimport xml.etree.ElementTree as ET\nfrom datetime import date\n")
    assert isinstance(report, AnalysisReport)
    assert isinstance(report.tree, ast.Module)
    assert report.imports == frozenset({"json", "xml.etree.ElementTree", "datetime"})
    assert rules("import json\nimport xml.etree.ElementTree as ET") == ["import-not-allowed"]
    assert report.to_dict()["imports"] == ["datetime", "json", "xml.etree.ElementTree"]


def test_report_is_frozen() -> None:
    report = analyze("x = 1")
    with pytest.raises(AttributeError):
        report.violations = ()  # type: ignore[misc]


def test_imports_record_relative_and_future_forms() -> None:
    report = analyze("from __future__ import annotations\nfrom .pkg import x\nfrom .. import y\n")
    assert report.imports == frozenset({"__future__", ".pkg", ".."})
    assert rules("from __future__ import annotations") == []


def test_syntax_error_has_position_and_no_tree() -> None:
    report = analyze("x = 1\ndef f(:\n    pass\n")
    assert report.tree is None
    assert not report.ok
    (v,) = report.violations
    assert (v.rule_id, v.line) == ("syntax-error", 2)
    assert v.col >= 1
    assert v.message and v.hint


def test_violations_are_sorted_positioned_and_deduplicated() -> None:
    code = "y = 1\nx = ().__class__.__bases__\nimport os\n"
    report = analyze(code)
    got = [(v.rule_id, v.line, v.col) for v in report.violations]
    assert got == [
        ("dunder-attribute", 2, 8),
        ("dunder-attribute", 2, 18),
        ("import-blocked", 3, 8),
    ]
    assert len(set(report.violations)) == len(report.violations)


def test_columns_count_characters_not_bytes() -> None:
    (v,) = analyze('s = "ééé"; eval(s)').violations
    assert (v.rule_id, v.line, v.col) == ("blocked-builtin", 1, 12)


def test_every_finding_uses_a_catalogued_rule_with_message_and_hint() -> None:
    for _, code, _ in PAYLOADS:
        for v in analyze(code).violations:
            assert v.rule_id in RULES
            assert v.message
            assert v.hint
            assert v.line >= 1
            assert v.col >= 1


def test_messages_name_the_offender() -> None:
    (v,) = analyze("import subprocess").violations
    assert "'subprocess'" in v.message
    (v,) = analyze("open('x')").violations
    assert "'open'" in v.message
    assert "files" in v.hint
    (v,) = analyze("import numpy").violations
    assert "json" in v.hint  # the allow-list is spelled out


# -- bytes, encodings, odd characters ---------------------------------------------------------


def test_bytes_utf8_and_bom_are_decoded() -> None:
    assert rules("s = 'ünïcode'\n".encode()) == []
    assert rules(b"\xef\xbb\xbfx = 1\n") == []


def test_bytes_honour_a_pep263_coding_comment() -> None:
    source = "# -*- coding: latin-1 -*-\ns = 'caf\xe9'\n".encode("latin-1")
    assert rules(source) == []


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"x = 1\ny = '\xff'\n", id="invalid-utf8"),
        pytest.param(b"# coding: no-such-codec\nx = 1\n", id="unknown-codec"),
        pytest.param(b"# coding: rot13\nx = 1\n", id="not-a-text-codec"),
        pytest.param(b"\xef\xbb\xbf# coding: latin-1\nx = 1\n", id="bom-and-other-cookie"),
    ],
)
def test_undecodable_bytes_are_an_encoding_error(data: bytes) -> None:
    report = analyze(data)
    assert [v.rule_id for v in report.violations] == ["encoding-error"]
    assert report.tree is None


def test_invalid_utf8_position() -> None:
    (v,) = analyze(b"x = 1\nyy = '\xff'\n").violations
    assert (v.line, v.col) == (2, 7)


def test_lone_surrogate_is_an_encoding_error() -> None:
    (v,) = analyze("x = 1\ny = '\ud800'\n").violations
    assert (v.rule_id, v.line, v.col) == ("encoding-error", 2, 6)


def test_null_byte_is_a_syntax_error_with_position() -> None:
    (v,) = analyze("x = 1\nyz\0").violations
    assert (v.rule_id, v.line, v.col) == ("syntax-error", 2, 3)


def test_source_of_another_type_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        analyze(123)  # type: ignore[arg-type]


# -- size and nesting limits ------------------------------------------------------------------


def test_source_too_large_str_and_bytes() -> None:
    policy = Policy().with_limits(max_source_bytes=1024)
    assert analyze("x = 1\n" + "#" * (1024 - 7), policy).ok  # exactly at the limit
    with pytest.raises(SourceTooLargeError) as info:
        analyze("#" * 1025, policy)
    assert info.value.details == {"size_bytes": 1025, "max_source_bytes": 1024}
    with pytest.raises(SourceTooLargeError):
        analyze(b"#" * 1025, policy)
    with pytest.raises(SourceTooLargeError):  # counted in UTF-8 bytes, not characters
        analyze("#" + "é" * 600, policy)


def test_default_size_limit_is_one_megabyte() -> None:
    with pytest.raises(SourceTooLargeError):
        analyze("#" * (1024 * 1024 + 1))


@pytest.mark.parametrize(
    "code",
    [
        pytest.param("(" * 300 + ")" * 300, id="brackets"),
        pytest.param("x = " + "[" * 1000, id="unclosed-brackets"),
        pytest.param(
            "".join(" " * i + "if x:\n" for i in range(150)) + " " * 150 + "pass\n",
            id="indentation",
        ),
        pytest.param("-" * 600 + "1", id="unary-chain"),
        pytest.param("x = " + "1 + " * 500 + "1", id="binop-chain"),
        pytest.param("if x:\n pass\n" + "elif x:\n pass\n" * 250, id="elif-chain"),
        pytest.param("not " * 100_000 + "x", id="parser-stack"),
    ],
)
def test_too_deep_source_is_too_complex(code: str) -> None:
    with pytest.raises(SourceTooComplexError):
        analyze(code)


def test_max_nesting_is_configurable() -> None:
    code = "x = " + "(" * 8 + "1" + ")" * 8 + "\ny = " + "-" * 30 + "1\n"
    assert analyze(code).ok
    with pytest.raises(SourceTooComplexError) as info:
        analyze(code, Policy().with_limits(max_nesting=10))
    assert info.value.details["max_nesting"] == 10


# -- policy -----------------------------------------------------------------------------------


def test_extra_imports_are_allowed() -> None:
    assert rules("import string") == ["import-not-allowed"]
    assert rules("import string", Policy.core(extra_imports={"string"})) == []


def test_scientific_profile() -> None:
    code = (
        "import numpy as np\nimport pandas as pd\nimport matplotlib.pyplot as plt\n"
        "from pandas.api.types import is_numeric_dtype\n"
    )
    assert set(rules(code)) == {"import-not-allowed"}
    assert rules(code, Policy.scientific()) == []
    assert rules("import numpy.ctypeslib", Policy.scientific()) == ["import-blocked"]
    assert rules("from numpy import f2py", Policy.scientific()) == ["module-attribute"]


@pytest.mark.parametrize(
    "code",
    [
        pytest.param("import numpy as np\ndef f(fp):\n    return np.load(fp)", id="numpy-load"),
        pytest.param(
            "import numpy as np\ndef f(fp):\n    return np.load(fp, allow_pickle=False)",
            id="numpy-load-no-pickle",
        ),
        pytest.param("import json\ndef f(fp):\n    return json.load(fp, strict=False)", id="json"),
        pytest.param(
            "import matplotlib.ticker as t\nf = t.StrMethodFormatter('{x:,.0f} ({pos})')",
            id="str-method-formatter",
        ),
        pytest.param(
            "import pandas as pd\ndef eval_x(trace):\n    a = pd.DataFrame(trace['a'])\n"
            "    pd.testing.assert_frame_equal(a, a)\n    s = a.agg('sum')\n"
            "    return bool(s.sum() > 0), f'{s.sum():.2f}'",
            id="pandas-public-api",
        ),
        pytest.param(
            "import numpy as np\nx = np.lib.stride_tricks.sliding_window_view(np.arange(5), 2)",
            id="sliding-window-view",
        ),
        pytest.param("t = '{x.real} {0[key]} {name:>{width}}'\nprint('__main__')", id="strings"),
        pytest.param("import re\nflags = re.RegexFlag.IGNORECASE | re.I", id="regex-flag"),
    ],
)
def test_scientific_idioms_are_accepted(code: str) -> None:
    assert rules(code, Policy.scientific()) == []


def test_policy_blocked_builtins_are_honoured() -> None:
    policy = Policy(blocked_builtins=ALWAYS_BLOCKED_BUILTINS | {"print"})
    assert rules("print(1)") == []
    assert rules("print(1)", policy) == ["blocked-builtin"]


def test_policy_blocked_modules_are_honoured() -> None:
    policy = Policy(blocked_modules=Policy().blocked_modules | {"difflib"})
    assert rules("import difflib") == []
    assert rules("import difflib", policy) == ["import-blocked"]


# -- scoping of blocked builtins --------------------------------------------------------------


@pytest.mark.parametrize(
    "code",
    [
        pytest.param("def f(input):\n    return input.strip()", id="parameter"),
        pytest.param("def f(s):\n    input = s\n    return input()", id="local-assignment"),
        pytest.param("def f(xs):\n    for help in xs:\n        help()", id="loop-target"),
        pytest.param(
            "def f():\n    from json import loads as eval\n    return eval('1')", id="local-import"
        ),
        pytest.param(
            "def f():\n    eval = len\n    def g():\n        return eval('x')\n    return g",
            id="closure",
        ),
        pytest.param(
            "def f():\n    eval = len\n    class A:\n        def m(self):\n            return eval('x')",
            id="closure-through-class",
        ),
        pytest.param("g = lambda open: open()", id="lambda-parameter"),
        pytest.param("xs = [vars() for vars in [len]]", id="comprehension-target"),
        pytest.param(
            "def f():\n    eval = len\n    def g():\n        nonlocal eval\n        return eval('x')",
            id="nonlocal",
        ),
        pytest.param(
            "def f(x):\n    try:\n        pass\n    except Exception as input:\n        return input()",
            id="except-name",
        ),
        pytest.param(
            "def f(x):\n    match x:\n        case input:\n            return input()",
            id="match-capture",
        ),
    ],
)
def test_function_local_bindings_shadow_blocked_builtins(code: str) -> None:
    assert rules(code) == []


@pytest.mark.parametrize(
    "code",
    [
        pytest.param("input = len\ninput('x')", id="module-binding-not-trusted"),
        pytest.param(
            "input = len\ndef f():\n    return input('x')", id="module-binding-in-function"
        ),
        pytest.param(
            "class A:\n    input = len\n    x = input('x')", id="class-binding-not-trusted"
        ),
        pytest.param(
            "class A:\n    input = len\n    def m(self):\n        return input('x')",
            id="class-binding-invisible-to-methods",
        ),
        pytest.param(
            "def f():\n    global input\n    input = len\n    return input('x')",
            id="global-declaration",
        ),
        pytest.param(
            "def f(xs):\n    ys = [input for input in xs]\n    return input('x')",
            id="comprehension-does-not-leak",
        ),
        pytest.param("def f(input=input):\n    return input('x')", id="default-evaluated-outside"),
        pytest.param(
            "xs = [input('x') for _ in [vars for vars in []]]", id="first-iterable-outside"
        ),
    ],
)
def test_bindings_that_do_not_shadow(code: str) -> None:
    assert "blocked-builtin" in rules(code) or "builtin-alias" in rules(code)


def test_walrus_in_comprehension_binds_in_enclosing_function() -> None:
    code = "def f(xs):\n    ys = [(input := x) for x in xs]\n    return input.strip()"
    assert rules(code) == []


# -- dunders: what is allowed, and why ---------------------------------------------------------


@pytest.mark.parametrize(
    "code",
    [
        "class A:\n    def __init__(self):\n        super().__init__()",
        "class A(dict):\n    def __getitem__(self, k):\n        return super().__getitem__(k)",
        "class A:\n    def __repr__(self):\n        return super().__repr__()",
        "x = type(1).__name__ + len.__qualname__ + str.__doc__ + len.__module__",
        "import json\nv = json.__version__",
        "if __name__ == '__main__':\n    pass\nd = __doc__",
        "class A:\n    __slots__ = ('a',)\n    __hash__ = None\n    __match_args__ = ('a',)",
        "def __getattr__(name):\n    raise AttributeError(name)",
        "class A:\n    __private = 1\n    def m(self):\n        return self.__private",
    ],
)
def test_allowed_dunder_uses(code: str) -> None:
    assert rules(code) == []


@pytest.mark.parametrize(
    ("code", "rule"),
    [
        ("class A(B):\n    def __init__(self):\n        B.__init__(self)", "dunder-attribute"),
        ("x = super().__getattribute__('a')", "dunder-attribute"),
        ("x = super().__reduce__()", "dunder-attribute"),
        ("super = lambda: 1\nx = super().__init__", "dunder-attribute"),
        ("class A:\n    def m(self, super):\n        return super().__init__", "dunder-attribute"),
        ("from json import *\nx = super().__init__", "dunder-attribute"),
        ("x = (1).__class__.__name__", "dunder-attribute"),
        ("x = len.__self__", "dunder-attribute"),
        ("x = len.__file__", "dunder-attribute"),
        ("x = __file__", "blocked-name"),
        ("x = __annotations__", "blocked-name"),
        ("def __class__():\n    pass", "blocked-name"),
        ("class __dict__:\n    pass", "blocked-name"),
    ],
)
def test_rejected_dunder_uses(code: str, rule: str) -> None:
    assert rule in rules(code)


# -- class bodies: names are looked up in the metaclass's namespace ---------------------------


@pytest.mark.parametrize(
    "code",
    [
        pytest.param("F = '{0}'\nclass A:\n    x = F.format(1)", id="no-bases"),
        pytest.param("F = '{0}'\nclass E(ValueError):\n    x = F.format(1)", id="builtin-base"),
        pytest.param(
            "N = 'a'\nclass A(dict, object):\n    x = getattr(1, N, 0)", id="getattr-name"
        ),
        pytest.param(
            "class A:\n    match 1:\n        case int(n):\n            pass", id="case-int"
        ),
        pytest.param(
            "class M(type):\n    pass\nclass A(metaclass=M):\n    class B:\n"
            "        match 1:\n            case int(n):\n                pass",
            id="nested-plain-class",
        ),
        pytest.param(
            "F = '{0}'\nclass A(metaclass=M):\n    def m(self):\n        return F.format(1)",
            id="method-reads-globals",
        ),
        pytest.param(
            "class A(Exception):\n    def __init__(self):\n        super().__init__('x')",
            id="super-in-method",
        ),
    ],
)
def test_names_in_plain_class_bodies_are_trusted(code: str) -> None:
    assert rules(code) == []


@pytest.mark.parametrize(
    ("code", "rule"),
    [
        pytest.param(
            "F = '{0}'\nclass A(metaclass=M):\n    x = F.format(1)",
            "dynamic-format-string",
            id="metaclass-keyword",
        ),
        pytest.param(
            "F = '{0}'\nclass A(Base):\n    x = F.format(1)", "dynamic-format-string", id="base"
        ),
        pytest.param(
            "F = '{0}'\nclass A(**kw):\n    x = F.format(1)",
            "dynamic-format-string",
            id="keywords-unpacked",
        ),
        pytest.param(
            "F = '{0}'\nclass A(metaclass=M):\n    class B(Exception):\n        x = F.format(1)",
            "dynamic-format-string",
            id="base-looked-up-in-outer-namespace",
        ),
        pytest.param(
            "F = '{0}'\nclass A(metaclass=M):\n    xs = [i for i in F.format(1)]",
            "dynamic-format-string",
            id="first-iterable",
        ),
        pytest.param(
            "F = '{0}'\nclass A(metaclass=M):\n    def m(self, x=F.format(1)):\n        pass",
            "dynamic-format-string",
            id="default-value",
        ),
        pytest.param(
            "N = 'a'\nclass A(metaclass=M):\n    x = getattr(1, N)",
            "dynamic-attribute",
            id="getattr",
        ),
        pytest.param(
            "class A(metaclass=M):\n    match 1:\n        case str(x):\n            pass",
            "class-pattern",
            id="case-str",
        ),
        pytest.param(
            "object = 1\nclass A(object):\n    match 1:\n        case str(x):\n            pass",
            "class-pattern",
            id="rebound-builtin-base",
        ),
        pytest.param(
            "from json import *\nclass A(dict):\n    match 1:\n        case str(x):\n            pass",
            "class-pattern",
            id="star-import",
        ),
    ],
)
def test_names_in_class_bodies_with_a_foreign_metaclass_are_not_trusted(
    code: str, rule: str
) -> None:
    assert rule in rules(code)


# -- format strings ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "code",
    [
        "'{0} {name:>10} {0[key]} {0[__class__]}'.format(d, name='x')",
        "'{:{width}.{prec}f}'.format(3.14159, width=10, prec=2)",
        "'{0.real} {0.imag}'.format(1j)",
        "'{a.__name__}'.format(a=len)",
        "'{'.format(1)",  # malformed: str.format raises before reading anything
        "f = '{0}'.format\nx = f(1)",
        "'%s %(x)s' % {'x': 1}",
    ],
)
def test_accepted_format_strings(code: str) -> None:
    assert rules(code) == []


def test_format_fields_before_a_malformed_part_are_still_checked() -> None:
    assert rules("'{0.__class__} }'.format(())") == ["format-string-attribute"]


# -- documentation ----------------------------------------------------------------------------


def test_every_rule_is_documented_and_every_documented_rule_exists() -> None:
    doc = (REPO / "docs" / "static-analysis.md").read_text(encoding="utf-8")
    table_ids = set(re.findall(r"^\| `([a-z-]+)` \|", doc, flags=re.MULTILINE))
    assert table_ids == set(RULES)


# -- side effects -----------------------------------------------------------------------------


def test_parser_warnings_are_neither_printed_nor_turned_into_errors() -> None:
    import warnings

    source = 'x = 1if y else 2\ns = "\\d"\n'
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("error")
        report = analyze(source)
        filters_after_first = len(warnings.filters)
        analyze(source)
        assert len(warnings.filters) == filters_after_first  # idempotent
    assert report.ok
    assert caught == []


def test_following_module_chains_never_runs_a_submodule_in_the_host() -> None:
    """The analyser looks inside standard-library modules to follow attribute chains; source
    that names ``pkg.__main__`` (or any submodule its package has not loaded) must not make
    the host import, and so run, it."""
    import sys

    policy = Policy.core(extra_imports={"unittest"})
    report = analyze("import unittest.__main__ as m\nx = m.main\n", policy)
    assert "import-blocked" in {v.rule_id for v in report.violations}
    assert "unittest.__main__" not in sys.modules
    # a submodule its package imported itself is followed
    chained = analyze("from json import decoder\nx = decoder.re.enum\n", Policy())
    assert [v.rule_id for v in chained.violations] == ["module-attribute"]
