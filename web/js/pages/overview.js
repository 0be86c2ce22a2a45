// The cluster at a glance: counts, alerts, players online, charts.

import { get } from "../api.js";
import { lineChart } from "../chart.js";
import { h, replace, statusBadge, messageSummary } from "../dom.js";
import { state, subscribe, sorted, can, totalPlayers } from "../store.js";

const HISTORY_REFRESH_MS = 30_000;

function alerts() {
  const out = [];
  if (!state.connected) out.push(["warn", "The live connection to the controller is down; what you see may be stale."]);
  for (const host of sorted(state.hosts)) {
    if (!host.revoked && !host.connected) out.push(["warn", `Host ${host.name} is not connected.`]);
  }
  for (const i of sorted(state.instances)) {
    const link = h("a", { href: `#/instances/${i.id}` }, i.name);
    if (i.status === "crashed") out.push(["error", h("span", {}, "Instance ", link, " crashed", i.message ? `: ${messageSummary(i.message)}` : ".")]);
    else if (i.status === "unknown") out.push(["warn", h("span", {}, "Instance ", link, " is on a host that is not connected.")]);
    else if (i.message && i.status !== "running") out.push(["warn", h("span", {}, "Instance ", link, `: ${messageSummary(i.message)}`)]);
  }
  return out;
}

function stat(label, value, href) {
  const body = [h("span", { class: "stat-value" }, String(value)), h("span", { class: "stat-label" }, label)];
  return h("li", { class: "stat" }, href ? h("a", { href }, body) : body);
}

export function mount(main) {
  const stats = h("ul", { class: "stats", "aria-label": "Cluster summary" });
  const alertBox = h("section", { "aria-labelledby": "alerts-h" });
  const players = h("section", { "aria-labelledby": "players-h" });
  const charts = h("section", { class: "charts", "aria-labelledby": "charts-h" });
  const instancesBox = h("section", { "aria-labelledby": "inst-h" });

  // Prometheus and Grafana: the one /metrics endpoint, the shipped dashboard and a scrape config.
  const monitoring = h(
    "p",
    { class: "muted monitoring" },
    "Monitoring: ",
    h("a", { href: "/metrics" }, "/metrics"),
    " · ",
    h("a", { href: "/metrics/grafana-dashboard.json", download: "clustorio.json" }, "Grafana dashboard"),
    " · ",
    h("a", { href: "/metrics/prometheus.yml", download: "prometheus.yml" }, "Prometheus scrape config"),
  );
  main.append(h("h1", {}, "Overview"), stats, alertBox, h("div", { class: "two" }, instancesBox, players), charts, monitoring);

  function render() {
    const inst = [...state.instances.values()];
    const hosts = [...state.hosts.values()].filter((x) => !x.revoked);
    replace(
      stats,
      stat("hosts connected", `${hosts.filter((x) => x.connected).length} / ${hosts.length}`, "#/hosts"),
      stat("instances running", `${inst.filter((i) => i.status === "running").length} / ${inst.length}`, "#/instances"),
      stat("players online", totalPlayers()),
    );
    const list = alerts();
    replace(
      alertBox,
      h("h2", { id: "alerts-h" }, "Alerts"),
      list.length
        ? h("ul", { class: "alerts" }, list.map(([kind, msg]) => h("li", { class: kind }, msg)))
        : h("p", { class: "muted ok-note" }, "Nothing needs attention."),
    );
    const online = sorted(state.instances).flatMap((i) => (i.players_online || []).map((p) => [p, i]));
    replace(
      players,
      h("h2", { id: "players-h" }, "Players online"),
      online.length
        ? h("ul", { class: "players" }, online.map(([p, i]) => h("li", {}, h("strong", {}, p), " on ", h("a", { href: `#/instances/${i.id}` }, i.name))))
        : h("p", { class: "muted" }, "Nobody is playing right now."),
    );
    replace(
      instancesBox,
      h("h2", { id: "inst-h" }, "Instances"),
      inst.length
        ? h(
            "ul",
            { class: "inst-list" },
            sorted(state.instances).map((i) =>
              h(
                "li",
                {},
                h("a", { href: `#/instances/${i.id}` }, i.name),
                " ",
                statusBadge(i.status),
                h("span", { class: "muted" }, i.host ? ` on ${i.host}` : ""),
                (i.players_online || []).length ? h("span", { class: "muted" }, ` · ${i.players_online.length} playing`) : null,
              ),
            ),
          )
        : h("p", { class: "muted" }, "No instances yet. ", can("core.instance.create") ? h("a", { href: "#/instances" }, "Create one") : null),
    );
  }

  async function loadHistory() {
    if (!can("core.instance.list")) return;
    try {
      const hist = await get("history");
      const samples = (hist && hist.samples) || [];
      replace(
        charts,
        h("h2", { id: "charts-h" }, "Last 24 hours"),
        h(
          "div",
          { class: "chart-grid" },
          lineChart("Players online", samples, [{ key: "players", label: "Players", cls: "s1" }]),
          lineChart("Instances", samples, [
            { key: "instances", label: "Instances", cls: "s2" },
            { key: "running", label: "Running", cls: "s3" },
          ]),
        ),
      );
    } catch (e) {
      replace(charts, h("h2", { id: "charts-h" }, "Last 24 hours"), h("p", { class: "muted" }, `History is not available: ${e.message}`));
    }
  }

  render();
  loadHistory();
  const timer = setInterval(loadHistory, HISTORY_REFRESH_MS);
  const off = subscribe((kind) => {
    if (kind === "instances" || kind === "hosts" || kind === "connection") render();
  });
  return () => {
    clearInterval(timer);
    off();
  };
}
