//! `inventory_sync`: a player's character follows them from game to game
//! (research/plugins.md §2.5), written afresh.
//!
//! One game holds a player at a time: a lock on the controller, in SQLite, so a controller
//! restart does not free it. Inventories carry a generation; the controller stores an upload
//! only when its generation is newer than the one it has, so no inventory ever goes back to an
//! older one.
//!
//! Requests (link, host → controller, each carries `instance_id`):
//! - `inventory_sync.acquire {player}` → `{status: acquired|busy, generation, has_data, message}`
//!   (`message` names the holding instance when busy). A lock held by an instance that is not
//!   running, or whose host is gone, expires `player_lock_timeout` seconds after the controller
//!   first saw it so; a deleted or unassigned holder frees it at once.
//! - `inventory_sync.upload {player, generation, data, release}` → `{status: stored|stale|
//!   not_holder, generation}`; committed before the reply; the same upload again answers
//!   `stored` (a replay after a reconnect).
//! - `inventory_sync.download {player}` → `{generation, data|null}` for the holder only.
//! - `inventory_sync.release {player}` → `{}`.
//! - `inventory_sync.started {}` → `{released}`: a game that starts holds nobody.
//!
//! The host turns the game's IPC (`inventory_sync:acquire|upload|download|release`) into these
//! requests and answers over the instance's RCON queue: `inventory_sync.acquire_response`,
//! `download_chunk` (the inventory in chunks of `rcon_chunk_size` bytes), `download_failed`,
//! `confirm_upload`. It re-asks the game for unconfirmed uploads at every start.

use super::{Builtin, ControllerPlugin, HostPlugin, LuaModule, PluginInfo};
use crate::config::schema::{Default as D, Field, Kind};
use crate::controller::auth::Actor;
use crate::controller::error::ApiError;
use crate::controller::plugins::ControllerCtx;
use crate::host::backend::BoxFuture;
use crate::host::plugins::{HostCtx, InstanceCtx, lua_string};
use crate::link::frame::ErrorBody;
use crate::permissions::Permission;
use crate::store::{self, StoreError};
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

static LUA: LuaModule = LuaModule {
    name: "inventory_sync",
    version: "0.1.0",
    dependencies: &[("clusterio", "*")],
    load: &["inventory_sync.lua"],
    require: &[],
    files: &[("inventory_sync.lua", include_str!("inventory_sync.lua"))],
};

/// See the stored inventories (web page, `ctl inventory list|show|export`).
pub const PERMISSION_VIEW: &str = "inventory_sync.inventory.view";
/// Import an inventory or free a stuck lock (`ctl inventory import|release`).
pub const PERMISSION_MODIFY: &str = "inventory_sync.inventory.modify";

/// Controller setting: seconds a lock outlives a holder that stopped or whose host is gone.
pub const LOCK_TIMEOUT_FIELD: &str = "inventory_sync.player_lock_timeout";
/// Instance setting: bytes per RCON command of a download.
pub const CHUNK_SIZE_FIELD: &str = "inventory_sync.rcon_chunk_size";
const DEFAULT_LOCK_TIMEOUT_S: f64 = 60.0;
const DEFAULT_CHUNK_SIZE: i64 = 1000;

static INFO: PluginInfo = PluginInfo {
    name: "inventory_sync",
    title: "Inventory sync",
    description: "A player's inventory, armour, quick bar, crafting queue and colour follow them from game to game.",
    version: "0.1.0",
    permissions: &[
        Permission {
            name: PERMISSION_VIEW,
            title: "View inventories",
            description: "See the players' stored inventories, who holds them and the database size.",
            grant_by_default: true,
        },
        Permission {
            name: PERMISSION_MODIFY,
            title: "Modify inventories",
            description: "Import a player's inventory (a new generation) or free a player held by a stuck game.",
            grant_by_default: false,
        },
    ],
    lua: Some(&LUA),
    ipc_channels: &[],
    migrations: &["CREATE TABLE inventory_sync_players (
            name TEXT PRIMARY KEY,
            generation INTEGER NOT NULL,
            data TEXT NOT NULL,
            size INTEGER NOT NULL,
            instance_id INTEGER,
            updated_at INTEGER NOT NULL
        );
        CREATE TABLE inventory_sync_locks (
            name TEXT PRIMARY KEY,
            instance_id INTEGER NOT NULL,
            acquired_at INTEGER NOT NULL,
            stale_since INTEGER
        );"],
    settings: crate::config::PluginSettings {
        instance: &[
            super::load_plugin_field("inventory_sync.load_plugin", "Inventory sync"),
            Field::new(CHUNK_SIZE_FIELD, Kind::Integer { min: 100, max: 100_000 }, D::Int(DEFAULT_CHUNK_SIZE))
                .title("Inventory chunk size")
                .about("Bytes of a player's inventory sent in one RCON command while it downloads, so a big inventory does not block the game's other commands.")
                .section("Plugins"),
        ],
        controller: &[Field::new(LOCK_TIMEOUT_FIELD, Kind::Number { min: 0.0, max: 86_400.0 }, D::Num(DEFAULT_LOCK_TIMEOUT_S))
            .title("Player lock timeout")
            .about("Seconds before the lock on a player's inventory expires after the game holding it stops or its host disconnects.")
            .section("Plugins")],
        ..crate::config::PluginSettings::NONE
    },
};

