//! The mod store's index: the zips live in `<data>/mods/`, their checksums here.

use super::{Result, StoreError, audit, now_ms};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct ModRecord {
    pub name: String,
    pub size: i64,
    pub sha256: String,
    pub uploaded_at: i64,
}

fn from_row(r: &rusqlite::Row) -> rusqlite::Result<ModRecord> {
    Ok(ModRecord {
        name: r.get(0)?,
        size: r.get(1)?,
        sha256: r.get(2)?,
        uploaded_at: r.get(3)?,
    })
}

pub fn list(conn: &Connection) -> Result<Vec<ModRecord>> {
    let mut stmt =
        conn.prepare_cached("SELECT name, size, sha256, uploaded_at FROM mods ORDER BY name")?;
    let rows = stmt.query_map([], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn get(conn: &Connection, name: &str) -> Result<ModRecord> {
    conn.query_row(
        "SELECT name, size, sha256, uploaded_at FROM mods WHERE name = ?1",
        [name],
        from_row,
    )
    .optional()?
    .ok_or_else(|| StoreError::NotFound(format!("no mod named '{name}'")))
}

pub fn put(
    conn: &Connection,
    actor: &str,
    name: &str,
    size: i64,
    sha256: &str,
) -> Result<ModRecord> {
    conn.execute(
        "INSERT INTO mods (name, size, sha256, uploaded_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(name) DO UPDATE SET size = excluded.size, sha256 = excluded.sha256, uploaded_at = excluded.uploaded_at",
        params![name, size, sha256, now_ms()],
    )?;
    audit::record(
        conn,
        actor,
        "mod.upload",
        name,
        &serde_json::json!({ "sha256": sha256 }),
    )?;
    get(conn, name)
}

pub fn delete(conn: &Connection, actor: &str, name: &str) -> Result<ModRecord> {
    let m = get(conn, name)?;
    conn.execute("DELETE FROM mods WHERE name = ?1", [name])?;
    audit::record(conn, actor, "mod.delete", name, &serde_json::json!({}))?;
    Ok(m)
}
