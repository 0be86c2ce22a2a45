//! Who is asking: a bearer token resolved to a user and the permissions their roles grant.

use super::error::ApiError;
use crate::permissions;
use crate::store::{Store, TokenLookup};

#[derive(Debug, Clone)]
pub struct Actor {
    pub user_id: i64,
    pub name: String,
    pub permissions: Vec<String>,
}

impl Actor {
    pub fn has(&self, permission: &str) -> bool {
        self.permissions
            .iter()
            .any(|p| p == permission || p == permissions::ADMIN)
    }

    pub fn require(&self, permission: &str) -> Result<(), ApiError> {
        if self.has(permission) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "user '{}' lacks the permission {permission}",
                self.name
            )))
        }
    }

    /// How the actor appears in the audit log.
    pub fn audit_name(&self) -> String {
        format!("user:{}", self.name)
    }
}

/// `Authorization: Bearer <token>` → the token.
pub fn bearer(header: Option<&str>) -> Result<&str, ApiError> {
    let header = header.ok_or_else(|| {
        ApiError::unauthorized("missing token: send 'Authorization: Bearer <token>'")
    })?;
    header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::unauthorized("malformed Authorization header: expected 'Bearer <token>'")
        })
}

/// Resolves a user token. Host and join tokens are not for the API. A token seen before costs
/// no database read until a token, user or role changes (`store::known_users`).
pub async fn authenticate(store: &Store, token: &str) -> Result<Actor, ApiError> {
    match store.lookup_token(token).await? {
        TokenLookup::User(user) => Ok(Actor {
            user_id: user.user_id,
            name: user.name.clone(),
            permissions: user.permissions.clone(),
        }),
        TokenLookup::NotUser => Err(ApiError::forbidden(
            "this is a host or join token; the API needs a user token (clustorio controller token --user NAME)",
        )),
        TokenLookup::Unknown => Err(ApiError::unauthorized("invalid or revoked token")),
    }
}
