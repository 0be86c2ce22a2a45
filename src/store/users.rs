//! Users: people with a Factorio name, roles for the cluster, and the admin/white/ban flags
//! that every instance enforces. Keyed by the lower-cased name, like Factorio.

use super::{Result, StoreError, audit, now_ms};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct User {
    pub id: i64,
    pub name: String,
    pub roles: Vec<i64>,
    pub is_admin: bool,
    pub is_whitelisted: bool,
    pub is_banned: bool,
    pub ban_reason: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// The flags an admin can change on a user; `None` leaves a flag as it is.
#[derive(Debug, Default, Clone)]
pub struct UserChange {
    pub roles: Option<Vec<i64>>,
    pub is_admin: Option<bool>,
    pub is_whitelisted: Option<bool>,
    /// `Some((banned, reason))`.
    pub ban: Option<(bool, String)>,
}

pub fn key(name: &str) -> String {
    name.to_lowercase()
}

/// Factorio player names: 1–60 characters of letters, digits, `-`, `_` and `.`.
pub fn validate_name(name: &str) -> Result<()> {
    super::check_name("user", name, 60)
}

const COLUMNS: &str =
    "id, name, is_admin, is_whitelisted, is_banned, ban_reason, created_at, updated_at";

fn from_row(r: &rusqlite::Row) -> rusqlite::Result<User> {
    Ok(User {
        id: r.get(0)?,
        name: r.get(1)?,
        roles: Vec::new(),
        is_admin: r.get(2)?,
        is_whitelisted: r.get(3)?,
        is_banned: r.get(4)?,
        ban_reason: r.get(5)?,
        created_at: r.get(6)?,
        updated_at: r.get(7)?,
    })
}

fn roles_of(conn: &Connection, user_id: i64) -> Result<Vec<i64>> {
    let mut stmt =
        conn.prepare_cached("SELECT role_id FROM user_roles WHERE user_id = ?1 ORDER BY role_id")?;
    let rows = stmt.query_map([user_id], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn find(conn: &Connection, name: &str) -> Result<Option<User>> {
    let user = conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM users WHERE name_key = ?1"),
            [key(name)],
            from_row,
        )
        .optional()?;
    match user {
        Some(mut u) => {
            u.roles = roles_of(conn, u.id)?;
            Ok(Some(u))
        }
        None => Ok(None),
    }
}

pub fn get(conn: &Connection, name: &str) -> Result<User> {
    find(conn, name)?.ok_or_else(|| StoreError::NotFound(format!("no user named '{name}'")))
}

pub fn list(conn: &Connection) -> Result<Vec<User>> {
    let mut stmt =
        conn.prepare_cached(&format!("SELECT {COLUMNS} FROM users ORDER BY name_key"))?;
    let mut users: Vec<User> = stmt.query_map([], from_row)?.collect::<Result<_, _>>()?;
    let mut stmt =
        conn.prepare_cached("SELECT user_id, role_id FROM user_roles ORDER BY role_id")?;
    let pairs = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))?;
    let mut by_user = std::collections::HashMap::<i64, Vec<i64>>::new();
    for pair in pairs {
        let (u, r) = pair?;
        by_user.entry(u).or_default().push(r);
    }
    for u in &mut users {
        u.roles = by_user.remove(&u.id).unwrap_or_default();
    }
    Ok(users)
}

fn set_roles(conn: &Connection, user_id: i64, roles: &[i64]) -> Result<()> {
    conn.execute("DELETE FROM user_roles WHERE user_id = ?1", [user_id])?;
    for role in roles {
        let exists: bool = conn.query_row(
            "SELECT EXISTS(SELECT 1 FROM roles WHERE id = ?1)",
            [role],
            |r| r.get(0),
        )?;
        if !exists {
            return Err(StoreError::Invalid(format!("no role with id {role}")));
        }
        conn.execute(
            "INSERT INTO user_roles (user_id, role_id) VALUES (?1, ?2)",
            params![user_id, role],
        )?;
    }
    Ok(())
}

pub fn create(conn: &Connection, actor: &str, name: &str, change: &UserChange) -> Result<User> {
    validate_name(name)?;
    if find(conn, name)?.is_some() {
        return Err(StoreError::Conflict(format!(
            "a user named '{name}' exists"
        )));
    }
    let now = now_ms();
    conn.execute(
        "INSERT INTO users (name, name_key, created_at, updated_at) VALUES (?1, ?2, ?3, ?3)",
        params![name, key(name), now],
    )?;
    let id = conn.last_insert_rowid();
    let roles = change
        .roles
        .clone()
        .unwrap_or_else(|| vec![crate::permissions::ROLE_PLAYER_ID]);
    set_roles(conn, id, &roles)?;
    apply_flags(conn, id, change)?;
    audit::record(
        conn,
        actor,
        "user.create",
        name,
        &serde_json::json!({ "roles": roles }),
    )?;
    get(conn, name)
}

fn apply_flags(conn: &Connection, id: i64, change: &UserChange) -> Result<()> {
    if let Some(v) = change.is_admin {
        conn.execute(
            "UPDATE users SET is_admin = ?2 WHERE id = ?1",
            params![id, v],
        )?;
    }
    if let Some(v) = change.is_whitelisted {
        conn.execute(
            "UPDATE users SET is_whitelisted = ?2 WHERE id = ?1",
            params![id, v],
        )?;
    }
    if let Some((banned, reason)) = &change.ban {
        let reason = if *banned { reason.as_str() } else { "" };
        conn.execute(
            "UPDATE users SET is_banned = ?2, ban_reason = ?3 WHERE id = ?1",
            params![id, banned, reason],
        )?;
    }
    Ok(())
}

pub fn update(conn: &Connection, actor: &str, name: &str, change: &UserChange) -> Result<User> {
    let user = get(conn, name)?;
    if let Some(roles) = &change.roles {
        set_roles(conn, user.id, roles)?;
    }
    apply_flags(conn, user.id, change)?;
    conn.execute(
        "UPDATE users SET updated_at = ?2 WHERE id = ?1",
        params![user.id, now_ms()],
    )?;
    let detail = serde_json::json!({
        "roles": change.roles,
        "is_admin": change.is_admin,
        "is_whitelisted": change.is_whitelisted,
        "is_banned": change.ban.as_ref().map(|b| b.0),
        "ban_reason": change.ban.as_ref().map(|b| b.1.clone()),
    });
    audit::record(conn, actor, "user.update", &user.name, &detail)?;
    get(conn, name)
}

pub fn delete(conn: &Connection, actor: &str, name: &str) -> Result<User> {
    let user = get(conn, name)?;
    conn.execute("DELETE FROM users WHERE id = ?1", [user.id])?;
    audit::record(
        conn,
        actor,
        "user.delete",
        &user.name,
        &serde_json::json!({}),
    )?;
    Ok(user)
}

/// Permissions granted to a user through their roles.
pub fn permissions(conn: &Connection, user_id: i64) -> Result<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT roles.permissions FROM roles JOIN user_roles ON user_roles.role_id = roles.id
         WHERE user_roles.user_id = ?1",
    )?;
    let rows = stmt.query_map([user_id], |r| r.get::<_, String>(0))?;
    let mut all = Vec::new();
    for row in rows {
        let perms: Vec<String> = serde_json::from_str(&row?)?;
        all.extend(perms);
    }
    all.sort_unstable();
    all.dedup();
    Ok(all)
}
