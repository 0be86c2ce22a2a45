//! The core's settings, one [`Field`] each: an instance's config, the controller's
//! `config-master.json` and the host's `config-slave.json`. Plugins add theirs through
//! [`super::instance_schema`], [`super::controller_schema`] and [`super::host_schema`].
//!
//! Factorio's `server-settings.json` fields (`research/factorio.md` §5.1) carry Factorio's own
//! defaults, except `visibility.public`, which is off: publishing needs factorio.com credentials,
//! and a public game without them is refused by the matching server.

use super::schema::{Default as D, Field, Kind, Rule};

const BOOL: Kind = Kind::Bool;
const PORT: Kind = Kind::Port;
const fn int(min: i64, max: i64) -> Kind {
    Kind::Integer { min, max }
}
const fn text(max_len: usize) -> Kind {
    Kind::Text {
        max_len,
        rule: None,
    }
}
const fn text_rule(max_len: usize, rule: Rule) -> Kind {
    Kind::Text {
        max_len,
        rule: Some(rule),
    }
}

const MOD_FILE: Rule = Rule {
    check: |s| crate::saves::validate_name(s).is_ok(),
    says: "mod zip names like \"Name_1.0.0.zip\"",
};
const MOD_PACK: Rule = Rule {
    check: |s| {
        s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ' ' | '-' | '_' | '.'))
    },
    says: "a mod pack's name: letters, digits, spaces, '-', '_' and '.'",
};
const HTTP_URL: Rule = Rule {
    check: |s| {
        s.is_empty()
            || ["http://", "https://"]
                .iter()
                .filter_map(|p| s.strip_prefix(p))
                .any(|rest| !rest.is_empty() && !rest.starts_with('/'))
    },
    says: "an http:// or https:// URL like http://172.18.0.1:8081",
};
const PLAIN_NAME: Rule = Rule {
    check: |s| {
        s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    },
    says: "letters, digits, '-', '_' and '.'",
};
const FACTORIO_VERSION: Rule = Rule {
    check: |s| {
        s == "latest"
            || crate::host::factorio::FactorioVersion::parse(s).is_some_and(|v| v.to_string() == s)
    },
    says: "latest, or a version like 2.0.77",
};
const PORT_LIST: Rule = Rule {
    check: |s| {
        s.chars()
            .all(|c| c.is_ascii_digit() || matches!(c, ',' | '-' | ' '))
    },
    says: "ports and ranges like 34197,34200-34210",
};

pub const SERVER: &str = "Server";
pub const GAME: &str = "Game";
pub const BACKUPS: &str = "Backups";
pub const ADVANCED: &str = "Advanced";

/// Permission to see an instance secret's value (on an explicit request; audited).
pub const REVEAL_INSTANCE_SECRET: &str = "core.instance.reveal_secret";

