//! The host's side of plugins' Lua bundles (external and Lua-only plugins): before an instance
//! starts, the bundles the controller lists for it are fetched (cached by SHA-256 under
//! `plugin-lua-cache/`, checked on arrival) and patched into the save with the built-in modules.
//! For Lua-only plugins the host also carries the reserved channels: `<name>:broadcast` and
//! `<name>:kv_get` / `<name>:kv_set` / `<name>:kv_delete` (see `docs/plugins.md` §3).

use super::Host;
use super::instance::{Instance, Status};
use crate::controller::plugin_lua::{self as store_side, CHECKSUM_HEADER, Kind, LuaBundle};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// Bundles fetched from the controller, by checksum: `<host dir>/plugin-lua-cache/<sha256>.json`.
pub const CACHE_DIR: &str = "plugin-lua-cache";
/// What the controller last listed for an instance: `<instance dir>/plugin-lua.json`.
const LIST_FILE: &str = "plugin-lua.json";
/// How long a bundle fetch from the controller may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a start waits for the controller's list before it uses the last one (as long as
/// it waits for the cluster's plugin set).
const LIST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a key–value request from a game waits for the controller.
const KV_TIMEOUT: Duration = Duration::from_secs(10);

/// One bundle the controller wants an instance to have.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Wanted {
    pub plugin: String,
    pub kind: Kind,
    pub version: String,
    pub sha256: String,
}

fn http() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(FETCH_TIMEOUT)
        .build()
        .map_err(|e| format!("building the HTTP client: {e}"))
}

impl Host {
    fn controller_path(&self, path: &str) -> String {
        format!("{}{path}", self.cfg.controller_url.trim_end_matches('/'))
    }

    /// What the controller lists for `inst`; the list it gave last time when it cannot be
    /// asked (so a host keeps starting games while the controller is away).
    async fn wanted_bundles(&self, inst: &Instance) -> Vec<Wanted> {
        let cached = inst.dir.join(LIST_FILE);
        let asked = async {
            let resp = http()?
                .get(self.controller_path(&format!("/api/v1/host/plugin-lua?instance={}", inst.id)))
                .bearer_auth(self.link.token())
                .timeout(LIST_TIMEOUT)
                .send()
                .await
                .map_err(|e| format!("asking the controller for plugin Lua: {e}"))?;
            let status = resp.status();
            let body: Value = resp
                .json()
                .await
                .map_err(|e| format!("reading the plugin Lua list: {e}"))?;
            if !status.is_success() {
                return Err(format!(
                    "the controller refused the plugin Lua list ({status}): {}",
                    body["error"]["message"]
                ));
            }
            serde_json::from_value::<Vec<Wanted>>(body)
                .map_err(|e| format!("the controller's plugin Lua list is malformed: {e}"))
        }
        .await;
        match asked {
            Ok(list) => {
                if let Ok(text) = serde_json::to_vec(&list)
                    && let Err(e) = crate::saves::write_atomic(&cached, &text)
                {
                    tracing::warn!(instance = %inst.name, error = %e, "could not cache the plugin Lua list");
                }
                list
            }
            Err(e) => {
                let list: Vec<Wanted> = std::fs::read(&cached)
                    .ok()
                    .and_then(|t| serde_json::from_slice(&t).ok())
                    .unwrap_or_default();
                tracing::warn!(instance = %inst.name, error = %e, cached = ?list.iter().map(|w| &w.plugin).collect::<Vec<_>>(), "using the plugin Lua list the controller gave last");
                list
            }
        }
    }

