//! Secrets: user tokens (web UI, ctl) stored as SHA-256 hashes, and the cluster's join token.
//!
//! The join token is stored as it is, not hashed: the operator must be able to read it back (console
//! `token`, `controller token --join`, the web UI's copy button) to paste it into each slave's
//! `MASTER_TOKEN`. It only lets a host register; rotating it does not disconnect registered hosts.

use super::{Result, StoreError, audit, now_ms};
use rand::RngCore;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use sha2::{Digest, Sha256};

const JOIN_TOKEN_KEY: &str = "join_token";

/// A new random token: 256 bits, hex, with a prefix that says what it is.
pub fn generate(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}_{}", hex::encode(bytes))
}

pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[derive(Debug, Clone, Serialize)]
pub struct TokenInfo {
    pub id: i64,
    pub user: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

/// Whose token a presented secret is.
#[derive(Debug, Clone)]
pub enum TokenOwner {
    User {
        user_id: i64,
        name: String,
    },
    Host {
        host_id: i64,
        name: String,
    },
    Join,
    /// An external-process plugin (`ctl plugin token NAME`); see `plugins::external`.
    Plugin {
        name: String,
    },
}

/// Most unrevoked login tokens one user may hold through `POST /tokens`; revoke old ones to
/// make new ones (the offline `controller token` command is not limited).
pub const MAX_ACTIVE_TOKENS_PER_USER: i64 = 50;

/// Refuses a new token for `user` when they hold `MAX_ACTIVE_TOKENS_PER_USER` already.
pub fn within_limit(conn: &Connection, user: &str) -> Result<()> {
    let n: i64 = conn.query_row(
        "SELECT COUNT(*) FROM tokens JOIN users ON users.id = tokens.user_id
         WHERE users.name_key = ?1 AND tokens.revoked_at IS NULL",
        [super::users::key(user)],
        |r| r.get(0),
    )?;
    if n >= MAX_ACTIVE_TOKENS_PER_USER {
        return Err(super::StoreError::Conflict(format!(
            "user '{user}' already has {n} active tokens (at most {MAX_ACTIVE_TOKENS_PER_USER}); revoke some first"
        )));
    }
    Ok(())
}

/// Issues a new token for `user`; returns (token id, the secret — shown once).
pub fn issue(conn: &Connection, actor: &str, user: &str) -> Result<(i64, String)> {
    let u = super::users::get(conn, user)?;
    let secret = generate("clu");
    conn.execute(
        "INSERT INTO tokens (user_id, hash, created_at) VALUES (?1, ?2, ?3)",
        params![u.id, hash(&secret), now_ms()],
    )?;
    let id = conn.last_insert_rowid();
    audit::record(
        conn,
        actor,
        "token.issue",
        &u.name,
        &serde_json::json!({ "token_id": id }),
    )?;
    Ok((id, secret))
}

pub fn list(conn: &Connection, user: Option<&str>) -> Result<Vec<TokenInfo>> {
    let mut stmt = conn.prepare_cached(
        "SELECT tokens.id, users.name, tokens.created_at, tokens.revoked_at FROM tokens
         JOIN users ON users.id = tokens.user_id
         WHERE ?1 IS NULL OR users.name_key = ?1 ORDER BY tokens.id",
    )?;
    let rows = stmt.query_map([user.map(super::users::key)], |r| {
        Ok(TokenInfo {
            id: r.get(0)?,
            user: r.get(1)?,
            created_at: r.get(2)?,
            revoked_at: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn get(conn: &Connection, id: i64) -> Result<TokenInfo> {
    list(conn, None)?
        .into_iter()
        .find(|t| t.id == id)
        .ok_or_else(|| StoreError::NotFound(format!("no token with id {id}")))
}

pub fn revoke(conn: &Connection, actor: &str, id: i64) -> Result<TokenInfo> {
    let t = get(conn, id)?;
    conn.execute(
        "UPDATE tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
        params![id, now_ms()],
    )?;
    audit::record(
        conn,
        actor,
        "token.revoke",
        &t.user,
        &serde_json::json!({ "token_id": id }),
    )?;
    get(conn, id)
}

/// Revokes every token of a user; returns how many.
pub fn revoke_all(conn: &Connection, actor: &str, user: &str) -> Result<usize> {
    let u = super::users::get(conn, user)?;
    let n = conn.execute(
        "UPDATE tokens SET revoked_at = ?2 WHERE user_id = ?1 AND revoked_at IS NULL",
        params![u.id, now_ms()],
    )?;
    audit::record(
        conn,
        actor,
        "token.revoke_all",
        &u.name,
        &serde_json::json!({ "count": n }),
    )?;
    Ok(n)
}

/// Who a presented secret belongs to, if anyone. Lookups go by hash, so the secret itself is
/// never compared byte by byte; the join token is compared in constant time.
pub fn resolve(conn: &Connection, secret: &str) -> Result<Option<TokenOwner>> {
    let h = hash(secret);
    let user = conn
        .query_row(
            "SELECT users.id, users.name FROM tokens JOIN users ON users.id = tokens.user_id
             WHERE tokens.hash = ?1 AND tokens.revoked_at IS NULL",
            [&h],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)),
        )
        .optional()?;
    if let Some((user_id, name)) = user {
        return Ok(Some(TokenOwner::User { user_id, name }));
    }
    let host = conn
        .query_row(
            "SELECT id, name FROM hosts WHERE token_hash = ?1 AND revoked = 0",
            [&h],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)),
        )
        .optional()?;
    if let Some((host_id, name)) = host {
        return Ok(Some(TokenOwner::Host { host_id, name }));
    }
    if let Some(name) = plugin_owner(conn, &h)? {
        return Ok(Some(TokenOwner::Plugin { name }));
    }
    if let Some(join) = join_token(conn)? {
        use subtle::ConstantTimeEq;
        if bool::from(join.as_bytes().ct_eq(secret.as_bytes())) {
            return Ok(Some(TokenOwner::Join));
        }
    }
    Ok(None)
}

/// The external plugin whose unrevoked token hashes to `h` (its table exists once the
/// controller ran its migrations; before that no plugin token exists).
fn plugin_owner(conn: &Connection, h: &str) -> Result<Option<String>> {
    let exists: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'external_plugins')",
        [],
        |r| r.get(0),
    )?;
    if !exists {
        return Ok(None);
    }
    Ok(conn
        .query_row(
            "SELECT name FROM external_plugins WHERE token_hash = ?1 AND revoked_at IS NULL",
            [h],
            |r| r.get(0),
        )
        .optional()?)
}

pub fn join_token(conn: &Connection) -> Result<Option<String>> {
    Ok(conn
        .query_row(
            "SELECT value FROM meta WHERE key = ?1",
            [JOIN_TOKEN_KEY],
            |r| r.get(0),
        )
        .optional()?)
}

/// The join token, created on first use.
pub fn ensure_join_token(conn: &Connection) -> Result<String> {
    match join_token(conn)? {
        Some(t) => Ok(t),
        None => rotate_join_token(conn, "system"),
    }
}

pub fn rotate_join_token(conn: &Connection, actor: &str) -> Result<String> {
    let token = generate("join");
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        params![JOIN_TOKEN_KEY, token],
    )?;
    audit::record(
        conn,
        actor,
        "join_token.rotate",
        "cluster",
        &serde_json::json!({}),
    )?;
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_hash_stably() {
        let a = generate("clu");
        let b = generate("clu");
        assert_ne!(a, b);
        assert_eq!(a.len(), 4 + 64);
        assert_eq!(hash(&a), hash(&a));
        assert_ne!(hash(&a), a);
    }
}
