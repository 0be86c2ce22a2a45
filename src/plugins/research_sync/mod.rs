//! `research_sync`: technology progress and completion shared by every game of the cluster
//! (research/plugins.md §2.2), written afresh against Clusterio's Lua contract.
//!
//! Messages (link, `research_sync.<name>`):
//! - `contribution` (event, host → controller): `{instance_id, name, level, contribution, run,
//!   total, max_level}`, what one game researched itself of `name` at `level` in one run (one
//!   start of the game). The controller keeps the highest `total` per (run, name, level), so a
//!   report repeated after a reconnect, or again at the next start from the save, counts once.
//! - `finished` (event, both ways): `{name, level, researched?, max_level?}`: `level` and all
//!   below are done.
//! - `progress` (event, controller → host): `{technologies: [{name, level, progress}]}`, at most
//!   once a second.
//! - `sync` (request, host → controller, at every start): `{instance_id, technologies: [{name,
//!   level, progress, researched, max_level}]}` → the controller's table, Clusterio's bare array
//!   `[[name, level, progress|null, researched], …]`.
//!
//! Progress is never lost to a stop or a crash: a game's own progress since its last report is in
//! its save and is reported at its next start; what it reported after its last autosave is on the
//! controller and comes back to it in the sync. The controller commits every change before the
//! link acknowledges the event that caused it.

use super::{Builtin, ControllerPlugin, HostPlugin, LuaModule, PluginInfo};
use crate::controller::plugins::ControllerCtx;
use crate::host::backend::BoxFuture;
use crate::host::plugins::{HostCtx, InstanceCtx, lua_string};
use crate::link::frame::ErrorBody;
use crate::permissions::Permission;
use crate::store::{self, Store, StoreError};
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

static LUA: LuaModule = LuaModule {
    name: "research_sync",
    version: "0.1.0",
    dependencies: &[("clusterio", "*")],
    load: &["sync.lua"],
    require: &[],
    files: &[("sync.lua", include_str!("sync.lua"))],
};

/// Who may see the cluster's research (web page, `ctl research list`).
pub const PERMISSION_LIST: &str = "research_sync.list";

static INFO: PluginInfo = PluginInfo {
    name: "research_sync",
    title: "Research sync",
    description: "Research progress adds up across the cluster; a technology finished in one game is finished in all.",
    version: "0.1.0",
    permissions: &[Permission {
        name: PERMISSION_LIST,
        title: "List research",
        description: "See the cluster's technologies and research progress.",
        grant_by_default: true,
    }],
    lua: Some(&LUA),
    ipc_channels: &[],
    migrations: &["CREATE TABLE research_sync_tech (
            name TEXT PRIMARY KEY,
            level INTEGER NOT NULL,
            max_level INTEGER NOT NULL,
            researched INTEGER NOT NULL,
            base REAL NOT NULL,
            updated_at INTEGER NOT NULL
        );
        CREATE TABLE research_sync_runs (
            run TEXT NOT NULL,
            name TEXT NOT NULL,
            level INTEGER NOT NULL,
            instance_id INTEGER NOT NULL,
            total REAL NOT NULL,
            PRIMARY KEY (run, name, level)
        );"],
    settings: crate::config::PluginSettings {
        instance: &[super::load_plugin_field(
            "research_sync.load_plugin",
            "Research sync",
        )],
        ..crate::config::PluginSettings::NONE
    },
};

pub const BUILTIN: Builtin = Builtin {
    info: &INFO,
    controller: || Some(Box::new(ResearchController::default())),
    host: || Some(Box::new(ResearchHost)),
};

/// Progress broadcasts go out at most this often.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// The host retries the start-up sync this often while the controller is away.
const SYNC_RETRY: Duration = Duration::from_secs(5);
const SYNC_TIMEOUT: Duration = Duration::from_secs(15);

/// One technology as the controller keeps it. `level` is the lowest level not yet researched
/// (the last one once `researched`); `base` is progress of `level` games had before they
/// reported it themselves (taken at sync, highest wins).
#[derive(Debug, Clone, PartialEq)]
struct Tech {
    name: String,
    level: i64,
    max_level: i64,
    researched: bool,
    base: f64,
}

impl Tech {
    fn new(name: &str, level: i64, max_level: i64) -> Tech {
        Tech {
            name: name.to_string(),
            level: level.max(1),
            max_level: max_level.max(level).max(1),
            researched: false,
            base: 0.0,
        }
    }

