//! What flows to and from external plugins: game IPC and events in, the plugin's calls out,
//! user requests through.

use super::{CALL_TIMEOUT, External, HOST_PREFIX, Live, lock};
use crate::controller::Controller;
use crate::controller::auth::Actor;
use crate::controller::error::ApiError;
use crate::host::factorio::log::{LineKind, parse_line};
use crate::link::ErrorBody;
use crate::store::{self, InstanceRecord};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// Requests a plugin may make.
pub const PLUGIN_REQUESTS: &[&str] = &[
    "instance_list",
    "instance_rcon",
    "instance_send",
    "plugin_kv_get",
    "plugin_kv_put",
    "plugin_kv_delete",
    "plugin_kv_list",
];
/// Longest RCON command or `instance_send` payload a plugin may send.
const MAX_COMMAND_BYTES: usize = 64 * 1024;

fn bad(message: impl Into<String>) -> ErrorBody {
    ErrorBody::new("bad_request", message)
}

/// Stores the Lua files a plugin uploads with its declaration (checked already) in the Lua
/// store hosts fetch from and patch into saves.
pub async fn store_lua(
    ctl: &Arc<Controller>,
    plugin: &str,
    version: &str,
    lua: &super::declaration::LuaDecl,
) -> Result<(), ErrorBody> {
    let files = lua
        .files
        .iter()
        .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
        .collect();
    crate::controller::plugin_lua::put(
        &ctl.store,
        plugin,
        version,
        lua.load.clone(),
        lua.require.clone(),
        files,
    )
    .await
    .map(|_| ())
    .map_err(|e| match e {
        store::StoreError::Invalid(m) => ErrorBody::new("bad_declaration", m),
        other => ErrorBody::new("internal", format!("storing the Lua files: {other}")),
    })
}

async fn instance(ctl: &Controller, data: &Value) -> Result<InstanceRecord, ErrorBody> {
    let key = match &data["instance"] {
        Value::Number(n) => n.to_string(),
        Value::String(s) if !s.is_empty() => s.clone(),
        _ => return Err(bad("\"instance\" (an instance id or name) is required")),
    };
    ctl.store
        .read(move |c| store::instances::get(c, &key))
        .await
        .map_err(|e| ErrorBody::new("not_found", e.to_string()))
}

/// The instance, if the plugin is enabled on it and it runs on a connected host.
async fn reachable(
    ctl: &Controller,
    live: &Live,
    data: &Value,
) -> Result<(InstanceRecord, i64), ErrorBody> {
    let rec = instance(ctl, data).await?;
    let name = live.name();
    if !lock(&live.decl).enabled_for(&rec.config) {
        return Err(ErrorBody::new(
            "forbidden",
            format!(
                "plugin {name} is not enabled on instance '{}' ({name}.load_plugin is false)",
                rec.name
            ),
        ));
    }
    let Some(host) = rec.host_id else {
        return Err(ErrorBody::new(
            "not_running",
            format!("instance '{}' is not assigned to a host", rec.name),
        ));
    };
    if rec.status != "running" || !ctl.external_host_connected(host) {
        return Err(ErrorBody::new(
            "not_running",
            format!("instance '{}' is not running", rec.name),
        ));
    }
    Ok((rec, host))
}

/// The plugin's part of an instance's config, as the schema has it now: each declared field
/// (key without the `<plugin>.` prefix) with its value, or its default when none is stored or
/// the stored one no longer fits (a field redeclared with another type). Values left under
/// fields the plugin no longer declares are not shown to it.
pub fn plugin_config(
    schema: &crate::config::schema::Schema,
    plugin: &str,
    stored: &Value,
) -> Value {
    let resolved = schema.resolve(stored);
    let prefix = format!("{plugin}.");
    let mut out = serde_json::Map::new();
    for f in schema.fields() {
        let Some(key) = f.name.strip_prefix(&prefix) else {
            continue;
        };
        let value = crate::config::schema::get_path(&resolved, f.name)
            .filter(|v| f.accepts(v))
            .cloned()
            .unwrap_or_else(|| f.default.to_value());
        out.insert(key.to_string(), value);
    }
    Value::Object(out)
}

