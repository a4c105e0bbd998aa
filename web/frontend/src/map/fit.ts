import type L from "leaflet";

// Fitting the map to a set of points without asking Leaflet the impossible: with padding as
// wide as the map itself (a phone, a hidden tab, a map of no size yet) Leaflet's
// getBoundsZoom divides by a size of zero or less and its fitBounds throws
// "Invalid LatLng (NaN, NaN)". The padding shrinks to what the map can spare; a map too small
// to show anything is not fitted at all (fit again once it has a size).

/** The smallest map side (px) worth fitting to: below it nothing can be shown. */
export const MIN_FIT_PX = 32;

export interface Size {
  x: number;
  y: number;
}

/**
 * The padding (px each side) to fit with on a map of ``size``: ``want`` when the map is large
 * enough, less so that at least half of each side stays for the points, ``null`` when the map
 * is smaller than MIN_FIT_PX in either direction (or its size is not a number).
 */
export function fitPadding(size: Size, want: number): [number, number] | null {
  const { x, y } = size;
  if (!Number.isFinite(x) || !Number.isFinite(y) || x < MIN_FIT_PX || y < MIN_FIT_PX) return null;
  const w = Math.max(0, Number.isFinite(want) ? want : 0);
  return [Math.min(w, Math.floor(x / 4)), Math.min(w, Math.floor(y / 4))];
}

/** map.fitBounds with the padding fitPadding allows; false (and nothing done) on a map too
 *  small to fit, or bounds that are not valid. */
export function fitMap(map: L.Map, b: L.LatLngBounds, pad: number, maxZoom?: number): boolean {
  if (!b.isValid()) return false;
  const padding = fitPadding(map.getSize(), pad);
  if (!padding) return false;
  map.fitBounds(b, maxZoom == null ? { padding, animate: false } : { padding, maxZoom, animate: false });
  return true;
}