    /// The highest level known done (everything when researched).
    fn done(&self) -> i64 {
        if self.researched {
            i64::MAX
        } else {
            self.level - 1
        }
    }
}

/// What a change means for the games.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Progress {
        name: String,
        level: i64,
        progress: f64,
    },
    Finished {
        name: String,
        level: i64,
    },
}

fn load(c: &Connection, name: &str) -> Result<Option<Tech>, StoreError> {
    Ok(c.query_row(
        "SELECT level, max_level, researched, base FROM research_sync_tech WHERE name = ?1",
        [name],
        |r| {
            Ok(Tech {
                name: name.to_string(),
                level: r.get(0)?,
                max_level: r.get(1)?,
                researched: r.get::<_, i64>(2)? != 0,
                base: r.get(3)?,
            })
        },
    )
    .optional()?)
}

fn save(c: &Connection, t: &Tech) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO research_sync_tech (name, level, max_level, researched, base, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (name) DO UPDATE SET level = ?2, max_level = ?3, researched = ?4, base = ?5, updated_at = ?6",
        params![t.name, t.level, t.max_level, t.researched as i64, t.base, store::now_ms()],
    )?;
    Ok(())
}

/// The cluster's progress of the level being researched.
fn progress(c: &Connection, t: &Tech) -> Result<f64, StoreError> {
    if t.researched {
        return Ok(0.0);
    }
    let runs: f64 = c.query_row(
        "SELECT COALESCE(SUM(total), 0) FROM research_sync_runs WHERE name = ?1 AND level = ?2",
        params![t.name, t.level],
        |r| r.get(0),
    )?;
    Ok(t.base + runs)
}

/// Marks every level up to `done` researched.
fn advance(
    c: &Connection,
    t: &mut Tech,
    done: i64,
    out: &mut Vec<Outcome>,
) -> Result<(), StoreError> {
    if done <= t.done() {
        return Ok(());
    }
    if done >= t.max_level {
        t.researched = true;
        t.level = t.max_level;
    } else {
        t.level = done + 1;
    }
    t.base = 0.0;
    c.execute(
        "DELETE FROM research_sync_runs WHERE name = ?1 AND level <= ?2",
        params![t.name, done],
    )?;
    out.retain(|o| !matches!(o, Outcome::Progress { name, .. } if *name == t.name));
    out.push(Outcome::Finished {
        name: t.name.clone(),
        level: done.min(t.max_level),
    });
    Ok(())
}

/// A level a game sent: a positive integer.
fn level_of(v: &Value) -> Option<i64> {
    v.as_f64()
        .filter(|l| l.is_finite() && *l >= 1.0 && *l <= 1e15)
        .map(|l| l as i64)
}

fn fraction(v: &Value) -> Option<f64> {
    v.as_f64().filter(|p| p.is_finite() && *p >= 0.0)
}

fn tech_or_new(
    c: &Connection,
    name: &str,
    level: i64,
    max: Option<i64>,
) -> Result<Tech, StoreError> {
    let mut t = load(c, name)?.unwrap_or_else(|| Tech::new(name, level, max.unwrap_or(level)));
    if let Some(m) = max
        && m >= t.level
    {
        t.max_level = m;
    }
    Ok(t)
}

/// One game's report of its own progress.
fn contribute(c: &Connection, instance_id: i64, ev: &Value) -> Result<Vec<Outcome>, StoreError> {
    let mut out = Vec::new();
    let (Some(name), Some(level)) = (ev["name"].as_str(), level_of(&ev["level"])) else {
        return Err(StoreError::Invalid(
            "contribution without name or level".into(),
        ));
    };
    let mut t = tech_or_new(c, name, level, level_of(&ev["max_level"]))?;
    if t.researched || level < t.level {
        return Ok(out);
    }
    if level > t.level {
        // The game finished levels the controller missed.
        advance(c, &mut t, level - 1, &mut out)?;
    }
    let added = match (ev["run"].as_str(), fraction(&ev["total"])) {
        (Some(run), Some(total)) => {
            let old: f64 = c
                .query_row(
                    "SELECT total FROM research_sync_runs WHERE run = ?1 AND name = ?2 AND level = ?3",
                    params![run, name, level],
                    |r| r.get(0),
                )
                .optional()?
                .unwrap_or(0.0);
            if total > old {
                c.execute(
                    "INSERT INTO research_sync_runs (run, name, level, instance_id, total) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (run, name, level) DO UPDATE SET total = ?5",
                    params![run, name, level, instance_id, total],
                )?;
            }
            total > old
        }
        // A report without a run (another implementation of the Lua side): a plain delta.
        _ => match fraction(&ev["contribution"]) {
            Some(d) if d > 0.0 => {
                t.base += d;
                true
            }
            _ => false,
        },
    };
    if added {
        let p = progress(c, &t)?;
        if p >= 1.0 {
            let level = t.level;
            advance(c, &mut t, level, &mut out)?;
        } else {
            out.push(Outcome::Progress {
                name: name.to_string(),
                level: t.level,
                progress: p,
            });
        }
    }
    save(c, &t)?;
    Ok(out)
}

