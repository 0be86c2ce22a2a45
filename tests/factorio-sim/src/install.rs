//! `factorio-sim install <dir> [--version X]`: lay out a headless install tree that looks like the
//! untarred `factorio_headless_x64_<ver>.tar.xz` (research/factorio.md §2.1, §8.1), with this very
//! binary as `bin/x64/factorio`. Also: which version/build an install is (read back at run time).

use std::path::{Path, PathBuf};

pub const DEFAULT_VERSION: &str = "2.0.77";

/// Build numbers of real releases (log header and `--version`); others get a made-up one.
fn build_of(version: &str) -> u32 {
    match version {
        "2.0.77" => 84539,
        "2.0.72" => 84292,
        "2.0.60" => 83512,
        "2.0.47" => 82606,
        "2.0.10" => 79578,
        "1.1.110" => 78955,
        "1.1.76" => 60350,
        "1.1.27" => 57867,
        other => {
            let n: u32 = other
                .bytes()
                .fold(7u32, |a, b| a.wrapping_mul(31).wrapping_add(b as u32));
            50000 + n % 40000
        }
    }
}

/// Version identity of the running binary.
#[derive(Clone, Debug)]
pub struct Identity {
    pub version: String,
    pub build: u32,
}

impl Identity {
    /// 1.1 dialect: tick sentinel, `Binary version:`, `global`, exit status 1 on a graceful stop
    /// before 1.1.93 (§9).
    pub fn is_1_1(&self) -> bool {
        self.version.starts_with("1.")
    }

    pub fn parts(&self) -> (u32, u32, u32) {
        let mut it = self
            .version
            .split('.')
            .map(|p| p.parse::<u32>().unwrap_or(0));
        (
            it.next().unwrap_or(0),
            it.next().unwrap_or(0),
            it.next().unwrap_or(0),
        )
    }

    pub fn tick_sentinel(&self) -> &'static str {
        if self.is_1_1() {
            "4294967295"
        } else {
            "18446744073709551615"
        }
    }

    /// Exit status of a graceful (quit/signal) stop: 1 before 1.1.93, 0 after (§1.5).
    pub fn graceful_exit_code(&self) -> i32 {
        if self.parts() < (1, 1, 93) { 1 } else { 0 }
    }

    /// Version from `<install>/data/base/info.json` (where the real binary has it compiled in),
    /// overridable by the sim-only `FACTORIO_STANDIN_VERSION` / `_BUILD`.
    pub fn detect(install: &Path) -> Identity {
        let from_file = std::fs::read_to_string(install.join("data/base/info.json"))
            .ok()
            .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
            .and_then(|v| v.get("version").and_then(|v| v.as_str()).map(String::from));
        let version = std::env::var("FACTORIO_STANDIN_VERSION")
            .ok()
            .or(from_file)
            .unwrap_or_else(|| DEFAULT_VERSION.to_string());
        let build = std::env::var("FACTORIO_STANDIN_BUILD")
            .ok()
            .and_then(|b| b.parse().ok())
            .unwrap_or_else(|| build_of(&version));
        Identity { version, build }
    }
}

/// The install root: the binary lives in `<install>/bin/x64/`.
pub fn install_root(exe_dir: &Path) -> PathBuf {
    exe_dir
        .parent()
        .and_then(|p| p.parent())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| exe_dir.to_path_buf())
}

pub fn builtin_mods(version: &str) -> &'static [&'static str] {
    if version.starts_with("1.") {
        &["base"]
    } else if version.starts_with("2.0") {
        &["base", "elevated-rails", "quality", "space-age"]
    } else {
        &["base", "elevated-rails", "quality", "recycler", "space-age"]
    }
}

