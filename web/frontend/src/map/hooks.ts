// What the map view exposes to window.fw (filled in while the monitoring view is open).
export interface MapHooks {
  /** Vehicles drawn on the canvas at the last redraw: singles and cluster members. */
  drawn: { clusters: number; singles: number; members: number; alarmsOnTop: number; at: number };
  redraws: number;
  tilesFailed: boolean;
  boundaries: number;
  zoom: number;
  center: [number, number];
}

export const mapHooks: MapHooks = {
  drawn: { clusters: 0, singles: 0, members: 0, alarmsOnTop: 0, at: 0 },
  redraws: 0,
  tilesFailed: false,
  boundaries: 0,
  zoom: 0,
  center: [0, 0],
};
