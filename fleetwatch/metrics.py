"""Prometheus metrics of the pipeline, in one registry passed to every stage.

Names follow Prometheus conventions (``_total`` counters, ``_seconds``
histograms). ``/metrics`` serves this registry.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["Metrics"]

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
