use super::*;
use sha1::{Digest, Sha1};

fn sha1_hex(b: &[u8]) -> String {
    Sha1::digest(b).iter().map(|x| format!("{x:02x}")).collect()
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fsim-lua-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn rt_with(files: &[(&str, &str)], is_1_1: bool, out: &Path) -> Runtime {
    Runtime::new(
        Setup {
            is_1_1,
            version: if is_1_1 { "1.1.110" } else { "2.0.77" }.into(),
            active_mods: vec![("base".into(), "2.0.77".into())],
            seed: 7,
            files: files
                .iter()
                .map(|(n, t)| (n.to_string(), t.as_bytes().to_vec()))
                .collect(),
            script_output: out.to_path_buf(),
        },
        Log::new(std::time::Instant::now()),
    )
    .unwrap()
}

fn rt(files: &[(&str, &str)]) -> Runtime {
    rt_with(files, false, Path::new("/nonexistent"))
}

fn eval(rt: &Runtime, code: &str) -> String {
    rt.command(code).unwrap()
}

#[test]
fn freeplay_texts_have_the_known_hashes() {
    assert_eq!(
        sha1_hex(FREEPLAY_2_0.as_bytes()),
        "bcbdde18ce4ec16ebfd93bd694cd9b12ef969c9a"
    );
    assert_eq!(
        sha1_hex(FREEPLAY_0_17.as_bytes()),
        "4e866186ebe297f1038fd325b09df1a1f5e2fdd1"
    );
    let other = sha1_hex(UNKNOWN_SCENARIO.as_bytes());
    assert_ne!(other, "bcbdde18ce4ec16ebfd93bd694cd9b12ef969c9a");
    assert_ne!(other, "4e866186ebe297f1038fd325b09df1a1f5e2fdd1");
    // All three run with the sim's lualib.
    for (text, old) in [
        (FREEPLAY_2_0, false),
        (FREEPLAY_0_17, true),
        (UNKNOWN_SCENARIO, false),
    ] {
        let r = rt_with(&[("control.lua", text)], old, Path::new("/nonexistent"));
        r.run_main().unwrap();
        r.init().unwrap();
        assert_eq!(
            eval(&r, "rcon.print(remote.interfaces.freeplay ~= nil)"),
            "true\n"
        );
    }
}

#[test]
fn sandbox_is_factorios() {
    let r = rt(&[]);
    assert_eq!(
        eval(
            &r,
            "rcon.print(tostring(io)..tostring(os)..tostring(loadfile)..tostring(dofile)..tostring(string.dump)..tostring(package.loadlib))"
        ),
        "nilnilnilnilnilnil\n"
    );
    assert_eq!(
        eval(
            &r,
            "rcon.print(table_size({a=1,b=2,3}) .. type(log) .. type(localised_print))"
        ),
        "3functionfunction\n"
    );
    assert_eq!(eval(&r, "rcon.print(_VERSION)"), "Lua 5.2\n");
    // Text chunks load, bytecode does not.
    assert_eq!(eval(&r, "rcon.print(load('return 1+1')())"), "2\n");
    assert_eq!(
        eval(
            &r,
            "local f, e = load('\\27Lua'); rcon.print(f == nil, e ~= nil)"
        ),
        "true\n"
    );
    r.init().unwrap();
    let (e, _) = r.command("require('util')").unwrap_err();
    assert!(
        e.contains("Require can't be used outside of control.lua parsing."),
        "{e}"
    );
}

#[test]
fn command_errors_have_factorios_shape() {
    let r = rt(&[]);
    let (e, _) = r.command("blah").unwrap_err();
    assert!(
        e.starts_with("Cannot execute command. Error: [string \"blah\"]:1: "),
        "{e}"
    );
    let (e, body) = r.command("rcon.print('a') error('boom')").unwrap_err();
    assert_eq!(body, "a\n");
    assert_eq!(
        e,
        "Cannot execute command. Error: [string \"rcon.print('a') error('boom')\"]:1: boom"
    );
    assert_eq!(eval(&r, "rcon.print(string.rep('x', 10000))").len(), 10001);
}

#[test]
fn table_to_json_follows_factorio() {
    let r = rt(&[]);
    let j = |code: &str| -> serde_json::Value {
        let out = eval(&r, &format!("rcon.print(helpers.table_to_json({code}))"));
        serde_json::from_str(out.trim_end()).unwrap()
    };
    assert_eq!(eval(&r, "rcon.print(helpers.table_to_json({}))"), "{}\n");
    assert_eq!(j("{1, 2, 'x'}"), json!([1, 2, "x"]));
    assert_eq!(
        j("{a = 1, b = {true, false}}"),
        json!({"a": 1, "b": [true, false]})
    );
    // Not a sequence: an object with number keys as strings.
    assert_eq!(j("{[1] = 'a', [3] = 'c'}"), json!({"1": "a", "3": "c"}));
    assert_eq!(j("{x = {}}"), json!({"x": {}}));
    assert_eq!(j("{0.25, 1e20, -3}"), json!([0.25, 1e20, -3]));
    assert_eq!(j("{s = 'q\"\\\\\\n'}"), json!({"s": "q\"\\\n"}));
    assert_eq!(
        eval(&r, "rcon.print(helpers.table_to_json({1, 2}))"),
        "[1,2]\n"
    );
    let (e, _) = r.command("helpers.table_to_json({f = print})").unwrap_err();
    assert!(e.contains("function"), "{e}");
    // json_to_table: arrays are sequences, invalid JSON is nil.
    assert_eq!(
        eval(
            &r,
            "local t = helpers.json_to_table('{\"a\":[1,2,3],\"b\":{\"c\":\"d\"}}') rcon.print(#t.a)"
        ),
        "3\n"
    );
    assert_eq!(
        eval(
            &r,
            "local t = helpers.json_to_table('{\"a\":[1,2,3],\"b\":{\"c\":\"d\"}}') rcon.print(t.a[3] .. t.b.c .. tostring(helpers.json_to_table('{')))"
        ),
        "3dnil\n"
    );
}

#[test]
fn the_1_1_dialect_has_global_and_game_json() {
    let r = rt_with(
        &[("control.lua", FREEPLAY_0_17)],
        true,
        Path::new("/nonexistent"),
    );
    r.run_main().unwrap();
    r.init().unwrap();
    assert_eq!(
        eval(
            &r,
            "rcon.print(type(global) .. type(storage) .. type(helpers) .. game.table_to_json({1}))"
        ),
        "tablenilnil[1]\n"
    );
}

#[test]
fn write_file_stays_in_script_output() {
    let out = tmp("write");
    let r = rt_with(&[], false, &out);
    eval(&r, "helpers.write_file('a/b.txt', 'one')");
    eval(&r, "helpers.write_file('a/b.txt', 'two', true)");
    assert_eq!(
        std::fs::read_to_string(out.join("a/b.txt")).unwrap(),
        "onetwo"
    );
    eval(&r, "helpers.write_file('c.txt', 'x', false, 2)");
    assert!(
        !out.join("c.txt").exists(),
        "for another player: not on the server"
    );
    for bad in ["../x.txt", "/etc/x", "a/../../x"] {
        let (e, _) = r
            .command(&format!("helpers.write_file('{bad}', 'x')"))
            .unwrap_err();
        assert!(e.contains("Path contains invalid characters"), "{bad}: {e}");
    }
    assert!(!out.parent().unwrap().join("x.txt").exists());
    let _ = std::fs::remove_dir_all(&out);
}

const LOADER: &str = "local event_handler = require(\"event_handler\")\nrequire(\"scenario\")\nevent_handler.add_lib(require(\"modules/test/main\"))\n";
const MAIN: &str = r#"
local helper = require("helper")          -- relative to this file
local again = require("modules/test/helper") -- same file from the root: cached
local lib = { events = {}, on_nth_tick = {} }
test_module = { helper = helper, same = helper == again, loads = 0 }
function lib.on_init() storage.inits = (storage.inits or 0) + 1 end
function lib.on_load() test_module.loads = test_module.loads + 1 end
lib.events[defines.events.on_tick] = function(e) storage.ticks = (storage.ticks or 0) + 1 end
lib.on_nth_tick[10] = function(e) storage.tens = (storage.tens or 0) + 1 end
lib.events[defines.events.on_player_joined_game] = function(e)
  print("joined " .. game.get_player(e.player_index).name)
end
function lib.add_remote_interface()
  remote.add_interface("test", { hello = function(n) return "hello " .. n end })
end
function lib.add_commands()
  commands.add_command("ping", "answers", function(c) rcon.print("pong " .. tostring(c.parameter) .. " " .. tostring(c.player_index)) end)
end
return lib
"#;
const HELPER: &str = "helper_loads = (helper_loads or 0) + 1\nreturn { name = 'helper' }\n";

fn patched() -> Vec<(&'static str, &'static str)> {
    vec![
        ("control.lua", LOADER),
        ("scenario.lua", FREEPLAY_2_0),
        ("modules/test/main.lua", MAIN),
        ("modules/test/helper.lua", HELPER),
    ]
}

#[test]
fn level_script_require_events_storage_and_save_roundtrip() {
    let r = rt(&patched());
    r.run_main().unwrap();
    r.init().unwrap();
    assert_eq!(
        eval(
            &r,
            "rcon.print(tostring(test_module.same) .. helper_loads .. storage.inits)"
        ),
        "true11\n"
    );
    for t in 1..=25 {
        r.tick(t).unwrap();
    }
    assert_eq!(
        eval(
            &r,
            "rcon.print(storage.ticks .. ' ' .. storage.tens .. ' ' .. game.tick)"
        ),
        "25 2 25\n"
    );
    assert_eq!(
        eval(&r, "rcon.print(remote.call('test', 'hello', 'you'))"),
        "hello you\n"
    );
    assert!(r.has_command("ping"));
    assert_eq!(
        r.custom_command("ping", Some("x"), None).unwrap(),
        "pong x nil\n"
    );
    assert_eq!(
        r.custom_command("ping", None, None).unwrap(),
        "pong nil nil\n"
    );
    // Typed by a player: the command sees their index.
    assert_eq!(
        r.custom_command("ping", Some("y"), Some(3)).unwrap(),
        "pong y 3\n"
    );
    // Storage: shared tables, cycles, key types, exact numbers, bytes, game objects.
    r.player(1, "Alice", true, false);
    eval(
        &r,
        "local s = {1} storage.a = s storage.b = s storage.self = storage storage[5] = 'five' storage['5'] = 'str' storage.pi = math.pi storage.bytes = '\\255\\0x' storage.p = game.players[1]",
    );
    let snap = r.snapshot().unwrap();
    let r2 = rt(&patched());
    r2.player(1, "Alice", false, false);
    r2.run_main().unwrap();
    r2.load(&snap).unwrap();
    assert_eq!(
        eval(
            &r2,
            "rcon.print(tostring(storage.a == storage.b) .. tostring(storage.self == storage) .. storage[5] .. storage['5'] .. tostring(storage.pi == math.pi) .. tostring(storage.bytes == '\\255\\0x') .. storage.p.name .. tostring(storage.p == game.players[1]) .. storage.ticks .. test_module.loads .. storage.inits)"
        ),
        "truetruefivestrtruetrueAlicetrue2511\n"
    );
    // Deep data survives the save's JSON text (which parsers read with a depth limit).
    eval(
        &r2,
        "local t = storage for i = 1, 300 do t.next = {i = i} t = t.next end",
    );
    let text = serde_json::to_string(&r2.snapshot().unwrap()).unwrap();
    let back: serde_json::Value = serde_json::from_str(&text).unwrap();
    let r3 = rt(&patched());
    r3.run_main().unwrap();
    r3.load(&back).unwrap();
    assert_eq!(
        eval(
            &r3,
            "local t, n = storage, 0 while t.next do t = t.next n = n + 1 end rcon.print(n .. ' ' .. t.i)"
        ),
        "300 300\n"
    );
    eval(
        &r3,
        "local t = storage for i = 1, 20000 do t.deep = {} t = t.deep end",
    );
    let deep = serde_json::to_string(&r3.snapshot().unwrap()).unwrap();
    assert!(serde_json::from_str::<serde_json::Value>(&deep).is_ok());
    // Functions in storage are refused at save time.
    eval(&r2, "storage.f = function() end");
    let e = r2.snapshot().unwrap_err();
    assert!(
        e.contains("storage[\"f\"]") && e.contains("function"),
        "{e}"
    );
}

#[test]
fn handler_errors_carry_the_event_and_a_traceback() {
    let boom = "local lib = {events = {}}\nlib.events[defines.events.on_tick] = function(e)\n  if e.tick == 3 then error('boom at ' .. e.tick) end\nend\nreturn lib\n";
    let r = rt(&[
        (
            "control.lua",
            "local h = require('event_handler')\nh.add_lib(require('boom'))\n",
        ),
        ("boom.lua", boom),
    ]);
    r.run_main().unwrap();
    r.init().unwrap();
    r.tick(1).unwrap();
    r.tick(2).unwrap();
    let e = r.tick(3).unwrap_err();
    let lines: Vec<&str> = e.lines().collect();
    assert_eq!(lines[0], "Error while running event level::on_tick (ID 0)");
    assert_eq!(lines[1], "__level__/boom.lua:3: boom at 3");
    assert_eq!(lines[2], "stack traceback:");
    assert_eq!(lines[3], "[C]: in function 'error'");
    assert!(
        lines[4].starts_with("__level__/boom.lua:3: in function"),
        "{e}"
    );
    assert!(!e.contains("[sim]"), "{e}");
    let r = rt(&[(
        "control.lua",
        "script.on_nth_tick(2, function() local x = nil; x.y = 1 end)",
    )]);
    r.run_main().unwrap();
    r.tick(1).unwrap();
    let e = r.tick(2).unwrap_err();
    assert!(e.starts_with("Error while running event level::on_nth_tick(2)\n__level__/control.lua:1: attempt to index local 'x' (a nil value)"), "{e}");
    // Errors in the main chunk and on_init.
    let r = rt(&[("control.lua", "error('at load')")]);
    assert!(
        r.run_main()
            .unwrap_err()
            .starts_with("__level__/control.lua:1: at load")
    );
    let r = rt(&[("control.lua", "require('missing')")]);
    assert!(
        r.run_main()
            .unwrap_err()
            .contains("module missing not found")
    );
    let r = rt(&[(
        "control.lua",
        "script.on_init(function() error('init') end)",
    )]);
    r.run_main().unwrap();
    assert!(
        r.init()
            .unwrap_err()
            .starts_with("Error while running on_init: __level__/control.lua:1: init")
    );
}

#[test]
fn event_handler_contract() {
    let r = rt(&[(
        "control.lua",
        r#"
local h = require("event_handler")
local order = {}
local a = { events = { [defines.events.on_player_created] = function(e) order[#order + 1] = "a" .. e.player_index end },
            on_init = function() order[#order + 1] = "init-a" end,
            on_configuration_changed = function(d) order[#order + 1] = "cfg-" .. d.new_version end }
local b = { events = { [defines.events.on_player_created] = function(e) order[#order + 1] = "b" .. e.player_index end },
            on_init = function() order[#order + 1] = "init-b" end }
h.add_libraries({ a, b })
local ok, err = pcall(h.add_lib, a)
dup_error = err
custom_id = script.generate_event_name()
script.on_event(custom_id, function(e) order[#order + 1] = "custom-" .. e.x end)
function show() rcon.print(table.concat(order, ",")) end
"#,
    )]);
    r.run_main().unwrap();
    r.init().unwrap();
    r.raise("on_player_created", json!({"player_index": 4}))
        .unwrap();
    eval(&r, "script.raise_event(custom_id, {x = 'y'})");
    r.configuration_changed(&json!({"mods": {"base": "2.0.76"}}))
        .unwrap();
    assert_eq!(
        eval(&r, "show()"),
        "init-a,init-b,a4,b4,custom-y,cfg-2.0.77\n"
    );
    assert!(eval(&r, "rcon.print(dup_error)").contains("Trying to register same lib twice"));
}

#[test]
fn players_and_research() {
    let r = rt(&[(
        "control.lua",
        r#"
seen = {}
script.on_event(defines.events.on_research_started, function(e) seen[#seen + 1] = "started " .. e.research.name .. " " .. tostring(e.last_research) end)
script.on_event(defines.events.on_research_finished, function(e) seen[#seen + 1] = "finished " .. e.research.name .. " " .. e.research.level end)
script.on_event(defines.events.on_player_left_game, function(e) seen[#seen + 1] = "left " .. e.player_index .. " " .. e.reason .. " " .. tostring(game.players[e.player_index].connected) end)
"#,
    )]);
    r.run_main().unwrap();
    r.init().unwrap();
    r.player(1, "Alice", false, true);
    r.player_joined(1, true).unwrap();
    assert_eq!(
        eval(
            &r,
            "local p = game.players.Alice rcon.print(p.name .. p.index .. tostring(p.connected) .. tostring(p.admin) .. #game.players .. #game.connected_players .. game.get_player(1).name)"
        ),
        "Alice1truetrue11Alice\n"
    );
    r.player_left(1, "kicked").unwrap();
    r.research("automation", None, Some(0.5), false).unwrap();
    r.research("automation", None, None, false).unwrap();
    r.research("mining-productivity-3", Some(5), None, false)
        .unwrap();
    assert_eq!(
        eval(&r, "rcon.print(table.concat(seen, ';'))"),
        "left 1 7 false;started automation nil;finished automation 1;finished mining-productivity-3 6\n"
    );
    let t = "local t = game.forces.player.technologies";
    assert_eq!(
        eval(
            &r,
            &format!(
                "{t} rcon.print(tostring(t.automation.researched) .. t.automation.prototype.max_level .. tostring(game.forces.player.current_research))"
            )
        ),
        "true1nil\n"
    );
    let snap = r.snapshot().unwrap();
    let r2 = rt(&[]);
    r2.load(&snap).unwrap();
    assert_eq!(
        eval(
            &r2,
            &format!(
                "{t} rcon.print(tostring(t.automation.researched) .. t['mining-productivity-3'].level)"
            )
        ),
        "true6\n"
    );
}

#[test]
fn relative_progress_scripted_finishes_and_what_was_printed() {
    let r = rt(&[(
        "control.lua",
        r#"
seen = {}
script.on_event(defines.events.on_research_finished, function(e) seen[#seen + 1] = e.research.name .. " " .. tostring(e.by_script) end)
"#,
    )]);
    r.run_main().unwrap();
    r.init().unwrap();
    r.research("optics", Some(1), Some(0.25), false).unwrap();
    r.research("optics", Some(1), Some(0.5), true).unwrap();
    assert_eq!(
        eval(&r, "rcon.print(game.forces.player.research_progress)"),
        "0.75\n"
    );
    // A script researching a technology raises the event, as Factorio does.
    eval(
        &r,
        "game.forces.player.technologies.optics.researched = true game.print('done') game.play_sound({path = 'utility/research_completed'})",
    );
    assert_eq!(
        eval(&r, "rcon.print(table.concat(seen, ';'))"),
        "optics true\n"
    );
    assert_eq!(
        eval(
            &r,
            "rcon.print(tostring(game.forces.player.current_research))"
        ),
        "nil\n"
    );
    let err = r
        .command("game.forces.player.technologies.optics.nope = 1")
        .unwrap_err()
        .0;
    assert!(err.contains("doesn't contain key"), "{err}");
}

#[test]
fn player_model_inventories_controllers_and_the_save() {
    let r = rt(&[("control.lua", "")]);
    r.run_main().unwrap();
    r.init().unwrap();
    r.player(1, "Alice", true, false);
    assert_eq!(r.give("Alice", "iron-plate", 250).unwrap(), 250);
    assert!(r.give("Nobody", "iron-plate", 1).is_err());
    let p = "local p = game.get_player('Alice') local i = defines.inventory";
    assert_eq!(
        eval(
            &r,
            &format!(
                "{p} local main = p.get_main_inventory() rcon.print(#main .. ' ' .. main.get_item_count('iron-plate') .. ' ' .. main[3].count .. ' ' .. tostring(main[4].valid_for_read))"
            )
        ),
        "80 250 50 false\n",
        "stacks of 100 fill slots in order"
    );
    assert_eq!(
        eval(
            &r,
            &format!(
                "{p} rcon.print(p.remove_item({{name = 'iron-plate', count = 60}}) .. ' ' .. p.get_item_count('iron-plate') .. ' ' .. p.get_inventory(i.character_armor).insert({{name = 'light-armor', count = 7}}) .. ' ' .. p.get_item_count())"
            )
        ),
        "60 190 1 191\n",
        "one armour fits the armour slot"
    );
    // Spectating leaves the character behind, full; taking it back restores everything.
    assert_eq!(
        eval(
            &r,
            &format!(
                "{p} local c = p.character p.set_controller({{type = defines.controllers.spectator}}) \
                 local s = tostring(p.character) .. ' ' .. tostring(p.get_main_inventory()) .. ' ' .. p.controller_type .. ' ' .. c.get_item_count('iron-plate') \
                 p.set_controller({{type = defines.controllers.character, character = c}}) \
                 p.set_quick_bar_slot(2, 'iron-plate') p.begin_crafting({{count = 3, recipe = 'iron-gear-wheel'}}) \
                 rcon.print(s .. ' ' .. p.get_item_count('iron-plate') .. ' ' .. p.get_quick_bar_slot(2).name .. ' ' .. p.crafting_queue[1].count)"
            )
        ),
        "nil nil 5 190 190 iron-plate 3\n"
    );
    let snap = r.snapshot().unwrap();
    let r2 = rt(&[("control.lua", "")]);
    r2.run_main().unwrap();
    r2.player(1, "Alice", false, false);
    r2.load(&snap).unwrap();
    let back: serde_json::Value = serde_json::from_str(&r2.inventory("Alice").unwrap()).unwrap();
    assert_eq!(back["main"], serde_json::json!({"iron-plate": 190}));
    assert_eq!(back["armor"], serde_json::json!({"light-armor": 1}));
    assert_eq!(back["quick_bar"], serde_json::json!({"2": "iron-plate"}));
    assert_eq!(
        back["crafting_queue"],
        serde_json::json!(["iron-gear-wheel x3"])
    );
    // A new character has nothing, not even a queue.
    assert_eq!(
        eval(
            &r2,
            &format!(
                "{p} p.character.destroy() p.create_character() rcon.print(p.get_item_count() .. ' ' .. tostring(p.crafting_queue))"
            )
        ),
        "0 nil\n"
    );
}
