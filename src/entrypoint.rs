//! `clustorio entrypoint`: what the Docker image runs inside a panel (DESIGN §1). It reads
//! `SERVER_MODE` and the other egg variables, writes `config-master.json` or `config-slave.json`
//! in the working directory — the keys the environment owns are set, every other key (user
//! edits, the host's saved token) is kept — and then runs that role in this process.
//!
//! Panels pass every egg variable, most of them empty: empty means unset. A variable that is set
//! but unusable stops the start with one line naming it and its accepted values (exit code 2),
//! before anything is written. Values are never echoed for secrets (`MASTER_TOKEN`).

use crate::config::{
    CONTROLLER_CONFIG_FILE, ControllerConfig, HOST_CONFIG_FILE, HostConfig, LogLevel, Schema,
    coerce_env, controller_env, controller_schema, env_values, host_env, host_schema, init_logging,
};
use anyhow::Context;
use serde_json::Value;
use std::path::Path;

/// Why the entrypoint could not start: a usage error names the variable to fix (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum EntrypointError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

/// A role's own usage errors (an unknown plugin, …) exit 2 like the entrypoint's.
fn usage_or_failure(e: anyhow::Error) -> EntrypointError {
    match e.downcast::<crate::UsageError>() {
        Ok(u) => EntrypointError::Usage(u.0),
        Err(e) => EntrypointError::Failed(e),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Controller,
    Host,
}

/// The variable that picks the role.
pub const MODE_VAR: &str = "SERVER_MODE";
const MODES: &str = "master, slave (or controller, host)";

/// Reads a variable; empty (after trimming) counts as unset, as panels send "" for "no value".
type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

fn process_env(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// `SERVER_MODE`: master or slave (controller and host accepted), any case.
pub fn mode() -> Result<Mode, EntrypointError> {
    mode_from(&process_env)
}

fn mode_from(get: Lookup) -> Result<Mode, EntrypointError> {
    match get(MODE_VAR).map(|m| m.to_ascii_lowercase()).as_deref() {
        Some("master" | "controller") => Ok(Mode::Controller),
        Some("slave" | "host") => Ok(Mode::Host),
        Some(other) => Err(usage(format!(
            "{MODE_VAR} is '{other}'; accepted values: {MODES}"
        ))),
        None => Err(usage(format!(
            "{MODE_VAR} is not set; accepted values: {MODES}"
        ))),
    }
}

fn usage(message: String) -> EntrypointError {
    EntrypointError::Usage(message)
}

/// The variable of `table` that sets config `key` and has a value (main name before aliases).
fn setting(
    table: &[(&'static str, &'static str)],
    key: &str,
    get: Lookup,
) -> Option<(&'static str, String)> {
    table
        .iter()
        .filter(|(_, k)| *k == key)
        .find_map(|(var, _)| get(var).map(|v| (*var, v)))
}

/// The main variable name for config `key` (the first one `table` lists), for messages.
fn main_name(table: &[(&'static str, &'static str)], key: &str) -> &'static str {
    table
        .iter()
        .find(|(_, k)| *k == key)
        .map(|(v, _)| *v)
        .unwrap_or("?")
}

/// Checks the values that are set; unset ones are the config file's or the defaults' business.
fn check_values(mode: Mode, get: Lookup) -> Result<(), EntrypointError> {
    let table = match mode {
        Mode::Controller => controller_env(),
        Mode::Host => host_env(),
    };
    let table = table.as_slice();
    if let Some((var, level)) = setting(table, "log_level", get) {
        let quoted = Value::String(level.to_ascii_lowercase());
        if serde_json::from_value::<LogLevel>(quoted).is_err() {
            return Err(usage(format!(
                "{var} is '{level}'; accepted values: {}",
                LogLevel::NAMES
            )));
        }
    }
    match mode {
        Mode::Controller => {
            if let Some((var, port)) = setting(table, "port", get)
                && !matches!(port.parse::<u16>(), Ok(p) if p > 0)
            {
                return Err(usage(format!(
                    "{var} is '{port}'; accepted values: a TCP port number, 1-65535"
                )));
            }
            if let Some((var, names)) = setting(table, "admin_string", get) {
                for name in crate::config::split_list(&names) {
                    crate::store::users::validate_name(&name)
                        .map_err(|e| usage(format!("{var}: {e}")))?;
                }
            }
        }
        Mode::Host => {
            if let Some((var, url)) = setting(table, "controller_url", get) {
                // Also the base of file transfers (saves, mods): an HTTP URL, not a ws:// one.
                let rest = ["http://", "https://"]
                    .iter()
                    .find_map(|scheme| url.strip_prefix(scheme));
                if !rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/')) {
                    return Err(usage(format!(
                        "{var} is '{url}'; accepted values: the master's address, like http://172.18.0.1:8081"
                    )));
                }
            }
            if let Some((var, name)) = setting(table, "host_name", get) {
                crate::store::hosts::validate_name(&name)
                    .map_err(|e| usage(format!("{var}: {e}")))?;
            }
            if let Some((var, ports)) = setting(table, "game_ports", get)
                && let Err(e) = crate::host::ports::parse(&ports)
            {
                return Err(usage(format!(
                    "{var} is '{ports}' ({e:#}); accepted values: UDP ports as a list and/or ranges, like 34197,34200-34210"
                )));
            }
            check_game_defaults(table, get)?;
        }
    }
    Ok(())
}

