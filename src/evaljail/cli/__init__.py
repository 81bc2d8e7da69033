"""The ``evaljail`` command line: serve | check | run | exec | doctor.

Each command lives in its own module with a ``register(app)`` function; this module only
assembles them. Nothing heavy is imported until a command runs.
"""

from __future__ import annotations

import typer

from . import check, doctor, exec_, run, serve

__all__ = ["app", "main"]


def _build() -> typer.Typer:
    cli = typer.Typer(
        name="evaljail",
        help="Run untrusted Python eval functions against LLM-agent traces, safely and fast.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    for module in (serve, check, run, exec_, doctor):
        module.register(cli)
    return cli


app = _build()


def main() -> None:
    """Console-script entry point."""
    app()
