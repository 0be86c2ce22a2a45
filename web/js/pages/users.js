// Users: roles, admin / whitelist / ban (with a reason), login tokens.

import { post, patch, del, seg } from "../api.js";
import { h, replace, busy, confirmDialog, toast, field, checkbox, timeEl } from "../dom.js";
import { state, subscribe, sorted, can } from "../store.js";

const USER_RE = /^[A-Za-z0-9_-][A-Za-z0-9._-]{0,59}$/;

function roleName(id) {
  const r = state.roles.get(id);
  return r ? r.name : `#${id}`;
}

function roleChecks(selected, prefix) {
  const roles = sorted(state.roles);
  if (!roles.length) return [h("p", { class: "muted" }, "No roles are visible to you.")];
  return [
    h(
      "fieldset",
      { class: "checks" },
      h("legend", {}, "Roles"),
      roles.map((r) => checkbox(r.name, { value: String(r.id), checked: selected.includes(r.id), id: `${prefix}-role-${r.id}`, "data-role": r.id })),
    ),
  ];
}

function chosenRoles(container) {
  return [...container.querySelectorAll("input[data-role]")].filter((c) => c.checked).map((c) => Number(c.dataset.role));
}

async function update(user, change, message) {
  const v = await patch(`users/${seg(user.name)}`, change);
  state.users.set(v.id, v);
  toast(message);
  return v;
}

function banDialog(user) {
  const reason = h("input", { id: "ban-reason", autocomplete: "off", maxlength: 200 });
  return confirmDialog({
    title: `Ban ${user.name}?`,
    body: [h("p", {}, "Banned players are kicked and kept off every instance that syncs lists."), field("Reason (shown to the player)", reason)],
    confirm: "Ban",
    danger: true,
    onConfirm: async () => {
      const v = await post(`users/${seg(user.name)}/ban`, { reason: reason.value.trim() });
      state.users.set(v.id, v);
      toast(`${user.name} is banned.`);
    },
  });
}

function rolesDialog(user) {
  const box = h("div", {}, roleChecks(user.roles || [], "edit"));
  return confirmDialog({
    title: `Roles of ${user.name}`,
    body: [box],
    confirm: "Save roles",
    onConfirm: () => update(user, { roles: chosenRoles(box) }, `Roles of ${user.name} saved.`),
  });
}

function tokenDialog(user) {
  return confirmDialog({
    title: `New login token for ${user.name}?`,
    body: [h("p", {}, "A new token is created; the user's other tokens keep working.")],
    confirm: "Create token",
    onConfirm: async () => {
      const t = await post("tokens", { user: user.name });
      const input = h("input", { readonly: true, value: t.token, id: "new-token", spellcheck: "false" });
      confirmDialog({
        title: "Token created",
        body: [h("p", {}, "Copy it now: it is shown only once."), field("Login token", input)],
        confirm: "Done",
      });
      setTimeout(() => input.select(), 0);
    },
  });
}

function createForm() {
  const name = h("input", { id: "new-user-name", autocomplete: "off", required: true, maxlength: 60 });
  const admin = checkbox("Admin (in game)", { id: "new-user-admin" });
  const white = checkbox("Whitelisted", { id: "new-user-white" });
  const roles = h("div", {});
  const error = h("p", { class: "error", role: "alert" });
  const btn = h("button", { type: "submit", class: "primary", id: "create-user" }, "Create user");
  const fill = () => replace(roles, roleChecks(chosenRoles(roles), "new"));
  fill();
  const form = h(
    "form",
    { class: "card inline-form", "aria-labelledby": "nu-h" },
    h("h2", { id: "nu-h" }, "New user"),
    field("Name (the Factorio player name)", name),
    h("div", { class: "checks-row" }, can("core.user.set_admin") ? admin : null, can("core.user.set_whitelisted") ? white : null),
    can("core.user.update_roles") ? roles : null,
    h("div", { class: "actions" }, btn),
    error,
  );
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    error.textContent = "";
    const n = name.value.trim();
    if (!USER_RE.test(n)) {
      error.textContent = "Use 1–60 letters, digits, dots, dashes or underscores, not starting with a dot.";
      name.setAttribute("aria-invalid", "true");
      name.focus();
      return;
    }
    name.removeAttribute("aria-invalid");
    const body = { name: n };
    if (can("core.user.set_admin")) body.is_admin = admin.querySelector("input").checked;
    if (can("core.user.set_whitelisted")) body.is_whitelisted = white.querySelector("input").checked;
    if (can("core.user.update_roles")) body.roles = chosenRoles(roles);
    busy(btn, async () => {
      try {
        const v = await post("users", body);
        state.users.set(v.id, v);
        toast(`User ${v.name} created.`);
        name.value = "";
      } catch (err) {
        error.textContent = err.message;
      }
    });
  });
  return { form, fill };
}

