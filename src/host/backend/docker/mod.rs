//! Factorio in sibling containers on one Docker daemon (the local socket or `DOCKER_HOST`),
//! driven with bollard the way Wings drives its servers (research/docker-backend.md §1, §4.6).
//!
//! Each instance is a plain container of the clustorio image (or `docker_image`) with the
//! Factorio executable as entrypoint, the host's install mounted read-only and the instance
//! directory read-write, both at the paths the host uses, so `config.ini` and the command line
//! are the process backend's. The console is attached without a TTY before the start; its output
//! goes through the same [`ServerHandle`] as a child's pipes. RCON listens on the host's own
//! bridge network and is never published; the game port is published with the same number
//! inside and out. There is no Docker restart policy: the supervisor owns restarts, and sees a
//! container's end exactly as a process's (exit code, OOM kill, last lines).

mod container;
mod paths;

pub use container::{LABEL_HOST, LABEL_INSTANCE, Limits};
pub use paths::PathMap;

use super::{Backend, BoxFuture, GameServer, Spawned};
use crate::config::HostConfig;
use crate::host::factorio::server::{Ended, Started};
use crate::host::factorio::{
    CreateSpec, ExitReport, Install, LaunchError, RconTimeouts, ServerHandle, StartSpec, cli,
    save::created_file,
};
use crate::host::instance::Instance;
use bollard::Docker;
use bollard::container::{AttachContainerResults, LogOutput};
use bollard::errors::Error as DockerError;
use bollard::models::{ContainerInspectResponse, NetworkConnectRequest, NetworkCreateRequest};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, InspectContainerOptions,
    InspectNetworkOptions, KillContainerOptionsBuilder, ListContainersOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, StartContainerOptions,
    StopContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use bytes::Bytes;
use container::{Bind, LABEL_ROLE, Plan, RCON_PORT};
use futures_util::{Stream, StreamExt};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::io::StreamReader;

/// The image instances run in when neither `docker_image` nor the host's own container names one.
pub const DEFAULT_IMAGE: &str = "ghcr.io/clustorio/clustorio:latest";
/// Where the daemon is when `DOCKER_HOST` is not set.
pub const DEFAULT_ENDPOINT: &str = "unix:///var/run/docker.sock";
/// Output lines replayed from the container's log when a running container is adopted.
const REPLAY_LINES: &str = "1000";

/// The host's settings for this backend (config keys `docker_*`, `DOCKER_HOST`).
#[derive(Clone, Debug)]
pub struct Settings {
    pub host_name: String,
    /// The host's working directory (absolute), which `data_dir` names for the daemon.
    pub host_dir: PathBuf,
    /// `DOCKER_HOST`: `unix://…`, `tcp://…` or `http://…`; `None` = the local socket.
    pub endpoint: Option<String>,
    pub image: String,
    pub network: String,
    pub data_dir: String,
    pub limits: Limits,
    /// Address the game port is published on (the host's `bind_address`).
    pub publish_ip: String,
    pub stop_timeout_s: u64,
    pub keep_running: bool,
}

impl Settings {
    pub fn from_config(cfg: &HostConfig, host_dir: &Path) -> Settings {
        Settings {
            host_name: cfg.host_name.clone(),
            host_dir: host_dir.to_path_buf(),
            endpoint: std::env::var("DOCKER_HOST")
                .ok()
                .filter(|v| !v.trim().is_empty()),
            image: cfg.docker_image.clone(),
            network: cfg.docker_network.clone(),
            data_dir: cfg.docker_data_dir.clone(),
            limits: Limits {
                memory_mb: cfg.docker_memory_limit_mb,
                cpus: cfg.docker_cpu_limit,
            },
            publish_ip: cfg.bind_address.clone(),
            stop_timeout_s: cfg.stop_timeout_s.max(1),
            keep_running: cfg.docker_keep_running,
        }
    }

    fn endpoint(&self) -> &str {
        self.endpoint.as_deref().unwrap_or(DEFAULT_ENDPOINT)
    }
}

/// A daemon this host has connected to, with what it found out about itself there.
struct Daemon {
    docker: Docker,
    image: String,
    network: String,
    paths: PathMap,
}

pub struct DockerBackend {
    settings: Settings,
    /// Connected on first use and kept; a failed connection is retried at the next start.
    daemon: tokio::sync::Mutex<Option<Arc<Daemon>>>,
    problem: std::sync::Mutex<Option<String>>,
}

