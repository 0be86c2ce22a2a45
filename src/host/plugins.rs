//! The host's side of plugins: which run for an instance, the Lua modules patched into its
//! save, routing of IPC messages and controller events, and the contexts plugins get.

use super::Host;
use super::instance::{Instance, Status};
use crate::plugins::{self, HostPlugin, PluginVersion};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// How long a start waits for the controller to name the cluster's plugins (a host that boots
/// while the controller is away then uses the set it last heard).
const PLUGIN_SET_WAIT: Duration = Duration::from_secs(10);
/// The file a host keeps the cluster's last plugin set in.
pub const PLUGIN_CACHE_FILE: &str = "cluster-plugins.json";
/// Commands waiting in one instance's RCON queue, at most.
const RCON_QUEUE: usize = 4096;

/// The plugins this host has loaded (`PLUGINS`, or every built-in when empty).
pub fn load(list: &str) -> Result<Vec<Box<dyn HostPlugin>>, String> {
    let chosen = if list.trim().is_empty() {
        plugins::builtins().iter().collect()
    } else {
        plugins::parse_enabled(list)?
    };
    Ok(chosen.into_iter().filter_map(|b| (b.host)()).collect())
}

/// One ordered queue of RCON commands per running instance: commands run one after another in
/// the order they were queued, whoever queued them.
pub struct RconQueue {
    tx: mpsc::Sender<QueuedCommand>,
}

/// A command and, when someone waits for it, where its reply goes.
type QueuedCommand = (String, Option<oneshot::Sender<Result<String, String>>>);

impl RconQueue {
    pub fn start(server: Arc<dyn super::backend::GameServer>, instance: String) -> RconQueue {
        let (tx, mut rx) = mpsc::channel::<QueuedCommand>(RCON_QUEUE);
        tokio::spawn(async move {
            while let Some((command, reply)) = rx.recv().await {
                let result = server.rcon(&command).await.map_err(|e| e.to_string());
                match reply {
                    Some(r) => {
                        let _ = r.send(result);
                    }
                    None => match result {
                        Ok(out) if !out.trim().is_empty() => {
                            tracing::warn!(instance = %instance, output = %out.trim(), "a Lua call answered unexpectedly")
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!(instance = %instance, error = %e, "a queued RCON command failed")
                        }
                    },
                }
            }
        });
        RconQueue { tx }
    }

    /// Queues a command whose reply nobody waits for; a non-empty reply is logged.
    pub fn push(&self, command: String) -> Result<(), String> {
        self.tx
            .try_send((command, None))
            .map_err(|_| "the instance's RCON queue is full or closed".to_string())
    }

    /// Queues a command and waits for its reply.
    pub async fn call(&self, command: String) -> Result<String, String> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .try_send((command, Some(tx)))
            .map_err(|_| "the instance's RCON queue is full or closed".to_string())?;
        rx.await
            .map_err(|_| "the instance stopped before the command ran".to_string())?
    }
}

