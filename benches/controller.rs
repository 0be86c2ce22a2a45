//! Controller benchmarks (DESIGN: figures in BENCHMARKS.md come from here).
//! Run: `cargo bench --bench controller` (release build; prints two Markdown tables;
//! `BENCH_REST_ONLY=1` for the second alone).
//!
//! The second table is the REST path alone, driven by a minimal HTTP/1.1 client (one
//! keep-alive connection per client task, no TLS, no decoding) so that the load generator,
//! which shares the two cores, costs as little as it can.

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

/// One keep-alive HTTP/1.1 connection: writes a request, reads the status and the
/// `Content-Length` body (the controller always sends one for these routes).
struct Raw {
    stream: tokio::net::TcpStream,
    buf: Vec<u8>,
    chunk: Vec<u8>,
}

impl Raw {
    async fn connect(port: u16) -> Raw {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connecting to the controller");
        stream.set_nodelay(true).expect("TCP_NODELAY");
        Raw {
            stream,
            buf: Vec::with_capacity(64 << 10),
            chunk: vec![0u8; 256 << 10],
        }
    }

    /// Sends `request`; returns the status, the body's length and whether it was gzipped.
    async fn call(&mut self, request: &[u8]) -> (u16, usize, bool) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        self.stream.write_all(request).await.expect("sending");
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).to_ascii_lowercase();
                let status: u16 = head
                    .split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .expect("a status line");
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or_else(|| panic!("no Content-Length in\n{head}"));
                let gzip = head.contains("content-encoding: gzip");
                let total = end + 4 + length;
                while self.buf.len() < total {
                    let n = self.stream.read(&mut self.chunk).await.expect("reading");
                    assert!(n > 0, "the controller closed the connection");
                    self.buf.extend_from_slice(&self.chunk[..n]);
                }
                self.buf.drain(..total);
                return (status, length, gzip);
            }
            let n = self.stream.read(&mut self.chunk).await.expect("reading");
            assert!(n > 0, "the controller closed the connection");
            self.buf.extend_from_slice(&self.chunk[..n]);
        }
    }
}

/// `total` instance creates from `clients` keep-alive connections; creates per second.
async fn raw_creates(port: u16, token: &str, prefix: &str, total: usize, clients: usize) -> f64 {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..clients {
        let (token, prefix) = (token.to_string(), prefix.to_string());
        tasks.push(tokio::spawn(async move {
            let mut conn = Raw::connect(port).await;
            for n in (w..total).step_by(clients) {
                let body = format!("{{\"name\":\"{prefix}{n}\"}}");
                let request = format!(
                    "POST /api/v1/instances HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                let (status, _, _) = conn.call(request.as_bytes()).await;
                assert_eq!(status, 201, "create {prefix}{n}");
            }
        }));
    }
    for t in tasks {
        t.await.expect("a create task");
    }
    total as f64 / start.elapsed().as_secs_f64()
}

/// Scrapes `/metrics` from `clients` keep-alive connections for `seconds`:
/// (scrapes/s, p50 ms, p99 ms, body KB as sent).
async fn raw_scrapes(
    port: u16,
    token: &str,
    seconds: f64,
    clients: usize,
    gzip: bool,
) -> (f64, f64, f64, f64) {
    let request = format!(
        "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n{}\r\n",
        if gzip {
            "Accept-Encoding: gzip\r\n"
        } else {
            ""
        }
    );
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let request = request.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = Raw::connect(port).await;
            let (mut lat, mut size) = (Vec::new(), 0);
            while Instant::now() < until {
                let t = Instant::now();
                let (status, len, gzipped) = conn.call(request.as_bytes()).await;
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
                assert_eq!(status, 200);
                assert_eq!(gzipped, gzip, "Content-Encoding as asked");
                size = len;
            }
            (lat, size)
        }));
    }
    let (mut lat, mut size) = (Vec::new(), 0);
    for t in tasks {
        let (l, s) = t.await.expect("a scrape task");
        lat.extend(l);
        size = s;
    }
    let rate = lat.len() as f64 / start.elapsed().as_secs_f64();
    lat.sort_by(|a, b| a.total_cmp(b));
    let at = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    (rate, at(0.5), at(0.99), size as f64 / 1024.0)
}

/// RSS, anonymous and file-backed memory of a process, in MB (`/proc/PID/smaps_rollup`).
fn memory_mb(pid: u32) -> (f64, f64, f64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let kb = |key: &str| {
        text.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let (rss, anon) = (kb("Rss:"), kb("Anonymous:"));
    (rss / 1024.0, anon / 1024.0, (rss - anon) / 1024.0)
}

/// User + system CPU seconds of a process.
fn cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    let ticks = f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0);
    ticks / 100.0
}

