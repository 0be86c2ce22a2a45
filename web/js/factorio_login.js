// "Log in with Factorio" (the player_auth plugin): prove in a game of the cluster that you are the
// player of your name. Either this page shows a code to type in game, or the game shows a code to
// enter here (then this page shows one more to type in game). Either way the page polls until the
// game confirms, then logs in with the token the controller hands out.

import { api } from "./api.js";
import { h, replace } from "./dom.js";

const POLL_MS = 2000;

/** Whether the cluster runs player_auth (the public status says so). */
export async function factorioLoginAvailable() {
  try {
    return (await api("GET", "status")).factorio_login === true;
  } catch {
    return false;
  }
}

/**
 * The login panel. `onToken(token, user)` is called once the game confirmed; `back()` returns to
 * the token form.
 */
export function factorioLogin(onToken, back) {
  let timer = null;
  let countdown = null;
  const stop = () => {
    clearTimeout(timer);
    clearInterval(countdown);
    timer = countdown = null;
  };

  const error = h("p", { id: "pa-error", class: "error", role: "alert" });
  const servers = h("p", { id: "pa-servers" }, "Looking for running games…");
  const waiting = h("div", { id: "pa-waiting", "aria-live": "polite" });

  const startButton = h("button", { type: "button", class: "primary", id: "pa-start" }, "Get a code to type in game");
  const codeInput = h("input", {
    id: "pa-player-code",
    name: "player_code",
    autocomplete: "off",
    spellcheck: "false",
    "aria-describedby": "pa-player-code-hint",
  });
  const codeForm = h(
    "form",
    { id: "pa-code-form", class: "stack" },
    h("label", { for: "pa-player-code" }, "I have a code from the game"),
    codeInput,
    h("small", { id: "pa-player-code-hint" }, "Type ", h("code", {}, "/web-login"), " in the game's chat; it shows you a code."),
    h("button", { type: "submit", id: "pa-submit" }, "Continue"),
  );
  const backButton = h("button", { type: "button", id: "pa-back" }, "Log in with a token instead");

  /** Shows the command to type and polls until the game confirms it. */
  function wait(reply) {
    stop();
    error.textContent = "";
    let left = reply.expires_in_s;
    const seconds = h("span", { id: "pa-left" }, String(left));
    const who = reply.player ? h("span", {}, " as ", h("strong", {}, reply.player)) : "";
    replace(
      waiting,
      h("p", {}, "Type this in the chat of any game of the cluster", who, ":"),
      h("p", {}, h("code", { id: "pa-command", class: "big" }, reply.command)),
      h("small", {}, "It works once, for ", seconds, " more seconds."),
    );
    countdown = setInterval(() => {
      left = Math.max(0, left - 1);
      seconds.textContent = String(left);
    }, 1000);
    const poll = async () => {
      try {
        const r = await api("POST", "player_auth/poll", { code: reply.code, poll_token: reply.poll_token });
        if (r.verified) {
          stop();
          replace(waiting, h("p", { id: "pa-done" }, `Confirmed in game. Logging in as ${r.user}…`));
          onToken(r.token, r.user);
          return;
        }
        timer = setTimeout(poll, POLL_MS);
      } catch (e) {
        stop();
        replace(waiting);
        error.textContent =
          e.code === "expired" ? "The code expired before it was typed in game. Get a new one." : e.message;
      }
    };
    timer = setTimeout(poll, POLL_MS);
  }

  startButton.addEventListener("click", async () => {
    startButton.disabled = true;
    try {
      wait(await api("POST", "player_auth/start", {}));
    } catch (e) {
      error.textContent = e.message;
    } finally {
      startButton.disabled = false;
    }
  });
  codeForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    const code = codeInput.value.trim();
    if (!code) {
      error.textContent = "Enter the code the game showed you.";
      codeInput.focus();
      return;
    }
    try {
      wait(await api("POST", "player_auth/player_code", { player_code: code }));
      codeInput.value = "";
    } catch (err) {
      error.textContent = err.message;
      codeInput.setAttribute("aria-invalid", "true");
    }
  });
  backButton.addEventListener("click", () => {
    stop();
    back();
  });

  api("GET", "player_auth/servers")
    .then((list) => {
      if (!list.length) {
        servers.textContent = "No game of the cluster is running right now; one must be, to log in this way.";
        return;
      }
      replace(
        servers,
        "Running games: ",
        ...list.flatMap((s, i) => [i ? ", " : "", h("strong", {}, s.name), s.address ? ` (${s.address})` : ""]),
      );
    })
    .catch((e) => {
      servers.textContent = e.message;
    });

  const panel = h(
    "section",
    { class: "login card", id: "factorio-login" },
    h("h1", {}, "Log in with Factorio"),
    servers,
    startButton,
    codeForm,
    waiting,
    error,
    backButton,
  );
  panel.stop = stop;
  return panel;
}