impl DockerBackend {
    pub fn new(settings: Settings) -> DockerBackend {
        DockerBackend {
            settings,
            daemon: tokio::sync::Mutex::new(None),
            problem: std::sync::Mutex::new(None),
        }
    }

    /// Connects now (the host does at start, to report problems early); `Err` says what to fix.
    pub async fn connect(&self) -> Result<(), String> {
        self.daemon().await.map(|_| ())
    }

    async fn daemon(&self) -> Result<Arc<Daemon>, String> {
        let mut slot = self.daemon.lock().await;
        if let Some(d) = slot.as_ref() {
            return Ok(d.clone());
        }
        let result = Daemon::connect(&self.settings).await;
        let problem = result.as_ref().err().cloned();
        if let Ok(mut p) = self.problem.lock() {
            *p = problem;
        }
        let d = Arc::new(result?);
        *slot = Some(d.clone());
        Ok(d)
    }

    async fn spawn_container(&self, inst: &Instance, spec: StartSpec) -> Result<Spawned, String> {
        let d = self
            .daemon()
            .await
            .map_err(|e| format!("the Docker backend is unavailable: {e}"))?;
        let mut args = spec.args.clone();
        // In its own network namespace Factorio listens on every address; where the game port
        // is reachable is the publish's business, and RCON's is the host network's.
        args.bind = None;
        let password = args.rcon.as_ref().map(|(_, pw)| pw.clone());
        args.rcon = password
            .clone()
            .map(|pw| (SocketAddr::from(([0, 0, 0, 0], RCON_PORT)), pw));
        let config = cli::write_config(&spec.install, &spec.write_dir)
            .map_err(|e| format!("cannot prepare {}: {e}", spec.write_dir.display()))?;
        let limits = Limits::for_instance(&inst.stored_config(), self.settings.limits);
        let plan = self.plan(
            &d,
            inst,
            "server",
            &spec.install,
            &spec.write_dir,
            strings(cli::server_args(&config, &args))?,
            &spec.env,
            Some(args.port),
            limits,
        )?;
        self.remove_leftovers(&d, inst).await;
        let id = create(&d, &plan).await?;
        // Attach before the start, so no line is missed (Wings' order).
        let attached = match d
            .docker
            .attach_container(
                &id,
                Some(
                    AttachContainerOptionsBuilder::new()
                        .stdin(true)
                        .stdout(true)
                        .stderr(true)
                        .stream(true)
                        .build(),
                ),
            )
            .await
        {
            Ok(a) => a,
            Err(e) => {
                remove(&d, &id).await;
                return Err(format!(
                    "attaching to container {}: {}",
                    plan.name,
                    explain(&e)
                ));
            }
        };
        if let Err(e) = d
            .docker
            .start_container(&id, None::<StartContainerOptions>)
            .await
        {
            remove(&d, &id).await;
            let message = explain(&e);
            return Err(if message.contains("port is already allocated") {
                format!(
                    "game port {} is already in use on the Docker host (by a program or a container clustorio does not run)",
                    args.port
                )
            } else {
                format!("starting container {}: {message}", plan.name)
            });
        }
        let inspected = d
            .docker
            .inspect_container(&id, None::<InspectContainerOptions>)
            .await
            .map_err(|e| format!("inspecting container {}: {}", plan.name, explain(&e)))?;
        let rcon = match password {
            Some(pw) => Some((rcon_address(&d, &inspected)?, pw)),
            None => None,
        };
        let started = started(
            d.clone(),
            id.clone(),
            attached,
            Vec::new(),
            spec.write_dir.join("script-output"),
        );
        let (handle, events) = ServerHandle::supervise(started, rcon, spec.rcon_timeouts, false);
        let server = ContainerServer {
            handle,
            info: info(&id, &plan.name, &d.image, limits),
        };
        Ok((Arc::new(server), events))
    }