pub fn run(args: &[String]) -> i32 {
    let mut dir = None;
    let mut version = DEFAULT_VERSION.to_string();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--version" {
            match it.next() {
                Some(v) => version = v.clone(),
                None => {
                    eprintln!("--version needs a value");
                    return 2;
                }
            }
        } else if let Some(v) = a.strip_prefix("--version=") {
            version = v.to_string();
        } else if dir.is_none() {
            dir = Some(PathBuf::from(a));
        } else {
            eprintln!("usage: factorio-sim install <dir> [--version X.Y.Z]");
            return 2;
        }
    }
    let Some(dir) = dir else {
        eprintln!("usage: factorio-sim install <dir> [--version X.Y.Z]");
        return 2;
    };
    match install(&dir, &version) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("install into {} failed: {e}", dir.display());
            1
        }
    }
}

fn install(dir: &Path, version: &str) -> std::io::Result<()> {
    let bin = dir.join("bin/x64");
    std::fs::create_dir_all(&bin)?;
    let exe = std::env::current_exe()?;
    let target = bin.join("factorio");
    let _ = std::fs::remove_file(&target);
    // A hard link is instant; the copy covers installs on another filesystem.
    if std::fs::hard_link(&exe, &target).is_err() {
        std::fs::copy(&exe, &target)?;
    }
    std::fs::write(
        dir.join("config-path.cfg"),
        "config-path=__PATH__executable__/../../config\nuse-system-read-write-data-directories=false\n",
    )?;
    let data = dir.join("data");
    std::fs::create_dir_all(&data)?;
    let (major_minor, _) = version.rsplit_once('.').unwrap_or((version, ""));
    std::fs::write(
        data.join("changelog.txt"),
        format!(
            "---------------------------------------------------------------------------------------------------\n\
             Version: {version}\nDate: 01. 03. 2026\n  Bugfixes:\n    - Fixed things.\n"
        ),
    )?;
    for m in std::iter::once("core").chain(builtin_mods(version).iter().copied()) {
        let d = data.join(m);
        std::fs::create_dir_all(&d)?;
        let info = serde_json::json!({
            "name": m,
            "version": if m == "core" { "0.0.0".to_string() } else { version.to_string() },
            "title": title(m),
            "author": "Factorio team",
            "factorio_version": major_minor,
        });
        std::fs::write(
            d.join("info.json"),
            serde_json::to_string_pretty(&info).unwrap_or_default() + "\n",
        )?;
    }
    // The built-in scenarios live in the base mod (`base/freeplay`, research/factorio.md §5.6).
    let freeplay = data.join("base/scenarios/freeplay");
    std::fs::create_dir_all(&freeplay)?;
    std::fs::write(
        freeplay.join("control.lua"),
        crate::lua::stock_control_lua(version.starts_with("1.")),
    )?;
    std::fs::write(
        data.join("server-settings.example.json"),
        server_settings_example(version),
    )?;
    std::fs::write(
        data.join("map-gen-settings.example.json"),
        MAP_GEN_SETTINGS_EXAMPLE,
    )?;
    std::fs::write(data.join("map-settings.example.json"), MAP_SETTINGS_EXAMPLE)?;
    std::fs::write(
        data.join("server-whitelist.example.json"),
        "[\n  \"Rseding91\",\n  \"Oxyd\"\n]\n",
    )?;
    Ok(())
}

fn title(m: &str) -> &'static str {
    match m {
        "core" => "Core",
        "base" => "Base mod",
        "elevated-rails" => "Elevated rails",
        "quality" => "Quality",
        "space-age" => "Space Age",
        _ => "Recycler",
    }
}

