//! Factorio versions per host: what each host reports it has installed (in the host view), and
//! installing another one there (`POST /hosts/{id}/factorio-versions`), with the host's
//! progress passed on as `factorio_install_progress` events and kept in the host view
//! (`factorio_installing`) while it lasts.

use super::Controller;
use super::error::ApiError;
use super::hub::Event;
use super::requests::Ref;
use crate::store;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

/// A release is ~70 MB; slow mirrors get their time.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(3600);

/// What hosts last said about their Factorio installs; not stored (hosts resend on connect).
#[derive(Default)]
pub struct HostVersions {
    hosts: Mutex<HashMap<i64, Entry>>,
}

#[derive(Default)]
struct Entry {
    versions: Value,
    /// Installs in progress, by version: their last progress.
    installing: BTreeMap<String, Value>,
}

impl HostVersions {
    fn with<T>(&self, host: i64, f: impl FnOnce(&mut Entry) -> T) -> Option<T> {
        self.hosts
            .lock()
            .ok()
            .map(|mut m| f(m.entry(host).or_default()))
    }

    /// `factorio_versions` and `factorio_installing` of a host's view.
    pub fn view(&self, host: i64) -> (Value, Value) {
        self.hosts
            .lock()
            .ok()
            .and_then(|m| {
                m.get(&host).map(|e| {
                    (
                        if e.versions.is_null() {
                            json!([])
                        } else {
                            e.versions.clone()
                        },
                        json!(e.installing.values().collect::<Vec<_>>()),
                    )
                })
            })
            .unwrap_or_else(|| (json!([]), json!([])))
    }

    /// The host (re)connected: its list is new, and installs it ran before are over.
    pub fn set(&self, host: i64, versions: &Value) {
        if versions.is_array() {
            self.with(host, |e| {
                e.versions = versions.clone();
                e.installing.clear();
            });
        }
    }
}

fn install_error(e: crate::link::ErrorBody) -> ApiError {
    let (status, code) = match e.code.as_str() {
        "not_found" => (404, "not_found"),
        "bad_request" => (400, "bad_request"),
        "conflict" => (409, "conflict"),
        "checksum_mismatch" => (502, "checksum_mismatch"),
        "corrupt_archive" => (502, "corrupt_archive"),
        "version_mismatch" => (502, "version_mismatch"),
        "download_failed" => (502, "download_failed"),
        "too_large" => (502, "too_large"),
        "disk_full" => (507, "disk_full"),
        "host_disconnected" | "session_lost" => (409, "host_disconnected"),
        "timeout" => (504, "timeout"),
        _ => (502, "host_error"),
    };
    ApiError::new(status, code, e.message)
}

impl Controller {
    /// A host's `factorio_install_progress` or `factorio_versions` event.
    pub(super) async fn factorio_event(&self, host_id: i64, name: &str, mut data: Value) {
        match name {
            "factorio_install_progress" => {
                let version = data["version"].as_str().unwrap_or_default().to_string();
                let stage = data["stage"].as_str().unwrap_or_default().to_string();
                let host = self
                    .store
                    .read(move |c| store::hosts::find(c, &host_id.to_string()))
                    .await
                    .ok()
                    .flatten();
                data["host_id"] = json!(host_id);
                data["host"] = json!(host.map(|h| h.name));
                self.factorio.with(host_id, |e| {
                    if matches!(stage.as_str(), "done" | "failed") {
                        e.installing.remove(&version);
                    } else {
                        e.installing.insert(version, data.clone());
                    }
                });
                self.hub.publish(Event {
                    name: "factorio_install_progress",
                    data,
                    permission: "core.host.subscribe",
                    to_hosts: false,
                    instance_view: false,
                });
            }
            _ => {
                if data["versions"].is_array() {
                    self.factorio
                        .with(host_id, |e| e.versions = data["versions"].clone());
                    self.publish_host_view(host_id).await;
                }
            }
        }
    }

    /// The connected, unrevoked host `host` names.
    async fn connected_host(
        &self,
        host: Ref,
        verb: &str,
    ) -> Result<store::hosts::HostRecord, ApiError> {
        let h = host.to_string();
        let rec = self.store.read(move |c| store::hosts::get(c, &h)).await?;
        if rec.revoked {
            return Err(ApiError::conflict(format!(
                "host '{}' is revoked",
                rec.name
            )));
        }
        if !self.hub.host_connected(rec.id) {
            return Err(ApiError::new(
                409,
                "host_disconnected",
                format!(
                    "host '{}' is not connected; start it, then {verb} again",
                    rec.name
                ),
            ));
        }
        Ok(rec)
    }

    /// Removes Factorio `version` from `host` (refused while a game runs it or an instance of
    /// the host asks for it).
    pub async fn remove_factorio(
        &self,
        who: &str,
        host: Ref,
        version: String,
    ) -> Result<Value, ApiError> {
        let version = version.trim().to_string();
        let rec = self.connected_host(host, "remove").await?;
        let result = self
            .hub
            .request_host(
                rec.id,
                "factorio_remove",
                json!({ "version": version }),
                std::time::Duration::from_secs(120),
            )
            .await;
        self.host_factorio_done(who, &rec, "host.remove_factorio", &version, result)
            .await
    }

    /// Audits what a host answered to an install or removal of `version` and, if it did it,
    /// publishes the host's new view.
    async fn host_factorio_done(
        &self,
        who: &str,
        rec: &store::hosts::HostRecord,
        action: &'static str,
        version: &str,
        result: Result<Value, crate::link::ErrorBody>,
    ) -> Result<Value, ApiError> {
        let (w, name) = (who.to_string(), rec.name.clone());
        let detail = match &result {
            Ok(v) => {
                let mut d = json!({ "version": v["version"] });
                for key in ["checksum", "removed"] {
                    if !v[key].is_null() {
                        d[key] = v[key].clone();
                    }
                }
                d
            }
            Err(e) => json!({ "version": version, "error": e.code }),
        };
        if let Err(e) = self
            .store
            .write(move |c| store::audit::record(c, &w, action, &name, &detail))
            .await
        {
            tracing::warn!(error = %e, action, "could not audit a Factorio install or removal");
        }
        let mut done = result.map_err(install_error)?;
        self.publish_host_view(rec.id).await;
        done["host"] = json!(rec.name);
        Ok(done)
    }

    /// Installs Factorio `version` on `host`; answers once it is installed (or why not).
    pub async fn install_factorio(
        &self,
        who: &str,
        host: Ref,
        version: String,
    ) -> Result<Value, ApiError> {
        let version = version.trim().to_string();
        if !crate::host::versions::valid_request(&version) {
            return Err(ApiError::bad_request(format!(
                "\"{version}\" is not a Factorio version: give one like 2.0.77, or stable or latest"
            )));
        }
        let rec = self.connected_host(host, "install").await?;
        let result = self
            .hub
            .request_host(
                rec.id,
                "factorio_install",
                json!({ "version": version }),
                INSTALL_TIMEOUT,
            )
            .await;
        // Whatever happened, the install is no longer in progress here.
        self.factorio.with(rec.id, |e| {
            e.installing.remove(&version);
        });
        self.host_factorio_done(who, &rec, "host.install_factorio", &version, result)
            .await
    }
}
