//! clustorio: a clustered Factorio server manager. The binary (`src/main.rs`) maps each CLI role onto
//! one function here; everything else is a library so integration tests can reach the pieces.

pub mod config;
pub mod controller;
pub mod ctl;
pub mod demo;
pub mod entrypoint;
pub mod host;
pub mod join_address;
pub mod limits;
pub mod link;
pub mod permissions;
pub mod plugins;
pub mod saves;
pub mod shutdown;
pub mod store;

/// A configuration mistake the user must fix (an unknown plugin name, …): one line, exit 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// The async runtime every role runs on. Panels cap processes (threads count), so the blocking
/// pool is kept small.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    use anyhow::Context;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(16)
        .build()
        .context("starting the async runtime")
}
