"""Processes of the local cluster: start, wait until ready, kill -9, stop — each by its PID.

Why a module of its own: every piece (etcd, Redis, Patroni, NATS, haproxy, engine and web
nodes) is an operating-system process whose death is the fault under test. A :class:`Proc`
owns exactly one child (started in its own session, so a signal reaches only it and what it
spawned), its log file, and its readiness check; nothing here ever signals a process it did
not start.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "ClusterError",
    "Proc",
    "http_json",
    "port_open",
    "wait_until",
]

LOG_TAIL_BYTES = 4000  # how much of a failed process's log an error quotes


class ClusterError(RuntimeError):
    """A piece of the local cluster did not start, did not become ready, or misbehaved."""


def port_open(host: str, port: int, timeout: float = 0.3) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def http_json(url: str, timeout: float = 1.0) -> tuple[int, object]:
    """GET ``url``: (status, decoded JSON or text); (0, error) when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            body = r.read()
            status = int(r.status)
    except urllib.error.HTTPError as e:
        body = e.read()
        status = int(e.code)
    except (OSError, ValueError) as e:
        return 0, str(e)
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode("utf-8", "replace")


def wait_until(
    check: Callable[[], bool], timeout_s: float, what: str, poll_s: float = 0.2
) -> float:
    """Poll ``check`` until it is true; return the seconds it took, raise after ``timeout_s``."""
    t0 = time.monotonic()
    while True:
        try:
            if check():
                return time.monotonic() - t0
        except Exception:
            pass
        if time.monotonic() - t0 > timeout_s:
            raise ClusterError(f"{what}: not ready after {timeout_s:.0f} s")
        time.sleep(poll_s)


@dataclass
class Proc:
    """One child process: ``argv`` run with its output in ``log``.

    ``netns`` runs it inside that network namespace (``ip netns exec`` execs in place, so the
    PID is the program's own); ``user`` drops to that account (PostgreSQL refuses root).
    ``ready`` is the readiness check, ``ready_timeout_s`` its explicit limit.
    """

    name: str
    argv: list[str]
    log: Path
    ready: Callable[[], bool] | None = None
    ready_timeout_s: float = 30.0
    env: dict[str, str] | None = None
    user: str | None = None
    netns: str | None = None
    cwd: Path | None = None
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    started_at: float = 0.0

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None else None

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def start(self) -> Proc:
        """Start the process (not waiting for readiness); a second start of a live one is an
        error, a start after it died is a restart."""
        if self.alive():
            raise ClusterError(f"{self.name} already running (pid {self.pid})")
        argv = list(self.argv)
        if self.netns:
            argv = ["ip", "netns", "exec", self.netns, *argv]
        self.log.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        if self.env:
            env.update(self.env)
        out = open(self.log, "ab")  # noqa: SIM115 — handed to the child, closed below
        try:
            out.write(f"\n--- start {time.strftime('%H:%M:%S')} {' '.join(argv)}\n".encode())
            out.flush()
            drop = bool(self.user) and os.geteuid() == 0
            self.popen = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=self.cwd,
                start_new_session=True,
                user=self.user if drop else None,
                group=self.user if drop else None,
                extra_groups=[] if drop else None,
            )
        finally:
            out.close()
        self.started_at = time.monotonic()
        return self

    def wait_ready(self) -> float:
        """Block until the readiness check passes; raise (quoting the log) if the process died
        or the time-out passed. Returns the seconds waited."""
        if self.ready is None:
            return 0.0
        ready = self.ready

        def check() -> bool:
            if not self.alive():
                raise ClusterError(f"{self.name} exited with {self.returncode()}")
            return ready()

        t0 = time.monotonic()
        while True:
            try:
                if check():
                    return time.monotonic() - t0
            except ClusterError as e:
                raise ClusterError(f"{e}\n{self.log_tail()}") from None
            except Exception:
                pass
            if time.monotonic() - t0 > self.ready_timeout_s:
                raise ClusterError(
                    f"{self.name}: not ready after {self.ready_timeout_s:.0f} s\n{self.log_tail()}"
                )
            time.sleep(0.2)

    def returncode(self) -> int | None:
        return self.popen.poll() if self.popen is not None else None

    def kill9(self, *, group: bool = True) -> None:
        """SIGKILL: the fault. ``group`` also kills what it spawned in its session (a Patroni
        node's postmaster), as a machine dying would."""
        if self.popen is None or not self.alive():
            return
        pid = self.popen.pid
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if group:
                os.killpg(pid, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM, then SIGKILL (the whole session) after ``timeout_s``."""
        if self.popen is None:
            return
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.popen.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout_s)
        # whatever is left of its session (children that outlived it)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)

    def log_tail(self) -> str:
        try:
            data = self.log.read_bytes()[-LOG_TAIL_BYTES:]
        except OSError:
            return f"(no log at {self.log})"
        return f"--- {self.log} (tail) ---\n" + data.decode("utf-8", "replace")
