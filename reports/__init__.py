"""数据分析: the daily rollup per vehicle and the reports built on it (#17).

- :mod:`reports.rollup`   pure, vectorized rollup of one day's track (+ scalar twin);
  "moving" is :func:`fleet.vehicle_state.moving`, the one definition
- :mod:`reports.lots`     whether a point is in its vehicle's own lot (fence index only)
- :mod:`reports.tables`   the six reports, from rollup rows only
- :mod:`reports.files`    CSV / XLSX (one sheet per level)
- :mod:`reports.monthly`  the monthly report job (injected clock) and its delivery
- :mod:`reports.bench`    ``fleetwatch bench reports``

SQL lives in :mod:`store.rollup`; nothing here touches a database.
"""
