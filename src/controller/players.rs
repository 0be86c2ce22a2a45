//! Players: the users the games know. A name's first join on any instance creates its user
//! (default role); every stay on an instance is a session row, so statistics (first and last
//! seen, joins, online time, where they are now) and the history across instances are one query
//! away, and survive a controller restart. The actions an admin takes on a player (kick, ban,
//! unban, promote, demote, whitelist) and the import and export of Factorio's own list files are
//! requests here, each with its permission and its audit row.
//!
//! Who is online comes from the player list each host reports with an instance's status (from
//! the `[JOIN]`/`[LEAVE]` log lines and the Lua module's player events). The controller compares
//! it with the sessions that are open in SQLite, so a missed leave line, a restart of the
//! controller or of the game is set right by the next report.

use super::Controller;
use super::auth::Actor;
use super::error::ApiError;
use super::hub::Event;
use super::requests::Ref;
use crate::host::lists::{self, EntryError, ListEntry, ListFile};
use crate::store::{self, Result as StoreResult, Store, StoreError, User, audit, now_ms};
use rusqlite::{Connection, params};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The new permission to kick a player from the games they are in.
pub const PERMISSION_KICK: &str = "core.user.kick";

/// Who writes audit rows for what the games report.
const GAME_ACTOR: &str = "game";

/// Sessions shown in a player's history, newest first.
const HISTORY_LIMIT: u32 = 200;

