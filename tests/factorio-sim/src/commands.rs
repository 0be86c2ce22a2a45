//! Console commands (stdin and RCON run the same code, as the admin `<server>`): the built-ins
//! managers use (research/factorio.md §4.4), script commands in the level's real Lua state
//! (`lua/`), commands added by the script (`commands.add_command`), chat for text without a
//! slash, and the sim-only `/standin …` verbs of §8.9. Every one that the real game reports to
//! scripts raises the matching event (`on_player_banned`, `on_player_promoted`, …).

use std::time::Duration;

use serde_json::{Value, json};

use crate::server::{Game, Origin};
use crate::texts;

fn nl(s: impl AsRef<str>) -> String {
    format!("{}\n", s.as_ref())
}

fn yes_no(b: bool) -> &'static str {
    if b { "Yes" } else { "No" }
}

/// `/config get|set` keys (CLIO's list) → server-settings.json keys.
fn config_key(k: &str) -> Option<&'static str> {
    Some(match k {
        "afk-auto-kick" => "afk_autokick_interval",
        "allow-commands" => "allow_commands",
        "autosave-interval" => "autosave_interval",
        "autosave-only-on-server" => "autosave_only_on_server",
        "description" => "description",
        "ignore-player-limit-for-returning-players" => "ignore_player_limit_for_returning_players",
        "max-players" => "max_players",
        "max-upload-slots" => "max_upload_slots",
        "max-upload-speed" => "max_upload_in_kilobytes_per_second",
        "name" => "name",
        "only-admins-can-pause" => "only_admins_can_pause_the_game",
        "password" => "game_password",
        "require-user-verification" => "require_user_verification",
        "tags" => "tags",
        "visibility-lan" => "visibility.lan",
        "visibility-public" => "visibility.public",
        "visibility-steam" => "visibility.steam",
        _ => return None,
    })
}

impl Game {
    fn setting(&self, key: &str) -> Value {
        match key.split_once('.') {
            Some((a, b)) => self
                .settings
                .get(a)
                .and_then(|v| v.get(b))
                .cloned()
                .unwrap_or(Value::Null),
            None => self.settings.get(key).cloned().unwrap_or(Value::Null),
        }
    }

    fn set_setting(&mut self, key: &str, v: Value) {
        let Some(obj) = self.settings.as_object_mut() else {
            return;
        };
        match key.split_once('.') {
            Some((a, b)) => {
                let e = obj.entry(a.to_string()).or_insert_with(|| json!({}));
                if let Some(m) = e.as_object_mut() {
                    m.insert(b.to_string(), v);
                }
            }
            None => {
                obj.insert(key.to_string(), v);
            }
        }
    }

    fn config_get(&self, k: &str) -> String {
        let Some(key) = config_key(k) else {
            return nl(format!("Unknown option \"{k}\"."));
        };
        let v = self.setting(key);
        let b = v.as_bool().unwrap_or(false);
        let n = v.as_u64().unwrap_or(0);
        let s = v.as_str().unwrap_or("").to_string();
        nl(match k {
            "afk-auto-kick" if n == 0 => "Don't kick AFK players.".to_string(),
            "afk-auto-kick" => format!("Kick if AFK for more than {n} minutes."),
            "allow-commands" => format!(
                "Allow Lua commands: {}.",
                match v.as_str() {
                    Some("admins-only") => "Admins only",
                    Some("false") => "No",
                    Some(_) => "Yes",
                    None => yes_no(b),
                }
            ),
            "autosave-interval" => format!("Autosave every {n} minutes."),
            "autosave-only-on-server" => format!("Autosave only on server: {b}."),
            "description" => format!("Server description: {s}"),
            "ignore-player-limit-for-returning-players" => {
                format!("Ignore player limit for returning players: {b}.")
            }
            "max-players" => n.to_string(),
            "max-upload-slots" => format!("{n} slots."),
            "max-upload-speed" => format!("{n} kilobytes per second."),
            "name" => format!("Server name: {s}"),
            "only-admins-can-pause" => format!("Only admins can pause: {b}."),
            "password" if s.is_empty() => "The server currently has no password.".to_string(),
            "password" => "The server currently has a password.".to_string(),
            "require-user-verification" => format!("Verify user identity: {b}."),
            "tags" => format!(
                "Server tags: {}",
                v.as_array()
                    .map(|a| a
                        .iter()
                        .filter_map(|t| t.as_str())
                        .collect::<Vec<_>>()
                        .join(" "))
                    .unwrap_or_default()
            ),
            "visibility-lan" => format!("LAN visibility: {b}."),
            "visibility-public" => format!("Public visibility: {b}."),
            _ => format!("Steam visibility: {b}."),
        })
    }

