//! factorio-sim runs real Lua (issue 14, research/plugins.md §5.1): a save patched by hand the
//! way Clusterio patches saves (loader `control.lua`, the original as `scenario.lua`, a module
//! under `modules/`, `clusterio.json`) runs the module's own code in the sim, and what that code
//! does comes out on the sim's real channels: stdout lines, RCON replies, `script-output/`, the
//! save zip, the exit status.

mod common;
mod factorio_common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use factorio_common::*;
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(20);

const FREEPLAY_2_0: &str = "local handler = require(\"event_handler\")\nhandler.add_lib(require(\"freeplay\"))\n\nif script.active_mods[\"space-age\"] then\n  handler.add_lib(require(\"space-finish-script\"))\nelse\n  handler.add_lib(require(\"silo-script\"))\nend\n";
const FREEPLAY_0_17: &str = "local handler = require(\"event_handler\")\nhandler.add_lib(require(\"freeplay\"))\nhandler.add_lib(require(\"silo-script\"))\n";

const LOADER: &str = "-- loader written by the test\nclusterio_patch_number = 1\n\nlocal event_handler = require(\"event_handler\")\n\n-- Scenario modules\nrequire(\"scenario\")\n\n-- Clusterio modules\nevent_handler.add_lib(require(\"modules/test/main\"))\n";

/// A tiny module in the shape of a Clusterio module (written for this test).
const MODULE: &str = r#"local util = require("util")
local names = require("names")
local lib = { events = {}, on_nth_tick = {} }

local function send(channel, data)
  print("\f$ipc:" .. channel .. "?j" .. helpers.table_to_json(data))
end

test_api = { send = send, loads = 0 }

-- What the core module provides to mods (clusterio_lib calls it); registered at file load.
remote.add_interface("clusterio_api", {
  get_file_no = function()
    storage.test.file_no = storage.test.file_no + 1
    return storage.test.file_no
  end,
})

function test_api.big(n)
  local data = helpers.table_to_json({ pad = string.rep("x", n) })
  storage.test.file_no = storage.test.file_no + 1
  local name = "clst_" .. storage.test.file_no .. ".json"
  helpers.write_file(name, data, false, 0)
  print("\f$ipc:big?f" .. name)
end

function test_boom()
  storage.test.boom = true
end

function lib.on_init()
  storage.test = { inits = 1, ticks = 0, nth = 0, file_no = 0 }
  send("test:init", { tick = game.tick, copy = util.table.deepcopy({ 1 })[1] })
end

function lib.on_load()
  test_api.loads = test_api.loads + 1
  send("test:load", { loads = test_api.loads })
end

lib.events[defines.events.on_tick] = function(e)
  storage.test.ticks = storage.test.ticks + 1
  if storage.test.boom then
    error("module bug at tick " .. e.tick)
  end
end

lib.on_nth_tick[30] = function()
  storage.test.nth = storage.test.nth + 1
end

local function player_name(e)
  return game.get_player(e.player_index).name
end

lib.events[defines.events.on_player_created] = function(e)
  send("test:created", { name = player_name(e) })
end
lib.events[defines.events.on_player_joined_game] = function(e)
  send("player_event", { type = "join", name = player_name(e) })
end
lib.events[defines.events.on_pre_player_left_game] = function(e)
  send("test:pre_leave", { name = player_name(e), connected = game.get_player(e.player_index).connected })
end
lib.events[defines.events.on_player_left_game] = function(e)
  send("player_event", { type = "leave", name = player_name(e), reason = names.reason(e.reason) })
end
lib.events[defines.events.on_player_banned] = function(e)
  send("player_event", { type = "BAN", name = e.player_name, reason = e.reason })
end
lib.events[defines.events.on_player_unbanned] = function(e)
  send("player_event", { type = "UNBANNED", name = e.player_name })
end
lib.events[defines.events.on_player_promoted] = function(e)
  send("player_event", { type = "PROMOTE", name = player_name(e), admin = game.get_player(e.player_index).admin })