/// A game finished a level itself.
fn finished(c: &Connection, ev: &Value) -> Result<Vec<Outcome>, StoreError> {
    let mut out = Vec::new();
    let (Some(name), Some(level)) = (ev["name"].as_str(), level_of(&ev["level"])) else {
        return Err(StoreError::Invalid("finished without name or level".into()));
    };
    let max = level_of(&ev["max_level"]);
    let mut t = tech_or_new(c, name, level, max)?;
    let done = if ev["researched"].as_bool() == Some(true) {
        level.max(t.max_level)
    } else {
        level
    };
    advance(c, &mut t, done, &mut out)?;
    save(c, &t)?;
    Ok(out)
}

/// A game's technologies at its start, merged in: what it has done counts as done; progress it
/// has beyond the cluster's (from before it joined) is kept.
fn merge(c: &Connection, techs: &[Value]) -> Result<Vec<Outcome>, StoreError> {
    let mut out = Vec::new();
    for g in techs {
        let (Some(name), Some(level)) = (g["name"].as_str(), level_of(&g["level"])) else {
            continue;
        };
        let max = level_of(&g["max_level"]);
        let known = load(c, name)?;
        let mut t = tech_or_new(c, name, level, max)?;
        let researched = g["researched"].as_bool() == Some(true);
        let done = if researched {
            level.max(t.max_level)
        } else {
            level - 1
        };
        let before = out.len();
        advance(c, &mut t, done, &mut out)?;
        let mut changed = known.as_ref() != Some(&t);
        if !t.researched
            && level == t.level
            && let Some(p) = fraction(&g["progress"]).filter(|p| *p > 0.0)
        {
            let cluster = progress(c, &t)?;
            if p > cluster && p < 1.0 {
                t.base += p - cluster;
                changed = true;
                out.push(Outcome::Progress {
                    name: name.to_string(),
                    level,
                    progress: p,
                });
            }
        }
        if changed || out.len() != before {
            save(c, &t)?;
        }
    }
    Ok(out)
}

