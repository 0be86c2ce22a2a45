// The instance page's Saves tab: its saves (load next, rename, copy, delete, send to another
// instance, download), upload, the controller's backups (restore, download, retention), a new
// map (seed, preset, the common map-gen fields, raw JSON), and the restart schedule.

import { get, post, del, seg, upload, download, api } from "../api.js";
import { h, replace, busy, confirmDialog, toast, field, fmtBytes, timeEl, checkbox } from "../dom.js";
import { state, subscribe, can, sorted } from "../store.js";

const SAVE_RE = /^[A-Za-z0-9 ._-]+\.zip$/;
const withZip = (n) => (n.endsWith(".zip") ? n : `${n}.zip`);

/** Resources and features of the map-gen form: [autoplace key, label]. */
const CONTROLS = [
  ["iron-ore", "Iron ore"],
  ["copper-ore", "Copper ore"],
  ["coal", "Coal"],
  ["stone", "Stone"],
  ["uranium-ore", "Uranium ore"],
  ["crude-oil", "Crude oil"],
  ["water", "Water"],
  ["trees", "Trees"],
  ["enemy-base", "Enemy bases"],
];
const PRESETS = ["", "default", "rich-resources", "marathon", "death-world", "death-world-marathon", "rail-world", "ribbon-world", "island"];

function progressRow(label) {
  const bar = h("progress", { max: 1, "aria-label": label });
  const note = h("span", { class: "muted", "aria-live": "polite" });
  return {
    el: h("div", { class: "progress-row", hidden: true }, bar, note),
    set(fraction, text) {
      this.el.hidden = false;
      if (fraction === null) bar.removeAttribute("value");
      else bar.value = fraction;
      note.textContent = text;
    },
    hide() {
      this.el.hidden = true;
    },
  };
}

/** A dialog asking for one save name; `run(name)` does the work (its error stays in the dialog). */
function nameDialog({ title, label, value, confirm, run, extra = [] }) {
  const input = h("input", { id: "dialog-save-name", value, autocomplete: "off", required: true });
  return confirmDialog({
    title,
    body: [field(label, input, "Letters, digits, spaces, dots, dashes and underscores, ending in .zip."), ...extra],
    confirm,
    onConfirm: async () => {
      const name = withZip(input.value.trim());
      if (!SAVE_RE.test(name)) throw new Error(`'${name}' is not a save name.`);
      await run(name);
    },
  });
}

