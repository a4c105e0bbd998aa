// WGS-84 -> GCJ-02 for display on AMap tiles; the same published closed form as
// geofence/datum.py (tests/web/test_datum_js.py checks that both agree).
(function (root) {
  "use strict";
  var A = 6378245.0; // Krasovsky 1940 semi-major axis
  var EE = 0.00669342162296594323; // its first eccentricity squared
  var LON_MIN = 72.004, LON_MAX = 137.8347, LAT_MIN = 0.8293, LAT_MAX = 55.8271;

  function offset(lon, lat) {
    var x = lon - 105.0, y = lat - 35.0, pi = Math.PI;
    var common = (20.0 * Math.sin(6.0 * x * pi) + 20.0 * Math.sin(2.0 * x * pi)) * 2.0 / 3.0;
    var sx = Math.sqrt(Math.abs(x));
    var tLat = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * sx + common;
    tLat += (20.0 * Math.sin(y * pi) + 40.0 * Math.sin(y / 3.0 * pi)) * 2.0 / 3.0;
    tLat += (160.0 * Math.sin(y / 12.0 * pi) + 320.0 * Math.sin(y * pi / 30.0)) * 2.0 / 3.0;
    var tLon = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * sx + common;
    tLon += (20.0 * Math.sin(x * pi) + 40.0 * Math.sin(x / 3.0 * pi)) * 2.0 / 3.0;
    tLon += (150.0 * Math.sin(x / 12.0 * pi) + 300.0 * Math.sin(x / 30.0 * pi)) * 2.0 / 3.0;
    var rad = lat / 180.0 * pi;
    var magic = 1.0 - EE * Math.pow(Math.sin(rad), 2);
    var sqrtMagic = Math.sqrt(magic);
    var dLat = (tLat * 180.0) / ((A * (1.0 - EE)) / (magic * sqrtMagic) * pi);
    var dLon = (tLon * 180.0) / (A / sqrtMagic * Math.cos(rad) * pi);
    return [dLon, dLat];
  }

  // Returns [lon, lat]; outside mainland China's rough box the identity.
  function wgs84ToGcj02(lon, lat) {
    if (!(lon >= LON_MIN && lon <= LON_MAX && lat >= LAT_MIN && lat <= LAT_MAX)) {
      return [lon, lat];
    }
    var d = offset(lon, lat);
    return [lon + d[0], lat + d[1]];
  }

  var api = { wgs84ToGcj02: wgs84ToGcj02 };
  if (typeof module !== "undefined" && module.exports) { module.exports = api; }
  else { root.FWDatum = api; }
})(this);
