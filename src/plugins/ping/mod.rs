//! `ping`: a small built-in plugin that exercises the backbone end to end. A message sent in one
//! game (`/ping <text>`) goes game → host (IPC `ping:message`) → controller (link event
//! `ping.message`, recorded in SQLite) → every other running game with the plugin (`ping.deliver`
//! → `/sc ping.receive(…)`), and the sender gets `ping.pong` with how many games it reached.

use super::{Builtin, ControllerPlugin, HostPlugin, LuaModule, PluginInfo};
use crate::controller::plugins::ControllerCtx;
use crate::host::backend::BoxFuture;
use crate::host::plugins::{HostCtx, InstanceCtx};
use crate::store::StoreError;
use serde_json::{Value, json};

static LUA: LuaModule = LuaModule {
    name: "ping",
    version: "0.1.0",
    dependencies: &[("clusterio", "*")],
    load: &["ping.lua"],
    require: &[],
    files: &[("ping.lua", include_str!("ping.lua"))],
};

static INFO: PluginInfo = PluginInfo {
    name: "ping",
    title: "Ping",
    description: "Sends a message from one game to every other game of the cluster (a test of the plugin path).",
    version: "0.1.0",
    permissions: &[],
    lua: Some(&LUA),
    ipc_channels: &[],
    migrations: &["CREATE TABLE ping_messages (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            instance_id INTEGER NOT NULL,
            text TEXT NOT NULL,
            delivered INTEGER NOT NULL,
            at INTEGER NOT NULL
        );"],
    settings: crate::config::PluginSettings {
        instance: &[super::load_plugin_field("ping.load_plugin", "Ping")],
        ..crate::config::PluginSettings::NONE
    },
};

pub const BUILTIN: Builtin = Builtin {
    info: &INFO,
    controller: || Some(Box::new(PingController)),
    host: || Some(Box::new(PingHost)),
};

struct PingController;

impl ControllerPlugin for PingController {
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
            if name != "ping.message" {
                tracing::debug!(plugin = "ping", event = name, "unknown event");
                return;
            }
            let (Some(from), Some(text)) = (data["instance_id"].as_i64(), data["text"].as_str())
            else {
                tracing::warn!(plugin = "ping", "malformed ping.message");
                return;
            };
            let from_name = ctx.instance_name(from).await.unwrap_or_default();
            let message = json!({ "from": from_name, "text": text, "number": data["number"] });
            let delivered = ctx.broadcast("ping.deliver", &message, Some(from)).await;
            let text = text.to_string();
            let stored = ctx
                .store()
                .write(move |c| {
                    c.execute(
                        "INSERT INTO ping_messages (instance_id, text, delivered, at) VALUES (?1, ?2, ?3, ?4)",
                        rusqlite::params![from, text, delivered as i64, crate::store::now_ms()],
                    )?;
                    Ok(())
                })
                .await;
            if let Err(e) = stored {
                tracing::warn!(plugin = "ping", error = %e, "recording a ping");
            }
            let pong =
                json!({ "text": data["text"], "number": data["number"], "delivered": delivered });
            ctx.send_to_instance(from, "ping.pong", pong).await;
        })
    }

    fn status<'a>(&'a self, ctx: &'a ControllerCtx) -> BoxFuture<'a, Value> {
        Box::pin(async move {
            let n = ctx
                .store()
                .read(|c| {
                    c.query_row("SELECT COUNT(*) FROM ping_messages", [], |r| {
                        r.get::<_, i64>(0)
                    })
                    .map_err(StoreError::from)
                })
                .await
                .unwrap_or(0);
            json!({ "messages": n })
        })
    }
}

struct PingHost;

impl HostPlugin for PingHost {
    fn info(&self) -> &'static PluginInfo {
        &INFO
    }

    fn ipc(&self, inst: &InstanceCtx, channel: &str, data: Value) {
        if channel == "ping:message" {
            inst.send_event("ping.message", data);
        }
    }

    fn controller_event(&self, host: &HostCtx, name: &str, data: Value) {
        let function = match name {
            "ping.deliver" => "ping.receive",
            "ping.pong" => "ping.pong",
            other => {
                tracing::debug!(plugin = "ping", event = other, "unknown event");
                return;
            }
        };
        if let Some(inst) = host.instance_of(&data) {
            inst.call_lua(function, &data);
        }
    }
}
