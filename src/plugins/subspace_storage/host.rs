//! The host's part: the export spool, save points, grants and their `Import`, the keep-alive
//! and the storage table the games' combinators see.
//!
//! Save points (README "Subspace storage"): a game killed without saving restarts from its last
//! save, so what it exported since is back in its chests and what it imported since is gone.
//! The host reads each game's output in order (exports, imports, `Saving …` lines) and knows
//! which transfers a save holds: an export is `pending` until a save that started after it has
//! finished, then `available` (the controller credits it); an import is final (`delivered`)
//! only then. When the game loads a map (`Loading map`), what is still pending belongs to the
//! run before: a loaded save written after the host spooled an export holds it (available),
//! an older one does not (cancelled); an import is settled from the marker the `Import` set in
//! the game's state (present: final, absent: back to the pool).
//!
//! Files, under `<host dir>/plugins/subspace_storage/`:
//! - `spool/<time>-<key>.json`: one export each (`state` pending, available or cancelled),
//!   written (fsync'd) when the game prints it and rewritten when its state changes; sent to
//!   the controller oldest first whenever the link is up, deleted once a final state is
//!   committed there.
//! - `grants.json`: grants this host holds, recorded before the controller is told the host
//!   has them (`claim`) and before the `Import`: `importing` (outcome unknown until it
//!   answers or the marker says), `confirmed` (the game has them; `durable` once a save holds
//!   them, then the controller is told `delivered` and the grant is forgotten).

use super::INFO;
use super::ledger::{self, Item};
use crate::host::plugins::{HostCtx, InstanceCtx, lua_string};
use crate::plugins::{HostPlugin, PluginInfo};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Keep-alive and combinator updates to each game.
const GAME_UPDATE: Duration = Duration::from_secs(1);
/// A host settles its grants with the controller this often (and after every reconnect).
const SYNC_INTERVAL: Duration = Duration::from_secs(30);
const LOOP: Duration = Duration::from_millis(200);

/// The mod's state, as RCON addresses it.
const MOD: &str = "/sc __subspace_storage__";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum GrantState {
    /// The `Import` was or is being sent; outcome unknown until it answers or the marker says.
    Importing,
    /// The game has the items; the controller is not yet told.
    Confirmed,
    /// Written by earlier versions (the controller was told already); read as confirmed.
    Delivered,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct HeldGrant {
    instance_id: i64,
    items: Value,
    state: GrantState,
    /// The game printed that it imported this grant (so a save that starts later holds it).
    #[serde(default)]
    seen: bool,
    /// A save started after that.
    #[serde(default)]
    saving: bool,
    /// A save holding it has finished.
    #[serde(default)]
    durable: bool,
}

#[derive(Default)]
struct State {
    dir: PathBuf,
    /// The pool as last heard, with the version each count changed at.
    cache: BTreeMap<(String, String), (i64, u64)>,
    version: u64,
    /// Per instance, the version its game last got (absent: it gets the full table next).
    sent: HashMap<i64, u64>,
    grants: BTreeMap<i64, HeldGrant>,
    /// Grants whose `Import` is running now.
    busy: HashSet<i64>,
    /// Instances with a request or an `Import` under way (their orders wait for it).
    ordering: HashSet<i64>,
    /// Running instances whose game has the Subspace Storage mod (found at each start).
    with_mod: HashSet<i64>,
    /// Per instance, exports by save point.
    saves: HashMap<i64, SavePoints>,
    /// Keys whose pending state the controller has (this process sent them).
    sent_pending: HashSet<String>,
    /// This host process (random): which exports it saw the game's output around.
    host_run: String,
    /// Grants of a game's run before its map was loaded again: settled from their markers
    /// (also in `busy` until then).
    recheck: HashSet<i64>,
}

/// One game's exports by what its saves hold, and when it last needed one.
#[derive(Default)]
struct SavePoints {
    /// Exported since the last save started: `(key, spool file)`.
    unsaved: Vec<(String, PathBuf)>,
    /// Exported before the save now running.
    saving: Vec<(String, PathBuf)>,
    /// The file the save now running writes, and which file was there when it started
    /// (`(device, inode)`; Factorio writes a new file and renames it into place).
    saving_file: Option<(PathBuf, Option<(u64, u64)>)>,
    /// Since when exports or imports wait for a save.
    waiting_since: Option<Instant>,
    /// When the host last asked for a save.
    asked: Option<Instant>,
}

/// One export in the spool.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SpoolEntry {
    key: String,
    instance_id: i64,
    items: Value,
    /// Entries of earlier versions have none: they counted at once.
    #[serde(default = "available")]
    state: String,
    #[serde(default)]
    spooled_at: i64,
    /// The host process that spooled it.
    #[serde(default)]
    host_run: String,
}

fn available() -> String {
    "available".into()
}

