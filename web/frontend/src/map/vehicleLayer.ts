// The fleet on one canvas: clusters (with their alarm count) and single vehicles (plate and
// heading at street zoom). Redrawn on moveend and when the data changes — never during a pan,
// so panning costs the browser only a moved layer. Vehicles in alarm are not drawn here: the
// alarm layer draws them on top, larger, pulsing.
import L from "leaflet";
import type { VehicleItem } from "@/api/types";
import { buildIndex, clusterRadius, CLUSTER_MAX_ZOOM, vehicleColor, type Index } from "./clusters";
import { mapHooks } from "./hooks";

/** Plates and headings from this zoom on (street level). */
export const LABEL_ZOOM = 15;
const PAD = 0.15;

export type Hit =
  | { kind: "cluster"; id: number; lat: number; lon: number; count: number }
  | { kind: "vehicle"; vehicle: string; lat: number; lon: number };

interface Drawn {
  x: number;
  y: number;
  r: number;
  hit: Hit;
}

export class VehicleLayer extends L.Layer {
  private canvas!: HTMLCanvasElement;
  private ctx!: CanvasRenderingContext2D;
  private index: Index | null = null;
  private vehicles: Map<string, VehicleItem> = new Map();
  private drawn: Drawn[] = [];
  private topLeft: L.LatLng | null = null;
  private origin = L.point(0, 0);
  connected = true;
  labelFor: (v: VehicleItem) => string = (v) => v.plate;
  /** WGS-84 → what the base map uses (GCJ-02 on AMap-style tiles). */
  project: (lat: number, lon: number) => [number, number] = (lat, lon) => [lat, lon];

  override onAdd(map: L.Map): this {
    const pane = map.getPane("vehicles") ?? map.createPane("vehicles");
    pane.style.zIndex = "450";
    this.canvas = L.DomUtil.create("canvas", "vehicle-canvas leaflet-zoom-animated", pane);
    this.ctx = this.canvas.getContext("2d")!;
    map.on("moveend", this.redraw, this);
    map.on("zoomanim", this.animateZoom as L.LeafletEventHandlerFn, this);
    map.on("resize", this.redraw, this);
    this.redraw();
    return this;
  }

  override onRemove(map: L.Map): this {
    map.off("moveend", this.redraw, this);
    map.off("zoomanim", this.animateZoom as L.LeafletEventHandlerFn, this);
    map.off("resize", this.redraw, this);
    L.DomUtil.remove(this.canvas);
    return this;
  }

  /** New data: rebuild the cluster index and redraw. */
  setVehicles(vehicles: Map<string, VehicleItem>): void {
    this.vehicles = vehicles;
    this.index = buildIndex(vehicles.values());
    this.redraw();
    mapHooks.indexed = vehicles.size;
  }

  /** The cluster's expansion zoom (click on a cluster zooms in to it). */
  expansionZoom(id: number): number {
    return this.index ? this.index.getClusterExpansionZoom(id) : CLUSTER_MAX_ZOOM + 1;
  }

  /** What is under a container point, if anything (nearest within its radius). */
  hitTest(p: L.Point): Hit | null {
    if (!this._map) return null;
    const lp = this._map.containerPointToLayerPoint(p).subtract(this.origin);
    let best: Drawn | null = null;
    let bestD = Infinity;
    for (const d of this.drawn) {
      const dx = d.x - lp.x;
      const dy = d.y - lp.y;
      const dist = dx * dx + dy * dy;
      if (dist <= (d.r + 3) ** 2 && dist < bestD) {
        best = d;
        bestD = dist;
      }
    }
    return best ? best.hit : null;
  }

  private animateZoom(e: L.ZoomAnimEvent): void {
    if (!this._map || !this.topLeft) return;
    const map = this._map as L.Map & {
      _latLngToNewLayerPoint(ll: L.LatLng, zoom: number, center: L.LatLng): L.Point;
    };
    const scale = map.getZoomScale(e.zoom, map.getZoom());
    // Leaflet's own overlays animate this way (ImageOverlay._animateZoom).
    L.DomUtil.setTransform(this.canvas, map._latLngToNewLayerPoint(this.topLeft, e.zoom, e.center), scale);
  }