    /// The container for `inst` (a server or a one-shot `--create`).
    #[allow(clippy::too_many_arguments)]
    fn plan(
        &self,
        d: &Daemon,
        inst: &Instance,
        role: &str,
        install: &Install,
        write_dir: &Path,
        args: Vec<String>,
        extra_env: &[(std::ffi::OsString, std::ffi::OsString)],
        game_port: Option<u16>,
        limits: Limits,
    ) -> Result<Plan, String> {
        let bind = |p: &Path, read_only| -> Result<Bind, String> {
            Ok(Bind {
                source: d.paths.daemon_path(p)?,
                target: p.to_path_buf(),
                read_only,
            })
        };
        let server = role == "server";
        // SAFETY: getuid/getgid cannot fail and touch no memory.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        Ok(Plan {
            name: container::container_name(&self.settings.host_name, &inst.name, role),
            image: d.image.clone(),
            entrypoint: utf8(&install.executable())?,
            args,
            working_dir: utf8(write_dir)?,
            user: format!("{uid}:{gid}"),
            env: forwarded_env(extra_env),
            labels: container::labels(&self.settings.host_name, inst.id, &inst.name, role),
            binds: vec![bind(&install.root, true)?, bind(write_dir, false)?],
            game_port,
            publish_ip: self.settings.publish_ip.clone(),
            network: server.then(|| d.network.clone()),
            limits,
            stop_timeout_s: self.settings.stop_timeout_s,
            console: server,
        })
    }

    /// Containers of this host, by label (never another host's).
    async fn ours(&self, d: &Daemon) -> Result<Vec<bollard::models::ContainerSummary>, String> {
        let label = format!("{LABEL_HOST}={}", self.settings.host_name);
        let filters = HashMap::from([("label", vec![label.as_str()])]);
        d.docker
            .list_containers(Some(
                ListContainersOptionsBuilder::new()
                    .all(true)
                    .filters(&filters)
                    .build(),
            ))
            .await
            .map_err(|e| format!("listing containers: {}", explain(&e)))
    }

    /// Every start is a fresh container: whatever an earlier start of `inst` left goes first.
    async fn remove_leftovers(&self, d: &Daemon, inst: &Instance) {
        let Ok(list) = self.ours(d).await else { return };
        for c in list {
            if instance_of(&c) == Some(inst.id)
                && let Some(id) = &c.id
            {
                remove(d, id).await;
            }
        }
    }

    async fn recover_all(&self, instances: &[Arc<Instance>]) -> Vec<(i64, Spawned)> {
        let d = match self.daemon().await {
            Ok(d) => d,
            Err(e) => {
                // Already said once, at connect.
                tracing::debug!(error = %e, "containers left by a previous run are not checked");
                return Vec::new();
            }
        };
        let list = match self.ours(&d).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot look for containers left by a previous run");
                return Vec::new();
            }
        };
        let mut adopted = Vec::new();
        let mut leftovers = Vec::new();
        for c in list {
            let Some(id) = c.id.clone() else { continue };
            let running = c.state == Some(bollard::models::ContainerSummaryStateEnum::RUNNING);
            // Only what this backend made carries a role (not, say, the host's own container).
            let Some(role) = c.labels.as_ref().and_then(|l| l.get(LABEL_ROLE)) else {
                continue;
            };
            let server = role == "server";
            let inst = instance_of(&c).and_then(|i| instances.iter().find(|x| x.id == i));
            match inst {
                Some(inst) if running && server && !adopted.iter().any(|(i, _)| *i == inst.id) => {
                    match self.adopt(&d, inst, &id).await {
                        Ok(s) => {
                            tracing::info!(instance = %inst.name, container = %id, "adopted a running container");
                            adopted.push((inst.id, s));
                        }
                        Err(e) => {
                            tracing::warn!(instance = %inst.name, error = %e, "cannot adopt its running container; stopping it");
                            leftovers.push(id);
                        }
                    }
                }
                Some(_) if !running => remove(&d, &id).await,
                Some(_) => leftovers.push(id),
                None => {
                    tracing::info!(container = %id, "removing a container of an instance this host no longer has");
                    leftovers.push(id);
                }
            }
        }
        // Running leftovers get a graceful stop (Factorio saves), in the background: the host
        // must not wait for them to come up.
        let timeout = i32::try_from(self.settings.stop_timeout_s).unwrap_or(i32::MAX);
        tokio::spawn(async move {
            for id in leftovers {
                let _ = d
                    .docker
                    .stop_container(
                        &id,
                        Some(StopContainerOptionsBuilder::new().t(timeout).build()),
                    )
                    .await;
                remove(&d, &id).await;
            }
        });
        adopted
    }

    /// Attaches to a running container again: the game never stopped.
    async fn adopt(&self, d: &Arc<Daemon>, inst: &Instance, id: &str) -> Result<Spawned, String> {
        let inspected = d
            .docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
            .map_err(|e| format!("inspecting container {id}: {}", explain(&e)))?;
        let args = inspected
            .config
            .as_ref()
            .and_then(|c| c.cmd.clone())
            .unwrap_or_default();
        let rcon = match container::arg_after(&args, "--rcon-password") {
            Some(pw) => Some((rcon_address(d, &inspected)?, pw.to_string())),
            None => None,
        };
        let attached = d
            .docker
            .attach_container(
                id,
                Some(
                    AttachContainerOptionsBuilder::new()
                        .stdin(true)
                        .stdout(true)
                        .stderr(true)
                        .stream(true)
                        .build(),
                ),
            )
            .await
            .map_err(|e| format!("attaching to container {id}: {}", explain(&e)))?;
        // Attached first, then the tail: a line may come twice, none goes missing.
        let replay: Vec<LogOutput> = d
            .docker
            .logs(
                id,
                Some(
                    LogsOptionsBuilder::new()
                        .stdout(true)
                        .stderr(true)
                        .tail(REPLAY_LINES)
                        .build(),
                ),
            )
            .filter_map(|r| async move { r.ok() })
            .collect()
            .await;
        let limits = Limits::for_instance(&inst.stored_config(), self.settings.limits);
        let name = inspected
            .name
            .as_deref()
            .map(|n| n.trim_start_matches('/').to_string())
            .unwrap_or_default();
        let started = started(
            d.clone(),
            id.to_string(),
            attached,
            replay,
            inst.dir.join("script-output"),
        );
        let (handle, events) =
            ServerHandle::supervise(started, rcon, RconTimeouts::default(), true);
        let server = ContainerServer {
            handle,
            info: info(id, &name, &d.image, limits),
        };
        Ok((Arc::new(server), events))
    }

    async fn create_in_container(
        &self,
        inst: &Instance,
        spec: CreateSpec,
    ) -> Result<PathBuf, String> {
        let d = self
            .daemon()
            .await
            .map_err(|e| format!("the Docker backend is unavailable: {e}"))?;
        if !spec.save.is_absolute() {
            return Err(format!(
                "save path {} must be absolute",
                spec.save.display()
            ));
        }
        let config = cli::write_config(&spec.install, &spec.write_dir)
            .map_err(|e| format!("cannot prepare {}: {e}", spec.write_dir.display()))?;
        if let Some(dir) = spec.save.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot prepare {}: {e}", dir.display()))?;
        }
        let limits = Limits::for_instance(&inst.stored_config(), self.settings.limits);
        let plan = self.plan(
            &d,
            inst,
            "create",
            &spec.install,
            &spec.write_dir,
            strings(cli::create_args(&config, &spec.save, &spec.args))?,
            &spec.env,
            None,
            limits,
        )?;
        let _ = d
            .docker
            .remove_container(
                &plan.name,
                Some(RemoveContainerOptionsBuilder::new().force(true).build()),
            )
            .await;
        let id = create(&d, &plan).await?;
        let outcome = async {
            d.docker
                .start_container(&id, None::<StartContainerOptions>)
                .await
                .map_err(|e| format!("starting container {}: {}", plan.name, explain(&e)))?;
            let mut wait = Box::pin(
                d.docker.wait_container(
                    &id,
                    Some(
                        WaitContainerOptionsBuilder::new()
                            .condition("not-running")
                            .build(),
                    ),
                ),
            );
            if tokio::time::timeout(spec.timeout, wait.next())
                .await
                .is_err()
            {
                return Err(format!(
                    "creating {} timed out after {:?}",
                    spec.save.display(),
                    spec.timeout
                ));
            }
            let code = d
                .docker
                .inspect_container(&id, None::<InspectContainerOptions>)
                .await
                .ok()
                .and_then(|c| c.state)
                .and_then(|s| s.exit_code);
            if code == Some(0) {
                return Ok(());
            }
            let output: Vec<String> = d
                .docker
                .logs(
                    &id,
                    Some(
                        LogsOptionsBuilder::new()
                            .stdout(true)
                            .stderr(true)
                            .tail("15")
                            .build(),
                    ),
                )
                .filter_map(|r| async move { r.ok().map(|l| l.to_string()) })
                .collect()
                .await;
            Err(format!(
                "creating {} failed (exit code {}); last output:\n{}",
                spec.save.display(),
                code.map_or("unknown".into(), |c| c.to_string()),
                output.concat().trim_end()
            ))
        }
        .await;
        remove(&d, &id).await;
        outcome?;
        let file = created_file(&spec.save);
        if !file.is_file() {
            return Err(format!(
                "factorio --create exited 0 but {} does not exist",
                file.display()
            ));
        }
        Ok(file)
    }
}

