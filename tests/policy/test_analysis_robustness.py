"""Static analysis never crashes or stalls, whatever it is given.

Property: ``analyze`` raises nothing but EvaljailError subclasses on arbitrary text, arbitrary
bytes and Python-like token soup. Pathology: huge or deeply nested input finishes quickly.
"""

from __future__ import annotations

import contextlib
import gc
import sys
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evaljail.errors import EvaljailError
from evaljail.policy import Policy
from evaljail.policy.analysis import AnalysisReport, analyze

#: Generous: only real pathology (quadratic work, a stall) gets anywhere near it.
BOUND_SECONDS = 5.0

_SETTINGS = settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow])

#: Fragments that reach deep into the checker when glued together at random.
_TOKENS = [
    "\n", " ", "    ", "(", ")", "[", "]", "{", "}", ":", ",", ".", "=", ":=", "*", "**", "@",
    "'", '"', "'''", "#", "\\", "x", "y", "_", "0", "1.5", "def ", "class ", "lambda ",
    "return ", "yield ", "import ", "from ", " as ", "global ", "nonlocal ", "match ",
    "case ", "if ", "else", "for ", " in ", "try:", "except ", "with ", "async ", "await ",
    "del ", "eval", "exec", "open", "getattr", "setattr", "super()", "__class__",
    "__builtins__", "__import__", "gi_frame", "f_globals", "mro", "os", "sys", "typing",
    "'{0.__class__}'", "'{}'", ".format", ".format_map", "f'{x}'", "ｅｖａｌ", "\x00", "é",
]  # fmt: skip


def _analyze_or_evaljail_error(source: str | bytes) -> None:
    try:
        report = analyze(source)
    except EvaljailError:
        return
    assert isinstance(report, AnalysisReport)
    if report.tree is None:
        assert not report.ok


@_SETTINGS
@given(st.text())
def test_arbitrary_text_never_raises_anything_else(source: str) -> None:
    _analyze_or_evaljail_error(source)


@_SETTINGS
@given(st.text(alphabet=st.characters(exclude_categories=())))
def test_arbitrary_unicode_including_surrogates_never_raises_anything_else(source: str) -> None:
    _analyze_or_evaljail_error(source)


@_SETTINGS
@given(st.binary())
def test_arbitrary_bytes_never_raise_anything_else(source: bytes) -> None:
    _analyze_or_evaljail_error(source)


@_SETTINGS
@given(st.lists(st.sampled_from(_TOKENS), max_size=80).map("".join))
def test_python_like_token_soup_never_raises_anything_else(source: str) -> None:
    _analyze_or_evaljail_error(source)
    _analyze_or_evaljail_error(source.encode("utf-8", "surrogatepass"))


@_SETTINGS
@given(st.lists(st.sampled_from(_TOKENS), max_size=80).map("".join))
def test_tiny_limits_still_raise_only_evaljail_errors(source: str) -> None:
    policy = Policy().with_limits(max_source_bytes=1024, max_nesting=10)
    with contextlib.suppress(EvaljailError):
        assert isinstance(analyze(source, policy), AnalysisReport)


_MB = 1_000_000

PATHOLOGICAL = [
    pytest.param("(" * 100_000 + ")" * 100_000, id="100k-nested-brackets"),
    pytest.param("[" * 100_000, id="100k-unclosed-brackets"),
    pytest.param("x = '" + "a" * (_MB - 10) + "'", id="1mb-single-line-string"),
    pytest.param("#" + "a" * (_MB - 10), id="1mb-comment"),
    pytest.param("-" * (_MB - 10) + "1", id="1mb-unary-chain"),
    pytest.param("not " * (_MB // 4 - 10) + "x", id="1mb-not-chain"),
    pytest.param("a" + ".b" * (_MB // 2 - 10), id="1mb-attribute-chain"),
    pytest.param(
        "".join(" " * i + "if x:\n" for i in range(1000)) + " " * 1000 + "pass\n",
        id="deep-indentation",
    ),
    pytest.param(
        "".join("\t" * i + "for x in y:\n" for i in range(5000))[:_MB], id="deep-tab-indentation"
    ),
    pytest.param("x = " + "{'a': " * 50_000 + "1" + "}" * 50_000, id="nested-dicts"),
    pytest.param("lambda: " * 100_000 + "0", id="nested-lambdas"),
    pytest.param("x = " + "'a' " * (_MB // 4 - 10), id="1mb-implicit-concatenation"),
    pytest.param(b"\xff" * (_MB - 10), id="1mb-invalid-bytes"),
    pytest.param(("getattr(x, y)\n" * 10_000), id="10k-findings"),
]


@pytest.mark.parametrize("source", PATHOLOGICAL)
def test_pathological_input_finishes_quickly(source: str | bytes) -> None:
    # CPU time of this process: pathology (quadratic work) shows in it, a loaded machine does
    # not. analyze() does no I/O, so it cannot stall without burning CPU.
    started = time.process_time()
    _analyze_or_evaljail_error(source)
    elapsed = time.process_time() - started
    assert elapsed < BOUND_SECONDS, f"took {elapsed:.2f}s of CPU"


def test_large_sources_analysed_in_threads_at_once() -> None:
    """CPython 3.11's AST constructor is not thread-safe (python/cpython#106905): while one
    thread builds its tree, another thread's ``ast.parse`` resets the shared recursion-depth
    count, and the first fails with SystemError. The interpreter switches threads when a
    garbage collection runs Python code; frequent collections with a callback and a tiny
    switch interval make that happen in nearly every run of this test without the lock."""
    source = "x = 1\n" * 5000
    errors: list[BaseException] = []

    def work() -> None:
        for _ in range(2):
            try:
                assert analyze(source).ok
            except BaseException as exc:  # collected and asserted below
                errors.append(exc)

    def during_collection(phase: str, info: dict[str, int]) -> None:
        for _ in range(50):  # bytecode: a point where another thread may take over
            pass

    threshold = gc.get_threshold()
    interval = sys.getswitchinterval()
    gc.callbacks.append(during_collection)
    gc.set_threshold(50)
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=work) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
        gc.set_threshold(*threshold)
        gc.callbacks.remove(during_collection)
    assert errors == []
