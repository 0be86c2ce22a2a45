// Research (research_sync): the cluster's technologies, what is researched and how far the rest
// has come, summed over every game. Refreshes every few seconds.

import { get } from "../api.js";
import { h, replace } from "../dom.js";

function progressCell(t) {
  if (t.researched) return h("span", { class: "badge ok" }, "researched");
  const p = Math.max(0, Math.min(1, t.progress || 0));
  if (p === 0) return h("span", { class: "muted" }, "not started");
  const pct = `${(p * 100).toFixed(1)}%`;
  return h("span", {}, h("progress", { max: "1", value: String(p), "aria-label": `${t.name} ${pct}` }), ` ${pct}`);
}

export function mount(main) {
  const filter = h("input", { type: "search", placeholder: "Filter technologies", "aria-label": "Filter technologies" });
  const onlyActive = h("input", { type: "checkbox", id: "research-active", checked: true });
  const table = h("div", { class: "table-wrap", id: "research-list" }, h("p", { class: "muted" }, "Loading…"));
  main.append(
    h("h1", {}, "Research"),
    h("p", { class: "muted" }, "Shared by every game running research_sync: progress made in any game adds up here, and a technology finished anywhere is finished everywhere."),
    h("p", {}, filter, " ", h("label", { for: "research-active" }, onlyActive, " only researched or in progress")),
    h("section", { "aria-label": "Technologies" }, table),
  );
  let stopped = false;
  let list = [];
  function render() {
    const q = filter.value.trim().toLowerCase();
    const rows = list.filter((t) => (!q || t.name.includes(q)) && (!onlyActive.checked || t.researched || (t.progress || 0) > 0));
    const done = list.filter((t) => t.researched).length;
    replace(
      table,
      h("p", { class: "muted" }, `${done} of ${list.length} technologies researched.`),
      rows.length
        ? h(
            "table",
            {},
            h("thead", {}, h("tr", {}, ["Technology", "Level", "Progress"].map((c) => h("th", { scope: "col" }, c)))),
            h(
              "tbody",
              {},
              rows.map((t) =>
                h(
                  "tr",
                  { dataset: { tech: t.name } },
                  h("td", {}, h("code", {}, t.name)),
                  h("td", {}, t.infinite ? `${t.level} (infinite)` : t.max_level > 1 ? `${t.level} / ${t.max_level}` : String(t.level)),
                  h("td", {}, progressCell(t)),
                ),
              ),
            ),
          )
        : h("p", { class: "muted" }, list.length ? "No technology matches." : "No game with research_sync has started yet."),
    );
  }
  async function load() {
    try {
      list = await get("research");
      if (!stopped) render();
    } catch (e) {
      if (!stopped) replace(table, h("p", { class: "error" }, `Could not load research: ${e.message}`));
    }
  }
  filter.addEventListener("input", render);
  onlyActive.addEventListener("change", render);
  load();
  const timer = setInterval(load, 3000);
  return () => {
    stopped = true;
    clearInterval(timer);
  };
}
