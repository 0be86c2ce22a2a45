//! The controller's side of plugins: the enabled set, their SQLite migrations, routing of
//! `<plugin>.<message>` events from hosts, the context plugins get, and `GET /api/v1/plugins`.

use super::Controller;
use crate::plugins::{self, Builtin, ControllerPlugin, PluginVersion};
use crate::store::{self, Store, StoreError};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

/// The plugins the cluster runs, and what each host said it runs.
pub struct Plugins {
    enabled: Vec<&'static Builtin>,
    parts: Vec<Box<dyn ControllerPlugin>>,
    hosts: Mutex<HashMap<i64, Vec<PluginVersion>>>,
}

impl Plugins {
    /// Parses `PLUGINS` (an unknown name is a usage error).
    pub fn load(list: &str) -> Result<Plugins, crate::UsageError> {
        let enabled = plugins::parse_enabled(list).map_err(crate::UsageError)?;
        let parts = enabled.iter().filter_map(|b| (b.controller)()).collect();
        Ok(Plugins {
            enabled,
            parts,
            hosts: Mutex::new(HashMap::new()),
        })
    }

    /// The set hosts are told in the handshake.
    pub fn versions(&self) -> Vec<PluginVersion> {
        self.enabled
            .iter()
            .map(|b| PluginVersion {
                name: b.info.name.into(),
                version: b.info.version.into(),
            })
            .collect()
    }

    pub fn is_enabled(&self, name: &str) -> bool {
        self.enabled.iter().any(|b| b.info.name == name)
    }

    pub fn host_said(&self, host_id: i64, list: Vec<PluginVersion>) {
        if let Ok(mut h) = self.hosts.lock() {
            h.insert(host_id, list);
        }
    }

    /// Does `host_id` run `plugin` (as it said in its last hello)?
    pub fn host_runs(&self, host_id: i64, plugin: &str) -> bool {
        self.hosts
            .lock()
            .map(|h| {
                h.get(&host_id)
                    .is_some_and(|l| l.iter().any(|p| p.name == plugin))
            })
            .unwrap_or(false)
    }

    fn part(&self, name: &str) -> Option<&dyn ControllerPlugin> {
        self.parts
            .iter()
            .find(|p| p.info().name == name)
            .map(|p| p.as_ref())
    }
}

/// Applies each enabled plugin's migrations not yet applied, one transaction each.
pub async fn migrate(store: &Store, plugins: &Plugins) -> anyhow::Result<()> {
    for b in &plugins.enabled {
        apply_migrations(
            store,
            b.info.name,
            b.info.migrations,
            &format!("plugin {}'s tables", b.info.name),
        )
        .await?;
    }
    Ok(())
}

/// Applies the steps of one named set of tables not yet applied (recorded in
/// `plugin_migrations` under `name`), in one transaction. `what` names the set in errors.
pub async fn apply_migrations(
    store: &Store,
    name: &'static str,
    steps: &'static [&'static str],
    what: &str,
) -> anyhow::Result<()> {
    let what = what.to_string();
    let w = what.clone();
    store
        .write(move |c| {
            c.execute_batch(
                "CREATE TABLE IF NOT EXISTS plugin_migrations (
                    plugin TEXT NOT NULL,
                    step INTEGER NOT NULL,
                    applied_at INTEGER NOT NULL,
                    PRIMARY KEY (plugin, step)
                );",
            )?;
            let done: i64 = c.query_row(
                "SELECT COUNT(*) FROM plugin_migrations WHERE plugin = ?1",
                [name],
                |r| r.get(0),
            )?;
            let done = usize::try_from(done).unwrap_or(usize::MAX);
            if done > steps.len() {
                return Err(StoreError::Invalid(format!(
                    "{w} were written by a newer clustorio (step {done}, this build knows {}); upgrade clustorio",
                    steps.len()
                )));
            }
            for (i, sql) in steps.iter().enumerate().skip(done) {
                c.execute_batch(sql)?;
                c.execute(
                    "INSERT INTO plugin_migrations (plugin, step, applied_at) VALUES (?1, ?2, ?3)",
                    rusqlite::params![name, (i + 1) as i64, store::now_ms()],
                )?;
            }
            Ok(())
        })
        .await
        .map_err(|e| anyhow::anyhow!("migrating {what}: {e}"))
}

/// What a plugin's controller part gets.
#[derive(Clone)]
pub struct ControllerCtx {
    ctl: Weak<Controller>,
    plugin: &'static str,
    store: Store,
}

impl ControllerCtx {
    pub fn store(&self) -> &Store {
        &self.store
    }

    fn controller(&self) -> Option<Arc<Controller>> {
        self.ctl.upgrade()
    }

    /// A controller setting of this plugin by full name (`<plugin>.<key>`), or its default.
    pub fn setting(&self, name: &str) -> Value {
        self.controller()
            .map(|ctl| ctl.settings().plugin_setting(name))
            .unwrap_or(Value::Null)
    }

