//! The `--start-server*` mode: startup transcript, UDP game socket, RCON, the "game thread"
//! (one task owning all state; RCON, stdin, signals and the sim-only script talk to it over a
//! channel, so commands run in arrival order like on the real game thread), saves, autosaves,
//! the empty-server save and the exact shutdown tail (research/factorio.md §3, §8.5–§8.9).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot, watch};

use crate::install::Identity;
use crate::log::Log;
use crate::save::{self, GameState};
use crate::texts;

/// Sim-only timing knobs (env, read once). `FACTORIO_STANDIN_SPEED` scales every built-in delay
/// (0.05 = twenty times faster); the `_MS`/`_SECS` knobs set one delay exactly.
#[derive(Clone, Debug)]
pub struct Timing {
    pub speed: f64,
    pub startup: Duration,
    pub save: Duration,
    pub empty_save: Duration,
    pub autosave: Option<Duration>,
}

fn env_f64(name: &str) -> Option<f64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

impl Timing {
    pub fn from_env() -> Timing {
        let speed = env_f64("FACTORIO_STANDIN_SPEED").unwrap_or(1.0).max(0.0);
        let ms = |name: &str, default: f64| {
            Duration::from_secs_f64(env_f64(name).unwrap_or(default * speed).max(0.0) / 1000.0)
        };
        Timing {
            speed,
            startup: ms("FACTORIO_STANDIN_STARTUP_MS", 150.0),
            save: ms("FACTORIO_STANDIN_SAVE_MS", 40.0),
            empty_save: ms("FACTORIO_STANDIN_EMPTY_SAVE_MS", 1000.0),
            autosave: env_f64("FACTORIO_STANDIN_AUTOSAVE_SECS")
                .map(|s| Duration::from_secs_f64(s.max(0.001))),
        }
    }

    pub fn scaled(&self, ms: f64) -> Duration {
        Duration::from_secs_f64(ms * self.speed / 1000.0)
    }
}

