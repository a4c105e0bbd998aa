"""Throwaway PostgreSQL and Redis servers that outage tests may stop and start.

The shared PostgreSQL and Redis are never stopped: an outage test starts its own
PostgreSQL cluster (initdb + pg_ctl as the ``postgres`` user, in a temp dir) or
its own redis-server, each on a free port. Registered as fixtures from
tests/conftest.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import IN_CI, free_port, port_open

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def _missing(msg: str) -> None:
    if IN_CI:
        pytest.fail(msg)
    pytest.skip(msg)


class PrivatePostgres:
    """A throwaway PostgreSQL 15 cluster on a free port (trust auth, fsync off)."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="fw-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        shutil.chown(self.dir, "postgres", "postgres")
        self._as_postgres(
            [
                str(PG_BIN / "initdb"),
                "-D",
                str(self.data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
            ]
        )

    def _as_postgres(self, argv: list[str]) -> None:
        if os.geteuid() == 0:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        subprocess.run(argv, check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._as_postgres(
            [
                str(PG_BIN / "pg_ctl"),
                "start",
                "-D",
                str(self.data),
                "-w",
                "-t",
                "30",
                "-l",
                str(self.dir / "log"),
                "-o",
                opts,
            ]
        )

    def stop(self, mode: str = "fast") -> None:
        self._as_postgres(
            [str(PG_BIN / "pg_ctl"), "stop", "-D", str(self.data), "-m", mode, "-w", "-t", "30"]
        )

    def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    if not (PG_BIN / "initdb").exists() or shutil.which("runuser") is None:
        _missing(f"PostgreSQL server binaries not found in {PG_BIN}")
    pg = PrivatePostgres()
    try:
        pg.start()
        yield pg
    finally:
        pg.destroy()


class PrivateRedis:
    """A throwaway redis-server on a free port, no persistence."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not port_open("127.0.0.1", self.port, 0.2):
            if time.monotonic() > deadline:
                raise RuntimeError("private redis-server did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        _missing("redis-server not installed")
    r = PrivateRedis()
    r.start()
    try:
        yield r
    finally:
        r.stop()