fn server_settings_example(version: &str) -> String {
    let extra = if version.starts_with("1.") {
        ""
    } else {
        "  \"auto_pause_when_players_connect\": false,\n"
    };
    format!(
        r#"{{
  "name": "Name of the game as it will appear in the game listing",
  "description": "Description of the game that will appear in the listing",
  "tags": ["game", "tags"],

  "_comment_max_players": "Maximum number of players allowed, admins can join even a full server. 0 means unlimited.",
  "max_players": 0,

  "_comment_visibility": ["public: Game will be published on the official Factorio matching server",
                          "lan: Game will be broadcast on LAN"],
  "visibility":
  {{
    "public": true,
    "lan": true
  }},

  "_comment_credentials": "Your factorio.com login credentials. Required for games with visibility public",
  "username": "",
  "password": "",

  "_comment_token": "Authentication token. May be used instead of 'password' above.",
  "token": "",

  "game_password": "",

  "_comment_require_user_verification": "When set to true, the server will only allow clients that have a valid Factorio.com account",
  "require_user_verification": true,

  "_comment_max_upload_in_kilobytes_per_second" : "optional, default value is 0. 0 means unlimited.",
  "max_upload_in_kilobytes_per_second": 0,

  "_comment_max_upload_slots" : "optional, default value is 5. 0 means unlimited.",
  "max_upload_slots": 5,

  "_comment_minimum_latency_in_ticks": "optional one tick is 16ms in default speed, default value is 0. 0 means no minimum.",
  "minimum_latency_in_ticks": 0,

  "_comment_max_heartbeats_per_second": "Network tick rate. Maximum rate game updates packets are sent at before bundling them together. Minimum value is 6, maximum value is 240.",
  "max_heartbeats_per_second": 60,

  "_comment_ignore_player_limit_for_returning_players": "Players that played on this map already can join even when the max player limit was reached.",
  "ignore_player_limit_for_returning_players": false,

  "_comment_allow_commands": "possible values are, true, false and admins-only",
  "allow_commands": "admins-only",

  "_comment_autosave_interval": "Autosave interval in minutes",
  "autosave_interval": 10,

  "_comment_autosave_slots": "server autosave slots, it is cycled through when the server autosaves.",
  "autosave_slots": 5,

  "_comment_afk_autokick_interval": "How many minutes until someone is kicked when doing nothing, 0 for never.",
  "afk_autokick_interval": 0,

  "_comment_auto_pause": "Whether should the server be paused when no players are present.",
  "auto_pause": true,
{extra}
  "only_admins_can_pause_the_game": true,

  "_comment_autosave_only_on_server": "Whether autosaves should be saved only on server or also on all connected clients. Default is true.",
  "autosave_only_on_server": true,

  "_comment_non_blocking_saving": "Highly experimental feature, enable only at your own risk of losing your saves. On UNIX systems, server will fork itself to create an autosave. Autosaving on connected Windows clients will be disabled regardless of autosave_only_on_server option.",
  "non_blocking_saving": false,

  "_comment_segment_sizes": "Long network messages are split into segments that are sent over multiple ticks. Their size depends on the number of peers currently connected. Increasing the segment size will increase upload bandwidth requirement for the server and download bandwidth requirement for clients. This setting only affects server outbound messages. Changing these settings can have a negative impact on connection stability for some clients.",
  "minimum_segment_size": 25,
  "minimum_segment_size_peer_count": 20,
  "maximum_segment_size": 100,
  "maximum_segment_size_peer_count": 10
}}
"#
    )
}

const MAP_GEN_SETTINGS_EXAMPLE: &str = r#"{
  "_comment_width+height": "Width and height of map, in tiles; 0 means infinite",
  "width": 0,
  "height": 0,

  "_starting_area_comment": "Multiplier for 'biter free zone radius'",
  "starting_area": 1,

  "peaceful_mode": false,

  "autoplace_controls":
  {
    "coal": {"frequency": 1, "size": 1, "richness": 1},
    "stone": {"frequency": 1, "size": 1, "richness": 1},
    "copper-ore": {"frequency": 1, "size": 1,"richness": 1},
    "iron-ore": {"frequency": 1, "size": 1, "richness": 1},
    "uranium-ore": {"frequency": 1, "size": 1, "richness": 1},
    "crude-oil": {"frequency": 1, "size": 1, "richness": 1},
    "water": {"frequency": 1, "size": 1},
    "trees": {"frequency": 1, "size": 1},
    "enemy-base": {"frequency": 1, "size": 1}
  },

  "cliff_settings":
  {
    "_name_comment": "Name of the cliff prototype",
    "name": "cliff",
    "cliff_elevation_0": 10,
    "cliff_elevation_interval": 40,
    "richness": 1
  },

  "property_expression_names":
  {
    "control:moisture:frequency": "1",
    "control:moisture:bias": "0",
    "control:aux:frequency": "1",
    "control:aux:bias": "0"
  },

  "starting_points":
  [
    { "x": 0, "y": 0}
  ],

  "_seed_comment": "Use null for a random seed, number for a specific seed.",
  "seed": null
}
"#;

