//! End to end through the product's launcher, with factorio-sim as the server: create a save,
//! start, wait for ready, RCON, graceful stop, the new save on disk — plus failed starts, stop
//! escalation, crashes and player events. The launcher treats the sim exactly like Factorio; the
//! only sim-specific input is environment (speed and scripted players/faults).

mod common;
mod factorio_common;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use clustorio::host::factorio::{
    CreateSpec, FactorioServer, Install, LaunchError, SaveKind, SaveToLoad, ServerArgs,
    ServerEvent, StartSpec, create_save, version,
};
use factorio_common::SimInstall;
use tokio::sync::mpsc;

fn env(extra: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
    factorio_common::FAST
        .iter()
        .chain(extra)
        .map(|(k, v)| (k.into(), v.into()))
        .collect()
}

fn spec(install: &Install, dir: &Path, save: SaveToLoad, extra_env: &[(&str, &str)]) -> StartSpec {
    let mut args = ServerArgs::new(save);
    args.port = 0;
    args.rcon = Some(("127.0.0.1:0".parse().unwrap(), "pw-launch".into()));
    let mut s = StartSpec::new(install.clone(), dir, args);
    s.env = env(extra_env);
    s.ready_timeout = Duration::from_secs(20);
    s
}

async fn new_save(install: &Install, dir: &Path, name: &str) -> PathBuf {
    let mut c = CreateSpec::new(install.clone(), dir, dir.join("saves").join(name));
    c.env = env(&[]);
    c.args.map_gen_seed = Some(1234);
    let (file, out) = create_save(&c).await.unwrap();
    assert!(out.contains("Done."));
    file
}

/// Drain events until `Exited` (bounded in time).
async fn collect(rx: &mut mpsc::Receiver<ServerEvent>) -> Vec<ServerEvent> {
    let mut v = Vec::new();
    while let Ok(Some(e)) = tokio::time::timeout(Duration::from_secs(20), rx.recv()).await {
        let done = matches!(e, ServerEvent::Exited(_));
        v.push(e);
        if done {
            break;
        }
    }
    v
}

fn typed(events: &[ServerEvent]) -> Vec<&ServerEvent> {
    events
        .iter()
        .filter(|e| !matches!(e, ServerEvent::Line(_) | ServerEvent::StateChanged { .. }))
        .collect()
}

