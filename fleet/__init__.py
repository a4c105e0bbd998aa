"""The kernel: what every stage of FleetWatch shares, and nothing else.

- :mod:`fleet.batch` — the columnar position batch (fields and units, declared once)
- :mod:`fleet.errors` — the one exception hierarchy
- :mod:`fleet.model` — organisations and vehicles (the records' shape)
- :mod:`fleet.registry` — dense vehicle indices, the organisation tree
- :mod:`fleet.vehicle_state` — moving / parked / offline / alarm, defined once
- :mod:`fleet.metrics` — the Prometheus metric names
- :mod:`fleet.interfaces` — the typed seams (``typing.Protocol``) between the stages

``fleet`` imports no stage and not the composition root (``fleetwatch``); the
import-linter contracts in ``pyproject.toml`` keep it so. Import the modules
themselves (``from fleet.batch import PositionBatch``); this ``__init__`` is empty on
purpose so that importing one piece never loads the others.
"""
