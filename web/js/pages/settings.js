// Settings of the controller (config-master.json) and of each host (config-slave.json), as
// forms generated from the schema. Secrets show only as set or not set; fields an environment
// variable sets are read-only here (the panel sets them); restart-required changes are marked.

import { get, patch, seg } from "../api.js";
import { h, replace, field } from "../dom.js";
import { can, sorted, state, subscribe } from "../store.js";
import { loadSchema, settingsForm } from "../settings.js";

/** A card with a form for one config; `path` is its API path. */
function settingsCard({ title, id, fields, path, canWrite }) {
  const card = h("section", { class: "card", "aria-labelledby": `${id}-h`, id }, h("h2", { id: `${id}-h` }, title), h("p", { class: "muted", role: "status" }, "Loading…"));
  get(path)
    .then((view) => {
      const fromEnv = new Set(view.from_env || []);
      const form = settingsForm({
        fields,
        prefix: id,
        canWrite,
        locked: (name) => (fromEnv.has(name) ? "set by an environment variable: change it in the panel" : null),
        save: (body) => patch(path, { config: body }),
      });
      replace(card, h("h2", { id: `${id}-h` }, title), form.form);
      form.render(view);
    })
    .catch((e) => replace(card, h("h2", { id: `${id}-h` }, title), h("p", { class: "error", role: "alert" }, `Cannot read the settings: ${e.message}`)));
  return card;
}

export function mount(main) {
  main.append(h("h1", {}, "Settings"));
  const body = h("div", {}, h("p", { class: "muted", role: "status" }, "Loading the settings…"));
  main.append(body);
  let hostBox = null;
  let select = null;

  function showHost() {
    if (!hostBox || !select.value) return;
    const host = [...state.hosts.values()].find((x) => String(x.id) === select.value);
    if (!host) return;
    loadSchema().then((schema) =>
      replace(
        hostBox,
        host.connected
          ? settingsCard({ title: `Host ${host.name}`, id: "host-settings", fields: schema.host, path: `hosts/${seg(host.id)}/config`, canWrite: can("core.host.update_config") })
          : h("p", { class: "muted" }, `Host ${host.name} is not connected; its settings are read from it.`),
      ),
    );
  }

  function fillHosts() {
    if (!select) return;
    const keep = select.value;
    replace(select, sorted(state.hosts).map((x) => h("option", { value: String(x.id) }, `${x.name}${x.connected ? "" : " (not connected)"}`)));
    if ([...select.options].some((o) => o.value === keep)) select.value = keep;
    if (select.value !== keep) showHost();
  }

  loadSchema()
    .then((schema) => {
      const parts = [];
      if (can("core.controller.get_config")) {
        parts.push(settingsCard({ title: "Controller", id: "controller-settings", fields: schema.controller, path: "controller/config", canWrite: can("core.controller.update_config") }));
      }
      if (can("core.host.get_config")) {
        select = h("select", { id: "settings-host" });
        select.addEventListener("change", showHost);
        hostBox = h("div", {});
        parts.push(h("section", { "aria-label": "Host settings" }, field("Host", select, "Each host keeps its own config-slave.json; changes apply when it restarts."), hostBox));
      }
      replace(body, parts.length ? parts : h("p", { class: "muted" }, "You may not read any settings."));
      fillHosts();
      showHost();
    })
    .catch((e) => replace(body, h("p", { class: "error", role: "alert" }, `Cannot load the settings: ${e.message}`)));

  return subscribe((kind) => {
    if (kind === "hosts") fillHosts();
  });
}
