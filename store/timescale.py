"""The TimescaleDB path of the PostgreSQL store, kept apart and small.

Used when ``pg_available_extensions`` lists ``timescaledb`` (and the config does
not say ``timescale = "off"``). Then ``positions`` is a plain table turned into
a hypertable with one-day chunks; chunks older than
``timescale_compress_after_days`` are compressed (segmented by vehicle,
ordered by time: the layout of a track playback) and a retention policy drops
chunks past ``positions_retention_days``. Everything else — writes, reads,
alarms — is the same code as the native-partition path, except packing (store/packed.py):
with TimescaleDB the store does not pack closed days, its compression policy does that job.

This path cannot be exercised on the development machine (no TimescaleDB
package); the statements below follow the TimescaleDB 2.x API.
"""

from __future__ import annotations

from psycopg import sql

from store.config import StoreConfig

__all__ = ["AVAILABLE_SQL", "setup_statements"]

AVAILABLE_SQL = "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"


def setup_statements(config: StoreConfig) -> list[sql.Composed | sql.SQL]:
    """Run after creating the (non-partitioned) positions table. Idempotent."""
    table = sql.Identifier(config.postgres_schema, "positions")
    name = sql.Literal(f"{config.postgres_schema}.positions")
    compress = sql.Literal(f"{config.timescale_compress_after_days} days")
    keep = sql.Literal(f"{config.positions_retention_days} days")
    return [
        sql.SQL("CREATE EXTENSION IF NOT EXISTS timescaledb"),
        sql.SQL(
            "SELECT create_hypertable({}, 'ts', chunk_time_interval => interval '1 day',"
            " if_not_exists => true, migrate_data => true)"
        ).format(name),
        sql.SQL(
            "ALTER TABLE {} SET (timescaledb.compress,"
            " timescaledb.compress_segmentby = 'vehicle', timescaledb.compress_orderby = 'ts')"
        ).format(table),
        sql.SQL("SELECT add_compression_policy({}, {}::interval, if_not_exists => true)").format(
            name, compress
        ),
        sql.SQL("SELECT add_retention_policy({}, {}::interval, if_not_exists => true)").format(
            name, keep
        ),
    ]
