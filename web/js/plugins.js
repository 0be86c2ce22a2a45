// External plugins: programs connected over the link with role "plugin" (docs/plugins.md).
// Lists each with its state: connected or away, version, last seen, messages queued for it.

import { get } from "./api.js";
import { h, replace } from "./dom.js";

function ago(ms) {
  if (!ms) return "never";
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  return new Date(ms).toLocaleString();
}

function state(p) {
  if (p.revoked) return h("span", { class: "badge st-revoked" }, "revoked");
  if (p.connected) return h("span", { class: "badge st-connected" }, "connected");
  return h("span", { class: "badge st-disconnected" }, "away");
}

export function mount(main) {
  const table = h("div", { class: "table-wrap", id: "external-plugins-list" }, h("p", { class: "muted" }, "Loading…"));
  main.append(
    h("h1", {}, "External plugins"),
    h("p", { class: "muted" }, "Programs that connect to the controller as plugins, in any language. An admin creates each one's token with `clustorio ctl plugin token NAME`; restarting the program reloads it. While one is away, its durable channels are queued for it."),
    h("section", { "aria-label": "External plugins" }, table),
  );
  let stopped = false;
  async function load() {
    try {
      const list = await get("external-plugins");
      if (stopped) return;
      if (!list.length) {
        replace(table, h("p", { class: "muted" }, "No external plugins yet."));
        return;
      }
      replace(
        table,
        h(
          "table",
          {},
          h("thead", {}, h("tr", {}, ["Plugin", "Version", "State", "Last seen", "Queued", "Dropped", "Channels"].map((c) => h("th", { scope: "col" }, c)))),
          h(
            "tbody",
            {},
            list.map((p) =>
              h(
                "tr",
                { dataset: { plugin: p.name } },
                h("td", {}, p.title ? h("strong", {}, p.title) : "", p.title ? h("br") : "", h("code", {}, p.name)),
                h("td", {}, p.version || "–"),
                h("td", { class: "state" }, state(p)),
                h("td", {}, ago(p.last_seen)),
                h("td", { class: "queued" }, String(p.queued)),
                h("td", {}, String(p.dropped)),
                h("td", {}, (p.ipc_channels || []).join(", ") || "–"),
              ),
            ),
          ),
        ),
      );
    } catch (e) {
      if (!stopped) replace(table, h("p", { class: "error" }, `Could not load external plugins: ${e.message}`));
    }
  }
  load();
  const timer = setInterval(load, 3000);
  return () => {
    stopped = true;
    clearInterval(timer);
  };
}