/// Median time of a 4 KiB overwrite + fdatasync in `dir`: what one group commit waits for.
fn fsync_ms(dir: &std::path::Path) -> f64 {
    use std::io::{Seek, SeekFrom, Write};
    let path = dir.join("fsync-probe");
    let mut f = std::fs::File::create(&path).expect("creating the probe file");
    let block = [7u8; 4096];
    let mut times = Vec::new();
    for i in 0..200u64 {
        f.seek(SeekFrom::Start((i % 16) * 4096)).expect("seek");
        let t = Instant::now();
        f.write_all(&block).expect("write");
        f.sync_data().expect("fdatasync");
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    drop(f);
    let _ = std::fs::remove_file(path);
    median(times)
}

/// The REST path alone, with the light client: a fresh controller each time.
async fn rest_only() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let c = ControllerProcess::start(dir.path());
    let token = c.first_token.clone();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let idle = memory_mb(c.child.id());
    let pid = c.child.id();
    let fsync = fsync_ms(dir.path());
    raw_creates(c.port, &token, "r", 10, 1).await;
    let cpu = cpu_s(pid);
    let m10 = raw_scrapes(c.port, &token, 3.0, 8, false).await;
    let m10_cpu = (cpu_s(pid) - cpu) / (m10.0 * 3.0) * 1e6;
    let m10gz = raw_scrapes(c.port, &token, 3.0, 8, true).await;
    let cpu = cpu_s(pid);
    let creates = raw_creates(c.port, &token, "api", 9_990, 16).await;
    let create_cpu = (cpu_s(pid) - cpu) / 9_990.0 * 1e6;
    let cpu = cpu_s(pid);
    let m10k = raw_scrapes(c.port, &token, 5.0, 8, false).await;
    let m10k_cpu = (cpu_s(pid) - cpu) / (m10k.0 * 5.0) * 1e6;
    let m10kgz = raw_scrapes(c.port, &token, 5.0, 8, true).await;
    let end = memory_mb(c.child.id());
    println!();
    println!("| measure (REST only, light HTTP/1.1 client) | clustorio |");
    println!("|---|---|");
    println!(
        "| idle RSS (fresh start, 1.5 s): total, anonymous, file-backed | {:.1} MB, {:.1} MB, {:.1} MB |",
        idle.0, idle.1, idle.2
    );
    println!(
        "| `/metrics`, 10 instances, 8 clients: scrapes/s, p50, p99, body | {:.0}/s, {:.2} ms, {:.2} ms, {:.1} KB |",
        m10.0, m10.1, m10.2, m10.3
    );
    println!("| … controller CPU per scrape | {m10_cpu:.1} µs |");
    println!(
        "| … the same with `Accept-Encoding: gzip` | {:.0}/s, {:.2} ms, {:.2} ms, {:.1} KB |",
        m10gz.0, m10gz.1, m10gz.2, m10gz.3
    );
    println!(
        "| instance creates/s, REST, 16 clients, each committed before its reply (10 → 10,000 instances) | {creates:.0} |"
    );
    println!("| … controller CPU per create | {create_cpu:.0} µs |");
    println!(
        "| fsync of 4 KiB in the data directory (median of 200); 16 clients can get at most 16 creates per fsync | {fsync:.2} ms (ceiling {:.0}/s) |",
        16.0 / fsync * 1000.0
    );
    println!(
        "| `/metrics`, 10,000 instances, 8 clients: scrapes/s, p50, p99, body | {:.0}/s, {:.2} ms, {:.2} ms, {:.0} KB |",
        m10k.0, m10k.1, m10k.2, m10k.3
    );
    println!("| … controller CPU per scrape | {m10k_cpu:.1} µs |");
    println!(
        "| … the same with `Accept-Encoding: gzip` | {:.0}/s, {:.2} ms, {:.2} ms, {:.0} KB |",
        m10kgz.0, m10kgz.1, m10kgz.2, m10kgz.3
    );
    println!(
        "| RSS at the end: total, anonymous, file-backed | {:.1} MB, {:.1} MB, {:.1} MB |",
        end.0, end.1, end.2
    );
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    // `BENCH_REST_ONLY=1 cargo bench --bench controller`: the second table alone.
    if std::env::var_os("BENCH_REST_ONLY").is_some() {
        rest_only().await;
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
    tokio::time::sleep(Duration::from_millis(1500)).await;
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
    drop(c);
    rest_only().await;
}
