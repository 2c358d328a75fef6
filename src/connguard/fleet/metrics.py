"""Prometheus metrics for a fleet node: connection, outbox, traffic and lag; never an address."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from .stats import SKIP_REASONS, FleetStats

__all__ = ["FleetCollector"]

Family = GaugeMetricFamily | CounterMetricFamily
# (type, name, help, label, value): every metric the collector exposes.
_SPEC: tuple[tuple[type[Family], str, str, str | None, Callable[[FleetStats], object]], ...] = (
    (GaugeMetricFamily, "fleet_connected", "1 when publishing to and following Redis work.", None,
     lambda s: 1 if s.connected else 0),
    (GaugeMetricFamily, "fleet_outbox_depth", "Local events waiting to be published.", None,
     lambda s: s.outbox_depth),
    (GaugeMetricFamily, "fleet_lag_seconds",
     "Seconds from the last applied entry's creation to its application here.", None,
     lambda s: s.lag),
    (GaugeMetricFamily, "fleet_replayed", "1 once the live stream was replayed at start.", None,
     lambda s: 1 if s.replayed else 0),
    (CounterMetricFamily, "fleet_published", "Entries this node appended to the stream.", None,
     lambda s: s.published),
    (CounterMetricFamily, "fleet_applied", "Entries from other nodes that changed local state.",
     None, lambda s: s.applied),
    (CounterMetricFamily, "fleet_dropped", "Local events dropped because the outbox was full.",
     None, lambda s: s.dropped),
    (CounterMetricFamily, "fleet_skipped", "Entries read and not applied, by reason.", "reason",
     lambda s: [(reason, s.skipped.get(reason, 0)) for reason in SKIP_REASONS]),
    (CounterMetricFamily, "fleet_malformed", "Entries read that were not valid entries.", None,
     lambda s: s.malformed),
    (CounterMetricFamily, "fleet_node_id_clashes",
     "Entries from another process using this node's node_id (applied as a peer's).", None,
     lambda s: s.clashes),
    (CounterMetricFamily, "fleet_reconnects", "Times Redis answered again after failing.", None,
     lambda s: s.reconnects),
    (CounterMetricFamily, "fleet_resyncs",
     "Replays of the live stream after the first, or asked for by resync().", None,
     lambda s: s.resyncs),
)


class FleetCollector(Collector):
    """Expose one fleet node's counters (anything with ``stats() -> FleetStats``: a RedisFleet).

    ``registry.register(FleetCollector(fleet, namespace="connguard"))``.

    Important:
    1. Labels are fixed words (the skip reasons); no metric carries an
       address, a netblock, a node id or a URL.
    2. A scrape takes one ``stats()`` reading: a few attribute reads and a
       lock held for two of them; it never touches Redis.
    """

    def __init__(self, fleet: object, namespace: str = "connguard") -> None:
        stats = getattr(fleet, "stats", None)
        if not callable(stats):
            raise TypeError(f"fleet must be a RedisFleet (with stats()), not {type(fleet).__name__}")
        if not namespace or not namespace.replace("_", "a").isalnum() or namespace[0].isdigit():
            raise ValueError(f"namespace must be a Prometheus name prefix, got {namespace!r}")
        self._stats: Callable[[], FleetStats] = stats
        self._ns = namespace

    def describe(self) -> Iterator[Family]:
        """Names and types only: registering checks for clashes without a scrape."""
        for cls, name, doc, label, _ in _SPEC:
            yield cls(f"{self._ns}_{name}", doc, labels=[label] if label else None)

    def collect(self) -> Iterator[Family]:
        stats = self._stats()
        for family, (_, _, _, label, value) in zip(self.describe(), _SPEC, strict=True):
            found = value(stats)
            if label:
                assert isinstance(found, list)
                for label_value, number in found:
                    family.add_metric([label_value], number)
            else:
                assert isinstance(found, (int, float))
                family.add_metric([], found)
            yield family
