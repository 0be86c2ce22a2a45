//! factorio-sim: a stand-in for the Factorio headless server (research/factorio.md §8).
//!
//! `factorio-sim install <dir> [--version 2.0.77]` lays out a headless install tree whose
//! `bin/x64/factorio` is this binary; run from there, it behaves like the real server on every
//! channel a manager uses: argv, files, stdout/log lines, exit status, signals, RCON, UDP port.
//! Simulated players and faults come only through sim-only channels (`/standin …` commands and
//! `FACTORIO_STANDIN_*` environment variables, see `script.rs` and `server.rs`).
//!
//! The level script and mods' control stages run in a real Lua 5.2 (`lua/`): `--create` writes
//! the stock freeplay `control.lua` (2.0 or 0.17.63 text by dialect; `FACTORIO_STANDIN_SCENARIO=unknown`
//! writes another one) and runs its `on_init`; a start runs the save's `control.lua` (`on_init`
//! when the script never ran on the map, else `on_load`); `FACTORIO_STANDIN_MIGRATE_LEVEL=1`
//! puts the stock `control.lua` back and drops `modules/`, `scenario.lua` and `clusterio.json`
//! at the first load of a save, as a Factorio update migrating the level does (`=always`: at
//! every load). `factorio-sim install-mod
//! subspace_storage <mods-dir>` installs the stand-in Subspace Storage mod (a test fixture).

mod args;
mod commands;
mod install;
mod log;
mod lua;
mod rcon;
mod save;
mod scenario;
mod script;
mod server;
mod texts;

use std::os::fd::AsRawFd;
use std::path::{Component, Path, PathBuf};
use std::time::Instant;

use install::Identity;
use log::Log;
use server::{SaveSource, ServerOpts, Timing};

fn main() {
    let start = Instant::now();
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("install") {
        std::process::exit(install::run(&argv[2..]));
    }
    if argv.get(1).map(String::as_str) == Some("install-mod") {
        std::process::exit(install::install_mod(&argv[2..]));
    }
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        // Exit from inside: dropping the runtime would wait for the blocking stdin reader.
        Ok(rt) => std::process::exit(rt.block_on(run(start, argv))),
        Err(e) => {
            eprintln!("failed to start runtime: {e}");
            std::process::exit(1);
        }
    }
}

/// Lexically resolve `..`/`.` so paths print like the real server's (`/opt/factorio/data`).
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

struct Config {
    path: PathBuf,
    read_data: PathBuf,
    write_data: PathBuf,
    port: Option<u16>,
}

fn load_config(path: &Path, exe_dir: &Path) -> std::io::Result<Config> {
    if !path.exists() {
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d)?;
        }
        std::fs::write(
            path,
            "; version=8\n[path]\nread-data=__PATH__executable__/../../data\nwrite-data=__PATH__executable__/../..\n",
        )?;
    }
    let text = std::fs::read_to_string(path)?;
    let expand = |v: &str| {
        let v = v
            .trim()
            .replace("__PATH__executable__", &exe_dir.to_string_lossy());
        normalize(Path::new(&v))
    };
    let mut section = String::new();
    let (mut read, mut write, mut port) = (None, None, None);
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with(';') || line.starts_with('#') || line.is_empty() {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.to_string();
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        match (section.as_str(), k.trim()) {
            ("path", "read-data") => read = Some(expand(v)),
            ("path", "write-data") => write = Some(expand(v)),
            ("other", "port") => port = v.trim().parse().ok(),
            _ => {}
        }
    }
    let install = install::install_root(exe_dir);
    Ok(Config {
        path: path.to_path_buf(),
        read_data: read.unwrap_or_else(|| install.join("data")),
        write_data: write.unwrap_or(install),
        port,
    })
}

fn program_arguments(argv: &[String]) -> String {
    let mut s = String::from("Program arguments:");
    let mut hide_next = false;
    for a in argv {
        if hide_next {
            s.push_str(" <private>");
            hide_next = false;
            continue;
        }
        if a == "--rcon-password" {
            hide_next = true;
        }
        if a.starts_with("--rcon-password=") {
            s.push_str(" \"--rcon-password=<private>\"");
            continue;
        }
        s.push_str(&format!(" \"{a}\""));
    }
    s.push(' ');
    s
}

fn disk_mb(p: &Path) -> (u64, u64) {
    let Ok(c) = std::ffi::CString::new(p.to_string_lossy().as_bytes()) else {
        return (0, 0);
    };
    // SAFETY: statvfs writes only into the zeroed struct we pass.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut st) != 0 {
            return (0, 0);
        }
        let f = st.f_frsize as u64;
        (
            st.f_bavail as u64 * f / 1_048_576,
            st.f_blocks as u64 * f / 1_048_576,
        )
    }
}

