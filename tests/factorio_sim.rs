//! Acceptance checks of the stand-in (research/factorio.md §8.10), plus the install tree,
//! `--version`, bind/corrupt-save failures and autosaves. The sim must be indistinguishable from
//! the real server on these channels, or the driver tests prove nothing.

mod common;
mod factorio_common;

use std::time::{Duration, SystemTime};

use clustorio::host::factorio::log::{LineKind, LineParser, ServerEvent};
use factorio_common::*;

const T: Duration = Duration::from_secs(20);

fn mtime(p: &std::path::Path) -> SystemTime {
    std::fs::metadata(p).unwrap().modified().unwrap()
}

/// Text after `File.cpp:NNN: ` or after the seconds prefix.
fn message(line: &str) -> String {
    clustorio::host::factorio::log::parse_line(line)
        .message()
        .to_string()
}

#[test]
fn install_tree_and_version_look_like_the_real_headless_build() {
    let inst = SimInstall::new();
    for f in [
        "bin/x64/factorio",
        "config-path.cfg",
        "data/changelog.txt",
        "data/base/info.json",
        "data/core/info.json",
        "data/space-age/info.json",
        "data/server-settings.example.json",
        "data/map-gen-settings.example.json",
        "data/map-settings.example.json",
        "data/server-whitelist.example.json",
    ] {
        assert!(inst.root.join(f).is_file(), "{f} missing");
    }
    let out = std::process::Command::new(inst.exe())
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Version: 2.0.77 (build 84539, linux64, headless)\nVersion: 64\nMap input version: 1.0.0-0\nMap output version: 2.0.77-0\n"
    );
    let old = SimInstall::with_version("1.1.76");
    let out = std::process::Command::new(old.exe())
        .arg("--version")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.starts_with("Version: 1.1.76 (build 60350, linux64, headless)\nBinary version: 64\n"),
        "{text}"
    );
    let info: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(inst.root.join("data/base/info.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(info["version"], "2.0.77");
}

#[test]
fn check_1_every_line_parses_to_its_category() {
    let inst = SimInstall::new();
    let dir = inst.instance("a");
    let save = inst.create(&dir, "world");
    let mut p = Proc::spawn(server_cmd(&inst, &dir, &save));
    p.wait_ready();
    p.console("/standin join Alice");
    p.console("/standin chat Alice hello there");
    p.console("hi from the console");
    p.console("/server-save");
    p.wait_for("Saving finished");
    p.console("/standin leave Alice");
    p.wait_for("Auto saving map as");
    p.wait_for_nth("Saving finished", 1, T);
    p.console("/quit");
    assert_eq!(p.wait_exit(T), Some(0));
    let mut parser = LineParser::new();
    let mut events = Vec::new();
    for l in p.lines() {
        let (line, ev) = parser.feed(&l);
        // Timestamped lines must be engine lines, dated ones events: nothing falls through to Plain.
        if l.starts_with(' ')
            || l.chars().next().is_some_and(|c| c.is_ascii_digit()) && !l.contains(" [")
        {
            assert!(
                matches!(line.kind, LineKind::Engine { .. } | LineKind::Dated { .. }),
                "{l}"
            );
        }
        events.extend(ev);
    }
    let key: Vec<ServerEvent> = events
        .into_iter()
        .filter(|e| {
            !matches!(
                e,
                ServerEvent::StateChanged { .. }
                    | ServerEvent::HostingGame { .. }
                    | ServerEvent::RconReady { .. }
            )
        })
        .map(|e| match e {
            ServerEvent::SaveStarted { .. } => ServerEvent::SaveStarted {
                kind: clustorio::host::factorio::SaveKind::Manual {
                    path: String::new(),
                },
            },
            ServerEvent::SaveFinished { .. } => ServerEvent::SaveFinished {
                kind: clustorio::host::factorio::SaveKind::Manual {
                    path: String::new(),
                },
            },
            e => e,
        })
        .collect();
    let started = || ServerEvent::SaveStarted {
        kind: clustorio::host::factorio::SaveKind::Manual {
            path: String::new(),
        },
    };
    let finished = || ServerEvent::SaveFinished {
        kind: clustorio::host::factorio::SaveKind::Manual {
            path: String::new(),
        },
    };
    assert_eq!(
        key,
        vec![
            ServerEvent::GameReady,
            ServerEvent::PlayerJoined {
                name: "Alice".into()
            },
            ServerEvent::Chat {
                name: "Alice".into(),
                message: "hello there".into()
            },
            ServerEvent::Chat {
                name: "<server>".into(),
                message: "hi from the console".into()
            },
            started(),
            finished(),
            ServerEvent::PlayerLeft {
                name: "Alice".into()
            },
            started(),
            finished(),
            ServerEvent::Quitting {
                reason: "remote-quit".into()
            },
            started(),
            finished(),
            ServerEvent::Goodbye,
        ]
    );
}

#[test]
fn check_2_rcon_accepts_auth_right_after_the_rcon_line() {
    let inst = SimInstall::new();
    let dir = inst.instance("a");
    let save = inst.create(&dir, "world");
    let p = Proc::spawn(server_cmd(&inst, &dir, &save));
    let (_, rcon) = p.wait_ready();
    // InGame comes before the RCON line (2.0 ordering).
    let lines = p.lines();
    let in_game = lines.iter().position(|l| l.contains("to(InGame)")).unwrap();
    let rcon_line = lines
        .iter()
        .position(|l| l.contains("Starting RCON interface"))
        .unwrap();
    assert!(in_game < rcon_line);
    let mut c = RawRcon::connect(rcon.unwrap());
    assert_eq!(c.auth("secret"), (1, 2));
    p.wait_for("New RCON connection from IP ADDR:({127.0.0.1:");
}

#[test]
fn check_3_achievements_gate_then_disabled() {
    let inst = SimInstall::new();
    let dir = inst.instance("a");
    let save = inst.create(&dir, "world");
    let p = Proc::spawn(server_cmd(&inst, &dir, &save));
    let (_, rcon) = p.wait_ready();
    let mut c = RawRcon::connect(rcon.unwrap());
    c.auth("secret");
    let first = c.exec(2, "/sc rcon.print('disabled')");
    assert_ne!(first, "disabled\n");
    assert!(first.contains("achievements"), "{first}");
    assert_eq!(c.exec(3, "/sc rcon.print('disabled')"), "disabled\n");
    assert_eq!(c.exec(4, "/sc rcon.print('disabled')"), "disabled\n");
}

#[test]
fn check_4_players_online_after_join() {
    let inst = SimInstall::new();
    let dir = inst.instance("a");
    let save = inst.create(&dir, "world");
    let p = Proc::spawn(server_cmd(&inst, &dir, &save));
    let (_, rcon) = p.wait_ready();
    let mut c = RawRcon::connect(rcon.unwrap());
    c.auth("secret");
    assert_eq!(c.exec(2, "/standin join Alice"), "ok\n");
    assert_eq!(
        c.exec(3, "/players online"),
        "Online players (1):\n  Alice (online)\n"
    );
    p.wait_for("[JOIN] Alice joined the game");
}

fn graceful_stop_rewrites_save(how: &str) {
    let inst = SimInstall::new();
    let dir = inst.instance("a");
    let save = inst.create(&dir, "world");
    let before = mtime(&save);
    std::thread::sleep(Duration::from_millis(20));
    let mut p = Proc::spawn(server_cmd(&inst, &dir, &save));
    let (_, rcon) = p.wait_ready();
    match how {
        "quit" => {
            let mut c = RawRcon::connect(rcon.unwrap());
            c.auth("secret");
            c.send(2, 2, "/quit");
        }
        sig => p.signal(sig),
    }
    assert_eq!(p.wait_exit(T), Some(0), "{}", p.text());
    assert!(mtime(&save) > before, "save not rewritten on {how}");
    assert!(!dir.join("saves/world.tmp.zip").exists());
    let text = p.text();
    match how {
        "quit" => assert!(text.contains("Quitting: remote-quit.")),
        sig => {
            assert!(
                text.contains(&format!("Received SIG{sig}, shutting down")),
                "{text}"
            );
            assert!(text.contains("Quitting: signal."));
        }
    }
}

#[test]
fn check_5_sigint_saves_and_exits_0() {
    graceful_stop_rewrites_save("INT");
}

#[test]
fn check_5_sigterm_saves_and_exits_0() {
    graceful_stop_rewrites_save("TERM");
}

#[test]
fn check_5_rcon_quit_saves_and_exits_0() {
    graceful_stop_rewrites_save("quit");
}

#[test]
fn check_5_sigkill_during_a_slow_save_leaves_the_tmp_zip_and_the_old_save() {
    let inst = SimInstall::new();
    let dir = inst.instance("a");
    let save = inst.create(&dir, "world");
    let old = std::fs::read(&save).unwrap();
    let mut cmd = server_cmd(&inst, &dir, &save);
    cmd.env("FACTORIO_STANDIN_SAVE_MS", "5000");
    let mut p = Proc::spawn(cmd);
    p.wait_ready();
    p.signal("INT");
    p.wait_for("Saving progress: 0.033670%");
    p.signal("KILL");
    assert_eq!(p.wait_exit(T), None);
    assert!(dir.join("saves/world.tmp.zip").is_file());
    assert_eq!(std::fs::read(&save).unwrap(), old);
}

#[test]
fn check_6_load_latest_picks_the_newest_zip_and_fails_without_one() {
    let inst = SimInstall::new();
    let dir = inst.instance("a");
    let mut p = Proc::spawn({
        let mut c = inst.cmd(&dir);
        c.args(["--start-server-load-latest", "--port", "0"]);
        c
    });
    assert_ne!(p.wait_exit(T), Some(0));
    assert!(p.text().contains("to(InitializationFailed)"));
    inst.create(&dir, "older");
    std::thread::sleep(Duration::from_millis(30));
    let newer = inst.create(&dir, "newer");
    // A leftover .tmp.zip is never picked.
    std::fs::write(dir.join("saves/zzz.tmp.zip"), b"junk").unwrap();
    let mut p = Proc::spawn({
        let mut c = inst.cmd(&dir);
        c.args(["--start-server-load-latest", "--port", "0"]);
        c
    });
    p.wait_ready();
    assert!(
        p.text()
            .contains(&format!("Loading map {}: ", newer.display())),
        "{}",
        p.text()
    );
    p.signal("INT");
    assert_eq!(p.wait_exit(T), Some(0));
}

#[test]
fn check_7_second_instance_on_the_same_write_dir_fails_on_the_lock() {
    let inst = SimInstall::new();
    let dir = inst.instance("a");
    let save = inst.create(&dir, "world");
    let p1 = Proc::spawn(server_cmd(&inst, &dir, &save));
    p1.wait_ready();
    let mut p2 = Proc::spawn(server_cmd(&inst, &dir, &save));
    assert_eq!(p2.wait_exit(T), Some(1));
    let line = p2.wait_for("Couldn't acquire exclusive lock for");
    assert!(
        line.ends_with(&format!("{}", dir.join(".lock").display())),
        "{line}"
    );
    assert!(message(&line).starts_with("Couldn't acquire exclusive lock"));
}

#[test]
fn check_8_empty_rcon_request_gets_no_reply() {
    let inst = SimInstall::new();
    let dir = inst.instance("a");
    let save = inst.create(&dir, "world");
    let p = Proc::spawn(server_cmd(&inst, &dir, &save));
    let (_, rcon) = p.wait_ready();
    let mut c = RawRcon::connect(rcon.unwrap());
    c.auth("secret");
    c.s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    c.send(7, 2, "");
    let r = c.recv();
    assert!(r.is_err(), "got a reply to an empty command: {r:?}");
    // The connection still works afterwards, and one request gets exactly one reply.
    c.s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(c.exec(8, "/version"), "2.0.77\n");
}

#[test]
fn check_9_game_events_are_on_stdout_and_console_log_but_not_in_the_log_file() {
    let inst = SimInstall::new();
    let dir = inst.instance("a");
    let save = inst.create(&dir, "world");
    let console = dir.join("console.log");
    let mut cmd = server_cmd(&inst, &dir, &save);
    cmd.arg("--console-log").arg(&console);
    let mut p = Proc::spawn(cmd);
    p.wait_ready();
    p.console("/standin join Bob");
    p.console("/standin chat Bob hi");
    p.console("/standin leave Bob");
    p.wait_for("[LEAVE] Bob left the game");
    p.console("/quit");
    assert_eq!(p.wait_exit(T), Some(0));
    let log = std::fs::read_to_string(dir.join("factorio-current.log")).unwrap();
    let con = std::fs::read_to_string(&console).unwrap();
    for tag in ["[JOIN] Bob", "[CHAT] Bob: hi", "[LEAVE] Bob"] {
        assert!(p.text().contains(tag));
        assert!(con.contains(tag), "{tag} missing in console log");
        assert!(!log.contains(tag), "{tag} in factorio-current.log");
    }
    assert!(log.contains("processed PlayerJoinGame"));
    assert!(log.contains("Goodbye"));
}

#[test]
fn check_10_last_player_leaving_saves_once_and_then_no_autosaves() {
    let inst = SimInstall::new();
    let dir = inst.instance("a");
    let save = inst.create(&dir, "world");
    let mut cmd = server_cmd(&inst, &dir, &save);
    cmd.env("FACTORIO_STANDIN_AUTOSAVE_SECS", "0.3");
    let mut p = Proc::spawn(cmd);
    p.wait_ready();
    p.console("/standin join Alice");
    // With a player online, the game runs and autosaves.
    p.wait_for("Saving to _autosave1 (blocking).");
    let before = mtime(&save);
    std::thread::sleep(Duration::from_millis(20));
    p.console("/standin leave Alice");
    let auto = p.wait_for("Auto saving map as");
    let finished_before = p
        .lines()
        .iter()
        .position(|l| l == &auto)
        .map(|i| {
            p.lines()[..i]
                .iter()
                .filter(|l| l.contains("Saving finished"))
                .count()
        })
        .unwrap();
    assert_eq!(
        message(&auto),
        format!("Auto saving map as {}", save.display())
    );
    p.wait_for(&format!("Saving game as {}", save.display()));
    p.wait_for_nth("Saving finished", finished_before, T);
    assert!(mtime(&save) > before);
    let autosaves = p.count("Saving to _autosave");
    std::thread::sleep(Duration::from_millis(900));
    assert_eq!(
        p.count("Saving to _autosave"),
        autosaves,
        "autosave while empty and paused"
    );
    assert_eq!(p.count("Auto saving map as"), 1);
}

/// §3.8: the real 2.0.47 SIGINT tail, text after the `File.cpp:NNN: ` prefix.
const SHUTDOWN_TAIL: &[&str] = &[
    "Received SIGINT, shutting down",
    "Quitting: signal.",
    "Saving map as <save>",
    "Saving progress: 0.033670%",
    "Saving progress: 100.000000%",
    "Disconnecting multiplayer connection.",
    "updateTick(<t>) changing state from(InGame) to(DisconnectingScheduled)",
    "updateTick(<t>) changing state from(DisconnectingScheduled) to(Disconnecting)",
    "updateTick(<t>) changing state from(Disconnecting) to(Disconnected)",
    "Quitting multiplayer connection.",
    "updateTick(<t>) changing state from(Disconnected) to(Closed)",
    "Deleting active scenario (global = true).",
    "Closing socket",
    "Socket closed",
    "Closing socket",
    "Closing socket",
    "Socket closed",
    "Goodbye",
];

fn shutdown_tail(version: &str, expected_code: i32) {
    let inst = SimInstall::with_version(version);
    let dir = inst.instance("a");
    let save = inst.create(&dir, "world");
    let mut p = Proc::spawn(server_cmd(&inst, &dir, &save));
    p.wait_ready();
    p.signal("INT");
    assert_eq!(p.wait_exit(T), Some(expected_code));
    let lines = p.lines();
    let start = lines
        .iter()
        .position(|l| l.contains("Received SIGINT"))
        .unwrap();
    let tail: Vec<String> = lines[start..]
        .iter()
        .map(|l| {
            let m = message(l).replace(&save.display().to_string(), "<save>");
            match m.find(") changing state") {
                Some(i) if m.starts_with("updateTick(") => format!("updateTick(<t>{}", &m[i..]),
                _ => m,
            }
        })
        .collect();
    assert_eq!(tail, SHUTDOWN_TAIL);
}

#[test]
fn check_11_shutdown_tail_matches_the_real_one() {
    shutdown_tail("2.0.77", 0);
}

#[test]
fn check_11_old_1_1_exits_1_after_a_graceful_stop() {
    shutdown_tail("1.1.76", 1);
}

#[test]
fn check_12_missing_save_and_unknown_flag() {
    let inst = SimInstall::new();
    let dir = inst.instance("a");
    let mut p = Proc::spawn({
        let mut c = inst.cmd(&dir);
        c.args(["--start-server", "/missing/x", "--port", "0"]);
        c
    });
    assert_eq!(p.wait_exit(T), Some(1));
    let msgs: Vec<String> = p.lines().iter().map(|l| message(l)).collect();
    let i = msgs
        .iter()
        .position(|m| m == "Loading map /missing/x")
        .expect("Loading map line");
    assert_eq!(
        msgs[i + 1],
        "MultiplayerManager failed: \"File /missing/x does not exist.\""
    );
    assert!(msgs[i + 2].ends_with("changing state from(CreatingGame) to(InitializationFailed)"));
    assert_eq!(msgs[i + 3], "Exit point.");
    assert_eq!(msgs.last().unwrap(), "Goodbye");

    let out = inst.cmd(&dir).arg("--foo").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("Option \u{2018}foo\u{2019} does not exist\n\nUsage:"),
        "{err}"
    );
    assert!(
        out.stdout.is_empty(),
        "no log header before the option error"
    );
}

