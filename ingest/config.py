"""Typed configuration of the ingest stage (``[mqtt]`` and ``[ingest]`` tables)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["IngestConfig", "MqttConfig"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class MqttConfig(_Frozen):
    """How to reach the broker and what to subscribe to."""

    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    username: str | None = None
    password: str | None = None
    client_id: str = Field("fleetwatch-ingest", min_length=1, max_length=64)
    json_topic: str = "fleet/+/position"
    jt808_topic: str = "jt808/+/up"
    # MQTT 5 lets us announce Receive Maximum (flow control); 3.1.1 is for brokers
    # without 5 (the demo's embedded amqtt): the broker's in-flight limit then applies.
    protocol: Literal["5", "3.1.1"] = "5"
    qos: Literal[0, 1] = 1
    persistent_session: bool = True
    # "after_store": PUBACK only once the batch is durably written (no loss on
    # a crash; needs a broker allowing many QoS 1 messages in flight).
    # "on_receive": PUBACK at once (the library default).
    ack: Literal["after_store", "on_receive"] = "after_store"
    receive_maximum: int = Field(
        20000, ge=1, le=65535, description="MQTT 5 Receive Maximum: QoS 1 messages in flight"
    )
    reconnect_initial_s: float = Field(0.5, gt=0)
    reconnect_max_s: float = Field(30.0, gt=0)


class IngestConfig(_Frozen):
    """Batching and input validation limits."""

    batch_max_rows: int = Field(5000, ge=1, le=1_000_000)
    batch_max_age_ms: int = Field(50, ge=1, le=60_000)
    max_payload_bytes: int = Field(256 * 1024, ge=64)
    max_positions_per_payload: int = Field(1000, ge=1)
    max_future_s: int = Field(600, ge=0, description="positions further ahead are rejected")
    max_past_days: int = Field(400, ge=1, description="positions older than this are rejected")
    queue_batches: int = Field(64, ge=1, description="bounded queue between stages, in batches")
    deadletter_memory: int = Field(10_000, ge=0, description="recent dead letters kept in memory")
