// Shapes of what the server sends (ARCHITECTURE.md "Interfaces", CONTRACTS.md).

export type Role = "viewer" | "operator" | "admin";
export type VehicleState = "moving" | "parked" | "offline" | "alarm";
export type Severity = "critical" | "warning" | "info";

export interface Org {
  id: string;
  name: string;
  parent: string | null;
}

export interface TileSet {
  name: string;
  url: string;
  /** A second layer drawn over `url` (Tianditu's labels, cva_w). Optional. */
  labels_url?: string;
  attribution?: string;
  datum?: "wgs84" | "gcj02";
  max_zoom?: number;
  subdomains?: string;
}

export interface SessionInfo {
  expires_at: number;
  absolute_expires_at?: number;
  room?: boolean;
  duty_operator?: string | null;
}

export interface Me {
  user: { name: string; org: string; role: Role; username?: string; duties?: string[] };
  service: string;
  timezone: string;
  orgs: Org[];
  tiles: TileSet[];
  center: [number, number];
  zoom: number;
  language?: string;
  kinds: string[];
  states: string[];
  feed_interval_ms: number;
  session?: SessionInfo;
  /** CONTRACTS.md: tile sets, fleet zone, map centre per organisation. */
  settings?: {
    tiles?: TileSet[];
    timezone?: string;
    center?: [number, number];
    zoom?: number;
    org_centers?: Record<string, { center: [number, number]; zoom: number }>;
  };
}

export interface Ack {
  user: string;
  note?: string;
  at: number;
  handled?: boolean;
  action?: "ack" | "close" | "note";
}

export interface Alarm {
  id: string;
  vehicle: string;
  plate: string;
  org: string;
  kind: string;
  state: "open" | "closed";
  started_at: number;
  ended_at?: number | null;
  lat: number;
  lon: number;
  detail?: Record<string, unknown>;
  severity?: Severity;
  ack?: Ack | null;
  acks?: Ack[];
  place?: string;
  phone?: string;
  driver?: string;
}

export interface VehicleItem {
  vehicle: string;
  plate: string;
  org: string;
  ts: number;
  lat: number;
  lon: number;
  speed: number;
  heading: number;
  acc: boolean;
  state: VehicleState;
}

export type FeedFrame =
  | {
      type: "snapshot";
      seq: number;
      /** The web node that sent it, its last global alarm id, how the page resumed. */
      node?: string;
      gid?: string | null;
      resume?: "none" | "seq" | "gid" | "gap";
      gap?: boolean;
      vehicles: VehicleItem[];
      alarms: Alarm[];
    }
  | { type: "positions"; seq: number; items: VehicleItem[] }
  | { type: "alarm"; seq: number; gid?: string; alarm: Alarm }
  | { type: "pong"; seq: number }
  | { type: "error"; reason: string; detail?: string };
