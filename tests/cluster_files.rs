//! Mods, backups (periodic, with retention, restored on another host), log streaming, and how a
//! host tells its operator what is wrong.

mod common;

use common::cluster::{Api, HostProcess, free_tcp_port, install_sim};
use common::{ControllerProcess, bin, join_token};
use futures_util::StreamExt;
use serde_json::json;
use std::io::Write;
use std::time::Duration;

fn zip_with(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut w = zip::ZipWriter::new(&mut buf);
        for (name, data) in entries {
            w.start_file(*name, zip::write::SimpleFileOptions::default())
                .unwrap();
            w.write_all(data).unwrap();
        }
        w.finish().unwrap();
    }
    buf.into_inner()
}

fn count_zips(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".zip"))
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mods_backups_restores_and_log_streams() {
    let root = tempfile::tempdir().unwrap();
    let cdir = root.path().join("c");
    std::fs::create_dir_all(&cdir).unwrap();
    let c = ControllerProcess::start(&cdir);
    let api = Api::new(&c.url(""), &c.first_token);
    let join = join_token(&cdir);
    let _a = HostProcess::start(&root.path().join("a"), &c.url(""), &join, "a", &[]);

    // Mods: uploaded once, checked, fetched by the host before start.
    let m = zip_with(&[(
        "speedy_1.0.0/info.json",
        br#"{"name":"speedy","version":"1.0.0"}"#,
    )]);
    let (s, v) = api.put_bytes("/api/v1/mods/speedy_1.0.0.zip", m).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["sha256"].as_str().unwrap().len(), 64);
    let (s, _) = api
        .put_bytes(
            "/api/v1/mods/junk_1.0.0.zip",
            zip_with(&[("readme.txt", b"x")]),
        )
        .await;
    assert_eq!(s, 400, "a zip without info.json is not a mod");
    let mods = api.get("/api/v1/mods").await;
    assert_eq!(mods.as_array().unwrap().len(), 1);

    let config = json!({"mods": ["speedy_1.0.0.zip"], "backup_interval_minutes": 0.004, "backup_retention": 2});
    assert_eq!(
        api.post(
            "/api/v1/instances",
            json!({"name": "modded", "config": config})
        )
        .await
        .0,
        201
    );
    api.post("/api/v1/instances/modded/assign", json!({"host": "a"}))
        .await;
    let (s, v) = api.post("/api/v1/instances/modded/start", json!({})).await;
    assert_eq!(s, 200, "{v}");
    let inst_dir = root.path().join("a/instances/modded");
    assert!(inst_dir.join("mods/speedy_1.0.0.zip").exists());
    let list = std::fs::read_to_string(inst_dir.join("mods/mod-list.json")).unwrap();
    assert!(list.contains("\"speedy\""), "{list}");

    // Following the log: recent lines first, then live ones.
    let resp = reqwest::Client::new()
        .get(c.url("/api/v1/instances/modded/logs?follow=1"))
        .bearer_auth(&c.first_token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let mut stream = resp.bytes_stream();
    api.post(
        "/api/v1/instances/modded/rcon",
        json!({"command": "/standin chat bob hello there"}),
    )
    .await;
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !seen.contains("[CHAT] bob: hello there") {
        let chunk = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("log line in time")
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.contains("Hosting game at"), "recent lines come first");

    // Periodic backups, pruned to the retention.
    let id = v["id"].as_i64().unwrap();
    let backups = cdir.join(format!("saves/{id}/backups"));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while count_zips(&backups) < 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A backup arrives every 240 ms and the older ones are pruned after it is stored, so a
    // look can fall between the two: the retention holds once the newest is pruned for.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let listed = loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let listed = api.get("/api/v1/instances/modded/backups").await;
        let on_disk = count_zips(&backups);
        if (on_disk == 2 && listed.as_array().map(Vec::len) == Some(2))
            || std::time::Instant::now() > deadline
        {
            assert_eq!(on_disk, 2, "retention keeps 2 copies");
            break listed;
        }
    };
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    assert_eq!(listed[0]["save"], "world.zip");
    let file = listed[0]["file"].as_str().unwrap().to_string();
    let (s, zip) = api
        .get_bytes(&format!("/api/v1/instances/modded/backups/{file}"))
        .await;
    assert_eq!(s, 200);
    assert!(zip.starts_with(b"PK"));

    // Moved to a host that has never seen it: it starts from the controller's newest backup.
    let (s, _) = api.post("/api/v1/instances/modded/stop", json!({})).await;
    assert_eq!(s, 200);
    let _b = HostProcess::start(&root.path().join("b"), &c.url(""), &join, "b", &[]);
    let (s, v) = api
        .post("/api/v1/instances/modded/assign", json!({"host": "b"}))
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = api.post("/api/v1/instances/modded/start", json!({})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        count_zips(&root.path().join("b/instances/modded/saves")),
        1,
        "restored, not a new map"
    );
    let saves = api.get("/api/v1/instances/modded/saves").await;
    assert!(
        saves
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "world.zip" && s["backups"].as_u64().unwrap() >= 1),
        "{saves}"
    );
}

