//! subspace_storage through the pool. Run: `cargo bench --profile dev --bench subspace` (prints
//! Markdown).
//!
//! 20 factorio-sim games on 5 hosts (4 each) with the stand-in Subspace Storage mod; the games
//! are paused (no players) and the bench drives their 62-tick cycle with `/standin tick 62`.
//! - Throughput: 18 games in a ring (g2 → g3 → … → g19 → g2); every round each puts 100 plates
//!   of its own kind into an injector and runs one cycle (export at tick 60, orders at tick 61),
//!   all concurrently, while its successor's extractor asks for that kind. Items/s = items that
//!   arrived in extractors / wall time until the last arrived; every one went through an export
//!   (spooled, sent with its key, committed) and a grant (committed, imported, confirmed).
//! - Latency on g0 → g1, first on an idle cluster, then during the throughput run: put 10 plates on g0, run its cycle, then run
//!   g1's cycle until its extractor has them. Each step is an RCON call over the controller's
//!   API, which is part of every sample.

#[path = "../tests/common/mod.rs"]
mod common;

use common::cluster::{Api, rcon};
use common::subspace::{Cluster, parse_game};
use std::time::Instant;

const HOSTS: usize = 5;
const PER_HOST: usize = 4;
const ROUNDS: usize = 30;
const PUT: i64 = 100;
const SAMPLES: usize = 50;

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

async fn extracted(api: &Api, game: &str, key: &str) -> i64 {
    let out = rcon(api, game, "/standin subspace count").await;
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_default();
    let _ = parse_game(&out);
    v[key]["extracted"].as_i64().unwrap_or(0)
}

/// `count` samples of put on g0 → in g1's extractor (`done` samples came before).
async fn latency(api: &Api, done: usize, count: usize) -> Vec<f64> {
    let mut samples = Vec::new();
    for s in (done + 1)..=(done + count) {
        let t = Instant::now();
        rcon(api, "g0", "/standin subspace put iron-plate 10").await;
        rcon(api, "g0", "/standin tick 62").await;
        loop {
            rcon(api, "g1", "/standin tick 62").await;
            if extracted(api, "g1", "iron-plate:normal").await >= 10 * s as i64 {
                break;
            }
        }
        samples.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    samples
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let hosts: Vec<String> = (0..HOSTS).map(|h| format!("h{h}")).collect();
    let host_refs: Vec<&str> = hosts.iter().map(String::as_str).collect();
    let c = Cluster::start(&host_refs).await;
    let games: Vec<String> = (0..HOSTS * PER_HOST).map(|i| format!("g{i}")).collect();
    for (i, g) in games.iter().enumerate() {
        c.instance(g, &hosts[i / PER_HOST]).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let ring: Vec<String> = games[2..].to_vec();
    let n = ring.len();
    for (i, g) in ring.iter().enumerate() {
        let prev = &ring[(i + n - 1) % n];
        rcon(
            &c.api,
            g,
            &format!("/standin subspace request plate-{prev} 100000000"),
        )
        .await;
    }
    rcon(
        &c.api,
        "g1",
        "/standin subspace request iron-plate 100000000",
    )
    .await;

    let api = &c.api;
    let idle = latency(api, 0, SAMPLES).await;
    let latency = latency(api, SAMPLES, SAMPLES);
    let throughput = async {
        let t = Instant::now();
        for _ in 0..ROUNDS {
            futures_util::future::join_all(ring.iter().map(|g| async move {
                rcon(api, g, &format!("/standin subspace put plate-{g} {PUT}")).await;
                rcon(api, g, "/standin tick 62").await;
            }))
            .await;
        }
        // Then only cycles, until every item has arrived.
        let want = ROUNDS as i64 * PUT;
        loop {
            let got = futures_util::future::join_all(ring.iter().enumerate().map(|(i, g)| {
                let prev = ring[(i + n - 1) % n].clone();
                async move {
                    let have = extracted(api, g, &format!("plate-{prev}:normal")).await;
                    if have < want {
                        rcon(api, g, "/standin tick 62").await;
                    }
                    have
                }
            }))
            .await;
            if got.iter().all(|h| *h >= want) {
                break;
            }
            assert!(
                t.elapsed().as_secs() < 300,
                "items did not all arrive: {got:?}"
            );
        }
        (t.elapsed().as_secs_f64(), want * n as i64)
    };
    let (mut samples, (secs, items)) = tokio::join!(latency, throughput);
    let batches = (ROUNDS * n) as f64;
    println!("| measure | clustorio (dev profile) |");
    println!("|---|---|");
    println!(
        "| items through the pool, 18 games exporting and requesting at once ({ROUNDS} rounds × {PUT} plates each) | {:.0} items/s ({:.1} export batches/s + as many grants) |",
        items as f64 / secs,
        batches / secs
    );
    let mut idle = idle;
    println!(
        "| put on g0 → in g1's extractor, idle cluster, p50 / p99 ({SAMPLES} samples; includes the bench's RCON steps) | {:.1} ms / {:.1} ms |",
        percentile(&mut idle, 0.5),
        percentile(&mut idle, 0.99)
    );
    println!(
        "| … while the 18 others move items as above, p50 / p99 ({SAMPLES} samples) | {:.1} ms / {:.1} ms |",
        percentile(&mut samples, 0.5),
        percentile(&mut samples, 0.99)
    );
}
