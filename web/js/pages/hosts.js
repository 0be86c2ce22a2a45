// Hosts: their status and instances, the join token new hosts use, revocation.

import { get, post, seg } from "../api.js";
import { h, replace, busy, confirmDialog, toast, timeEl, field } from "../dom.js";
import { state, subscribe, sorted, can } from "../store.js";
import { bulkBar } from "./bulk.js";
import { installCard, versionList } from "./factorio_versions.js";

async function copy(text, input) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    // The clipboard API needs a secure context (https or localhost); fall back to selecting.
    input.type = "text";
    input.select();
    if (!document.execCommand("copy")) throw new Error("Copy failed: select the token and copy it yourself.");
  }
}

function joinTokenSection() {
  const input = h("input", { id: "join-token", type: "password", readonly: true, value: "", autocomplete: "off", spellcheck: "false" });
  const showBtn = h("button", { type: "button", class: "secondary", "aria-pressed": "false" }, "Show");
  const copyBtn = h("button", { type: "button", class: "primary", id: "copy-join-token" }, "Copy");
  const rotateBtn = h("button", { type: "button", class: "danger" }, "Rotate…");
  showBtn.addEventListener("click", () => {
    const shown = input.type === "text";
    input.type = shown ? "password" : "text";
    showBtn.textContent = shown ? "Show" : "Hide";
    showBtn.setAttribute("aria-pressed", String(!shown));
  });
  copyBtn.addEventListener("click", () => busy(copyBtn, () => copy(input.value, input), "Join token copied."));
  rotateBtn.addEventListener("click", () =>
    confirmDialog({
      title: "Rotate the join token?",
      body: [h("p", {}, "Hosts already registered keep working. New hosts need the new token in MASTER_TOKEN.")],
      confirm: "Rotate",
      danger: true,
      onConfirm: async () => {
        input.value = (await post("join-token/rotate")).token;
        toast("Join token rotated.");
      },
    }),
  );
  const section = h(
    "section",
    { class: "card", "aria-labelledby": "join-h" },
    h("h2", { id: "join-h" }, "Add a host"),
    h("p", {}, "Start a slave with ", h("code", {}, "MASTER_URL"), " pointing here and this join token in ", h("code", {}, "MASTER_TOKEN"), "; it registers itself by name."),
    field("Join token", input),
    h("div", { class: "actions" }, showBtn, copyBtn, rotateBtn),
  );
  get("join-token")
    .then((v) => {
      input.value = v.token;
    })
    .catch((e) => {
      section.replaceChildren(h("h2", { id: "join-h" }, "Add a host"), h("p", { class: "muted" }, `The join token is not available to you (${e.message}).`));
    });
  return section;
}

export function mount(main) {
  const table = h("div", { class: "table-wrap" });
  main.append(h("h1", {}, "Hosts"), h("section", { "aria-labelledby": "hosts-h" }, h("h2", { id: "hosts-h", class: "visually-hidden" }, "All hosts"), table));
  if (can("core.host.install_factorio")) main.append(installCard());
  if (can("core.host.generate_token")) main.append(joinTokenSection());
  const perHost = sorted(state.hosts).filter((x) => !x.revoked).map((x) => [x.name, bulkBar(x.name)]).filter(([, b]) => b);
  if (perHost.length) main.append(h("section", { class: "card", "aria-labelledby": "bulk-h" }, h("h2", { id: "bulk-h" }, "Bulk actions per host"), perHost.map(([n, b]) => h("div", { dataset: { bulkHost: n } }, h("h3", {}, n), b))));

  function render() {
    const hosts = sorted(state.hosts);
    if (!hosts.length) {
      replace(table, h("p", { class: "muted" }, "No host has registered yet. Use the join token below to add one."));
      return;
    }
    replace(
      table,
      h(
        "table",
        { id: "hosts-table" },
        h("thead", {}, h("tr", {}, ["Name", "Status", "Version", "Factorio", "Backend", "Address", "Last seen", "Instances", ""].map((c) => h("th", { scope: "col" }, c)))),
        h(
          "tbody",
          {},
          hosts.map((host) => {
            const status = host.revoked ? "revoked" : host.connected ? "connected" : "disconnected";
            const revoke = h("button", { type: "button", class: "danger small", dataset: { key: `revoke-${host.id}` }, "aria-label": `Revoke host ${host.name}` }, "Revoke…");
            revoke.addEventListener("click", () =>
              confirmDialog({
                title: `Revoke host ${host.name}?`,
                body: [h("p", {}, "Its token stops working at once and it is disconnected. Its instances stay assigned to it until you move them.")],
                confirm: "Revoke",
                danger: true,
                onConfirm: async () => {
                  const v = await post(`hosts/${seg(host.id)}/revoke`);
                  state.hosts.set(v.id, { ...host, ...v });
                  render();
                  toast(`Host ${host.name} revoked.`);
                },
              }),
            );
            const mine = can("core.instance.list") ? sorted(state.instances).filter((i) => i.host_id === host.id) : host.instances || [];
            return h(
              "tr",
              { dataset: { host: host.name } },
              h("th", { scope: "row" }, host.name),
              h("td", {}, h("span", { class: ["badge", `st-${status}`] }, status)),
              h("td", {}, host.version || ""),
              h("td", {}, versionList(host)),
              h("td", { class: host.backend?.error ? "err" : null, title: host.backend?.error || null }, host.backend ? (host.backend.error ? `${host.backend.name} (unavailable)` : host.backend.name) : ""),
              h("td", {}, host.address || ""),
              h("td", {}, host.connected ? "now" : timeEl(host.last_seen_at)),
              h(
                "td",
                {},
                mine.length
                  ? h(
                      "ul",
                      { class: "inline" },
                      mine.map((i) => h("li", {}, h("a", { href: `#/instances/${i.id}` }, i.name))),
                    )
                  : h("span", { class: "muted" }, "none"),
              ),
              h("td", {}, !host.revoked && can("core.host.revoke_token") ? revoke : null),
            );
          }),
        ),
      ),
    );
  }
  render();
  return subscribe((kind) => {
    if (kind === "hosts" || kind === "instances") render();
  });
}
