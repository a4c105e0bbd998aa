// Pure rules about base maps (no Leaflet here, so they test without a browser).
import type { TileSet } from "@/api/types";

/** Failures before the layer is declared broken, when nothing has loaded. */
export const TILE_FAIL_THRESHOLD = 4;

export interface TileHealth {
  loaded: number;
  failed: number;
}

/** Broken: several failures and not one tile loaded, or failures ≥ 3× the loads. */
export function tilesBroken(h: TileHealth): boolean {
  if (h.failed >= TILE_FAIL_THRESHOLD && h.loaded === 0) return true;
  return h.failed >= 3 * TILE_FAIL_THRESHOLD && h.failed >= 3 * h.loaded;
}

/** The tile sets of the configuration, those with a URL (an empty URL means "no tiles"). */
export function usableTileSets(sets: TileSet[] | undefined): TileSet[] {
  return (sets ?? []).filter((s) => s.url);
}

/** Tianditu's vector tiles come with a separate label layer (vec_w + cva_w). */
export function labelsUrl(set: TileSet): string | undefined {
  if (set.labels_url) return set.labels_url;
  if (/tianditu\.gov\.cn/.test(set.url) && /vec_w/.test(set.url)) return set.url.replace(/vec_w/g, "cva_w").replace(/LAYER=vec/gi, "LAYER=cva");
  return undefined;
}

