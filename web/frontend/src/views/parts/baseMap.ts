// The base map of the playback and fence views, from the scaffold's modules (map/tiles.ts):
// the district/county boundaries always (they need no tiles), the tile set the operator chose
// in 监控 (fw.tiles) when there is one, positions shifted to GCJ-02 only for GCJ-02 tiles.
import L from "leaflet";
import { api } from "@/api/client";
import type { TileSet } from "@/api/types";
import { wgs84ToGcj02 } from "@/map/datum.js";
import { Lifetime } from "@/map/lifetime";
import { boundaryLayer, tileLayers, tilesBroken, usableTileSets, type BoundaryFeature } from "@/map/tiles";
import { session } from "@/stores/session";

let boundaryCache: Promise<{ features: BoundaryFeature[] } | null> | null = null;

function boundaries(): Promise<{ features: BoundaryFeature[] } | null> {
  boundaryCache ??= api<{ features: BoundaryFeature[] }>("GET", "/api/geo/boundaries").catch((e) => {
    console.warn("boundaries unavailable", e);
    boundaryCache = null;
    return null;
  });
  return boundaryCache;
}

export class BaseMap {
  readonly map: L.Map;
  datum: "wgs84" | "gcj02" = "wgs84";
  tilesFailed = false;
  boundaryCount = 0;
  /** Ends with remove(): the boundaries may come back after the view is gone. */
  readonly life = new Lifetime();
  private tiles: L.TileLayer[] = [];
  private onTiles: (failed: boolean) => void;

  constructor(el: HTMLElement, onTiles: (failed: boolean) => void = () => undefined) {
    this.onTiles = onTiles;
    const me = session.me;
    const center = me?.settings?.center ?? me?.center ?? [30.46, 106.63];
    const zoom = me?.settings?.zoom ?? me?.zoom ?? 10;
    this.map = L.map(el, { zoomControl: true, preferCanvas: true }).setView(center, zoom);
    this.map.createPane("boundaries").style.zIndex = "250";
    const sets = usableTileSets(me?.settings?.tiles ?? me?.tiles);
    const choice = localStorage.getItem("fw.tiles") ?? "0";
    this.setTiles(choice === "none" ? undefined : sets[Number(choice)] ?? sets[0]);
    void this.life.then(boundaries(), (fc) => {
      if (!fc) return;
      boundaryLayer(fc, (lat, lon) => this.latLng(lat, lon), true).addTo(this.map);
      this.boundaryCount = fc.features.length;
    });
  }

  /** WGS-84 → the map's datum. */
  latLng(lat: number, lon: number): L.LatLng {
    if (this.datum === "gcj02") {
      const g = wgs84ToGcj02(lon, lat);
      return L.latLng(g[1], g[0]);
    }
    return L.latLng(lat, lon);
  }

  private setTiles(set: TileSet | undefined): void {
    for (const l of this.tiles) this.map.removeLayer(l);
    this.datum = set?.datum ?? "wgs84";
    this.tiles = set
      ? tileLayers(set, (h) => {
          if (!this.life.alive) return;
          this.tilesFailed = tilesBroken(h);
          this.onTiles(this.tilesFailed);
        })
      : [];
    for (const l of this.tiles) l.addTo(this.map);
  }

  remove(): void {
    this.life.end();
    this.map.remove();
  }
}