/// A Lua string literal (double-quoted) that Factorio reads back as exactly `s`.
pub fn lua_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\{:03}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl Host {
    /// Remembers the cluster's plugin set (from the handshake) and wakes starts waiting for it.
    pub(super) fn set_cluster_plugins(&self, set: Vec<PluginVersion>) {
        if let Ok(text) = serde_json::to_string(&set)
            && let Err(e) =
                crate::saves::write_atomic(&self.dir.join(PLUGIN_CACHE_FILE), text.as_bytes())
        {
            tracing::warn!(error = %e, "could not cache the cluster's plugin set");
        }
        self.cluster_plugins.send_replace(Some(set));
    }

    /// The cluster's plugin set: as the controller said, else (after a wait) the cached one.
    async fn cluster_plugin_names(&self) -> Vec<String> {
        let mut rx = self.cluster_plugins.subscribe();
        let known = tokio::time::timeout(PLUGIN_SET_WAIT, rx.wait_for(|s| s.is_some())).await;
        if let Ok(Ok(set)) = known
            && let Some(set) = set.as_ref()
        {
            return set.iter().map(|p| p.name.clone()).collect();
        }
        let cached: Vec<PluginVersion> = std::fs::read_to_string(self.dir.join(PLUGIN_CACHE_FILE))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        tracing::warn!(plugins = ?cached.iter().map(|p| &p.name).collect::<Vec<_>>(), "the controller has not named the cluster's plugins; using the set it last named");
        cached.into_iter().map(|p| p.name).collect()
    }

    /// The plugins that run for `inst` at its next start.
    pub(super) async fn plugins_for(&self, inst: &Instance) -> Vec<&'static str> {
        let cluster = self.cluster_plugin_names().await;
        let config = inst.stored_config();
        self.plugins
            .iter()
            .map(|p| p.info())
            .filter(|i| cluster.iter().any(|c| c == i.name) && i.enabled_for(&config))
            .map(|i| i.name)
            .collect()
    }

    /// What this host tells the controller it runs.
    pub fn plugin_versions(plugins: &[Box<dyn HostPlugin>]) -> Vec<PluginVersion> {
        plugins
            .iter()
            .map(|p| PluginVersion {
                name: p.info().name.into(),
                version: p.info().version.into(),
            })
            .collect()
    }

    fn plugin(&self, name: &str) -> Option<&dyn HostPlugin> {
        self.plugins
            .iter()
            .find(|p| p.info().name == name)
            .map(|p| p.as_ref())
    }

    /// A message from a game: the core's own channel, else the plugin that owns it.
    pub(super) fn route_ipc(self: &Arc<Self>, inst: &Arc<Instance>, channel: &str, data: Value) {
        if self.route_lua_ipc(inst, channel, &data) {
            return;
        }
        let active = inst.active_plugins();
        let owner = self
            .plugins
            .iter()
            .find(|p| active.contains(&p.info().name) && p.info().owns_channel(channel));
        match owner {
            Some(p) => {
                let ctx = InstanceCtx::new(self, inst, p.info().name);
                p.ipc(&ctx, channel, data);
            }
            // No built-in claims it: an external plugin may own it; the controller routes it.
            None if !plugins::builtins()
                .iter()
                .any(|b| b.info.owns_channel(channel)) =>
            {
                self.link.send_event(
                    &format!("{}ipc", plugins::external::HOST_PREFIX),
                    json!({ "instance_id": inst.id, "channel": channel, "data": data }),
                );
            }
            None => {
                tracing::warn!(instance = %inst.name, channel, "IPC message on a channel no running plugin owns; dropped");
                self.link.send_event(
                    "ipc_error",
                    json!({ "instance_id": inst.id, "kind": "unhandled", "channel": channel }),
                );
            }
        }
    }

    /// An event `<plugin>.<name>` from the controller.
    pub(super) fn route_plugin_event(self: &Arc<Self>, name: &str, data: Value) -> bool {
        if let Some(what) = name.strip_prefix(plugins::external::HOST_PREFIX) {
            self.external_plugin_event(what, data);
            return true;
        }
        if name.starts_with("plugin_lua.") {
            self.plugin_lua_event(name, data);
            return true;
        }
        let Some(plugin) = plugins::message_plugin(name).and_then(|p| self.plugin(p)) else {
            return false;
        };
        let ctx = HostCtx {
            host: self.clone(),
            plugin: plugin.info().name,
        };
        plugin.controller_event(&ctx, name, data);
        true
    }

    /// A line of a game's output, for the plugins that read the log.
    pub(super) fn plugins_line(
        self: &Arc<Self>,
        inst: &Arc<Instance>,
        line: &super::factorio::log::LogLine,
    ) {
        let active = inst.active_plugins();
        for p in self
            .plugins
            .iter()
            .filter(|p| active.contains(&p.info().name))
        {
            p.line(&InstanceCtx::new(self, inst, p.info().name), line);
        }
    }

    /// After the game runs: tell it who it is, then let its plugins start.
    pub(super) fn plugins_started(self: &Arc<Self>, inst: &Arc<Instance>) {
        for p in &self.plugins {
            if inst.active_plugins().contains(&p.info().name) {
                p.instance_started(&InstanceCtx::new(self, inst, p.info().name));
            }
        }
    }
}

impl Host {
    /// An external plugin's call into a game, through the instance's ordered RCON queue:
    /// `rcon` (answered with `external_plugin.rcon_result`) or `send` (`/sc <function>(json)`).
    fn external_plugin_event(self: &Arc<Self>, what: &str, data: Value) {
        let Some(id) = data["instance_id"].as_i64() else {
            return;
        };
        let queue = self
            .instance(id)
            .ok()
            .filter(|i| i.status() == Status::Running)
            .and_then(|i| i.rcon_queue());
        match what {
            "rcon" => {
                let call = data["call"].clone();
                let command = data["command"].as_str().unwrap_or_default().to_string();
                let host = self.clone();
                tokio::spawn(async move {
                    let result = match queue {
                        Some(q) => q.call(command).await,
                        None => Err(format!("instance {id} is not running")),
                    };
                    let mut answer = json!({ "instance_id": id, "call": call });
                    match result {
                        Ok(out) => answer["output"] = json!(out),
                        Err(e) => answer["error"] = json!(e),
                    }
                    host.link.send_event(
                        &format!("{}rcon_result", plugins::external::HOST_PREFIX),
                        answer,
                    );
                });
            }
            "send" => {
                let function = data["function"].as_str().unwrap_or_default();
                let valid = !function.is_empty()
                    && function
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
                match queue {
                    Some(q) if valid => {
                        let cmd =
                            format!("/sc {function}({})", lua_string(&data["data"].to_string()));
                        if let Err(e) = q.push(cmd) {
                            tracing::warn!(instance_id = id, error = %e, "external plugin message not queued");
                        }
                    }
                    _ => tracing::debug!(
                        instance_id = id,
                        "external plugin message for an instance not running; dropped"
                    ),
                }
            }
            other => tracing::debug!(event = other, "unknown external plugin event"),
        }
    }
}

/// What a plugin's host part gets for one event from the controller.
#[derive(Clone)]
pub struct HostCtx {
    host: Arc<Host>,
    plugin: &'static str,
}

