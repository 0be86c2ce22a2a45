// Mods: the controller's mod store (hosts fetch what an instance's config lists before start),
// and the Factorio mod portal: search, install with dependencies (live progress), updates.

import { get, post, del, seg, upload, download } from "../api.js";
import { h, replace, busy, confirmDialog, toast, field, fmtBytes, timeEl } from "../dom.js";
import { can, subscribe } from "../store.js";

const MOD_RE = /^[^/\\]+\.zip$/;

export function mount(main) {
  const table = h("div", { class: "table-wrap", id: "mods-list" });
  main.append(h("h1", {}, "Mods"), h("section", { "aria-label": "Uploaded mods" }, table));

  async function refresh() {
    try {
      render((await get("mods")) || []);
    } catch (e) {
      replace(table, h("p", { class: "muted" }, `Mods are not available: ${e.message}`));
    }
  }

  function render(mods) {
    if (!mods.length) {
      replace(table, h("p", { class: "muted" }, "No mods uploaded. Instances list the mods they need in their config (", h("code", {}, "mods"), ")."));
      return;
    }
    replace(
      table,
      h(
        "table",
        { id: "mods-table" },
        h("thead", {}, h("tr", {}, ["File", "Size", "SHA-256", "Uploaded", ""].map((c) => h("th", { scope: "col" }, c)))),
        h(
          "tbody",
          {},
          mods.map((m) => {
            const dl = h("button", { type: "button", class: "secondary small", "aria-label": `Download ${m.name}`, dataset: { key: `dl-${m.name}` } }, "Download");
            dl.addEventListener("click", () => busy(dl, () => download(`mods/${seg(m.name)}`, m.name, () => {})));
            const rm = h("button", { type: "button", class: "danger small", "aria-label": `Delete ${m.name}`, dataset: { key: `rm-${m.name}` } }, "Delete…");
            rm.addEventListener("click", () =>
              confirmDialog({
                title: `Delete ${m.name}?`,
                body: [h("p", {}, "Instances that list it will fail to start until it is uploaded again.")],
                confirm: "Delete",
                danger: true,
                onConfirm: async () => {
                  await del(`mods/${seg(m.name)}`);
                  toast(`Deleted ${m.name}.`);
                  await refresh();
                },
              }),
            );
            return h(
              "tr",
              { dataset: { mod: m.name } },
              h("th", { scope: "row" }, m.name),
              h("td", {}, fmtBytes(m.size)),
              h("td", {}, h("code", { title: m.sha256 }, String(m.sha256 || "").slice(0, 16))),
              h("td", {}, timeEl(m.uploaded_at)),
              h("td", { class: "actions-cell" }, can("core.mod.download") ? dl : null, can("core.mod.delete") ? rm : null),
            );
          }),
        ),
      ),
    );
  }

  if (can("core.mod.upload")) {
    const file = h("input", { type: "file", id: "mod-file", accept: ".zip,application/zip" });
    const btn = h("button", { type: "submit", class: "primary", id: "mod-upload" }, "Upload");
    const bar = h("progress", { max: 1, value: 0, "aria-label": "Upload progress" });
    const note = h("span", { class: "muted", "aria-live": "polite" });
    const row = h("div", { class: "progress-row", hidden: true }, bar, note);
    const error = h("p", { class: "error", role: "alert" });
    const form = h(
      "form",
      { class: "card inline-form", "aria-labelledby": "mu-h" },
      h("h2", { id: "mu-h" }, "Upload a mod"),
      field("Mod file", file, "A mod zip as the mod portal names it: Name_1.2.3.zip"),
      h("div", { class: "actions" }, btn),
      row,
      error,
    );
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      error.textContent = "";
      const f = file.files && file.files[0];
      if (!f) {
        error.textContent = "Choose a mod zip first.";
        file.focus();
        return;
      }
      if (!MOD_RE.test(f.name)) {
        error.textContent = `"${f.name}" is not a .zip file.`;
        return;
      }
      busy(btn, async () => {
        row.hidden = false;
        try {
          await upload(`mods/${seg(f.name)}`, f, (fr) => {
            bar.value = fr;
            note.textContent = `${Math.round(fr * 100)} % of ${fmtBytes(f.size)}`;
          });
          note.textContent = "uploaded";
          file.value = "";
          toast(`Uploaded ${f.name}.`);
          await refresh();
        } catch (err) {
          error.textContent = err.message;
          row.hidden = true;
        }
      });
    });
    main.append(form);
  }
  if (can("core.mod.search_portal")) main.append(portalCard(refresh));
  if (can("core.mod_pack.list")) main.append(packsCard());
  refresh();
  return null;
}

