//! Save management across the cluster: delete, rename, copy and "load this save" on the
//! instance's host; transfers between instances (through the controller, so across hosts);
//! restoring one of the controller's backups. Every change is audited before it is answered.

use super::Controller;
use super::error::ApiError;
use super::hub::Event;
use super::instances::backup_save_name;
use super::requests::Ref;
use crate::saves;
use crate::store;
use serde_json::{Value, json};
use std::time::Duration;

/// Moving a save may stream gigabytes.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(1800);
const QUICK: Duration = Duration::from_secs(60);

fn valid(name: &str) -> Result<(), ApiError> {
    saves::validate_name(name).map_err(|e| ApiError::new(400, "invalid_name", e.to_string()))
}

/// Progress of long save work, for the web UI (`save_progress` events).
fn progress(instance: &str, save: &str, action: &str, stage: &str, percent: u32) -> Event {
    Event {
        name: "save_progress",
        data: json!({
            "instance": instance, "save": save, "action": action,
            "stage": stage, "percent": percent,
        }),
        permission: "core.instance.save.subscribe",
        to_hosts: false,
        instance_view: false,
    }
}

impl Controller {
    /// The scenarios a new game of `instance` can start from, as its host lists them.
    pub async fn scenarios(&self, instance: Ref) -> Result<Value, ApiError> {
        let rec = self.record(&instance).await?;
        self.ask_host(&rec, "scenario_list", json!({}), QUICK).await
    }

    async fn audit(
        &self,
        who: &str,
        action: &str,
        target: &str,
        detail: Value,
    ) -> Result<(), ApiError> {
        let (w, a, t) = (who.to_string(), action.to_string(), target.to_string());
        self.store
            .write(move |c| store::audit::record(c, &w, &a, &t, &detail))
            .await?;
        Ok(())
    }

    /// Delete, rename, copy or use (`save_delete`, `save_rename`, `save_copy`, `save_use`).
    pub async fn save_action(
        &self,
        who: &str,
        instance: Ref,
        action: &'static str,
        name: String,
        to: Option<String>,
    ) -> Result<Value, ApiError> {
        valid(&name)?;
        if let Some(t) = &to {
            valid(t)?;
        }
        if matches!(action, "rename" | "copy") && to.is_none() {
            return Err(ApiError::bad_request(format!(
                "{action} needs \"to\": the new save's name"
            )));
        }
        let rec = self.record(&instance).await?;
        let result = self
            .ask_host(
                &rec,
                &format!("save_{action}"),
                json!({ "name": name, "to": to }),
                QUICK,
            )
            .await?;
        self.audit(
            who,
            &format!("save.{action}"),
            &rec.name,
            json!({ "name": name, "to": to }),
        )
        .await?;
        Ok(result)
    }

    /// Sends a save of `instance` to `target` (another instance, on any host), under
    /// `as_name` or its own name (a taken name gets a suffix); the source's copy is deleted
    /// unless `copy`. Both hosts must be connected; nothing changes otherwise.
    pub async fn transfer_save(
        &self,
        who: &str,
        instance: Ref,
        name: String,
        target: Ref,
        as_name: Option<String>,
        copy: bool,
    ) -> Result<Value, ApiError> {
        valid(&name)?;
        let as_name = as_name.unwrap_or_else(|| name.clone());
        valid(&as_name)?;
        let src = self.record(&instance).await?;
        let dst = self.record(&target).await?;
        if src.id == dst.id {
            return Err(ApiError::bad_request(
                "the source and target instance are the same: use rename or copy",
            ));
        }
        self.host_of(&src).await?;
        self.host_of(&dst).await?;
        if !copy {
            let listed = self.ask_host(&src, "save_list", json!({}), QUICK).await?;
            let entry = listed
                .as_array()
                .and_then(|l| l.iter().find(|s| s["name"] == json!(name)).cloned())
                .ok_or_else(|| {
                    ApiError::not_found(format!(
                        "instance '{}' has no save named '{name}'",
                        src.name
                    ))
                })?;
            if entry["loaded"] == json!(true) {
                return Err(ApiError::conflict(format!(
                    "'{name}' is the save the running game of '{}' writes; stop it first or copy instead of moving",
                    src.name
                )));
            }
        }
        let action = if copy { "copy" } else { "transfer" };
        self.hub
            .publish(progress(&src.name, &name, action, "from_host", 0));
        let pulled = self.pull_save(&src, &name, TRANSFER_TIMEOUT).await?;
        let staged = self.saves_dir(dst.id).join("uploads").join(&as_name);
        let copied = stage_copy(&pulled, &staged);
        let _ = std::fs::remove_file(&pulled);
        copied?;
        self.hub
            .publish(progress(&src.name, &name, action, "to_host", 50));
        let received = self
            .ask_host(
                &dst,
                "save_fetch",
                json!({ "name": as_name }),
                TRANSFER_TIMEOUT,
            )
            .await;
        let _ = std::fs::remove_file(&staged);
        let received = received?;
        if !copy {
            self.ask_host(&src, "save_delete", json!({ "name": name }), QUICK)
                .await?;
        }
        self.hub
            .publish(progress(&src.name, &name, action, "done", 100));
        let detail = json!({
            "name": name, "to_instance": dst.name, "as": received["name"], "copy": copy,
        });
        self.audit(who, "save.transfer", &src.name, detail.clone())
            .await?;
        Ok(detail)
    }