  redraw(): void {
    const map = this._map;
    if (!map || !this.canvas) return;
    const size = map.getSize();
    const pad = size.multiplyBy(PAD).round();
    const full = size.add(pad.multiplyBy(2));
    this.origin = map.containerPointToLayerPoint(pad.multiplyBy(-1)).round();
    this.topLeft = map.layerPointToLatLng(this.origin);
    L.DomUtil.setPosition(this.canvas, this.origin);
    const dpr = window.devicePixelRatio || 1;
    if (this.canvas.width !== full.x * dpr || this.canvas.height !== full.y * dpr) {
      this.canvas.width = full.x * dpr;
      this.canvas.height = full.y * dpr;
      this.canvas.style.width = `${full.x}px`;
      this.canvas.style.height = `${full.y}px`;
    }
    const ctx = this.ctx;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, full.x, full.y);
    this.drawn = [];
    const zoom = Math.round(map.getZoom());
    mapHooks.zoom = map.getZoom();
    const c = map.getCenter();
    mapHooks.center = [c.lat, c.lng];
    if (!this.index) return;
    const nw = map.containerPointToLatLng(pad.multiplyBy(-1));
    const se = map.containerPointToLatLng(size.add(pad));
    const items = this.index.getClusters([nw.lng, se.lat, se.lng, nw.lat], Math.min(zoom, CLUSTER_MAX_ZOOM + 1));
    const labels = zoom >= LABEL_ZOOM;
    let clusters = 0;
    let singles = 0;
    let members = 0;
    let alarms = 0;
    let labelCount = 0;
    const toPoint = (lat: number, lon: number): L.Point =>
      map.latLngToLayerPoint(this.project(lat, lon)).subtract(this.origin);
    // clusters first, then vehicles above them
    for (const f of items) {
      const p = f.properties as { cluster?: boolean; cluster_id?: number; point_count?: number; alarm: number };
      if (!p.cluster) continue;
      const [lon, lat] = f.geometry.coordinates;
      const pt = toPoint(lat, lon);
      const n = p.point_count ?? 0;
      const r = clusterRadius(n);
      clusters++;
      members += n;
      alarms += p.alarm;
      ctx.beginPath();
      ctx.arc(pt.x, pt.y, r, 0, Math.PI * 2);
      ctx.fillStyle = this.connected ? "rgba(21, 101, 192, 0.82)" : "rgba(120, 124, 130, 0.82)";
      ctx.fill();
      ctx.lineWidth = 3;
      ctx.strokeStyle = "rgba(255,255,255,0.9)";
      ctx.stroke();
      ctx.fillStyle = "#fff";
      ctx.font = "bold 12px sans-serif";
      ctx.textAlign = "center";
      ctx.textBaseline = "middle";
      ctx.fillText(String(n), pt.x, pt.y);
      if (p.alarm > 0) {
        const bx = pt.x + r * 0.75;
        const by = pt.y - r * 0.75;
        const text = String(p.alarm);
        const w = Math.max(16, ctx.measureText(text).width + 8);
        ctx.beginPath();
        ctx.roundRect(bx - w / 2, by - 8, w, 16, 8);
        ctx.fillStyle = "#c62828";
        ctx.fill();
        ctx.fillStyle = "#fff";
        ctx.font = "bold 11px sans-serif";
        ctx.fillText(text, bx, by + 0.5);
      }
      this.drawn.push({ x: pt.x, y: pt.y, r, hit: { kind: "cluster", id: p.cluster_id ?? 0, lat, lon, count: n } });
    }
    ctx.textAlign = "left";
    ctx.textBaseline = "middle";
    for (const f of items) {
      const p = f.properties as { cluster?: boolean; vehicle?: string };
      if (p.cluster || !p.vehicle) continue;
      const v = this.vehicles.get(p.vehicle);
      if (!v) continue;
      singles++;
      members++;
      if (v.state === "alarm") {
        alarms++;
        continue; // drawn on top by the alarm layer
      }
      const pt = toPoint(v.lat, v.lon);
      const r = labels ? 7 : 5;
      const color = vehicleColor(v.state, this.connected);
      if (labels && v.state === "moving" && Number.isFinite(v.heading)) {
        // heading: a wedge pointing where the vehicle drives (0° = north, clockwise)
        const a = ((v.heading - 90) * Math.PI) / 180;
        ctx.beginPath();
        ctx.moveTo(pt.x + Math.cos(a) * (r + 8), pt.y + Math.sin(a) * (r + 8));
        ctx.lineTo(pt.x + Math.cos(a + 2.5) * r, pt.y + Math.sin(a + 2.5) * r);
        ctx.lineTo(pt.x + Math.cos(a - 2.5) * r, pt.y + Math.sin(a - 2.5) * r);
        ctx.closePath();
        ctx.fillStyle = color;
        ctx.fill();
      }
      ctx.beginPath();
      ctx.arc(pt.x, pt.y, r, 0, Math.PI * 2);
      ctx.fillStyle = color;
      ctx.fill();
      ctx.lineWidth = 1.5;
      ctx.strokeStyle = "#fff";
      ctx.stroke();
      if (labels) {
        const text = this.labelFor(v);
        ctx.font = "12px sans-serif";
        const w = ctx.measureText(text).width;
        ctx.fillStyle = "rgba(255,255,255,0.85)";
        ctx.fillRect(pt.x + r + 3, pt.y - 8, w + 6, 16);
        ctx.fillStyle = v.state === "offline" || !this.connected ? "#5f6368" : "#1d2733";
        ctx.fillText(text, pt.x + r + 6, pt.y);
        labelCount++;
      }
      this.drawn.push({ x: pt.x, y: pt.y, r, hit: { kind: "vehicle", vehicle: v.vehicle, lat: v.lat, lon: v.lon } });
    }
    mapHooks.redraws++;
    mapHooks.drawn = { ...mapHooks.drawn, clusters, singles, members, alarms, labels: labelCount, at: Date.now() };
  }
}