fn host_cmd(dir: &std::path::Path, url: &str, token: &str, name: &str) -> std::process::Command {
    install_sim(dir);
    let mut cmd = std::process::Command::new(bin("clustorio"));
    cmd.args(["host", "run", "--dir"])
        .arg(dir)
        .env("MASTER_URL", url)
        .env("MASTER_TOKEN", token)
        .env("SLAVE_NAME", name)
        .env("LOG_LEVEL", "warn")
        .stdin(std::process::Stdio::null());
    cmd
}

#[tokio::test]
async fn a_host_says_clearly_why_it_cannot_join() {
    let root = tempfile::tempdir().unwrap();
    let cdir = root.path().join("c");
    std::fs::create_dir_all(&cdir).unwrap();
    let c = ControllerProcess::start(&cdir);
    let join = join_token(&cdir);

    let out = host_cmd(&root.path().join("x"), &c.url(""), "join_wrong", "x")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refused") && err.contains("invalid or revoked token"),
        "{err}"
    );

    let _first = HostProcess::start(&root.path().join("y"), &c.url(""), &join, "twin", &[]);
    let out = host_cmd(&root.path().join("z"), &c.url(""), &join, "twin")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already registered"), "{err}");

    let out = host_cmd(&root.path().join("w"), &c.url(""), &join, "")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "a usage error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("SLAVE_NAME"));

    // An unreachable controller is not fatal: the host says so and keeps trying.
    let port = free_tcp_port();
    let mut child = host_cmd(
        &root.path().join("v"),
        &format!("http://127.0.0.1:{port}"),
        &join,
        "v",
    )
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(child.try_wait().unwrap().is_none(), "still trying");
    // Once the controller appears on that port, the host joins by itself.
    drop(c);
    let c2 = ControllerProcess::start_on(&cdir, port, &[]);
    let api = Api::new(&c2.url(""), &common::user_token(&cdir, "admin"));
    api.wait_for("/api/v1/hosts", |v| {
        v.as_array()
            .is_some_and(|h| h.iter().any(|h| h["name"] == "v" && h["connected"] == true))
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("cannot reach the controller"), "{stderr}");
}

#[tokio::test]
async fn the_host_console_stops_it_cleanly() {
    let root = tempfile::tempdir().unwrap();
    let cdir = root.path().join("c");
    std::fs::create_dir_all(&cdir).unwrap();
    let c = ControllerProcess::start(&cdir);
    let api = Api::new(&c.url(""), &c.first_token);
    let mut h = HostProcess::start(
        &root.path().join("h"),
        &c.url(""),
        &join_token(&cdir),
        "h",
        &[],
    );
    api.post("/api/v1/instances", json!({"name": "one"})).await;
    api.post("/api/v1/instances/one/assign", json!({})).await;
    assert_eq!(
        api.post("/api/v1/instances/one/start", json!({})).await.0,
        200
    );
    h.console("status");
    h.wait_line(Duration::from_secs(5), |l| l.contains("one running"));
    h.console("bogus");
    h.wait_line(Duration::from_secs(5), |l| l.contains("unknown command"));
    h.console("stop");
    assert_eq!(h.wait_exit(Duration::from_secs(20)), Some(0));
    assert!(common::cluster::factorio_pids_under(&root.path().join("h")).is_empty());
    let saves = root.path().join("h/instances/one/saves");
    assert_eq!(count_zips(&saves), 1);
}