fn system_info() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "Unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let ram = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .unwrap_or(0)
        / 1024;
    format!("System info: [CPU: {cpu}, {cores} cores, RAM: {ram} MB]")
}

/// Take the exclusive lock on `<write>/.lock`; the handle must live as long as the process.
fn lock_write_dir(dir: &Path) -> Option<std::fs::File> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(".lock"))
        .ok()?;
    // SAFETY: flock on a file descriptor we own.
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    (r == 0).then_some(f)
}

async fn header(
    log: &Log,
    ident: &Identity,
    argv: &[String],
    cfg: &Config,
    exe_dir: &Path,
    timing: &Timing,
    mods: &[(String, String)],
) {
    log.header_first(&format!(
        "Factorio {} (build {}, linux64, headless)",
        ident.version, ident.build
    ));
    log.plain("Operating system: Linux");
    log.plain(&program_arguments(argv));
    log.plain(&format!("Config path: {}", cfg.path.display()));
    log.plain(&format!("Read data path: {}", cfg.read_data.display()));
    let (free, total) = disk_mb(&cfg.write_data);
    log.plain(&format!(
        "Write data path: {} [{free}/{total}MB]",
        cfg.write_data.display()
    ));
    log.plain(&format!(
        "Binaries path: {}",
        normalize(&exe_dir.join("..")).display()
    ));
    tokio::time::sleep(timing.scaled(6.0)).await;
    log.plain(&system_info());
    log.plain("Environment: DISPLAY=<unset> WAYLAND_DISPLAY=<unset> DESKTOP_SESSION=<unset> XDG_SESSION_DESKTOP=<unset> XDG_CURRENT_DESKTOP=<unset> __GL_FSAA_MODE=<unset> __GL_LOG_MAX_ANISO=<unset> __GL_SYNC_TO_VBLANK=<unset> __GL_SORT_FBCONFIGS=<unset> __GL_YIELD=<unset>");
    log.plain("Running in headless mode");
    log.plain("Loading mod core 0.0.0 (data.lua)");
    for (m, v) in mods {
        log.plain(&format!("Loading mod {m} {v} (data.lua)"));
    }
    tokio::time::sleep(timing.scaled(300.0)).await;
    for (m, v) in mods {
        log.plain(&format!("Loading mod {m} {v} (data-updates.lua)"));
    }
    tokio::time::sleep(timing.scaled(230.0)).await;
    log.plain("Checksum for core: 4187927925");
    for (i, (m, _)) in mods.iter().enumerate() {
        log.plain(&format!(
            "Checksum of {m}: {}",
            1879415942u64 + i as u64 * 7919
        ));
    }
    tokio::time::sleep(timing.scaled(280.0)).await;
    log.plain("Prototype list checksum: 2702547635");
    log.info("PlayerData.cpp:64", "Local player-data.json unavailable");
    log.info("PlayerData.cpp:71", "Cloud player-data.json unavailable");
    log.info("GlobalContext.cpp:1300", "Resetting config.");
    log.plain("Factorio initialised");
}

