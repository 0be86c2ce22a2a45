//! Instance lifecycle requests: the controller records what it wants (committed first), then
//! asks the instance's host over the link and waits for the outcome.

use super::Controller;
use super::error::ApiError;
use super::requests::Ref;
use crate::link::ErrorBody;
use crate::store::{self, InstanceRecord};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// Starting may create a map, fetch mods and restore a backup first.
const START_TIMEOUT: Duration = Duration::from_secs(600);
const STOP_TIMEOUT: Duration = Duration::from_secs(300);
const QUICK_TIMEOUT: Duration = Duration::from_secs(60);

/// A host's error, as the API reports it.
pub fn host_error(e: ErrorBody) -> ApiError {
    let (status, code) = match e.code.as_str() {
        "not_found" => (404, "not_found"),
        "not_running" => (409, "not_running"),
        "conflict" => (409, "conflict"),
        "already_exists" => (409, "already_exists"),
        "start_failed" => (409, "start_failed"),
        "bad_request" => (400, "bad_request"),
        "host_disconnected" | "session_lost" => (409, "host_disconnected"),
        "timeout" => (504, "timeout"),
        "too_large" => (413, "too_large"),
        _ => (502, "host_error"),
    };
    ApiError::new(status, code, e.message)
}

impl Controller {
    pub async fn record(&self, instance: &Ref) -> Result<InstanceRecord, ApiError> {
        let i = instance.to_string();
        Ok(self
            .store
            .read(move |c| store::instances::get(c, &i))
            .await?)
    }

    /// The connected host an instance is on, or a clear reason why there is none.
    pub async fn host_of(&self, rec: &InstanceRecord) -> Result<i64, ApiError> {
        let Some(host) = rec.host_id else {
            return Err(ApiError::conflict(format!(
                "instance '{}' is not assigned to a host; assign it first",
                rec.name
            )));
        };
        if !self.hub.host_connected(host) {
            let name = self
                .store
                .read(move |c| store::hosts::get(c, &host.to_string()))
                .await
                .map(|h| h.name)
                .unwrap_or_else(|_| host.to_string());
            return Err(ApiError::new(
                409,
                "host_disconnected",
                format!(
                    "host '{name}' of instance '{}' is not connected; nothing was changed",
                    rec.name
                ),
            ));
        }
        Ok(host)
    }

    /// Asks the instance's host; `data` gets the instance id.
    pub async fn ask_host(
        &self,
        rec: &InstanceRecord,
        name: &str,
        mut data: Value,
        timeout: Duration,
    ) -> Result<Value, ApiError> {
        let host = self.host_of(rec).await?;
        data["id"] = json!(rec.id);
        self.hub
            .request_host(host, name, data, timeout)
            .await
            .map_err(host_error)
    }

    async fn set_desired(
        &self,
        who: &str,
        rec: &InstanceRecord,
        desired: &'static str,
        action: &'static str,
    ) -> Result<(), ApiError> {
        let (who, id) = (who.to_string(), rec.id);
        self.store
            .write(move |c| store::instances::set_desired(c, &who, id, desired, action))
            .await?;
        Ok(())
    }

    /// Waits for, then holds, the lifecycle lock of the instance `instance` names, and reads
    /// its record again under it (whoever held the lock may have changed or deleted it).
    pub async fn lock_instance(
        &self,
        instance: &Ref,
    ) -> Result<(LifecycleGuard, InstanceRecord), ApiError> {
        let first = self.record(instance).await?;
        let guard = self.lifecycle.lock(first.id).await;
        let rec = self.record(&Ref::Id(first.id)).await?;
        Ok((guard, rec))
    }

    pub async fn start(
        &self,
        who: &str,
        instance: Ref,
        save: Option<String>,
    ) -> Result<Value, ApiError> {
        let (_guard, rec) = self.lock_instance(&instance).await?;
        self.start_locked(who, &rec, save).await
    }

    async fn start_locked(
        &self,
        who: &str,
        rec: &InstanceRecord,
        save: Option<String>,
    ) -> Result<Value, ApiError> {
        self.host_of(rec).await?;
        if let Some(s) = &save {
            crate::saves::validate_name(s).map_err(|e| ApiError::bad_request(e.to_string()))?;
        }
        self.set_desired(who, rec, "running", "instance.start")
            .await?;
        let result = self
            .ask_host(
                rec,
                "instance_start",
                json!({ "save": save, "users": self.user_records().await? }),
                START_TIMEOUT,
            )
            .await;
        if let Err(e) = result {
            // It did not start: do not keep trying to run it on every reconnect.
            self.set_desired(who, rec, "stopped", "instance.start_failed")
                .await?;
            return Err(e);
        }
        self.view_by_id(rec.id).await
    }

    pub async fn stop(&self, who: &str, instance: Ref) -> Result<Value, ApiError> {
        let (_guard, rec) = self.lock_instance(&instance).await?;
        self.stop_locked(who, &rec).await
    }

