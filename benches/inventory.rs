//! inventory_sync: time to move a full inventory between two games. Run:
//! `cargo bench --profile dev --bench inventory` (prints Markdown).
//!
//! Two factorio-sim games on two hosts. Carol's character is full: 80 main slots of distinct
//! items, armour, 3 guns, 3 ammo stacks, 20 trash slots and 100 quick-bar slots. Each round she
//! leaves one game (upload: from `/standin leave` until the controller has the new generation)
//! and joins the other (download: from `/standin join` until that game reports her synced, which
//! includes the chunked RCON transfer at the default 1,000-byte chunks and the spectator flow).
//! Both are polled every 5 ms over the API, which adds to each sample.

#[path = "../tests/common/mod.rs"]
mod common;

use common::cluster::{Api, HostProcess, rcon, wait_until};
use common::inventory::{create_and_start, stored, sync_state};
use common::{ControllerProcess, join_token};
use std::time::{Duration, Instant};

const ROUNDS: usize = 20;
const P: &str = "Carol";

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

async fn synced(api: &Api, game: &str) -> bool {
    sync_state(api, game, P).await["state"] == "synced"
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let cdir = root.path().join("c");
    std::fs::create_dir_all(&cdir).unwrap();
    let c = ControllerProcess::start_with(&cdir, &[("PLUGINS", "inventory_sync")]);
    let api = Api::new(&c.url(""), &c.first_token);
    let join = join_token(&cdir);
    let _h1 = HostProcess::start(&root.path().join("h1"), &c.url(""), &join, "h1", &[]);
    let _h2 = HostProcess::start(&root.path().join("h2"), &c.url(""), &join, "h2", &[]);
    create_and_start(&api, "a", "h1").await;
    create_and_start(&api, "b", "h2").await;
    for g in ["a", "b"] {
        wait_until("the game runs the plugin", 60, || async {
            sync_state(&api, g, P).await.is_object()
        })
        .await;
    }
    rcon(&api, "a", &format!("/standin join {P}")).await;
    wait_until("Carol synced on a", 60, || synced(&api, "a")).await;
    let fill = format!(
        "/sc local p = game.get_player(\"{P}\") local i = defines.inventory \
         local main = p.get_inventory(i.character_main) for s = 1, #main do main[s].set_stack({{name = \"item-\" .. s, count = 100}}) end \
         p.get_inventory(i.character_armor)[1].set_stack({{name = \"power-armor\", count = 1}}) \
         for s = 1, 3 do p.get_inventory(i.character_guns)[s].set_stack({{name = \"pistol\", count = 5}}) \
         p.get_inventory(i.character_ammo)[s].set_stack({{name = \"firearm-magazine\", count = 200, quality = \"rare\"}}) end \
         local trash = p.get_inventory(i.character_trash) for s = 1, #trash do trash[s].set_stack({{name = \"wood\", count = 100}}) end \
         for s = 1, 100 do p.set_quick_bar_slot(s, \"item-\" .. s % 80 + 1) end"
    );
    let out = rcon(&api, "a", &fill).await;
    assert!(out.trim().is_empty(), "filling the inventory: {out}");

    let mut uploads = Vec::new();
    let mut downloads = Vec::new();
    let (mut from, mut to) = ("a", "b");
    let mut generation = 0;
    for _ in 0..ROUNDS {
        let t = Instant::now();
        rcon(&api, from, &format!("/standin leave {P}")).await;
        generation += 1;
        loop {
            let s = stored(&api, P).await;
            if s["generation"].as_i64() == Some(generation) && s["holder"].is_null() {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "upload timed out: {s}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        uploads.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        rcon(&api, to, &format!("/standin join {P}")).await;
        while !synced(&api, to).await {
            assert!(t.elapsed() < Duration::from_secs(30), "download timed out");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        downloads.push(t.elapsed().as_secs_f64() * 1000.0);
        std::mem::swap(&mut from, &mut to);
    }
    let row = stored(&api, P).await;
    let size = row["size"].as_u64().unwrap_or(0);
    let main = &row["data"]["inventories"]["main"];
    assert_eq!(
        main.as_array().map(Vec::len),
        Some(80),
        "a full main inventory"
    );
    println!("\n| measure | clustorio (dev profile) |\n|---|---|");
    println!(
        "| serialised full inventory | {size} bytes ({} RCON chunks of 1,000 bytes) |",
        size.div_ceil(1000)
    );
    println!(
        "| upload (leave → committed on the controller), p50 / p90 of {ROUNDS} | {:.1} ms / {:.1} ms |",
        percentile(&mut uploads, 0.5),
        percentile(&mut uploads, 0.9)
    );
    println!(
        "| download (join → synced in the other game), p50 / p90 of {ROUNDS} | {:.1} ms / {:.1} ms |",
        percentile(&mut downloads, 0.5),
        percentile(&mut downloads, 0.9)
    );
    let mut total: Vec<f64> = uploads.iter().zip(&downloads).map(|(u, d)| u + d).collect();
    println!(
        "| one move (upload + download), p50 | {:.1} ms |",
        percentile(&mut total, 0.5)
    );
}
