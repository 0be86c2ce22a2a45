//! Resources (issue 22): what a hostile or broken client can make the controller hold. Each
//! test prints its figures (controller RSS before, at its peak and after); RSS is asserted only
//! against a generous bound, nothing here is timed.
//!
//! `cargo test --test resources -- --nocapture --test-threads=1` shows the figures.

mod common;

use common::cluster::{Api, HostProcess, install_sim, wait_until};
use common::link::{LinkClient, Socket, next_json};
use common::metrics::{scrape, value};
use common::{ControllerProcess, join_token, user_token};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;

const MIB: f64 = 1024.0 * 1024.0;
/// Far above what the controller needs (~20 MB idle), far below what the floods made it take.
const RSS_BOUND: u64 = 100 << 20;

/// A `/proc/<pid>/status` figure in bytes (`VmRSS`, `RssAnon`).
fn status_bytes(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Resident memory of `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    status_bytes(pid, "VmRSS")
}

/// The part of it the process allocated (heap, stacks): what a flood can grow. The rest is the
/// binary's code mapped from disk — about 27 MiB for a debug build, a third of that for release.
fn anon(pid: u32) -> u64 {
    status_bytes(pid, "RssAnon")
}

/// Samples a process's RSS in the background; `peak()` is the highest seen so far.
struct RssWatch {
    peak: std::sync::Arc<std::sync::atomic::AtomicU64>,
    anon_peak: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl RssWatch {
    fn start(pid: u32) -> Self {
        use std::sync::atomic::Ordering;
        let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(rss(pid)));
        let anon_peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(anon(pid)));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (p, a, s) = (peak.clone(), anon_peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                p.fetch_max(rss(pid), Ordering::SeqCst);
                a.fetch_max(anon(pid), Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        RssWatch {
            peak,
            anon_peak,
            stop,
        }
    }

    fn peak(&self) -> u64 {
        self.peak.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Asserts the allocated part stayed under the bound (the total is printed beside it).
    fn assert_bounded(&self) {
        let (total, allocated) = (
            self.peak(),
            self.anon_peak.load(std::sync::atomic::Ordering::SeqCst),
        );
        println!("  peak allocated (anonymous) RSS {}", mib(allocated));
        assert!(
            allocated < RSS_BOUND,
            "peak allocated RSS {} (total {})",
            mib(allocated),
            mib(total)
        );
    }
}

impl Drop for RssWatch {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / MIB)
}

/// A config patch of about `bytes` bytes (server tags), different for each `i`.
fn big_tags(i: usize, bytes: usize) -> Value {
    let tag = format!("{i:08}-{}", "x".repeat(246));
    let n = bytes / (tag.len() + 3);
    json!({ "server_settings": { "tags": vec![tag; n.max(1)] } })
}

async fn patch(api: &Api, instance: &str, config: Value) -> (u16, Value) {
    api.call(
        "PATCH",
        &format!("/api/v1/instances/{instance}"),
        Some(json!({ "config": config })),
    )
    .await
}

async fn metric(c: &ControllerProcess, name: &str, labels: &[(&str, &str)]) -> f64 {
    let (text, _) = scrape(&c.url(""), &c.first_token).await;
    value(&text, name, labels).unwrap_or(0.0)
}

/// Connects a control client and says hello, then leaves the socket alone: it never reads.
async fn never_reading_client(c: &ControllerProcess) -> Socket {
    let mut ws = common::link::connect_raw(&c.ws_url()).await;
    let hello = json!({ "type": "hello", "version": 1, "role": "control", "token": c.first_token, "software": "test" });
    ws.send(Message::text(hello.to_string())).await.unwrap();
    ws
}

fn write_config(dir: &Path, config: Value) {
    std::fs::write(dir.join("config-master.json"), config.to_string()).unwrap();
}

#[tokio::test]
async fn a_client_that_never_reads_is_dropped_and_the_controller_stays_small() {
    let dir = tempfile::tempdir().unwrap();
    let c = ControllerProcess::start(dir.path());
    let api = Api::new(&c.url(""), &c.first_token);
    let (s, v) = api
        .post("/api/v1/instances", json!({ "name": "big" }))
        .await;
    assert_eq!(s, 201, "{v}");
    let pid = c.child.id();
    let before = rss(pid);
    let watch = RssWatch::start(pid);

    let idle = never_reading_client(&c).await;
    // A session that reads, to show events still reach readers meanwhile.
    let mut reader = LinkClient::connect(&c.ws_url(), "control", &c.first_token, None, None).await;

    // 900 KiB events (instance_updated carries the config) for at least 20 s, and until the
    // idle session's outbox overflowed (about 25 MiB: its outbox and the socket buffers).
    let started = Instant::now();
    let mut changes = 0;
    let mut sent_bytes = 0usize;
    let closed_now = || async {
        metric(
            &c,
            "clustorio_slow_consumers_dropped_total",
            &[("stream", "link"), ("action", "closed")],
        )
        .await
    };
    while started.elapsed() < Duration::from_secs(20)
        || (sent_bytes < (80 << 20) && closed_now().await < 1.0)
    {
        let body = big_tags(changes, 900 << 10);
        sent_bytes += body.to_string().len();
        let (s, v) = patch(&api, "big", body).await;
        assert_eq!(s, 200, "{v}");
        changes += 1;
        // The reader keeps up (and acknowledges), as a live tab does.
        while let Ok(Some(f)) =
            tokio::time::timeout(Duration::from_millis(1), next_json(&mut reader.ws)).await
        {
            if let Some(seq) = f["seq"].as_u64() {
                reader.ack(seq).await;
            }
        }
    }
    let peak = watch.peak();
    let detached = metric(
        &c,
        "clustorio_slow_consumers_dropped_total",
        &[("stream", "link"), ("action", "detached")],
    )
    .await;
    // The reaper forgets the overflowed session within a second.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let closed = metric(
        &c,
        "clustorio_slow_consumers_dropped_total",
        &[("stream", "link"), ("action", "closed")],
    )
    .await;
    let after = rss(pid);
    println!(
        "never-reading client: {changes} config changes, {} of events in {:?}; controller RSS before {}, peak {}, after {}; slow consumers detached {detached}, closed {closed}",
        mib(sent_bytes as u64),
        started.elapsed(),
        mib(before),
        mib(peak),
        mib(after)
    );
    watch.assert_bounded();
    assert!(detached >= 1.0, "the idle socket was not dropped");
    assert!(
        closed >= 1.0,
        "the idle session's outbox did not overflow and close"
    );
    // The reader still works.
    let id = reader.request("status", json!({})).await;
    assert!(reader.response(id).await["ok"].is_object());
    drop(idle);
}

#[tokio::test]
async fn a_slow_reader_is_dropped_to_resume_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let c = ControllerProcess::start(dir.path());
    let api = Api::new(&c.url(""), &c.first_token);
    let (s, v) = api
        .post("/api/v1/instances", json!({ "name": "big" }))
        .await;
    assert_eq!(s, 201, "{v}");
    let mut link = LinkClient::connect(&c.ws_url(), "control", &c.first_token, None, None).await;
    let session = link.session();

    // 12 MiB of events while the client reads nothing: more than the socket buffers and the
    // writer's budget take, less than the outbox keeps.
    let n = 40;
    for i in 0..n {
        let (s, v) = patch(&api, "big", big_tags(i, 300 << 10)).await;
        assert_eq!(s, 200, "{v}");
    }
    wait_until("the socket was dropped", 30, || async {
        metric(
            &c,
            "clustorio_slow_consumers_dropped_total",
            &[("stream", "link"), ("action", "detached")],
        )
        .await
            >= 1.0
    })
    .await;

    // Read what arrived before the drop, then resume from there.
    let mut last = 0u64;
    let mut seen = Vec::new();
    while let Some(f) = next_json(&mut link.ws).await {
        if let Some(seq) = f["seq"].as_u64() {
            assert_eq!(seq, last + 1, "frames arrive in order");
            last = seq;
            if f["name"] == "instance_updated" {
                seen.push(f["data"]["config"]["server_settings"]["tags"][0].clone());
            }
        }
    }
    let before_resume = seen.len();
    let mut link = LinkClient::connect(
        &c.ws_url(),
        "control",
        &c.first_token,
        None,
        Some((session, last)),
    )
    .await;
    assert_eq!(link.ready["resumed"], true, "{}", link.ready);
    while seen.len() < n {
        let f = link.next().await.expect("the resent events");
        if let Some(seq) = f["seq"].as_u64() {
            assert_eq!(seq, last + 1, "no gap, no duplicate after the resume");
            last = seq;
            if f["name"] == "instance_updated" {
                seen.push(f["data"]["config"]["server_settings"]["tags"][0].clone());
            }
        }
    }
    println!(
        "slow reader: {before_resume} of {n} events before the drop, the rest after the resume"
    );
    for (i, tag) in seen.iter().enumerate() {
        assert!(
            tag.as_str()
                .is_some_and(|t| t.starts_with(&format!("{i:08}-"))),
            "event {i} is change {i}"
        );
    }
}

#[tokio::test]
async fn a_resume_after_the_outbox_overflowed_starts_fresh_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let c = ControllerProcess::start(dir.path());
    let api = Api::new(&c.url(""), &c.first_token);
    api.post("/api/v1/instances", json!({ "name": "big" }))
        .await;
    let link = LinkClient::connect(&c.ws_url(), "control", &c.first_token, None, None).await;
    let session = link.session();
    drop(link);
    // Away: 24 MiB of events are more than a control session's outbox keeps.
    for i in 0..80 {
        let (s, v) = patch(&api, "big", big_tags(i, 300 << 10)).await;
        assert_eq!(s, 200, "{v}");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let link = LinkClient::connect(
        &c.ws_url(),
        "control",
        &c.first_token,
        None,
        Some((session, 0)),
    )
    .await;
    assert_eq!(link.ready["resumed"], false);
    assert_eq!(link.ready["ended"]["code"], "overflow", "{}", link.ready);
    let message = link.ready["ended"]["message"].as_str().unwrap();
    assert!(message.contains("16777216 bytes"), "{message}");
}

#[tokio::test]
async fn a_request_flood_is_rate_limited_and_its_memory_released() {
    let dir = tempfile::tempdir().unwrap();
    let c = ControllerProcess::start(dir.path());
    let admin = Api::new(&c.url(""), &c.first_token);
    let (s, v) = admin
        .post("/api/v1/users", json!({ "name": "flood" }))
        .await;
    assert!(s == 200 || s == 201, "{v}");
    let token = user_token(dir.path(), "flood");
    let pid = c.child.id();
    let before = rss(pid);
    let watch = RssWatch::start(pid);

    // A Player sends 60,000 cheap requests without reading a single response.
    let mut link = LinkClient::connect(&c.ws_url(), "control", &token, None, None).await;
    let total = 60_000u64;
    let mut frames = Vec::with_capacity(total as usize);
    for seq in 1..=total {
        frames.push(Ok(Message::text(
            json!({ "type": "request", "seq": seq, "id": seq, "name": "me", "data": {} })
                .to_string(),
        )));
    }
    let mut frames = futures_util::stream::iter(frames);
    let _ = link.ws.send_all(&mut frames).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let peak = watch.peak();
    let (mut ok, mut limited) = (0u64, 0u64);
    while let Ok(Some(f)) =
        tokio::time::timeout(Duration::from_secs(2), next_json(&mut link.ws)).await
    {
        if f["type"] == "response" {
            match f["error"]["code"].as_str() {
                None => ok += 1,
                Some("rate_limited") => limited += 1,
                Some(other) => panic!("unexpected error {other}: {f}"),
            }
        }
    }
    drop(link);
    let counted = metric(&c, "clustorio_requests_rate_limited_total", &[]).await;
    // Gone for good once the resume window passed (the session's outbox is freed then).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = rss(pid);
    println!(
        "request flood: {total} requests sent, {ok} answered, {limited} refused rate_limited (metric {counted}); controller RSS before {}, peak {}, after the client left {}",
        mib(before),
        mib(peak),
        mib(after)
    );
    assert!(
        counted >= 1.0 && limited + ok > 0,
        "nothing was rate limited"
    );
    watch.assert_bounded();
    assert!(after < RSS_BOUND, "RSS after {}", mib(after));
}

#[tokio::test]
async fn requests_over_the_rate_are_refused_and_not_done() {
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        json!({ "link_request_rate": 1, "link_request_burst": 20 }),
    );
    let c = ControllerProcess::start(dir.path());
    let api = Api::new(&c.url(""), &c.first_token);
    // A user who may create instances (administrators are not limited).
    let (s, role) = api
        .post(
            "/api/v1/roles",
            json!({ "name": "creator", "permissions": ["core.control.connect", "core.instance.create", "core.instance.list"] }),
        )
        .await;
    assert!(s == 200 || s == 201, "{role}");
    let (s, v) = api
        .post(
            "/api/v1/users",
            json!({ "name": "maker", "roles": [role["id"]] }),
        )
        .await;
    assert!(s == 200 || s == 201, "{v}");
    let token = user_token(dir.path(), "maker");
    let mut link = LinkClient::connect(&c.ws_url(), "control", &token, None, None).await;
    let mut ids = Vec::new();
    for i in 0..60 {
        ids.push(
            link.request("instance_create", json!({ "name": format!("i{i}") }))
                .await,
        );
    }
    let (mut ok, mut limited) = (0, 0);
    // Refusals come back at once, before the work of the admitted ones: take them in any order.
    let mut responses = Vec::new();
    while responses.len() < ids.len() {
        let f = link.next().await.expect("a response");
        if f["type"] == "response" {
            responses.push(f);
        }
    }
    for r in responses {
        match r["error"]["code"].as_str() {
            None => ok += 1,
            Some("rate_limited") => {
                limited += 1;
                let m = r["error"]["message"].as_str().unwrap();
                assert!(m.contains("1 requests a second") && m.contains("20"), "{m}");
            }
            Some(other) => panic!("unexpected {other}: {r}"),
        }
    }
    let instances = api.get("/api/v1/instances").await;
    println!("rate limit 1/s burst 20: {ok} created, {limited} refused");
    assert!(limited >= 30, "{limited} refused");
    assert_eq!(
        instances.as_array().unwrap().len(),
        ok,
        "refused ones did nothing"
    );
}

#[tokio::test]
async fn a_frozen_log_stream_is_ended_instead_of_buffering_every_event() {
    let dir = tempfile::tempdir().unwrap();
    let c = ControllerProcess::start(dir.path());
    let api = Api::new(&c.url(""), &c.first_token);
    let host_dir = tempfile::tempdir().unwrap();
    install_sim(host_dir.path());
    let _host = HostProcess::start(
        host_dir.path(),
        &c.url(""),
        &join_token(dir.path()),
        "h1",
        &[],
    );
    api.wait_for("/api/v1/hosts", |v| v[0]["connected"] == true)
        .await;
    common::cluster::create_and_start(&api, "big", "h1", json!({})).await;
    api.wait_for("/api/v1/instances/big", |v| v["status"] == "running")
        .await;
    let pid = c.child.id();
    let before = rss(pid);
    let watch = RssWatch::start(pid);

    // A tab that asked for the log stream and then froze: it never reads the response.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut tab = socket
        .connect(std::net::SocketAddr::from(([127, 0, 0, 1], c.port)))
        .await
        .unwrap();
    let request = format!(
        "GET /api/v1/instances/big/logs?follow=1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
        c.first_token
    );
    tab.write_all(request.as_bytes()).await.unwrap();
    // A tab that does read, to know when the controller has published every line.
    let reader = reqwest::Client::new()
        .get(c.url("/api/v1/instances/big/logs?follow=1"))
        .bearer_auth(&c.first_token)
        .send()
        .await
        .unwrap();
    assert_eq!(reader.status().as_u16(), 200);
    let mut reader = reader.bytes_stream();
    // Log lines until the frozen tab's socket is full (16 MB, four times what loopback buffers
    // hold: its stream then waits for the tab). Long lines, fewer than the host's line buffer
    // holds (it drops lines rather than fall behind the game, so a flood of short lines may
    // arrive only in part)...
    common::cluster::rcon(
        &api,
        "big",
        "/c for i=1,4000 do print(string.rep('x', 4000)) end print('end of the flood')",
    )
    .await;
    let mut tail = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while !tail.contains("end of the flood") {
        let chunk = tokio::time::timeout_at(deadline, reader.next())
            .await
            .expect("the whole flood published in 120 s")
            .expect("the reading stream stays open")
            .unwrap();
        tail.push_str(&String::from_utf8_lossy(&chunk));
        let keep = tail.len().saturating_sub(64);
        tail.drain(..tail.floor_char_boundary(keep));
    }
    drop(reader);
    // ... then 100 config changes of 1 MiB.
    for i in 0..100 {
        let (s, v) = patch(&api, "big", big_tags(i, 1_000_000)).await;
        assert_eq!(s, 200, "{v}");
    }
    let peak = watch.peak();
    let closed = metric(
        &c,
        "clustorio_slow_consumers_dropped_total",
        &[("stream", "event_queue"), ("action", "closed")],
    )
    .await;
    let after = rss(pid);
    println!(
        "frozen log tab + 4,000 log lines of 4 KB + 100 config changes of 1 MiB: controller RSS before {}, peak {}, after {}; event queues dropped {closed}",
        mib(before),
        mib(peak),
        mib(after)
    );
    assert!(closed >= 1.0, "the frozen stream was not dropped");
    watch.assert_bounded();
    drop(tab);
    let _ = api.post("/api/v1/instances/big/stop", json!({})).await;
}

/// Raises this process's soft file-descriptor limit to `n` (or the hard limit).
#[allow(clippy::unnecessary_cast)]
fn set_fd_limit(n: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = n.min(lim.rlim_max as u64) as libc::rlim_t;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
}

#[tokio::test]
async fn the_api_answers_while_5000_half_open_connections_are_held() {
    let dir = tempfile::tempdir().unwrap();
    // Started with the common default of 1,024 descriptors: the controller raises its own.
    set_fd_limit(1024);
    let c = ControllerProcess::start(dir.path());
    set_fd_limit(u64::MAX);
    let api = Api::new(&c.url(""), &c.first_token);
    let mut link = LinkClient::connect(&c.ws_url(), "control", &c.first_token, None, None).await;

    let started = Instant::now();
    let mut held = Vec::new();
    for _ in 0..50 {
        let batch: Vec<_> = (0..100)
            .map(|_| tokio::net::TcpStream::connect(("127.0.0.1", c.port)))
            .collect();
        for s in futures_util::future::join_all(batch).await {
            held.push(s.expect("connecting"));
        }
    }
    let opened = started.elapsed();
    assert_eq!(held.len(), 5000);

    // A new client gets its answer, and an open session keeps working.
    let t = Instant::now();
    let (s, v) = tokio::time::timeout(
        Duration::from_secs(30),
        api.call("GET", "/api/v1/status", None),
    )
    .await
    .expect("the API did not answer");
    assert_eq!(s, 200, "{v}");
    let answered = t.elapsed();
    let id = link.request("status", json!({})).await;
    assert!(link.response(id).await["ok"].is_object());
    let evicted = metric(
        &c,
        "clustorio_connections_dropped_total",
        &[("reason", "evicted")],
    )
    .await;
    println!(
        "5000 half-open connections opened in {opened:?}; /api/v1/status answered in {answered:?}; {evicted} silent connections evicted"
    );
    assert!(evicted >= 1.0);
    drop(held);
}

#[tokio::test]
async fn silent_connections_are_closed_after_the_first_request_timeout() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), json!({ "first_request_timeout_ms": 500 }));
    let c = ControllerProcess::start(dir.path());
    let mut silent = tokio::net::TcpStream::connect(("127.0.0.1", c.port))
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::io::AsyncReadExt::read(&mut silent, &mut buf),
    )
    .await
    .expect("the silent connection was not closed");
    assert_eq!(n.unwrap_or(0), 0, "closed without an answer");
    assert!(
        metric(
            &c,
            "clustorio_connections_dropped_total",
            &[("reason", "timeout")]
        )
        .await
            >= 1.0
    );
}

#[tokio::test]
async fn a_config_over_the_limit_is_refused_where_it_is_written() {
    let dir = tempfile::tempdir().unwrap();
    // Large bodies allowed, so the config limit is what refuses.
    write_config(dir.path(), json!({ "max_body_bytes": 64 << 20 }));
    let c = ControllerProcess::start(dir.path());
    let api = Api::new(&c.url(""), &c.first_token);
    let (s, v) = api
        .post(
            "/api/v1/instances",
            json!({ "name": "huge", "config": big_tags(0, 17 << 20) }),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    let m = v["error"]["message"].as_str().unwrap();
    assert!(m.contains("at most 2097152 bytes"), "{m}");
    let (s, _) = api.post("/api/v1/instances", json!({ "name": "a" })).await;
    assert_eq!(s, 201);
    let (s, v) = patch(&api, "a", big_tags(0, 3 << 20)).await;
    assert_eq!(s, 400, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("2097152"));
    // Nothing changed.
    let a = api.get("/api/v1/instances/a").await;
    assert_ne!(
        a["config"]["server_settings"]["tags"]
            .as_array()
            .map(Vec::len),
        Some(0)
    );
    assert!(a.to_string().len() < 100_000);
}

#[tokio::test]
async fn a_frame_too_large_for_the_host_fails_that_request_and_the_host_recovers() {
    let dir = tempfile::tempdir().unwrap();
    // A small frame limit, so an ordinary config does not fit in one link message.
    write_config(dir.path(), json!({ "max_message_bytes": 65536 }));
    let c = ControllerProcess::start(dir.path());
    let api = Api::new(&c.url(""), &c.first_token);
    let host_dir = tempfile::tempdir().unwrap();
    install_sim(host_dir.path());
    let _host = HostProcess::start(
        host_dir.path(),
        &c.url(""),
        &join_token(dir.path()),
        "h1",
        &[],
    );
    api.wait_for("/api/v1/hosts", |v| v[0]["connected"] == true)
        .await;
    let (s, v) = api
        .post(
            "/api/v1/instances",
            json!({ "name": "g", "config": big_tags(0, 200 << 10) }),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = api
        .post("/api/v1/instances/g/assign", json!({ "host": "h1" }))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["delivered"], false,
        "the assignment cannot fit in a link message"
    );
    let (s, v) = api.post("/api/v1/instances/g/start", json!({})).await;
    assert_ne!(s, 200, "the host does not have the instance: {v}");
    let hellos = metric(&c, "clustorio_link_messages_total", &[("type", "hello")]).await;
    // Shrunk, the same instance starts on the same, still connected host.
    let (s, v) = patch(&api, "g", json!({ "server_settings": { "tags": null } })).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = api
        .post("/api/v1/instances/g/assign", json!({ "host": "h1" }))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["delivered"], true, "{v}");
    let (s, v) = api.post("/api/v1/instances/g/start", json!({})).await;
    assert_eq!(s, 200, "{v}");
    api.wait_for("/api/v1/instances/g", |v| v["status"] == "running")
        .await;
    let hellos_after = metric(&c, "clustorio_link_messages_total", &[("type", "hello")]).await;
    assert_eq!(hellos, hellos_after, "the host did not reconnect");
    let _ = api.post("/api/v1/instances/g/stop", json!({})).await;
}

#[tokio::test]
async fn durations_and_sizes_out_of_range_are_refused_naming_the_field_and_range() {
    let dir = tempfile::tempdir().unwrap();
    let c = ControllerProcess::start(dir.path());
    let api = Api::new(&c.url(""), &c.first_token);
    api.post("/api/v1/instances", json!({ "name": "a" })).await;
    let (s, v) = patch(
        &api,
        "a",
        json!({ "start_timeout_s": 18446744073709551615u64 }),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    let m = v["error"]["message"].as_str().unwrap();
    assert!(
        m.contains("start_timeout_s") && m.contains("from 1 to 3600"),
        "{m}"
    );

    // At load: a host's config file.
    let host_dir = tempfile::tempdir().unwrap();
    std::fs::write(
        host_dir.path().join("config-slave.json"),
        r#"{"stop_timeout_s": 18446744073709551615, "controller_url": "http://127.0.0.1:1", "controller_token": "x", "host_name": "h"}"#,
    )
    .unwrap();
    let out = std::process::Command::new(common::bin("clustorio"))
        .args(["host", "run", "--dir"])
        .arg(host_dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("stop_timeout_s") && err.contains("from 1 to 3600"),
        "{err}"
    );
    // And the controller's.
    let cdir = tempfile::tempdir().unwrap();
    write_config(
        cdir.path(),
        json!({ "resume_window_ms": 18446744073709551615u64 }),
    );
    let out = std::process::Command::new(common::bin("clustorio"))
        .args(["controller", "run", "--dir"])
        .arg(cdir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("resume_window_ms") && err.contains("from 0 to 86400000"),
        "{err}"
    );
}
