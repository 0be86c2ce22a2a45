//! A new map's settings: the seed, `map-gen-settings.json` and `map-settings.json` as Factorio's
//! `--create` reads them (`--map-gen-settings FILE`, `--map-settings FILE`, `--map-gen-seed N`,
//! `--preset NAME`; research/factorio.md §1.2, §5.4). Checked here so a typo is a clear error
//! before Factorio runs, and written into the instance directory beside `server-settings.json`.

use super::factorio::CreateArgs;
use crate::saves;
use serde_json::{Map, Value};
use std::path::Path;

pub const MAP_GEN_SETTINGS_FILE: &str = "map-gen-settings.json";
pub const MAP_SETTINGS_FILE: &str = "map-settings.json";

/// Factorio's built-in map-gen presets.
pub const PRESETS: &[&str] = &[
    "default",
    "rich-resources",
    "marathon",
    "death-world",
    "death-world-marathon",
    "rail-world",
    "ribbon-world",
    "island",
];

/// Resources and features with `{frequency, size, richness}` in `autoplace_controls`.
pub const AUTOPLACE_CONTROLS: &[&str] = &[
    "coal",
    "stone",
    "copper-ore",
    "iron-ore",
    "uranium-ore",
    "crude-oil",
    "water",
    "trees",
    "enemy-base",
];

#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewMap {
    pub seed: Option<u32>,
    pub map_gen_settings: Option<Map<String, Value>>,
    pub map_settings: Option<Map<String, Value>>,
    pub preset: Option<String>,
    /// `[MOD/]NAME` of a scenario: the new game is that scenario's (see `scenario`).
    pub scenario: Option<String>,
}

impl NewMap {
    /// From a request's `seed`, `map_gen_settings`, `map_settings`, `preset` (all optional).
    pub fn from_request(data: &Value) -> Result<NewMap, String> {
        let seed = match &data["seed"] {
            Value::Null => None,
            v => Some(seed(v, "seed")?),
        };
        let object = |key: &str| -> Result<Option<Map<String, Value>>, String> {
            match &data[key] {
                Value::Null => Ok(None),
                Value::Object(m) => Ok(Some(m.clone())),
                _ => Err(format!("{key} must be a JSON object")),
            }
        };
        let mut map_gen_settings = object("map_gen_settings")?;
        let mut map_settings = object("map_settings")?;
        // A pasted exchange string gives both files; fields given beside it win.
        match &data["map_exchange_string"] {
            Value::Null => {}
            Value::String(s) if s.trim().is_empty() => {}
            Value::String(s) => {
                let d = super::exchange_string::decode(s)
                    .map_err(|e| format!("map_exchange_string: {e}"))?;
                let merge = |decoded: Map<String, Value>, given: Option<Map<String, Value>>| {
                    let mut m = decoded;
                    m.extend(given.unwrap_or_default());
                    Some(m)
                };
                map_gen_settings = merge(d.map_gen_settings, map_gen_settings);
                map_settings = merge(d.map_settings, map_settings);
            }
            v => return Err(format!("map_exchange_string must be a string, not {v}")),
        }
        if let Some(m) = &map_gen_settings {
            check_map_gen_settings(m)?;
        }
        let scenario = match &data["scenario"] {
            Value::Null => None,
            Value::String(s) if s.trim().is_empty() => None,
            Value::String(s) => Some(super::scenarios::check_name(s.trim())?),
            v => {
                return Err(format!(
                    "scenario must be a string such as \"base/freeplay\", not {v}"
                ));
            }
        };
        let preset = match &data["preset"] {
            Value::Null => None,
            Value::String(p) if PRESETS.contains(&p.as_str()) => Some(p.clone()),
            v => {
                return Err(format!(
                    "preset {v} is not one of Factorio's: {}",
                    PRESETS.join(", ")
                ));
            }
        };
        Ok(NewMap {
            seed,
            map_gen_settings,
            map_settings,
            preset,
            scenario,
        })
    }

    pub fn is_empty(&self) -> bool {
        *self == NewMap::default()
    }

