//! The cluster's admin, ban and white lists as this host knows them (the controller is the
//! source of truth; it sends the full lists on connect and each change as it happens), and
//! Factorio's own files for them (`server-adminlist.json`, `server-banlist.json`,
//! `server-whitelist.json`; `research/factorio.md` §5.2), read for an import and written for an
//! export in the same shapes Factorio writes.

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

    /// Replaces the lists with the full set of users the controller sent; returns the RCON
    /// commands that bring a running game from the old lists to the new ones.
    pub fn sync_to(&mut self, users: &[Value]) -> Vec<Command> {
        let mut cmds = Vec::new();
        let names: BTreeSet<&str> = users.iter().filter_map(|u| u["name"].as_str()).collect();
        let gone: Vec<String> = self
            .admins
            .iter()
            .chain(self.bans.keys())
            .chain(self.whitelist.iter())
            .filter(|n| !names.contains(n.as_str()))
            .cloned()
            .collect();
        for name in gone {
            cmds.extend(self.remove_user(&name));
        }
        for u in users {
            cmds.extend(self.apply_user(u));
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

/// Which of Factorio's three list files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListFile {
    Admins,
    Bans,
    Whitelist,
}

impl ListFile {
    pub const ALL: [ListFile; 3] = [ListFile::Admins, ListFile::Bans, ListFile::Whitelist];

    /// The name the API and ctl use: `admins`, `bans`, `whitelist`.
    pub fn key(self) -> &'static str {
        match self {
            ListFile::Admins => "admins",
            ListFile::Bans => "bans",
            ListFile::Whitelist => "whitelist",
        }
    }

    /// Factorio's file name for the list.
    pub fn file_name(self) -> &'static str {
        match self {
            ListFile::Admins => "server-adminlist.json",
            ListFile::Bans => "server-banlist.json",
            ListFile::Whitelist => "server-whitelist.json",
        }
    }

    pub fn from_key(key: &str) -> Option<ListFile> {
        ListFile::ALL.into_iter().find(|l| l.key() == key)
    }
}

/// One entry of a list file: a player name and, for bans, the reason (empty when the file used
/// the plain-string form or gave none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListEntry {
    pub name: String,
    pub reason: String,
}

/// What is wrong with one entry of a list file (or with the whole file: no index).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EntryError {
    pub file: &'static str,
    pub index: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for EntryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.index {
            Some(i) => write!(f, "{} entry {}: {}", self.file, i + 1, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

/// Reads one list file's JSON (the parsed value, or the file's text as a JSON string). Every bad
/// entry is reported, not just the first; names repeated (in any case) count once, the first
/// spelling kept. Admin and white lists are arrays of names; the ban list is an array of names
/// or `{"username": …, "reason": …}` objects (extra keys such as `address` are ignored).
pub fn parse_file(list: ListFile, value: &Value) -> Result<Vec<ListEntry>, Vec<EntryError>> {
    let file = list.file_name();
    let whole = |message: String| {
        vec![EntryError {
            file,
            index: None,
            message,
        }]
    };
    let parsed;
    let value = match value {
        Value::String(text) => {
            parsed = serde_json::from_str::<Value>(text)
                .map_err(|e| whole(format!("not valid JSON: {e}")))?;
            &parsed
        }
        v => v,
    };
    let Value::Array(items) = value else {
        return Err(whole(
            "expected a JSON array of player names (like [\"Alice\", \"Bob\"])".into(),
        ));
    };
    let mut errors = Vec::new();
    let mut out: Vec<ListEntry> = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let mut bad = |message: String| {
            errors.push(EntryError {
                file,
                index: Some(index),
                message,
            })
        };
        let (name, reason) = match (list, item) {
            (_, Value::String(n)) => (n.as_str(), ""),
            (ListFile::Bans, Value::Object(o)) => {
                let Some(n) = o.get("username").and_then(Value::as_str) else {
                    bad(format!("{item} has no \"username\" string"));
                    continue;
                };
                match o.get("reason") {
                    None | Some(Value::Null) => (n, ""),
                    Some(Value::String(r)) => (n, r.as_str()),
                    Some(other) => {
                        bad(format!("the reason of '{n}' is {other}, not a string"));
                        continue;
                    }
                }
            }
            (ListFile::Bans, other) => {
                bad(format!(
                    "{other} is neither a name nor {{\"username\": …, \"reason\": …}}"
                ));
                continue;
            }
            (_, other) => {
                bad(format!("{other} is not a player name (a string)"));
                continue;
            }
        };
        if let Err(e) = crate::store::users::validate_name(name) {
            bad(e.to_string());
            continue;
        }
        if reason.chars().any(char::is_control) {
            bad(format!(
                "the reason of '{name}' contains a control character"
            ));
            continue;
        }
        if !out.iter().any(|e| e.name.eq_ignore_ascii_case(name)) {
            out.push(ListEntry {
                name: name.to_string(),
                reason: reason.to_string(),
            });
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// A list file's JSON in Factorio's own shape: names for admins and whitelist, `{username,
/// reason}` objects for bans.
pub fn file_json(list: ListFile, entries: &[ListEntry]) -> Value {
    match list {
        ListFile::Bans => json!(
            entries
                .iter()
                .map(|e| json!({ "username": e.name, "reason": e.reason }))
                .collect::<Vec<_>>()
        ),
        _ => json!(entries.iter().map(|e| e.name.as_str()).collect::<Vec<_>>()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_sync_yields_only_the_differences() {
        let mut l = UserLists::default();
        l.apply_user(&json!({"name": "a", "is_admin": true}));
        l.apply_user(&json!({"name": "gone", "is_banned": true, "ban_reason": "x"}));
        let cmds = l.sync_to(&[
            json!({"name": "a", "is_admin": true}),
            json!({"name": "c", "is_banned": true, "ban_reason": "spam"}),
        ]);
        assert_eq!(cmds, vec!["/unban gone", "/ban c spam"]);
    }

    #[test]
    fn ban_files_take_names_and_objects_and_report_every_bad_entry() {
        let ok = parse_file(
            ListFile::Bans,
            &json!(["Alice", {"username": "Bob", "reason": "grief", "address": "1.2.3.4"}, {"username": "bob"}]),
        )
        .unwrap();
        assert_eq!(
            ok,
            vec![
                ListEntry {
                    name: "Alice".into(),
                    reason: "".into()
                },
                ListEntry {
                    name: "Bob".into(),
                    reason: "grief".into()
                },
            ]
        );
        let errs = parse_file(
            ListFile::Bans,
            &json!(["ok", 5, {"reason": "x"}, "bad name", {"username": "c", "reason": 1}]),
        )
        .unwrap_err();
        let indexes: Vec<_> = errs.iter().map(|e| e.index).collect();
        assert_eq!(indexes, vec![Some(1), Some(2), Some(3), Some(4)]);
        assert!(
            errs[0]
                .to_string()
                .starts_with("server-banlist.json entry 2:")
        );
    }

    #[test]
    fn admin_files_are_arrays_of_names_and_text_is_parsed() {
        let v = json!("[\"a\", \"B\"]\n");
        let e = parse_file(ListFile::Admins, &v).unwrap();
        assert_eq!(file_json(ListFile::Admins, &e), json!(["a", "B"]));
        let errs = parse_file(ListFile::Admins, &json!("{not json")).unwrap_err();
        assert_eq!(errs[0].index, None);
        assert!(parse_file(ListFile::Whitelist, &json!({"a": 1})).is_err());
        assert!(parse_file(ListFile::Admins, &json!([{"username": "a"}])).is_err());
    }

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
