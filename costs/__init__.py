"""运行费用 (#18): supplier files (三定点: fuel, insurance, repair; tolls, parking) checked
against the tracks — pure cores (no I/O, no clock).

- :mod:`costs.kinds`     the kinds, their fields, templates and supplier column mappings
- :mod:`costs.validate`  a file's rows → cost items or bad rows (line, reason), fingerprints
- :mod:`costs.checks`    the checks only a track can make → anomalies (alarm episode kinds)
- :mod:`costs.figures`   per vehicle / unit / km / trip by month and kind, budgets

Persistence is :mod:`store.costs`; the routes are :mod:`web.costs_api`.
"""

from costs.checks import ANOMALY_KINDS, CheckConfig, CheckInput, run_checks
from costs.figures import month_total, summary
from costs.kinds import FIELDS, KIND_LABELS, KINDS, ColumnMapping, template_rows
from costs.validate import BadRow, CostItem, ImportPlan, validate_rows

__all__ = [
    "ANOMALY_KINDS",
    "FIELDS",
    "KINDS",
    "KIND_LABELS",
    "BadRow",
    "CheckConfig",
    "CheckInput",
    "ColumnMapping",
    "CostItem",
    "ImportPlan",
    "month_total",
    "run_checks",
    "summary",
    "template_rows",
    "validate_rows",
]
