"""Round-trip latency of named-sandbox commands: ``exec("true")`` and ``exec("echo hi")``.

Prints p50/p95/mean per command and one JSON line with every figure. Not a test.

    .venv/bin/python bench/sandbox_bench.py [--runs 200] [--warmup 10] [--json-only]

The target is a p50 of at most 25 ms on the 2-core development machine. The figure covers the
whole ``Sandbox.exec`` call: validation, a fresh per-command cgroup, fork with rlimits, bubblewrap
setting up every namespace and mount, ``/bin/sh -c``, output collection, reaping, cgroup removal.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

from evaljail.sandboxes import SandboxNamespace, get_sandbox


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--json-only", action="store_true")
    args = parser.parse_args()

    report: dict[str, object] = {
        "benchmark": "sandbox_exec",
        "runs": args.runs,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
    }
    with SandboxNamespace() as namespace:
        started = time.perf_counter()
        sandbox = get_sandbox(namespace, "bench")
        report["create_ms"] = round((time.perf_counter() - started) * 1000, 2)
        report["mechanisms"] = namespace.mechanisms()
        for command in ("true", "echo hi"):
            for _ in range(args.warmup):
                sandbox.exec(command)
            samples = []
            for _ in range(args.runs):
                t0 = time.perf_counter()
                result = sandbox.exec(command)
                samples.append((time.perf_counter() - t0) * 1000)
                assert result.exit_code == 0, result
            report[command] = {
                "p50_ms": round(statistics.median(samples), 2),
                "p95_ms": round(_percentile(samples, 95), 2),
                "mean_ms": round(statistics.fmean(samples), 2),
                "min_ms": round(min(samples), 2),
            }
        started = time.perf_counter()
        sandbox.destroy()
        report["destroy_ms"] = round((time.perf_counter() - started) * 1000, 2)

    if not args.json_only:
        print(f"named sandbox exec round trip ({args.runs} runs, {os.cpu_count()} CPUs)")
        print(f"  create {report['create_ms']} ms, destroy {report['destroy_ms']} ms")
        for command in ("true", "echo hi"):
            figures = report[command]
            assert isinstance(figures, dict)
            print(
                f"  exec({command!r:10}) p50 {figures['p50_ms']:6.2f} ms   "
                f"p95 {figures['p95_ms']:6.2f} ms   mean {figures['mean_ms']:6.2f} ms"
            )
    print(json.dumps(report))


if __name__ == "__main__":
    main()
