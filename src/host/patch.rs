//! Save patching: before every start the host puts the cluster's Lua modules into the save, in
//! the layout Clusterio uses so a save moves between the two (research/plugins.md §1.2–§1.3):
//!
//! ```text
//! <root>/control.lua      generated loader: the scenario, then each module, in dependency order
//! <root>/scenario.lua     the scenario's original control.lua (a known freeplay, by SHA-1)
//! <root>/clusterio.json   {"version":1,"patch_number":N,"scenario":{…},"modules":[{…,"files":[…]}]}
//! <root>/modules/<name>/… module files;  locale/<lang>/<module>-<file>.cfg  locale files
//! ```
//!
//! The zip is rewritten to a temporary file beside the save and renamed over it; entries we do
//! not own (`level.dat*`, `script.dat`, …) are copied raw, byte for byte.

use semver::{Version, VersionReq};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha1::{Digest, Sha1};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read, Write};
use std::path::Path;

/// The `clusterio.json` format version written (and the newest one read).
pub const PATCH_INFO_VERSION: u64 = 1;

/// A scenario's stock `control.lua`, recognised by its SHA-1.
pub struct KnownScenario {
    pub sha1: &'static str,
    pub name: &'static str,
    pub version: &'static str,
}

/// Freeplay as shipped by Factorio. A new Factorio with a new freeplay text needs a row here
/// (or `patch_unknown_scenario` on the instance).
pub const KNOWN_SCENARIOS: &[KnownScenario] = &[
    KnownScenario {
        sha1: "4e866186ebe297f1038fd325b09df1a1f5e2fdd1",
        name: "freeplay",
        version: "0.17.63",
    },
    KnownScenario {
        sha1: "bcbdde18ce4ec16ebfd93bd694cd9b12ef969c9a",
        name: "freeplay",
        version: "2.0.0",
    },
    KnownScenario {
        sha1: "3af547d2f4db3728b75ac5d1b3a4f47830dc48e7",
        name: "freeplay",
        version: "2.0.29",
    },
];

/// A Lua module to put into saves.
#[derive(Debug, Clone, PartialEq)]
pub struct Module {
    pub name: String,
    pub version: String,
    /// Module name → semver requirement (`*` for any).
    pub dependencies: BTreeMap<String, String>,
    /// Files loaded as event_handler libraries, in order.
    pub load: Vec<String>,
    /// Files required (for their globals), in order.
    pub require: Vec<String>,
    /// Path inside the module → contents.
    pub files: Vec<(String, Vec<u8>)>,
}

/// What `clusterio.json` says about the scenario and each module.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModuleInfo {
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub dependencies: BTreeMap<String, String>,
    #[serde(default)]
    pub require: Vec<String>,
    #[serde(default)]
    pub load: Vec<String>,
    /// Paths inside the save this module added (modules only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<String>>,
}

/// `clusterio.json`, version 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatchInfo {
    pub version: u64,
    pub patch_number: u64,
    pub scenario: ModuleInfo,
    pub modules: Vec<ModuleInfo>,
}

