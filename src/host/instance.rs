//! One instance on this host: its directory, its local state, and the state machine
//! (stopped → starting → running → stopping → stopped; crashed, with restart on crash). The
//! backend runs Factorio; this module decides when and reports every transition at once.

use super::Host;
use super::backend::GameServer;
use super::factorio::{CreateSpec, ExitReport, SaveToLoad, ServerArgs, ServerEvent, StartSpec};
use super::patch::{self, PatchOptions};
use super::plugins::{RconQueue, lua_string};
use crate::saves;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::{BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Output lines kept per instance for `logs` and crash reports.
const LOG_LINES: usize = 1000;
/// A start found the save's Lua modules gone from the running game; it is patched and started again.
const PATCH_UNDONE: &str =
    "the game runs without the cluster's Lua modules (a Factorio update replaced the level script)";
/// File in the instance directory with what the host must remember across restarts.
pub const STATE_FILE: &str = "instance.json";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Stopped,
    Starting,
    CreatingSave,
    Running,
    Stopping,
    Crashed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Stopped => "stopped",
            Status::Starting => "starting",
            Status::CreatingSave => "creating_save",
            Status::Running => "running",
            Status::Stopping => "stopping",
            Status::Crashed => "crashed",
        }
    }

    pub fn is_active(self) -> bool {
        matches!(
            self,
            Status::Starting | Status::CreatingSave | Status::Running | Status::Stopping
        )
    }
}

/// What survives a host restart (`instances/<name>/instance.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Saved {
    pub id: i64,
    pub name: String,
    #[serde(default)]
    pub config: Value,
    /// What the controller last asked for: "running" or "stopped".
    #[serde(default = "stopped")]
    pub desired: String,
    #[serde(default)]
    pub game_port: Option<u16>,
    /// The Factorio process, while one runs (to find it again after a host crash).
    #[serde(default)]
    pub pid: Option<u32>,
    /// The save the next start loads, when a user chose one ("load this save", an upload, a
    /// restored backup); cleared by the start that loads it. None: the newest save.
    #[serde(default)]
    pub next_save: Option<String>,
    /// The save file the running game loaded (and writes again when it stops).
    #[serde(default)]
    pub loaded_save: Option<String>,
}

fn stopped() -> String {
    "stopped".into()
}

pub struct Instance {
    pub id: i64,
    pub name: String,
    pub dir: PathBuf,
    saved: Mutex<Saved>,
    status: Mutex<Status>,
    players: Mutex<BTreeSet<String>>,
    log: Mutex<VecDeque<String>>,
    server: Mutex<Option<Arc<dyn GameServer>>>,
    /// Bumped at every start so a finished server's event pump cannot touch its successor.
    generation: AtomicU64,
    /// Start, stop and kill run one at a time.
    pub ops: tokio::sync::Mutex<()>,
    crashes: Mutex<(u32, Option<Instant>)>,
    /// The plugins running for this instance since its last start.
    active_plugins: Mutex<Vec<&'static str>>,
    /// The Lua-only plugins patched into its save at its last start.
    lua_plugins: Mutex<Vec<String>>,
    /// Ordered RCON commands while the game runs.
    rcon_queue: Mutex<Option<Arc<RconQueue>>>,
    /// Set when the controller took the instance away (unassigned, deleted): it never starts
    /// again, so a start racing the removal cannot leave a game running for nobody.
    removed: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Instance {
    pub fn new(dir: PathBuf, saved: Saved) -> Self {
        Instance {
            id: saved.id,
            name: saved.name.clone(),
            dir,
            saved: Mutex::new(saved),
            status: Mutex::new(Status::Stopped),
            players: Mutex::new(BTreeSet::new()),
            log: Mutex::new(VecDeque::new()),
            server: Mutex::new(None),
            generation: AtomicU64::new(0),
            ops: tokio::sync::Mutex::new(()),
            crashes: Mutex::new((0, None)),
            active_plugins: Mutex::new(Vec::new()),
            lua_plugins: Mutex::new(Vec::new()),
            rcon_queue: Mutex::new(None),
            removed: AtomicBool::new(false),
        }
    }

    /// The instance is no longer this host's: starts are refused from now on.
    pub fn mark_removed(&self) {
        self.removed.store(true, Ordering::SeqCst);
    }

    pub fn is_removed(&self) -> bool {
        self.removed.load(Ordering::SeqCst)
    }

    pub fn active_plugins(&self) -> Vec<&'static str> {
        lock(&self.active_plugins).clone()
    }

    pub fn lua_plugins(&self) -> Vec<String> {
        lock(&self.lua_plugins).clone()
    }

    pub fn rcon_queue(&self) -> Option<Arc<RconQueue>> {
        lock(&self.rcon_queue).clone()
    }

    pub fn saves_dir(&self) -> PathBuf {
        self.dir.join("saves")
    }

    pub fn status(&self) -> Status {
        *lock(&self.status)
    }

    fn set_status(&self, s: Status) {
        *lock(&self.status) = s;
    }

