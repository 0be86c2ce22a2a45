//! `subspace_storage`: chests whose contents go to a cluster-wide pool that chests in other
//! games draw from (research/plugins.md §2.6, §4.7), for the Subspace Storage mod unchanged.
//! clustorio does not ship the mod; an admin uploads it like any other.
//!
//! The contract with the mod: it prints `subspace_storage:output` (items its injectors took) at
//! cycle tick 60 and `subspace_storage:orders` (what its extractors miss) at tick 61, and the
//! host calls its globals over RCON: `Import(json)`, `UpdateInvData(json, full)` and the
//! keep-alive `global.ticksSinceMasterPinged = 0`.
//!
//! Unlike Clusterio nothing is voided or duplicated (README "Subspace storage"), and the
//! guarantee holds across a game's rollback to its last save:
//! - an export is written to the host's spool on disk before anything else, sent with an
//!   idempotency key as `pending`, and made `available` (credited, once) only when a save of its
//!   game that started after it has finished, or `cancelled` when the game went back to a save
//!   from before it ([`ledger::export`], [`host`]);
//! - a grant is a ledger entry (pending) committed before the host hears of it; the host records
//!   it, `claim`s it, and runs `Import` with a marker in the mod's `global`; it is final
//!   (`delivered`) once a save of the game holds it, refunded when the game did not get it or
//!   went back to a save without it; a grant nobody claimed within `grant_timeout` is refunded
//!   and cannot be claimed after;
//! - counts cannot go negative (a CHECK in SQLite), there is no size cut-off, and old ledger
//!   history is pruned with the counts kept exact.
//!
//! Messages (link, `subspace_storage.<name>`), all requests host → controller unless noted:
//! `export {key, instance_id, items, state, spooled_at}` → `{duplicate}`; `remove {instance_id,
//! items}` → `{grant, items}`; `claim {grant}` → `{claimed}`; `delivered {grant}`; `refund
//! {grant}`; `sync {held, delivered}` (after each reconnect and every 30 s: every other pending
//! grant of the host is refunded); `get_storage` → `{items}`; events controller → host: `storage
//! {items}` (changed counts, at most once a second) and `hello` (a host came up). Items are
//! Clusterio's `[name, count, quality]`.

mod host;
pub mod ledger;

use super::{Builtin, ControllerPlugin, PluginInfo};
use crate::config::schema::{Default as D, Field, Kind};
use crate::controller::plugins::ControllerCtx;
use crate::host::backend::BoxFuture;
use crate::link::frame::ErrorBody;
use crate::permissions::Permission;
use crate::store::{self, Store, StoreError};
use ledger::{Division, DoleFactors, ExportState, Item};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// See the pool (web page, `ctl storage list`, `GET /api/v1/storage`).
pub const PERMISSION_VIEW: &str = "subspace_storage.storage.view";
/// Correct a count by hand (`ctl storage set`, `POST /api/v1/storage`).
pub const PERMISSION_SET: &str = "subspace_storage.storage.set";

/// The controller setting naming the division method.
const DIVISION_KEY: &str = "subspace_storage.division_method";
/// Instance setting: the host saves a game whose exports or imports waited this long (s).
pub(crate) const SAVE_INTERVAL_KEY: &str = "subspace_storage.save_interval";
const DEFAULT_SAVE_INTERVAL: i64 = 30;
/// Controller setting: unclaimed grants go back to the pool after this (s).
const GRANT_TIMEOUT_KEY: &str = "subspace_storage.grant_timeout";
/// Controller setting: ledger history kept (hours).
const RETENTION_KEY: &str = "subspace_storage.ledger_retention";
/// Pruning runs at most this often.
const PRUNE_EVERY_MS: i64 = 10 * 60 * 1000;

