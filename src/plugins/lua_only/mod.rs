//! Lua-only plugins: a zip with a `plugin.json` and Lua files, uploaded to the controller
//! (`POST /api/v1/plugins/lua`, `clustorio ctl plugin upload FILE.zip`), patched into the saves
//! of the instances that enable it, with no server-side code. The host and controller carry its
//! reserved channels generically: `<name>:broadcast` and `<name>:kv_get|kv_set|kv_delete`
//! (`docs/plugins.md`, Lua-only plugins).
//!
//! This module reads and checks an upload; `controller::plugin_lua` stores it.

use crate::config::PluginSettings;
use crate::config::schema::{Default, Field, Kind as FieldKind, Rule};
use crate::controller::plugin_lua::{self, LuaBundle};
use crate::plugins::checks;
use serde::{Deserialize, Serialize};
use std::io::Read;

/// Largest zip accepted.
pub const MAX_ZIP_BYTES: usize = 8 << 20;
/// Largest `plugin.json`.
pub const MAX_MANIFEST_BYTES: usize = 64 * 1024;
/// Most instance config fields one plugin declares.
pub const MAX_CONFIG_FIELDS: usize = 64;

fn plugin_names(s: &str) -> bool {
    plugin_lua::check_plugin_name(s).is_ok()
}

/// The instance switch: Lua-only plugins named here do not run for the instance (all others do,
/// like a built-in plugin's `<name>.load_plugin` that defaults to true).
pub const SETTINGS: PluginSettings = PluginSettings {
    instance: &[Field::new(
        "lua_plugins.disabled",
        FieldKind::List {
            rule: Some(Rule {
                check: plugin_names,
                says: "a plugin name (a-z, 0-9, '_', starting with a letter)",
            }),
        },
        Default::List(&[]),
    )
    .title("Lua plugins left out")
    .about(
        "Names of uploaded Lua-only (and external) plugins whose Lua this instance does not load.",
    )
    .section("Plugins")
    .restart()],
    ..PluginSettings::NONE
};

/// One instance config field a plugin declares (listed with the plugin; see docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigField {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub default: serde_json::Value,
    #[serde(default)]
    pub description: String,
}

/// `plugin.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub description: String,
    /// Files loaded as event_handler libraries, in order.
    #[serde(default)]
    pub load: Vec<String>,
    /// Files required for their globals, in order.
    #[serde(default)]
    pub require: Vec<String>,
    #[serde(default)]
    pub instance_config: Vec<ConfigField>,
}

/// Reads an uploaded zip: `plugin.json` and `.lua` files, at the zip's root or under one
/// top-level folder. Every problem is described; nothing is half-read.
pub fn read_zip(bytes: &[u8]) -> Result<(Manifest, LuaBundle), String> {
    if bytes.len() > MAX_ZIP_BYTES {
        return Err(format!(
            "the upload is {} bytes; Lua-only plugins are limited to {MAX_ZIP_BYTES} bytes",
            bytes.len()
        ));
    }
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| format!("the upload is not a readable zip ({e})"))?;
    let names: Vec<String> = zip
        .file_names()
        .map(|n| n.map(|c| c.into_owned()))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("the zip has an unreadable file name ({e})"))?;
    let root = if names.iter().any(|n| n == "plugin.json") {
        String::new()
    } else {
        let top: Vec<&String> = names
            .iter()
            .filter(|n| n.ends_with("/plugin.json"))
            .collect();
        match top.as_slice() {
            [one] if one.matches('/').count() == 1 => {
                one.trim_end_matches("plugin.json").to_string()
            }
            _ => {
                return Err(
                    "the zip has no plugin.json (at its root or in one top-level folder)".into(),
                );
            }
        }
    };
    let mut manifest_text: Option<Vec<u8>> = None;
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let mut total = 0usize;
    for i in 0..zip.len() {
        let mut entry = zip
            .by_index(i)
            .map_err(|e| format!("reading the zip: {e}"))?;
        let raw = entry
            .name()
            .map_err(|e| format!("the zip has an unreadable file name ({e})"))?
            .into_owned();
        if entry.is_dir() {
            continue;
        }
        let Some(path) = raw.strip_prefix(&root) else {
            return Err(format!(
                "{raw} is outside the plugin's folder {root}; keep every file in one folder"
            ));
        };
        let limit = if path == "plugin.json" {
            MAX_MANIFEST_BYTES
        } else {
            plugin_lua::check_path(path)?;
            plugin_lua::MAX_FILE_BYTES
        };
        let mut data = Vec::new();
        (&mut entry)
            .take(limit as u64 + 1)
            .read_to_end(&mut data)
            .map_err(|e| format!("reading {raw} from the zip: {e}"))?;
        if data.len() > limit {
            return Err(format!("{path} is larger than {limit} bytes"));
        }
        total += data.len();
        if total > plugin_lua::MAX_BUNDLE_BYTES {
            return Err(format!(
                "the files come to more than {} bytes",
                plugin_lua::MAX_BUNDLE_BYTES
            ));
        }
        if path == "plugin.json" {
            manifest_text = Some(data);
        } else {
            files.push((path.to_string(), data));
        }
    }
    let text = manifest_text.ok_or("the zip has no plugin.json")?;
    let manifest: Manifest =
        serde_json::from_slice(&text).map_err(|e| format!("plugin.json is not valid: {e}"))?;
    check_manifest(&manifest)?;
    let bundle = plugin_lua::bundle_from_files(
        &manifest.name,
        &manifest.version,
        manifest.load.clone(),
        manifest.require.clone(),
        files,
    )
    .map_err(|e| format!("plugin.json or its files: {e}"))?;
    Ok((manifest, bundle))
}

