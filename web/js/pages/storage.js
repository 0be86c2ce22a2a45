// Storage (subspace_storage): the cluster's item pool, live. Counts change as games export into
// the pool and draw from it; the page applies the controller's updates as they come over the
// web socket, and an admin with subspace_storage.storage.set can correct a count.

import { get, post } from "../api.js";
import { h, replace, field, toast } from "../dom.js";
import { subscribe, can } from "../store.js";

const key = (name, quality) => `${name}\u0000${quality}`;

export function mount(main) {
  const filter = h("input", { type: "search", id: "storage-filter", placeholder: "Filter items", "aria-label": "Filter items" });
  const table = h("div", { class: "table-wrap", id: "storage-list" }, h("p", { class: "muted" }, "Loading…"));
  const flight = h("p", { class: "muted", id: "storage-in-flight" });
  const pending = h("p", { class: "muted", id: "storage-pending" });
  const byHost = h("ul", { class: "muted", id: "storage-pending-hosts" });
  const items = new Map();
  let stopped = false;

  function render() {
    const q = filter.value.trim().toLowerCase();
    const all = [...items.values()].sort((a, b) => a.name.localeCompare(b.name) || a.quality.localeCompare(b.quality));
    const rows = all.filter((i) => !q || i.name.toLowerCase().includes(q) || i.quality.toLowerCase().includes(q));
    const total = all.reduce((n, i) => n + i.count, 0);
    replace(
      table,
      h("p", { class: "muted", id: "storage-summary" }, `${all.length} kinds, ${total.toLocaleString()} items in the pool.`),
      rows.length
        ? h(
            "table",
            {},
            h("thead", {}, h("tr", {}, ["Resource", "Quality", "Quantity"].map((c) => h("th", { scope: "col" }, c)))),
            h(
              "tbody",
              {},
              rows.map((i) =>
                h(
                  "tr",
                  { dataset: { item: i.name, quality: i.quality } },
                  h("td", {}, h("code", {}, i.name)),
                  h("td", {}, i.quality),
                  h("td", { class: "num storage-count" }, i.count.toLocaleString()),
                ),
              ),
            ),
          )
        : h("p", { class: "muted" }, items.size ? "No item matches." : "The pool is empty: nothing has been put into a subspace injector yet."),
    );
  }

  function apply(list) {
    for (const [name, count, quality] of list || []) {
      if (typeof name !== "string" || typeof count !== "number") continue;
      items.set(key(name, quality || "normal"), { name, quality: quality || "normal", count });
    }
    render();
  }

  // Exports a game made since its last save: counted once that game saves (README).
  function showPending(list) {
    const n = list.reduce((t, i) => t + (i.count || 0), 0);
    replace(
      pending,
      n
        ? [
            `Pending (waiting for their game's next save): ${n.toLocaleString()} items — `,
            list.map((i) => `${i.name}${i.quality === "normal" ? "" : ` (${i.quality})`} ${i.count.toLocaleString()}`).join(", "),
            ".",
          ]
        : "",
    );
    pending.dataset.count = String(n);
  }

  // Which hosts hold pending transfers; a revoked one never settles them itself.
  function showHosts(list) {
    replace(
      byHost,
      (list || []).map((x) =>
        h(
          "li",
          { dataset: { host: x.host || String(x.host_id) } },
          `Host ${x.host || `#${x.host_id}`}: ${x.exports} export(s), ${x.grants} grant(s) pending`,
          x.revoked ? " — revoked: settle them with ctl storage resolve " + (x.host || x.host_id) + "." : ".",
        ),
      ),
    );
  }

  let refreshing = null;
  // Pending exports and grants are not in the live counts: fetched again when the pool moves.
  function refreshSide() {
    if (refreshing || stopped) return;
    refreshing = setTimeout(async () => {
      refreshing = null;
      try {
        const v = await get("storage");
        if (stopped) return;
        const g = (v.in_flight && v.in_flight.grants) || 0;
        flight.textContent = g ? `${g} grant(s) on their way to games.` : "";
        showPending((v.pending && v.pending.items) || []);
        showHosts(v.pending && v.pending.hosts);
      } catch (e) {
        // The next update tries again.
      }
    }, 200);
  }

  async function load() {
    try {
      const v = await get("storage");
      if (stopped) return;
      for (const i of v.items || []) items.set(key(i.name, i.quality), i);
      const g = (v.in_flight && v.in_flight.grants) || 0;
      flight.textContent = g ? `${g} grant(s) on their way to games.` : "";
      showPending((v.pending && v.pending.items) || []);
      showHosts(v.pending && v.pending.hosts);
      render();
    } catch (e) {
      if (!stopped) replace(table, h("p", { class: "error" }, `Could not load the storage: ${e.message}`));
    }
  }

  const name = h("input", { id: "storage-set-name", name: "name", type: "text", required: true, placeholder: "iron-plate" });
  const quality = h("input", { id: "storage-set-quality", name: "quality", type: "text", value: "normal" });
  const count = h("input", { id: "storage-set-count", name: "count", type: "number", min: "0", step: "1", required: true });
  const form = h("form", { id: "storage-set", class: "toolbar" }, field("Item", name), field("Quality", quality), field("Count", count), h("button", { type: "submit" }, "Set count"));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      const r = await post("storage", { name: name.value.trim(), quality: quality.value.trim() || "normal", count: Number(count.value) });
      apply([[r.name, r.count, r.quality]]);
      toast(`${r.name} (${r.quality}) set to ${r.count}.`);
    } catch (err) {
      toast(`Could not set the count: ${err.message}`, "error");
    }
  });

  filter.addEventListener("input", render);
  filter.addEventListener("change", render);
  main.append(
    h("h1", {}, "Storage"),
    h("p", { class: "muted" }, "The cluster's subspace storage pool: what injectors in every game have sent, less what extractors have taken. Live."),
    h("p", {}, filter),
    pending,
    byHost,
    flight,
    h("section", { "aria-label": "Items" }, table),
    can("subspace_storage.storage.set") ? h("details", {}, h("summary", {}, "Correct a count (audited)"), form) : "",
  );
  load();
  const off = subscribe((kind, detail) => {
    if (kind === "storage" && detail) {
      apply(detail.items);
      refreshSide();
    }
  });
  return () => {
    stopped = true;
    if (refreshing) clearTimeout(refreshing);
    off();
  };
}
