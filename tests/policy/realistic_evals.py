"""Realistic eval sources that static analysis must accept (no false positives).

Each entry is ``(id, code)``; they exercise what real evals do: classes with dunder methods,
super().__init__(), f-strings and str.format with plain fields, regexes, json, datetime, math,
difflib, typing, pattern matching, closures, generators, and the words "import os" or "eval("
inside strings and comments.
"""

from __future__ import annotations

ACCEPTED: list[tuple[str, str]] = [
    (
        "final-answer-present",
        """
def eval_final_answer_present(trace: dict) -> tuple[bool, str]:
    steps = trace.get("steps") or []
    if not steps:
        return False, "no steps"
    out = steps[-1].get("output")
    return bool(out), "final answer present" if out else "empty final answer"
""",
    ),
    (
        "main-guard",
        """
def eval_x(trace):
    return True, ""

if __name__ == "__main__":
    print(eval_x({"steps": []}))
""",
    ),
    (
        "class-with-dunder-methods",
        """
class Score:
    __slots__ = ("value",)

    def __init__(self, value: float) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.value!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Score) and other.value == self.value

    __hash__ = None

    def __lt__(self, other: "Score") -> bool:
        return self.value < other.value

def eval_score(trace):
    return Score(1) == Score(1), "equal"
""",
    ),
    (
        "custom-exception-super-init",
        """
class TraceError(Exception):
    def __init__(self, message: str, step: int) -> None:
        super().__init__(message)
        self.step = step

    def __str__(self) -> str:
        return f"step {self.step}: {super().__str__()}"

def eval_x(trace):
    try:
        raise TraceError("bad", 1)
    except TraceError as exc:
        return False, str(exc)
""",
    ),
    (
        "regex-compile",
        """
import re

URL_RE = re.compile(r"https?://\\S+")
CITATION_RE = re.compile(r"\\[(\\d+)\\]")

def eval_citations(trace):
    answer = str((trace.get("steps") or [{}])[-1].get("output") or "")
    if URL_RE.search(answer) or CITATION_RE.search(answer):
        return True, "citations present"
    return False, "no citations"
""",
    ),
    (
        "str-format-plain-fields",
        """
def eval_x(trace):
    n = len(trace.get("steps", []))
    a = "{0} {name:>10}".format(n, name="steps")
    b = "{0[key]} and {1[0]}".format({"key": 1}, [2])
    c = "{:.2f}% {!r}".format(12.3456, "x")
    d = "{total:,d}".format_map({"total": 1234567})
    return True, a + b + c + d
""",
    ),
    (
        "format-template-constant",
        """
TEMPLATE = "Step {index} failed: {error}"

def eval_no_step_errors(trace):
    for index, step in enumerate(trace.get("steps") or []):
        if step.get("error"):
            return False, TEMPLATE.format(index=index, error=step["error"])
    return True, ""
""",
    ),
    (
        "format-local-template",
        """
def eval_x(trace):
    template = "{count} steps, {ratio:.0%} ok"
    return True, template.format(count=3, ratio=0.5)
""",
    ),
    (
        "percent-formatting",
        """
def eval_x(trace):
    steps = trace.get("steps") or []
    counts = {"n": len(steps)}
    return True, "%d steps" % len(steps) + " / %(n)s" % counts + " / %-5s|" % "ok"
""",
    ),
    (
        "words-in-strings-and-comments",
        '''
# Do not import os or call eval( here; x.__class__ is banned in comments too.
BANNED = ["import os", "eval(", "__import__", "subprocess.run", "().__class__"]

def eval_no_code_injection(trace):
    """Fail when the agent output contains "import os" or "exec(" snippets."""
    text = str(trace.get("steps", [{}])[-1].get("output", ""))
    hits = [b for b in BANNED if b in text]
    return (not hits), ("found: " + ", ".join(hits)) if hits else ""
''',
    ),
    (
        "json-parse",
        """
import json

def eval_valid_json(trace):
    out = (trace.get("steps") or [{}])[-1].get("output")
    if not isinstance(out, str):
        return True, "not a string"
    try:
        json.loads(out)
    except (ValueError, TypeError) as exc:
        return False, f"invalid JSON: {exc}"
    return True, "valid JSON"
""",
    ),
    (
        "datetime-latency",
        """
from datetime import datetime, timezone

def _parse(ts):
    if not isinstance(ts, str):
        return None
    try:
        dt = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)

def eval_latency(trace):
    times = [_parse((s.get("metadata") or {}).get("timestamp")) for s in trace.get("steps", [])]
    times = [t for t in times if t is not None]
    if len(times) < 2:
        return True, "not enough timestamps"
    elapsed = (times[-1] - times[0]).total_seconds()
    return elapsed <= 30, f"{elapsed:.1f}s"
""",
    ),
    (
        "math-stats",
        """
import math

def eval_scores(trace):
    scores = [s.get("score") for s in trace.get("steps", []) if isinstance(s.get("score"), (int, float))]
    if not scores:
        return True, "no scores"
    mean = sum(scores) / len(scores)
    sd = math.sqrt(sum((x - mean) ** 2 for x in scores) / len(scores))
    return not math.isnan(mean) and mean >= 0.5, f"mean={mean:.2f} sd={sd:.2f}"
""",
    ),
    (
        "difflib-echo",
        """
import difflib

def eval_not_echo(trace):
    steps = trace.get("steps") or []
    if not steps:
        return True, ""
    a, b = str(steps[0].get("input", "")), str(steps[-1].get("output", ""))
    ratio = difflib.SequenceMatcher(None, a.lower(), b.lower()).ratio()
    return ratio < 0.9, f"similarity {ratio:.2f}"
""",
    ),
    (
        "typing-annotations",
        """
from __future__ import annotations

from typing import Any, Dict, List, Optional, TypedDict

class Step(TypedDict, total=False):
    input: Any
    output: Any
    error: Optional[str]

def eval_typed(trace: Dict[str, Any]) -> tuple[bool, str]:
    steps: List[Step] = trace.get("steps") or []
    return all(s.get("error") is None for s in steps), ""
""",
    ),
    (
        "input-as-variable-and-parameter",
        """
def describe(input, output):
    return f"{input!r} -> {output!r}"

def eval_x(trace):
    for step in trace.get("steps") or []:
        input = step.get("input")
        help = "n/a"
        vars = [input, help]
        if input is None:
            return False, describe(input, step.get("output"))
    return True, ""
""",
    ),
    (
        "getattr-literal-and-hasattr",
        """
class Box:
    score = 1.0

def eval_x(trace):
    box = Box()
    value = getattr(box, "score", 0.0)
    has = hasattr(box, "score")
    setattr(box, "score", value + 1)
    return has and value >= 1, ""
""",
    ),
    (
        "getattr-constant-name",
        """
FIELD = "score"

def eval_x(trace):
    class Item:
        score = 2
    return getattr(Item(), FIELD, 0) > 1, ""
""",
    ),
    (
        "type-name",
        """
def eval_contract(trace):
    out = (trace.get("steps") or [{}])[-1].get("output")
    kind = type(out).__name__
    return isinstance(out, (str, dict)), f"output is {kind}; doc: {eval_contract.__doc__}"
""",
    ),
    (
        "match-statement",
        """
def eval_tool_results(trace):
    for step in trace.get("steps") or []:
        for call in step.get("tool_calls") or []:
            match call:
                case {"name": str(name), "result": {"error": err}} if err:
                    return False, f"{name} failed: {err}"
                case {"name": "search", "result": [*hits]} if not hits:
                    return False, "empty search"
                case _:
                    pass
    return True, ""
""",
    ),
    (
        "walrus-and-comprehensions",
        """
import re

def eval_x(trace):
    outs = [o for s in trace.get("steps", []) if (o := s.get("output"))]
    words = {w for o in outs for w in re.findall(r"\\w+", str(o))}
    counts = {w: len(w) for w in words}
    return bool(counts), f"{len(counts)} words"
""",
    ),
    (
        "closures-and-lambdas",
        """
def make_threshold(limit):
    def check(value):
        return value <= limit
    return check

def eval_x(trace):
    ok = make_threshold(10)
    key = lambda s: len(str(s.get("output", "")))
    steps = sorted(trace.get("steps") or [], key=key)
    return all(ok(key(s)) for s in steps), ""
""",
    ),
    (
        "generators",
        """
def tool_calls(trace):
    for step in trace.get("steps") or []:
        yield from step.get("tool_calls") or []

def eval_no_repeats(trace):
    seen = set()
    for call in tool_calls(trace):
        key = (call.get("name"), repr(sorted((call.get("arguments") or {}).items())))
        if key in seen:
            return False, f"repeated call to {call.get('name')}"
        seen.add(key)
    return True, ""
""",
    ),
    (
        "decorators-and-properties",
        '''
import math

def cached(fn):
    memo = {}
    def wrapper(x):
        if x not in memo:
            memo[x] = fn(x)
        return memo[x]
    wrapper.__doc__ = fn.__doc__
    return wrapper

class Stats:
    def __init__(self, values):
        self._values = list(values)

    @property
    def mean(self):
        return sum(self._values) / len(self._values) if self._values else math.nan

    @staticmethod
    def empty():
        return Stats([])

    @classmethod
    def of(cls, *values):
        return cls(values)

@cached
def square(x):
    """Square."""
    return x * x

def eval_x(trace):
    return Stats.of(1, 2, 3).mean == 2 and square(3) == 9, ""
''',
    ),
    (
        "inheritance-and-init-subclass",
        """
REGISTRY = {}

class Check:
    name = "base"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        REGISTRY[cls.name] = cls

    def __call__(self, trace):
        return True, ""

class NonEmpty(Check):
    name = "non_empty"

    def __call__(self, trace):
        ok, _ = super().__call__(trace)
        return ok and bool(trace.get("steps")), ""

def eval_registry(trace):
    return REGISTRY["non_empty"]()(trace)
""",
    ),
    (
        "global-counter-and-all",
        """
__all__ = ["eval_counter"]
__version__ = "1.0"
CALLS = 0

def eval_counter(trace):
    global CALLS
    CALLS += 1
    return CALLS > 0, f"call {CALLS} ({__name__})"
""",
    ),
    (
        "try-except-finally",
        """
import json

def eval_x(trace):
    result = None
    try:
        result = json.dumps(trace, sort_keys=True, default=str)
    except (TypeError, ValueError, RecursionError) as exc:
        return False, f"{type(exc).__name__}: {exc}"
    else:
        return True, f"{len(result)} bytes"
    finally:
        result = None
""",
    ),
    (
        "nested-data-walk",
        """
def walk(value, depth=0):
    if depth > 20:
        return
    if isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from walk(v, depth + 1)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from walk(v, depth + 1)

def eval_no_password_keys(trace):
    bad = [k for k in walk(trace) if isinstance(k, str) and "password" in k.lower()]
    return not bad, ", ".join(sorted(set(bad)))
""",
    ),
    (
        "string-methods",
        """
def eval_polite(trace):
    text = str((trace.get("steps") or [{}])[-1].get("output") or "").strip().lower()
    polite = any(text.startswith(p) for p in ("please", "thanks", "thank you"))
    words = " ".join(text.split()).title().replace("  ", " ").partition(" ")[0]
    return polite or text.endswith("!"), words.center(10).rstrip()
""",
    ),
    (
        "async-helper-defined",
        """
async def fetch(x):
    return x

def eval_x(trace):
    coro = fetch(1)
    coro.close()
    return True, ""
""",
    ),
    (
        "named-tuple-and-enum-like",
        """
from typing import NamedTuple

class Verdict(NamedTuple):
    passed: bool
    reason: str

LEVELS = {"low": 1, "medium": 2, "high": 3}

def eval_level(trace):
    level = str(trace.get("level", "low"))
    v = Verdict(LEVELS.get(level, 0) <= 2, f"level={level}")
    return v.passed, v.reason
""",
    ),
    (
        "object-super-new",
        """
class Singleton:
    _instance = None

    def __new__(cls):
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

def eval_x(trace):
    return Singleton() is Singleton(), ""
""",
    ),
    (
        "exception-attributes",
        """
def eval_x(trace):
    try:
        {}["missing"]
    except KeyError as exc:
        return False, f"missing key {exc.args[0]!r} ({type(exc).__name__})"
    return True, ""
""",
    ),
    (
        "private-attributes",
        """
class Counter:
    def __init__(self):
        self._count = 0
        self.__secret = 1

    def bump(self):
        self._count += 1
        return self._count + self.__secret

def eval_x(trace):
    return Counter().bump() == 2, ""
""",
    ),
]
