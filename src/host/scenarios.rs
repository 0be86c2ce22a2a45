//! Scenarios an instance can start a new game from (research/factorio.md §5.6):
//! `<write-data>/scenarios/<NAME>/control.lua` (the instance directory is the write-data
//! directory; uploaded scenarios land there), and `MOD/NAME` inside a mod — the install's
//! `data/<mod>/scenarios/<NAME>/` (`base/freeplay`, …) or a mod zip of the instance
//! (`mods/<mod>_<version>.zip` holding `<root>/scenarios/<NAME>/control.lua`).
//!
//! A new game from a scenario is made while the instance is stopped: Factorio runs it with
//! `--start-server-load-scenario [MOD/]NAME` (plus `--map-gen-seed`, `--map-gen-settings`,
//! `--map-settings`, `--preset`), the host saves it once with `/server-save NAME` and ends that
//! run without its exit save (which would go to `saves/<scenario>.zip`). The result is an
//! ordinary save, so the next start, backups, transfers and restores treat it as any other.

use serde::Serialize;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Largest scenario zip unpacked (blueprint books and images make them a few MB at most).
pub const MAX_UNPACKED: u64 = 256 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scenario {
    /// What `--start-server-load-scenario` takes: `NAME` or `MOD/NAME`.
    pub name: String,
    /// `instance` (the instance's `scenarios/`), `install` (the Factorio install) or `mod`.
    pub source: &'static str,
}

fn part_ok(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 100
        && !p.starts_with('.')
        && p.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ' '))
}

/// `NAME` or `MOD/NAME`, each part letters, digits, `-_. ` (no path tricks).
pub fn check_name(s: &str) -> Result<String, String> {
    let parts: Vec<&str> = s.split('/').collect();
    if parts.len() > 2 || !parts.iter().all(|p| part_ok(p)) {
        return Err(format!(
            "scenario '{s}' is not a scenario name: use NAME (from the instance's scenarios) or MOD/NAME (e.g. base/freeplay), letters, digits, '-', '_', '.' and spaces"
        ));
    }
    Ok(s.to_string())
}

/// The save's name Factorio gives a scenario's game (`saves/<NAME>.zip`).
pub fn leaf(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

fn dirs_with_control(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("control.lua").is_file())
        .filter_map(|e| e.file_name().to_str().map(String::from))
        .filter(|n| part_ok(n))
        .collect();
    v.sort();
    v
}

/// Mod zips of an instance (`<mod>_<version>.zip`) and the scenarios inside each.
fn mod_zip_scenarios(mods_dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(mods_dir).into_iter().flatten().flatten() {
        let file = e.file_name().to_string_lossy().into_owned();
        let Some(stem) = file.strip_suffix(".zip") else {
            continue;
        };
        let Some((m, _version)) = stem.rsplit_once('_') else {
            continue;
        };
        let Ok(f) = std::fs::File::open(e.path()) else {
            continue;
        };
        let Ok(zip) = zip::ZipArchive::new(f) else {
            continue;
        };
        for n in zip.file_names().filter_map(|n| n.ok()) {
            // <root>/scenarios/<NAME>/control.lua
            let parts: Vec<&str> = n.split('/').collect();
            if parts.len() == 4
                && parts[1] == "scenarios"
                && parts[3] == "control.lua"
                && part_ok(parts[2])
            {
                out.push((m.to_string(), parts[2].to_string()));
            }
        }
    }
    out
}

/// Every scenario an instance can start from, sorted by name.
pub fn list(inst_dir: &Path, install_data: Option<&Path>) -> Vec<Scenario> {
    let mut v: Vec<Scenario> = dirs_with_control(&inst_dir.join("scenarios"))
        .into_iter()
        .map(|name| Scenario {
            name,
            source: "instance",
        })
        .collect();
    if let Some(data) = install_data {
        for e in std::fs::read_dir(data).into_iter().flatten().flatten() {
            let m = e.file_name().to_string_lossy().into_owned();
            for s in dirs_with_control(&e.path().join("scenarios")) {
                v.push(Scenario {
                    name: format!("{m}/{s}"),
                    source: "install",
                });
            }
        }
    }
    for (m, s) in mod_zip_scenarios(&inst_dir.join("mods")) {
        v.push(Scenario {
            name: format!("{m}/{s}"),
            source: "mod",
        });
    }
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v.dedup_by(|a, b| a.name == b.name);
    v
}