end
lib.events[defines.events.on_player_demoted] = function(e)
  send("player_event", { type = "DEMOTE", name = player_name(e) })
end
lib.events[defines.events.on_research_started] = function(e)
  send("test:research", { event = "started", name = e.research.name, progress = e.research.force.research_progress })
end
lib.events[defines.events.on_research_finished] = function(e)
  send("test:research", { event = "finished", name = e.research.name, researched = e.research.researched })
end

function lib.add_commands()
  commands.add_command("test-cmd", "answers", function(c)
    rcon.print("pong " .. tostring(c.parameter) .. " " .. tostring(c.player_index))
  end)
end

return lib
"#;

/// Required relatively from the module (`require("names")` in `modules/test/main.lua`).
const NAMES: &str = r#"local names = {}
function names.reason(r)
  for k, v in pairs(defines.disconnect_reason) do
    if v == r then
      return k
    end
  end
  return "quit"
end
return names
"#;

fn clusterio_json() -> String {
    serde_json::to_string_pretty(&json!({
        "version": 1,
        "patch_number": 1,
        "scenario": {"name": "freeplay", "version": "2.0.0", "dependencies": {}, "require": ["scenario"], "load": []},
        "modules": [{"name": "test", "version": "0.0.0", "dependencies": {}, "require": [], "load": ["main.lua"],
                     "files": ["modules/test/main.lua", "modules/test/names.lua"]}],
    }))
    .unwrap()
}

fn module_files() -> Vec<(String, Vec<u8>)> {
    vec![
        ("control.lua".into(), LOADER.as_bytes().to_vec()),
        ("modules/test/main.lua".into(), MODULE.as_bytes().to_vec()),
        ("modules/test/names.lua".into(), NAMES.as_bytes().to_vec()),
        ("clusterio.json".into(), clusterio_json().into_bytes()),
        (
            "locale/en/test-strings.cfg".into(),
            b"[test]\nx=y\n".to_vec(),
        ),
    ]
}

/// All entries of a save zip, by full name.
fn entries(path: &Path) -> Vec<(String, Vec<u8>)> {
    let mut z = zip::ZipArchive::new(std::fs::File::open(path).unwrap()).unwrap();
    (0..z.len())
        .map(|i| {
            let mut f = z.by_index(i).unwrap();
            let mut d = Vec::new();
            f.read_to_end(&mut d).unwrap();
            (f.name().unwrap().to_string(), d)
        })
        .collect()
}

fn entry(path: &Path, rel: &str) -> Option<Vec<u8>> {
    entries(path)
        .into_iter()
        .find(|(n, _)| n.split_once('/').map(|(_, r)| r) == Some(rel))
        .map(|(_, d)| d)
}

fn write_zip(path: &Path, entries: &[(String, Vec<u8>)]) {
    let mut z = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    for (n, d) in entries {
        z.start_file(n.as_str(), zip::write::SimpleFileOptions::default())
            .unwrap();
        z.write_all(d).unwrap();
    }
    z.finish().unwrap();
}

/// Patch a save like Clusterio: the original control.lua becomes scenario.lua, the loader and
/// the module files are added; everything else is kept.
fn patch(save: &Path) {
    let old = entries(save);
    let root = old[0].0.split_once('/').unwrap().0.to_string();
    let control = old
        .iter()
        .find(|(n, _)| *n == format!("{root}/control.lua"))
        .map(|(_, d)| d.clone())
        .expect("control.lua in the save");
    let replaced: Vec<String> = module_files()
        .into_iter()
        .map(|(rel, _)| format!("{root}/{rel}"))
        .chain([format!("{root}/scenario.lua")])
        .collect();
    let mut new: Vec<(String, Vec<u8>)> = old
        .into_iter()
        .filter(|(n, _)| !replaced.contains(n))
        .collect();
    new.push((format!("{root}/scenario.lua"), control));
    for (rel, d) in module_files() {
        new.push((format!("{root}/{rel}"), d));
    }
    write_zip(save, &new);
}

