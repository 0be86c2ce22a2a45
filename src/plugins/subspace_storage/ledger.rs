//! The controller's pool and its ledger (SQLite). Every change of a count is a row in
//! `subspace_storage_ledger` written in the same transaction as the count, so the pool can be
//! audited back to the transfers that made it. Counts have a `CHECK (count >= 0)`: no path can
//! drive one negative, a bug would fail the transaction instead.

use crate::store::{self, StoreError};
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Value, json};
use std::collections::HashMap;

pub const MIGRATION: &str = "CREATE TABLE subspace_storage_items (
        name TEXT NOT NULL,
        quality TEXT NOT NULL,
        count INTEGER NOT NULL CHECK (count >= 0),
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (name, quality)
    );
    CREATE TABLE subspace_storage_batches (
        key TEXT PRIMARY KEY,
        instance_id INTEGER NOT NULL,
        host_id INTEGER NOT NULL,
        at INTEGER NOT NULL
    );
    CREATE TABLE subspace_storage_grants (
        id INTEGER PRIMARY KEY,
        instance_id INTEGER NOT NULL,
        host_id INTEGER NOT NULL,
        items TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'refunded')),
        at INTEGER NOT NULL,
        resolved_at INTEGER
    );
    CREATE INDEX subspace_storage_grants_pending ON subspace_storage_grants (host_id) WHERE state = 'pending';
    CREATE TABLE subspace_storage_ledger (
        id INTEGER PRIMARY KEY,
        at INTEGER NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('export', 'grant', 'refund', 'set')),
        instance_id INTEGER,
        ref TEXT,
        name TEXT NOT NULL,
        quality TEXT NOT NULL,
        delta INTEGER NOT NULL,
        actor TEXT
    );
    CREATE TABLE subspace_storage_totals (
        kind TEXT NOT NULL CHECK (kind IN ('export', 'import')),
        instance_id INTEGER NOT NULL,
        name TEXT NOT NULL,
        quality TEXT NOT NULL,
        total INTEGER NOT NULL,
        PRIMARY KEY (kind, instance_id, name, quality)
    );";

/// Save points: an export is `pending` until the exporting game saved after it, then
/// `available` (credited to the pool) or `cancelled` (the game rolled back to a save before it,
/// so the items are in its chests again). A grant is claimed by its host before the `Import`;
/// an unclaimed grant older than the bound is returned. `horizon`: exports older than the
/// pruned history cannot be told from replays, and are refused.
pub const MIGRATION_SAVE_POINTS: &str = "
    ALTER TABLE subspace_storage_batches ADD COLUMN state TEXT NOT NULL DEFAULT 'available';
    ALTER TABLE subspace_storage_batches ADD COLUMN items TEXT;
    CREATE INDEX subspace_storage_batches_pending ON subspace_storage_batches (state) WHERE state = 'pending';
    ALTER TABLE subspace_storage_grants ADD COLUMN claimed_at INTEGER;
    CREATE INDEX subspace_storage_grants_at ON subspace_storage_grants (at);
    CREATE INDEX subspace_storage_ledger_at ON subspace_storage_ledger (at);
    CREATE INDEX subspace_storage_batches_at ON subspace_storage_batches (at);
    CREATE TABLE subspace_storage_horizon (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        at INTEGER NOT NULL
    );";

/// Longest item or quality name accepted (Factorio's are far shorter).
const MAX_NAME: usize = 200;
/// Largest count in one entry (what a Lua double carries exactly).
pub const MAX_COUNT: i64 = 1 << 53;

/// One item stack as the mod speaks it: `[name, count, quality]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Item {
    pub name: String,
    pub quality: String,
    pub count: i64,
}

impl Item {
    pub fn new(name: &str, count: i64, quality: &str) -> Item {
        Item {
            name: name.to_string(),
            quality: quality.to_string(),
            count,
        }
    }

    pub fn to_json(&self) -> Value {
        json!([self.name, self.count, self.quality])
    }
}

fn name_ok(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_NAME && !s.chars().any(|c| c.is_control())
}

/// One `[name, count, quality?]` entry; `None` when malformed (wrong types, count not a whole
/// positive number, names empty or too long).
pub fn parse_item(v: &Value) -> Option<Item> {
    parse_entry(v, 1)
}

/// An entry of a storage update: a count of 0 is an item that ran out.
fn parse_entry(v: &Value, min: i64) -> Option<Item> {
    let a = v.as_array()?;
    let name = a.first()?.as_str()?;
    let count = a.get(1)?.as_f64()?;
    let quality = match a.get(2) {
        None | Some(Value::Null) => "normal",
        Some(q) => q.as_str()?,
    };
    if !name_ok(name) || !name_ok(quality) || count.fract() != 0.0 {
        return None;
    }
    if !(min as f64..=MAX_COUNT as f64).contains(&count) {
        return None;
    }
    Some(Item::new(name, count as i64, quality))
}

