//! User tokens resolved before, kept in memory so a request does not read SQLite to learn who
//! is asking.
//!
//! Exactness rests on one generation counter. The writer connection's update hook marks any
//! change to `tokens`, `users`, `user_roles` or `roles`; after such a group commits (or rolls
//! back) and before any caller of it is answered, the writer bumps the generation. An entry is
//! used only while the generation it was read under is still the current one, and that
//! generation is taken *before* the read. So a read that could have seen the old rows is never
//! used after the commit that changed them: a revoked token or a removed permission is refused
//! on the very next request.
//!
//! Only tokens that resolved to a user are kept; anything else is looked up every time (a token
//! issued by the offline `controller token` command works at once). Keys are the SHA-256 of the
//! token, never the token.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The tables a user token's owner and permissions are read from.
pub const AUTH_TABLES: [&str; 4] = ["tokens", "users", "user_roles", "roles"];

/// At most this many tokens are remembered; beyond that the cache starts again.
const MAX_ENTRIES: usize = 4096;

/// The owner of a user token, as the API needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownUser {
    pub user_id: i64,
    pub name: String,
    pub permissions: Vec<String>,
}

pub type Key = [u8; 32];

pub fn key(token: &str) -> Key {
    Sha256::digest(token.as_bytes()).into()
}

#[derive(Default)]
pub struct KnownUsers {
    generation: AtomicU64,
    /// Set by the writer's update hook when a job touched one of [`AUTH_TABLES`].
    touched: AtomicBool,
    entries: Mutex<HashMap<Key, (u64, Arc<KnownUser>)>>,
}

impl KnownUsers {
    /// The generation to read under: take it before reading the rows.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// The owner of the token with this key, if it was read under the current generation.
    pub fn get(&self, key: &Key) -> Option<Arc<KnownUser>> {
        let now = self.generation();
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(key)
            .filter(|(generation, _)| *generation == now)
            .map(|(_, user)| user.clone())
    }

    /// Remembers what a read under `generation` found (dropped if it is already outdated).
    pub fn put(&self, key: Key, generation: u64, user: Arc<KnownUser>) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if generation != self.generation() {
            return;
        }
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, (g, _)| *g == generation);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(key, (generation, user));
    }

    /// The update hook saw a change to `table` (not yet committed).
    pub fn touched(&self, table: &str) {
        if AUTH_TABLES.contains(&table) {
            self.touched.store(true, Ordering::SeqCst);
        }
    }

    /// The writer finished a group (committed or rolled back), before answering its callers.
    pub fn group_done(&self) {
        if self.touched.swap(false, Ordering::SeqCst) {
            self.generation.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> Arc<KnownUser> {
        Arc::new(KnownUser {
            user_id: 1,
            name: name.into(),
            permissions: vec!["core.instance.list".into()],
        })
    }

    #[test]
    fn entries_die_with_the_generation_they_were_read_under() {
        let c = KnownUsers::default();
        let k = key("clu_abc");
        let g = c.generation();
        c.put(k, g, user("a"));
        assert_eq!(c.get(&k).map(|u| u.name.clone()), Some("a".into()));
        // Unrelated tables do not invalidate.
        c.touched("instances");
        c.group_done();
        assert!(c.get(&k).is_some());
        // A change to a token invalidates once its group is done.
        c.touched("tokens");
        assert!(c.get(&k).is_some(), "not before the commit");
        c.group_done();
        assert!(c.get(&k).is_none());
        // A read that began before the bump is not kept.
        c.put(k, g, user("stale"));
        assert!(c.get(&k).is_none());
    }
}
