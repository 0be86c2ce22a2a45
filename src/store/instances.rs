//! Instances: one Factorio server each, with its config and the host it is assigned to.

use super::{Result, StoreError, audit, now_ms};
use crate::config::Schema;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct InstanceRecord {
    pub id: i64,
    pub name: String,
    pub host_id: Option<i64>,
    pub config: serde_json::Value,
    /// Last status the assigned host reported.
    pub status: String,
    /// What the controller wants: "running" or "stopped".
    pub desired: String,
    pub game_port: Option<i64>,
    /// The config it was started with, while it is starting or running (not sent to anyone).
    #[serde(skip)]
    pub running_config: Option<serde_json::Value>,
    pub created_at: i64,
    pub updated_at: i64,
}

const COLUMNS: &str =
    "id, name, host_id, config, status, game_port, created_at, updated_at, desired, running_config";

fn from_row(r: &rusqlite::Row) -> rusqlite::Result<(InstanceRecord, String, Option<String>)> {
    Ok((
        InstanceRecord {
            id: r.get(0)?,
            name: r.get(1)?,
            host_id: r.get(2)?,
            config: serde_json::Value::Null,
            status: r.get(4)?,
            game_port: r.get(5)?,
            running_config: None,
            created_at: r.get(6)?,
            updated_at: r.get(7)?,
            desired: r.get(8)?,
        },
        r.get(3)?,
        r.get(9)?,
    ))
}

fn decode(
    (mut rec, config, running): (InstanceRecord, String, Option<String>),
) -> Result<InstanceRecord> {
    rec.config = serde_json::from_str(&config)?;
    rec.running_config = running.map(|r| serde_json::from_str(&r)).transpose()?;
    Ok(rec)
}

/// Instance names become directory names on hosts: keep them plain.
pub fn validate_name(name: &str) -> Result<()> {
    super::check_addressable_name("instance", name, 64)
}

pub fn list(conn: &Connection) -> Result<Vec<InstanceRecord>> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {COLUMNS} FROM instances ORDER BY id"))?;
    let rows = stmt.query_map([], from_row)?;
    rows.map(|r| decode(r?)).collect()
}

/// The instances assigned to one host (reads only those rows: the `host_id` index).
pub fn list_for_host(conn: &Connection, host_id: i64) -> Result<Vec<InstanceRecord>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM instances WHERE host_id = ?1 ORDER BY id"
    ))?;
    let rows = stmt.query_map([host_id], from_row)?;
    rows.map(|r| decode(r?)).collect()
}

/// By id (digits) or by name.
pub fn find(conn: &Connection, id_or_name: &str) -> Result<Option<InstanceRecord>> {
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "SELECT {COLUMNS} FROM instances WHERE id = ?1 OR name = ?2 ORDER BY id = ?1 DESC LIMIT 1"
        )
    });
    let by_id = id_or_name.parse::<i64>().ok();
    let row = conn
        .prepare_cached(&SQL)?
        .query_row(params![by_id, id_or_name], from_row)
        .optional()?;
    row.map(decode).transpose()
}

/// By id only.
fn by_id(conn: &Connection, id: i64) -> Result<Option<InstanceRecord>> {
    static SQL: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| format!("SELECT {COLUMNS} FROM instances WHERE id = ?1"));
    let row = conn
        .prepare_cached(&SQL)?
        .query_row([id], from_row)
        .optional()?;
    row.map(decode).transpose()
}

pub fn get(conn: &Connection, id_or_name: &str) -> Result<InstanceRecord> {
    find(conn, id_or_name)?
        .ok_or_else(|| StoreError::NotFound(format!("no instance '{id_or_name}'")))
}