const MAP_SETTINGS_EXAMPLE: &str = r#"{
  "difficulty_settings":
  {
    "technology_price_multiplier": 1,
    "spoil_time_modifier": 1
  },
  "pollution":
  {
    "enabled": true,
    "diffusion_ratio": 0.02,
    "min_to_diffuse": 15,
    "ageing": 1,
    "expected_max_per_chunk": 150,
    "min_to_show_per_chunk": 50,
    "min_pollution_to_damage_trees": 60,
    "pollution_with_max_forest_damage": 150,
    "pollution_per_tree_damage": 50,
    "pollution_restored_per_tree_damage": 10,
    "max_pollution_to_restore_trees": 20,
    "enemy_attack_pollution_consumption_modifier": 1
  },
  "enemy_evolution":
  {
    "enabled": true,
    "time_factor": 0.000004,
    "destroy_factor": 0.002,
    "pollution_factor": 0.0000009
  },
  "enemy_expansion":
  {
    "enabled": true,
    "min_expansion_cooldown": 14400,
    "max_expansion_cooldown": 216000
  }
}
"#;

/// Stand-in mods the sim can install as test fixtures (`factorio-sim install-mod <name> <mods-dir>`):
/// name, version, files.
pub type StandinMod = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

pub const STANDIN_MODS: &[StandinMod] = &[(
    "subspace_storage",
    "2.2.20",
    &[
        (
            "info.json",
            include_str!("lua/mods/subspace_storage/info.json"),
        ),
        (
            "control.lua",
            include_str!("lua/mods/subspace_storage/control.lua"),
        ),
    ],
)];

/// `factorio-sim install-mod <name> <mods-dir>`: write `<name>_<version>.zip` and enable it in
/// `mod-list.json` (other entries kept).
pub fn install_mod(args: &[String]) -> i32 {
    let usage = "usage: factorio-sim install-mod subspace_storage <mods-dir>";
    let (Some(name), Some(dir), None) = (args.first(), args.get(1), args.get(2)) else {
        eprintln!("{usage}");
        return 2;
    };
    let Some((name, version, files)) = STANDIN_MODS.iter().find(|(n, _, _)| n == name) else {
        eprintln!("unknown stand-in mod {name}; {usage}");
        return 2;
    };
    match write_mod(Path::new(dir), name, version, files) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("install-mod into {dir} failed: {e}");
            1
        }
    }
}

fn write_mod(dir: &Path, name: &str, version: &str, files: &[(&str, &str)]) -> std::io::Result<()> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let zip_path = dir.join(format!("{name}_{version}.zip"));
    let mut z = zip::ZipWriter::new(std::fs::File::create(&zip_path)?);
    for (f, text) in files {
        z.start_file(
            format!("{name}_{version}/{f}"),
            zip::write::SimpleFileOptions::default(),
        )
        .map_err(std::io::Error::other)?;
        z.write_all(text.as_bytes())?;
    }
    z.finish().map_err(std::io::Error::other)?;
    let list_path = dir.join("mod-list.json");
    let mut mods: Vec<serde_json::Value> = std::fs::read_to_string(&list_path)
        .ok()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
        .and_then(|v| v.get("mods").and_then(|m| m.as_array()).cloned())
        .unwrap_or_else(|| vec![serde_json::json!({"name": "base", "enabled": true})]);
    mods.retain(|m| m.get("name").and_then(|n| n.as_str()) != Some(name));
    mods.push(serde_json::json!({"name": name, "enabled": true}));
    std::fs::write(
        list_path,
        serde_json::to_string_pretty(&serde_json::json!({"mods": mods}))
            .map_err(std::io::Error::other)?
            + "\n",
    )
}