/// A list of entries, merged by name and quality; malformed entries are returned apart.
pub fn parse_items(v: &Value) -> (Vec<Item>, usize) {
    let mut merged: HashMap<(String, String), i64> = HashMap::new();
    let mut bad = 0;
    // Factorio writes an empty table as `{}`.
    let list = v.as_array().cloned().unwrap_or_default();
    for e in &list {
        match parse_item(e) {
            Some(i) => {
                let c = merged.entry((i.name, i.quality)).or_insert(0);
                *c = c.saturating_add(i.count).min(MAX_COUNT);
            }
            None => bad += 1,
        }
    }
    let mut out: Vec<Item> = merged
        .into_iter()
        .map(|((name, quality), count)| Item {
            name,
            quality,
            count,
        })
        .collect();
    out.sort();
    (out, bad)
}

/// Counts as the controller sends them (0 allowed), last one wins.
pub fn parse_items_with_zero(v: &Value) -> (Vec<Item>, usize) {
    let list = v.as_array().cloned().unwrap_or_default();
    let mut out = Vec::new();
    let mut bad = 0;
    for e in &list {
        match parse_entry(e, 0) {
            Some(i) => out.push(i),
            None => bad += 1,
        }
    }
    (out, bad)
}

pub fn items_json(items: &[Item]) -> Value {
    Value::Array(items.iter().map(Item::to_json).collect())
}

fn count_of(c: &Connection, name: &str, quality: &str) -> Result<i64, StoreError> {
    Ok(c.query_row(
        "SELECT count FROM subspace_storage_items WHERE name = ?1 AND quality = ?2",
        params![name, quality],
        |r| r.get(0),
    )
    .optional()?
    .unwrap_or(0))
}

/// Adds `delta` (may be negative) to a count and writes the ledger row; returns the new count.
#[allow(clippy::too_many_arguments)]
fn apply(
    c: &Connection,
    kind: &str,
    instance_id: Option<i64>,
    reference: &str,
    name: &str,
    quality: &str,
    delta: i64,
    actor: Option<&str>,
) -> Result<i64, StoreError> {
    let now = store::now_ms();
    let old = count_of(c, name, quality)?;
    let new = old
        .checked_add(delta)
        .filter(|n| *n >= 0)
        .ok_or_else(|| StoreError::Invalid(format!("{name} ({quality}) would become negative")))?;
    c.execute(
        "INSERT INTO subspace_storage_items (name, quality, count, updated_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (name, quality) DO UPDATE SET count = ?3, updated_at = ?4",
        params![name, quality, new, now],
    )?;
    c.execute(
        "INSERT INTO subspace_storage_ledger (at, kind, instance_id, ref, name, quality, delta, actor)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![now, kind, instance_id, reference, name, quality, delta, actor],
    )?;
    // Clusterio's counters: exported, and imported (granted less refunded), per instance.
    let counter = match kind {
        "export" => Some(("export", delta)),
        "grant" | "refund" => Some(("import", -delta)),
        _ => None,
    };
    if let (Some((k, d)), Some(id)) = (counter, instance_id) {
        c.execute(
            "INSERT INTO subspace_storage_totals (kind, instance_id, name, quality, total) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (kind, instance_id, name, quality) DO UPDATE SET total = total + ?5",
            params![k, id, name, quality, d],
        )?;
    }
    Ok(new)
}

/// Where an export stands (see [`MIGRATION_SAVE_POINTS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportState {
    Pending,
    Available,
    Cancelled,
}

impl ExportState {
    pub fn parse(s: &str) -> Option<ExportState> {
        match s {
            "pending" => Some(ExportState::Pending),
            "available" => Some(ExportState::Available),
            "cancelled" => Some(ExportState::Cancelled),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ExportState::Pending => "pending",
            ExportState::Available => "available",
            ExportState::Cancelled => "cancelled",
        }
    }
}

/// What an export request changed.
#[derive(Debug, Default, PartialEq)]
pub struct Exported {
    /// Nothing changed: the key was seen in this state or a final one.
    pub duplicate: bool,
    /// The pool's new counts, when items became available.
    pub counts: Vec<Item>,
    /// The pending exports changed (the page shows them).
    pub pending_changed: bool,
}

/// The oldest export time the controller can still tell from a replay (`None`: nothing pruned).
fn horizon(c: &Connection) -> Result<Option<i64>, StoreError> {
    Ok(c.query_row(
        "SELECT at FROM subspace_storage_horizon WHERE id = 1",
        [],
        |r| r.get(0),
    )
    .optional()?)
}