/// An instance's settings.
pub static INSTANCE: &[Field] = &[
    // Server: how players find and join it.
    Field::new("server_settings.name", text(200), D::Str(""))
        .title("Server name")
        .about("Name in the server browser; empty: the cluster's name, a dash and the instance's name.")
        .section(SERVER)
        .restart(),
    Field::new("server_settings.description", text(5000), D::Str(""))
        .title("Description")
        .about("Description in the server browser.")
        .section(SERVER)
        .restart(),
    Field::new("server_settings.tags", Kind::List { rule: None }, D::List(&["clustorio"]))
        .title("Tags")
        .about("Tags in the server browser.")
        .section(SERVER)
        .restart(),
    Field::new("server_settings.max_players", int(0, 65535), D::Int(0))
        .title("Maximum players")
        .about("Players allowed at once; 0 = unlimited. Admins can always join.")
        .section(SERVER)
        .restart(),
    Field::new("game_port", PORT, D::Null)
        .title("Game port")
        .about("UDP port players connect to; empty: the first free one of the host's game_ports.")
        .section(SERVER)
        .restart(),
    Field::new("server_settings.visibility.public", BOOL, D::Bool(false))
        .title("Public")
        .about("Publish the game on Factorio's server browser (needs the factorio.com username and token).")
        .section(SERVER)
        .restart(),
    Field::new("server_settings.visibility.lan", BOOL, D::Bool(true))
        .title("LAN")
        .about("Announce the game on the local network.")
        .section(SERVER)
        .restart(),
    Field::new("server_settings.game_password", text(255), D::Str(""))
        .title("Game password")
        .about("Password players must enter to join; empty: none.")
        .section(SERVER)
        .secret()
        .restart(),
    Field::new("server_settings.require_user_verification", BOOL, D::Bool(true))
        .title("Verify users")
        .about("Only let in players whose factorio.com account is verified (required for public games).")
        .section(SERVER)
        .restart(),
    Field::new("server_settings.username", text(255), D::Str(""))
        .title("factorio.com username")
        .about("factorio.com login, needed for a public game.")
        .section(SERVER)
        .restart(),
    Field::new("server_settings.token", text(255), D::Str(""))
        .title("factorio.com token")
        .about("factorio.com authentication token (instead of the password).")
        .section(SERVER)
        .secret()
        .restart(),
    Field::new("server_settings.password", text(255), D::Str(""))
        .title("factorio.com password")
        .about("factorio.com password; the token is preferred.")
        .section(SERVER)
        .secret()
        .restart(),
    // Game: how it runs.
    Field::new("auto_start", BOOL, D::Bool(false))
        .title("Start with the host")
        .about("Start the instance when its host starts.")
        .section(GAME),
    Field::new("restart_on_crash", BOOL, D::Bool(false))
        .title("Restart after a crash")
        .about("Restart after a crash, with backoff (1 s, 2 s, 4 s … at most 60 s).")
        .section(GAME),
    Field::new("mods", Kind::List { rule: Some(MOD_FILE) }, D::List(&[]))
        .title("Mods")
        .about("Mod zips from the controller's mod store, fetched before each start.")
        .section(GAME)
        .restart(),
    Field::new("mod_pack", text_rule(100, MOD_PACK), D::Str(""))
        .title("Mod pack")
        .about("A mod pack from the controller: its mods (enabled or not) and mod settings are installed before each start; empty: none.")
        .section(GAME)
        .restart(),
    Field::new("factorio_version", text_rule(20, FACTORIO_VERSION), D::Str("latest"))
        .title("Factorio version")
        .about("Which of its host's Factorio installs the game runs: latest (the newest installed) or a version like 2.0.77; a version the host lacks fails the start.")
        .section(GAME)
        .restart(),
    Field::new("enable_whitelist", BOOL, D::Bool(false))
        .title("Whitelist only")
        .about("Only let in players on the cluster's whitelist.")
        .section(GAME)
        .restart(),
    Field::new("sync_lists", BOOL, D::Bool(true))
        .title("Sync player lists")
        .about("Write the cluster's admin, ban and white lists and keep them in sync.")
        .section(GAME),
    Field::new("server_settings.allow_commands", Kind::Enum(&["true", "false", "admins-only"]), D::Str("admins-only"))
        .title("Console commands")
        .about("Who may use Lua console commands: true (everyone), false (nobody) or admins-only.")
        .section(GAME)
        .restart(),
    Field::new("server_settings.autosave_interval", int(1, 1440), D::Int(10))
        .title("Autosave interval")
        .about("Minutes between autosaves.")
        .section(GAME)
        .restart(),
    Field::new("server_settings.autosave_slots", int(1, 1000), D::Int(5))
        .title("Autosave slots")
        .about("Autosave files kept (_autosave1 … _autosaveN, cycled).")
        .section(GAME)
        .restart(),
    Field::new("server_settings.autosave_only_on_server", BOOL, D::Bool(true))
        .title("Autosave on the server only")
        .about("Only the server autosaves, not the players' clients.")
        .section(GAME)
        .restart(),
    Field::new("server_settings.afk_autokick_interval", int(0, 1440), D::Int(0))
        .title("AFK kick")
        .about("Minutes of inactivity before a player is kicked; 0 = never.")
        .section(GAME)
        .restart(),
    Field::new("server_settings.auto_pause", BOOL, D::Bool(true))
        .title("Pause when empty")
        .about("Pause the game while no player is connected.")
        .section(GAME)
        .restart(),
    Field::new("server_settings.auto_pause_when_players_connect", BOOL, D::Bool(false))
        .title("Pause while joining")
        .about("Pause the game while a player is joining (Factorio 2.0).")
        .section(GAME)
        .restart(),
    Field::new("server_settings.only_admins_can_pause_the_game", BOOL, D::Bool(true))
        .title("Only admins pause")
        .about("Only admins may pause the game.")
        .section(GAME)
        .restart(),
    Field::new("server_settings.ignore_player_limit_for_returning_players", BOOL, D::Bool(false))
        .title("Returning players skip the limit")
        .about("Players who played here before may join a full game.")
        .section(GAME)
        .restart(),
    // Backups: copies of the save on the controller.
    Field::new("backup_interval_minutes", Kind::Number { min: 0.0, max: 10080.0 }, D::Int(0))
        .title("Backup interval")
        .about("Copy the save to the controller this often (minutes) while running; 0 = off.")
        .section(BACKUPS)
        .restart(),
    Field::new("backup_retention", int(1, 1000), D::Int(5))
        .title("Backups kept")
        .about("Controller copies kept per instance.")
        .section(BACKUPS),
    // Advanced.
    Field::new("save_patching", BOOL, D::Bool(true))
        .title("Save patching")
        .about("Patch the save with the cluster's Lua modules before each start; off keeps vanilla saves vanilla.")
        .section(ADVANCED)
        .restart(),
    Field::new("patch_unknown_scenario", BOOL, D::Bool(false))
        .title("Patch unknown scenarios")
        .about("Patch a save whose control.lua is not a known freeplay (only for scenarios that use event_handler alone).")
        .section(ADVANCED)
        .restart(),
    Field::new("memory_limit_mb", int(0, 1_048_576), D::Int(0))
        .title("Memory limit")
        .about("Docker backend: the instance's memory limit in MB; 0: the host's default.")
        .section(ADVANCED)
        .restart(),
    Field::new("cpu_limit", Kind::Number { min: 0.0, max: 1024.0 }, D::Num(0.0))
        .title("CPU limit")
        .about("Docker backend: CPUs the instance may use (e.g. 1.5); 0: the host's default.")
        .section(ADVANCED)
        .restart(),
    Field::new("script_commands", BOOL, D::Bool(true))
        .title("Script commands")
        .about("Let the cluster run Lua commands over RCON (needed by most plugins; disables achievements).")
        .section(ADVANCED),
    Field::new("start_timeout_s", int(1, 3600), D::Int(120))
        .title("Start timeout")
        .about("Seconds a starting Factorio may take before the start counts as failed.")
        .section(ADVANCED),
    Field::new("server_settings.max_upload_in_kilobytes_per_second", int(0, 10_000_000), D::Int(0))
        .title("Upload limit")
        .about("Upload bandwidth for map transfers in kB/s; 0 = unlimited.")
        .section(ADVANCED)
        .restart(),
    Field::new("server_settings.max_upload_slots", int(0, 1000), D::Int(5))
        .title("Upload slots")
        .about("Map transfers at once; 0 = unlimited.")
        .section(ADVANCED)
        .restart(),
    Field::new("server_settings.minimum_latency_in_ticks", int(0, 1000), D::Int(0))
        .title("Minimum latency")
        .about("Minimum network latency in ticks; 0 = automatic.")
        .section(ADVANCED)
        .restart(),
    Field::new("server_settings.max_heartbeats_per_second", int(6, 240), D::Int(60))
        .title("Heartbeats per second")
        .about("Network tick rate, 6-240.")
        .section(ADVANCED)
        .restart(),
    Field::new("server_settings.non_blocking_saving", BOOL, D::Bool(false))
        .title("Non-blocking saving")
        .about("Experimental: save in a forked process so the game does not stop while saving.")
        .section(ADVANCED)
        .restart(),
    Field::new("server_settings.minimum_segment_size", int(0, 10_000), D::Int(25))
        .title("Minimum segment size")
        .about("Network message segment size with few peers.")
        .section(ADVANCED)
        .restart(),
    Field::new("server_settings.minimum_segment_size_peer_count", int(0, 10_000), D::Int(20))
        .title("Minimum segment size peers")
        .about("Peer count from which the minimum segment size applies.")
        .section(ADVANCED)
        .restart(),
    Field::new("server_settings.maximum_segment_size", int(0, 10_000), D::Int(100))
        .title("Maximum segment size")
        .about("Network message segment size with many peers.")
        .section(ADVANCED)
        .restart(),
    Field::new("server_settings.maximum_segment_size_peer_count", int(0, 10_000), D::Int(10))
        .title("Maximum segment size peers")
        .about("Peer count up to which the maximum segment size applies.")
        .section(ADVANCED)
        .restart(),
];