fn read_entry(path: &Path) -> Result<SpoolEntry, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    serde_json::from_slice(&bytes).map_err(|e| e.to_string())
}

/// Moves a pending spool entry to `state`; entries already final stay as they are.
fn resolve_entry(path: &Path, state: &str) {
    let mut e = match read_entry(path) {
        Ok(e) => e,
        Err(err) => {
            // Sent and deleted already, or unreadable (flush_spool reports those).
            tracing::debug!(plugin = INFO.name, file = %path.display(), error = %err, "spool entry not resolved");
            return;
        }
    };
    if e.state != "pending" {
        return;
    }
    e.state = state.into();
    let text = match serde_json::to_vec(&e) {
        Ok(t) => t,
        Err(err) => {
            tracing::error!(plugin = INFO.name, error = %err, "cannot encode a spool entry");
            return;
        }
    };
    if let Err(err) = crate::saves::write_atomic(path, &text) {
        tracing::error!(plugin = INFO.name, file = %path.display(), error = %err, "cannot update a spool entry; it stays pending until the game loads its map again");
    }
}

impl State {
    fn grants_file(&self) -> PathBuf {
        self.dir.join("grants.json")
    }

    fn save_grants(&self) -> std::io::Result<()> {
        let text = serde_json::to_vec(&self.grants).map_err(std::io::Error::other)?;
        crate::saves::write_atomic(&self.grants_file(), &text)
    }

    fn update(&mut self, items: &[Item]) {
        self.version += 1;
        for i in items {
            self.cache
                .insert((i.name.clone(), i.quality.clone()), (i.count, self.version));
        }
    }
}

#[derive(Default)]
pub struct SubspaceHost {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    started: OnceLock<()>,
    state: Mutex<State>,
    /// Held (shared) from a `remove` request until its grant is on disk; `sync` takes it
    /// exclusively, so the controller never refunds a grant the host is about to import.
    removes: tokio::sync::RwLock<()>,
    wake: tokio::sync::Notify,
}

fn spool_dir(dir: &Path) -> PathBuf {
    dir.join("spool")
}

impl Shared {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts the host's worker once, after loading the grants it holds.
    fn ensure(self: &Arc<Self>, host: &HostCtx) {
        if self.started.get().is_some() {
            return;
        }
        if self.started.set(()).is_err() {
            return;
        }
        let dir = host.dir().join("plugins").join(INFO.name);
        if let Err(e) = std::fs::create_dir_all(spool_dir(&dir)) {
            tracing::error!(plugin = INFO.name, dir = %dir.display(), error = %e, "cannot create the spool directory; exports cannot be kept");
        }
        {
            let mut st = self.state();
            st.dir = dir.clone();
            st.host_run = format!("{:016x}", rand::random::<u64>());
            match std::fs::read_to_string(st.grants_file()) {
                Ok(text) => match serde_json::from_str(&text) {
                    Ok(g) => st.grants = g,
                    Err(e) => {
                        tracing::error!(plugin = INFO.name, file = %st.grants_file().display(), error = %e, "unreadable grants file; left as is")
                    }
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::error!(plugin = INFO.name, error = %e, "cannot read the grants file")
                }
            }
        }
        tokio::spawn(worker(self.clone(), host.clone()));
    }

    /// Writes an export to the spool as pending (its game has not saved since); it is sent
    /// from there.
    fn spool(&self, instance_id: i64, items: &[Item]) -> std::io::Result<(String, PathBuf)> {
        let (dir, host_run) = {
            let st = self.state();
            (spool_dir(&st.dir), st.host_run.clone())
        };
        let key = format!("{:032x}", rand::random::<u128>());
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let path = dir.join(format!("{:024}-{key}.json", since_epoch.as_nanos()));
        let entry = SpoolEntry {
            key: key.clone(),
            instance_id,
            items: ledger::items_json(items),
            state: "pending".into(),
            spooled_at: since_epoch.as_millis() as i64,
            host_run,
        };
        let text = serde_json::to_vec(&entry).map_err(std::io::Error::other)?;
        crate::saves::write_atomic(&path, &text)?;
        self.wake.notify_one();
        Ok((key, path))
    }
}