export function savesTab(inst, box) {
  const base = `instances/${seg(inst.id)}`;
  const table = h("div", { class: "table-wrap", id: "saves-list" });
  const transferProg = progressRow("Transfer progress");
  box.append(h("section", { "aria-labelledby": "sv-h" }, h("h2", { id: "sv-h" }, "Saves"), table, transferProg.el));
  const backupsBox = h("div", { class: "table-wrap", id: "backups-list" });
  const retention = h("p", { class: "muted", id: "backup-retention" });
  const restoreProg = progressRow("Restore progress");

  async function refresh() {
    try {
      const [saves, backups] = await Promise.all([get(`${base}/saves`), get(`${base}/backups`)]);
      render(saves || []);
      renderBackups(backups || []);
    } catch (e) {
      replace(table, h("p", { class: "muted" }, `Saves are not available: ${e.message}`));
    }
  }

  function actionButton(label, key, aria, onClick, cls = "secondary small") {
    const b = h("button", { type: "button", class: cls, dataset: { key }, "aria-label": aria }, label);
    b.addEventListener("click", () => onClick(b));
    return b;
  }

  function saveActions(sv) {
    const out = [];
    const where = `${base}/saves/${seg(sv.name)}`;
    if (can("core.instance.save.use") && !sv.load_next && sv.on_host) {
      out.push(actionButton("Load next", `use-${sv.name}`, `Load ${sv.name} at the next start`, (b) => busy(b, async () => { await post(`${where}/use`); await refresh(); }, `The next start of ${inst.name} loads ${sv.name}.`)));
    }
    if (can("core.instance.save.rename") && sv.on_host && !sv.loaded) {
      out.push(actionButton("Rename…", `rename-${sv.name}`, `Rename ${sv.name}`, () =>
        nameDialog({ title: `Rename ${sv.name}`, label: "New name", value: sv.name, confirm: "Rename", run: async (to) => {
          await post(`${where}/rename`, { to });
          toast(`Renamed ${sv.name} to ${to}.`);
          await refresh();
        } })));
    }
    if (can("core.instance.save.copy") && sv.on_host) {
      out.push(actionButton("Copy…", `copy-${sv.name}`, `Copy ${sv.name}`, () =>
        nameDialog({ title: `Copy ${sv.name}`, label: "Name of the copy", value: sv.name.replace(/\.zip$/, "-copy.zip"), confirm: "Copy", run: async (to) => {
          await post(`${where}/copy`, { to });
          toast(`Copied ${sv.name} to ${to}.`);
          await refresh();
        } })));
    }
    if (can("core.instance.save.transfer") && sv.on_host) {
      out.push(actionButton("Send to…", `send-${sv.name}`, `Send ${sv.name} to another instance`, () => {
        const others = sorted(state.instances).filter((i) => i.id !== inst.id);
        const target = h("select", { id: "transfer-target" }, others.map((i) => h("option", { value: String(i.id) }, `${i.name}${i.host ? ` (on ${i.host})` : ""}`)));
        const keep = checkbox("Keep it here too (copy)", { id: "transfer-copy", checked: true });
        confirmDialog({
          title: `Send ${sv.name} to another instance`,
          body: [field("Instance", target, "On any host; a name it already has gets a suffix."), keep],
          confirm: "Send",
          onConfirm: async () => {
            const copy = keep.querySelector("input").checked;
            transferProg.set(0, "from the host…");
            try {
              const r = await post(`${where}/transfer`, { to_instance: Number(target.value), copy });
              transferProg.set(1, `done: ${r.as} on ${r.to_instance}`);
              toast(`${copy ? "Copied" : "Moved"} ${sv.name} to ${r.to_instance} as ${r.as}.`);
            } catch (e) {
              transferProg.hide();
              throw e;
            }
            await refresh();
          },
        });
      }));
    }
    if (can("core.instance.save.delete") && sv.on_host && !sv.loaded) {
      out.push(actionButton("Delete…", `delete-${sv.name}`, `Delete ${sv.name}`, () =>
        confirmDialog({
          title: `Delete ${sv.name}?`,
          body: [h("p", {}, `The save is deleted from ${inst.name}'s host. Copies the controller keeps as backups stay.`)],
          confirm: "Delete",
          danger: true,
          onConfirm: async () => {
            await del(where);
            toast(`Deleted ${sv.name}.`);
            await refresh();
          },
        }), "danger small"));
    }
    if (can("core.instance.save.download")) {
      const prog = progressRow(`Downloading ${sv.name}`);
      out.push(actionButton("Download", `dl-${sv.name}`, `Download ${sv.name}`, (b) =>
        busy(b, async () => {
          prog.set(0, "starting…");
          try {
            await download(where, sv.name, (f) => prog.set(f, f === null ? "downloading…" : `${Math.round(f * 100)} %`));
            prog.set(1, "done");
          } finally {
            setTimeout(() => prog.hide(), 3000);
          }
        })), prog.el);
    }
    return out;
  }

  function render(saves) {
    if (!saves.length) {
      replace(table, h("p", { class: "muted" }, "No saves yet. Upload one, or create a new map below."));
      return;
    }
    replace(
      table,
      h(
        "table",
        { id: "saves-table" },
        h("thead", {}, h("tr", {}, ["Name", "Size", "Modified", "Where", "Backups", "State", ""].map((c) => h("th", { scope: "col" }, c)))),
        h(
          "tbody",
          {},
          saves.map((sv) =>
            h(
              "tr",
              { dataset: { save: sv.name } },
              h("th", { scope: "row" }, sv.name),
              h("td", {}, fmtBytes(sv.size)),
              h("td", {}, timeEl(sv.modified_ms)),
              h("td", {}, sv.on_host ? "on the host" : "on the controller"),
              h("td", {}, String(sv.backups ?? 0)),
              h("td", { class: "save-state" }, [sv.loaded ? "running" : null, sv.load_next ? "loads next" : null].filter(Boolean).join(", ")),
              h("td", { class: "actions" }, saveActions(sv)),
            ),
          ),
        ),
      ),
    );
  }

  function renderBackups(backups) {
    const keep = inst.config && inst.config.backup_retention;
    retention.textContent = `The controller keeps the newest ${keep ?? "(default)"} backups of this instance (setting backup_retention); older ones are removed as new ones arrive.`;
    if (!backups.length) {
      replace(backupsBox, h("p", { class: "muted" }, "No backups yet. They are made when the instance stops, periodically (backup_interval_minutes), or with the button below."));
      return;
    }
    replace(
      backupsBox,
      h(
        "table",
        { id: "backups-table" },
        h("thead", {}, h("tr", {}, ["Backup of", "Taken", "Size", ""].map((c) => h("th", { scope: "col" }, c)))),
        h(
          "tbody",
          {},
          backups.map((b) => {
            const acts = [];
            if (can("core.instance.backup.restore")) {
              acts.push(actionButton("Restore…", `restore-${b.file}`, `Restore the backup ${b.file}`, () =>
                confirmDialog({
                  title: `Restore ${b.save} from ${new Date(b.modified_ms).toLocaleString()}?`,
                  body: [h("p", {}, `${inst.name} is stopped first if it runs (its current save is kept as a backup), then ${b.save} is put back and the instance started again.`)],
                  confirm: "Restore",
                  danger: true,
                  onConfirm: async () => {
                    restoreProg.set(null, "restoring…");
                    try {
                      const r = await post(`${base}/backups/${seg(b.file)}/restore`);
                      restoreProg.set(1, r.restarted ? "restored; running again" : "restored; the next start loads it");
                      toast(`Restored ${r.save}.`);
                    } catch (e) {
                      restoreProg.hide();
                      throw e;
                    }
                    await refresh();
                  },
                }), "danger small"));
            }
            if (can("core.instance.save.download")) {
              acts.push(actionButton("Download", `dlb-${b.file}`, `Download the backup ${b.file}`, (btn) => busy(btn, () => download(`${base}/backups/${seg(b.file)}`, b.file, () => {}))));
            }
            return h("tr", { dataset: { backup: b.file } }, h("th", { scope: "row" }, b.save), h("td", {}, timeEl(b.modified_ms)), h("td", {}, fmtBytes(b.size)), h("td", { class: "actions" }, acts));
          }),
        ),
      ),
    );
  }

  // Upload.
  if (can("core.instance.save.upload")) {
    const file = h("input", { type: "file", id: "save-file", accept: ".zip,application/zip" });
    const btn = h("button", { type: "submit", class: "primary", id: "save-upload" }, "Upload");
    const prog = progressRow("Upload progress");
    const error = h("p", { class: "error", role: "alert" });
    const form = h(
      "form",
      { class: "card inline-form", "aria-labelledby": "up-h" },
      h("h2", { id: "up-h" }, "Upload a save"),
      field("Save file (.zip)", file, "A Factorio save zip. It never replaces a save (a taken name gets a suffix) and the next start loads it."),
      h("div", { class: "actions" }, btn),
      prog.el,
      error,
    );
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      error.textContent = "";
      const f = file.files && file.files[0];
      if (!f) {
        error.textContent = "Choose a save file first.";
        file.focus();
        return;
      }
      if (!SAVE_RE.test(f.name)) {
        error.textContent = "Save names are letters, digits, spaces, dots, dashes and underscores, ending in .zip.";
        return;
      }
      busy(btn, async () => {
        prog.set(0, `0 % of ${fmtBytes(f.size)}`);
        try {
          const r = await upload(`${base}/saves/${seg(f.name)}`, f, (fr) => prog.set(fr, `${Math.round(fr * 100)} % of ${fmtBytes(f.size)}`));
          prog.set(1, "uploaded");
          file.value = "";
          await refresh();
          toast(r && r.name && r.name !== f.name ? `Uploaded ${f.name}; kept as ${r.name}.` : `Uploaded ${f.name}.`);
        } catch (err) {
          prog.hide();
          error.textContent = err.message;
        }
      });
    });
    box.append(form);
  }

  // Create a save, and back up to the controller.
  if (can("core.instance.save.create")) {
    const name = h("input", { id: "new-save-name", autocomplete: "off", placeholder: "optional" });
    const btn = h("button", { type: "submit", class: "secondary", id: "save-create" }, "Create save");
    const backup = h("button", { type: "button", class: "secondary", id: "backup-button" }, "Back up to the controller");
    const prog = progressRow("Backup progress");
    const result = h("p", { class: "muted", id: "saves-result", "aria-live": "polite" });
    const form = h(
      "form",
      { class: "card inline-form", "aria-labelledby": "cs-h" },
      h("h2", { id: "cs-h" }, "Create or back up"),
      field("New save name", name, "Running: saves the game now. Stopped: generates a new map with default settings."),
      h("div", { class: "actions" }, btn, backup),
      prog.el,
      result,
    );
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      const n = name.value.trim();
      const body = n ? { name: withZip(n) } : {};
      busy(btn, async () => {
        const sv = await post(`${base}/saves`, body);
        name.value = "";
        await refresh();
        result.textContent = `Created ${sv && sv.name ? sv.name : "a save"}.`;
      });
    });
    backup.addEventListener("click", () =>
      busy(backup, async () => {
        prog.set(null, "copying the save to the controller…");
        try {
          const b = await post(`${base}/backup`);
          prog.set(1, "done");
          result.textContent = `Backed up ${b.name} (${fmtBytes(b.size)}, sha256 ${String(b.sha256).slice(0, 12)}…).`;
          await refresh();
        } finally {
          setTimeout(() => prog.hide(), 3000);
        }
      }),
    );
    box.append(form, newMapForm(inst, base, refresh));
  }

  box.append(h("section", { "aria-labelledby": "bk-h", class: "card" }, h("h2", { id: "bk-h" }, "Backups on the controller"), retention, backupsBox, restoreProg.el));
  if (can("core.instance.schedule.get")) box.append(scheduleCard(inst, base));

  const off = subscribe((kind, data) => {
    if (!box.isConnected) return off();
    if (kind === "save_progress" && data && data.instance === inst.name) {
      const bar = data.action === "restore" ? restoreProg : transferProg;
      bar.set(data.percent / 100, `${data.stage.replace("_", " ")}…`);
    }
  });
  refresh();
  return {};
}

