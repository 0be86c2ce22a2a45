//! Who may hand out which permission. One rule set, checked inside the transaction that makes
//! the change: nobody grants a permission they do not hold (through a role they create or edit,
//! roles they give a user, or a token they mint for someone else); `core.admin` is granted only by
//! an administrator; and a change that would leave a cluster that has an administrator without
//! one is refused (`clustorio controller admin --user NAME` restores one offline).

use super::{Result, StoreError};
use crate::permissions::ADMIN;
use rusqlite::Connection;

/// The user making a change, with the permissions their roles give them now.
#[derive(Debug, Clone)]
pub struct Grantor {
    pub name: String,
    pub permissions: Vec<String>,
}

impl Grantor {
    pub fn is_admin(&self) -> bool {
        self.permissions.iter().any(|p| p == ADMIN)
    }

    pub fn holds(&self, permission: &str) -> bool {
        self.is_admin() || self.permissions.iter().any(|p| p == permission)
    }

    /// Refuses when `granted` holds a permission the grantor may not give.
    pub fn may_grant<'a>(&self, granted: impl IntoIterator<Item = &'a String>) -> Result<()> {
        for p in granted {
            if p == ADMIN && !self.is_admin() {
                return Err(StoreError::Forbidden(format!(
                    "only an administrator can grant {ADMIN}"
                )));
            }
            if !self.holds(p) {
                return Err(StoreError::Forbidden(format!(
                    "user '{}' cannot grant {p}: they do not hold it themselves",
                    self.name
                )));
            }
        }
        Ok(())
    }
}

/// Every permission the roles `ids` grant together.
pub fn role_permissions(conn: &Connection, ids: &[i64]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for id in ids {
        out.extend(super::roles::get(conn, *id)?.permissions);
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// How many users hold `core.admin` through a role.
pub fn admin_count(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row(
        "SELECT COUNT(DISTINCT user_roles.user_id) FROM user_roles
         JOIN roles ON roles.id = user_roles.role_id
         WHERE EXISTS (SELECT 1 FROM json_each(roles.permissions) WHERE value = ?1)",
        [ADMIN],
        |r| r.get(0),
    )?)
}

/// Runs `change`, then refuses it (the transaction rolls back) if it took the last administrator
/// away from a cluster that had one.
pub fn keeping_an_admin<R>(conn: &Connection, change: impl FnOnce() -> Result<R>) -> Result<R> {
    let before = admin_count(conn)?;
    let out = change()?;
    if before > 0 && admin_count(conn)? == 0 {
        return Err(StoreError::Conflict(
            "this would leave the cluster without an administrator; make another user an admin \
             first (offline: clustorio controller admin --user NAME)"
                .into(),
        ));
    }
    Ok(out)
}

/// Offline recovery: gives `user` the Cluster Admin role (creating the user if needed).
pub fn restore_admin(conn: &Connection, user: &str) -> Result<super::users::User> {
    let u = match super::users::find(conn, user)? {
        Some(u) => u,
        None => super::users::create(conn, "cli", user, &super::users::UserChange::default())?,
    };
    conn.execute(
        "INSERT OR IGNORE INTO user_roles (user_id, role_id) VALUES (?1, ?2)",
        rusqlite::params![u.id, crate::permissions::ROLE_ADMIN_ID],
    )?;
    super::audit::record(
        conn,
        "cli",
        "user.restore_admin",
        &u.name,
        &serde_json::json!({ "role": crate::permissions::ROLE_ADMIN_NAME }),
    )?;
    super::users::get(conn, &u.name)
}
