//! The one set of checks for plugins from outside the binary — an external plugin's declaration
//! and a Lua-only plugin's `plugin.json` — so both obey the same rules (docs/plugins.md): the
//! name, the version, config fields. Lua file names, sizes and `load`/`require` are checked by
//! one function too, [`crate::controller::plugin_lua::bundle_from_files`], for every bundle.

use crate::config::schema::{Default, Field, Kind};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Names no plugin from outside may take: the core's prefixes and the host ⇄ controller glue.
pub const RESERVED: &[&str] = &["core", "external_plugin", "clusterio", "plugin", "lua"];
/// Longest plugin name.
pub const MAX_NAME: usize = 40;
/// Longest config field key (after `<plugin>.`).
pub const MAX_FIELD_KEY: usize = 64;

/// The name's syntax and the reserved names: 2–40 of `a-z 0-9 _`, starting with a letter.
/// (It names the Lua module, the IPC channels `<name>:…`, the Lua callbacks `<name>_on_…`,
/// the permissions and config fields `<name>.…` and the key–value namespace.)
pub fn name_syntax(name: &str) -> Result<(), String> {
    let ok = (2..=MAX_NAME).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !ok {
        return Err(format!(
            "plugin name '{name}' is not valid: use 2–{MAX_NAME} lower-case letters, digits and _, starting with a letter"
        ));
    }
    if RESERVED.contains(&name) {
        return Err(format!(
            "plugin name '{name}' is reserved for clustorio's core"
        ));
    }
    Ok(())
}

/// [`name_syntax`], and not a built-in plugin's name.
pub fn name(name: &str) -> Result<(), String> {
    name_syntax(name)?;
    if crate::plugins::find(name).is_some() {
        return Err(format!(
            "plugin name '{name}' is taken: it is the name of a built-in plugin; choose another name"
        ));
    }
    Ok(())
}

/// A semantic version (`1.0.0`): the save patcher lists it with the plugin's Lua module.
pub fn version(version: &str) -> Result<(), String> {
    if version.len() > 40 || semver::Version::parse(version).is_err() {
        return Err(format!(
            "version '{version}' is not a semantic version such as 1.0.0 (at most 40 characters)"
        ));
    }
    Ok(())
}

/// A config field a plugin declares, typed as the built-in schema types them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldDecl {
    /// `<plugin>.<key>`.
    pub name: String,
    /// `bool`, `integer`, `number` or `string`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub default: Value,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub min: Option<f64>,
    #[serde(default)]
    pub max: Option<f64>,
}

/// Checks a declared field of `plugin` and makes the schema field (leaking its strings: schema
/// fields are `'static`; callers make one per declaration that changed).
pub fn config_field(plugin: &str, f: &FieldDecl) -> Result<Field, String> {
    let own = format!("{plugin}.");
    let key_ok = f.name.strip_prefix(&own).is_some_and(|key| {
        (1..=MAX_FIELD_KEY).contains(&key.len())
            && key
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    });
    if !key_ok {
        return Err(format!(
            "config field \"{}\" must be named {own}<key>, the key 1–{MAX_FIELD_KEY} of a-z, 0-9 and _",
            f.name
        ));
    }
    field_of(f).map_err(|m| format!("config field {}: {m}", f.name))
}

