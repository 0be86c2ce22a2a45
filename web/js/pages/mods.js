// Mods: the controller's mod store (hosts fetch what an instance's config lists before start).

import { get, del, seg, upload, download } from "../api.js";
import { h, replace, busy, confirmDialog, toast, field, fmtBytes, timeEl } from "../dom.js";
import { can } from "../store.js";

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
  refresh();
  return null;
}