/// A name an uploaded scenario may take: `NAME` (it lands in the instance's `scenarios/`).
pub fn check_upload_name(name: &str) -> Result<String, String> {
    let name = check_name(name)?;
    if name.contains('/') {
        return Err(format!(
            "an uploaded scenario is named NAME, not MOD/NAME ('{name}')"
        ));
    }
    Ok(name)
}

/// The folder inside a scenario zip that holds its `control.lua`: the root (`""`) or one
/// top-level folder (`"name/"`).
fn root_of(names: &[String]) -> Result<String, String> {
    if names.iter().any(|n| n == "control.lua") {
        return Ok(String::new());
    }
    let roots: Vec<&str> = names
        .iter()
        .filter_map(|n| n.strip_suffix("/control.lua"))
        .filter(|r| !r.contains('/'))
        .collect();
    match roots.as_slice() {
        [r] => Ok(format!("{r}/")),
        [] => Err(
            "the zip has no control.lua (at its root or in one top-level folder): it is not a scenario"
                .into(),
        ),
        _ => Err(
            "the zip has control.lua in several top-level folders: upload one scenario per zip"
                .into(),
        ),
    }
}

fn open_zip(zip_path: &Path) -> Result<(zip::ZipArchive<std::fs::File>, String), String> {
    let f = std::fs::File::open(zip_path).map_err(|e| format!("opening the upload: {e}"))?;
    let zip =
        zip::ZipArchive::new(f).map_err(|e| format!("the scenario is not a readable zip ({e})"))?;
    let names: Vec<String> = zip
        .file_names()
        .filter_map(|n| n.ok().map(|n| n.to_string()))
        .collect();
    let prefix = root_of(&names)?;
    if let Some(bad) = names
        .iter()
        .find(|n| n.strip_prefix(&prefix).is_some_and(|rel| !safe_path(rel)))
    {
        return Err(format!("the zip has an unsafe path: {bad}"));
    }
    Ok((zip, prefix))
}

/// A plain relative path inside the scenario's folder (no `..`, no absolute path, no `\`).
fn safe_path(rel: &str) -> bool {
    !rel.contains('\\')
        && Path::new(rel)
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
}

/// Whether `zip_path` is a scenario zip [`unpack`] takes (the controller checks uploads with
/// it before any host sees them).
pub fn check_zip(zip_path: &Path) -> Result<(), String> {
    open_zip(zip_path).map(|_| ())
}