/** "flib 0.15.0", "flib", "helper-lib off" → {name, version?, enabled}. */
function parsePackLine(line) {
  const words = line.trim().split(/\s+/);
  const enabled = words[words.length - 1] !== "off";
  if (!enabled) words.pop();
  const last = words[words.length - 1];
  const version = words.length > 1 && /^\d+\.\d+(\.\d+)?$/.test(last) ? words.pop() : undefined;
  const m = { name: words.join(" "), enabled };
  if (version) m.version = version;
  return m;
}

function fileBase64(file) {
  return new Promise((resolve, reject) => {
    const r = new FileReader();
    r.onload = () => resolve(String(r.result).split(",")[1] || "");
    r.onerror = () => reject(new Error(`reading ${file.name} failed`));
    r.readAsDataURL(file);
  });
}

/** Mod packs: the list, and a form to create one (mods one per line, mod-settings.dat). */
function packsCard() {
  const box = h("div", { class: "table-wrap", id: "packs-list" });
  const card = h("section", { class: "card", "aria-labelledby": "pk-h", id: "packs-card" }, h("h2", { id: "pk-h" }, "Mod packs"), box);

  async function refresh() {
    try {
      render((await get("mod_packs")) || []);
    } catch (e) {
      replace(box, h("p", { class: "muted" }, `Mod packs are not available: ${e.message}`));
    }
  }

  function render(packs) {
    if (!packs.length) {
      replace(box, h("p", { class: "muted" }, "No mod packs. An instance uses one through its ", h("code", {}, "mod_pack"), " setting."));
      return;
    }
    replace(
      box,
      h(
        "table",
        { id: "packs-table" },
        h("thead", {}, h("tr", {}, ["Pack", "Factorio", "Mods", "Settings", ""].map((c) => h("th", { scope: "col" }, c)))),
        h(
          "tbody",
          {},
          packs.map((p) => {
            const rm = h("button", { type: "button", class: "danger small", "aria-label": `Delete ${p.name}`, dataset: { key: `rm-pack-${p.name}` } }, "Delete…");
            rm.addEventListener("click", () =>
              confirmDialog({
                title: `Delete mod pack ${p.name}?`,
                body: [h("p", {}, "Instances that use it will fail to start until their mod_pack setting changes.")],
                confirm: "Delete",
                danger: true,
                onConfirm: async () => {
                  await del(`mod_packs/${seg(p.name)}`);
                  toast(`Deleted ${p.name}.`);
                  await refresh();
                },
              }),
            );
            const mods = (p.mods || []).map((m) => `${m.name}${m.version ? ` ${m.version}` : ""}${m.enabled ? "" : " (off)"}`).join(", ");
            return h(
              "tr",
              { dataset: { pack: p.name } },
              h("th", { scope: "row" }, p.name),
              h("td", {}, p.factorio_version),
              h("td", {}, mods || "–"),
              h("td", {}, p.settings_size ? fmtBytes(p.settings_size) : "none"),
              h("td", { class: "actions-cell" }, can("core.mod_pack.delete") ? rm : null),
            );
          }),
        ),
      ),
    );
  }

  if (can("core.mod_pack.create")) {
    const name = h("input", { id: "pack-name", autocomplete: "off", required: true });
    const mods = h("textarea", { id: "pack-mods", rows: 4, placeholder: "flib 0.15.0\nhelper-lib off" });
    const settings = h("input", { id: "pack-settings", type: "file", accept: ".dat" });
    const btn = h("button", { type: "submit", class: "primary", id: "pack-create" }, "Create pack");
    const error = h("p", { class: "error", role: "alert", id: "pack-error" });
    const form = h(
      "form",
      { class: "inline-form", "aria-label": "New mod pack" },
      field("Name", name),
      field("Mods", mods, "One per line: name, optional version, \"off\" to list it disabled"),
      field("mod-settings.dat", settings, "Optional"),
      h("div", { class: "actions" }, btn),
      error,
    );
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      error.textContent = "";
      busy(btn, async () => {
        try {
          const body = { name: name.value.trim(), mods: mods.value.split("\n").filter((l) => l.trim()).map(parsePackLine) };
          const f = settings.files && settings.files[0];
          if (f) body.settings_base64 = await fileBase64(f);
          await post("mod_packs", body);
          toast(`Created mod pack ${body.name}.`);
          name.value = "";
          mods.value = "";
          settings.value = "";
          await refresh();
        } catch (err) {
          error.textContent = err.message;
        }
      });
    });
    card.append(form);
  }
  refresh();
  return card;
}

