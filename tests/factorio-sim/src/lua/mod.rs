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

#[derive(Clone)]
pub struct Setup {
    pub is_1_1: bool,
    pub version: String,
    pub active_mods: Vec<(String, String)>,
    pub seed: u64,
    /// The level's script files, relative to the save root.
    pub files: Vec<(String, Vec<u8>)>,
    pub script_output: PathBuf,
}

/// A mod with a control stage: its own Lua state, files addressed as `__name__/…`.
#[derive(Clone, Debug)]
pub struct ModInfo {
    pub name: String,
    pub version: String,
    pub title: String,
    pub files: Vec<(String, Vec<u8>)>,
}

/// What the Lua states of one game share: every state's source files (`level`, `mod:<name>`)
/// and the remote interfaces (which state owns which).
#[derive(Default)]
pub struct Shared {
    sources: RefCell<HashMap<String, HashMap<String, Vec<u8>>>>,
    states: RefCell<Vec<(String, Lua, Table)>>,
    remotes: RefCell<HashMap<String, String>>,
    /// What `game.print` / `player.print` showed (sim-only: read with `/standin printed`).
    printed: RefCell<Vec<String>>,
}

impl Shared {
    pub fn new(level_files: &[(String, Vec<u8>)], mods: &[ModInfo]) -> Rc<Shared> {
        let s = Shared::default();
        {
            let mut src = s.sources.borrow_mut();
            src.insert("level".into(), level_files.iter().cloned().collect());
            for m in mods {
                src.insert(format!("mod:{}", m.name), m.files.iter().cloned().collect());
            }
        }
        Rc::new(s)
    }

    pub fn printed(&self) -> Vec<String> {
        self.printed.borrow().clone()
    }

    fn state(&self, owner: &str) -> Option<(Lua, Table)> {
        self.states
            .borrow()
            .iter()
            .find(|(o, _, _)| o == owner)
            .map(|(_, l, a)| (l.clone(), a.clone()))
    }
}

pub struct Runtime {
    lua: Lua,
    api: Table,
    rcon: Rc<RefCell<String>>,
    mods: Json,
    pub owner: String,
}

fn object_ref(t: &Table) -> Option<String> {
    t.metatable()
        .and_then(|m| m.raw_get::<Option<String>>("__sim_object").ok().flatten())
}

