"""Prometheus metrics for a Guard: aggregates only, never an address.

The collector reads the core's counters when scraped; nothing
Prometheus-related runs on the accept path, and a scrape never walks the
source table (the ban table, which holds only banned netblocks, is counted).
No metric carries an address, a netblock or any other per-source label.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from . import events
from ._spec import PATTERNS, Reason
from .guard import Guard, _GuardAPI

__all__ = ["GuardCollector"]


# (type, name, help, label): every metric the collector exposes.
Family = GaugeMetricFamily | CounterMetricFamily
_SPEC: tuple[tuple[type[Family], str, str, str | None], ...] = (
    (GaugeMetricFamily, "active_connections", "Connections open now.", None),
    (GaugeMetricFamily, "active_sources", "Sources with a connection open.", None),
    (GaugeMetricFamily, "tracked_sources", "Sources in the table.", None),
    (GaugeMetricFamily, "flagged_sources", "Sources flagged with a pattern.", "pattern"),
    (GaugeMetricFamily, "active_bans", "Netblocks banned now.", None),
    (CounterMetricFamily, "findings", "Times a pattern was raised on a source.", "pattern"),
    (CounterMetricFamily, "finding_errors", "Exceptions raised by on_finding callbacks.", None),
    (CounterMetricFamily, "pattern_state_full",
     "Sources denied pattern state because every record was in use by a flagged source.", None),
    (CounterMetricFamily, "accepted", "Connections allowed.", None),
    (CounterMetricFamily, "rejected", "Connections refused.", "reason"),
    (CounterMetricFamily, "would_reject",
     "Connections allowed that enforce=True would have refused (monitor mode).", "reason"),
    (CounterMetricFamily, "infractions", "Infractions recorded.", "kind"),
    (CounterMetricFamily, "evicted_bans", "Live bans lifted because every ban record was in use.",
     None),
    (CounterMetricFamily, "evictions", "Idle sources dropped for new ones.", None),
    (CounterMetricFamily, "overflows", "New sources that found no room.", None),
    (CounterMetricFamily, "listener_errors", "Exceptions raised by listeners.", None),
)


_REFUSAL_REASONS = tuple(r.name.lower() for r in Reason if r is not Reason.NONE)


class GuardCollector(Collector):
    """Expose one Guard's aggregate counters.

    ``registry.register(GuardCollector(guard, namespace="connguard"))``. Two
    guards can share a registry under different namespaces, or use separate
    registries.
    """

    def __init__(self, guard: Guard, namespace: str = "connguard") -> None:
        if not isinstance(guard, _GuardAPI):
            raise TypeError(f"GuardCollector needs a connguard.Guard, not {type(guard).__name__}")
        if not namespace or not namespace.replace("_", "a").isalnum() or namespace[0].isdigit():
            raise ValueError(f"namespace must be a Prometheus name prefix, got {namespace!r}")
        self._guard = guard
        self._ns = namespace

    def describe(self) -> Iterator[Family]:
        """Names and types only: registering checks for clashes without a scrape."""
        for cls, name, doc, label in _SPEC:
            yield cls(f"{self._ns}_{name}", doc, labels=[label] if label else None)

    def collect(self) -> Iterator[Family]:
        values = self._values()
        for family, (_, name, _, label) in zip(self.describe(), _SPEC, strict=True):
            if label:
                for label_value, value in values[name]:
                    family.add_metric([label_value], value)
            else:
                family.add_metric([], values[name])
            yield family

    def _values(self) -> dict[str, Any]:
        guard = self._guard
        tracker, bans = guard.tracker, guard.bans
        active, active_sources, tracked, _, evictions, overflows = tracker.counters()
        verdicts = guard.verdict_totals().items()
        return {
            "active_connections": active,
            "active_sources": active_sources,
            "tracked_sources": tracked,
            "flagged_sources": list(zip(PATTERNS, tracker.flagged_by(), strict=True)),
            "active_bans": bans.active(),
            "findings": list(zip(PATTERNS, tracker.raised_by(), strict=True)),
            "finding_errors": tracker.finding_errors,
            "pattern_state_full": tracker.pattern_state()[2],
            "accepted": sum(n for v, n in verdicts if v.allowed),
            "rejected": [(reason, sum(n for v, n in verdicts if not v.allowed and v.reason == reason))
                         for reason in _REFUSAL_REASONS],
            "would_reject": [(reason, sum(n for v, n in verdicts if v.allowed and v.reason == reason))
                             for reason in _REFUSAL_REASONS],
            "infractions": sorted(bans.infraction_counts().items()),
            "evicted_bans": bans.evicted_bans,
            "evictions": evictions,
            "overflows": overflows,
            "listener_errors": events.listener_errors(),
        }