pub const BUILTIN: Builtin = Builtin {
    info: &INFO,
    controller: || Some(Box::new(InventoryController::default())),
    host: || Some(Box::new(InventoryHost)),
};

/// How often the controller looks at the holders of locks.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// The host retries an upload this often while the controller is away.
const UPLOAD_RETRY: Duration = Duration::from_secs(2);
/// Longest player name accepted.
const MAX_NAME: usize = 100;

/// A lock on one player.
#[derive(Debug, Clone, PartialEq)]
struct Lock {
    instance_id: i64,
    stale_since: Option<i64>,
}

/// What `acquire` decided.
#[derive(Debug, Clone, PartialEq)]
enum Acquire {
    Acquired { generation: i64, has_data: bool },
    Busy { holder: i64 },
}

/// What `upload` decided.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Upload {
    Stored,
    Stale,
    NotHolder,
}

impl Upload {
    fn as_str(self) -> &'static str {
        match self {
            Upload::Stored => "stored",
            Upload::Stale => "stale",
            Upload::NotHolder => "not_holder",
        }
    }
}

fn lock_of(c: &Connection, name: &str) -> Result<Option<Lock>, StoreError> {
    Ok(c.query_row(
        "SELECT instance_id, stale_since FROM inventory_sync_locks WHERE name = ?1",
        [name],
        |r| {
            Ok(Lock {
                instance_id: r.get(0)?,
                stale_since: r.get(1)?,
            })
        },
    )
    .optional()?)
}

/// The stored generation and whether it came from `instance_id`.
fn stored_of(c: &Connection, name: &str) -> Result<Option<(i64, Option<i64>)>, StoreError> {
    Ok(c.query_row(
        "SELECT generation, instance_id FROM inventory_sync_players WHERE name = ?1",
        [name],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()?)
}

/// How a lock's holder is doing: `Some(true)` running on a connected host, `Some(false)` stopped
/// or away, `None` gone (deleted or unassigned: the lock is free at once).
fn holder_state(
    c: &Connection,
    id: i64,
    host_up: &dyn Fn(i64) -> bool,
) -> Result<Option<bool>, StoreError> {
    let Some(rec) = store::instances::find(c, &id.to_string())? else {
        return Ok(None);
    };
    Ok(rec
        .host_id
        .map(|host| rec.status == "running" && host_up(host)))
}

fn take(c: &Connection, name: &str, instance_id: i64, now: i64) -> Result<Acquire, StoreError> {
    c.execute(
        "INSERT INTO inventory_sync_locks (name, instance_id, acquired_at, stale_since) VALUES (?1, ?2, ?3, NULL)
         ON CONFLICT (name) DO UPDATE SET instance_id = ?2, acquired_at = ?3, stale_since = NULL",
        params![name, instance_id, now],
    )?;
    let generation = stored_of(c, name)?.map(|(g, _)| g);
    Ok(Acquire::Acquired {
        generation: generation.unwrap_or(0),
        has_data: generation.is_some(),
    })
}

fn acquire(
    c: &Connection,
    instance_id: i64,
    name: &str,
    now: i64,
    timeout_ms: i64,
    host_up: &dyn Fn(i64) -> bool,
) -> Result<Acquire, StoreError> {
    let Some(lock) = lock_of(c, name)? else {
        return take(c, name, instance_id, now);
    };
    if lock.instance_id == instance_id {
        return take(c, name, instance_id, now);
    }
    match holder_state(c, lock.instance_id, host_up)? {
        None => take(c, name, instance_id, now),
        Some(true) => {
            if lock.stale_since.is_some() {
                mark_stale(c, name, None)?;
            }
            Ok(Acquire::Busy {
                holder: lock.instance_id,
            })
        }
        Some(false) => {
            let since = match lock.stale_since {
                Some(s) => s,
                None => {
                    mark_stale(c, name, Some(now))?;
                    now
                }
            };
            if now - since >= timeout_ms {
                tracing::info!(
                    plugin = "inventory_sync",
                    player = name,
                    holder = lock.instance_id,
                    instance_id,
                    "lock expired; handed over"
                );
                take(c, name, instance_id, now)
            } else {
                Ok(Acquire::Busy {
                    holder: lock.instance_id,
                })
            }
        }
    }
}

fn mark_stale(c: &Connection, name: &str, since: Option<i64>) -> Result<(), StoreError> {
    c.execute(
        "UPDATE inventory_sync_locks SET stale_since = ?2 WHERE name = ?1",
        params![name, since],
    )?;
    Ok(())
}

/// Starts the expiry clock of every lock whose holder stopped, and stops it for holders that run
/// again.
fn sweep(c: &Connection, now: i64, host_up: &dyn Fn(i64) -> bool) -> Result<(), StoreError> {
    let locks: Vec<(String, i64, Option<i64>)> = c
        .prepare_cached("SELECT name, instance_id, stale_since FROM inventory_sync_locks")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    for (name, holder, since) in locks {
        match (holder_state(c, holder, host_up)?, since) {
            (Some(true), Some(_)) => mark_stale(c, &name, None)?,
            (Some(false) | None, None) => mark_stale(c, &name, Some(now))?,
            _ => {}
        }
    }
    Ok(())
}

fn store_inventory(
    c: &Connection,
    name: &str,
    generation: i64,
    data: &str,
    instance_id: Option<i64>,
) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO inventory_sync_players (name, generation, data, size, instance_id, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (name) DO UPDATE SET generation = ?2, data = ?3, size = ?4, instance_id = ?5, updated_at = ?6",
        params![name, generation, data, data.len() as i64, instance_id, store::now_ms()],
    )?;
    Ok(())
}