async fn run(start: Instant, argv: Vec<String>) -> i32 {
    let rest = argv.get(1..).unwrap_or(&[]);
    let a = match args::parse(rest) {
        Ok(a) => a,
        Err(args::ArgError::Unknown(name)) => {
            eprintln!(
                "Option \u{2018}{name}\u{2019} does not exist\n\n{}",
                args::HELP
            );
            return 1;
        }
        Err(args::ArgError::MissingValue(name)) => {
            eprintln!(
                "Option \u{2018}{name}\u{2019} is missing an argument\n\n{}",
                args::HELP
            );
            return 1;
        }
    };
    let exe_dir = match a.get("executable-path") {
        Some(p) => Path::new(p)
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default(),
        None => std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(Path::to_path_buf))
            .unwrap_or_default(),
    };
    let install = install::install_root(&exe_dir);
    let ident = Identity::detect(&install);
    if a.flag("help") {
        println!("{}", args::HELP);
        return 0;
    }
    if a.flag("version") {
        let second = if ident.is_1_1() {
            "Binary version: 64"
        } else {
            "Version: 64"
        };
        println!(
            "Version: {} (build {}, linux64, headless)\n{second}\nMap input version: 1.0.0-0\nMap output version: {}-0",
            ident.version, ident.build, ident.version
        );
        return 0;
    }
    let modes: Vec<&str> = [
        "create",
        "start-server",
        "start-server-load-latest",
        "start-server-load-scenario",
    ]
    .into_iter()
    .filter(|m| a.has(m))
    .collect();
    let unsupported = [
        "map2scenario",
        "scenario2map",
        "benchmark",
        "dump-data",
        "host",
        "load-game",
        "mp-connect",
        "generate-map-preview",
    ];
    if let Some(m) = unsupported.iter().find(|m| a.has(m)) {
        eprintln!("--{m} is not supported by this headless build.");
        return 1;
    }
    if modes.len() != 1 {
        eprintln!(
            "{}",
            if modes.is_empty() {
                "No run mode given: use --create, --start-server, --start-server-load-latest or --start-server-load-scenario."
            } else {
                "Only one of --create, --start-server, --start-server-load-latest and --start-server-load-scenario can be used."
            }
        );
        return 1;
    }
    let timing = Timing::from_env();
    let config_path = a
        .get("config")
        .map(PathBuf::from)
        .unwrap_or_else(|| install.join("config/config.ini"));
    let cfg = match load_config(&config_path, &exe_dir) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("Error loading config {}: {e}", config_path.display());
            return 1;
        }
    };
    let log = Log::new(start);
    if let Err(e) = std::fs::create_dir_all(&cfg.write_data) {
        eprintln!(
            "Couldn't create write data directory {}: {e}",
            cfg.write_data.display()
        );
        return 1;
    }
    let mods_dir = a
        .get("mod-directory")
        .map(PathBuf::from)
        .unwrap_or_else(|| cfg.write_data.join("mods"));
    let Some(_lock) = lock_write_dir(&cfg.write_data) else {
        log.header_first(&format!(
            "Factorio {} (build {}, linux64, headless)",
            ident.version, ident.build
        ));
        log.plain("Operating system: Linux");
        log.plain(&program_arguments(&argv));
        log.error(
            "Main.cpp:1204",
            &format!(
                "Couldn't acquire exclusive lock for {}",
                cfg.write_data.join(".lock").display()
            ),
        );
        log.plain("Goodbye");
        return 1;
    };
    log.open_log_file(&cfg.write_data, !a.flag("no-log-rotation"));
    if let Some(c) = a.get("console-log") {
        log.open_console_log(Path::new(c));
    }
    if !mods_dir.join("mod-list.json").exists() {
        server::write_mod_list(&mods_dir, &ident.version);
    }
    for d in ["saves", "script-output", "temp"] {
        let _ = std::fs::create_dir_all(cfg.write_data.join(d));
    }
    let mods = server::enabled_mods(&mods_dir, &ident.version);
    header(&log, &ident, &argv, &cfg, &exe_dir, &timing, &mods).await;
    let cwd = std::env::current_dir().unwrap_or_default();

    if let Some(file) = a.get("create") {
        return create(
            &log,
            &ident,
            &timing,
            &cwd,
            &cfg.write_data,
            file,
            &a,
            (&mods, &mods_dir),
        )
        .await;
    }

    let source = if let Some(f) = a.get("start-server") {
        SaveSource::File(f.to_string())
    } else if let Some(s) = a.get("start-server-load-scenario") {
        // Map-gen flags apply to a scenario's new game as to --create.
        if !map_files_load(&log, &a) {
            return 1;
        }
        SaveSource::Scenario {
            name: s.to_string(),
            seed: map_seed(&a),
        }
    } else {
        SaveSource::Latest
    };
    let port = a
        .get("port")
        .and_then(|p| p.parse::<u16>().ok())
        .or(cfg.port)
        .unwrap_or(34197);
    let game_bind = match a.get("bind") {
        Some(b) if b.contains(':') => b.to_string(),
        Some(b) => format!("{b}:{port}"),
        None => format!("0.0.0.0:{port}"),
    };
    let rcon_addr = a
        .get("rcon-bind")
        .map(String::from)
        .or_else(|| a.get("rcon-port").map(|p| format!("0.0.0.0:{p}")));
    // No password → no RCON [G].
    let rcon = match (rcon_addr, a.get("rcon-password")) {
        (Some(addr), Some(pw)) if !pw.is_empty() => Some((addr, pw.to_string())),
        _ => None,
    };
    let file = |flag: &str, default: &str| match a.get(flag) {
        Some(p) => (PathBuf::from(p), true),
        None => (cfg.write_data.join(default), false),
    };
    let opts = ServerOpts {
        log: log.clone(),
        ident: ident.clone(),
        timing,
        write_dir: cfg.write_data.clone(),
        install: install.clone(),
        mods_dir,
        cwd,
        source,
        game_bind,
        rcon,
        settings: file("server-settings", "server-settings.json"),
        adminlist: file("server-adminlist", "server-adminlist.json"),
        whitelist: file("server-whitelist", "server-whitelist.json"),
        banlist: file("server-banlist", "server-banlist.json"),
        use_whitelist: a.flag("use-server-whitelist"),
        server_id: a.get("server-id").map(PathBuf::from),
    };
    server::run(opts).await
}

