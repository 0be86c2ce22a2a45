//! The Factorio command line, built exactly as research/factorio.md §12 recommends: a per-instance
//! write dir with its own `config.ini`, `--config` first, absolute paths only, RCON bound to an
//! explicit address.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// A Factorio install (the untarred headless tarball, or a `factorio-sim install`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Install {
    pub root: PathBuf,
}

impl Install {
    pub fn new(root: impl Into<PathBuf>) -> Install {
        Install { root: root.into() }
    }

    /// `bin/x64/factorio`, the only executable in the tarball.
    pub fn executable(&self) -> PathBuf {
        self.root.join("bin").join("x64").join("factorio")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }
}

/// Which map a server starts with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SaveToLoad {
    /// `--start-server <abs path>`; must be absolute (relative names resolve against the cwd).
    File(PathBuf),
    /// `--start-server-load-latest`: newest zip in `<write>/saves` by mtime, autosaves included.
    Latest,
    /// `--start-server-load-scenario [MOD/]NAME`.
    Scenario(String),
}

/// Server options that become flags. Files left `None` fall back to Factorio's defaults in the
/// write dir (`server-settings.json`, `server-adminlist.json`, … — CLIO relies on the same).
#[derive(Clone, Debug)]
pub struct ServerArgs {
    pub save: SaveToLoad,
    /// UDP game port (`--port`); 0 lets the OS choose (the launcher reads the bound port back
    /// from `Hosting game at`).
    pub port: u16,
    /// `--bind ADDRESS[:PORT]`.
    pub bind: Option<String>,
    /// `--rcon-bind`; `None` starts no RCON at all.
    pub rcon: Option<(SocketAddr, String)>,
    pub server_settings: Option<PathBuf>,
    pub server_adminlist: Option<PathBuf>,
    pub server_banlist: Option<PathBuf>,
    pub server_whitelist: Option<PathBuf>,
    pub use_server_whitelist: bool,
    pub mod_directory: Option<PathBuf>,
    pub console_log: Option<PathBuf>,
    pub executable_path: Option<PathBuf>,
    /// Appended verbatim (e.g. `--verbose`).
    pub extra: Vec<OsString>,
}

impl ServerArgs {
    pub fn new(save: SaveToLoad) -> ServerArgs {
        ServerArgs {
            save,
            port: 34197,
            bind: None,
            rcon: None,
            server_settings: None,
            server_adminlist: None,
            server_banlist: None,
            server_whitelist: None,
            use_server_whitelist: false,
            mod_directory: None,
            console_log: None,
            executable_path: None,
            extra: Vec::new(),
        }
    }
}

/// Map creation options for `--create`.
#[derive(Clone, Debug, Default)]
pub struct CreateArgs {
    pub map_gen_settings: Option<PathBuf>,
    pub map_settings: Option<PathBuf>,
    pub map_gen_seed: Option<u64>,
    pub preset: Option<String>,
}

/// Path of the instance's `config.ini`.
pub fn config_path(write_dir: &Path) -> PathBuf {
    write_dir.join("config.ini")
}

/// The two-line `[path]` config (CLIO's model): read data from the install, write everything
/// (saves, mods, logs, lock) into the instance dir.
pub fn config_ini(install: &Install, write_dir: &Path) -> String {
    format!(
        "; written by clustorio\n[path]\nread-data={}\nwrite-data={}\n",
        install.data_dir().display(),
        write_dir.display()
    )
}

/// Write `<write_dir>/config.ini` (tmp + rename) and return its path.
pub fn write_config(install: &Install, write_dir: &Path) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(write_dir)?;
    let path = config_path(write_dir);
    let tmp = write_dir.join("config.ini.tmp");
    std::fs::write(&tmp, config_ini(install, write_dir))?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

fn push(args: &mut Vec<OsString>, flag: &str, value: impl Into<OsString>) {
    args.push(flag.into());
    args.push(value.into());
}

