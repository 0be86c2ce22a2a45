//! Configuration: every key declared once, as a [`schema::Field`] in `fields.rs` (type, default,
//! text, secrecy, restart rule, permissions, environment variables). The serde structs below are
//! the typed view the program reads; their defaults and the environment they read come from the
//! fields, and a unit test keeps their keys equal to the fields' names.
//! Layering (figment): defaults < `config-<role>.json` in the working directory < environment.
//! Panels set every egg variable, often to an empty string: empty means unset.

pub mod fields;
mod logging;
pub mod schema;

pub use logging::{LogLevel, init_logging};
pub use schema::{Field, Refusal, Schema};

use anyhow::Context;
use figment::Figment;
use figment::providers::{Format, Json, Serialized};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The controller's config file, in its working directory.
pub const CONTROLLER_CONFIG_FILE: &str = "config-master.json";
/// Default HTTP/WebSocket/web UI port of the controller.
pub const DEFAULT_CONTROLLER_PORT: u16 = 8081;

/// An instance's settings: the core's fields and `extra` (plugins').
pub fn instance_schema(extra: &[&'static [Field]]) -> Schema {
    with_extra(
        "core.instance.get_config",
        "core.instance.update_config",
        fields::INSTANCE,
        extra,
    )
}

/// The controller's settings (`config-master.json`) and `extra` (plugins').
pub fn controller_schema(extra: &[&'static [Field]]) -> Schema {
    with_extra(
        "core.controller.get_config",
        "core.controller.update_config",
        fields::CONTROLLER,
        extra,
    )
}

/// A host's settings (`config-slave.json`) and `extra` (plugins').
pub fn host_schema(extra: &[&'static [Field]]) -> Schema {
    with_extra(
        "core.host.get_config",
        "core.host.update_config",
        fields::HOST,
        extra,
    )
}

/// One plugin's settings, by kind; `const`-constructible, so a plugin declares it once:
/// `pub const SETTINGS: PluginSettings = PluginSettings { instance: &[Field::new(…)], ..PluginSettings::NONE };`
#[derive(Debug, Clone, Copy)]
pub struct PluginSettings {
    pub instance: &'static [Field],
    pub controller: &'static [Field],
    pub host: &'static [Field],
}

impl PluginSettings {
    pub const NONE: PluginSettings = PluginSettings {
        instance: &[],
        controller: &[],
        host: &[],
    };
}

/// The three schemas a running controller or host uses: the core's fields and its plugins'.
#[derive(Debug, Clone)]
pub struct Schemas {
    pub instance: Schema,
    pub controller: Schema,
    pub host: Schema,
}

impl Schemas {
    /// The core's fields and those of `plugins` (the enabled ones, in the registry's order).
    pub fn new(plugins: &[PluginSettings]) -> Schemas {
        let pick = |f: fn(&PluginSettings) -> &'static [Field]| -> Vec<&'static [Field]> {
            plugins.iter().map(f).collect()
        };
        Schemas {
            instance: instance_schema(&pick(|p| p.instance)),
            controller: controller_schema(&pick(|p| p.controller)),
            host: host_schema(&pick(|p| p.host)),
        }
    }

    /// `GET /api/v1/config/schema`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "instance": self.instance.to_json(),
            "controller": self.controller.to_json(),
            "host": self.host.to_json(),
        })
    }
}

/// The schemas of a running controller, replaced whole when an external plugin declares other
/// config fields: readers take the current one ([`LiveSchemas::get`]) and keep it for the
/// request they serve.
#[derive(Debug)]
pub struct LiveSchemas(std::sync::RwLock<std::sync::Arc<Schemas>>);

impl LiveSchemas {
    pub fn new(schemas: Schemas) -> Self {
        LiveSchemas(std::sync::RwLock::new(std::sync::Arc::new(schemas)))
    }

    pub fn get(&self) -> std::sync::Arc<Schemas> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set(&self, schemas: Schemas) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = std::sync::Arc::new(schemas);
    }
}

