// Plugins: which the cluster enables (PLUGINS on the controller), and the version each host runs.

import { get } from "../api.js";
import { h, replace } from "../dom.js";

function hostsCell(p) {
  if (!p.hosts || !p.hosts.length) return h("span", { class: "muted" }, "no host");
  return h(
    "ul",
    { class: "plain" },
    p.hosts.map((x) => h("li", {}, `${x.host || `host ${x.host_id}`} · ${x.version}`, x.connected ? "" : h("span", { class: "muted" }, " (away)"))),
  );
}

function statusCell(p) {
  if (!p.status || typeof p.status !== "object") return "–";
  return Object.entries(p.status)
    .map(([k, v]) => `${k}: ${typeof v === "object" ? JSON.stringify(v) : v}`)
    .join(", ");
}

export function mount(main) {
  const table = h("div", { class: "table-wrap", id: "plugins-list" }, h("p", { class: "muted" }, "Loading…"));
  main.append(
    h("h1", {}, "Plugins"),
    h("p", { class: "muted" }, "Built into clustorio. The controller's PLUGINS setting enables them for the cluster; a host runs those it also enables, and each instance can turn one off with <plugin>.load_plugin."),
    h("section", { "aria-label": "All plugins" }, table),
  );
  let stopped = false;
  async function load() {
    try {
      const list = await get("plugins");
      if (stopped) return;
      replace(
        table,
        h(
          "table",
          {},
          h("thead", {}, h("tr", {}, ["Plugin", "Version", "Cluster", "Hosts", "Status", "Description"].map((c) => h("th", { scope: "col" }, c)))),
          h(
            "tbody",
            {},
            list.map((p) =>
              h(
                "tr",
                { dataset: { plugin: p.name } },
                h("td", {}, h("strong", {}, p.title), h("br"), h("code", {}, p.name)),
                h("td", {}, p.version),
                h("td", {}, p.enabled ? h("span", { class: "badge ok" }, "enabled") : h("span", { class: "badge" }, "off")),
                h("td", {}, hostsCell(p)),
                h("td", {}, statusCell(p)),
                h("td", {}, p.description),
              ),
            ),
          ),
        ),
      );
    } catch (e) {
      if (!stopped) replace(table, h("p", { class: "error" }, `Could not load plugins: ${e.message}`));
    }
  }
  load();
  const timer = setInterval(load, 5000);
  return () => {
    stopped = true;
    clearInterval(timer);
  };
}
