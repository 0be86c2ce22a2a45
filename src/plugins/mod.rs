//! Plugins: what makes the cluster more than many servers (DESIGN §9, research/plugins.md §4).
//!
//! A built-in plugin is one folder here with its Lua beside it. It declares itself once in a
//! [`PluginInfo`] (name, version, permissions, Lua module, IPC channels, SQLite migrations) and
//! implements [`ControllerPlugin`] and/or [`HostPlugin`]. Its parts talk over the link with
//! messages named `<plugin>.<message>`; the link's seq/ack/resume carry them like any other.
//!
//! `PLUGINS` (controller and host) names the plugins to load. The controller tells each host the
//! cluster's set in the handshake; a host runs a plugin for an instance when the cluster enables
//! it, the host's own `PLUGINS` does not leave it out, and the instance's `<plugin>.load_plugin`
//! is not `false`.

/// External-process plugins on the link (`role: "plugin"`).
pub mod checks;
pub mod external;
pub mod global_chat;
pub mod inventory_sync;
pub mod lua_only;
pub mod ping;
pub mod player_auth;
pub mod research_sync;
pub mod statistics_exporter;
pub mod subspace_storage;

use crate::host::backend::BoxFuture;
use crate::host::patch;
use crate::link::frame::ErrorBody;
use crate::permissions::Permission;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Lua files embedded in the binary, patched into saves as `modules/<name>/…`.
pub struct LuaModule {
    pub name: &'static str,
    pub version: &'static str,
    /// Module name → semver requirement.
    pub dependencies: &'static [(&'static str, &'static str)],
    /// event_handler libraries, in order.
    pub load: &'static [&'static str],
    /// Files required for their globals, in order.
    pub require: &'static [&'static str],
    /// Path in the module → contents.
    pub files: &'static [(&'static str, &'static str)],
}

impl LuaModule {
    pub fn to_module(&self) -> patch::Module {
        patch::Module {
            name: self.name.into(),
            version: self.version.into(),
            dependencies: self
                .dependencies
                .iter()
                .map(|(n, r)| (n.to_string(), r.to_string()))
                .collect(),
            load: self.load.iter().map(|s| s.to_string()).collect(),
            require: self.require.iter().map(|s| s.to_string()).collect(),
            files: self
                .files
                .iter()
                .map(|(p, c)| (p.to_string(), c.as_bytes().to_vec()))
                .collect(),
        }
    }
}

/// The core module every patched save gets: `send_json`, instance id/name, `on_server_startup`,
/// `on_instance_updated`, player events and the `clusterio_api` remote interface.
pub static CORE_MODULE: LuaModule = LuaModule {
    name: "clusterio",
    version: "0.0.0",
    dependencies: &[],
    load: &["impl.lua"],
    require: &[],
    files: &[
        ("api.lua", include_str!("../host/lua/clusterio/api.lua")),
        (
            "compat.lua",
            include_str!("../host/lua/clusterio/compat.lua"),
        ),
        ("impl.lua", include_str!("../host/lua/clusterio/impl.lua")),
    ],
};

/// A plugin's declaration: everything about it, once.
pub struct PluginInfo {
    /// Prefixes its link messages (`ping.message`), IPC channels (`ping:…`), permissions,
    /// config fields and tables.
    pub name: &'static str,
    pub title: &'static str,
    pub description: &'static str,
    pub version: &'static str,
    /// Permissions it adds to the one table.
    pub permissions: &'static [Permission],
    pub lua: Option<&'static LuaModule>,
    /// IPC channels it owns besides `<name>:…`.
    pub ipc_channels: &'static [&'static str],
    /// Its SQLite migrations on the controller, in order; applied once each, recorded.
    pub migrations: &'static [&'static str],
    /// Its settings in the one schema; each plugin declares at least `<name>.load_plugin`.
    pub settings: crate::config::PluginSettings,
}

impl PluginInfo {
    pub fn owns_channel(&self, channel: &str) -> bool {
        self.ipc_channels.contains(&channel)
            || channel
                .strip_prefix(self.name)
                .is_some_and(|rest| rest.starts_with(':'))
    }

    /// Its config switch on an instance: `<name>.load_plugin`, true unless set to false.
    pub fn enabled_for(&self, instance_config: &Value) -> bool {
        instance_config[self.name]["load_plugin"].as_bool() != Some(false)
    }
}

