// Start all / stop all / restart all, of the cluster or of one host, with progress as each
// instance finishes (`bulk_progress` events).

import { post } from "../api.js";
import { h, busy, confirmDialog, toast } from "../dom.js";
import { can, subscribe } from "../store.js";

const ACTIONS = [
  ["start", "Start all", "core.instance.start", "every stopped instance"],
  ["stop", "Stop all", "core.instance.stop", "every running instance (each saves first)"],
  ["restart", "Restart all", "core.instance.restart", "every running instance"],
];

/** A row of bulk buttons; `host` limits them to one host's instances. */
export function bulkBar(host) {
  const suffix = host ? `-${host}` : "";
  const bar = h("progress", { max: 1, value: 0, "aria-label": host ? `Bulk progress of ${host}` : "Bulk progress" });
  const note = h("span", { class: "muted", "aria-live": "polite", id: `bulk-note${suffix}` });
  const row = h("div", { class: "progress-row", hidden: true }, bar, note);
  const buttons = ACTIONS.filter(([, , perm]) => can(perm)).map(([action, label, , what]) => {
    const b = h("button", { type: "button", class: action === "start" ? "secondary" : "secondary", id: `bulk-${action}${suffix}` }, label);
    b.addEventListener("click", () =>
      confirmDialog({
        title: `${label}${host ? ` on ${host}` : " in the cluster"}?`,
        body: [h("p", {}, `This affects ${what}${host ? ` on host ${host}` : " of the cluster"}.`)],
        confirm: label,
        danger: action !== "start",
      }).then((ok) =>
        ok &&
        busy(b, async () => {
          row.hidden = false;
          bar.value = 0;
          note.textContent = "working…";
          const off = subscribe((kind, d) => {
            if (kind === "bulk_progress" && d && d.action === action && d.total) {
              bar.value = d.done / d.total;
              note.textContent = `${d.done} of ${d.total}: ${d.result.instance} ${d.result.ok ? "done" : `failed (${d.result.error})`}`;
            }
          });
          try {
            const r = await post("instances/bulk", host ? { action, host } : { action });
            bar.value = 1;
            note.textContent = r.total ? `${r.total - r.failed} of ${r.total} done${r.failed ? `, ${r.failed} failed` : ""}.` : "Nothing to do.";
            if (r.failed) toast(`${label}: ${r.failed} failed.`);
          } finally {
            off();
          }
        }),
      ),
    );
    return b;
  });
  if (!buttons.length) return null;
  return h("div", { class: "bulk", id: `bulk${suffix}` }, h("div", { class: "actions" }, buttons), row);
}