export function mount(main) {
  const table = h("div", { class: "table-wrap", id: "users-list" });
  main.append(
    h("h1", {}, "Users"),
    h("p", { class: "muted" }, "Players who join a game become users. Who is online, their history, kick and the list files: ", h("a", { href: "#/players" }, "Players"), "."),
    h("section", { "aria-label": "All users" }, table),
  );
  const create = can("core.user.create") ? createForm() : null;
  if (create) main.append(create.form);

  function flag(user, key, label, permission) {
    const input = h("input", { type: "checkbox", checked: user[key], disabled: !can(permission), "aria-label": `${label}: ${user.name}`, dataset: { key: `${key}-${user.id}` } });
    input.addEventListener("change", () =>
      update(user, { [key]: input.checked }, `${user.name}: ${label.toLowerCase()} ${input.checked ? "on" : "off"}.`).catch((err) => {
        input.checked = !input.checked;
        toast(err.message, "error");
      }),
    );
    return input;
  }

  function actions(user) {
    const out = [];
    const btn = (label, cls, key, onclick, aria) => {
      const b = h("button", { type: "button", class: [cls, "small"], dataset: { key: `${key}-${user.id}` }, "aria-label": aria || `${label} ${user.name}` }, label);
      b.addEventListener("click", () => onclick(b));
      out.push(b);
    };
    if (can("core.user.set_banned")) {
      if (user.is_banned)
        btn("Unban", "secondary", "unban", (b) =>
          busy(b, async () => {
            const v = await post(`users/${seg(user.name)}/unban`);
            state.users.set(v.id, v);
            toast(`${user.name} is no longer banned.`);
          }),
        );
      else btn("Ban…", "danger", "ban", () => banDialog(user));
    }
    if (can("core.user.update_roles")) btn("Roles…", "secondary", "roles", () => rolesDialog(user));
    const own = state.user && state.user.name === user.name;
    if (can(own ? "core.user.revoke_token" : "core.user.revoke_other_token")) {
      btn("New token…", "secondary", "token", () => tokenDialog(user), `New login token for ${user.name}`);
      btn("Revoke tokens…", "secondary", "revoke", () =>
        confirmDialog({
          title: `Revoke all tokens of ${user.name}?`,
          body: [h("p", {}, own ? "This logs you out everywhere, this browser included." : "They are logged out everywhere.")],
          confirm: "Revoke",
          danger: true,
          onConfirm: async () => {
            const r = await post(`users/${seg(user.name)}/revoke-tokens`);
            toast(`Revoked ${r.revoked} token(s) of ${user.name}.`);
          },
        }),
      );
    }
    if (can("core.user.delete") && !own)
      btn("Delete…", "danger", "delete", () =>
        confirmDialog({
          title: `Delete user ${user.name}?`,
          body: [h("p", {}, "The user, their tokens and list entries are removed.")],
          confirm: "Delete",
          danger: true,
          onConfirm: async () => {
            await del(`users/${seg(user.name)}`);
            state.users.delete(user.id);
            render();
            toast(`User ${user.name} deleted.`);
          },
        }),
      );
    return out;
  }

  function render() {
    const users = sorted(state.users);
    if (!users.length) {
      replace(table, h("p", { class: "muted" }, "No users."));
      return;
    }
    replace(
      table,
      h(
        "table",
        { id: "users-table" },
        h("thead", {}, h("tr", {}, ["Name", "Roles", "Admin", "Whitelisted", "Banned", "Created", ""].map((c) => h("th", { scope: "col" }, c)))),
        h(
          "tbody",
          {},
          users.map((u) =>
            h(
              "tr",
              { dataset: { user: u.name } },
              h("th", { scope: "row" }, u.name),
              h("td", {}, (u.roles || []).map(roleName).join(", ") || h("span", { class: "muted" }, "none")),
              h("td", {}, flag(u, "is_admin", "Admin", "core.user.set_admin")),
              h("td", {}, flag(u, "is_whitelisted", "Whitelisted", "core.user.set_whitelisted")),
              h("td", { class: "banned" }, u.is_banned ? [h("span", { class: "badge st-crashed" }, "banned"), u.ban_reason ? h("span", { class: "reason" }, ` ${u.ban_reason}`) : null] : h("span", { class: "muted" }, "no")),
              h("td", {}, timeEl(u.created_at)),
              h("td", { class: "actions-cell" }, actions(u)),
            ),
          ),
        ),
      ),
    );
  }
  render();
  return subscribe((kind) => {
    if (kind === "users" || kind === "roles") render();
    if (kind === "roles" && create) create.fill();
  });
}
