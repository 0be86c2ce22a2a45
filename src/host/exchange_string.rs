//! Factorio's map exchange strings (the text the map generator's *Export* button prints and
//! *Import* reads), decoded into the `map-gen-settings.json` and `map-settings.json` that
//! `--create` / `--start-server-load-scenario` take with `--map-gen-settings` / `--map-settings`.
//!
//! The format (Factorio wiki, "Map exchange string format"; field order for 1.1 and 2.0 checked
//! against strings printed by Factorio 1.1.80 and 2.0.76, see tests below):
//!
//! * `>>>` base64 `<<<`; whitespace (Factorio wraps lines) is ignored.
//! * The base64 data is a zlib stream. Inflated, everything is little-endian: the version as
//!   four `u16` (major, minor, patch, developer), one byte, the map-gen settings, the map
//!   settings, then the CRC32 (zlib's) of all the bytes before it.
//! * "Space optimised" counts and string lengths: one byte, or `0xFF` then a `u32`.
//!   Strings are such a length and UTF-8 bytes. Dictionaries are a count then key/value pairs.
//! * Map-gen settings: (1.1 only: `terrain_segmentation` and `water` as `f32`),
//!   `autoplace_controls` {name → frequency, size, richness as `f32`}, `autoplace_settings`
//!   {type → treat_missing_as_default (bool) + {name → frequency, size, richness}},
//!   `default_enable_all_autoplace_controls`, `seed`, `width`, `height` (`u32`), the area
//!   generated at start (two map positions and an orientation, not part of the JSON file),
//!   `starting_area` (`f32`), `peaceful_mode`, (2.0: `no_enemies_mode`), `starting_points`
//!   (list of map positions), `property_expression_names` {name → string}, `cliff_settings`
//!   (name, 2.0: control, elevation_0, elevation_interval, richness as `f32`, 2.0: smoothing),
//!   (2.0: optional `territory_settings`).
//! * A map position: `i16` x delta in 1/256 tiles from the previous position; `0x7FFF` means
//!   an absolute `i32` x and `i32` y follow instead, else an `i16` y delta follows.
//! * Map settings: groups of optional values (a presence byte, then the value): pollution,
//!   steering (default, moving), enemy evolution, enemy expansion, unit groups, path finder;
//!   then `max_failed_behavior_count` (`u32`), the difficulty settings, (2.0: asteroids).

use serde_json::{Map, Value, json};

/// What a string holds: the version of Factorio that wrote it and the two settings files.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub version: [u16; 4],
    pub map_gen_settings: Map<String, Value>,
    pub map_settings: Map<String, Value>,
}

impl Decoded {
    pub fn version_string(&self) -> String {
        let [a, b, c, _] = self.version;
        format!("{a}.{b}.{c}")
    }
}

/// The layouts this decoder knows.
#[derive(Clone, Copy, PartialEq)]
enum Dialect {
    /// 1.1.49 and later 1.1 releases (the path finder's `fwd2bwd_ratio` became an integer).
    V1_1,
    /// 2.0.x.
    V2_0,
}

/// Decodes a map exchange string, or says what is wrong with it.
pub fn decode(text: &str) -> Result<Decoded, String> {
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let inner = compact
        .strip_prefix(">>>")
        .and_then(|s| s.strip_suffix("<<<"))
        .ok_or("a map exchange string starts with >>> and ends with <<< (copy all of it from Factorio's map generator: Export)")?;
    if inner.is_empty() {
        return Err("the map exchange string is empty between >>> and <<<".into());
    }
    let compressed = base64(inner)?;
    let data = inflate(&compressed)?;
    if data.len() < 8 + 1 + 4 {
        return Err(format!(
            "the map exchange string is truncated: its data is only {} bytes",
            data.len()
        ));
    }
    let (body, sum) = data.split_at(data.len() - 4);
    let stored = u32::from_le_bytes([sum[0], sum[1], sum[2], sum[3]]);
    let mut crc = flate2::Crc::new();
    crc.update(body);
    if crc.sum() != stored {
        return Err(format!(
            "the map exchange string's checksum does not match (stored {stored:08x}, computed {:08x}): it was changed or cut short",
            crc.sum()
        ));
    }
    let mut r = Reader { data: body, pos: 0 };
    let version = [
        r.u16("the version")?,
        r.u16("the version")?,
        r.u16("the version")?,
        r.u16("the version")?,
    ];
    let dialect = match version {
        [1, 1, patch, _] if patch >= 49 => Dialect::V1_1,
        [2, 0, _, _] => Dialect::V2_0,
        [a, b, c, _] => {
            return Err(format!(
                "the map exchange string was written by Factorio {a}.{b}.{c}; clustorio reads strings of Factorio 1.1.49 to 1.1.x and 2.0.x"
            ));
        }
    };
    r.u8("the byte after the version")?;
    let map_gen_settings = map_gen_settings(&mut r, dialect)?;
    let map_settings = map_settings(&mut r, dialect)?;
    if r.pos != body.len() {
        return Err(format!(
            "the map exchange string has {} unexpected bytes after the map settings",
            body.len() - r.pos
        ));
    }
    Ok(Decoded {
        version,
        map_gen_settings,
        map_settings,
    })
}

