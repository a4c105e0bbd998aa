"""The page's GCJ-02 display conversion (web/frontend/src/map/datum.js) agrees with
geofence.datum."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from geofence.datum import wgs84_to_gcj02

DATUM_JS = Path(__file__).parents[2] / "web" / "frontend" / "src" / "map" / "datum.js"


@pytest.mark.skipif(shutil.which("node") is None, reason="node is needed to run datum.js")
def test_js_matches_python() -> None:
    rng = np.random.default_rng(7)
    lon = np.concatenate([rng.uniform(73, 135, 500), [106.633, 60.0, 140.0, 72.004, 137.8347]])
    lat = np.concatenate([rng.uniform(1, 55, 500), [30.456, 30.0, 30.0, 0.8293, 55.8271]])
    script = (
        f"const d = await import({json.dumps(DATUM_JS.as_uri())});"
        f"const lon = {json.dumps(lon.tolist())}, lat = {json.dumps(lat.tolist())};"
        "console.log(JSON.stringify(lon.map((x, i) => d.wgs84ToGcj02(x, lat[i]))));"
    )
    out = subprocess.run(
        ["node", "--input-type=module", "-e", script], capture_output=True, text=True, check=True
    )
    js = np.array(json.loads(out.stdout))
    gx, gy = wgs84_to_gcj02(lon, lat)
    assert np.max(np.abs(js[:, 0] - gx)) < 1e-9
    assert np.max(np.abs(js[:, 1] - gy)) < 1e-9
    assert js[-3].tolist() == [140.0, 30.0]  # outside China: unchanged