/// Every technology the controller knows, sorted by name.
fn table(c: &Connection) -> Result<Vec<(Tech, f64)>, StoreError> {
    let mut stmt = c.prepare_cached(
        "SELECT name, level, max_level, researched, base FROM research_sync_tech ORDER BY name",
    )?;
    let techs: Vec<Tech> = stmt
        .query_map([], |r| {
            Ok(Tech {
                name: r.get(0)?,
                level: r.get(1)?,
                max_level: r.get(2)?,
                researched: r.get::<_, i64>(3)? != 0,
                base: r.get(4)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    techs
        .into_iter()
        .map(|t| {
            let p = progress(c, &t)?;
            Ok((t, p))
        })
        .collect()
}

/// Clusterio's tuple shape: `[name, level, progress|null, researched]`.
fn tuples(rows: &[(Tech, f64)]) -> Value {
    Value::Array(
        rows.iter()
            .map(|(t, p)| {
                let progress = if t.researched { Value::Null } else { json!(p) };
                json!([t.name, t.level, progress, t.researched])
            })
            .collect(),
    )
}

/// `GET /api/v1/research`: the cluster's technologies for the web page and `ctl research list`.
pub async fn list(store: &Store) -> Result<Value, StoreError> {
    let rows = store.read(table).await?;
    Ok(Value::Array(
        rows.iter()
            .map(|(t, p)| {
                json!({
                    "name": t.name,
                    "level": t.level,
                    "max_level": t.max_level,
                    "infinite": t.max_level > 1_000_000,
                    "researched": t.researched,
                    "progress": if t.researched { Value::Null } else { json!(p) },
                })
            })
            .collect(),
    ))
}

/// Progress waiting for the next broadcast, and whether the broadcaster runs.
#[derive(Default)]
struct Pending {
    progress: BTreeMap<String, (i64, f64)>,
    running: bool,
}

#[derive(Default)]
struct ResearchController {
    pending: Arc<Mutex<Pending>>,
}

impl ResearchController {
    /// Sends finishes at once and queues progress for the next broadcast.
    async fn publish(&self, ctx: &ControllerCtx, out: Vec<Outcome>, origin: Option<i64>) {
        let mut start = false;
        for o in out {
            match o {
                Outcome::Finished { name, level } => {
                    if let Ok(mut p) = self.pending.lock() {
                        p.progress.remove(&name);
                    }
                    tracing::info!(plugin = "research_sync", tech = %name, level, "technology researched on the cluster");
                    ctx.broadcast(
                        "research_sync.finished",
                        &json!({ "name": name, "level": level }),
                        origin,
                    )
                    .await;
                }
                Outcome::Progress {
                    name,
                    level,
                    progress,
                } => {
                    if let Ok(mut p) = self.pending.lock() {
                        p.progress.insert(name, (level, progress));
                        if !p.running {
                            p.running = true;
                            start = true;
                        }
                    }
                }
            }
        }
        if start {
            tokio::spawn(broadcaster(ctx.clone(), self.pending.clone()));
        }
    }
}

/// Sends queued progress at most once per [`PROGRESS_INTERVAL`]; ends when nothing is queued.
async fn broadcaster(ctx: ControllerCtx, pending: Arc<Mutex<Pending>>) {
    loop {
        let batch = match pending.lock() {
            Ok(mut p) => {
                if p.progress.is_empty() {
                    p.running = false;
                    return;
                }
                std::mem::take(&mut p.progress)
            }
            Err(_) => return,
        };
        let technologies: Vec<Value> = batch
            .into_iter()
            .map(|(name, (level, progress))| {
                json!({ "name": name, "level": level, "progress": progress })
            })
            .collect();
        ctx.broadcast(
            "research_sync.progress",
            &json!({ "technologies": technologies }),
            None,
        )
        .await;
        tokio::time::sleep(PROGRESS_INTERVAL).await;
    }
}

impl ControllerPlugin for ResearchController {
    fn info(&self) -> &'static PluginInfo {
        &INFO
    }

    fn host_event<'a>(
        &'a self,
        ctx: &'a ControllerCtx,
        host_id: i64,
        name: &'a str,
        data: Value,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let instance_id = data["instance_id"].as_i64();
            let result = match (name, instance_id) {
                ("research_sync.contribution", Some(id)) => {
                    ctx.store().write(move |c| contribute(c, id, &data)).await
                }
                ("research_sync.finished", Some(_)) => {
                    ctx.store().write(move |c| finished(c, &data)).await
                }
                _ => {
                    tracing::warn!(
                        plugin = "research_sync",
                        host_id,
                        event = name,
                        "unknown or malformed event; ignored"
                    );
                    return;
                }
            };
            match result {
                // A finish a game reported itself is news to every other game.
                Ok(out) => {
                    let origin = (name == "research_sync.finished")
                        .then_some(instance_id)
                        .flatten();
                    self.publish(ctx, out, origin).await
                }
                Err(e) => {
                    tracing::warn!(plugin = "research_sync", host_id, event = name, error = %e, "event not applied")
                }
            }
        })
    }

    fn host_request<'a>(
        &'a self,
        ctx: &'a ControllerCtx,
        host_id: i64,
        name: &'a str,
        data: Value,
    ) -> BoxFuture<'a, Result<Value, ErrorBody>> {
        Box::pin(async move {
            if name != "research_sync.sync" {
                return Err(ErrorBody::new(
                    "unknown_request",
                    format!("research_sync has no request \"{name}\""),
                ));
            }
            let Some(id) = data["instance_id"].as_i64() else {
                return Err(ErrorBody::new("bad_request", "sync without instance_id"));
            };
            let owned = ctx
                .store()
                .read(move |c| store::instances::get(c, &id.to_string()))
                .await
                .is_ok_and(|r| r.host_id == Some(host_id));
            if !owned {
                return Err(ErrorBody::new(
                    "forbidden",
                    format!("instance {id} is not assigned to this host"),
                ));
            }
            let techs = match &data["technologies"] {
                Value::Array(a) => a.clone(),
                // Factorio writes an empty table as an object.
                _ => Vec::new(),
            };
            let result = ctx
                .store()
                .write(move |c| {
                    let out = merge(c, &techs)?;
                    Ok((out, table(c)?))
                })
                .await;
            match result {
                Ok((out, rows)) => {
                    self.publish(ctx, out, Some(id)).await;
                    Ok(tuples(&rows))
                }
                Err(e) => Err(ErrorBody::new("store", e.to_string())),
            }
        })
    }

    fn status<'a>(&'a self, ctx: &'a ControllerCtx) -> BoxFuture<'a, Value> {
        Box::pin(async move {
            let rows = ctx.store().read(table).await.unwrap_or_default();
            let researched = rows.iter().filter(|(t, _)| t.researched).count();
            let in_progress = rows
                .iter()
                .filter(|(t, p)| !t.researched && *p > 0.0)
                .count();
            json!({ "technologies": rows.len(), "researched": researched, "in_progress": in_progress })
        })
    }
}