fn upload(
    c: &Connection,
    instance_id: i64,
    name: &str,
    generation: i64,
    data: &str,
    release: bool,
) -> Result<Upload, StoreError> {
    let lock = lock_of(c, name)?;
    if lock.as_ref().is_some_and(|l| l.instance_id != instance_id) {
        return Ok(Upload::NotHolder);
    }
    let outcome = match stored_of(c, name)? {
        Some((g, from)) if generation < g || (generation == g && from != Some(instance_id)) => {
            Upload::Stale
        }
        // The same upload again (the reply was lost): already stored.
        Some((g, _)) if generation == g => Upload::Stored,
        _ => {
            store_inventory(c, name, generation, data, Some(instance_id))?;
            Upload::Stored
        }
    };
    if release && outcome == Upload::Stored && lock.is_some() {
        release_lock(c, instance_id, name)?;
    }
    Ok(outcome)
}

fn release_lock(c: &Connection, instance_id: i64, name: &str) -> Result<bool, StoreError> {
    Ok(c.execute(
        "DELETE FROM inventory_sync_locks WHERE name = ?1 AND instance_id = ?2",
        params![name, instance_id],
    )? > 0)
}

fn download(c: &Connection, instance_id: i64, name: &str) -> Result<Value, StoreError> {
    if lock_of(c, name)?.map(|l| l.instance_id) != Some(instance_id) {
        return Err(StoreError::Conflict(format!(
            "this game does not hold {name}; acquire first"
        )));
    }
    let row: Option<(i64, String)> = c
        .query_row(
            "SELECT generation, data FROM inventory_sync_players WHERE name = ?1",
            [name],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    Ok(match row {
        Some((generation, data)) => json!({ "generation": generation, "data": data }),
        None => json!({ "generation": 0, "data": null }),
    })
}

/// One row of the list: the player, generation, size, holder.
fn rows(c: &Connection, only: Option<&str>) -> Result<Vec<Value>, StoreError> {
    // One query for the whole list: every player stored or held, with both instance names.
    let mut stmt = c.prepare_cached(
        "SELECT n.name, p.generation, p.size, p.updated_at, pi.name, l.instance_id, li.name,
                l.acquired_at, l.stale_since
         FROM (SELECT name FROM inventory_sync_players WHERE ?1 IS NULL OR name = ?1
               UNION SELECT name FROM inventory_sync_locks WHERE ?1 IS NULL OR name = ?1) n
         LEFT JOIN inventory_sync_players p ON p.name = n.name
         LEFT JOIN inventory_sync_locks l ON l.name = n.name
         LEFT JOIN instances pi ON pi.id = p.instance_id
         LEFT JOIN instances li ON li.id = l.instance_id
         ORDER BY n.name",
    )?;
    let rows = stmt.query_map([only], |r| {
        let holder_id: Option<i64> = r.get(5)?;
        let holder: Option<String> = r.get(6)?;
        Ok(json!({
            "name": r.get::<_, String>(0)?,
            "generation": r.get::<_, Option<i64>>(1)?,
            "size": r.get::<_, Option<i64>>(2)?,
            "last_sync": r.get::<_, Option<i64>>(3)?,
            "last_instance": r.get::<_, Option<String>>(4)?,
            // A holder deleted meanwhile still shows, by id.
            "holder": holder.or_else(|| holder_id.map(|i| i.to_string())),
            "holder_id": holder_id,
            "held_since": r.get::<_, Option<i64>>(7)?,
            "stale_since": r.get::<_, Option<i64>>(8)?,
        }))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// `{count, total_bytes, largest: {name, size}}`.
fn stats(c: &Connection) -> Result<Value, StoreError> {
    let (count, total): (i64, i64) = c.query_row(
        "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM inventory_sync_players",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let largest: Option<(String, i64)> = c
        .query_row(
            "SELECT name, size FROM inventory_sync_players ORDER BY size DESC, name LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let locks: i64 = c.query_row("SELECT COUNT(*) FROM inventory_sync_locks", [], |r| {
        r.get(0)
    })?;
    Ok(json!({
        "count": count,
        "total_bytes": total,
        "locks": locks,
        "largest": largest.map(|(name, size)| json!({ "name": name, "size": size })),
    }))
}

/// An admin's import: a new generation above everything seen, refused while a game holds the
/// player (its upload would be refused and the player's play there lost).
fn import(c: &Connection, who: &str, name: &str, data: &Value) -> Result<i64, StoreError> {
    if !data.is_object() {
        return Err(StoreError::Invalid(
            "the inventory must be a JSON object (as `ctl inventory export` writes it)".into(),
        ));
    }
    if let Some(inv) = data.get("inventories")
        && !(inv.is_object() || inv.as_array().is_some_and(|a| a.is_empty()))
    {
        return Err(StoreError::Invalid(
            "\"inventories\" must be an object of inventory name → stacks".into(),
        ));
    }
    if let Some(l) = lock_of(c, name)? {
        let holder = store::instances::find(c, &l.instance_id.to_string())
            .ok()
            .flatten()
            .map(|r| r.name)
            .unwrap_or_else(|| l.instance_id.to_string());
        return Err(StoreError::Conflict(format!(
            "{name} is held by instance '{holder}'; wait until they leave, or `ctl inventory release {name}` first"
        )));
    }
    let old = stored_of(c, name)?.map(|(g, _)| g).unwrap_or(0);
    let given = data["generation"].as_i64().unwrap_or(0);
    let generation = old.max(given) + 1;
    let mut data = data.clone();
    data["generation"] = json!(generation);
    data["name"] = json!(name);
    store_inventory(c, name, generation, &data.to_string(), None)?;
    store::audit::record(
        c,
        who,
        "inventory_sync.import",
        name,
        &json!({ "generation": generation, "previous": old }),
    )?;
    Ok(generation)
}

fn admin_release(c: &Connection, who: &str, name: &str) -> Result<Value, StoreError> {
    let Some(l) = lock_of(c, name)? else {
        return Err(StoreError::NotFound(format!(
            "no game holds {name}; nothing to release"
        )));
    };
    c.execute("DELETE FROM inventory_sync_locks WHERE name = ?1", [name])?;
    store::audit::record(
        c,
        who,
        "inventory_sync.release",
        name,
        &json!({ "instance_id": l.instance_id }),
    )?;
    Ok(json!({ "released": name, "instance_id": l.instance_id }))
}

fn player_name(data: &Value) -> Result<String, String> {
    match data["player"].as_str() {
        Some(n) if !n.is_empty() && n.len() <= MAX_NAME && !n.chars().any(char::is_control) => {
            Ok(n.to_string())
        }
        _ => Err("a player name (1–100 characters, no control characters) is needed".into()),
    }
}

#[derive(Default)]
struct InventoryController {
    sweeping: AtomicBool,
}

impl InventoryController {
    fn timeout_ms(ctx: &ControllerCtx) -> i64 {
        let s = ctx
            .setting(LOCK_TIMEOUT_FIELD)
            .as_f64()
            .filter(|s| s.is_finite() && *s >= 0.0)
            .unwrap_or(DEFAULT_LOCK_TIMEOUT_S);
        (s * 1000.0) as i64
    }

    /// Tells the web UI a player's row changed.
    async fn published(ctx: &ControllerCtx, name: String) {
        let n = name.clone();
        if let Ok(r) = ctx.store().read(move |c| rows(c, Some(&n))).await {
            let row = r.into_iter().next().unwrap_or(json!({ "name": name }));
            ctx.publish("inventory_sync.updated", row, PERMISSION_VIEW);
        }
    }
}

async fn sweeper(ctx: ControllerCtx) {
    loop {
        let probe = ctx.clone();
        let r = ctx
            .store()
            .write(move |c| sweep(c, store::now_ms(), &|h| probe.host_is_connected(h)))
            .await;
        if let Err(e) = r {
            tracing::warn!(plugin = "inventory_sync", error = %e, "lock sweep failed");
        }
        tokio::time::sleep(SWEEP_INTERVAL).await;
    }
}

fn store_error(e: StoreError) -> ErrorBody {
    let code = match e {
        StoreError::Conflict(_) => "conflict",
        StoreError::Invalid(_) => "bad_request",
        _ => "store",
    };
    ErrorBody::new(code, e.to_string())
}

impl ControllerPlugin for InventoryController {
    fn info(&self) -> &'static PluginInfo {
        &INFO
    }

    fn host_event<'a>(
        &'a self,
        _ctx: &'a ControllerCtx,
        host_id: i64,
        name: &'a str,
        _data: Value,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            tracing::warn!(
                plugin = "inventory_sync",
                host_id,
                event = name,
                "unknown event; ignored"
            );
        })
    }

    fn host_connected<'a>(&'a self, ctx: &'a ControllerCtx, _host_id: i64) -> BoxFuture<'a, ()> {
        if !self.sweeping.swap(true, Ordering::SeqCst) {
            tokio::spawn(sweeper(ctx.clone()));
        }
        Box::pin(async {})
    }

    fn host_request<'a>(
        &'a self,
        ctx: &'a ControllerCtx,
        host_id: i64,
        name: &'a str,
        data: Value,
    ) -> BoxFuture<'a, Result<Value, ErrorBody>> {
        Box::pin(async move {
            let Some(id) = data["instance_id"].as_i64() else {
                return Err(ErrorBody::new("bad_request", "no instance_id"));
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
            if name == "inventory_sync.started" {
                // A game that (re)starts holds nobody: whoever it held before its stop is in its
                // save, and comes back as an upload (accepted only if still newest).
                let n = ctx
                    .store()
                    .write(move |c| {
                        Ok(c.execute(
                            "DELETE FROM inventory_sync_locks WHERE instance_id = ?1",
                            [id],
                        )?)
                    })
                    .await
                    .map_err(store_error)?;
                return Ok(json!({ "released": n }));
            }
            let player = player_name(&data).map_err(|m| ErrorBody::new("bad_request", m))?;
            let p = player.clone();
            let reply = match name {
                "inventory_sync.acquire" => {
                    let timeout = Self::timeout_ms(ctx);
                    let probe = ctx.clone();
                    let r = ctx
                        .store()
                        .write(move |c| {
                            acquire(c, id, &p, store::now_ms(), timeout, &|h| {
                                probe.host_is_connected(h)
                            })
                        })
                        .await
                        .map_err(store_error)?;
                    match r {
                        Acquire::Acquired {
                            generation,
                            has_data,
                        } => {
                            json!({ "status": "acquired", "generation": generation, "has_data": has_data })
                        }
                        Acquire::Busy { holder } => {
                            let holder = ctx
                                .instance_name(holder)
                                .await
                                .unwrap_or_else(|| holder.to_string());
                            json!({ "status": "busy", "message": holder })
                        }
                    }
                }
                "inventory_sync.upload" => {
                    let Some(generation) = data["generation"].as_i64().filter(|g| *g > 0) else {
                        return Err(ErrorBody::new(
                            "bad_request",
                            "an upload needs a positive generation",
                        ));
                    };
                    if !data["data"].is_object() {
                        return Err(ErrorBody::new(
                            "bad_request",
                            "an upload needs the player's data as an object",
                        ));
                    }
                    let mut body = data["data"].clone();
                    body["generation"] = json!(generation);
                    body["name"] = json!(player);
                    let text = body.to_string();
                    let release = data["release"].as_bool() == Some(true);
                    let r = ctx
                        .store()
                        .write(move |c| upload(c, id, &p, generation, &text, release))
                        .await
                        .map_err(store_error)?;
                    if r != Upload::Stored {
                        tracing::warn!(plugin = "inventory_sync", player = %player, instance_id = id, generation, status = r.as_str(), "upload refused");
                    }
                    json!({ "status": r.as_str(), "generation": generation })
                }
                "inventory_sync.download" => ctx
                    .store()
                    .read(move |c| download(c, id, &p))
                    .await
                    .map_err(store_error)?,
                "inventory_sync.release" => {
                    ctx.store()
                        .write(move |c| release_lock(c, id, &p))
                        .await
                        .map_err(store_error)?;
                    json!({})
                }
                other => {
                    return Err(ErrorBody::new(
                        "unknown_request",
                        format!("inventory_sync has no request \"{other}\""),
                    ));
                }
            };
            Self::published(ctx, player).await;
            Ok(reply)
        })
    }

    fn control_request<'a>(
        &'a self,
        ctx: &'a ControllerCtx,
        actor: &'a Actor,
        name: &'a str,
        data: Value,
    ) -> BoxFuture<'a, Result<Value, ApiError>> {
        Box::pin(async move {
            let who = actor.audit_name();
            match name {
                "inventory_sync.list" => {
                    let list = ctx.store().read(|c| rows(c, None)).await?;
                    let stats = ctx.store().read(stats).await?;
                    Ok(json!({ "players": list, "stats": stats }))
                }
                "inventory_sync.get" => {
                    let player = player_name(&data).map_err(ApiError::bad_request)?;
                    let p = player.clone();
                    let (row, body) = ctx
                        .store()
                        .read(move |c| {
                            let row = rows(c, Some(&p))?.into_iter().next();
                            let body: Option<String> = c
                                .query_row(
                                    "SELECT data FROM inventory_sync_players WHERE name = ?1",
                                    [&p],
                                    |r| r.get(0),
                                )
                                .optional()?;
                            Ok((row, body))
                        })
                        .await?;
                    let Some(mut row) = row else {
                        return Err(ApiError::not_found(format!(
                            "no inventory stored for {player}"
                        )));
                    };
                    row["data"] = body
                        .and_then(|b| serde_json::from_str(&b).ok())
                        .unwrap_or(Value::Null);
                    Ok(row)
                }
                "inventory_sync.import" => {
                    let player = player_name(&data).map_err(ApiError::bad_request)?;
                    let (p, d) = (player.clone(), data["data"].clone());
                    let generation = ctx.store().write(move |c| import(c, &who, &p, &d)).await?;
                    Self::published(ctx, player.clone()).await;
                    Ok(json!({ "name": player, "generation": generation }))
                }
                "inventory_sync.release" => {
                    let player = player_name(&data).map_err(ApiError::bad_request)?;
                    let p = player.clone();
                    let r = ctx
                        .store()
                        .write(move |c| admin_release(c, &who, &p))
                        .await?;
                    Self::published(ctx, player).await;
                    Ok(r)
                }
                other => Err(ApiError::new(
                    400,
                    "unknown_request",
                    format!("inventory_sync has no request \"{other}\""),
                )),
            }
        })
    }

    fn metrics<'a>(&'a self, ctx: &'a ControllerCtx) -> BoxFuture<'a, String> {
        Box::pin(async move {
            let Ok(s) = ctx.store().read(stats).await else {
                return String::new();
            };
            format!(
                "# HELP clustorio_inventory_sync_inventories Player inventories stored by inventory_sync.\n\
                 # TYPE clustorio_inventory_sync_inventories gauge\n\
                 clustorio_inventory_sync_inventories {}\n\
                 # HELP clustorio_inventory_sync_bytes Bytes of the stored player inventories.\n\
                 # TYPE clustorio_inventory_sync_bytes gauge\n\
                 clustorio_inventory_sync_bytes {}\n\
                 # HELP clustorio_inventory_sync_locks Players held by a game now.\n\
                 # TYPE clustorio_inventory_sync_locks gauge\n\
                 clustorio_inventory_sync_locks {}\n",
                s["count"], s["total_bytes"], s["locks"]
            )
        })
    }

    fn status<'a>(&'a self, ctx: &'a ControllerCtx) -> BoxFuture<'a, Value> {
        Box::pin(async move { ctx.store().read(stats).await.unwrap_or(Value::Null) })
    }
}