    async fn stop_locked(&self, who: &str, rec: &InstanceRecord) -> Result<Value, ApiError> {
        self.host_of(rec).await?;
        self.set_desired(who, rec, "stopped", "instance.stop")
            .await?;
        self.ask_host(rec, "instance_stop", json!({}), STOP_TIMEOUT)
            .await?;
        self.view_by_id(rec.id).await
    }

    pub async fn kill(&self, who: &str, instance: Ref) -> Result<Value, ApiError> {
        let (_guard, rec) = self.lock_instance(&instance).await?;
        self.host_of(&rec).await?;
        self.set_desired(who, &rec, "stopped", "instance.kill")
            .await?;
        self.ask_host(&rec, "instance_kill", json!({}), QUICK_TIMEOUT)
            .await?;
        self.view_by_id(rec.id).await
    }

    /// Stop and start under one hold of the lock: nothing slips in between.
    pub async fn restart(&self, who: &str, instance: Ref) -> Result<Value, ApiError> {
        let (_guard, rec) = self.lock_instance(&instance).await?;
        self.stop_locked(who, &rec).await?;
        self.start_locked(who, &rec, None).await
    }

    /// Stops the game of an instance on the host it is assigned to now, before the instance
    /// leaves that host (assigned elsewhere, or deleted). The caller holds the lifecycle lock.
    /// A host that is away cannot be asked: it drops (and stops) the instance when it comes
    /// back, as the controller no longer gives it that instance.
    pub async fn stop_before_leaving(
        &self,
        who: &str,
        rec: &InstanceRecord,
    ) -> Result<(), ApiError> {
        let Some(host) = rec.host_id else {
            return Ok(());
        };
        if !self.hub.host_connected(host) {
            return Ok(());
        }
        self.set_desired(who, rec, "stopped", "instance.stop")
            .await?;
        match self
            .ask_host(rec, "instance_stop", json!({}), STOP_TIMEOUT)
            .await
        {
            Ok(_) => Ok(()),
            // The host does not have it (yet): nothing runs there.
            Err(e) if e.code == "not_found" || e.code == "host_disconnected" => Ok(()),
            Err(e) => Err(ApiError::new(
                e.status,
                e.code,
                format!(
                    "stopping instance '{}' first failed; nothing was changed: {}",
                    rec.name, e.message
                ),
            )),
        }
    }

