"""Persistence: the history store (SQLite | PostgreSQL / TimescaleDB), live state (memory |
Redis), the live-feed fan-out, and the degradation around them.

Modules: ``history`` (the interface), ``sqlite``, ``postgres`` (+ ``timescale``, ``pgcopy``),
``spool`` (PostgreSQL down), ``live`` (+ ``latest``), ``fanout``, ``figures`` (track
simplification, daily figures), ``factory`` (build from config), ``bench``.

Nothing is imported here: ``fleetwatch.config`` imports ``store.config`` at start-up, and
loading the configuration should not pull in psycopg and redis with the adapters.
"""
