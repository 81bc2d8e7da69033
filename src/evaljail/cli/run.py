"""`evaljail run` (not yet implemented)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("run")
    def _cmd() -> None:
        """Not yet implemented."""
        raise typer.Exit(2)