impl PatchInfo {
    /// Reads `clusterio.json`: version 1, or the older version 0 scenario format
    /// (`{"patch_number"?, "scenario": {"name", "modules": [...]}}`).
    pub fn parse(text: &str) -> Result<PatchInfo, PatchError> {
        let bad = |m: String| PatchError::BadPatchInfo(m);
        let v: Value = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        match v.get("version").and_then(Value::as_u64) {
            Some(1) => serde_json::from_value(v).map_err(|e| bad(e.to_string())),
            Some(n) if n > PATCH_INFO_VERSION => Err(bad(format!(
                "version {n} is newer than this clustorio understands ({PATCH_INFO_VERSION})"
            ))),
            Some(n) => Err(bad(format!("unknown version {n}"))),
            None => {
                let scenario = &v["scenario"];
                let name = scenario["name"]
                    .as_str()
                    .ok_or_else(|| bad("version 0 file without scenario.name".into()))?;
                let load = scenario["modules"]
                    .as_array()
                    .map(|m| {
                        m.iter()
                            .filter_map(|x| x.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default();
                Ok(PatchInfo {
                    version: 0,
                    // A missing number counts as 0 (Clusterio computes NaN here).
                    patch_number: v["patch_number"].as_u64().unwrap_or(0),
                    scenario: ModuleInfo {
                        name: name.to_string(),
                        version: "0.0.0".into(),
                        dependencies: BTreeMap::new(),
                        require: Vec::new(),
                        load,
                        files: None,
                    },
                    modules: Vec::new(),
                })
            }
        }
    }
}

/// How to treat a save.
#[derive(Debug, Clone, Default)]
pub struct PatchOptions {
    /// Patch a save whose `control.lua` is not a known scenario, treating it as the scenario.
    /// Safe only for scenarios that use `event_handler` and no `script.on_*` of their own.
    pub allow_unknown_scenario: bool,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PatchError {
    #[error(
        "cannot patch the save: its control.lua (SHA-1 {0}) is not a known scenario; set `patch_unknown_scenario` to true in the instance config if it uses event_handler only, or turn `save_patching` off"
    )]
    UnknownScenario(String),
    #[error("cannot patch the save: it has no control.lua")]
    NoControlLua,
    #[error("cannot patch the save: it is not a Factorio save ({0})")]
    NotASave(String),
    #[error("cannot patch the save: clusterio.json is unreadable: {0}")]
    BadPatchInfo(String),
    #[error("Lua module '{module}' has an invalid version '{version}'")]
    BadVersion { module: String, version: String },
    #[error("Lua module '{module}' has an invalid requirement '{requirement}' for '{dependency}'")]
    BadRequirement {
        module: String,
        dependency: String,
        requirement: String,
    },
    #[error("missing dependency '{dependency}' for Lua module '{module}'")]
    MissingDependency { module: String, dependency: String },
    #[error("Lua module '{module}' requires '{dependency}' {requirement}, but {found} is present")]
    VersionMismatch {
        module: String,
        dependency: String,
        requirement: String,
        found: String,
    },
    #[error("Lua module dependency loop: {0}")]
    DependencyLoop(String),
    #[error("two Lua modules are named '{0}'")]
    DuplicateModule(String),
    #[error("Lua module '{module}' has a bad file path '{path}'")]
    BadFilePath { module: String, path: String },
    #[error("patching the save: {0}")]
    Io(String),
}

impl From<std::io::Error> for PatchError {
    fn from(e: std::io::Error) -> Self {
        PatchError::Io(e.to_string())
    }
}

impl From<zip::result::ZipError> for PatchError {
    fn from(e: zip::result::ZipError) -> Self {
        PatchError::Io(e.to_string())
    }
}

/// What a patch did.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchReport {
    pub patch_number: u64,
    /// Module names in load order.
    pub modules: Vec<String>,
    /// The save's level had been reset to the stock scenario (a Factorio update) and was patched
    /// afresh.
    pub level_was_reset: bool,
}

pub fn sha1_hex(bytes: &[u8]) -> String {
    hex::encode(Sha1::digest(bytes))
}

pub fn known_scenario(control_lua: &[u8]) -> Option<&'static KnownScenario> {
    let hash = sha1_hex(control_lua);
    KNOWN_SCENARIOS.iter().find(|k| k.sha1 == hash)
}

/// Orders modules so each comes after what it depends on (stable: otherwise the given order),
/// checking versions and requirements.
pub fn order_modules(modules: &[Module]) -> Result<Vec<&Module>, PatchError> {
    let mut by_name: HashMap<&str, &Module> = HashMap::new();
    for m in modules {
        if by_name.insert(&m.name, m).is_some() {
            return Err(PatchError::DuplicateModule(m.name.clone()));
        }
    }
    for m in modules {
        Version::parse(&m.version).map_err(|_| PatchError::BadVersion {
            module: m.name.clone(),
            version: m.version.clone(),
        })?;
        for (dep, req) in &m.dependencies {
            let parsed = VersionReq::parse(req).map_err(|_| PatchError::BadRequirement {
                module: m.name.clone(),
                dependency: dep.clone(),
                requirement: req.clone(),
            })?;
            let found = by_name
                .get(dep.as_str())
                .ok_or_else(|| PatchError::MissingDependency {
                    module: m.name.clone(),
                    dependency: dep.clone(),
                })?;
            // Checked above; a module's own version always parses here.
            let v = Version::parse(&found.version).map_err(|_| PatchError::BadVersion {
                module: found.name.clone(),
                version: found.version.clone(),
            })?;
            if !parsed.matches(&v) {
                return Err(PatchError::VersionMismatch {
                    module: m.name.clone(),
                    dependency: dep.clone(),
                    requirement: req.clone(),
                    found: found.version.clone(),
                });
            }
        }
    }
    // Depth-first, visiting in the given order; `stack` finds loops.
    fn visit<'a>(
        m: &'a Module,
        by_name: &HashMap<&str, &'a Module>,
        done: &mut BTreeSet<&'a str>,
        stack: &mut Vec<&'a str>,
        out: &mut Vec<&'a Module>,
    ) -> Result<(), PatchError> {
        if done.contains(m.name.as_str()) {
            return Ok(());
        }
        if let Some(pos) = stack.iter().position(|n| *n == m.name) {
            let mut cycle: Vec<&str> = stack[pos..].to_vec();
            cycle.push(&m.name);
            return Err(PatchError::DependencyLoop(cycle.join(" -> ")));
        }
        stack.push(&m.name);
        for dep in m.dependencies.keys() {
            if let Some(d) = by_name.get(dep.as_str()) {
                visit(d, by_name, done, stack, out)?;
            }
        }
        stack.pop();
        done.insert(&m.name);
        out.push(m);
        Ok(())
    }
    let mut out = Vec::with_capacity(modules.len());
    let (mut done, mut stack) = (BTreeSet::new(), Vec::new());
    for m in modules {
        visit(m, &by_name, &mut done, &mut stack, &mut out)?;
    }
    Ok(out)
}