/// Sends every spooled export, oldest first, in its state; stops at the first failure. A
/// final entry is deleted once the controller committed it; a pending one is sent once per
/// process (repeats change nothing there).
async fn flush_spool(shared: &Shared, host: &HostCtx) {
    let dir = spool_dir(&shared.state().dir);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    for path in files {
        let entry = match read_entry(&path) {
            Ok(v) => v,
            Err(e) if !path.exists() => {
                tracing::debug!(plugin = INFO.name, error = %e, "spool entry gone meanwhile");
                continue;
            }
            Err(e) => {
                tracing::error!(plugin = INFO.name, file = %path.display(), error = %e, "unreadable spool entry; left for an operator");
                let _ = std::fs::rename(&path, path.with_extension("bad"));
                continue;
            }
        };
        let pending = entry.state == "pending";
        if pending && shared.state().sent_pending.contains(&entry.key) {
            continue;
        }
        let body = json!({
            "key": entry.key,
            "instance_id": entry.instance_id,
            "items": entry.items,
            "state": entry.state,
            "spooled_at": entry.spooled_at,
        });
        match host
            .request("subspace_storage.export", body, REQUEST_TIMEOUT)
            .await
        {
            Ok(_) if pending => {
                shared.state().sent_pending.insert(entry.key);
            }
            Ok(_) => {
                // Only if it is still the final entry just sent (never a pending rewrite).
                if read_entry(&path).is_ok_and(|e| e.state == entry.state)
                    && let Err(e) = std::fs::remove_file(&path)
                {
                    tracing::warn!(plugin = INFO.name, file = %path.display(), error = %e, "sent export not removed from the spool (the controller dedupes it)");
                }
                shared.state().sent_pending.remove(&entry.key);
            }
            Err(e) if e.code == "bad_request" => {
                tracing::error!(plugin = INFO.name, file = %path.display(), error = %e.message, "the controller refuses a spooled export; left for an operator");
                let _ = std::fs::rename(&path, path.with_extension("bad"));
            }
            Err(e) => {
                tracing::debug!(plugin = INFO.name, error = %e.message, "export not sent yet");
                return;
            }
        }
    }
}

