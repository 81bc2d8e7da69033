"""The one public surface: a sorted ``__all__`` whose names all exist; a light import."""

from __future__ import annotations

import subprocess
import sys

import evaljail
from evaljail import errors


def test_all_is_sorted_and_complete() -> None:
    assert evaljail.__all__ == sorted(evaljail.__all__)
    for name in evaljail.__all__:
        assert hasattr(evaljail, name), name
    for name in ("PythonRunner", "get_sandbox", "SandboxNamespace", "ExecutionResult"):
        assert name in evaljail.__all__


def test_import_is_light_and_has_no_side_effects() -> None:
    code = (
        "import sys, evaljail\n"
        "heavy = {'fastapi', 'pydantic', 'uvicorn', 'starlette', 'typer', 'rich', 'httpx'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_error_class_is_mapped_to_a_status_and_code() -> None:
    classes = [
        obj
        for obj in vars(errors).values()
        if isinstance(obj, type) and issubclass(obj, errors.EvaljailError)
    ]
    assert len(classes) >= 15
    codes = set()
    for cls in classes:
        assert cls in errors.ERROR_TABLE, cls
        status, code = errors.ERROR_TABLE[cls]
        assert 400 <= status < 600
        codes.add(code)
    assert len(codes) == len(classes), "codes must be unique"