/// A plugin's name and version, as peers tell each other in the handshake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginVersion {
    pub name: String,
    pub version: String,
}

/// The controller's part of a plugin.
pub trait ControllerPlugin: Send + Sync {
    fn info(&self) -> &'static PluginInfo;
    /// An event `<plugin>.<name>` from a host. For events about an instance the controller has
    /// already checked that `data.instance_id` is assigned to that host.
    fn host_event<'a>(
        &'a self,
        ctx: &'a crate::controller::plugins::ControllerCtx,
        host_id: i64,
        name: &'a str,
        data: Value,
    ) -> BoxFuture<'a, ()>;
    /// A request `<plugin>.<name>` from a host.
    fn host_request<'a>(
        &'a self,
        _ctx: &'a crate::controller::plugins::ControllerCtx,
        _host_id: i64,
        name: &'a str,
        _data: Value,
    ) -> BoxFuture<'a, Result<Value, ErrorBody>> {
        let message = format!("plugin {} has no request \"{name}\"", self.info().name);
        Box::pin(async move { Err(ErrorBody::new("unknown_request", message)) })
    }
    /// A host's link came up (a new or resumed session); its hello named its plugins.
    fn host_connected<'a>(
        &'a self,
        _ctx: &'a crate::controller::plugins::ControllerCtx,
        _host_id: i64,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }
    /// A request `<plugin>.<name>` from a user (web UI, ctl); the [`ControlRequest`] that
    /// carries it has checked the permission.
    ///
    /// [`ControlRequest`]: crate::controller::requests::ControlRequest
    fn control_request<'a>(
        &'a self,
        _ctx: &'a crate::controller::plugins::ControllerCtx,
        _actor: &'a crate::controller::auth::Actor,
        name: &'a str,
        _data: Value,
    ) -> BoxFuture<'a, Result<Value, crate::controller::error::ApiError>> {
        let message = format!("plugin {} has no request \"{name}\"", self.info().name);
        Box::pin(async move {
            Err(crate::controller::error::ApiError::new(
                400,
                "unknown_request",
                message,
            ))
        })
    }
    /// A request from someone not logged in (`/api/v1/<plugin>/…` routes marked public in
    /// `controller/api.rs`), from `peer`. The plugin is responsible for rate limits.
    fn public_request<'a>(
        &'a self,
        _ctx: &'a crate::controller::plugins::ControllerCtx,
        _peer: Option<std::net::IpAddr>,
        name: &'a str,
        _data: Value,
    ) -> BoxFuture<'a, Result<Value, crate::controller::error::ApiError>> {
        let message = format!(
            "plugin {} has no public request \"{name}\"",
            self.info().name
        );
        Box::pin(async move { Err(crate::controller::error::ApiError::not_found(message)) })
    }
    /// Text appended to the controller's `/metrics` (Prometheus exposition). Must answer from
    /// what the plugin already has: never wait on a host or a game.
    fn metrics<'a>(
        &'a self,
        _ctx: &'a crate::controller::plugins::ControllerCtx,
    ) -> BoxFuture<'a, String> {
        Box::pin(async { String::new() })
    }
    /// Live figures for `GET /api/v1/plugins` (and its web page).
    fn status<'a>(
        &'a self,
        _ctx: &'a crate::controller::plugins::ControllerCtx,
    ) -> BoxFuture<'a, Value> {
        Box::pin(async { Value::Null })
    }
}

/// The host's part of a plugin. Calls are made in order from the host's event loops and must
/// not block: queue RCON commands, send link events, spawn for anything slow.
pub trait HostPlugin: Send + Sync {
    fn info(&self) -> &'static PluginInfo;
    /// A message from the game on one of the plugin's channels.
    fn ipc(&self, inst: &crate::host::plugins::InstanceCtx, channel: &str, data: Value);
    /// An event `<plugin>.<name>` from the controller.
    fn controller_event(&self, host: &crate::host::plugins::HostCtx, name: &str, data: Value);
    /// The game runs and knows its instance id and name.
    fn instance_started(&self, _inst: &crate::host::plugins::InstanceCtx) {}
    /// One line of the game's output (chat, joins, …), in order.
    fn line(
        &self,
        _inst: &crate::host::plugins::InstanceCtx,
        _line: &crate::host::factorio::log::LogLine,
    ) {
    }
}

