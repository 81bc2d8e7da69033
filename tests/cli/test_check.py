"""``evaljail check``: output formats and exit codes (0 clean, 1 violations, 2 usage)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from evaljail.cli import app
from tests.conftest import FIXTURES

CLEAN = "import json\n\ndef eval_ok(trace):\n    return True, json.dumps(trace)[:10]\n"
BAD = "import os\n\ndef eval_bad(trace):\n    return ().__class__ is tuple, ''\n"


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def clean(tmp_path: Path) -> Path:
    path = tmp_path / "clean.py"
    path.write_text(CLEAN, encoding="utf-8")
    return path


@pytest.fixture
def bad(tmp_path: Path) -> Path:
    path = tmp_path / "bad.py"
    path.write_text(BAD, encoding="utf-8")
    return path


def test_clean_file_exits_0(runner: CliRunner, clean: Path) -> None:
    result = runner.invoke(app, ["check", str(clean)])
    assert result.exit_code == 0, result.output
    assert "Checked 1 file: no violations." in result.stdout


def test_violations_exit_1_with_position_rule_message_and_hint(
    runner: CliRunner, bad: Path
) -> None:
    result = runner.invoke(app, ["check", str(bad)])
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert f"{bad}:1:8 import-blocked module 'os' is always blocked" in lines
    assert f"{bad}:4:15 dunder-attribute access to dunder attribute '__class__'" in lines
    hints = [line for line in lines if line.startswith("    hint: ")]
    assert len(hints) == 2
    assert "\x1b[" not in result.stdout  # plain text when not a terminal


def test_fixture_evals_are_clean(runner: CliRunner) -> None:
    files = sorted(str(p) for p in (FIXTURES / "evals").glob("*.py"))
    assert len(files) == 25
    result = runner.invoke(app, ["check", *files])
    assert result.exit_code == 0, result.output
    assert "Checked 25 files: no violations." in result.stdout


def test_json_shape(runner: CliRunner, clean: Path, bad: Path) -> None:
    result = runner.invoke(app, ["check", "--json", str(clean), str(bad)])
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert [entry["file"] for entry in data] == [str(clean), str(bad)]
    first, second = data
    assert first == {
        "file": str(clean),
        "ok": True,
        "error": None,
        "imports": ["json"],
        "violations": [],
    }
    assert second["ok"] is False
    assert second["error"] is None
    assert second["imports"] == ["os"]
    assert [v["rule_id"] for v in second["violations"]] == ["import-blocked", "dunder-attribute"]
    assert set(second["violations"][0]) == {"rule_id", "line", "col", "message", "hint"}


def test_missing_file_exits_2_but_others_are_still_checked(
    runner: CliRunner, bad: Path, tmp_path: Path
) -> None:
    missing = tmp_path / "nope.py"
    result = runner.invoke(app, ["check", str(missing), str(bad)])
    assert result.exit_code == 2
    assert f"{missing}: not_found" in result.stderr
    assert "import-blocked" in result.stdout


def test_missing_file_in_json(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["check", "--json", str(tmp_path / "nope.py")])
    assert result.exit_code == 2
    (entry,) = json.loads(result.stdout)
    assert entry["error"]["code"] == "not_found"
    assert entry["ok"] is False


def test_directory_is_unreadable_exit_2(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["check", "--json", str(tmp_path)])
    assert result.exit_code == 2
    assert json.loads(result.stdout)[0]["error"]["code"] == "unreadable"


def test_no_files_is_a_usage_error(runner: CliRunner) -> None:
    result = runner.invoke(app, ["check"])
    assert result.exit_code == 2


def test_allow_adds_a_module(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "s.py"
    path.write_text("import string\n", encoding="utf-8")
    assert runner.invoke(app, ["check", str(path)]).exit_code == 1
    assert runner.invoke(app, ["check", "--allow", "string", str(path)]).exit_code == 0
    both = runner.invoke(app, ["check", "--allow", "string", "--allow", "textwrap", str(path)])
    assert both.exit_code == 0


@pytest.mark.parametrize("module", ["os", "not a module"])
def test_invalid_allow_is_a_usage_error(runner: CliRunner, clean: Path, module: str) -> None:
    result = runner.invoke(app, ["check", "--allow", module, str(clean)])
    assert result.exit_code == 2
    assert "evaljail check:" in result.stderr


def test_scientific_profile(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "np.py"
    path.write_text("import numpy as np\nimport pandas as pd\n", encoding="utf-8")
    assert runner.invoke(app, ["check", str(path)]).exit_code == 1
    assert runner.invoke(app, ["check", "--scientific", str(path)]).exit_code == 0


def test_too_large_file_is_reported_and_exits_1(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "big.py"
    path.write_bytes(b"#" * (1024 * 1024 + 10))
    result = runner.invoke(app, ["check", "--json", str(path)])
    assert result.exit_code == 1
    (entry,) = json.loads(result.stdout)
    assert entry["error"]["code"] == "source_too_large"
    plain = runner.invoke(app, ["check", str(path)])
    assert plain.exit_code == 1
    assert f"{path}: source_too_large:" in plain.stdout
    assert "Traceback" not in plain.output


def test_too_deep_file_is_reported_and_exits_1(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "deep.py"
    path.write_text("x = " + "(" * 100_000 + ")" * 100_000, encoding="utf-8")
    result = runner.invoke(app, ["check", "--json", str(path)])
    assert result.exit_code == 1
    assert json.loads(result.stdout)[0]["error"]["code"] == "source_too_complex"


def test_syntax_and_encoding_errors_are_violations(runner: CliRunner, tmp_path: Path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("def f(:\n", encoding="utf-8")
    latin = tmp_path / "latin.py"
    latin.write_bytes(b"s = '\xe9'\n")
    result = runner.invoke(app, ["check", "--json", str(broken), str(latin)])
    assert result.exit_code == 1
    rule_ids = [entry["violations"][0]["rule_id"] for entry in json.loads(result.stdout)]
    assert rule_ids == ["syntax-error", "encoding-error"]


def test_stdin(runner: CliRunner) -> None:
    result = runner.invoke(app, ["check", "-"], input="eval('1')\n")
    assert result.exit_code == 1
    assert "-:1:1 blocked-builtin" in result.stdout


def test_console_script_end_to_end(bad: Path, clean: Path) -> None:
    """The installed entry point, as a user runs it: no traceback, right exit codes."""
    exe = Path(sys.executable).with_name("evaljail")
    if not exe.exists():
        pytest.skip("the evaljail console script is not installed in this environment")
    ok = subprocess.run(
        [str(exe), "check", str(clean)], capture_output=True, text=True, timeout=60, check=False
    )
    assert ok.returncode == 0, ok.stderr
    rejected = subprocess.run(
        [str(exe), "check", "--json", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert rejected.returncode == 1
    assert json.loads(rejected.stdout)[0]["violations"]
    assert "Traceback" not in rejected.stderr
