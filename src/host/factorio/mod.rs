//! Driving a Factorio headless server: command line, version, log parsing, RCON, saves.
//! The contract is research/factorio.md (§12 is the recipe followed here). Nothing in here knows
//! about `factorio-sim`: tests run it as if it were the real server.
//!
//! - [`cli`]: install layout, `config.ini`, exact flags for `--start-server*` and `--create`.
//! - [`version`]: which Factorio an install is.
//! - [`log`]: streaming stdout parser → [`ServerEvent`]s.
//! - [`ipc`]: the game → host channel (`\f$ipc:` lines and `script-output/` files).
//! - [`rcon`]: RCON client with Factorio quirks, timeouts and reconnection.
//! - [`server`]: launch, wait for ready, RCON, graceful stop, exit report.
//! - [`save`]: `--create` a new map.

pub mod cli;
pub mod ipc;
pub mod log;
pub mod rcon;
pub mod save;
pub mod server;
pub mod version;

pub use cli::{CreateArgs, Install, SaveToLoad, ServerArgs};
pub use log::{ExitReport, LineKind, LineParser, LogLine, SaveKind, ServerEvent};
pub use rcon::{RconClient, RconError, RconTimeouts};
pub use save::{CreateError, CreateSpec, create_save};
pub use server::{FactorioServer, LaunchError, ServerHandle, StartSpec};
pub use version::FactorioVersion;
