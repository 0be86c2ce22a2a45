//! External plugin ⇄ instances. Run: `cargo bench --bench external_plugin` (prints Markdown).
//!
//! A controller, one host, two factorio-sim games, and a plugin process (this bench, speaking
//! the link as docs/plugins.md says) that owns `bench:`:
//! - **round trip**: the plugin asks a game (`instance_rcon`, through the host's RCON queue) to
//!   send an IPC line on `bench:ping`; the time until the plugin receives it is one sample —
//!   plugin → controller → host → game → host → controller → plugin;
//! - **plugin → instances**: `instance_rcon` requests, 64 in flight, over both games;
//! - **instances → plugin**: one command makes each game print 5,000 IPC lines; the rate at
//!   which they reach the plugin.
//! - **flood**: the plugin sends as fast as it can against a 2,000/s limit; how the controller's
//!   `/api/v1/status` answers meanwhile.

#[path = "../tests/common/mod.rs"]
mod common;

use common::cluster::{Api, HostProcess, create_and_start, wait_until};
use common::link::LinkClient;
use common::{ControllerProcess, join_token};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::{Duration, Instant};

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

struct Plugin {
    link: LinkClient,
    last_seq: u64,
}

impl Plugin {
    /// The next sequenced frame (acknowledged every 100).
    async fn next(&mut self) -> Value {
        let f = self.link.next().await.expect("the link stays up");
        if let Some(seq) = f["seq"].as_u64() {
            self.last_seq = seq;
            if seq % 100 == 0 {
                self.link.ack(seq).await;
            }
        }
        f
    }

    async fn request(&mut self, name: &str, data: Value) -> u64 {
        self.link.request(name, data).await
    }
}

