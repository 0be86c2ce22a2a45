//! Backbone benchmarks. Run: `cargo bench --bench backbone` (release build; prints Markdown).
//!
//! 1. Patching a 50 MB save (the save patcher alone, in this process): time and peak RSS.
//! 2. IPC from one game through its host and the controller into another game with the `ping`
//!    plugin: messages/s for a burst, and one-way latency p50/p99 of single messages. Games are
//!    factorio-sim running the plugin's real Lua; delivery into game B is one RCON command per
//!    message, as a plugin's data reaches a real game.

#[path = "../tests/common/mod.rs"]
mod common;

use clustorio::host::patch;
use common::cluster::{Api, HostProcess};
use common::{ControllerProcess, join_token};
use serde_json::{Value, json};
use std::io::Write;
use std::time::{Duration, Instant};

fn status_kib(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

const FREEPLAY_2_0: &str = "local handler = require(\"event_handler\")\nhandler.add_lib(require(\"freeplay\"))\n\nif script.active_mods[\"space-age\"] then\n  handler.add_lib(require(\"space-finish-script\"))\nelse\n  handler.add_lib(require(\"silo-script\"))\nend\n";

fn bench_patch(dir: &std::path::Path) -> (f64, u64) {
    let save = dir.join("big.zip");
    {
        let mut w = zip::ZipWriter::new(std::fs::File::create(&save).unwrap());
        let stored = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        // Incompressible level data, as Factorio's compressed level.dat* are.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for part in 0..5 {
            w.start_file(format!("big/level.dat{part}"), stored)
                .unwrap();
            let chunk: Vec<u8> = (0..10 << 20)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            w.write_all(&chunk).unwrap();
        }
        w.start_file("big/control.lua", stored).unwrap();
        w.write_all(FREEPLAY_2_0.as_bytes()).unwrap();
        w.finish().unwrap();
    }
    let mut modules = vec![clustorio::plugins::CORE_MODULE.to_module()];
    modules.extend(
        clustorio::plugins::builtins()
            .iter()
            .filter_map(|b| b.info.lua)
            .map(|l| l.to_module()),
    );
    let before = status_kib("VmHWM:");
    let t = Instant::now();
    patch::patch(&save, &modules, &patch::PatchOptions::default()).unwrap();
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    let peak = status_kib("VmHWM:").saturating_sub(before);
    (ms, peak)
}

async fn rcon(api: &Api, instance: &str, command: &str) -> String {
    let (s, v) = api
        .post(
            &format!("/api/v1/instances/{instance}/rcon"),
            json!({ "command": command }),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    v["output"].as_str().unwrap_or_default().to_string()
}

async fn received_count(api: &Api, instance: &str) -> usize {
    let out = rcon(api, instance, "/sc rcon.print(#ping_state_received())").await;
    out.trim().parse().unwrap_or(0)
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let (patch_ms, patch_peak_kib) = bench_patch(root.path());

    let cdir = root.path().join("c");
    std::fs::create_dir_all(&cdir).unwrap();
    let c = ControllerProcess::start_with(&cdir, &[("PLUGINS", "ping")]);
    let api = Api::new(&c.url(""), &c.first_token);
    let join = join_token(&cdir);
    let _h1 = HostProcess::start(&root.path().join("h1"), &c.url(""), &join, "h1", &[]);
    let _h2 = HostProcess::start(&root.path().join("h2"), &c.url(""), &join, "h2", &[]);
    for (name, host) in [("a", "h1"), ("b", "h2")] {
        let (s, v) = api.post("/api/v1/instances", json!({ "name": name })).await;
        assert_eq!(s, 201, "{v}");
        let (s, v) = api
            .post(
                &format!("/api/v1/instances/{name}/assign"),
                json!({ "host": host }),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        let (s, v) = api
            .post(&format!("/api/v1/instances/{name}/start"), json!({}))
            .await;
        assert_eq!(s, 200, "{v}");
    }
    // A counter global in B, so a poll costs one short RCON command.
    rcon(
        &api,
        "b",
        "/sc function ping_state_received() return storage.ping and storage.ping.received or {} end",
    )
    .await;

    // Burst: N messages printed by one Lua loop in A, until all are in B.
    const N: usize = 2000;
    let t = Instant::now();
    rcon(
        &api,
        "a",
        &format!("/sc for i = 1, {N} do ping.send('burst ' .. i) end"),
    )
    .await;
    while received_count(&api, "b").await < N {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let burst_s = t.elapsed().as_secs_f64();

    // Latency: one message at a time; B polled every ~1 ms.
    let mut lat = Vec::new();
    for i in 0..200 {
        let want = N + i + 1;
        let t = Instant::now();
        rcon(&api, "a", &format!("/sc ping.send('single {i}')")).await;
        while received_count(&api, "b").await < want {}
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let plugins: Value = api.get("/api/v1/plugins").await;
    let stored = plugins[0]["status"]["messages"].as_i64().unwrap_or(0);
    assert_eq!(stored as usize, N + 200);

    println!("| measure | clustorio |");
    println!("|---|---|");
    println!(
        "| patch a 50 MB save (core module + every built-in plugin's Lua) | {patch_ms:.0} ms, peak RSS +{:.1} MB |",
        patch_peak_kib as f64 / 1024.0
    );
    println!(
        "| IPC game A → host → controller → host → game B, burst of {N} | {:.0} messages/s |",
        N as f64 / burst_s
    );
    println!(
        "| one message A → B, latency p50 / p99 (200 messages, includes ~1 ms polling of B over RCON) | {:.1} ms / {:.1} ms |",
        percentile(&mut lat, 0.5),
        percentile(&mut lat, 0.99)
    );
}