/// RFC 4648 base64, padding optional.
fn base64(s: &str) -> Result<Vec<u8>, String> {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    STANDARD.decode(s).map_err(|e| match e {
        base64::DecodeError::InvalidByte(i, c) => format!(
            "the map exchange string is not valid base64: '{}' at character {} (after >>>)",
            c as char,
            i + 1
        ),
        base64::DecodeError::InvalidLength(_) | base64::DecodeError::InvalidLastSymbol(..) => {
            "the map exchange string is not valid base64: its length is off (cut short?)".into()
        }
        base64::DecodeError::InvalidPadding => {
            "the map exchange string is not valid base64: wrong '=' padding".into()
        }
    })
}

/// Factorio compresses the data since 0.16; a stream that does not inflate is corrupt or cut.
fn inflate(data: &[u8]) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let mut out = Vec::new();
    // Settings are a few kilobytes; a bomb stops here.
    let limit = 16 * 1024 * 1024;
    flate2::read::ZlibDecoder::new(data)
        .take(limit + 1)
        .read_to_end(&mut out)
        .map_err(|e| {
            format!("the map exchange string's data does not decompress (zlib: {e}): it is corrupt or cut short")
        })?;
    if out.len() as u64 > limit {
        return Err("the map exchange string decompresses to more than 16 MiB".into());
    }
    Ok(out)
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize, what: &str) -> Result<&[u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        match end {
            Some(end) => {
                let s = &self.data[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(format!(
                "the map exchange string is truncated: it ends inside {what}"
            )),
        }
    }
    fn arr<const N: usize>(&mut self, what: &str) -> Result<[u8; N], String> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }
    fn u8(&mut self, what: &str) -> Result<u8, String> {
        Ok(self.arr::<1>(what)?[0])
    }
    fn bool(&mut self, what: &str) -> Result<bool, String> {
        Ok(self.u8(what)? != 0)
    }
    fn u16(&mut self, what: &str) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.arr(what)?))
    }
    fn i16(&mut self, what: &str) -> Result<i16, String> {
        Ok(i16::from_le_bytes(self.arr(what)?))
    }
    fn u32(&mut self, what: &str) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.arr(what)?))
    }
    fn i32(&mut self, what: &str) -> Result<i32, String> {
        Ok(i32::from_le_bytes(self.arr(what)?))
    }
    /// An `f32`, as the shortest decimal that reads back as it (0.75, not 0.75000000…).
    fn f32(&mut self, what: &str) -> Result<Value, String> {
        let f = f32::from_le_bytes(self.arr(what)?);
        Ok(number(
            format!("{f}").parse::<f64>().unwrap_or(f64::from(f)),
        ))
    }
    fn f64(&mut self, what: &str) -> Result<Value, String> {
        Ok(number(f64::from_le_bytes(self.arr(what)?)))
    }
    /// A space-optimised count or length.
    fn count(&mut self, what: &str) -> Result<usize, String> {
        let n = match self.u8(what)? {
            0xFF => self.u32(what)?,
            n => u32::from(n),
        };
        // Every element takes at least a byte: a larger count is a corrupt string.
        let n = n as usize;
        if n > self.data.len() - self.pos {
            return Err(format!(
                "the map exchange string is truncated: {what} claims {n} entries or bytes, more than remain"
            ));
        }
        Ok(n)
    }
    fn string(&mut self, what: &str) -> Result<String, String> {
        let n = self.count(what)?;
        let bytes = self.take(n, what)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| format!("the map exchange string has a name that is not UTF-8 in {what}"))
    }
}

