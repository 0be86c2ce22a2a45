//! Roles: named sets of permissions.

use super::{Result, StoreError, audit, now_ms};
use crate::permissions::{self, FIRST_CUSTOM_ROLE_ID, ROLE_ADMIN_ID, ROLE_PLAYER_ID};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Role {
    pub id: i64,
    pub name: String,
    pub description: String,
    pub permissions: Vec<String>,
}

fn from_row(r: &rusqlite::Row) -> rusqlite::Result<(i64, String, String, String)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
}

fn decode((id, name, description, perms): (i64, String, String, String)) -> Result<Role> {
    Ok(Role {
        id,
        name,
        description,
        permissions: serde_json::from_str(&perms)?,
    })
}

/// Every name is a built-in permission or one an external plugin declared.
pub fn validate_permissions(conn: &Connection, perms: &[String]) -> Result<()> {
    let known = |p: &String| {
        permissions::find(p).is_some()
            || crate::plugins::external::store::declares_permission(conn, p)
    };
    match perms.iter().find(|p| !known(p)) {
        Some(p) => Err(StoreError::Invalid(format!(
            "unknown permission '{p}' (GET /api/v1/permissions lists them)"
        ))),
        None => Ok(()),
    }
}

/// Creates the built-in roles if missing and re-grants the Player role its defaults.
pub fn ensure_defaults(conn: &Connection) -> Result<()> {
    let now = now_ms();
    conn.execute(
        "INSERT INTO roles (id, name, description, permissions, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(id) DO UPDATE SET permissions = excluded.permissions",
        params![
            ROLE_ADMIN_ID,
            permissions::ROLE_ADMIN_NAME,
            "Full access to the cluster.",
            serde_json::to_string(&[permissions::ADMIN])?,
            now
        ],
    )?;
    let existing: Option<String> = conn
        .query_row(
            "SELECT permissions FROM roles WHERE id = ?1",
            [ROLE_PLAYER_ID],
            |r| r.get(0),
        )
        .optional()?;
    let mut perms: Vec<String> = match existing {
        Some(p) => serde_json::from_str(&p)?,
        None => Vec::new(),
    };
    // Permissions that were removed (they named features that never existed) go too.
    perms.retain(|p| !permissions::REMOVED.contains(&p.as_str()));
    for p in permissions::defaults() {
        if !perms.iter().any(|have| have == p) {
            perms.push(p.to_string());
        }
    }
    conn.execute(
        "INSERT INTO roles (id, name, description, permissions, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(id) DO UPDATE SET permissions = excluded.permissions",
        params![
            ROLE_PLAYER_ID,
            permissions::ROLE_PLAYER_NAME,
            "Default role of new users.",
            serde_json::to_string(&perms)?,
            now
        ],
    )?;
    Ok(())
}

pub fn list(conn: &Connection) -> Result<Vec<Role>> {
    let mut stmt =
        conn.prepare_cached("SELECT id, name, description, permissions FROM roles ORDER BY id")?;
    let rows = stmt.query_map([], from_row)?;
    rows.map(|r| decode(r?)).collect()
}

pub fn get(conn: &Connection, id: i64) -> Result<Role> {
    let row = conn
        .query_row(
            "SELECT id, name, description, permissions FROM roles WHERE id = ?1",
            [id],
            from_row,
        )
        .optional()?
        .ok_or_else(|| StoreError::NotFound(format!("no role with id {id}")))?;
    decode(row)
}

pub fn create(
    conn: &Connection,
    actor: &str,
    name: &str,
    description: &str,
    perms: &[String],
) -> Result<Role> {
    validate_permissions(conn, perms)?;
    let next: i64 = conn.query_row(
        "SELECT MAX(COALESCE(MAX(id) + 1, 0), ?1) FROM roles",
        [FIRST_CUSTOM_ROLE_ID],
        |r| r.get(0),
    )?;
    conn.execute(
        "INSERT INTO roles (id, name, description, permissions, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![next, name, description, serde_json::to_string(perms)?, now_ms()],
    )
    .map_err(|e| match StoreError::from(e) {
        StoreError::Conflict(_) => StoreError::Conflict(format!("a role named '{name}' exists")),
        other => other,
    })?;
    audit::record(
        conn,
        actor,
        "role.create",
        name,
        &serde_json::json!({ "permissions": perms }),
    )?;
    get(conn, next)
}

pub fn update(
    conn: &Connection,
    actor: &str,
    id: i64,
    name: Option<&str>,
    description: Option<&str>,
    perms: Option<&[String]>,
) -> Result<Role> {
    let old = get(conn, id)?;
    if let Some(p) = perms {
        validate_permissions(conn, p)?;
        if id == ROLE_ADMIN_ID {
            return Err(StoreError::Invalid(
                "the Cluster Admin role always has core.admin".into(),
            ));
        }
    }
    let name = name.unwrap_or(&old.name);
    let description = description.unwrap_or(&old.description);
    let perms = perms.map(<[String]>::to_vec).unwrap_or(old.permissions);
    conn.execute(
        "UPDATE roles SET name = ?2, description = ?3, permissions = ?4, updated_at = ?5 WHERE id = ?1",
        params![id, name, description, serde_json::to_string(&perms)?, now_ms()],
    )?;
    audit::record(
        conn,
        actor,
        "role.update",
        name,
        &serde_json::json!({ "permissions": perms }),
    )?;
    get(conn, id)
}

pub fn delete(conn: &Connection, actor: &str, id: i64) -> Result<()> {
    if id == ROLE_ADMIN_ID || id == ROLE_PLAYER_ID {
        return Err(StoreError::Invalid(
            "built-in roles cannot be deleted".into(),
        ));
    }
    let role = get(conn, id)?;
    conn.execute("DELETE FROM roles WHERE id = ?1", [id])?;
    audit::record(
        conn,
        actor,
        "role.delete",
        &role.name,
        &serde_json::json!({ "id": id }),
    )?;
    Ok(())
}
