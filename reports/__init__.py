"""数据分析: the daily rollup per vehicle and the reports built on it (#17).

- :mod:`reports.moving`   the one definition of "moving" the rollup uses
- :mod:`reports.rollup`   pure, vectorized rollup of one day's track (+ scalar twin)
- :mod:`reports.tables`   the six reports, from rollup rows only
- :mod:`reports.files`    CSV / XLSX (one sheet per level)
- :mod:`reports.monthly`  the monthly report job (injected clock) and its delivery
- :mod:`reports.bench`    ``fleetwatch bench reports``

SQL lives in :mod:`store.rollup`; nothing here touches a database.
"""