struct InventoryHost;

/// Splits `text` into pieces of at most `size` bytes, on character boundaries.
fn chunks(text: &str, size: usize) -> Vec<&str> {
    let size = size.max(4);
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let mut end = size.min(rest.len());
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        let (a, b) = rest.split_at(end);
        out.push(a);
        rest = b;
    }
    out
}

fn chunk_size(inst: &InstanceCtx) -> usize {
    inst.config()["rcon_chunk_size"]
        .as_i64()
        .filter(|n| *n >= 100)
        .unwrap_or(DEFAULT_CHUNK_SIZE) as usize
}

async fn host_acquire(inst: InstanceCtx, player: String) {
    let answer = match inst
        .request(
            "inventory_sync.acquire",
            json!({ "player": player }),
            REQUEST_TIMEOUT,
        )
        .await
    {
        Ok(mut r) => {
            r["player"] = json!(player);
            r
        }
        Err(e) => {
            tracing::warn!(plugin = "inventory_sync", instance = %inst.name, player = %player, error = %e.message, "acquire failed");
            json!({ "player": player, "status": "error", "message": "the cluster is not reachable" })
        }
    };
    inst.call_lua("inventory_sync.acquire_response", &answer);
}

async fn host_download(inst: InstanceCtx, player: String) {
    let reply = inst
        .request(
            "inventory_sync.download",
            json!({ "player": player }),
            REQUEST_TIMEOUT,
        )
        .await;
    let name = lua_string(&player);
    match reply {
        Ok(r) => {
            let generation = r["generation"].as_i64().unwrap_or(0);
            let Some(text) = r["data"].as_str() else {
                inst.rcon(format!(
                    "/sc inventory_sync.download_chunk({name}, {generation}, 0, 0, nil)"
                ));
                return;
            };
            let parts = chunks(text, chunk_size(&inst));
            let n = parts.len();
            for (i, part) in parts.into_iter().enumerate() {
                inst.rcon(format!(
                    "/sc inventory_sync.download_chunk({name}, {generation}, {}, {n}, {})",
                    i + 1,
                    lua_string(part)
                ));
            }
        }
        Err(e) => {
            tracing::warn!(plugin = "inventory_sync", instance = %inst.name, player = %player, error = %e.message, "download failed");
            inst.rcon(format!(
                "/sc inventory_sync.download_failed({name}, {})",
                lua_string(&e.message)
            ));
        }
    }
}

