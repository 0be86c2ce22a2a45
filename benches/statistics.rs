//! `/metrics` with statistics_exporter on 100 games. Run: `cargo bench --bench statistics`
//! (release; prints a Markdown table). 100 factorio-sim instances on one host each report 100
//! items (×2 directions) every second; the scrape is timed while they all run, and again while
//! one game's RCON is frozen (`/standin hang`).

#[path = "../tests/common/mod.rs"]
mod common;

use common::cluster::{Api, HostProcess};
use common::{ControllerProcess, join_token};
use serde_json::json;
use std::time::{Duration, Instant};

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p) as usize]
}

async fn scrape_times(api: &Api, n: usize) -> (Vec<f64>, usize) {
    let mut times = Vec::new();
    let mut bytes = 0;
    for _ in 0..n {
        let t = Instant::now();
        let (s, m) = api.call("GET", "/metrics", None).await;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(s, 200);
        bytes = m.as_str().map(str::len).unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (times, bytes)
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let cdir = root.path().join("c");
    std::fs::create_dir_all(&cdir).unwrap();
    let c = ControllerProcess::start_with(&cdir, &[("PLUGINS", "statistics_exporter")]);
    let api = Api::new(&c.url(""), &c.first_token);
    let join = join_token(&cdir);
    let _host = HostProcess::start(
        &root.path().join("h"),
        &c.url(""),
        &join,
        "h",
        &[("SERVER_PORT", "42000-42150")],
    );
    let config = json!({ "statistics_exporter": { "interval_s": 1.0 } });
    for i in 0..100 {
        let name = format!("s{i}");
        api.post(
            "/api/v1/instances",
            json!({ "name": name, "config": config }),
        )
        .await;
        api.post(
            &format!("/api/v1/instances/{name}/assign"),
            json!({ "host": "h" }),
        )
        .await;
    }
    // Started 20 at a time: 100 games booting at once on 2 cores miss the start timeout.
    for batch in 0..5 {
        let starts = (batch * 20..batch * 20 + 20).map(|i| {
            let api = api.clone();
            async move {
                api.post(&format!("/api/v1/instances/s{i}/start"), json!({}))
                    .await
            }
        });
        futures_util::future::join_all(starts).await;
    }
    let fill = "/sc local s = game.forces.player.get_item_production_statistics(1) for i = 1, 100 do s.input_counts['item-' .. i] = i * 10 s.output_counts['item-' .. i] = i end";
    for i in 0..100 {
        api.post(
            &format!("/api/v1/instances/s{i}/rcon"),
            json!({ "command": fill }),
        )
        .await;
    }
    // Wait for every game's sample.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, m) = api.call("GET", "/metrics", None).await;
        let m = m.as_str().unwrap_or_default().to_string();
        let sampled = m
            .lines()
            .filter(|l| l.starts_with("clusterio_statistics_exporter_instance_game_ticks_total{"))
            .count();
        let full = m.matches("name=\"item-100\"").count();
        if sampled == 100 && full >= 200 {
            break;
        }
        assert!(Instant::now() < deadline, "only {sampled} games sampled");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (running, bytes) = scrape_times(&api, 50).await;
    // The hang answers only when it ends: send it without waiting, and scrape while it lasts.
    let hang = tokio::spawn({
        let api = api.clone();
        async move {
            api.post(
                "/api/v1/instances/s0/rcon",
                json!({ "command": "/standin hang 8000" }),
            )
            .await
        }
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (frozen, _) = scrape_times(&api, 40).await;
    let _ = hang.await;
    println!("| measure | median | p99 |\n|---|---|---|");
    println!(
        "| `/metrics` scrape, 100 games × 200 statistics series ({:.1} MB) | {:.1} ms | {:.1} ms |",
        bytes as f64 / 1e6,
        percentile(running.clone(), 0.5),
        percentile(running, 0.99)
    );
    println!(
        "| the same while one game's RCON is frozen | {:.1} ms | {:.1} ms |",
        percentile(frozen.clone(), 0.5),
        percentile(frozen, 0.99)
    );
}