impl Backend for DockerBackend {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn unavailable(&self) -> Option<String> {
        self.problem.lock().ok().and_then(|p| p.clone())
    }

    /// The container's CPU (ns → s) and memory usage from the daemon's one-shot stats.
    fn stats<'a>(&'a self, server: &'a dyn GameServer) -> BoxFuture<'a, Option<(f64, f64)>> {
        Box::pin(async move {
            let id = server.container()?["id"].as_str()?.to_string();
            let daemon = self.daemon().await.ok()?;
            let options = bollard::query_parameters::StatsOptions {
                stream: false,
                one_shot: true,
            };
            let mut stream = daemon.docker.stats(&id, Some(options));
            let stats = tokio::time::timeout(Duration::from_secs(2), stream.next())
                .await
                .ok()??
                .ok()?;
            let cpu = stats.cpu_stats?.cpu_usage?.total_usage? as f64 / 1e9;
            let mem = stats.memory_stats?.usage? as f64;
            Some((cpu, mem))
        })
    }

    fn spawn<'a>(
        &'a self,
        inst: &'a Instance,
        spec: StartSpec,
    ) -> BoxFuture<'a, Result<Spawned, LaunchError>> {
        Box::pin(async move {
            self.spawn_container(inst, spec)
                .await
                .map_err(LaunchError::Backend)
        })
    }

    fn create_save<'a>(
        &'a self,
        inst: &'a Instance,
        spec: CreateSpec,
    ) -> BoxFuture<'a, Result<PathBuf, String>> {
        Box::pin(self.create_in_container(inst, spec))
    }

    fn recover<'a>(&'a self, instances: &'a [Arc<Instance>]) -> BoxFuture<'a, Vec<(i64, Spawned)>> {
        Box::pin(self.recover_all(instances))
    }

    fn keeps_running(&self) -> bool {
        self.settings.keep_running
    }
}

