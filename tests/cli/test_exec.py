"""``evaljail exec FILE|-``: stdout/stderr passed through, exit 0 on success and 1 on failure."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EVALJAIL = Path(sys.executable).with_name("evaljail")


def exec_(*args: str | Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EVALJAIL_", "PYTHON_"))}
    return subprocess.run(
        [str(EVALJAIL), "exec", *map(str, args)],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )


@pytest.mark.sandbox
def test_success_prints_stdout_and_stderr(tmp_path: Path) -> None:
    script = tmp_path / "s.py"
    script.write_text("import json\nprint(json.dumps([1, 2]))\nprint('  kept  ')\n")
    proc = exec_(script)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "[1, 2]\n  kept  \n"


@pytest.mark.sandbox
def test_stdin_and_failure(tmp_path: Path) -> None:
    proc = exec_("-", stdin="print('before')\nraise ValueError('boom')\n")
    assert proc.returncode == 1
    assert proc.stdout == "before\n"
    assert "ValueError: boom" in proc.stderr


@pytest.mark.sandbox
def test_timeout_is_a_failure(tmp_path: Path) -> None:
    proc = exec_("-", "--timeout", "200", stdin="while True:\n    pass\n")
    assert proc.returncode == 1
    assert "timeout" in proc.stderr.lower()


@pytest.mark.sandbox
def test_rejected_code_lists_findings(tmp_path: Path) -> None:
    script = tmp_path / "bad.py"
    script.write_text("x = (\n")
    proc = exec_(script)
    assert proc.returncode == 1
    assert f"{script}:" in proc.stderr


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    proc = exec_(tmp_path / "missing.py")
    assert proc.returncode == 2 and "cannot read" in proc.stderr
    binary = tmp_path / "bin.py"
    binary.write_bytes(b"\xff\xfe\x00")
    proc = exec_(binary)
    assert proc.returncode == 2 and "not UTF-8" in proc.stderr
    proc = exec_("-", "--timeout", "0", stdin="print(1)")
    assert proc.returncode == 2 and "--timeout" in proc.stderr
