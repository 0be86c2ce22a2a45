// The audit log: who changed what, newest first.

import { get } from "../api.js";
import { h, replace, field, fmtTime } from "../dom.js";
import { subscribe } from "../store.js";

export function mount(main) {
  const limit = h("select", { id: "audit-limit" }, [50, 200, 1000].map((n) => h("option", { value: n, selected: n === 200 }, String(n))));
  const filter = h("input", { id: "audit-filter", type: "search", autocomplete: "off" });
  const table = h("div", { class: "table-wrap", id: "audit-list" });
  let rows = [];
  main.append(h("h1", {}, "Audit log"), h("div", { class: "toolbar" }, field("Entries", limit), field("Filter", filter, "Matches actor, action, target or detail.")), table);

  function render() {
    const q = filter.value.trim().toLowerCase();
    const shown = q ? rows.filter((r) => JSON.stringify([r.actor, r.action, r.target, r.detail]).toLowerCase().includes(q)) : rows;
    if (!shown.length) {
      replace(table, h("p", { class: "muted" }, rows.length ? "No entry matches the filter." : "No entries."));
      return;
    }
    replace(
      table,
      h(
        "table",
        { id: "audit-table" },
        h("thead", {}, h("tr", {}, ["Time", "Actor", "Action", "Target", "Detail"].map((c) => h("th", { scope: "col" }, c)))),
        h(
          "tbody",
          {},
          shown.map((r) =>
            h(
              "tr",
              {},
              h("td", { class: "nowrap" }, fmtTime(r.at)),
              h("td", {}, r.actor || ""),
              h("td", {}, h("code", {}, r.action || "")),
              h("td", {}, r.target || ""),
              h("td", { class: "detail" }, r.detail === null || r.detail === undefined ? "" : typeof r.detail === "string" ? r.detail : JSON.stringify(r.detail)),
            ),
          ),
        ),
      ),
    );
  }

  let pending = null;
  async function refresh() {
    try {
      rows = (await get(`audit?limit=${Number(limit.value)}`)) || [];
      render();
    } catch (e) {
      replace(table, h("p", { class: "muted" }, `The audit log is not available: ${e.message}`));
    }
  }
  limit.addEventListener("change", refresh);
  filter.addEventListener("input", render);
  refresh();
  // Most changes publish an event; refresh shortly after them (debounced).
  const off = subscribe((kind) => {
    if (kind === "log" || kind === "connection") return;
    clearTimeout(pending);
    pending = setTimeout(refresh, 500);
  });
  return () => {
    clearTimeout(pending);
    off();
  };
}