/// A request from the plugin's process.
pub async fn plugin_request(
    ctl: &Arc<Controller>,
    live: &Arc<Live>,
    name: &str,
    data: Value,
) -> Result<Value, ErrorBody> {
    let plugin = live.name();
    match name {
        "instance_list" => {
            let all = ctl
                .store
                .read(store::instances::list)
                .await
                .map_err(|e| ErrorBody::new("internal", e.to_string()))?;
            let decl = lock(&live.decl).clone();
            let schemas = ctl.schemas.get();
            Ok(json!(
                all.into_iter()
                    .map(|r| json!({
                        "id": r.id,
                        "name": r.name,
                        "status": r.status,
                        "host_id": r.host_id,
                        "enabled": decl.enabled_for(&r.config),
                        "config": plugin_config(&schemas.instance, &decl.name, &r.config),
                    }))
                    .collect::<Vec<_>>()
            ))
        }
        "instance_rcon" => {
            let command = data["command"]
                .as_str()
                .ok_or_else(|| bad("\"command\" (a string) is required"))?
                .to_string();
            if command.len() > MAX_COMMAND_BYTES || command.contains('\n') {
                return Err(bad(format!(
                    "the command must be one line of at most {MAX_COMMAND_BYTES} bytes"
                )));
            }
            let (rec, host) = reachable(ctl, live, &data).await?;
            let (call, rx) = ctl.external.new_call();
            ctl.external_send_to_host(
                host,
                &format!("{HOST_PREFIX}rcon"),
                json!({ "instance_id": rec.id, "call": call, "command": command, "plugin": plugin }),
            );
            match tokio::time::timeout(CALL_TIMEOUT, rx).await {
                Ok(Ok(r)) => r,
                Ok(Err(_)) => Err(ErrorBody::new("internal", "the call was dropped")),
                Err(_) => {
                    ctl.external.forget_call(call);
                    Err(ErrorBody::new(
                        "timeout",
                        format!(
                            "instance '{}' did not answer within {CALL_TIMEOUT:?}",
                            rec.name
                        ),
                    ))
                }
            }
        }
        "instance_send" => {
            let function = data["function"]
                .as_str()
                .ok_or_else(|| {
                    bad("\"function\" (a Lua function the declaration names) is required")
                })?
                .to_string();
            if !lock(&live.decl).lua_functions.contains(&function) {
                return Err(ErrorBody::new(
                    "forbidden",
                    format!(
                        "Lua function \"{function}\" is not in the declaration's lua_functions"
                    ),
                ));
            }
            let payload = data.get("data").cloned().unwrap_or(Value::Null);
            if payload.to_string().len() > MAX_COMMAND_BYTES {
                return Err(bad(format!("\"data\" exceeds {MAX_COMMAND_BYTES} bytes")));
            }
            let (rec, host) = reachable(ctl, live, &data).await?;
            ctl.external_send_to_host(
                host,
                &format!("{HOST_PREFIX}send"),
                json!({ "instance_id": rec.id, "function": function, "data": payload }),
            );
            Ok(json!({ "queued": true, "instance_id": rec.id }))
        }
        n if n.starts_with("plugin_kv_") => kv(ctl, &plugin, n, &data).await,
        other => Err(ErrorBody::new(
            "unknown_request",
            format!(
                "unknown plugin request \"{other}\"; plugins may call {}",
                PLUGIN_REQUESTS.join(", ")
            ),
        )),
    }
}

