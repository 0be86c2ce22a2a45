//! Host (slave) side: connects to the controller over the link and runs the instances assigned
//! to it. The controller's desired state wins; while it is away, instances keep running and the
//! host's reports wait in the link's outbox.

pub mod backend;
pub mod exchange_string;
pub mod factorio;
mod game_defaults;
pub mod instance;
pub mod lists;
pub mod mapgen;
pub mod metrics;
mod mod_packs;
pub mod patch;
pub mod plugin_lua;
pub mod plugins;
pub mod ports;
mod saves;
pub mod scenarios;
mod transfer;
pub mod versions;

use crate::config::FactorioBackend;
use crate::config::{HOST_CONFIG_FILE, HostConfig};
use crate::link::ErrorBody;
use crate::link::client::{ClientOptions, Incoming, Link};
use crate::shutdown::Shutdown;
use anyhow::{Context, bail};
use backend::{Backend, ProcessBackend, docker::DockerBackend};
use instance::{Instance, STATE_FILE, Saved, Status};
use lists::UserLists;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use transfer::Transfer;

pub struct Host {
    pub cfg: HostConfig,
    pub dir: PathBuf,
    /// The Factorio installs (`versions.rs`): which there are, installing another.
    versions: versions::Versions,
    /// Versions being installed right now.
    factorio_installing: Mutex<std::collections::HashSet<String>>,
    /// The install folder each instance last started from.
    factorio_roots: Mutex<HashMap<i64, PathBuf>>,
    backend: Box<dyn Backend>,
    link: Link,
    transfer: Transfer,
    ports: Vec<u16>,
    /// Held while a port is chosen and recorded, so concurrent starts never pick the same one.
    port_lock: Mutex<()>,
    instances: Mutex<HashMap<i64, Arc<Instance>>>,
    lists: Mutex<UserLists>,
    cluster_name: Mutex<String>,
    /// Plugins this binary runs here (`PLUGINS`, or all built-ins).
    plugins: Vec<Box<dyn crate::plugins::HostPlugin>>,
    /// The cluster's plugin set, once the controller has named it.
    cluster_plugins: tokio::sync::watch::Sender<Option<Vec<crate::plugins::PluginVersion>>>,
    /// Every setting (the core's and the plugins'): instance defaults, this host's config.
    pub schemas: crate::config::Schemas,
}