/// The tables, migrated in order; `plugin_migrations` (shared with the plugins) records the
/// steps done under the name `players`.
const MIGRATIONS: &[&str] = &[r#"
    CREATE TABLE player_sessions (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        instance_id INTEGER NOT NULL,
        -- kept so the history still reads after the instance is deleted or renamed
        instance_name TEXT NOT NULL,
        joined_at INTEGER NOT NULL,
        left_at INTEGER,
        leave_reason TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX player_sessions_user ON player_sessions (user_id, joined_at);
    CREATE INDEX player_sessions_open ON player_sessions (instance_id) WHERE left_at IS NULL;
    "#];

const MIGRATION_NAME: &str = "players";

pub async fn migrate(store: &Store) -> anyhow::Result<()> {
    super::plugins::apply_migrations(store, MIGRATION_NAME, MIGRATIONS, "the player tables").await
}

// ---------------------------------------------------------------------------------------------
// Presence: who is on which instance.

/// What one report changed.
#[derive(Debug, Default)]
pub struct Presence {
    /// Users created by their first join.
    pub created: Vec<User>,
    pub joined: Vec<String>,
    pub left: Vec<String>,
}

/// Brings the open sessions of an instance in line with the players it reports online.
pub fn record_presence(
    conn: &Connection,
    instance_id: i64,
    instance_name: &str,
    online: &[String],
    running: bool,
    now: i64,
) -> StoreResult<Presence> {
    let open = open_sessions(conn, instance_id)?;
    let mut presence = Presence::default();
    let reason = if running { "left" } else { "server stopped" };
    for (session, key, name) in &open {
        if !online.iter().any(|n| store::users::key(n) == *key) {
            conn.execute(
                // A reason set beforehand (a kick on its way) stays.
                "UPDATE player_sessions SET left_at = ?2,
                    leave_reason = CASE WHEN leave_reason = '' THEN ?3 ELSE leave_reason END
                 WHERE id = ?1",
                params![session, now, reason],
            )?;
            presence.left.push(name.clone());
        }
    }
    for name in online {
        let key = store::users::key(name);
        if open.iter().any(|(_, k, _)| *k == key)
            || presence.joined.iter().any(|j| store::users::key(j) == key)
        {
            continue;
        }
        let user = match store::users::find(conn, name)? {
            Some(u) => u,
            None => {
                // A name Factorio allows but our user names do not cannot become a user.
                if store::users::validate_name(name).is_err() {
                    tracing::warn!(player = %name, "a player name clustorio cannot keep as a user; not recorded");
                    continue;
                }
                let u = store::users::create(
                    conn,
                    GAME_ACTOR,
                    name,
                    &store::users::UserChange::default(),
                )?;
                presence.created.push(u.clone());
                u
            }
        };
        conn.execute(
            "INSERT INTO player_sessions (user_id, instance_id, instance_name, joined_at)
             VALUES (?1, ?2, ?3, ?4)",
            params![user.id, instance_id, instance_name, now],
        )?;
        presence.joined.push(user.name);
    }
    Ok(presence)
}

/// (session id, name key, name) of every open session on an instance.
fn open_sessions(conn: &Connection, instance_id: i64) -> StoreResult<Vec<(i64, String, String)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT s.id, u.name_key, u.name FROM player_sessions s JOIN users u ON u.id = s.user_id
         WHERE s.instance_id = ?1 AND s.left_at IS NULL",
    )?;
    let rows = stmt.query_map([instance_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Whether the open sessions of an instance already match `online` (then nothing is written).
fn presence_matches(conn: &Connection, instance_id: i64, online: &[String]) -> StoreResult<bool> {
    let mut open: Vec<String> = open_sessions(conn, instance_id)?
        .into_iter()
        .map(|(_, k, _)| k)
        .collect();
    let mut now: Vec<String> = online.iter().map(|n| store::users::key(n)).collect();
    open.sort_unstable();
    now.sort_unstable();
    now.dedup();
    Ok(open == now)
}

impl Controller {
    /// An instance's host reported its status and the players online: record joins and leaves.
    pub(super) async fn observe_players(&self, rec: &store::InstanceRecord, online: Vec<String>) {
        let running = rec.status == "running";
        let online = if running { online } else { Vec::new() };
        let (id, name) = (rec.id, rec.name.clone());
        let check = online.clone();
        match self
            .store
            .read(move |c| presence_matches(c, id, &check))
            .await
        {
            Ok(true) => return,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(instance = %name, error = %e, "reading player sessions");
                return;
            }
        }
        let result = self
            .store
            .write(move |c| record_presence(c, id, &name, &online, running, now_ms()))
            .await;
        match result {
            Ok(p) => {
                for u in &p.created {
                    tracing::info!(player = %u.name, instance = %rec.name, "new player: user created");
                    self.hub.publish(Event::user_updated(u));
                }
                for n in &p.joined {
                    tracing::info!(player = %n, instance = %rec.name, "player joined");
                }
                for n in &p.left {
                    tracing::info!(player = %n, instance = %rec.name, "player left");
                }
                if !p.joined.is_empty() || !p.left.is_empty() {
                    self.hub.publish(Event::player_event(json!({
                        "type": "presence",
                        "instance_id": rec.id,
                        "instance": rec.name,
                        "joined": p.joined,
                        "left": p.left,
                    })));
                }
            }
            Err(e) => tracing::warn!(instance = %rec.name, error = %e, "recording players"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Statistics and history.

/// A player as the list shows them: the user, where they are now, and totals over every
/// instance.
#[derive(Debug, Clone, Serialize)]
pub struct PlayerSummary {
    #[serde(flatten)]
    pub user: User,
    /// Names of the instances the player is on now.
    pub online_on: Vec<String>,
    pub online: bool,
    /// Ever joined a game (users created by hand or by a ban may never have).
    pub seen_in_game: bool,
    pub join_count: i64,
    pub online_time_ms: i64,
    pub first_seen_at: Option<i64>,
    pub last_seen_at: Option<i64>,
}

/// A player's statistics on one instance.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceStats {
    pub instance_id: i64,
    pub instance: String,
    pub join_count: i64,
    pub online_time_ms: i64,
    pub first_join_at: i64,
    pub last_join_at: i64,
    pub last_leave_at: Option<i64>,
    pub online: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Session {
    pub instance_id: i64,
    pub instance: String,
    pub joined_at: i64,
    pub left_at: Option<i64>,
    pub leave_reason: String,
    pub duration_ms: i64,
}

/// Every user with their totals: online players first, then the most recently seen, then by name.
pub fn list(conn: &Connection, search: Option<&str>, now: i64) -> StoreResult<Vec<PlayerSummary>> {
    let users = store::users::list(conn)?;
    let mut stmt = conn.prepare_cached(
        "SELECT user_id, COUNT(*), SUM(COALESCE(left_at, ?1) - joined_at), MIN(joined_at),
                MAX(COALESCE(left_at, ?1)),
                GROUP_CONCAT(CASE WHEN left_at IS NULL THEN instance_name END)
         FROM player_sessions GROUP BY user_id",
    )?;
    type Totals = (i64, i64, i64, i64, Option<String>);
    let mut totals = std::collections::HashMap::<i64, Totals>::new();
    let rows = stmt.query_map([now], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            (r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?),
        ))
    })?;
    for row in rows {
        let (id, t) = row?;
        totals.insert(id, t);
    }
    let needle = search.map(str::to_lowercase).filter(|s| !s.is_empty());
    let mut out: Vec<PlayerSummary> = users
        .into_iter()
        .filter(|u| {
            needle
                .as_ref()
                .is_none_or(|n| u.name.to_lowercase().contains(n.as_str()))
        })
        .map(|user| {
            let t = totals.remove(&user.id);
            let mut online_on: Vec<String> = t
                .as_ref()
                .and_then(|t| t.4.as_deref())
                .map(|s| s.split(',').map(String::from).collect())
                .unwrap_or_default();
            online_on.sort_unstable();
            online_on.dedup();
            PlayerSummary {
                online: !online_on.is_empty(),
                online_on,
                seen_in_game: t.is_some(),
                join_count: t.as_ref().map_or(0, |t| t.0),
                online_time_ms: t.as_ref().map_or(0, |t| t.1),
                first_seen_at: t.as_ref().map(|t| t.2),
                last_seen_at: t.as_ref().map(|t| t.3),
                user,
            }
        })
        .collect();
    out.sort_by(|a, b| {
        b.online
            .cmp(&a.online)
            .then(b.last_seen_at.cmp(&a.last_seen_at))
            .then(a.user.name.to_lowercase().cmp(&b.user.name.to_lowercase()))
    });
    Ok(out)
}

/// One player: the summary, statistics per instance and the latest sessions.
pub fn detail(conn: &Connection, name: &str, now: i64) -> StoreResult<Value> {
    let user = store::users::get(conn, name)?;
    let summary = list(conn, None, now)?
        .into_iter()
        .find(|p| p.user.id == user.id)
        .ok_or_else(|| StoreError::NotFound(format!("no user named '{name}'")))?;
    let mut stmt = conn.prepare_cached(
        "SELECT instance_id,
                (SELECT instance_name FROM player_sessions l WHERE l.user_id = s.user_id
                   AND l.instance_id = s.instance_id ORDER BY l.joined_at DESC LIMIT 1),
                COUNT(*), SUM(COALESCE(left_at, ?2) - joined_at), MIN(joined_at), MAX(joined_at),
                MAX(left_at), SUM(left_at IS NULL)
         FROM player_sessions s WHERE user_id = ?1 GROUP BY instance_id ORDER BY MAX(joined_at) DESC",
    )?;
    let stats: Vec<InstanceStats> = stmt
        .query_map(params![user.id, now], |r| {
            Ok(InstanceStats {
                instance_id: r.get(0)?,
                instance: r.get(1)?,
                join_count: r.get(2)?,
                online_time_ms: r.get(3)?,
                first_join_at: r.get(4)?,
                last_join_at: r.get(5)?,
                last_leave_at: r.get(6)?,
                online: r.get::<_, i64>(7)? > 0,
            })
        })?
        .collect::<Result<_, _>>()?;
    let mut stmt = conn.prepare_cached(
        "SELECT instance_id, instance_name, joined_at, left_at, leave_reason FROM player_sessions
         WHERE user_id = ?1 ORDER BY joined_at DESC, id DESC LIMIT ?2",
    )?;
    let history: Vec<Session> = stmt
        .query_map(params![user.id, HISTORY_LIMIT], |r| {
            let joined_at: i64 = r.get(2)?;
            let left_at: Option<i64> = r.get(3)?;
            Ok(Session {
                instance_id: r.get(0)?,
                instance: r.get(1)?,
                joined_at,
                left_at,
                leave_reason: r.get(4)?,
                duration_ms: left_at.unwrap_or(now) - joined_at,
            })
        })?
        .collect::<Result<_, _>>()?;
    let mut v = serde_json::to_value(&summary)?;
    v["instance_stats"] = serde_json::to_value(&stats)?;
    v["history"] = serde_json::to_value(&history)?;
    Ok(v)
}

/// Ids and names of the instances a player is on now.
fn online_instances(conn: &Connection, name: &str) -> StoreResult<Vec<(i64, String)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT DISTINCT s.instance_id, s.instance_name FROM player_sessions s
         JOIN users u ON u.id = s.user_id WHERE u.name_key = ?1 AND s.left_at IS NULL",
    )?;
    let rows = stmt.query_map([store::users::key(name)], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

// ---------------------------------------------------------------------------------------------
// Flags: ban, admin, whitelist.

/// A change of one flag on one player.
#[derive(Debug, Clone, PartialEq)]
pub enum Flag {
    Ban(String),
    Unban,
    Promote,
    Demote,
    Whitelist,
    Unwhitelist,
}

impl Flag {
    fn action(&self) -> &'static str {
        match self {
            Flag::Ban(_) => "user.ban",
            Flag::Unban => "user.unban",
            Flag::Promote => "user.promote",
            Flag::Demote => "user.demote",
            Flag::Whitelist => "user.whitelist",
            Flag::Unwhitelist => "user.unwhitelist",
        }
    }

    /// Giving a flag to a name never seen creates its user; taking one away needs the user.
    fn creates(&self) -> bool {
        matches!(self, Flag::Ban(_) | Flag::Promote | Flag::Whitelist)
    }

    /// Whether `user` has the flag as this change would leave it.
    fn holds(&self, user: &User) -> bool {
        match self {
            Flag::Ban(r) => user.is_banned && user.ban_reason == *r,
            Flag::Unban => !user.is_banned,
            Flag::Promote => user.is_admin,
            Flag::Demote => !user.is_admin,
            Flag::Whitelist => user.is_whitelisted,
            Flag::Unwhitelist => !user.is_whitelisted,
        }
    }
}

/// Sets one flag, creating the user where the flag allows; writes the audit row. Returns the
/// user and whether anything changed.
pub fn set_flag(
    conn: &Connection,
    actor: &str,
    name: &str,
    flag: &Flag,
) -> StoreResult<(User, bool)> {
    let user = match store::users::find(conn, name)? {
        Some(u) => u,
        None if flag.creates() => {
            store::users::create(conn, actor, name, &store::users::UserChange::default())?
        }
        None => return Err(StoreError::NotFound(format!("no user named '{name}'"))),
    };
    if flag.holds(&user) {
        return Ok((user, false));
    }
    let sql = match flag {
        Flag::Ban(_) => {
            "UPDATE users SET is_banned = 1, ban_reason = ?2, updated_at = ?3 WHERE id = ?1"
        }
        Flag::Unban => {
            "UPDATE users SET is_banned = 0, ban_reason = ?2, updated_at = ?3 WHERE id = ?1"
        }
        Flag::Promote => "UPDATE users SET is_admin = 1, updated_at = ?3 WHERE id = ?1 AND ?2 = ?2",
        Flag::Demote => "UPDATE users SET is_admin = 0, updated_at = ?3 WHERE id = ?1 AND ?2 = ?2",
        Flag::Whitelist => {
            "UPDATE users SET is_whitelisted = 1, updated_at = ?3 WHERE id = ?1 AND ?2 = ?2"
        }
        Flag::Unwhitelist => {
            "UPDATE users SET is_whitelisted = 0, updated_at = ?3 WHERE id = ?1 AND ?2 = ?2"
        }
    };
    let reason = match flag {
        Flag::Ban(r) => r.as_str(),
        _ => "",
    };
    conn.execute(sql, params![user.id, reason, now_ms()])?;
    let detail = match flag {
        Flag::Ban(r) => json!({ "reason": r }),
        _ => json!({}),
    };
    audit::record(conn, actor, flag.action(), &user.name, &detail)?;
    Ok((store::users::get(conn, &user.name)?, true))
}

/// A reason as it may travel in an RCON command and a ban file: one line, trimmed.
fn clean_reason(reason: Option<String>) -> Result<String, ApiError> {
    let reason = reason.unwrap_or_default();
    if reason.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "the reason must be one line of text without control characters",
        ));
    }
    if reason.len() > 500 {
        return Err(ApiError::bad_request(
            "the reason is longer than 500 characters",
        ));
    }
    Ok(reason.trim().to_string())
}

