// Players: everyone the games know, online first, with search; a player's statistics per
// instance and history; kick, ban, promote and whitelist; Factorio's list files imported (with a
// dry run first) and exported. `#/players/<name>` shows one player.

import { get, post, seg } from "../api.js";
import { h, replace, busy, confirmDialog, toast, field, timeEl } from "../dom.js";
import { subscribe, can } from "../store.js";

const LISTS = [
  ["admins", "server-adminlist.json", "Admins"],
  ["bans", "server-banlist.json", "Bans"],
  ["whitelist", "server-whitelist.json", "Whitelist"],
];

/** "1 h 5 min" from milliseconds. */
export function fmtDuration(ms) {
  const s = Math.max(0, Math.round((ms || 0) / 1000));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min`;
  const hours = Math.floor(m / 60);
  if (hours < 48) return `${hours} h ${m % 60} min`;
  return `${Math.floor(hours / 24)} d ${hours % 24} h`;
}

async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    // Plain http pages have no clipboard API: copy through a selected, hidden field.
    const t = h("textarea", { readonly: true, style: "position:fixed;left:-9999px" }, text);
    document.body.append(t);
    t.select();
    document.execCommand("copy");
    t.remove();
  }
}

/** An instance's join address with a copy button, or why there is none. */
export function joinAddress(instance) {
  if (instance.join_address) {
    const btn = h("button", { type: "button", class: ["secondary", "small"], "aria-label": `Copy the join address of ${instance.name}`, dataset: { key: `copy-${instance.id}` } }, "Copy");
    btn.addEventListener("click", () => copyText(instance.join_address).then(() => toast(`Copied ${instance.join_address}`)));
    return h("span", { class: "join-address" }, h("code", { dataset: { joinAddress: instance.name } }, instance.join_address), " ", btn);
  }
  if (!instance.game_port) return h("span", { class: "muted" }, "when it runs");
  return h("span", { class: "muted", title: "Set the slave's public_address (PUBLIC_ADDRESS in the panel)" }, `unknown host, port ${instance.game_port}`);
}

function flags(p) {
  const out = [];
  if (p.is_admin) out.push(h("span", { class: "badge st-running" }, "admin"));
  if (p.is_whitelisted) out.push(h("span", { class: "badge st-stopped" }, "whitelisted"));
  if (p.is_banned) out.push(h("span", { class: "badge st-crashed", title: p.ban_reason || "" }, p.ban_reason ? `banned: ${p.ban_reason}` : "banned"));
  return out;
}

/** The action buttons for one player; `done` runs after a change. */
function actions(p, done) {
  const out = [];
  const name = p.name;
  const btn = (label, cls, key, onclick) => {
    const b = h("button", { type: "button", class: [cls, "small"], dataset: { key: `${key}-${name}` }, "aria-label": `${label.replace("…", "")} ${name}` }, label);
    b.addEventListener("click", () => onclick(b));
    out.push(b);
  };
  const act = (b, action, body, message) =>
    busy(b, async () => {
      await post(`users/${seg(name)}/${action}`, body || {});
      toast(message);
      done();
    });
  const reasonDialog = (title, action, confirm, message, hint) => {
    const reason = h("input", { id: `${action}-reason`, autocomplete: "off", maxlength: 200 });
    confirmDialog({
      title,
      body: [h("p", {}, hint), field("Reason (shown to the player)", reason)],
      confirm,
      danger: true,
      onConfirm: async () => {
        await post(`users/${seg(name)}/${action}`, { reason: reason.value.trim() });
        toast(message);
        done();
      },
    });
  };
  if (can("core.user.kick") && p.online)
    btn("Kick…", "secondary", "kick", () => reasonDialog(`Kick ${name}?`, "kick", "Kick", `${name} was kicked.`, `From ${p.online_on.join(", ")}. They can join again.`));
  if (can("core.user.set_banned")) {
    if (p.is_banned) btn("Unban", "secondary", "unban", (b) => act(b, "unban", {}, `${name} is no longer banned.`));
    else btn("Ban…", "danger", "ban", () => reasonDialog(`Ban ${name}?`, "ban", "Ban", `${name} is banned.`, "Banned players are kicked and refused on every instance that syncs lists."));
  }
  if (can("core.user.set_admin")) {
    if (p.is_admin) btn("Demote", "secondary", "demote", (b) => act(b, "demote", {}, `${name} is no longer an admin.`));
    else btn("Promote", "secondary", "promote", (b) => act(b, "promote", {}, `${name} is an admin.`));
  }
  if (can("core.user.set_whitelisted")) {
    if (p.is_whitelisted) btn("Unwhitelist", "secondary", "unwhitelist", (b) => act(b, "unwhitelist", {}, `${name} is off the whitelist.`));
    else btn("Whitelist", "secondary", "whitelist", (b) => act(b, "whitelist", {}, `${name} is whitelisted.`));
  }
  return out;
}

function summaryText(r) {
  const names = (a) => (a && a.length ? a.join(", ") : "none");
  const lines = [r.dry_run ? "Dry run — nothing changed yet. Importing would:" : "Imported:"];
  lines.push(`create users: ${names(r.created)}`);
  for (const [key, , label] of LISTS) {
    const c = r[key];
    if (!c || !c.given) continue;
    let line = `${label}: add ${names(c.added)}`;
    if (c.updated.length) line += `; new reason for ${names(c.updated)}`;
    if (c.removed.length) line += `; remove ${names(c.removed)}`;
    line += `; ${c.unchanged} unchanged`;
    lines.push(line);
  }
  return lines;
}

function importCard(done) {
  const inputs = LISTS.map(([key, file]) => [key, h("input", { type: "file", accept: ".json,application/json", id: `import-${key}` }), file]);
  const replaceBox = h("input", { type: "checkbox", id: "import-replace" });
  const result = h("div", { id: "import-result", role: "status", "aria-live": "polite" });
  const dry = h("button", { type: "button", class: "secondary", id: "import-dry-run" }, "Dry run");
  const apply = h("button", { type: "button", class: "primary", id: "import-apply", disabled: true }, "Import");
  const body = async (dryRun) => {
    const b = { dry_run: dryRun, replace: replaceBox.checked };
    let any = false;
    for (const [key, input] of inputs) {
      if (input.files && input.files[0]) {
        b[key] = await input.files[0].text();
        any = true;
      }
    }
    if (!any) throw new Error("Choose at least one list file.");
    return b;
  };
  const show = (lines, error) => replace(result, h(error ? "p" : "ul", { class: error ? "error" : "summary" }, error ? lines : lines.map((l) => h("li", {}, l))));
  dry.addEventListener("click", () =>
    busy(dry, async () => {
      try {
        const r = await post("lists/import", await body(true));
        show(summaryText(r));
        apply.disabled = false;
      } catch (e) {
        show(e.message, true);
        apply.disabled = true;
      }
    }),
  );
  apply.addEventListener("click", () =>
    busy(apply, async () => {
      try {
        const r = await post("lists/import", await body(false));
        show(summaryText(r));
        apply.disabled = true;
        toast("Lists imported.");
        done();
      } catch (e) {
        show(e.message, true);
      }
    }),
  );
  for (const [, input] of inputs) input.addEventListener("change", () => (apply.disabled = true));
  return h(
    "section",
    { class: "card", "aria-labelledby": "import-h" },
    h("h2", { id: "import-h" }, "Import Factorio's list files"),
    h("p", { class: "muted" }, "Factorio's own files: names, and for bans names or {username, reason}. A malformed entry imports nothing; run a dry run first to see what changes."),
    inputs.map(([, input, file]) => field(file, input)),
    h("label", { class: "check" }, replaceBox, " Replace: take the flag from players missing from a chosen file"),
    h("div", { class: "actions" }, dry, apply),
    result,
  );
}

function exportCard() {
  const buttons = LISTS.map(([key, file]) => {
    const b = h("button", { type: "button", class: "secondary", id: `export-${key}` }, file);
    b.addEventListener("click", () =>
      busy(b, async () => {
        const v = await get(`lists/${key}`);
        const blob = new Blob([`${JSON.stringify(v, null, 2)}\n`], { type: "application/json" });
        const a = h("a", { href: URL.createObjectURL(blob), download: file });
        document.body.append(a);
        a.click();
        a.remove();
      }),
    );
    return b;
  });
  return h("section", { class: "card", "aria-labelledby": "export-h" }, h("h2", { id: "export-h" }, "Export"), h("div", { class: "actions" }, buttons));
}

function mountList(main) {
  const search = h("input", { type: "search", id: "player-search", placeholder: "Search by name", autocomplete: "off", "aria-label": "Search players" });
  const table = h("div", { class: "table-wrap", id: "players-list" }, h("p", { class: "muted" }, "Loading…"));
  main.append(h("h1", {}, "Players"), h("div", { class: "toolbar" }, search), h("section", { "aria-label": "All players" }, table));
  if (can("core.user.bulk_import")) main.append(importCard(() => load()));
  if (can("core.user.bulk_export")) main.append(exportCard());
  let seq = 0;
  let lastShown = "";
  async function load() {
    const mine = ++seq;
    const q = search.value.trim();
    let players;
    try {
      players = await get(q ? `players?search=${seg(q)}` : "players");
    } catch (e) {
      replace(table, h("p", { class: "error" }, e.message));
      return;
    }
    if (mine !== seq) return;
    // Events come in bursts: redraw only when something a reader sees changed (the online
    // time of those online grows with every fetch).
    const shown = JSON.stringify(players.map((p) => (p.online ? { ...p, online_time_ms: 0, last_seen_at: 0 } : p)));
    if (shown === lastShown && table.querySelector("table")) return;
    lastShown = shown;
    if (!players.length) {
      replace(table, h("p", { class: "muted" }, q ? `No player matches "${q}".` : "No players yet: they appear when they first join a game."));
      return;
    }
    replace(
      table,
      h(
        "table",
        { id: "players-table" },
        h("thead", {}, h("tr", {}, ["Name", "Online on", "Joins", "Online time", "Last seen", "Flags", ""].map((c) => h("th", { scope: "col" }, c)))),
        h(
          "tbody",
          {},
          players.map((p) =>
            h(
              "tr",
              { dataset: { player: p.name }, class: p.online ? "online" : "" },
              h("th", { scope: "row" }, h("a", { href: `#/players/${seg(p.name)}` }, p.name)),
              h("td", {}, p.online ? h("span", { class: "badge st-running" }, p.online_on.join(", ")) : h("span", { class: "muted" }, "offline")),
              h("td", {}, String(p.join_count)),
              h("td", {}, fmtDuration(p.online_time_ms)),
              h("td", {}, p.online ? "now" : p.last_seen_at ? timeEl(p.last_seen_at) : h("span", { class: "muted" }, "never in a game")),
              h("td", {}, flags(p)),
              h("td", { class: "actions-cell" }, actions(p, load)),
            ),
          ),
        ),
      ),
    );
  }
  let timer = null;
  search.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(load, 150);
  });
  load();
  // Joins and leaves change instances' player lists; flags change users.
  return subscribe((kind) => {
    if (kind === "instances" || kind === "users") load();
  });
}

