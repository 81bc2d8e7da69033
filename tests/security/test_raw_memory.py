"""numpy's raw-memory protocol under a name built at run time, in the real jail, layer 1 ON.

numpy (and pandas and matplotlib, which hand user objects to ``np.asarray``) look
``__array_interface__`` up with a plain ``getattr`` on whatever they are given. An object that
answers it under a name built at run time gives numpy an address to read (and write): the
payloads print the bytes at the address of a ``str`` holding :data:`RAW_MEMORY_SECRET`, which
show up in stdout only if the read worked. Static analysis rejects the routes that go through
user classes; the run-time guard closes the library classes that answer names from user data.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from evaljail import Outcome, Policy, Settings
from evaljail.runner import PythonRunner

from .payloads_static import RAW_MEMORY_SECRET, SCIENTIFIC_PAYLOADS

pytestmark = pytest.mark.sandbox

_HEAD = (
    "import numpy as np, pandas as pd\n"
    f"s = {RAW_MEMORY_SECRET!r}\n"
    'k = "__array_" + "interface__"\n'
    'iface = {"data": (id(s), False), "shape": (80,), "typestr": "|u1", "version": 3}\n'
)

#: Routes with no user class at all: library objects whose ``__getattr__`` answers a label.
_LIBRARY_ROUTES = {
    "pandas-series-index-label": _HEAD
    + "ser = pd.Series([iface], index=[k])\nprint(bytes(np.asarray(ser)))\n",
    "matplotlib-spines-key": _HEAD
    + "from matplotlib.spines import Spines\nsp = Spines()\nsp[k] = iface\n"
    "print(bytes(np.asarray(sp)))\n",
    # library metaclasses, under names static analysis does not know: the guard makes every
    # Python-level metaclass refuse the protocol
    "pandas-categorical-dtype-metaclass": _HEAD
    + "C = pd.CategoricalDtype.type('C', (), {k: iface})\nprint(bytes(np.asarray(C())))\n",
    "pandas-abc-metaclass": _HEAD
    + "C = pd.errors.abc.ABCMeta('C', (), {k: iface})\nprint(bytes(np.asarray(C())))\n",
    "matplotlib-enum-functional": _HEAD
    + "import matplotlib.pyplot as plt\nE = plt.Enum('E', [(k, iface)])\n"
    "print(bytes(np.asarray(E)))\n",
    "pandas-series-subclass-label": _HEAD
    + "class S(pd.Series):\n    pass\nprint(bytes(np.asarray(S([iface], index=[k]))))\n",
}

#: What the runtime guard alone must stop (static analysis OFF): class statements whose
#: namespace gets the protocol through a metaclass.
_CLASS_STATEMENT_ROUTES = ["metaclass-new-computed-key", "metaclass-prepare-renaming-dict"]


@pytest.fixture(scope="module")
def scientific() -> Iterator[PythonRunner]:
    runner = PythonRunner(
        policy=Policy.scientific(), settings=Settings(pool_min_size=1, pool_max_size=2)
    )
    yield runner
    runner.close()


@pytest.fixture(scope="module")
def scientific_unanalysed() -> Iterator[PythonRunner]:
    runner = PythonRunner(
        policy=Policy.scientific(static_analysis=False),
        settings=Settings(pool_min_size=1, pool_max_size=2),
    )
    yield runner
    runner.close()


@pytest.mark.parametrize(
    ("code", "rule"),
    [pytest.param(code, rule, id=pid) for pid, code, rule in SCIENTIFIC_PAYLOADS],
)
def test_raw_memory_routes_are_rejected_in_the_scientific_jail(
    scientific: PythonRunner, code: str, rule: str
) -> None:
    result = scientific.execute(code)
    assert result.outcome is Outcome.REJECTED, (result.outcome, result.error, result.stdout)
    assert rule in {v.rule_id for v in result.violations}
    assert RAW_MEMORY_SECRET not in result.stdout


@pytest.mark.parametrize("name", sorted(_LIBRARY_ROUTES))
def test_library_labels_do_not_answer_the_protocol(
    scientific: PythonRunner, scientific_unanalysed: PythonRunner, name: str
) -> None:
    """A pandas label or a matplotlib spine named ``__array_interface__`` (a name built at
    run time, so static analysis cannot see it): the guard makes those classes refuse dunder
    names, with or without layer 1."""
    for runner in (scientific, scientific_unanalysed):
        result = runner.execute(_LIBRARY_ROUTES[name])
        assert RAW_MEMORY_SECRET not in result.stdout, result.stdout[:300]
        expected = (Outcome.OK, Outcome.ERROR)
        if runner is scientific:  # some of these names are known to layer 1 as well
            expected = (*expected, Outcome.REJECTED)
        assert result.outcome in expected, (result.outcome, result.error)


@pytest.mark.parametrize("payload_id", _CLASS_STATEMENT_ROUTES)
def test_class_statements_cannot_answer_the_protocol_without_static_analysis(
    scientific_unanalysed: PythonRunner, payload_id: str
) -> None:
    code = {pid: text for pid, text, _ in SCIENTIFIC_PAYLOADS}[payload_id]
    result = scientific_unanalysed.execute(code)
    assert RAW_MEMORY_SECRET not in result.stdout, result.stdout[:300]
    assert result.outcome is Outcome.ERROR, (result.outcome, result.error)
    assert "may not define '__array_interface__'" in (result.error or ""), result.error


def test_labels_and_attribute_access_still_work(scientific: PythonRunner) -> None:
    code = (
        "import numpy as np, pandas as pd\n"
        "ser = pd.Series([1, 2], index=['a', 'b'])\n"
        "df = pd.DataFrame({'x': [1, 2], 'y': [3, 4]})\n"
        "print(ser.a, list(df.x), np.asarray(df).sum(), np.asarray(ser).tolist())\n"
    )
    result = scientific.execute(code)
    assert result.outcome is Outcome.OK, (result.error, result.stderr)
    assert result.stdout == "1 [1, 2] 10 [1, 2]\n"
