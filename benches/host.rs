//! Host benchmarks. Run: `cargo bench --bench host` (release build; prints a Markdown table).
//! Factorio is factorio-sim with its simulated delays scaled to 2 % (FACTORIO_STANDIN_SPEED=0.02),
//! so the figures measure clustorio's own overhead, not a map loading.

#[path = "../tests/common/mod.rs"]
mod common;

use common::cluster::{Api, HostProcess};
use common::{ControllerProcess, join_token};
use serde_json::json;
use std::time::{Duration, Instant};

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

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let cdir = root.path().join("c");
    std::fs::create_dir_all(&cdir).unwrap();
    let c = ControllerProcess::start(&cdir);
    let api = Api::new(&c.url(""), &c.first_token);
    let join = join_token(&cdir);

    // Host start → connected (`Started`), fresh host each time.
    let mut connects = Vec::new();
    for i in 0..10 {
        let dir = root.path().join(format!("h{i}"));
        common::cluster::install_sim(&dir);
        let t = Instant::now();
        let h = HostProcess::start(&dir, &c.url(""), &join, &format!("h{i}"), &[]);
        connects.push(t.elapsed().as_secs_f64() * 1000.0);
        drop(h);
    }

    let big = root.path().join("big");
    let host = HostProcess::start(
        &big,
        &c.url(""),
        &join,
        "big",
        &[("SERVER_PORT", "41000-41150")],
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = rss_kib(host.child.id());

    // Start request → running, one instance at a time.
    let mut starts = Vec::new();
    for i in 0..10 {
        let name = format!("s{i}");
        api.post("/api/v1/instances", json!({ "name": name })).await;
        api.post(
            &format!("/api/v1/instances/{name}/assign"),
            json!({ "host": "big" }),
        )
        .await;
        let t = Instant::now();
        let (s, v) = api
            .post(&format!("/api/v1/instances/{name}/start"), json!({}))
            .await;
        starts.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(s, 200, "{v}");
        api.post(&format!("/api/v1/instances/{name}/stop"), json!({}))
            .await;
    }

    // 100 instances on one host, started together, then stopped together.
    for i in 0..100 {
        let name = format!("m{i}");
        api.post("/api/v1/instances", json!({ "name": name })).await;
        api.post(
            &format!("/api/v1/instances/{name}/assign"),
            json!({ "host": "big" }),
        )
        .await;
    }
    // Create each map first so the timed start measures starting, not map creation.
    let t = Instant::now();
    let all = |verb: &'static str| {
        let api = api.clone();
        async move {
            let tasks: Vec<_> = (0..100)
                .map(|i| {
                    let api = api.clone();
                    tokio::spawn(async move {
                        api.post(&format!("/api/v1/instances/m{i}/{verb}"), json!({}))
                            .await
                    })
                })
                .collect();
            for t in tasks {
                let (s, v) = t.await.unwrap();
                assert_eq!(s, 200, "{verb}: {v}");
            }
        }
    };
    all("start").await;
    let first_start = t.elapsed().as_secs_f64();
    let rss_100 = rss_kib(host.child.id());
    let t = Instant::now();
    all("stop").await;
    let stop_100 = t.elapsed().as_secs_f64();
    let t = Instant::now();
    all("start").await;
    let start_100 = t.elapsed().as_secs_f64();
    all("stop").await;

    println!("| measure | clustorio | Clusterio (for scale) |");
    println!("|---|---|---|");
    println!(
        "| host start → connected (median of 10) | {:.1} ms | ~880 ms |",
        median(connects)
    );
    println!(
        "| host idle RSS | {:.1} MB | ~103 MB |",
        idle as f64 / 1024.0
    );
    println!(
        "| start request → `running` (median of 10, sim at 2 % delays) | {:.1} ms | |",
        median(starts)
    );
    println!("| 100 instances on one host: first start incl. new maps | {first_start:.2} s | |");
    println!("| 100 instances on one host: start (existing saves) | {start_100:.2} s | |");
    println!("| 100 instances on one host: graceful stop (save + backup) | {stop_100:.2} s | |");
    println!(
        "| host RSS with 100 instances running (Factorio processes not counted) | {:.1} MB | |",
        rss_100 as f64 / 1024.0
    );
}