/** The new-map form: seed, preset, the common map-gen fields, and raw JSON behind them. */
function newMapForm(inst, base, refresh) {
  const num = (id, value, attrs = {}) => h("input", { id, type: "number", min: 0, step: "any", value, ...attrs });
  const name = h("input", { id: "map-name", autocomplete: "off", value: "new-map.zip", required: true });
  const seed = h("input", { id: "map-seed", type: "number", min: 0, max: 4294967295, step: 1, placeholder: "random" });
  const preset = h("select", { id: "map-preset" }, PRESETS.map((p) => h("option", { value: p }, p || "(none)")));
  const peaceful = checkbox("Peaceful mode", { id: "map-peaceful" });
  const start = num("map-starting-area", 1);
  const cliffs = num("map-cliffs", 1);
  const rows = CONTROLS.map(([key, label]) => {
    const inputs = ["frequency", "size", "richness"].map((k) => num(`map-${key}-${k}`, 1, { "aria-label": `${label} ${k}` }));
    return { key, inputs, el: h("tr", {}, h("th", { scope: "row" }, label), inputs.map((i) => h("td", {}, i))) };
  });
  const rawGen = h("textarea", { id: "map-gen-json", rows: 6, spellcheck: "false", placeholder: "{ } — merged over the fields above" });
  const rawSettings = h("textarea", { id: "map-settings-json", rows: 6, spellcheck: "false", placeholder: '{"pollution": {"enabled": false}}' });
  const exchange = h("textarea", { id: "map-exchange-string", rows: 3, spellcheck: "false", placeholder: ">>>eNp…<<< (Factorio's map generator: Export)" });
  const scenario = h("select", { id: "map-scenario" }, h("option", { value: "" }, "(none: a normal map)"));
  const loadScenarios = (selected) =>
    get(`${base}/scenarios`)
      .then((list) => {
        scenario.replaceChildren(h("option", { value: "" }, "(none: a normal map)"));
        for (const sc of list || []) scenario.append(h("option", { value: sc.name }, `${sc.name} (${sc.source})`));
        if (selected) scenario.value = selected;
      })
      .catch(() => {});
  loadScenarios();
  // A scenario zip uploaded into the instance's scenarios/ (then chosen above).
  let scenarioUpload = null;
  if (can("core.instance.scenario.upload")) {
    const file = h("input", { type: "file", id: "scenario-file", accept: ".zip,application/zip" });
    const up = h("button", { type: "button", class: "secondary", id: "scenario-upload" }, "Upload scenario");
    const prog = progressRow("Scenario upload progress");
    const upError = h("p", { class: "error", role: "alert", id: "scenario-error" });
    up.addEventListener("click", () => {
      upError.textContent = "";
      const f = file.files && file.files[0];
      if (!f) {
        upError.textContent = "Choose a scenario zip first.";
        file.focus();
        return;
      }
      const scName = f.name.replace(/\.zip$/i, "");
      busy(up, async () => {
        prog.set(0, `0 % of ${fmtBytes(f.size)}`);
        try {
          const r = await upload(`${base}/scenarios/${seg(scName)}`, f, (fr) => prog.set(fr, `${Math.round(fr * 100)} % of ${fmtBytes(f.size)}`));
          prog.set(1, "uploaded");
          file.value = "";
          await loadScenarios(r && r.name);
          toast(`Uploaded scenario ${r && r.name}.`);
        } catch (err) {
          prog.hide();
          upError.textContent = err.message;
        }
      });
    });
    scenarioUpload = h(
      "div",
      {},
      field("Upload a scenario (.zip)", file, "A zip with control.lua at its root or in one folder; it lands in the instance's scenarios/ under the file's name (replacing one of that name) and can then be chosen above."),
      h("div", { class: "actions" }, up),
      prog.el,
      upError,
    );
  }
  const error = h("p", { class: "error", role: "alert", id: "map-error" });
  const result = h("p", { class: "muted", id: "map-result", "aria-live": "polite" });
  const btn = h("button", { type: "submit", class: "primary", id: "map-create" }, "Create the map");

  function body() {
    const gen = {
      peaceful_mode: peaceful.querySelector("input").checked,
      starting_area: Number(start.value),
      cliff_settings: { name: "cliff", richness: Number(cliffs.value) },
      autoplace_controls: Object.fromEntries(rows.map((r) => [r.key, { frequency: Number(r.inputs[0].value), size: Number(r.inputs[1].value), richness: Number(r.inputs[2].value) }])),
    };
    const parse = (area, what) => {
      const t = area.value.trim();
      if (!t) return null;
      try {
        const v = JSON.parse(t);
        if (!v || typeof v !== "object" || Array.isArray(v)) throw new Error("not an object");
        return v;
      } catch (e) {
        throw new Error(`${what} is not a JSON object: ${e.message}`);
      }
    };
    const extra = parse(rawGen, "Map-gen settings JSON");
    const settings = parse(rawSettings, "Map settings JSON");
    const pasted = exchange.value.trim();
    // A pasted string carries all the map-gen settings: the form's fields do not apply over it.
    const out = pasted ? { name: withZip(name.value.trim()), map_exchange_string: pasted } : { name: withZip(name.value.trim()), map_gen_settings: { ...gen, ...(extra || {}) } };
    if (pasted && extra) out.map_gen_settings = extra;
    if (scenario.value) out.scenario = scenario.value;
    if (settings) out.map_settings = settings;
    if (seed.value !== "") out.seed = Number(seed.value);
    if (preset.value) out.preset = preset.value;
    return out;
  }

  const form = h(
    "form",
    { class: "card", id: "new-map-form", "aria-labelledby": "nm-h" },
    h("h2", { id: "nm-h" }, "New map"),
    h("p", { class: "muted" }, "The host runs Factorio's --create (or, for a scenario, --start-server-load-scenario) with these settings (written as map-gen-settings.json and map-settings.json); the instance must be stopped. The next start loads the new map."),
    field("Save name", name),
    field("Scenario", scenario, "Start the new game from a scenario (the instance's scenarios/ folder, the install's, or a mod's); the settings below apply to it."),
    scenarioUpload,
    field("Map exchange string", exchange, "Pasted from Factorio: its settings replace the form's fields below (raw JSON still applies over it)."),
    field("Seed", seed, "Empty: random (or the exchange string's)."),
    field("Preset", preset, "A Factorio preset; the fields below apply over it."),
    peaceful,
    field("Starting area", start, "Size of the safe area around the spawn (1 = normal)."),
    field("Cliffs", cliffs, "Cliff richness (0 = no cliffs, 1 = normal)."),
    h("div", { class: "table-wrap" }, h("table", { id: "map-controls" }, h("thead", {}, h("tr", {}, ["", "Frequency", "Size", "Richness"].map((c) => h("th", { scope: "col" }, c)))), h("tbody", {}, rows.map((r) => r.el)))),
    h("details", {}, h("summary", {}, "Raw JSON"), field("map-gen-settings.json (merged over the form)", rawGen), field("map-settings.json", rawSettings)),
    h("div", { class: "actions" }, btn),
    error,
    result,
  );
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    error.textContent = "";
    let b;
    try {
      b = body();
      if (!SAVE_RE.test(b.name)) throw new Error(`'${b.name}' is not a save name.`);
    } catch (err) {
      error.textContent = err.message;
      return;
    }
    btn.disabled = true;
    post(`${base}/saves`, b)
      .then(async (sv) => {
        result.textContent = `Created ${sv.name}; the next start loads it.`;
        await refresh();
      })
      .catch((err) => {
        error.textContent = err.message;
      })
      .finally(() => {
        btn.disabled = false;
      });
  });
  return form;
}

