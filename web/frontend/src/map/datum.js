// WGS-84 -> GCJ-02 for display on AMap-style tiles; the same published closed form as
// geofence/datum.py (tests/web/test_datum_js.py checks that both agree).
const A = 6378245.0; // Krasovsky 1940 semi-major axis
const EE = 0.00669342162296594323; // its first eccentricity squared
const LON_MIN = 72.004;
const LON_MAX = 137.8347;
const LAT_MIN = 0.8293;
const LAT_MAX = 55.8271;

/**
 * @param {number} lon
 * @param {number} lat
 * @returns {[number, number]}
 */
function offset(lon, lat) {
  const x = lon - 105.0;
  const y = lat - 35.0;
  const pi = Math.PI;
  const common = ((20.0 * Math.sin(6.0 * x * pi) + 20.0 * Math.sin(2.0 * x * pi)) * 2.0) / 3.0;
  const sx = Math.sqrt(Math.abs(x));
  let tLat = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * sx + common;
  tLat += ((20.0 * Math.sin(y * pi) + 40.0 * Math.sin((y / 3.0) * pi)) * 2.0) / 3.0;
  tLat += ((160.0 * Math.sin((y / 12.0) * pi) + 320.0 * Math.sin((y * pi) / 30.0)) * 2.0) / 3.0;
  let tLon = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * sx + common;
  tLon += ((20.0 * Math.sin(x * pi) + 40.0 * Math.sin((x / 3.0) * pi)) * 2.0) / 3.0;
  tLon += ((150.0 * Math.sin((x / 12.0) * pi) + 300.0 * Math.sin((x / 30.0) * pi)) * 2.0) / 3.0;
  const rad = (lat / 180.0) * pi;
  const magic = 1.0 - EE * Math.pow(Math.sin(rad), 2);
  const sqrtMagic = Math.sqrt(magic);
  const dLat = (tLat * 180.0) / (((A * (1.0 - EE)) / (magic * sqrtMagic)) * pi);
  const dLon = (tLon * 180.0) / ((A / sqrtMagic) * Math.cos(rad) * pi);
  return [dLon, dLat];
}

/**
 * Returns [lon, lat]; outside mainland China's rough box the identity.
 * @param {number} lon
 * @param {number} lat
 * @returns {[number, number]}
 */
export function wgs84ToGcj02(lon, lat) {
  if (!(lon >= LON_MIN && lon <= LON_MAX && lat >= LAT_MIN && lat <= LAT_MAX)) {
    return [lon, lat];
  }
  const d = offset(lon, lat);
  return [lon + d[0], lat + d[1]];
}