impl Daemon {
    async fn connect(s: &Settings) -> Result<Daemon, String> {
        let endpoint = s.endpoint();
        let docker = Docker::connect_with_host(endpoint)
            .map_err(|e| explain_connect(endpoint, &e))?
            .negotiate_version()
            .await
            .map_err(|e| explain_connect(endpoint, &e))?;

        // In a container (compose, Swarm): the daemon knows it, and its mounts say where our
        // paths are on the daemon's machine.
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let own = match paths::own_container_id(&mountinfo) {
            Some(id) => match docker
                .inspect_container(&id, None::<InspectContainerOptions>)
                .await
            {
                Ok(c) => Some(c),
                Err(e) if status(&e) == Some(404) => {
                    tracing::warn!(%endpoint, "this host runs in a container the Docker daemon does not know; paths are passed to it unchanged");
                    None
                }
                Err(e) => {
                    return Err(format!(
                        "inspecting this host's own container: {}",
                        explain(&e)
                    ));
                }
            },
            None => None,
        };
        let mut mounts = Vec::new();
        if !s.data_dir.trim().is_empty() {
            mounts.push((s.host_dir.clone(), PathBuf::from(s.data_dir.trim())));
        }
        for m in own.iter().flat_map(|c| c.mounts.iter().flatten()) {
            if let (Some(dest), Some(src)) = (&m.destination, &m.source) {
                mounts.push((PathBuf::from(dest), PathBuf::from(src)));
            }
        }
        let paths = PathMap::new(mounts, own.is_some());
        if paths.is_translating() {
            tracing::info!(data = %paths.daemon_path(&s.host_dir).unwrap_or_default().display(), "the Docker daemon sees this host's directory here");
        }

        let image = if !s.image.trim().is_empty() {
            s.image.trim().to_string()
        } else {
            own.as_ref()
                .and_then(|c| c.config.as_ref())
                .and_then(|c| c.image.clone())
                .unwrap_or_else(|| DEFAULT_IMAGE.to_string())
        };
        if let Err(e) = docker.inspect_image(&image).await {
            return Err(if status(&e) == Some(404) {
                format!(
                    "image '{image}' is not on the Docker daemon at {endpoint}: build it (docker/build-image.sh) or pull it there, or set docker_image"
                )
            } else {
                format!("inspecting image '{image}': {}", explain(&e))
            });
        }

        let network = if s.network.trim().is_empty() {
            format!("clustorio-{}", container::sanitize(&s.host_name))
        } else {
            s.network.trim().to_string()
        };
        ensure_network(&docker, &network, &s.host_name).await?;
        if let Some(id) = own.as_ref().and_then(|c| c.id.clone()) {
            // RCON is on this network only: join it.
            let joined = docker
                .connect_network(
                    &network,
                    NetworkConnectRequest {
                        container: id,
                        endpoint_config: None,
                    },
                )
                .await;
            if let Err(e) = joined
                && status(&e) != Some(403)
                && !explain(&e).contains("already exists")
            {
                return Err(format!("joining network {network}: {}", explain(&e)));
            }
        }
        tracing::info!(%endpoint, %image, %network, "Docker backend ready");
        Ok(Daemon {
            docker,
            image,
            network,
            paths,
        })
    }
}