fn field_of(f: &FieldDecl) -> Result<Field, String> {
    let leak = |s: &str| -> &'static str { Box::leak(s.to_string().into_boxed_str()) };
    if f.title.len() > 200 || f.description.len() > 1000 {
        return Err("title or description too long".into());
    }
    if let (Some(min), Some(max)) = (f.min, f.max)
        && (min > max || !min.is_finite() || !max.is_finite())
    {
        return Err("min must be a number not above max".into());
    }
    let (kind, default) = match f.kind.as_str() {
        "bool" => match &f.default {
            Value::Null => (Kind::Bool, Default::Bool(false)),
            Value::Bool(b) => (Kind::Bool, Default::Bool(*b)),
            _ => return Err("the default of a bool must be true or false".into()),
        },
        "integer" => {
            let min = f.min.map(|m| m as i64).unwrap_or(i64::MIN);
            let max = f.max.map(|m| m as i64).unwrap_or(i64::MAX);
            match &f.default {
                Value::Null => (Kind::Integer { min, max }, Default::Null),
                v => match v.as_i64() {
                    Some(n) if (min..=max).contains(&n) => {
                        (Kind::Integer { min, max }, Default::Int(n))
                    }
                    _ => return Err("the default must be an integer within min..max".into()),
                },
            }
        }
        "number" => {
            let min = f.min.unwrap_or(f64::MIN);
            let max = f.max.unwrap_or(f64::MAX);
            match &f.default {
                Value::Null => (Kind::Number { min, max }, Default::Null),
                v => match v.as_f64() {
                    Some(n) if n >= min && n <= max => (Kind::Number { min, max }, Default::Num(n)),
                    _ => return Err("the default must be a number within min..max".into()),
                },
            }
        }
        "string" => {
            let max_len = f.max.map(|m| m as usize).unwrap_or(1000).min(100_000);
            let kind = Kind::Text {
                max_len,
                rule: None,
            };
            match &f.default {
                Value::Null => (kind, Default::Str("")),
                Value::String(s) if s.chars().count() <= max_len => (kind, Default::Str(leak(s))),
                _ => return Err("the default must be a string of at most max characters".into()),
            }
        }
        other => {
            return Err(format!(
                "unknown type \"{other}\"; use bool, integer, number or string"
            ));
        }
    };
    let title = if f.title.is_empty() {
        &f.name
    } else {
        &f.title
    };
    Ok(Field::new(leak(&f.name), kind, default)
        .title(leak(title))
        .about(leak(&f.description))
        .section("Plugins"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field(v: Value) -> Result<Field, String> {
        config_field("demo", &serde_json::from_value(v).unwrap())
    }

    #[test]
    fn names() {
        let long = "a".repeat(41);
        for ok in ["announce_2", "discord_bridge", "ab"] {
            assert!(name(ok).is_ok(), "{ok}");
        }
        for (bad, says) in [
            ("", "not valid"),
            ("a", "not valid"),
            ("2x", "not valid"),
            ("Caps", "not valid"),
            ("a-b", "not valid"),
            ("a.b", "not valid"),
            (long.as_str(), "not valid"),
            ("clusterio", "reserved"),
            ("core", "reserved"),
            ("global_chat", "built-in plugin"),
        ] {
            let e = name(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn versions() {
        assert!(version("1.0.0").is_ok());
        assert!(version("0.1.0-beta.2").is_ok());
        for bad in ["1", "soon", "", "1.0"] {
            assert!(
                version(bad).unwrap_err().contains("semantic version"),
                "{bad}"
            );
        }
    }

    #[test]
    fn fields() {
        let f = field(
            json!({"name": "demo.size", "type": "integer", "min": 1, "max": 9, "default": 3}),
        )
        .unwrap();
        assert_eq!(f.name, "demo.size");
        for (v, says) in [
            (json!({"name": "other.x", "type": "bool"}), "demo.<key>"),
            (json!({"name": "demo.", "type": "bool"}), "demo.<key>"),
            (json!({"name": "demo.A", "type": "bool"}), "demo.<key>"),
            (json!({"name": "demo.x", "type": "blob"}), "unknown type"),
            (
                json!({"name": "demo.x", "type": "bool", "default": 1}),
                "true or false",
            ),
            (
                json!({"name": "demo.x", "type": "integer", "min": 5, "max": 1}),
                "not above max",
            ),
            (
                json!({"name": "demo.x", "type": "string", "max": 2, "default": "long"}),
                "at most max",
            ),
        ] {
            let e = field(v.clone()).unwrap_err();
            assert!(e.contains(says), "{v}: {e}");
        }
    }
}