struct ResearchHost;

/// Items of a list Factorio may have written as `{}` when empty.
fn items(v: &Value) -> Vec<Value> {
    v.as_array().cloned().unwrap_or_default()
}

/// At every start: end the save's run, name a new one, report what the save holds, then merge
/// with the controller and apply its table.
async fn start_sync(inst: InstanceCtx) {
    let run = format!("{}-{:016x}", inst.id, rand::random::<u64>());
    let reply = match inst
        .rcon_reply(format!("/sc research_sync.begin_run({})", lua_string(&run)))
        .await
    {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(plugin = "research_sync", instance = %inst.name, error = %e, "begin_run failed; research is not synced");
            return;
        }
    };
    let begun: Value = match serde_json::from_str(reply.trim()) {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(plugin = "research_sync", instance = %inst.name, error = %e, reply = %reply.trim(), "begin_run answered something else; research is not synced");
            return;
        }
    };
    let ended = items(&begun["ended"]);
    let mut runs: Vec<String> = Vec::new();
    for entry in ended.iter().chain(items(&begun["current"]).iter()) {
        if let Some(r) = entry["run"].as_str()
            && !runs.iter().any(|x| x == r)
            && r != run
        {
            runs.push(r.to_string());
        }
        inst.send_event("research_sync.contribution", entry.clone());
    }
    let request = json!({ "technologies": items(&begun["technologies"]) });
    loop {
        match inst
            .request("research_sync.sync", request.clone(), SYNC_TIMEOUT)
            .await
        {
            Ok(table) => {
                inst.call_lua("research_sync.sync_technologies", &table);
                if !runs.is_empty() {
                    inst.call_lua("research_sync.confirm_runs", &json!(runs));
                }
                return;
            }
            Err(e) => {
                tracing::warn!(plugin = "research_sync", instance = %inst.name, error = %e.message, "research sync failed; retrying");
                tokio::time::sleep(SYNC_RETRY).await;
                if !inst.running() {
                    return;
                }
            }
        }
    }
}

