//! `clustorio entrypoint`: what the Docker image runs inside a panel (DESIGN §1). It reads
//! `SERVER_MODE` and the other egg variables, writes `config-master.json` or `config-slave.json`
//! in the working directory — the keys the environment owns are set, every other key (user
//! edits, the host's saved token) is kept — and then runs that role in this process.

use crate::config::{
    CONTROLLER_CONFIG_FILE, CONTROLLER_ENV, ControllerConfig, HOST_CONFIG_FILE, HOST_ENV,
    HostConfig, LogLevel, coerce_env, env_values, init_logging,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Controller,
    Host,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// `SERVER_MODE`: master or slave (controller and host accepted), any case.
pub fn mode() -> Result<Mode, EntrypointError> {
    match var("SERVER_MODE")
        .map(|m| m.to_ascii_lowercase())
        .as_deref()
    {
        Some("master" | "controller") => Ok(Mode::Controller),
        Some("slave" | "host") => Ok(Mode::Host),
        Some(other) => Err(EntrypointError::Usage(format!(
            "SERVER_MODE is '{other}'; accepted values: master, slave (or controller, host)"
        ))),
        None => Err(EntrypointError::Usage(
            "SERVER_MODE is not set; accepted values: master, slave (or controller, host)".into(),
        )),
    }
}

/// Writes `file` in `dir`: keys from `env` set, every other key kept; tmp + rename.
pub fn write_config(dir: &Path, file: &str, env: &[(&str, &str)]) -> anyhow::Result<()> {
    let path = dir.join(file);
    let mut value: Value = match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not valid JSON; fix it or delete it to start over",
                path.display()
            )
        })?,
        _ => Value::Object(Default::default()),
    };
    let Some(map) = value.as_object_mut() else {
        anyhow::bail!("{} must hold a JSON object", path.display());
    };
    if let Value::Object(from_env) = coerce_env(env_values(env)) {
        for (k, v) in from_env {
            map.insert(k, v);
        }
    }
    let text = serde_json::to_vec_pretty(&value)?;
    crate::saves::write_atomic(&path, &text).with_context(|| format!("writing {}", path.display()))
}

fn check_log_level() -> Result<(), EntrypointError> {
    if let Some(level) = var("LOG_LEVEL") {
        let quoted = serde_json::Value::String(level.to_ascii_lowercase());
        if serde_json::from_value::<LogLevel>(quoted).is_err() {
            return Err(EntrypointError::Usage(format!(
                "LOG_LEVEL is '{level}'; accepted values: {}",
                LogLevel::NAMES
            )));
        }
    }
    Ok(())
}

/// Runs the mode `SERVER_MODE` names, in `dir` (the panel's `/home/container`).
pub fn run(dir: &Path) -> Result<(), EntrypointError> {
    let mode = mode()?;
    check_log_level()?;
    let runtime = crate::runtime().map_err(EntrypointError::Failed)?;
    match mode {
        Mode::Controller => {
            write_config(dir, CONTROLLER_CONFIG_FILE, CONTROLLER_ENV)?;
            let cfg = ControllerConfig::load(dir)?;
            init_logging(cfg.log_level);
            runtime.block_on(crate::controller::run(dir, cfg))?;
        }
        Mode::Host => {
            for (name, what) in [
                (
                    "MASTER_URL",
                    "the master's address, e.g. http://172.18.0.1:8081",
                ),
                ("SLAVE_NAME", "a name for this slave, unique in the cluster"),
            ] {
                let alias = HOST_ENV
                    .iter()
                    .find(|(v, _)| *v == name)
                    .and_then(|(_, key)| HOST_ENV.iter().find(|(v, k)| k == key && *v != name))
                    .map(|(v, _)| *v);
                if var(name).is_none() && alias.and_then(var).is_none() {
                    return Err(EntrypointError::Usage(format!("{name} is not set: {what}")));
                }
            }
            write_config(dir, HOST_CONFIG_FILE, HOST_ENV)?;
            let cfg = HostConfig::load(dir)?;
            if cfg.controller_token.is_empty() && cfg.host_token.is_empty() {
                return Err(EntrypointError::Usage(
                    "MASTER_TOKEN is not set: copy the join token from the master's console (type `token`)".into(),
                ));
            }
            init_logging(cfg.log_level);
            runtime.block_on(crate::host::run(dir, cfg))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        write_config(dir.path(), "x.json", &env).unwrap();
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        assert_eq!(v["cluster_name"], "from env");
        assert_eq!(v["port"], 9000, "numbers stay numbers");
        assert_eq!(v["my_note"], "keep me", "an empty variable counts as unset");
    }

    #[test]
    fn a_broken_config_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x.json"), "{oops").unwrap();
        let e = write_config(dir.path(), "x.json", &[]).unwrap_err();
        assert!(format!("{e:#}").contains("not valid JSON"));
    }
}