fn number(f: f64) -> Value {
    // Whole numbers as integers, as Factorio writes them in its JSON files.
    if f.fract() == 0.0 && f.abs() < 9.0e15 {
        json!(f as i64)
    } else {
        serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
    }
}

fn frequency_size_richness(r: &mut Reader, what: &str) -> Result<Value, String> {
    Ok(json!({
        "frequency": r.f32(what)?,
        "size": r.f32(what)?,
        "richness": r.f32(what)?,
    }))
}

fn controls(r: &mut Reader, what: &str) -> Result<Map<String, Value>, String> {
    let mut m = Map::new();
    for _ in 0..r.count(what)? {
        let name = r.string(what)?;
        let v = frequency_size_richness(r, &format!("{what}.{name}"))?;
        m.insert(name, v);
    }
    Ok(m)
}

/// Map positions are deltas from the previous one read, in 1/256 tiles.
struct Positions {
    x: i64,
    y: i64,
}

impl Positions {
    fn read(&mut self, r: &mut Reader, what: &str) -> Result<Value, String> {
        let dx = r.i16(what)?;
        if dx == 0x7FFF {
            self.x = i64::from(r.i32(what)?);
            self.y = i64::from(r.i32(what)?);
        } else {
            let dy = r.i16(what)?;
            self.x += i64::from(dx);
            self.y += i64::from(dy);
        }
        Ok(json!({
            "x": number(self.x as f64 / 256.0),
            "y": number(self.y as f64 / 256.0),
        }))
    }
}

fn map_gen_settings(r: &mut Reader, d: Dialect) -> Result<Map<String, Value>, String> {
    let mut m = Map::new();
    if d == Dialect::V1_1 {
        m.insert(
            "terrain_segmentation".into(),
            r.f32("terrain_segmentation")?,
        );
        m.insert("water".into(), r.f32("water")?);
    }
    m.insert(
        "autoplace_controls".into(),
        Value::Object(controls(r, "autoplace_controls")?),
    );
    let mut settings = Map::new();
    for _ in 0..r.count("autoplace_settings")? {
        let kind = r.string("autoplace_settings")?;
        let what = format!("autoplace_settings.{kind}");
        let treat = r.bool(&what)?;
        let s = controls(r, &what)?;
        settings.insert(
            kind,
            json!({"treat_missing_as_default": treat, "settings": s}),
        );
    }
    m.insert("autoplace_settings".into(), Value::Object(settings));
    m.insert(
        "default_enable_all_autoplace_controls".into(),
        json!(r.bool("default_enable_all_autoplace_controls")?),
    );
    m.insert("seed".into(), json!(r.u32("seed")?));
    m.insert("width".into(), json!(r.u32("width")?));
    m.insert("height".into(), json!(r.u32("height")?));
    let mut pos = Positions { x: 0, y: 0 };
    // The area generated at start: not a setting of the JSON file.
    pos.read(r, "area_to_generate_at_start")?;
    pos.read(r, "area_to_generate_at_start")?;
    r.i16("area_to_generate_at_start")?;
    r.i16("area_to_generate_at_start")?;
    m.insert("starting_area".into(), r.f32("starting_area")?);
    m.insert("peaceful_mode".into(), json!(r.bool("peaceful_mode")?));
    if d == Dialect::V2_0 {
        m.insert("no_enemies_mode".into(), json!(r.bool("no_enemies_mode")?));
    }
    let mut points = Vec::new();
    for _ in 0..r.count("starting_points")? {
        points.push(pos.read(r, "starting_points")?);
    }
    m.insert("starting_points".into(), Value::Array(points));
    let mut names = Map::new();
    for _ in 0..r.count("property_expression_names")? {
        let k = r.string("property_expression_names")?;
        let v = r.string("property_expression_names")?;
        names.insert(k, json!(v));
    }
    m.insert("property_expression_names".into(), Value::Object(names));
    let mut cliffs = Map::new();
    cliffs.insert("name".into(), json!(r.string("cliff_settings.name")?));
    if d == Dialect::V2_0 {
        let control = r.string("cliff_settings.control")?;
        if !control.is_empty() {
            cliffs.insert("control".into(), json!(control));
        }
    }
    for k in ["cliff_elevation_0", "cliff_elevation_interval", "richness"] {
        cliffs.insert(k.into(), r.f32(&format!("cliff_settings.{k}"))?);
    }
    if d == Dialect::V2_0 {
        cliffs.insert(
            "cliff_smoothing".into(),
            r.f32("cliff_settings.cliff_smoothing")?,
        );
    }
    m.insert("cliff_settings".into(), Value::Object(cliffs));
    if d == Dialect::V2_0 && r.bool("territory_settings")? {
        let what = "territory_settings";
        let mut units = Vec::new();
        for _ in 0..r.count(what)? {
            units.push(json!(r.string(what)?));
        }
        m.insert(
            "territory_settings".into(),
            json!({
                "units": units,
                "territory_index_expression": r.string(what)?,
                "territory_variation_expression": r.string(what)?,
                "minimum_territory_size": r.u32(what)?,
            }),
        );
    }
    Ok(m)
}

