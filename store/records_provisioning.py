"""The gateway's provisioned terminals follow the vehicle records, without a restart.

``fleetwatch gateway`` runs in its own process. It starts from the
configuration's vehicles and then asks the record store every ``interval_s``
whether any vehicle record changed (one ``max(seq)`` query); when one did it
re-reads the records and replaces its :class:`~ingest.jt808.session.Provisioning`
at once. A disposed vehicle's terminal is no longer provisioned; a vehicle on
file wins over the configuration's entry with the same id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from fleet import aio
from fleet.errors import ServiceUnavailable
from fleet.model import VehicleConfig
from ingest.jt808.session import ProvisionedTerminal, Provisioning
from store.records import RecordStore

__all__ = ["follow_records", "provisioned"]

log = logging.getLogger(__name__)


def provisioned(vehicles: Sequence[VehicleConfig]) -> list[ProvisionedTerminal]:
    return [
        ProvisionedTerminal(v.terminal, v.id, v.plate, vin=v.vin, maker=v.terminal_maker)
        for v in vehicles
        if v.status != "已处置"
    ]


async def refresh_once(
    provisioning: Provisioning, records: RecordStore, seed: Sequence[VehicleConfig]
) -> int:
    """Re-read the records into ``provisioning``; returns the terminals provisioned."""
    from store.records import vehicle_config

    by_id = {v.id: v for v in seed}
    for r in await records.vehicles():
        by_id[r.id] = vehicle_config(r)
    terminals = provisioned(list(by_id.values()))
    provisioning.refresh(terminals)
    return len(terminals)


async def follow_records(
    provisioning: Provisioning,
    records: RecordStore,
    seed: Sequence[VehicleConfig],
    stop: asyncio.Event,
    *,
    interval_s: float = 0.5,
) -> None:
    """Keep ``provisioning`` equal to the records until ``stop``; a database outage only
    delays it (logged once per outage)."""
    seen = -1
    down = False
    while not stop.is_set():
        try:
            version = await records.vehicles_version()
            if version != seen:
                n = await refresh_once(provisioning, records, seed)
                if seen >= 0:
                    log.info("provisioning follows the records: %d terminals", n)
                seen = version
            down = False
        except ServiceUnavailable as exc:
            if not down:
                log.error("records unavailable, provisioning unchanged: %s", exc)
            down = True
        with contextlib.suppress(TimeoutError):
            await aio.wait_for(stop.wait(), interval_s)
