//! `LOG_LEVEL` (Clusterio's names) mapped onto tracing levels.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    None,
    Fatal,
    Error,
    Warn,
    Audit,
    Info,
    Verbose,
}

impl LogLevel {
    pub const NAMES: &'static str = "none, fatal, error, warn, audit, info, verbose";
    /// The same names, for the `log_level` fields.
    pub const LIST: &'static [&'static str] =
        &["none", "fatal", "error", "warn", "audit", "info", "verbose"];

    fn filter(self) -> &'static str {
        match self {
            LogLevel::None => "off",
            LogLevel::Fatal | LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Audit | LogLevel::Info => "info",
            LogLevel::Verbose => "debug",
        }
    }
}

/// Logs go to stderr, one line per event; stdout carries the console (ready line, tokens).
/// `RUST_LOG`, when set, overrides `LOG_LEVEL` for finer control.
pub fn init_logging(level: LogLevel) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level.filter()));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
