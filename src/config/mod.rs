//! Configuration: every key declared once, in a serde struct with its default and doc comment.
//! Layering (figment): defaults < `config-<role>.json` in the working directory < environment.
//! Panels set every egg variable, often to an empty string: empty means unset.

mod logging;

pub use logging::{LogLevel, init_logging};

use anyhow::Context;
use figment::Figment;
use figment::providers::{Format, Json, Serialized};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The controller's config file, in its working directory.
pub const CONTROLLER_CONFIG_FILE: &str = "config-master.json";
/// Default HTTP/WebSocket/web UI port of the controller.
pub const DEFAULT_CONTROLLER_PORT: u16 = 8081;

/// Environment variables the controller reads, and the config key each sets (DESIGN §1).
/// The first name of a key wins over its aliases.
pub const CONTROLLER_ENV: &[(&str, &str)] = &[
    ("SERVER_PORT", "port"),
    ("CLUSTER_NAME", "cluster_name"),
    ("LOG_LEVEL", "log_level"),
    ("ADMIN_STRING", "admin_string"),
    ("PLUGINS", "plugins"),
];

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ControllerConfig {
    /// Name of the cluster, shown in the web UI and in server names.
    pub cluster_name: String,
    /// Address to listen on.
    pub bind_address: String,
    /// Port of the HTTP API, link socket and web UI.
    pub port: u16,
    /// none, fatal, error, warn, audit, info or verbose.
    pub log_level: LogLevel,
    /// Comma-separated names of the first admin user(s), created on first boot.
    pub admin_string: String,
    /// Comma-separated list of plugins to load.
    pub plugins: String,
    /// Serve `/metrics` without a token.
    pub metrics_public: bool,
    /// Link heartbeat interval in milliseconds.
    pub heartbeat_interval_ms: u64,
    /// How long a dropped link session may be resumed, in milliseconds.
    pub resume_window_ms: u64,
    /// Largest accepted request body (JSON) in bytes.
    pub max_body_bytes: usize,
    /// Largest accepted link message in bytes.
    pub max_message_bytes: usize,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            cluster_name: "Your Cluster".into(),
            bind_address: "0.0.0.0".into(),
            port: DEFAULT_CONTROLLER_PORT,
            log_level: LogLevel::Info,
            admin_string: "admin".into(),
            plugins: String::new(),
            metrics_public: false,
            heartbeat_interval_ms: 15_000,
            resume_window_ms: 60_000,
            max_body_bytes: 1 << 20,
            max_message_bytes: 4 << 20,
        }
    }
}

impl ControllerConfig {
    /// Loads defaults < `config-master.json` in `dir` < environment.
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        load_layered(dir.join(CONTROLLER_CONFIG_FILE).as_path(), CONTROLLER_ENV)
    }

    pub fn admin_names(&self) -> Vec<String> {
        split_list(&self.admin_string)
    }
}

/// The host's config file, in its working directory.
pub const HOST_CONFIG_FILE: &str = "config-slave.json";
/// Default Factorio game port.
pub const DEFAULT_GAME_PORT: u16 = 34197;

/// Environment variables the host reads (DESIGN §1); aliases follow their main name.
pub const HOST_ENV: &[(&str, &str)] = &[
    ("MASTER_URL", "controller_url"),
    ("CONTROLLER_URL", "controller_url"),
    ("MASTER_TOKEN", "controller_token"),
    ("CONTROLLER_TOKEN", "controller_token"),
    ("SLAVE_NAME", "host_name"),
    ("HOST_NAME", "host_name"),
    // Extra allocations cannot be seen from inside a panel container: GAME_PORTS lists them all.
    ("GAME_PORTS", "game_ports"),
    ("SERVER_PORT", "game_ports"),
    ("LOG_LEVEL", "log_level"),
    ("PLUGINS", "plugins"),
    // How Factorio runs (README "Docker backend"); DOCKER_HOST is read by the Docker client itself.
    ("FACTORIO_BACKEND", "factorio_backend"),
    ("DOCKER_IMAGE", "docker_image"),
    ("DOCKER_NETWORK", "docker_network"),
    ("DOCKER_DATA_DIR", "docker_data_dir"),
    ("DOCKER_MEMORY_LIMIT_MB", "docker_memory_limit_mb"),
    ("DOCKER_CPU_LIMIT", "docker_cpu_limit"),
    ("DOCKER_KEEP_RUNNING", "docker_keep_running"),
];