async fn ensure_network(docker: &Docker, name: &str, host: &str) -> Result<(), String> {
    match docker
        .inspect_network(name, None::<InspectNetworkOptions>)
        .await
    {
        Ok(_) => return Ok(()),
        Err(e) if status(&e) == Some(404) => {}
        Err(e) => return Err(format!("inspecting network {name}: {}", explain(&e))),
    }
    let created = docker
        .create_network(NetworkCreateRequest {
            name: name.to_string(),
            driver: Some("bridge".into()),
            labels: Some(HashMap::from([(LABEL_HOST.to_string(), host.to_string())])),
            ..Default::default()
        })
        .await;
    match created {
        // 409: another start created it just now.
        Err(e) if status(&e) != Some(409) => {
            Err(format!("creating network {name}: {}", explain(&e)))
        }
        _ => Ok(()),
    }
}

async fn create(d: &Daemon, plan: &Plan) -> Result<String, String> {
    d.docker
        .create_container(
            Some(
                CreateContainerOptionsBuilder::new()
                    .name(&plan.name)
                    .build(),
            ),
            plan.body(),
        )
        .await
        .map(|r| r.id)
        .map_err(|e| format!("creating container {}: {}", plan.name, explain(&e)))
}

/// Removes a container; one that is already gone is fine.
async fn remove(d: &Daemon, id: &str) {
    let removed = d
        .docker
        .remove_container(
            id,
            Some(RemoveContainerOptionsBuilder::new().force(true).build()),
        )
        .await;
    if let Err(e) = removed
        && status(&e) != Some(404)
    {
        tracing::warn!(container = %id, error = %explain(&e), "could not remove a container");
    }
}

/// Where RCON answers: the container's address on the host's network.
fn rcon_address(d: &Daemon, c: &ContainerInspectResponse) -> Result<SocketAddr, String> {
    c.network_settings
        .as_ref()
        .and_then(|n| n.networks.as_ref())
        .and_then(|n| n.get(&d.network))
        .and_then(|e| e.ip_address.as_deref())
        .and_then(|ip| ip.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, RCON_PORT))
        .ok_or_else(|| format!("the container has no address on network {}", d.network))
}

fn instance_of(c: &bollard::models::ContainerSummary) -> Option<i64> {
    c.labels.as_ref()?.get(LABEL_INSTANCE)?.parse().ok()
}

fn info(id: &str, name: &str, image: &str, limits: Limits) -> Value {
    let mut v = json!({ "id": id, "name": name, "image": image });
    if let (Some(m), Value::Object(l)) = (v.as_object_mut(), limits.to_json()) {
        m.extend(l);
    }
    v
}

type Output = StreamReader<Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>, Bytes>;

fn reader(rx: mpsc::Receiver<Bytes>) -> Output {
    StreamReader::new(Box::pin(futures_util::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|b| (Ok(b), rx)) },
    )))
}

