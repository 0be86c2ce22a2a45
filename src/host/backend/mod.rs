//! The seam between the instance supervisor and how Factorio runs (Wings' ProcessEnvironment):
//! the supervisor only sees [`Backend`] and [`GameServer`], and never learns which backend runs.
//! - `process`: Factorio as a child process of the host; the only choice inside a panel
//!   container, which has no Docker socket.
//! - [`docker`]: one sibling container per instance on the machine's Docker daemon.
//!
//! Both hand Factorio's console and output to the same [`ServerHandle`], so output parsing,
//! readiness, RCON and the stop escalation are one piece of code.

pub mod docker;

use super::factorio::{
    CreateSpec, ExitReport, FactorioServer, LaunchError, ServerEvent, ServerHandle, StartSpec,
    create_save,
};
use super::instance::Instance;
use serde_json::Value;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A started server and its events (`Exited` last).
pub type Spawned = (Arc<dyn GameServer>, mpsc::Receiver<ServerEvent>);

/// One running Factorio server.
pub trait GameServer: Send + Sync {
    fn pid(&self) -> Option<u32>;
    /// Where it runs beyond a pid, for the instance view: the Docker backend's container id and
    /// limits. `None` for a child process.
    fn container(&self) -> Option<Value> {
        None
    }
    fn wait_ready(&self, timeout: Duration) -> BoxFuture<'_, Result<(), LaunchError>>;
    fn rcon<'a>(&'a self, command: &'a str) -> BoxFuture<'a, Result<String, LaunchError>>;
    /// Types a line into the server console: the child's stdin, or the container's attach.
    fn console<'a>(&'a self, line: &'a str) -> BoxFuture<'a, std::io::Result<()>>;
    /// Graceful: saves, then exits; killed when `timeout` passes.
    fn stop(&self, timeout: Duration) -> BoxFuture<'_, ExitReport>;
    fn kill(&self) -> BoxFuture<'_, ExitReport>;
}

pub trait Backend: Send + Sync {
    fn name(&self) -> &'static str;
    /// Why this backend cannot start servers right now (e.g. no Docker daemon), if it cannot.
    fn unavailable(&self) -> Option<String> {
        None
    }
    /// Starts Factorio for `inst` without waiting for it to be ready; its events arrive on the
    /// receiver, `Exited` last.
    fn spawn<'a>(
        &'a self,
        inst: &'a Instance,
        spec: StartSpec,
    ) -> BoxFuture<'a, Result<Spawned, LaunchError>>;
    /// `--create`: a new map; returns its path.
    fn create_save<'a>(
        &'a self,
        inst: &'a Instance,
        spec: CreateSpec,
    ) -> BoxFuture<'a, Result<PathBuf, String>>;
    /// At host start: servers a previous run of this host left running for these instances,
    /// found again and attached to (the game never stopped). Anything else that run left behind
    /// is removed.
    fn recover<'a>(
        &'a self,
        _instances: &'a [Arc<Instance>],
    ) -> BoxFuture<'a, Vec<(i64, Spawned)>> {
        Box::pin(async { Vec::new() })
    }
    /// Servers keep running when the host stops (to be recovered by its next start).
    fn keeps_running(&self) -> bool {
        false
    }
    /// CPU seconds and resident bytes of a server that has no pid here (a container), for
    /// `/metrics`; None when unknown.
    fn stats<'a>(&'a self, _server: &'a dyn GameServer) -> BoxFuture<'a, Option<(f64, f64)>> {
        Box::pin(async { None })
    }
}

/// Factorio as a child process of the host.
pub struct ProcessBackend;

impl GameServer for ServerHandle {
    fn pid(&self) -> Option<u32> {
        ServerHandle::pid(self)
    }

    fn wait_ready(&self, timeout: Duration) -> BoxFuture<'_, Result<(), LaunchError>> {
        Box::pin(ServerHandle::wait_ready(self, timeout))
    }

    fn rcon<'a>(&'a self, command: &'a str) -> BoxFuture<'a, Result<String, LaunchError>> {
        Box::pin(ServerHandle::rcon(self, command))
    }

    fn console<'a>(&'a self, line: &'a str) -> BoxFuture<'a, std::io::Result<()>> {
        Box::pin(ServerHandle::send_console(self, line))
    }

    fn stop(&self, timeout: Duration) -> BoxFuture<'_, ExitReport> {
        Box::pin(ServerHandle::stop(self, timeout))
    }

    fn kill(&self) -> BoxFuture<'_, ExitReport> {
        Box::pin(ServerHandle::kill(self))
    }
}

impl Backend for ProcessBackend {
    fn name(&self) -> &'static str {
        "process"
    }

    fn spawn<'a>(
        &'a self,
        _inst: &'a Instance,
        spec: StartSpec,
    ) -> BoxFuture<'a, Result<Spawned, LaunchError>> {
        Box::pin(async move {
            let (handle, events) = FactorioServer::spawn(spec)?;
            Ok((Arc::new(handle) as Arc<dyn GameServer>, events))
        })
    }

    fn create_save<'a>(
        &'a self,
        _inst: &'a Instance,
        spec: CreateSpec,
    ) -> BoxFuture<'a, Result<PathBuf, String>> {
        Box::pin(async move {
            create_save(&spec)
                .await
                .map(|(path, _)| path)
                .map_err(|e| e.to_string())
        })
    }
}
