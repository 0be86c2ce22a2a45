//! The load tool: one real controller, N simulated hosts × M instances over the real link
//! protocol (registering with the join token, answering the controller's requests, reporting
//! instance status with players joining and leaving, log lines and `host_metrics` samples),
//! measuring what the controller does with them.
//!
//! Run: `cargo bench --bench scale` (release). Sizes: `SCALE_HOSTS` (default 1000),
//! `SCALE_INSTANCES` per host (default 10). Prints a Markdown table for BENCHMARKS.md.

#[path = "../tests/common/mod.rs"]
mod common;

use common::{ControllerProcess, join_token};
use futures_util::{SinkExt, StreamExt};
use reqwest::Client;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rss_mb(pid: u32) -> f64 {
    status_mb(pid, "VmRSS:")
}

/// A `/proc/<pid>/status` figure (kB) in MB.
fn status_mb(pid: u32, key: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

/// User + system CPU seconds of a process.
fn cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    (f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) / 100.0
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1]
}

/// Scrapes `/metrics` from `clients` tasks for `seconds`: (scrapes/s, p50 ms, p99 ms, body KB).
async fn scrapes(
    c: &ControllerProcess,
    token: &str,
    seconds: f64,
    clients: usize,
) -> (f64, f64, f64, f64) {
    let client = Client::new();
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (client, url, token) = (client.clone(), c.url("/metrics"), token.to_string());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut size = 0usize;
            while Instant::now() < until {
                let t = Instant::now();
                let r = client.get(&url).bearer_auth(&token).send().await.unwrap();
                assert_eq!(r.status().as_u16(), 200);
                size = r.bytes().await.unwrap().len();
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            (lat, size)
        }));
    }
    let mut all = Vec::new();
    let mut size = 0;
    for t in tasks {
        let (lat, s) = t.await.unwrap();
        all.extend(lat);
        size = s;
    }
    let rate = all.len() as f64 / start.elapsed().as_secs_f64();
    (
        rate,
        pct(&mut all, 0.5),
        pct(&mut all, 0.99),
        size as f64 / 1024.0,
    )
}