/// An export from a game, by idempotency `key`, in the state its host knows: `pending` (the
/// game has not saved since), `available` (a save holds it: credited once) or `cancelled`
/// (the game rolled back before it). Only `pending` → `available` and `pending` →
/// `cancelled` move a known key; anything else is a duplicate and changes nothing. `spooled_at`
/// (ms) is when the host spooled it: a new key older than the pruned history is refused, as it
/// could be a replay of a pruned one.
pub fn export(
    c: &Connection,
    key: &str,
    instance_id: i64,
    host_id: i64,
    items: &[Item],
    state: ExportState,
    spooled_at: Option<i64>,
) -> Result<Exported, StoreError> {
    if key.is_empty() || key.len() > 200 {
        return Err(StoreError::Invalid(
            "an export needs a key of 1–200 bytes".into(),
        ));
    }
    let known: Option<String> = c
        .query_row(
            "SELECT state FROM subspace_storage_batches WHERE key = ?1",
            [key],
            |r| r.get(0),
        )
        .optional()?;
    let credit = match known.as_deref() {
        None => {
            if let (Some(at), Some(h)) = (spooled_at, horizon(c)?)
                && at < h
            {
                return Err(StoreError::Invalid(format!(
                    "export {key} was spooled before the pruned history ({at} < {h} ms); it cannot be told from a replay, so it is refused"
                )));
            }
            c.execute(
                "INSERT INTO subspace_storage_batches (key, instance_id, host_id, at, state, items) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    key,
                    instance_id,
                    host_id,
                    store::now_ms(),
                    state.as_str(),
                    items_json(items).to_string()
                ],
            )?;
            state == ExportState::Available
        }
        Some("pending") if state != ExportState::Pending => {
            c.execute(
                "UPDATE subspace_storage_batches SET state = ?2, at = ?3 WHERE key = ?1",
                params![key, state.as_str(), store::now_ms()],
            )?;
            state == ExportState::Available
        }
        Some(_) => {
            return Ok(Exported {
                duplicate: true,
                ..Exported::default()
            });
        }
    };
    let pending_changed = state == ExportState::Pending || known.is_some();
    let mut counts = Vec::new();
    if credit {
        // The items as first recorded (a pending key's items cannot change later).
        let stored: Option<String> = c
            .query_row(
                "SELECT items FROM subspace_storage_batches WHERE key = ?1",
                [key],
                |r| r.get(0),
            )
            .optional()?
            .flatten();
        let items = match stored {
            Some(t) => {
                let v: Value = serde_json::from_str(&t).map_err(|e| {
                    StoreError::Db(format!("export {key} has unreadable items: {e}"))
                })?;
                parse_items(&v).0
            }
            None => items.to_vec(),
        };
        for i in &items {
            let n = apply(
                c,
                "export",
                Some(instance_id),
                key,
                &i.name,
                &i.quality,
                i.count,
                None,
            )?;
            counts.push(Item::new(&i.name, n, &i.quality));
        }
    }
    Ok(Exported {
        duplicate: false,
        counts,
        pending_changed,
    })
}

/// Exports waiting for their game's next save, summed.
pub fn pending_exports(c: &Connection) -> Result<Vec<Item>, StoreError> {
    Ok(sum_items(
        c,
        "SELECT items FROM subspace_storage_batches WHERE state = 'pending' ORDER BY key",
    )?
    .1)
}

/// The item lists a query selects (`items` texts), summed: `(rows, items)`.
fn sum_items(c: &Connection, sql: &str) -> Result<(i64, Vec<Item>), StoreError> {
    let mut stmt = c.prepare_cached(sql)?;
    let texts: Vec<Option<String>> = stmt
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut all = Vec::new();
    for t in texts.iter().flatten() {
        let v: Value = serde_json::from_str(t).unwrap_or(Value::Null);
        all.extend(parse_items(&v).0.into_iter().map(|i| i.to_json()));
    }
    Ok((texts.len() as i64, parse_items(&Value::Array(all)).0))
}

/// Per host, what it left pending: `(host_id, exports, grants)`, hosts with none left out.
pub fn pending_by_host(c: &Connection) -> Result<Vec<(i64, i64, i64)>, StoreError> {
    let mut stmt = c.prepare_cached(
        "SELECT host_id, SUM(e), SUM(g) FROM (
             SELECT host_id, 1 AS e, 0 AS g FROM subspace_storage_batches WHERE state = 'pending'
             UNION ALL
             SELECT host_id, 0, 1 FROM subspace_storage_grants WHERE state = 'pending'
         ) GROUP BY host_id ORDER BY host_id",
    )?;
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// How a request is divided when the pool has less than games want.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Division {
    /// Grant `min(stored, wanted)`, first come first served.
    Simple,
    /// Clusterio's dole: a per-item factor that shrinks what each request gets while the item
    /// runs short and grows it back while there is enough.
    Dole,
}

