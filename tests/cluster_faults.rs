//! Faults on a real cluster: a Factorio killed under an instance, the controller killed, a host
//! killed — the cluster tells the truth afterwards and nothing runs twice.

mod common;

use common::cluster::{Api, HostProcess, factorio_pids_under, free_tcp_port};
use common::{ControllerProcess, join_token};
use serde_json::json;
use std::time::Duration;

fn kill9(pid: u32) {
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

async fn running(api: &Api, name: &str, config: serde_json::Value) {
    assert_eq!(
        api.post("/api/v1/instances", json!({"name": name, "config": config}))
            .await
            .0,
        201
    );
    assert_eq!(
        api.post(&format!("/api/v1/instances/{name}/assign"), json!({}))
            .await
            .0,
        200
    );
    let (s, v) = api
        .post(&format!("/api/v1/instances/{name}/start"), json!({}))
        .await;
    assert_eq!(s, 200, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_factorio_is_reported_crashed_and_restarted_when_configured() {
    let root = tempfile::tempdir().unwrap();
    let c = ControllerProcess::start(&root.path().join("c").tap_mkdir());
    let api = Api::new(&c.url(""), &c.first_token);
    let host = HostProcess::start(
        &root.path().join("h"),
        &c.url(""),
        &join_token(&root.path().join("c")),
        "h",
        &[],
    );
    running(&api, "phoenix", json!({"restart_on_crash": true})).await;
    running(&api, "mortal", json!({})).await;

    let first = host.factorio_pid("phoenix").unwrap();
    kill9(first);
    let crashed = api
        .wait_for("/api/v1/instances/phoenix", |v| v["status"] == "crashed")
        .await;
    assert!(
        crashed["message"].as_str().unwrap().contains("signal 9"),
        "{crashed}"
    );
    api.wait_for("/api/v1/instances/phoenix", |v| v["status"] == "running")
        .await;
    let second = host.factorio_pid("phoenix").unwrap();
    assert_ne!(first, second);
    assert!(alive(second));

    // Without restart_on_crash it stays crashed, with the reason shown.
    kill9(host.factorio_pid("mortal").unwrap());
    api.wait_for("/api/v1/instances/mortal", |v| v["status"] == "crashed")
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        api.get("/api/v1/instances/mortal").await["status"],
        "crashed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_killed_leaves_instances_running_and_learns_the_truth_after_restart() {
    let root = tempfile::tempdir().unwrap();
    let cdir = root.path().join("c").tap_mkdir();
    let port = free_tcp_port();
    let mut c = ControllerProcess::start_on(&cdir, port, &[]);
    let token = c.first_token.clone();
    let api = Api::new(&c.url(""), &token);
    let host = HostProcess::start(
        &root.path().join("h"),
        &c.url(""),
        &join_token(&cdir),
        "h",
        &[("MAX_RECONNECT", "1")],
    );
    running(&api, "steady", json!({})).await;
    running(&api, "victim", json!({})).await;
    let steady = host.factorio_pid("steady").unwrap();

    c.kill9();
    // While the controller is away: the instances keep running; one of them dies.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(alive(steady));
    kill9(host.factorio_pid("victim").unwrap());
    tokio::time::sleep(Duration::from_millis(300)).await;

    let _c = ControllerProcess::start_on(&cdir, port, &[]);
    api.wait_for("/api/v1/hosts", |v| v[0]["connected"] == true)
        .await;
    api.wait_for("/api/v1/instances/victim", |v| v["status"] == "crashed")
        .await;
    let s = api
        .wait_for("/api/v1/instances/steady", |v| v["status"] == "running")
        .await;
    assert!(s["game_port"].is_u64());
    assert_eq!(
        host.factorio_pid("steady"),
        Some(steady),
        "not restarted needlessly"
    );
    assert!(alive(steady));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_host_restarts_its_instance_cleanly_with_no_orphan_and_no_double_start() {
    let root = tempfile::tempdir().unwrap();
    let cdir = root.path().join("c").tap_mkdir();
    let c = ControllerProcess::start(&cdir);
    let api = Api::new(&c.url(""), &c.first_token);
    let hdir = root.path().join("h");
    let join = join_token(&cdir);
    let mut host = HostProcess::start(&hdir, &c.url(""), &join, "h", &[]);
    running(&api, "survivor", json!({})).await;
    let orphan = host.factorio_pid("survivor").unwrap();

    host.kill9();
    assert!(alive(orphan), "Factorio outlives a killed host");
    api.wait_for("/api/v1/instances/survivor", |v| v["status"] == "unknown")
        .await;
    // Bad input while the host is away: a start is refused clearly and changes nothing.
    let (s, v) = api.post("/api/v1/instances/survivor/stop", json!({})).await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(v["error"]["code"], "host_disconnected");
    assert_eq!(
        api.get("/api/v1/instances/survivor").await["desired"],
        "running"
    );

    // The restarted host uses its saved token, stops the orphan (it saves) and starts the
    // instance again, because the controller still wants it running.
    let _host = HostProcess::start(&hdir, &c.url(""), &join, "h", &[]);
    api.wait_for("/api/v1/instances/survivor", |v| v["status"] == "running")
        .await;
    assert!(!alive(orphan), "the orphan was stopped");
    let pids = factorio_pids_under(&hdir);
    let ps = String::from_utf8_lossy(
        &std::process::Command::new("ps")
            .args(["-eo", "pid,ppid,stat,args"])
            .output()
            .unwrap()
            .stdout,
    )
    .to_string();
    assert_eq!(
        pids.len(),
        1,
        "exactly one Factorio for the instance: {pids:?}\n{}",
        ps.lines()
            .filter(|l| l.contains("factorio"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_ne!(pids[0], orphan);
    assert_eq!(
        api.get("/api/v1/hosts").await.as_array().unwrap().len(),
        1,
        "no second registration"
    );
}

trait TapMkdir {
    fn tap_mkdir(self) -> Self;
}

impl TapMkdir for std::path::PathBuf {
    fn tap_mkdir(self) -> Self {
        std::fs::create_dir_all(&self).unwrap();
        self
    }
}
