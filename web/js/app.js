// Entry point: login, the link, the router and the page frame.

import { setToken, storeToken, storedToken, setUnauthorizedHandler } from "./api.js";
import { h, replace, toast } from "./dom.js";
import { Link } from "./link.js";
import { factorioLogin, factorioLoginAvailable } from "./factorio_login.js";
import { state, applyEvent, reloadAll, emit, can } from "./store.js";
import * as overview from "./pages/overview.js";
import * as hosts from "./pages/hosts.js";
import * as instances from "./pages/instances.js";
import * as instance from "./pages/instance.js";
import * as users from "./pages/users.js";
import * as players from "./pages/players.js";
import * as roles from "./pages/roles.js";
import * as mods from "./pages/mods.js";
import * as audit from "./pages/audit.js";
import * as plugins from "./pages/plugins.js";
import * as settings from "./pages/settings.js";
import * as chat from "./pages/chat.js";
import * as research from "./pages/research.js";
import * as inventories from "./pages/inventories.js";
import * as storage from "./pages/storage.js";
import * as externalPlugins from "./plugins.js";

/** Nav entries: route, label, the permission needed to see the page. */
const NAV = [
  ["overview", "Overview", null],
  ["instances", "Instances", "core.instance.list"],
  ["hosts", "Hosts", "core.host.list"],
  ["players", "Players", "core.user.list"],
  ["users", "Users", "core.user.list"],
  ["roles", "Roles", "core.role.list"],
  ["mods", "Mods", "core.mod.list"],
  ["plugins", "Plugins", "core.plugin.list"],
  ["external-plugins", "External plugins", "core.plugin.list"],
  ["chat", "Chat", "global_chat.view"],
  ["research", "Research", "research_sync.list"],
  ["inventories", "Inventories", "inventory_sync.inventory.view"],
  ["storage", "Storage", "subspace_storage.storage.view"],
  ["audit", "Audit log", "core.log.query"],
  ["settings", "Settings", "core.controller.get_config"],
];

const PAGES = { overview, hosts, instances, users, roles, mods, plugins, research, storage, audit, chat, settings, inventories };
PAGES.players = players;
PAGES["external-plugins"] = externalPlugins;

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const who = document.getElementById("who");
const banner = document.getElementById("banner");

let link = null;
let unmount = null;
let loggedIn = false;

function route() {
  const hash = location.hash.replace(/^#\/?/, "");
  const [page, ...rest] = hash.split("/").map(decodeURIComponent);
  return { page: page || "overview", rest };
}

function show() {
  if (!loggedIn) return;
  if (!location.hash.startsWith("#/") && location.hash !== "") return; // e.g. the skip link
  const { page, rest } = route();
  let mod = PAGES[page] || overview;
  let params = {};
  if (page === "instances" && rest[0]) {
    mod = instance;
    params = { ref: rest[0], tab: rest[1] || "overview" };
  }
  if (page === "inventories" && rest[0]) params = { player: rest[0] };
  if (unmount) unmount();
  unmount = null;
  main.replaceChildren();
  for (const a of nav.querySelectorAll("a")) {
    if (a.dataset.page === (PAGES[page] ? page : "overview")) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  unmount = mod.mount(main, params) || null;
  const h1 = main.querySelector("h1");
  document.title = `${h1 ? h1.textContent : "clustorio"} · clustorio`;
  if (h1) {
    // Move focus to the new page's heading, so keyboard and screen-reader users land on it.
    h1.setAttribute("tabindex", "-1");
    h1.focus({ preventScroll: true });
  }
}

function renderNav() {
  replace(
    nav,
    h(
      "ul",
      {},
      NAV.filter(([, , p]) => !p || can(p)).map(([page, label]) => h("li", {}, h("a", { href: `#/${page}`, dataset: { page } }, label))),
    ),
  );
  replace(
    who,
    h("span", { class: "muted" }, "Signed in as "),
    h("strong", {}, state.user ? state.user.name : ""),
    h("button", { type: "button", class: "secondary", id: "logout", onclick: () => logout() }, "Log out"),
  );
}

function setBanner(text, kind) {
  if (!text) {
    banner.hidden = true;
    banner.textContent = "";
    return;
  }
  banner.hidden = false;
  banner.className = kind;
  banner.textContent = text;
}

function showLogin(message) {
  loggedIn = false;
  if (unmount) unmount();
  unmount = null;
  document.body.classList.add("logged-out");
  nav.replaceChildren();
  who.replaceChildren();
  document.title = "Log in · clustorio";
  const input = h("input", {
    id: "token",
    name: "token",
    type: "password",
    autocomplete: "off",
    spellcheck: "false",
    required: true,
    "aria-describedby": "token-hint login-error",
  });
  const error = h("p", { id: "login-error", class: "error", role: "alert" }, message || "");
  const submit = h("button", { type: "submit", class: "primary", id: "login-button" }, "Log in");
  const form = h(
    "form",
    { class: "login card", id: "login-form" },
    h("h1", {}, "Log in to clustorio"),
    h("label", { for: "token" }, "Login token"),
    input,
    h("small", { id: "token-hint" }, "The controller prints a token on first start; ", h("code", {}, "clustorio controller token --user NAME"), " makes a new one."),
    error,
    submit,
  );
  // player_auth: offered when the cluster runs it.
  factorioLoginAvailable().then((yes) => {
    if (!yes || loggedIn || !form.isConnected) return;
    const alt = h("button", { type: "button", id: "login-factorio" }, "Log in with Factorio");
    alt.addEventListener("click", () => {
      const panel = factorioLogin(
        (token) =>
          connect(token, false, (msg) => {
            showLogin(msg);
          }),
        () => showLogin(),
      );
      main.replaceChildren(panel);
    });
    form.append(h("p", { class: "or" }, "or"), alt);
  });
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const token = input.value.trim();
    if (!token) {
      error.textContent = "Enter a login token.";
      input.focus();
      return;
    }
    error.textContent = "";
    submit.disabled = true;
    submit.textContent = "Logging in…";
    connect(token, false, (msg) => {
      submit.disabled = false;
      submit.textContent = "Log in";
      error.textContent = msg;
      input.setAttribute("aria-invalid", "true");
      input.focus();
    });
  });
  main.replaceChildren(form);
  input.focus();
}

