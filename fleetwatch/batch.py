"""Moved to :mod:`fleet.batch` (the kernel, issue #13). A re-export for branches written
before the move; nothing in this tree imports it. Remove it once every branch is merged."""

from fleet.batch import (  # noqa: F401
    FIELDS,
    Array,
    BatchBuilder,
    PositionBatch,
    latest_rows,
)
