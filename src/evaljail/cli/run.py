"""``evaljail run EVAL.py TRACES.jsonl``: one eval over a file of traces, in the jail.

Shows a progress bar (stderr) while the traces run, then a summary table (passed, failed,
errors by type, spec violations, time per trace) and, with ``--feedback``, how the eval agrees
with human ratings: accuracy, precision, recall, F1, Cohen's kappa and the contradictions.
``--json OUT`` writes all of it, with every trace's result, to a file.

Every trace appears once in the agreement table, by its rating first: rated positive/negative
with a verdict (compared), rated positive/negative without one (the eval raised, timed out,
broke the contract ...), rated neutral (verdict or not), or not rated (verdict or not).
Trace ids must be unique in the traces file (and in the feedback file): a duplicate is an
error, reported with the lines of every copy, before anything runs. Feedback that cannot be
used (ratings of trace ids that are not in the traces file, an empty feedback file) gives a
warning on stderr and in the ``warnings`` list of the ``--json`` report; the run goes on.

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

    from ..errors import EvaljailError
    from ..evals.metrics import AgreementReport
    from ..evals.summary import RunSummary
    from ..types import TraceResult

__all__ = ["register", "run_eval"]


def _fmt(value: float | None, pattern: str = "{:.3f}") -> str:
    """A figure as shown; a value that rounds to zero is ``0.000``, never ``-0.000``."""
    if value is None:
        return "n/a"
    text = pattern.format(value)
    if text.startswith("-") and not text.strip("-0.,"):
        text = text[1:]
    return text


def _no_negative_zero(value: Any) -> Any:
    """``value`` (a JSON document) with every ``-0.0`` written as ``0.0``."""
    if isinstance(value, float):
        return value + 0.0  # -0.0 + 0.0 == 0.0; every other float is unchanged
    if isinstance(value, dict):
        return {k: _no_negative_zero(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_negative_zero(v) for v in value]
    return value


#: How many trace ids a warning names.
_NAMED_IDS = 10


def _feedback_warnings(report: AgreementReport, feedback: dict[str, Any], name: str) -> list[str]:
    """What in the feedback could not be used (the run goes on)."""
    warnings: list[str] = []
    if not feedback:
        warnings.append(f"{name}: no ratings in the file; nothing to compare")
    unknown = report.feedback_not_in_traces
    if unknown:
        shown = ", ".join(repr(t) for t in unknown[:_NAMED_IDS])
        more = f" and {len(unknown) - _NAMED_IDS} more" if len(unknown) > _NAMED_IDS else ""
        noun = "rating names a trace" if len(unknown) == 1 else "ratings name traces"
        warnings.append(
            f"{name}: {len(unknown)} {noun} not in the traces file, ignored: {shown}{more}"
        )
    return warnings


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
    # Each trace once, by its rating: these four rows add up to the number of traces.
    table.add_row("rated positive/negative, but no verdict (error ...)", str(report.no_verdict))
    table.add_row("rated neutral (never contradicts)", str(report.neutral))
    if report.neutral_without_verdict:
        table.add_row("  of which no verdict", str(report.neutral_without_verdict))
    table.add_row("not rated", str(report.unrated))
    if report.unrated_without_verdict:
        table.add_row("  of which no verdict", str(report.unrated_without_verdict))
    if report.feedback_not_in_traces:
        table.add_row(
            "ratings of traces not in the file (ignored)", str(len(report.feedback_not_in_traces))
        )
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


def _function_hint(exc: EvaljailError, function_name: str | None) -> str:
    """The error's message, saying how to choose when the file defines several evals."""
    candidates = exc.details.get("candidates") or []
    if function_name is None and len(candidates) > 1:
        return (
            f"several eval functions found ({', '.join(candidates)}): choose one with "
            f"--function, e.g. --function {candidates[0]}"
        )
    return exc.message


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
    from rich.markup import escape

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
        err.print(f"[red]evaljail run:[/red] {escape(message)}", markup=True, highlight=False)
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
        # A report that cannot be written would be lost after the whole run: check first.
        if json_out is not None and (json_out.is_dir() or not json_out.parent.is_dir()):
            what = "is a directory" if json_out.is_dir() else "its directory does not exist"
            raise ConfigurationError(f"{json_out}: cannot write the --json report: {what}")
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
        return fail(f"{eval_file}: {_function_hint(exc, function_name)}", 2)
    except EvaljailError as exc:  # source too large or too complex
        return fail(f"{eval_file}: {exc.message}", 1)

    traces = [{"trace_id": t.trace_id, "data": t.data} for t in loaded]
    started = time.perf_counter()
    try:
        backend = "remote" if executor_url else "local"
        with PythonRunner(settings=settings, backend=backend, executor_url=executor_url) as runner:
            results = _run_batch(runner, source, function_name, traces, timeout_ms, err)
    except EvalFunctionNotFoundError as exc:
        return fail(_function_hint(exc, function_name), 2)
    except ConfigurationError as exc:
        return fail(exc.message, 2)
    except EvaljailError as exc:
        return fail(exc.message, 1)
    wall_s = time.perf_counter() - started

    summary = summarize(results)
    out.print(_summary_table(summary, wall_s))
    report = None
    warnings: list[str] = []
    if feedback is not None:
        assert feedback_file is not None
        report = compare(verdicts(results), feedback)
        out.print(_agreement_table(report))
        if report.contradictions and show_contradictions > 0:
            out.print(_contradictions_table(report, show_contradictions))
        warnings = _feedback_warnings(report, feedback, feedback_file.name)
    for warning in warnings:
        err.print(
            f"[yellow]evaljail run: warning:[/yellow] {escape(warning)}",
            markup=True,
            highlight=False,
        )
    if json_out is not None:
        document = {
            "eval_file": str(eval_file),
            "traces_file": str(traces_file),
            "feedback_file": str(feedback_file) if feedback_file is not None else None,
            "wall_time_s": round(wall_s, 3),
            "warnings": warnings,
            "summary": summary.to_dict(),
            "agreement": report.to_dict() if report is not None else None,
            "results": [r.to_dict() for r in results],
        }
        try:
            text = json.dumps(_no_negative_zero(document), ensure_ascii=False, indent=1)
            json_out.write_text(text + "\n")
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
