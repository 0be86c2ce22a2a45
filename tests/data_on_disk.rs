//! The controller's files on disk: what it refuses to open, what a graceful stop leaves, the
//! online backup, and who may read the files that hold secrets (issue 22).

mod common;

use common::cluster::{Api, HostProcess, create_and_start};
use common::{ControllerProcess, bin, join_token};
use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// `clustorio controller run` that is expected to refuse: (exit code, stderr).
fn refused_start(dir: &Path) -> (Option<i32>, String) {
    let out = Command::new(bin("clustorio"))
        .args(["controller", "run", "--port", "0", "--dir"])
        .arg(dir)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn find(dir: &Path, name: &str) -> Option<PathBuf> {
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        if p.file_name().is_some_and(|n| n == name) {
            return Some(p);
        }
        if p.is_dir()
            && let Some(f) = find(&p, name)
        {
            return Some(f);
        }
    }
    None
}

fn stop(c: &mut ControllerProcess) {
    c.console("stop");
    assert_eq!(c.wait_exit(Duration::from_secs(20)), Some(0));
}

#[test]
fn an_empty_or_foreign_database_or_wal_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("clustorio.db");
    std::fs::write(&db, b"").unwrap();
    let (code, err) = refused_start(dir.path());
    assert_ne!(code, Some(0));
    assert!(
        err.contains("is empty (0 bytes)") && err.contains("backup"),
        "{err}"
    );
    assert_eq!(
        std::fs::metadata(&db).unwrap().len(),
        0,
        "the file was written to"
    );

    std::fs::write(&db, b"this is not a database at all, just text").unwrap();
    let (code, err) = refused_start(dir.path());
    assert_ne!(code, Some(0));
    assert!(err.contains("is not a SQLite database"), "{err}");

    // A real cluster, stopped; then its WAL replaced by garbage.
    std::fs::remove_file(&db).unwrap();
    let mut c = ControllerProcess::start(dir.path());
    stop(&mut c);
    std::fs::write(dir.path().join("clustorio.db-wal"), vec![0xAB; 8192]).unwrap();
    let (code, err) = refused_start(dir.path());
    assert_ne!(code, Some(0));
    assert!(err.contains("not a SQLite write-ahead log"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_database_copies_alone_and_a_live_backup_is_whole() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = ControllerProcess::start(dir.path());
    let api = Api::new(&c.url(""), &c.first_token);
    for i in 0..5 {
        let (s, v) = api
            .post("/api/v1/instances", json!({ "name": format!("i{i}") }))
            .await;
        assert_eq!(s, 201, "{v}");
    }

    // A backup while 4 clients keep creating instances.
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let api = api.clone();
            tokio::spawn(async move {
                for i in 0..40 {
                    api.post("/api/v1/instances", json!({ "name": format!("w{w}-{i}") }))
                        .await;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let copy = dir.path().join("backup.db");
    let out = Command::new(bin("clustorio"))
        .args(["controller", "backup", "--dir"])
        .arg(dir.path())
        .arg(&copy)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("integrity ok"));
    for w in writers {
        w.await.unwrap();
    }
    let conn = rusqlite::Connection::open(&copy).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let n: i64 = conn
        .query_row("SELECT COUNT(*) FROM instances", [], |r| r.get(0))
        .unwrap();
    assert!((5..=165).contains(&n), "{n} instances in the backup");
    assert_eq!(mode(&copy), 0o600);
    // The backup never overwrites.
    let again = Command::new(bin("clustorio"))
        .args(["controller", "backup", "--dir"])
        .arg(dir.path())
        .arg(&copy)
        .output()
        .unwrap();
    assert!(!again.status.success());

    // After a graceful stop the database file alone has everything (the WAL was checkpointed).
    stop(&mut c);
    let alone = tempfile::tempdir().unwrap();
    std::fs::copy(
        dir.path().join("clustorio.db"),
        alone.path().join("clustorio.db"),
    )
    .unwrap();
    let conn = rusqlite::Connection::open(alone.path().join("clustorio.db")).unwrap();
    let n: i64 = conn
        .query_row("SELECT COUNT(*) FROM instances", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 165);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_holding_secrets_are_private_and_token_replies_are_not_cached() {
    let root = tempfile::tempdir().unwrap();
    let cdir = root.path().join("c");
    std::fs::create_dir_all(&cdir).unwrap();
    let c = ControllerProcess::start(&cdir);
    let api = Api::new(&c.url(""), &c.first_token);
    let hdir = root.path().join("h1");
    let _h = HostProcess::start(&hdir, &c.url(""), &join_token(&cdir), "h1", &[]);
    create_and_start(
        &api,
        "a",
        "h1",
        json!({ "server_settings": { "game_password": "hunter2" } }),
    )
    .await;
    api.wait_for("/api/v1/instances/a", |v| v["status"] == "running")
        .await;
    assert_eq!(mode(&cdir.join("clustorio.db")), 0o600);
    assert_eq!(mode(&cdir.join("clustorio.db-wal")), 0o600);
    assert_eq!(mode(&hdir.join("config-slave.json")), 0o600);
    let settings = find(&hdir, "server-settings.json").expect("server-settings.json");
    assert!(
        std::fs::read_to_string(&settings)
            .unwrap()
            .contains("hunter2")
    );
    assert_eq!(mode(&settings), 0o600);

    let resp = reqwest::Client::new()
        .post(c.url("/api/v1/tokens"))
        .bearer_auth(&c.first_token)
        .json(&json!({ "user": "admin" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let h = resp.headers();
    assert_eq!(h["cache-control"], "no-store");
    assert_eq!(h["x-content-type-options"], "nosniff");
}
