// One instance: live status and lifecycle actions, assignment, config editor, saves, and a
// live log with an RCON console.

import { get, post, patch, del, seg } from "../api.js";
import { h, replace, busy, confirmDialog, toast, field, statusBadge, timeEl, checkbox, messageSummary, messageBlock } from "../dom.js";
import { state, subscribe, can, instanceByRef } from "../store.js";
import { hostOptions } from "./instances.js";
import { loadSchema, settingsForm, diffPatch } from "../settings.js";
import { savesTab } from "./saves.js";
import { joinAddress } from "./players.js";

const TABS = [
  ["overview", "Overview"],
  ["config", "Config"],
  ["saves", "Saves"],
  ["console", "Log and console"],
];

const LOG_DOM_KEEP = 1000;

/** Statuses in which each action makes sense. */
const ACTIONS = [
  ["start", "Start", "primary", ["stopped", "crashed"], "core.instance.start"],
  ["stop", "Stop", "secondary", ["running", "starting"], "core.instance.stop"],
  ["restart", "Restart", "secondary", ["running"], "core.instance.restart"],
  ["kill", "Kill", "danger", ["starting", "running", "stopping", "creating_save"], "core.instance.kill"],
];

// ---------------------------------------------------------------------------------------------

function header(inst, container) {
  const status = h("p", { class: "inst-status", id: "instance-status", "aria-live": "polite" });
  const buttons = h("div", { class: "actions" });
  container.append(h("h1", {}, inst.name), status, buttons);

  function render(i) {
    replace(
      status,
      "Status: ",
      statusBadge(i.status),
      i.host ? h("span", { class: "muted" }, ` on host ${i.host}`) : h("span", { class: "muted" }, " (not assigned to a host)"),
      i.message ? h("span", { class: "inst-message" }, ` — ${messageSummary(i.message)}`) : null,
    );
    const list = ACTIONS.filter((a) => can(a[4])).map(([verb, label, cls, when]) => {
      const b = h("button", { type: "button", class: cls, id: `action-${verb}`, dataset: { key: `action-${verb}` }, disabled: !when.includes(i.status) }, label);
      b.addEventListener("click", () => {
        const run = () => busy(b, () => post(`instances/${seg(i.id)}/${verb}`), `${i.name}: ${verb} done.`);
        if (verb === "kill") {
          confirmDialog({
            title: `Kill ${i.name}?`,
            body: [h("p", {}, "The server process is killed at once, without saving. Progress since the last save is lost.")],
            confirm: "Kill",
            danger: true,
          }).then((ok) => ok && run());
        } else run();
      });
      return b;
    });
    if (can("core.instance.delete")) {
      const d = h("button", { type: "button", class: "danger", id: "action-delete", dataset: { key: "action-delete" }, disabled: ["running", "starting", "stopping"].includes(i.status) }, "Delete…");
      d.addEventListener("click", () =>
        confirmDialog({
          title: `Delete instance ${i.name}?`,
          body: [h("p", {}, "Its configuration is removed from the cluster and its host deletes its directory, saves included. This cannot be undone.")],
          confirm: "Delete",
          danger: true,
          onConfirm: async () => {
            await del(`instances/${seg(i.id)}`);
            state.instances.delete(i.id);
            toast(`Instance ${i.name} deleted.`);
            location.hash = "#/instances";
          },
        }),
      );
      list.push(d);
    }
    replace(buttons, list);
  }
  render(inst);
  return render;
}

