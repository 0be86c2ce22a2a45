// Instances: the live list, and creating one (optionally assigning it right away).

import { post, seg } from "../api.js";
import { h, replace, busy, toast, field, statusBadge } from "../dom.js";
import { state, subscribe, sorted, can } from "../store.js";
import { bulkBar } from "./bulk.js";
import { joinAddress } from "./players.js";

/** Instance names (they become directory names on the host): as the controller checks them. */
export const NAME_RE = /^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$/;

/** The host choices for assigning: connected, not revoked hosts first. */
export function hostOptions(selected) {
  const hosts = sorted(state.hosts).filter((x) => !x.revoked);
  return hosts.map((x) => h("option", { value: x.name, selected: x.name === selected }, x.connected ? x.name : `${x.name} (not connected)`));
}

/** Start / stop buttons for one instance, as fits its status. */
export function quickActions(i) {
  const out = [];
  const act = (verb, label, cls) => {
    const b = h("button", { type: "button", class: [cls, "small"], dataset: { key: `${verb}-${i.id}` }, "aria-label": `${label} ${i.name}` }, label);
    b.addEventListener("click", () => busy(b, () => post(`instances/${seg(i.id)}/${verb}`), `${i.name}: ${verb} done.`));
    return b;
  };
  if ((i.status === "stopped" || i.status === "crashed") && can("core.instance.start")) out.push(act("start", "Start", "primary"));
  if (i.status === "running" && can("core.instance.stop")) out.push(act("stop", "Stop", "secondary"));
  return out;
}

function createForm() {
  const name = h("input", { id: "new-instance-name", name: "name", required: true, autocomplete: "off", maxlength: 64 });
  const host = h("select", { id: "new-instance-host", name: "host" });
  const error = h("p", { class: "error", role: "alert", id: "create-error" });
  const submit = h("button", { type: "submit", class: "primary", id: "create-instance" }, "Create");
  const fillHosts = () => {
    const keep = host.value;
    replace(
      host,
      h("option", { value: "" }, "Don't assign yet"),
      can("core.instance.assign") ? h("option", { value: "*" }, "Automatic (least loaded host)") : null,
      can("core.instance.assign") ? hostOptions(keep) : null,
    );
    host.value = [...host.options].some((o) => o.value === keep) ? keep : "";
  };
  fillHosts();
  const form = h(
    "form",
    { class: "card inline-form", id: "create-instance-form", "aria-labelledby": "create-h" },
    h("h2", { id: "create-h" }, "New instance"),
    field("Name", name, "Letters, digits, dot, dash and underscore; not starting with a dot."),
    field("Assign to", host),
    h("div", { class: "actions" }, submit),
    error,
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    error.textContent = "";
    const n = name.value.trim();
    if (!NAME_RE.test(n)) {
      error.textContent = "Use 1–64 letters, digits, dots, dashes or underscores, not starting with a dot.";
      name.setAttribute("aria-invalid", "true");
      name.focus();
      return;
    }
    name.removeAttribute("aria-invalid");
    await busy(submit, async () => {
      try {
        const view = await post("instances", { name: n });
        state.instances.set(view.id, view);
        if (host.value) {
          const body = host.value === "*" ? {} : { host: host.value };
          const assigned = await post(`instances/${seg(view.id)}/assign`, body);
          state.instances.set(assigned.id, assigned);
        }
        toast(`Instance ${n} created.`);
        name.value = "";
        location.hash = `#/instances/${view.id}`;
      } catch (err) {
        error.textContent = err.message;
      }
    });
  });
  return { form, fillHosts };
}

export function mount(main) {
  const table = h("div", { class: "table-wrap", id: "instances-list" });
  main.append(h("h1", {}, "Instances"), bulkBar(), h("section", { "aria-label": "All instances" }, table));
  const create = can("core.instance.create") ? createForm() : null;
  if (create) main.append(create.form);

  function render() {
    const list = sorted(state.instances);
    if (!list.length) {
      replace(table, h("p", { class: "muted" }, "No instances yet."));
      return;
    }
    replace(
      table,
      h(
        "table",
        { id: "instances-table" },
        h("thead", {}, h("tr", {}, ["Name", "Status", "Host", "Players", "Port", "Join address", ""].map((c) => h("th", { scope: "col" }, c)))),
        h(
          "tbody",
          {},
          list.map((i) =>
            h(
              "tr",
              { dataset: { instance: i.name } },
              h("th", { scope: "row" }, h("a", { href: `#/instances/${i.id}`, dataset: { key: `open-${i.id}` } }, i.name)),
              h("td", { class: "status" }, statusBadge(i.status)),
              h("td", {}, i.host || h("span", { class: "muted" }, "—")),
              h("td", {}, String((i.players_online || []).length)),
              h("td", {}, i.game_port ? String(i.game_port) : ""),
              h("td", {}, joinAddress(i)),
              h("td", { class: "actions-cell" }, quickActions(i)),
            ),
          ),
        ),
      ),
    );
  }
  render();
  return subscribe((kind) => {
    if (kind === "instances") render();
    if (kind === "hosts" && create) create.fillHosts();
  });
}