/// A patched save the level script never ran on (no sim state inside): its first load runs
/// `on_init`.
fn fresh_patched_save(dir: &Path) -> PathBuf {
    let save = dir.join("saves/patched.zip");
    std::fs::create_dir_all(save.parent().unwrap()).unwrap();
    let mut e = vec![
        ("patched/level.dat0".to_string(), vec![0x78, 0x01, 0, 0]),
        (
            "patched/scenario.lua".to_string(),
            FREEPLAY_2_0.as_bytes().to_vec(),
        ),
    ];
    for (rel, d) in module_files() {
        e.push((format!("patched/{rel}"), d));
    }
    write_zip(&save, &e);
    save
}

fn start(inst: &SimInstall, dir: &Path, save: &Path, env: &[(&str, &str)]) -> (Proc, RawRcon) {
    let mut cmd = server_cmd(inst, dir, save);
    cmd.env("FACTORIO_STANDIN_ACHIEVEMENT_GATE", "off");
    cmd.envs(env.iter().copied());
    let p = Proc::spawn(cmd);
    let (_, rcon) = p.wait_ready();
    let mut c = RawRcon::connect(rcon.expect("rcon"));
    c.auth("secret");
    (p, c)
}

/// The JSON payloads of `\f$ipc:<channel>?j…` lines on stdout, in order.
fn ipc(p: &Proc, channel: &str) -> Vec<Value> {
    let prefix = format!("\u{c}$ipc:{channel}?j");
    p.lines()
        .iter()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(|j| serde_json::from_str(j).unwrap())
        .collect()
}

fn wait_ipc(p: &Proc, channel: &str, n: usize) -> Vec<Value> {
    p.wait_for_nth(&format!("\u{c}$ipc:{channel}?"), n, T);
    ipc(p, channel)
}

fn quit(p: &mut Proc, c: &mut RawRcon) {
    c.send(99, 2, "/quit");
    assert_eq!(p.wait_exit(T), Some(0), "{}", p.text());
}

#[test]
fn patched_save_runs_the_modules_lua_on_init_then_on_load_with_storage_kept() {
    let inst = SimInstall::new();
    let dir = inst.instance("a");
    let save = fresh_patched_save(&dir);
    let (mut p, mut c) = start(&inst, &dir, &save, &[]);
    // on_init ran the module's code: its print is a raw stdout line (no prefix).
    let init = wait_ipc(&p, "test:init", 0);
    assert_eq!(init, vec![json!({"tick": 0, "copy": 1})]);
    assert!(ipc(&p, "test:load").is_empty());
    assert!(
        p.lines()
            .iter()
            .any(|l| l.starts_with("\u{c}$ipc:test:init?j")),
        "IPC line must start the line"
    );
    // /sc runs in the level state: module globals and storage are there.
    assert_eq!(
        c.exec(2, "/sc rcon.print(type(test_api) .. ' ' .. storage.test.inits .. ' ' .. clusterio_patch_number)"),
        "table 1 1\n"
    );
    assert_eq!(c.exec(3, "/sc storage.test.note = 'kept'"), "");
    quit(&mut p, &mut c);

    // Script files were written back byte-identical by the quit save.
    for (rel, d) in module_files() {
        assert_eq!(entry(&save, &rel).as_deref(), Some(&d[..]), "{rel}");
    }
    assert_eq!(
        entry(&save, "scenario.lua").as_deref(),
        Some(FREEPLAY_2_0.as_bytes())
    );

    // Restart: on_load (not on_init) and the storage as it was saved.
    let (mut p, mut c) = start(&inst, &dir, &save, &[]);
    assert_eq!(wait_ipc(&p, "test:load", 0), vec![json!({"loads": 1})]);
    assert!(ipc(&p, "test:init").is_empty());
    assert_eq!(
        c.exec(
            2,
            "/silent-command rcon.print(storage.test.note .. storage.test.inits)"
        ),
        "kept1\n"
    );
    quit(&mut p, &mut c);
}