/// The game loaded a map: what it exported before and the host saw no save holding must be
/// settled. This host process read the game's output in order up to its end: no save finished
/// after those exports, so the game went back to a save without them (cancelled, the items are
/// in its chests again). Exports spooled by an earlier host process that died: the game was left
/// running and the next host process stopped it, and it saved on the way out — unless it died
/// too. The game's log of that run (`factorio-previous.log`, written by the game itself, not
/// through the pipe) says which: it ends with a finished quit save, or not.
fn settle_previous_run(shared: &Shared, inst: &InstanceCtx, loaded: Option<PathBuf>) {
    // A save that was running when the game died, whose file was replaced since it started:
    // it was written (the game died before printing `Saving finished`). If that is the map
    // loaded now, it holds the exports seen before it started.
    let held: Vec<PathBuf> = {
        let mut st = shared.state();
        match st.saves.get_mut(&inst.id) {
            Some(sp) if !sp.saving.is_empty() => {
                let written = match (&sp.saving_file, &loaded) {
                    (Some((file, before)), Some(map)) => {
                        same_file(file, map)
                            && file_identity(file).is_some_and(|now| Some(now) != *before)
                    }
                    _ => false,
                };
                if written {
                    std::mem::take(&mut sp.saving)
                        .into_iter()
                        .map(|(_, p)| p)
                        .collect()
                } else {
                    Vec::new()
                }
            }
            _ => Vec::new(),
        }
    };
    if !held.is_empty() {
        tracing::info!(plugin = INFO.name, instance = %inst.name, exports = held.len(), "the game died after writing a save, before saying it finished; the save is loaded and holds these exports");
    }
    for path in &held {
        resolve_entry(path, "available");
    }
    let write_dir = inst.saves_dir().parent().map(Path::to_path_buf);
    let quit_saved = write_dir
        .map(|d| d.join("factorio-previous.log"))
        .and_then(|p| std::fs::read_to_string(p).ok())
        .is_some_and(|text| ends_with_quit_save(&text));
    let (dir, this_run) = {
        let st = shared.state();
        (spool_dir(&st.dir), st.host_run.clone())
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let (mut kept, mut cancelled) = (0, 0);
    for path in files {
        let Ok(e) = read_entry(&path) else { continue };
        if e.instance_id != inst.id || e.state != "pending" {
            continue;
        }
        if e.host_run != this_run && quit_saved {
            kept += 1;
            resolve_entry(&path, "available");
        } else {
            cancelled += 1;
            resolve_entry(&path, "cancelled");
        }
    }
    if kept > 0 {
        tracing::warn!(plugin = INFO.name, instance = %inst.name, exports = kept, "the game saved when it was stopped after a host restart; the exports that save holds count");
    }
    if cancelled > 0 {
        tracing::info!(plugin = INFO.name, instance = %inst.name, exports = cancelled, "the game went back to a save from before these exports; they are cancelled (the items are in its chests again)");
    }
    let mut st = shared.state();
    st.saves.insert(inst.id, SavePoints::default());
    // Its grants are settled from their markers once the game answers (recheck).
    let mut ids = Vec::new();
    for (id, g) in st.grants.iter_mut() {
        if g.instance_id == inst.id {
            // What the run before printed says nothing about the save now loaded.
            g.seen = false;
            g.saving = false;
            ids.push(*id);
        }
    }
    st.busy.extend(ids.iter().copied());
    st.recheck.extend(ids);
    drop(st);
    shared.wake.notify_one();
}

/// A file's `(device, inode)`: a new one once a save is renamed into place.
fn file_identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// The file a save start line names: `Saving game as P`, `Saving map as P`, `Saving to
/// _autosaveN (…)` (in the saves directory).
fn save_target(m: &str, saves: &Path) -> Option<PathBuf> {
    if let Some(p) = m
        .strip_prefix("Saving game as ")
        .or_else(|| m.strip_prefix("Saving map as "))
    {
        return Some(PathBuf::from(p.trim()));
    }
    let slot = m.strip_prefix("Saving to ")?.split_whitespace().next()?;
    Some(saves.join(format!("{slot}.zip")))
}

/// The map a `Loading map P` line names (Factorio may add `: N bytes.`).
fn loaded_map(m: &str) -> Option<PathBuf> {
    let rest = m.strip_prefix("Loading map ")?.trim();
    let path = match rest.rsplit_once(": ") {
        Some((p, tail)) if tail.ends_with("bytes.") || tail.ends_with("bytes") => p,
        _ => rest,
    };
    Some(PathBuf::from(path))
}

/// Whether a game's log ends with a finished quit save (`Saving map as …` then
/// `Saving progress: 100.000000%`, no save started after).
fn ends_with_quit_save(log: &str) -> bool {
    let mut running: Option<bool> = None;
    let mut last: Option<bool> = None;
    for raw in log.lines() {
        let line = crate::host::factorio::log::parse_line(raw);
        let m = line.message();
        match save_line(m) {
            Some(SaveLine::Started) => running = Some(m.starts_with("Saving map as ")),
            Some(SaveLine::Finished) => {
                if let Some(quit) = running.take() {
                    last = Some(quit);
                }
            }
            Some(SaveLine::Failed) => running = None,
            None => {}
        }
    }
    running.is_none() && last == Some(true)
}

/// Tells the controller about grants a save of their game holds: final.
async fn flush_confirmed(shared: &Shared, host: &HostCtx) {
    let confirmed: Vec<(i64, i64)> = {
        let st = shared.state();
        st.grants
            .iter()
            .filter(|(id, g)| {
                g.state != GrantState::Importing && g.durable && !st.busy.contains(id)
            })
            .map(|(id, g)| (*id, g.instance_id))
            .collect()
    };
    for (id, instance_id) in confirmed {
        if host
            .request(
                "subspace_storage.delivered",
                json!({ "grant": id }),
                REQUEST_TIMEOUT,
            )
            .await
            .is_err()
        {
            return;
        }
        forget(shared, host, &[(id, instance_id)]);
    }
}

/// The Lua chunk that hands a game a grant: `Import`, the marker and a stdout line, in one go.
fn import_command(id: i64, items: &Value) -> String {
    format!(
        "{MOD} Import({}) global.clustorio_grants = global.clustorio_grants or {{}} global.clustorio_grants[\"g{id}\"] = true print(\"\\f$ipc:subspace_storage:imported?j{{\\\"grant\\\":{id}}}\") rcon.print(\"ok\")",
        lua_string(&items.to_string())
    )
}

/// At a game's start: its grants are settled from the markers in the save it loaded. Present:
/// the save holds the items (final). Absent: the game went back to a save without them, and
/// they return to the pool.
async fn recheck(shared: Arc<Shared>, inst: InstanceCtx) {
    let held: Vec<i64> = {
        let st = shared.state();
        st.grants
            .iter()
            .filter(|(id, g)| g.instance_id == inst.id && st.recheck.contains(id))
            .map(|(id, _)| *id)
            .collect()
    };
    let host = inst.host();
    for id in held {
        let q = format!(
            "{MOD} rcon.print(global.clustorio_grants and global.clustorio_grants[\"g{id}\"] and \"yes\" or \"no\")"
        );
        match inst.rcon_reply(q).await.as_deref().map(str::trim) {
            Ok("yes") => {
                let mut st = shared.state();
                if let Some(g) = st.grants.get_mut(&id) {
                    g.state = GrantState::Confirmed;
                    g.seen = true;
                    g.durable = true;
                }
                let _ = st.save_grants();
            }
            Ok("no") => {
                tracing::info!(plugin = INFO.name, instance = %inst.name, grant = id, "the game went back to a save without this grant; its items return to the pool");
                refund(&shared, &host, id).await;
            }
            other => {
                tracing::warn!(plugin = INFO.name, instance = %inst.name, grant = id, answer = ?other, "could not check a grant's marker; checked at the next start");
                continue;
            }
        }
        let mut st = shared.state();
        st.busy.remove(&id);
        st.recheck.remove(&id);
    }
    shared.wake.notify_one();
}

/// Grants still to be settled from their markers (the check at the game's start failed or
/// did not run), for every running game with the mod.
async fn recheck_all(shared: &Arc<Shared>, host: &HostCtx) {
    let due: Vec<i64> = {
        let st = shared.state();
        let mut ids: Vec<i64> = st
            .grants
            .iter()
            .filter(|(id, g)| st.recheck.contains(id) && st.with_mod.contains(&g.instance_id))
            .map(|(_, g)| g.instance_id)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    };
    if due.is_empty() {
        return;
    }
    for inst in host.running_instances() {
        if due.contains(&inst.id) {
            recheck(shared.clone(), inst).await;
        }
    }
}

/// Drops settled grants from the file and their markers from the games.
fn forget(shared: &Shared, host: &HostCtx, done: &[(i64, i64)]) {
    {
        let mut st = shared.state();
        for (id, _) in done {
            st.grants.remove(id);
        }
        if let Err(e) = st.save_grants() {
            tracing::warn!(plugin = INFO.name, error = %e, "grants file not updated (settled grants are sent again, harmlessly)");
        }
    }
    for inst in host.running_instances() {
        let ids: Vec<String> = done
            .iter()
            .filter(|(_, i)| *i == inst.id)
            .map(|(g, _)| format!("global.clustorio_grants[\"g{g}\"] = nil"))
            .collect();
        if !ids.is_empty() {
            inst.rcon(format!(
                "{MOD} if global.clustorio_grants then {} end",
                ids.join(" ")
            ));
        }
    }
}

/// A grant that did not reach the game: out of the file, back to the pool.
async fn refund(shared: &Shared, host: &HostCtx, id: i64) {
    {
        let mut st = shared.state();
        st.grants.remove(&id);
        if let Err(e) = st.save_grants() {
            tracing::warn!(plugin = INFO.name, error = %e, "grants file not updated");
        }
    }
    // If this fails the next sync refunds it: the host no longer holds it.
    let _ = host
        .request(
            "subspace_storage.refund",
            json!({ "grant": id }),
            REQUEST_TIMEOUT,
        )
        .await;
}

/// Settles `importing` grants whose `Import` is not running (its RCON answer was lost): the
/// marker in the game's state says whether it ran.
async fn settle_unknown(shared: &Shared, host: &HostCtx) {
    let unknown: Vec<(i64, i64)> = {
        let st = shared.state();
        st.grants
            .iter()
            .filter(|(id, g)| g.state == GrantState::Importing && !st.busy.contains(id))
            .map(|(id, g)| (*id, g.instance_id))
            .collect()
    };
    if unknown.is_empty() {
        return;
    }
    let running = host.running_instances();
    for (id, instance_id) in unknown {
        let Some(inst) = running.iter().find(|i| i.id == instance_id) else {
            continue;
        };
        let q = format!(
            "{MOD} rcon.print(global.clustorio_grants and global.clustorio_grants[\"g{id}\"] and \"yes\" or \"no\")"
        );
        match inst.rcon_reply(q).await.as_deref().map(str::trim) {
            Ok("yes") => {
                // In the game's state now: a save that starts from here on holds it.
                let mut st = shared.state();
                if let Some(g) = st.grants.get_mut(&id) {
                    g.state = GrantState::Confirmed;
                    g.seen = true;
                }
                let _ = st.save_grants();
            }
            Ok("no") => {
                tracing::info!(plugin = INFO.name, instance = %inst.name, grant = id, "the game never got this grant; refunding it");
                refund(shared, host, id).await;
            }
            _ => {}
        }
    }
}

/// After a reconnect and every [`SYNC_INTERVAL`]: the controller refunds what the host does not
/// hold.
async fn sync(shared: &Shared, host: &HostCtx) -> bool {
    let _exclusive = shared.removes.write().await;
    let (held, delivered): (Vec<i64>, Vec<(i64, i64)>) = {
        let st = shared.state();
        let fin = |id: &i64, g: &HeldGrant| {
            g.state != GrantState::Importing && g.durable && !st.busy.contains(id)
        };
        let held = st
            .grants
            .iter()
            .filter(|(id, g)| !fin(id, g))
            .map(|(id, _)| *id)
            .collect();
        let delivered = st
            .grants
            .iter()
            .filter(|(id, g)| fin(id, g))
            .map(|(id, g)| (*id, g.instance_id))
            .collect();
        (held, delivered)
    };
    let ids: Vec<i64> = delivered.iter().map(|(id, _)| *id).collect();
    match host
        .request(
            "subspace_storage.sync",
            json!({ "held": held, "delivered": ids }),
            REQUEST_TIMEOUT,
        )
        .await
    {
        Ok(_) => {
            forget(shared, host, &delivered);
            true
        }
        Err(e) => {
            tracing::debug!(plugin = INFO.name, error = %e.message, "grant sync failed; retried");
            false
        }
    }
}

/// The keep-alive and the changed counts (all of them after a start), to every running game.
fn update_games(shared: &Shared, host: &HostCtx) {
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    for inst in host.running_instances() {
        if !shared.state().with_mod.contains(&inst.id) {
            continue;
        }
        let (items, full) = {
            let mut st = shared.state();
            let since = st.sent.get(&inst.id).copied();
            let items: Vec<Value> = st
                .cache
                .iter()
                .filter(|(_, (_, v))| since.is_none_or(|s| *v > s))
                .map(|((name, quality), (count, _))| {
                    json!([name, count.min(&(i32::MAX as i64)), quality])
                })
                .collect();
            let version = st.version;
            st.sent.insert(inst.id, version);
            (items, since.is_none())
        };
        let mut items = items;
        items.push(json!(["signal-unixtime", now_s, "normal"]));
        inst.rcon(format!(
            "{MOD} global.ticksSinceMasterPinged = 0 UpdateInvData({}{})",
            lua_string(&Value::Array(items).to_string()),
            if full { ", true" } else { "" }
        ));
    }
}

async fn worker(shared: Arc<Shared>, host: HostCtx) {
    let mut was_connected = false;
    let mut need_table = true;
    let mut last_sync: Option<Instant> = None;
    let mut last_update = Instant::now() - GAME_UPDATE;
    loop {
        let connected = host.connected();
        if connected && !was_connected {
            need_table = true;
            last_sync = None;
        }
        was_connected = connected;
        if connected {
            if need_table
                && let Ok(v) = host
                    .request("subspace_storage.get_storage", json!({}), REQUEST_TIMEOUT)
                    .await
            {
                let (items, _) = ledger::parse_items_with_zero(&v["items"]);
                let mut st = shared.state();
                st.cache.clear();
                st.update(&items);
                st.sent.clear();
                need_table = false;
            }
            flush_spool(&shared, &host).await;
            flush_confirmed(&shared, &host).await;
            if last_sync.is_none_or(|t| t.elapsed() >= SYNC_INTERVAL) && sync(&shared, &host).await
            {
                last_sync = Some(Instant::now());
            }
            if last_update.elapsed() >= GAME_UPDATE {
                last_update = Instant::now();
                update_games(&shared, &host);
            }
        }
        settle_unknown(&shared, &host).await;
        recheck_all(&shared, &host).await;
        save_waiting(&shared, &host);
        let _ = tokio::time::timeout(LOOP, shared.wake.notified()).await;
    }
}

/// What the instance config says about logging transfers.
fn log_transfers(inst: &InstanceCtx) -> bool {
    inst.config()["log_item_transfers"].as_bool() == Some(true)
}

/// Errors after which the command certainly did not run.
fn never_ran(e: &str) -> bool {
    e.contains("is not running") || e.contains("queue is full or closed")
}

/// Orders from a game: ask the pool, then hand the game what it got.
async fn order(shared: Arc<Shared>, inst: InstanceCtx, wanted: Vec<Item>) {
    let host = inst.host();
    let guard = shared.removes.read().await;
    let reply = inst
        .request(
            "subspace_storage.remove",
            json!({ "items": ledger::items_json(&wanted) }),
            REQUEST_TIMEOUT,
        )
        .await;
    let done = |shared: &Shared| {
        shared.state().ordering.remove(&inst.id);
    };
    let (id, items) = match reply {
        Ok(v) => match v["grant"].as_i64() {
            Some(id) => (id, v["items"].clone()),
            None => {
                done(&shared);
                return;
            }
        },
        Err(e) => {
            tracing::debug!(plugin = INFO.name, instance = %inst.name, error = %e.message, "orders not served");
            done(&shared);
            return;
        }
    };
    let saved = {
        let mut st = shared.state();
        st.grants.insert(
            id,
            HeldGrant {
                instance_id: inst.id,
                items: items.clone(),
                state: GrantState::Importing,
                seen: false,
                saving: false,
                durable: false,
            },
        );
        st.busy.insert(id);
        st.save_grants()
    };
    drop(guard);
    if let Err(e) = saved {
        tracing::error!(plugin = INFO.name, instance = %inst.name, error = %e, "cannot record the grant; returning it");
        shared.state().busy.remove(&id);
        refund(&shared, &host, id).await;
        done(&shared);
        return;
    }
    // Fault injection for tests only: the host dies with the grant on disk, unclaimed.
    if std::env::var_os("CLUSTORIO_FAULT_SUBSPACE_DIE_BEFORE_CLAIM").is_some() {
        tracing::error!(
            plugin = INFO.name,
            grant = id,
            "fault injection: dying before the claim"
        );
        std::process::abort();
    }
    // On disk: now the controller may count on this host. A grant it expired meanwhile (the
    // host was away past the bound) is not imported.
    let claimed = host
        .request(
            "subspace_storage.claim",
            json!({ "grant": id }),
            REQUEST_TIMEOUT,
        )
        .await;
    if !matches!(&claimed, Ok(v) if v["claimed"] == true) {
        match &claimed {
            Ok(_) => {
                tracing::info!(plugin = INFO.name, instance = %inst.name, grant = id, "the controller no longer holds this grant for us; not imported")
            }
            Err(e) => {
                tracing::info!(plugin = INFO.name, instance = %inst.name, grant = id, error = %e.message, "grant not claimed; not imported (the controller returns it)")
            }
        }
        let mut st = shared.state();
        st.busy.remove(&id);
        st.grants.remove(&id);
        let _ = st.save_grants();
        drop(st);
        done(&shared);
        return;
    }
    let result = inst.rcon_reply(import_command(id, &items)).await;
    shared.state().busy.remove(&id);
    match result {
        Ok(out) if out.trim() == "ok" => {
            if log_transfers(&inst) {
                tracing::info!(plugin = INFO.name, instance = %inst.name, grant = id, items = %items, "imported");
            }
            let mut st = shared.state();
            if let Some(g) = st.grants.get_mut(&id) {
                g.state = GrantState::Confirmed;
            }
            if let Err(e) = st.save_grants() {
                tracing::warn!(plugin = INFO.name, error = %e, "grants file not updated");
            }
            shared.wake.notify_one();
        }
        Ok(out) => {
            tracing::warn!(plugin = INFO.name, instance = %inst.name, grant = id, output = %out.trim(), "Import failed in the game; returning the items");
            refund(&shared, &host, id).await;
        }
        Err(e) if never_ran(&e) => {
            tracing::info!(plugin = INFO.name, instance = %inst.name, grant = id, "the game stopped before the Import; returning the items");
            refund(&shared, &host, id).await;
        }
        Err(e) => {
            tracing::warn!(plugin = INFO.name, instance = %inst.name, grant = id, error = %e, "Import outcome unknown; settled when the game runs again");
        }
    }
    done(&shared);
}

impl HostPlugin for SubspaceHost {
    fn info(&self) -> &'static PluginInfo {
        &INFO
    }

    fn ipc(&self, inst: &InstanceCtx, channel: &str, data: Value) {
        self.shared.ensure(&inst.host());
        if channel == "subspace_storage:imported" {
            if let Some(id) = data["grant"].as_i64() {
                let mut st = self.shared.state();
                if let Some(g) = st.grants.get_mut(&id) {
                    g.seen = true;
                    let _ = st.save_grants();
                    st.saves
                        .entry(inst.id)
                        .or_default()
                        .waiting_since
                        .get_or_insert_with(Instant::now);
                }
            }
            return;
        }
        let (items, bad) = ledger::parse_items(&data);
        if bad > 0 {
            tracing::warn!(plugin = INFO.name, instance = %inst.name, channel, bad, "malformed entries from the game; skipped");
        }
        if items.is_empty() {
            return;
        }
        match channel {
            "subspace_storage:output" => match self.shared.spool(inst.id, &items) {
                Ok(entry) => {
                    {
                        let mut st = self.shared.state();
                        let sp = st.saves.entry(inst.id).or_default();
                        sp.unsaved.push(entry);
                        sp.waiting_since.get_or_insert_with(Instant::now);
                    }
                    if log_transfers(inst) {
                        tracing::info!(plugin = INFO.name, instance = %inst.name, items = %ledger::items_json(&items), "exported");
                    }
                }
                Err(e) => {
                    tracing::error!(plugin = INFO.name, instance = %inst.name, error = %e, items = %ledger::items_json(&items), "cannot spool an export; these items are lost")
                }
            },
            "subspace_storage:orders" => {
                // Orders come every cycle; dropping one while away is harmless.
                if !inst.running() || !inst.host().connected() {
                    return;
                }
                if !self.shared.state().ordering.insert(inst.id) {
                    return;
                }
                tokio::spawn(order(self.shared.clone(), inst.clone(), items));
            }
            other => {
                tracing::warn!(plugin = INFO.name, instance = %inst.name, channel = other, "unknown IPC channel")
            }
        }
    }

    fn controller_event(&self, host: &HostCtx, name: &str, data: Value) {
        self.shared.ensure(host);
        match name {
            "subspace_storage.storage" => {
                let (items, _) = ledger::parse_items_with_zero(&data["items"]);
                self.shared.state().update(&items);
            }
            "subspace_storage.hello" => self.shared.wake.notify_one(),
            other => tracing::debug!(plugin = INFO.name, event = other, "unknown event"),
        }
    }

    fn instance_started(&self, inst: &InstanceCtx) {
        self.shared.ensure(&inst.host());
        {
            let mut st = self.shared.state();
            st.sent.remove(&inst.id);
            st.ordering.remove(&inst.id);
            st.with_mod.remove(&inst.id);
        }
        let (shared, inst) = (self.shared.clone(), inst.clone());
        tokio::spawn(async move {
            // Without the mod there is nothing to keep alive or update (and every call would
            // answer with an error).
            let probe = format!("{MOD} rcon.print(\"subspace_storage\")");
            match inst.rcon_reply(probe).await {
                Ok(out) if out.trim() == "subspace_storage" => {
                    shared.state().with_mod.insert(inst.id);
                    recheck(shared, inst).await;
                }
                Ok(_) => {
                    tracing::info!(plugin = INFO.name, instance = %inst.name, "the game has no Subspace Storage mod; the plugin stays idle for it")
                }
                Err(e) => {
                    tracing::warn!(plugin = INFO.name, instance = %inst.name, error = %e, "could not ask the game for the Subspace Storage mod")
                }
            }
        });
    }

    /// Save points, in the order the game printed them: exports and imports seen before a
    /// save started are in that save once it finished; a map being loaded ends the run before.
    fn line(&self, inst: &InstanceCtx, line: &crate::host::factorio::log::LogLine) {
        let m = line.message();
        if m.starts_with("Loading map ") {
            self.shared.ensure(&inst.host());
            settle_previous_run(&self.shared, inst, loaded_map(m));
            return;
        }
        let event = match save_line(m) {
            Some(e) => e,
            None => return,
        };
        self.shared.ensure(&inst.host());
        let mut now_available = Vec::new();
        {
            let mut st = self.shared.state();
            let sp = st.saves.entry(inst.id).or_default();
            match event {
                SaveLine::Started => {
                    let unsaved = std::mem::take(&mut sp.unsaved);
                    sp.saving.extend(unsaved);
                    sp.saving_file = save_target(m, &inst.saves_dir()).map(|p| {
                        let before = file_identity(&p);
                        (p, before)
                    });
                }
                SaveLine::Finished => {
                    sp.saving_file = None;
                    now_available = std::mem::take(&mut sp.saving);
                    sp.asked = None;
                    if sp.unsaved.is_empty() {
                        sp.waiting_since = None;
                    }
                }
                SaveLine::Failed => {
                    sp.saving_file = None;
                    let mut saving = std::mem::take(&mut sp.saving);
                    saving.append(&mut sp.unsaved);
                    sp.unsaved = saving;
                    sp.asked = None;
                }
            }
            let mut waiting = false;
            for g in st.grants.values_mut() {
                if g.instance_id != inst.id {
                    continue;
                }
                match event {
                    SaveLine::Started if g.seen => g.saving = true,
                    SaveLine::Finished if g.saving => g.durable = true,
                    SaveLine::Failed => g.saving = false,
                    _ => {}
                }
                waiting |= g.seen && !g.durable;
            }
            let _ = st.save_grants();
            if waiting && let Some(sp) = st.saves.get_mut(&inst.id) {
                sp.waiting_since.get_or_insert_with(Instant::now);
            }
        }
        for (_, path) in &now_available {
            resolve_entry(path, "available");
        }
        self.shared.wake.notify_one();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SaveLine {
    Started,
    Finished,
    Failed,
}

/// Factorio's save lines (research/factorio.md): `/server-save`, autosaves, the empty-server
/// save and the quit save (which ends with its progress at 100 % instead of `Saving finished`).
fn save_line(m: &str) -> Option<SaveLine> {
    if m.starts_with("Saving game as ")
        || m.starts_with("Saving to _autosave")
        || m.starts_with("Saving map as ")
    {
        Some(SaveLine::Started)
    } else if m == "Saving finished" || m == "Saving progress: 100.000000%" {
        Some(SaveLine::Finished)
    } else if m.starts_with("Saving failed") {
        Some(SaveLine::Failed)
    } else {
        None
    }
}

/// Asks for a save (`/server-save`) in games whose transfers waited `save_interval` seconds.
fn save_waiting(shared: &Shared, host: &HostCtx) {
    for inst in host.running_instances() {
        let interval = inst.config()["save_interval"].as_u64().unwrap_or(30);
        if interval == 0 {
            continue;
        }
        let interval = Duration::from_secs(interval);
        let ask = {
            let mut st = shared.state();
            if !st.with_mod.contains(&inst.id) {
                continue;
            }
            let Some(sp) = st.saves.get_mut(&inst.id) else {
                continue;
            };
            let due = sp.waiting_since.is_some_and(|t| t.elapsed() >= interval)
                && sp.asked.is_none_or(|t| t.elapsed() >= interval);
            if due {
                sp.asked = Some(Instant::now());
            }
            due
        };
        if ask {
            tracing::debug!(plugin = INFO.name, instance = %inst.name, "saving: transfers wait for a save");
            inst.rcon("/server-save".into());
        }
    }
}