// ---------------------------------------------------------------------------------------------
// Changes made in a game (an admin typing /ban, /promote …), for the whole cluster.

/// How long a change the controller made is expected back from the games (each running game
/// reports the command it was sent as its own event).
const ECHO_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

/// The flag changes the controller sent to the games lately: their echoes are not new changes.
#[derive(Default)]
pub struct Echoes(std::sync::Mutex<Vec<(String, &'static str, std::time::Instant)>>);

impl Echoes {
    fn kind(flag: &Flag) -> &'static str {
        match flag {
            Flag::Ban(_) => "BAN",
            Flag::Unban => "UNBANNED",
            Flag::Promote => "PROMOTE",
            Flag::Demote => "DEMOTE",
            Flag::Whitelist | Flag::Unwhitelist => "WHITELIST",
        }
    }

    fn expect(&self, name: &str, flag: &Flag) {
        if let Ok(mut e) = self.0.lock() {
            e.retain(|(_, _, at)| at.elapsed() < ECHO_WINDOW);
            e.push((
                store::users::key(name),
                Self::kind(flag),
                std::time::Instant::now(),
            ));
        }
    }

    fn is_echo(&self, name: &str, kind: &str) -> bool {
        let key = store::users::key(name);
        self.0.lock().is_ok_and(|e| {
            e.iter()
                .any(|(n, k, at)| *n == key && *k == kind && at.elapsed() < ECHO_WINDOW)
        })
    }
}

impl Controller {
    /// A game reported a ban, unban, promotion or demotion (the Lua module's `player_event`):
    /// unless it is the echo of the controller's own command, it becomes the cluster's.
    pub(super) async fn game_player_event(&self, data: &Value) {
        let (Some(kind), Some(name)) = (data["type"].as_str(), data["name"].as_str()) else {
            return;
        };
        let flag = match kind {
            "BAN" => Flag::Ban(data["reason"].as_str().unwrap_or_default().to_string()),
            "UNBANNED" => Flag::Unban,
            "PROMOTE" => Flag::Promote,
            "DEMOTE" => Flag::Demote,
            _ => return,
        };
        if self.player_echoes.is_echo(name, kind) {
            return;
        }
        let instance = data["instance_id"].as_i64().unwrap_or(-1);
        let actor = match self
            .store
            .read(move |c| store::instances::get(c, &instance.to_string()))
            .await
        {
            Ok(rec) => format!("game:{}", rec.name),
            Err(_) => GAME_ACTOR.to_string(),
        };
        let name = name.to_string();
        let result = self
            .store
            .write(move |c| {
                // A game's ban of someone banned already keeps the cluster's reason.
                if let Flag::Ban(_) = flag
                    && store::users::find(c, &name)?.is_some_and(|u| u.is_banned)
                {
                    return Ok(None);
                }
                set_flag(c, &actor, &name, &flag).map(|(u, changed)| changed.then_some(u))
            })
            .await;
        match result {
            Ok(Some(u)) => {
                tracing::info!(player = %u.name, kind, "a change made in a game, applied to the cluster");
                self.hub.publish(Event::user_updated(&u));
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(kind, error = %e, "a change made in a game was not applied"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Import and export of Factorio's list files.

/// What an import would change (a dry run) or changed.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ImportSummary {
    pub dry_run: bool,
    /// Users that do not exist yet and are created.
    pub created: Vec<String>,
    pub admins: ListChange,
    pub bans: ListChange,
    pub whitelist: ListChange,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ListChange {
    /// Whether this list was part of the import.
    pub given: bool,
    pub added: Vec<String>,
    /// Bans whose reason changes.
    pub updated: Vec<String>,
    /// With `replace`: users on the cluster's list but not in the file, taken off.
    pub removed: Vec<String>,
    pub unchanged: usize,
}

/// The three files of an import, each already read.
#[derive(Debug, Clone, Default)]
pub struct ImportFiles {
    pub admins: Option<Vec<ListEntry>>,
    pub bans: Option<Vec<ListEntry>>,
    pub whitelist: Option<Vec<ListEntry>>,
}

impl ImportFiles {
    fn list(&self, l: ListFile) -> Option<&Vec<ListEntry>> {
        match l {
            ListFile::Admins => self.admins.as_ref(),
            ListFile::Bans => self.bans.as_ref(),
            ListFile::Whitelist => self.whitelist.as_ref(),
        }
    }
}

/// Reads the files of an import; every malformed entry of every file is reported together.
pub fn read_import(
    admins: Option<&Value>,
    bans: Option<&Value>,
    whitelist: Option<&Value>,
) -> Result<ImportFiles, Vec<EntryError>> {
    let mut errors = Vec::new();
    let mut read = |l: ListFile, v: Option<&Value>| match v {
        None | Some(Value::Null) => None,
        Some(v) => match lists::parse_file(l, v) {
            Ok(e) => Some(e),
            Err(mut e) => {
                errors.append(&mut e);
                None
            }
        },
    };
    let files = ImportFiles {
        admins: read(ListFile::Admins, admins),
        bans: read(ListFile::Bans, bans),
        whitelist: read(ListFile::Whitelist, whitelist),
    };
    if errors.is_empty() {
        Ok(files)
    } else {
        Err(errors)
    }
}

/// The flag changes an import makes, in order, with its summary.
fn plan_import(
    conn: &Connection,
    files: &ImportFiles,
    replace: bool,
) -> StoreResult<(ImportSummary, Vec<(String, Flag)>)> {
    let users = store::users::list(conn)?;
    let find = |name: &str| {
        users
            .iter()
            .find(|u| store::users::key(&u.name) == store::users::key(name))
    };
    let mut summary = ImportSummary::default();
    let mut changes = Vec::new();
    for l in ListFile::ALL {
        let Some(entries) = files.list(l) else {
            continue;
        };
        let mut change = ListChange {
            given: true,
            ..ListChange::default()
        };
        for e in entries {
            let flag = match l {
                ListFile::Admins => Flag::Promote,
                ListFile::Bans => Flag::Ban(e.reason.clone()),
                ListFile::Whitelist => Flag::Whitelist,
            };
            match find(&e.name) {
                Some(u) if flag.holds(u) => change.unchanged += 1,
                Some(u) if l == ListFile::Bans && u.is_banned => {
                    change.updated.push(u.name.clone())
                }
                Some(_) => change.added.push(e.name.clone()),
                None => {
                    if !summary
                        .created
                        .iter()
                        .any(|c| store::users::key(c) == store::users::key(&e.name))
                    {
                        summary.created.push(e.name.clone());
                    }
                    change.added.push(e.name.clone());
                }
            }
            if find(&e.name).is_none_or(|u| !flag.holds(u)) {
                changes.push((e.name.clone(), flag));
            }
        }
        if replace {
            for u in &users {
                let listed = entries
                    .iter()
                    .any(|e| store::users::key(&e.name) == store::users::key(&u.name));
                let (has, off) = match l {
                    ListFile::Admins => (u.is_admin, Flag::Demote),
                    ListFile::Bans => (u.is_banned, Flag::Unban),
                    ListFile::Whitelist => (u.is_whitelisted, Flag::Unwhitelist),
                };
                if has && !listed {
                    change.removed.push(u.name.clone());
                    changes.push((u.name.clone(), off));
                }
            }
        }
        match l {
            ListFile::Admins => summary.admins = change,
            ListFile::Bans => summary.bans = change,
            ListFile::Whitelist => summary.whitelist = change,
        }
    }
    Ok((summary, changes))
}

/// A user an import changed, with the flags it set.
type Touched = (User, Vec<Flag>);

/// Applies an import in one transaction (the caller's): every change or none.
fn apply_import(
    conn: &Connection,
    actor: &str,
    files: &ImportFiles,
    replace: bool,
) -> StoreResult<(ImportSummary, Vec<Touched>)> {
    let (summary, changes) = plan_import(conn, files, replace)?;
    let mut touched: Vec<Touched> = Vec::new();
    for (name, flag) in &changes {
        let (u, _) = set_flag(conn, actor, name, flag)?;
        let mut flags = touched
            .iter()
            .position(|(t, _)| t.id == u.id)
            .map(|i| touched.remove(i).1)
            .unwrap_or_default();
        flags.push(flag.clone());
        touched.push((u, flags));
    }
    audit::record(
        conn,
        actor,
        "user.import",
        "lists",
        &serde_json::to_value(&summary)?,
    )?;
    Ok((summary, touched))
}

/// One list of the cluster in Factorio's file shape, sorted by name.
pub fn export(conn: &Connection, list: ListFile) -> StoreResult<Value> {
    let mut users = store::users::list(conn)?;
    users.sort_by_key(|u| u.name.to_lowercase());
    let entries: Vec<ListEntry> = users
        .into_iter()
        .filter(|u| match list {
            ListFile::Admins => u.is_admin,
            ListFile::Bans => u.is_banned,
            ListFile::Whitelist => u.is_whitelisted,
        })
        .map(|u| ListEntry {
            name: u.name,
            reason: u.ban_reason,
        })
        .collect();
    Ok(lists::file_json(list, &entries))
}

// ---------------------------------------------------------------------------------------------
// Requests.

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportRequest {
    #[serde(default)]
    pub admins: Option<Value>,
    #[serde(default)]
    pub bans: Option<Value>,
    #[serde(default)]
    pub whitelist: Option<Value>,
    /// Only say what would change.
    #[serde(default)]
    pub dry_run: bool,
    /// Take the flag away from users missing from a given file (Clusterio's "restore").
    #[serde(default)]
    pub replace: bool,
}

/// The player requests, a family of their own beside [`super::requests::ControlRequest`].
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "name", content = "data", rename_all = "snake_case")]
pub enum PlayerRequest {
    PlayerList {
        #[serde(default)]
        search: Option<String>,
    },
    PlayerGet {
        user: String,
    },
    PlayerKick {
        user: String,
        #[serde(default)]
        reason: Option<String>,
    },
    PlayerBan {
        user: String,
        #[serde(default)]
        reason: Option<String>,
    },
    PlayerUnban {
        user: String,
    },
    PlayerPromote {
        user: String,
    },
    PlayerDemote {
        user: String,
    },
    PlayerWhitelist {
        user: String,
    },
    PlayerUnwhitelist {
        user: String,
    },
    ListImport(ImportRequest),
    ListExport {
        list: String,
    },
}

impl PlayerRequest {
    /// Decodes `name` + `data` if `name` is one of these requests.
    pub fn from_link(name: &str, data: &Value) -> Option<Result<Self, ApiError>> {
        const NAMES: &[&str] = &[
            "player_list",
            "player_get",
            "player_kick",
            "player_ban",
            "player_unban",
            "player_promote",
            "player_demote",
            "player_whitelist",
            "player_unwhitelist",
            "list_import",
            "list_export",
        ];
        if !NAMES.contains(&name) {
            return None;
        }
        let data = if data.is_null() {
            json!({})
        } else {
            data.clone()
        };
        Some(
            serde_json::from_value(json!({ "name": name, "data": data }))
                .map_err(|e| ApiError::bad_request(format!("invalid \"{name}\" request: {e}"))),
        )
    }

    pub fn permissions(&self) -> Vec<&'static str> {
        use PlayerRequest::*;
        match self {
            PlayerList { .. } => vec!["core.user.list"],
            PlayerGet { .. } => vec!["core.user.get"],
            PlayerKick { .. } => vec![PERMISSION_KICK],
            PlayerBan { .. } | PlayerUnban { .. } => vec!["core.user.set_banned"],
            PlayerPromote { .. } | PlayerDemote { .. } => vec!["core.user.set_admin"],
            PlayerWhitelist { .. } | PlayerUnwhitelist { .. } => {
                vec!["core.user.set_whitelisted"]
            }
            ListImport(r) if r.replace => {
                vec!["core.user.bulk_import", "core.user.bulk_restore"]
            }
            ListImport(_) => vec!["core.user.bulk_import"],
            ListExport { .. } => vec!["core.user.bulk_export"],
        }
    }

    pub async fn run(self, ctl: &Controller, actor: &Actor) -> Result<Value, ApiError> {
        use PlayerRequest::*;
        let who = actor.audit_name();
        let store = &ctl.store;
        match self {
            PlayerList { search } => Ok(serde_json::to_value(
                store
                    .read(move |c| list(c, search.as_deref(), now_ms()))
                    .await?,
            )
            .map_err(internal)?),
            PlayerGet { user } => Ok(store.read(move |c| detail(c, &user, now_ms())).await?),
            PlayerKick { user, reason } => kick(ctl, &who, user, clean_reason(reason)?).await,
            PlayerBan { user, reason } => {
                let reason = clean_reason(reason)?;
                flag(ctl, &who, user, Flag::Ban(reason)).await
            }
            PlayerUnban { user } => flag(ctl, &who, user, Flag::Unban).await,
            PlayerPromote { user } => flag(ctl, &who, user, Flag::Promote).await,
            PlayerDemote { user } => flag(ctl, &who, user, Flag::Demote).await,
            PlayerWhitelist { user } => flag(ctl, &who, user, Flag::Whitelist).await,
            PlayerUnwhitelist { user } => flag(ctl, &who, user, Flag::Unwhitelist).await,
            ListImport(r) => import(ctl, &who, r).await,
            ListExport { list } => {
                let l = ListFile::from_key(&list).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "no list '{list}': use admins, bans or whitelist"
                    ))
                })?;
                Ok(store.read(move |c| export(c, l)).await?)
            }
        }
    }
}