/** The restart schedule: daily at a time or every N hours, a warning ahead, skip with players. */
function scheduleCard(inst, base) {
  const info = h("p", { id: "schedule-info", "aria-live": "polite" }, "…");
  const card = h("section", { class: "card", "aria-labelledby": "sch-h" }, h("h2", { id: "sch-h" }, "Restart schedule"), info);
  const show = (s) => {
    if (!s) return (info.textContent = "No scheduled restarts.");
    const when = s.daily_at ? `daily at ${s.daily_at} UTC` : `every ${s.every_hours} hours`;
    info.textContent = `Restarts ${when}, warned ${s.warn_minutes} minutes ahead${s.skip_if_players ? ", skipped while players are online" : ""}. Next: ${new Date(s.next_run_ms).toLocaleString()}. Last: ${s.last_result || "never run"}.`;
  };
  get(`${base}/schedule`).then((v) => show(v && v.schedule)).catch((e) => (info.textContent = e.message));
  if (!can("core.instance.schedule.update")) return card;
  const kind = h("select", { id: "schedule-kind" }, h("option", { value: "daily" }, "Daily at (UTC)"), h("option", { value: "every" }, "Every N hours"));
  const at = h("input", { id: "schedule-at", type: "time", value: "04:00" });
  const hours = h("input", { id: "schedule-hours", type: "number", min: 0.1, step: "any", value: 6 });
  const warn = h("input", { id: "schedule-warn", type: "number", min: 0, step: "any", value: 5 });
  const skip = checkbox("Skip while players are online", { id: "schedule-skip" });
  const save = h("button", { type: "submit", class: "primary", id: "schedule-save" }, "Save schedule");
  const clear = h("button", { type: "button", class: "secondary", id: "schedule-clear" }, "Remove");
  const form = h("form", { class: "inline-form" }, field("Kind", kind), field("Time", at), field("Hours", hours), field("Warn minutes ahead", warn, "Players see a chat line this long before."), skip, h("div", { class: "actions" }, save, clear));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const body = { warn_minutes: Number(warn.value), skip_if_players: skip.querySelector("input").checked };
    if (kind.value === "daily") body.daily_at = at.value;
    else body.every_hours = Number(hours.value);
    busy(save, async () => show((await api("PUT", `${base}/schedule`, body)).schedule), "Schedule saved.");
  });
  clear.addEventListener("click", () => busy(clear, async () => { await del(`${base}/schedule`); show(null); }, "Schedule removed."));
  card.append(form);
  return card;
}