    pub fn saved(&self) -> Saved {
        lock(&self.saved).clone()
    }

    /// The config as the controller stores it (only what was set).
    pub fn stored_config(&self) -> Value {
        lock(&self.saved).config.clone()
    }

    pub fn server(&self) -> Option<Arc<dyn GameServer>> {
        lock(&self.server).clone()
    }

    pub fn players(&self) -> Vec<String> {
        lock(&self.players).iter().cloned().collect()
    }

    pub fn recent_log(&self, n: usize) -> Vec<String> {
        let log = lock(&self.log);
        log.iter()
            .skip(log.len().saturating_sub(n))
            .cloned()
            .collect()
    }

    fn push_log(&self, line: String) {
        let mut log = lock(&self.log);
        if log.len() == LOG_LINES {
            log.pop_front();
        }
        log.push_back(line);
    }

    /// Changes the remembered state and writes it to disk atomically.
    pub fn update_saved(&self, f: impl FnOnce(&mut Saved)) -> std::io::Result<()> {
        let mut saved = lock(&self.saved);
        f(&mut saved);
        std::fs::create_dir_all(&self.dir)?;
        let text = serde_json::to_vec_pretty(&*saved).map_err(std::io::Error::other)?;
        saves::write_atomic(&self.dir.join(STATE_FILE), &text)
    }

    /// The status report the controller gets.
    pub fn report(&self, message: Option<&str>) -> Value {
        json!({
            "id": self.id,
            "name": self.name,
            "status": self.status().as_str(),
            "game_port": lock(&self.saved).game_port,
            "players": self.players(),
            "message": message,
            "container": self.server().and_then(|s| s.container()),
        })
    }
}

impl Host {
    /// An instance's effective settings: the schema's defaults, this host's game defaults over
    /// them, and the instance's stored config over both.
    pub fn settings(&self, inst: &Instance) -> Value {
        let host = super::game_defaults::instance_defaults(&self.cfg);
        self.schemas
            .instance
            .resolve(&super::game_defaults::layered(&host, &inst.stored_config()))
    }

    pub fn report(&self, inst: &Instance, message: Option<&str>) {
        self.link
            .send_event("instance_status", inst.report(message));
    }

