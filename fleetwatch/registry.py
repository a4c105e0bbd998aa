"""Moved to :mod:`fleet.registry` (the kernel, issue #13). A re-export for branches written
before the move; nothing in this tree imports it. Remove it once every branch is merged."""

from fleet.registry import (  # noqa: F401
    OrgTree,
    Registry,
    RegistrySource,
    grown,
)