/// How a host runs Factorio (`factorio_backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FactorioBackend {
    /// Child processes of the host: the only choice inside a panel server.
    Process,
    /// One sibling container per instance, on the Docker daemon of `DOCKER_HOST`.
    Docker,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct HostConfig {
    /// URL of the controller, e.g. `http://172.18.0.1:8081`.
    pub controller_url: String,
    /// The join token (or this host's own token) from the controller.
    pub controller_token: String,
    /// This host's own token, saved here after it registered with the join token.
    pub host_token: String,
    /// Name of this host in the cluster.
    pub host_name: String,
    /// Game ports instances may use: a list and/or ranges, e.g. `34197,34200-34210`.
    pub game_ports: String,
    /// Address Factorio binds its game port to.
    pub bind_address: String,
    /// Address players use to reach this host (shown in the UI); empty = the controller's view.
    pub public_address: String,
    /// Factorio install; empty = auto-detect `factorio/` in the working directory.
    pub factorio_directory: String,
    /// Where instance directories live.
    pub instances_directory: String,
    /// none, fatal, error, warn, audit, info or verbose.
    pub log_level: LogLevel,
    /// Comma-separated list of plugins to load.
    pub plugins: String,
    /// Seconds a stopping Factorio gets before it is killed.
    pub stop_timeout_s: u64,
    /// Maximum delay between reconnection attempts, in seconds.
    pub max_reconnect_delay_s: u64,
    /// `process` (Factorio as child processes) or `docker` (a container per instance).
    pub factorio_backend: FactorioBackend,
    /// Docker backend: the image instances run in (Factorio itself is mounted from the host's
    /// install); empty = the host's own image when it runs in a container, else the clustorio image.
    pub docker_image: String,
    /// Docker backend: the bridge network RCON uses (never published); empty = `clustorio-<host_name>`.
    pub docker_network: String,
    /// Docker backend: where the daemon sees this host's working directory; empty = found by
    /// inspecting the host's own container, or the same path when the host is not in one.
    pub docker_data_dir: String,
    /// Docker backend: memory limit per instance in MB unless its config sets `memory_limit_mb`; 0 = none.
    pub docker_memory_limit_mb: u64,
    /// Docker backend: CPUs per instance unless its config sets `cpu_limit` (e.g. 1.5); 0 = no limit.
    pub docker_cpu_limit: f64,
    /// Docker backend: leave instances running when the host stops, so the next host start adopts
    /// them and players stay connected across a host upgrade; false stops them like `process`.
    pub docker_keep_running: bool,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            controller_url: format!("http://localhost:{DEFAULT_CONTROLLER_PORT}"),
            controller_token: String::new(),
            host_token: String::new(),
            host_name: String::new(),
            game_ports: DEFAULT_GAME_PORT.to_string(),
            bind_address: "0.0.0.0".into(),
            public_address: String::new(),
            factorio_directory: String::new(),
            instances_directory: "instances".into(),
            log_level: LogLevel::Info,
            plugins: String::new(),
            stop_timeout_s: 30,
            max_reconnect_delay_s: 30,
            factorio_backend: FactorioBackend::Process,
            docker_image: String::new(),
            docker_network: String::new(),
            docker_data_dir: String::new(),
            docker_memory_limit_mb: 0,
            docker_cpu_limit: 0.0,
            docker_keep_running: true,
        }
    }
}

impl HostConfig {
    /// Loads defaults < `config-slave.json` in `dir` < environment.
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        load_layered(dir.join(HOST_CONFIG_FILE).as_path(), HOST_ENV)
    }
}

/// Comma-separated list → trimmed, non-empty items.
pub fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// Values of `env` names that are set and non-empty, as config keys. Where several names map to
/// one key, the first listed wins.
pub fn env_values(env: &[(&str, &str)]) -> serde_json::Map<String, serde_json::Value> {
    let mut map = serde_json::Map::new();
    for (var, key) in env {
        if map.contains_key(*key) {
            continue;
        }
        if let Ok(value) = std::env::var(var)
            && !value.trim().is_empty()
        {
            map.insert(
                key.to_string(),
                serde_json::Value::String(value.trim().to_string()),
            );
        }
    }
    map
}

fn load_layered<T>(file: &Path, env: &[(&str, &str)]) -> anyhow::Result<T>
where
    T: Default + Serialize + for<'de> Deserialize<'de>,
{
    let mut figment = Figment::from(Serialized::defaults(T::default()));
    if file.exists() {
        // Validate the JSON first: figment's error for a broken file does not name the line.
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        serde_json::from_str::<serde_json::Value>(&text)
            .with_context(|| format!("{} is not valid JSON", file.display()))?;
        figment = figment.merge(Json::file(file));
    }
    let figment = figment.merge(Serialized::defaults(coerce_env(env_values(env))));
    figment.extract().with_context(|| {
        format!(
            "invalid configuration (from {} or the environment)",
            file.display()
        )
    })
}

/// Environment values are strings; turn the ones that look like numbers or booleans into those
/// so they fit numeric and boolean keys (figment would otherwise refuse "8081" for a u16).
pub fn coerce_env(map: serde_json::Map<String, serde_json::Value>) -> serde_json::Value {
    let coerced = map
        .into_iter()
        .map(|(k, v)| {
            let v = match v.as_str() {
                Some(s)
                    if matches!(
                        k.as_str(),
                        "port" | "docker_memory_limit_mb" | "docker_cpu_limit"
                    ) =>
                {
                    s.parse::<u64>()
                        .map(serde_json::Value::from)
                        .or_else(|_| s.parse::<f64>().map(serde_json::Value::from))
                        .unwrap_or(v)
                }
                Some("true") => serde_json::Value::Bool(true),
                Some("false") => serde_json::Value::Bool(false),
                _ => v,
            };
            (k, v)
        })
        .collect();
    serde_json::Value::Object(coerced)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(CONTROLLER_CONFIG_FILE),
            r#"{"cluster_name":"Mine","metrics_public":true,"custom_key":1}"#,
        )
        .unwrap();
        let cfg = load_layered::<ControllerConfig>(&dir.path().join(CONTROLLER_CONFIG_FILE), &[])
            .unwrap();
        assert_eq!(cfg.cluster_name, "Mine");
        assert!(cfg.metrics_public);
        assert_eq!(cfg.port, DEFAULT_CONTROLLER_PORT);
    }

    #[test]
    fn broken_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(CONTROLLER_CONFIG_FILE);
        std::fs::write(&file, "{ not json").unwrap();
        let err = load_layered::<ControllerConfig>(&file, &[]).unwrap_err();
        assert!(format!("{err:#}").contains("is not valid JSON"));
    }

    #[test]
    fn lists_split_and_trim() {
        assert_eq!(split_list(" a, b ,,c "), vec!["a", "b", "c"]);
        assert!(split_list("").is_empty());
    }
}
