// Clustering of the fleet for the map (supercluster): each cluster carries how many of its
// vehicles are in alarm, so a red badge shows where trouble is at city zoom.
import Supercluster, { type PointFeature } from "supercluster";
import type { VehicleItem } from "@/api/types";

export interface PointProps {
  vehicle: string;
  alarm: number;
}
export interface ClusterProps {
  alarm: number;
}

/** Clusters up to this zoom; from CLUSTER_MAX_ZOOM + 1 every vehicle is drawn on its own. */
export const CLUSTER_MAX_ZOOM = 14;
/** Cluster radius in screen pixels. */
export const CLUSTER_RADIUS = 50;

export type Index = Supercluster<PointProps, ClusterProps>;

export function buildIndex(vehicles: Iterable<VehicleItem>): Index {
  const idx = new Supercluster<PointProps, ClusterProps>({
    radius: CLUSTER_RADIUS,
    // Leaflet's tiles are 256 px: with this extent the radius is in screen pixels.
    extent: 256,
    maxZoom: CLUSTER_MAX_ZOOM,
    minPoints: 3,
    map: (p) => ({ alarm: p.alarm }),
    reduce: (acc, p) => {
      acc.alarm += p.alarm;
    },
  });
  const features: PointFeature<PointProps>[] = [];
  for (const v of vehicles) {
    if (!Number.isFinite(v.lat) || !Number.isFinite(v.lon)) continue;
    features.push({
      type: "Feature",
      geometry: { type: "Point", coordinates: [v.lon, v.lat] },
      properties: { vehicle: v.vehicle, alarm: v.state === "alarm" ? 1 : 0 },
    });
  }
  idx.load(features);
  return idx;
}

/** Screen radius of a cluster of `n` vehicles (grows with log n, bounded). */
export function clusterRadius(n: number): number {
  return Math.min(24, 11 + 3 * Math.log10(Math.max(1, n)));
}

/** Colour of a vehicle dot by state; everything is grey when the page is not connected. */
export const STATE_COLORS = {
  moving: "#2e7d32",
  parked: "#1565c0",
  offline: "#8a8f96",
  alarm: "#c62828",
} as const;

export function vehicleColor(state: VehicleItem["state"], connected: boolean): string {
  return connected ? STATE_COLORS[state] : STATE_COLORS.offline;
}