/// The plugin's own key–value namespace (only its own: the namespace is its name, never input).
async fn kv(
    ctl: &Arc<Controller>,
    plugin: &str,
    name: &str,
    data: &Value,
) -> Result<Value, ErrorBody> {
    use crate::controller::plugin_kv;
    if data.get("plugin").is_some() || data.get("namespace").is_some() {
        return Err(ErrorBody::new(
            "forbidden",
            "a plugin reaches only its own key–value namespace; leave out \"plugin\"/\"namespace\"",
        ));
    }
    let key = || {
        data["key"]
            .as_str()
            .ok_or_else(|| bad("\"key\" (a string) is required"))
    };
    let failed = |e: store::StoreError| match e {
        store::StoreError::Db(m) => ErrorBody::new("internal", m),
        other => ErrorBody::new("bad_request", other.to_string()),
    };
    let store = &ctl.store;
    match name {
        "plugin_kv_get" => {
            let entry = plugin_kv::get_entry(store, plugin, key()?)
                .await
                .map_err(failed)?;
            Ok(json!({
                "value": entry.as_ref().map(|e| e.value.clone()),
                "version": entry.map_or(0, |e| e.version),
            }))
        }
        "plugin_kv_put" => {
            let value = data.get("value").cloned().unwrap_or(Value::Null);
            let expected = match data.get("expect_version") {
                None | Some(Value::Null) => None,
                Some(v) => Some(v.as_i64().filter(|n| *n >= 0).ok_or_else(|| {
                    bad("\"expect_version\" must be a version from plugin_kv_get (0: not set yet)")
                })?),
            };
            let cas = match expected {
                None => plugin_kv::Cas::Stored(
                    plugin_kv::put(store, plugin, key()?, value)
                        .await
                        .map_err(failed)?,
                ),
                Some(v) => plugin_kv::put_if(store, plugin, key()?, value, v)
                    .await
                    .map_err(failed)?,
            };
            Ok(match cas {
                plugin_kv::Cas::Stored(e) => json!({
                    "stored": true, "key": e.key, "updated_at": e.updated_at, "version": e.version,
                }),
                plugin_kv::Cas::Conflict(current) => json!({
                    "stored": false,
                    "key": key()?,
                    "value": current.as_ref().map(|e| e.value.clone()),
                    "version": current.map_or(0, |e| e.version),
                }),
            })
        }
        "plugin_kv_delete" => Ok(
            json!({ "deleted": plugin_kv::delete(store, plugin, key()?).await.map_err(failed)? }),
        ),
        "plugin_kv_list" => {
            let prefix = data["prefix"].as_str().unwrap_or("");
            Ok(json!(
                plugin_kv::list(store, plugin, prefix)
                    .await
                    .map_err(failed)?
            ))
        }
        other => Err(ErrorBody::new(
            "unknown_request",
            format!("unknown key–value request \"{other}\""),
        )),
    }
}

impl External {
    /// A host event `external_plugin.*` (the instance it names is that host's, checked).
    /// False for IPC on a channel no plugin owns (an `ipc_error` of kind `unhandled`).
    pub async fn host_event(&self, ctl: &Controller, name: &str, data: Value) -> bool {
        match name.strip_prefix(HOST_PREFIX) {
            Some("ipc") => {
                let Some(channel) = data["channel"].as_str() else {
                    return false;
                };
                let Some(live) = self.owner_of(channel) else {
                    self.unowned_ipc.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(channel, "IPC message on a channel no plugin owns; dropped");
                    return false;
                };
                let Some(id) = data["instance_id"].as_i64() else {
                    return true;
                };
                let Ok(rec) = ctl
                    .store
                    .read(move |c| store::instances::get(c, &id.to_string()))
                    .await
                else {
                    return true;
                };
                let decl = lock(&live.decl).clone();
                if !decl.enabled_for(&rec.config) {
                    return true;
                }
                let durable = decl.is_durable(channel);
                live.deliver(
                    "ipc",
                    json!({
                        "instance_id": rec.id,
                        "instance": rec.name,
                        "channel": channel,
                        "data": data["data"],
                    }),
                    durable,
                );
                true
            }
            Some("rcon_result") => {
                let Some(call) = data["call"].as_u64() else {
                    return true;
                };
                let result = match data["error"].as_str() {
                    Some(e) => Err(ErrorBody::new("rcon_failed", e)),
                    None => Ok(json!({ "output": data["output"] })),
                };
                self.finish_call(call, result);
                true
            }
            _ => {
                tracing::debug!(event = name, "unknown external plugin event from a host");
                true
            }
        }
    }

