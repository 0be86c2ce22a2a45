// Small DOM helpers. Elements are built with h(); text always goes in as text nodes, never as
// HTML, so nothing the controller or a player sends can inject markup.

const SVG_NS = "http://www.w3.org/2000/svg";

function build(el, attrs, children) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") {
      el.addEventListener(k.slice(2), v);
    } else if (k === "class") {
      el.setAttribute("class", Array.isArray(v) ? v.filter(Boolean).join(" ") : v);
    } else if (k === "dataset") {
      Object.assign(el.dataset, v);
    } else if (k === "value" && "value" in el) {
      el.value = v;
    } else if (k === "checked" || k === "selected" || k === "disabled" || k === "multiple") {
      el[k] = Boolean(v);
      if (v) el.setAttribute(k, "");
    } else {
      el.setAttribute(k, v === true ? "" : String(v));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** An HTML element: h("button", {class: "x", onclick: f}, "Text"). */
export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

/** An SVG element. */
export function s(tag, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

/**
 * Replaces the children of `el`, keeping keyboard focus on the element with the same
 * data-key if the focused one is replaced (live updates must not throw the user's focus away).
 */
export function replace(el, ...children) {
  const active = document.activeElement;
  const key = active && el.contains(active) ? active.dataset.key : undefined;
  el.replaceChildren();
  append(el, children);
  if (key) {
    const again = el.querySelector(`[data-key="${CSS.escape(key)}"]`);
    if (again) again.focus();
  }
}

export function fmtBytes(n) {
  if (typeof n !== "number") return "";
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${i === 0 ? n : n.toFixed(1)} ${units[i]}`;
}

export function fmtTime(ms) {
  if (!ms) return "";
  const d = new Date(ms);
  return d.toLocaleString();
}

/** "3 min ago" for recent times, the date otherwise. */
export function fmtAgo(ms) {
  if (!ms) return "never";
  const s = Math.round((Date.now() - ms) / 1000);
  if (s < 5) return "just now";
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return fmtTime(ms);
}

/** A time element showing fmtAgo with the full time as its title. */
export function timeEl(ms) {
  return h("time", { datetime: ms ? new Date(ms).toISOString() : undefined, title: fmtTime(ms) }, fmtAgo(ms));
}

/** A short message at the corner of the screen, read out by screen readers. */
export function toast(message, kind = "info") {
  const box = document.getElementById("toasts");
  if (!box) return;
  const t = h("div", { class: ["toast", kind], role: kind === "error" ? "alert" : "status" }, message);
  box.append(t);
  setTimeout(() => t.remove(), kind === "error" ? 8000 : 4000);
}

let dialogSeq = 0;

/**
 * A modal dialog (native <dialog>: focus is trapped and Escape cancels). `body` is a list of
 * nodes; resolves to true when the confirm button is pressed, false otherwise.
 */
export function confirmDialog({ title, body = [], confirm = "OK", danger = false, onConfirm }) {
  return new Promise((resolve) => {
    const id = `dlg-${++dialogSeq}`;
    const error = h("p", { class: "error", role: "alert", hidden: true });
    const ok = h("button", { type: "submit", class: danger ? "danger" : "primary", value: "ok" }, confirm);
    const cancel = h("button", { type: "button", class: "secondary" }, "Cancel");
    const form = h(
      "form",
      {},
      h("h2", { id: `${id}-title` }, title),
      body,
      error,
      h("div", { class: "actions" }, cancel, ok),
    );
    const dlg = h("dialog", { "aria-labelledby": `${id}-title` }, form);
    let done = false;
    const finish = (v) => {
      if (done) return;
      done = true;
      dlg.close();
      dlg.remove();
      resolve(v);
    };
    cancel.addEventListener("click", () => finish(false));
    dlg.addEventListener("cancel", () => finish(false));
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      if (!onConfirm) return finish(true);
      ok.disabled = true;
      try {
        await onConfirm();
        finish(true);
      } catch (err) {
        error.hidden = false;
        error.textContent = err.message || String(err);
        ok.disabled = false;
      }
    });
    document.body.append(dlg);
    dlg.showModal();
    const first = form.querySelector("input, select, textarea");
    (first || ok).focus();
  });
}

/** A labelled form field. */
export function field(label, input, hint) {
  if (!input.id) input.id = `f-${++dialogSeq}`;
  const hintEl = hint ? h("small", { id: `${input.id}-hint` }, hint) : null;
  if (hintEl) input.setAttribute("aria-describedby", hintEl.id);
  return h("div", { class: "field" }, h("label", { for: input.id }, label), input, hintEl);
}

/** A checkbox with its label. */
export function checkbox(label, attrs = {}) {
  const input = h("input", { type: "checkbox", ...attrs });
  return h("label", { class: "check" }, input, " ", label);
}

/** Runs an async action from a button: disables it meanwhile and reports errors as toasts. */
export async function busy(button, action, doneMessage) {
  const before = button.textContent;
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  try {
    const r = await action();
    if (doneMessage) toast(doneMessage);
    return r;
  } catch (e) {
    toast(e.message || String(e), "error");
    return undefined;
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
    button.textContent = before;
  }
}

export function statusBadge(status) {
  return h("span", { class: ["badge", `st-${status}`] }, status);
}

// An instance's message: its first line says what happened ("Factorio killed by signal 9; last
// output:"); the rest, if any, is the game's last output, shown as lines and folded away.
export function messageSummary(message) {
  return String(message || "").split("\n")[0].replace(/;?\s*last output:\s*$/, "");
}

export function messageBlock(message) {
  const [first, ...rest] = String(message || "").split("\n");
  const lines = rest.filter((l) => l.trim() !== "");
  return h(
    "div",
    { class: "inst-report" },
    h("strong", {}, messageSummary(first)),
    lines.length
      ? h("details", {}, h("summary", {}, `Last ${lines.length} lines of output`), h("pre", { class: "inst-output" }, lines.join("\n")))
      : null,
  );
}
