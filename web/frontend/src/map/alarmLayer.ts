// Vehicles in alarm, on top of everything: larger, pulsing (a CSS animation of transform and
// opacity, which the compositor runs without the main thread), coloured by the most severe
// open alarm. Few at a time, so DOM markers are cheap here.
import L from "leaflet";
import type { Severity, VehicleItem } from "@/api/types";
import { mapHooks } from "./hooks";

export interface AlarmVehicle {
  item: VehicleItem;
  severity: Severity;
  /** Pulses: unacknowledged, and among the PULSE_LIMIT most severe (see below). */
  pulse: boolean;
}

/**
 * At most this many markers pulse at once: each pulsing marker is a composited layer animated
 * every frame, and with hundreds of them (a demo's 5 % speeding at 10,000 vehicles) software
 * rendering spends whole cores on it. The others are drawn just as large and coloured, still.
 */
export const PULSE_LIMIT = 40;

export class AlarmLayer {
  private readonly group = L.layerGroup();
  private readonly markers = new Map<string, { marker: L.Marker; severity: Severity; pulse: boolean; el: HTMLElement }>();

  constructor(
    private readonly onClick: (vehicle: string) => void,
    private readonly project: (lat: number, lon: number) => L.LatLngExpression,
  ) {}

  addTo(map: L.Map): this {
    const pane = map.getPane("alarms") ?? map.createPane("alarms");
    pane.style.zIndex = "650";
    this.group.addTo(map);
    return this;
  }

  private element(v: AlarmVehicle): HTMLElement {
    const el = document.createElement("div");
    el.className = `alarm-marker sev-${v.severity}${v.pulse ? " pulsing" : ""}`;
    el.dataset.vehicle = v.item.vehicle;
    el.appendChild(document.createElement("span")).className = "pulse";
    el.appendChild(document.createElement("span")).className = "dot";
    const label = el.appendChild(document.createElement("span"));
    label.className = "plate";
    label.textContent = v.item.plate; // text, never markup
    return el;
  }

  update(list: AlarmVehicle[]): void {
    const seen = new Set<string>();
    for (const v of list) {
      seen.add(v.item.vehicle);
      const ll = this.project(v.item.lat, v.item.lon);
      const cur = this.markers.get(v.item.vehicle);
      if (cur && cur.severity === v.severity && cur.pulse === v.pulse) {
        cur.marker.setLatLng(ll);
        continue;
      }
      if (cur) this.group.removeLayer(cur.marker);
      const el = this.element(v);
      const marker = L.marker(ll, {
        pane: "alarms",
        icon: L.divIcon({ html: el, className: "alarm-icon", iconSize: [28, 28], iconAnchor: [14, 14] }),
        zIndexOffset: v.severity === "critical" ? 2000 : 1000,
        keyboard: false,
      });
      marker.on("click", () => this.onClick(v.item.vehicle));
      this.group.addLayer(marker);
      this.markers.set(v.item.vehicle, { marker, severity: v.severity, pulse: v.pulse, el });
    }
    for (const [id, cur] of this.markers) {
      if (!seen.has(id)) {
        this.group.removeLayer(cur.marker);
        this.markers.delete(id);
      }
    }
    mapHooks.drawn = { ...mapHooks.drawn, alarmsOnTop: this.markers.size };
  }

  /** Re-project after a datum change. */
  reproject(list: AlarmVehicle[]): void {
    for (const v of list) this.markers.get(v.item.vehicle)?.marker.setLatLng(this.project(v.item.lat, v.item.lon));
  }
}