fn with_extra(
    read: &'static str,
    write: &'static str,
    core: &'static [Field],
    extra: &[&'static [Field]],
) -> Schema {
    let mut parts = vec![core];
    parts.extend_from_slice(extra);
    Schema::new(read, write, &parts)
}

/// Environment variables the controller reads, and the config key each sets (DESIGN §1).
/// The first name of a key wins over its aliases.
pub fn controller_env() -> Vec<(&'static str, &'static str)> {
    controller_schema(&[]).env()
}

/// Environment variables the host reads (DESIGN §1); aliases follow their main name.
pub fn host_env() -> Vec<(&'static str, &'static str)> {
    host_schema(&[]).env()
}

/// The controller's settings, typed; each key is a field of [`fields::CONTROLLER`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ControllerConfig {
    pub cluster_name: String,
    pub bind_address: String,
    pub port: u16,
    pub log_level: LogLevel,
    pub admin_string: String,
    pub plugins: String,
    pub metrics_public: bool,
    pub heartbeat_interval_ms: u64,
    pub resume_window_ms: u64,
    pub max_body_bytes: usize,
    pub max_message_bytes: usize,
    pub link_request_rate: u32,
    pub link_request_burst: u32,
    pub max_silent_connections: usize,
    pub first_request_timeout_ms: u64,
    /// The mod portal (`controller::portal`).
    pub mod_portal_url: String,
    pub mod_portal_username: String,
    pub mod_portal_token: String,
    pub mod_portal_factorio_version: String,
    /// Plugins' settings (`<plugin>.<key>`), checked against their fields; read with
    /// [`ControllerConfig::plugin_setting`].
    #[serde(flatten)]
    pub plugin_settings: serde_json::Map<String, serde_json::Value>,
}

impl ControllerConfig {
    /// Loads defaults < `config-master.json` in `dir` < environment, with every built-in
    /// plugin's controller fields (so a stored value is always checked against its declaration).
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let plugins = crate::plugins::settings();
        let extra: Vec<&'static [Field]> = plugins.iter().map(|p| p.controller).collect();
        load_layered(
            dir.join(CONTROLLER_CONFIG_FILE).as_path(),
            &controller_schema(&extra),
        )
    }

    /// A plugin's setting by its full name (`player_auth.code_length`); its declared default
    /// when unset.
    pub fn plugin_setting(&self, name: &str) -> serde_json::Value {
        let (plugin, key) = name.split_once('.').unwrap_or((name, ""));
        if let Some(v) = self
            .plugin_settings
            .get(plugin)
            .and_then(|p| p.get(key))
            .filter(|v| !v.is_null())
        {
            return v.clone();
        }
        crate::plugins::settings()
            .iter()
            .flat_map(|p| p.controller.iter())
            .find(|f| f.name == name)
            .map(|f| f.default.to_value())
            .unwrap_or(serde_json::Value::Null)
    }

    pub fn admin_names(&self) -> Vec<String> {
        split_list(&self.admin_string)
    }
}

/// The host's config file, in its working directory.
pub const HOST_CONFIG_FILE: &str = "config-slave.json";
/// Default Factorio game port.
pub const DEFAULT_GAME_PORT: u16 = 34197;

/// How a host runs Factorio (`factorio_backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FactorioBackend {
    /// Child processes of the host: the only choice inside a panel server.
    Process,
    /// One sibling container per instance, on the Docker daemon of `DOCKER_HOST`.
    Docker,
}

/// A host's settings, typed; each key is a field of [`fields::HOST`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostConfig {
    pub controller_url: String,
    pub controller_token: String,
    pub host_token: String,
    pub host_name: String,
    pub game_ports: String,
    pub bind_address: String,
    pub public_address: String,
    /// Defaults for this host's games (an instance's config wins): see [`fields::HOST`].
    pub game_name_template: String,
    pub game_password: String,
    pub game_max_players: u32,
    pub game_visibility: String,
    pub factorio_username: String,
    pub factorio_token: String,
    pub factorio_directory: String,
    /// Installing Factorio versions: `<url>/<version>/headless/linux64`, and the SHA-256 list.
    pub factorio_download_url: String,
    pub factorio_sha256_url: String,
    pub instances_directory: String,
    pub log_level: LogLevel,
    pub plugins: String,
    pub stop_timeout_s: u64,
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

impl HostConfig {
    /// Loads defaults < `config-slave.json` in `dir` < environment.
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        load_layered(dir.join(HOST_CONFIG_FILE).as_path(), &host_schema(&[]))
    }
}

