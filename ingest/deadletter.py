"""Moved to :mod:`fleet.deadletter` (the kernel, issue #13): ingest makes dead letters, the
history store keeps them. A re-export for branches written before the move."""

from fleet.deadletter import DeadLetter

__all__ = ["DeadLetter"]