/// Unpacks an uploaded scenario zip into `<inst_dir>/scenarios/<name>/` (replacing one of that
/// name). The zip holds `control.lua` at its root or in one top-level folder.
pub fn unpack(zip_path: &Path, inst_dir: &Path, name: &str) -> Result<PathBuf, String> {
    let name = check_upload_name(name)?;
    let (mut zip, prefix) = open_zip(zip_path)?;
    let scenarios = inst_dir.join("scenarios");
    let staging = scenarios.join(format!(".incoming-{name}-{}", crate::store::now_ms()));
    std::fs::create_dir_all(&staging)
        .map_err(|e| format!("creating {}: {e}", staging.display()))?;
    let result = (|| {
        let mut total = 0u64;
        for i in 0..zip.len() {
            let mut entry = zip
                .by_index(i)
                .map_err(|e| format!("reading the zip: {e}"))?;
            let full = entry
                .name()
                .map_err(|e| format!("reading the zip: {e}"))?
                .to_string();
            let Some(rel) = full.strip_prefix(&prefix).map(String::from) else {
                continue;
            };
            if rel.is_empty() || entry.is_dir() {
                continue;
            }
            if !safe_path(&rel) {
                return Err(format!("the zip has an unsafe path: {full}"));
            }
            let dest = staging.join(&rel);
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
            }
            let mut out = std::fs::File::create(&dest).map_err(|e| e.to_string())?;
            let left = MAX_UNPACKED.saturating_sub(total);
            let n = std::io::copy(&mut (&mut entry).take(left + 1), &mut out)
                .map_err(|e| format!("unpacking {full}: {e}"))?;
            total += n;
            if total > MAX_UNPACKED {
                return Err("the scenario unpacks to more than 256 MiB".into());
            }
        }
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e);
    }
    let target = scenarios.join(&name);
    let old = scenarios.join(format!(".old-{name}-{}", crate::store::now_ms()));
    if target.exists() {
        std::fs::rename(&target, &old).map_err(|e| format!("replacing {name}: {e}"))?;
    }
    if let Err(e) = std::fs::rename(&staging, &target) {
        let _ = std::fs::rename(&old, &target);
        let _ = std::fs::remove_dir_all(&staging);
        return Err(format!("storing scenario {name}: {e}"));
    }
    let _ = std::fs::remove_dir_all(&old);
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn zip_of(path: &Path, files: &[(&str, &str)]) {
        let f = std::fs::File::create(path).unwrap();
        let mut z = zip::ZipWriter::new(f);
        for (n, body) in files {
            z.start_file(*n, zip::write::SimpleFileOptions::default())
                .unwrap();
            z.write_all(body.as_bytes()).unwrap();
        }
        z.finish().unwrap();
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("base/freeplay").is_ok());
        assert!(check_name("my scenario").is_ok());
        for bad in ["", "../x", "a/b/c", "a/", "/x", ".hidden", "a\\b"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn listed_from_the_instance_the_install_and_mod_zips() {
        let d = tempfile::tempdir().unwrap();
        let inst = d.path().join("inst");
        let data = d.path().join("data");
        std::fs::create_dir_all(inst.join("scenarios/arena")).unwrap();
        std::fs::write(inst.join("scenarios/arena/control.lua"), "").unwrap();
        std::fs::create_dir_all(inst.join("scenarios/empty")).unwrap();
        std::fs::create_dir_all(data.join("base/scenarios/freeplay")).unwrap();
        std::fs::write(data.join("base/scenarios/freeplay/control.lua"), "").unwrap();
        std::fs::create_dir_all(inst.join("mods")).unwrap();
        zip_of(
            &inst.join("mods/pvp-extra_1.0.0.zip"),
            &[
                ("pvp-extra/info.json", "{}"),
                ("pvp-extra/scenarios/teams/control.lua", ""),
            ],
        );
        let names: Vec<String> = list(&inst, Some(data.as_path()))
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names, ["arena", "base/freeplay", "pvp-extra/teams"]);
    }

    #[test]
    fn an_upload_is_unpacked_and_a_non_scenario_refused() {
        let d = tempfile::tempdir().unwrap();
        let z = d.path().join("s.zip");
        zip_of(
            &z,
            &[
                ("wave/control.lua", "-- waves"),
                ("wave/locale/en/w.cfg", "x"),
            ],
        );
        let at = unpack(&z, d.path(), "wave-defense").unwrap();
        assert_eq!(
            std::fs::read_to_string(at.join("control.lua")).unwrap(),
            "-- waves"
        );
        assert!(at.join("locale/en/w.cfg").is_file());
        zip_of(&z, &[("readme.txt", "x")]);
        let e = unpack(&z, d.path(), "other").unwrap_err();
        assert!(e.contains("no control.lua"), "{e}");
        assert!(!d.path().join("scenarios/other").exists());
        zip_of(&z, &[("../evil/control.lua", "x")]);
        assert!(unpack(&z, d.path(), "evil").is_err());
    }
}