/// Sends one upload until the controller answers (a stored, stale or refused upload all end it:
/// only a stored one is the player's inventory now), then tells the game.
async fn host_upload(inst: InstanceCtx, player: String, data: Value) {
    let generation = data["generation"].as_i64().unwrap_or(0);
    loop {
        match inst
            .request("inventory_sync.upload", data.clone(), REQUEST_TIMEOUT)
            .await
        {
            Ok(r) => {
                let stored = r["status"] == "stored";
                inst.rcon(format!(
                    "/sc inventory_sync.confirm_upload({}, {generation}, {stored})",
                    lua_string(&player)
                ));
                return;
            }
            Err(e) if e.code == "bad_request" || e.code == "forbidden" => {
                tracing::warn!(plugin = "inventory_sync", instance = %inst.name, player = %player, error = %e.message, "upload refused");
                return;
            }
            Err(e) => {
                tracing::warn!(plugin = "inventory_sync", instance = %inst.name, player = %player, error = %e.message, "upload failed; retrying");
                tokio::time::sleep(UPLOAD_RETRY).await;
                if !inst.running() {
                    // The game keeps it and sends it again at its next start.
                    return;
                }
            }
        }
    }
}

async fn host_release(inst: InstanceCtx, player: String) {
    for _ in 0..5 {
        match inst
            .request(
                "inventory_sync.release",
                json!({ "player": player }),
                REQUEST_TIMEOUT,
            )
            .await
        {
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(plugin = "inventory_sync", instance = %inst.name, player = %player, error = %e.message, "release failed; retrying");
                tokio::time::sleep(UPLOAD_RETRY).await;
            }
        }
    }
}