/** Opens the link with `token`; `remembered` tokens keep retrying, typed ones report failures. */
function connect(token, remembered, fail) {
  if (link) link.stop();
  setToken(token);
  link = new Link(token, {
    async onReady(ready) {
      setBanner(null);
      const first = !loggedIn;
      state.user = ready.user || { name: "?", permissions: [] };
      state.connected = true;
      if (first) {
        loggedIn = true;
        storeToken(token);
        document.body.classList.remove("logged-out");
        renderNav();
      } else {
        toast("Reconnected to the controller.");
      }
      if (!ready.resumed) await reloadAll();
      emit("connection");
      if (first) show();
    },
    onEvent: applyEvent,
    onAway(attempt) {
      state.connected = false;
      emit("connection");
      if (loggedIn || remembered) {
        setBanner(`The controller is not reachable; reconnecting (attempt ${attempt})… The page will update when it is back.`, "away");
      }
    },
    onRefused({ code, message }) {
      const msg =
        code === "unauthorized"
          ? "That token is wrong or has been revoked. Ask an admin for a new one."
          : code === "forbidden"
            ? `This token cannot log in: ${message}`
            : message;
      if (loggedIn || remembered) logout(msg);
      else {
        link = null;
        fail(msg);
      }
    },
    onFirstFailure(message) {
      if (!loggedIn && !remembered) {
        link.stop();
        link = null;
        fail(`${message} Check that the controller is running, then try again.`);
      }
    },
  });
  link.start();
}

function logout(message) {
  if (link) link.stop();
  link = null;
  storeToken("");
  setToken("");
  setBanner(null);
  state.user = null;
  for (const m of [state.instances, state.hosts, state.users, state.roles, state.logs]) m.clear();
  if (location.hash && location.hash !== "#/overview") history.replaceState(null, "", "#/overview");
  showLogin(message);
}

setUnauthorizedHandler(() => {
  if (loggedIn) logout("Your token is no longer valid (revoked?). Log in again.");
});

window.addEventListener("hashchange", show);
document.getElementById("skip").addEventListener("click", (e) => {
  e.preventDefault();
  const target = main.querySelector("h1") || main;
  target.setAttribute("tabindex", "-1");
  target.focus();
});

const remembered = storedToken();
if (remembered) {
  main.replaceChildren(h("p", { class: "muted", role: "status" }, "Connecting…"));
  connect(remembered, true, () => {});
} else {
  showLogin();
}
