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
/// `RUST_LOG`, when set, overrides `LOG_LEVEL` for finer control. Colours only when stderr is a
/// terminal, so files and pipes get plain text.
pub fn init_logging(level: LogLevel) {
    use std::io::IsTerminal;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level.filter()));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .with_filter(HangUps);
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .try_init();
}

use tracing_subscriber::Layer as _;

/// The HTTP server reports a client that hangs up mid-request (a closed browser tab, a killed
/// scraper) as an error; it is normal, so it becomes a debug line.
struct HangUps;

/// The server's words for a peer that went away.
const HANG_UP_MARKERS: [&str; 4] = [
    "IncompleteMessage",
    "connection reset",
    "Broken pipe",
    "ConnectionReset",
];

impl<S> tracing_subscriber::layer::Filter<S> for HangUps {
    fn enabled(
        &self,
        _meta: &tracing::Metadata<'_>,
        _cx: &tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        true
    }

    fn event_enabled(
        &self,
        event: &tracing::Event<'_>,
        _cx: &tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        let meta = event.metadata();
        if !meta.target().starts_with("warp::server") && !meta.target().starts_with("hyper") {
            return true;
        }
        let mut message = Message(String::new());
        event.record(&mut message);
        if is_hang_up(&message.0) {
            tracing::debug!(target: "clustorio::http", detail = %message.0, "a client hung up mid-request");
            return false;
        }
        true
    }
}

fn is_hang_up(message: &str) -> bool {
    HANG_UP_MARKERS.iter().any(|m| message.contains(m))
}

struct Message(String);

impl tracing::field::Visit for Message {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_hanging_up_is_recognised() {
        assert!(is_hang_up(
            "server connection error: hyper::Error(IncompleteMessage)"
        ));
        assert!(!is_hang_up("accept error: too many open files"));
    }
}
