// Settings forms generated from the controller's schema (GET /api/v1/config/schema): one
// section per field section, the right input per type, the field's description, a "restart to
// apply" mark, and the server's validation message beside the field it names. The server
// checks every value; the form only turns inputs into a JSON merge patch.

import { get } from "./api.js";
import { h, replace } from "./dom.js";

export const SECTIONS = ["Server", "Game", "Backups", "Advanced"];

/**
 * The schema, fetched each time a form is built: an external plugin that connects adds (or
 * removes) its fields while the controller runs, and the next form shows them.
 */
export function loadSchema() {
  return get("config/schema");
}

/** The value at a dotted path. */
export function getPath(obj, name) {
  return name.split(".").reduce((o, k) => (o && typeof o === "object" ? o[k] : undefined), obj);
}

/** Sets a dotted path, creating objects on the way. */
export function setPath(obj, name, value) {
  const parts = name.split(".");
  let node = obj;
  for (const p of parts.slice(0, -1)) {
    if (!node[p] || typeof node[p] !== "object") node[p] = {};
    node = node[p];
  }
  node[parts[parts.length - 1]] = value;
}

/** A merge patch turning `before` into `after` (removed keys become null). */
export function diffPatch(before, after) {
  const patch = {};
  for (const k of Object.keys(before || {})) if (!(k in after)) patch[k] = null;
  for (const [k, v] of Object.entries(after)) {
    const old = (before || {})[k];
    if (v && typeof v === "object" && !Array.isArray(v) && old && typeof old === "object" && !Array.isArray(old)) {
      const inner = diffPatch(old, v);
      if (Object.keys(inner).length) patch[k] = inner;
    } else if (JSON.stringify(old) !== JSON.stringify(v)) patch[k] = v;
  }
  return patch;
}

const idOf = (prefix, name) => `${prefix}-${name.replace(/[^A-Za-z0-9_-]/g, "-")}`;

function inputFor(f, id) {
  const common = { id, dataset: { field: f.name, key: id } };
  switch (f.type) {
    case "bool":
      return h("input", { ...common, type: "checkbox" });
    case "integer":
    case "port":
    case "number":
      return h("input", { ...common, type: "number", min: f.min, max: f.max, step: f.type === "number" ? "any" : "1", inputmode: "numeric" });
    case "enum":
      return h("select", common, (f.options || []).map((o) => h("option", { value: o }, o)));
    case "list":
      return h("input", { ...common, type: "text", spellcheck: "false", placeholder: "a, b, c" });
    default:
      return f.secret
        ? h("input", { ...common, type: "password", autocomplete: "new-password", maxlength: f.max_length })
        : h("input", { ...common, type: "text", maxlength: f.max_length });
  }
}

function show(input, f, value) {
  if (f.type === "bool") input.checked = value === true;
  else if (f.type === "list") input.value = Array.isArray(value) ? value.join(", ") : "";
  else if (f.secret) input.value = "";
  else input.value = value === null || value === undefined ? "" : String(value);
}

/** The input's value as JSON, or undefined for "leave as it is" (an empty secret). */
function read(input, f) {
  const text = input.value;
  switch (f.type) {
    case "bool":
      return input.checked;
    case "integer":
    case "port":
    case "number": {
      // What is not a number goes as text: the server names the rule it breaks.
      if (input.validity.badInput) return "not a number";
      if (text.trim() === "") return null;
      const n = Number(text);
      return Number.isFinite(n) ? n : text;
    }
    case "list":
      return text.split(",").map((s) => s.trim()).filter(Boolean);
    default:
      if (f.secret && text === "") return undefined;
      return text;
  }
}

/**
 * A settings form. `fields`: the schema's fields for this kind; `prefix`: element ids;
 * `locked(name)`: a reason the field cannot be edited here, or null; `save(patch)`: sends the
 * merge patch and resolves to the new view (`{config, secrets, pending_restart}`).
 */