/// Runs the host until shutdown; the error says why the controller refused it, if it did.
pub async fn run(dir: &Path, cfg: HostConfig) -> anyhow::Result<()> {
    // Factorio resolves relative paths against its own working directory: hand it absolute ones.
    let dir = &std::path::absolute(dir).with_context(|| format!("resolving {}", dir.display()))?;
    if cfg.host_name.trim().is_empty() {
        return Err(crate::UsageError(format!(
            "SLAVE_NAME is not set: give this host a name (host_name in {HOST_CONFIG_FILE})"
        ))
        .into());
    }
    let token = if !cfg.host_token.is_empty() {
        cfg.host_token.clone()
    } else {
        cfg.controller_token.clone()
    };
    if token.is_empty() {
        bail!("MASTER_TOKEN is not set: copy the join token from the master's console (`token`)");
    }
    let ports = ports::parse(&cfg.game_ports)?;
    // Where Factorio is: `factorio_directory`, else `./factorio`, else the working dir itself;
    // versions side by side in `<that>/<X.Y.Z>/` (`versions.rs`).
    let versions = versions::Versions::new(dir, &cfg.factorio_directory);
    let installed = versions.list();
    if installed.is_empty() {
        tracing::warn!(directory = %versions.root.display(), "no Factorio install found (factorio_directory); instances cannot start until one is installed");
    }
    for i in &installed {
        tracing::info!(factorio = %i.path, version = %i.version, "Factorio found");
    }
    let plugins = plugins::load(&cfg.plugins).map_err(crate::UsageError)?;
    let backend: Box<dyn Backend> = match cfg.factorio_backend {
        FactorioBackend::Process => Box::new(ProcessBackend),
        FactorioBackend::Docker => {
            let docker = DockerBackend::new(backend::docker::Settings::from_config(&cfg, dir));
            // The host runs without its daemon; instances fail to start with this reason.
            if let Err(e) = docker.connect().await {
                tracing::error!("Docker backend unavailable: {e}");
            }
            Box::new(docker)
        }
    };
    let shutdown = Shutdown::new();
    shutdown.listen_for_signals()?;
    let (link, mut incoming, mut link_task) = Link::spawn(
        ClientOptions {
            url: cfg.controller_url.clone(),
            role: "host".into(),
            token,
            name: Some(cfg.host_name.clone()),
            software: env!("CARGO_PKG_VERSION").into(),
            plugins: Host::plugin_versions(&plugins),
            max_backoff: crate::limits::secs(cfg.max_reconnect_delay_s.max(1)),
        },
        shutdown.clone(),
    );
    let host = Arc::new(Host {
        plugins,
        cluster_plugins: tokio::sync::watch::Sender::new(None),
        transfer: Transfer::new(&cfg.controller_url, link.clone()),
        dir: dir.to_path_buf(),
        versions,
        factorio_installing: Mutex::new(std::collections::HashSet::new()),
        factorio_roots: Mutex::new(HashMap::new()),
        backend,
        link,
        ports,
        port_lock: Mutex::new(()),
        instances: Mutex::new(HashMap::new()),
        lists: Mutex::new(UserLists::default()),
        cluster_name: Mutex::new(String::new()),
        schemas: crate::config::Schemas::new(&crate::plugins::settings()),
        cfg,
    });
    host.load_instances().await?;
    // Left-overs of interrupted installs; replaced copies only when no game was taken over.
    let adopted = host.instances().iter().any(|i| i.server().is_some());
    host.versions.sweep((!adopted).then_some(&[][..]), true);
    console(shutdown.clone(), host.clone());
    let sampler = tokio::spawn(metrics::report(host.clone()));

    let mut started = false;
    let outcome = loop {
        tokio::select! {
            msg = incoming.recv() => match msg {
                Some(Incoming::Connected(ready)) => {
                    // Before anything else: starts wait for the cluster's plugin set.
                    host.set_cluster_plugins(ready.plugins.clone());
                    if let Some(token) = &ready.host_token
                        && let Err(e) = persist_host_token(dir, token)
                    {
                        tracing::error!(error = %e, "could not save the host token; the next start registers again");
                    }
                    host.link.send_event(
                        "host_info",
                        json!({
                            "game_ports": host.ports.len(),
                            "factorio": !host.versions.list().is_empty(),
                            "factorio_versions": host.versions.report(),
                            "backend": host.backend.name(),
                            "backend_error": host.backend.unavailable(),
                            "public_address": host.cfg.public_address,
                            "allocation_ip": crate::join_address::allocation_ip_from_env(),
                        }),
                    );
                    if !ready.resumed {
                        // A new session: the controller knows nothing of our current state.
                        for inst in host.instances() {
                            host.report(&inst, None);
                        }
                    }
                    if !started {
                        started = true;
                        println!("Started clustorio host '{}', connected to {}", host.cfg.host_name, host.cfg.controller_url);
                    }
                }
                Some(Incoming::Disconnected(reason)) => tracing::warn!(%reason, "lost the controller; instances keep running"),
                Some(Incoming::Request { id, name, data }) => {
                    let host = host.clone();
                    tokio::spawn(async move {
                        let result = host.handle_request(&name, data).await;
                        host.link.respond(id, result);
                    });
                }
                // Events are applied in order, here; only their slow parts run in tasks.
                Some(Incoming::Event { name, data }) => host.handle_event(&name, data),
                // The link task ended: its result says why.
                None => break match (&mut link_task).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(anyhow::anyhow!("{e}")),
                    Err(e) => Err(anyhow::anyhow!("link task failed: {e}")),
                },
            },
            result = &mut link_task => {
                break match result {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(anyhow::anyhow!("{e}")),
                    Err(e) => Err(anyhow::anyhow!("link task failed: {e}")),
                };
            }
            _ = shutdown.wait() => break Ok(()),
        }
    };
    shutdown.trigger();
    sampler.abort();
    host.stop_all().await;
    println!("Stopped");
    outcome
}

/// Saves the host's own token into `config-slave.json` (other keys kept; atomic).
fn persist_host_token(dir: &Path, token: &str) -> anyhow::Result<()> {
    crate::config::patch_file(
        &dir.join(HOST_CONFIG_FILE),
        &crate::config::host_schema(&[]),
        &json!({ "host_token": token }),
    )?
    .map_err(|r| anyhow::anyhow!("saving the host token: {r}"))?;
    Ok(())
}

