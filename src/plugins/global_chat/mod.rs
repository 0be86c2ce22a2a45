//! `global_chat`: what a player says in one game appears in every other game of the cluster as
//! `[<instance>] <player>: <text>`, and in the web UI's chat page.
//!
//! No Lua: the host reads the game's own `[CHAT] <name>: <text>` log lines (server messages
//! `<server>: …` and anything that looks like a command are not relayed) and sends
//! `global_chat.chat` to the controller. The controller publishes it to control clients
//! (`global_chat.message`, permission `global_chat.view`) and sends `global_chat.deliver` to
//! every other running instance with the plugin; the host prints it with `/sc game.print(…)`.
//!
//! Nothing is lost while links are down: the host's link keeps unacknowledged events and sends
//! them again, also on a new session after a controller restart; the controller keeps what it
//! could not hand to a host that is away (bounded) and delivers it when that host is back.

use super::{Builtin, ControllerPlugin, HostPlugin, PluginInfo};
use crate::controller::auth::Actor;
use crate::controller::error::ApiError;
use crate::controller::plugins::ControllerCtx;
use crate::host::backend::BoxFuture;
use crate::host::factorio::log::{LineKind, LogLine};
use crate::host::plugins::{HostCtx, InstanceCtx, lua_string};
use crate::permissions::Permission;
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Longest message relayed, in characters (longer ones are cut).
pub const MAX_TEXT: usize = 1000;
/// Messages the controller keeps for one host that is away; the oldest go first.
const PENDING_PER_HOST: usize = 1000;
/// Messages kept for the web UI's chat page.
const RECENT: usize = 200;

static INFO: PluginInfo = PluginInfo {
    name: "global_chat",
    title: "Global chat",
    description: "Shares the in-game chat between every game of the cluster, and with the web UI.",
    version: "0.1.0",
    permissions: &[
        Permission {
            name: "global_chat.view",
            title: "See cluster chat",
            description: "Read the chat of every game in the web UI and ctl.",
            grant_by_default: true,
        },
        Permission {
            name: "global_chat.send",
            title: "Send cluster chat",
            description: "Send a chat message from the web UI or ctl to one game or all of them.",
            grant_by_default: false,
        },
    ],
    lua: None,
    ipc_channels: &[],
    migrations: &[],
    settings: crate::config::PluginSettings {
        instance: &[super::load_plugin_field(
            "global_chat.load_plugin",
            "Global chat",
        )],
        ..crate::config::PluginSettings::NONE
    },
};

pub const BUILTIN: Builtin = Builtin {
    info: &INFO,
    controller: || Some(Box::new(ChatController::default())),
    host: || Some(Box::new(ChatHost)),
};

/// The player and text of a `[CHAT] <name>: <text>` line a player wrote; `None` for other lines,
/// server messages (`<server>: …`) and commands.
pub fn player_chat(line: &LogLine) -> Option<(&str, &str)> {
    let LineKind::Event { tag, text, .. } = &line.kind else {
        return None;
    };
    if tag != "CHAT" {
        return None;
    }
    let (name, message) = text.split_once(": ")?;
    let name = name.trim();
    if name.is_empty() || name.starts_with('<') || message.trim().is_empty() {
        return None;
    }
    if message.trim_start().starts_with('/') {
        return None;
    }
    Some((name, message))
}

