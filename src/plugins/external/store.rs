//! External plugins in SQLite: their token (hashed), the last declaration (so forms and routing
//! work while the process is down), limits and when each was last seen.

use crate::store::{self, StoreError, audit, tokens};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

/// The table, applied once through the plugin migration runner.
pub const MIGRATIONS: &[&str] = &["CREATE TABLE external_plugins (
        name TEXT PRIMARY KEY,
        token_hash TEXT,
        created_at INTEGER NOT NULL,
        revoked_at INTEGER,
        declaration TEXT,
        version TEXT,
        last_seen INTEGER,
        rate_limit INTEGER
    );"];

#[derive(Debug, Clone, Serialize)]
pub struct Record {
    pub name: String,
    pub created_at: i64,
    pub revoked: bool,
    pub version: Option<String>,
    pub last_seen: Option<i64>,
    pub rate_limit: Option<i64>,
    #[serde(skip)]
    pub declaration: Option<String>,
}

/// A new token for plugin `name` (replacing any earlier one); returns the secret, shown once.
pub fn issue(conn: &Connection, actor: &str, name: &str) -> store::Result<String> {
    if let Some(p) = super::declaration::name_problem(name) {
        return Err(StoreError::Invalid(p));
    }
    let secret = tokens::generate("plg");
    conn.execute(
        "INSERT INTO external_plugins (name, token_hash, created_at) VALUES (?1, ?2, ?3)
         ON CONFLICT(name) DO UPDATE SET token_hash = excluded.token_hash, revoked_at = NULL",
        params![name, tokens::hash(&secret), store::now_ms()],
    )?;
    audit::record(conn, actor, "plugin.token", name, &serde_json::json!({}))?;
    Ok(secret)
}

pub fn revoke(conn: &Connection, actor: &str, name: &str) -> store::Result<()> {
    let n = conn.execute(
        "UPDATE external_plugins SET revoked_at = ?2, token_hash = NULL WHERE name = ?1",
        params![name, store::now_ms()],
    )?;
    if n == 0 {
        return Err(StoreError::NotFound(format!(
            "no external plugin \"{name}\" (ctl plugin list shows them)"
        )));
    }
    audit::record(conn, actor, "plugin.revoke", name, &serde_json::json!({}))?;
    Ok(())
}

pub fn set_rate_limit(conn: &Connection, actor: &str, name: &str, per_s: i64) -> store::Result<()> {
    let n = conn.execute(
        "UPDATE external_plugins SET rate_limit = ?2 WHERE name = ?1",
        params![name, per_s],
    )?;
    if n == 0 {
        return Err(StoreError::NotFound(format!(
            "no external plugin \"{name}\""
        )));
    }
    audit::record(
        conn,
        actor,
        "plugin.rate_limit",
        name,
        &serde_json::json!({ "messages_per_s": per_s }),
    )?;
    Ok(())
}

/// Stores what the plugin declared, committed before it is told `ready`.
pub fn save_declaration(
    conn: &Connection,
    name: &str,
    version: &str,
    declaration: &str,
) -> store::Result<()> {
    conn.execute(
        "UPDATE external_plugins SET declaration = ?2, version = ?3, last_seen = ?4 WHERE name = ?1",
        params![name, declaration, version, store::now_ms()],
    )?;
    Ok(())
}

/// Whether an external plugin (not revoked) declared the permission `name`, so that roles may
/// hold it like a built-in one. Without the table (a store opened without the controller's
/// migrations) nothing is declared.
pub fn declares_permission(conn: &Connection, name: &str) -> bool {
    let Some((plugin, _)) = name.split_once('.') else {
        return false;
    };
    let declaration: Option<String> = conn
        .query_row(
            "SELECT declaration FROM external_plugins WHERE name = ?1 AND revoked_at IS NULL",
            [plugin],
            |r| r.get(0),
        )
        .optional()
        .ok()
        .flatten()
        .flatten();
    declaration
        .and_then(|d| serde_json::from_str::<super::declaration::Declaration>(&d).ok())
        .is_some_and(|d| d.permissions.iter().any(|p| p.name == name))
}

pub fn touch(conn: &Connection, name: &str) -> store::Result<()> {
    conn.execute(
        "UPDATE external_plugins SET last_seen = ?2 WHERE name = ?1",
        params![name, store::now_ms()],
    )?;
    Ok(())
}

pub fn list(conn: &Connection) -> store::Result<Vec<Record>> {
    let mut stmt = conn.prepare_cached(
        "SELECT name, created_at, revoked_at, version, last_seen, rate_limit, declaration
         FROM external_plugins ORDER BY name",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(Record {
            name: r.get(0)?,
            created_at: r.get(1)?,
            revoked: r.get::<_, Option<i64>>(2)?.is_some(),
            version: r.get(3)?,
            last_seen: r.get(4)?,
            rate_limit: r.get(5)?,
            declaration: r.get(6)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn get(conn: &Connection, name: &str) -> store::Result<Option<Record>> {
    Ok(list(conn)?.into_iter().find(|r| r.name == name))
}

/// The stored declarations, for the schemas at the controller's start.
pub fn declarations(conn: &Connection) -> store::Result<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT declaration FROM external_plugins WHERE declaration IS NOT NULL ORDER BY name",
    )?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Whether plugin `name` has a row (a token was ever issued).
pub fn exists(conn: &Connection, name: &str) -> store::Result<bool> {
    Ok(conn
        .query_row(
            "SELECT 1 FROM external_plugins WHERE name = ?1",
            [name],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}