static INFO: PluginInfo = PluginInfo {
    name: "subspace_storage",
    title: "Subspace storage",
    description: "Subspace chests share one cluster-wide pool of items: exactly once, never negative.",
    version: "0.1.0",
    permissions: &[
        Permission {
            name: PERMISSION_VIEW,
            title: "View storage",
            description: "See the items in the cluster's subspace storage pool.",
            grant_by_default: true,
        },
        Permission {
            name: PERMISSION_SET,
            title: "Correct storage",
            description: "Set an item's count in the subspace storage pool by hand (audited).",
            grant_by_default: false,
        },
    ],
    lua: None,
    ipc_channels: &[],
    migrations: &[ledger::MIGRATION, ledger::MIGRATION_SAVE_POINTS],
    settings: crate::config::PluginSettings {
        instance: &[
            super::load_plugin_field("subspace_storage.load_plugin", "Subspace storage"),
            Field::new("subspace_storage.log_item_transfers", Kind::Bool, D::Bool(false))
                .title("Log item transfers")
                .about("Log every export and import of this instance on its host.")
                .section("Plugins"),
            Field::new(SAVE_INTERVAL_KEY, Kind::Integer { min: 0, max: 3600 }, D::Int(DEFAULT_SAVE_INTERVAL))
                .title("Save for subspace storage after (s)")
                .about("Exports reach the pool, and imports are final, only once the game has saved after them. When items wait this long, the host saves the game (/server-save). Each save stutters a big map; 0 leaves it to autosaves.")
                .section("Plugins"),
        ],
        controller: &[
            Field::new(DIVISION_KEY, Kind::Enum(&["simple", "dole"]), D::Str("simple"))
                .title("Division method")
                .about("How a short item is shared: simple (first come, first served) or dole (every request gets a shrinking share while the item is short).")
                .section("Plugins"),
            Field::new(GRANT_TIMEOUT_KEY, Kind::Integer { min: 5, max: 86_400 }, D::Int(60))
                .title("Unclaimed grant timeout (s)")
                .about("A grant its host has not claimed (recorded on disk) within this time goes back to the pool; the host can no longer import it.")
                .section("Plugins"),
            Field::new(RETENTION_KEY, Kind::Integer { min: 1, max: 87_600 }, D::Int(168))
                .title("Ledger history (hours)")
                .about("Ledger rows, settled exports and settled grants older than this are deleted (counts stay exact). A host's export spooled before that is refused as a possible replay.")
                .section("Plugins"),
        ],
        host: &[],
    },
};

pub const BUILTIN: Builtin = Builtin {
    info: &INFO,
    controller: || Some(Box::new(SubspaceController::default())),
    host: || Some(Box::new(host::SubspaceHost::default())),
};

/// Storage updates go out at most this often (Clusterio's rate).
const UPDATE_INTERVAL: Duration = Duration::from_secs(1);

/// Changed counts waiting for the next update, and whether the broadcaster runs.
#[derive(Default)]
struct Pending {
    changed: BTreeMap<(String, String), i64>,
    /// Only the pending exports changed (web clients refresh; games see no change).
    touched: bool,
    running: bool,
}

#[derive(Default)]
struct SubspaceController {
    pending: Arc<Mutex<Pending>>,
    dole: Arc<Mutex<DoleFactors>>,
    last_prune: std::sync::atomic::AtomicI64,
}

fn store_error(e: StoreError) -> ErrorBody {
    match e {
        StoreError::Invalid(m) => ErrorBody::new("bad_request", m),
        e => ErrorBody::new("store", e.to_string()),
    }
}

impl SubspaceController {
    /// Queues changed counts for the next update to hosts and web clients.
    fn changed(&self, ctx: &ControllerCtx, counts: Vec<Item>) {
        if counts.is_empty() {
            return;
        }
        let mut start = false;
        if let Ok(mut p) = self.pending.lock() {
            for i in counts {
                p.changed.insert((i.name, i.quality), i.count);
            }
            if !p.running {
                p.running = true;
                start = true;
            }
        }
        if start {
            tokio::spawn(broadcaster(ctx.clone(), self.pending.clone()));
        }
    }

    fn setting_i64(&self, ctx: &ControllerCtx, key: &str, default: i64) -> i64 {
        ctx.setting(key).as_i64().unwrap_or(default)
    }

    /// Returns unclaimed grants older than the bound to the pool (before any grant is made and
    /// whenever the pool is listed, so what is shown and handed out is never held back by a
    /// host that is gone).
    async fn expire(&self, ctx: &ControllerCtx) {
        let bound = self
            .setting_i64(ctx, GRANT_TIMEOUT_KEY, 60)
            .clamp(5, 86_400)
            * 1000;
        match ctx.store().write(move |c| ledger::expire(c, bound)).await {
            Ok(counts) if !counts.is_empty() => {
                tracing::info!(
                    plugin = INFO.name,
                    "grants no host claimed in time went back to the pool"
                );
                self.changed(ctx, counts);
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(plugin = INFO.name, error = %e, "expiring unclaimed grants failed")
            }
        }
    }

