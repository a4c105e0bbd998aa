// Place names for coordinates, from the server's offline reverse geocoder (/api/geo/place,
// built from the boundaries, fences and lots). Cached by a ~100 m grid; when the server has no
// answer, the caller shows the coordinates instead.
import { api } from "@/api/client";

export interface Place {
  text: string;
  district?: string;
  township?: string;
  near?: { name: string; distance_m: number } | null;
}

const cache = new Map<string, Promise<Place | null>>();
const CACHE_LIMIT = 2_000;

/** The cache key: coordinates rounded to 1e-3° (about 100 m). */
export function placeKey(lat: number, lon: number): string {
  return `${lat.toFixed(3)},${lon.toFixed(3)}`;
}

export function placeOf(lat: number, lon: number): Promise<Place | null> {
  const key = placeKey(lat, lon);
  let p = cache.get(key);
  if (!p) {
    p = api<Place>("GET", `/api/geo/place?lat=${lat.toFixed(6)}&lon=${lon.toFixed(6)}`).catch(() => null);
    if (cache.size >= CACHE_LIMIT) cache.delete(cache.keys().next().value as string);
    cache.set(key, p);
  }
  return p;
}