#[test]
fn ticks_run_on_tick_and_on_nth_tick_and_nothing_while_auto_paused() {
    let inst = SimInstall::new();
    let dir = inst.instance("a");
    let save = fresh_patched_save(&dir);
    let (_p, mut c) = start(&inst, &dir, &save, &[]);
    // No players and auto_pause (default): the game does not tick by itself.
    let read = "/sc rcon.print(storage.test.ticks .. ' ' .. storage.test.nth .. ' ' .. game.tick)";
    assert_eq!(c.exec(2, read), "0 0 0\n");
    assert_eq!(c.exec(3, "/standin tick 90"), "ok\n");
    assert_eq!(c.exec(4, read), "90 3 90\n");
    assert_eq!(c.exec(5, "/standin tick 29"), "ok\n");
    assert_eq!(c.exec(6, read), "119 3 119\n");
    assert_eq!(c.exec(7, "/standin tick 1"), "ok\n");
    assert_eq!(c.exec(8, read), "120 4 120\n");
    assert_eq!(c.exec(9, read), "120 4 120\n");
}

#[test]
fn rcon_lua_is_the_level_state_and_sandboxed_like_factorio() {
    let inst = SimInstall::new();
    let dir = inst.instance("a");
    let save = fresh_patched_save(&dir);
    let (p, mut c) = start(&inst, &dir, &save, &[]);
    assert_eq!(
        c.exec(
            2,
            "/sc rcon.print(tostring(io) .. tostring(os) .. tostring(loadfile) .. tostring(dofile))"
        ),
        "nilnilnilnil\n"
    );
    let r = c.exec(3, "/sc require('util')");
    assert!(
        r.starts_with("Cannot execute command. Error: [string \"require('util')\"]:1: Require can't be used outside of control.lua parsing."),
        "{r}"
    );
    p.wait_for("Cannot execute command. Error: [string \"require('util')\"]");
    let r = c.exec(4, "/sc local x = nil; x.y = 1");
    assert_eq!(
        r,
        "Cannot execute command. Error: [string \"local x = nil; x.y = 1\"]:1: attempt to index local 'x' (a nil value)\n"
    );
    // /c logs the command, then runs it in the same state.
    assert_eq!(c.exec(5, "/c rcon.print(test_api.loads)"), "0\n");
    p.wait_for("[COMMAND] <server> (command): rcon.print(test_api.loads)");
    // print and log from a command.
    c.exec(6, "/sc print('raw line from lua') log('logged')");
    p.wait_for("raw line from lua");
    assert!(p.lines().iter().any(|l| l == "raw line from lua"));
    p.wait_for("Script =(command):1: logged");
    // helpers.write_file: under script-output, `..` refused.
    assert_eq!(
        c.exec(7, "/sc helpers.write_file('sub/out.txt', 'data')"),
        ""
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("script-output/sub/out.txt")).unwrap(),
        "data"
    );
    let r = c.exec(8, "/sc helpers.write_file('../escape.txt', 'x')");
    assert!(r.contains("Path contains invalid characters"), "{r}");
    assert!(!dir.join("escape.txt").exists());
    // JSON fidelity.
    assert_eq!(
        c.exec(
            9,
            "/sc rcon.print(helpers.table_to_json({}) .. helpers.table_to_json({1, 'a', {}}))"
        ),
        "{}[1,\"a\",{}]\n"
    );
    // A command the module added, run from RCON with player_index nil.
    assert_eq!(c.exec(10, "/test-cmd hello"), "pong hello nil\n");
    assert_eq!(c.exec(11, "/test-cmd"), "pong nil nil\n");
    // A big payload goes through script-output, as the module decides.
    assert_eq!(c.exec(12, "/sc test_api.big(5000)"), "");
    p.wait_for("\u{c}$ipc:big?fclst_1.json");
    let f: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("script-output/clst_1.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(f["pad"].as_str().unwrap().len(), 5000);
}

