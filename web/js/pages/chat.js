// Cluster chat (global_chat plugin): what players say in every game, live, and a box to send a
// message to one game or all of them.

import { get, post } from "../api.js";
import { h, replace, field, fmtTime, toast } from "../dom.js";
import { state, subscribe, sorted, can } from "../store.js";

const KEEP = 500;

function line(m) {
  const to = m.to_id ? state.instances.get(m.to_id) : null;
  return h(
    "li",
    { class: "chat-line", dataset: { from: m.from } },
    h("span", { class: "muted nowrap" }, fmtTime(m.at), " "),
    h("strong", { class: "chat-from" }, `[${m.from}]`),
    " ",
    m.player ? h("span", { class: "chat-player" }, `${m.player}: `) : "",
    h("span", { class: "chat-text" }, m.text),
    to ? h("span", { class: "muted" }, ` → ${to.name}`) : "",
  );
}

export function mount(main) {
  const list = h("ol", { class: "plain chat-log", id: "chat-log", "aria-live": "polite", "aria-label": "Chat messages" });
  const empty = h("p", { class: "muted", id: "chat-empty" }, "No messages yet.");
  let messages = [];

  function render() {
    empty.hidden = messages.length > 0;
    replace(list, ...messages.map(line));
    list.scrollTop = list.scrollHeight;
  }

  const target = h("select", { id: "chat-target", name: "instance" });
  function fillTargets() {
    const chosen = target.value;
    const running = sorted(state.instances).filter((i) => i.status === "running");
    replace(target, h("option", { value: "" }, "All instances"), ...running.map((i) => h("option", { value: String(i.id) }, i.name)));
    target.value = [...target.options].some((o) => o.value === chosen) ? chosen : "";
  }
  const text = h("input", { id: "chat-text", name: "text", type: "text", autocomplete: "off", maxlength: "1000", required: true });
  const send = h("button", { type: "submit", class: "primary", id: "chat-send" }, "Send");
  const form = h("form", { id: "chat-form", class: "toolbar" }, field("To", target), field("Message", text), send);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = { text: text.value.trim() };
    if (!body.text) {
      text.focus();
      return;
    }
    if (target.value) body.instance = Number(target.value);
    send.disabled = true;
    try {
      const r = await post("global_chat/send", body);
      text.value = "";
      if (r.queued) toast(`Sent; ${r.queued} game(s) get it when their host is back.`);
    } catch (err) {
      toast(`Could not send: ${err.message}`, "error");
    } finally {
      send.disabled = false;
      text.focus();
    }
  });

  main.append(
    h("h1", {}, "Chat"),
    h("p", { class: "muted" }, "What players say in every game of the cluster (global_chat plugin). A message sent here shows in game as [Console] <you>: <text>."),
    h("section", { class: "card", "aria-label": "Messages" }, empty, list),
    can("global_chat.send") ? form : h("p", { class: "muted" }, "Sending needs the global_chat.send permission."),
  );
  fillTargets();

  let stopped = false;
  get("global_chat/messages")
    .then((recent) => {
      if (stopped) return;
      // Live messages may have come first; keep each once, in time order.
      const seen = new Set(messages.map((m) => JSON.stringify(m)));
      messages = [...(recent || []).filter((m) => !seen.has(JSON.stringify(m))), ...messages].sort((a, b) => a.at - b.at);
      render();
    })
    .catch((e) => {
      if (!stopped) replace(list, h("li", { class: "error" }, `Could not load the chat: ${e.message}`));
    });
  render();
  const off = subscribe((kind, detail) => {
    if (kind === "chat" && detail) {
      messages.push(detail);
      if (messages.length > KEEP) messages.splice(0, messages.length - KEEP);
      render();
    } else if (kind === "instances") fillTargets();
  });
  return () => {
    stopped = true;
    off();
  };
}
