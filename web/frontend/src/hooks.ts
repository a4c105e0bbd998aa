// window.fw: a read-only window into the page for the browser tests and an operator's console.
import { sound } from "@/audio/tones";
import { connection } from "@/stores/connection";
import { session } from "@/stores/session";
import { feedBytes, notified } from "@/live/runtime";
import { live } from "@/live/store";
import { mapHooks } from "@/map/hooks";

export function installTestHooks(): void {
  (window as unknown as { fw: unknown }).fw = {
    live,
    session,
    connection,
    sound,
    map: mapHooks,
    feedBytes,
    notified,
    /** Vehicles the page knows (every one is drawn, in a cluster or on its own). */
    markerCount: () => live.vehicles.size,
    alarmIds: () => Array.from(live.alarms.keys()),
    vehicleOrgs: () => Array.from(live.vehicles.values(), (v) => v.org),
    /** vehicle id → [lat, lon] as last received. */
    positions: () => Object.fromEntries(Array.from(live.vehicles.values(), (v) => [v.vehicle, [v.lat, v.lon]])),
  };
}
