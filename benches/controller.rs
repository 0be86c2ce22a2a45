//! Controller benchmarks (DESIGN: figures in BENCHMARKS.md come from here).
//! Run: `cargo bench --bench controller` (release build; prints a Markdown table).

#[path = "../tests/common/mod.rs"]
mod common;

use common::ControllerProcess;
use common::link::LinkClient;
use futures_util::SinkExt;
use reqwest::Client;
use serde_json::json;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
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

/// `total` POSTs of new instances from `concurrency` tasks; returns creates per second.
async fn api_creates(
    c: &ControllerProcess,
    token: &str,
    prefix: &str,
    total: usize,
    concurrency: usize,
) -> f64 {
    let client = Client::new();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let (client, url, token, prefix) = (
            client.clone(),
            c.url("/api/v1/instances"),
            token.to_string(),
            prefix.to_string(),
        );
        tasks.push(tokio::spawn(async move {
            for n in (w..total).step_by(concurrency) {
                let r = client
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&json!({ "name": format!("{prefix}{n}") }))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status().as_u16(), 201);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    total as f64 / start.elapsed().as_secs_f64()
}

/// `total` instance_create requests pipelined over one link socket (256 in flight).
async fn link_creates(c: &ControllerProcess, token: &str, prefix: &str, total: usize) -> f64 {
    let mut link = LinkClient::connect(&c.ws_url(), "control", token, None, None).await;
    let start = Instant::now();
    let (mut sent, mut done) = (0usize, 0usize);
    while done < total {
        while sent < total && sent - done < 256 {
            let seq = link.seq;
            link.seq += 1;
            let frame = json!({"type": "request", "seq": seq, "id": seq, "name": "instance_create", "data": {"name": format!("{prefix}{sent}")}});
            link.ws
                .send(Message::text(frame.to_string()))
                .await
                .unwrap();
            sent += 1;
        }
        let f = link.next().await.expect("response");
        if f["type"] == "response" {
            assert!(f["ok"].is_object(), "{f}");
            done += 1;
        } else if f["type"] == "event" {
            // Creation events to this subscriber; acknowledge now and then.
            if f["seq"].as_u64().unwrap_or(0) % 512 == 0 {
                link.ack(f["seq"].as_u64().unwrap()).await;
            }
        }
    }
    total as f64 / start.elapsed().as_secs_f64()
}

async fn metrics_rps(c: &ControllerProcess, token: &str, seconds: f64, concurrency: usize) -> f64 {
    let client = Client::new();
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url, token) = (client.clone(), c.url("/metrics"), token.to_string());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                let r = client.get(&url).bearer_auth(&token).send().await.unwrap();
                assert_eq!(r.status().as_u16(), 200);
                r.bytes().await.unwrap();
                n += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    total as f64 / seconds
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    // Start → `Started`: median of 10 cold starts (fresh data directory each time).
    let mut starts = Vec::new();
    for _ in 0..10 {
        let dir = tempfile::tempdir().unwrap();
        let t = Instant::now();
        let c = ControllerProcess::start(dir.path());
        starts.push(t.elapsed().as_secs_f64() * 1000.0);
        drop(c);
    }
    let start_ms = median(starts);

    let dir = tempfile::tempdir().unwrap();
    let c = ControllerProcess::start(dir.path());
    let token = c.first_token.clone();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = rss_kib(c.child.id());
    let api = api_creates(&c, &token, "api", 1000, 16).await;
    let rss_1000 = rss_kib(c.child.id());
    let link = link_creates(&c, &token, "link", 5000).await;
    let api_more = api_creates(&c, &token, "more", 4000, 16).await;
    let metrics = metrics_rps(&c, &token, 5.0, 8).await;
    let rss_end = rss_kib(c.child.id());

    println!("| measure | clustorio | Clusterio (for scale) |");
    println!("|---|---|---|");
    println!("| start → `Started` (median of 10) | {start_ms:.1} ms | ~960 ms |");
    println!("| idle RSS | {:.1} MB | ~106 MB |", idle as f64 / 1024.0);
    println!(
        "| RSS with 1,000 instances | {:.1} MB | ~207 MB with 220 |",
        rss_1000 as f64 / 1024.0
    );
    println!("| instance creates/s, REST, 16 clients (first 1,000) | {api:.0} | ~1,000 |");
    println!("| instance creates/s, REST, 16 clients (next 4,000) | {api_more:.0} | |");
    println!("| instance creates/s, one link socket, 256 in flight | {link:.0} | |");
    println!("| `/metrics` requests/s, 8 clients, 10,000 instances | {metrics:.0} | ~550 |");
    println!(
        "| RSS after all of the above (10,000 instances) | {:.1} MB | |",
        rss_end as f64 / 1024.0
    );
}
