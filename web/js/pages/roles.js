// Roles: named sets of permissions (the controller's permission table supplies the titles).

import { get, post, patch, del, seg } from "../api.js";
import { h, replace, busy, confirmDialog, toast, field, checkbox } from "../dom.js";
import { state, subscribe, sorted, can } from "../store.js";

let permissions = null;

async function loadPermissions() {
  if (permissions) return permissions;
  permissions = can("core.permission.list") ? await get("permissions") : [];
  return permissions;
}

function permissionChecks(selected) {
  const list = permissions || [];
  if (!list.length) return h("p", { class: "muted" }, "The permission list is not available to you.");
  return h(
    "fieldset",
    { class: "checks perms" },
    h("legend", {}, "Permissions"),
    list.map((p) =>
      h(
        "div",
        { class: "perm" },
        checkbox(p.title || p.name, { "data-perm": p.name, checked: selected.includes(p.name) }),
        h("small", { class: "muted" }, ` ${p.name}${p.description ? ` — ${p.description}` : ""}`),
      ),
    ),
  );
}

const chosen = (box) => [...box.querySelectorAll("input[data-perm]")].filter((c) => c.checked).map((c) => c.dataset.perm);

function editDialog(role) {
  const name = h("input", { value: role ? role.name : "", required: true, autocomplete: "off" });
  const description = h("input", { value: role ? role.description || "" : "", autocomplete: "off" });
  const box = h("div", { class: "perm-box" }, permissionChecks(role ? role.permissions || [] : []));
  return confirmDialog({
    title: role ? `Edit role ${role.name}` : "New role",
    body: [field("Name", name), field("Description", description), box],
    confirm: role ? "Save role" : "Create role",
    onConfirm: async () => {
      if (!name.value.trim()) throw new Error("A role needs a name.");
      const body = { name: name.value.trim(), description: description.value.trim(), permissions: chosen(box) };
      const v = role ? await patch(`roles/${seg(role.id)}`, body) : await post("roles", body);
      state.roles.set(v.id, v);
      toast(`Role ${v.name} saved.`);
    },
  });
}

export function mount(main) {
  const table = h("div", { class: "table-wrap", id: "roles-list" });
  const add = h("button", { type: "button", class: "primary", id: "create-role" }, "New role…");
  add.addEventListener("click", () => busy(add, async () => editDialog(null)));
  main.append(h("h1", {}, "Roles"), can("core.role.create") ? h("div", { class: "actions" }, add) : null, h("section", { "aria-label": "All roles" }, table));

  function render() {
    const roles = sorted(state.roles);
    replace(
      table,
      h(
        "table",
        { id: "roles-table" },
        h("thead", {}, h("tr", {}, ["Name", "Description", "Permissions", ""].map((c) => h("th", { scope: "col" }, c)))),
        h(
          "tbody",
          {},
          roles.map((r) => {
            const edit = h("button", { type: "button", class: "secondary small", "aria-label": `Edit role ${r.name}`, dataset: { key: `edit-${r.id}` } }, "Edit…");
            edit.addEventListener("click", () => editDialog(r));
            const remove = h("button", { type: "button", class: "danger small", "aria-label": `Delete role ${r.name}`, dataset: { key: `del-${r.id}` } }, "Delete…");
            remove.addEventListener("click", () =>
              confirmDialog({
                title: `Delete role ${r.name}?`,
                body: [h("p", {}, "Users with this role lose its permissions.")],
                confirm: "Delete",
                danger: true,
                onConfirm: async () => {
                  await del(`roles/${seg(r.id)}`);
                  state.roles.delete(r.id);
                  render();
                  toast(`Role ${r.name} deleted.`);
                },
              }),
            );
            const perms = r.permissions || [];
            return h(
              "tr",
              {},
              h("th", { scope: "row" }, r.name),
              h("td", {}, r.description || ""),
              h("td", {}, perms.includes("core.admin") ? "everything (core.admin)" : h("details", {}, h("summary", {}, `${perms.length} permissions`), h("ul", { class: "plain" }, perms.map((p) => h("li", {}, h("code", {}, p)))))),
              h("td", { class: "actions-cell" }, can("core.role.update") ? edit : null, can("core.role.delete") ? remove : null),
            );
          }),
        ),
      ),
    );
  }
  render();
  loadPermissions().catch(() => {});
  return subscribe((kind) => {
    if (kind === "roles") render();
  });
}