    /// Prunes the ledger at most every [`PRUNE_EVERY_MS`].
    async fn maybe_prune(&self, ctx: &ControllerCtx) {
        use std::sync::atomic::Ordering;
        let now = store::now_ms();
        let last = self.last_prune.load(Ordering::Relaxed);
        if now - last < PRUNE_EVERY_MS
            || self
                .last_prune
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let hours = self.setting_i64(ctx, RETENTION_KEY, 168).clamp(1, 87_600);
        match ctx
            .store()
            .write(move |c| ledger::prune(c, hours * 3_600_000))
            .await
        {
            Ok(n) if n > 0 => {
                tracing::info!(plugin = INFO.name, rows = n, "old ledger history pruned")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(plugin = INFO.name, error = %e, "pruning the ledger failed"),
        }
    }

    /// Pending exports changed: web clients hear of it with the next update.
    fn touch(&self, ctx: &ControllerCtx) {
        let mut start = false;
        if let Ok(mut p) = self.pending.lock() {
            p.touched = true;
            if !p.running {
                p.running = true;
                start = true;
            }
        }
        if start {
            tokio::spawn(broadcaster(ctx.clone(), self.pending.clone()));
        }
    }

    fn division(&self, ctx: &ControllerCtx) -> Division {
        Division::parse(ctx.setting(DIVISION_KEY).as_str().unwrap_or("simple"))
    }

    async fn owned(&self, ctx: &ControllerCtx, host_id: i64, id: i64) -> Result<(), ErrorBody> {
        let owner = ctx
            .store()
            .read(move |c| store::instances::get(c, &id.to_string()))
            .await
            .map_err(|e| ErrorBody::new("not_found", e.to_string()))?
            .host_id;
        if owner != Some(host_id) {
            return Err(ErrorBody::new(
                "forbidden",
                format!("instance {id} is not assigned to this host"),
            ));
        }
        Ok(())
    }

    async fn request(
        &self,
        ctx: &ControllerCtx,
        host_id: i64,
        name: &str,
        data: Value,
    ) -> Result<Value, ErrorBody> {
        let grant_id = || {
            data["grant"]
                .as_i64()
                .ok_or_else(|| ErrorBody::new("bad_request", "no grant id"))
        };
        match name {
            "subspace_storage.export" => {
                let (Some(key), Some(instance_id)) =
                    (data["key"].as_str(), data["instance_id"].as_i64())
                else {
                    return Err(ErrorBody::new(
                        "bad_request",
                        "export needs key and instance_id",
                    ));
                };
                // A host of before save points sends no state: its exports count at once.
                let state = match data["state"].as_str() {
                    None => ExportState::Available,
                    Some(s) => ExportState::parse(s).ok_or_else(|| {
                        ErrorBody::new(
                            "bad_request",
                            format!(
                                "export state must be pending, available or cancelled, not \"{s}\""
                            ),
                        )
                    })?,
                };
                let spooled_at = data["spooled_at"].as_i64();
                let (items, bad) = ledger::parse_items(&data["items"]);
                if bad > 0 {
                    tracing::warn!(
                        plugin = INFO.name,
                        instance_id,
                        bad,
                        "export with malformed entries; they are skipped"
                    );
                }
                let key = key.to_string();
                let done = ctx
                    .store()
                    .write(move |c| {
                        ledger::export(c, &key, instance_id, host_id, &items, state, spooled_at)
                    })
                    .await
                    .map_err(store_error)?;
                if done.pending_changed && done.counts.is_empty() {
                    self.touch(ctx);
                }
                self.changed(ctx, done.counts);
                self.maybe_prune(ctx).await;
                Ok(json!({ "duplicate": done.duplicate }))
            }
            "subspace_storage.claim" => {
                let id = grant_id()?;
                let ok = ctx
                    .store()
                    .write(move |c| ledger::claim(c, id, host_id))
                    .await
                    .map_err(store_error)?;
                Ok(json!({ "claimed": ok }))
            }
            "subspace_storage.remove" => {
                let Some(instance_id) = data["instance_id"].as_i64() else {
                    return Err(ErrorBody::new("bad_request", "remove needs instance_id"));
                };
                self.owned(ctx, host_id, instance_id).await?;
                self.expire(ctx).await;
                let (wanted, _) = ledger::parse_items(&data["items"]);
                let method = self.division(ctx);
                let dole = self.dole.clone();
                let granted = ctx
                    .store()
                    .write(move |c| {
                        let mut f = dole.lock().map(|f| f.clone()).unwrap_or_default();
                        let g = ledger::grant(c, instance_id, host_id, &wanted, method, &mut f)?;
                        if let Ok(mut d) = dole.lock() {
                            *d = f;
                        }
                        Ok(g)
                    })
                    .await
                    .map_err(store_error)?;
                match granted {
                    Some(g) => {
                        self.changed(ctx, g.counts);
                        Ok(json!({ "grant": g.id, "items": ledger::items_json(&g.items) }))
                    }
                    None => Ok(json!({ "grant": null, "items": [] })),
                }
            }
            "subspace_storage.delivered" => {
                let id = grant_id()?;
                ctx.store()
                    .write(move |c| ledger::deliver(c, id, host_id))
                    .await
                    .map_err(store_error)?;
                Ok(json!({}))
            }
            "subspace_storage.refund" => {
                let id = grant_id()?;
                let counts = ctx
                    .store()
                    .write(move |c| ledger::refund(c, id, host_id))
                    .await
                    .map_err(store_error)?;
                self.changed(ctx, counts);
                Ok(json!({}))
            }
            "subspace_storage.sync" => {
                let ids = |v: &Value| -> Vec<i64> {
                    v.as_array()
                        .map(|a| a.iter().filter_map(Value::as_i64).collect())
                        .unwrap_or_default()
                };
                let (held, delivered) = (ids(&data["held"]), ids(&data["delivered"]));
                let counts = ctx
                    .store()
                    .write(move |c| {
                        for id in &delivered {
                            ledger::deliver(c, *id, host_id)?;
                        }
                        let mut keep = held;
                        keep.extend(delivered);
                        ledger::reconcile(c, host_id, &keep)
                    })
                    .await
                    .map_err(store_error)?;
                if !counts.is_empty() {
                    tracing::info!(
                        plugin = INFO.name,
                        host_id,
                        "grants that never reached a game were refunded"
                    );
                }
                self.changed(ctx, counts);
                Ok(json!({}))
            }
            "subspace_storage.get_storage" => {
                let items = ctx.store().read(ledger::list).await.map_err(store_error)?;
                Ok(json!({ "items": ledger::items_json(&items) }))
            }
            other => Err(ErrorBody::new(
                "unknown_request",
                format!("subspace_storage has no request \"{other}\""),
            )),
        }
    }
}

/// Sends changed counts at most once per [`UPDATE_INTERVAL`]; ends when nothing changed.
async fn broadcaster(ctx: ControllerCtx, pending: Arc<Mutex<Pending>>) {
    loop {
        let batch = match pending.lock() {
            Ok(mut p) => {
                if p.changed.is_empty() && !p.touched {
                    p.running = false;
                    return;
                }
                p.touched = false;
                std::mem::take(&mut p.changed)
            }
            Err(_) => return,
        };
        let batch_empty = batch.is_empty();
        let items: Vec<Value> = batch
            .into_iter()
            .map(|((name, quality), count)| json!([name, count, quality]))
            .collect();
        let data = json!({ "items": items });
        let mut hosts: Vec<i64> = ctx
            .running_instances()
            .await
            .into_iter()
            .map(|(_, _, h)| h)
            .collect();
        hosts.sort_unstable();
        hosts.dedup();
        if batch_empty {
            hosts.clear();
        }
        for h in hosts {
            if ctx.host_ready(h) {
                ctx.send_to_host(h, "subspace_storage.storage", data.clone());
            }
        }
        ctx.publish("subspace_storage.storage", data, PERMISSION_VIEW);
        tokio::time::sleep(UPDATE_INTERVAL).await;
    }
}

/// Prometheus label value escaping.
fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl ControllerPlugin for SubspaceController {
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
            tracing::debug!(
                plugin = INFO.name,
                host_id,
                event = name,
                "unknown event; ignored"
            );
        })
    }

    fn host_request<'a>(
        &'a self,
        ctx: &'a ControllerCtx,
        host_id: i64,
        name: &'a str,
        data: Value,
    ) -> BoxFuture<'a, Result<Value, ErrorBody>> {
        Box::pin(self.request(ctx, host_id, name, data))
    }

    fn host_connected<'a>(&'a self, ctx: &'a ControllerCtx, host_id: i64) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if ctx.host_ready(host_id) {
                ctx.send_to_host(host_id, "subspace_storage.hello", json!({}));
            }
        })
    }

    fn control_request<'a>(
        &'a self,
        ctx: &'a ControllerCtx,
        actor: &'a crate::controller::auth::Actor,
        name: &'a str,
        data: Value,
    ) -> BoxFuture<'a, Result<Value, crate::controller::error::ApiError>> {
        use crate::controller::error::ApiError;
        Box::pin(async move {
            match name {
                "subspace_storage.list" => {
                    self.expire(ctx).await;
                    Ok(list(ctx.store()).await?)
                }
                "subspace_storage.set" => {
                    let (Some(item), Some(count)) = (data["name"].as_str(), data["count"].as_i64())
                    else {
                        return Err(ApiError::new(
                            400,
                            "bad_request",
                            "give the item's name and a whole count: {\"name\": \"iron-plate\", \"count\": 100, \"quality\": \"normal\"}",
                        ));
                    };
                    let quality = data["quality"].as_str().unwrap_or("normal").to_string();
                    let (who, item) = (actor.audit_name(), item.to_string());
                    let set = ctx
                        .store()
                        .write(move |c| ledger::set(c, &who, &item, &quality, count))
                        .await?;
                    tracing::info!(plugin = INFO.name, item = %set.name, quality = %set.quality, count = set.count, "storage count set by hand");
                    self.changed(ctx, vec![set.clone()]);
                    Ok(json!({ "name": set.name, "quality": set.quality, "count": set.count }))
                }
                "subspace_storage.resolve" => {
                    let Some(host) = data["host"].as_str().map(str::to_string) else {
                        return Err(ApiError::new(
                            400,
                            "bad_request",
                            "name the host that is gone for good: {\"host\": \"h1\", \"exports\": \"credit\"}",
                        ));
                    };
                    let credit = match data["exports"].as_str().unwrap_or("credit") {
                        "credit" => true,
                        "cancel" => false,
                        other => {
                            return Err(ApiError::new(
                                400,
                                "bad_request",
                                format!(
                                    "exports must be credit (the items reach the pool) or cancel (a save of the host's games is restored elsewhere), not \"{other}\""
                                ),
                            ));
                        }
                    };
                    let lookup = host.clone();
                    let record = ctx
                        .store()
                        .read(move |c| store::hosts::get(c, &lookup))
                        .await?;
                    // Settling is only right for a host that can never send what it holds.
                    if !record.revoked || ctx.host_is_connected(record.id) {
                        return Err(ApiError::new(
                            409,
                            "conflict",
                            format!(
                                "host {} is not revoked; revoke it first (ctl host revoke {}): only a host that can never come back may have what it left pending settled",
                                record.name, record.name
                            ),
                        ));
                    }
                    let who = actor.audit_name();
                    let (id, name) = (record.id, record.name.clone());
                    let done = ctx
                        .store()
                        .write(move |c| ledger::resolve_host(c, &who, id, &name, credit))
                        .await?;
                    tracing::info!(plugin = INFO.name, host = %record.name, exports = done.exports, grants = done.grants, credit, "pending transfers of a gone host settled by hand");
                    if done.counts.is_empty() && done.exports > 0 {
                        self.touch(ctx);
                    }
                    self.changed(ctx, done.counts);
                    Ok(json!({
                        "host": record.name,
                        "exports": done.exports,
                        "exports_to": if credit { "available" } else { "cancelled" },
                        "grants_refunded": done.grants,
                    }))
                }
                other => Err(ApiError::new(
                    400,
                    "unknown_request",
                    format!("subspace_storage has no request \"{other}\""),
                )),
            }
        })
    }

    fn metrics<'a>(&'a self, ctx: &'a ControllerCtx) -> BoxFuture<'a, String> {
        Box::pin(async move {
            let Ok((items, totals)) = ctx
                .store()
                .read(|c| Ok((ledger::list(c)?, ledger::totals(c)?)))
                .await
            else {
                return String::new();
            };
            let mut out = String::new();
            for (kind, help) in [
                ("export", "Items exported from instances into the pool."),
                (
                    "import",
                    "Items the pool gave to instances (less those refunded).",
                ),
            ] {
                let _ = writeln!(out, "# HELP clusterio_subspace_storage_{kind}_total {help}");
                let _ = writeln!(
                    out,
                    "# TYPE clusterio_subspace_storage_{kind}_total counter"
                );
                for (k, id, name, quality, total) in &totals {
                    if k == kind {
                        let _ = writeln!(
                            out,
                            "clusterio_subspace_storage_{kind}_total{{instance_id=\"{id}\",resource=\"{}\",quality=\"{}\"}} {total}",
                            label(name),
                            label(quality)
                        );
                    }
                }
            }
            let _ = writeln!(
                out,
                "# HELP clusterio_subspace_storage_controller_inventory Items in the pool."
            );
            let _ = writeln!(
                out,
                "# TYPE clusterio_subspace_storage_controller_inventory gauge"
            );
            for i in &items {
                let _ = writeln!(
                    out,
                    "clusterio_subspace_storage_controller_inventory{{resource=\"{}\",quality=\"{}\"}} {}",
                    label(&i.name),
                    label(&i.quality),
                    i.count
                );
            }
            let mut factors: Vec<((String, String), i64)> = self
                .dole
                .lock()
                .map(|d| d.iter().map(|(k, v)| (k.clone(), *v)).collect())
                .unwrap_or_default();
            if !factors.is_empty() {
                factors.sort();
                let _ = writeln!(
                    out,
                    "# HELP clusterio_subspace_storage_dole_factor_gauge The dole division factor per item (0: requests get all they ask)."
                );
                let _ = writeln!(
                    out,
                    "# TYPE clusterio_subspace_storage_dole_factor_gauge gauge"
                );
                for ((name, quality), f) in factors {
                    let _ = writeln!(
                        out,
                        "clusterio_subspace_storage_dole_factor_gauge{{resource=\"{}\",quality=\"{}\"}} {f}",
                        label(&name),
                        label(&quality)
                    );
                }
            }
            out
        })
    }

    fn status<'a>(&'a self, ctx: &'a ControllerCtx) -> BoxFuture<'a, Value> {
        Box::pin(async move {
            let (items, (grants, _)) = ctx
                .store()
                .read(|c| Ok((ledger::list(c)?, ledger::in_flight(c)?)))
                .await
                .unwrap_or_default();
            let total: i64 = items.iter().map(|i| i.count).sum();
            json!({ "kinds": items.len(), "items": total, "grants_in_flight": grants })
        })
    }
}

