//! Save files of one instance on this host: listing (which one is loaded, which one the next
//! start loads), delete, rename, copy, "load this save", and receiving a save from the
//! controller (uploads, transfers, restored backups).
//!
//! The rule that protects players' work: a running game writes the save it loaded when it
//! stops (and `_autosaveN.zip` while it runs), so nothing from outside is ever written over
//! those names while it runs — an arriving save with such a name is kept under a name of its
//! own, and the running game's save cannot be deleted or renamed away under it.

use super::instance::Instance;
use super::{Host, err};
use crate::link::ErrorBody;
use crate::saves;
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;

/// Names a running game writes by itself.
fn written_by_game(inst: &Instance, name: &str) -> bool {
    inst.status().is_active()
        && (inst.saved().loaded_save.as_deref() == Some(name) || name.starts_with("_autosave"))
}

fn valid(name: &str) -> Result<(), ErrorBody> {
    saves::validate_name(name).map_err(|e| err("bad_request", e.to_string()))
}

fn io(what: &str, e: std::io::Error) -> ErrorBody {
    err("io", format!("{what}: {e}"))
}

/// `world.zip` → `world-2.zip`, `world-3.zip` … the first name not in `dir`.
pub fn free_name(dir: &Path, name: &str) -> String {
    if !dir.join(name).exists() {
        return name.to_string();
    }
    let stem = name.trim_end_matches(".zip");
    (2..)
        .map(|n| format!("{stem}-{n}.zip"))
        .find(|candidate| !dir.join(candidate).exists())
        .unwrap_or_else(|| format!("{stem}-{}.zip", crate::store::now_ms()))
}

impl Host {
    /// The save requests (`save_*`) this module answers; None for any other name.
    pub(super) async fn save_request(
        self: &Arc<Self>,
        name: &str,
        data: &Value,
    ) -> Option<Result<Value, ErrorBody>> {
        let id = data["id"].as_i64().unwrap_or(-1);
        let inst = match self.instance(id) {
            Ok(i) => i,
            Err(e) => return Some(Err(e)),
        };
        let save = data["name"].as_str().unwrap_or_default();
        let to = data["to"].as_str().unwrap_or_default();
        Some(match name {
            "save_list" => self.list_saves(&inst),
            "save_delete" => self.delete_save(&inst, save).await,
            "save_rename" => self.rename_save(&inst, save, to).await,
            "save_copy" => self.copy_save(&inst, save, to).await,
            "save_use" => self.use_save(&inst, save).await,
            "save_fetch" => {
                self.receive_save(&inst, save, data["replace"].as_bool() == Some(true))
                    .await
            }
            _ => return None,
        })
    }

    /// Saves newest first, each marked `loaded` (the running game's file) and `load_next`.
    fn list_saves(&self, inst: &Instance) -> Result<Value, ErrorBody> {
        let list = saves::list(&inst.saves_dir()).map_err(|e| io("listing saves", e))?;
        let state = inst.saved();
        let next = state
            .next_save
            .clone()
            .filter(|n| list.iter().any(|s| &s.name == n))
            .or_else(|| list.first().map(|s| s.name.clone()));
        let active = inst.status().is_active();
        Ok(json!(
            list.iter()
                .map(|s| {
                    let mut v = json!(s);
                    v["loaded"] = json!(active && state.loaded_save.as_ref() == Some(&s.name));
                    v["load_next"] = json!(next.as_ref() == Some(&s.name));
                    v
                })
                .collect::<Vec<_>>()
        ))
    }

    fn existing(&self, inst: &Instance, name: &str) -> Result<std::path::PathBuf, ErrorBody> {
        valid(name)?;
        let path = inst.saves_dir().join(name);
        if path.is_file() {
            Ok(path)
        } else {
            Err(err(
                "not_found",
                format!("instance '{}' has no save named '{name}'", inst.name),
            ))
        }
    }

    fn refuse_if_in_use(&self, inst: &Instance, name: &str, verb: &str) -> Result<(), ErrorBody> {
        if written_by_game(inst, name) {
            return Err(err(
                "conflict",
                format!(
                    "cannot {verb} '{name}': the running game of '{}' writes it; stop the instance first",
                    inst.name
                ),
            ));
        }
        Ok(())
    }

    async fn delete_save(&self, inst: &Arc<Instance>, name: &str) -> Result<Value, ErrorBody> {
        let _op = inst.ops.lock().await;
        let path = self.existing(inst, name)?;
        self.refuse_if_in_use(inst, name, "delete")?;
        std::fs::remove_file(&path).map_err(|e| io(&format!("deleting {name}"), e))?;
        sync_dir(&inst.saves_dir());
        if inst.saved().next_save.as_deref() == Some(name) {
            let _ = inst.update_saved(|s| s.next_save = None);
        }
        tracing::info!(instance = %inst.name, save = name, "save deleted");
        Ok(json!({ "deleted": name }))
    }