/// `--config C --start-server <abs> --port P [--bind B] [--rcon-bind A --rcon-password W] …`
pub fn server_args(config: &Path, a: &ServerArgs) -> Vec<OsString> {
    let mut v = Vec::new();
    push(&mut v, "--config", config);
    if let Some(e) = &a.executable_path {
        push(&mut v, "--executable-path", e);
    }
    match &a.save {
        SaveToLoad::File(p) => push(&mut v, "--start-server", p),
        SaveToLoad::Latest => v.push("--start-server-load-latest".into()),
        SaveToLoad::Scenario(s) => push(&mut v, "--start-server-load-scenario", s),
    }
    push(&mut v, "--port", a.port.to_string());
    if let Some(b) = &a.bind {
        push(&mut v, "--bind", b);
    }
    if let Some((addr, pw)) = &a.rcon {
        push(&mut v, "--rcon-bind", addr.to_string());
        push(&mut v, "--rcon-password", pw);
    }
    for (flag, file) in [
        ("--server-settings", &a.server_settings),
        ("--server-adminlist", &a.server_adminlist),
        ("--server-banlist", &a.server_banlist),
        ("--server-whitelist", &a.server_whitelist),
        ("--mod-directory", &a.mod_directory),
        ("--console-log", &a.console_log),
    ] {
        if let Some(f) = file {
            push(&mut v, flag, f);
        }
    }
    if a.use_server_whitelist {
        v.push("--use-server-whitelist".into());
    }
    v.extend(a.extra.iter().cloned());
    v
}

/// `--config C --create <abs save> [--map-gen-settings F] [--map-settings F] [--map-gen-seed N] [--preset P]`
pub fn create_args(config: &Path, save: &Path, c: &CreateArgs) -> Vec<OsString> {
    let mut v = Vec::new();
    push(&mut v, "--config", config);
    push(&mut v, "--create", save);
    if let Some(f) = &c.map_gen_settings {
        push(&mut v, "--map-gen-settings", f);
    }
    if let Some(f) = &c.map_settings {
        push(&mut v, "--map-settings", f);
    }
    if let Some(s) = c.map_gen_seed {
        push(&mut v, "--map-gen-seed", s.to_string());
    }
    if let Some(p) = &c.preset {
        push(&mut v, "--preset", p);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: Vec<OsString>) -> Vec<String> {
        v.into_iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn server_args_follow_the_recipe() {
        let mut a = ServerArgs::new(SaveToLoad::File("/srv/i1/saves/world.zip".into()));
        a.rcon = Some(("127.0.0.1:27015".parse().unwrap(), "pw".into()));
        a.use_server_whitelist = true;
        a.console_log = Some("/srv/i1/console.log".into());
        let v = strings(server_args(Path::new("/srv/i1/config.ini"), &a));
        assert_eq!(
            v,
            [
                "--config",
                "/srv/i1/config.ini",
                "--start-server",
                "/srv/i1/saves/world.zip",
                "--port",
                "34197",
                "--rcon-bind",
                "127.0.0.1:27015",
                "--rcon-password",
                "pw",
                "--console-log",
                "/srv/i1/console.log",
                "--use-server-whitelist"
            ]
        );
    }

    #[test]
    fn create_args_put_config_first() {
        let c = CreateArgs {
            map_gen_seed: Some(1234),
            ..Default::default()
        };
        let v = strings(create_args(
            Path::new("/i/config.ini"),
            Path::new("/i/saves/a.zip"),
            &c,
        ));
        assert_eq!(
            v,
            [
                "--config",
                "/i/config.ini",
                "--create",
                "/i/saves/a.zip",
                "--map-gen-seed",
                "1234"
            ]
        );
    }

    #[test]
    fn config_ini_points_read_at_install_and_write_at_instance() {
        let s = config_ini(&Install::new("/opt/factorio"), Path::new("/srv/i1"));
        assert!(s.contains("[path]\nread-data=/opt/factorio/data\nwrite-data=/srv/i1\n"));
    }
}