/// Kinds of the optional map-settings values.
#[derive(Clone, Copy)]
enum K {
    Bool,
    F64,
    U32,
    I32,
    U32s,
    F64s,
}

use K::*;

const POLLUTION: &[(&str, K)] = &[
    ("enabled", Bool),
    ("diffusion_ratio", F64),
    ("min_to_diffuse", F64),
    ("ageing", F64),
    ("expected_max_per_chunk", F64),
    ("min_to_show_per_chunk", F64),
    ("min_pollution_to_damage_trees", F64),
    ("pollution_with_max_forest_damage", F64),
    ("pollution_per_tree_damage", F64),
    ("pollution_restored_per_tree_damage", F64),
    ("max_pollution_to_restore_trees", F64),
    ("enemy_attack_pollution_consumption_modifier", F64),
];

const STEERING: &[(&str, K)] = &[
    ("radius", F64),
    ("separation_factor", F64),
    ("separation_force", F64),
    ("force_unit_fuzzy_goto_behavior", Bool),
];

const EVOLUTION: &[(&str, K)] = &[
    ("enabled", Bool),
    ("time_factor", F64),
    ("destroy_factor", F64),
    ("pollution_factor", F64),
];

const EXPANSION: &[(&str, K)] = &[
    ("enabled", Bool),
    ("max_expansion_distance", U32),
    ("friendly_base_influence_radius", U32),
    ("enemy_building_influence_radius", U32),
    ("building_coefficient", F64),
    ("other_base_coefficient", F64),
    ("neighbouring_chunk_coefficient", F64),
    ("neighbouring_base_chunk_coefficient", F64),
    ("max_colliding_tiles_coefficient", F64),
    ("settler_group_min_size", U32),
    ("settler_group_max_size", U32),
    ("min_expansion_cooldown", U32),
    ("max_expansion_cooldown", U32),
];

const UNIT_GROUP: &[(&str, K)] = &[
    ("min_group_gathering_time", U32),
    ("max_group_gathering_time", U32),
    ("max_wait_time_for_late_members", U32),
    ("max_group_radius", F64),
    ("min_group_radius", F64),
    ("max_member_speedup_when_behind", F64),
    ("max_member_slowdown_when_ahead", F64),
    ("max_group_slowdown_factor", F64),
    ("max_group_member_fallback_factor", F64),
    ("member_disown_distance", F64),
    ("tick_tolerance_when_member_arrives", U32),
    ("max_gathering_unit_groups", U32),
    ("max_unit_group_size", U32),
];