fn internal(e: serde_json::Error) -> ApiError {
    ApiError::new(500, "internal", e.to_string())
}

async fn flag(ctl: &Controller, who: &str, user: String, f: Flag) -> Result<Value, ApiError> {
    if f.creates() {
        store::users::validate_name(&user)?;
    }
    let who = who.to_string();
    let f_kind = f.clone();
    let (u, changed) = ctl
        .store
        .write(move |c| set_flag(c, &who, &user, &f))
        .await?;
    if changed {
        // Hosts get it too: every running game is told over RCON, later starts get the files.
        ctl.player_echoes.expect(&u.name, &f_kind);
        ctl.hub.publish(Event::user_updated(&u));
    }
    let mut v = serde_json::to_value(&u).map_err(internal)?;
    v["changed"] = json!(changed);
    Ok(v)
}

/// Kicks a player from every instance they are on now, over RCON.
async fn kick(
    ctl: &Controller,
    who: &str,
    user: String,
    reason: String,
) -> Result<Value, ApiError> {
    let name = user.clone();
    let u = ctl.store.read(move |c| store::users::get(c, &name)).await?;
    let name = u.name.clone();
    let on = ctl.store.read(move |c| online_instances(c, &name)).await?;
    if on.is_empty() {
        return Err(ApiError::conflict(format!(
            "player '{}' is not in any game",
            u.name
        )));
    }
    let command = format!("/kick {} {reason}", u.name).trim_end().to_string();
    let left = format!("kicked: {reason}")
        .trim_end_matches(": ")
        .to_string();
    let mut kicked_from = Vec::new();
    let mut failed = Vec::new();
    for (id, instance) in on {
        // The history says why they left, whenever the game's leave report arrives.
        set_leave_reason(ctl, u.id, id, &left).await?;
        match ctl.rcon(who, Ref::Id(id), command.clone()).await {
            Ok(_) => kicked_from.push(instance),
            Err(e) => {
                set_leave_reason(ctl, u.id, id, "").await?;
                failed.push(json!({ "instance": instance, "error": e.message }));
            }
        }
    }
    let (w, n, detail) = (
        who.to_string(),
        u.name.clone(),
        json!({ "reason": reason, "instances": kicked_from, "failed": failed }),
    );
    ctl.store
        .write(move |c| audit::record(c, &w, "user.kick", &n, &detail))
        .await?;
    if kicked_from.is_empty() {
        return Err(ApiError::new(
            502,
            "kick_failed",
            format!("could not kick '{}': {}", u.name, json!(failed)),
        ));
    }
    Ok(json!({ "name": u.name, "kicked_from": kicked_from, "failed": failed, "reason": reason }))
}