/// `names.len()` POSTs of new instances from 16 tasks; creates per second.
async fn create_instances(c: &ControllerProcess, token: &str, names: Vec<String>) -> f64 {
    let client = Client::new();
    let names = Arc::new(names);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..16 {
        let (client, url, token, names) = (
            client.clone(),
            c.url("/api/v1/instances"),
            token.to_string(),
            names.clone(),
        );
        tasks.push(tokio::spawn(async move {
            for n in (w..names.len()).step_by(16) {
                let r = client
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&json!({ "name": names[n] }))
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
    names.len() as f64 / start.elapsed().as_secs_f64()
}

/// What a simulated host is told to do.
enum Cmd {
    /// Send an event.
    Event(&'static str, Value),
}

/// A simulated host: its id, instance ids and the channel into its socket task.
struct SimHost {
    name: String,
    instances: Vec<i64>,
    tx: mpsc::UnboundedSender<Cmd>,
}

/// Shared by all simulated hosts: arrival times of `user_updated` events, by marker user.
#[derive(Default)]
struct Fanout {
    /// (marker, arrival in µs since `epoch`)
    arrivals: std::sync::Mutex<Vec<(String, u64)>>,
    requests: AtomicU64,
}

/// Connects one simulated host and runs it: answers requests, acks, pongs, sends what it is told.
async fn connect_host(
    url: String,
    join: String,
    name: String,
    epoch: Instant,
    fan: Arc<Fanout>,
) -> SimHost {
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let hello = json!({ "type": "hello", "version": 1, "role": "host", "token": join, "name": name, "software": "scale-bench" });
    ws.send(Message::text(hello.to_string())).await.unwrap();
    let ready: Value = loop {
        match ws.next().await.unwrap().unwrap() {
            Message::Text(t) => break serde_json::from_str(t.as_str()).unwrap(),
            _ => continue,
        }
    };
    assert_eq!(ready["type"], "ready", "{ready}");
    assert!(ready["host"]["id"].as_i64().is_some(), "{ready}");
    let (tx, mut rx) = mpsc::unbounded_channel::<Cmd>();
    let (mut sink, mut stream) = ws.split();
    tokio::spawn(async move {
        let mut seq = 1u64;
        let mut last_in = 0u64;
        let mut unacked = 0u32;
        loop {
            let out: Option<Value> = tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(Cmd::Event(name, data)) => {
                        let f = json!({ "type": "event", "seq": seq, "ack": last_in, "name": name, "data": data });
                        seq += 1;
                        Some(f)
                    }
                    None => break,
                },
                msg = stream.next() => {
                    let Some(Ok(msg)) = msg else { break };
                    let Message::Text(t) = msg else { continue };
                    let f: Value = serde_json::from_str(t.as_str()).unwrap_or(Value::Null);
                    if let Some(s) = f["seq"].as_u64() {
                        last_in = last_in.max(s);
                        unacked += 1;
                    }
                    match f["type"].as_str() {
                        Some("ping") => Some(json!({ "type": "pong", "ack": last_in })),
                        Some("request") => {
                            fan.requests.fetch_add(1, Ordering::Relaxed);
                            let r = json!({ "type": "response", "seq": seq, "ack": last_in, "id": f["id"], "ok": {} });
                            seq += 1;
                            Some(r)
                        }
                        Some("event") if f["name"] == "user_updated" => {
                            let at = epoch.elapsed().as_micros() as u64;
                            let marker = f["data"]["name"].as_str().unwrap_or_default().to_string();
                            if let Ok(mut a) = fan.arrivals.lock() {
                                a.push((marker, at));
                            }
                            None
                        }
                        _ if unacked >= 32 => {
                            unacked = 0;
                            Some(json!({ "type": "ack", "ack": last_in }))
                        }
                        _ => None,
                    }
                }
            };
            if let Some(f) = out
                && sink.send(Message::text(f.to_string())).await.is_err()
            {
                break;
            }
        }
    });
    SimHost {
        name,
        instances: Vec::new(),
        tx,
    }
}

fn status(id: i64, status: &str, players: &[String]) -> Value {
    json!({ "id": id, "status": status, "game_port": 34197, "players": players, "message": null })
}

fn sample(h: &SimHost, t: f64) -> Value {
    json!({
        "host": {
            "cpu_seconds_total": t * 0.01, "resident_memory_bytes": 20e6, "start_time_seconds": 1.7e9,
            "system_memory_capacity_bytes": 8e9, "system_memory_available_bytes": 4e9,
            "disk_capacity_bytes": 1e11, "disk_available_bytes": 5e10,
            "game_ports_total": h.instances.len(), "game_ports_free": 0,
        },
        "instances": h.instances.iter().map(|i| json!({
            "id": i, "factorio_cpu_seconds_total": t * 0.3, "factorio_resident_memory_bytes": 300e6,
        })).collect::<Vec<_>>(),
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n_hosts = env_usize("SCALE_HOSTS", 1000);
    let per_host = env_usize("SCALE_INSTANCES", 10);
    let dir = tempfile::tempdir().unwrap();
    let c = ControllerProcess::start(dir.path());
    let pid = c.proc.child.id();
    let token = c.first_token.clone();
    let join = join_token(dir.path());
    let client = Client::new();
    let mut rows: Vec<(String, String)> = Vec::new();
    let mut row = |k: String, v: String| {
        eprintln!("{k}: {v}");
        rows.push((k, v));
    };

    tokio::time::sleep(Duration::from_secs(1)).await;
    row(
        "controller idle RSS (fresh start): total, anonymous, file-backed".into(),
        format!(
            "{:.1} MB, {:.1} MB, {:.1} MB",
            rss_mb(pid),
            status_mb(pid, "RssAnon:"),
            status_mb(pid, "RssFile:")
        ),
    );

    // /metrics on a small cluster.
    create_instances(&c, &token, (0..10).map(|i| format!("small{i}")).collect()).await;
    let (r, p50, p99, kb) = scrapes(&c, &token, 5.0, 8).await;
    row(
        "`/metrics` with 10 instances, 8 clients: scrapes/s, p50, p99, body".into(),
        format!("{r:.0}/s, {p50:.2} ms, {p99:.2} ms, {kb:.0} KB"),
    );

    // Instance creates over REST, 16 clients, each committed before its reply.
    let total = n_hosts * per_host;
    let names: Vec<String> = (0..total).map(|i| format!("i{i}")).collect();
    let rate = create_instances(&c, &token, names).await;
    row(
        format!("instance creates/s over REST, 16 clients ({total})"),
        format!("{rate:.0}/s"),
    );

    // Link sessions: N hosts register with the join token.
    let epoch = Instant::now();
    let fan = Arc::new(Fanout::default());
    let start = Instant::now();
    let mut hosts = Vec::new();
    let mut pending = Vec::new();
    for h in 0..n_hosts {
        pending.push(tokio::spawn(connect_host(
            c.ws_url(),
            join.clone(),
            format!("sim{h}"),
            epoch,
            fan.clone(),
        )));
        if pending.len() == 32 {
            for p in pending.drain(..) {
                hosts.push(p.await.unwrap());
            }
        }
    }
    for p in pending.drain(..) {
        hosts.push(p.await.unwrap());
    }
    let setup = n_hosts as f64 / start.elapsed().as_secs_f64();
    row(
        format!(
            "link session setup (host registers with the join token), 32 at a time ({n_hosts} hosts)"
        ),
        format!("{setup:.0} sessions/s"),
    );

    // Assign every instance to its host (the controller asks each host over the link).
    let list: Value = client
        .get(c.url("/api/v1/instances"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut ids: Vec<(String, i64)> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["name"].as_str().is_some_and(|n| n.starts_with('i')))
        .map(|v| {
            (
                v["name"].as_str().unwrap().to_string(),
                v["id"].as_i64().unwrap(),
            )
        })
        .collect();
    ids.sort_by_key(|(_, id)| *id);
    let start = Instant::now();
    let assignments: Vec<(String, String, usize)> = ids
        .iter()
        .enumerate()
        .map(|(k, (name, _))| (name.clone(), hosts[k % n_hosts].name.clone(), k % n_hosts))
        .collect();
    for (k, (_, id)) in ids.iter().enumerate() {
        hosts[k % n_hosts].instances.push(*id);
    }
    let assignments = Arc::new(assignments);
    let mut tasks = Vec::new();
    for w in 0..16 {
        let (client, base, token, a) = (
            client.clone(),
            c.url(""),
            token.clone(),
            assignments.clone(),
        );
        tasks.push(tokio::spawn(async move {
            for n in (w..a.len()).step_by(16) {
                let (inst, host, _) = &a[n];
                let r = client
                    .post(format!("{base}/api/v1/instances/{inst}/assign"))
                    .bearer_auth(&token)
                    .json(&json!({ "host": host }))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status().as_u16(), 200);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let assign_rate = total as f64 / start.elapsed().as_secs_f64();
    row(
        format!(
            "assigns/s over REST, 16 clients, each acknowledged by its simulated host ({total})"
        ),
        format!("{assign_rate:.0}/s"),
    );

    // Every instance reports running.
    for h in &hosts {
        for i in &h.instances {
            let _ =
                h.tx.send(Cmd::Event("instance_status", status(*i, "starting", &[])));
            let _ =
                h.tx.send(Cmd::Event("instance_status", status(*i, "running", &[])));
        }
        let _ = h.tx.send(Cmd::Event("host_metrics", sample(h, 1.0)));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let body = client
            .get(c.url("/metrics"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let running =
            common::metrics::value(&body, "clustorio_instances", &[("status", "running")])
                .unwrap_or(0.0);
        if running as usize >= total || Instant::now() > deadline {
            row(
                "instances reported running (of all)".into(),
                format!("{running:.0} / {total}"),
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Steady load for 20 s: every host, every 5 s, a sample and one instance's players
    // changing; a log line per host per second.
    let load_until = Instant::now() + Duration::from_secs(20);
    let hosts = Arc::new(hosts);
    let load = {
        let hosts = hosts.clone();
        tokio::spawn(async move {
            let mut tick = 0u64;
            while Instant::now() < load_until {
                for (k, h) in hosts.iter().enumerate() {
                    if (k as u64 + tick).is_multiple_of(5) {
                        let _ =
                            h.tx.send(Cmd::Event("host_metrics", sample(h, tick as f64)));
                        let i = h.instances[(tick as usize / 5) % h.instances.len()];
                        let players: Vec<String> =
                            (0..(tick % 3)).map(|p| format!("p{p}")).collect();
                        let _ = h.tx.send(Cmd::Event(
                            "instance_status",
                            status(i, "running", &players),
                        ));
                    }
                    let _ = h.tx.send(Cmd::Event(
                        "instance_log",
                        json!({ "id": h.instances[0], "line": format!("tick {tick}") }),
                    ));
                }
                tick += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (cpu0, t0) = (cpu_s(pid), Instant::now());
    tokio::time::sleep(Duration::from_secs(10)).await;
    let cpu = (cpu_s(pid) - cpu0) / t0.elapsed().as_secs_f64();
    let rss = rss_mb(pid);
    let anon = status_mb(pid, "RssAnon:");
    load.await.unwrap();
    let events = n_hosts as f64 * (1.0 + 0.4);
    row(
        format!(
            "controller under {n_hosts} hosts × {per_host} instances, ~{events:.0} link events/s: RSS (anonymous), CPU"
        ),
        format!(
            "{rss:.1} MB ({anon:.1} MB), {:.0} % of one core",
            cpu * 100.0
        ),
    );

    // /metrics with the whole cluster.
    let (r, p50, p99, kb) = scrapes(&c, &token, 5.0, 8).await;
    row(
        format!(
            "`/metrics` with {total} instances on {n_hosts} hosts, 8 clients: scrapes/s, p50, p99, body"
        ),
        format!("{r:.0}/s, {p50:.1} ms, {p99:.1} ms, {kb:.0} KB"),
    );

    // Event fan-out: a user change reaches every host (hosts enforce the user lists).
    let mut lat = Vec::new();
    let mut replies = Vec::new();
    for k in 0..20 {
        let marker = format!("fanout{k}");
        let sent = epoch.elapsed().as_micros() as u64;
        let r = client
            .post(c.url("/api/v1/users"))
            .bearer_auth(&token)
            .json(&json!({ "name": marker }))
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_success(),
            "creating user {marker}: {}",
            r.status()
        );
        replies.push((epoch.elapsed().as_micros() as u64 - sent) as f64 / 1000.0);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got: Vec<u64> = fan
                .arrivals
                .lock()
                .unwrap()
                .iter()
                .filter(|(m, _)| *m == marker)
                .map(|(_, t)| *t)
                .collect();
            if got.len() >= n_hosts || Instant::now() > deadline {
                if got.len() < n_hosts {
                    eprintln!("fan-out {marker}: only {} of {n_hosts} hosts", got.len());
                }
                lat.extend(got.iter().map(|t| (t.saturating_sub(sent)) as f64 / 1000.0));
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let n = lat.len();
    row(
        format!("event fan-out to {n_hosts} hosts (user_updated, 20 events): p50, p99, max"),
        format!(
            "{:.1} ms, {:.1} ms, {:.1} ms ({n} deliveries)",
            pct(&mut lat, 0.5),
            pct(&mut lat, 0.99),
            pct(&mut lat, 1.0)
        ),
    );
    row(
        "the same events' REST reply (user committed to disk): p50, p99".into(),
        format!(
            "{:.1} ms, {:.1} ms",
            pct(&mut replies, 0.5),
            pct(&mut replies, 0.99)
        ),
    );
    row(
        "controller RSS at the end".into(),
        format!("{:.1} MB", rss_mb(pid)),
    );

    println!("\n| measure | clustorio |\n|---|---|");
    for (k, v) in &rows {
        println!("| {k} | {v} |");
    }
    drop(hosts);
}
