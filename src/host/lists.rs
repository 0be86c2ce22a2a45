//! The cluster's admin, ban and white lists as this host knows them (the controller is the
//! source of truth; it sends the full lists on connect and each change as it happens).

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct UserLists {
    pub admins: BTreeSet<String>,
    /// name → reason
    pub bans: BTreeMap<String, String>,
    pub whitelist: BTreeSet<String>,
}

/// An RCON command that brings a running game in line with a change.
pub type Command = String;

impl UserLists {
    pub fn from_users(users: &[Value]) -> Self {
        let mut lists = UserLists::default();
        for u in users {
            lists.apply_user(u);
        }
        lists
    }

    /// Applies one user record (as the controller sends it); returns the RCON commands that make
    /// a running game agree.
    pub fn apply_user(&mut self, user: &Value) -> Vec<Command> {
        let Some(name) = user["name"].as_str() else {
            return Vec::new();
        };
        let mut cmds = Vec::new();
        let admin = user["is_admin"].as_bool().unwrap_or(false);
        if admin && self.admins.insert(name.to_string()) {
            cmds.push(format!("/promote {name}"));
        } else if !admin && self.admins.remove(name) {
            cmds.push(format!("/demote {name}"));
        }
        let banned = user["is_banned"].as_bool().unwrap_or(false);
        if banned {
            let reason = user["ban_reason"].as_str().unwrap_or("").to_string();
            if self.bans.insert(name.to_string(), reason.clone()).is_none() {
                cmds.push(format!("/ban {name} {reason}").trim_end().to_string());
            }
        } else if self.bans.remove(name).is_some() {
            cmds.push(format!("/unban {name}"));
        }
        let white = user["is_whitelisted"].as_bool().unwrap_or(false);
        if white && self.whitelist.insert(name.to_string()) {
            cmds.push(format!("/whitelist add {name}"));
        } else if !white && self.whitelist.remove(name) {
            cmds.push(format!("/whitelist remove {name}"));
        }
        cmds
    }

    pub fn remove_user(&mut self, name: &str) -> Vec<Command> {
        self.apply_user(&json!({ "name": name }))
    }

    pub fn adminlist_json(&self) -> Value {
        json!(self.admins)
    }

    pub fn banlist_json(&self) -> Value {
        json!(
            self.bans
                .iter()
                .map(|(u, r)| json!({ "username": u, "reason": r }))
                .collect::<Vec<_>>()
        )
    }

    pub fn whitelist_json(&self) -> Value {
        json!(self.whitelist)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_become_rcon_commands_once() {
        let mut l = UserLists::default();
        let u =
            json!({"name": "bob", "is_admin": true, "is_banned": false, "is_whitelisted": false});
        assert_eq!(l.apply_user(&u), vec!["/promote bob"]);
        assert!(l.apply_user(&u).is_empty());
        let u = json!({"name": "bob", "is_admin": false, "is_banned": true, "ban_reason": "grief"});
        assert_eq!(l.apply_user(&u), vec!["/demote bob", "/ban bob grief"]);
        assert_eq!(
            l.banlist_json(),
            json!([{"username": "bob", "reason": "grief"}])
        );
        assert_eq!(l.remove_user("bob"), vec!["/unban bob"]);
    }
}