const PATH_FINDER: &[(&str, K)] = &[
    ("fwd2bwd_ratio", I32),
    ("goal_pressure_ratio", F64),
    ("use_path_cache", Bool),
    ("max_steps_worked_per_tick", F64),
    ("max_work_done_per_tick", U32),
    ("short_cache_size", U32),
    ("long_cache_size", U32),
    ("short_cache_min_cacheable_distance", F64),
    ("short_cache_min_algo_steps_to_cache", U32),
    ("long_cache_min_cacheable_distance", F64),
    ("cache_max_connect_to_cache_steps_multiplier", U32),
    ("cache_accept_path_start_distance_ratio", F64),
    ("cache_accept_path_end_distance_ratio", F64),
    ("negative_cache_accept_path_start_distance_ratio", F64),
    ("negative_cache_accept_path_end_distance_ratio", F64),
    ("cache_path_start_distance_rating_multiplier", F64),
    ("cache_path_end_distance_rating_multiplier", F64),
    ("stale_enemy_with_same_destination_collision_penalty", F64),
    ("ignore_moving_enemy_collision_distance", F64),
    ("enemy_with_different_destination_collision_penalty", F64),
    ("general_entity_collision_penalty", F64),
    ("general_entity_subsequent_collision_penalty", F64),
    ("extended_collision_penalty", F64),
    ("max_clients_to_accept_any_new_request", U32),
    ("max_clients_to_accept_short_new_request", U32),
    ("direct_distance_to_consider_short_request", U32),
    ("short_request_max_steps", U32),
    ("short_request_ratio", F64),
    ("min_steps_to_check_path_find_termination", U32),
    ("start_to_goal_cost_multiplier_to_terminate_path_find", F64),
    ("overload_levels", U32s),
    ("overload_multipliers", F64s),
    ("negative_path_cache_delay_interval", U32),
];

const ASTEROIDS: &[(&str, K)] = &[
    ("spawning_rate", F64),
    ("max_ray_portals_expanded_per_tick", U32),
];

/// A group of optional values; absent ones are left out (Factorio's defaults apply).
fn group(r: &mut Reader, name: &str, fields: &[(&str, K)]) -> Result<Value, String> {
    let mut m = Map::new();
    for &(key, kind) in fields {
        let what = format!("map_settings.{name}.{key}");
        if !r.bool(&what)? {
            continue;
        }
        let v = match kind {
            Bool => json!(r.bool(&what)?),
            F64 => r.f64(&what)?,
            U32 => json!(r.u32(&what)?),
            I32 => json!(r.i32(&what)?),
            U32s => {
                let mut l = Vec::new();
                for _ in 0..r.count(&what)? {
                    l.push(json!(r.u32(&what)?));
                }
                Value::Array(l)
            }
            F64s => {
                let mut l = Vec::new();
                for _ in 0..r.count(&what)? {
                    l.push(r.f64(&what)?);
                }
                Value::Array(l)
            }
        };
        m.insert(key.into(), v);
    }
    Ok(Value::Object(m))
}

