"""Geofencing: fences, their exact vectorized index, datum conversion, GeoJSON.

Pure, synchronous cores (no asyncio here). The pipeline holds a :class:`LiveFences`,
takes ``live.index`` once per batch and calls ``index.membership(lon, lat)``; the rules
engine reads the per-fence arrays of that index (``use``, ``org``, ``speed_limit_kmh``,
``ids``); the debounce of fence questions is the rules' episode machine (``rules.engine``).
"""

from geofence.datum import gcj02_to_wgs84, wgs84_to_gcj02
from geofence.fence import USES, Fence
from geofence.geojson import fences_from_config, fences_from_geojson, to_geojson
from geofence.index import USE_CODES, FenceIndex, LiveFences, membership_reference

__all__ = [
    "USES",
    "USE_CODES",
    "Fence",
    "FenceIndex",
    "LiveFences",
    "fences_from_config",
    "fences_from_geojson",
    "gcj02_to_wgs84",
    "membership_reference",
    "to_geojson",
    "wgs84_to_gcj02",
]
