//! Save zips in the real layout (research/factorio.md §5.5): one top-level directory holding
//! `level.dat0`, `level.datmetadata`, `level-init.dat` (with the version header), `control.lua`,
//! `script.dat`, plus the sim-only `standin.json` with the fake game state (and the Lua state of
//! the level script under its `lua` key). Every other entry (`control.lua`, `scenario.lua`,
//! `clusterio.json`, `modules/**`, `locale/**`, `info.json`, …) is a script file: kept from the
//! loaded save and written back on every save, as Factorio does.
//! Writes go to `<name>.tmp.zip` first and are renamed at the end, like the real server.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

#[derive(Clone, Debug, Default)]
pub struct Player {
    pub name: String,
    pub index: u32,
}

/// Everything the sim "simulates": persisted in `standin.json` inside the save.
#[derive(Clone, Debug)]
pub struct GameState {
    pub tick: u64,
    pub players: Vec<Player>,
    pub achievements: bool,
    pub seed: u64,
    pub next_autosave_slot: u32,
    /// `FACTORIO_STANDIN_MIGRATE_LEVEL` already put the stock control.lua back in this save.
    pub level_migrated: bool,
    /// The level script's persisted state (`storage`/`global`, technologies, mods seen), or
    /// None when the script never ran on this map (then the next start runs `on_init`).
    pub lua: Option<Value>,
    /// Script files of the level, relative to the save's root directory, in zip order.
    pub files: Vec<(String, Vec<u8>)>,
}

impl GameState {
    pub fn fresh(seed: u64) -> GameState {
        GameState {
            tick: 0,
            players: Vec::new(),
            achievements: true,
            seed,
            next_autosave_slot: 1,
            level_migrated: false,
            lua: None,
            files: Vec::new(),
        }
    }

    pub fn set_file(&mut self, rel: &str, data: Vec<u8>) {
        match self.files.iter_mut().find(|(n, _)| n == rel) {
            Some(e) => e.1 = data,
            None => self.files.push((rel.to_string(), data)),
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "tick": self.tick,
            "players": self.players.iter().map(|p| json!({"name": p.name, "index": p.index})).collect::<Vec<_>>(),
            "achievements": self.achievements,
            "seed": self.seed,
            "next_autosave_slot": self.next_autosave_slot,
            "level_migrated": self.level_migrated,
            "lua": self.lua,
        })
    }

    fn from_json(v: &Value) -> GameState {
        let players = v["players"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|p| Player {
                        name: p["name"].as_str().unwrap_or_default().to_string(),
                        index: p["index"].as_u64().unwrap_or(0) as u32,
                    })
                    .collect()
            })
            .unwrap_or_default();
        GameState {
            tick: v["tick"].as_u64().unwrap_or(0),
            players,
            achievements: v["achievements"].as_bool().unwrap_or(true),
            seed: v["seed"].as_u64().unwrap_or(0),
            next_autosave_slot: v["next_autosave_slot"].as_u64().unwrap_or(1) as u32,
            level_migrated: v["level_migrated"].as_bool().unwrap_or(false),
            lua: v.get("lua").filter(|l| l.is_object()).cloned(),
            files: Vec::new(),
        }
    }
}

/// `world.zip` → `world.tmp.zip`.
pub fn tmp_path(path: &Path) -> PathBuf {
    let s = path.to_string_lossy();
    match s.strip_suffix(".zip") {
        Some(stem) => PathBuf::from(format!("{stem}.tmp.zip")),
        None => PathBuf::from(format!("{s}.tmp.zip")),
    }
}

/// A zlib stream made of one stored block (so it starts `78 01` like the real level.datN).
fn zlib_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x78, 0x01];
    let chunks: Vec<&[u8]> = if data.is_empty() {
        vec![&[][..]]
    } else {
        data.chunks(65535).collect()
    };
    let n = chunks.len();
    for (i, c) in chunks.into_iter().enumerate() {
        out.push(if i + 1 == n { 1 } else { 0 });
        let len = c.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(c);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &x in data {
        a = (a + x as u32) % 65521;
        b = (b + a) % 65521;
    }
    out.extend_from_slice(&((b << 16) | a).to_be_bytes());
    out
}

/// Save header (§5.5): version as four u16 LE, one extra byte (0.17+), then a few
/// space-optimised strings (campaign, level name, base mod name).
fn header(version: (u32, u32, u32)) -> Vec<u8> {
    let mut h = Vec::new();
    for v in [version.0, version.1, version.2, 0] {
        h.extend_from_slice(&(v as u16).to_le_bytes());
    }
    h.push(0);
    for s in ["", "freeplay", "base"] {
        h.push(s.len() as u8);
        h.extend_from_slice(s.as_bytes());
    }
    h
}