/// Removes the rich-text tags that only make sense in the game they were written in
/// (`[gps=…]`, `[special-item=…]`, `[train=…]`, `[train-stop=…]`).
pub fn strip_tags(text: &str) -> String {
    const TAGS: [&str; 4] = ["[gps=", "[special-item=", "[train=", "[train-stop="];
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('[') {
        out.push_str(&rest[..i]);
        let at = &rest[i..];
        let tag = TAGS.iter().find(|t| at.starts_with(**t));
        let end = tag.and_then(|t| {
            let body = &at[t.len()..];
            let close = body.find(']')?;
            (!body[..close].contains(char::is_whitespace)).then_some(t.len() + close + 1)
        });
        match end {
            Some(n) => rest = &at[n..],
            None => {
                out.push('[');
                rest = &at[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The line a game shows: `[<from>] <player>: <text>` (or `[<from>] <text>` without a player).
pub fn shown_line(from: &str, player: &str, text: &str) -> String {
    let text = strip_tags(text);
    if player.is_empty() {
        format!("[{from}] {text}")
    } else {
        format!("[{from}] {player}: {text}")
    }
}

fn cut(text: &str) -> String {
    text.chars().take(MAX_TEXT).collect()
}

struct ChatHost;

impl HostPlugin for ChatHost {
    fn info(&self) -> &'static PluginInfo {
        &INFO
    }

    fn ipc(&self, inst: &InstanceCtx, channel: &str, _data: Value) {
        tracing::debug!(plugin = "global_chat", instance = %inst.name, channel, "unexpected IPC message");
    }

    fn line(&self, inst: &InstanceCtx, line: &LogLine) {
        if let Some((player, text)) = player_chat(line) {
            inst.send_event(
                "global_chat.chat",
                json!({ "player": player, "text": cut(text) }),
            );
        }
    }

    fn controller_event(&self, host: &HostCtx, name: &str, data: Value) {
        if name != "global_chat.deliver" {
            tracing::debug!(plugin = "global_chat", event = name, "unknown event");
            return;
        }
        let (Some(from), Some(text)) = (data["from"].as_str(), data["text"].as_str()) else {
            tracing::warn!(plugin = "global_chat", "malformed global_chat.deliver");
            return;
        };
        let player = data["player"].as_str().unwrap_or("");
        if let Some(inst) = host.instance_of(&data) {
            let line = shown_line(from, player, text);
            inst.rcon(format!("/sc game.print({})", lua_string(&line)));
        }
    }
}

#[derive(Default)]
struct ChatController {
    /// Host id → messages (with their `instance_id`) waiting for it to connect.
    pending: Mutex<HashMap<i64, VecDeque<Value>>>,
    recent: Mutex<VecDeque<Value>>,
    counts: Mutex<Counts>,
}

#[derive(Default, Clone, Copy)]
struct Counts {
    messages: u64,
    delivered: u64,
    dropped: u64,
}

impl ChatController {
    fn count(&self, f: impl FnOnce(&mut Counts)) {
        if let Ok(mut c) = self.counts.lock() {
            f(&mut c);
        }
    }

    /// Publishes `message` to the web UI and hands it to `targets` (or every running instance
    /// with the plugin but `except`). Returns (delivered now, queued for a host that is away).
    async fn relay(
        &self,
        ctx: &ControllerCtx,
        message: Value,
        only: Option<i64>,
        except: Option<i64>,
    ) -> (usize, usize) {
        self.count(|c| c.messages += 1);
        if let Ok(mut r) = self.recent.lock() {
            r.push_back(message.clone());
            while r.len() > RECENT {
                r.pop_front();
            }
        }
        ctx.publish("global_chat.message", message.clone(), "global_chat.view");
        let (mut now, mut queued) = (0, 0);
        for (id, _name, host) in ctx.running_instances().await {
            if Some(id) == except || only.is_some_and(|o| o != id) {
                continue;
            }
            let mut m = message.clone();
            m["instance_id"] = json!(id);
            if ctx.host_ready(host) {
                ctx.send_to_host(host, "global_chat.deliver", m);
                now += 1;
            } else if ctx.host_is_connected(host) {
                // Connected without the plugin (its PLUGINS leaves it out): nothing to keep.
                continue;
            } else {
                self.queue(host, m);
                queued += 1;
            }
        }
        self.count(|c| c.delivered += now as u64);
        (now, queued)
    }

    fn queue(&self, host: i64, message: Value) {
        let Ok(mut p) = self.pending.lock() else {
            return;
        };
        let q = p.entry(host).or_default();
        q.push_back(message);
        if q.len() > PENDING_PER_HOST {
            q.pop_front();
            drop(p);
            self.count(|c| c.dropped += 1);
            tracing::warn!(
                plugin = "global_chat",
                host_id = host,
                "too many chat messages waiting for a host that is away; dropped the oldest"
            );
        }
    }
}

impl ControllerPlugin for ChatController {
    fn info(&self) -> &'static PluginInfo {
        &INFO
    }

    fn host_event<'a>(
        &'a self,
        ctx: &'a ControllerCtx,
        _host_id: i64,
        name: &'a str,
        data: Value,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if name != "global_chat.chat" {
                tracing::debug!(plugin = "global_chat", event = name, "unknown event");
                return;
            }
            let (Some(from), Some(player), Some(text)) = (
                data["instance_id"].as_i64(),
                data["player"].as_str(),
                data["text"].as_str(),
            ) else {
                tracing::warn!(plugin = "global_chat", "malformed global_chat.chat");
                return;
            };
            let from_name = ctx
                .instance_name(from)
                .await
                .unwrap_or_else(|| format!("instance {from}"));
            let message = json!({
                "from": from_name,
                "from_id": from,
                "player": player,
                "text": cut(text),
                "at": crate::store::now_ms(),
            });
            self.relay(ctx, message, None, Some(from)).await;
        })
    }

    fn host_connected<'a>(&'a self, ctx: &'a ControllerCtx, host_id: i64) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if !ctx.host_ready(host_id) {
                return;
            }
            let waiting = self
                .pending
                .lock()
                .ok()
                .and_then(|mut p| p.remove(&host_id))
                .unwrap_or_default();
            let n = waiting.len() as u64;
            for m in waiting {
                ctx.send_to_host(host_id, "global_chat.deliver", m);
            }
            if n > 0 {
                tracing::info!(
                    plugin = "global_chat",
                    host_id,
                    messages = n,
                    "delivered chat kept while the host was away"
                );
                self.count(|c| c.delivered += n);
            }
        })
    }

    fn control_request<'a>(
        &'a self,
        ctx: &'a ControllerCtx,
        actor: &'a Actor,
        name: &'a str,
        data: Value,
    ) -> BoxFuture<'a, Result<Value, ApiError>> {
        Box::pin(async move {
            match name {
                "global_chat.send" => {
                    let text = data["text"].as_str().unwrap_or("").trim();
                    if text.is_empty() {
                        return Err(ApiError::bad_request("the message is empty"));
                    }
                    if text.chars().count() > MAX_TEXT {
                        return Err(ApiError::bad_request(format!(
                            "the message is longer than {MAX_TEXT} characters"
                        )));
                    }
                    let only = data["instance_id"].as_i64();
                    if let Some(id) = only
                        && !ctx
                            .running_instances()
                            .await
                            .iter()
                            .any(|(i, _, _)| *i == id)
                    {
                        return Err(ApiError::conflict(
                            "that instance is not running with global_chat",
                        ));
                    }
                    let message = json!({
                        "from": "Console",
                        "from_id": Value::Null,
                        "player": actor.name,
                        "text": text,
                        "at": crate::store::now_ms(),
                        "to_id": only,
                    });
                    let (delivered, queued) = self.relay(ctx, message, only, None).await;
                    Ok(json!({ "delivered": delivered, "queued": queued }))
                }
                "global_chat.history" => {
                    let recent: Vec<Value> = self
                        .recent
                        .lock()
                        .map(|r| r.iter().cloned().collect())
                        .unwrap_or_default();
                    Ok(json!(recent))
                }
                other => Err(ApiError::new(
                    400,
                    "unknown_request",
                    format!("global_chat has no request \"{other}\""),
                )),
            }
        })
    }

    fn status<'a>(&'a self, _ctx: &'a ControllerCtx) -> BoxFuture<'a, Value> {
        Box::pin(async move {
            let c = self.counts.lock().map(|c| *c).unwrap_or_default();
            let waiting: usize = self
                .pending
                .lock()
                .map(|p| p.values().map(VecDeque::len).sum())
                .unwrap_or(0);
            json!({ "messages": c.messages, "delivered": c.delivered, "waiting": waiting, "dropped": c.dropped })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::factorio::log::parse_line;

    #[test]
    fn only_what_players_say_is_relayed() {
        let chat = parse_line("2024-04-09 06:08:51 [CHAT] alice: hi: there");
        assert_eq!(player_chat(&chat), Some(("alice", "hi: there")));
        for other in [
            "2024-04-09 06:08:51 [CHAT] <server>: from the console",
            "2024-04-09 06:08:51 [CHAT] alice: /c game.print(1)",
            "2024-04-09 06:08:51 [COMMAND] alice (command): game.print(1)",
            "2024-04-09 06:08:51 [JOIN] alice joined the game",
            "   1.000 Info Something.cpp:1: [CHAT] alice: no",
        ] {
            assert_eq!(player_chat(&parse_line(other)), None, "{other}");
        }
    }

    #[test]
    fn local_tags_are_stripped_and_others_kept() {
        assert_eq!(
            strip_tags("look [gps=10,20,nauvis] here [item=iron-plate] [train=12][train-stop=3]!"),
            "look  here [item=iron-plate] !"
        );
        assert_eq!(
            strip_tags("[gps=1 2] [special-item=abc"),
            "[gps=1 2] [special-item=abc"
        );
        assert_eq!(shown_line("a", "bob", "x [gps=1,2]"), "[a] bob: x ");
        assert_eq!(shown_line("Console", "", "hi"), "[Console] hi");
    }
}
