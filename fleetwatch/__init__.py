"""FleetWatch: real-time monitoring of official-vehicle fleets (公务用车监控).

This package is the composition root, on top of everything: configuration, the wiring
of the pipeline (``service``, ``pipeline``) and the command line. What every stage shares
(the batch, errors, registry, vehicle state, events, the typed seams) is the kernel,
``fleet``; the stages live in their own top-level packages (``ingest``, ``geofence``,
``rules``, ``stream``, ``store``, ``notify``, ``web``, ``simulator``) and never import this
one (docs/architecture.md, "Layers and import rules").
"""

__version__ = "0.1.0"
