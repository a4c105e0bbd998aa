"""Copy the page's npm dependencies into web/static/vendor/ (no CDN at run time).

Run after ``npm ci --prefix web``::

    python web/build_assets.py

Both web/node_modules/ and web/static/vendor/ are git-ignored.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# (source under node_modules, destination under static/vendor)
ASSETS = (
    ("leaflet/dist/leaflet.js", "leaflet/leaflet.js"),
    ("leaflet/dist/leaflet.css", "leaflet/leaflet.css"),
    ("leaflet/dist/images", "leaflet/images"),
    ("leaflet/LICENSE", "leaflet/LICENSE"),
)


def main() -> int:
    modules = HERE / "node_modules"
    vendor = HERE / "static" / "vendor"
    for src, dst in ASSETS:
        s, d = modules / src, vendor / dst
        if not s.exists():
            print(f"missing {s}: run `npm ci --prefix web` first", file=sys.stderr)
            return 1
        d.parent.mkdir(parents=True, exist_ok=True)
        if s.is_dir():
            shutil.copytree(s, d, dirs_exist_ok=True)
        else:
            shutil.copy2(s, d)
    print(f"web assets copied to {vendor}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
