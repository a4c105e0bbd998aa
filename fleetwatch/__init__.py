"""FleetWatch: real-time monitoring of official-vehicle fleets (公务用车监控).

This package is the composition root: configuration, the vehicle registry, the
columnar batch that flows between stages, the error hierarchy, the wiring of
the pipeline and the command line. The stages live in their own top-level
packages (``ingest``, ``geofence``, ``rules``, ``stream``, ``store``, ``web``,
``simulator``).
"""

__version__ = "0.1.0"