fn console(shutdown: Shutdown, host: Arc<Host>) {
    let Some(mut rx) = crate::shutdown::console_lines() else {
        return;
    };
    tokio::spawn(async move {
        while let Some(line) = rx.recv().await {
            let reply = match line.trim() {
                "stop" => {
                    shutdown.trigger();
                    "stopping: saving and stopping instances".to_string()
                }
                "status" => {
                    let list: Vec<String> = host
                        .instances()
                        .iter()
                        .map(|i| format!("{} {}", i.name, i.status().as_str()))
                        .collect();
                    format!(
                        "host '{}', {} to {}, instances: {}",
                        host.cfg.host_name,
                        if host.link.is_connected() {
                            "connected"
                        } else {
                            "not connected"
                        },
                        host.cfg.controller_url,
                        if list.is_empty() {
                            "none".into()
                        } else {
                            list.join(", ")
                        }
                    )
                }
                "" | "help" => "commands: help | status | stop".to_string(),
                other => format!("unknown command '{other}'; type 'help' for the list"),
            };
            println!("{reply}");
        }
    });
}

fn err(code: &str, message: impl Into<String>) -> ErrorBody {
    ErrorBody::new(code, message)
}

impl Host {
    pub fn instances(&self) -> Vec<Arc<Instance>> {
        self.instances
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    fn instance(&self, id: i64) -> Result<Arc<Instance>, ErrorBody> {
        self.instances
            .lock()
            .ok()
            .and_then(|m| m.get(&id).cloned())
            .ok_or_else(|| {
                err(
                    "not_found",
                    format!("instance {id} is not assigned to this host"),
                )
            })
    }

    fn lists(&self) -> UserLists {
        self.lists.lock().map(|l| l.clone()).unwrap_or_default()
    }

    fn cluster_name(&self) -> String {
        self.cluster_name
            .lock()
            .map(|n| n.clone())
            .unwrap_or_default()
    }

    fn instances_dir(&self) -> PathBuf {
        self.dir.join(&self.cfg.instances_directory)
    }

    /// Instances from disk. A Factorio left running by a crashed host is stopped (it saves),
    /// so it is never started twice — unless the backend can take it over as it runs (Docker
    /// containers); instances the controller wanted running start again.
    async fn load_instances(self: &Arc<Self>) -> anyhow::Result<()> {
        let dir = self.instances_dir();
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut loaded = Vec::new();
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            let Ok(text) = std::fs::read_to_string(path.join(STATE_FILE)) else {
                continue;
            };
            let saved: Saved = match serde_json::from_str(&text) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "ignoring an unreadable instance state");
                    continue;
                }
            };
            let orphan = saved.pid;
            let inst = Arc::new(Instance::new(path.clone(), saved));
            if let Some(pid) = orphan {
                let timeout = crate::limits::secs(self.cfg.stop_timeout_s.max(1));
                if !(names_dir(pid, &path) && self.drain_orphan(&inst, pid, timeout).await) {
                    stop_orphan(pid, &path, timeout).await;
                }
            }
            let _ = inst.update_saved(|s| s.pid = None);
            if let Ok(mut m) = self.instances.lock() {
                m.insert(inst.id, inst.clone());
            }
            loaded.push(inst);
        }
        let mut resumed = Vec::new();
        for (id, server) in self.backend.recover(&loaded).await {
            if let Some(inst) = loaded.iter().find(|i| i.id == id) {
                match self.resume(inst, server).await {
                    Ok(()) => resumed.push(id),
                    Err(e) => {
                        tracing::warn!(instance = %inst.name, error = %e, "could not take over the running server")
                    }
                }
            }
        }
        for inst in loaded {
            if !resumed.contains(&inst.id)
                && (inst.saved().desired == "running" || self.settings(&inst)["auto_start"] == true)
            {
                let host = self.clone();
                tokio::spawn(async move {
                    let _ = host.start_instance(&inst, None).await;
                });
            }
        }
        Ok(())
    }

    /// Adds or updates an instance from the controller's record.
    fn adopt(&self, record: &Value) -> Result<Arc<Instance>, ErrorBody> {
        let id = record["id"]
            .as_i64()
            .ok_or_else(|| err("bad_request", "instance record without id"))?;
        let name = record["name"]
            .as_str()
            .ok_or_else(|| err("bad_request", "instance record without name"))?;
        crate::store::instances::validate_name(name)
            .map_err(|e| err("bad_request", e.to_string()))?;
        let config = record["config"].clone();
        let existing = self.instances.lock().ok().and_then(|m| m.get(&id).cloned());
        let inst = match existing {
            Some(i) => i,
            None => {
                let inst = Arc::new(Instance::new(
                    self.instances_dir().join(name),
                    Saved {
                        id,
                        name: name.to_string(),
                        config: config.clone(),
                        desired: "stopped".into(),
                        game_port: None,
                        pid: None,
                        next_save: None,
                        loaded_save: None,
                    },
                ));
                if let Ok(mut m) = self.instances.lock() {
                    m.insert(id, inst.clone());
                }
                inst
            }
        };
        inst.update_saved(|s| s.config = config)
            .map_err(|e| err("io", format!("saving instance state: {e}")))?;
        Ok(inst)
    }

    /// Drops an instance at once (so later messages see it gone); stopping it and removing
    /// its files happen in the background.
    fn forget(self: &Arc<Self>, id: i64, delete_files: bool) {
        let Some(inst) = self.instances.lock().ok().and_then(|mut m| m.remove(&id)) else {
            return;
        };
        inst.mark_removed();
        let host = self.clone();
        tokio::spawn(async move {
            // Waits for a start in progress (the instance's lock), then stops what it started;
            // later starts are refused (`mark_removed`), so no game outlives its assignment.
            let _ = host.stop_instance(&inst).await;
            let _op = inst.ops.lock().await;
            if delete_files {
                if let Err(e) = std::fs::remove_dir_all(&inst.dir) {
                    tracing::warn!(instance = %inst.name, error = %e, "could not delete the instance directory");
                }
            } else {
                let _ = std::fs::remove_file(inst.dir.join(STATE_FILE));
            }
        });
    }

    async fn stop_all(self: &Arc<Self>) {
        if self.backend.keeps_running() {
            let n = self
                .instances()
                .iter()
                .filter(|i| i.server().is_some())
                .count();
            if n > 0 {
                tracing::info!(
                    instances = n,
                    "leaving instances running in Docker: the next host start takes them over"
                );
            }
            return;
        }
        let stops = self
            .instances()
            .into_iter()
            .filter(|i| i.server().is_some())
            .map(|inst| {
                let host = self.clone();
                tokio::spawn(async move {
                    let _op = inst.ops.lock().await;
                    if let Some(server) = inst.server() {
                        // Keep `desired` as it is: a host restart brings running instances back.
                        server
                            .stop(crate::limits::secs(host.cfg.stop_timeout_s.max(1)))
                            .await;
                    }
                })
            });
        for s in stops.collect::<Vec<_>>() {
            let _ = s.await;
        }
    }

    /// This host's settings view, after applying `data.config` (a merge patch) when `update`.
    /// Secrets are masked here: their values never leave the host.
    fn config_request(&self, data: &Value, update: bool) -> Result<Value, ErrorBody> {
        let schema = &self.schemas.host;
        if update {
            crate::config::patch_file(&self.dir.join(HOST_CONFIG_FILE), schema, &data["config"])
                .map_err(|e| err("io", format!("{e:#}")))?
                .map_err(|r| err("bad_request", r.message))?;
            tracing::info!("config-slave.json changed from the controller");
        }
        let now = HostConfig::load(&self.dir).map_err(|e| err("bad_request", format!("{e:#}")))?;
        let to_json = |c: &HostConfig| serde_json::to_value(c).unwrap_or(Value::Null);
        Ok(crate::config::settings_view(
            schema,
            &to_json(&self.cfg),
            &to_json(&now),
        ))
    }

    async fn handle_request(self: &Arc<Self>, name: &str, data: Value) -> Result<Value, ErrorBody> {
        let id = data["id"].as_i64().unwrap_or(-1);
        match name {
            "config_get" | "config_update" => self.config_request(&data, name == "config_update"),
            "factorio_install" => self.install_factorio(&data).await,
            "factorio_remove" => self.remove_factorio(&data).await,
            "instance_assigned" => {
                let inst = self.adopt(&data)?;
                self.report(&inst, None);
                Ok(json!({}))
            }
            "instance_start" => {
                let inst = self.instance(id)?;
                let save = data["save"].as_str().map(String::from);
                self.start_instance(&inst, save)
                    .await
                    .map_err(|e| err("start_failed", e))?;
                Ok(inst.report(None))
            }
            "instance_stop" => {
                let inst = self.instance(id)?;
                let report = self
                    .stop_instance(&inst)
                    .await
                    .map_err(|e| err("stop_failed", e))?;
                let mut r = inst.report(None);
                r["graceful"] = json!(report.graceful);
                Ok(r)
            }
            "instance_kill" => {
                let inst = self.instance(id)?;
                self.kill_instance(&inst).await;
                Ok(inst.report(None))
            }
            "instance_rcon" => {
                let inst = self.instance(id)?;
                let command = data["command"].as_str().unwrap_or_default();
                let server = inst
                    .server()
                    .filter(|_| inst.status() == Status::Running)
                    .ok_or_else(|| {
                        err(
                            "not_running",
                            format!("instance '{}' is not running", inst.name),
                        )
                    })?;
                let output = server
                    .rcon(command)
                    .await
                    .map_err(|e| err("rcon_failed", e.to_string()))?;
                Ok(json!({ "output": output }))
            }
            "instance_logs" => {
                let inst = self.instance(id)?;
                let n = data["lines"].as_u64().unwrap_or(100) as usize;
                Ok(json!({ "lines": inst.recent_log(n) }))
            }
            "save_create" => {
                let inst = self.instance(id)?;
                let name = data["name"].as_str().map(String::from);
                let map = mapgen::NewMap::from_request(&data).map_err(|e| err("bad_request", e))?;
                self.create_save(&inst, name, map).await.map_err(|e| {
                    let taken = e.contains("already has a save") || e.contains("is running;");
                    let code = if taken {
                        "conflict"
                    } else if e.contains("has no scenario") {
                        "not_found"
                    } else {
                        "save_failed"
                    };
                    err(code, e)
                })
            }
            "scenario_list" => {
                let inst = self.instance(id)?;
                // The scenarios of the install the instance would start with.
                let wanted = self.settings(&inst)["factorio_version"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                let data_dir = self
                    .versions
                    .resolve(&wanted, &self.cfg.host_name)
                    .ok()
                    .map(|i| i.data_dir());
                Ok(json!(scenarios::list(&inst.dir, data_dir.as_deref())))
            }
            "scenario_fetch" => {
                let inst = self.instance(id)?;
                let name = data["name"].as_str().unwrap_or_default();
                let name = scenarios::check_upload_name(name).map_err(|e| err("bad_request", e))?;
                let dir = inst.dir.join("scenarios");
                std::fs::create_dir_all(&dir)
                    .map_err(|e| err("io", format!("creating {}: {e}", dir.display())))?;
                let zip = format!("upload-{}.zip", crate::store::now_ms());
                let zip = self
                    .transfer
                    .fetch_scenario_as(id, &name, &dir, &zip)
                    .await
                    .map_err(|e| err("transfer_failed", e))?;
                let unpacked = scenarios::unpack(&zip, &inst.dir, &name);
                let _ = std::fs::remove_file(&zip);
                unpacked.map_err(|e| err("bad_request", e))?;
                tracing::info!(instance = %inst.name, scenario = %name, "scenario uploaded");
                Ok(json!({ "name": name, "source": "instance" }))
            }
            "save_push" => {
                let inst = self.instance(id)?;
                let name = data["name"].as_str().unwrap_or_default();
                crate::saves::validate_name(name).map_err(|e| err("bad_request", e.to_string()))?;
                let path = inst.saves_dir().join(name);
                if !path.exists() {
                    return Err(err(
                        "not_found",
                        format!("instance '{}' has no save named '{name}'", inst.name),
                    ));
                }
                self.transfer
                    .upload_save(inst.id, &path, name, "download")
                    .await
                    .map_err(|e| err("transfer_failed", e))
            }
            "backup" => {
                let inst = self.instance(id)?;
                if let Some(server) = inst.server().filter(|_| inst.status() == Status::Running) {
                    let _ = server.rcon("/server-save").await;
                }
                self.backup(&inst)
                    .await
                    .map_err(|e| err("backup_failed", e))
            }
            other if other.starts_with("save_") => match self.save_request(other, &data).await {
                Some(result) => result,
                None => Err(err(
                    "unknown_request",
                    format!("unknown host request \"{other}\""),
                )),
            },
            other => Err(err(
                "unknown_request",
                format!("unknown host request \"{other}\""),
            )),
        }
    }

    fn handle_event(self: &Arc<Self>, name: &str, data: Value) {
        match name {
            "instances_sync" => self.reconcile(&data),
            "instance_unassigned" => {
                let id = data["id"].as_i64().unwrap_or(-1);
                self.forget(id, data["delete"].as_bool().unwrap_or(false));
            }
            "user_updated" => {
                let cmds = self
                    .lists
                    .lock()
                    .map(|mut l| l.apply_user(&data))
                    .unwrap_or_default();
                self.run_on_all(cmds);
            }
            "user_deleted" => {
                let name = data["name"].as_str().unwrap_or_default().to_string();
                let cmds = self
                    .lists
                    .lock()
                    .map(|mut l| l.remove_user(&name))
                    .unwrap_or_default();
                self.run_on_all(cmds);
            }
            other => {
                if !self.route_plugin_event(other, data) {
                    tracing::debug!(event = other, "unhandled event");
                }
            }
        }
    }

    /// List changes reach running games at once, over RCON.
    fn run_on_all(self: &Arc<Self>, cmds: Vec<String>) {
        if cmds.is_empty() {
            return;
        }
        let host = self.clone();
        tokio::spawn(async move { host.run_commands(cmds).await });
    }

    async fn run_commands(&self, cmds: Vec<String>) {
        for inst in self.instances() {
            if self.settings(&inst)["sync_lists"] == false {
                continue;
            }
            if let Some(server) = inst.server().filter(|_| inst.status() == Status::Running) {
                for cmd in &cmds {
                    if let Err(e) = server.rcon(cmd).await {
                        tracing::warn!(instance = %inst.name, command = %cmd, error = %e, "list sync command failed");
                    }
                }
            }
        }
    }

    /// The controller's desired state wins: adopt its instances with their configs, drop the
    /// ones it no longer gives us, start or stop where the desired state differs — and leave
    /// running instances that should run alone.
    fn reconcile(self: &Arc<Self>, data: &Value) {
        if let Some(name) = data["cluster_name"].as_str()
            && let Ok(mut n) = self.cluster_name.lock()
        {
            *n = name.to_string();
        }
        if let Some(users) = data["users"].as_array() {
            let cmds = self
                .lists
                .lock()
                .map(|mut l| l.sync_to(users))
                .unwrap_or_default();
            self.run_on_all(cmds);
        }
        let records = data["instances"].as_array().cloned().unwrap_or_default();
        let wanted: Vec<i64> = records.iter().filter_map(|r| r["id"].as_i64()).collect();
        for inst in self.instances() {
            if !wanted.contains(&inst.id) {
                tracing::info!(instance = %inst.name, "no longer assigned here");
                self.forget(inst.id, false);
            }
        }
        for record in &records {
            let Ok(inst) = self.adopt(record) else {
                continue;
            };
            let desired = record["desired"].as_str().unwrap_or("stopped");
            let active = inst.status().is_active();
            let host = self.clone();
            // A crash without restart_on_crash stands until someone starts it again; a sync
            // computed before the controller heard of the crash must not undo that.
            let crashed = inst.status() == Status::Crashed;
            if desired == "running" && !active && !crashed {
                tokio::spawn(async move {
                    let _ = host.start_instance(&inst, None).await;
                });
            } else if desired != "running" && active {
                tokio::spawn(async move {
                    let _ = host.stop_instance(&inst).await;
                });
            } else {
                self.report(&inst, None);
            }
        }
    }
}

/// Stops a Factorio process left behind by a previous run of this host (SIGINT: it saves and
/// quits), killing it if it does not exit in time. Only a process whose command line names
/// this instance's directory is touched.
async fn stop_orphan(pid: u32, dir: &Path, timeout: Duration) {
    if !names_dir(pid, dir) {
        return;
    }
    tracing::info!(pid, dir = %dir.display(), "stopping a Factorio left running by a previous host process");
    let pid_t = pid as libc::pid_t;
    // SAFETY: kill(2) with a pid we just checked belongs to our instance; no memory is involved.
    unsafe {
        libc::kill(pid_t, libc::SIGINT);
    }
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if !Path::new(&format!("/proc/{pid}")).exists() || is_zombie(pid) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // SAFETY: as above.
    unsafe {
        libc::kill(pid_t, libc::SIGKILL);
    }
}

/// Whether process `pid`'s command line names this instance's directory (it is our Factorio).
fn names_dir(pid: u32, dir: &Path) -> bool {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&cmdline).contains(&*dir.to_string_lossy())
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}