    fn config_set(&mut self, k: &str, value: &str) -> String {
        let Some(key) = config_key(k) else {
            return nl(format!("Unknown option \"{k}\"."));
        };
        let v = match key {
            "description" | "name" | "game_password" => Value::String(value.to_string()),
            "allow_commands" => Value::String(value.to_string()),
            "tags" => Value::Array(
                value
                    .split(' ')
                    .map(|t| Value::String(t.to_string()))
                    .collect(),
            ),
            _ => {
                if let Ok(n) = value.parse::<u64>() {
                    json!(n)
                } else if let Ok(b) = value.parse::<bool>() {
                    json!(b)
                } else {
                    return nl(format!("Invalid value \"{value}\"."));
                }
            }
        };
        self.set_setting(key, v);
        self.write_settings();
        String::new()
    }

    fn players(&self, arg: &str) -> String {
        let online = self.online_names();
        match arg {
            "online" | "o" => {
                let mut s = nl(format!("Online players ({}):", online.len()));
                for n in &online {
                    s += &nl(format!("  {n} (online)"));
                }
                s
            }
            "count" | "c" => nl(format!("Players ({}):", self.state.players.len())),
            _ => {
                let mut s = nl(format!("Players ({}):", self.state.players.len()));
                for p in &self.state.players {
                    let on = if self.is_online(&p.name) {
                        " (online)"
                    } else {
                        ""
                    };
                    s += &nl(format!("  {}{on}", p.name));
                }
                s
            }
        }
    }

    fn whitelist_cmd(&mut self, rest: &str) -> String {
        let (verb, arg) = rest.split_once(' ').unwrap_or((rest, ""));
        let arg = arg.trim();
        let has = |l: &[String], n: &str| l.iter().any(|x| x.eq_ignore_ascii_case(n));
        match verb {
            "add" if !arg.is_empty() => {
                if !has(&self.whitelist, arg) {
                    self.whitelist.push(arg.to_string());
                    self.write_lists();
                }
                nl(format!("Player {arg} added to the whitelist."))
            }
            "remove" if !arg.is_empty() => {
                self.whitelist.retain(|x| !x.eq_ignore_ascii_case(arg));
                self.write_lists();
                nl(format!("Player {arg} removed from the whitelist."))
            }
            "get" if !arg.is_empty() => {
                if has(&self.whitelist, arg) {
                    nl(format!("{arg} is whitelisted."))
                } else {
                    nl(format!("{arg} is not whitelisted."))
                }
            }
            "get" => nl(format!(
                "Whitelisted players: {}",
                self.whitelist.join(", ")
            )),
            "clear" => {
                self.whitelist.clear();
                self.write_lists();
                nl("Whitelist cleared.")
            }
            "enable" => {
                self.use_whitelist = true;
                nl("Whitelist enabled.")
            }
            "disable" => {
                self.use_whitelist = false;
                nl("Whitelist disabled.")
            }
            "" => nl("Usage: /whitelist add|remove|get|clear|enable|disable <player>"),
            name => {
                if !has(&self.whitelist, name) {
                    self.whitelist.push(name.to_string());
                    self.write_lists();
                }
                nl(format!("Player {name} added to the whitelist."))
            }
        }
    }

    fn ban(&mut self, name: &str, reason: &str) -> String {
        let reason = if reason.is_empty() {
            "unspecified"
        } else {
            reason
        };
        if !self.bans.iter().any(|(b, _)| b.eq_ignore_ascii_case(name)) {
            self.bans.push((name.to_string(), reason.to_string()));
            self.write_lists();
        }
        if self.is_online(name) {
            let _ = self.leave(name, true, "banned");
            self.log.event(
                "BAN",
                &format!("{name} was banned by <server>. Reason: {reason}."),
            );
        } else {
            self.log.event(
                "BAN",
                &format!("{name} (not on map) was banned by <server>. Reason: {reason}."),
            );
        }
        let index = self.player_index(name);
        self.raise(
            "on_player_banned",
            json!({"player_index": index, "player_name": name, "reason": reason}),
        );
        String::new()
    }

