// Factorio versions on the Hosts page: install another version on a host, with the host's
// download progress (factorio_install_progress events) as it goes.

import { post, del, seg } from "../api.js";
import { h, replace, busy, toast, field, confirmDialog } from "../dom.js";
import { state, subscribe, sorted, can } from "../store.js";

function size(n) {
  if (n == null) return "?";
  if (n < 1024) return `${n} B`;
  if (n < 1 << 20) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / (1 << 20)).toFixed(1)} MiB`;
}

/** The versions a host has, newest first; the first is what `latest` instances run. A version
 * in a folder of its own can be removed (the host refuses one a game runs or an instance asks
 * for, and says which). */
export function versionList(host) {
  const list = host.factorio_versions || [];
  if (!list.length) return h("span", { class: "muted" }, host.connected ? "none" : "unknown");
  const removable = (v) => host.connected && v.layout === "versioned" && can("core.host.remove_factorio");
  const remove = (v) =>
    confirmDialog({
      title: `Remove Factorio ${v.version} from ${host.name}?`,
      body: [h("p", {}, `This deletes ${v.path} on the host. Instances that ask for ${v.version} by version must be set to another one first.`)],
      confirm: "Remove",
      danger: true,
      onConfirm: async () => {
        await del(`hosts/${seg(host.name)}/factorio-versions/${seg(v.version)}`);
        toast(`Removed Factorio ${v.version} from ${host.name}.`);
      },
    });
  return h(
    "ul",
    { class: "inline", dataset: { factorioVersions: host.name } },
    list.map((v, i) =>
      h(
        "li",
        { title: v.path },
        i === 0 ? `${v.version} (latest)` : v.version,
        removable(v)
          ? [" ", h("button", { type: "button", class: "small danger", "aria-label": `Remove Factorio ${v.version} from ${host.name}`, dataset: { removeVersion: v.version }, onclick: () => remove(v) }, "remove")]
          : null,
      ),
    ),
  );
}

/** The install form: a host, a version, progress and a log of the stages. */
export function installCard() {
  const hostSel = h("select", { id: "fv-host" });
  const version = h("input", { id: "fv-version", autocomplete: "off", placeholder: "2.0.77", size: 10 });
  const btn = h("button", { type: "submit", class: "primary", id: "fv-install" }, "Install");
  const bar = h("progress", { id: "fv-progress", max: 1, value: 0, "aria-label": "Factorio install progress" });
  const note = h("span", { class: "muted", id: "fv-note", "aria-live": "polite" });
  const row = h("div", { class: "progress-row", hidden: true }, bar, note);
  const log = h("ul", { id: "fv-log", class: "muted" });
  const error = h("p", { class: "error", role: "alert", id: "fv-error" });
  const form = h(
    "form",
    { class: "card", "aria-labelledby": "fv-h", id: "fv-form" },
    h("h2", { id: "fv-h" }, "Install Factorio"),
    h("p", {}, "Downloads a Factorio headless release onto the host, checks its checksum and installs it beside the versions it has. Instances run their ", h("code", {}, "factorio_version"), " setting, the newest installed by default; a running game switches at its next restart."),
    h("div", { class: "inline-form" }, field("Host", hostSel), field("Version", version, "e.g. 2.0.77, or stable"), h("div", { class: "actions" }, btn)),
    error,
    row,
    log,
  );
  function fillHosts() {
    const keep = hostSel.value;
    replace(
      hostSel,
      sorted(state.hosts)
        .filter((x) => !x.revoked)
        .map((x) => h("option", { value: x.name, disabled: !x.connected }, x.connected ? x.name : `${x.name} (disconnected)`)),
    );
    if (keep) hostSel.value = keep;
  }
  fillHosts();

  let active = null;
  const line = (text) => log.append(h("li", {}, text));
  let lastStage = null;
  const off = subscribe((kind, data) => {
    if (!form.isConnected) return off();
    if (kind === "hosts") fillHosts();
    if (kind !== "factorio_install_progress" || !data || !active) return;
    if (data.host !== active.host || data.version !== active.version) return;
    row.hidden = false;
    if (data.total) bar.max = data.total;
    if (data.bytes != null) bar.value = data.bytes;
    const stage = data.stage;
    if (stage === "downloading") {
      note.textContent = `downloading ${data.tarball || ""}: ${size(data.bytes)} of ${size(data.total)}`;
    } else if (stage === "verifying") {
      note.textContent = "checking the checksum…";
    } else if (stage === "extracting") {
      note.textContent = "extracting…";
    } else if (stage === "checking") {
      note.textContent = "running factorio --version…";
    } else if (stage === "failed") {
      note.textContent = "failed";
    }
    if (stage !== lastStage) {
      lastStage = stage;
      if (stage === "downloading") line(`Downloading ${data.tarball || `Factorio ${data.version}`} (${size(data.total)})`);
      else if (stage === "verifying") line("Checking the SHA-256 checksum");
      else if (stage === "extracting") line("Extracting");
      else if (stage === "checking") line("Running factorio --version");
    }
  });

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const host = hostSel.value;
    const v = version.value.trim();
    error.textContent = "";
    if (!host) {
      error.textContent = "Choose a connected host.";
      return;
    }
    if (!v) {
      error.textContent = "Give a version, like 2.0.77.";
      return;
    }
    busy(btn, async () => {
      replace(log);
      active = { host, version: v };
      lastStage = null;
      row.hidden = false;
      bar.max = 1;
      bar.value = 0;
      note.textContent = "starting…";
      try {
        const res = await post(`hosts/${seg(host)}/factorio-versions`, { version: v });
        bar.max = res.bytes || 1;
        bar.value = res.bytes || 1;
        const sum = res.checksum === "verified" ? "checksum verified" : `checksum ${res.checksum}`;
        line(`Installed Factorio ${res.version} in ${res.path} (${size(res.bytes)}, ${sum})`);
        note.textContent = `installed ${size(res.bytes)} of ${size(res.bytes)}`;
        toast(`Installed Factorio ${res.version} on ${host}.`);
      } catch (err) {
        error.textContent = err.message;
        note.textContent = "failed";
      } finally {
        active = null;
      }
    });
  });
  return form;
}