    /// One bundle: from the cache when its checksum matches, else from the controller (checked
    /// against the checksum the list named, then cached).
    async fn fetch_bundle(&self, w: &Wanted) -> Result<LuaBundle, String> {
        if w.sha256.len() != 64 || !w.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "the controller named a malformed checksum for plugin {}",
                w.plugin
            ));
        }
        let path = self.dir.join(CACHE_DIR).join(format!("{}.json", w.sha256));
        let bytes = match std::fs::read(&path) {
            Ok(b) if store_side::sha256_hex(&b) == w.sha256 => b,
            _ => {
                let resp = http()?
                    .get(self.controller_path(&format!("/api/v1/host/plugin-lua/{}", w.plugin)))
                    .bearer_auth(self.link.token())
                    .send()
                    .await
                    .map_err(|e| format!("fetching plugin {}'s Lua: {e}", w.plugin))?;
                if !resp.status().is_success() {
                    return Err(format!(
                        "fetching plugin {}'s Lua: the controller answered {}",
                        w.plugin,
                        resp.status()
                    ));
                }
                let header = resp
                    .headers()
                    .get(CHECKSUM_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                let b = resp
                    .bytes()
                    .await
                    .map_err(|e| format!("fetching plugin {}'s Lua: {e}", w.plugin))?
                    .to_vec();
                let got = store_side::sha256_hex(&b);
                if got != w.sha256 {
                    return Err(format!(
                        "plugin {}'s Lua arrived with SHA-256 {got}, not {} as listed (header said {header}); not used",
                        w.plugin, w.sha256
                    ));
                }
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| format!("creating {}: {e}", dir.display()))?;
                }
                if let Err(e) = crate::saves::write_atomic(&path, &b) {
                    tracing::warn!(plugin = %w.plugin, error = %e, "could not cache plugin Lua");
                }
                b
            }
        };
        let bundle: LuaBundle = serde_json::from_slice(&bytes)
            .map_err(|e| format!("plugin {}'s Lua bundle is malformed: {e}", w.plugin))?;
        if bundle.plugin != w.plugin {
            return Err(format!(
                "the bundle fetched for plugin {} is plugin {}'s",
                w.plugin, bundle.plugin
            ));
        }
        bundle
            .validate()
            .map_err(|e| format!("plugin {}'s Lua bundle: {e}", w.plugin))?;
        Ok(bundle)
    }

    /// The bundles `inst` gets at this start (fetched and checked). A name a built-in plugin of
    /// this host uses is left out.
    pub(super) async fn plugin_lua_bundles(
        &self,
        inst: &Instance,
    ) -> Result<Vec<(Kind, LuaBundle)>, String> {
        let mut out = Vec::new();
        for w in self.wanted_bundles(inst).await {
            if self.plugins.iter().any(|p| p.info().name == w.plugin) {
                tracing::warn!(plugin = %w.plugin, "plugin Lua named like a built-in plugin; left out");
                continue;
            }
            let bundle = self.fetch_bundle(&w).await?;
            out.push((w.kind, bundle));
        }
        Ok(out)
    }

    /// The Lua-only plugins of a game found running (after a host restart): those its save was
    /// patched with, by the list the controller gave at its start.
    pub(super) fn patched_lua_plugins(
        &self,
        inst: &Instance,
        patched: Option<&[String]>,
    ) -> Vec<String> {
        let Some(patched) = patched else {
            return Vec::new();
        };
        let listed: Vec<Wanted> = std::fs::read(inst.dir.join(LIST_FILE))
            .ok()
            .and_then(|t| serde_json::from_slice(&t).ok())
            .unwrap_or_default();
        listed
            .into_iter()
            .filter(|w| w.kind == Kind::Lua && patched.contains(&w.plugin))
            .map(|w| w.plugin)
            .collect()
    }

    /// A message from a game on a Lua-only plugin's reserved channel. Returns false when the
    /// channel is not one (the caller reports it as unhandled).
    pub(super) fn route_lua_ipc(
        self: &Arc<Self>,
        inst: &Arc<Instance>,
        channel: &str,
        data: &Value,
    ) -> bool {
        let Some((plugin, op)) = channel.split_once(':') else {
            return false;
        };
        if !inst.lua_plugins().iter().any(|p| p == plugin) {
            return false;
        }
        match op {
            "broadcast" => {
                self.link.send_event(
                    "plugin_lua.broadcast",
                    json!({ "instance_id": inst.id, "plugin": plugin, "data": data }),
                );
                true
            }
            "kv_get" | "kv_set" | "kv_delete" => {
                let host = self.clone();
                let inst = inst.clone();
                let plugin = plugin.to_string();
                let op = op.trim_start_matches("kv_").to_string();
                let data = data.clone();
                tokio::spawn(async move {
                    let request = json!({
                        "instance_id": inst.id,
                        "plugin": plugin,
                        "op": op,
                        "key": data["key"],
                        "value": data["value"],
                        "version": data["version"],
                    });
                    let answer = match host
                        .link
                        .request("plugin_lua.kv", request, KV_TIMEOUT)
                        .await
                    {
                        // A compare-and-set that found another version: not stored, with
                        // what is there now so the game can try again at once.
                        Ok(v) if v["stored"] == false => json!({
                            "ok": false,
                            "op": op,
                            "key": data["key"],
                            "value": v["value"],
                            "version": v["version"],
                            "conflict": true,
                            "ref": data["ref"],
                            "error": "conflict: the key has another version now",
                        }),
                        Ok(v) => json!({
                            "ok": true,
                            "op": op,
                            "key": data["key"],
                            "value": v["value"],
                            "version": v["version"],
                            "ref": data["ref"],
                        }),
                        Err(e) => json!({
                            "ok": false,
                            "op": op,
                            "key": data["key"],
                            "ref": data["ref"],
                            "error": e.message,
                        }),
                    };
                    call_lua(&inst, &format!("{plugin}_on_kv"), &answer);
                });
                true
            }
            _ => false,
        }
    }

    /// An event `plugin_lua.<name>` from the controller.
    pub(super) fn plugin_lua_event(self: &Arc<Self>, name: &str, data: Value) {
        if name != "plugin_lua.broadcast" {
            tracing::debug!(event = name, "unknown plugin Lua event");
            return;
        }
        let (Some(id), Some(plugin)) = (data["instance_id"].as_i64(), data["plugin"].as_str())
        else {
            tracing::warn!("malformed plugin_lua.broadcast");
            return;
        };
        let Ok(inst) = self.instance(id) else {
            return;
        };
        if inst.status() != Status::Running || !inst.lua_plugins().iter().any(|p| p == plugin) {
            tracing::debug!(instance = %inst.name, plugin, "broadcast for an instance not running the plugin");
            return;
        }
        let message = json!({
            "from_instance_id": data["from_instance_id"],
            "from_instance": data["from_instance"],
            "data": data["data"],
        });
        call_lua(&inst, &format!("{plugin}_on_broadcast"), &message);
    }
}

/// Queues `/sc <function>("<json>")` in the instance's RCON queue.
fn call_lua(inst: &Instance, function: &str, data: &Value) {
    let command = format!(
        "/sc {function}({})",
        super::plugins::lua_string(&data.to_string())
    );
    match inst.rcon_queue() {
        Some(q) => {
            if let Err(e) = q.push(command) {
                tracing::warn!(instance = %inst.name, function, error = %e, "plugin Lua call not queued");
            }
        }
        None => {
            tracing::debug!(instance = %inst.name, function, "instance not running; plugin Lua call dropped")
        }
    }
}