#[test]
fn a_handler_error_crashes_the_game_with_the_lua_traceback() {
    let inst = SimInstall::new();
    let dir = inst.instance("a");
    let save = fresh_patched_save(&dir);
    let before = std::fs::read(&save).unwrap();
    let (mut p, mut c) = start(&inst, &dir, &save, &[]);
    c.exec(2, "/standin tick 5");
    assert_eq!(c.exec(3, "/sc test_boom()"), "");
    c.send(4, 2, "/standin tick 1");
    assert_eq!(p.wait_exit(T), Some(1), "{}", p.text());
    let text = p.text();
    let at = text
        .find("Error MainLoop.cpp:1510: Exception at tick 6: Error while running event level::on_tick (ID 0)")
        .unwrap_or_else(|| panic!("{text}"));
    let rest = &text[at..];
    let lines: Vec<&str> = rest.lines().collect();
    assert!(
        lines[1].starts_with("__level__/modules/test/main.lua:")
            && lines[1].ends_with(": module bug at tick 6"),
        "{rest}"
    );
    assert_eq!(lines[2], "stack traceback:");
    assert_eq!(lines[3], "[C]: in function 'error'");
    assert!(
        lines[4].starts_with("__level__/modules/test/main.lua:"),
        "{rest}"
    );
    assert!(text.contains("changing state from(InGame) to(Failed)"));
    assert!(text.contains("Quitting: multiplayer error."));
    // No save on a crash.
    assert_eq!(std::fs::read(&save).unwrap(), before);
}

#[test]
fn sim_verbs_raise_the_real_events() {
    let inst = SimInstall::new();
    let dir = inst.instance("a");
    let save = fresh_patched_save(&dir);
    let (mut p, mut c) = start(&inst, &dir, &save, &[]);
    assert_eq!(c.exec(2, "/standin join Alice"), "ok\n");
    p.wait_for("[JOIN] Alice joined the game");
    assert_eq!(
        wait_ipc(&p, "player_event", 0),
        vec![json!({"type": "join", "name": "Alice"})]
    );
    assert_eq!(ipc(&p, "test:created"), vec![json!({"name": "Alice"})]);
    assert_eq!(c.exec(3, "/standin leave Alice"), "ok\n");
    p.wait_for("[LEAVE] Alice left the game");
    assert_eq!(
        ipc(&p, "test:pre_leave"),
        vec![json!({"name": "Alice", "connected": true})]
    );
    // Second visit: joined, not created again.
    assert_eq!(c.exec(4, "/standin join Alice"), "ok\n");
    assert_eq!(c.exec(5, "/standin promote Alice"), "ok\n");
    p.wait_for("[PROMOTE] Alice was promoted to admin by <server>.");
    assert_eq!(c.exec(6, "/demote Alice"), "");
    assert_eq!(c.exec(7, "/standin ban Bob griefing"), "ok\n");
    p.wait_for("[BAN] Bob (not on map) was banned by <server>. Reason: griefing.");
    assert_eq!(c.exec(8, "/standin unban Bob"), "ok\n");
    assert_eq!(c.exec(9, "/kick Alice afk"), "");
    let events = wait_ipc(&p, "player_event", 7);
    assert_eq!(
        events,
        vec![
            json!({"type": "join", "name": "Alice"}),
            json!({"type": "leave", "name": "Alice", "reason": "quit"}),
            json!({"type": "join", "name": "Alice"}),
            json!({"type": "PROMOTE", "name": "Alice", "admin": true}),
            json!({"type": "DEMOTE", "name": "Alice"}),
            json!({"type": "BAN", "name": "Bob", "reason": "griefing"}),
            json!({"type": "UNBANNED", "name": "Bob"}),
            json!({"type": "leave", "name": "Alice", "reason": "kicked"}),
        ]
    );
    assert_eq!(ipc(&p, "test:created").len(), 1);
    // Research: started with progress, then finished; the tech state is visible to Lua and saved.
    assert_eq!(c.exec(10, "/standin research automation 1 0.25"), "ok\n");
    assert_eq!(c.exec(11, "/standin research automation"), "ok\n");
    let r = wait_ipc(&p, "test:research", 1);
    assert_eq!(
        r,
        vec![
            json!({"event": "started", "name": "automation", "progress": 0.25}),
            json!({"event": "finished", "name": "automation", "researched": true}),
        ]
    );
    quit(&mut p, &mut c);
    let (_p, mut c) = start(&inst, &dir, &save, &[]);
    assert_eq!(
        c.exec(
            2,
            "/sc rcon.print(game.forces.player.technologies.automation.researched)"
        ),
        "true\n"
    );
}