/// One built-in plugin: its declaration and its parts.
pub struct Builtin {
    pub info: &'static PluginInfo,
    pub controller: fn() -> Option<Box<dyn ControllerPlugin>>,
    pub host: fn() -> Option<Box<dyn HostPlugin>>,
}

/// Every plugin compiled into this binary.
pub fn builtins() -> &'static [Builtin] {
    static ALL: &[Builtin] = &[
        ping::BUILTIN,
        global_chat::BUILTIN,
        research_sync::BUILTIN,
        statistics_exporter::BUILTIN,
        player_auth::BUILTIN,
        inventory_sync::BUILTIN,
        subspace_storage::BUILTIN,
    ];
    ALL
}

pub fn find(name: &str) -> Option<&'static Builtin> {
    builtins().iter().find(|b| b.info.name == name)
}

/// Parses a `PLUGINS` value: names separated by commas or spaces; every name must be known.
pub fn parse_enabled(list: &str) -> Result<Vec<&'static Builtin>, String> {
    let mut out: Vec<&'static Builtin> = Vec::new();
    for name in list
        .split([',', ' '])
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let Some(b) = find(name) else {
            let known: Vec<&str> = builtins().iter().map(|b| b.info.name).collect();
            return Err(format!(
                "PLUGINS names an unknown plugin '{name}'; known plugins: {}",
                known.join(", ")
            ));
        };
        if !out.iter().any(|o| o.info.name == b.info.name) {
            out.push(b);
        }
    }
    Ok(out)
}

/// The prefix of a message name `<plugin>.<message>`.
pub fn message_plugin(name: &str) -> Option<&str> {
    name.split_once('.').map(|(p, _)| p)
}

/// Every plugin's settings, for the schemas (whether or not the cluster enables it, so a stored
/// value is always checked against its declaration).
pub fn settings() -> Vec<crate::config::PluginSettings> {
    builtins()
        .iter()
        .map(|b| b.info.settings)
        .chain(std::iter::once(lua_only::SETTINGS))
        .collect()
}

/// The per-instance switch every plugin declares.
pub const fn load_plugin_field(
    name: &'static str,
    title: &'static str,
) -> crate::config::schema::Field {
    use crate::config::schema::{Default, Field, Kind};
    Field::new(name, Kind::Bool, Default::Bool(true))
        .title(title)
        .about("Run this plugin for this instance (its Lua is patched into the save).")
        .section("Plugins")
        .restart()
}

/// Every permission plugins add (for the one permission table).
pub fn permissions() -> impl Iterator<Item = &'static Permission> {
    builtins().iter().flat_map(|b| b.info.permissions.iter())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_the_plugins_list() {
        assert!(parse_enabled("").unwrap().is_empty());
        let list = parse_enabled(" ping, ping ").unwrap();
        assert_eq!(list.len(), 1);
        let err = parse_enabled("ping,nope").err().unwrap();
        assert!(err.contains("'nope'"), "{err}");
        assert!(err.contains("known plugins: ping"), "{err}");
    }

    #[test]
    fn channels_and_switches() {
        let info = ping::BUILTIN.info;
        assert!(info.owns_channel("ping:message"));
        assert!(!info.owns_channel("pingpong:message"));
        assert!(!info.owns_channel("player_event"));
        assert!(info.enabled_for(&serde_json::json!({})));
        assert!(!info.enabled_for(&serde_json::json!({"ping": {"load_plugin": false}})));
        for b in builtins() {
            let switch = format!("{}.load_plugin", b.info.name);
            assert!(
                b.info.settings.instance.iter().any(|f| f.name == switch),
                "{} does not declare {switch}",
                b.info.name
            );
        }
    }

    #[test]
    fn every_lua_module_orders_and_has_its_files() {
        let mut modules = vec![CORE_MODULE.to_module()];
        modules.extend(
            builtins()
                .iter()
                .filter_map(|b| b.info.lua)
                .map(|l| l.to_module()),
        );
        let ordered = patch::order_modules(&modules).unwrap();
        assert_eq!(ordered[0].name, "clusterio");
        for m in &modules {
            for f in m.load.iter().chain(&m.require) {
                assert!(
                    m.files.iter().any(|(p, _)| p == f),
                    "{} lists {f} but has no such file",
                    m.name
                );
            }
        }
    }
}