/// The attach stream split into stdout and stderr (after `replay`, the log tail of an adopted
/// container), and a watcher that turns signals into `kill` calls and reports the exit.
fn started(
    d: Arc<Daemon>,
    id: String,
    attached: AttachContainerResults,
    replay: Vec<LogOutput>,
    script_output: PathBuf,
) -> Started<Output, Output> {
    // The replayed tail is for the log and the player list; an IPC line in it was (or should
    // have been) handled by the host that saw it live, and handling it twice could move value
    // twice.
    let replay: Vec<LogOutput> = replay
        .into_iter()
        .filter(|chunk| {
            !chunk
                .as_ref()
                .windows(crate::host::factorio::ipc::MARKER.len())
                .any(|w| w == crate::host::factorio::ipc::MARKER)
        })
        .collect();
    let (out_tx, out_rx) = mpsc::channel::<Bytes>(64);
    let (err_tx, err_rx) = mpsc::channel::<Bytes>(64);
    let AttachContainerResults { mut output, input } = attached;
    tokio::spawn(async move {
        let live = futures_util::stream::poll_fn(move |cx| output.as_mut().poll_next(cx))
            .filter_map(|r| async move { r.ok() });
        let mut all = Box::pin(futures_util::stream::iter(replay).chain(live));
        while let Some(chunk) = all.next().await {
            let sent = match chunk {
                LogOutput::StdErr { message } => err_tx.send(message).await,
                LogOutput::StdOut { message } | LogOutput::Console { message } => {
                    out_tx.send(message).await
                }
                LogOutput::StdIn { .. } => Ok(()),
            };
            if sent.is_err() {
                break;
            }
        }
        // Dropping the senders ends both readers: the attach EOF.
    });
    Started {
        pid: None,
        stdin: Some(Box::new(input)),
        stdout: Some(reader(out_rx)),
        stderr: Some(reader(err_rx)),
        run: Box::new(move |signals| Box::pin(watch(d, id, signals))),
        script_output,
    }
}

/// Delivers signals to the container until it stops, then reads how it ended and removes it.
async fn watch(d: Arc<Daemon>, id: String, mut signals: mpsc::UnboundedReceiver<i32>) -> Ended {
    let mut wait = Box::pin(
        d.docker.wait_container(
            &id,
            Some(
                WaitContainerOptionsBuilder::new()
                    .condition("not-running")
                    .build(),
            ),
        ),
    );
    loop {
        tokio::select! {
            // A non-zero exit comes as an `Err` too; either way it has stopped (or the daemon
            // went away, which the inspect below tells).
            _ = wait.next() => break,
            Some(sig) = signals.recv() => {
                let name = signal_name(sig);
                let killed = d
                    .docker
                    .kill_container(&id, Some(KillContainerOptionsBuilder::new().signal(&name).build()))
                    .await;
                if let Err(e) = killed {
                    tracing::debug!(container = %id, signal = %name, error = %explain(&e), "signal not delivered");
                }
            }
        }
    }
    let ended = match d
        .docker
        .inspect_container(&id, None::<InspectContainerOptions>)
        .await
    {
        Ok(c) => ended(c.state.as_ref()),
        Err(e) => {
            tracing::warn!(container = %id, error = %explain(&e), "cannot tell how the container ended");
            Ended::default()
        }
    };
    remove(&d, &id).await;
    ended
}

/// docker-init exits 128+N when Factorio dies of signal N.
fn ended(state: Option<&bollard::models::ContainerState>) -> Ended {
    let code = state
        .and_then(|s| s.exit_code)
        .and_then(|c| i32::try_from(c).ok());
    let oom_killed = state.and_then(|s| s.oom_killed).unwrap_or(false);
    match code {
        Some(c) if (129..=192).contains(&c) => Ended {
            code: None,
            signal: Some(c - 128),
            oom_killed,
        },
        code => Ended {
            code,
            signal: None,
            oom_killed,
        },
    }
}

fn signal_name(sig: i32) -> String {
    match sig {
        libc::SIGINT => "SIGINT".into(),
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGKILL => "SIGKILL".into(),
        other => other.to_string(),
    }
}

/// A server in a container: the shared handle, plus what the instance view shows about it.
struct ContainerServer {
    handle: ServerHandle,
    info: Value,
}

impl GameServer for ContainerServer {
    fn pid(&self) -> Option<u32> {
        None
    }

    fn container(&self) -> Option<Value> {
        Some(self.info.clone())
    }