    /// Where players connect to an instance: its host's address and the instance's game port.
    pub async fn game_address(&self, instance_id: i64, host_id: i64) -> Option<String> {
        let (rec, hosts) = self
            .store
            .read(move |c| {
                Ok((
                    store::instances::get(c, &instance_id.to_string())?,
                    store::hosts::list(c)?,
                ))
            })
            .await
            .ok()?;
        let host = hosts.into_iter().find(|h| h.id == host_id)?;
        let port = rec.game_port?;
        let address = Some(host.address).filter(|a| !a.is_empty())?;
        Some(format!("{address}:{port}"))
    }

    pub async fn instance_name(&self, id: i64) -> Option<String> {
        self.store
            .read(move |c| store::instances::get(c, &id.to_string()))
            .await
            .ok()
            .map(|r| r.name)
    }

    /// Sends `<plugin>.<name>` to the host of one instance (`instance_id` is added). Returns
    /// whether a connected host running the plugin got it.
    pub async fn send_to_instance(&self, instance_id: i64, name: &str, mut data: Value) -> bool {
        let Some(ctl) = self.controller() else {
            return false;
        };
        let Ok(rec) = self
            .store
            .read(move |c| store::instances::get(c, &instance_id.to_string()))
            .await
        else {
            return false;
        };
        let Some(host) = rec.host_id else {
            return false;
        };
        if !ctl.hub.host_connected(host) || !ctl.plugins.host_runs(host, self.plugin) {
            return false;
        }
        data["instance_id"] = json!(instance_id);
        ctl.hub.send_to_host(host, name, data);
        ctl.metrics.plugin_message(self.plugin, "out");
        true
    }

    /// Publishes an event to control clients (web UI, ctl) that have `permission`.
    pub fn publish(&self, name: &'static str, data: Value, permission: &'static str) {
        if let Some(ctl) = self.controller() {
            ctl.hub.publish(super::hub::Event {
                name,
                data,
                permission,
                to_hosts: false,
                instance_view: false,
            });
        }
    }

    /// Is `host_id` connected now, running this plugin?
    pub fn host_ready(&self, host_id: i64) -> bool {
        self.controller().is_some_and(|ctl| {
            ctl.hub.host_connected(host_id) && ctl.plugins.host_runs(host_id, self.plugin)
        })
    }

    /// Is `host_id` connected now (whatever plugins it runs)?
    pub fn host_is_connected(&self, host_id: i64) -> bool {
        self.controller()
            .is_some_and(|ctl| ctl.hub.host_connected(host_id))
    }

    /// Sends `<plugin>.<name>` to a connected host as is (the caller names the instance).
    pub fn send_to_host(&self, host_id: i64, name: &str, data: Value) {
        if let Some(ctl) = self.controller() {
            ctl.hub.send_to_host(host_id, name, data);
            ctl.metrics.plugin_message(self.plugin, "out");
        }
    }

    /// Every instance that runs (by its last report) with the plugin enabled: `(id, name,
    /// host_id)`.
    pub async fn running_instances(&self) -> Vec<(i64, String, i64)> {
        let Ok(all) = self.store.read(store::instances::list).await else {
            return Vec::new();
        };
        let plugin = self.plugin;
        all.into_iter()
            .filter(|r| {
                r.status == "running" && r.config[plugin]["load_plugin"].as_bool() != Some(false)
            })
            .filter_map(|r| Some((r.id, r.name, r.host_id?)))
            .collect()
    }

    /// Sends `<plugin>.<name>` for every running instance with the plugin (except `except`).
    /// Returns how many it went to.
    pub async fn broadcast(&self, name: &str, data: &Value, except: Option<i64>) -> usize {
        let Some(ctl) = self.controller() else {
            return 0;
        };
        let Ok(all) = self.store.read(store::instances::list).await else {
            return 0;
        };
        let plugin = self.plugin;
        let mut sent = 0;
        for rec in all {
            let Some(host) = rec.host_id else { continue };
            let running = rec.status == "running";
            let enabled = rec.config[plugin]["load_plugin"].as_bool() != Some(false);
            if Some(rec.id) == except
                || !running
                || !enabled
                || !ctl.hub.host_connected(host)
                || !ctl.plugins.host_runs(host, plugin)
            {
                continue;
            }
            let mut d = data.clone();
            d["instance_id"] = json!(rec.id);
            ctl.hub.send_to_host(host, name, d);
            ctl.metrics.plugin_message(plugin, "out");
            sent += 1;
        }
        sent
    }
}

impl Controller {
    fn plugin_ctx(&self, plugin: &'static str) -> ControllerCtx {
        ControllerCtx {
            ctl: self.me.clone(),
            plugin,
            store: self.store.clone(),
        }
    }

