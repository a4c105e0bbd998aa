// The command routes (web/commands_api.py): send, one command's state, a vehicle's list.
import { api } from "@/api/client";
import type { Command } from "@/domain/commands";

export function sendCommand(vehicle: string, body: Record<string, unknown>): Promise<Command> {
  return api<Command>("POST", `/api/vehicles/${encodeURIComponent(vehicle)}/commands`, body);
}

export function getCommand(id: string): Promise<Command> {
  return api<Command>("GET", `/api/commands/${encodeURIComponent(id)}`);
}

export async function vehicleCommands(vehicle: string): Promise<Command[]> {
  const r = await api<{ commands: Command[] }>("GET", `/api/vehicles/${encodeURIComponent(vehicle)}/commands`);
  return r.commands;
}
