"""``evaljail doctor``: which isolation layers this host provides, and why not."""

from __future__ import annotations

import json
import platform
import sys

import typer


def register(app: typer.Typer) -> None:
    @app.command("doctor")
    def doctor(
        as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
        self_test: bool = typer.Option(
            True, "--self-test/--no-self-test", help="Start a jailed worker and try to escape."
        ),
    ) -> None:
        """Check the host: bubblewrap, namespaces, seccomp, rlimits, cgroups.

        Exit code 0 when strict mode can run here, 1 when a required layer is missing.
        """
        from rich.console import Console
        from rich.table import Table

        from evaljail import __version__
        from evaljail.errors import EvaljailError
        from evaljail.isolation.probe import probe
        from evaljail.policy import Policy
        from evaljail.pool import Pool

        caps = probe()
        test: dict[str, object] = {"ran": False}
        if self_test and caps.strict_ok:
            pool = Pool(min_size=1, max_size=1, capabilities=caps)
            try:
                pool.start()  # runs the confinement self-test
                result = pool.run_script("print(sum(range(10)))", Policy()).result(60)
                test = {"ran": True, "ok": result.stdout == "45\n", "detail": "escape attempts "
                        "refused; a benign script ran"}  # fmt: skip
            except EvaljailError as exc:
                test = {"ran": True, "ok": False, "detail": exc.message}
            finally:
                pool.close()
        report = {
            "version": __version__,
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "strict_ok": caps.strict_ok and test.get("ok", True) is True,
            "layers": caps.to_dict(),
            "self_test": test,
        }
        if as_json:
            typer.echo(json.dumps(report, indent=2))
        else:
            console = Console()
            table = Table(title=f"evaljail {__version__} on Python {report['python']}")
            table.add_column("layer")
            table.add_column("state")
            table.add_column("detail")
            for layer in caps.layers:
                state = "[green]on[/]" if layer.enabled else (
                    "[red]OFF[/]" if layer.required else "[yellow]off[/]")  # fmt: skip
                table.add_row(layer.name, state, layer.detail)
            if test["ran"]:
                table.add_row(
                    "self-test",
                    "[green]pass[/]" if test.get("ok") else "[red]FAIL[/]",
                    str(test.get("detail", "")),
                )
            console.print(table)
            if report["strict_ok"]:
                console.print("[green]strict mode can run on this host.[/]")
            else:
                console.print(
                    "[red]strict mode cannot run here.[/] Missing: "
                    + "; ".join(caps.missing or ("self-test failed",))
                    + "\nInstall bubblewrap (apt-get install bubblewrap) and allow unprivileged "
                    "user namespaces, or set EVALJAIL_ISOLATION=degraded for development only."
                )
        raise typer.Exit(0 if report["strict_ok"] else 1)
