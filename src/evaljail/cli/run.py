"""``evaljail run EVAL.py TRACES.jsonl``: one eval over a file of traces, in the jail.

Shows a progress bar (stderr) while the traces run, then a summary table (passed, failed,
errors by type, spec violations, time per trace) and, with ``--feedback``, how the eval agrees
with human ratings: accuracy, precision, recall, F1, Cohen's kappa and the contradictions.
``--json OUT`` writes all of it, with every trace's result, to a file.

Exit codes: 0 when every trace ran (whatever the verdicts), 1 when evaljail could not run the
eval (static analysis rejected it, no jail, pool failure), 2 on bad input (a file that does not
parse: ``traces.jsonl:17: invalid JSON: ...``, no eval function, invalid configuration).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from ..evals.metrics import AgreementReport
    from ..evals.summary import RunSummary
    from ..types import TraceResult

__all__ = ["register", "run_eval"]


def _fmt(value: float | None, pattern: str = "{:.3f}") -> str:
    return "n/a" if value is None else pattern.format(value)


def _summary_table(summary: RunSummary, wall_s: float) -> Any:
    from rich.table import Table

    table = Table(title="Summary", show_header=False, title_justify="left")
    table.add_column("", style="bold")
    table.add_column("", justify="right")
    table.add_row("traces", str(summary.traces))
    table.add_row("passed", f"[green]{summary.passed}[/green]")
    table.add_row("failed", f"[yellow]{summary.failed}[/yellow]")
    table.add_row("errors", f"[red]{sum(summary.errors.values())}[/red]")
    for name, count in summary.errors.items():
        table.add_row(f"  {name}", str(count))
    table.add_row("spec violations", f"[red]{sum(summary.spec_violations.values())}[/red]")
    for name, count in summary.spec_violations.items():
        table.add_row(f"  {name}", str(count))
    table.add_row("printed to stdout", str(summary.calls_with_stdout))
    table.add_row(
        "time per trace (ms)",
        f"mean {summary.time_ms_mean:.2f}  p50 {summary.time_ms_p50:.2f}  "
        f"p95 {summary.time_ms_p95:.2f}  max {summary.time_ms_max:.2f}",
    )
    table.add_row("jailed CPU (s)", f"{summary.cpu_ms_total / 1000:.3f}")
    table.add_row("wall time (s)", f"{wall_s:.3f}")
    return table


def _agreement_table(report: AgreementReport) -> Any:
    from rich.table import Table

    table = Table(title="Agreement with human feedback", show_header=False, title_justify="left")
    table.add_column("", style="bold")
    table.add_column("", justify="right")
    table.add_row("compared (verdict + positive/negative rating)", str(report.compared))
    table.add_row("agreements", str(report.agreements))
    table.add_row("accuracy", _fmt(report.accuracy))
    table.add_row("precision", _fmt(report.precision))
    table.add_row("recall", _fmt(report.recall))
    table.add_row("F1", _fmt(report.f1))
    table.add_row("Cohen's kappa", _fmt(report.cohen_kappa))
    table.add_row("contradictions: positive but failed", str(report.positive_but_failed))
    table.add_row("contradictions: negative but passed", str(report.negative_but_passed))
    table.add_row("neutral ratings (never contradict)", str(report.neutral))
    table.add_row("rated, but no verdict (error ...)", str(report.no_verdict))
    table.add_row("verdicts without feedback", str(report.unrated))
    return table


def _contradictions_table(report: AgreementReport, limit: int) -> Any:
    from rich.table import Table

    shown = report.contradictions[:limit]
    title = f"Contradictions ({len(report.contradictions)}"
    title += f", first {len(shown)})" if len(shown) < len(report.contradictions) else ")"
    table = Table(title=title, title_justify="left")
    table.add_column("trace_id", overflow="fold")
    table.add_column("human")
    table.add_column("eval")
    table.add_column("reason", overflow="fold")
    for c in shown:
        verdict = "[green]passed[/green]" if c.passed else "[yellow]failed[/yellow]"
        table.add_row(c.trace_id, c.rating.value, verdict, c.reason or "")
    return table


def _run_batch(
    runner: Any,
    source: str,
    function_name: str | None,
    traces: list[dict[str, Any]],
    timeout_ms: int | None,
    console: Console,
) -> list[TraceResult]:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    results: dict[int, TraceResult] = {}
    with Progress(
        TextColumn("[bold]running[/bold]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[failing]} without verdict"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("traces", total=len(traces), failing=0)
        failing = 0
        for result in runner.iter_batch(source, function_name, traces, timeout=timeout_ms):
            results[result.index] = result
            failing += not result.outcome.succeeded
            progress.update(task, advance=1, failing=failing)
    return [results[i] for i in sorted(results)]


def run_eval(
    eval_file: Path,
    traces_file: Path,
    *,
    feedback_file: Path | None = None,
    json_out: Path | None = None,
    function_name: str | None = None,
    timeout_ms: int | None = None,
    executor_url: str | None = None,
    show_contradictions: int = 20,
    console: Console | None = None,
    err_console: Console | None = None,
) -> int:
    """Everything ``evaljail run`` does; returns the exit code."""
    from rich.console import Console

    from ..errors import ConfigurationError, EvalFunctionNotFoundError, EvaljailError
    from ..evals.files import load_feedback, load_traces
    from ..evals.metrics import compare
    from ..evals.summary import summarize, verdicts
    from ..policy import Policy
    from ..policy.analysis import analyze
    from ..policy.contract import find_eval_function
    from ..runner import PythonRunner
    from ..settings import Settings

    out = console or Console()
    err = err_console or Console(stderr=True)

    def fail(message: str, code: int) -> int:
        err.print(f"[red]evaljail run:[/red] {message}", markup=True, highlight=False)
        return code

    try:
        settings = Settings.from_env()
        try:
            source = eval_file.read_bytes().decode("utf-8-sig")
        except OSError as exc:
            raise ConfigurationError(f"{eval_file}: cannot read: {exc.strerror or exc}") from exc
        except UnicodeDecodeError as exc:
            raise ConfigurationError(f"{eval_file}: not UTF-8 text (byte {exc.start})") from exc
        loaded = load_traces(traces_file)
        feedback = load_feedback(feedback_file) if feedback_file is not None else None
        if timeout_ms is not None and not 1 <= timeout_ms <= settings.max_timeout_ms:
            raise ConfigurationError(
                f"--timeout must be between 1 and {settings.max_timeout_ms} ms "
                "(EVALJAIL_MAX_TIMEOUT_MS)"
            )
    except ConfigurationError as exc:
        return fail(exc.message, 2)

    # Static analysis and the eval function first: rejected code never starts the pool.
    try:
        policy = Policy.from_settings(settings)
        analysis = analyze(source, policy)
        if analysis.violations:
            for v in analysis.violations:
                err.print(
                    f"{eval_file}:{v.line}:{v.col}: {v.rule_id}: {v.message}",
                    highlight=False,
                    markup=False,
                )
            return fail("static analysis rejected the eval; nothing ran", 1)
        assert analysis.tree is not None
        function_name = find_eval_function(analysis.tree, function_name)
    except EvalFunctionNotFoundError as exc:
        return fail(f"{eval_file}: {exc.message}", 2)
    except EvaljailError as exc:  # source too large or too complex
        return fail(f"{eval_file}: {exc.message}", 1)

    traces = [{"trace_id": t.trace_id, "data": t.data} for t in loaded]
    started = time.perf_counter()
    try:
        backend = "remote" if executor_url else "local"
        with PythonRunner(settings=settings, backend=backend, executor_url=executor_url) as runner:
            results = _run_batch(runner, source, function_name, traces, timeout_ms, err)
    except (EvalFunctionNotFoundError, ConfigurationError) as exc:
        return fail(exc.message, 2)
    except EvaljailError as exc:
        return fail(exc.message, 1)
    wall_s = time.perf_counter() - started

    summary = summarize(results)
    out.print(_summary_table(summary, wall_s))
    report = None
    if feedback is not None:
        report = compare(verdicts(results), feedback)
        out.print(_agreement_table(report))
        if report.contradictions and show_contradictions > 0:
            out.print(_contradictions_table(report, show_contradictions))
    if json_out is not None:
        document = {
            "eval_file": str(eval_file),
            "traces_file": str(traces_file),
            "feedback_file": str(feedback_file) if feedback_file is not None else None,
            "wall_time_s": round(wall_s, 3),
            "summary": summary.to_dict(),
            "agreement": report.to_dict() if report is not None else None,
            "results": [r.to_dict() for r in results],
        }
        try:
            json_out.write_text(json.dumps(document, ensure_ascii=False, indent=1) + "\n")
        except OSError as exc:
            return fail(f"{json_out}: cannot write: {exc.strerror or exc}", 2)
        err.print(f"wrote {json_out}", highlight=False, markup=False)
    return 0


def register(app: typer.Typer) -> None:
    @app.command("run")
    def _cmd(
        eval_file: Annotated[Path, typer.Argument(help="Python file defining eval_<name>(trace).")],
        traces_file: Annotated[
            Path, typer.Argument(help="Traces: a JSON array or JSON Lines (trace_id + steps).")
        ],
        feedback: Annotated[
            Path | None,
            typer.Option(help="JSON Lines of {trace_id, rating: positive|negative|neutral}."),
        ] = None,
        json_out: Annotated[
            Path | None, typer.Option("--json", help="Write the full report to this file.")
        ] = None,
        function: Annotated[
            str | None,
            typer.Option(help="The function to call when the file defines several evals."),
        ] = None,
        timeout: Annotated[
            int | None,
            typer.Option(help="Per-trace limit in ms [default: EVALJAIL_TIMEOUT_MS]."),
        ] = None,
        executor_url: Annotated[
            str | None,
            typer.Option(help="Run on this executor service instead of the local jail."),
        ] = None,
        show_contradictions: Annotated[
            int, typer.Option(help="How many contradictions to list.")
        ] = 20,
    ) -> None:
        """Run an eval over a file of traces; summarise, and compare with human feedback.

        Exit codes: 0 the traces ran, 1 evaljail could not run the eval, 2 bad input.
        """
        raise typer.Exit(
            run_eval(
                eval_file,
                traces_file,
                feedback_file=feedback,
                json_out=json_out,
                function_name=function,
                timeout_ms=timeout,
                executor_url=executor_url,
                show_contradictions=show_contradictions,
            )
        )
