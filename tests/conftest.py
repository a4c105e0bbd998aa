"""Shared fixtures: real services on 127.0.0.1, found or failed loudly.

With ``CI=true`` a test that needs a service fails when the service is
missing; elsewhere it is skipped with the reason.
"""

from __future__ import annotations

import os
import socket
import uuid
from typing import Any

import pytest

pytest_plugins = ["tests.brokers", "tests.private_services"]  # own servers to stop/start

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

SERVICES = {
    "mosquitto": ("127.0.0.1", 1883),
    "redis": ("127.0.0.1", 6379),
    "postgres": ("127.0.0.1", 5432),
}


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def require_service(name: str) -> tuple[str, int]:
    host, port = SERVICES[name]
    if not port_open(host, port):
        msg = f"{name} is not reachable on {host}:{port} (start it: see .ci/run)"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)
    return host, port


@pytest.fixture
def mosquitto() -> tuple[str, int]:
    return require_service("mosquitto")


@pytest.fixture
def redis_server() -> tuple[str, int]:
    return require_service("redis")


@pytest.fixture
def postgres() -> tuple[str, int]:
    return require_service("postgres")


@pytest.fixture
def unique() -> str:
    """A short unique token for topic names, client ids, schemas and key prefixes."""
    return uuid.uuid4().hex[:10]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",  # we run as root
    "--disable-gpu",
    "--disable-background-networking",  # the machine has no network: no phoning home
    "--disable-component-update",
    "--no-first-run",
]


@pytest.fixture
async def chromium() -> Any:
    """Debian's chromium driven by Playwright (``make test`` installs it when missing)."""
    from pathlib import Path

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (make system-deps)")
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()