/// The new map's seed: `--map-gen-seed`, else the `seed` of `--map-gen-settings`, else random
/// (for `--create` and `--start-server-load-scenario` alike).
fn map_seed(a: &args::Args) -> u64 {
    a.get("map-gen-seed")
        .and_then(|s| s.parse::<u64>().ok())
        .or_else(|| {
            a.get("map-gen-settings")
                .and_then(|f| std::fs::read_to_string(f).ok())
                .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
                .and_then(|v| v.get("seed").and_then(|s| s.as_u64()))
        })
        .unwrap_or_else(|| rand::random::<u32>() as u64)
}

/// `--map-gen-settings` / `--map-settings` files must be JSON; false after logging the error.
fn map_files_load(log: &Log, a: &args::Args) -> bool {
    for (flag, what) in [
        ("map-gen-settings", "map gen settings"),
        ("map-settings", "map settings"),
    ] {
        if let Some(f) = a.get(flag)
            && std::fs::read_to_string(f)
                .ok()
                .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
                .is_none()
        {
            log.bare(&format!("Error: Failed to load {what} from {f}"));
            log.plain("Goodbye");
            return false;
        }
    }
    true
}

/// `--create FILE`: the real create transcript; writes `FILE(.zip)` via `.tmp.zip`; exit 0.
/// The map gets the stock freeplay `control.lua` (or, with `FACTORIO_STANDIN_SCENARIO=unknown`,
/// a custom one), whose `on_init` runs here, as in the real game.
#[allow(clippy::too_many_arguments)]
async fn create(
    log: &Log,
    ident: &Identity,
    timing: &Timing,
    cwd: &Path,
    write: &Path,
    file: &str,
    a: &args::Args,
    (mods, mods_dir): (&[(String, String)], &Path),
) -> i32 {
    let given = if Path::new(file).is_absolute() {
        PathBuf::from(file)
    } else {
        cwd.join(file)
    };
    log.info(
        "Main.cpp:1247",
        &format!("Creating new map {}", given.display()),
    );
    let path = if file.ends_with(".zip") {
        given.clone()
    } else {
        PathBuf::from(format!("{}.zip", given.display()))
    };
    let seed = map_seed(a);
    if !map_files_load(log, a) {
        return 1;
    }
    let fail = server::env_list("FACTORIO_STANDIN_FAIL")
        .iter()
        .any(|f| f == "create");
    let mut state = save::GameState::fresh(seed);
    let control = match std::env::var("FACTORIO_STANDIN_SCENARIO").as_deref() {
        Ok("unknown") => lua::UNKNOWN_SCENARIO,
        _ => lua::stock_control_lua(ident.is_1_1()),
    };
    state.set_file("control.lua", control.as_bytes().to_vec());
    state.set_file("info.json", b"null\n".to_vec());
    let ran = server::level_runtime(
        &state,
        ident,
        mods,
        mods_dir,
        &write.join("script-output"),
        log,
        &[],
    )
    .and_then(|rt| rt.snapshot());
    match ran {
        Ok(snapshot) => state.lua = Some(snapshot),
        Err(e) => {
            log.bare(&format!("Error: {e}"));
            log.plain("Goodbye");
            return 1;
        }
    }
    let written = if fail {
        Err(std::io::Error::other("simulated failure"))
    } else {
        save::write_tmp(&path, &state, ident.parts())
    };
    let tmp = match written {
        Ok(t) => t,
        Err(e) => {
            log.bare(&format!("Error: Couldn't write {}: {e}", path.display()));
            log.plain("Goodbye");
            return 1;
        }
    };
    log.plain("Loading level.dat: 1525463 bytes.");
    log.info(
        "Scenario.cpp:154",
        &format!("Map version {}-0", ident.version),
    );
    log.plain(&format!(
        "Checksum for script {}/temp/currently-playing/control.lua: 2401794522",
        write.display()
    ));
    tokio::time::sleep(timing.save).await;
    if let Err(e) = save::commit(&tmp, &path) {
        log.bare(&format!("Error: Couldn't write {}: {e}", path.display()));
        log.plain("Goodbye");
        return 1;
    }
    log.bare("Done.");
    log.plain("Goodbye");
    0
}