/// A game command that prints an IPC line with `body` (JSON), as `send_json` would.
fn ipc_command(channel: &str, body: &str) -> String {
    let body = body.replace('\\', "\\\\").replace('"', "\\\"");
    format!("/sc print(\"\\12$ipc:{channel}?j{body}\")")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let root = tempfile::tempdir().unwrap();
    let cdir = root.path().join("c");
    std::fs::create_dir_all(&cdir).unwrap();
    let c = ControllerProcess::start(&cdir);
    let api = Api::new(&c.url(""), &c.first_token);
    let join = join_token(&cdir);
    let _h = HostProcess::start(&root.path().join("h1"), &c.url(""), &join, "h1", &[]);
    create_and_start(&api, "a", "h1", json!({})).await;
    create_and_start(&api, "b", "h1", json!({})).await;
    wait_until("both games run", 60, || async {
        let list = api.get("/api/v1/instances").await;
        list.as_array()
            .is_some_and(|l| l.iter().filter(|i| i["status"] == "running").count() == 2)
    })
    .await;
    let (_, v) = api
        .post("/api/v1/external-plugins/bench/token", json!({}))
        .await;
    let token = v["token"].as_str().unwrap().to_string();
    let (_, v) = api
        .post(
            "/api/v1/external-plugins/bench/limit",
            json!({"messages_per_s": 1_000_000}),
        )
        .await;
    assert_eq!(v["messages_per_s"], 1_000_000);
    let hello = json!({"type": "hello", "version": 1, "role": "plugin", "token": token,
        "name": "bench", "software": "bench",
        "plugin": {"api": 1, "name": "bench", "version": "1", "ipc_channels": ["bench:"]}});
    let (ws, ready) = LinkClient::hello(&c.ws_url(), hello.clone()).await;
    assert_eq!(ready["type"], "ready", "{ready}");
    let mut p = Plugin {
        link: LinkClient { ws, ready, seq: 1 },
        last_seq: 0,
    };

    println!("| measure | figure |\n|---|---|");

    // Round trip, one at a time.
    let mut rtt = Vec::new();
    for n in 0..300 {
        let inst = if n % 2 == 0 { "a" } else { "b" };
        let t = Instant::now();
        p.request(
            "instance_rcon",
            json!({"instance": inst, "command": ipc_command("bench:ping", &format!("{{\"n\":{n}}}"))}),
        )
        .await;
        loop {
            let f = p.next().await;
            if f["type"] == "event" && f["data"]["data"]["n"] == json!(n) {
                break;
            }
        }
        rtt.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let total: f64 = rtt.iter().sum();
    println!(
        "| round trip plugin → game → plugin, 300 sequential | p50 {:.2} ms, p99 {:.2} ms ({:.0} round trips/s) |",
        percentile(&mut rtt, 0.5),
        percentile(&mut rtt, 0.99),
        300.0 / (total / 1000.0)
    );

    // Plugin → instances: instance_rcon, 64 in flight.
    let n = 4000;
    let mut sent_at: HashMap<u64, Instant> = HashMap::new();
    let mut lat = Vec::new();
    let start = Instant::now();
    let mut next = 0;
    while lat.len() < n {
        while next < n && sent_at.len() < 64 {
            let inst = if next % 2 == 0 { "a" } else { "b" };
            let id = p
                .request(
                    "instance_rcon",
                    json!({"instance": inst, "command": "/sc rcon.print(1)"}),
                )
                .await;
            sent_at.insert(id, Instant::now());
            next += 1;
        }
        let f = p.next().await;
        if f["type"] == "response"
            && let Some(t) = f["id"].as_u64().and_then(|id| sent_at.remove(&id))
        {
            assert!(f["error"].is_null(), "{f}");
            lat.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "| plugin → instances, `instance_rcon`, 64 in flight, {n} calls | {:.0} calls/s, p50 {:.2} ms, p99 {:.2} ms |",
        n as f64 / secs,
        percentile(&mut lat, 0.5),
        percentile(&mut lat, 0.99)
    );

    // Instances → plugin: each game prints 5,000 IPC lines from one command.
    let per = 5000;
    let start = Instant::now();
    for inst in ["a", "b"] {
        let cmd = format!(
            "/sc for i=1,{per} do print(\"\\12$ipc:bench:bulk?j{{\\\"i\\\":\" .. i .. \"}}\") end"
        );
        p.request("instance_rcon", json!({"instance": inst, "command": cmd}))
            .await;
    }
    let mut got = 0;
    while got < 2 * per {
        let f = p.next().await;
        if f["type"] == "event" && f["data"]["channel"] == "bench:bulk" {
            got += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "| instances → plugin, IPC lines from 2 games, {} messages | {:.0} messages/s |",
        2 * per,
        (2 * per) as f64 / secs
    );
    p.link.ack(p.last_seq).await;

    // A flood against the default limit, and the API meanwhile.
    let (_, _) = api
        .post(
            "/api/v1/external-plugins/bench/limit",
            json!({"messages_per_s": 2000}),
        )
        .await;
    let (ws, ready) = LinkClient::hello(&c.ws_url(), hello).await;
    assert_eq!(ready["type"], "ready", "{ready}");
    let mut flood = LinkClient { ws, ready, seq: 1 };
    let flooder = tokio::spawn(async move {
        let start = Instant::now();
        let mut sent = 0u64;
        while start.elapsed() < Duration::from_secs(5) {
            let seq = flood.seq;
            flood.seq += 1;
            let frame = json!({"type": "request", "seq": seq, "id": seq, "name": "instance_list", "data": {}});
            use futures_util::SinkExt;
            let msg = tokio_tungstenite::tungstenite::Message::text(frame.to_string());
            if flood.ws.send(msg).await.is_err() {
                break;
            }
            sent += 1;
        }
        (sent, start.elapsed(), flood)
    });
    let mut status = Vec::new();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(5) {
        let t = Instant::now();
        let v = api.get("/api/v1/status").await;
        assert!(v["version"].is_string());
        status.push(t.elapsed().as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (sent, took, _flood) = flooder.await.unwrap();
    let list = api.get("/api/v1/external-plugins").await;
    let limited = list[0]["rate_limited"].as_u64().unwrap_or(0);
    println!(
        "| flood: {sent} requests in {:.1} s ({:.0}/s) at a 2,000/s limit | {limited} refused `rate_limited`; `/api/v1/status` meanwhile p50 {:.1} ms, p99 {:.1} ms ({} samples) |",
        took.as_secs_f64(),
        sent as f64 / took.as_secs_f64(),
        percentile(&mut status, 0.5),
        percentile(&mut status, 0.99),
        status.len()
    );
}