impl HostCtx {
    /// The running instance an event names (`instance_id`), when the plugin runs for it.
    pub fn instance_of(&self, data: &Value) -> Option<InstanceCtx> {
        let id = data["instance_id"].as_i64()?;
        let inst = self.host.instance(id).ok()?;
        if inst.status() != Status::Running || !inst.active_plugins().contains(&self.plugin) {
            tracing::debug!(plugin = self.plugin, instance = %inst.name, "event for an instance not running the plugin");
            return None;
        }
        Some(InstanceCtx::new(&self.host, &inst, self.plugin))
    }

    /// An event to the controller's part of the plugin.
    pub fn send_event(&self, name: &str, data: Value) {
        self.host.link.send_event(name, data);
    }

    /// The host's working directory (plugins keep their files under `plugins/<name>/`).
    pub fn dir(&self) -> std::path::PathBuf {
        self.host.dir.clone()
    }

    /// Is the link to the controller up now?
    pub fn connected(&self) -> bool {
        self.host.link.is_connected()
    }

    /// A request to the controller's part of the plugin.
    pub async fn request(
        &self,
        name: &str,
        data: Value,
        timeout: Duration,
    ) -> Result<Value, crate::link::frame::ErrorBody> {
        self.host.link.request(name, data, timeout).await
    }

    /// Every instance of this host that runs now with the plugin.
    pub fn running_instances(&self) -> Vec<InstanceCtx> {
        self.host
            .instances()
            .into_iter()
            .filter(|i| i.status() == Status::Running && i.active_plugins().contains(&self.plugin))
            .map(|i| InstanceCtx::new(&self.host, &i, self.plugin))
            .collect()
    }
}

/// What a plugin's host part gets for one instance.
#[derive(Clone)]
pub struct InstanceCtx {
    pub id: i64,
    pub name: String,
    host: Arc<Host>,
    inst: Arc<Instance>,
    plugin: &'static str,
}

impl InstanceCtx {
    fn new(host: &Arc<Host>, inst: &Arc<Instance>, plugin: &'static str) -> Self {
        InstanceCtx {
            id: inst.id,
            name: inst.name.clone(),
            host: host.clone(),
            inst: inst.clone(),
            plugin,
        }
    }

    /// The plugin's part of the instance config (`config["<plugin>"]`).
    pub fn config(&self) -> Value {
        self.host.settings(&self.inst)[self.plugin].clone()
    }

    /// An event to the controller about this instance (`instance_id` is added).
    pub fn send_event(&self, name: &str, mut data: Value) {
        if !data.is_object() {
            data = json!({ "data": data });
        }
        data["instance_id"] = json!(self.id);
        self.host.link.send_event(name, data);
    }

    /// Queues a console command in the instance's ordered RCON queue.
    pub fn rcon(&self, command: String) {
        match self.inst.rcon_queue() {
            Some(q) => {
                if let Err(e) = q.push(command) {
                    tracing::warn!(plugin = self.plugin, instance = %self.name, error = %e, "RCON command not queued");
                }
            }
            None => {
                tracing::debug!(plugin = self.plugin, instance = %self.name, "instance not running; RCON command dropped")
            }
        }
    }

    /// Queues `/sc <function>("<json>")`: the usual way to hand a game data.
    pub fn call_lua(&self, function: &str, data: &Value) {
        self.rcon(format!("/sc {function}({})", lua_string(&data.to_string())));
    }

    /// The controller URL this host connects to (`controller_url`).
    pub fn controller_url(&self) -> String {
        self.host.cfg.controller_url.clone()
    }

    /// The host this instance runs on.
    pub fn host(&self) -> HostCtx {
        HostCtx {
            host: self.host.clone(),
            plugin: self.plugin,
        }
    }

    /// The instance's saves directory (what the game loads its latest save from).
    pub fn saves_dir(&self) -> std::path::PathBuf {
        self.inst.saves_dir()
    }

    /// Whether the instance still runs.
    pub fn running(&self) -> bool {
        self.inst.status() == Status::Running
    }

    /// A request to the controller's part of the plugin (`instance_id` is added).
    pub async fn request(
        &self,
        name: &str,
        mut data: Value,
        timeout: Duration,
    ) -> Result<Value, crate::link::frame::ErrorBody> {
        data["instance_id"] = json!(self.id);
        self.host.link.request(name, data, timeout).await
    }

    /// Queues a command and waits for its reply.
    pub async fn rcon_reply(&self, command: String) -> Result<String, String> {
        match self.inst.rcon_queue() {
            Some(q) => q.call(command).await,
            None => Err(format!("instance '{}' is not running", self.name)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lua_strings_are_escaped() {
        assert_eq!(lua_string("plain"), "\"plain\"");
        assert_eq!(lua_string("a\"b'c\\d\ne\rf"), "\"a\\\"b\\'c\\\\d\\ne\\rf\"");
        // NUL before a digit must not merge with it into another escape.
        assert_eq!(lua_string("\u{0}1"), "\"\\0001\"");
        assert_eq!(lua_string("\u{1}x\u{7f}"), "\"\\001x\\127\"");
        assert_eq!(lua_string("ünï ✓"), "\"ünï ✓\"");
    }
}