#[test]
fn corrupt_save_and_game_port_in_use_fail_with_exit_1() {
    let inst = SimInstall::new();
    let dir = inst.instance("a");
    let bad = dir.join("saves/bad.zip");
    std::fs::create_dir_all(bad.parent().unwrap()).unwrap();
    std::fs::write(&bad, b"this is not a zip").unwrap();
    let mut p = Proc::spawn({
        let mut c = inst.cmd(&dir);
        c.arg("--start-server").arg(&bad).args(["--port", "0"]);
        c
    });
    assert_eq!(p.wait_exit(T), Some(1));
    assert!(
        p.text()
            .contains("MultiplayerManager failed: \"Opening zip")
    );

    let save = inst.create(&dir, "world");
    let taken = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let mut p = Proc::spawn({
        let mut c = inst.cmd(&dir);
        c.arg("--start-server").arg(&save).args(["--port", &port]);
        c
    });
    assert_eq!(p.wait_exit(T), Some(1));
    assert!(
        p.text()
            .contains("MultiplayerManager failed: Host address is already in use.")
    );
    assert!(p.text().contains("to(InitializationFailed)"));
}

#[test]
fn header_hides_the_rcon_password_and_stdin_eof_is_not_a_stop() {
    let inst = SimInstall::new();
    let dir = inst.instance("a");
    let save = inst.create(&dir, "world");
    let mut p = Proc::spawn(server_cmd(&inst, &dir, &save));
    p.wait_ready();
    let args = p.wait_for("Program arguments:");
    assert!(
        args.contains("\"--rcon-password\" <private>") && !args.contains("secret"),
        "{args}"
    );
    assert!(args.ends_with(' '));
    p.stdin = None; // EOF
    p.wait_for("Got EOF on stdin; closing");
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        p.child.try_wait().unwrap().is_none(),
        "stdin EOF stopped the server"
    );
    p.signal("TERM");
    assert_eq!(p.wait_exit(T), Some(0));
}

