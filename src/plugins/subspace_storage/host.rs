//! The host's part: the export spool, grants and their `Import`, the keep-alive and the
//! storage table the games' combinators see.
//!
//! Files, under `<host dir>/plugins/subspace_storage/`:
//! - `spool/<time>-<key>.json`: one export each, written (fsync'd) when the game prints it and
//!   deleted once the controller has committed it. Sent oldest first whenever the link is up,
//!   so exports made while the controller is away arrive when it is back.
//! - `grants.json`: grants this host holds: `importing` (the `Import` was or is being sent; the
//!   outcome is settled from the game's marker if it is not known), `confirmed` (the game has
//!   the items; the controller is told `delivered`) and `delivered` (kept until a save of the
//!   game holds the items; at the game's next start a missing marker means it rolled back, and
//!   the grant is imported again).

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
    /// The controller knows; kept until a save of the game holds the items (a game killed
    /// before that rolls back, and gets them again at its next start).
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

    /// Writes an export to the spool; it is sent from there.
    fn spool(&self, instance_id: i64, items: &[Item]) -> std::io::Result<PathBuf> {
        let dir = spool_dir(&self.state().dir);
        let key = format!("{:032x}", rand::random::<u128>());
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let path = dir.join(format!("{nanos:024}-{key}.json"));
        let body =
            json!({ "key": key, "instance_id": instance_id, "items": ledger::items_json(items) });
        crate::saves::write_atomic(&path, body.to_string().as_bytes())?;
        self.wake.notify_one();
        Ok(path)
    }
}

/// Sends every spooled export, oldest first; stops at the first failure.
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
        let body: Value = match std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(plugin = INFO.name, file = %path.display(), error = %e, "unreadable spool entry; left for an operator");
                let _ = std::fs::rename(&path, path.with_extension("bad"));
                continue;
            }
        };
        match host
            .request("subspace_storage.export", body, REQUEST_TIMEOUT)
            .await
        {
            Ok(_) => {
                if let Err(e) = std::fs::remove_file(&path) {
                    tracing::warn!(plugin = INFO.name, file = %path.display(), error = %e, "sent export not removed from the spool (the controller dedupes it)");
                }
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

/// Tells the controller about confirmed grants.
async fn flush_confirmed(shared: &Shared, host: &HostCtx) {
    let confirmed: Vec<(i64, i64)> = shared
        .state()
        .grants
        .iter()
        .filter(|(_, g)| g.state == GrantState::Confirmed)
        .map(|(id, g)| (*id, g.instance_id))
        .collect();
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
        delivered(shared, host, &[(id, instance_id)]);
    }
}

/// The controller acknowledged these grants: dropped when a save already holds them, else
/// kept (as delivered) until one does.
fn delivered(shared: &Shared, host: &HostCtx, acked: &[(i64, i64)]) {
    let mut done = Vec::new();
    {
        let mut st = shared.state();
        for (id, inst) in acked {
            if let Some(g) = st.grants.get_mut(id) {
                if g.durable {
                    done.push((*id, *inst));
                } else {
                    g.state = GrantState::Delivered;
                }
            }
        }
        let _ = st.save_grants();
    }
    forget(shared, host, &done);
}

/// The Lua chunk that hands a game a grant: `Import`, the marker and a stdout line, in one go.
fn import_command(id: i64, items: &Value) -> String {
    format!(
        "{MOD} Import({}) global.clustorio_grants = global.clustorio_grants or {{}} global.clustorio_grants[\"g{id}\"] = true print(\"\\f$ipc:subspace_storage:imported?j{{\\\"grant\\\":{id}}}\") rcon.print(\"ok\")",
        lua_string(&items.to_string())
    )
}

/// At a game's start: grants it had got but no save was known to hold are checked against its
/// markers; a game that rolled back to a save without them gets them again.
async fn recheck(shared: Arc<Shared>, inst: InstanceCtx) {
    let held: Vec<(i64, Value)> = {
        let mut st = shared.state();
        let list: Vec<(i64, Value)> = st
            .grants
            .iter()
            .filter(|(_, g)| g.instance_id == inst.id && g.state != GrantState::Importing)
            .map(|(id, g)| (*id, g.items.clone()))
            .collect();
        for (id, _) in &list {
            st.busy.insert(*id);
        }
        list
    };
    let host = inst.host();
    for (id, items) in held {
        let q = format!(
            "{MOD} rcon.print(global.clustorio_grants and global.clustorio_grants[\"g{id}\"] and \"yes\" or \"no\")"
        );
        match inst.rcon_reply(q).await.as_deref().map(str::trim) {
            Ok("yes") => {
                let done = {
                    let mut st = shared.state();
                    match st.grants.get_mut(&id) {
                        Some(g) if g.state == GrantState::Delivered => true,
                        Some(g) => {
                            g.durable = true;
                            let _ = st.save_grants();
                            false
                        }
                        None => false,
                    }
                };
                if done {
                    forget(&shared, &host, &[(id, inst.id)]);
                }
            }
            Ok("no") => {
                tracing::warn!(plugin = INFO.name, instance = %inst.name, grant = id, "the game rolled back to a save without this grant; importing it again");
                let again = inst.rcon_reply(import_command(id, &items)).await;
                if again.as_deref().map(str::trim) != Ok("ok") {
                    tracing::warn!(plugin = INFO.name, instance = %inst.name, grant = id, "importing again failed; retried at the next start");
                }
            }
            _ => {}
        }
        shared.state().busy.remove(&id);
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

/// Settles `importing` grants whose `Import` is not running: the marker in the game's state
/// says whether it ran (and survived).
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
                let mut st = shared.state();
                if let Some(g) = st.grants.get_mut(&id) {
                    g.state = GrantState::Confirmed;
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
        let held = st
            .grants
            .iter()
            .filter(|(_, g)| g.state == GrantState::Importing)
            .map(|(id, _)| *id)
            .collect();
        let delivered = st
            .grants
            .iter()
            .filter(|(_, g)| g.state == GrantState::Confirmed)
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
            self::delivered(shared, host, &delivered);
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
                Ok(_) => {
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

    /// Saves: a grant the game printed before a save started is in that save once it finishes.
    fn line(&self, inst: &InstanceCtx, line: &crate::host::factorio::log::LogLine) {
        let m = line.message();
        let starts = m.starts_with("Saving game as ") || m.starts_with("Saving to _autosave");
        let finished = m == "Saving finished";
        if !starts && !finished {
            return;
        }
        let mut done = Vec::new();
        {
            let mut st = self.shared.state();
            for (id, g) in st.grants.iter_mut() {
                if g.instance_id != inst.id {
                    continue;
                }
                if starts && g.seen {
                    g.saving = true;
                } else if finished && g.saving {
                    g.durable = true;
                    if g.state == GrantState::Delivered {
                        done.push((*id, inst.id));
                    }
                }
            }
            let _ = st.save_grants();
        }
        if !done.is_empty() {
            forget(&self.shared, &inst.host(), &done);
        }
    }
}