    fn unban(&mut self, name: &str) -> String {
        let before = self.bans.len();
        self.bans.retain(|(b, _)| !b.eq_ignore_ascii_case(name));
        if self.bans.len() == before {
            return nl(format!("{name} is not banned."));
        }
        self.write_lists();
        self.log
            .event("UNBANNED", &format!("{name} was unbanned by <server>."));
        let index = self.player_index(name);
        self.raise(
            "on_player_unbanned",
            json!({"player_index": index, "player_name": name}),
        );
        String::new()
    }

    fn banlist_cmd(&mut self, rest: &str) -> String {
        let (verb, arg) = rest.split_once(' ').unwrap_or((rest, ""));
        let arg = arg.trim();
        match verb {
            "add" if !arg.is_empty() => {
                let (n, r) = arg.split_once(' ').unwrap_or((arg, ""));
                self.ban(n, r)
            }
            "remove" if !arg.is_empty() => self.unban(arg),
            "get" if !arg.is_empty() => {
                if self.bans.iter().any(|(b, _)| b.eq_ignore_ascii_case(arg)) {
                    nl(format!("{arg} is banned."))
                } else {
                    nl(format!("{arg} is not banned."))
                }
            }
            "get" | "" => {
                let names: Vec<&str> = self.bans.iter().map(|(b, _)| b.as_str()).collect();
                nl(format!("Banned players: {}", names.join(", ")))
            }
            "clear" => {
                self.bans.clear();
                self.write_lists();
                nl("Banlist cleared.")
            }
            _ => nl("Usage: /banlist add|remove|get|clear <player>"),
        }
    }

    fn promote(&mut self, name: &str) -> String {
        if self.admins.iter().any(|a| a.eq_ignore_ascii_case(name)) {
            return if self.is_online(name) {
                nl(format!("{name} is already an admin."))
            } else {
                nl(format!(
                    "{name} is already in the admin list and will be promoted upon joining the game."
                ))
            };
        }
        self.admins.push(name.to_string());
        self.write_lists();
        if self.is_online(name) {
            self.log.event(
                "PROMOTE",
                &format!("{name} was promoted to admin by <server>."),
            );
        } else {
            self.log.event("PROMOTE", &format!("{name} was added to the admin list by <server> and will be promoted upon joining the game."));
        }
        if let Some(i) = self.player_index(name) {
            self.lua.set_admin(i, true);
            self.raise("on_player_promoted", json!({"player_index": i}));
        }
        String::new()
    }

    fn demote(&mut self, name: &str) -> String {
        if !self.admins.iter().any(|a| a.eq_ignore_ascii_case(name)) {
            return nl(format!("{name} is not in the admin list."));
        }
        self.admins.retain(|a| !a.eq_ignore_ascii_case(name));
        self.write_lists();
        self.log.event(
            "DEMOTE",
            &format!("{name} was demoted from admin by <server>."),
        );
        if let Some(i) = self.player_index(name) {
            self.lua.set_admin(i, false);
            self.raise("on_player_demoted", json!({"player_index": i}));
        }
        String::new()
    }

    fn time_text(&self) -> String {
        let secs = self.tick() / 60;
        let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
        let unit = |n: u64, w: &str| {
            if n == 1 {
                format!("1 {w}")
            } else {
                format!("{n} {w}s")
            }
        };
        nl(match (h, m) {
            (0, 0) => unit(s, "second"),
            (0, _) => format!("{} and {}", unit(m, "minute"), unit(s, "second")),
            _ => format!(
                "{}, {} and {}",
                unit(h, "hour"),
                unit(m, "minute"),
                unit(s, "second")
            ),
        })
    }

    async fn script(&mut self, cmd: &str, code: &str) -> String {
        if matches!(cmd, "c" | "command" | "mc" | "measured-command") {
            self.log
                .event("COMMAND", &format!("<server> (command): {code}"));
        }
        let gate =
            std::env::var("FACTORIO_STANDIN_ACHIEVEMENT_GATE").unwrap_or_else(|_| "body".into());
        if self.state.achievements && gate != "off" {
            let full = format!("/{cmd} {code}");
            if self.gate_pending.as_deref() != Some(full.as_str()) {
                self.gate_pending = Some(full);
                return if gate == "console" {
                    self.log.event("WARNING", texts::ACHIEVEMENTS_GATE);
                    String::new()
                } else {
                    nl(texts::ACHIEVEMENTS_GATE)
                };
            }
            self.gate_pending = None;
            self.state.achievements = false;
        }
        self.lua_sync();
        if self.exit.is_some() {
            return String::new();
        }
        match self.lua.command(code) {
            Ok(body) => body,
            Err((e, body)) => {
                self.log.dated(&e);
                body + &nl(e)
            }
        }
    }

