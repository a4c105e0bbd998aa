"""Prometheus metrics of the pipeline, in one registry passed to every stage.

Names follow Prometheus conventions (``_total`` counters, ``_seconds``
histograms). ``/metrics`` serves this registry.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["GatewayCollector", "Metrics"]

_LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
_ROW_BUCKETS = (1, 10, 50, 100, 500, 1000, 5000, 20000, 100000)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.messages_in = Counter(
            "fleetwatch_messages_in_total", "MQTT messages received", ["format"], registry=r
        )
        self.positions_in = Counter(
            "fleetwatch_positions_in_total", "valid positions decoded", registry=r
        )
        self.rejected = Counter(
            "fleetwatch_rejected_total", "dead letters by reason", ["reason"], registry=r
        )
        self.batch_rows = Histogram(
            "fleetwatch_batch_rows",
            "positions per flushed batch",
            buckets=_ROW_BUCKETS,
            registry=r,
        )
        self.stage_seconds = Histogram(
            "fleetwatch_stage_seconds",
            "time spent per batch in each stage",
            ["stage"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.ingest_latency = Histogram(
            "fleetwatch_ingest_to_store_seconds",
            "from receiving the oldest message of a batch to its durable write",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "fleetwatch_queue_depth", "batches waiting between stages", ["queue"], registry=r
        )
        self.alarms = Counter(
            "fleetwatch_alarm_events_total",
            "alarm episode events",
            ["kind", "action"],
            registry=r,
        )
        # Live feed clients: stream.server.FeedCollector (fleetwatch_ws_clients), not here.
        self.mqtt_connected = Gauge(
            "fleetwatch_mqtt_connected", "1 while the ingest MQTT session is up", registry=r
        )
        self.dropped = Counter(
            "fleetwatch_dropped_total", "messages dropped by a named policy", ["policy"], registry=r
        )
        self.degraded = Gauge(
            "fleetwatch_degraded",
            "1 while a service is down and FleetWatch runs degraded",
            ["service"],
            registry=r,
        )
        self.spooled_rows = Gauge(
            "fleetwatch_spooled_rows", "positions waiting in the local spool", registry=r
        )
        self.store_errors = Counter(
            "fleetwatch_store_errors_total", "failed history writes", ["what"], registry=r
        )


# a counter's name must not be the gauge's plus _total
_GATEWAY_NAMES = {"connections_total": "connections_accepted"}


class GatewayCollector(Collector):
    """The JT/T 808 gateway's counters (``ingest.jt808.session.GatewayStats``), read at
    each scrape: ``fleetwatch_gateway_<field>_total`` per counter field,
    ``fleetwatch_gateway_connections`` (open now) and ``fleetwatch_gateway_reasons_total``
    by reason (refused registrations, bad frames, closes — the codes in the gateway's log).
    """

    GAUGES = frozenset({"connections"})

    def __init__(self, stats: Any) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Any]:
        s = self.stats
        for f in dataclasses.fields(s):
            value = getattr(s, f.name)
            if not isinstance(value, int):
                continue
            short = _GATEWAY_NAMES.get(f.name, f.name)
            name = f"fleetwatch_gateway_{short}"
            doc = f"JT/T 808 gateway: {short.replace('_', ' ')}"
            if f.name in self.GAUGES:
                yield GaugeMetricFamily(name, doc + " (open now)", value=value)
            else:
                yield CounterMetricFamily(name, doc, value=value)
        by = CounterMetricFamily(
            "fleetwatch_gateway_reasons",
            "JT/T 808 gateway: refusals, bad frames and closes by reason",
            labels=["reason"],
        )
        for reason, n in sorted(s.by_reason.items()):
            by.add_metric([reason], n)
        yield by