function overviewTab(inst, box) {
  const details = h("dl", { class: "details" });
  const players = h("section", { "aria-labelledby": "pl-h" });
  box.append(h("section", { "aria-labelledby": "det-h" }, h("h2", { id: "det-h" }, "Details"), details), players);

  let assign = null;
  if (can("core.instance.assign")) {
    const select = h("select", { id: "assign-host" });
    const btn = h("button", { type: "submit", class: "primary", id: "assign-button" }, "Assign");
    assign = { select };
    const form = h(
      "form",
      { class: "card inline-form", "aria-labelledby": "as-h" },
      h("h2", { id: "as-h" }, "Assign to a host"),
      field("Host", select, "Only a stopped instance can move; its saves stay on the old host."),
      h("div", { class: "actions" }, btn),
    );
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      const i = instanceByRef(String(inst.id)) || inst;
      const body = select.value === "*" ? {} : { host: select.value };
      busy(btn, async () => {
        const v = await post(`instances/${seg(i.id)}/assign`, body);
        state.instances.set(v.id, v);
      }, `Assigned ${i.name}.`);
    });
    assign.fill = (i) => {
      const keep = select.value || i.host || "*";
      replace(select, h("option", { value: "*" }, "Automatic (least loaded host)"), hostOptions(keep));
      select.value = [...select.options].some((o) => o.value === keep) ? keep : "*";
    };
    box.append(form);
  }

  function render(i) {
    const row = (k, v) => [h("dt", {}, k), h("dd", {}, v)];
    replace(
      details,
      row("Status", statusBadge(i.status)),
      row("Host", i.host ? h("a", { href: "#/hosts" }, i.host) : "not assigned"),
      row("Game port", i.game_port ? String(i.game_port) : "chosen at start"),
      row("Join address", joinAddress(i)),
      i.container ? row("Container", `${i.container.name} (${i.container.id.slice(0, 12)}), memory ${i.container.memory_limit_mb ? `${i.container.memory_limit_mb} MB` : "unlimited"}, CPU ${i.container.cpu_limit ?? "unlimited"}`) : null,
      row("Created", timeEl(i.created_at)),
      row("Updated", timeEl(i.updated_at)),
      i.message ? row("Last message", messageBlock(i.message)) : null,
    );
    const online = i.players_online || [];
    replace(
      players,
      h("h2", { id: "pl-h" }, `Players online (${online.length})`),
      online.length ? h("ul", { class: "players", id: "players-online" }, online.map((p) => h("li", {}, h("a", { href: `#/players/${seg(p)}` }, p)))) : h("p", { class: "muted" }, "Nobody is playing."),
    );
    if (assign) assign.fill(i);
  }
  render(inst);
  return { update: render, hosts: () => assign && assign.fill(instanceByRef(String(inst.id)) || inst) };
}

/** The Config tab: a form generated from the schema, and the raw JSON behind "Advanced". */
function configTab(inst, box) {
  const canWrite = can("core.instance.update_config");
  const holder = h("div", { class: "card", "aria-labelledby": "cfg-h" }, h("h2", { id: "cfg-h" }, "Config"), h("p", { class: "muted", role: "status" }, "Loading the settings…"));
  box.append(holder);
  let form = null;
  let raw = null;
  const save = async (body) => {
    const i = instanceByRef(String(inst.id)) || inst;
    const v = await patch(`instances/${seg(i.id)}`, { config: body });
    state.instances.set(v.id, v);
    if (raw) raw.update(v);
    return v;
  };
  loadSchema()
    .then((schema) => {
      const i = instanceByRef(String(inst.id)) || inst;
      form = settingsForm({ fields: schema.instance, prefix: "cfg", canWrite, save });
      raw = rawEditor(i, canWrite, async (body) => {
        const v = await save(body);
        form.render(v);
        return v;
      });
      replace(
        holder,
        h("h2", { id: "cfg-h" }, "Config"),
        h("p", { class: "muted" }, "Changes marked “restart to apply” take effect at the instance’s next start; the others at once."),
        form.form,
        raw.el,
      );
      form.render(i);
    })
    .catch((e) => replace(holder, h("h2", { id: "cfg-h" }, "Config"), h("p", { class: "error", role: "alert" }, `Cannot load the settings: ${e.message}`)));
  return {
    update(i) {
      if (form) form.render(i);
      if (raw) raw.update(i);
    },
  };
}

