"""The crash test's notifier process: deliver an SQLite outbox until killed.

python -m tests.notify.notifier_proc DB_PATH CONFIG_JSON
"""

from __future__ import annotations

import asyncio
import sys

from notify.config import NotifyConfig
from notify.worker import Notifier, ThreadedSQLiteOutbox


async def main(path: str, config_json: str) -> None:
    cfg = NotifyConfig.model_validate_json(config_json)
    await Notifier(cfg, ThreadedSQLiteOutbox(path)).run()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
