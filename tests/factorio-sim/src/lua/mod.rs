//! The level script in a real Lua 5.2 (mlua, vendored): the save's `control.lua` runs with the
//! Factorio runtime surface of research/plugins.md §5.3, written in `prelude.lua` on top of a
//! few Rust primitives (stdout, log, RCON reply, JSON, script-output, source files). The game
//! thread owns one [`Runtime`]; every call returns the crash text when a handler failed, which
//! the caller turns into Factorio's crash transcript.

mod json;

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

use mlua::{Function, Lua, LuaOptions, StdLib, Table, Value};
use serde_json::{Value as Json, json};

use crate::log::Log;

const PRELUDE: &str = include_str!("prelude.lua");

/// Factorio's `core/lualib` as the sim provides it.
pub const LUALIB: &[(&str, &str)] = &[
    (
        "event_handler.lua",
        include_str!("lualib/event_handler.lua"),
    ),
    ("freeplay.lua", include_str!("lualib/freeplay.lua")),
    ("silo-script.lua", include_str!("lualib/silo-script.lua")),
    (
        "space-finish-script.lua",
        include_str!("lualib/space-finish-script.lua"),
    ),
    ("util.lua", include_str!("lualib/util.lua")),
];

/// The freeplay `control.lua` of Factorio 2.0 (SHA-1 `bcbdde18…`, research/plugins.md §1.2).
pub const FREEPLAY_2_0: &str = "local handler = require(\"event_handler\")\nhandler.add_lib(require(\"freeplay\"))\n\nif script.active_mods[\"space-age\"] then\n  handler.add_lib(require(\"space-finish-script\"))\nelse\n  handler.add_lib(require(\"silo-script\"))\nend\n";
/// The freeplay `control.lua` of Factorio 0.17.63 … 1.1 (SHA-1 `4e866186…`).
pub const FREEPLAY_0_17: &str = "local handler = require(\"event_handler\")\nhandler.add_lib(require(\"freeplay\"))\nhandler.add_lib(require(\"silo-script\"))\n";
/// A scenario no save patcher knows (`FACTORIO_STANDIN_SCENARIO=unknown`).
pub const UNKNOWN_SCENARIO: &str = "-- A custom scenario (factorio-sim)\nlocal handler = require(\"event_handler\")\nhandler.add_lib(require(\"freeplay\"))\n";

pub fn stock_control_lua(is_1_1: bool) -> &'static str {
    if is_1_1 { FREEPLAY_0_17 } else { FREEPLAY_2_0 }
}

pub struct Setup {
    pub is_1_1: bool,
    pub version: String,
    pub active_mods: Vec<(String, String)>,
    pub seed: u64,
    /// The level's script files, relative to the save root.
    pub files: Vec<(String, Vec<u8>)>,
    pub script_output: PathBuf,
}

pub struct Runtime {
    lua: Lua,
    api: Table,
    rcon: Rc<RefCell<String>>,
    mods: Json,
}

/// `helpers.write_file`'s target: relative, no `..`, no NUL, no backslash.
fn script_output_path(root: &Path, name: &str) -> Result<PathBuf, String> {
    let p = Path::new(name);
    if name.is_empty()
        || name.contains('\0')
        || name.contains('\\')
        || p.is_absolute()
        || p.components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err("Path contains invalid characters".into());
    }
    Ok(root.join(p))
}

fn write_file(root: &Path, name: &str, data: &str, append: bool) -> Result<(), String> {
    let path = script_output_path(root, name)?;
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(|e| e.to_string())?;
    }
    if append {
        use std::io::Write;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(data.as_bytes()))
            .map_err(|e| e.to_string())
    } else {
        std::fs::write(&path, data).map_err(|e| e.to_string())
    }
}

fn err_text(e: mlua::Error) -> String {
    match e {
        mlua::Error::RuntimeError(s) => s,
        mlua::Error::CallbackError { cause, .. } => err_text((*cause).clone()),
        other => other.to_string(),
    }
}

impl Runtime {
    pub fn new(setup: Setup, log: Log) -> Result<Runtime, String> {
        // SAFETY: the debug library is loaded on purpose (Factorio's Lua has `debug`); the
        // prelude removes io/os and the other functions Factorio does not offer.
        let lua = unsafe {
            Lua::unsafe_new_with(StdLib::ALL_SAFE | StdLib::DEBUG, LuaOptions::default())
        };
        let rcon = Rc::new(RefCell::new(String::new()));
        let api = Self::build(&lua, &setup, log, rcon.clone()).map_err(err_text)?;
        let mods: serde_json::Map<String, Json> = setup
            .active_mods
            .iter()
            .map(|(n, v)| (n.clone(), Json::String(v.clone())))
            .collect();
        Ok(Runtime {
            lua,
            api,
            rcon,
            mods: Json::Object(mods),
        })
    }