    /// Fails when `to` exists: a hard link cannot replace a file.
    async fn rename_save(
        &self,
        inst: &Arc<Instance>,
        name: &str,
        to: &str,
    ) -> Result<Value, ErrorBody> {
        let _op = inst.ops.lock().await;
        let from = self.existing(inst, name)?;
        valid(to)?;
        self.refuse_if_in_use(inst, name, "rename")?;
        let target = inst.saves_dir().join(to);
        link_new(&from, &target, to, &inst.name)?;
        std::fs::remove_file(&from).map_err(|e| io(&format!("removing {name}"), e))?;
        sync_dir(&inst.saves_dir());
        if inst.saved().next_save.as_deref() == Some(name) {
            let _ = inst.update_saved(|s| s.next_save = Some(to.to_string()));
        }
        tracing::info!(instance = %inst.name, save = name, to, "save renamed");
        Ok(json!({ "name": to, "renamed_from": name }))
    }

    async fn copy_save(
        &self,
        inst: &Arc<Instance>,
        name: &str,
        to: &str,
    ) -> Result<Value, ErrorBody> {
        let from = self.existing(inst, name)?;
        valid(to)?;
        let target = inst.saves_dir().join(to);
        if target.exists() {
            return Err(exists(to, &inst.name));
        }
        let tmp = saves::temp_path(&target);
        let (f, t) = (from.clone(), tmp.clone());
        tokio::task::spawn_blocking(move || std::fs::copy(f, t))
            .await
            .map_err(|e| err("io", e.to_string()))?
            .map_err(|e| io(&format!("copying {name}"), e))?;
        let linked = std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| io("syncing the copy", e))
            .and_then(|_| link_new(&tmp, &target, to, &inst.name));
        let _ = std::fs::remove_file(&tmp);
        linked?;
        sync_dir(&inst.saves_dir());
        tracing::info!(instance = %inst.name, save = name, to, "save copied");
        Ok(json!({ "name": to, "copied_from": name }))
    }

    async fn use_save(&self, inst: &Arc<Instance>, name: &str) -> Result<Value, ErrorBody> {
        self.existing(inst, name)?;
        inst.update_saved(|s| s.next_save = Some(name.to_string()))
            .map_err(|e| io("saving instance state", e))?;
        tracing::info!(instance = %inst.name, save = name, "the next start loads this save");
        Ok(json!({ "load_next": name }))
    }

    /// A save the controller holds for this instance (`uploads/<name>`), fetched into `saves/`.
    /// It never lands on a name the running game writes, and only replaces an existing save
    /// when `replace` (a restore, whose current save was backed up first). It becomes what
    /// the next start loads.
    async fn receive_save(
        &self,
        inst: &Arc<Instance>,
        name: &str,
        replace: bool,
    ) -> Result<Value, ErrorBody> {
        valid(name)?;
        let dir = inst.saves_dir();
        let target = if written_by_game(inst, name) || (!replace && dir.join(name).exists()) {
            free_name(&dir, name)
        } else {
            name.to_string()
        };
        self.transfer
            .fetch_save_as(inst.id, name, &dir, &target)
            .await
            .map_err(|e| err("transfer_failed", e))?;
        inst.update_saved(|s| s.next_save = Some(target.clone()))
            .map_err(|e| io("saving instance state", e))?;
        tracing::info!(instance = %inst.name, save = %target, requested = name, "save received");
        Ok(json!({ "name": target, "requested": name, "load_next": true }))
    }
}

fn exists(name: &str, instance: &str) -> ErrorBody {
    err(
        "already_exists",
        format!("instance '{instance}' already has a save named '{name}'; choose another name"),
    )
}

/// Creates `target` as a new name for `from`; fails if `target` exists.
fn link_new(from: &Path, target: &Path, to: &str, instance: &str) -> Result<(), ErrorBody> {
    match std::fs::hard_link(from, target) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(exists(to, instance)),
        Err(e) => Err(io(&format!("writing {to}"), e)),
    }
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_name_counts_up_past_taken_names() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(free_name(dir.path(), "world.zip"), "world.zip");
        std::fs::write(dir.path().join("world.zip"), b"x").unwrap();
        assert_eq!(free_name(dir.path(), "world.zip"), "world-2.zip");
        std::fs::write(dir.path().join("world-2.zip"), b"x").unwrap();
        assert_eq!(free_name(dir.path(), "world.zip"), "world-3.zip");
    }
}