#[test]
fn autosave_keeps_the_script_files() {
    let inst = SimInstall::new();
    let dir = inst.instance("a");
    let save = fresh_patched_save(&dir);
    let (p, mut c) = start(
        &inst,
        &dir,
        &save,
        &[("FACTORIO_STANDIN_AUTOSAVE_SECS", "0.3")],
    );
    c.exec(2, "/standin join Alice");
    p.wait_for("Saving to _autosave1 (blocking).");
    p.wait_for("Saving finished");
    let auto = dir.join("saves/_autosave1.zip");
    for (rel, d) in module_files() {
        assert_eq!(entry(&auto, &rel).as_deref(), Some(&d[..]), "{rel}");
    }
    assert!(entry(&auto, "level.dat0").is_some());
}

#[test]
fn new_maps_carry_the_real_freeplay_control_lua() {
    let inst = SimInstall::new();
    let dir = inst.instance("a");
    let save = inst.create(&dir, "world");
    assert_eq!(
        entry(&save, "control.lua").as_deref(),
        Some(FREEPLAY_2_0.as_bytes())
    );
    let old = SimInstall::with_version("1.1.110");
    let dir_old = old.instance("b");
    let save_old = old.create(&dir_old, "world");
    assert_eq!(
        entry(&save_old, "control.lua").as_deref(),
        Some(FREEPLAY_0_17.as_bytes())
    );
    let out = inst
        .cmd(&dir)
        .env("FACTORIO_STANDIN_SCENARIO", "unknown")
        .arg("--create")
        .arg(dir.join("saves/custom.zip"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let custom = entry(&dir.join("saves/custom.zip"), "control.lua").unwrap();
    assert_ne!(custom, FREEPLAY_2_0.as_bytes());
    assert_ne!(custom, FREEPLAY_0_17.as_bytes());
    // A created map already ran on_init; patching it and starting runs the module's on_load.
    patch(&save);
    let (mut p, mut c) = start(&inst, &dir, &save, &[]);
    wait_ipc(&p, "test:load", 0);
    assert!(ipc(&p, "test:init").is_empty());
    assert_eq!(
        c.exec(2, "/sc rcon.print(remote.interfaces.freeplay ~= nil)"),
        "true\n"
    );
    quit(&mut p, &mut c);
}

#[test]
fn migrate_level_knob_puts_the_stock_control_lua_back() {
    let inst = SimInstall::new();
    let dir = inst.instance("a");
    let save = inst.create(&dir, "world");
    patch(&save);
    let (mut p, mut c) = start(
        &inst,
        &dir,
        &save,
        &[("FACTORIO_STANDIN_MIGRATE_LEVEL", "1")],
    );
    // The module is gone: what a host's first call then meets.
    assert_eq!(
        c.exec(2, "/sc clusterio_private.update_instance(1, 'x')"),
        "Cannot execute command. Error: [string \"clusterio_private.update_instance(1, 'x')\"]:1: attempt to index global 'clusterio_private' (a nil value)\n"
    );
    assert_eq!(c.exec(3, "/sc rcon.print(type(test_api))"), "nil\n");
    assert!(ipc(&p, "test:load").is_empty());
    quit(&mut p, &mut c);
    assert_eq!(
        entry(&save, "control.lua").as_deref(),
        Some(FREEPLAY_2_0.as_bytes())
    );
    for gone in ["scenario.lua", "clusterio.json", "modules/test/main.lua"] {
        assert!(entry(&save, gone).is_none(), "{gone} still in the save");
    }
    // Files outside the patch's reach stay.
    assert!(entry(&save, "locale/en/test-strings.cfg").is_some());
    // Like the real update, once per save: a re-patched save keeps its patch with the knob on.
    patch(&save);
    let (mut p, mut c) = start(
        &inst,
        &dir,
        &save,
        &[("FACTORIO_STANDIN_MIGRATE_LEVEL", "1")],
    );
    wait_ipc(&p, "test:load", 0);
    assert_eq!(c.exec(2, "/sc rcon.print(type(test_api))"), "table\n");
    quit(&mut p, &mut c);
    // `always` migrates at every load.
    let (mut p, mut c) = start(
        &inst,
        &dir,
        &save,
        &[("FACTORIO_STANDIN_MIGRATE_LEVEL", "always")],
    );
    assert_eq!(c.exec(2, "/sc rcon.print(type(test_api))"), "nil\n");
    quit(&mut p, &mut c);
}

const MOD_CONTROL: &str = r#"script.on_init(function()
  storage.inits = (storage.inits or 0) + 1
  storage.seen = {}
end)
script.on_event(defines.events.on_player_joined_game, function(e)
  storage.seen[#storage.seen + 1] = game.get_player(e.player_index).name
end)
remote.add_interface("standin-mod", {
  echo = function(x) return x, storage.inits end,
})
function mod_global() return "mine" end
"#;

/// Install a mod with a control stage into the instance's mods dir and enable it.
fn install_mod(dir: &Path) {
    let mods = dir.join("mods");
    std::fs::create_dir_all(&mods).unwrap();
    write_zip(
        &mods.join("standin-mod_0.1.0.zip"),
        &[
            (
                "standin-mod_0.1.0/info.json".into(),
                br#"{"name": "standin-mod", "version": "0.1.0", "title": "Standin Mod"}"#.to_vec(),
            ),
            (
                "standin-mod_0.1.0/control.lua".into(),
                MOD_CONTROL.as_bytes().to_vec(),
            ),
        ],
    );
    std::fs::write(
        mods.join("mod-list.json"),
        r#"{"mods": [{"name": "base", "enabled": true}, {"name": "standin-mod", "enabled": true}]}"#,
    )
    .unwrap();
}

#[test]
fn mods_run_in_their_own_lua_state() {
    let inst = SimInstall::new();
    let dir = inst.instance("a");
    install_mod(&dir);
    let save = fresh_patched_save(&dir);
    let (mut p, mut c) = start(&inst, &dir, &save, &[]);
    assert_eq!(
        c.exec(
            2,
            "/sc __standin-mod__ rcon.print(mod_global() .. script.mod_name)"
        ),
        "minestandin-mod\n"
    );
    // The level does not see the mod's globals; remote calls cross the states, copying data.
    assert_eq!(c.exec(3, "/sc rcon.print(type(mod_global))"), "nil\n");
    assert_eq!(
        c.exec(
            4,
            "/sc local t, n = remote.call('standin-mod', 'echo', {a = 1}) rcon.print(t.a .. n)"
        ),
        "11\n"
    );
    assert_eq!(
        c.exec(5, "/sc __standin-mod__ rcon.print(tostring(remote.interfaces.freeplay ~= nil) .. tostring(remote.call('freeplay', 'get_skip_intro')))"),
        "truefalse\n"
    );
    assert_eq!(
        c.exec(6, "/sc rcon.print(remote.interfaces['standin-mod'].echo)"),
        "true\n"
    );
    c.exec(7, "/standin join Alice");
    assert_eq!(
        c.exec(
            8,
            "/sc __standin-mod__ rcon.print(storage.inits .. storage.seen[1])"
        ),
        "1Alice\n"
    );
    quit(&mut p, &mut c);
    // The mod's storage is saved with the map; a restart runs its on_load, not on_init.
    let (mut p, mut c) = start(&inst, &dir, &save, &[]);
    assert_eq!(
        c.exec(
            2,
            "/sc __standin-mod__ rcon.print(storage.inits .. #storage.seen)"
        ),
        "11\n"
    );
    // A mod's handler error names the mod, like the real crash transcript.
    c.exec(
        3,
        "/sc __standin-mod__ script.on_nth_tick(1, function() error('mod bug') end)",
    );
    c.send(4, 2, "/standin tick 1");
    assert_eq!(p.wait_exit(T), Some(1), "{}", p.text());
    let text = p.text();
    assert!(
        text.contains(": The mod Standin Mod (0.1.0) caused a non-recoverable error.\nPlease report this error to the mod author.\n\nError while running event standin-mod::on_nth_tick(1)\n"),
        "{text}"
    );
}

#[test]
fn subspace_storage_stand_in_mod_speaks_the_real_channels() {
    let inst = SimInstall::new();
    let dir = inst.instance("a");
    let st = std::process::Command::new(common::bin("factorio-sim"))
        .arg("install-mod")
        .arg("subspace_storage")
        .arg(dir.join("mods"))
        .status()
        .unwrap();
    assert!(st.success());
    assert!(dir.join("mods/subspace_storage_2.2.20.zip").is_file());
    let save = fresh_patched_save(&dir);
    let (p, mut c) = start(&inst, &dir, &save, &[]);
    p.wait_for("Loading mod subspace_storage 2.2.20 (data.lua)");
    let ping = "/sc __subspace_storage__ global.ticksSinceMasterPinged = 0";
    assert_eq!(c.exec(2, ping), "");
    assert_eq!(c.exec(3, "/standin subspace put iron-plate 100"), "ok\n");
    assert_eq!(c.exec(4, "/standin tick 62"), "ok\n");
    assert_eq!(
        wait_ipc(&p, "subspace_storage:output", 0),
        vec![json!([["iron-plate", 100, "normal"]])]
    );
    assert_eq!(
        c.exec(5, "/standin subspace request copper-plate 50"),
        "ok\n"
    );
    assert_eq!(c.exec(6, "/standin tick 62"), "ok\n");
    assert_eq!(
        wait_ipc(&p, "subspace_storage:orders", 0),
        vec![json!([["copper-plate", 50, "normal"]])]
    );
    // The host grants 30: the extractor takes them, the next order is for the rest.
    assert_eq!(
        c.exec(
            7,
            "/sc __subspace_storage__ Import('[[\"copper-plate\",30,\"normal\"]]')"
        ),
        ""
    );
    assert_eq!(c.exec(8, ping), "");
    assert_eq!(c.exec(9, "/standin tick 62"), "ok\n");
    assert_eq!(
        wait_ipc(&p, "subspace_storage:orders", 1)[1],
        json!([["copper-plate", 20, "normal"]])
    );
    assert_eq!(
        c.exec(
            10,
            "/sc __subspace_storage__ rcon.print(global.extracted['copper-plate:normal'])"
        ),
        "30\n"
    );
    // Without pings for 300 ticks the mod stops exchanging.
    assert_eq!(c.exec(11, "/standin tick 300"), "ok\n");
    assert_eq!(c.exec(12, "/standin subspace put iron-plate 5"), "ok\n");
    assert_eq!(c.exec(13, "/standin tick 62"), "ok\n");
    assert_eq!(
        c.exec(
            14,
            "/sc __subspace_storage__ rcon.print(global.injected['iron-plate:normal'][2])"
        ),
        "5\n"
    );
    assert_eq!(ipc(&p, "subspace_storage:output").len(), 1);
    // The controller's inventory, as the host sends it.
    assert_eq!(
        c.exec(
            15,
            "/sc __subspace_storage__ UpdateInvData('[[\"iron-plate\",7,\"normal\"]]', true)"
        ),
        ""
    );
    let inv: Value = serde_json::from_str(
        c.exec(
            16,
            "/sc __subspace_storage__ rcon.print(helpers.table_to_json(global.invdata))",
        )
        .trim_end(),
    )
    .unwrap();
    assert_eq!(
        inv,
        json!({"iron-plate:normal": ["iron-plate", 7, "normal"]})
    );
    // Bad verb input is refused, not a crash.
    assert!(
        c.exec(17, "/standin subspace put 'x' 1")
            .starts_with("usage:")
    );
}
