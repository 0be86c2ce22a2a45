//! Docker backend benchmarks. Run: `cargo bench --bench docker` (release build; prints a Markdown
//! table). Needs a Docker daemon; the image is the tests' runtime image (this machine's C library,
//! the sim mounted). Factorio is factorio-sim with its delays at 2 % (FACTORIO_STANDIN_SPEED=0.02),
//! so the figures are clustorio's and the daemon's overhead, not a map loading.

#[path = "../tests/common/mod.rs"]
mod common;

use common::cluster::{Api, HostProcess};
use common::{ControllerProcess, join_token};
use serde_json::json;
use std::process::Command;
use std::time::{Duration, Instant};

const IMAGE: &str = "clustorio-test-runtime:latest";

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Start → running and stop → stopped, `n` times each, on `host`.
async fn start_stop(api: &Api, host: &str, prefix: &str, n: usize) -> (f64, f64) {
    let (mut starts, mut stops) = (Vec::new(), Vec::new());
    for i in 0..n {
        let name = format!("{prefix}{i}");
        api.post("/api/v1/instances", json!({ "name": name })).await;
        api.post(
            &format!("/api/v1/instances/{name}/assign"),
            json!({ "host": host }),
        )
        .await;
        // The first start also makes the map; time the second.
        for round in 0..2 {
            let t = Instant::now();
            let (s, v) = api
                .post(&format!("/api/v1/instances/{name}/start"), json!({}))
                .await;
            assert_eq!(s, 200, "{v}");
            let started = t.elapsed().as_secs_f64() * 1000.0;
            let t = Instant::now();
            let (s, v) = api
                .post(&format!("/api/v1/instances/{name}/stop"), json!({}))
                .await;
            assert_eq!(s, 200, "{v}");
            if round == 1 {
                starts.push(started);
                stops.push(t.elapsed().as_secs_f64() * 1000.0);
            }
        }
    }
    (median(starts), median(stops))
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let up = Command::new("docker")
        .args(["image", "inspect", IMAGE])
        .output()
        .is_ok_and(|o| o.status.success());
    if !up {
        eprintln!(
            "SKIPPED: no Docker daemon or no {IMAGE} (run `cargo test --test docker_backend` once)"
        );
        return;
    }
    let root = tempfile::Builder::new()
        .prefix("docker-bench-")
        .tempdir_in(concat!(env!("CARGO_MANIFEST_DIR"), "/target"))
        .unwrap();
    let cdir = root.path().join("c");
    std::fs::create_dir_all(&cdir).unwrap();
    let c = ControllerProcess::start(&cdir);
    let api = Api::new(&c.url(""), &c.first_token);
    let join = join_token(&cdir);
    let host_name = format!("bench-{}", std::process::id());
    let docker_env = [
        ("FACTORIO_BACKEND", "docker"),
        ("DOCKER_IMAGE", IMAGE),
        ("DOCKER_KEEP_RUNNING", "false"),
        ("SERVER_PORT", "42000-42060"),
    ];
    let dock = HostProcess::start(
        &root.path().join("dock"),
        &c.url(""),
        &join,
        &host_name,
        &docker_env,
    );
    let _proc = HostProcess::start(&root.path().join("proc"), &c.url(""), &join, "proc", &[]);

    let (p_start, p_stop) = start_stop(&api, "proc", "p", 10).await;
    let (d_start, d_stop) = start_stop(&api, &host_name, "d", 10).await;

    // 50 containers on one host, started together.
    let idle = rss_kib(dock.child.id());
    for i in 0..50 {
        let name = format!("m{i}");
        api.post("/api/v1/instances", json!({ "name": name })).await;
        api.post(
            &format!("/api/v1/instances/{name}/assign"),
            json!({ "host": host_name }),
        )
        .await;
    }
    let t = Instant::now();
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let api = api.clone();
            tokio::spawn(async move {
                api.post(&format!("/api/v1/instances/m{i}/start"), json!({}))
                    .await
            })
        })
        .collect();
    for t in tasks {
        let (s, v) = t.await.unwrap();
        assert_eq!(s, 200, "{v}");
    }
    let start_50 = t.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_50 = rss_kib(dock.child.id());
    let t = Instant::now();
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let api = api.clone();
            tokio::spawn(async move {
                api.post(&format!("/api/v1/instances/m{i}/stop"), json!({}))
                    .await
            })
        })
        .collect();
    for t in tasks {
        let (s, v) = t.await.unwrap();
        assert_eq!(s, 200, "{v}");
    }
    let stop_50 = t.elapsed().as_secs_f64();
    drop(dock);
    let _ = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "docker rm -f $(docker ps -aq --filter label=clustorio.host={host_name}) 2>/dev/null; docker network rm clustorio-{host_name} >/dev/null 2>&1"
        ))
        .status();

    println!("| measure | process backend | Docker backend |");
    println!("|---|---|---|");
    println!(
        "| start request → `running` (median of 10, existing save) | {p_start:.0} ms | {d_start:.0} ms |"
    );
    println!(
        "| stop request → `stopped` (median of 10; save + backup) | {p_stop:.0} ms | {d_stop:.0} ms |"
    );
    println!(
        "| 50 instances on one host: start together (first start, new maps) | | {start_50:.2} s |"
    );
    println!("| 50 instances on one host: graceful stop together | | {stop_50:.2} s |");
    println!(
        "| host RSS idle → with 50 containers running | | {:.1} MB → {:.1} MB |",
        idle as f64 / 1024.0,
        rss_50 as f64 / 1024.0
    );
}