/// The slave's defaults for its games and its public address (the egg's game variables).
fn check_game_defaults(
    table: &[(&'static str, &'static str)],
    get: Lookup,
) -> Result<(), EntrypointError> {
    if let Some((var, n)) = setting(table, "game_max_players", get)
        && n.parse::<u16>().is_err()
    {
        return Err(usage(format!(
            "{var} is '{n}'; accepted values: a number of players, 0-65535 (0 = unlimited)"
        )));
    }
    if let Some((var, v)) = setting(table, "game_visibility", get)
        && !matches!(v.as_str(), "lan" | "public" | "both" | "hidden")
    {
        return Err(usage(format!(
            "{var} is '{v}'; accepted values: lan, public, both, hidden"
        )));
    }
    if let Some((var, a)) = setting(table, "public_address", get)
        && (a.contains("://") || a.contains('/') || a.chars().any(char::is_whitespace))
    {
        return Err(usage(format!(
            "{var} is '{a}'; accepted values: a host name or IP address players can reach, like play.example.org or 203.0.113.7"
        )));
    }
    Ok(())
}

/// What a host cannot start without, checked on the merged file (a value may come from the
/// environment or from an edit of `config-slave.json`).
fn check_host_ready(file: &Value) -> Result<(), EntrypointError> {
    let has = |key: &str| {
        file.get(key)
            .and_then(Value::as_str)
            .is_some_and(|s| !s.trim().is_empty())
    };
    if !has("controller_url") {
        return Err(usage(format!(
            "{} is not set: the master's address, like http://172.18.0.1:8081",
            main_name(&host_env(), "controller_url")
        )));
    }
    if !has("host_name") {
        return Err(usage(format!(
            "{} is not set: a name for this slave, unique in the cluster (letters, digits, - _ .)",
            main_name(&host_env(), "host_name")
        )));
    }
    if !has("controller_token") && !has("host_token") {
        return Err(usage(format!(
            "{} is not set: copy the join token from the master's console (type `token`)",
            main_name(&host_env(), "controller_token")
        )));
    }
    Ok(())
}