/// What a settings page shows: the values (secrets masked), the fields an environment variable
/// sets (edit those in the panel), and the changes that wait for a restart.
pub fn settings_view(
    schema: &Schema,
    started: &serde_json::Value,
    current: &serde_json::Value,
) -> serde_json::Value {
    let (config, secrets) = schema.redact(current);
    let from_env: Vec<&str> = schema
        .fields()
        .filter(|f| env_var_of(f).is_some())
        .map(|f| f.name)
        .collect();
    serde_json::json!({
        "config": config,
        "secrets": secrets,
        "from_env": from_env,
        "pending_restart": schema.pending_restart(started, current),
    })
}

/// The environment variable that sets `f` in this process, if one does.
fn env_var_of(f: &Field) -> Option<&'static str> {
    f.env
        .iter()
        .copied()
        .find(|v| std::env::var(v).is_ok_and(|x| !x.trim().is_empty()))
}

/// Applies a JSON merge patch to a config file (other keys kept; tmp + rename). Refused, with
/// nothing written: what the schema refuses, and fields an environment variable sets (the
/// entrypoint would overwrite them at the next start).
pub fn patch_file(
    path: &Path,
    schema: &Schema,
    patch: &serde_json::Value,
) -> anyhow::Result<Result<serde_json::Value, Refusal>> {
    if let Err(r) = schema.check_patch(patch) {
        return Ok(Err(r));
    }
    for f in schema.touched(patch) {
        if let Some(var) = env_var_of(f) {
            return Ok(Err(Refusal::new(
                f.name,
                format!(
                    "{} is set by the environment variable {var}; change it there",
                    f.name
                ),
            )));
        }
    }
    let current: serde_json::Value = match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", path.display()))?,
        Ok(_) => serde_json::json!({}),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => serde_json::json!({}),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let next = match schema.apply_patch(&current, patch) {
        Ok(v) => v,
        Err(r) => return Ok(Err(r)),
    };
    crate::saves::write_atomic(path, &serde_json::to_vec_pretty(&next)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(Ok(next))
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

fn load_layered<T>(file: &Path, schema: &Schema) -> anyhow::Result<T>
where
    T: Serialize + for<'de> Deserialize<'de>,
{
    let mut merged = schema.defaults();
    if file.exists() {
        // Parse the JSON first: figment's error for a broken file does not name the line.
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        if let Err(e) = serde_json::from_str::<serde_json::Value>(&text) {
            return Err(
                crate::UsageError(format!("{} is not valid JSON: {e}", file.display())).into(),
            );
        }
    }
    let mut figment = Figment::from(Serialized::defaults(&merged));
    if file.exists() {
        figment = figment.merge(Json::file(file));
    }
    let figment = figment.merge(Serialized::defaults(coerce_env(
        schema,
        env_values(&schema.env()),
    )));
    merged = figment.extract().with_context(|| {
        format!(
            "invalid configuration (from {} or the environment)",
            file.display()
        )
    })?;
    // Every declared key obeys its rule; other keys (a removed plugin's, say) are left alone.
    // The error names what the user set — the variable (as a panel shows it) or the key in the
    // file — never an internal path.
    for f in schema.fields() {
        if let Some(v) = schema::get_path(&merged, f.name).filter(|v| !v.is_null())
            && let Err(refusal) = f.check(v)
        {
            let source = match env_var_of(f) {
                Some(var) if f.secret => format!("{var} (environment)"),
                Some(var) => format!(
                    "{var}={} (environment)",
                    std::env::var(var).unwrap_or_default().trim()
                ),
                None => format!("\"{}\" in {}", f.name, file.display()),
            };
            return Err(crate::UsageError(format!("{source}: {refusal}")).into());
        }
    }
    serde_json::from_value(merged).with_context(|| {
        format!(
            "invalid configuration (from {} or the environment)",
            file.display()
        )
    })
}

/// Environment values are strings; each becomes a value of its field's type ("8081" a number,
/// "true" a boolean, "INFO" the level "info"). A value that does not parse stays a string, for
/// the field's check to refuse with its rule.
pub fn coerce_env(
    schema: &Schema,
    map: serde_json::Map<String, serde_json::Value>,
) -> serde_json::Value {
    let coerced = map
        .into_iter()
        .map(|(k, v)| {
            let parsed = match (schema.field(&k), v.as_str()) {
                (Some(f), Some(text)) => match f.kind {
                    schema::Kind::Enum(options) => options
                        .iter()
                        .find(|o| o.eq_ignore_ascii_case(text.trim()))
                        .map(|o| serde_json::Value::from(*o)),
                    _ => f.parse(text).ok(),
                },
                _ => None,
            };
            (k, parsed.unwrap_or(v))
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
        let cfg = load_layered::<ControllerConfig>(
            &dir.path().join(CONTROLLER_CONFIG_FILE),
            &Schema::new("", "", &[fields::CONTROLLER]),
        )
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
        let err = load_layered::<ControllerConfig>(&file, &controller_schema(&[])).unwrap_err();
        assert!(format!("{err:#}").contains("is not valid JSON"));
    }

    /// The typed structs and the declarations have the same keys, and the defaults fit the types.
    #[test]
    fn structs_match_the_declared_fields() {
        for (schema, keys) in [
            (
                controller_schema(&[]),
                serde_json::to_value(
                    serde_json::from_value::<ControllerConfig>(controller_schema(&[]).defaults())
                        .unwrap(),
                )
                .unwrap(),
            ),
            (
                host_schema(&[]),
                serde_json::to_value(
                    serde_json::from_value::<HostConfig>(host_schema(&[]).defaults()).unwrap(),
                )
                .unwrap(),
            ),
        ] {
            let mut declared: Vec<&str> = schema.fields().map(|f| f.name).collect();
            let mut typed: Vec<&str> = keys
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            declared.sort_unstable();
            typed.sort_unstable();
            assert_eq!(declared, typed);
        }
    }

    #[test]
    fn declarations_are_unique_valid_and_documented() {
        for schema in [
            instance_schema(&[]),
            controller_schema(&[]),
            host_schema(&[]),
        ] {
            let fields: Vec<_> = schema.fields().collect();
            for f in &fields {
                assert!(
                    !f.title.is_empty() && !f.description.is_empty(),
                    "{}",
                    f.name
                );
                let d = f.default.to_value();
                assert!(
                    d.is_null() || f.accepts(&d),
                    "{}: default {d} breaks its rule",
                    f.name
                );
                assert!(crate::permissions::find(schema.read_permission(f)).is_some());
                assert!(crate::permissions::find(schema.write_permission(f)).is_some());
            }
        }
        let all: Vec<&str> = fields::INSTANCE.iter().map(|f| f.name).collect();
        let mut unique = all.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(
            all.len(),
            unique.len(),
            "an instance field is declared twice"
        );
        assert!(
            fields::HOST[0]
                .default
                .to_value()
                .as_str()
                .unwrap()
                .ends_with(&DEFAULT_CONTROLLER_PORT.to_string())
        );
        assert_eq!(
            fields::HOST
                .iter()
                .find(|f| f.name == "game_ports")
                .unwrap()
                .default
                .to_value(),
            DEFAULT_GAME_PORT.to_string()
        );
    }

    #[test]
    fn environment_values_take_their_fields_types() {
        let mut env = serde_json::Map::new();
        env.insert("port".into(), "9000".into());
        env.insert("log_level".into(), "VERBOSE".into());
        env.insert("metrics_public".into(), "true".into());
        env.insert("cluster_name".into(), "8081".into());
        let v = coerce_env(&controller_schema(&[]), env);
        assert_eq!(
            v,
            serde_json::json!({"port": 9000, "log_level": "verbose", "metrics_public": true, "cluster_name": "8081"})
        );
    }

    #[test]
    fn a_value_breaking_its_rule_is_refused_with_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(CONTROLLER_CONFIG_FILE);
        std::fs::write(&file, r#"{"heartbeat_interval_ms": 5}"#).unwrap();
        let err = load_layered::<ControllerConfig>(&file, &controller_schema(&[])).unwrap_err();
        assert!(
            format!("{err:#}").contains("heartbeat_interval_ms must be an integer from 100"),
            "{err:#}"
        );
    }

    #[test]
    fn lists_split_and_trim() {
        assert_eq!(split_list(" a, b ,,c "), vec!["a", "b", "c"]);
        assert!(split_list("").is_empty());
    }
}
