//! `clustorio demo` brings up a working cluster and stops it cleanly on Ctrl-C.

mod common;

use common::bin;
use common::cluster::{Api, free_tcp_port};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_a_cluster_with_players_and_stops_on_ctrl_c() {
    common::bin("factorio-sim");
    let dir = tempfile::tempdir().unwrap();
    let port = free_tcp_port();
    let mut child = Command::new(bin("clustorio"))
        .args(["demo", "--port", &port.to_string(), "--dir"])
        .arg(dir.path())
        .env("LOG_LEVEL", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut token = String::new();
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(90))
            .expect("demo output");
        if let Some(t) = line.split("admin token:").nth(1) {
            token = t.trim().to_string();
        }
        if line.contains("Press Ctrl-C") {
            break;
        }
    }
    let api = Api::new(&format!("http://127.0.0.1:{port}"), &token);
    let instances = api.get("/api/v1/instances").await;
    assert_eq!(instances.as_array().unwrap().len(), 2);
    assert!(
        instances
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["status"] == "running"),
        "{instances}"
    );
    // The simulated players join a few seconds in.
    let v = api
        .wait_for("/api/v1/instances/nauvis", |v| {
            v["players_online"]
                .as_array()
                .is_some_and(|p| !p.is_empty())
        })
        .await;
    assert!(
        v["players_online"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == "Alice")
    );

    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let code = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st.code();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the demo did not stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(code, Some(0));
    assert!(
        common::cluster::factorio_pids_under(dir.path()).is_empty(),
        "no Factorio left running"
    );
}