impl Division {
    pub fn parse(s: &str) -> Division {
        match s {
            "dole" => Division::Dole,
            _ => Division::Simple,
        }
    }
}

/// The dole factors (in memory, like Clusterio's; a restart starts them at 0 again).
pub type DoleFactors = HashMap<(String, String), i64>;

/// How many of `wanted` a request gets out of `stored`.
pub fn divide(
    method: Division,
    factors: &mut DoleFactors,
    item: &Item,
    stored: i64,
    wanted: i64,
) -> i64 {
    match method {
        Division::Simple => stored.min(wanted).max(0),
        Division::Dole => {
            let f = factors
                .entry((item.name.clone(), item.quality.clone()))
                .or_insert(0);
            let share = ((wanted as f64) / ((*f as f64 + 10.0) / 10.0)).round() as i64;
            if stored > share && share > 0 {
                *f = (*f).max(1) - 1;
                share
            } else {
                *f = ((*f).max(1) * 2).min(250);
                0
            }
        }
    }
}

/// A grant: what an instance's orders got, recorded as pending until its host confirms the
/// game's `Import`.
#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    pub id: i64,
    pub items: Vec<Item>,
    /// The pool's counts after the grant.
    pub counts: Vec<Item>,
}

pub fn grant(
    c: &Connection,
    instance_id: i64,
    host_id: i64,
    wanted: &[Item],
    method: Division,
    factors: &mut DoleFactors,
) -> Result<Option<Grant>, StoreError> {
    let mut given = Vec::new();
    for w in wanted {
        let stored = count_of(c, &w.name, &w.quality)?;
        let n = divide(method, factors, w, stored, w.count);
        if n > 0 {
            given.push(Item::new(&w.name, n, &w.quality));
        }
    }
    if given.is_empty() {
        return Ok(None);
    }
    let text = items_json(&given).to_string();
    c.execute(
        "INSERT INTO subspace_storage_grants (instance_id, host_id, items, state, at) VALUES (?1, ?2, ?3, 'pending', ?4)",
        params![instance_id, host_id, text, store::now_ms()],
    )?;
    let id = c.last_insert_rowid();
    let reference = format!("grant:{id}");
    let mut counts = Vec::new();
    for g in &given {
        let n = apply(
            c,
            "grant",
            Some(instance_id),
            &reference,
            &g.name,
            &g.quality,
            -g.count,
            None,
        )?;
        counts.push(Item::new(&g.name, n, &g.quality));
    }
    Ok(Some(Grant {
        id,
        items: given,
        counts,
    }))
}