    /// Starts an instance and waits until it runs. `save` picks a save by name. (Boxed: a
    /// crash restart calls it from inside the server's own event pump.)
    pub fn start_instance(
        self: &Arc<Self>,
        inst: &Arc<Instance>,
        save: Option<String>,
    ) -> super::backend::BoxFuture<'static, Result<(), String>> {
        let (host, inst) = (self.clone(), inst.clone());
        Box::pin(async move {
            let _op = inst.ops.lock().await;
            // Checked under the lock: a removal stops what runs only after the start in
            // progress, and any start queued behind it sees the flag.
            if inst.is_removed() {
                return Err(format!(
                    "instance '{}' is no longer assigned to this host",
                    inst.name
                ));
            }
            if inst.status().is_active() {
                return Ok(());
            }
            inst.update_saved(|s| s.desired = "running".into())
                .map_err(|e| e.to_string())?;
            let mut result = host.launch(&inst, save.clone()).await;
            if matches!(&result, Err(e) if e == PATCH_UNDONE) {
                tracing::warn!(instance = %inst.name, "the save's Lua modules were gone (Factorio replaced the level script); patching again and restarting once");
                result = host.launch(&inst, save).await;
            }
            if let Err(e) = &result {
                inst.set_status(Status::Stopped);
                *lock(&inst.server) = None;
                tracing::warn!(instance = %inst.name, error = %e, "start failed");
                host.report(&inst, Some(e));
            }
            result
        })
    }

    async fn launch(
        self: &Arc<Self>,
        inst: &Arc<Instance>,
        save: Option<String>,
    ) -> Result<(), String> {
        let config = self.settings(inst);
        let install = self.factorio_for(inst, config["factorio_version"].as_str().unwrap_or(""))?;
        inst.set_status(Status::Starting);
        self.report(inst, None);
        let saves_dir = inst.saves_dir();
        for d in [&saves_dir, &inst.dir.join("mods")] {
            std::fs::create_dir_all(d).map_err(|e| format!("creating {}: {e}", d.display()))?;
        }
        self.write_server_files(inst, &config)?;
        self.fetch_mods(inst, &config).await?;

        // Which save: the one asked for, else the newest here, else the controller's newest
        // backup (the instance moved hosts), else a new map.
        let chosen = save.or_else(|| {
            inst.saved()
                .next_save
                .filter(|n| saves_dir.join(n).is_file())
        });
        let save_path = match chosen {
            Some(name) => {
                saves::validate_name(&name).map_err(|e| e.to_string())?;
                let p = saves_dir.join(&name);
                if !p.exists() {
                    return Err(format!(
                        "instance '{}' has no save named '{name}'",
                        inst.name
                    ));
                }
                p
            }
            None => match saves::list(&saves_dir).map_err(|e| e.to_string())?.first() {
                Some(s) => saves_dir.join(&s.name),
                None => match self
                    .transfer
                    .restore_latest_backup(inst.id, &saves_dir)
                    .await
                {
                    Ok(Some(p)) => p,
                    Ok(None) => {
                        inst.set_status(Status::CreatingSave);
                        self.report(inst, None);
                        let spec = CreateSpec::new(
                            install.clone(),
                            &inst.dir,
                            saves_dir.join("world.zip"),
                        );
                        let p = self.backend.create_save(inst, spec).await?;
                        inst.set_status(Status::Starting);
                        self.report(inst, None);
                        p
                    }
                    Err(e) => {
                        return Err(format!(
                            "fetching the latest backup from the controller: {e}"
                        ));
                    }
                },
            },
        };

        let loaded = save_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned());
        inst.update_saved(|s| {
            s.next_save = None;
            s.loaded_save = loaded;
        })
        .map_err(|e| format!("saving instance state: {e}"))?;
        let patched = self.prepare_plugins(inst, &config, &save_path).await?;

        let port = self.allocate_port(inst)?;
        let rcon_port = super::ports::free_loopback_tcp()
            .map_err(|e| format!("finding a port for RCON: {e}"))?;
        let rcon_password = crate::store::tokens::generate("rcon");
        let mut args = ServerArgs::new(SaveToLoad::File(save_path));
        args.port = port;
        args.bind = Some(self.cfg.bind_address.clone());
        args.rcon = Some((
            std::net::SocketAddr::from(([127, 0, 0, 1], rcon_port)),
            rcon_password,
        ));
        args.server_settings = Some(inst.dir.join("server-settings.json"));
        args.server_adminlist = Some(inst.dir.join("server-adminlist.json"));
        args.server_banlist = Some(inst.dir.join("server-banlist.json"));
        args.server_whitelist = Some(inst.dir.join("server-whitelist.json"));
        args.use_server_whitelist = config["enable_whitelist"].as_bool().unwrap_or(false);
        args.mod_directory = Some(inst.dir.join("mods"));
        let mut spec = StartSpec::new(install, &inst.dir, args);
        // Checked: a value from anywhere (an old database, a hand-edited file) cannot overflow.
        let start_timeout = crate::limits::secs(config["start_timeout_s"].as_u64().unwrap_or(120));
        spec.ready_timeout = start_timeout;

        let (server, events) = self
            .backend
            .spawn(inst, spec)
            .await
            .map_err(|e| e.to_string())?;
        let generation = inst.generation.fetch_add(1, Ordering::SeqCst) + 1;
        *lock(&inst.server) = Some(server.clone());
        lock(&inst.players).clear();
        inst.update_saved(|s| {
            s.pid = server.pid();
            s.game_port = Some(port);
        })
        .map_err(|e| e.to_string())?;
        tokio::spawn(self.clone().pump(inst.clone(), events, generation));

        server
            .wait_ready(start_timeout)
            .await
            .map_err(|e| e.to_string())?;
        let queue = Arc::new(RconQueue::start(server.clone(), inst.name.clone()));
        *lock(&inst.rcon_queue) = Some(queue.clone());
        let script_commands = config["script_commands"].as_bool() != Some(false);
        if script_commands {
            // Factorio asks for the first Lua command to be repeated (it disables achievements).
            for _ in 0..2 {
                if let Ok(out) = queue.call("/sc rcon.print('disabled')".into()).await
                    && out.trim() == "disabled"
                {
                    break;
                }
            }
        }
        if patched && script_commands {
            let reply = queue
                .call(format!(
                    "/sc clusterio_private.update_instance({}, {})",
                    inst.id,
                    lua_string(&inst.name)
                ))
                .await;
            match reply {
                Ok(out) if out.contains("clusterio_private") => {
                    // A Factorio update reverted the level script: the game runs without modules.
                    *lock(&inst.rcon_queue) = None;
                    server
                        .stop(crate::limits::secs(self.cfg.stop_timeout_s.max(1)))
                        .await;
                    *lock(&inst.server) = None;
                    return Err(PATCH_UNDONE.into());
                }
                Ok(out) if !out.trim().is_empty() => {
                    tracing::warn!(instance = %inst.name, output = %out.trim(), "update_instance answered unexpectedly")
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(instance = %inst.name, error = %e, "update_instance failed")
                }
            }
        }
        inst.set_status(Status::Running);
        tracing::info!(instance = %inst.name, port, plugins = ?inst.active_plugins(), "instance running");
        self.plugins_started(inst);
        self.report(inst, None);
        self.spawn_backup_timer(inst, generation);
        Ok(())
    }

    /// Stops gracefully (Factorio saves), then copies the save to the controller.
    pub async fn stop_instance(
        self: &Arc<Self>,
        inst: &Arc<Instance>,
    ) -> Result<ExitReport, String> {
        let _op = inst.ops.lock().await;
        let _ = inst.update_saved(|s| s.desired = "stopped".into());
        let Some(server) = inst.server() else {
            if inst.status() != Status::Stopped {
                inst.set_status(Status::Stopped);
                self.report(inst, None);
            }
            return Ok(ExitReport {
                code: Some(0),
                signal: None,
                oom_killed: false,
                graceful: true,
                requested: true,
                last_lines: Vec::new(),
            });
        };
        inst.set_status(Status::Stopping);
        self.report(inst, None);
        let report = server
            .stop(crate::limits::secs(self.cfg.stop_timeout_s.max(1)))
            .await;
        self.mark_stopped(inst);
        // A removed instance is not ours to back up (the controller refuses it anyway).
        if report.graceful
            && !inst.is_removed()
            && let Err(e) = self.backup(inst).await
        {
            tracing::warn!(instance = %inst.name, error = %e, "backup after stop failed");
        }
        Ok(report)
    }

    pub async fn kill_instance(self: &Arc<Self>, inst: &Arc<Instance>) {
        let _op = inst.ops.lock().await;
        let _ = inst.update_saved(|s| s.desired = "stopped".into());
        if let Some(server) = inst.server() {
            server.kill().await;
        }
        self.mark_stopped(inst);
    }

    /// Decides the instance's plugins and, unless `save_patching` is off, patches the save with
    /// the core module and their Lua. Returns whether the save is patched.
    async fn prepare_plugins(
        &self,
        inst: &Instance,
        config: &Value,
        save: &std::path::Path,
    ) -> Result<bool, String> {
        let active = self.plugins_for(inst).await;
        *lock(&inst.active_plugins) = active.clone();
        lock(&inst.lua_plugins).clear();
        if config["save_patching"].as_bool() == Some(false) {
            return Ok(false);
        }
        let mut modules = vec![crate::plugins::CORE_MODULE.to_module()];
        modules.extend(
            self.plugins
                .iter()
                .filter(|p| active.contains(&p.info().name))
                .filter_map(|p| p.info().lua)
                .map(|l| l.to_module()),
        );
        let bundles = self.plugin_lua_bundles(inst).await?;
        modules.extend(bundles.iter().map(|(_, b)| b.to_module()));
        let lua_only: Vec<String> = bundles
            .iter()
            .filter(|(k, _)| *k == crate::controller::plugin_lua::Kind::Lua)
            .map(|(_, b)| b.plugin.clone())
            .collect();
        let opts = PatchOptions {
            allow_unknown_scenario: config["patch_unknown_scenario"].as_bool() == Some(true),
        };
        let path = save.to_path_buf();
        let report = tokio::task::spawn_blocking(move || patch::patch(&path, &modules, &opts))
            .await
            .map_err(|e| format!("patching the save: {e}"))?
            .map_err(|e| e.to_string())?;
        tracing::info!(instance = %inst.name, patch_number = report.patch_number, modules = ?report.modules, reset = report.level_was_reset, "save patched");
        *lock(&inst.lua_plugins) = lua_only;
        Ok(true)
    }

    /// A `player_event` from the core Lua module.
    fn player_event(&self, inst: &Instance, data: Value) {
        let name = data["name"].as_str().unwrap_or_default().to_string();
        match data["type"].as_str().unwrap_or_default() {
            "join" => {
                lock(&inst.players).insert(name);
                self.report(inst, None);
            }
            "leave" => {
                lock(&inst.players).remove(&name);
                self.report(inst, None);
            }
            kind => {
                tracing::info!(instance = %inst.name, player = %name, kind, "player event");
                let mut event = data.clone();
                event["instance_id"] = json!(inst.id);
                self.link.send_event("player_event", event);
            }
        }
    }

    fn mark_stopped(&self, inst: &Instance) {
        *lock(&inst.rcon_queue) = None;
        *lock(&inst.server) = None;
        lock(&inst.players).clear();
        let _ = inst.update_saved(|s| s.pid = None);
        inst.set_status(Status::Stopped);
        self.report(inst, None);
    }

    /// Output and player events of one running server, until it exits.
    async fn pump(
        self: Arc<Self>,
        inst: Arc<Instance>,
        mut events: tokio::sync::mpsc::Receiver<ServerEvent>,
        generation: u64,
    ) {
        while let Some(ev) = events.recv().await {
            match ev {
                ServerEvent::Line(line) => {
                    self.plugins_line(&inst, &line);
                    inst.push_log(line.raw.clone());
                    self.link.send_event(
                        "instance_log",
                        json!({ "id": inst.id, "name": inst.name, "line": line.raw }),
                    );
                }
                ServerEvent::Ipc { channel, data } => {
                    if channel == "player_event" {
                        self.player_event(&inst, data);
                    } else {
                        self.route_ipc(&inst, &channel, data);
                    }
                }
                ServerEvent::IpcError { kind, message } => {
                    tracing::warn!(instance = %inst.name, kind, %message, "unusable IPC message from the game");
                    self.link
                        .send_event("ipc_error", json!({ "instance_id": inst.id, "kind": kind }));
                }
                ServerEvent::PlayerJoined { name } => {
                    lock(&inst.players).insert(name);
                    self.report(&inst, None);
                }
                ServerEvent::PlayerLeft { name } => {
                    lock(&inst.players).remove(&name);
                    self.report(&inst, None);
                }
                ServerEvent::Exited(report) => {
                    if !report.requested {
                        self.crashed(&inst, report, generation).await;
                    }
                    break;
                }
                _ => {}
            }
        }
    }

    /// An exit nobody asked for: report it with the last lines, restart if configured.
    async fn crashed(self: &Arc<Self>, inst: &Arc<Instance>, report: ExitReport, generation: u64) {
        {
            let _op = inst.ops.lock().await;
            if inst.generation.load(Ordering::SeqCst) != generation || inst.server().is_none() {
                return;
            }
            *lock(&inst.server) = None;
            *lock(&inst.rcon_queue) = None;
            lock(&inst.players).clear();
            let _ = inst.update_saved(|s| s.pid = None);
            inst.set_status(Status::Crashed);
        }
        let how = match (report.code, report.signal) {
            _ if report.oom_killed => {
                "was killed for running out of memory (its memory limit)".into()
            }
            (_, Some(sig)) => format!("killed by signal {sig}"),
            (Some(code), None) => format!("exited with code {code}"),
            _ => "exited".into(),
        };
        let message = format!(
            "Factorio {how}; last output:\n{}",
            report.last_lines.join("\n")
        );
        tracing::warn!(instance = %inst.name, %how, "instance crashed");
        self.report(inst, Some(&message));

        if self.settings(inst)["restart_on_crash"] != true || inst.saved().desired != "running" {
            let _ = inst.update_saved(|s| s.desired = "stopped".into());
            return;
        }
        // Backoff 1 s, 2 s, 4 s … 60 s; a server that ran 5 minutes starts the count over.
        let delay = {
            let mut c = lock(&inst.crashes);
            if c.1
                .is_some_and(|at| at.elapsed() > Duration::from_secs(300))
            {
                c.0 = 0;
            }
            let d = Duration::from_secs(1u64 << c.0.min(6)).min(Duration::from_secs(60));
            c.0 += 1;
            c.1 = Some(Instant::now());
            d
        };
        let (host, inst) = (self.clone(), inst.clone());
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if inst.saved().desired == "running" && inst.status() == Status::Crashed {
                tracing::info!(instance = %inst.name, "restarting after a crash");
                let _ = host.start_instance(&inst, None).await;
            }
        });
    }

    /// A Factorio a previous host process left running when it died: what the game printed
    /// since is still in its pipes (it holds their read ends). It is read through to the game's
    /// end — lines and messages go to the instance's plugins as always (subspace storage spools
    /// the exports the game made meanwhile, and sees the quit save that holds them) — while the
    /// game is stopped the usual way (SIGINT: it saves and quits; SIGKILL after `timeout`).
    /// `false`: its output cannot be read (an older host started it); the caller stops it.
    pub(super) async fn drain_orphan(
        self: &Arc<Self>,
        inst: &Arc<Instance>,
        pid: u32,
        timeout: Duration,
    ) -> bool {
        let Some((server, mut events)) =
            super::factorio::FactorioServer::adopt_output(pid, &inst.dir)
        else {
            return false;
        };
        // The cluster's plugin list is not known before the controller answers; the instance's
        // own config decides.
        let config = inst.stored_config();
        *lock(&inst.active_plugins) = self
            .plugins
            .iter()
            .map(|p| p.info())
            .filter(|i| i.enabled_for(&config))
            .map(|i| i.name)
            .collect();
        tracing::info!(pid, instance = %inst.name, "a Factorio left running by a previous host process: reading what it printed since, and stopping it (it saves)");
        let (host, reading) = (self.clone(), inst.clone());
        let reader = tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                match ev {
                    ServerEvent::Line(line) => {
                        host.plugins_line(&reading, &line);
                        reading.push_log(line.raw.clone());
                    }
                    ServerEvent::Ipc { channel, data } if channel != "player_event" => {
                        host.route_ipc(&reading, &channel, data)
                    }
                    ServerEvent::Exited(_) => break,
                    _ => {}
                }
            }
        });
        server.signal(libc::SIGINT);
        server.stop(timeout).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
        lock(&inst.active_plugins).clear();
        true
    }

    /// Takes over a server a previous run of this host left running (the Docker backend's
    /// containers): it is reconnected, not restarted, so players stay connected.
    pub(super) async fn resume(
        self: &Arc<Self>,
        inst: &Arc<Instance>,
        (server, events): super::backend::Spawned,
    ) -> Result<(), String> {
        let _op = inst.ops.lock().await;
        let generation = inst.generation.fetch_add(1, Ordering::SeqCst) + 1;
        *lock(&inst.server) = Some(server.clone());
        lock(&inst.players).clear();
        inst.set_status(Status::Starting);
        tokio::spawn(self.clone().pump(inst.clone(), events, generation));
        if let Err(e) = server.wait_ready(Duration::from_secs(30)).await {
            // Not reachable over RCON: it was stopped; the caller starts it again.
            *lock(&inst.server) = None;
            inst.set_status(Status::Stopped);
            return Err(e.to_string());
        }
        // The running game has the modules its save was patched with when it started.
        let patched: Option<Vec<String>> = saves::list(&inst.saves_dir())
            .ok()
            .and_then(|l| l.into_iter().next())
            .and_then(|s| {
                patch::read_patch_info(&inst.saves_dir().join(s.name))
                    .ok()
                    .flatten()
            })
            .map(|info| info.modules.into_iter().map(|m| m.name).collect());
        let active: Vec<&'static str> = self
            .plugins_for(inst)
            .await
            .into_iter()
            .filter(|name| {
                let lua = self
                    .plugins
                    .iter()
                    .find(|p| p.info().name == *name)
                    .and_then(|p| p.info().lua);
                match (lua, &patched) {
                    (None, _) => true,
                    (Some(l), Some(modules)) => modules.iter().any(|m| m == l.name),
                    (Some(_), None) => false,
                }
            })
            .collect();
        *lock(&inst.active_plugins) = active;
        *lock(&inst.lua_plugins) = self.patched_lua_plugins(inst, patched.as_deref());
        *lock(&inst.rcon_queue) = Some(Arc::new(RconQueue::start(
            server.clone(),
            inst.name.clone(),
        )));
        inst.set_status(Status::Running);
        tracing::info!(instance = %inst.name, plugins = ?inst.active_plugins(), "instance running (found running)");
        self.report(inst, None);
        self.plugins_started(inst);
        self.spawn_backup_timer(inst, generation);
        Ok(())
    }

    /// Copies the newest save to the controller.
    pub async fn backup(&self, inst: &Instance) -> Result<Value, String> {
        let newest = saves::list(&inst.saves_dir())
            .map_err(|e| e.to_string())?
            .into_iter()
            .next()
            .ok_or("the instance has no save yet")?;
        self.transfer
            .upload_save(
                inst.id,
                &inst.saves_dir().join(&newest.name),
                &newest.name,
                "backup",
            )
            .await
    }

    fn spawn_backup_timer(self: &Arc<Self>, inst: &Arc<Instance>, generation: u64) {
        let minutes = self.settings(inst)["backup_interval_minutes"]
            .as_f64()
            .unwrap_or(0.0);
        if minutes <= 0.0 {
            return;
        }
        let (host, inst) = (self.clone(), inst.clone());
        tokio::spawn(async move {
            let period = Duration::from_secs_f64(minutes * 60.0);
            loop {
                tokio::time::sleep(period).await;
                if inst.generation.load(Ordering::SeqCst) != generation
                    || inst.status() != Status::Running
                {
                    return;
                }
                // Save in game first so the copy is current.
                if let Some(server) = inst.server() {
                    let _ = server.rcon("/server-save").await;
                }
                match host.backup(&inst).await {
                    Ok(_) => {
                        tracing::info!(instance = %inst.name, "periodic backup copied to the controller")
                    }
                    Err(e) => {
                        tracing::warn!(instance = %inst.name, error = %e, "periodic backup failed")
                    }
                }
            }
        });
    }

    /// The game port: the configured one, else the one it had, else the first free one of
    /// the host's ports. Ports of other active instances are never given out twice.
    fn allocate_port(&self, inst: &Instance) -> Result<u16, String> {
        let _choosing = self.port_lock.lock().unwrap_or_else(|e| e.into_inner());
        let port = self.choose_port(inst)?;
        inst.update_saved(|s| s.game_port = Some(port))
            .map_err(|e| format!("saving instance state: {e}"))?;
        Ok(port)
    }

    fn choose_port(&self, inst: &Instance) -> Result<u16, String> {
        let taken: Vec<u16> = self
            .instances()
            .into_iter()
            .filter(|o| o.id != inst.id && o.status().is_active())
            .filter_map(|o| o.saved().game_port)
            .collect();
        let bind = self.cfg.bind_address.as_str();
        if let Some(p) = self.settings(inst)["game_port"].as_u64() {
            let p = u16::try_from(p).map_err(|_| format!("game_port {p} is not a port"))?;
            if taken.contains(&p) {
                return Err(format!(
                    "game port {p} is already used by another instance on this host"
                ));
            }
            if !super::ports::udp_free(bind, p) {
                return Err(format!("game port {p} is in use by another program"));
            }
            return Ok(p);
        }
        let previous = inst.saved().game_port.filter(|p| self.ports.contains(p));
        previous
            .into_iter()
            .chain(self.ports.iter().copied())
            .find(|p| !taken.contains(p) && super::ports::udp_free(bind, *p))
            .ok_or_else(|| {
                format!(
                    "no free game port: all of {} are in use; give this host more ports (game_ports / panel allocations)",
                    self.cfg.game_ports
                )
            })
    }

    /// `server-settings.json` (defaults < instance config `server_settings`) and the lists.
    fn write_server_files(&self, inst: &Instance, config: &Value) -> Result<(), String> {
        // The schema's defaults are Factorio's; an empty name becomes "<cluster> - <instance>".
        let mut settings = config["server_settings"].clone();
        if settings["name"].as_str().is_none_or(str::is_empty) {
            settings["name"] = json!(super::game_defaults::server_name(
                &self.cfg.game_name_template,
                &self.cluster_name(),
                &inst.name,
                &self.cfg.host_name,
            ));
        }
        let lists = self.lists();
        let sync = config["sync_lists"].as_bool().unwrap_or(true);
        let files = [
            ("server-settings.json", settings),
            (
                "server-adminlist.json",
                if sync {
                    lists.adminlist_json()
                } else {
                    json!([])
                },
            ),
            (
                "server-banlist.json",
                if sync {
                    lists.banlist_json()
                } else {
                    json!([])
                },
            ),
            (
                "server-whitelist.json",
                if sync {
                    lists.whitelist_json()
                } else {
                    json!([])
                },
            ),
        ];
        for (name, value) in files {
            let text = serde_json::to_vec_pretty(&value).map_err(|e| e.to_string())?;
            saves::write_atomic(&inst.dir.join(name), &text)
                .map_err(|e| format!("writing {name}: {e}"))?;
        }
        Ok(())
    }

    /// Mods named in the config, fetched from the controller (checksummed, cached per host).
    async fn fetch_mods(&self, inst: &Instance, config: &Value) -> Result<(), String> {
        let Some(mods) = config["mods"].as_array() else {
            return Ok(());
        };
        let mod_dir = inst.dir.join("mods");
        let mut list = vec![json!({ "name": "base", "enabled": true })];
        for m in mods {
            let Some(file) = m.as_str() else { continue };
            saves::validate_name(file).map_err(|e| e.to_string())?;
            let cached = self
                .transfer
                .fetch_mod(file, &self.dir.join("mods-cache"))
                .await?;
            let target = mod_dir.join(file);
            let tmp = saves::temp_path(&target);
            std::fs::copy(&cached, &tmp).map_err(|e| format!("copying mod {file}: {e}"))?;
            saves::commit(&tmp, &target).map_err(|e| format!("installing mod {file}: {e}"))?;
            let name = file.rsplit_once('_').map(|(n, _)| n).unwrap_or(file);
            list.push(json!({ "name": name, "enabled": true }));
        }
        if let Some(pack) = config["mod_pack"].as_str().filter(|p| !p.is_empty()) {
            let cache = self.dir.join("mods-cache");
            let entries = super::mod_packs::apply(&self.transfer, &cache, &mod_dir, pack).await?;
            list.retain(|e| !entries.iter().any(|p| p["name"] == e["name"]));
            list.extend(entries);
        }
        let text =
            serde_json::to_vec_pretty(&json!({ "mods": list })).map_err(|e| e.to_string())?;
        saves::write_atomic(&mod_dir.join("mod-list.json"), &text)
            .map_err(|e| format!("writing {}: {e}", mod_dir.join("mod-list.json").display()))
    }

    /// Creates a save: in game when running (`/server-save`), else a new map.
    pub async fn create_save(
        &self,
        inst: &Arc<Instance>,
        name: Option<String>,
        map: super::mapgen::NewMap,
    ) -> Result<Value, String> {
        let name = name.unwrap_or_else(|| format!("save-{}.zip", crate::store::now_ms()));
        let name = if name.ends_with(".zip") {
            name
        } else {
            format!("{name}.zip")
        };
        saves::validate_name(&name).map_err(|e| e.to_string())?;
        let target = inst.saves_dir().join(&name);
        std::fs::create_dir_all(inst.saves_dir()).map_err(|e| e.to_string())?;
        if !map.is_empty() && inst.status().is_active() {
            return Err(format!(
                "instance '{}' is running; a new map is created while it is stopped (stop it first, or save the running game without map settings)",
                inst.name
            ));
        }
        if let Some(server) = inst.server() {
            let stem = name.trim_end_matches(".zip");
            server
                .rcon(&format!("/server-save {stem}"))
                .await
                .map_err(|e| e.to_string())?;
            // The game writes `<name>.tmp.zip` then renames it; wait for the rename.
            let deadline = Instant::now() + Duration::from_secs(120);
            while !target.exists() {
                if Instant::now() > deadline {
                    return Err(format!(
                        "the game did not finish saving {name} within 120 s"
                    ));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        } else {
            let _op = inst.ops.lock().await;
            let wanted = self.settings(inst)["factorio_version"]
                .as_str()
                .unwrap_or("")
                .to_string();
            let install = self.factorio_for(inst, &wanted)?;
            if target.exists() {
                return Err(format!(
                    "instance '{}' already has a save named '{name}'; choose another name",
                    inst.name
                ));
            }
            if let Some(scenario) = &map.scenario {
                self.scenario_save(inst, install, scenario, &map, &target)
                    .await?;
            } else {
                let mut spec = CreateSpec::new(install, &inst.dir, target.clone());
                spec.args = map.write(&inst.dir)?;
                self.backend.create_save(inst, spec).await?;
            }
            // The new map is what the instance plays next.
            inst.update_saved(|s| s.next_save = Some(name.clone()))
                .map_err(|e| format!("saving instance state: {e}"))?;
        }
        let info = saves::list(&inst.saves_dir())
            .map_err(|e| e.to_string())?
            .into_iter()
            .find(|s| s.name == name)
            .ok_or_else(|| format!("save {name} was not written"))?;
        Ok(json!(info))
    }

    /// A new game of a scenario, saved as `target` (research/factorio.md §1.2, §5.6): Factorio
    /// runs `--start-server-load-scenario` with the map-gen flags, the host saves it with
    /// `/server-save`, then ends the run without its exit save (that would be written to
    /// `saves/<scenario>.zip`, perhaps over a save of that name). Called with `inst.ops` held
    /// and the instance stopped.
    async fn scenario_save(
        &self,
        inst: &Arc<Instance>,
        install: super::factorio::Install,
        scenario: &str,
        map: &super::mapgen::NewMap,
        target: &std::path::Path,
    ) -> Result<(), String> {
        let known = super::scenarios::list(&inst.dir, Some(install.data_dir().as_path()));
        if !known.iter().any(|s| s.name == scenario) {
            let names: Vec<&str> = known.iter().map(|s| s.name.as_str()).collect();
            return Err(format!(
                "the host of instance '{}' has no scenario '{scenario}'; it has: {}",
                inst.name,
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            ));
        }
        inst.set_status(Status::CreatingSave);
        self.report(inst, None);
        let result = async {
            let config = self.settings(inst);
            for d in [&inst.saves_dir(), &inst.dir.join("mods")] {
                std::fs::create_dir_all(d).map_err(|e| format!("creating {}: {e}", d.display()))?;
            }
            self.write_server_files(inst, &config)?;
            self.fetch_mods(inst, &config).await?;
            let create = map.write(&inst.dir)?;
            let mut args = ServerArgs::new(SaveToLoad::Scenario(scenario.to_string()));
            args.port = self.allocate_port(inst)?;
            args.bind = Some(self.cfg.bind_address.clone());
            let rcon_port = super::ports::free_loopback_tcp()
                .map_err(|e| format!("finding a port for RCON: {e}"))?;
            args.rcon = Some((
                std::net::SocketAddr::from(([127, 0, 0, 1], rcon_port)),
                crate::store::tokens::generate("rcon"),
            ));
            args.server_settings = Some(inst.dir.join("server-settings.json"));
            args.mod_directory = Some(inst.dir.join("mods"));
            // The map-gen flags of --create apply to a scenario's new game too.
            let mut extra: Vec<std::ffi::OsString> = Vec::new();
            if let Some(f) = &create.map_gen_settings {
                extra.extend(["--map-gen-settings".into(), f.clone().into()]);
            }
            if let Some(f) = &create.map_settings {
                extra.extend(["--map-settings".into(), f.clone().into()]);
            }
            if let Some(seed) = create.map_gen_seed {
                extra.extend(["--map-gen-seed".into(), seed.to_string().into()]);
            }
            if let Some(p) = &create.preset {
                extra.extend(["--preset".into(), p.into()]);
            }
            args.extra = extra;
            let timeout = crate::limits::secs(config["start_timeout_s"].as_u64().unwrap_or(120));
            let mut spec = StartSpec::new(install, &inst.dir, args);
            spec.ready_timeout = timeout;
            let (server, mut events) = self
                .backend
                .spawn(inst, spec)
                .await
                .map_err(|e| e.to_string())?;
            let log_to = inst.clone();
            tokio::spawn(async move {
                while let Some(ev) = events.recv().await {
                    if let ServerEvent::Line(line) = ev {
                        log_to.push_log(line.raw);
                    }
                }
            });
            let saved = async {
                server
                    .wait_ready(timeout)
                    .await
                    .map_err(|e| format!("starting scenario {scenario}: {e}"))?;
                let stem = target
                    .file_name()
                    .map(|n| n.to_string_lossy().trim_end_matches(".zip").to_string())
                    .unwrap_or_default();
                server
                    .rcon(&format!("/server-save {stem}"))
                    .await
                    .map_err(|e| format!("saving the scenario's game: {e}"))?;
                let deadline = Instant::now() + Duration::from_secs(120);
                while !target.exists() {
                    if Instant::now() > deadline {
                        return Err(format!(
                            "the scenario's game did not finish saving {stem}.zip within 120 s"
                        ));
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Ok::<(), String>(())
            }
            .await;
            // Not a graceful stop: that would write the game again to saves/<scenario>.zip.
            let _ = server.kill().await;
            saved
        }
        .await;
        inst.set_status(Status::Stopped);
        self.report(inst, None);
        result
    }
}