/// Where a module file goes inside the save (relative to its root folder); `None` for a path
/// that could escape (absolute, `..`, backslashes, empty parts).
pub fn module_file_path(module: &str, path: &str) -> Option<String> {
    let parts: Vec<&str> = path.split('/').collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || *p == "." || *p == ".." || p.contains('\\'))
    {
        return None;
    }
    Some(match parts.as_slice() {
        ["locale", lang, file] => format!("locale/{lang}/{module}-{file}"),
        ["locale", file] => {
            let lang = file.strip_suffix(".cfg").unwrap_or(file);
            format!("locale/{lang}/{module}.cfg")
        }
        _ => format!("modules/{module}/{path}"),
    })
}

fn lua_path(prefix: &str, file: &str) -> String {
    let file = file.strip_suffix(".lua").unwrap_or(file);
    format!("{prefix}{file}")
}

/// The generated `control.lua`.
pub fn loader(info: &PatchInfo) -> String {
    let mut s = String::new();
    s.push_str("-- Generated by clustorio: loads the scenario, then the cluster's Lua modules.\n");
    s.push_str("-- Edits to this file are lost: it is written again before every start.\n");
    s.push_str(&format!(
        "clusterio_patch_number = {}\n\n",
        info.patch_number
    ));
    s.push_str("local event_handler = require(\"event_handler\")\n\n");
    s.push_str("-- Scenario modules\n");
    for f in &info.scenario.require {
        s.push_str(&format!("require(\"{}\")\n", lua_path("", f)));
    }
    for f in &info.scenario.load {
        s.push_str(&format!(
            "event_handler.add_lib(require(\"{}\"))\n",
            lua_path("", f)
        ));
    }
    s.push_str("\n-- Clusterio modules\n");
    for m in &info.modules {
        let prefix = format!("modules/{}/", m.name);
        for f in &m.load {
            s.push_str(&format!(
                "event_handler.add_lib(require(\"{}\"))\n",
                lua_path(&prefix, f)
            ));
        }
        for f in &m.require {
            s.push_str(&format!("require(\"{}\")\n", lua_path(&prefix, f)));
        }
    }
    s
}

fn entry_names<R: Read + std::io::Seek>(
    zip: &zip::ZipArchive<R>,
) -> Result<Vec<String>, PatchError> {
    zip.file_names()
        .map(|n| n.map(|n| n.into_owned()).map_err(PatchError::from))
        .collect()
}

/// The single top-level folder of a save.
fn find_root(names: &[String]) -> Result<String, PatchError> {
    names
        .iter()
        .find_map(|n| {
            let (root, rest) = n.split_once('/')?;
            (rest.starts_with("level.dat") && !rest.contains('/')).then(|| root.to_string())
        })
        .ok_or_else(|| PatchError::NotASave("no level.dat in a top-level folder".into()))
}

