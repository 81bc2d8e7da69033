"""``evaljail exec FILE|-``: run one script in the jail and show what it printed.

The script's stdout goes to stdout and its stderr to stderr, unchanged; evaljail's own messages
(the error, static-analysis findings) go to stderr after them. Exit codes: 0 when the script ran
to completion, 1 when it failed (raised, timed out, was rejected ...), 2 on a usage error (no
such file, invalid configuration), 3 when evaljail itself could not run it (no jail, pool
failure, executor unreachable).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

__all__ = ["execute_file", "register"]


def _read_source(file: str) -> str:
    from ..errors import ConfigurationError

    try:
        raw = sys.stdin.buffer.read() if file == "-" else Path(file).read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"{file}: cannot read: {exc.strerror or exc}") from exc
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigurationError(f"{file}: not UTF-8 text (byte {exc.start})") from exc


def execute_file(
    file: str, *, timeout_ms: int | None = None, executor_url: str | None = None
) -> int:
    """Run ``file`` (``-`` for stdin); returns the exit code."""
    from ..errors import ConfigurationError, EvaljailError
    from ..runner import PythonRunner
    from ..settings import Settings

    err = sys.stderr
    try:
        source = _read_source(file)
        settings = Settings.from_env()
        if executor_url is None:
            settings = settings.with_overrides(pool_min_size=1)
        if timeout_ms is not None and not 1 <= timeout_ms <= settings.max_timeout_ms:
            raise ConfigurationError(
                f"--timeout must be between 1 and {settings.max_timeout_ms} ms "
                "(EVALJAIL_MAX_TIMEOUT_MS)"
            )
    except ConfigurationError as exc:
        err.write(f"evaljail exec: {exc.message}\n")
        return 2
    try:
        backend = "remote" if executor_url else "local"
        with PythonRunner(settings=settings, backend=backend, executor_url=executor_url) as runner:
            result = runner.execute(source, timeout=timeout_ms)
    except ConfigurationError as exc:
        err.write(f"evaljail exec: {exc.message}\n")
        return 2
    except EvaljailError as exc:
        err.write(f"evaljail exec: {exc.message}\n")
        return 3
    sys.stdout.write(result.stdout)
    sys.stdout.flush()
    err.write(result.stderr)
    if not result.success:
        for v in result.violations:
            err.write(f"{file}:{v.line}:{v.col}: {v.rule_id}: {v.message}\n")
            if v.hint:
                err.write(f"    hint: {v.hint}\n")
        if result.traceback and result.traceback not in result.stderr:
            err.write(result.traceback)
        if result.error and not result.violations:
            err.write(f"evaljail exec: {result.outcome.value}: {result.error}\n")
    err.flush()
    return 0 if result.success else 1


def register(app: typer.Typer) -> None:
    @app.command("exec")
    def _cmd(
        file: Annotated[str, typer.Argument(help="A Python file, or - to read stdin.")],
        timeout: Annotated[
            int | None,
            typer.Option(
                "--timeout", help="Wall-clock limit in ms [default: EVALJAIL_TIMEOUT_MS]."
            ),
        ] = None,
        executor_url: Annotated[
            str | None,
            typer.Option(help="Run on this executor service instead of the local jail."),
        ] = None,
    ) -> None:
        """Run a script in the jail; print its stdout and stderr.

        Exit codes: 0 success, 1 the script failed, 2 usage error, 3 evaljail could not run it.
        """
        raise typer.Exit(execute_file(file, timeout_ms=timeout, executor_url=executor_url))
