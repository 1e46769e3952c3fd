"""Counters and histograms with labels, sent to the log (``ConsoleMetricsBackend``), to Prometheus
(``PrometheusMetricsBackend``, needs ``prometheus_client``) or to several (``MultiMetricsBackend``).

Register a metric with its label names once, then ``await backend.inc_counter(name, labels=...)``
or ``await backend.observe_histogram(name, value, labels=...)``; labels must match the names.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections import defaultdict, deque
from typing import Any, Deque, Dict, List, Optional, Sequence, Tuple

__all__ = ["ConsoleMetricsBackend", "MetricsBackend", "MultiMetricsBackend", "PrometheusMetricsBackend"]

logger = logging.getLogger(__name__)

LabelDict = Dict[str, str]


class MetricsBackend:
    """Validates registrations and labels; subclasses record the values."""

    def __init__(self) -> None:
        self._metrics: Dict[str, Tuple[str, Tuple[str, ...]]] = {}  # name -> (kind, label names)

    def has_prometheus(self) -> bool:
        return False

    def _register(
        self, name: str, kind: str, label_names: Optional[Sequence[str]], buckets: Optional[Sequence[float]]
    ) -> None:
        spec = (kind, tuple(label_names or ()))
        if self._metrics.setdefault(name, spec) != spec:
            raise ValueError(f"metric {name!r} is already registered as {self._metrics[name]}, not {spec}")

    def _labels(self, name: str, kind: str, labels: Optional[LabelDict]) -> Tuple[str, ...]:
        if self._metrics.get(name, (None,))[0] != kind:
            raise ValueError(f"{name!r} is not a registered {kind}")
        names = self._metrics[name][1]
        given = dict(labels or {})
        if set(given) != set(names):
            raise ValueError(f"metric {name!r} takes the labels {list(names)}, got {sorted(given)}")
        return tuple(str(given[label]) for label in names)

    def register_counter(
        self, name: str, label_names: Optional[Sequence[str]] = None, group_level: Optional[int] = None
    ) -> None:
        self._register(name, "counter", label_names, None)

    def register_histogram(
        self,
        name: str,
        label_names: Optional[Sequence[str]] = None,
        buckets: Optional[Sequence[float]] = None,
        group_level: Optional[int] = None,
    ) -> None:
        self._register(name, "histogram", label_names, buckets)

    async def inc_counter(self, name: str, amount: float = 1.0, labels: Optional[LabelDict] = None) -> None:
        self._record(name, self._labels(name, "counter", labels), amount)

    async def observe_histogram(self, name: str, value: float, labels: Optional[LabelDict] = None) -> None:
        self._record(name, self._labels(name, "histogram", labels), value)

    def _record(self, name: str, label_values: Tuple[str, ...], value: float) -> None:
        raise NotImplementedError


class ConsoleMetricsBackend(MetricsBackend):
    """Logs, at most every ``log_interval_seconds``, each metric over the last ``window_seconds``:
    counters as totals and rates, histograms as count, p50 and p95. ``group_level`` keeps only the
    first labels (fewer, merged lines)."""

    def __init__(
        self,
        window_seconds: Optional[float] = 60.0,
        log_interval_seconds: float = 10.0,
        group_level: Optional[int] = None,
    ) -> None:
        super().__init__()
        self.window_seconds = window_seconds
        self.log_interval_seconds = log_interval_seconds
        self.group_level = group_level
        self._events: Dict[str, Deque[Tuple[float, Tuple[str, ...], float]]] = defaultdict(deque)
        self._lock = threading.Lock()
        self._last_log = time.monotonic()

    def _record(self, name: str, label_values: Tuple[str, ...], value: float) -> None:
        now = time.monotonic()
        with self._lock:
            self._events[name].append((now, label_values, value))
            if now - self._last_log < self.log_interval_seconds:
                return
            self._last_log = now
            lines = self.snapshot(now)
        for line in lines:
            logger.info(line)

    def snapshot(self, now: Optional[float] = None) -> List[str]:
        """One line per metric and label group, as logged."""
        now = time.monotonic() if now is None else now
        lines: List[str] = []
        for name, events in self._events.items():
            while self.window_seconds is not None and events and now - events[0][0] > self.window_seconds:
                events.popleft()
            kind, label_names = self._metrics[name]
            depth = len(label_names) if self.group_level is None else self.group_level
            groups: Dict[Tuple[str, ...], List[float]] = defaultdict(list)
            for _, label_values, value in events:
                groups[label_values[:depth]].append(value)
            span = max(1e-9, min(self.window_seconds or float("inf"), now - events[0][0])) if events else 1.0
            for key, values in sorted(groups.items()):
                label_text = ",".join(f"{n}={v}" for n, v in zip(label_names, key, strict=False)) or "-"
                if kind == "counter":
                    lines.append(f"{name}{{{label_text}}} total={sum(values):g} rate={sum(values) / span:.2f}/s")
                else:
                    ordered = sorted(values)
                    p50, p95 = ordered[len(ordered) // 2], ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
                    lines.append(f"{name}{{{label_text}}} n={len(values)} p50={p50:.4g} p95={p95:.4g}")
        return lines


class PrometheusMetricsBackend(MetricsBackend):
    """Records into ``prometheus_client``'s default registry (serve it with its ``start_http_server``)."""

    def __init__(self) -> None:
        super().__init__()
        try:  # an optional dependency, imported by name: type checkers need not have it
            self._client: Any = importlib.import_module("prometheus_client")
        except ImportError as exc:
            raise ImportError(
                "PrometheusMetricsBackend needs prometheus_client: pip install prometheus-client"
            ) from exc
        self._collectors: Dict[str, Any] = {}

    def has_prometheus(self) -> bool:
        return True

    def _register(
        self, name: str, kind: str, label_names: Optional[Sequence[str]], buckets: Optional[Sequence[float]]
    ) -> None:
        super()._register(name, kind, label_names, buckets)
        if name not in self._collectors:
            collector_class = self._client.Counter if kind == "counter" else self._client.Histogram
            options = {"buckets": list(buckets)} if buckets else {}
            self._collectors[name] = collector_class(name, name, list(label_names or ()), **options)

    def _record(self, name: str, label_values: Tuple[str, ...], value: float) -> None:
        collector = self._collectors[name].labels(*label_values) if label_values else self._collectors[name]
        (collector.inc if self._metrics[name][0] == "counter" else collector.observe)(value)


class MultiMetricsBackend(MetricsBackend):
    """Sends every registration and value to each of ``backends``."""

    def __init__(self, backends: Sequence[MetricsBackend]) -> None:
        super().__init__()
        self.backends = list(backends)

    def has_prometheus(self) -> bool:
        return any(backend.has_prometheus() for backend in self.backends)

    def _register(
        self, name: str, kind: str, label_names: Optional[Sequence[str]], buckets: Optional[Sequence[float]]
    ) -> None:
        super()._register(name, kind, label_names, buckets)
        for backend in self.backends:
            backend._register(name, kind, label_names, buckets)

    def _record(self, name: str, label_values: Tuple[str, ...], value: float) -> None:
        for backend in self.backends:
            backend._record(name, label_values, value)
