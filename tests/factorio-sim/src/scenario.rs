//! `--start-server-load-scenario [MOD/]NAME` (research/factorio.md §1.2, §5.6): `NAME` is looked
//! for in `<write-data>/scenarios/NAME/`, `MOD/NAME` inside a mod — `<install>/data/MOD/scenarios/NAME/`
//! for the built-in ones (`base/freeplay`), else the mod's folder or zip in the mods directory.
//! The scenario's files become the new game's level files (`control.lua`, `locale/…`).
//! The text of the not-found error is [G]: the real one was not recorded.

use std::io::Read;
use std::path::{Path, PathBuf};

fn read_dir_files(root: &Path) -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(rel) = p.strip_prefix(root) {
                out.push((rel.to_string_lossy().replace('\\', "/"), std::fs::read(&p)?));
            }
        }
    }
    Ok(out)
}

fn from_mod_zip(zip_path: &Path, name: &str) -> Option<Vec<(String, Vec<u8>)>> {
    let f = std::fs::File::open(zip_path).ok()?;
    let mut zip = zip::ZipArchive::new(f).ok()?;
    let mut out = Vec::new();
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).ok()?;
        let full = entry.name().ok()?.to_string();
        let mut parts = full.splitn(4, '/');
        let (_root, dir, scen, rest) = (parts.next()?, parts.next(), parts.next(), parts.next());
        if dir != Some("scenarios") || scen != Some(name) {
            continue;
        }
        let Some(rest) = rest.filter(|r| !r.is_empty() && !r.ends_with('/')) else {
            continue;
        };
        let mut data = Vec::new();
        entry.read_to_end(&mut data).ok()?;
        out.push((rest.to_string(), data));
    }
    out.iter().any(|(n, _)| n == "control.lua").then_some(out)
}

fn in_mods_dir(mods_dir: &Path, m: &str, name: &str) -> Option<Vec<(String, Vec<u8>)>> {
    let folder = mods_dir.join(m).join("scenarios").join(name);
    if folder.join("control.lua").is_file() {
        return read_dir_files(&folder).ok();
    }
    let mut zips: Vec<PathBuf> = std::fs::read_dir(mods_dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".zip"))
                .and_then(|n| n.rsplit_once('_'))
                .is_some_and(|(mod_name, _)| mod_name == m)
        })
        .collect();
    zips.sort();
    zips.iter().rev().find_map(|z| from_mod_zip(z, name))
}

/// The scenario's files, or the error line for the log.
pub fn find(
    install: &Path,
    write_dir: &Path,
    mods_dir: &Path,
    spec: &str,
) -> Result<Vec<(String, Vec<u8>)>, String> {
    let found = match spec.split_once('/') {
        None => {
            let d = write_dir.join("scenarios").join(spec);
            d.join("control.lua")
                .is_file()
                .then(|| read_dir_files(&d).ok())
                .flatten()
        }
        Some((m, name)) if !name.contains('/') => {
            let d = install.join("data").join(m).join("scenarios").join(name);
            if d.join("control.lua").is_file() {
                read_dir_files(&d).ok()
            } else {
                in_mods_dir(mods_dir, m, name)
            }
        }
        Some(_) => None,
    };
    found.ok_or_else(|| format!("Scenario {spec} not found."))
}