/// `GET /api/v1/storage`: the pool and what is on its way to games.
pub async fn list(store: &Store) -> Result<Value, StoreError> {
    let (items, (grants, moving), pending, by_host, hosts) = store
        .read(|c| {
            Ok((
                ledger::list(c)?,
                ledger::in_flight(c)?,
                ledger::pending_exports(c)?,
                ledger::pending_by_host(c)?,
                store::hosts::list(c)?,
            ))
        })
        .await?;
    // Which hosts hold them (a host that never returns: `ctl storage resolve`).
    let by_host: Vec<Value> = by_host
        .iter()
        .map(|(id, exports, grants)| {
            let h = hosts.iter().find(|h| h.id == *id);
            json!({
                "host_id": id,
                "host": h.map(|h| h.name.clone()),
                "revoked": h.is_some_and(|h| h.revoked),
                "exports": exports,
                "grants": grants,
            })
        })
        .collect();
    let rows = |l: &[Item]| -> Vec<Value> {
        l.iter()
            .map(|i| json!({ "name": i.name, "quality": i.quality, "count": i.count }))
            .collect()
    };
    Ok(json!({
        "items": rows(&items),
        "in_flight": { "grants": grants, "items": rows(&moving) },
        "pending": { "items": rows(&pending), "hosts": by_host },
    }))
}