/** The stored config as JSON; saving sends the difference as a merge patch. */
function rawEditor(inst, canWrite, save) {
  const text = (c) => JSON.stringify(c || {}, null, 2);
  const area = h("textarea", { id: "config-editor", rows: 14, spellcheck: "false", "aria-describedby": "config-help config-problems" });
  area.value = text(inst.config);
  let base = inst.config || {};
  const problems = h("div", { id: "config-problems", "aria-live": "polite" });
  const button = h("button", { type: "submit", class: "secondary", id: "config-save", disabled: !canWrite }, "Save JSON");
  const stale = h("p", { class: "warn-note", hidden: true }, "The config was changed elsewhere. Reload to see it (your edits are lost), or save to overwrite the keys you changed.");
  const reload = h("button", { type: "button", class: "secondary" }, "Reload");
  const form = h(
    "form",
    {},
    h("p", { id: "config-help", class: "muted" }, "The stored settings (only what differs from the defaults; secrets are not shown). Saving sends what you changed; a removed key goes back to its default."),
    h("label", { for: "config-editor" }, "Instance config (JSON)"),
    area,
    problems,
    stale,
    h("div", { class: "actions" }, reload, button),
  );
  const el = h("details", { class: "raw-config", id: "config-advanced" }, h("summary", {}, "Advanced: edit as JSON"), form);
  const say = (message) => replace(problems, message ? h("p", { class: "error", role: "alert" }, message) : null);
  reload.addEventListener("click", () => {
    const i = instanceByRef(String(inst.id)) || inst;
    area.value = text(i.config);
    base = i.config || {};
    stale.hidden = true;
    say(null);
  });
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    let config;
    try {
      config = JSON.parse(area.value);
    } catch (err) {
      say(`Not valid JSON: ${err.message}`);
      area.setAttribute("aria-invalid", "true");
      return;
    }
    if (config === null || typeof config !== "object" || Array.isArray(config)) {
      say("The config must be a JSON object: { … }");
      return;
    }
    area.removeAttribute("aria-invalid");
    say(null);
    button.disabled = true;
    try {
      const v = await save(diffPatch(base, config));
      base = v.config || {};
      area.value = text(base);
      stale.hidden = true;
      toast("Config saved.");
    } catch (err) {
      say(err.message);
    } finally {
      button.disabled = !canWrite;
    }
  });
  return {
    el,
    update(i) {
      const t = text(i.config);
      if (t === text(base)) return;
      if (area.value === text(base)) {
        area.value = t;
        base = i.config || {};
      } else stale.hidden = false;
    },
  };
}