/// Writes `file` in `dir`: keys from `env` set, every other key kept; tmp + fsync + rename.
/// Returns the merged document.
pub fn write_config(
    dir: &Path,
    file: &str,
    schema: &Schema,
    env: &[(&str, &str)],
) -> anyhow::Result<Value> {
    let path = dir.join(file);
    let mut value: Value = match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not valid JSON; fix it or delete it to start over",
                path.display()
            )
        })?,
        Ok(_) => Value::Object(Default::default()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Value::Object(Default::default()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let Some(map) = value.as_object_mut() else {
        anyhow::bail!("{} must hold a JSON object", path.display());
    };
    if let Value::Object(from_env) = coerce_env(schema, env_values(env)) {
        for (k, v) in from_env {
            map.insert(k, v);
        }
    }
    let text = serde_json::to_vec_pretty(&value)?;
    crate::saves::write_atomic(&path, &text)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(value)
}

/// Runs the mode `SERVER_MODE` names, in `dir` (the panel's `/home/container`).
pub fn run(dir: &Path) -> Result<(), EntrypointError> {
    let mode = mode()?;
    check_values(mode, &process_env)?;
    let runtime = crate::runtime().map_err(EntrypointError::Failed)?;
    match mode {
        Mode::Controller => {
            let schema = controller_schema(&[]);
            write_config(dir, CONTROLLER_CONFIG_FILE, &schema, &schema.env())?;
            let cfg = ControllerConfig::load(dir)?;
            init_logging(cfg.log_level);
            runtime
                .block_on(crate::controller::run(dir, cfg))
                .map_err(usage_or_failure)?;
        }
        Mode::Host => {
            let schema = host_schema(&[]);
            let merged = write_config(dir, HOST_CONFIG_FILE, &schema, &schema.env())?;
            check_host_ready(&merged)?;
            let cfg = HostConfig::load(dir)?;
            init_logging(cfg.log_level);
            runtime
                .block_on(crate::host::run(dir, cfg))
                .map_err(usage_or_failure)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .filter(|(_, v)| !v.trim().is_empty())
            .map(|(k, v)| (k.to_string(), v.trim().to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn message(r: Result<(), EntrypointError>) -> String {
        match r {
            Err(EntrypointError::Usage(m)) => m,
            other => panic!("expected a usage error, got {other:?}"),
        }
    }

    #[test]
    fn game_variables_with_unusable_values_name_the_variable() {
        let base = [
            ("SERVER_MODE", "slave"),
            ("MASTER_URL", "http://m:8081"),
            ("MASTER_TOKEN", "t"),
            ("SLAVE_NAME", "s"),
        ];
        for (var, value, says) in [
            ("MAX_PLAYERS", "lots", "0-65535"),
            ("GAME_VISIBILITY", "everyone", "lan, public, both, hidden"),
            ("PUBLIC_ADDRESS", "http://x", "host name or IP"),
        ] {
            let mut env = base.to_vec();
            env.push((var, value));
            let m = message(check_values(Mode::Host, &vars(&env)));
            assert!(m.starts_with(var) && m.contains(says), "{m}");
        }
        let mut env = base.to_vec();
        env.extend([
            ("MAX_PLAYERS", "12"),
            ("GAME_VISIBILITY", "both"),
            ("PUBLIC_ADDRESS", "203.0.113.7"),
        ]);
        assert!(check_values(Mode::Host, &vars(&env)).is_ok());
    }

    #[test]
    fn env_keys_are_set_and_every_other_key_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("x.json");
        std::fs::write(
            &file,
            r#"{"cluster_name": "old", "my_note": "keep me", "port": 1}"#,
        )
        .unwrap();
        // SAFETY (test): set_var in a single-threaded test that owns these names.
        unsafe {
            std::env::set_var("CLUSTORIO_TEST_NAME", "from env");
            std::env::set_var("CLUSTORIO_TEST_PORT", "9000");
            std::env::set_var("CLUSTORIO_TEST_EMPTY", "");
        }
        let env = [
            ("CLUSTORIO_TEST_NAME", "cluster_name"),
            ("CLUSTORIO_TEST_PORT", "port"),
            ("CLUSTORIO_TEST_EMPTY", "my_note"),
        ];
        let merged = write_config(dir.path(), "x.json", &controller_schema(&[]), &env).unwrap();
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        assert_eq!(v, merged, "what is returned is what was written");
        assert_eq!(v["cluster_name"], "from env");
        assert_eq!(v["port"], 9000, "numbers stay numbers");
        assert_eq!(v["my_note"], "keep me", "an empty variable counts as unset");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, ["x.json"], "no temporary file is left behind");
    }

    #[test]
    fn a_missing_file_is_created() {
        let dir = tempfile::tempdir().unwrap();
        let merged = write_config(dir.path(), "new.json", &controller_schema(&[]), &[]).unwrap();
        assert_eq!(merged, serde_json::json!({}));
        assert!(dir.path().join("new.json").is_file());
    }

    #[test]
    fn a_broken_config_file_is_a_clear_error_and_stays_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x.json"), "{oops").unwrap();
        let e = write_config(dir.path(), "x.json", &controller_schema(&[]), &[]).unwrap_err();
        assert!(format!("{e:#}").contains("not valid JSON"));
        assert_eq!(
            std::fs::read_to_string(dir.path().join("x.json")).unwrap(),
            "{oops"
        );
        std::fs::write(dir.path().join("x.json"), "[1]").unwrap();
        let e = write_config(dir.path(), "x.json", &controller_schema(&[]), &[]).unwrap_err();
        assert!(format!("{e:#}").contains("must hold a JSON object"));
    }

    #[test]
    fn mode_accepts_both_names_in_any_case() {
        for (v, m) in [
            ("master", Mode::Controller),
            ("Controller", Mode::Controller),
            ("SLAVE", Mode::Host),
            (" host ", Mode::Host),
        ] {
            assert_eq!(mode_from(&vars(&[("SERVER_MODE", v)])).unwrap(), m);
        }
        let m = message(mode_from(&vars(&[("SERVER_MODE", "both")])).map(|_| ()));
        assert_eq!(
            m,
            "SERVER_MODE is 'both'; accepted values: master, slave (or controller, host)"
        );
        let m = message(mode_from(&vars(&[("SERVER_MODE", "")])).map(|_| ()));
        assert!(m.starts_with("SERVER_MODE is not set"), "{m}");
    }

    #[test]
    fn bad_values_name_the_variable_and_what_it_accepts() {
        type Case<'a> = (Mode, &'a [(&'a str, &'a str)], &'a str);
        let cases: &[Case] = &[
            (
                Mode::Controller,
                &[("LOG_LEVEL", "loud")],
                "LOG_LEVEL is 'loud'; accepted values: none, fatal",
            ),
            (
                Mode::Controller,
                &[("SERVER_PORT", "http")],
                "SERVER_PORT is 'http'; accepted values: a TCP port number",
            ),
            (
                Mode::Controller,
                &[("SERVER_PORT", "0")],
                "SERVER_PORT is '0'",
            ),
            (
                Mode::Controller,
                &[("ADMIN_STRING", "alice, bob smith")],
                "ADMIN_STRING: invalid user name 'bob smith'",
            ),
            (
                Mode::Host,
                &[("MASTER_URL", "172.18.0.1:8081")],
                "MASTER_URL is '172.18.0.1:8081'; accepted values: the master's address",
            ),
            (
                Mode::Host,
                &[("CONTROLLER_URL", "http://")],
                "CONTROLLER_URL is 'http://'",
            ),
            (
                Mode::Host,
                &[("MASTER_URL", "ws://master:8081")],
                "MASTER_URL is 'ws://master:8081'",
            ),
            (
                Mode::Host,
                &[("SLAVE_NAME", "../etc")],
                "SLAVE_NAME: invalid host name '../etc'",
            ),
            (
                Mode::Host,
                &[("GAME_PORTS", "34200-34197")],
                "GAME_PORTS is '34200-34197' (bad port range",
            ),
            (
                Mode::Host,
                &[("SERVER_PORT", "game")],
                "SERVER_PORT is 'game' (bad port 'game'",
            ),
        ];
        for (mode, env, expect) in cases {
            let m = message(check_values(*mode, &vars(env)));
            assert!(m.starts_with(expect), "{env:?}: {m}");
        }
    }

    #[test]
    fn good_and_empty_values_pass() {
        let controller = [
            ("SERVER_PORT", "8081"),
            ("LOG_LEVEL", "Verbose"),
            ("ADMIN_STRING", "alice,bob"),
            ("CLUSTER_NAME", ""),
            ("PLUGINS", ""),
        ];
        check_values(Mode::Controller, &vars(&controller)).unwrap();
        let host = [
            ("MASTER_URL", "http://master:8081/"),
            ("MASTER_TOKEN", "clu_secret"),
            ("SLAVE_NAME", "slave-1"),
            ("GAME_PORTS", ""),
            ("SERVER_PORT", "34197"),
            ("LOG_LEVEL", ""),
        ];
        check_values(Mode::Host, &vars(&host)).unwrap();
        // GAME_PORTS, when set, is the one checked (it wins over SERVER_PORT).
        let host = [("GAME_PORTS", "34197,34200-34210"), ("SERVER_PORT", "x")];
        check_values(Mode::Host, &vars(&host)).unwrap();
        check_values(Mode::Host, &vars(&[])).unwrap();
    }

    #[test]
    fn the_token_is_never_in_a_message() {
        let host = [("MASTER_URL", "nope"), ("MASTER_TOKEN", "clu_do_not_print")];
        let m = message(check_values(Mode::Host, &vars(&host)));
        assert!(!m.contains("clu_do_not_print"), "{m}");
    }

    #[test]
    fn a_host_needs_url_name_and_a_token_from_env_or_file() {
        let ok = serde_json::json!({
            "controller_url": "http://m:8081", "host_name": "s1", "controller_token": "t"
        });
        check_host_ready(&ok).unwrap();
        let mut saved = ok.clone();
        saved["controller_token"] = "".into();
        saved["host_token"] = "h".into();
        check_host_ready(&saved).unwrap();
        for (key, var) in [
            ("controller_url", "MASTER_URL is not set"),
            ("host_name", "SLAVE_NAME is not set"),
            ("controller_token", "MASTER_TOKEN is not set"),
        ] {
            let mut v = ok.clone();
            v.as_object_mut().unwrap().remove(key);
            let m = message(check_host_ready(&v));
            assert!(m.starts_with(var), "{m}");
        }
    }
}