    /// Writes the settings files into `dir` (atomically) and returns the `--create` options.
    pub fn write(&self, dir: &Path) -> Result<CreateArgs, String> {
        let mut args = CreateArgs {
            map_gen_seed: self.seed.map(u64::from),
            preset: self.preset.clone(),
            ..CreateArgs::default()
        };
        let files = [
            (MAP_GEN_SETTINGS_FILE, &self.map_gen_settings),
            (MAP_SETTINGS_FILE, &self.map_settings),
        ];
        for (file, content) in files {
            let path = dir.join(file);
            match content {
                Some(m) => {
                    let text = serde_json::to_vec_pretty(m).map_err(|e| e.to_string())?;
                    saves::write_atomic(&path, &text)
                        .map_err(|e| format!("writing {}: {e}", path.display()))?;
                    if file == MAP_GEN_SETTINGS_FILE {
                        args.map_gen_settings = Some(path);
                    } else {
                        args.map_settings = Some(path);
                    }
                }
                // A file from an earlier map must not apply to this one.
                None => {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        Ok(args)
    }
}

/// Factorio's map seeds are 32-bit unsigned.
fn seed(v: &Value, what: &str) -> Result<u32, String> {
    v.as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .or_else(|| v.as_str().and_then(|s| s.trim().parse::<u32>().ok()))
        .ok_or_else(|| format!("{what} must be a whole number from 0 to 4294967295, not {v}"))
}

fn number(v: &Value, what: &str) -> Result<(), String> {
    match v.as_f64() {
        Some(n) if n >= 0.0 && n.is_finite() => Ok(()),
        _ => Err(format!("{what} must be a number ≥ 0, not {v}")),
    }
}

/// The fields of `map-gen-settings.json` a manager's form writes; other keys pass through.
fn check_map_gen_settings(m: &Map<String, Value>) -> Result<(), String> {
    for key in ["width", "height"] {
        if let Some(v) = m.get(key)
            && v.as_u64().is_none()
        {
            return Err(format!(
                "map_gen_settings.{key} must be a whole number (0 = infinite), not {v}"
            ));
        }
    }
    if let Some(v) = m.get("starting_area") {
        number(v, "map_gen_settings.starting_area")?;
    }
    if let Some(v) = m.get("peaceful_mode")
        && !v.is_boolean()
    {
        return Err(format!(
            "map_gen_settings.peaceful_mode must be true or false, not {v}"
        ));
    }
    if let Some(v) = m.get("seed")
        && !v.is_null()
    {
        seed(v, "map_gen_settings.seed")?;
    }
    if let Some(v) = m.get("autoplace_controls") {
        let controls = v
            .as_object()
            .ok_or("map_gen_settings.autoplace_controls must be an object")?;
        for (name, c) in controls {
            let c = c.as_object().ok_or_else(|| {
                format!("map_gen_settings.autoplace_controls.{name} must be {{frequency, size, richness}}")
            })?;
            for (k, v) in c {
                if !matches!(k.as_str(), "frequency" | "size" | "richness") {
                    return Err(format!(
                        "map_gen_settings.autoplace_controls.{name}.{k} is not a setting: use frequency, size or richness"
                    ));
                }
                number(
                    v,
                    &format!("map_gen_settings.autoplace_controls.{name}.{k}"),
                )?;
            }
        }
    }
    if let Some(v) = m.get("cliff_settings") {
        let c = v
            .as_object()
            .ok_or("map_gen_settings.cliff_settings must be an object")?;
        for (k, v) in c {
            match k.as_str() {
                "name" | "control" if v.is_string() => {}
                "name" | "control" => {
                    return Err(format!(
                        "map_gen_settings.cliff_settings.{k} must be a string"
                    ));
                }
                _ => number(v, &format!("map_gen_settings.cliff_settings.{k}"))?,
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_form_s_settings_become_factorio_s_files() {
        let dir = tempfile::tempdir().unwrap();
        let map = NewMap::from_request(&json!({
            "seed": 123,
            "map_gen_settings": {
                "peaceful_mode": true,
                "starting_area": 1.5,
                "autoplace_controls": {"iron-ore": {"frequency": 2, "size": 1, "richness": 0.5}},
                "cliff_settings": {"name": "cliff", "cliff_elevation_0": 10, "richness": 0}
            },
            "map_settings": {"pollution": {"enabled": false}}
        }))
        .unwrap();
        let args = map.write(dir.path()).unwrap();
        assert_eq!(args.map_gen_seed, Some(123));
        let written: Value =
            serde_json::from_slice(&std::fs::read(args.map_gen_settings.unwrap()).unwrap())
                .unwrap();
        assert_eq!(written["autoplace_controls"]["iron-ore"]["frequency"], 2);
        assert_eq!(written["peaceful_mode"], true);
        let ms: Value =
            serde_json::from_slice(&std::fs::read(args.map_settings.unwrap()).unwrap()).unwrap();
        assert_eq!(ms["pollution"]["enabled"], false);

        // The next map without settings does not inherit these files.
        NewMap::default().write(dir.path()).unwrap();
        assert!(!dir.path().join(MAP_GEN_SETTINGS_FILE).exists());
    }

    #[test]
    fn wrong_settings_are_named() {
        for (bad, needle) in [
            (json!({"seed": -1}), "seed"),
            (json!({"seed": "abc"}), "seed"),
            (json!({"map_gen_settings": []}), "map_gen_settings"),
            (
                json!({"map_gen_settings": {"peaceful_mode": "yes"}}),
                "peaceful_mode",
            ),
            (
                json!({"map_gen_settings": {"autoplace_controls": {"coal": {"frequency": -1}}}}),
                "coal.frequency",
            ),
            (
                json!({"map_gen_settings": {"autoplace_controls": {"coal": {"amount": 1}}}}),
                "coal.amount",
            ),
            (json!({"preset": "huge"}), "preset"),
        ] {
            let e = NewMap::from_request(&bad).unwrap_err();
            assert!(e.contains(needle), "{bad}: {e}");
        }
        assert!(NewMap::from_request(&json!({})).unwrap().is_empty());
    }
}
