// What the UI knows of the cluster, kept current by link events. Pages read it and subscribe
// to the kinds of change they show.

import { get } from "./api.js";

const LOG_KEEP = 1000;

export const state = {
  user: null, // {name, permissions}
  instances: new Map(), // id → instance view
  hosts: new Map(), // id → host view
  users: new Map(), // id → user
  roles: new Map(), // id → role
  logs: new Map(), // instance id → [lines]
  connected: false,
};

const listeners = new Set();

/** Subscribes to changes; kinds: instances, hosts, users, roles, log, connection. */
export function subscribe(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

export function emit(kind, detail) {
  for (const fn of [...listeners]) {
    try {
      fn(kind, detail);
    } catch (e) {
      // One broken view must not stop the others from updating.
      console.warn("view update failed", e);
    }
  }
}

export function can(permission) {
  const p = state.user ? state.user.permissions : [];
  return p.includes(permission) || p.includes("core.admin");
}

function fill(map, list) {
  map.clear();
  for (const item of list || []) map.set(item.id, item);
}

async function load(permission, path, map, kind) {
  if (!can(permission)) return;
  try {
    fill(map, await get(path));
    emit(kind);
  } catch (e) {
    if (e.status !== 403) console.warn(`loading ${path}`, e.message);
  }
}

/** Reloads everything over REST (first connection, or a session that could not be resumed). */
export async function reloadAll() {
  await Promise.all([
    load("core.instance.list", "instances", state.instances, "instances"),
    load("core.host.list", "hosts", state.hosts, "hosts"),
    load("core.user.list", "users", state.users, "users"),
    load("core.role.list", "roles", state.roles, "roles"),
  ]);
}

export function appendLog(id, line) {
  let lines = state.logs.get(id);
  if (!lines) {
    lines = [];
    state.logs.set(id, lines);
  }
  lines.push(line);
  if (lines.length > LOG_KEEP) lines.splice(0, lines.length - LOG_KEEP);
  emit("log", { id, line });
}

/** Applies one link event. */
export function applyEvent(name, data) {
  if (!data) return;
  switch (name) {
    case "instance_updated":
      state.instances.set(data.id, data);
      emit("instances", data);
      break;
    case "instance_deleted":
      state.instances.delete(data.id);
      state.logs.delete(data.id);
      emit("instances", data);
      break;
    case "instance_log":
      appendLog(data.id, data.line);
      break;
    case "host_updated":
      state.hosts.set(data.id, data);
      emit("hosts", data);
      break;
    case "user_updated":
      state.users.set(data.id, data);
      emit("users", data);
      break;
    case "user_deleted":
      state.users.delete(data.id);
      emit("users", data);
      break;
    case "role_updated":
      state.roles.set(data.id, data);
      emit("roles", data);
      break;
    case "role_deleted":
      state.roles.delete(data.id);
      emit("roles", data);
      break;
    case "global_chat.message":
      emit("chat", data);
      break;
    case "inventory_sync.updated":
      emit("inventories", data);
      break;
    case "subspace_storage.storage":
      emit("storage", data);
      break;
    case "save_progress":
    case "bulk_progress":
    case "mod_progress":
    case "factorio_install_progress":
      emit(name, data);
      break;
    default:
      break;
  }
}

/** Sorted by name, for stable lists. */
export function sorted(map) {
  return [...map.values()].sort((a, b) => String(a.name).localeCompare(String(b.name)));
}

export function instanceByRef(ref) {
  const n = Number(ref);
  if (state.instances.has(n)) return state.instances.get(n);
  return [...state.instances.values()].find((i) => i.name === ref);
}

export function totalPlayers() {
  let n = 0;
  for (const i of state.instances.values()) n += (i.players_online || []).length;
  return n;
}