function mountDetail(main, name) {
  const body = h("div", { id: "player-detail" }, h("p", { class: "muted" }, "Loading…"));
  main.append(h("p", {}, h("a", { href: "#/players" }, "← All players")), h("h1", {}, name), body);
  async function load() {
    let p;
    try {
      p = await get(`players/${seg(name)}`);
    } catch (e) {
      replace(body, h("p", { class: "error" }, e.message));
      return;
    }
    const stats = p.instance_stats || [];
    const history = p.history || [];
    replace(
      body,
      h(
        "section",
        { class: "card", "aria-label": "Summary" },
        h(
          "dl",
          { class: "facts" },
          h("dt", {}, "Now"),
          h("dd", { id: "player-now" }, p.online ? `online on ${p.online_on.join(", ")}` : "offline"),
          h("dt", {}, "Joins"),
          h("dd", {}, String(p.join_count)),
          h("dt", {}, "Online time"),
          h("dd", {}, fmtDuration(p.online_time_ms)),
          h("dt", {}, "First seen"),
          h("dd", {}, p.first_seen_at ? timeEl(p.first_seen_at) : "never in a game"),
          h("dt", {}, "Flags"),
          h("dd", {}, flags(p).length ? flags(p) : "none"),
        ),
        h("div", { class: "actions" }, actions(p, load)),
      ),
      h("h2", {}, "Per instance"),
      stats.length
        ? h(
            "table",
            { id: "player-stats" },
            h("thead", {}, h("tr", {}, ["Instance", "Joins", "Online time", "First join", "Last join", "Now"].map((c) => h("th", { scope: "col" }, c)))),
            h(
              "tbody",
              {},
              stats.map((s) =>
                h(
                  "tr",
                  { dataset: { instance: s.instance } },
                  h("th", { scope: "row" }, s.instance),
                  h("td", {}, String(s.join_count)),
                  h("td", {}, fmtDuration(s.online_time_ms)),
                  h("td", {}, timeEl(s.first_join_at)),
                  h("td", {}, timeEl(s.last_join_at)),
                  h("td", {}, s.online ? h("span", { class: "badge st-running" }, "online") : ""),
                ),
              ),
            ),
          )
        : h("p", { class: "muted" }, "Never joined a game."),
      h("h2", {}, "History"),
      history.length
        ? h(
            "table",
            { id: "player-history" },
            h("thead", {}, h("tr", {}, ["Instance", "Joined", "Left", "For", "How"].map((c) => h("th", { scope: "col" }, c)))),
            h(
              "tbody",
              {},
              history.map((s) =>
                h(
                  "tr",
                  {},
                  h("td", {}, s.instance),
                  h("td", {}, timeEl(s.joined_at)),
                  h("td", {}, s.left_at ? timeEl(s.left_at) : h("span", { class: "badge st-running" }, "online")),
                  h("td", {}, fmtDuration(s.duration_ms)),
                  h("td", {}, s.leave_reason || ""),
                ),
              ),
            ),
          )
        : h("p", { class: "muted" }, "No sessions yet."),
    );
  }
  load();
  return subscribe((kind) => {
    if (kind === "instances" || kind === "users") load();
  });
}

export function mount(main) {
  const rest = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  if (rest[0] === "players" && rest[1]) return mountDetail(main, rest[1]);
  return mountList(main);
}