/// Creates an instance; its initial config must pass `schema` like any change (`null`s and
/// emptied objects are dropped).
pub fn create(
    conn: &Connection,
    actor: &str,
    name: &str,
    config: &serde_json::Value,
    schema: &Schema,
) -> Result<InstanceRecord> {
    validate_name(name)?;
    let config = schema
        .apply_patch(&serde_json::json!({}), config)
        .map_err(StoreError::Refused)?;
    let now = now_ms();
    conn.prepare_cached(
        "INSERT INTO instances (name, config, created_at, updated_at) VALUES (?1, ?2, ?3, ?3)",
    )?
    .execute(params![name, config.to_string(), now])
    .map_err(|e| match StoreError::from(e) {
        StoreError::Conflict(_) => {
            StoreError::Conflict(format!("an instance named '{name}' exists"))
        }
        other => other,
    })?;
    let id = conn.last_insert_rowid();
    audit::record(
        conn,
        actor,
        "instance.create",
        name,
        &serde_json::json!({ "id": id }),
    )?;
    by_id(conn, id)?.ok_or_else(|| StoreError::NotFound(format!("no instance {id}")))
}

/// Applies `patch` to the config as a JSON merge patch, after `schema` checked every key and
/// value of it (refused: nothing changes). The audit row shows secrets as "changed".
pub fn update_config(
    conn: &Connection,
    actor: &str,
    id_or_name: &str,
    patch: &serde_json::Value,
    schema: &Schema,
) -> Result<InstanceRecord> {
    let rec = get(conn, id_or_name)?;
    let config = schema
        .apply_patch(&rec.config, patch)
        .map_err(StoreError::Refused)?;
    conn.execute(
        "UPDATE instances SET config = ?2, updated_at = ?3 WHERE id = ?1",
        params![rec.id, config.to_string(), now_ms()],
    )?;
    audit::record(
        conn,
        actor,
        "instance.update_config",
        &rec.name,
        &schema.audit_view(patch),
    )?;
    get(conn, &rec.id.to_string())
}

pub fn assign(
    conn: &Connection,
    actor: &str,
    id_or_name: &str,
    host_id: Option<i64>,
) -> Result<InstanceRecord> {
    let rec = get(conn, id_or_name)?;
    conn.execute(
        "UPDATE instances SET host_id = ?2, status = 'stopped', desired = 'stopped', game_port = NULL, updated_at = ?3 WHERE id = ?1",
        params![rec.id, host_id, now_ms()],
    )?;
    audit::record(
        conn,
        actor,
        "instance.assign",
        &rec.name,
        &serde_json::json!({ "host_id": host_id }),
    )?;
    get(conn, &rec.id.to_string())
}

/// What the controller wants the instance to be; hosts reconcile to it.
pub fn set_desired(
    conn: &Connection,
    actor: &str,
    id: i64,
    desired: &str,
    action: &str,
) -> Result<InstanceRecord> {
    let rec = get(conn, &id.to_string())?;
    conn.execute(
        "UPDATE instances SET desired = ?2, updated_at = ?3 WHERE id = ?1",
        params![id, desired, now_ms()],
    )?;
    audit::record(
        conn,
        actor,
        action,
        &rec.name,
        &serde_json::json!({ "desired": desired }),
    )?;
    get(conn, &id.to_string())
}

/// A status reported by the instance's host.
pub fn set_status(
    conn: &Connection,
    id: i64,
    status: &str,
    game_port: Option<i64>,
) -> Result<InstanceRecord> {
    // Entering an active status remembers the config it starts with; leaving it forgets it.
    conn.execute(
        "UPDATE instances SET status = ?2, game_port = COALESCE(?3, game_port), updated_at = ?4,
         running_config = CASE WHEN ?2 IN ('starting', 'running', 'stopping', 'creating_save')
                               THEN COALESCE(running_config, config) ELSE NULL END
         WHERE id = ?1",
        params![id, status, game_port, now_ms()],
    )?;
    get(conn, &id.to_string())
}

pub fn delete(conn: &Connection, actor: &str, id_or_name: &str) -> Result<InstanceRecord> {
    let rec = get(conn, id_or_name)?;
    conn.execute("DELETE FROM instances WHERE id = ?1", [rec.id])?;
    audit::record(
        conn,
        actor,
        "instance.delete",
        &rec.name,
        &serde_json::json!({ "id": rec.id }),
    )?;
    Ok(rec)
}