const LOG_LEVEL: Field = Field::new(
    "log_level",
    Kind::Enum(super::LogLevel::LIST),
    D::Str("info"),
)
.title("Log level")
.about("How much is logged: none, fatal, error, warn, audit, info or verbose.")
.env(&["LOG_LEVEL"])
.restart();

const PLUGINS: Field = Field::new("plugins", text(255), D::Str(""))
    .title("Plugins")
    .about("Comma-separated list of plugins to load.")
    .env(&["PLUGINS"])
    .restart();

/// The controller's settings (`config-master.json`).
pub static CONTROLLER: &[Field] = &[
    Field::new("cluster_name", text(64), D::Str("Your Cluster"))
        .title("Cluster name")
        .about("The cluster's name, shown in the web UI and in Factorio server names.")
        .section(SERVER)
        .env(&["CLUSTER_NAME"])
        .restart(),
    Field::new("bind_address", text(255), D::Str("0.0.0.0"))
        .title("Listen address")
        .about("Address the HTTP API, link socket and web UI listen on.")
        .section(SERVER)
        .restart(),
    Field::new("port", PORT, D::Int(super::DEFAULT_CONTROLLER_PORT as i64))
        .title("Port")
        .about("Port of the HTTP API, link socket, metrics and web UI.")
        .section(SERVER)
        .env(&["SERVER_PORT"])
        .restart(),
    LOG_LEVEL,
    Field::new("admin_string", text(255), D::Str("admin"))
        .title("First admins")
        .about("Factorio name(s) of the first admin user(s), comma separated.")
        .section(SERVER)
        .env(&["ADMIN_STRING"])
        .restart(),
    PLUGINS,
    Field::new("metrics_public", BOOL, D::Bool(false))
        .title("Public metrics")
        .about("Serve /metrics without a token.")
        .section(SERVER),
    Field::new("heartbeat_interval_ms", int(100, 600_000), D::Int(15_000))
        .title("Heartbeat interval")
        .about("Link heartbeat interval in milliseconds.")
        .restart(),
    Field::new("resume_window_ms", int(0, 86_400_000), D::Int(60_000))
        .title("Resume window")
        .about("How long a dropped link session may be resumed, in milliseconds.")
        .restart(),
    Field::new("max_body_bytes", int(1024, 1 << 30), D::Int(1 << 20))
        .title("Largest request")
        .about("Largest accepted API request body (JSON) in bytes."),
    Field::new("max_message_bytes", int(1024, crate::link::FRAME_CEILING as i64), D::Int(crate::link::DEFAULT_MAX_FRAME as i64))
        .title("Largest link message")
        .about("Largest link message in bytes, either way: hosts and clients are told it, and nothing larger is sent (the request fails with too_large).")
        .restart(),
    Field::new("link_request_rate", int(0, 1_000_000), D::Int(100))
        .title("Link request rate")
        .about("Requests a second one web UI or ctl session may send (token bucket; 0 = no limit); over it a request is answered rate_limited and not done. Hosts and administrators are not limited.")
        .restart(),
    Field::new("link_request_burst", int(1, 1_000_000), D::Int(200))
        .title("Link request burst")
        .about("Requests a web UI or ctl session may send at once before the rate applies.")
        .restart(),
    Field::new("max_silent_connections", int(16, 1_000_000), D::Int(512))
        .title("Silent connections")
        .about("HTTP connections that have not sent a request yet, at most; beyond it the oldest is closed. File descriptors stay free for clients that talk.")
        .restart(),
    Field::new("first_request_timeout_ms", int(100, 600_000), D::Int(10_000))
        .title("First request timeout")
        .about("An HTTP connection that sends no request within this many milliseconds is closed.")
        .restart(),
    // The mod portal (README "Mods"): where mods are searched and downloaded from.
    Field::new("mod_portal_url", text_rule(255, HTTP_URL), D::Str("https://mods.factorio.com"))
        .title("Mod portal URL")
        .about("The Factorio mod portal, or a mirror of its API.")
        .section("Mods")
        .env(&["MOD_PORTAL_URL"]),
    Field::new("mod_portal_username", text(255), D::Str(""))
        .title("factorio.com username")
        .about("factorio.com login: the slave's games publish themselves with it unless a game's config sets one, and the master downloads mods from the portal with it.")
        .section("Mods")
        .env(&["FACTORIO_USERNAME"]),
    Field::new("mod_portal_token", text(255), D::Str(""))
        .title("factorio.com token")
        .about("factorio.com authentication token for that login (from factorio.com/profile).")
        .section("Mods")
        .env(&["FACTORIO_TOKEN"])
        .secret(),
    Field::new("mod_portal_factorio_version", text_rule(16, PLAIN_NAME), D::Str("2.0"))
        .title("Factorio version for mods")
        .about("The game version (major.minor) portal searches and installs pick releases for, unless a request names one.")
        .section("Mods"),
];

