//! Where ctl finds its controller and token: `--url`/`--token`, then `CLUSTORIO_URL`/
//! `CLUSTORIO_TOKEN`, then `config-control.json` (written by `clustorio ctl login <url>`).

use super::client::Client;
use super::output::Output;
use anyhow::Context;
use clap::Args;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};

/// The control config file's name, as Clusterio calls it.
pub const CONTROL_CONFIG_FILE: &str = "config-control.json";
pub const ENV_URL: &str = "CLUSTORIO_URL";
pub const ENV_TOKEN: &str = "CLUSTORIO_TOKEN";
pub const ENV_CONFIG: &str = "CLUSTORIO_CONFIG";

#[derive(Args, Debug, Clone, Default)]
pub struct ConnectionArgs {
    /// Controller URL, e.g. http://127.0.0.1:8081 [env: CLUSTORIO_URL]
    #[arg(long, global = true, value_name = "URL")]
    pub url: Option<String>,
    /// User token [env: CLUSTORIO_TOKEN]
    #[arg(long, global = true, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Control config file [env: CLUSTORIO_CONFIG; default: ./config-control.json if present,
    /// else ~/.config/clustorio/config-control.json]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// `config-control.json`: flat keys, like `config-slave.json`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ControlConfig {
    pub controller_url: String,
    pub controller_token: String,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The control config file in use: `--config`, `CLUSTORIO_CONFIG`, `./config-control.json` when
/// it exists, else the user's config directory.
pub fn config_path(args: &ConnectionArgs) -> PathBuf {
    if let Some(path) = &args.config {
        return path.clone();
    }
    if let Some(path) = env(ENV_CONFIG) {
        return PathBuf::from(path);
    }
    let local = PathBuf::from(CONTROL_CONFIG_FILE);
    if local.exists() {
        return local;
    }
    let dir = env("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|h| Path::new(&h).join(".config")));
    match dir {
        Some(dir) => dir.join("clustorio").join(CONTROL_CONFIG_FILE),
        None => local,
    }
}

fn read_config(path: &Path) -> anyhow::Result<ControlConfig> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not a valid control config", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ControlConfig::default()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// The client for this run. The config file's token is only sent to the config file's URL.
pub fn connect(args: &ConnectionArgs) -> anyhow::Result<Client> {
    let file = read_config(&config_path(args))?;
    let file_url = Some(file.controller_url.clone()).filter(|u| !u.is_empty());
    let url = args.url.clone().or_else(|| env(ENV_URL));
    let same_place = url.is_none() || url == file_url;
    let url = url.or(file_url).ok_or_else(|| {
        anyhow::anyhow!(
            "no controller URL: pass --url, set {ENV_URL}, or run `clustorio ctl login <url>`"
        )
    })?;
    let token = args
        .token
        .clone()
        .or_else(|| env(ENV_TOKEN))
        .or_else(|| Some(file.controller_token).filter(|t| same_place && !t.is_empty()));
    Client::new(&url, token)
}

/// Reads a token without echoing it on a terminal; from stdin (first line) in scripts.
fn read_token() -> anyhow::Result<String> {
    let token = if std::io::stdin().is_terminal() {
        rpassword::prompt_password("Token (input hidden): ").context("reading the token")?
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the token from stdin")?;
        line
    };
    let token = token.trim().to_string();
    anyhow::ensure!(!token.is_empty(), "no token given");
    Ok(token)
}

/// `ctl login <url>`: checks the token against the controller, then saves URL and token.
pub async fn login(args: &ConnectionArgs, url: &str, out: &Output) -> anyhow::Result<()> {
    let token = match args.token.clone().or_else(|| env(ENV_TOKEN)) {
        Some(token) => token,
        None => read_token()?,
    };
    let client = Client::new(url, Some(token.clone()))?;
    let status = client
        .get("/status")
        .await
        .context("checking the controller")?;
    // Any authenticated route tells a bad token (401) from a good one; a 403 is still a valid token.
    if let Err(e) = client.get("/permissions").await {
        let forbidden = e
            .downcast_ref::<super::client::ApiFailure>()
            .is_some_and(|f| f.status == 403);
        if !forbidden {
            return Err(e.context("checking the token"));
        }
    }
    let path = config_path(args);
    let config = ControlConfig {
        controller_url: client.root().to_string(),
        controller_token: token,
    };
    write_private(&path, &serde_json::to_vec_pretty(&config)?)
        .with_context(|| format!("writing {}", path.display()))?;
    let cluster = status["cluster_name"].as_str().unwrap_or("the cluster");
    let reply = serde_json::json!({
        "url": config.controller_url,
        "config": path.display().to_string(),
        "status": status,
    });
    out.print(&reply, |_| {
        format!(
            "Logged in to {cluster} at {}; saved to {}",
            config.controller_url,
            path.display()
        )
    })
}

/// Writes `bytes` to `path` readable by the owner only (it holds a token): tmp file + rename.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}
