// Base maps. The boundaries of the districts and counties (a vector layer, /api/geo/boundaries)
// are always there and need no tiles at all; tile sets come from the configuration (/api/me):
// Tianditu (vector + labels, with a key), OpenStreetMap, or none. A tile set that keeps
// failing is said so on the map (底图加载失败) — on a sealed network it would fail silently.
import L from "leaflet";
import type { TileSet } from "@/api/types";
import { labelsUrl, type TileHealth } from "./basemaps";

export { labelsUrl, tilesBroken, usableTileSets, type TileHealth } from "./basemaps";

export function tileLayers(set: TileSet, onHealth: (h: TileHealth) => void): L.TileLayer[] {
  const health: TileHealth = { loaded: 0, failed: 0 };
  const opts: L.TileLayerOptions = {
    maxZoom: set.max_zoom ?? 18,
    subdomains: set.subdomains || "abc",
    attribution: set.attribution ?? "",
  };
  const urls = [set.url, labelsUrl(set)].filter((u): u is string => !!u);
  return urls.map((url) => {
    const layer = L.tileLayer(url, opts);
    layer.on("tileload", () => {
      health.loaded++;
      onHealth({ ...health });
    });
    layer.on("tileerror", () => {
      health.failed++;
      onHealth({ ...health });
    });
    return layer;
  });
}

export interface BoundaryFeature {
  type: "Feature";
  properties: { name: string; adcode?: number | string; level?: string };
  geometry: GeoJSON.Geometry;
}

/** The district/county boundaries with their names, drawn under everything else. */
export function boundaryLayer(
  fc: { features: BoundaryFeature[] },
  project: (lat: number, lon: number) => L.LatLng,
  labelsVisible: boolean,
): L.GeoJSON {
  const layer = L.geoJSON(fc as unknown as GeoJSON.FeatureCollection, {
    pane: "boundaries",
    style: (f) => ({
      color: f?.properties?.level === "city" ? "#34577f" : "#5b7aa6",
      weight: f?.properties?.level === "city" ? 2.5 : 1.5,
      fillColor: "#f4f6f2",
      fillOpacity: f?.properties?.level === "city" ? 0 : 0.55,
      interactive: false,
    }),
    coordsToLatLng: (c: number[]) => project(c[1], c[0]),
    onEachFeature: (f, l) => {
      if (labelsVisible && f.properties?.level !== "city") {
        l.bindTooltip(String(f.properties?.name ?? ""), {
          permanent: true,
          direction: "center",
          className: "boundary-label",
        });
      }
    },
  });
  return layer;
}