    /// `/name parameters` for a command the script added: runs with `player_index = nil`
    /// (console/RCON); an error in it crashes the game like an event handler's.
    fn custom_command(&mut self, name: &str, parameter: &str) -> String {
        self.run_custom_command(name, parameter, None)
    }

    /// A command the script added, run from the console (`player` None) or typed by a player.
    fn run_custom_command(&mut self, name: &str, parameter: &str, player: Option<u32>) -> String {
        self.lua_sync();
        if self.exit.is_some() {
            return String::new();
        }
        let p = (!parameter.is_empty()).then_some(parameter);
        match self.lua.custom_command(name, p, player) {
            Ok(body) => body,
            Err(e) => {
                self.crash(&e);
                String::new()
            }
        }
    }

    /// `/standin subspace count`: what the stand-in Subspace Storage mod holds, as JSON
    /// `{"<name>:<quality>": {"injected", "stored", "extracted"}}`. `/standin subspace
    /// orders-then-hang <ms>`: the mod sends its orders now, then the game thread hangs (so a
    /// test can stop the game between a grant and its `Import`).
    fn subspace_read(&mut self, verb: &str, tail: &[&str]) -> Result<String, String> {
        if !self.lua.has_mod("subspace_storage") {
            return Err("the subspace_storage mod is not loaded".into());
        }
        self.lua_sync();
        if self.exit.is_some() {
            return Ok(String::new());
        }
        match verb {
            "count" => self
                .lua
                .command("__subspace_storage__ rcon.print(standin_subspace.count())")
                .map_err(|(e, _)| e),
            _ => {
                let ms = tail
                    .first()
                    .and_then(|m| m.parse::<u64>().ok())
                    .ok_or("usage: /standin subspace orders-then-hang <ms>")?;
                self.lua
                    .command("__subspace_storage__ standin_subspace.orders()")
                    .map_err(|(e, _)| e)?;
                self.hang(Duration::from_millis(ms));
                Ok(nl("ok"))
            }
        }
    }