    fn build(lua: &Lua, s: &Setup, log: Log, rcon: Rc<RefCell<String>>) -> mlua::Result<Table> {
        let sim = lua.create_table()?;
        sim.set("is_1_1", s.is_1_1)?;
        sim.set("seed", s.seed as f64)?;
        let mods = lua.create_table()?;
        for (n, v) in &s.active_mods {
            mods.set(n.as_str(), v.as_str())?;
        }
        if !s.active_mods.iter().any(|(n, _)| n == "base") {
            mods.set("base", s.version.as_str())?;
        }
        sim.set("active_mods", mods)?;
        let l = log.clone();
        sim.set(
            "print",
            lua.create_function(move |_, text: mlua::LuaString| {
                l.bare(&text.to_string_lossy());
                Ok(())
            })?,
        )?;
        let l = log;
        sim.set(
            "log",
            lua.create_function(move |_, (at, text): (String, mlua::LuaString)| {
                l.engine("Script", &at, &text.to_string_lossy());
                Ok(())
            })?,
        )?;
        sim.set(
            "rcon_print",
            lua.create_function(move |_, text: mlua::LuaString| {
                let mut b = rcon.borrow_mut();
                b.push_str(&text.to_string_lossy());
                b.push('\n');
                Ok(())
            })?,
        )?;
        sim.set(
            "table_to_json",
            lua.create_function(|_, v: Value| match json::table_to_json(&v) {
                Ok(s) => Ok((Some(s), None)),
                Err(e) => Ok((None, Some(e))),
            })?,
        )?;
        sim.set(
            "json_to_table",
            lua.create_function(|lua, s: mlua::LuaString| {
                match serde_json::from_slice::<Json>(&s.as_bytes()) {
                    Ok(v) => json::to_lua(lua, &v),
                    Err(_) => Ok(Value::Nil),
                }
            })?,
        )?;
        let out = s.script_output.clone();
        sim.set(
            "write_file",
            lua.create_function(move |_, (name, data, append): (String, String, bool)| {
                Ok(write_file(&out, &name, &data, append).err())
            })?,
        )?;
        let level: HashMap<String, Vec<u8>> = s.files.iter().cloned().collect();
        sim.set(
            "source",
            lua.create_function(move |lua, (kind, path): (String, String)| {
                let text = match kind.as_str() {
                    "level" => level.get(&path).cloned(),
                    _ => LUALIB
                        .iter()
                        .find(|(n, _)| *n == path)
                        .map(|(_, t)| t.as_bytes().to_vec()),
                };
                text.map(|t| lua.create_string(t)).transpose()
            })?,
        )?;
        lua.load(PRELUDE).set_name("=[sim]").call::<Table>(sim)
    }

    fn f(&self, name: &str) -> Result<Function, String> {
        self.api.get::<Function>(name).map_err(err_text)
    }

    /// Call an api function returning `ok, err`.
    fn run(&self, name: &str, args: impl mlua::IntoLuaMulti) -> Result<(), String> {
        let (ok, err) = self
            .f(name)?
            .call::<(bool, Option<String>)>(args)
            .map_err(err_text)?;
        if ok {
            Ok(())
        } else {
            Err(err.unwrap_or_else(|| "unknown error".into()))
        }
    }

    pub fn has_level(&self) -> bool {
        self.f("has_level")
            .and_then(|f| f.call::<bool>(()).map_err(err_text))
            .unwrap_or(false)
    }

    /// Run `control.lua`'s main chunk (requires included). Err: the error with traceback.
    pub fn run_main(&self) -> Result<(), String> {
        self.run("run_main", ())
    }

    pub fn init(&self) -> Result<(), String> {
        self.run("init", ())
    }

    /// Restore `storage`/`global` (and the technologies) from the save, then `on_load`.
    pub fn load(&self, saved: &Json) -> Result<(), String> {
        if let Some(t) = saved.get("techs") {
            let v = self.decode(t).map_err(err_text)?;
            self.f("set_tech_state")?.call::<()>(v).map_err(err_text)?;
        }
        let storage = match saved.get("storage") {
            Some(s) => self.decode(s).map_err(err_text)?,
            None => Value::Table(self.lua.create_table().map_err(err_text)?),
        };
        let storage = match storage {
            Value::Table(t) => t,
            _ => self.lua.create_table().map_err(err_text)?,
        };
        self.run("load", storage)
    }