/// Which parts of the real contract the sim should refuse or break (`FACTORIO_STANDIN_FAIL`),
/// and which stop requests it ignores (`FACTORIO_STANDIN_IGNORE`), to test escalation.
pub fn env_list(name: &str) -> Vec<String> {
    std::env::var(name)
        .map(|v| {
            v.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

pub enum SaveSource {
    File(String),
    Latest,
    /// `--start-server-load-scenario [MOD/]NAME` with the new game's seed.
    Scenario {
        name: String,
        seed: u64,
    },
}

pub struct ServerOpts {
    pub log: Log,
    pub ident: Identity,
    pub timing: Timing,
    pub write_dir: PathBuf,
    pub install: PathBuf,
    pub mods_dir: PathBuf,
    pub cwd: PathBuf,
    pub source: SaveSource,
    pub game_bind: String,
    pub rcon: Option<(String, String)>,
    pub settings: (PathBuf, bool),
    pub adminlist: (PathBuf, bool),
    pub whitelist: (PathBuf, bool),
    pub banlist: (PathBuf, bool),
    pub use_whitelist: bool,
    pub server_id: Option<PathBuf>,
}

pub enum Origin {
    Stdin,
    Rcon,
    Script,
}

pub enum Msg {
    Command {
        text: String,
        origin: Origin,
        reply: Option<oneshot::Sender<String>>,
    },
    Signal(&'static str),
    StdinEof,
    RconAccepted(SocketAddr),
}

struct Online {
    name: String,
    peer: u32,
}

pub struct Game {
    pub log: Log,
    pub ident: Identity,
    pub timing: Timing,
    pub write_dir: PathBuf,
    pub state: GameState,
    pub loaded: Option<PathBuf>,
    pub scenario: Option<String>,
    pub settings: Value,
    settings_path: PathBuf,
    pub admins: Vec<String>,
    pub whitelist: Vec<String>,
    pub bans: Vec<(String, String)>,
    paths: (PathBuf, PathBuf, PathBuf),
    pub use_whitelist: bool,
    online: Vec<Online>,
    next_peer: u32,
    mp_save: u32,
    tick_base: u64,
    running_since: Option<Instant>,
    autosave_base: Duration,
    empty_save_at: Option<Instant>,
    pub gate_pending: Option<String>,
    ignore: Vec<String>,
    pub exit: Option<i32>,
    udp: Vec<std::net::UdpSocket>,
    rcon_closed: Option<watch::Sender<bool>>,
    mods_dir: PathBuf,
    hang_until: Option<Instant>,
    /// `/standin die-after-save-write`: SIGKILL between the next save's commit and its
    /// `Saving finished` line.
    pub die_after_save_write: bool,
    after_reply: Option<After>,
    /// The level script's Lua state (research/plugins.md §5.1).
    pub lua: crate::lua::Scripts,
    /// The last tick whose `on_tick`/`on_nth_tick` handlers ran.
    lua_tick: u64,
}

fn read_json(path: &Path, explicit: bool) -> Result<Option<Value>, String> {
    match std::fs::read_to_string(path) {
        Ok(s) => serde_json::from_str(&s)
            .map(Some)
            .map_err(|e| e.to_string()),
        Err(_) if !explicit => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

fn names(v: &Option<Value>) -> Vec<String> {
    v.as_ref()
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|x| {
                    x.as_str()
                        .map(String::from)
                        .or_else(|| x.get("username").and_then(|u| u.as_str()).map(String::from))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn default_settings() -> Value {
    json!({
        "name": "", "description": "", "tags": [], "max_players": 0,
        "visibility": {"public": true, "lan": true}, "game_password": "",
        "require_user_verification": true, "max_upload_in_kilobytes_per_second": 0,
        "max_upload_slots": 5, "ignore_player_limit_for_returning_players": false,
        "allow_commands": "admins-only", "autosave_interval": 10, "autosave_slots": 5,
        "afk_autokick_interval": 0, "auto_pause": true, "only_admins_can_pause_the_game": true,
        "autosave_only_on_server": true, "non_blocking_saving": false,
    })
}

fn merge(base: &mut Value, over: &Value) {
    if let (Some(b), Some(o)) = (base.as_object_mut(), over.as_object()) {
        for (k, v) in o {
            if !k.starts_with("_comment") {
                b.insert(k.clone(), v.clone());
            }
        }
    }
}

const SMM: &str = "ServerMultiplayerManager.cpp:808";

impl Game {
    fn state_line(&self, tick: &str, from: &str, to: &str) {
        let src = if self.ident.is_1_1() {
            "ServerMultiplayerManager.cpp:795"
        } else {
            SMM
        };
        self.log.info(
            src,
            &format!("updateTick({tick}) changing state from({from}) to({to})"),
        );
    }

    pub fn tick(&self) -> u64 {
        self.tick_base
            + self
                .running_since
                .map(|s| (s.elapsed().as_secs_f64() * 60.0) as u64)
                .unwrap_or(0)
    }

    fn running_time(&self) -> Duration {
        self.autosave_base + self.running_since.map(|s| s.elapsed()).unwrap_or_default()
    }

    fn pause(&mut self) {
        if let Some(s) = self.running_since.take() {
            self.tick_base += (s.elapsed().as_secs_f64() * 60.0) as u64;
            self.autosave_base += s.elapsed();
        }
    }

    fn resume(&mut self) {
        if self.running_since.is_none() {
            self.running_since = Some(Instant::now());
        }
    }

    pub fn setting_bool(&self, k: &str) -> bool {
        self.settings
            .get(k)
            .and_then(|v| v.as_bool())
            .unwrap_or(false)
    }

    pub fn online_names(&self) -> Vec<String> {
        self.online.iter().map(|o| o.name.clone()).collect()
    }

    pub fn is_online(&self, name: &str) -> bool {
        self.online
            .iter()
            .any(|o| o.name.eq_ignore_ascii_case(name))
    }

    fn heartbeat(&self) -> u64 {
        (self.log.elapsed() * 60.0) as u64
    }

    pub fn write_lists(&self) {
        let (a, w, b) = &self.paths;
        let _ = std::fs::write(
            a,
            serde_json::to_string_pretty(&self.admins).unwrap_or_default() + "\n",
        );
        let _ = std::fs::write(
            w,
            serde_json::to_string_pretty(&self.whitelist).unwrap_or_default() + "\n",
        );
        let bans: Vec<Value> = self
            .bans
            .iter()
            .map(|(u, r)| json!({"username": u, "reason": r}))
            .collect();
        let _ = std::fs::write(
            b,
            serde_json::to_string_pretty(&bans).unwrap_or_default() + "\n",
        );
    }

    pub fn write_settings(&self) {
        let _ = std::fs::write(
            &self.settings_path,
            serde_json::to_string_pretty(&self.settings).unwrap_or_default() + "\n",
        );
    }

    fn save_zip(&mut self, path: &Path) -> std::io::Result<PathBuf> {
        self.lua_sync();
        self.state.tick = self.tick();
        self.state.lua = Some(self.lua.snapshot().map_err(std::io::Error::other)?);
        save::write_tmp(path, &self.state, self.ident.parts())
    }

    /// Run the handlers of every tick the game advanced since the last call (none while
    /// paused), so Lua sees the current `game.tick` before anything else enters it.
    pub fn lua_sync(&mut self) {
        if self.exit.is_some() {
            return;
        }
        let now = self.tick();
        if now <= self.lua_tick {
            self.lua.set_tick(now);
            return;
        }
        if self.lua.wants_ticks() {
            while self.lua_tick < now {
                self.lua_tick += 1;
                if let Err(e) = self.lua.tick(self.lua_tick) {
                    self.crash_at(self.lua_tick, &e);
                    return;
                }
            }
        }
        self.lua_tick = now;
        self.lua.set_tick(now);
    }

    /// Turn the result of a Lua entry point into a crash when a handler failed.
    pub fn lua_result(&mut self, r: Result<(), String>) {
        if let Err(e) = r {
            self.crash(&e);
        }
    }

    /// Raise an engine event (after catching up on ticks); a handler error crashes the game.
    pub fn raise(&mut self, event: &str, data: Value) {
        self.lua_sync();
        if self.exit.is_some() {
            return;
        }
        let r = self.lua.raise(event, data);
        self.lua_result(r);
    }

    pub fn player_index(&self, name: &str) -> Option<u32> {
        self.state
            .players
            .iter()
            .find(|p| p.name.eq_ignore_ascii_case(name))
            .map(|p| p.index)
    }

    pub fn is_admin(&self, name: &str) -> bool {
        self.admins.iter().any(|a| a.eq_ignore_ascii_case(name))
    }

    /// `/server-save`, autosave and empty-server save: `Saving game as` / `Saving to _autosaveN`
    /// … `Saving finished`, the file going through `.tmp.zip`.
    pub async fn save_game(&mut self, path: &Path, autosave_slot: Option<u32>) {
        match autosave_slot {
            Some(k) => {
                let mode = if self.setting_bool("non_blocking_saving") {
                    "non-blocking"
                } else {
                    "blocking"
                };
                self.log.info(
                    "AppManager.cpp:323",
                    &format!("Saving to _autosave{k} ({mode})."),
                );
            }
            None => {
                let src = if self.ident.is_1_1() {
                    "AppManager.cpp:394"
                } else {
                    "AppManager.cpp:416"
                };
                self.log
                    .info(src, &format!("Saving game as {}", path.display()));
            }
        }
        match self.save_zip(path) {
            Ok(tmp) => {
                tokio::time::sleep(self.timing.save).await;
                if let Err(e) = save::commit(&tmp, path) {
                    self.log
                        .error("AppManagerStates.cpp:2103", &format!("Saving failed: {e}"));
                    return;
                }
                if self.die_after_save_write {
                    // SAFETY: plain syscall on our own pid.
                    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
                }
            }
            Err(e) => {
                self.log
                    .error("AppManagerStates.cpp:2103", &format!("Saving failed: {e}"));
                return;
            }
        }
        let src = match (autosave_slot, self.ident.is_1_1()) {
            (_, true) => "AppManagerStates.cpp:1802",
            (Some(_), false) => "AppManagerStates.cpp:2103",
            (None, false) => "AppManager.cpp:419",
        };
        self.log.info(src, "Saving finished");
    }

    /// The quit/signal save (`MainLoop.cpp`: `Saving map as` + progress lines, no `Saving finished`).
    async fn quit_save(&mut self) {
        let path = match (&self.loaded, &self.scenario) {
            (Some(p), _) => p.clone(),
            (None, Some(s)) => self.write_dir.join("saves").join(format!("{s}.zip")),
            (None, None) => return,
        };
        self.log.info(
            "MainLoop.cpp:437",
            &format!("Saving map as {}", path.display()),
        );
        let tmp = match self.save_zip(&path) {
            Ok(t) => t,
            Err(e) => {
                self.log
                    .error("MainLoop.cpp:448", &format!("Saving failed: {e}"));
                return;
            }
        };
        self.log
            .info("MainLoop.cpp:448", "Saving progress: 0.033670%");
        // Big saves print progress about once a second (§3.6).
        let total = self.timing.save;
        let started = Instant::now();
        while started.elapsed() + Duration::from_secs(1) < total {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let pct = started.elapsed().as_secs_f64() / total.as_secs_f64() * 100.0;
            self.log
                .info("MainLoop.cpp:448", &format!("Saving progress: {pct:.6}%"));
        }
        tokio::time::sleep(total.saturating_sub(started.elapsed())).await;
        if save::commit(&tmp, &path).is_ok() {
            self.log
                .info("MainLoop.cpp:448", "Saving progress: 100.000000%");
        }
    }

    /// `/quit`, SIGINT, SIGTERM: save to the loaded file, then the exact 2.0.47 tail of §3.8.
    pub async fn shutdown(&mut self) {
        self.quit_save().await;
        let t = self.tick().to_string();
        self.log.info(
            "ServerMultiplayerManager.cpp:119",
            "Disconnecting multiplayer connection.",
        );
        self.state_line(&t, "InGame", "DisconnectingScheduled");
        tokio::time::sleep(self.timing.scaled(33.0)).await;
        self.state_line(&t, "DisconnectingScheduled", "Disconnecting");
        tokio::time::sleep(self.timing.scaled(33.0)).await;
        self.state_line(&t, "Disconnecting", "Disconnected");
        self.log.info(
            "ServerMultiplayerManager.cpp:146",
            "Quitting multiplayer connection.",
        );
        self.state_line(&t, "Disconnected", "Closed");
        self.log.info(
            "ServerMultiplayerManager.cpp:166",
            "Deleting active scenario (global = true).",
        );
        if let Some(c) = self.rcon_closed.take() {
            let _ = c.send(true);
        }
        self.log.info("UDPSocket.cpp:232", "Closing socket");
        self.log.info("UDPSocket.cpp:262", "Socket closed");
        self.log.info("UDPSocket.cpp:232", "Closing socket");
        self.udp.clear();
        tokio::time::sleep(self.timing.scaled(30.0)).await;
        self.log.info("UDPSocket.cpp:232", "Closing socket");
        self.log.info("UDPSocket.cpp:262", "Socket closed");
        write_mod_list(&self.mods_dir, &self.ident.version);
        tokio::time::sleep(self.timing.scaled(40.0)).await;
        self.log.plain("Goodbye");
        self.exit = Some(self.ident.graceful_exit_code());
    }

    /// `/quit` (stdin/RCON): `Quitting: remote-quit.` then the shutdown.
    pub async fn remote_quit(&mut self) {
        self.log.plain("Quitting: remote-quit.");
        self.shutdown().await;
    }

    /// Crash (sim-only trigger): the real multi-line transcript of §3.7, no save, exit 1.
    pub fn crash(&mut self, message: &str) {
        let t = self.tick();
        self.crash_at(t, message);
    }

    fn crash_at(&mut self, t: u64, message: &str) {
        if self.exit.is_some() {
            return;
        }
        let msg = if message.is_empty() {
            "The mod Standin Crash (0.1.0) caused a non-recoverable error.\nPlease report this error to the mod author.\n\nError while running event standin-crash::on_tick (ID 0)\nsimulated crash\nstack traceback:\n[C]: in function 'error'\n__standin-crash__/control.lua:1: in function <__standin-crash__/control.lua:1>".to_string()
        } else {
            message.to_string()
        };
        self.log.error(
            "MainLoop.cpp:1510",
            &format!("Exception at tick {t}: {msg}"),
        );
        self.log.error(
            "ServerMultiplayerManager.cpp:84",
            &format!("MultiplayerManager failed: \"{msg}\""),
        );
        self.state_line(&t.to_string(), "InGame", "Failed");
        self.log.plain("Quitting: multiplayer error.");
        self.exit = Some(1);
    }

    fn peer_addr() -> String {
        format!(
            "IP ADDR:({{127.0.0.1:{}}})",
            rand::random_range(40000..60000u32)
        )
    }

    /// `/standin join`: the real 2.0.47 engine join sequence plus `[JOIN]` on stdout (§3.5).
    pub fn join(&mut self, name: &str, password: Option<&str>) -> Result<(), String> {
        let addr = Self::peer_addr();
        self.log.plain(&format!(
            "ConnectionRequestReplyConfirm (type(ConnectionRequestReplyConfirm) ) from({addr})"
        ));
        let gp = self
            .settings
            .get("game_password")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string();
        let reason = if self.bans.iter().any(|(b, _)| b.eq_ignore_ascii_case(name)) {
            Some(texts::REFUSE_BANNED)
        } else if self.use_whitelist
            && !self.whitelist.is_empty()
            && !self.whitelist.iter().any(|w| w.eq_ignore_ascii_case(name))
        {
            Some(texts::REFUSE_NOT_WHITELISTED)
        } else if !gp.is_empty() && password.is_none() {
            Some("PasswordMissing")
        } else if !gp.is_empty() && password != Some(gp.as_str()) {
            Some("PasswordMismatch")
        } else if self.is_online(name) {
            Some("UserAlreadyConnected")
        } else {
            None
        };
        if let Some(r) = reason {
            self.refuse(name, r, &addr);
            return Err(format!("refused: {r}"));
        }
        self.empty_save_at = None;
        self.resume();
        let peer = self.next_peer;
        self.next_peer += 1;
        let t = self.tick().to_string();
        self.log.info(
            "ServerRouter.cpp:465",
            &format!("Replying to connectionRequest for address({addr})."),
        );
        self.log.info(
            "ServerSynchronizer.cpp:594",
            &format!(
                "nextHeartbeatSequenceNumber({}) adding peer({peer})",
                self.heartbeat()
            ),
        );
        self.state_line(&t, "InGame", "InGameSavingMap");
        let mp = self
            .write_dir
            .join("temp")
            .join(format!("mp-save-{}.zip", self.mp_save));
        self.mp_save += 1;
        let size = self
            .save_zip(&mp)
            .and_then(|tmp| save::commit(&tmp, &mp).map(|_| ()))
            .ok()
            .and_then(|_| std::fs::metadata(&mp).ok())
            .map(|m| m.len())
            .unwrap_or(0);
        self.log.info(
            "ServerMultiplayerManager.cpp:1039",
            &format!(
                "UpdateTick({t}) Serving map({}) for peer({peer}) size({size}) auxiliary(130) crc({})",
                mp.display(),
                rand::random::<u32>()
            ),
        );
        self.state_line(&t, "InGameSavingMap", "InGame");
        let states = [
            "Ready",
            "ConnectedWaitingForMap",
            "ConnectedDownloadingMap",
            "ConnectedLoadingMap",
            "TryingToCatchUp",
            "WaitingForCommandToStartSendingTickClosures",
        ];
        for w in states.windows(2) {
            self.peer_state(&t, peer, w[0], w[1]);
        }
        let (index, mode) = match self
            .state
            .players
            .iter()
            .find(|p| p.name.eq_ignore_ascii_case(name))
        {
            Some(_) => (0, "connect"),
            None => {
                let i = self.state.players.len() as u32 + 1;
                self.state.players.push(save::Player {
                    name: name.to_string(),
                    index: i,
                });
                (i, "create")
            }
        };
        let src = if self.ident.is_1_1() {
            "GameActionHandler.cpp:4996"
        } else {
            "GameActionHandler.cpp:4448"
        };
        self.log.info(
            src,
            &format!("UpdateTick ({t}) processed PlayerJoinGame peerID({peer}) playerIndex({index}) mode({mode})"),
        );
        self.log.event("JOIN", &format!("{name} joined the game"));
        let t2 = self.tick().to_string();
        self.peer_state(
            &t2,
            peer,
            "WaitingForCommandToStartSendingTickClosures",
            "InGame",
        );
        self.online.push(Online {
            name: name.to_string(),
            peer,
        });
        if let Some(i) = self.player_index(name) {
            let pname = self
                .state
                .players
                .iter()
                .find(|p| p.index == i)
                .map(|p| p.name.clone())
                .unwrap_or_default();
            self.lua_sync();
            self.lua.player(i, &pname, false, self.is_admin(name));
            if self.exit.is_none() {
                let r = self.lua.player_joined(i, mode == "create");
                self.lua_result(r);
            }
        }
        Ok(())
    }

    fn peer_state(&self, t: &str, peer: u32, a: &str, b: &str) {
        self.log.info(
            "ServerMultiplayerManager.cpp:978",
            &format!(
                "updateTick({t}) received stateChanged peerID({peer}) oldState({a}) newState({b})"
            ),
        );
    }

    pub fn refuse(&self, name: &str, reason: &str, addr: &str) {
        self.log.plain(&format!(
            "Refusing connection for address ({addr}), username ({name}). {reason}"
        ));
    }

    pub fn refuse_new(&self, name: &str, reason: &str) {
        let addr = Self::peer_addr();
        self.log.plain(&format!(
            "ConnectionRequestReplyConfirm (type(ConnectionRequestReplyConfirm) ) from({addr})"
        ));
        self.refuse(name, reason, &addr);
    }

    /// `/standin leave` (and kick/ban of an online player): engine lines + `[LEAVE]`; the last
    /// player leaving an auto-paused server schedules the empty-server save.
    pub fn leave(&mut self, name: &str, silent: bool, reason: &str) -> Result<(), String> {
        let Some(pos) = self
            .online
            .iter()
            .position(|o| o.name.eq_ignore_ascii_case(name))
        else {
            return Err(format!("{name} is not online"));
        };
        let o = self.online.remove(pos);
        let t = self.tick().to_string();
        self.log.info(
            "ServerMultiplayerManager.cpp:1086",
            &format!("Disconnect notification for peer ({})", o.peer),
        );
        self.peer_state(&t, o.peer, "InGame", "DisconnectScheduled");
        self.log.info(
            "ServerSynchronizer.cpp:613",
            &format!(
                "nextHeartbeatSequenceNumber({}) removing peer({}).",
                self.heartbeat(),
                o.peer
            ),
        );
        if !silent {
            self.log
                .event("LEAVE", &format!("{} left the game", o.name));
        }
        if let Some(i) = self.player_index(&o.name) {
            self.lua_sync();
            if self.exit.is_none() {
                let r = self.lua.player_left(i, reason);
                self.lua_result(r);
            }
        }
        if self.online.is_empty() && self.setting_bool("auto_pause") {
            self.empty_save_at = Some(Instant::now() + self.timing.empty_save);
        }
        Ok(())
    }

    pub fn advance_ticks(&mut self, n: u64) {
        self.tick_base += n;
        self.lua_sync();
    }

    pub fn hang(&mut self, d: Duration) {
        self.hang_until = Some(Instant::now() + d);
    }

    pub fn quit_ignored(&self) -> bool {
        self.ignore.iter().any(|i| i == "quit")
    }

    async fn periodic(&mut self) {
        self.lua_sync();
        if self.exit.is_some() {
            return;
        }
        if let Some(at) = self.empty_save_at
            && Instant::now() >= at
        {
            self.empty_save_at = None;
            if let Some(p) = self.loaded.clone() {
                self.log.info(
                    "ServerMultiplayerManager.cpp:1231",
                    &format!("Auto saving map as {}", p.display()),
                );
                let src = if self.ident.is_1_1() {
                    "AppManager.cpp:394"
                } else {
                    "AppManager.cpp:415"
                };
                self.log
                    .info(src, &format!("Saving game as {}", p.display()));
                if let Ok(tmp) = self.save_zip(&p) {
                    tokio::time::sleep(self.timing.save).await;
                    let _ = save::commit(&tmp, &p);
                }
                self.log.info(
                    if self.ident.is_1_1() {
                        "AppManagerStates.cpp:1802"
                    } else {
                        "AppManagerStates.cpp:2103"
                    },
                    "Saving finished",
                );
            }
            self.pause();
        }
        let interval = self.timing.autosave.or_else(|| {
            let mins = self
                .settings
                .get("autosave_interval")
                .and_then(|v| v.as_u64())
                .unwrap_or(10);
            (mins > 0).then(|| Duration::from_secs(mins * 60))
        });
        if let Some(iv) = interval
            && self.running_since.is_some()
            && self.running_time() >= iv
        {
            let slots = self
                .settings
                .get("autosave_slots")
                .and_then(|v| v.as_u64())
                .unwrap_or(5)
                .max(1) as u32;
            let k = self.state.next_autosave_slot.clamp(1, slots);
            self.state.next_autosave_slot = if k >= slots { 1 } else { k + 1 };
            let was = self.running_since.is_some();
            self.pause();
            self.autosave_base = Duration::ZERO;
            let path = self
                .write_dir
                .join("saves")
                .join(format!("_autosave{k}.zip"));
            self.save_game(&path, Some(k)).await;
            if was {
                self.resume();
            }
        }
    }

    async fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Command {
                text,
                origin,
                reply,
            } => {
                let out = self.command(&text, &origin).await;
                match reply {
                    Some(tx) => {
                        let _ = tx.send(out.clone());
                    }
                    None => {
                        for l in out.lines() {
                            self.log.bare(l);
                        }
                    }
                }
                if let Some(after) = self.after_reply.take() {
                    match after {
                        After::Quit => self.remote_quit().await,
                    }
                }
            }
            Msg::Signal(name) => {
                let ignored = match name {
                    "SIGINT" => self.ignore.iter().any(|i| i == "sigint"),
                    _ => self.ignore.iter().any(|i| i == "sigterm"),
                };
                self.log.plain(&format!("Received {name}, shutting down"));
                if !ignored {
                    self.log.plain("Quitting: signal.");
                    self.shutdown().await;
                }
            }
            Msg::StdinEof => {
                self.log.error(
                    "InterruptibleStdioStream.cpp:55",
                    "Got EOF on stdin; closing",
                );
            }
            Msg::RconAccepted(peer) => {
                self.log.info(
                    "RemoteCommandProcessor.cpp:245",
                    &format!("New RCON connection from IP ADDR:({{{peer}}})"),
                );
            }
        }
    }
}

pub enum After {
    Quit,
}

impl Game {
    pub fn schedule_quit(&mut self) {
        self.after_reply = Some(After::Quit);
    }
}

pub fn write_mod_list(mods_dir: &Path, version: &str) {
    let _ = std::fs::create_dir_all(mods_dir);
    let path = mods_dir.join("mod-list.json");
    let mut mods: Vec<Value> = std::fs::read_to_string(&path)
        .ok()
        .and_then(|s| serde_json::from_str::<Value>(&s).ok())
        .and_then(|v| v.get("mods").and_then(|m| m.as_array()).cloned())
        .unwrap_or_default();
    for m in crate::install::builtin_mods(version) {
        if !mods
            .iter()
            .any(|e| e.get("name").and_then(|n| n.as_str()) == Some(m))
        {
            mods.push(json!({"name": m, "enabled": *m == "base"}));
        }
    }
    let _ = std::fs::write(
        &path,
        serde_json::to_string_pretty(&json!({"mods": mods})).unwrap_or_default() + "\n",
    );
}

/// Enabled mods from mod-list.json, with versions (built-ins take the game version; others the
/// version in their `<name>_<version>.zip` file name).
pub fn enabled_mods(mods_dir: &Path, version: &str) -> Vec<(String, String)> {
    let list: Vec<Value> = std::fs::read_to_string(mods_dir.join("mod-list.json"))
        .ok()
        .and_then(|s| serde_json::from_str::<Value>(&s).ok())
        .and_then(|v| v.get("mods").and_then(|m| m.as_array()).cloned())
        .unwrap_or_default();
    let builtins = crate::install::builtin_mods(version);
    let mut out = Vec::new();
    for e in list {
        let (Some(name), true) = (
            e.get("name").and_then(|n| n.as_str()),
            e.get("enabled").and_then(|v| v.as_bool()).unwrap_or(false),
        ) else {
            continue;
        };
        if builtins.contains(&name) {
            out.push((name.to_string(), version.to_string()));
        } else if let Ok(rd) = std::fs::read_dir(mods_dir) {
            for f in rd.flatten() {
                let fname = f.file_name().to_string_lossy().into_owned();
                if let Some(v) = fname
                    .strip_prefix(&format!("{name}_"))
                    .and_then(|r| r.strip_suffix(".zip"))
                {
                    out.push((name.to_string(), v.to_string()));
                    break;
                }
            }
        }
    }
    out
}

/// Find the newest `*.zip` in `saves/` by mtime, ignoring `*.tmp.zip` (§7.2).
fn latest_save(saves: &Path) -> Option<PathBuf> {
    std::fs::read_dir(saves)
        .ok()?
        .flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.ends_with(".zip") && !n.ends_with(".tmp.zip")
        })
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .max_by_key(|(t, _)| *t)
        .map(|(_, p)| p)
}

/// `FACTORIO_STANDIN_MIGRATE_LEVEL=1`: what a Factorio update migrating the level does to a
/// patched save — the stock `control.lua` is back and the patch's files are gone. Like the
/// real update it happens once per save (the flag is saved with it); `=always` does it on
/// every load.
pub fn migrate_level(state: &mut GameState, is_1_1: bool) {
    state.level_migrated = true;
    state.files.retain(|(n, _)| {
        !(n.starts_with("modules/") || n == "scenario.lua" || n == "clusterio.json")
    });
    state.set_file(
        "control.lua",
        crate::lua::stock_control_lua(is_1_1).as_bytes().to_vec(),
    );
}

/// Build the level's Lua state and run its `control.lua`: `on_init` for a map the script never
/// ran on, else the saved `storage` + `on_load` (+ `on_configuration_changed` when the mods
/// changed). Err: the error text with its Lua traceback.
pub fn level_runtime(
    state: &GameState,
    ident: &Identity,
    mods: &[(String, String)],
    mods_dir: &Path,
    script_output: &Path,
    log: &Log,
    admins: &[String],
) -> Result<crate::lua::Scripts, String> {
    let with_control =
        crate::lua::load_mods(mods_dir, mods, crate::install::builtin_mods(&ident.version));
    crate::lua::Scripts::start(
        crate::lua::Setup {
            is_1_1: ident.is_1_1(),
            version: ident.version.clone(),
            active_mods: mods.to_vec(),
            seed: state.seed,
            files: state.files.clone(),
            script_output: script_output.to_path_buf(),
        },
        &with_control,
        state.lua.as_ref(),
        log,
        |rt| {
            rt.set_tick(state.tick);
            for p in &state.players {
                let admin = admins.iter().any(|a| a.eq_ignore_ascii_case(&p.name));
                rt.player(p.index, &p.name, false, admin);
            }
        },
    )
}

/// Startup failure after `CreatingGame`: the real `InitializationFailed` transcript, exit 1.
async fn init_failed(log: &Log, ident: &Identity, reason_line: &str) -> i32 {
    let smm = if ident.is_1_1() {
        "ServerMultiplayerManager.cpp:795"
    } else {
        SMM
    };
    log.error("ServerMultiplayerManager.cpp:84", reason_line);
    let s = ident.tick_sentinel();
    log.info(
        smm,
        &format!("updateTick({s}) changing state from(CreatingGame) to(InitializationFailed)"),
    );
    log.info("CommandLineMultiplayer.cpp:211", "Exit point.");
    log.info(
        "ServerMultiplayerManager.cpp:146",
        "Quitting multiplayer connection.",
    );
    log.info(
        smm,
        &format!("updateTick({s}) changing state from(InitializationFailed) to(Closed)"),
    );
    log.info("UDPSocket.cpp:232", "Closing socket");
    log.plain("Goodbye");
    1
}

fn resolve(cwd: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        cwd.join(p)
    }
}

pub async fn run(o: ServerOpts) -> i32 {
    let log = o.log.clone();
    let ident = o.ident.clone();
    let fail = env_list("FACTORIO_STANDIN_FAIL");
    // Signals and stdin are wired before anything else so a SIGINT during startup is queued
    // instead of killing the process with the default action.
    let (tx, mut rx) = mpsc::channel::<Msg>(256);
    spawn_inputs(tx.clone());
    let sentinel = ident.tick_sentinel();
    let smm = if ident.is_1_1() {
        "ServerMultiplayerManager.cpp:795"
    } else {
        SMM
    };

    // Server files: a missing default means defaults; a named file that is missing/bad is fatal [G].
    let mut settings = default_settings();
    match read_json(&o.settings.0, o.settings.1) {
        Ok(Some(v)) => merge(&mut settings, &v),
        Ok(None) => {}
        Err(e) => {
            log.error(
                "Main.cpp:1178",
                &format!("{}: {e}", texts::SETTINGS_LOAD_FAILED),
            );
            log.plain("Goodbye");
            return 1;
        }
    }
    let mut lists = Vec::new();
    for (path, explicit) in [&o.adminlist, &o.whitelist, &o.banlist] {
        match read_json(path, *explicit) {
            Ok(v) => lists.push(v),
            Err(e) => {
                log.error(
                    "Main.cpp:1178",
                    &format!("Failed to load {}: {e}", path.display()),
                );
                log.plain("Goodbye");
                return 1;
            }
        }
    }
    let bans: Vec<(String, String)> = lists[2]
        .as_ref()
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|x| match x {
                    Value::String(s) => Some((s.clone(), String::new())),
                    Value::Object(m) => Some((
                        m.get("username")?.as_str()?.to_string(),
                        m.get("reason")
                            .and_then(|r| r.as_str())
                            .unwrap_or("")
                            .to_string(),
                    )),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    if let Some(id) = &o.server_id
        && !id.exists()
    {
        let hex: String = (0..16)
            .map(|_| format!("{:02x}", rand::random::<u8>()))
            .collect();
        let _ = std::fs::write(id, format!("{{\n  \"server_id\": \"{hex}\"\n}}\n"));
    }

    log.info(
        "ServerSynchronizer.cpp:22",
        "nextHeartbeatSequenceNumber(0) initialized Synchronizer nextTickClosureTick(0).",
    );
    log.info(
        smm,
        &format!("updateTick({sentinel}) changing state from(Ready) to(PreparedToHostGame)"),
    );
    log.info(
        smm,
        &format!("updateTick({sentinel}) changing state from(PreparedToHostGame) to(CreatingGame)"),
    );

    // Load the map.
    let saves_dir = o.write_dir.join("saves");
    let mut scenario = None;
    let (state, loaded) = match &o.source {
        SaveSource::Scenario { name, seed } => {
            log.plain(&format!("Loading map {}", name));
            let files = match crate::scenario::find(&o.install, &o.write_dir, &o.mods_dir, name) {
                Ok(f) => f,
                Err(e) => {
                    return init_failed(
                        &log,
                        &ident,
                        &format!("MultiplayerManager failed: \"{e}\""),
                    )
                    .await;
                }
            };
            scenario = Some(name.rsplit('/').next().unwrap_or(name).to_string());
            let mut st = GameState::fresh(*seed);
            for (n, data) in files {
                st.set_file(&n, data);
            }
            (st, None)
        }
        src => {
            let path = match src {
                SaveSource::File(given) => {
                    let p = resolve(&o.cwd, given);
                    if !p.is_file() && !given.ends_with(".zip") {
                        let z = PathBuf::from(format!("{}.zip", p.display()));
                        if z.is_file() {
                            log.engine(
                                "Warning",
                                "FileUtil.cpp:575",
                                &format!("{given} not found; using {given}.zip"),
                            );
                            Some(z)
                        } else {
                            log.plain(&format!("Loading map {}", p.display()));
                            return init_failed(
                                &log,
                                &ident,
                                &format!(
                                    "MultiplayerManager failed: \"File {} does not exist.\"",
                                    p.display()
                                ),
                            )
                            .await;
                        }
                    } else if !p.is_file() {
                        log.plain(&format!("Loading map {}", p.display()));
                        return init_failed(
                            &log,
                            &ident,
                            &format!(
                                "MultiplayerManager failed: \"File {} does not exist.\"",
                                p.display()
                            ),
                        )
                        .await;
                    } else {
                        Some(p)
                    }
                }
                _ => latest_save(&saves_dir),
            };
            let Some(path) = path else {
                return init_failed(
                    &log,
                    &ident,
                    &format!(
                        "MultiplayerManager failed: \"{} {}\"",
                        texts::NO_LATEST_SAVE,
                        saves_dir.display()
                    ),
                )
                .await;
            };
            let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            log.plain(&format!("Loading map {}: {size} bytes.", path.display()));
            let loaded = if fail.iter().any(|f| f == "load") {
                Err(save::LoadError::LevelMissing)
            } else {
                save::load(&path, ident.parts())
            };
            match loaded {
                Ok(st) => (st, Some(path)),
                Err(save::LoadError::LevelMissing) => {
                    return init_failed(
                        &log,
                        &ident,
                        "MultiplayerManager failed: \"level.dat not found.\"",
                    )
                    .await;
                }
                Err(save::LoadError::NotAZip(e)) => {
                    return init_failed(
                        &log,
                        &ident,
                        &format!(
                            "MultiplayerManager failed: \"Opening zip {} failed: {e}\"",
                            path.display()
                        ),
                    )
                    .await;
                }
                Err(save::LoadError::TooNew(v)) => {
                    return init_failed(
                        &log,
                        &ident,
                        &format!(
                            "MultiplayerManager failed: \"Map version {v} cannot be loaded.\""
                        ),
                    )
                    .await;
                }
            }
        }
    };
    log.plain(&format!(
        "Loading level.dat: {} bytes.",
        12_364_642 + state.tick % 1000
    ));
    log.info(
        "Scenario.cpp:154",
        &format!("Map version {}-0", ident.version),
    );
    log.plain("Loading script.dat: 44018 bytes.");
    log.plain("Checksum for script __level__/control.lua: 2401794522");
    let mut state = state;
    if scenario.is_some() {
        state.set_file("info.json", b"null\n".to_vec());
    } else {
        match std::env::var("FACTORIO_STANDIN_MIGRATE_LEVEL").as_deref() {
            Ok("1") if !state.level_migrated => migrate_level(&mut state, ident.is_1_1()),
            Ok("always") => migrate_level(&mut state, ident.is_1_1()),
            _ => {}
        }
    }
    let mods = enabled_mods(&o.mods_dir, &ident.version);
    let admins = names(&lists[0]);
    let runtime = match level_runtime(
        &state,
        &ident,
        &mods,
        &o.mods_dir,
        &o.write_dir.join("script-output"),
        &log,
        &admins,
    ) {
        Ok(rt) => rt,
        Err(e) => {
            return init_failed(&log, &ident, &format!("MultiplayerManager failed: \"{e}\"")).await;
        }
    };
    tokio::time::sleep(o.timing.startup).await;

    // Bind the game port (UDP); failure is fatal at startup.
    let bind = if fail.iter().any(|f| f == "bind") {
        Err(std::io::Error::from(std::io::ErrorKind::AddrInUse))
    } else {
        std::net::UdpSocket::bind(&o.game_bind)
    };
    let udp = match bind {
        Ok(s) => s,
        Err(e) => {
            let line = if e.kind() == std::io::ErrorKind::PermissionDenied {
                "MultiplayerManager failed: \"Binding IPv4 socket failed: Permission denied\""
                    .to_string()
            } else {
                "MultiplayerManager failed: Host address is already in use.".to_string()
            };
            return init_failed(&log, &ident, &line).await;
        }
    };
    let game_addr = udp
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| o.game_bind.clone());
    log.info(
        "UDPSocket.cpp:38",
        &format!("Opening socket at (IP ADDR:({{{game_addr}}}))"),
    );
    log.plain(&format!("Hosting game at IP ADDR:({{{game_addr}}})"));
    // Read and drop datagrams: bound, answering nothing a client could mistake for a game.
    if let Ok(s) = udp.try_clone()
        && let Ok(s) = tokio::net::UdpSocket::from_std({
            let _ = s.set_nonblocking(true);
            s
        })
    {
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            while s.recv_from(&mut buf).await.is_ok() {}
        });
    }

    let tick_start = state.tick;
    let mut game = Game {
        log: log.clone(),
        ident: ident.clone(),
        timing: o.timing.clone(),
        write_dir: o.write_dir.clone(),
        state,
        loaded,
        scenario,
        settings,
        settings_path: o.settings.0.clone(),
        admins,
        whitelist: names(&lists[1]),
        bans,
        paths: (
            o.adminlist.0.clone(),
            o.whitelist.0.clone(),
            o.banlist.0.clone(),
        ),
        use_whitelist: o.use_whitelist,
        online: Vec::new(),
        next_peer: 1,
        mp_save: 0,
        tick_base: tick_start,
        running_since: None,
        autosave_base: Duration::ZERO,
        empty_save_at: None,
        gate_pending: None,
        ignore: env_list("FACTORIO_STANDIN_IGNORE"),
        exit: None,
        udp: vec![udp],
        rcon_closed: None,
        mods_dir: o.mods_dir.clone(),
        hang_until: None,
        die_after_save_write: false,
        after_reply: None,
        lua: runtime,
        lua_tick: tick_start,
    };
    if !game.setting_bool("auto_pause") {
        game.resume();
    }
    log.info(
        smm,
        &format!(
            "updateTick({}) changing state from(CreatingGame) to(InGame)",
            game.tick()
        ),
    );
    log.info("UDPSocket.cpp:50", "Opening socket for broadcast");

    // RCON (only with --rcon-port/--rcon-bind and a password).
    if let Some((addr, pw)) = &o.rcon {
        let l = if fail.iter().any(|f| f == "rcon-bind") {
            Err(std::io::Error::from(std::io::ErrorKind::AddrInUse))
        } else {
            tokio::net::TcpListener::bind(addr.as_str()).await
        };
        match l {
            Ok(l) => {
                let shown = l
                    .local_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_else(|_| addr.clone());
                let (ctx, crx) = watch::channel(false);
                game.rcon_closed = Some(ctx);
                crate::rcon::spawn(l, pw.clone(), tx.clone(), crx);
                log.info(
                    "RemoteCommandProcessor.cpp:126",
                    &format!("Starting RCON interface at IP ADDR:({{{shown}}})"),
                );
            }
            Err(e) => {
                let what = if e.kind() == std::io::ErrorKind::PermissionDenied {
                    "Permission denied"
                } else {
                    "Address already in use"
                };
                log.error(
                    "RemoteCommandProcessor.cpp:121",
                    &format!("Can't bind socket: {what}"),
                );
                // A server that cannot open RCON keeps running without it [G].
            }
        }
    }
    log.info(
        "CommandLineMultiplayer.cpp:292",
        "Maximum segment size = 100; minimum segment size = 25; maximum-segment-size peer count = 10; minimum-segment-size peer count = 20",
    );

    crate::script::spawn(tx.clone());

    let mut ticker = tokio::time::interval(Duration::from_millis(20));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if let Some(code) = game.exit {
            return code;
        }
        // Sim-only "hung game thread": nothing is processed until the deadline.
        if let Some(until) = game.hang_until.take() {
            tokio::time::sleep_until(until.into()).await;
        }
        tokio::select! {
            m = rx.recv() => match m {
                Some(m) => game.handle(m).await,
                None => return 0,
            },
            _ = ticker.tick() => game.periodic().await,
        }
    }
}

fn spawn_inputs(tx: mpsc::Sender<Msg>) {
    use tokio::io::AsyncBufReadExt;
    let t = tx.clone();
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        loop {
            match lines.next_line().await {
                Ok(Some(l)) => {
                    let l = l.trim_end_matches('\r').to_string();
                    if l.is_empty() {
                        continue;
                    }
                    if t.send(Msg::Command {
                        text: l,
                        origin: Origin::Stdin,
                        reply: None,
                    })
                    .await
                    .is_err()
                    {
                        return;
                    }
                }
                _ => {
                    let _ = t.send(Msg::StdinEof).await;
                    return;
                }
            }
        }
    });
    use tokio::signal::unix::{SignalKind, signal};
    for (kind, name) in [
        (SignalKind::interrupt(), "SIGINT"),
        (SignalKind::terminate(), "SIGTERM"),
    ] {
        let t = tx.clone();
        if let Ok(mut s) = signal(kind) {
            tokio::spawn(async move {
                while s.recv().await.is_some() {
                    if t.send(Msg::Signal(name)).await.is_err() {
                        return;
                    }
                }
            });
        }
    }
}