/// Copy values from one Lua state into another (remote calls): data only, as in Factorio.
fn copy_values(
    values: mlua::MultiValue,
    to: &Lua,
    to_api: &Table,
) -> mlua::Result<mlua::MultiValue> {
    let object = to_api.get::<Function>("object")?;
    let lookup = |r: &str| object.call::<Value>(r);
    let mut out = mlua::MultiValue::new();
    for v in values {
        let j = json::Encoder::new(&object_ref)
            .encode_root(&v, "remote call argument")
            .map_err(mlua::Error::RuntimeError)?;
        out.push_back(json::decode(to, &j, &lookup)?);
    }
    Ok(out)
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
    /// The level's state, alone (tests; a game without mods).
    #[cfg(test)]
    pub fn new(setup: Setup, log: Log) -> Result<Runtime, String> {
        let shared = Shared::new(&setup.files, &[]);
        Runtime::with(setup, None, log, shared)
    }

    /// The level's state (`module` None) or a mod's, registered in `shared`.
    pub fn with(
        setup: Setup,
        module: Option<&ModInfo>,
        log: Log,
        shared: Rc<Shared>,
    ) -> Result<Runtime, String> {
        // SAFETY: the debug library is loaded on purpose (Factorio's Lua has `debug`); the
        // prelude removes io/os and the other functions Factorio does not offer.
        let lua = unsafe {
            Lua::unsafe_new_with(StdLib::ALL_SAFE | StdLib::DEBUG, LuaOptions::default())
        };
        let rcon = Rc::new(RefCell::new(String::new()));
        let owner = module
            .map(|m| m.name.clone())
            .unwrap_or_else(|| "level".into());
        let prefix = match module {
            Some(m) => format!(
                "The mod {} ({}) caused a non-recoverable error.\nPlease report this error to the mod author.\n\n",
                m.title, m.version
            ),
            None => String::new(),
        };
        let api = Self::build(
            &lua,
            &setup,
            log,
            rcon.clone(),
            &owner,
            &prefix,
            shared.clone(),
        )
        .map_err(err_text)?;
        shared
            .states
            .borrow_mut()
            .push((owner.clone(), lua.clone(), api.clone()));
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
            owner,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn build(
        lua: &Lua,
        s: &Setup,
        log: Log,
        rcon: Rc<RefCell<String>>,
        owner: &str,
        crash_prefix: &str,
        shared: Rc<Shared>,
    ) -> mlua::Result<Table> {
        let sim = lua.create_table()?;
        sim.set("is_1_1", s.is_1_1)?;
        sim.set("owner", owner)?;
        sim.set("crash_prefix", crash_prefix)?;
        let (sh, me) = (shared.clone(), owner.to_string());
        sim.set(
            "remote_add",
            lua.create_function(move |_, name: String| {
                let mut r = sh.remotes.borrow_mut();
                if r.contains_key(&name) {
                    return Ok(false);
                }
                r.insert(name, me.clone());
                Ok(true)
            })?,
        )?;
        let sh = shared.clone();
        sim.set(
            "remote_remove",
            lua.create_function(move |_, name: String| {
                sh.remotes.borrow_mut().remove(&name);
                Ok(())
            })?,
        )?;
        let (sh, me) = (shared.clone(), owner.to_string());
        sim.set(
            "remote_interfaces",
            lua.create_function(move |lua, ()| {
                let out = lua.create_table()?;
                let owners: Vec<String> = sh
                    .states
                    .borrow()
                    .iter()
                    .map(|(o, _, _)| o.clone())
                    .filter(|o| *o != me)
                    .collect();
                for o in owners {
                    let Some((_, api)) = sh.state(&o) else {
                        continue;
                    };
                    let list = api.get::<Function>("local_interfaces")?.call::<Table>(())?;
                    for pair in list.pairs::<String, Table>() {
                        let (name, fns) = pair?;
                        let copy = lua.create_table()?;
                        for f in fns.pairs::<String, bool>() {
                            let (f, _) = f?;
                            copy.set(f, true)?;
                        }
                        out.set(name, copy)?;
                    }
                }
                Ok(out)
            })?,
        )?;
        let (sh, me) = (shared.clone(), owner.to_string());
        sim.set(
            "remote_call",
            lua.create_function(
                move |_, (name, func, args): (String, String, mlua::Variadic<Value>)| {
                    let owner = sh.remotes.borrow().get(&name).cloned();
                    let Some((to, to_api)) = owner.and_then(|o| sh.state(&o)) else {
                        return Err(mlua::Error::RuntimeError(format!(
                            "Unknown interface: {name}"
                        )));
                    };
                    let Some((from, from_api)) = sh.state(&me) else {
                        return Err(mlua::Error::RuntimeError("no such state".into()));
                    };
                    let mut call_args = mlua::MultiValue::new();
                    call_args.push_back(Value::String(to.create_string(&name)?));
                    call_args.push_back(Value::String(to.create_string(&func)?));
                    call_args.extend(copy_values(args.into_iter().collect(), &to, &to_api)?);
                    let results = to_api
                        .get::<Function>("remote_invoke")?
                        .call::<mlua::MultiValue>(call_args)
                        .map_err(|e| mlua::Error::RuntimeError(err_text(e)))?;
                    copy_values(results, &from, &from_api)
                },
            )?,
        )?;
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
        let sh = shared.clone();
        sim.set(
            "game_print",
            lua.create_function(move |_, text: mlua::LuaString| {
                sh.printed
                    .borrow_mut()
                    .push(text.to_string_lossy().to_string());
                Ok(())
            })?,
        )?;
        let sh = shared;
        sim.set(
            "source",
            lua.create_function(move |lua, (kind, path): (String, String)| {
                let text = match kind.as_str() {
                    "lualib" => LUALIB
                        .iter()
                        .find(|(n, _)| *n == path)
                        .map(|(_, t)| t.as_bytes().to_vec()),
                    k => sh
                        .sources
                        .borrow()
                        .get(k)
                        .and_then(|files| files.get(&path))
                        .cloned(),
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
        if let Some(p) = saved.get("players") {
            let v = self.decode(p).map_err(err_text)?;
            self.f("set_player_state")?
                .call::<()>(v)
                .map_err(err_text)?;
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
        json::decode(&self.lua, v, &lookup)
    }

    /// The persisted state: storage, technologies, the mods it ran with.
    pub fn snapshot(&self) -> Result<Json, String> {
        let object_of = |t: &Table| -> Option<String> {
            t.metatable()
                .and_then(|m| m.raw_get::<Option<String>>("__sim_object").ok().flatten())
        };
        let storage = self.f("storage")?.call::<Value>(()).map_err(err_text)?;
        let name = if self.is_1_1() { "global" } else { "storage" };
        let storage = json::Encoder::new(&object_of).encode_root(&storage, name)?;
        let techs = self.f("tech_state")?.call::<Value>(()).map_err(err_text)?;
        let no_objects = |_: &Table| None;
        let techs = json::Encoder::new(&no_objects).encode_root(&techs, "techs")?;
        let players = self
            .f("player_state")?
            .call::<Value>(())
            .map_err(err_text)?;
        let players = json::Encoder::new(&no_objects).encode_root(&players, "players")?;
        Ok(json!({
            "initialized": true,
            "storage": storage,
            "techs": techs,
            "players": players,
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
    /// Runs a command the script added: from the console/RCON (`player` None) or typed by a
    /// player.
    pub fn custom_command(
        &self,
        name: &str,
        parameter: Option<&str>,
        player: Option<u32>,
    ) -> Result<String, String> {
        self.rcon.borrow_mut().clear();
        let r = self.run("custom_command", (name, parameter, player));
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
        relative: bool,
    ) -> Result<(), String> {
        self.run("research", (tech, level, progress, relative))
    }

    /// Puts items into a player's character; how many went in.
    pub fn give(&self, player: &str, item: &str, count: u32) -> Result<u32, String> {
        let (n, err) = self
            .f("give")?
            .call::<(Option<f64>, Option<String>)>((player, item, count))
            .map_err(err_text)?;
        match (n, err) {
            (Some(n), _) => Ok(n as u32),
            (None, e) => Err(e.unwrap_or_else(|| "give failed".into())),
        }
    }

    /// A player's controller and items as JSON text.
    pub fn inventory(&self, player: &str) -> Result<String, String> {
        let (text, err) = self
            .f("inventory")?
            .call::<(Option<String>, Option<String>)>(player)
            .map_err(err_text)?;
        text.ok_or_else(|| err.unwrap_or_else(|| "inventory failed".into()))
    }
}

#[cfg(test)]
mod tests;

/// Every Lua state of a game: enabled mods' control stages (in load order), then the level.
/// Engine events, ticks and player changes reach each of them; `/sc __mod__ …` picks a mod's.
pub struct Scripts {
    mods: Vec<Runtime>,
    level: Runtime,
    shared: Rc<Shared>,
}

impl Scripts {
    /// Build the states and run `control.lua` of each mod and of the level, then `on_init` for a
    /// state with no saved data (a new map, or a mod added to this save), else the saved data
    /// and `on_load` (+ `on_configuration_changed` when the mod set changed).
    pub fn start(
        setup: Setup,
        mods: &[ModInfo],
        saved: Option<&Json>,
        log: &Log,
        before_main: impl Fn(&Runtime),
    ) -> Result<Scripts, String> {
        let shared = Shared::new(&setup.files, mods);
        let mut states = Vec::new();
        for m in mods {
            let rt = Runtime::with(setup.clone(), Some(m), log.clone(), shared.clone())?;
            states.push(rt);
        }
        let level = Runtime::with(setup, None, log.clone(), shared.clone())?;
        for rt in states.iter().chain(std::iter::once(&level)) {
            before_main(rt);
            if rt.has_level() {
                rt.run_main()?;
            }
        }
        let mod_states = saved.and_then(|s| s.get("mod_states"));
        for rt in &states {
            match mod_states.and_then(|m| m.get(&rt.owner)) {
                Some(s) => {
                    rt.load(s)?;
                    rt.configuration_changed(s)?;
                }
                None => rt.init()?,
            }
        }
        match saved {
            None => level.init()?,
            Some(s) => {
                level.load(s)?;
                level.configuration_changed(s)?;
            }
        }
        Ok(Scripts {
            mods: states,
            level,
            shared,
        })
    }

    fn all(&self) -> impl Iterator<Item = &Runtime> {
        self.mods.iter().chain(std::iter::once(&self.level))
    }

    fn each(&self, f: impl Fn(&Runtime) -> Result<(), String>) -> Result<(), String> {
        for rt in self.all() {
            f(rt)?;
        }
        Ok(())
    }

    pub fn snapshot(&self) -> Result<Json, String> {
        let mut snap = self.level.snapshot()?;
        let mut mods = serde_json::Map::new();
        for rt in &self.mods {
            mods.insert(rt.owner.clone(), rt.snapshot()?);
        }
        if let Some(o) = snap.as_object_mut() {
            o.insert("mod_states".into(), Json::Object(mods));
        }
        Ok(snap)
    }

    pub fn set_tick(&self, t: u64) {
        self.all().for_each(|rt| rt.set_tick(t));
    }

    pub fn wants_ticks(&self) -> bool {
        self.all().any(Runtime::wants_ticks)
    }

    pub fn tick(&self, t: u64) -> Result<(), String> {
        self.each(|rt| rt.tick(t))
    }

    pub fn raise(&self, event: &str, data: Json) -> Result<(), String> {
        self.each(|rt| rt.raise(event, data.clone()))
    }

    /// `/sc <code>` in the level, `/sc __mod__ <code>` in that mod's state.
    pub fn command(&self, code: &str) -> Result<String, (String, String)> {
        if let Some(rest) = code.strip_prefix("__")
            && let Some((name, code)) = rest.split_once("__")
            && let Some(rt) = self.mods.iter().find(|m| m.owner == name)
        {
            return rt.command(code.trim_start());
        }
        self.level.command(code)
    }

    pub fn has_command(&self, name: &str) -> bool {
        self.all().any(|rt| rt.has_command(name))
    }

    pub fn has_mod(&self, name: &str) -> bool {
        self.mods.iter().any(|m| m.owner == name)
    }

    pub fn custom_command(
        &self,
        name: &str,
        parameter: Option<&str>,
        player: Option<u32>,
    ) -> Result<String, String> {
        match self.all().find(|rt| rt.has_command(name)) {
            Some(rt) => rt.custom_command(name, parameter, player),
            None => Ok(String::new()),
        }
    }

    /// Everything `game.print` and `player.print` showed so far, in order.
    pub fn printed(&self) -> Vec<String> {
        self.shared.printed()
    }

    pub fn player(&self, index: u32, name: &str, connected: bool, admin: bool) {
        self.all()
            .for_each(|rt| rt.player(index, name, connected, admin));
    }

    pub fn set_admin(&self, index: u32, admin: bool) {
        self.all().for_each(|rt| rt.set_admin(index, admin));
    }

    pub fn player_joined(&self, index: u32, first: bool) -> Result<(), String> {
        self.each(|rt| rt.player_joined(index, first))
    }

    pub fn player_left(&self, index: u32, reason: &str) -> Result<(), String> {
        self.each(|rt| rt.player_left(index, reason))
    }

    pub fn research(
        &self,
        tech: &str,
        level: Option<u32>,
        progress: Option<f64>,
        relative: bool,
    ) -> Result<(), String> {
        self.each(|rt| rt.research(tech, level, progress, relative))
    }

    /// `/standin give`: into the player as the level script sees them.
    pub fn give(&self, player: &str, item: &str, count: u32) -> Result<u32, String> {
        self.level.give(player, item, count)
    }

    /// `/standin inventory`: the player as the level script sees them.
    pub fn inventory(&self, player: &str) -> Result<String, String> {
        self.level.inventory(player)
    }
}

/// Enabled mods with a control stage, from `<mods>/<name>_<version>.zip` (one top directory)
/// or an unpacked `<mods>/<name>_<version>/` or `<mods>/<name>/` directory.
pub fn load_mods(mods_dir: &Path, enabled: &[(String, String)], builtin: &[&str]) -> Vec<ModInfo> {
    let mut out = Vec::new();
    for (name, version) in enabled {
        if builtin.contains(&name.as_str()) {
            continue;
        }
        let zip = mods_dir.join(format!("{name}_{version}.zip"));
        let files = if zip.is_file() {
            read_mod_zip(&zip)
        } else {
            [format!("{name}_{version}"), name.clone()]
                .iter()
                .map(|d| mods_dir.join(d))
                .find(|d| d.is_dir())
                .map(|d| read_dir_files(&d))
                .unwrap_or_default()
        };
        if !files.iter().any(|(n, _)| n == "control.lua") {
            continue;
        }
        let title = files
            .iter()
            .find(|(n, _)| n == "info.json")
            .and_then(|(_, d)| serde_json::from_slice::<Json>(d).ok())
            .and_then(|v| v.get("title").and_then(|t| t.as_str()).map(String::from))
            .unwrap_or_else(|| name.clone());
        out.push(ModInfo {
            name: name.clone(),
            version: version.clone(),
            title,
            files,
        });
    }
    out
}

fn read_mod_zip(path: &Path) -> Vec<(String, Vec<u8>)> {
    use std::io::Read;
    let Ok(f) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let Ok(mut z) = zip::ZipArchive::new(f) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for i in 0..z.len() {
        let Ok(mut e) = z.by_index(i) else { continue };
        if e.is_dir() {
            continue;
        }
        let Some(rel) = e
            .name()
            .ok()
            .and_then(|n| n.split_once('/').map(|(_, r)| r.to_string()))
        else {
            continue;
        };
        let mut d = Vec::new();
        if e.read_to_end(&mut d).is_ok() {
            out.push((rel, d));
        }
    }
    out
}

fn read_dir_files(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let (Ok(rel), Ok(data)) = (p.strip_prefix(root), std::fs::read(&p)) {
                out.push((rel.to_string_lossy().into_owned(), data));
            }
        }
    }
    out
}
