//! Hosts (slaves): registered by name, each with its own token.

use super::{Result, StoreError, audit, now_ms, tokens};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct HostRecord {
    pub id: i64,
    pub name: String,
    pub revoked: bool,
    pub version: String,
    pub address: String,
    pub created_at: i64,
    pub last_seen_at: Option<i64>,
}

const COLUMNS: &str = "id, name, revoked, version, address, created_at, last_seen_at";

fn from_row(r: &rusqlite::Row) -> rusqlite::Result<HostRecord> {
    Ok(HostRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        revoked: r.get(2)?,
        version: r.get(3)?,
        address: r.get(4)?,
        created_at: r.get(5)?,
        last_seen_at: r.get(6)?,
    })
}

pub fn validate_name(name: &str) -> Result<()> {
    super::check_addressable_name("host", name, 64)
}

pub fn list(conn: &Connection) -> Result<Vec<HostRecord>> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {COLUMNS} FROM hosts ORDER BY id"))?;
    let rows = stmt.query_map([], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// By id (digits) or by name.
pub fn find(conn: &Connection, id_or_name: &str) -> Result<Option<HostRecord>> {
    let by_id = id_or_name.parse::<i64>().ok();
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM hosts WHERE id = ?1 OR name = ?2 ORDER BY id = ?1 DESC LIMIT 1"),
            params![by_id, id_or_name],
            from_row,
        )
        .optional()?)
}

pub fn get(conn: &Connection, id_or_name: &str) -> Result<HostRecord> {
    find(conn, id_or_name)?.ok_or_else(|| StoreError::NotFound(format!("no host '{id_or_name}'")))
}

/// Registers a new host with the join token; returns it with its own new token (shown once).
pub fn register(
    conn: &Connection,
    name: &str,
    version: &str,
    address: &str,
) -> Result<(HostRecord, String)> {
    validate_name(name)?;
    if let Some(existing) = find(conn, name)?
        && existing.name == name
    {
        return Err(StoreError::Conflict(format!(
            "a host named '{name}' is already registered; give this host another SLAVE_NAME, or revoke the old one"
        )));
    }
    let secret = tokens::generate("host");
    let now = now_ms();
    conn.execute(
        "INSERT INTO hosts (name, token_hash, version, address, created_at, last_seen_at) VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
        params![name, tokens::hash(&secret), version, address, now],
    )?;
    let id = conn.last_insert_rowid();
    audit::record(
        conn,
        &format!("host:{name}"),
        "host.register",
        name,
        &serde_json::json!({ "id": id }),
    )?;
    Ok((get(conn, &id.to_string())?, secret))
}

/// Records a (re)connection: version, address, time.
pub fn touch(conn: &Connection, id: i64, version: &str, address: &str) -> Result<()> {
    conn.execute(
        "UPDATE hosts SET version = ?2, address = ?3, last_seen_at = ?4 WHERE id = ?1",
        params![id, version, address, now_ms()],
    )?;
    Ok(())
}

pub fn revoke(conn: &Connection, actor: &str, id_or_name: &str) -> Result<HostRecord> {
    let host = get(conn, id_or_name)?;
    conn.execute(
        "UPDATE hosts SET revoked = 1, token_hash = NULL WHERE id = ?1",
        [host.id],
    )?;
    audit::record(
        conn,
        actor,
        "host.revoke",
        &host.name,
        &serde_json::json!({ "id": host.id }),
    )?;
    get(conn, &host.id.to_string())
}