/// A pending grant of `host_id`: `(instance_id, items)`.
fn pending(c: &Connection, id: i64, host_id: i64) -> Result<Option<(i64, Vec<Item>)>, StoreError> {
    let row: Option<(i64, String)> = c
        .query_row(
            "SELECT instance_id, items FROM subspace_storage_grants WHERE id = ?1 AND host_id = ?2 AND state = 'pending'",
            params![id, host_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    Ok(match row {
        Some((inst, text)) => {
            let v: Value = serde_json::from_str(&text)
                .map_err(|e| StoreError::Db(format!("grant {id} has unreadable items: {e}")))?;
            Some((inst, parse_items(&v).0))
        }
        None => None,
    })
}

/// The game has the grant's items. Repeats and unknown grants change nothing.
pub fn deliver(c: &Connection, id: i64, host_id: i64) -> Result<bool, StoreError> {
    Ok(c.execute(
        "UPDATE subspace_storage_grants SET state = 'delivered', resolved_at = ?3 WHERE id = ?1 AND host_id = ?2 AND state = 'pending'",
        params![id, host_id, store::now_ms()],
    )? == 1)
}

/// The game did not get the grant: its items go back to the pool. Returns the new counts (empty
/// when the grant was not pending: a repeat, or already delivered).
pub fn refund(c: &Connection, id: i64, host_id: i64) -> Result<Vec<Item>, StoreError> {
    let Some((instance_id, items)) = pending(c, id, host_id)? else {
        return Ok(Vec::new());
    };
    c.execute(
        "UPDATE subspace_storage_grants SET state = 'refunded', resolved_at = ?2 WHERE id = ?1",
        params![id, store::now_ms()],
    )?;
    let reference = format!("grant:{id}");
    let mut out = Vec::new();
    for i in &items {
        let n = apply(
            c,
            "refund",
            Some(instance_id),
            &reference,
            &i.name,
            &i.quality,
            i.count,
            None,
        )?;
        out.push(Item::new(&i.name, n, &i.quality));
    }
    Ok(out)
}

/// A host came back and listed the grants it still holds (delivered but not yet acknowledged,
/// or with an Import whose outcome it settles later). Every other pending grant of the host
/// never reached its game: refunded. Returns the new counts.
pub fn reconcile(c: &Connection, host_id: i64, held: &[i64]) -> Result<Vec<Item>, StoreError> {
    refund_all(
        c,
        "SELECT id, host_id FROM subspace_storage_grants WHERE host_id = ?1 AND state = 'pending'",
        host_id,
        |id| !held.contains(&id),
    )
}

/// Refunds the pending grants `sql` selects (`id, host_id`, with `?1` bound to `arg`) that
/// `keep_out` accepts; the one settle path of [`reconcile`], [`expire`] and [`resolve_host`].
fn refund_all(
    c: &Connection,
    sql: &str,
    arg: i64,
    keep_out: impl Fn(i64) -> bool,
) -> Result<Vec<Item>, StoreError> {
    let ids: Vec<(i64, i64)> = {
        let mut stmt = c.prepare_cached(sql)?;
        stmt.query_map([arg], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?
    };
    let mut out = Vec::new();
    for (id, host) in ids.into_iter().filter(|(id, _)| keep_out(*id)) {
        out.extend(refund(c, id, host)?);
    }
    Ok(out)
}

/// What [`resolve_host`] settled.
#[derive(Debug, Default, PartialEq)]
pub struct Resolved {
    /// Pending exports credited to the pool (or cancelled).
    pub exports: usize,
    /// Pending grants refunded.
    pub grants: i64,
    /// The pool's new counts.
    pub counts: Vec<Item>,
}

/// An admin's way out for a host that is gone for good (its token revoked, its games and
/// saves lost): what it left pending is settled so nothing stays pending forever, with one
/// audit row. Its pending grants go back to the pool (no game of it will ever hold them).
/// Its pending exports are credited (`credit`: the items left its games, and no save of them
/// will run again) or cancelled (`!credit`: the admin restores a save of them elsewhere, which
/// has the items in its chests again).
pub fn resolve_host(
    c: &Connection,
    actor: &str,
    host_id: i64,
    host_name: &str,
    credit: bool,
) -> Result<Resolved, StoreError> {
    let n_grants: i64 = c.query_row(
        "SELECT COUNT(*) FROM subspace_storage_grants WHERE host_id = ?1 AND state = 'pending'",
        [host_id],
        |r| r.get(0),
    )?;
    let grants = refund_all(
        c,
        "SELECT id, host_id FROM subspace_storage_grants WHERE host_id = ?1 AND state = 'pending'",
        host_id,
        |_| true,
    )?;
    let keys: Vec<(String, i64)> = {
        let mut stmt = c.prepare_cached(
            "SELECT key, instance_id FROM subspace_storage_batches WHERE host_id = ?1 AND state = 'pending' ORDER BY key",
        )?;
        stmt.query_map([host_id], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?
    };
    let state = if credit {
        ExportState::Available
    } else {
        ExportState::Cancelled
    };
    let mut counts = grants;
    for (key, instance_id) in &keys {
        counts.extend(export(c, key, *instance_id, host_id, &[], state, None)?.counts);
    }
    // Last count per item wins (they were applied in order).
    let mut last: HashMap<(String, String), i64> = HashMap::new();
    for i in counts {
        last.insert((i.name, i.quality), i.count);
    }
    let mut counts: Vec<Item> = last
        .into_iter()
        .map(|((name, quality), count)| Item {
            name,
            quality,
            count,
        })
        .collect();
    counts.sort();
    store::audit::record(
        c,
        actor,
        "subspace_storage.resolve",
        host_name,
        &json!({
            "host_id": host_id,
            "exports": keys.len(),
            "exports_to": state.as_str(),
            "grants_refunded": n_grants,
        }),
    )?;
    Ok(Resolved {
        exports: keys.len(),
        grants: n_grants,
        counts,
    })
}

/// The host recorded the grant and is about to `Import` it. `false`: the grant is no longer
/// pending (refunded, expired or unknown) and must not be imported.
pub fn claim(c: &Connection, id: i64, host_id: i64) -> Result<bool, StoreError> {
    Ok(c.execute(
        "UPDATE subspace_storage_grants SET claimed_at = COALESCE(claimed_at, ?3) WHERE id = ?1 AND host_id = ?2 AND state = 'pending'",
        params![id, host_id, store::now_ms()],
    )? == 1)
}

/// Grants no host claimed within `bound_ms` go back to the pool (their host never got them,
/// or died before recording them; a claim after this is refused). Returns the new counts.
pub fn expire(c: &Connection, bound_ms: i64) -> Result<Vec<Item>, StoreError> {
    refund_all(
        c,
        "SELECT id, host_id FROM subspace_storage_grants WHERE state = 'pending' AND claimed_at IS NULL AND at < ?1",
        store::now_ms() - bound_ms,
        |_| true,
    )
}

/// Drops ledger rows, settled exports and settled grants older than `retention_ms`. Counts and
/// totals live in their own tables, so they stay exact; exports spooled before the new horizon
/// are refused from now on (they cannot be told from replays). Returns the rows dropped.
pub fn prune(c: &Connection, retention_ms: i64) -> Result<usize, StoreError> {
    let cutoff = store::now_ms() - retention_ms;
    let mut n = c.execute(
        "DELETE FROM subspace_storage_ledger WHERE at < ?1",
        [cutoff],
    )?;
    n += c.execute(
        "DELETE FROM subspace_storage_batches WHERE at < ?1 AND state != 'pending'",
        [cutoff],
    )?;
    n += c.execute(
        "DELETE FROM subspace_storage_grants WHERE state != 'pending' AND COALESCE(resolved_at, at) < ?1",
        [cutoff],
    )?;
    c.execute(
        "INSERT INTO subspace_storage_horizon (id, at) VALUES (1, ?1)
         ON CONFLICT (id) DO UPDATE SET at = MAX(at, ?1)",
        [cutoff],
    )?;
    Ok(n)
}

/// An admin's correction: sets a count, with a ledger row and an audit row.
pub fn set(
    c: &Connection,
    actor: &str,
    name: &str,
    quality: &str,
    count: i64,
) -> Result<Item, StoreError> {
    if !name_ok(name) || !name_ok(quality) {
        return Err(StoreError::Invalid(format!(
            "item and quality names must be 1–{MAX_NAME} printable characters"
        )));
    }
    if !(0..=MAX_COUNT).contains(&count) {
        return Err(StoreError::Invalid(format!(
            "count must be between 0 and {MAX_COUNT}"
        )));
    }
    let old = count_of(c, name, quality)?;
    apply(
        c,
        "set",
        None,
        "admin",
        name,
        quality,
        count - old,
        Some(actor),
    )?;
    store::audit::record(
        c,
        actor,
        "subspace_storage.set",
        name,
        &json!({ "quality": quality, "from": old, "to": count }),
    )?;
    Ok(Item::new(name, count, quality))
}

/// Every count in the pool (zero counts included: the page shows an item that ran out).
pub fn list(c: &Connection) -> Result<Vec<Item>, StoreError> {
    let mut stmt = c.prepare_cached(
        "SELECT name, quality, count FROM subspace_storage_items ORDER BY name, quality",
    )?;
    let rows = stmt
        .query_map([], |r| {
            Ok(Item {
                name: r.get(0)?,
                quality: r.get(1)?,
                count: r.get(2)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// Items granted and not yet confirmed or refunded, summed: `(grants, items)`.
pub fn in_flight(c: &Connection) -> Result<(i64, Vec<Item>), StoreError> {
    sum_items(
        c,
        "SELECT items FROM subspace_storage_grants WHERE state = 'pending' ORDER BY id",
    )
}

/// Exported and imported totals: `(kind, instance_id, name, quality, total)`.
pub type Total = (String, i64, String, String, i64);

/// Clusterio's `export_total` / `import_total` per instance, item and quality.
pub fn totals(c: &Connection) -> Result<Vec<Total>, StoreError> {
    let mut stmt = c.prepare_cached(
        "SELECT kind, instance_id, name, quality, total FROM subspace_storage_totals
         ORDER BY kind, instance_id, name, quality",
    )?;
    let rows = stmt
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Connection {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(
            "CREATE TABLE audit (id INTEGER PRIMARY KEY, at INTEGER NOT NULL, actor TEXT NOT NULL,
             action TEXT NOT NULL, target TEXT NOT NULL, detail TEXT NOT NULL);",
        )
        .unwrap();
        c.execute_batch(MIGRATION).unwrap();
        c.execute_batch(MIGRATION_SAVE_POINTS).unwrap();
        c
    }

    fn iron(n: i64) -> Vec<Item> {
        vec![Item::new("iron-plate", n, "normal")]
    }

    fn count(c: &Connection) -> i64 {
        count_of(c, "iron-plate", "normal").unwrap()
    }

    #[test]
    fn an_export_counts_once_per_key() {
        let c = db();
        assert!(!avail(&c, "k1", 100).duplicate);
        assert!(avail(&c, "k1", 100).duplicate);
        assert_eq!(count(&c), 100);
    }

    fn avail(c: &Connection, key: &str, n: i64) -> Exported {
        export(c, key, 1, 1, &iron(n), ExportState::Available, None).unwrap()
    }

    #[test]
    fn a_pending_export_counts_only_once_its_game_saved_and_never_after_a_cancel() {
        let c = db();
        let p = export(&c, "p", 1, 1, &iron(40), ExportState::Pending, None).unwrap();
        assert!(p.counts.is_empty() && p.pending_changed);
        assert_eq!(count(&c), 0);
        assert_eq!(pending_exports(&c).unwrap(), iron(40));
        // Sent again while pending: nothing changes. Then the save: credited once.
        assert!(
            export(&c, "p", 1, 1, &iron(40), ExportState::Pending, None)
                .unwrap()
                .duplicate
        );
        let a = export(&c, "p", 1, 1, &iron(999), ExportState::Available, None).unwrap();
        assert_eq!(a.counts, iron(40), "the items first recorded count");
        assert!(
            export(&c, "p", 1, 1, &iron(40), ExportState::Available, None)
                .unwrap()
                .duplicate
        );
        assert!(
            export(&c, "p", 1, 1, &iron(40), ExportState::Cancelled, None)
                .unwrap()
                .duplicate
        );
        assert_eq!(count(&c), 40);
        // A cancelled one never counts, whatever comes later.
        export(&c, "q", 1, 1, &iron(5), ExportState::Pending, None).unwrap();
        export(&c, "q", 1, 1, &iron(5), ExportState::Cancelled, None).unwrap();
        assert!(
            export(&c, "q", 1, 1, &iron(5), ExportState::Available, None)
                .unwrap()
                .duplicate
        );
        assert_eq!(count(&c), 40);
        assert!(pending_exports(&c).unwrap().is_empty());
    }

    #[test]
    fn unclaimed_grants_expire_and_cannot_be_claimed_after() {
        let c = db();
        let mut f = DoleFactors::new();
        avail(&c, "k", 100);
        let a = grant(&c, 2, 7, &iron(10), Division::Simple, &mut f)
            .unwrap()
            .unwrap();
        let b = grant(&c, 2, 7, &iron(20), Division::Simple, &mut f)
            .unwrap()
            .unwrap();
        assert!(claim(&c, a.id, 7).unwrap());
        assert!(!claim(&c, a.id, 8).unwrap(), "another host's claim");
        // A bound in the past: every unclaimed grant is older.
        assert_eq!(
            expire(&c, -1000).unwrap(),
            vec![Item::new("iron-plate", 90, "normal")]
        );
        assert!(!claim(&c, b.id, 7).unwrap(), "too late");
        assert_eq!(in_flight(&c).unwrap(), (1, iron(10)));
        assert_eq!(count(&c), 90);
    }

    #[test]
    fn pruning_keeps_counts_and_refuses_exports_older_than_the_horizon() {
        let c = db();
        let mut f = DoleFactors::new();
        avail(&c, "k", 100);
        let g = grant(&c, 2, 7, &iron(10), Division::Simple, &mut f)
            .unwrap()
            .unwrap();
        deliver(&c, g.id, 7).unwrap();
        export(&c, "p", 1, 1, &iron(3), ExportState::Pending, None).unwrap();
        let rows = |t: &str| -> i64 {
            c.query_row(&format!("SELECT COUNT(*) FROM {t}"), [], |r| r.get(0))
                .unwrap()
        };
        assert!(prune(&c, -1000).unwrap() >= 3);
        assert_eq!(rows("subspace_storage_ledger"), 0);
        assert_eq!(rows("subspace_storage_grants"), 0);
        assert_eq!(rows("subspace_storage_batches"), 1, "the pending one stays");
        assert_eq!(count(&c), 90);
        assert_eq!(totals(&c).unwrap().len(), 2);
        let old = store::now_ms() - 10_000_000;
        assert!(
            export(
                &c,
                "late",
                1,
                1,
                &iron(1),
                ExportState::Available,
                Some(old)
            )
            .is_err()
        );
        let now = store::now_ms() + 5_000;
        assert!(
            !export(&c, "new", 1, 1, &iron(1), ExportState::Available, Some(now))
                .unwrap()
                .duplicate
        );
        assert_eq!(count(&c), 91);
        export(&c, "p", 1, 1, &iron(3), ExportState::Available, None).unwrap();
        assert_eq!(count(&c), 94);
    }

    #[test]
    fn grants_never_drive_counts_negative_and_refunds_return_once() {
        let c = db();
        let mut f = DoleFactors::new();
        avail(&c, "k", 30);
        let g = grant(&c, 2, 7, &iron(50), Division::Simple, &mut f)
            .unwrap()
            .unwrap();
        assert_eq!(g.items, iron(30));
        assert_eq!(count(&c), 0);
        assert!(
            grant(&c, 2, 7, &iron(50), Division::Simple, &mut f)
                .unwrap()
                .is_none()
        );
        // Another host cannot settle it; its own host refunds it once.
        assert!(refund(&c, g.id, 8).unwrap().is_empty());
        assert_eq!(refund(&c, g.id, 7).unwrap(), iron(30));
        assert!(refund(&c, g.id, 7).unwrap().is_empty());
        assert!(!deliver(&c, g.id, 7).unwrap());
        assert_eq!(count(&c), 30);
        assert!(apply(&c, "grant", None, "x", "iron-plate", "normal", -31, None).is_err());
    }

    #[test]
    fn reconcile_refunds_what_the_host_does_not_hold() {
        let c = db();
        let mut f = DoleFactors::new();
        avail(&c, "k", 100);
        let a = grant(&c, 2, 7, &iron(10), Division::Simple, &mut f)
            .unwrap()
            .unwrap();
        let b = grant(&c, 2, 7, &iron(20), Division::Simple, &mut f)
            .unwrap()
            .unwrap();
        let other = grant(&c, 3, 8, &iron(5), Division::Simple, &mut f)
            .unwrap()
            .unwrap();
        reconcile(&c, 7, &[a.id]).unwrap();
        assert_eq!(count(&c), 100 - 10 - 5);
        assert!(deliver(&c, a.id, 7).unwrap());
        assert!(refund(&c, b.id, 7).unwrap().is_empty());
        assert_eq!(
            in_flight(&c).unwrap(),
            (1, vec![Item::new("iron-plate", 5, "normal")])
        );
        let _ = other;
    }

    #[test]
    fn resolving_a_gone_host_settles_everything_it_left_pending_once_with_an_audit_row() {
        let c = db();
        let mut f = DoleFactors::new();
        avail(&c, "k", 100);
        // Host 7: a grant of 30 and an export of 12 pending; host 8 keeps its own.
        grant(&c, 2, 7, &iron(30), Division::Simple, &mut f)
            .unwrap()
            .unwrap();
        export(&c, "p7", 2, 7, &iron(12), ExportState::Pending, None).unwrap();
        grant(&c, 3, 8, &iron(5), Division::Simple, &mut f)
            .unwrap()
            .unwrap();
        export(&c, "p8", 3, 8, &iron(4), ExportState::Pending, None).unwrap();
        assert_eq!(count(&c), 65);
        let r = resolve_host(&c, "admin", 7, "h7", true).unwrap();
        assert_eq!((r.exports, r.grants), (1, 1));
        assert_eq!(r.counts, iron(65 + 30 + 12));
        assert_eq!(count(&c), 107);
        assert_eq!(in_flight(&c).unwrap(), (1, iron(5)), "host 8's grant stays");
        assert_eq!(
            pending_exports(&c).unwrap(),
            iron(4),
            "host 8's export stays"
        );
        // Again: nothing left to settle; a late replay of the export changes nothing.
        assert_eq!(
            resolve_host(&c, "admin", 7, "h7", true).unwrap().counts,
            vec![]
        );
        assert!(
            export(&c, "p7", 2, 7, &iron(12), ExportState::Available, None)
                .unwrap()
                .duplicate
        );
        // Cancelling instead: host 8's export never counts, its grant returns.
        let r = resolve_host(&c, "admin", 8, "h8", false).unwrap();
        assert_eq!((r.exports, r.grants), (1, 1));
        assert_eq!(count(&c), 112);
        assert!(pending_exports(&c).unwrap().is_empty());
        let audits: i64 = c
            .query_row(
                "SELECT COUNT(*) FROM audit WHERE action = 'subspace_storage.resolve'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(audits, 3);
    }

    #[test]
    fn dole_shrinks_shares_while_short() {
        let mut f = DoleFactors::new();
        let i = Item::new("iron-plate", 100, "normal");
        assert_eq!(divide(Division::Dole, &mut f, &i, 1000, 100), 100);
        assert_eq!(divide(Division::Dole, &mut f, &i, 50, 100), 0);
        assert_eq!(f[&("iron-plate".into(), "normal".into())], 2);
        assert_eq!(divide(Division::Dole, &mut f, &i, 90, 100), 83);
        assert_eq!(divide(Division::Simple, &mut f, &i, 90, 100), 90);
    }

    #[test]
    fn bad_entries_are_skipped_and_set_is_audited() {
        let (items, bad) = parse_items(&json!([
            ["iron-plate", 5, "normal"],
            ["iron-plate", 5],
            ["x", -1, "normal"],
            ["y", 1.5],
            [3, 1],
            "nope"
        ]));
        assert_eq!(items, iron(10));
        assert_eq!(bad, 4);
        assert_eq!(parse_items(&json!({})).0, vec![]);
        let c = db();
        set(&c, "admin", "iron-plate", "normal", 7).unwrap();
        assert_eq!(count(&c), 7);
        assert!(set(&c, "admin", "iron-plate", "normal", -1).is_err());
        assert!(set(&c, "admin", "", "normal", 1).is_err());
        let audits: i64 = c
            .query_row("SELECT COUNT(*) FROM audit", [], |r| r.get(0))
            .unwrap();
        assert_eq!(audits, 1);
    }
}