fn mtime(p: &Path) -> SystemTime {
    std::fs::metadata(p).unwrap().modified().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_start_rcon_stop_and_the_save_is_on_disk() {
    let sim = SimInstall::new();
    let install = Install::new(&sim.root);
    let dir = sim.tmp.path().join("instances/e2e");
    let save = new_save(&install, &dir, "world").await;
    assert_eq!(save, dir.join("saves/world.zip"));
    let created = mtime(&save);
    tokio::time::sleep(Duration::from_millis(20)).await;

    let (server, mut rx) =
        FactorioServer::start(spec(&install, &dir, SaveToLoad::File(save.clone()), &[]))
            .await
            .unwrap();
    assert!(server.pid().is_some());
    assert!(server.game_address().is_some_and(|a| !a.ends_with(":0")));
    assert!(server.rcon_address().is_some_and(|a| a.port() != 0));
    assert_eq!(server.rcon("/version").await.unwrap(), "2.0.77\n");
    assert_eq!(
        server.rcon("/players online").await.unwrap(),
        "Online players (0):\n"
    );

    let report = server.stop(Duration::from_secs(10)).await;
    assert_eq!(report.code, Some(0), "{report:?}");
    assert!(report.graceful && report.requested, "{report:?}");
    assert!(
        mtime(&save) > created,
        "the quit save did not rewrite {}",
        save.display()
    );
    assert!(!dir.join("saves/world.tmp.zip").exists());
    assert!(server.exited().is_some());

    let events = collect(&mut rx).await;
    let t = typed(&events);
    let pos = |want: &dyn Fn(&ServerEvent) -> bool| {
        t.iter()
            .position(|e| want(e))
            .unwrap_or_else(|| panic!("missing in {t:#?}"))
    };
    let ready = pos(&|e| matches!(e, ServerEvent::GameReady));
    let rcon = pos(&|e| matches!(e, ServerEvent::RconReady { .. }));
    let quitting =
        pos(&|e| matches!(e, ServerEvent::Quitting { reason } if reason == "remote-quit"));
    let saved = pos(
        &|e| matches!(e, ServerEvent::SaveFinished { kind: SaveKind::Quit { path } } if Path::new(path) == save),
    );
    let bye = pos(&|e| matches!(e, ServerEvent::Goodbye));
    assert!(
        ready < rcon && rcon < quitting && quitting < saved && saved < bye,
        "{t:#?}"
    );
    assert!(matches!(events.last(), Some(ServerEvent::Exited(r)) if r.graceful));
    // Every output line was passed on too, starting with the log header.
    assert!(
        matches!(&events[0], ServerEvent::Line(l) if l.raw.contains("Factorio 2.0.77 (build 84539, linux64, headless)"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_save_is_a_start_failure_with_the_reason() {
    let sim = SimInstall::new();
    let install = Install::new(&sim.root);
    let dir = sim.tmp.path().join("instances/missing");
    let err = FactorioServer::start(spec(
        &install,
        &dir,
        SaveToLoad::File(dir.join("saves/nope.zip")),
        &[],
    ))
    .await
    .err()
    .unwrap();
    match err {
        LaunchError::StartFailed { reason, report } => {
            assert_eq!(
                reason,
                format!(
                    "File {} does not exist.",
                    dir.join("saves/nope.zip").display()
                )
            );
            let report = report.unwrap();
            assert_eq!(report.code, Some(1));
            assert!(!report.graceful);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_server_on_the_same_dir_fails_on_the_lock() {
    let sim = SimInstall::new();
    let install = Install::new(&sim.root);
    let dir = sim.tmp.path().join("instances/lock");
    let save = new_save(&install, &dir, "world").await;
    let (first, _rx) =
        FactorioServer::start(spec(&install, &dir, SaveToLoad::File(save.clone()), &[]))
            .await
            .unwrap();
    let err = FactorioServer::start(spec(&install, &dir, SaveToLoad::File(save), &[]))
        .await
        .err()
        .unwrap();
    match err {
        LaunchError::StartFailed {
            reason,
            report: Some(r),
        } => {
            assert!(
                reason.starts_with("Couldn't acquire exclusive lock for"),
                "{reason}"
            );
            assert_eq!(r.code, Some(1));
            assert!(
                r.last_lines
                    .iter()
                    .any(|l| l.contains("Couldn't acquire exclusive lock")),
                "{r:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    first.stop(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_start_hits_the_ready_timeout_and_is_killed() {
    let sim = SimInstall::new();
    let install = Install::new(&sim.root);
    let dir = sim.tmp.path().join("instances/slow");
    let save = new_save(&install, &dir, "world").await;
    let mut s = spec(
        &install,
        &dir,
        SaveToLoad::File(save),
        &[("FACTORIO_STANDIN_STARTUP_MS", "10000")],
    );
    s.ready_timeout = Duration::from_millis(700);
    let (server, mut rx) = FactorioServer::spawn(s).unwrap();
    let err = server
        .wait_ready(Duration::from_millis(700))
        .await
        .unwrap_err();
    assert!(matches!(err, LaunchError::ReadyTimeout(_)), "{err:?}");
    let report = server.exited().unwrap();
    assert_eq!(report.signal, Some(libc::SIGKILL));
    assert!(matches!(
        collect(&mut rx).await.last(),
        Some(ServerEvent::Exited(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_escalates_to_sigint_when_quit_is_ignored() {
    let sim = SimInstall::new();
    let install = Install::new(&sim.root);
    let dir = sim.tmp.path().join("instances/esc");
    let save = new_save(&install, &dir, "world").await;
    let (server, mut rx) = FactorioServer::start(spec(
        &install,
        &dir,
        SaveToLoad::File(save),
        &[("FACTORIO_STANDIN_IGNORE", "quit")],
    ))
    .await
    .unwrap();
    let report = server.stop(Duration::from_secs(4)).await;
    assert!(report.graceful && report.code == Some(0), "{report:?}");
    let events = collect(&mut rx).await;
    assert!(
        events
            .iter()
            .any(|e| matches!(e, ServerEvent::Quitting { reason } if reason == "signal"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_kills_a_server_that_ignores_everything() {
    let sim = SimInstall::new();
    let install = Install::new(&sim.root);
    let dir = sim.tmp.path().join("instances/stuck");
    let save = new_save(&install, &dir, "world").await;
    let (server, _rx) = FactorioServer::start(spec(
        &install,
        &dir,
        SaveToLoad::File(save),
        &[("FACTORIO_STANDIN_IGNORE", "quit,sigint,sigterm")],
    ))
    .await
    .unwrap();
    let t = std::time::Instant::now();
    let report = server.stop(Duration::from_secs(1)).await;
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_eq!(report.signal, Some(libc::SIGKILL), "{report:?}");
    assert!(!report.graceful && report.requested);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripted_players_chat_and_a_crash_arrive_as_events() {
    let sim = SimInstall::new();
    let install = Install::new(&sim.root);
    let dir = sim.tmp.path().join("instances/script");
    let save = new_save(&install, &dir, "world").await;
    let script = dir.join("script.jsonl");
    std::fs::write(
        &script,
        concat!(
            r#"{"at_ms": 0, "do": "join", "name": "Alice"}"#,
            "\n",
            r#"{"at_ms": 10, "do": "chat", "name": "Alice", "text": "hello: world"}"#,
            "\n",
            r#"{"at_ms": 20, "do": "leave", "name": "Alice"}"#,
            "\n",
            r#"{"at_ms": 300, "do": "crash", "text": "boom"}"#,
            "\n"
        ),
    )
    .unwrap();
    let script = script.to_string_lossy().into_owned();
    let (server, mut rx) = FactorioServer::start(spec(
        &install,
        &dir,
        SaveToLoad::File(save),
        &[("FACTORIO_STANDIN_SCRIPT", &script)],
    ))
    .await
    .unwrap();
    let events = collect(&mut rx).await;
    let t = typed(&events);
    let want = [
        ServerEvent::PlayerJoined {
            name: "Alice".into(),
        },
        ServerEvent::Chat {
            name: "Alice".into(),
            message: "hello: world".into(),
        },
        ServerEvent::PlayerLeft {
            name: "Alice".into(),
        },
        ServerEvent::Quitting {
            reason: "multiplayer error".into(),
        },
        ServerEvent::Crashed {
            message: "boom".into(),
        },
    ];
    let mut it = t.iter();
    for w in &want {
        assert!(
            it.any(|e| *e == w),
            "{w:?} missing or out of order in {t:#?}"
        );
    }
    match events.last() {
        Some(ServerEvent::Exited(r)) => {
            assert_eq!(r.code, Some(1));
            assert!(!r.requested && !r.graceful);
        }
        other => panic!("{other:?}"),
    }
    assert!(server.exited().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_is_detected_from_files_and_from_the_binary() {
    let sim = SimInstall::with_version("1.1.110");
    let install = Install::new(&sim.root);
    assert_eq!(version::detect(&install).unwrap().to_string(), "1.1.110");
    let (v, build) = version::probe(&install.executable(), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(v.to_string(), "1.1.110");
    assert!(build.is_some());
    assert!(version::detect(&Install::new("/nonexistent")).is_err());
}
