//! The seam between the instance supervisor and how Factorio runs (Wings' ProcessEnvironment):
//! the supervisor only sees [`Backend`] and [`GameServer`]. `process` (child processes) is the
//! only choice inside a panel container, which has no Docker socket.

use super::factorio::{
    CreateSpec, ExitReport, FactorioServer, LaunchError, ServerEvent, ServerHandle, StartSpec,
    create_save,
};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One running Factorio server.
pub trait GameServer: Send + Sync {
    fn pid(&self) -> Option<u32>;
    fn wait_ready(&self, timeout: Duration) -> BoxFuture<'_, Result<(), LaunchError>>;
    fn rcon<'a>(&'a self, command: &'a str) -> BoxFuture<'a, Result<String, LaunchError>>;
    /// Graceful: saves, then exits; killed when `timeout` passes.
    fn stop(&self, timeout: Duration) -> BoxFuture<'_, ExitReport>;
    fn kill(&self) -> BoxFuture<'_, ExitReport>;
}

pub trait Backend: Send + Sync {
    fn name(&self) -> &'static str;
    /// Starts Factorio without waiting for it; its events arrive on the receiver, `Exited` last.
    #[allow(clippy::type_complexity)]
    fn spawn(
        &self,
        spec: StartSpec,
    ) -> Result<(Arc<dyn GameServer>, mpsc::Receiver<ServerEvent>), LaunchError>;
    /// `--create`: a new map; returns its path.
    fn create_save(&self, spec: CreateSpec) -> BoxFuture<'_, Result<PathBuf, String>>;
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

    fn spawn(
        &self,
        spec: StartSpec,
    ) -> Result<(Arc<dyn GameServer>, mpsc::Receiver<ServerEvent>), LaunchError> {
        let (handle, events) = FactorioServer::spawn(spec)?;
        Ok((Arc::new(handle), events))
    }

    fn create_save(&self, spec: CreateSpec) -> BoxFuture<'_, Result<PathBuf, String>> {
        Box::pin(async move {
            create_save(&spec)
                .await
                .map(|(path, _)| path)
                .map_err(|e| e.to_string())
        })
    }
}