/// Write the save to its `.tmp.zip`; the caller renames it with [`commit`] (possibly after a
/// delay, so a kill mid-save leaves the `.tmp.zip` and the old zip, as with the real server).
pub fn write_tmp(
    path: &Path,
    state: &GameState,
    version: (u32, u32, u32),
) -> std::io::Result<PathBuf> {
    let tmp = tmp_path(path);
    if let Some(dir) = tmp.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let root = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "save".into());
    let file = std::fs::File::create(&tmp)?;
    let mut zip = zip::ZipWriter::new(file);
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let deflated = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    let mut level = header(version);
    level.extend_from_slice(format!("tick={}\n", state.tick).as_bytes());
    let level = zlib_stored(&level);
    let mut entries: Vec<(String, Vec<u8>, bool)> = vec![
        (format!("{root}/level.dat0"), level, false),
        (
            format!("{root}/level.datmetadata"),
            1u64.to_le_bytes().to_vec(),
            false,
        ),
        (format!("{root}/level-init.dat"), header(version), true),
        (format!("{root}/script.dat"), vec![0u8; 16], true),
        (
            format!("{root}/standin.json"),
            serde_json::to_vec_pretty(&state.to_json()).unwrap_or_default(),
            true,
        ),
    ];
    for (rel, data) in &state.files {
        entries.push((format!("{root}/{rel}"), data.clone(), true));
    }
    for (name, data, deflate) in entries {
        zip.start_file(name, if deflate { deflated } else { stored })
            .map_err(std::io::Error::other)?;
        zip.write_all(&data)?;
    }
    let file = zip.finish().map_err(std::io::Error::other)?;
    file.sync_all()?;
    Ok(tmp)
}

pub fn commit(tmp: &Path, path: &Path) -> std::io::Result<()> {
    std::fs::rename(tmp, path)?;
    if let Some(dir) = path.parent()
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

pub enum LoadError {
    /// Not a zip, or no level.dat* entry under a single top-level directory.
    LevelMissing,
    NotAZip(String),
    TooNew(String),
}

/// Load a save: the sim's own zips restore `standin.json`; a foreign zip only needs a single
/// top-level directory with a `level.dat*` entry (§8.4).
pub fn load(path: &Path, my_version: (u32, u32, u32)) -> Result<GameState, LoadError> {
    let file = std::fs::File::open(path).map_err(|e| LoadError::NotAZip(e.to_string()))?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| LoadError::NotAZip(e.to_string()))?;
    let names: Vec<String> = zip
        .file_names()
        .filter_map(|n| n.ok().map(|n| n.into_owned()))
        .collect();
    let root = names
        .iter()
        .filter_map(|n| n.split_once('/').map(|(r, _)| r.to_string()))
        .next();
    let Some(root) = root else {
        return Err(LoadError::LevelMissing);
    };
    if names.iter().any(|n| !n.starts_with(&format!("{root}/")))
        || !names
            .iter()
            .any(|n| n.starts_with(&format!("{root}/level.dat")))
    {
        return Err(LoadError::LevelMissing);
    }
    if let Ok(mut f) = zip.by_name(&format!("{root}/level-init.dat")) {
        let mut h = [0u8; 8];
        if f.read_exact(&mut h).is_ok() {
            let v = |i: usize| u16::from_le_bytes([h[i], h[i + 1]]) as u32;
            let save_version = (v(0), v(2), v(4));
            if save_version > my_version {
                return Err(LoadError::TooNew(format!(
                    "{}.{}.{}-{}",
                    save_version.0,
                    save_version.1,
                    save_version.2,
                    v(6)
                )));
            }
        }
    }
    let mut state = match zip.by_name(&format!("{root}/standin.json")) {
        Ok(mut f) => {
            let mut s = String::new();
            let _ = f.read_to_string(&mut s);
            serde_json::from_str::<Value>(&s)
                .map(|v| GameState::from_json(&v))
                .unwrap_or_else(|_| GameState::fresh(0))
        }
        Err(_) => {
            let mut g = GameState::fresh(0);
            g.achievements = false;
            g
        }
    };
    let prefix = format!("{root}/");
    for i in 0..zip.len() {
        let Ok(mut f) = zip.by_index(i) else {
            continue;
        };
        if f.is_dir() {
            continue;
        }
        let Some(rel) = f
            .name()
            .ok()
            .and_then(|n| n.strip_prefix(&prefix).map(str::to_string))
        else {
            continue;
        };
        if !is_script_file(&rel) {
            continue;
        }
        let mut data = Vec::new();
        if f.read_to_end(&mut data).is_ok() {
            state.files.push((rel, data));
        }
    }
    Ok(state)
}

/// Entries the game regenerates on every save (`level*`, `script*.dat`, the sim's own state)
/// versus script files, which it keeps as they are.
fn is_script_file(rel: &str) -> bool {
    let top = !rel.contains('/');
    !(top
        && (rel.starts_with("level")
            || (rel.starts_with("script") && rel.ends_with(".dat"))
            || rel == "standin.json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_through_tmp_and_rename() {
        let dir = std::env::temp_dir().join(format!("fsim-save-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("world.zip");
        let mut st = GameState::fresh(42);
        st.tick = 1234;
        st.players.push(Player {
            name: "Alice".into(),
            index: 1,
        });
        let tmp = write_tmp(&path, &st, (2, 0, 77)).unwrap();
        assert!(tmp.ends_with("world.tmp.zip"));
        commit(&tmp, &path).unwrap();
        st.files
            .push(("control.lua".into(), b"-- level\n".to_vec()));
        st.files
            .push(("modules/m/a.lua".into(), b"return 1\n".to_vec()));
        st.lua = Some(json!({"initialized": true}));
        let tmp = write_tmp(&path, &st, (2, 0, 77)).unwrap();
        commit(&tmp, &path).unwrap();
        let back = load(&path, (2, 0, 77)).ok().unwrap();
        assert_eq!(back.tick, 1234);
        assert_eq!(back.files, st.files);
        assert_eq!(back.lua, st.lua);
        assert_eq!(back.players[0].name, "Alice");
        assert!(matches!(
            load(&path, (1, 1, 110)),
            Err(LoadError::TooNew(_))
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn zlib_stream_starts_like_factorio() {
        let z = zlib_stored(b"abc");
        assert_eq!(&z[..2], &[0x78, 0x01]);
    }
}