    fn wait_ready(&self, timeout: Duration) -> BoxFuture<'_, Result<(), LaunchError>> {
        GameServer::wait_ready(&self.handle, timeout)
    }

    fn rcon<'a>(&'a self, command: &'a str) -> BoxFuture<'a, Result<String, LaunchError>> {
        GameServer::rcon(&self.handle, command)
    }

    fn console<'a>(&'a self, line: &'a str) -> BoxFuture<'a, std::io::Result<()>> {
        GameServer::console(&self.handle, line)
    }

    fn stop(&self, timeout: Duration) -> BoxFuture<'_, ExitReport> {
        GameServer::stop(&self.handle, timeout)
    }

    fn kill(&self) -> BoxFuture<'_, ExitReport> {
        GameServer::kill(&self.handle)
    }
}

/// The environment a child process would inherit that matters to Factorio: `TZ` and the
/// `FACTORIO_*` variables, plus the start's own.
fn forwarded_env(extra: &[(std::ffi::OsString, std::ffi::OsString)]) -> Vec<String> {
    let mut env: Vec<String> = std::env::vars()
        .filter(|(k, _)| k == "TZ" || k.starts_with("FACTORIO_"))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    env.extend(
        extra
            .iter()
            .map(|(k, v)| format!("{}={}", k.to_string_lossy(), v.to_string_lossy())),
    );
    env
}

fn utf8(p: &Path) -> Result<String, String> {
    p.to_str()
        .map(String::from)
        .ok_or_else(|| format!("{} is not UTF-8, which the Docker API needs", p.display()))
}

fn strings(args: Vec<std::ffi::OsString>) -> Result<Vec<String>, String> {
    args.into_iter()
        .map(|a| {
            a.into_string()
                .map_err(|a| format!("argument {a:?} is not UTF-8, which the Docker API needs"))
        })
        .collect()
}

fn status(e: &DockerError) -> Option<u16> {
    match e {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// One line: the daemon's own message when it sent one.
fn explain(e: &DockerError) -> String {
    match e {
        DockerError::DockerResponseServerError { message, .. } => message.trim().to_string(),
        other => other.to_string(),
    }
}

/// Why the daemon could not be reached, and what to do about it.
fn explain_connect(endpoint: &str, e: &DockerError) -> String {
    if let DockerError::SocketNotFoundError(path) = e {
        return format!(
            "no Docker socket at {path}: mount the daemon's socket (/var/run/docker.sock) into this host's container, or set DOCKER_HOST"
        );
    }
    // `IOError` is transparent: its io::Error is not in the source chain, only beside it.
    let mut io = match e {
        DockerError::IOError { err } => Some(err),
        _ => None,
    };
    let mut source = std::error::Error::source(e);
    while io.is_none()
        && let Some(err) = source
    {
        io = err.downcast_ref::<std::io::Error>();
        source = err.source();
    }
    if let Some(io) = io {
        return match io.kind() {
            std::io::ErrorKind::PermissionDenied => format!(
                "no permission to use the Docker socket at {endpoint}: run the host in the socket's group (compose: group_add, docker run: --group-add <gid of the socket>)"
            ),
            std::io::ErrorKind::NotFound => format!(
                "no Docker socket at {endpoint}: mount the daemon's socket into this host's container, or set DOCKER_HOST"
            ),
            _ => format!("cannot reach the Docker daemon at {endpoint}: {io}"),
        };
    }
    format!("cannot reach the Docker daemon at {endpoint}: {e}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::ContainerState;

    #[test]
    fn a_container_end_reads_like_a_process_end() {
        let st = |code, oom| ContainerState {
            exit_code: Some(code),
            oom_killed: Some(oom),
            ..Default::default()
        };
        let e = ended(Some(&st(1, false)));
        assert_eq!((e.code, e.signal, e.oom_killed), (Some(1), None, false));
        let e = ended(Some(&st(137, true)));
        assert_eq!((e.code, e.signal, e.oom_killed), (None, Some(9), true));
        let e = ended(None);
        assert_eq!((e.code, e.signal), (None, None));
    }

    #[test]
    fn connect_errors_say_what_to_do() {
        let e = DockerError::SocketNotFoundError("/nonexistent".into());
        let m = explain_connect("unix:///nonexistent", &e);
        assert!(
            m.contains("/nonexistent") && m.contains("DOCKER_HOST"),
            "{m}"
        );
        let e = DockerError::IOError {
            err: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        };
        let m = explain_connect("unix:///var/run/docker.sock", &e);
        assert!(m.contains("no permission") && m.contains("group"), "{m}");
    }
}
