"""Prometheus metrics of one service instance, in a registry of its own (never the global one).

Counters and histograms are updated as requests finish; gauges that describe the backend (pool
size, busy workers, queue depth) and the named sandboxes are read when ``/metrics`` is scraped.

``evaljail_jailed_cpu_seconds_total`` is the CPU time spent by jailed code: the self-hosted
counterpart of the seed's "container time" cost line.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector

from ..types import ExecutionResult, Outcome, TraceResult

__all__ = ["CONTENT_TYPE", "ServiceMetrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST

_log = logging.getLogger("evaljail.service")

_EXEC_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_QUEUE_KEYS = ("queue_depth", "queued", "queue", "waiting", "pending")
_SIZE_KEYS = ("size", "workers", "live", "total")
_BUSY_KEYS = ("busy", "in_use", "active")
_NAME = re.compile(r"[^a-zA-Z0-9_]")


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _first(stats: Mapping[str, Any], keys: Iterable[str]) -> float | None:
    for key in keys:
        value = _number(stats.get(key))
        if value is not None:
            return value
    return None


class _ScrapeCollector:
    """Gauges read at scrape time from the backend's health and the sandboxes' usage."""

    def __init__(self) -> None:
        self.health: Callable[[], Mapping[str, Any] | None] = lambda: None
        self.usage: Callable[[], Mapping[str, float] | None] = lambda: None

    def collect(self) -> Iterable[Metric]:
        yield from self._pool_metrics()
        yield from self._sandbox_metrics()

    def _pool_metrics(self) -> Iterable[Metric]:
        try:
            health = self.health()
        except Exception:
            _log.warning("backend health unavailable for /metrics", exc_info=True)
            health = None
        ready = GaugeMetricFamily("evaljail_ready", "1 when the service accepts executions")
        ready.add_metric([], 1.0 if health is not None else 0.0)
        yield ready
        if health is None:
            return
        pool = health.get("pool")
        stats: Mapping[str, Any] = pool if isinstance(pool, Mapping) else health
        for name, doc, keys in (
            ("evaljail_pool_size", "jailed workers alive", _SIZE_KEYS),
            ("evaljail_pool_busy", "jailed workers running an execution", _BUSY_KEYS),
            ("evaljail_queue_depth", "executions waiting for a worker", _QUEUE_KEYS),
        ):
            value = _first(stats, keys)
            family = GaugeMetricFamily(name, doc)
            family.add_metric([], value if value is not None else 0.0)
            yield family
        if isinstance(pool, Mapping):
            for key, raw in sorted(pool.items()):
                value = _number(raw)
                if value is None:
                    continue
                family = GaugeMetricFamily(
                    f"evaljail_pool_stat_{_NAME.sub('_', str(key))}", f"pool statistic {key!r}"
                )
                family.add_metric([], value)
                yield family

    def _sandbox_metrics(self) -> Iterable[Metric]:
        try:
            usage = self.usage()
        except Exception:
            _log.warning("sandbox usage unavailable for /metrics", exc_info=True)
            return
        for key, raw in sorted((usage or {}).items()):
            value = _number(raw)
            if value is None:
                continue
            name = _NAME.sub("_", str(key))
            if not name.startswith("sandbox"):
                name = f"sandbox_{name}"
            if name.endswith("_total"):
                counter = CounterMetricFamily(
                    f"evaljail_{name.removesuffix('_total')}", f"named sandboxes: {key}"
                )
                counter.add_metric([], value)
                yield counter
            else:
                gauge = GaugeMetricFamily(f"evaljail_{name}", f"named sandboxes: {key}")
                gauge.add_metric([], value)
                yield gauge


class ServiceMetrics:
    """Every metric of one app. Thread-safe (prometheus_client locks internally)."""

    def __init__(self, *, version: str = "") -> None:
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        self.executions = Counter(
            "evaljail_executions",
            "executions by kind (script, trace) and outcome",
            ["kind", "outcome"],
            registry=reg,
        )
        self.execution_seconds = Histogram(
            "evaljail_execution_seconds",
            "time of one execution as measured by the backend",
            ["kind"],
            buckets=_EXEC_BUCKETS,
            registry=reg,
        )
        self.http_requests = Counter(
            "evaljail_http_requests",
            "HTTP requests by route, method and status",
            ["route", "method", "status"],
            registry=reg,
        )
        self.http_seconds = Histogram(
            "evaljail_http_request_seconds",
            "HTTP request latency, first byte in to last byte out",
            ["route", "method"],
            buckets=_HTTP_BUCKETS,
            registry=reg,
        )
        self.timeouts = Counter(
            "evaljail_timeouts", "executions killed at their deadline", registry=reg
        )
        self.memory_kills = Counter(
            "evaljail_memory_kills", "executions stopped by the memory limit", registry=reg
        )
        self.cpu_seconds = Counter(
            "evaljail_jailed_cpu_seconds",
            "CPU time used by jailed code (the seed's 'container time')",
            registry=reg,
        )
        self.in_flight = Gauge(
            "evaljail_http_in_flight_requests", "requests being served", registry=reg
        )
        self.rejected_busy = Counter(
            "evaljail_queue_full_rejections",
            "requests answered 503 because the queue was full",
            registry=reg,
        )
        info = Gauge("evaljail_build_info", "version of the service", ["version"], registry=reg)
        info.labels(version=version).set(1)
        self._scrape = _ScrapeCollector()
        reg.register(self._scrape)
        ProcessCollector(registry=reg)

    def set_sources(
        self,
        *,
        health: Callable[[], Mapping[str, Any] | None],
        usage: Callable[[], Mapping[str, float] | None],
    ) -> None:
        """Where scrape-time gauges come from: the backend's health and the sandboxes' usage
        (either may return None when there is nothing to report)."""
        self._scrape.health = health
        self._scrape.usage = usage

    def _child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, cached (labels() costs a lock and a dict build)."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def observe_execution(self, result: ExecutionResult | TraceResult) -> None:
        kind = "script" if isinstance(result, ExecutionResult) else "trace"
        self._child(self.executions, kind, result.outcome.value).inc()
        self._child(self.execution_seconds, kind).observe(max(result.execution_time_ms, 0.0) / 1000)
        if result.cpu_ms > 0:
            self.cpu_seconds.inc(result.cpu_ms / 1000)
        if result.outcome is Outcome.TIMEOUT:
            self.timeouts.inc()
        elif result.outcome is Outcome.MEMORY:
            self.memory_kills.inc()

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self._child(self.http_requests, route, method, str(status)).inc()
        self._child(self.http_seconds, route, method).observe(seconds)

    def render(self) -> bytes:
        """The text exposition format, for ``GET /metrics``."""
        return generate_latest(self.registry)