export function settingsForm({ fields, prefix, canWrite, locked = () => null, save }) {
  const inputs = new Map();
  const errors = new Map();
  const notes = new Map();
  let view = { config: {}, secrets: {}, pending_restart: [] };
  const submit = h("button", { type: "submit", class: "primary", id: `${prefix}-save`, disabled: !canWrite }, "Save settings");
  const problem = h("p", { class: "error", role: "alert", id: `${prefix}-problem`, hidden: true });
  const sections = [...SECTIONS, ...new Set(fields.map((f) => f.section).filter((s) => !SECTIONS.includes(s)))];
  const body = sections
    .map((section) => {
      const mine = fields.filter((f) => f.section === section);
      if (!mine.length) return null;
      return h(
        "fieldset",
        { class: "settings-section", id: idOf(prefix, `section-${section}`) },
        h("legend", {}, section),
        mine.map((f) => {
          const id = idOf(prefix, f.name);
          const input = inputFor(f, id);
          const reason = locked(f.name);
          if (!canWrite || reason) input.disabled = true;
          const err = h("span", { class: "field-error error", id: `${id}-error`, "aria-live": "polite" });
          const note = h("span", { class: "field-note", id: `${id}-note` });
          const hint = h("small", { id: `${id}-hint` }, f.description, reason ? ` (${reason})` : "");
          input.setAttribute("aria-describedby", `${id}-hint ${id}-note ${id}-error`);
          inputs.set(f.name, input);
          errors.set(f.name, err);
          notes.set(f.name, note);
          const mark = f.restart_required ? h("span", { class: "restart-mark", title: "A change applies at the next start" }, "restart to apply") : null;
          const label = h("label", { for: id }, f.title || f.name, " ", h("code", { class: "muted" }, f.name), " ", mark);
          return f.type === "bool"
            ? h("div", { class: "field setting", dataset: { setting: f.name } }, h("div", { class: "check-row" }, input, label), hint, note, err)
            : h("div", { class: "field setting", dataset: { setting: f.name } }, label, input, hint, note, err);
        }),
      );
    })
    .filter(Boolean);
  const form = h("form", { class: "settings-form", id: `${prefix}-form`, novalidate: true }, body, problem, h("div", { class: "actions" }, submit));

  function clearErrors() {
    problem.hidden = true;
    for (const [name, el] of errors) {
      el.textContent = "";
      inputs.get(name).removeAttribute("aria-invalid");
    }
  }

  /** Shows the server's refusal beside the field it names (else above the button). */
  function showError(e) {
    const el = e.field && errors.get(e.field);
    if (el) {
      el.textContent = e.message;
      const input = inputs.get(e.field);
      input.setAttribute("aria-invalid", "true");
      input.focus();
    } else {
      problem.hidden = false;
      problem.textContent = e.message || String(e);
    }
  }

  function current(f) {
    const stored = getPath(view.config, f.name);
    return stored === undefined ? f.default : stored;
  }

  function render(v) {
    view = v || view;
    const pending = new Set(view.pending_restart || []);
    for (const f of fields) {
      const input = inputs.get(f.name);
      if (document.activeElement !== input) show(input, f, current(f));
      const parts = [];
      if (f.secret) {
        const state = (view.secrets || {})[f.name] || "not set";
        parts.push(state === "set" ? "Set (hidden). Type a new value to change it." : "Not set.");
        input.placeholder = state === "set" ? "••••••••" : "";
      }
      if (pending.has(f.name)) parts.push("Changed: waits for a restart.");
      replace(notes.get(f.name), parts.join(" "));
      notes.get(f.name).classList.toggle("warn-note", pending.has(f.name));
    }
  }

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    clearErrors();
    const patch = {};
    for (const f of fields) {
      const input = inputs.get(f.name);
      if (input.disabled) continue;
      const value = read(input, f);
      if (value === undefined) continue;
      const now = current(f);
      if (JSON.stringify(value) !== JSON.stringify(now === undefined ? null : now)) setPath(patch, f.name, value);
    }
    if (!Object.keys(patch).length) {
      problem.hidden = false;
      problem.classList.remove("error");
      problem.textContent = "Nothing changed.";
      return;
    }
    problem.classList.add("error");
    submit.disabled = true;
    submit.setAttribute("aria-busy", "true");
    try {
      const v = await save(patch);
      if (v) render(v);
      for (const f of fields.filter((f) => f.secret)) inputs.get(f.name).value = "";
      problem.hidden = false;
      problem.classList.remove("error");
      problem.textContent = "Saved.";
    } catch (err) {
      showError(err);
    } finally {
      submit.disabled = !canWrite;
      submit.removeAttribute("aria-busy");
    }
  });

  return { form, render, showError };
}
