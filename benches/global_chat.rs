//! global_chat fan-out. Run: `cargo bench --bench global_chat` (release build; prints Markdown).
//!
//! 20 factorio-sim games on 5 hosts (4 each), all with global_chat. One player line in game 0
//! (`/standin chat`, the game's own `[CHAT]` log line) must show in the 19 others through
//! `game.print`; the time until the last of them shows it is one sample. Each game is polled
//! over the controller's RCON route (`/standin printed`), concurrently, which adds a few ms.

#[path = "../tests/common/mod.rs"]
mod common;

use common::cluster::{Api, HostProcess, rcon};
use common::{ControllerProcess, join_token};
use serde_json::json;
use std::time::{Duration, Instant};

const HOSTS: usize = 5;
const PER_HOST: usize = 4;
const MESSAGES: usize = 100;

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

async fn shown(api: &Api, instance: &str) -> usize {
    rcon(api, instance, "/standin printed")
        .await
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let cdir = root.path().join("c");
    std::fs::create_dir_all(&cdir).unwrap();
    let c = ControllerProcess::start_with(&cdir, &[("PLUGINS", "global_chat")]);
    let api = Api::new(&c.url(""), &c.first_token);
    let join = join_token(&cdir);
    let mut hosts = Vec::new();
    let mut names = Vec::new();
    for h in 0..HOSTS {
        let host = format!("h{h}");
        hosts.push(HostProcess::start(
            &root.path().join(&host),
            &c.url(""),
            &join,
            &host,
            &[],
        ));
        for i in 0..PER_HOST {
            let name = format!("g{}", h * PER_HOST + i);
            let (s, v) = api.post("/api/v1/instances", json!({ "name": name })).await;
            assert_eq!(s, 201, "{v}");
            let (s, v) = api
                .post(
                    &format!("/api/v1/instances/{name}/assign"),
                    json!({ "host": host }),
                )
                .await;
            assert_eq!(s, 200, "{v}");
            names.push(name);
        }
    }
    for name in &names {
        let (s, v) = api
            .post(&format!("/api/v1/instances/{name}/start"), json!({}))
            .await;
        assert_eq!(s, 200, "start {name}: {v}");
    }
    let others: Vec<String> = names[1..].to_vec();

    let mut last = Vec::new();
    let mut each = Vec::new();
    for n in 1..=MESSAGES {
        let t = Instant::now();
        rcon(&api, "g0", &format!("/standin chat alice message {n}")).await;
        let arrivals = futures_util::future::join_all(others.iter().map(|g| {
            let api = &api;
            async move {
                while shown(api, g).await < n {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                t.elapsed().as_secs_f64() * 1000.0
            }
        }))
        .await;
        last.push(arrivals.iter().copied().fold(0.0, f64::max));
        each.extend(arrivals);
    }
    drop(hosts);

    println!("| measure | clustorio |");
    println!("|---|---|");
    println!(
        "| chat line in 1 game → shown in all 19 others (20 games, 5 hosts), p50 / p99 ({MESSAGES} messages, includes RCON polling) | {:.1} ms / {:.1} ms |",
        percentile(&mut last, 0.5),
        percentile(&mut last, 0.99)
    );
    println!(
        "| … per receiving game, p50 / p99 | {:.1} ms / {:.1} ms |",
        percentile(&mut each, 0.5),
        percentile(&mut each, 0.99)
    );
}
