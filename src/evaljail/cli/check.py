"""``evaljail check FILE...``: static analysis (layer 1) of eval files; nothing is executed.

Text output, one line per finding and an indented hint under it (rich colours on a terminal,
plain text otherwise), then a summary line::

    evals/bad.py:3:12 dunder-attribute access to dunder attribute '__class__'
        hint: Use type(x), isinstance() or a plain dict instead. ...

``--json`` prints one JSON array instead, an object per file, in argument order::

    [{"file": "evals/bad.py", "ok": false, "error": null, "imports": ["json"],
      "violations": [{"rule_id": "...", "line": 3, "col": 12, "message": "...", "hint": "..."}]}]

``error`` is ``{"code": ..., "message": ...}`` when a file could not be analysed: ``not_found``
and ``unreadable`` are usage errors; ``source_too_large`` and ``source_too_complex`` are
rejections, like violations.

Exit status: 0 every file is clean; 1 a file has violations or is rejected as too large or too
complex; 2 a usage error (no file given, a missing or unreadable file, an invalid ``--allow``),
which wins over 1. ``-`` reads the source from standard input.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import ConfigurationError, PolicyError, status_and_code
from ..policy import Policy
from ..policy.analysis import analyze
from ..types import Violation

__all__ = ["FileResult", "check_file", "register"]

_USAGE_ERRORS = frozenset({"not_found", "unreadable"})


@dataclass(frozen=True, slots=True, kw_only=True)
class FileResult:
    """The outcome of checking one file."""

    file: str
    violations: tuple[Violation, ...] = ()
    imports: frozenset[str] = frozenset()
    error_code: str | None = None  #: set when the file could not be analysed
    error_message: str | None = None

    @property
    def ok(self) -> bool:
        return not self.violations and self.error_code is None

    @property
    def usage_error(self) -> bool:
        return self.error_code in _USAGE_ERRORS

    def to_dict(self) -> dict[str, Any]:
        error = (
            None
            if self.error_code is None
            else {"code": self.error_code, "message": self.error_message}
        )
        return {
            "file": self.file,
            "ok": self.ok,
            "error": error,
            "imports": sorted(self.imports),
            "violations": [v.to_dict() for v in self.violations],
        }


def _read(name: str, limit: int) -> bytes | FileResult:
    """At most ``limit + 1`` bytes of the file (enough to know it is too large)."""
    if name == "-":
        return sys.stdin.buffer.read(limit + 1)
    try:
        with Path(name).open("rb") as handle:
            return handle.read(limit + 1)
    except FileNotFoundError:
        return FileResult(file=name, error_code="not_found", error_message="no such file")
    except OSError as exc:
        return FileResult(
            file=name, error_code="unreadable", error_message=exc.strerror or str(exc)
        )


def check_file(name: str, policy: Policy) -> FileResult:
    """Read and analyse one file (``-`` for standard input) under ``policy``."""
    limit = policy.limits.max_source_bytes
    data = _read(name, limit)
    if isinstance(data, FileResult):
        return data
    if len(data) > limit:
        return FileResult(
            file=name,
            error_code="source_too_large",
            error_message=f"source is larger than the limit of {limit} bytes",
        )
    try:
        report = analyze(data, policy)
    except PolicyError as exc:  # too large or too complex
        return FileResult(file=name, error_code=status_and_code(exc)[1], error_message=str(exc))
    return FileResult(file=name, violations=report.violations, imports=report.imports)


def _build_policy(allow: list[str], scientific: bool) -> Policy:
    extra = frozenset(allow)
    if scientific:
        return Policy.scientific(extra_imports=extra)
    return Policy.core(extra_imports=extra)


def _exit_code(results: list[FileResult]) -> int:
    if any(r.usage_error for r in results):
        return 2
    return 0 if all(r.ok for r in results) else 1


def _summary(results: list[FileResult]) -> str:
    total = sum(len(r.violations) for r in results)
    bad = sum(1 for r in results if not r.ok)
    files = f"{len(results)} file{'s' if len(results) != 1 else ''}"
    if bad == 0:
        return f"Checked {files}: no violations."
    return (
        f"Checked {files}: {total} violation{'s' if total != 1 else ''}, "
        f"{bad} file{'s' if bad != 1 else ''} rejected or unreadable."
    )


def _print_plain(results: list[FileResult]) -> None:
    for result in results:
        if result.error_code is not None:
            typer.echo(
                f"{result.file}: {result.error_code}: {result.error_message}",
                err=result.usage_error,
            )
        for v in result.violations:
            typer.echo(f"{result.file}:{v.line}:{v.col} {v.rule_id} {v.message}")
            if v.hint:
                typer.echo(f"    hint: {v.hint}")
    typer.echo(_summary(results))


def _print_rich(results: list[FileResult]) -> None:
    from rich.console import Console
    from rich.markup import escape

    out = Console(highlight=False)
    err = Console(stderr=True, highlight=False)
    for result in results:
        if result.error_code is not None:
            console = err if result.usage_error else out
            console.print(
                f"[bold]{escape(result.file)}[/]: [red]{result.error_code}[/]: "
                f"{escape(result.error_message or '')}"
            )
        for v in result.violations:
            out.print(
                f"[bold]{escape(result.file)}:{v.line}:{v.col}[/] [red]{v.rule_id}[/] "
                f"{escape(v.message)}"
            )
            if v.hint:
                out.print(f"    [dim]hint: {escape(v.hint)}[/]")
    style = "green" if all(r.ok for r in results) else "red"
    out.print(f"[{style}]{escape(_summary(results))}[/]")


def register(app: typer.Typer) -> None:
    @app.command("check")
    def _cmd(
        files: Annotated[
            list[str],
            typer.Argument(
                metavar="FILE",
                help="Eval source files to analyse ('-' for standard input).",
                show_default=False,
            ),
        ],
        allow: Annotated[
            list[str] | None,
            typer.Option(
                "--allow",
                metavar="MODULE",
                help="Also allow importing MODULE (repeatable).",
                show_default=False,
            ),
        ] = None,
        scientific: Annotated[
            bool,
            typer.Option(
                "--scientific",
                help="Analyse under the scientific profile (numpy, pandas, matplotlib).",
            ),
        ] = False,
        as_json: Annotated[
            bool, typer.Option("--json", help="Print a JSON array, one object per file.")
        ] = False,
    ) -> None:
        """Statically check eval files against the policy; nothing is executed.

        Exit status: 0 clean, 1 violations (or a file too large/complex), 2 usage error.
        """
        try:
            policy = _build_policy(allow or [], scientific)
        except ConfigurationError as exc:
            typer.echo(f"evaljail check: {exc}", err=True)
            raise typer.Exit(2) from exc
        results = [check_file(name, policy) for name in files]
        if as_json:
            typer.echo(json.dumps([r.to_dict() for r in results], indent=2, ensure_ascii=False))
        elif sys.stdout.isatty():
            _print_rich(results)
        else:
            _print_plain(results)
        raise typer.Exit(_exit_code(results))