function consoleTab(inst, box) {
  const log = h("div", { class: "log", id: "log-view", role: "log", "aria-live": "off", tabindex: "0", "aria-label": `Server log of ${inst.name}` });
  const chatOnly = checkbox("Only chat", { id: "chat-only" });
  const follow = checkbox("Follow new lines", { id: "follow", checked: true });
  box.append(h("section", { "aria-labelledby": "log-h" }, h("h2", { id: "log-h" }, "Server log"), h("div", { class: "log-tools" }, follow, chatOnly), log));

  const isChat = (line) => /\[(CHAT|JOIN|LEAVE)\]/.test(line);
  const lineEl = (line) => h("div", { class: ["line", isChat(line) && "chat", /error/i.test(line) && "err"] }, line);
  const followBox = follow.querySelector("input");
  const chatBox = chatOnly.querySelector("input");
  function renderAll() {
    const lines = (state.logs.get(inst.id) || []).filter((l) => !chatBox.checked || isChat(l));
    replace(log, lines.slice(-LOG_DOM_KEEP).map(lineEl));
    if (followBox.checked) log.scrollTop = log.scrollHeight;
  }
  chatBox.addEventListener("change", renderAll);

  if (can("core.log.query")) {
    get(`instances/${seg(inst.id)}/logs?lines=300`)
      .then((v) => {
        const live = state.logs.get(inst.id) || [];
        const fetched = (v && v.lines) || [];
        // Lines that arrived live while fetching are usually the fetched tail; keep the others.
        const tail = live.filter((l) => !fetched.includes(l));
        state.logs.set(inst.id, [...fetched, ...tail]);
        renderAll();
      })
      .catch(() => renderAll());
  } else renderAll();

  let consoleOut = null;
  if (can("core.instance.send_rcon")) {
    const input = h("input", { id: "rcon-command", autocomplete: "off", spellcheck: "false", placeholder: "/players online" });
    const btn = h("button", { type: "submit", class: "primary", id: "rcon-send" }, "Send");
    consoleOut = h("div", { class: "log console-out", id: "console-output", role: "log", "aria-live": "polite", "aria-label": "Console output" });
    const history = [];
    let pos = 0;
    input.addEventListener("keydown", (e) => {
      if (e.key === "ArrowUp" && pos > 0) {
        input.value = history[--pos];
        e.preventDefault();
      } else if (e.key === "ArrowDown" && pos < history.length) {
        pos++;
        input.value = history[pos] || "";
        e.preventDefault();
      }
    });
    const form = h(
      "form",
      { class: "card", "aria-labelledby": "con-h" },
      h("h2", { id: "con-h" }, "Console"),
      consoleOut,
      field("RCON command", input, "Commands start with /; text without one is sent as chat. Up and Down recall earlier commands."),
      h("div", { class: "actions" }, btn),
    );
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      const command = input.value.trim();
      if (!command) return;
      history.push(command);
      pos = history.length;
      input.value = "";
      consoleOut.append(h("div", { class: "line cmd" }, `> ${command}`));
      busy(btn, async () => {
        try {
          const r = await post(`instances/${seg(inst.id)}/rcon`, { command });
          const out = r && typeof r.output === "string" ? r.output : "";
          consoleOut.append(h("div", { class: "line out" }, out.trim() ? out : "(no output)"));
        } catch (err) {
          consoleOut.append(h("div", { class: "line err" }, err.message));
        }
        consoleOut.scrollTop = consoleOut.scrollHeight;
        input.focus();
      });
    });
    box.append(form);
  }

  return {
    log(line) {
      if (chatBox.checked && !isChat(line)) return;
      log.append(lineEl(line));
      while (log.childElementCount > LOG_DOM_KEEP) log.firstElementChild.remove();
      if (followBox.checked) log.scrollTop = log.scrollHeight;
    },
  };
}

export function mount(main, { ref, tab }) {
  const inst = instanceByRef(ref);
  if (!inst) {
    main.append(h("h1", {}, "Instance not found"), h("p", {}, `There is no instance "${ref}". `, h("a", { href: "#/instances" }, "All instances")));
    return null;
  }
  const top = h("div", { class: "inst-head" });
  main.append(top);
  const renderHeader = header(inst, top);
  const tabs = h(
    "nav",
    { class: "tabs", "aria-label": "Instance sections" },
    h("ul", {}, TABS.filter(([t]) => t !== "config" || can("core.instance.get_config")).map(([t, label]) => h("li", {}, h("a", { href: `#/instances/${inst.id}/${t}`, "aria-current": t === tab ? "page" : undefined, id: `tab-${t}` }, label)))),
  );
  const box = h("div", { class: "tab-body" });
  main.append(tabs, box);
  const bodies = { overview: overviewTab, config: configTab, saves: savesTab, console: consoleTab };
  if (!can("core.instance.get_config")) delete bodies.config;
  const view = bodies[tab] || overviewTab;
  const part = view(inst, box);

  return subscribe((kind, detail) => {
    if (kind === "instances" && detail && detail.id === inst.id) {
      const now = state.instances.get(inst.id);
      if (!now) {
        toast(`Instance ${inst.name} was deleted.`);
        location.hash = "#/instances";
        return;
      }
      renderHeader(now);
      if (part.update) part.update(now);
    } else if (kind === "instances" && !detail) {
      const now = state.instances.get(inst.id);
      if (now) {
        renderHeader(now);
        if (part.update) part.update(now);
      }
    } else if (kind === "hosts" && part.hosts) part.hosts();
    else if (kind === "log" && detail && detail.id === inst.id && part.log) part.log(detail.line);
  });
}

