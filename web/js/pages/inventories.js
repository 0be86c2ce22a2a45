// Inventories (inventory_sync): every player whose character the cluster keeps, which game holds
// them now, their generation and size; a player's detail shows the stored items. Updates live
// when a player syncs (the `inventory_sync.updated` event).

import { get, post, seg } from "../api.js";
import { h, replace, fmtBytes, timeEl, toast, confirmDialog } from "../dom.js";
import { subscribe, can } from "../store.js";

const INVENTORIES = [
  ["armor", "Armour"],
  ["main", "Main inventory"],
  ["guns", "Guns"],
  ["ammo", "Ammunition"],
  ["trash", "Logistic trash"],
];

function holderCell(p) {
  if (!p.holder) return h("span", { class: "muted" }, "nobody");
  if (p.stale_since) return h("span", {}, p.holder, " ", h("span", { class: "badge warn" }, "stopped · lock expiring"));
  return h("span", {}, p.holder, " ", h("span", { class: "badge ok" }, "online"));
}

function statsLine(s) {
  if (!s) return "";
  const largest = s.largest ? ` Largest: ${s.largest.name} (${fmtBytes(s.largest.size)}).` : "";
  return `${s.count} inventories stored, ${fmtBytes(s.total_bytes)} in total; ${s.locks} held by a game now.${largest}`;
}

function stackList(stacks) {
  const list = Array.isArray(stacks) ? stacks : [];
  if (!list.length) return h("p", { class: "muted" }, "empty");
  return h(
    "table",
    {},
    h("thead", {}, h("tr", {}, ["Slot", "Item", "Count", "Quality"].map((c) => h("th", { scope: "col" }, c)))),
    h(
      "tbody",
      {},
      list.map((s) => h("tr", { dataset: { item: s[1] } }, h("td", {}, String(s[0])), h("td", {}, h("code", {}, s[1])), h("td", {}, String(s[2])), h("td", {}, s[3] || "normal"))),
    ),
  );
}

function mountDetail(main, player) {
  const body = h("div", { id: "inventory-detail" }, h("p", { class: "muted" }, "Loading…"));
  main.append(h("p", {}, h("a", { href: "#/inventories" }, "← All inventories")), h("h1", {}, `Inventory of ${player}`), body);
  let stopped = false;
  async function release() {
    await confirmDialog({
      title: `Release ${player}?`,
      body: [h("p", {}, "The game holding this player loses the lock; only do this when that game is stuck or gone. Its later upload is refused if another game took the player meanwhile.")],
      confirm: "Release",
      danger: true,
      onConfirm: async () => {
        await post(`inventories/${seg(player)}/release`);
        toast(`${player} released`);
      },
    });
  }
  async function load() {
    try {
      const v = await get(`inventories/${seg(player)}`);
      if (stopped) return;
      const d = v.data || {};
      const inv = d.inventories || {};
      const bar = Array.isArray(d.quick_bar) ? d.quick_bar : [];
      replace(
        body,
        h(
          "dl",
          { class: "facts" },
          h("dt", {}, "Generation"), h("dd", { id: "inventory-generation" }, String(v.generation ?? "–")),
          h("dt", {}, "Held by"), h("dd", {}, holderCell(v)),
          h("dt", {}, "Last sync"), h("dd", {}, v.last_sync ? timeEl(v.last_sync) : "never", v.last_instance ? ` from ${v.last_instance}` : ""),
          h("dt", {}, "Size"), h("dd", {}, fmtBytes(v.size)),
        ),
        v.holder && can("inventory_sync.inventory.modify") ? h("p", {}, h("button", { type: "button", class: "danger", onclick: release }, "Release lock")) : null,
        INVENTORIES.map(([key, title]) => h("section", { "aria-label": title }, h("h2", {}, title), stackList(inv[key]))),
        h("section", { "aria-label": "Quick bar" }, h("h2", {}, "Quick bar"), bar.length ? h("p", {}, bar.map((q) => h("span", { class: "badge" }, `${q[0]}: ${q[1]}`))) : h("p", { class: "muted" }, "empty")),
      );
    } catch (e) {
      if (!stopped) replace(body, h("p", { class: "error" }, `Could not load ${player}'s inventory: ${e.message}`));
    }
  }
  load();
  const off = subscribe((kind, detail) => {
    if (kind === "inventories" && detail && detail.name === player) load();
  });
  return () => {
    stopped = true;
    off();
  };
}

export function mount(main, params = {}) {
  if (params.player) return mountDetail(main, params.player);
  const stats = h("p", { class: "muted", id: "inventory-stats" }, "");
  const filter = h("input", { type: "search", id: "inventory-filter", placeholder: "Filter players", "aria-label": "Filter players" });
  const table = h("div", { class: "table-wrap", id: "inventory-list" }, h("p", { class: "muted" }, "Loading…"));
  main.append(
    h("h1", {}, "Inventories"),
    h("p", { class: "muted" }, "Players' characters kept by inventory_sync: one game holds a player at a time; every upload is a new generation, and no game is ever given an older one."),
    stats,
    h("p", {}, filter),
    h("section", { "aria-label": "Players" }, table),
  );
  let stopped = false;
  let players = new Map();
  function render() {
    const q = filter.value.trim().toLowerCase();
    const rows = [...players.values()].filter((p) => !q || p.name.toLowerCase().includes(q)).sort((a, b) => a.name.localeCompare(b.name));
    replace(
      table,
      rows.length
        ? h(
            "table",
            {},
            h("thead", {}, h("tr", {}, ["Player", "Held by", "Generation", "Size", "Last sync"].map((c) => h("th", { scope: "col" }, c)))),
            h(
              "tbody",
              {},
              rows.map((p) =>
                h(
                  "tr",
                  { dataset: { player: p.name } },
                  h("td", {}, h("a", { href: `#/inventories/${encodeURIComponent(p.name)}` }, p.name)),
                  h("td", {}, holderCell(p)),
                  h("td", { class: "generation" }, p.generation == null ? "–" : String(p.generation)),
                  h("td", {}, p.size == null ? "–" : fmtBytes(p.size)),
                  h("td", {}, p.last_sync ? timeEl(p.last_sync) : "never"),
                ),
              ),
            ),
          )
        : h("p", { class: "muted" }, players.size ? "No player matches." : "No player has synced yet."),
    );
  }
  async function load() {
    try {
      const v = await get("inventories");
      if (stopped) return;
      players = new Map((v.players || []).map((p) => [p.name, p]));
      stats.textContent = statsLine(v.stats);
      render();
    } catch (e) {
      if (!stopped) replace(table, h("p", { class: "error" }, `Could not load inventories: ${e.message}`));
    }
  }
  filter.addEventListener("input", render);
  load();
  let pending = null;
  const off = subscribe((kind, detail) => {
    if (kind !== "inventories" || !detail || !detail.name) return;
    players.set(detail.name, detail);
    render();
    // The totals change too; fetch them once the burst is over.
    clearTimeout(pending);
    pending = setTimeout(load, 500);
  });
  return () => {
    stopped = true;
    clearTimeout(pending);
    off();
  };
}