/** The mod portal: search by name or title for one Factorio version, install with progress. */
function portalCard(refreshStore) {
  const q = h("input", { id: "portal-q", type: "search", autocomplete: "off", placeholder: "name or title" });
  const fv = h("input", { id: "portal-fv", autocomplete: "off", placeholder: "controller default", size: 8 });
  const btn = h("button", { type: "submit", class: "primary", id: "portal-search" }, "Search");
  const results = h("div", { class: "table-wrap", id: "portal-results", "aria-live": "polite" });
  const bar = h("progress", { id: "portal-progress", max: 100, value: 0, "aria-label": "Install progress" });
  const note = h("span", { class: "muted", id: "portal-note", "aria-live": "polite" });
  const row = h("div", { class: "progress-row", hidden: true }, bar, note);
  const log = h("ul", { id: "portal-log", class: "muted" });
  const error = h("p", { class: "error", role: "alert", id: "portal-error" });
  const form = h(
    "form",
    { class: "card", "aria-labelledby": "mp-h", id: "portal-form" },
    h("h2", { id: "mp-h" }, "Mod portal"),
    h("div", { class: "inline-form" }, field("Search", q), field("Factorio version", fv, "e.g. 2.0"), h("div", { class: "actions" }, btn)),
    error,
    results,
    row,
    log,
  );
  let active = null;

  const line = (text) => log.append(h("li", {}, text));

  const off = subscribe((kind, data) => {
    if (!form.isConnected) return off();
    if (kind !== "mod_progress" || !data || data.request !== active) return;
    row.hidden = false;
    bar.value = data.percent || 0;
    if (data.stage === "resolving") {
      note.textContent = "resolving dependencies…";
      line(`Resolving the dependencies of ${data.request}`);
    } else if (data.stage === "downloading") {
      const of = data.count ? ` (${data.index + 1} of ${data.count})` : "";
      note.textContent = `downloading ${data.file}${of}: ${data.percent} %`;
      if (!data.percent) line(`Downloading ${data.file}${of}`);
    } else if (data.stage === "done") {
      note.textContent = "installed";
    } else if (data.stage === "failed") {
      note.textContent = "failed";
    }
  });

  async function search() {
    error.textContent = "";
    const params = new URLSearchParams({ q: q.value.trim(), limit: "25" });
    if (fv.value.trim()) params.set("factorio_version", fv.value.trim());
    const r = await get(`mod_portal/search?${params}`);
    const list = r.results || [];
    if (!list.length) {
      replace(results, h("p", { class: "muted" }, `No mod for Factorio ${r.factorio_version} matches "${q.value.trim()}".`));
      return;
    }
    replace(
      results,
      h(
        "table",
        { id: "portal-table" },
        h("thead", {}, h("tr", {}, ["Mod", "Title", "Latest", "Factorio", "Downloads", ""].map((c) => h("th", { scope: "col" }, c)))),
        h(
          "tbody",
          {},
          list.map((m) => {
            const install = h("button", { type: "button", class: "secondary small", "aria-label": `Install ${m.name}`, dataset: { key: `install-${m.name}` } }, "Install");
            install.addEventListener("click", () =>
              busy(install, async () => {
                error.textContent = "";
                replace(log);
                active = m.name;
                row.hidden = false;
                bar.value = 0;
                note.textContent = "starting…";
                try {
                  const body = { name: m.name };
                  if (fv.value.trim()) body.factorio_version = fv.value.trim();
                  const res = await post("mod_portal/install", body);
                  for (const i of res.installed || []) line(`Installed ${i.file}${i.needed_by ? ` (needed by ${i.needed_by})` : ""}`);
                  for (const i of res.already_stored || []) line(`Already in the store: ${i.file}`);
                  bar.value = 100;
                  note.textContent = "installed";
                  toast(`Installed ${m.name} from the mod portal.`);
                  await refreshStore();
                } catch (err) {
                  error.textContent = err.message;
                  note.textContent = "failed";
                }
              }),
            );
            return h(
              "tr",
              { dataset: { portalMod: m.name } },
              h("th", { scope: "row" }, m.name),
              h("td", {}, m.title || ""),
              h("td", {}, m.latest_version || "–"),
              h("td", {}, m.factorio_version || "–"),
              h("td", {}, String(m.downloads_count ?? "")),
              h("td", { class: "actions-cell" }, can("core.mod.download_from_portal") && can("core.mod.upload") ? install : null),
            );
          }),
        ),
      ),
    );
  }

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    busy(btn, () => search().catch((err) => (error.textContent = err.message)));
  });
  return form;
}