/// A host's settings (`config-slave.json`).
pub static HOST: &[Field] = &[
    Field::new("controller_url", text_rule(255, HTTP_URL), D::Str("http://localhost:8081"))
        .title("Controller URL")
        .about("The master's address, e.g. http://172.18.0.1:8081.")
        .section(SERVER)
        .env(&["MASTER_URL", "CONTROLLER_URL"])
        .restart(),
    Field::new("controller_token", text(255), D::Str(""))
        .title("Controller token")
        .about("The master's join token (or this host's own token).")
        .section(SERVER)
        .env(&["MASTER_TOKEN", "CONTROLLER_TOKEN"])
        .secret()
        .restart(),
    Field::new("host_token", text(255), D::Str(""))
        .title("Host token")
        .about("This host's own token, saved here after it registered with the join token.")
        .secret(),
    Field::new("host_name", text_rule(64, PLAIN_NAME), D::Str(""))
        .title("Host name")
        .about("This slave's name in the cluster (letters, digits, - _ .), unique.")
        .section(SERVER)
        .env(&["SLAVE_NAME", "HOST_NAME"])
        .restart(),
    // Extra allocations cannot be seen from inside a panel container: GAME_PORTS lists them all.
    Field::new("game_ports", text_rule(255, PORT_LIST), D::Str("34197"))
        .title("Game ports")
        .about("The UDP ports instances may use, matching this server's allocations: a list and/or ranges like 34197,34198-34200.")
        .section(SERVER)
        .env(&["GAME_PORTS", "SERVER_PORT"])
        .restart(),
    Field::new("bind_address", text(255), D::Str("0.0.0.0"))
        .title("Game bind address")
        .about("Address Factorio binds its game port to.")
        .restart(),
    Field::new("public_address", text(255), D::Str(""))
        .title("Public address")
        .about("Address players use to reach this host (shown in the UI as each game's join address); empty: the panel's allocation IP, else the address the controller sees this slave connect from.")
        .section(SERVER)
        .env(&["PUBLIC_ADDRESS"])
        .restart(),
    // Defaults for the games of this slave; an instance's own config wins over each.
    Field::new("game_name_template", text(200), D::Str(""))
        .title("Server name template")
        .about("Server browser name of games whose config names none: {cluster}, {instance} and {host} are replaced; empty: {cluster} - {instance}.")
        .section(GAME)
        .env(&["GAME_NAME_TEMPLATE"])
        .restart(),
    Field::new("game_password", text(255), D::Str(""))
        .title("Game password")
        .about("Password players enter to join this slave's games, unless a game's config sets one; empty: none.")
        .section(GAME)
        .env(&["GAME_PASSWORD"])
        .secret()
        .restart(),
    Field::new("game_max_players", int(0, 65535), D::Int(0))
        .title("Maximum players")
        .about("Players allowed at once in this slave's games, unless a game's config sets it; 0 = unlimited.")
        .section(GAME)
        .env(&["MAX_PLAYERS"])
        .restart(),
    Field::new("game_visibility", Kind::Enum(&["lan", "public", "both", "hidden"]), D::Str("lan"))
        .title("Visibility")
        .about("Where this slave's games are announced, unless a game's config says: lan, public (needs the factorio.com username and token), both or hidden.")
        .section(GAME)
        .env(&["GAME_VISIBILITY"])
        .restart(),
    Field::new("factorio_username", text(255), D::Str(""))
        .title("factorio.com username")
        .about("factorio.com login: the slave's games publish themselves with it unless a game's config sets one, and the master downloads mods from the portal with it.")
        .section(GAME)
        .env(&["FACTORIO_USERNAME"])
        .restart(),
    Field::new("factorio_token", text(255), D::Str(""))
        .title("factorio.com token")
        .about("factorio.com authentication token for that login (from factorio.com/profile).")
        .section(GAME)
        .env(&["FACTORIO_TOKEN"])
        .secret()
        .restart(),
    Field::new("factorio_directory", text(4096), D::Str(""))
        .title("Factorio directory")
        .about("The Factorio install; empty: factorio/ in the working directory.")
        .restart(),
    Field::new("factorio_download_url", text_rule(2048, HTTP_URL), D::Str("https://factorio.com/get-download"))
        .title("Factorio download URL")
        .about("Where Factorio versions are installed from: <url>/<version>/headless/linux64 gives the release tarball (a mirror, or a local server in tests).")
        .env(&["FACTORIO_DOWNLOAD_URL"]),
    Field::new("factorio_sha256_url", text_rule(2048, HTTP_URL), D::Str("https://factorio.com/download/sha256sums/"))
        .title("Factorio checksums URL")
        .about("SHA-256 list of the releases (\"<hex>  <tarball>\" lines) an install is checked against; empty: no check.")
        .env(&["FACTORIO_SHA256_URL"]),
    Field::new("instances_directory", text(4096), D::Str("instances"))
        .title("Instances directory")
        .about("Where instance directories live.")
        .restart(),
    LOG_LEVEL,
    PLUGINS,
    Field::new("stop_timeout_s", int(1, 3600), D::Int(30))
        .title("Stop timeout")
        .about("Seconds a stopping Factorio gets before it is killed.")
        .restart(),
    Field::new("max_reconnect_delay_s", int(1, 3600), D::Int(30))
        .title("Reconnect delay")
        .about("Maximum delay between reconnection attempts, in seconds.")
        .restart(),
    // How Factorio runs (README "Docker backend"); DOCKER_HOST is read by the Docker client.
    Field::new("factorio_backend", Kind::Enum(&["process", "docker"]), D::Str("process"))
        .title("Factorio backend")
        .about("process: Factorio as child processes (the only choice in a panel); docker: a sibling container per instance.")
        .env(&["FACTORIO_BACKEND"])
        .restart(),
    Field::new("docker_image", text(255), D::Str(""))
        .title("Docker image")
        .about("Docker backend: the image instances run in; empty: the host's own image when it runs in a container, else the clustorio image.")
        .env(&["DOCKER_IMAGE"])
        .restart(),
    Field::new("docker_network", text(255), D::Str(""))
        .title("Docker network")
        .about("Docker backend: the bridge network RCON uses (never published); empty: clustorio-<host name>.")
        .env(&["DOCKER_NETWORK"])
        .restart(),
    Field::new("docker_data_dir", text(4096), D::Str(""))
        .title("Docker data directory")
        .about("Docker backend: where the daemon sees this host's working directory; empty: found by inspecting the host's own container.")
        .env(&["DOCKER_DATA_DIR"])
        .restart(),
    Field::new("docker_memory_limit_mb", int(0, 1_048_576), D::Int(0))
        .title("Default memory limit")
        .about("Docker backend: memory limit per instance in MB unless its config sets memory_limit_mb; 0: none.")
        .env(&["DOCKER_MEMORY_LIMIT_MB"])
        .restart(),
    Field::new("docker_cpu_limit", Kind::Number { min: 0.0, max: 1024.0 }, D::Num(0.0))
        .title("Default CPU limit")
        .about("Docker backend: CPUs per instance unless its config sets cpu_limit (e.g. 1.5); 0: no limit.")
        .env(&["DOCKER_CPU_LIMIT"])
        .restart(),
    Field::new("docker_keep_running", BOOL, D::Bool(true))
        .title("Keep containers running")
        .about("Docker backend: leave instances running when the host stops, so the next start adopts them; off stops them like process.")
        .env(&["DOCKER_KEEP_RUNNING"])
        .restart(),
];
