"""A transcription of ngit-grasp's ConnectionTracker design, as the baseline.

ngit keeps a map of IP -> active connections behind one mutex, flags an IP
when its count reaches a threshold, drops it at zero, and updates three
Prometheus gauges (active connections, unique IPs, flagged IPs) with inc/dec
on every event. Here it is in Python with prometheus_client, plus the
port-class bucketing connguard also does, so both do the same work per event.
It keys by the address text as given (no parsing, no /64 masking): that is
generous to the baseline.
"""

from __future__ import annotations

import threading
from collections import Counter

from prometheus_client import CollectorRegistry, Gauge

PORT_CLASSES = {25: "smtp", 465: "smtp", 587: "smtp", 2525: "smtp", 443: "https",
                8443: "https", 80: "http", 8080: "http", 8000: "http", 53: "dns", 853: "dot"}


def port_class(destination: str) -> str:
    _, _, port = destination.rpartition(":")
    return PORT_CLASSES.get(int(port), "other") if port.isdigit() else "other"


class NgitTracker:
    def __init__(self, threshold: int = 256, registry: CollectorRegistry | None = None) -> None:
        registry = registry if registry is not None else CollectorRegistry()
        self.threshold = threshold
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._classes: dict[str, Counter[str]] = {}
        self._flagged: set[str] = set()
        self.active_connections = Gauge("active_connections", "open connections", registry=registry)
        self.unique_ips = Gauge("unique_ips", "IPs with open connections", registry=registry)
        self.flagged_ips = Gauge("flagged_ips", "IPs over the threshold", registry=registry)

    def accept(self, ip: str, destination: str = "") -> None:
        cls = port_class(destination)
        with self._lock:
            count = self._counts.get(ip, 0) + 1
            self._counts[ip] = count
            classes = self._classes.get(ip)
            if classes is None:
                classes = self._classes[ip] = Counter()
                self.unique_ips.inc()
            classes[cls] += 1
            if count == self.threshold:
                self._flagged.add(ip)
                self.flagged_ips.inc()
        self.active_connections.inc()

    def close(self, ip: str) -> None:
        with self._lock:
            count = self._counts.get(ip)
            if count is None:
                return
            if count > 1:
                self._counts[ip] = count - 1
            else:
                del self._counts[ip]
                del self._classes[ip]
                self.unique_ips.dec()
                if ip in self._flagged:
                    self._flagged.discard(ip)
                    self.flagged_ips.dec()
        self.active_connections.dec()