    /// An event `<plugin>.<message>` from a host (the caller has checked that the instance it
    /// names is this host's): counted and handed to the plugin. Returns false when no plugin owns it.
    pub(super) async fn plugin_event(&self, host_id: i64, name: &str, data: Value) -> bool {
        let Some(plugin) = plugins::message_plugin(name).and_then(|p| self.plugins.part(p)) else {
            return false;
        };
        let pname = plugin.info().name;
        self.metrics.plugin_message(pname, "in");
        let ctx = self.plugin_ctx(pname);
        plugin.host_event(&ctx, host_id, name, data).await;
        true
    }

    /// A host's link came up: tell the plugins.
    pub(super) async fn plugins_host_connected(&self, host_id: i64) {
        for p in &self.plugins.parts {
            let ctx = self.plugin_ctx(p.info().name);
            p.host_connected(&ctx, host_id).await;
        }
    }

    /// A user's request `<plugin>.<message>` (permission already checked).
    pub(super) async fn plugin_control(
        &self,
        actor: &super::auth::Actor,
        name: &str,
        data: Value,
    ) -> Result<Value, super::error::ApiError> {
        let plugin = plugins::message_plugin(name)
            .and_then(|p| self.plugins.part(p))
            .ok_or_else(|| {
                super::error::ApiError::new(
                    409,
                    "plugin_disabled",
                    format!(
                        "the plugin {} is not enabled on this cluster (PLUGINS)",
                        plugins::message_plugin(name).unwrap_or(name)
                    ),
                )
            })?;
        let ctx = self.plugin_ctx(plugin.info().name);
        plugin.control_request(&ctx, actor, name, data).await
    }

    /// A request from someone not logged in, to `<plugin>.<message>`.
    pub(super) async fn plugin_public(
        &self,
        peer: Option<std::net::IpAddr>,
        name: &str,
        data: Value,
    ) -> Result<Value, super::error::ApiError> {
        let plugin = plugins::message_plugin(name)
            .and_then(|p| self.plugins.part(p))
            .ok_or_else(|| {
                super::error::ApiError::not_found(format!(
                    "the plugin {} is not enabled on this cluster (PLUGINS)",
                    plugins::message_plugin(name).unwrap_or(name)
                ))
            })?;
        let ctx = self.plugin_ctx(plugin.info().name);
        plugin.public_request(&ctx, peer, name, data).await
    }

    /// What every plugin adds to `/metrics`.
    pub(super) async fn plugin_metrics(&self) -> String {
        let mut out = String::new();
        for p in &self.plugins.parts {
            out.push_str(&p.metrics(&self.plugin_ctx(p.info().name)).await);
        }
        out
    }

    /// A request `<plugin>.<message>` from a host.
    pub(super) async fn plugin_request(
        &self,
        host_id: i64,
        name: &str,
        data: Value,
    ) -> Option<Result<Value, crate::link::ErrorBody>> {
        let plugin = plugins::message_plugin(name).and_then(|p| self.plugins.part(p))?;
        self.metrics.plugin_message(plugin.info().name, "in");
        let ctx = self.plugin_ctx(plugin.info().name);
        Some(plugin.host_request(&ctx, host_id, name, data).await)
    }

    /// `GET /api/v1/plugins`: every built-in, whether the cluster enables it, and what each
    /// host runs.
    pub async fn plugin_list(&self) -> Value {
        let host_names: HashMap<i64, String> = self
            .store
            .read(store::hosts::list)
            .await
            .map(|l| l.into_iter().map(|h| (h.id, h.name)).collect())
            .unwrap_or_default();
        let hosts = self
            .plugins
            .hosts
            .lock()
            .map(|h| h.clone())
            .unwrap_or_default();
        let mut out = Vec::new();
        for b in plugins::builtins() {
            let info = b.info;
            let mut on_hosts: Vec<Value> = hosts
                .iter()
                .filter_map(|(id, list)| {
                    let p = list.iter().find(|p| p.name == info.name)?;
                    Some(json!({
                        "host_id": id,
                        "host": host_names.get(id),
                        "version": p.version,
                        "connected": self.hub.host_connected(*id),
                    }))
                })
                .collect();
            on_hosts.sort_by_key(|v| v["host_id"].as_i64());
            let status = match self.plugins.part(info.name) {
                Some(p) => p.status(&self.plugin_ctx(info.name)).await,
                None => Value::Null,
            };
            out.push(json!({
                "name": info.name,
                "title": info.title,
                "description": info.description,
                "version": info.version,
                "enabled": self.plugins.is_enabled(info.name),
                "has_lua": info.lua.is_some(),
                "permissions": info.permissions.iter().map(|p| p.name).collect::<Vec<_>>(),
                "hosts": on_hosts,
                "status": status,
            }));
        }
        json!(out)
    }
}