/// The reason an open session will close with.
async fn set_leave_reason(
    ctl: &Controller,
    user_id: i64,
    instance_id: i64,
    reason: &str,
) -> Result<(), ApiError> {
    let reason = reason.to_string();
    ctl.store
        .write(move |c| {
            c.execute(
                "UPDATE player_sessions SET leave_reason = ?3
                 WHERE user_id = ?1 AND instance_id = ?2 AND left_at IS NULL",
                params![user_id, instance_id, reason],
            )?;
            Ok(())
        })
        .await?;
    Ok(())
}

async fn import(ctl: &Controller, who: &str, r: ImportRequest) -> Result<Value, ApiError> {
    let files = read_import(r.admins.as_ref(), r.bans.as_ref(), r.whitelist.as_ref()).map_err(
        |errors| {
            let listed: Vec<String> = errors.iter().map(ToString::to_string).collect();
            ApiError::new(
                400,
                "invalid_list",
                format!("nothing was imported: {}", listed.join("; ")),
            )
        },
    )?;
    if files.admins.is_none() && files.bans.is_none() && files.whitelist.is_none() {
        return Err(ApiError::bad_request(
            "nothing to import: give admins, bans and/or whitelist (the files' JSON)",
        ));
    }
    let replace = r.replace;
    if r.dry_run {
        let (mut summary, _) = ctl
            .store
            .read(move |c| plan_import(c, &files, replace))
            .await?;
        summary.dry_run = true;
        return serde_json::to_value(&summary).map_err(internal);
    }
    let who = who.to_string();
    let (summary, touched) = ctl
        .store
        .write(move |c| apply_import(c, &who, &files, replace))
        .await?;
    for (u, flags) in &touched {
        for f in flags {
            ctl.player_echoes.expect(&u.name, f);
        }
        ctl.hub.publish(Event::user_updated(u));
    }
    serde_json::to_value(&summary).map_err(internal)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        (dir, s)
    }

    async fn ready() -> (tempfile::TempDir, Store) {
        let (d, s) = store();
        s.write(store::roles::ensure_defaults).await.unwrap();
        migrate(&s).await.unwrap();
        (d, s)
    }

    #[tokio::test]
    async fn joins_create_users_and_leaves_close_sessions() {
        let (_d, s) = ready().await;
        let p = s
            .write(|c| record_presence(c, 1, "a", &["Alice".into(), "Bob".into()], true, 1000))
            .await
            .unwrap();
        assert_eq!(p.created.len(), 2);
        assert_eq!(p.joined, vec!["Alice", "Bob"]);
        // Same report: nothing changes; then Bob leaves.
        let p = s
            .write(|c| record_presence(c, 1, "a", &["alice".into(), "Bob".into()], true, 1500))
            .await
            .unwrap();
        assert!(p.joined.is_empty() && p.left.is_empty());
        let p = s
            .write(|c| record_presence(c, 1, "a", &["Alice".into()], true, 4000))
            .await
            .unwrap();
        assert_eq!(p.left, vec!["Bob"]);
        let all = s.read(|c| list(c, None, 5000)).await.unwrap();
        assert_eq!(all[0].user.name, "Alice");
        assert!(all[0].online);
        assert_eq!(all[0].online_time_ms, 4000);
        let bob = all.iter().find(|p| p.user.name == "Bob").unwrap();
        assert!(!bob.online);
        assert_eq!(bob.online_time_ms, 3000);
        assert_eq!(bob.join_count, 1);
        let d = s.read(|c| detail(c, "bob", 5000)).await.unwrap();
        assert_eq!(d["history"][0]["leave_reason"], "left");
    }

    #[tokio::test]
    async fn a_malformed_import_changes_nothing_and_a_dry_run_says_what_would() {
        let (_d, s) = ready().await;
        let bad = read_import(Some(&json!(["a", 3])), Some(&json!(["x"])), None);
        assert_eq!(bad.unwrap_err().len(), 1);
        let files = read_import(
            Some(&json!(["Ann"])),
            Some(&json!(["Eve", {"username": "Mal", "reason": "grief"}])),
            Some(&json!(["Ann", "Zed"])),
        )
        .unwrap();
        let f = files.clone();
        let (plan, _) = s.read(move |c| plan_import(c, &f, false)).await.unwrap();
        assert_eq!(plan.created, vec!["Ann", "Eve", "Mal", "Zed"]);
        assert_eq!(plan.bans.added, vec!["Eve", "Mal"]);
        assert!(s.read(store::users::list).await.unwrap().is_empty());
        s.write(move |c| apply_import(c, "t", &files, false))
            .await
            .unwrap();
        let bans = s.read(|c| export(c, ListFile::Bans)).await.unwrap();
        assert_eq!(
            bans,
            json!([{"username": "Eve", "reason": ""}, {"username": "Mal", "reason": "grief"}])
        );
    }
}