impl HostPlugin for ResearchHost {
    fn info(&self) -> &'static PluginInfo {
        &INFO
    }

    fn ipc(&self, inst: &InstanceCtx, channel: &str, data: Value) {
        match channel {
            "research_sync:contribution" => inst.send_event("research_sync.contribution", data),
            "research_sync:finished" => inst.send_event("research_sync.finished", data),
            other => {
                tracing::warn!(plugin = "research_sync", instance = %inst.name, channel = other, "unknown IPC channel")
            }
        }
    }

    fn controller_event(&self, host: &HostCtx, name: &str, data: Value) {
        let Some(inst) = host.instance_of(&data) else {
            return;
        };
        match name {
            "research_sync.progress" => {
                inst.call_lua("research_sync.update_progress", &data["technologies"])
            }
            "research_sync.finished" => {
                if let (Some(tech), Some(level)) = (data["name"].as_str(), level_of(&data["level"]))
                {
                    inst.rcon(format!(
                        "/sc research_sync.research_technology({}, {level})",
                        lua_string(tech)
                    ));
                }
            }
            other => {
                tracing::debug!(plugin = "research_sync", event = other, "unknown event")
            }
        }
    }

    fn instance_started(&self, inst: &InstanceCtx) {
        tokio::spawn(start_sync(inst.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Connection {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(INFO.migrations[0]).unwrap();
        c
    }

    fn contrib(c: &Connection, run: &str, name: &str, level: i64, total: f64) -> Vec<Outcome> {
        contribute(
            c,
            1,
            &json!({"name": name, "level": level, "run": run, "total": total, "max_level": 1}),
        )
        .unwrap()
    }

    fn progress_of(c: &Connection, name: &str) -> f64 {
        let t = load(c, name).unwrap().unwrap();
        progress(c, &t).unwrap()
    }

    #[test]
    fn runs_add_up_and_repeats_count_once() {
        let c = db();
        contrib(&c, "a", "automation", 1, 0.2);
        contrib(&c, "b", "automation", 1, 0.3);
        // The same report again, and an older one from a save that rolled back.
        contrib(&c, "a", "automation", 1, 0.2);
        contrib(&c, "a", "automation", 1, 0.1);
        assert!((progress_of(&c, "automation") - 0.5).abs() < 1e-9);
        let out = contrib(&c, "a", "automation", 1, 0.7);
        assert_eq!(
            out,
            vec![Outcome::Finished {
                name: "automation".into(),
                level: 1
            }]
        );
        let t = load(&c, "automation").unwrap().unwrap();
        assert!(t.researched);
        // Late reports for a finished tech change nothing.
        assert!(contrib(&c, "b", "automation", 1, 0.9).is_empty());
    }

    #[test]
    fn infinite_levels_advance_and_stale_levels_are_ignored() {
        let c = db();
        let ev = |level: i64, total: f64, run: &str| json!({"name": "mining-productivity-3", "level": level, "run": run, "total": total, "max_level": 4294967295u64});
        contribute(&c, 1, &ev(3, 0.6, "a")).unwrap();
        let out = contribute(&c, 1, &ev(3, 1.2, "a")).unwrap();
        assert_eq!(
            out,
            vec![Outcome::Finished {
                name: "mining-productivity-3".into(),
                level: 3
            }]
        );
        let t = load(&c, "mining-productivity-3").unwrap().unwrap();
        assert_eq!((t.level, t.researched), (4, false));
        assert!(contribute(&c, 1, &ev(3, 1.5, "b")).unwrap().is_empty());
        contribute(&c, 1, &ev(4, 0.25, "b")).unwrap();
        assert!((progress_of(&c, "mining-productivity-3") - 0.25).abs() < 1e-9);
        // A finish the game reports for level 4 moves to 5 once; again is a no-op.
        let f = json!({"name": "mining-productivity-3", "level": 4, "researched": false});
        assert_eq!(finished(&c, &f).unwrap().len(), 1);
        assert!(finished(&c, &f).unwrap().is_empty());
        assert_eq!(load(&c, "mining-productivity-3").unwrap().unwrap().level, 5);
    }

    #[test]
    fn merge_adopts_what_games_had_before_and_never_goes_back() {
        let c = db();
        contrib(&c, "a", "logistics", 1, 0.4);
        let out = merge(
            &c,
            &[
                json!({"name": "logistics", "level": 1, "progress": 0.3, "researched": false, "max_level": 1}),
                json!({"name": "optics", "level": 1, "progress": 0.6, "researched": false, "max_level": 1}),
                json!({"name": "automation", "level": 1, "researched": true, "max_level": 1}),
            ],
        )
        .unwrap();
        assert!((progress_of(&c, "logistics") - 0.4).abs() < 1e-9);
        assert!((progress_of(&c, "optics") - 0.6).abs() < 1e-9);
        assert!(out.contains(&Outcome::Finished {
            name: "automation".into(),
            level: 1
        }));
        let rows = table(&c).unwrap();
        assert_eq!(
            tuples(&rows)[0],
            json!(["automation", 1, null, true]),
            "{rows:?}"
        );
        // A game that knows less changes nothing.
        let out = merge(
            &c,
            &[json!({"name": "automation", "level": 1, "progress": 0.1, "researched": false, "max_level": 1})],
        )
        .unwrap();
        assert!(out.is_empty());
        assert!(load(&c, "automation").unwrap().unwrap().researched);
    }

    #[test]
    fn bad_input_is_refused_not_panicked_on() {
        let c = db();
        assert!(contribute(&c, 1, &json!({"name": "x"})).is_err());
        assert!(contribute(&c, 1, &json!({"name": "x", "level": -3})).is_err());
        assert!(
            contribute(
                &c,
                1,
                &json!({"name": "x", "level": 1, "run": "r", "total": "NaN"})
            )
            .unwrap()
            .is_empty()
        );
        assert!(finished(&c, &json!({"level": 1})).is_err());
        assert!(
            merge(&c, &[json!(5), json!({"name": 1})])
                .unwrap()
                .is_empty()
        );
    }
}