    /// Core events that plugins may subscribe to: chat, joins and leaves from an instance's log,
    /// status changes (crashes with their message).
    pub async fn observe(&self, ctl: &Controller, name: &str, data: &Value) {
        let plugins = self.all();
        if plugins.is_empty() {
            return;
        }
        let Some(id) = data["id"].as_i64() else {
            return;
        };
        let (event, mut payload) = match name {
            "instance_log" => {
                let Some(raw) = data["line"].as_str() else {
                    return;
                };
                let line = parse_line(raw);
                let LineKind::Event { tag, text, .. } = &line.kind else {
                    return;
                };
                match tag.as_str() {
                    "CHAT" => {
                        let Some((player, message)) = text.split_once(": ") else {
                            return;
                        };
                        ("chat", json!({ "player": player, "message": message }))
                    }
                    "JOIN" => {
                        let player = text.strip_suffix(" joined the game").unwrap_or(text);
                        ("player_join", json!({ "player": player }))
                    }
                    "LEAVE" => {
                        let player = text.strip_suffix(" left the game").unwrap_or(text);
                        ("player_leave", json!({ "player": player }))
                    }
                    _ => return,
                }
            }
            "instance_status" => {
                let Some(status) = data["status"].as_str() else {
                    return;
                };
                let previous = lock(&self.statuses).insert(id, status.to_string());
                if previous.as_deref() == Some(status) {
                    return;
                }
                (
                    "instance_status",
                    json!({ "status": status, "message": data["message"] }),
                )
            }
            _ => return,
        };
        let wanted: Vec<Arc<Live>> = plugins
            .into_iter()
            .filter(|l| lock(&l.decl).subscribes(event))
            .collect();
        if wanted.is_empty() {
            return;
        }
        let Ok(rec) = ctl
            .store
            .read(move |c| store::instances::get(c, &id.to_string()))
            .await
        else {
            return;
        };
        payload["instance_id"] = json!(rec.id);
        payload["instance"] = json!(rec.name);
        for live in wanted {
            if lock(&live.decl).enabled_for(&rec.config) {
                live.deliver(event, payload.clone(), false);
            }
        }
    }

    /// A user's request `<plugin>.<what>` to a plugin: the permission the declaration names is
    /// checked here, then it goes to the process and its answer comes back.
    pub async fn user_request(
        &self,
        actor: &Actor,
        plugin: &str,
        request: &str,
        data: Value,
    ) -> Result<Value, ApiError> {
        let live = self.get(plugin).ok_or_else(|| {
            ApiError::not_found(format!("no external plugin \"{plugin}\" has connected"))
        })?;
        let decl = lock(&live.decl).clone();
        let full = if request.starts_with(&format!("{plugin}.")) {
            request.to_string()
        } else {
            format!("{plugin}.{request}")
        };
        let r = decl
            .requests
            .iter()
            .find(|r| r.name == full)
            .ok_or_else(|| {
                ApiError::new(
                    400,
                    "unknown_request",
                    format!("plugin {plugin} declares no request \"{full}\""),
                )
            })?;
        actor.require(&r.permission)?;
        let session = live.session().filter(|s| s.is_attached()).ok_or_else(|| {
            ApiError::new(
                503,
                "plugin_offline",
                format!("plugin {plugin} is not connected"),
            )
        })?;
        session
            .request(
                &full,
                json!({ "user": actor.name, "data": data }),
                CALL_TIMEOUT,
            )
            .await
            .map_err(|e| ApiError::new(502, "plugin_error", format!("{}: {}", e.code, e.message)))
    }
}