/// At every start: the controller frees what this game held before, then the game re-sends its
/// unconfirmed uploads.
async fn host_started(inst: InstanceCtx) {
    for _ in 0..3 {
        match inst
            .request("inventory_sync.started", json!({}), REQUEST_TIMEOUT)
            .await
        {
            Ok(_) => break,
            Err(e) => {
                tracing::warn!(plugin = "inventory_sync", instance = %inst.name, error = %e.message, "could not free the game's old locks");
                tokio::time::sleep(UPLOAD_RETRY).await;
            }
        }
    }
    inst.rcon("/sc inventory_sync.startup()".to_string());
}

impl HostPlugin for InventoryHost {
    fn info(&self) -> &'static PluginInfo {
        &INFO
    }

    fn ipc(&self, inst: &InstanceCtx, channel: &str, data: Value) {
        let Ok(player) = player_name(&data) else {
            tracing::warn!(plugin = "inventory_sync", instance = %inst.name, channel, "IPC message without a player; dropped");
            return;
        };
        let inst = inst.clone();
        match channel {
            "inventory_sync:acquire" => {
                tokio::spawn(host_acquire(inst, player));
            }
            "inventory_sync:download" => {
                tokio::spawn(host_download(inst, player));
            }
            "inventory_sync:upload" => {
                tokio::spawn(host_upload(inst, player, data));
            }
            "inventory_sync:release" => {
                tokio::spawn(host_release(inst, player));
            }
            other => {
                tracing::warn!(plugin = "inventory_sync", instance = %inst.name, channel = other, "unknown IPC channel")
            }
        }
    }

    fn controller_event(&self, _host: &HostCtx, name: &str, _data: Value) {
        tracing::debug!(plugin = "inventory_sync", event = name, "unknown event");
    }

    fn instance_started(&self, inst: &InstanceCtx) {
        tokio::spawn(host_started(inst.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Connection {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(
            "CREATE TABLE instances (id INTEGER PRIMARY KEY, name TEXT, host_id INTEGER, config TEXT NOT NULL DEFAULT '{}',
                status TEXT, game_port INTEGER, created_at INTEGER NOT NULL DEFAULT 0, updated_at INTEGER NOT NULL DEFAULT 0,
                desired TEXT NOT NULL DEFAULT 'stopped', running_config TEXT);",
        )
        .unwrap();
        c.execute_batch(INFO.migrations[0]).unwrap();
        c
    }

    fn up(_: i64) -> bool {
        true
    }

    #[test]
    fn chunks_split_on_character_boundaries() {
        let text = "ab€cd€€e";
        let parts = chunks(text, 4);
        assert_eq!(parts.concat(), text);
        assert!(parts.iter().all(|p| p.len() <= 4));
        assert!(chunks("", 10).is_empty());
    }

    #[test]
    fn names_are_checked() {
        assert!(player_name(&json!({"player": "Alice"})).is_ok());
        assert!(player_name(&json!({"player": ""})).is_err());
        assert!(player_name(&json!({"player": "a\nb"})).is_err());
        assert!(player_name(&json!({})).is_err());
    }

    #[test]
    fn one_holder_and_newer_generations_only() {
        let c = db();
        let a = acquire(&c, 1, "p", 0, 1000, &up).unwrap();
        assert_eq!(
            a,
            Acquire::Acquired {
                generation: 0,
                has_data: false
            }
        );
        assert_eq!(upload(&c, 1, "p", 1, "{}", false).unwrap(), Upload::Stored);
        assert_eq!(
            upload(&c, 2, "p", 5, "{}", false).unwrap(),
            Upload::NotHolder
        );
        assert_eq!(upload(&c, 1, "p", 1, "{}", true).unwrap(), Upload::Stored);
        assert!(lock_of(&c, "p").unwrap().is_none(), "released");
        // Another game's same generation, and an older one, are refused.
        assert_eq!(upload(&c, 2, "p", 1, "{}", false).unwrap(), Upload::Stale);
        assert_eq!(upload(&c, 1, "p", 0, "{}", false).unwrap(), Upload::Stale);
        assert_eq!(
            acquire(&c, 2, "p", 0, 1000, &up).unwrap(),
            Acquire::Acquired {
                generation: 1,
                has_data: true
            }
        );
        assert!(download(&c, 1, "p").is_err());
        assert_eq!(download(&c, 2, "p").unwrap()["generation"], 1);
    }

    #[test]
    fn locks_expire_only_after_the_holder_stopped_for_the_timeout() {
        let c = db();
        c.execute_batch(
            "INSERT INTO instances (id, name, host_id, status) VALUES (1, 'a', 10, 'running'), (2, 'b', 20, 'running');",
        )
        .unwrap();
        acquire(&c, 1, "p", 0, 1000, &up).unwrap();
        assert_eq!(
            acquire(&c, 2, "p", 5000, 1000, &up).unwrap(),
            Acquire::Busy { holder: 1 },
            "a running holder keeps the lock however long"
        );
        // Host 10 is gone: the clock starts when first seen.
        let down = |h: i64| h != 10;
        sweep(&c, 6000, &down).unwrap();
        assert_eq!(lock_of(&c, "p").unwrap().unwrap().stale_since, Some(6000));
        assert_eq!(
            acquire(&c, 2, "p", 6500, 1000, &down).unwrap(),
            Acquire::Busy { holder: 1 }
        );
        // It comes back in time: the clock stops.
        sweep(&c, 6600, &up).unwrap();
        assert_eq!(lock_of(&c, "p").unwrap().unwrap().stale_since, None);
        sweep(&c, 7000, &down).unwrap();
        assert!(matches!(
            acquire(&c, 2, "p", 8000, 1000, &down).unwrap(),
            Acquire::Acquired { .. }
        ));
        // A deleted holder frees the lock at once.
        c.execute_batch("DELETE FROM instances WHERE id = 2;")
            .unwrap();
        assert!(matches!(
            acquire(&c, 1, "p", 8001, 1000, &up).unwrap(),
            Acquire::Acquired { .. }
        ));
    }

    #[test]
    fn import_is_a_new_generation_and_refused_while_held() {
        let c = db();
        c.execute_batch(
            "CREATE TABLE audit (id INTEGER PRIMARY KEY, at INTEGER, actor TEXT, action TEXT, target TEXT, detail TEXT);",
        )
        .unwrap();
        acquire(&c, 1, "p", 0, 1000, &up).unwrap();
        upload(&c, 1, "p", 3, "{}", false).unwrap();
        assert!(matches!(
            import(&c, "admin", "p", &json!({"inventories": {}})),
            Err(StoreError::Conflict(_))
        ));
        admin_release(&c, "admin", "p").unwrap();
        assert!(import(&c, "admin", "p", &json!([1])).is_err());
        assert_eq!(
            import(
                &c,
                "admin",
                "p",
                &json!({"generation": 1, "inventories": {"main": []}})
            )
            .unwrap(),
            4
        );
        // The game's own next upload of 4 is older than the import: refused.
        assert_eq!(upload(&c, 1, "p", 4, "{}", false).unwrap(), Upload::Stale);
        let n: i64 = c
            .query_row("SELECT COUNT(*) FROM audit", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 2);
        assert_eq!(stats(&c).unwrap()["count"], 1);
    }

    #[test]
    fn the_list_has_stored_and_held_players_with_instance_names() {
        let c = db();
        c.execute_batch("INSERT INTO instances (id, name, host_id, status) VALUES (1, 'a', 10, 'running'), (2, 'b', 20, 'running');")
            .unwrap();
        acquire(&c, 1, "held", 5, 1000, &up).unwrap();
        acquire(&c, 2, "stored", 6, 1000, &up).unwrap();
        upload(&c, 2, "stored", 3, "{\"x\":1}", true).unwrap();
        let all = rows(&c, None).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0]["name"], "held");
        assert_eq!(all[0]["holder"], "a");
        assert!(all[0]["generation"].is_null());
        assert_eq!(all[1]["generation"], 3);
        assert_eq!(all[1]["size"], 7);
        assert_eq!(all[1]["last_instance"], "b");
        assert!(all[1]["holder"].is_null());
        assert_eq!(rows(&c, Some("stored")).unwrap().len(), 1);
        assert!(rows(&c, Some("nobody")).unwrap().is_empty());
    }
}
