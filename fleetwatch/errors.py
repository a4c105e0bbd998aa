"""Moved to :mod:`fleet.errors` (the kernel, issue #13). A re-export for branches written
before the move; nothing in this tree imports it. Remove it once every branch is merged."""

from fleet.errors import (  # noqa: F401
    BadRecord,
    ConfigError,
    FleetWatchError,
    FrameError,
    Misuse,
    ServiceUnavailable,
)