    /// Deletes an instance: a running game is stopped first (it saves; the host then removes
    /// its directory), and the controller's files of it (saves staged for the host, downloads,
    /// backups) are removed with it.
    pub async fn delete_instance(&self, who: &str, instance: Ref) -> Result<Value, ApiError> {
        let (_guard, current) = self.lock_instance(&instance).await?;
        self.stop_before_leaving(who, &current).await?;
        let (w, id) = (who.to_string(), current.id);
        let rec = self
            .store
            .write(move |c| store::instances::delete(c, &w, &id.to_string()))
            .await?;
        if let Some(host) = rec.host_id {
            self.hub.send_to_host(
                host,
                "instance_unassigned",
                json!({ "id": rec.id, "name": rec.name, "delete": true }),
            );
        }
        let files = self.saves_dir(rec.id);
        if let Err(e) = std::fs::remove_dir_all(&files)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(instance = %rec.name, dir = %files.display(), error = %e, "could not remove the deleted instance's files");
        }
        if let Ok(mut live) = self.live.lock() {
            live.remove(&rec.id);
        }
        self.hub.publish(super::hub::Event::instance_deleted(&rec));
        if let Some(host) = rec.host_id {
            self.publish_host_view(host).await;
        }
        Ok(json!({ "deleted": rec.name }))
    }

    pub async fn rcon(&self, who: &str, instance: Ref, command: String) -> Result<Value, ApiError> {
        let rec = self.record(&instance).await?;
        let (w, name, cmd) = (who.to_string(), rec.name.clone(), command.clone());
        self.store
            .write(move |c| {
                store::audit::record(c, &w, "instance.rcon", &name, &json!({ "command": cmd }))
            })
            .await?;
        self.ask_host(
            &rec,
            "instance_rcon",
            json!({ "command": command }),
            QUICK_TIMEOUT,
        )
        .await
    }

    pub async fn logs(&self, instance: Ref, lines: u64) -> Result<Value, ApiError> {
        let rec = self.record(&instance).await?;
        self.ask_host(
            &rec,
            "instance_logs",
            json!({ "lines": lines }),
            QUICK_TIMEOUT,
        )
        .await
    }

    /// Saves on the host (if connected) and the controller's backups, by name.
    pub async fn saves(&self, instance: Ref) -> Result<Value, ApiError> {
        let rec = self.record(&instance).await?;
        let on_host: Vec<Value> = if rec.host_id.is_some_and(|h| self.hub.host_connected(h)) {
            self.ask_host(&rec, "save_list", json!({}), QUICK_TIMEOUT)
                .await?
                .as_array()
                .cloned()
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let backups = crate::saves::list(&self.backups_dir(rec.id)).unwrap_or_default();
        let mut out: Vec<Value> = Vec::new();
        for s in &on_host {
            let name = s["name"].as_str().unwrap_or_default();
            let copies = backups
                .iter()
                .filter(|b| backup_save_name(&b.name) == name)
                .count();
            let mut v = s.clone();
            v["on_host"] = json!(true);
            v["backups"] = json!(copies);
            out.push(v);
        }
        for b in &backups {
            let name = backup_save_name(&b.name);
            if !out.iter().any(|v| v["name"] == name) {
                let copies = backups
                    .iter()
                    .filter(|x| backup_save_name(&x.name) == name)
                    .count();
                out.push(json!({ "name": name, "size": b.size, "modified_ms": b.modified_ms, "on_host": false, "backups": copies }));
            }
        }
        Ok(json!(out))
    }

    pub async fn create_save(
        &self,
        who: &str,
        instance: Ref,
        name: Option<String>,
        map: Value,
    ) -> Result<Value, ApiError> {
        let rec = self.record(&instance).await?;
        let new_map = crate::host::mapgen::NewMap::from_request(&map)
            .map_err(|e| ApiError::new(400, "invalid_map_settings", e))?;
        if let Some(n) = &name {
            let n = if n.ends_with(".zip") {
                n.clone()
            } else {
                format!("{n}.zip")
            };
            crate::saves::validate_name(&n)
                .map_err(|e| ApiError::new(400, "invalid_name", e.to_string()))?;
        }
        if !new_map.is_empty() {
            super::requests::refuse_if_active(self, &rec).map_err(|_| {
                ApiError::conflict(format!(
                    "instance '{}' is {}; a new map is created while it is stopped: stop it first",
                    rec.name, rec.status
                ))
            })?;
        }
        let mut data = map;
        data["name"] = json!(name);
        let result = self
            .ask_host(&rec, "save_create", data, START_TIMEOUT)
            .await?;
        let (w, n, r) = (who.to_string(), rec.name.clone(), result.clone());
        self.store
            .write(move |c| store::audit::record(c, &w, "save.create", &n, &r))
            .await?;
        Ok(result)
    }

    pub async fn backup(&self, instance: Ref) -> Result<Value, ApiError> {
        let rec = self.record(&instance).await?;
        self.ask_host(&rec, "backup", json!({}), START_TIMEOUT)
            .await
    }

    /// The controller's copies of an instance's saves, newest first.
    pub async fn backups(&self, instance: Ref) -> Result<Value, ApiError> {
        let rec = self.record(&instance).await?;
        let list = crate::saves::list(&self.backups_dir(rec.id)).unwrap_or_default();
        Ok(json!(list
            .iter()
            .map(|b| json!({ "file": b.name, "save": backup_save_name(&b.name), "size": b.size, "modified_ms": b.modified_ms }))
            .collect::<Vec<_>>()))
    }

    pub async fn view_by_id(&self, id: i64) -> Result<Value, ApiError> {
        let rec = self
            .store
            .read(move |c| store::instances::get(c, &id.to_string()))
            .await?;
        self.instance_view(rec).await
    }

    /// All users, for the admin/ban/white lists hosts write.
    pub async fn user_records(&self) -> Result<Value, ApiError> {
        Ok(json!(self.store.read(store::users::list).await?))
    }
}

/// One lock per instance, held across the host round-trip of a start, stop, kill, restart,
/// assign or delete, so those run one at a time per instance and an instance runs at most once.
pub type Lifecycle = KeyedLocks<i64>;

/// Async locks by key, created on first use and dropped when nobody holds or waits for them.
pub struct KeyedLocks<K> {
    locks: std::sync::Mutex<HashMap<K, Weak<tokio::sync::Mutex<()>>>>,
}

impl<K> Default for KeyedLocks<K> {
    fn default() -> Self {
        KeyedLocks {
            locks: std::sync::Mutex::new(HashMap::new()),
        }
    }
}

/// Held while one operation on its key runs.
pub struct LifecycleGuard {
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

impl<K: std::hash::Hash + Eq> KeyedLocks<K> {
    pub async fn lock(&self, key: K) -> LifecycleGuard {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
            // Locks nobody holds or waits for are dropped: the map stays as small as the
            // number of keys busy right now.
            locks.retain(|_, l| l.strong_count() > 0);
            match locks.get(&key).and_then(Weak::upgrade) {
                Some(l) => l,
                None => {
                    let l = Arc::new(tokio::sync::Mutex::new(()));
                    locks.insert(key, Arc::downgrade(&l));
                    l
                }
            }
        };
        LifecycleGuard {
            _guard: lock.lock_owned().await,
        }
    }
}

/// Backups are stored as `<unix ms>-<save name>`.
pub fn backup_save_name(file: &str) -> &str {
    file.split_once('-')
        .filter(|(ms, _)| ms.chars().all(|c| c.is_ascii_digit()))
        .map(|(_, rest)| rest)
        .unwrap_or(file)
}
