//! What users ask about external plugins (web UI, ctl, REST): list them, issue and revoke their
//! tokens, set their rate limit, and send a declared request to one.

use crate::controller::Controller;
use crate::controller::auth::Actor;
use crate::controller::error::ApiError;
use crate::link::ErrorBody;
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "name", content = "data", rename_all = "snake_case")]
pub enum Request {
    /// Every external plugin with its state.
    ExternalPluginList,
    /// A new token for a plugin (shown once; replaces an earlier one).
    ExternalPluginToken { plugin: String },
    /// Revokes the plugin's token and closes its session at once.
    ExternalPluginRevoke { plugin: String },
    /// Messages a second its sessions may send.
    ExternalPluginLimit { plugin: String, messages_per_s: u64 },
    /// A request the plugin declared (`<plugin>.<request>`), forwarded to its process.
    ExternalPluginCall {
        plugin: String,
        request: String,
        #[serde(default)]
        data: Value,
    },
}

const NAMES: &[&str] = &[
    "external_plugin_list",
    "external_plugin_token",
    "external_plugin_revoke",
    "external_plugin_limit",
    "external_plugin_call",
];

impl Request {
    pub fn from_link(name: &str, data: &Value) -> Option<Result<Self, ApiError>> {
        if !NAMES.contains(&name) {
            return None;
        }
        let value = if name == "external_plugin_list" {
            json!({ "name": name })
        } else {
            json!({ "name": name, "data": if data.is_null() { json!({}) } else { data.clone() } })
        };
        Some(
            serde_json::from_value(value)
                .map_err(|e| ApiError::bad_request(format!("invalid \"{name}\" request: {e}"))),
        )
    }

    /// Permissions checked before it runs (a call's own permission is checked when it runs).
    pub fn permissions(&self) -> Vec<&'static str> {
        match self {
            Request::ExternalPluginList => vec!["core.plugin.list"],
            Request::ExternalPluginCall { .. } => vec![],
            _ => vec![crate::permissions::ADMIN],
        }
    }

    pub async fn run(self, ctl: &Controller, actor: &Actor) -> Result<Value, ApiError> {
        let who = actor.audit_name();
        match self {
            Request::ExternalPluginList => {
                let records = ctl.store.read(super::store::list).await?;
                Ok(ctl.external.state(records))
            }
            Request::ExternalPluginToken { plugin } => {
                let p = plugin.clone();
                let token = ctl
                    .store
                    .write(move |c| super::store::issue(c, &who, &p))
                    .await?;
                Ok(json!({ "plugin": plugin, "token": token }))
            }
            Request::ExternalPluginRevoke { plugin } => {
                let p = plugin.clone();
                ctl.store
                    .write(move |c| super::store::revoke(c, &who, &p))
                    .await?;
                ctl.external.close(
                    &plugin,
                    ErrorBody::new("revoked", "the plugin's token was revoked"),
                );
                Ok(json!({ "plugin": plugin, "revoked": true }))
            }
            Request::ExternalPluginLimit {
                plugin,
                messages_per_s,
            } => {
                if !(1..=1_000_000).contains(&messages_per_s) {
                    return Err(ApiError::bad_request(
                        "messages_per_s must be from 1 to 1000000",
                    ));
                }
                let p = plugin.clone();
                ctl.store
                    .write(move |c| {
                        super::store::set_rate_limit(c, &who, &p, messages_per_s as i64)
                    })
                    .await?;
                ctl.external.set_rate(&plugin, messages_per_s);
                Ok(json!({ "plugin": plugin, "messages_per_s": messages_per_s }))
            }
            Request::ExternalPluginCall {
                plugin,
                request,
                data,
            } => {
                ctl.external
                    .user_request(actor, &plugin, &request, data)
                    .await
            }
        }
    }
}