/// The checks beyond the shape, the same as an external plugin's declaration gets
/// ([`crate::plugins::checks`]): the name (and that no built-in plugin has it), the version,
/// config fields. File names and sizes are checked with the bundle.
pub fn check_manifest(m: &Manifest) -> Result<(), String> {
    checks::name(&m.name)?;
    checks::version(&m.version)?;
    if m.instance_config.len() > MAX_CONFIG_FIELDS {
        return Err(format!(
            "plugin.json declares {} instance config fields; at most {MAX_CONFIG_FIELDS}",
            m.instance_config.len()
        ));
    }
    for f in &m.instance_config {
        checks::config_field(&m.name, &f.as_declared(&m.name))
            .map_err(|e| format!("instance {e}"))?;
    }
    Ok(())
}

impl ConfigField {
    /// As an external plugin declares it: named `<plugin>.<name>`; `text` is `string`.
    pub fn as_declared(&self, plugin: &str) -> checks::FieldDecl {
        checks::FieldDecl {
            name: format!("{plugin}.{}", self.name),
            kind: if self.kind == "text" {
                "string".into()
            } else {
                self.kind.clone()
            },
            default: self.default.clone(),
            title: String::new(),
            description: self.description.clone(),
            min: None,
            max: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        for (name, data) in entries {
            w.start_file(*name, zip::write::SimpleFileOptions::default())
                .unwrap();
            w.write_all(data).unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    const MANIFEST: &[u8] = br#"{"name":"demo","version":"1.0.0","load":["main.lua"]}"#;

    #[test]
    fn reads_a_plugin_at_the_root_or_in_one_folder() {
        let (m, b) = read_zip(&zip_of(&[
            ("plugin.json", MANIFEST),
            ("main.lua", b"return {}"),
        ]))
        .unwrap();
        assert_eq!(m.name, "demo");
        assert_eq!(b.files["main.lua"], "return {}");
        let (_, b) = read_zip(&zip_of(&[
            ("demo/plugin.json", MANIFEST),
            ("demo/main.lua", b"return {}"),
            ("demo/lib/util.lua", b"return 1"),
        ]))
        .unwrap();
        assert_eq!(b.files.len(), 2);
    }

    #[test]
    fn bad_uploads_are_described() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"not a zip".to_vec(), "not a readable zip"),
            (zip_of(&[("main.lua", b"")]), "no plugin.json"),
            (
                zip_of(&[("plugin.json", b"{nope"), ("main.lua", b"")]),
                "plugin.json is not valid",
            ),
            (
                zip_of(&[
                    (
                        "plugin.json",
                        br#"{"name":"demo","version":"1.0.0","load":["main.lua"],"extra":1}"#,
                    ),
                    ("main.lua", b""),
                ]),
                "unknown field",
            ),
            (
                zip_of(&[("plugin.json", MANIFEST), ("../evil.lua", b"")]),
                "'..'",
            ),
            (
                zip_of(&[("plugin.json", MANIFEST), ("main.lua", b""), ("x.sh", b"")]),
                "not a .lua",
            ),
            (
                zip_of(&[
                    (
                        "plugin.json",
                        br#"{"name":"ping","version":"1.0.0","load":["main.lua"]}"#,
                    ),
                    ("main.lua", b""),
                ]),
                "built-in plugin",
            ),
            (
                zip_of(&[
                    (
                        "plugin.json",
                        br#"{"name":"demo","version":"1.0.0","load":["gone.lua"]}"#,
                    ),
                    ("main.lua", b""),
                ]),
                "gone.lua is listed",
            ),
            (
                zip_of(&[
                    ("plugin.json", MANIFEST),
                    ("main.lua", &vec![b'-'; plugin_lua::MAX_FILE_BYTES + 1]),
                ]),
                "larger than",
            ),
        ];
        for (bytes, says) in cases {
            let e = read_zip(&bytes).unwrap_err();
            assert!(e.contains(says), "wanted {says:?} in {e:?}");
        }
    }
}