fn map_settings(r: &mut Reader, d: Dialect) -> Result<Map<String, Value>, String> {
    let mut m = Map::new();
    m.insert("pollution".into(), group(r, "pollution", POLLUTION)?);
    let default = group(r, "steering.default", STEERING)?;
    let moving = group(r, "steering.moving", STEERING)?;
    m.insert(
        "steering".into(),
        json!({"default": default, "moving": moving}),
    );
    m.insert(
        "enemy_evolution".into(),
        group(r, "enemy_evolution", EVOLUTION)?,
    );
    m.insert(
        "enemy_expansion".into(),
        group(r, "enemy_expansion", EXPANSION)?,
    );
    m.insert("unit_group".into(), group(r, "unit_group", UNIT_GROUP)?);
    m.insert("path_finder".into(), group(r, "path_finder", PATH_FINDER)?);
    m.insert(
        "max_failed_behavior_count".into(),
        json!(r.u32("map_settings.max_failed_behavior_count")?),
    );
    let what = "map_settings.difficulty_settings";
    let difficulty = match d {
        Dialect::V1_1 => {
            let recipe = r.u8(what)?;
            let technology = r.u8(what)?;
            let price = r.f64(what)?;
            let queue = match r.u8(what)? {
                0 => "always",
                1 => "after-victory",
                2 => "never",
                n => {
                    return Err(format!(
                        "the map exchange string has research_queue_setting {n}, not one of Factorio's (0 to 2)"
                    ));
                }
            };
            json!({
                "recipe_difficulty": recipe,
                "technology_difficulty": technology,
                "technology_price_multiplier": price,
                "research_queue_setting": queue,
            })
        }
        Dialect::V2_0 => json!({
            "technology_price_multiplier": r.f64(what)?,
            "spoil_time_modifier": r.f64(what)?,
        }),
    };
    m.insert("difficulty_settings".into(), difficulty);
    if d == Dialect::V2_0 {
        m.insert("asteroids".into(), group(r, "asteroids", ASTEROIDS)?);
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Printed by Factorio 2.0.76 (default settings, enemy bases off, water coverage 75 %);
    /// from the test suite of M45-Science/ChatWire (`fact/mapExchange_test.go`).
    pub const FACTORIO_2_0_76: &str = ">>>eNpjYmBg8AFiBh6W5PzEHAaGBnsY5krOLyhILdLNL0pFFuZMLipNSdXNz0RVnJqXmlupm5RYDFUMAg32HJlF+XnoJvDkJZaWZRbHJ+dkpqUhS7AW5SdnFyOLiBWXJBaVZOalxycWpSbG5+ZnFpeUoprGWlySn4cqUlKUmopiDHdpUWJeZmkuuktYyxNLUosgPAeIKKOn9iTzhhY5BhD+X8+g8P8/CANZD4A+AmEGxgaIDkagIAywQj3DoOAIxE5wSxgZGKtF1rk/rJpizwhRqecAZXyAihxIgol4whh+DjilVGAMEyRzjMHgMxIDYmkJ0AqoKg4HBAMi2QKSZGTsfbt1wfdjF+wY/6z8eMk3KcGe0dBV5N0Ho3V2QEl2kHeZ4MSsmSCwE+YVBpiZD+yhUjftGc+eAYE39oysIB0iIMLBAkgc8GZmYBTgA7IW9AAJBRkGmNPsYMaIODCmgcE3mE8ewxiX7dH9AQwIG5DhciDiBIgAWwh3GSOE6dDvwOggD5OVRCgB6jdiQHZDCsKHJ2HWHkayH80hmBGB7A80ERUHLNHABbIwBU68YIa7BhieF9hhPIf5DozMIAZI1RegGIQHkoEZBaEFHMDBzQxPlB/sUVMaiAEyJP29ZCQA2Pi9LQ==<<<";

    /// Printed by Factorio 1.1.80 (default settings), wrapped as the game wraps it; from the
    /// tests of the Factoriod project (`MapExchangeStringTests.DefaultSettings`).
    pub const FACTORIO_1_1_80: &str = ">>>eNpjZGBkCGAAgwZ7EOZgSc5PzIHxQJgrOb+gILVIN78oFVmYM7mo
NCVVNz8TVXFqXmpupW5SYjGKYo7Movw8dBNYi0vy81BFSopSU4uRRbh
LixLzMktz0fUyMN7VdFrU0CLHAML/6xkU/v8HYSDrAdAvIMzA2ABRCR
SDAdbknMy0NAYGBUcgdgJJMzIyVousc39YNcWeEaJGzwHK+AAVOZAEE
/GEMfwccEqpwBgmSOYYg8FnJAbE0hKgFVBVHA4IBkSyBSTJyNj7duuC
78cu2DH+Wfnxkm9Sgj2joavIuw9G6+yAkuwgfzLBiVkzQWAnzCsMMDM
f2EOlbtoznj0DAm/sGVlBOkRAhIMFkDjgzczAKMAHZC3oARIKMgwwp9
nBjBFxYEwDg28wnzyGMS7bo/sDGBA2IMPlQMQJEAG2EO4yRgjTod+B0
UEeJiuJUALUb8SA7IYUhA9Pwqw9jGQ/mkMwIwLZH2giKg5YooELZGEK
nHjBDHcNMDwvsMN4DvMdGJlBDJCqL0AxCA8kAzMKQgs4gIObmQEBgGk
jdtPMKQAvV6Gx<<<";

    #[test]
    fn a_string_printed_by_factorio_2_0_decodes() {
        let d = decode(FACTORIO_2_0_76).unwrap();
        assert_eq!(d.version_string(), "2.0.76");
        let g = Value::Object(d.map_gen_settings);
        assert_eq!(g["seed"], 932326217);
        assert_eq!(g["width"], 2000000);
        assert_eq!(g["autoplace_controls"]["water"]["size"], 0.75);
        assert_eq!(g["autoplace_controls"]["enemy-base"]["size"], 0);
        assert_eq!(g["autoplace_controls"].as_object().unwrap().len(), 12);
        assert_eq!(g["no_enemies_mode"], false);
        assert_eq!(g["starting_points"], json!([{"x": 0, "y": 0}]));
        assert_eq!(g["cliff_settings"]["cliff_elevation_interval"], 40);
        assert_eq!(g["cliff_settings"]["cliff_smoothing"], 1);
        assert!(g.get("terrain_segmentation").is_none());
        let m = Value::Object(d.map_settings);
        assert_eq!(m["pollution"]["enabled"], false);
        assert_eq!(m["pollution"]["diffusion_ratio"], 0.02);
        assert_eq!(m["enemy_expansion"]["max_expansion_cooldown"], 216000);
        assert_eq!(m["path_finder"]["overload_levels"], json!([0, 100, 500]));
        assert_eq!(m["difficulty_settings"]["spoil_time_modifier"], 1);
        assert_eq!(m["asteroids"]["max_ray_portals_expanded_per_tick"], 100);
        assert_eq!(m["max_failed_behavior_count"], 3);
    }

    #[test]
    fn a_string_printed_by_factorio_1_1_decodes() {
        let d = decode(FACTORIO_1_1_80).unwrap();
        assert_eq!(d.version_string(), "1.1.80");
        let g = Value::Object(d.map_gen_settings);
        assert_eq!(g["seed"], 2722245085u32);
        assert_eq!(g["terrain_segmentation"], 1);
        assert_eq!(g["cliff_settings"]["name"], "cliff");
        assert_eq!(g["autoplace_controls"]["uranium-ore"]["richness"], 1);
        let m = Value::Object(d.map_settings);
        assert_eq!(m["pollution"]["enabled"], true);
        assert_eq!(
            m["difficulty_settings"]["research_queue_setting"],
            "after-victory"
        );
        assert_eq!(m["path_finder"]["fwd2bwd_ratio"], 5);
    }

    #[test]
    fn broken_strings_say_what_is_wrong() {
        let s = FACTORIO_2_0_76;
        let inner = &s[3..s.len() - 3];
        let cases = [
            ("eNpjYmBg".to_string(), ">>>"),
            (">>><<<".to_string(), "empty"),
            (format!(">>>{}!{}<<<", &inner[..10], &inner[10..]), "base64"),
            (
                format!(">>>{}<<<", &inner[..inner.len() - 40]),
                "decompress",
            ),
            (format!(">>>{}<<<", &inner[..inner.len() - 3]), "base64"),
        ];
        for (text, needle) in cases {
            let e = decode(&text).unwrap_err();
            assert!(e.contains(needle), "{text}: {e}");
        }

        // Re-encoded variants of the real data: each flaw on its own.
        let data = {
            use std::io::Read;
            let mut out = Vec::new();
            flate2::read::ZlibDecoder::new(&base64(inner).unwrap()[..])
                .read_to_end(&mut out)
                .unwrap();
            out
        };
        let body = &data[..data.len() - 4];
        let with_crc = |b: &[u8]| {
            let mut c = flate2::Crc::new();
            c.update(b);
            let mut v = b.to_vec();
            v.extend_from_slice(&c.sum().to_le_bytes());
            v
        };
        let mut changed = data.clone();
        changed[30] ^= 1;
        let mut v3 = body.to_vec();
        v3[0] = 3;
        let mut longer = body.to_vec();
        longer.push(0);
        for (raw, needle) in [
            (changed, "checksum"),
            (with_crc(&v3), "Factorio 3.0.76"),
            (with_crc(&body[..200]), "truncated"),
            (with_crc(&longer), "1 unexpected bytes"),
        ] {
            let e = decode(&encode(&raw)).unwrap_err();
            assert!(e.contains(needle), "{needle}: {e}");
        }
        assert_eq!(decode(&encode(&data)).unwrap(), decode(s).unwrap());
    }

    fn encode(raw: &[u8]) -> String {
        use std::io::Write;
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        z.write_all(raw).unwrap();
        let bytes = z.finish().unwrap();
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut s = String::from(">>>");
        for chunk in bytes.chunks(3) {
            let n =
                chunk.iter().fold(0u32, |a, &b| (a << 8) | u32::from(b)) << (8 * (3 - chunk.len()));
            for i in 0..=chunk.len() {
                s.push(A[(n >> (18 - 6 * i)) as usize & 63] as char);
            }
            for _ in chunk.len()..3 {
                s.push('=');
            }
        }
        s + "<<<"
    }
}