    /// `on_configuration_changed` when the mods differ from those the save last ran with.
    pub fn configuration_changed(&self, saved: &Json) -> Result<(), String> {
        let old = saved.get("mods").cloned().unwrap_or_else(|| json!({}));
        if old == self.mods {
            return Ok(());
        }
        let mut changes = serde_json::Map::new();
        let (o, n) = (
            old.as_object().cloned().unwrap_or_default(),
            self.mods.as_object().cloned().unwrap_or_default(),
        );
        for k in o.keys().chain(n.keys()) {
            if o.get(k) != n.get(k) {
                changes.insert(
                    k.clone(),
                    json!({"old_version": o.get(k), "new_version": n.get(k)}),
                );
            }
        }
        let base = |m: &serde_json::Map<String, Json>| m.get("base").cloned();
        let data = json!({
            "old_version": base(&o),
            "new_version": base(&n),
            "mod_changes": changes,
            "mod_startup_settings_changed": false,
            "migration_applied": false,
        });
        let v = json::to_lua(&self.lua, &data).map_err(err_text)?;
        self.run("configuration_changed", v)
    }

    fn decode(&self, v: &Json) -> mlua::Result<Value> {
        let object = self.api.get::<Function>("object")?;
        let lookup = |r: &str| object.call::<Value>(r);
        json::decode(&self.lua, v, &mut HashMap::new(), &lookup)
    }

    /// The persisted state: storage, technologies, the mods it ran with.
    pub fn snapshot(&self) -> Result<Json, String> {
        let object_of = |t: &Table| -> Option<String> {
            t.metatable()
                .and_then(|m| m.raw_get::<Option<String>>("__sim_object").ok().flatten())
        };
        let storage = self.f("storage")?.call::<Value>(()).map_err(err_text)?;
        let name = if self.is_1_1() { "global" } else { "storage" };
        let storage = json::Encoder::new(&object_of).encode(&storage, name)?;
        let techs = self.f("tech_state")?.call::<Value>(()).map_err(err_text)?;
        let no_objects = |_: &Table| None;
        let techs = json::Encoder::new(&no_objects).encode(&techs, "techs")?;
        Ok(json!({
            "initialized": true,
            "storage": storage,
            "techs": techs,
            "mods": self.mods,
        }))
    }

    fn is_1_1(&self) -> bool {
        self.lua
            .globals()
            .raw_get::<Value>("helpers")
            .map(|v| matches!(v, Value::Nil))
            .unwrap_or(false)
    }

    pub fn set_tick(&self, t: u64) {
        if let Ok(f) = self.f("set_tick") {
            let _ = f.call::<()>(t as f64);
        }
    }

    pub fn wants_ticks(&self) -> bool {
        self.f("wants_ticks")
            .and_then(|f| f.call::<bool>(()).map_err(err_text))
            .unwrap_or(false)
    }

    pub fn tick(&self, t: u64) -> Result<(), String> {
        self.run("tick", t as f64)
    }

    /// Raise an engine event by name with data given as JSON.
    pub fn raise(&self, event: &str, data: Json) -> Result<(), String> {
        let v = json::to_lua(&self.lua, &data).map_err(err_text)?;
        self.run("raise", (event, v))
    }

    /// A console script command. Ok(body) or Err(Factorio's error text, body so far).
    pub fn command(&self, code: &str) -> Result<String, (String, String)> {
        self.rcon.borrow_mut().clear();
        let r = self
            .f("command")
            .and_then(|f| f.call::<Option<String>>(code).map_err(err_text));
        let body = std::mem::take(&mut *self.rcon.borrow_mut());
        match r {
            Ok(None) => Ok(body),
            Ok(Some(e)) => Err((e, body)),
            Err(e) => Err((format!("Cannot execute command. Error: {e}"), body)),
        }
    }

    pub fn has_command(&self, name: &str) -> bool {
        self.f("has_command")
            .and_then(|f| f.call::<bool>(name).map_err(err_text))
            .unwrap_or(false)
    }

    /// A command added with `commands.add_command`: Ok(RCON body) or Err(crash text).
    pub fn custom_command(&self, name: &str, parameter: Option<&str>) -> Result<String, String> {
        self.rcon.borrow_mut().clear();
        let r = self.run("custom_command", (name, parameter));
        let body = std::mem::take(&mut *self.rcon.borrow_mut());
        r.map(|_| body)
    }

    pub fn player(&self, index: u32, name: &str, connected: bool, admin: bool) {
        if let Ok(f) = self.f("player") {
            let _ = f.call::<()>((index, name, connected, admin));
        }
    }

    pub fn set_admin(&self, index: u32, admin: bool) {
        if let Ok(f) = self.f("set_admin") {
            let _ = f.call::<()>((index, admin));
        }
    }

    pub fn player_joined(&self, index: u32, first: bool) -> Result<(), String> {
        self.run("player_joined", (index, first))
    }

    pub fn player_left(&self, index: u32, reason: &str) -> Result<(), String> {
        self.run("player_left", (index, reason))
    }

    pub fn research(
        &self,
        tech: &str,
        level: Option<u32>,
        progress: Option<f64>,
    ) -> Result<(), String> {
        self.run("research", (tech, level, progress))
    }
}

#[cfg(test)]
mod tests;