fn read_entry<R: Read + std::io::Seek>(
    zip: &mut zip::ZipArchive<R>,
    name: &str,
) -> Result<Option<Vec<u8>>, PatchError> {
    let mut file = match zip.by_name(name) {
        Ok(f) => f,
        Err(zip::result::ZipError::FileNotFound) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::with_capacity(file.size() as usize);
    file.read_to_end(&mut out)?;
    Ok(Some(out))
}

/// Reads a save's `clusterio.json`, if it has one.
pub fn read_patch_info(save: &Path) -> Result<Option<PatchInfo>, PatchError> {
    let mut zip = zip::ZipArchive::new(std::fs::File::open(save)?)
        .map_err(|e| PatchError::NotASave(e.to_string()))?;
    let names = entry_names(&zip)?;
    let root = find_root(&names)?;
    match read_entry(&mut zip, &format!("{root}/clusterio.json"))? {
        Some(bytes) => PatchInfo::parse(&String::from_utf8_lossy(&bytes)).map(Some),
        None => Ok(None),
    }
}

/// Patches `save` in place (atomically) with `modules`.
pub fn patch(
    save: &Path,
    modules: &[Module],
    opts: &PatchOptions,
) -> Result<PatchReport, PatchError> {
    let ordered = order_modules(modules)?;
    let mut zip = zip::ZipArchive::new(std::fs::File::open(save)?)
        .map_err(|e| PatchError::NotASave(e.to_string()))?;
    let names = entry_names(&zip)?;
    let root = find_root(&names)?;
    let at = |p: &str| format!("{root}/{p}");

    let control = read_entry(&mut zip, &at("control.lua"))?;
    let old_info = match read_entry(&mut zip, &at("clusterio.json"))? {
        Some(bytes) => Some(PatchInfo::parse(&String::from_utf8_lossy(&bytes))?),
        None => None,
    };
    let known = control.as_deref().and_then(known_scenario);
    // A patched save whose control.lua is a stock scenario again: Factorio replaced the level
    // script (an update's migration). Start over from the new scenario text.
    let level_was_reset = old_info.is_some() && known.is_some();

    // What the new control.lua replaces, and which old files go.
    let mut remove: BTreeSet<String> = BTreeSet::new();
    let mut new_scenario_lua: Option<Vec<u8>> = None;
    let mut info = match (old_info, known) {
        (Some(old), None) => {
            collect_old_files(&old, &names, &root, &mut remove);
            PatchInfo {
                version: PATCH_INFO_VERSION,
                patch_number: old.patch_number,
                scenario: old.scenario,
                modules: Vec::new(),
            }
        }
        (old, Some(k)) => {
            if let Some(old) = &old {
                collect_old_files(old, &names, &root, &mut remove);
            }
            new_scenario_lua = control.clone();
            PatchInfo {
                version: PATCH_INFO_VERSION,
                patch_number: old.map(|o| o.patch_number).unwrap_or(0),
                scenario: scenario_info(k.name, k.version),
                modules: Vec::new(),
            }
        }
        (None, None) => {
            let Some(control) = &control else {
                return Err(PatchError::NoControlLua);
            };
            if !opts.allow_unknown_scenario {
                return Err(PatchError::UnknownScenario(sha1_hex(control)));
            }
            new_scenario_lua = Some(control.clone());
            PatchInfo {
                version: PATCH_INFO_VERSION,
                patch_number: 0,
                scenario: scenario_info("unknown", "0.0.0"),
                modules: Vec::new(),
            }
        }
    };
    info.patch_number += 1;

    // Module files, mapped to their places in the save.
    let mut added: Vec<(String, &[u8])> = Vec::new();
    let mut shims: Vec<(String, Vec<u8>)> = Vec::new();
    for m in &ordered {
        let mut files = Vec::new();
        for (path, bytes) in &m.files {
            let target =
                module_file_path(&m.name, path).ok_or_else(|| PatchError::BadFilePath {
                    module: m.name.clone(),
                    path: path.clone(),
                })?;
            files.push(target.clone());
            added.push((at(&target), bytes.as_slice()));
            if path == "module_exports.lua" {
                let shim = format!("modules/{}.lua", m.name);
                files.push(shim.clone());
                shims.push((
                    at(&shim),
                    format!("return require(\"modules/{}/module_exports\")\n", m.name).into_bytes(),
                ));
            }
        }
        info.modules.push(ModuleInfo {
            name: m.name.clone(),
            version: m.version.clone(),
            dependencies: m.dependencies.clone(),
            require: m.require.clone(),
            load: m.load.clone(),
            files: Some(files),
        });
    }
    let loader_text = loader(&info);
    let info_text =
        serde_json::to_string_pretty(&info).map_err(|e| PatchError::Io(e.to_string()))?;

    // Everything we write replaces an entry of the same name.
    let mut written: BTreeSet<String> = added.iter().map(|(p, _)| p.clone()).collect();
    written.extend(shims.iter().map(|(p, _)| p.clone()));
    written.insert(at("control.lua"));
    written.insert(at("clusterio.json"));
    if new_scenario_lua.is_some() {
        written.insert(at("scenario.lua"));
    }

    let tmp = crate::saves::temp_path(save);
    let result = (|| -> Result<(), PatchError> {
        let out = std::fs::File::create(&tmp)?;
        let mut w = zip::ZipWriter::new(std::io::BufWriter::new(out));
        for i in 0..zip.len() {
            let entry = zip.by_index_raw(i)?;
            let name = entry.name()?.to_string();
            if remove.contains(&name) || written.contains(&name) {
                continue;
            }
            w.raw_copy_file(entry)?;
        }
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        let mut put = |name: &str, bytes: &[u8]| -> Result<(), PatchError> {
            w.start_file(name, opts)?;
            w.write_all(bytes)?;
            Ok(())
        };
        if let Some(s) = &new_scenario_lua {
            put(&at("scenario.lua"), s)?;
        }
        for (name, bytes) in &added {
            put(name, bytes)?;
        }
        for (name, bytes) in &shims {
            put(name, bytes)?;
        }
        put(&at("control.lua"), loader_text.as_bytes())?;
        put(&at("clusterio.json"), info_text.as_bytes())?;
        let mut inner = w.finish()?;
        inner.flush()?;
        Ok(())
    })();
    if let Err(e) = result.and_then(|()| crate::saves::commit(&tmp, save).map_err(Into::into)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(PatchReport {
        patch_number: info.patch_number,
        modules: info.modules.iter().map(|m| m.name.clone()).collect(),
        level_was_reset,
    })
}

fn scenario_info(name: &str, version: &str) -> ModuleInfo {
    ModuleInfo {
        name: name.into(),
        version: version.into(),
        dependencies: BTreeMap::new(),
        require: vec!["scenario".into()],
        load: Vec::new(),
        files: None,
    }
}

/// The files a previous patch added: exactly those listed (v1), or all of `modules/` (v0).
fn collect_old_files(old: &PatchInfo, names: &[String], root: &str, out: &mut BTreeSet<String>) {
    if old.version == 0 {
        let prefix = format!("{root}/modules/");
        out.extend(names.iter().filter(|n| n.starts_with(&prefix)).cloned());
        return;
    }
    for m in &old.modules {
        for f in m.files.iter().flatten() {
            let name = format!("{root}/{f}");
            if !names.contains(&name) {
                tracing::warn!(file = %name, module = %m.name, "a file of the previous patch is missing from the save");
            }
            out.insert(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FREEPLAY_2_0: &str = "local handler = require(\"event_handler\")\nhandler.add_lib(require(\"freeplay\"))\n\nif script.active_mods[\"space-age\"] then\n  handler.add_lib(require(\"space-finish-script\"))\nelse\n  handler.add_lib(require(\"silo-script\"))\nend\n";
    const FREEPLAY_0_17: &str = "local handler = require(\"event_handler\")\nhandler.add_lib(require(\"freeplay\"))\nhandler.add_lib(require(\"silo-script\"))\n";

    fn module(name: &str, deps: &[(&str, &str)], files: &[(&str, &str)]) -> Module {
        Module {
            name: name.into(),
            version: "1.0.0".into(),
            dependencies: deps
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            load: files
                .iter()
                .filter(|(p, _)| p.ends_with(".lua"))
                .map(|(p, _)| p.to_string())
                .collect(),
            require: Vec::new(),
            files: files
                .iter()
                .map(|(p, c)| (p.to_string(), c.as_bytes().to_vec()))
                .collect(),
        }
    }

    /// A save as Factorio writes one: level.dat* stored (uncompressed), scripts deflated.
    fn write_save(path: &Path, control: Option<&str>, extra: &[(&str, &str)]) {
        let mut w = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
        let stored = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        let deflated = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        w.start_file("world/level.dat0", stored).unwrap();
        w.write_all(&[7u8; 3000]).unwrap();
        w.start_file("world/level.datmetadata", stored).unwrap();
        w.write_all(b"meta").unwrap();
        w.start_file("world/script.dat", deflated).unwrap();
        w.write_all(b"script state").unwrap();
        if let Some(c) = control {
            w.start_file("world/control.lua", deflated).unwrap();
            w.write_all(c.as_bytes()).unwrap();
        }
        for (n, c) in extra {
            w.start_file(format!("world/{n}"), deflated).unwrap();
            w.write_all(c.as_bytes()).unwrap();
        }
        w.finish().unwrap();
    }

    fn entries(path: &Path) -> BTreeMap<String, Vec<u8>> {
        let mut zip = zip::ZipArchive::new(std::fs::File::open(path).unwrap()).unwrap();
        let mut out = BTreeMap::new();
        for i in 0..zip.len() {
            let mut f = zip.by_index(i).unwrap();
            let mut b = Vec::new();
            f.read_to_end(&mut b).unwrap();
            out.insert(f.name().unwrap().to_string(), b);
        }
        out
    }

    fn raw_entries(path: &Path) -> BTreeMap<String, (u32, u64, zip::CompressionMethod)> {
        let mut zip = zip::ZipArchive::new(std::fs::File::open(path).unwrap()).unwrap();
        (0..zip.len())
            .map(|i| {
                let f = zip.by_index_raw(i).unwrap();
                (
                    f.name().unwrap().to_string(),
                    (f.crc32(), f.compressed_size(), f.compression()),
                )
            })
            .collect()
    }

    fn text(e: &BTreeMap<String, Vec<u8>>, name: &str) -> String {
        String::from_utf8(e[name].clone()).unwrap()
    }

    #[test]
    fn known_scenario_hashes() {
        assert_eq!(
            known_scenario(FREEPLAY_2_0.as_bytes()).map(|k| k.version),
            Some("2.0.0")
        );
        assert_eq!(
            known_scenario(FREEPLAY_0_17.as_bytes()).map(|k| k.version),
            Some("0.17.63")
        );
        assert!(known_scenario(b"-- my scenario\n").is_none());
        // One byte of difference is another scenario.
        assert!(known_scenario(FREEPLAY_2_0.trim_end().as_bytes()).is_none());
    }

    #[test]
    fn golden_loader() {
        let info = PatchInfo {
            version: 1,
            patch_number: 3,
            scenario: scenario_info("freeplay", "2.0.0"),
            modules: vec![
                ModuleInfo {
                    name: "clusterio".into(),
                    version: "0.0.0".into(),
                    dependencies: BTreeMap::new(),
                    require: vec![],
                    load: vec!["impl.lua".into(), "compat.lua".into()],
                    files: None,
                },
                ModuleInfo {
                    name: "research_sync".into(),
                    version: "0.1.0".into(),
                    dependencies: BTreeMap::new(),
                    require: vec![],
                    load: vec!["sync.lua".into()],
                    files: None,
                },
                ModuleInfo {
                    name: "statistics_exporter".into(),
                    version: "0.1.0".into(),
                    dependencies: BTreeMap::new(),
                    require: vec!["export.lua".into()],
                    load: vec![],
                    files: None,
                },
            ],
        };
        assert_eq!(
            loader(&info),
            "-- Generated by clustorio: loads the scenario, then the cluster's Lua modules.\n\
             -- Edits to this file are lost: it is written again before every start.\n\
             clusterio_patch_number = 3\n\
             \n\
             local event_handler = require(\"event_handler\")\n\
             \n\
             -- Scenario modules\n\
             require(\"scenario\")\n\
             \n\
             -- Clusterio modules\n\
             event_handler.add_lib(require(\"modules/clusterio/impl\"))\n\
             event_handler.add_lib(require(\"modules/clusterio/compat\"))\n\
             event_handler.add_lib(require(\"modules/research_sync/sync\"))\n\
             require(\"modules/statistics_exporter/export\")\n"
        );
    }

    #[test]
    fn patch_info_round_trip_and_v0() {
        let info = PatchInfo {
            version: 1,
            patch_number: 2,
            scenario: scenario_info("freeplay", "2.0.0"),
            modules: vec![ModuleInfo {
                name: "m".into(),
                version: "1.2.3".into(),
                dependencies: [("clusterio".to_string(), "*".to_string())].into(),
                require: vec![],
                load: vec!["a.lua".into()],
                files: Some(vec!["modules/m/a.lua".into()]),
            }],
        };
        let text = serde_json::to_string_pretty(&info).unwrap();
        assert_eq!(PatchInfo::parse(&text).unwrap(), info);
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["version"], 1);
        assert_eq!(v["modules"][0]["files"][0], "modules/m/a.lua");

        let v0 = PatchInfo::parse(r#"{"scenario":{"name":"pvp","modules":["a.lua"]}}"#).unwrap();
        assert_eq!(v0.version, 0);
        assert_eq!(v0.patch_number, 0);
        assert_eq!(v0.scenario.load, vec!["a.lua".to_string()]);
        assert!(matches!(
            PatchInfo::parse(r#"{"version":2}"#),
            Err(PatchError::BadPatchInfo(_))
        ));
        assert!(matches!(
            PatchInfo::parse("not json"),
            Err(PatchError::BadPatchInfo(_))
        ));
    }

    #[test]
    fn patch_a_fresh_freeplay_save() {
        let dir = tempfile::tempdir().unwrap();
        let save = dir.path().join("world.zip");
        write_save(&save, Some(FREEPLAY_2_0), &[]);
        let before = raw_entries(&save);
        let mods = [
            module(
                "clusterio",
                &[],
                &[("impl.lua", "-- impl"), ("locale/en.cfg", "[a]")],
            ),
            module(
                "m",
                &[("clusterio", "*")],
                &[
                    ("a.lua", "-- a"),
                    ("locale/de/strings.cfg", "[b]"),
                    ("module_exports.lua", "return {}"),
                ],
            ),
        ];
        let report = patch(&save, &mods, &PatchOptions::default()).unwrap();
        assert_eq!(report.patch_number, 1);
        assert_eq!(report.modules, vec!["clusterio", "m"]);
        assert!(!report.level_was_reset);
        let e = entries(&save);
        assert_eq!(text(&e, "world/scenario.lua"), FREEPLAY_2_0);
        assert_eq!(text(&e, "world/modules/clusterio/impl.lua"), "-- impl");
        assert_eq!(text(&e, "world/locale/en/clusterio.cfg"), "[a]");
        assert_eq!(text(&e, "world/locale/de/m-strings.cfg"), "[b]");
        assert_eq!(text(&e, "world/modules/m/a.lua"), "-- a");
        assert_eq!(
            text(&e, "world/modules/m.lua"),
            "return require(\"modules/m/module_exports\")\n"
        );
        let control = text(&e, "world/control.lua");
        assert!(control.contains("clusterio_patch_number = 1\n"));
        assert!(control.contains("require(\"scenario\")\n"));
        let info = PatchInfo::parse(&text(&e, "world/clusterio.json")).unwrap();
        assert_eq!(info.scenario.name, "freeplay");
        assert_eq!(info.scenario.version, "2.0.0");
        // level.dat* and script.dat are the very same bytes, stored as before.
        let after = raw_entries(&save);
        for name in [
            "world/level.dat0",
            "world/level.datmetadata",
            "world/script.dat",
        ] {
            assert_eq!(before[name], after[name], "{name} changed");
        }
        assert_eq!(after["world/level.dat0"].2, zip::CompressionMethod::Stored);
        assert_eq!(e["world/level.dat0"], vec![7u8; 3000]);
    }

    #[test]
    fn repatch_removes_exactly_the_old_module_files() {
        let dir = tempfile::tempdir().unwrap();
        let save = dir.path().join("world.zip");
        write_save(&save, Some(FREEPLAY_2_0), &[("modules/keep/x.lua", "mine")]);
        let first = [
            module("clusterio", &[], &[("impl.lua", "v1")]),
            module("gone", &[], &[("g.lua", "bye"), ("locale/en.cfg", "[g]")]),
        ];
        patch(&save, &first, &PatchOptions::default()).unwrap();
        let second = [module("clusterio", &[], &[("impl.lua", "v2")])];
        let report = patch(&save, &second, &PatchOptions::default()).unwrap();
        assert_eq!(report.patch_number, 2);
        let e = entries(&save);
        assert_eq!(text(&e, "world/modules/clusterio/impl.lua"), "v2");
        assert!(!e.contains_key("world/modules/gone/g.lua"));
        assert!(!e.contains_key("world/locale/en/gone.cfg"));
        // Not ours: kept. The scenario stays the original freeplay.
        assert_eq!(text(&e, "world/modules/keep/x.lua"), "mine");
        assert_eq!(text(&e, "world/scenario.lua"), FREEPLAY_2_0);
        assert!(!text(&e, "world/control.lua").contains("gone"));
        // No duplicate entries.
        let mut zip = zip::ZipArchive::new(std::fs::File::open(&save).unwrap()).unwrap();
        assert_eq!(zip.len(), e.len());
        assert!(zip.by_name("world/control.lua").is_ok());
    }

    #[test]
    fn repatch_tolerates_missing_old_files() {
        let dir = tempfile::tempdir().unwrap();
        let save = dir.path().join("world.zip");
        let info = r#"{"version":1,"patch_number":4,"scenario":{"name":"freeplay","version":"2.0.0","require":["scenario"]},"modules":[{"name":"old","version":"1.0.0","load":["a.lua"],"files":["modules/old/a.lua","modules/old/vanished.lua"]}]}"#;
        write_save(
            &save,
            Some("-- loader"),
            &[
                ("clusterio.json", info),
                ("scenario.lua", FREEPLAY_2_0),
                ("modules/old/a.lua", "a"),
            ],
        );
        let report = patch(
            &save,
            &[module("clusterio", &[], &[("impl.lua", "i")])],
            &PatchOptions::default(),
        )
        .unwrap();
        assert_eq!(report.patch_number, 5);
        let e = entries(&save);
        assert!(!e.contains_key("world/modules/old/a.lua"));
        assert_eq!(text(&e, "world/scenario.lua"), FREEPLAY_2_0);
    }

    #[test]
    fn a_level_reset_by_a_factorio_update_is_patched_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let save = dir.path().join("world.zip");
        write_save(&save, Some(FREEPLAY_2_0), &[]);
        let mods = [module("clusterio", &[], &[("impl.lua", "i")])];
        patch(&save, &mods, &PatchOptions::default()).unwrap();
        patch(&save, &mods, &PatchOptions::default()).unwrap();
        // The update put the stock control.lua back and dropped the modules, kept clusterio.json.
        let e = entries(&save);
        write_save(
            &save,
            Some(FREEPLAY_2_0),
            &[("clusterio.json", &text(&e, "world/clusterio.json"))],
        );
        let report = patch(&save, &mods, &PatchOptions::default()).unwrap();
        assert!(report.level_was_reset);
        assert_eq!(report.patch_number, 3);
        let e = entries(&save);
        assert_eq!(text(&e, "world/modules/clusterio/impl.lua"), "i");
        assert_eq!(text(&e, "world/scenario.lua"), FREEPLAY_2_0);
        assert!(text(&e, "world/control.lua").contains("modules/clusterio/impl"));
    }

    #[test]
    fn unknown_scenario_is_refused_with_its_hash_unless_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let save = dir.path().join("world.zip");
        write_save(&save, Some("-- custom scenario\n"), &[]);
        let before = std::fs::read(&save).unwrap();
        let mods = [module("clusterio", &[], &[("impl.lua", "i")])];
        let err = patch(&save, &mods, &PatchOptions::default()).unwrap_err();
        assert_eq!(
            err,
            PatchError::UnknownScenario(sha1_hex(b"-- custom scenario\n"))
        );
        let msg = err.to_string();
        assert!(msg.contains(&sha1_hex(b"-- custom scenario\n")), "{msg}");
        assert!(msg.contains("patch_unknown_scenario"), "{msg}");
        assert_eq!(
            std::fs::read(&save).unwrap(),
            before,
            "a refused save was changed"
        );

        let allow = PatchOptions {
            allow_unknown_scenario: true,
        };
        patch(&save, &mods, &allow).unwrap();
        assert_eq!(
            text(&entries(&save), "world/scenario.lua"),
            "-- custom scenario\n"
        );

        write_save(&save, None, &[]);
        assert_eq!(
            patch(&save, &mods, &PatchOptions::default()).unwrap_err(),
            PatchError::NoControlLua
        );
    }

    #[test]
    fn dependency_order_missing_and_loops() {
        let a = module("a", &[("b", "*")], &[]);
        let b = module("b", &[("c", ">=1.0")], &[]);
        let c = module("c", &[], &[]);
        let list = [a.clone(), b.clone(), c.clone()];
        let order: Vec<&str> = order_modules(&list)
            .unwrap()
            .iter()
            .map(|m| m.name.as_str())
            .collect();
        assert_eq!(order, vec!["c", "b", "a"]);
        // Independent modules keep their order.
        let x = module("x", &[], &[]);
        let order: Vec<String> = order_modules(&[x.clone(), c.clone()])
            .unwrap()
            .iter()
            .map(|m| m.name.clone())
            .collect();
        assert_eq!(order, vec!["x", "c"]);

        assert_eq!(
            order_modules(&[a.clone(), c.clone()])
                .unwrap_err()
                .to_string(),
            "missing dependency 'b' for Lua module 'a'"
        );
        let loop_a = module("a", &[("b", "*")], &[]);
        let loop_b = module("b", &[("a", "*")], &[]);
        assert_eq!(
            order_modules(&[loop_a, loop_b]).unwrap_err(),
            PatchError::DependencyLoop("a -> b -> a".into())
        );
        let needs_new = module("n", &[("c", ">=2")], &[]);
        assert!(matches!(
            order_modules(&[needs_new, c.clone()]),
            Err(PatchError::VersionMismatch { .. })
        ));
        let mut bad = c.clone();
        bad.version = "one".into();
        assert!(matches!(
            order_modules(&[bad]),
            Err(PatchError::BadVersion { .. })
        ));
        assert!(matches!(
            order_modules(&[c.clone(), c]),
            Err(PatchError::DuplicateModule(_))
        ));
    }

    #[test]
    fn module_paths_cannot_escape() {
        assert_eq!(
            module_file_path("m", "a/b.lua").as_deref(),
            Some("modules/m/a/b.lua")
        );
        for bad in [
            "../x.lua", "/abs.lua", "a//b.lua", "a\\b.lua", "./x.lua", "",
        ] {
            assert_eq!(module_file_path("m", bad), None, "{bad:?}");
        }
        let dir = tempfile::tempdir().unwrap();
        let save = dir.path().join("world.zip");
        write_save(&save, Some(FREEPLAY_2_0), &[]);
        let evil = module("m", &[], &[("../../etc.lua", "x")]);
        assert!(matches!(
            patch(&save, &[evil], &PatchOptions::default()),
            Err(PatchError::BadFilePath { .. })
        ));
    }

    #[test]
    fn a_failed_write_leaves_the_old_save() {
        let dir = tempfile::tempdir().unwrap();
        let save = dir.path().join("world.zip");
        write_save(&save, Some(FREEPLAY_2_0), &[]);
        let before = std::fs::read(&save).unwrap();
        // The temporary file cannot be created: a directory is in its place.
        std::fs::create_dir(crate::saves::temp_path(&save)).unwrap();
        let mods = [module("clusterio", &[], &[("impl.lua", "i")])];
        assert!(matches!(
            patch(&save, &mods, &PatchOptions::default()),
            Err(PatchError::Io(_))
        ));
        assert_eq!(std::fs::read(&save).unwrap(), before);
        // A crash mid-write leaves only a partial temp file beside an intact save.
        std::fs::remove_dir(crate::saves::temp_path(&save)).unwrap();
        std::fs::write(crate::saves::temp_path(&save), b"PK\x03\x04 half").unwrap();
        assert_eq!(std::fs::read(&save).unwrap(), before);
        patch(&save, &mods, &PatchOptions::default()).unwrap();
        assert!(entries(&save).contains_key("world/clusterio.json"));
    }

    #[test]
    fn not_a_save() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.zip");
        std::fs::write(&p, b"nope").unwrap();
        assert!(matches!(
            patch(&p, &[], &PatchOptions::default()),
            Err(PatchError::NotASave(_))
        ));
    }
}
