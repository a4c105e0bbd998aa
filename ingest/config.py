"""Typed configuration of the ingest stage (``[mqtt]`` and ``[ingest]`` tables)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["IngestConfig", "MqttConfig"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class MqttConfig(_Frozen):
    """How to reach the broker and what to subscribe to."""

    host: str = Field("127.0.0.1", description="broker address")
    port: int = Field(1883, ge=1, le=65535, description="broker port")
    username: str | None = Field(None, description="broker login")
    password: str | None = Field(None, description="broker password")
    client_id: str = Field(
        "fleetwatch-ingest",
        min_length=1,
        max_length=64,
        description="fixed id: the persistent session survives restarts; one per worker",
    )
    json_topic: str = Field(
        "fleet/+/position", description="JSON positions (a shard prefix s1/fleet/+/position works)"
    )
    jt808_topic: str = Field("jt808/+/up", description="raw JT/T 808 frames; empty: none")
    # MQTT 5 lets us announce Receive Maximum (flow control); 3.1.1 is for brokers
    # without 5 (the demo's embedded amqtt): the broker's in-flight limit then applies.
    protocol: Literal["5", "3.1.1"] = Field("5", description="MQTT version")
    client: Literal["aiomqtt", "gmqtt", "paho", "fast"] = Field(
        "aiomqtt",
        description="aiomqtt, gmqtt, paho (its own thread) or the built-in client (BENCHMARKS.md)",
    )
    qos: Literal[0, 1] = Field(1, description="subscription QoS")
    persistent_session: bool = Field(
        True, description="the broker keeps our queue for 7 days while we are away"
    )
    # "after_store": PUBACK only once the batch is durably written (no loss on
    # a crash; needs a broker allowing many QoS 1 messages in flight).
    # "on_receive": PUBACK at once (the library default).
    ack: Literal["after_store", "on_receive"] = Field(
        "after_store", description="PUBACK after the durable write (no loss) or on intake"
    )
    receive_maximum: int = Field(
        20000, ge=1, le=65535, description="MQTT 5 Receive Maximum: QoS 1 messages in flight"
    )
    reconnect_initial_s: float = Field(0.5, gt=0, description="first reconnect delay")
    reconnect_max_s: float = Field(30.0, gt=0, description="reconnect delay doubles up to this")


class IngestConfig(_Frozen):
    """Batching and input validation limits."""

    batch_max_rows: int = Field(5000, ge=1, le=1_000_000, description="flush at this many rows")
    batch_max_age_ms: int = Field(
        50, ge=1, le=60_000, description="…or when the oldest message is this old"
    )
    max_payload_bytes: int = Field(256 * 1024, ge=64, description="larger: dead letter `oversized`")
    max_positions_per_payload: int = Field(1000, ge=1, description="larger arrays: dead letter")
    max_future_s: int = Field(600, ge=0, description="positions further ahead are rejected")
    max_past_days: int = Field(400, ge=1, description="positions older than this are rejected")
    queue_batches: int = Field(64, ge=1, description="bounded queue between stages, in batches")
    deadletter_memory: int = Field(10_000, ge=0, description="recent dead letters kept in memory")