    /// Puts one of the controller's backups back as the instance's save and makes it what the
    /// next start loads. A running instance is stopped first (its stop backs up the current
    /// save) and started again from the restored one; a stopped one has its current save
    /// backed up before it is replaced.
    pub async fn restore_backup(
        &self,
        who: &str,
        instance: Ref,
        file: String,
    ) -> Result<Value, ApiError> {
        valid(&file)?;
        let rec = self.record(&instance).await?;
        let backup = self.backups_dir(rec.id).join(&file);
        if !backup.is_file() {
            return Err(ApiError::not_found(format!(
                "instance '{}' has no backup '{file}'",
                rec.name
            )));
        }
        self.host_of(&rec).await?;
        let save = backup_save_name(&file).to_string();
        valid(&save)?;
        // Staged first: keeping the current save as a backup may prune this very file.
        let staged = self.saves_dir(rec.id).join("uploads").join(&save);
        stage_copy(&backup, &staged)?;
        let was_running = matches!(
            rec.status.as_str(),
            "starting" | "running" | "creating_save"
        );
        self.hub
            .publish(progress(&rec.name, &save, "restore", "stopping", 0));
        if was_running {
            if let Err(e) = self.stop(who, Ref::Id(rec.id)).await {
                let _ = std::fs::remove_file(&staged);
                return Err(e);
            }
        } else if let Err(e) = self
            .ask_host(&rec, "backup", json!({}), TRANSFER_TIMEOUT)
            .await
            && !e.message.contains("no save yet")
        {
            let _ = std::fs::remove_file(&staged);
            return Err(e);
        }
        self.hub
            .publish(progress(&rec.name, &save, "restore", "to_host", 40));
        let received = self
            .ask_host(
                &rec,
                "save_fetch",
                json!({ "name": save, "replace": true }),
                TRANSFER_TIMEOUT,
            )
            .await;
        let _ = std::fs::remove_file(&staged);
        let received = received?;
        self.audit(
            who,
            "backup.restore",
            &rec.name,
            json!({ "backup": file, "save": received["name"] }),
        )
        .await?;
        if was_running {
            self.hub
                .publish(progress(&rec.name, &save, "restore", "starting", 80));
            self.start(who, Ref::Id(rec.id), None).await?;
        }
        self.hub
            .publish(progress(&rec.name, &save, "restore", "done", 100));
        Ok(json!({
            "restored": file, "save": received["name"], "restarted": was_running,
        }))
    }
}

/// Copies `from` to `to` (tmp + rename) for a host to fetch.
fn stage_copy(from: &std::path::Path, to: &std::path::Path) -> Result<(), ApiError> {
    let io = |e: std::io::Error| ApiError::new(500, "io", format!("staging {}: {e}", to.display()));
    if let Some(d) = to.parent() {
        std::fs::create_dir_all(d).map_err(io)?;
    }
    let tmp = saves::temp_path(to);
    std::fs::copy(from, &tmp).map_err(io)?;
    saves::commit(&tmp, to).map_err(io)
}