#[test]
fn udp_game_port_is_bound() {
    let inst = SimInstall::new();
    let dir = inst.instance("a");
    let save = inst.create(&dir, "world");
    let p = Proc::spawn(server_cmd(&inst, &dir, &save));
    let (game, _) = p.wait_ready();
    assert!(
        std::net::UdpSocket::bind(("0.0.0.0", game)).is_err(),
        "game port {game} not bound"
    );
}

#[test]
fn create_writes_a_save_with_one_top_level_dir_and_the_real_transcript() {
    let inst = SimInstall::new();
    let dir = inst.instance("a");
    let out = inst
        .cmd(&dir)
        .arg("--create")
        .arg(dir.join("saves/fresh"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[lines.len() - 2], "Done.");
    assert!(lines.last().unwrap().ends_with(" Goodbye"));
    assert!(text.contains(&format!(
        "Creating new map {}",
        dir.join("saves/fresh").display()
    )));
    let zip =
        zip::ZipArchive::new(std::fs::File::open(dir.join("saves/fresh.zip")).unwrap()).unwrap();
    let names: Vec<String> = zip
        .file_names()
        .filter_map(|n| n.ok().map(|n| n.into_owned()))
        .collect();
    assert!(names.iter().all(|n| n.starts_with("fresh/")), "{names:?}");
    assert!(names.iter().any(|n| n == "fresh/level.dat0"));
}