    /// `/standin subspace put|request <item> <count> [quality]`: drive the stand-in Subspace
    /// Storage mod's injector / extractor counters (research/plugins.md §5.1 item 10).
    fn subspace(&mut self, verb: &str, tail: &[&str]) -> Result<(), String> {
        let usage = "usage: /standin subspace put|request <item> <count> [quality] | count | orders-then-hang <ms>";
        let ok_name = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        };
        let (Some(item), Some(count)) = (tail.first(), tail.get(1)) else {
            return Err(usage.into());
        };
        let count: u64 = count.parse().map_err(|_| usage)?;
        let quality = tail.get(2).copied().unwrap_or("normal");
        if !ok_name(item) || !ok_name(quality) {
            return Err(usage.into());
        }
        if !self.lua.has_mod("subspace_storage") {
            return Err("the subspace_storage mod is not loaded".into());
        }
        self.lua_sync();
        if self.exit.is_some() {
            return Ok(());
        }
        let code =
            format!("__subspace_storage__ standin_subspace.{verb}('{item}', {count}, '{quality}')");
        self.lua.command(&code).map(|_| ()).map_err(|(e, _)| e)
    }

    /// `/standin research <tech> [level] [progress]`; `+<p>` adds to the current progress (as
    /// labs do).
    fn research(&mut self, tech: &str, tail: &[&str]) -> Result<(), String> {
        let level = match tail.first() {
            Some(l) => Some(
                l.parse::<u32>()
                    .map_err(|_| "usage: /standin research <tech> [level] [progress]")?,
            ),
            None => None,
        };
        let relative = tail.get(1).is_some_and(|p| p.starts_with('+'));
        let progress = match tail.get(1).map(|p| p.trim_start_matches('+')) {
            Some(p) => Some(
                p.parse::<f64>()
                    .ok()
                    .filter(|p| p.is_finite() && *p >= 0.0)
                    .ok_or("usage: /standin research <tech> [level] [progress]")?,
            ),
            None => None,
        };
        self.lua_sync();
        if self.exit.is_some() {
            return Ok(());
        }
        let r = self.lua.research(tech, level, progress, relative);
        self.lua_result(r);
        Ok(())
    }

    /// Sim-only verbs (§8.9). Real managers never send `/standin`; the real server would answer
    /// "Unknown command".
    async fn standin(&mut self, rest: &str) -> String {
        let mut words = rest.split_whitespace();
        let verb = words.next().unwrap_or("");
        let name = words.next().unwrap_or("").to_string();
        let tail: Vec<&str> = words.collect();
        let text = tail.join(" ");
        if verb == "subspace" && matches!(name.as_str(), "count" | "orders-then-hang") {
            return self.subspace_read(&name, &tail).unwrap_or_else(nl);
        }
        let r: Result<(), String> = match verb {
            "join" if !name.is_empty() => {
                let pw = tail
                    .iter()
                    .position(|w| *w == "--password")
                    .and_then(|i| tail.get(i + 1).copied());
                self.join(&name, pw)
            }
            "leave" if !name.is_empty() => {
                let reason = tail
                    .iter()
                    .position(|w| *w == "--reason")
                    .and_then(|i| tail.get(i + 1).copied())
                    .unwrap_or("quit");
                self.leave(&name, tail.contains(&"--silent"), reason)
            }
            "chat" if !name.is_empty() => {
                self.log.event("CHAT", &format!("{name}: {text}"));
                let index = self.player_index(&name);
                self.raise(
                    "on_console_chat",
                    json!({"player_index": index, "message": text}),
                );
                Ok(())
            }
            "ban" if !name.is_empty() => {
                self.ban(&name, &text);
                Ok(())
            }
            "unban" if !name.is_empty() => {
                self.unban(&name);
                Ok(())
            }
            "promote" if !name.is_empty() => {
                self.promote(&name);
                Ok(())
            }
            "demote" if !name.is_empty() => {
                self.demote(&name);
                Ok(())
            }
            "command" if !name.is_empty() => {
                self.log
                    .event("COMMAND", &format!("{name} (command): {text}"));
                // `/standin command <player> /<cmd> <params>`: a command a script added, typed by
                // that player (runs with their `player_index`).
                if let Some(line) = text.strip_prefix('/') {
                    let (cmd, params) = line.split_once(' ').unwrap_or((line, ""));
                    if self.lua.has_command(cmd) {
                        let index = self.player_index(&name);
                        self.run_custom_command(cmd, params.trim(), index);
                    }
                }
                Ok(())
            }
            // Sim-only: what `game.print` / `player.print` showed, one message a line.
            "printed" => return self.lua.printed().iter().map(nl).collect(),
            "refuse" if !name.is_empty() => {
                self.refuse_new(
                    &name,
                    if text.is_empty() {
                        "UserVerificationMissing"
                    } else {
                        &text
                    },
                );
                Ok(())
            }
            "crash" => {
                let msg = rest.trim_start().strip_prefix("crash").unwrap_or("").trim();
                self.crash(msg);
                Ok(())
            }
            "tick" => match name.parse::<u64>() {
                Ok(n) => {
                    self.advance_ticks(n);
                    Ok(())
                }
                Err(_) => Err("usage: /standin tick <n>".into()),
            },
            // Sim-only fault: the next save is written, then the process dies (SIGKILL) before
            // it prints `Saving finished` — a kill in that instant, made reproducible.
            "die-after-save-write" => {
                self.die_after_save_write = true;
                Ok(())
            }
            "hang" => match name.parse::<u64>() {
                Ok(ms) => {
                    self.hang(Duration::from_millis(ms));
                    Ok(())
                }
                Err(_) => Err("usage: /standin hang <ms>".into()),
            },
            // Memory that is used and kept (a leak), to be killed by a memory limit.
            "alloc" => match name.parse::<usize>() {
                Ok(mb) => {
                    let block = Box::leak(vec![0u8; mb << 20].into_boxed_slice());
                    for page in block.chunks_mut(4096) {
                        page[0] = 1;
                    }
                    Ok(())
                }
                Err(_) => Err("usage: /standin alloc <MB>".into()),
            },
            "research" if !name.is_empty() => self.research(&name, &tail),
            "give" if !name.is_empty() => {
                let usage = "usage: /standin give <player> <item> <count>";
                let (Some(item), Some(count)) = (tail.first(), tail.get(1)) else {
                    return nl(usage);
                };
                let Ok(count) = count.parse::<u32>() else {
                    return nl(usage);
                };
                self.lua_sync();
                if self.exit.is_some() {
                    return String::new();
                }
                return match self.lua.give(&name, item, count) {
                    Ok(n) => nl(format!("inserted {n}")),
                    Err(e) => nl(e),
                };
            }
            // Sim-only: the player's controller and items, as JSON.
            "inventory" if !name.is_empty() => {
                self.lua_sync();
                if self.exit.is_some() {
                    return String::new();
                }
                return match self.lua.inventory(&name) {
                    Ok(text) => nl(text),
                    Err(e) => nl(e),
                };
            }
            "subspace" if matches!(name.as_str(), "put" | "request") => {
                self.subspace(&name, &tail)
            }
            _ => Err(
                "usage: /standin join|leave|chat|command|printed|refuse|crash|die-after-save-write|tick|hang|alloc|research|ban|unban|promote|demote|subspace|give|inventory …".into(),
            ),
        };
        match r {
            Ok(()) => nl("ok"),
            Err(e) => nl(e),
        }
    }

    pub async fn command(&mut self, text: &str, origin: &Origin) -> String {
        let Some(cmdline) = text.strip_prefix('/') else {
            let _ = origin;
            self.log.event("CHAT", &format!("<server>: {text}"));
            self.raise("on_console_chat", json!({"message": text}));
            return String::new();
        };
        let (cmd, rest) = cmdline.split_once(' ').unwrap_or((cmdline, ""));
        let rest = rest.trim();
        let first = rest.split_whitespace().next().unwrap_or("");
        let after_first = rest.split_once(' ').map(|(_, r)| r.trim()).unwrap_or("");
        match cmd {
            "players" => self.players(first),
            "admins" => {
                let mut s = nl(format!("Admins ({}):", self.admins.len()));
                for a in &self.admins {
                    let on = if self.is_online(a) { " (online)" } else { "" };
                    s += &nl(format!("  {a}{on}"));
                }
                s
            }
            "promote" if !first.is_empty() => self.promote(first),
            "demote" if !first.is_empty() => self.demote(first),
            "ban" if !first.is_empty() => self.ban(first, after_first),
            "unban" if !first.is_empty() => self.unban(first),
            "kick" if !first.is_empty() => {
                if !self.is_online(first) {
                    return nl(texts::player_not_found(first));
                }
                let _ = self.leave(first, true, "kicked");
                let reason = if after_first.is_empty() {
                    "unspecified"
                } else {
                    after_first
                };
                self.log.event(
                    "KICK",
                    &format!("{first} was kicked by <server>. Reason: {reason}."),
                );
                let index = self.player_index(first);
                self.raise(
                    "on_player_kicked",
                    json!({"player_index": index, "reason": reason}),
                );
                String::new()
            }
            "whitelist" => self.whitelist_cmd(rest),
            "banlist" | "bans" => self.banlist_cmd(rest),
            "server-save" | "save" => {
                let path = if first.is_empty() {
                    match &self.loaded {
                        Some(p) => p.clone(),
                        None => {
                            self.log.bare(texts::NO_DEFAULT_SAVE);
                            return nl(texts::NO_DEFAULT_SAVE);
                        }
                    }
                } else {
                    let n = first.strip_suffix(".zip").unwrap_or(first);
                    if n.contains('/') || n.contains("..") {
                        return nl("Invalid save name.");
                    }
                    self.write_dir.join("saves").join(format!("{n}.zip"))
                };
                self.save_game(&path, None).await;
                String::new()
            }
            "quit" => {
                if !self.quit_ignored() {
                    self.schedule_quit();
                }
                String::new()
            }
            "config" => {
                let mut w = rest.splitn(3, ' ');
                match (w.next(), w.next(), w.next()) {
                    (Some("get"), Some(k), _) => self.config_get(k),
                    (Some("set"), Some(k), Some(v)) => self.config_set(k, v),
                    _ => nl("Usage: /config get|set <option> [value]"),
                }
            }
            "version" => nl(&self.ident.version),
            "time" => self.time_text(),
            "seed" => nl(self.state.seed.to_string()),
            "help" | "h" => nl(
                "Available commands: /admins, /ban, /banlist, /c, /config, /demote, /help, /kick, /mc, /players, /promote, /quit, /sc, /seed, /server-save, /time, /unban, /version, /whitelist",
            ),
            "c" | "command" | "sc" | "silent-command" | "mc" | "measured-command" => {
                self.script(cmd, rest).await
            }
            "standin" => self.standin(rest).await,
            other if self.lua.has_command(other) => self.custom_command(other, rest),
            other => nl(texts::unknown_command(other)),
        }
    }
}
