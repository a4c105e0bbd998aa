// What the map view exposes to window.fw (filled in while the monitoring view is open).
export interface MapHooks {
  /** Vehicles drawn on the canvas at the last redraw: singles and cluster members. */
  drawn: {
    clusters: number;
    singles: number;
    /** Vehicles counted in what was drawn (cluster members and singles). */
    members: number;
    /** Vehicles in alarm among them (cluster badges and singles). */
    alarms: number;
    /** Plate labels drawn (street zoom). */
    labels: number;
    /** DOM markers of vehicles in alarm, on top. */
    alarmsOnTop: number;
    at: number;
  };
  redraws: number;
  /** Vehicles in the cluster index at its last build (the bench waits for all of them). */
  indexed: number;
  tilesFailed: boolean;
  boundaries: number;
  zoom: number;
  center: [number, number];
  /** The map has been fitted to the viewer's organisation. */
  fitted: boolean;
  fitAll: () => void;
  view: (lat: number, lon: number, zoom: number) => void;
}

export const mapHooks: MapHooks = {
  drawn: { clusters: 0, singles: 0, members: 0, alarms: 0, labels: 0, alarmsOnTop: 0, at: 0 },
  redraws: 0,
  indexed: 0,
  tilesFailed: false,
  boundaries: 0,
  zoom: 0,
  center: [0, 0],
  fitted: false,
  fitAll: () => undefined,
  view: () => undefined,
};
