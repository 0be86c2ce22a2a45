//! Prometheus metrics at `/metrics`: the controller's own counters (prefixed `clustorio_`), the
//! standard `process_*` series, and the cluster as the controller knows it — one series per host
//! and per instance, plus the samples hosts send over the link.
//!
//! A scrape never touches SQLite and never waits for a host: the [`Census`] is kept in memory
//! as changes commit (it watches the events the hub publishes after each commit, and is seeded
//! once at start), and host samples are whatever each host last sent. The cluster part of the
//! body is rendered once per change and reused until the next one. The whole body is kept as
//! shared bytes and rebuilt at most every [`BODY_MAX_AGE`], so a burst of scrapers shares one
//! rendering and each is served without a copy; a scraper that accepts gzip gets a compressed
//! copy, made once per rebuild, whose cluster part is compressed once per cluster change.

use crate::store::{HostRecord, InstanceRecord};
use prometheus::{Encoder, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};
use serde::Deserialize;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

/// The shipped Grafana dashboard and scrape config, served beside `/metrics` for the web UI.
pub const DASHBOARD: &str = include_str!("../../docker/grafana/clustorio.json");
pub const SCRAPE_CONFIG: &str = include_str!("../../docker/grafana/prometheus.yml");

/// The Content-Type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Every status an instance can have, as the API shows it; all are exported, zeros included.
pub const STATUSES: [&str; 8] = [
    "unassigned",
    "unknown",
    "stopped",
    "starting",
    "creating_save",
    "running",
    "stopping",
    "crashed",
];

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    http_requests: IntCounterVec,
    link_messages: IntCounterVec,
    pub sessions: IntGauge,
    plugin_messages: IntCounterVec,
    ipc_errors: IntCounterVec,
    /// Link sessions and HTTP streams whose peer did not read: `stream` (link, log_follow) and
    /// `action` (detached: the socket was dropped and the session may resume; closed).
    pub slow_consumers: IntCounterVec,
    /// Control requests refused with `rate_limited`.
    pub rate_limited: prometheus::IntCounter,
    /// Connections closed before their first request: `reason` (timeout, evicted).
    pub connections_dropped: IntCounterVec,
    pub census: Arc<Census>,
    /// `/metrics` answered 200, counted without looking the labels up each time.
    scrapes_ok: prometheus::IntCounter,
    /// The last body served, and the lock one rebuilder holds while the others wait.
    body: Arc<Mutex<Option<Arc<Exposition>>>>,
    rebuilding: Arc<tokio::sync::Mutex<()>>,
}

/// A body is served again to scrapes that come within this time of its rendering; the counters
/// and process figures in it are at most this old (the cluster part follows [`Census`]).
pub const BODY_MAX_AGE: std::time::Duration = std::time::Duration::from_millis(25);

impl Metrics {
    pub fn new() -> anyhow::Result<Self> {
        let registry = Registry::new_custom(Some("clustorio".into()), None)?;
        let http_requests = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests by route, method and status.",
            ),
            &["route", "method", "status"],
        )?;
        let link_messages = IntCounterVec::new(
            Opts::new("link_messages_total", "Link frames by direction and type."),
            &["direction", "type"],
        )?;
        let sessions = IntGauge::new(
            "link_sessions",
            "Open link sessions (attached or resumable).",
        )?;
        let plugin_messages = IntCounterVec::new(
            Opts::new(
                "plugin_messages_total",
                "Plugin messages by plugin and direction (in: from hosts, out: to hosts).",
            ),
            &["plugin", "direction"],
        )?;
        let ipc_errors = IntCounterVec::new(
            Opts::new(
                "plugin_ipc_errors_total",
                "Unusable IPC messages from games, by instance id and kind.",
            ),
            &["instance_id", "kind"],
        )?;
        let slow_consumers = IntCounterVec::new(
            Opts::new(
                "slow_consumers_dropped_total",
                "Link sessions and HTTP streams dropped because their peer did not read, by stream and action.",
            ),
            &["stream", "action"],
        )?;
        let rate_limited = prometheus::IntCounter::new(
            "requests_rate_limited_total",
            "Control requests refused because the session was over its request rate.",
        )?;
        let connections_dropped = IntCounterVec::new(
            Opts::new(
                "connections_dropped_total",
                "HTTP connections closed before their first request, by reason (timeout, evicted).",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(slow_consumers.clone()))?;
        registry.register(Box::new(rate_limited.clone()))?;
        registry.register(Box::new(connections_dropped.clone()))?;
        registry.register(Box::new(plugin_messages.clone()))?;
        registry.register(Box::new(ipc_errors.clone()))?;
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(link_messages.clone()))?;
        registry.register(Box::new(sessions.clone()))?;
        let scrapes_ok = http_requests.with_label_values(&["/metrics", "GET", "200"]);
        Ok(Metrics {
            registry,
            http_requests,
            link_messages,
            sessions,
            plugin_messages,
            ipc_errors,
            slow_consumers,
            rate_limited,
            connections_dropped,
            census: Arc::new(Census::default()),
            scrapes_ok,
            body: Arc::default(),
            rebuilding: Arc::default(),
        })
    }

    pub fn plugin_message(&self, plugin: &str, direction: &str) {
        self.plugin_messages
            .with_label_values(&[plugin, direction])
            .inc();
    }

    pub fn ipc_error(&self, instance_id: &str, kind: &str) {
        self.ipc_errors
            .with_label_values(&[instance_id, kind])
            .inc();
    }

    pub fn http_request(&self, route: &str, method: &str, status: u16) {
        self.http_requests
            .with_label_values(&[route, method, &status.to_string()])
            .inc();
    }

    pub fn slow_consumer(&self, stream: &str, action: &str) {
        self.slow_consumers
            .with_label_values(&[stream, action])
            .inc();
    }

    pub fn link_message(&self, direction: &str, kind: &str) {
        self.link_messages
            .with_label_values(&[direction, kind])
            .inc();
    }

    /// The counters and the standard process metrics: the head of the body.
    fn render_head(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "encoding metrics");
        }
        let mut text = String::from_utf8(out).unwrap_or_default();
        process_metrics(&mut text);
        text
    }

    /// The body to serve now: the last one while it is fresh, else a new one (one rebuilder;
    /// scrapes arriving meanwhile wait for it rather than render again).
    async fn current(&self, ctl: &super::Controller) -> Arc<Exposition> {
        if let Some(e) = self.fresh() {
            return e;
        }
        let _one = self.rebuilding.lock().await;
        if let Some(e) = self.fresh() {
            return e;
        }
        self.sessions.set(ctl.hub.session_count() as i64);
        let head = self.render_head();
        let cluster = self.census.render();
        let mut tail = ctl.plugin_metrics().await;
        tail.push_str(&ctl.external.metrics_text());
        let e = Arc::new(Exposition::new(head, cluster, tail));
        *self.body.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.clone());
        e
    }

    fn fresh(&self) -> Option<Arc<Exposition>> {
        self.body
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .filter(|e| e.built.elapsed() < BODY_MAX_AGE)
            .cloned()
    }
}

/// `GET /metrics`: with a user token (any user may read the metrics) unless `metrics_public`;
/// gzip when the scraper accepts it.
pub async fn scrape(
    authorization: Option<String>,
    accept_encoding: Option<String>,
    ctl: Arc<super::Controller>,
) -> warp::http::Response<bytes::Bytes> {
    use warp::http::{Response, StatusCode, header};
    let allowed = if ctl.settings().metrics_public {
        Ok(())
    } else {
        match super::auth::bearer(authorization.as_deref()) {
            Ok(token) => super::auth::authenticate(&ctl.store, token)
                .await
                .map(|_| ()),
            Err(e) => Err(e),
        }
    };
    if let Err(e) = allowed {
        ctl.metrics.http_request("/metrics", "GET", e.status);
        let body = bytes::Bytes::from(e.to_json().to_string());
        return Response::builder()
            .status(StatusCode::from_u16(e.status).unwrap_or(StatusCode::UNAUTHORIZED))
            .header(header::CONTENT_TYPE, "application/json")
            .body(body)
            .unwrap_or_default();
    }
    ctl.metrics.scrapes_ok.inc();
    let body = ctl.metrics.current(&ctl).await;
    let builder = Response::builder()
        .header(header::CONTENT_TYPE, CONTENT_TYPE)
        .header(header::VARY, "Accept-Encoding")
        .header(header::CACHE_CONTROL, "no-store");
    let gzip = if accept_encoding
        .as_deref()
        .is_some_and(super::web::accepts_gzip)
    {
        body.clone().gzip().await
    } else {
        None
    };
    match gzip {
        Some(gz) => builder.header(header::CONTENT_ENCODING, "gzip").body(gz),
        None => builder.body(body.text.clone()),
    }
    .unwrap_or_default()
}

/// One rendering of the body, and its gzip copy once a scraper asked for it.
pub struct Exposition {
    built: std::time::Instant,
    text: bytes::Bytes,
    head: bytes::Bytes,
    cluster: Arc<ClusterText>,
    tail: bytes::Bytes,
    gzip: tokio::sync::OnceCell<Option<bytes::Bytes>>,
}

impl Exposition {
    fn new(head: String, cluster: Arc<ClusterText>, tail: String) -> Self {
        let mut text = Vec::with_capacity(head.len() + cluster.text.len() + tail.len());
        text.extend_from_slice(head.as_bytes());
        text.extend_from_slice(cluster.text.as_bytes());
        text.extend_from_slice(tail.as_bytes());
        Exposition {
            built: std::time::Instant::now(),
            text: text.into(),
            head: head.into(),
            cluster,
            tail: tail.into(),
            gzip: tokio::sync::OnceCell::new(),
        }
    }

    /// The body gzipped (made off the async threads, once), or None if compression failed.
    async fn gzip(self: Arc<Self>) -> Option<bytes::Bytes> {
        let me = self.clone();
        self.gzip
            .get_or_init(|| async move {
                tokio::task::spawn_blocking(move || me.compress())
                    .await
                    .ok()
                    .flatten()
            })
            .await
            .clone()
    }

    /// One gzip member whose deflate stream is the three parts' streams one after another
    /// (each ends on a sync flush, so they join); the cluster's is reused across rebuilds.
    fn compress(&self) -> Option<bytes::Bytes> {
        let head = Deflated::of(&self.head)?;
        let cluster = self.cluster.deflated()?;
        let tail = Deflated::of(&self.tail)?;
        let mut crc = flate2::Crc::new();
        let mut out =
            Vec::with_capacity(18 + head.data.len() + cluster.data.len() + tail.data.len());
        // Header: magic, deflate, no flags, no time, no extra flags, OS unknown.
        out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff]);
        for part in [&head, cluster, &tail] {
            out.extend_from_slice(&part.data);
            crc.combine(&part.crc);
        }
        // An empty final block ends the stream.
        out.extend_from_slice(&[0x03, 0x00]);
        out.extend_from_slice(&crc.sum().to_le_bytes());
        out.extend_from_slice(&(self.text.len() as u32).to_le_bytes());
        Some(out.into())
    }
}

/// A part of the body as raw deflate ending on a sync flush (not final), with its CRC-32.
pub struct Deflated {
    data: Vec<u8>,
    crc: flate2::Crc,
}

impl Deflated {
    fn of(text: &[u8]) -> Option<Deflated> {
        use flate2::{Compress, Compression, FlushCompress};
        let mut c = Compress::new(Compression::fast(), false);
        let mut data = Vec::with_capacity(text.len() / 6 + 64);
        loop {
            if data.capacity() - data.len() < 1024 {
                data.reserve(data.capacity().max(4096));
            }
            let done = c.total_in() as usize;
            c.compress_vec(&text[done..], &mut data, FlushCompress::Sync)
                .ok()?;
            // Done when all input is in and the flush did not fill the buffer.
            if c.total_in() as usize == text.len() && data.len() < data.capacity() {
                break;
            }
        }
        let mut crc = flate2::Crc::new();
        crc.update(text);
        Some(Deflated { data, crc })
    }
}

/// The cluster part of the body, as the census last rendered it.
pub struct ClusterText {
    text: Arc<str>,
    deflated: std::sync::OnceLock<Option<Deflated>>,
}

impl ClusterText {
    fn new(text: String) -> Self {
        ClusterText {
            text: text.into(),
            deflated: std::sync::OnceLock::new(),
        }
    }

    #[cfg(test)]
    fn text(&self) -> &str {
        &self.text
    }

    fn deflated(&self) -> Option<&Deflated> {
        self.deflated
            .get_or_init(|| Deflated::of(self.text.as_bytes()))
            .as_ref()
    }
}

/// What the controller knows of an instance, kept as changes commit.
#[derive(Debug, Clone, Default)]
struct InstanceFacts {
    name: String,
    host_id: Option<i64>,
    status: String,
    players: usize,
    starts: u64,
    stops: u64,
    crashes: u64,
}

#[derive(Debug, Clone, Default)]
struct HostFacts {
    name: String,
    connected: bool,
    revoked: bool,
}

/// A host's last sample (the `host_metrics` link event). Every field is optional: a host sends
/// what it can measure.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct HostSample {
    pub host: HostValues,
    pub instances: Vec<InstanceValues>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct HostValues {
    pub cpu_seconds_total: Option<f64>,
    pub resident_memory_bytes: Option<f64>,
    pub start_time_seconds: Option<f64>,
    pub system_cpu_busy_seconds_total: Option<f64>,
    pub system_cpu_idle_seconds_total: Option<f64>,
    pub system_memory_capacity_bytes: Option<f64>,
    pub system_memory_available_bytes: Option<f64>,
    pub disk_capacity_bytes: Option<f64>,
    pub disk_available_bytes: Option<f64>,
    pub game_ports_total: Option<f64>,
    pub game_ports_free: Option<f64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct InstanceValues {
    pub id: i64,
    pub factorio_cpu_seconds_total: Option<f64>,
    pub factorio_resident_memory_bytes: Option<f64>,
}

#[derive(Default)]
struct CensusState {
    instances: BTreeMap<i64, InstanceFacts>,
    hosts: BTreeMap<i64, HostFacts>,
    samples: HashMap<i64, HostSample>,
    /// Bumped on every change; the rendered text is reused while it stays the same.
    generation: u64,
    rendered: Option<(u64, std::time::Instant, Arc<ClusterText>)>,
}

/// A rendering of a changed cluster is reused for this long.
const RENDER_MAX_RATE: std::time::Duration = std::time::Duration::from_millis(200);

/// The cluster in memory, for `/metrics`.
#[derive(Default)]
pub struct Census {
    state: Mutex<CensusState>,
}

impl Census {
    fn state(&self) -> std::sync::MutexGuard<'_, CensusState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Loads what is stored, once at start. No host is connected yet, so instances on a host
    /// are `unknown` until it reports, as the API shows them.
    pub fn seed(&self, hosts: &[HostRecord], instances: &[InstanceRecord]) {
        let mut s = self.state();
        for h in hosts {
            s.hosts.insert(
                h.id,
                HostFacts {
                    name: h.name.clone(),
                    connected: false,
                    revoked: h.revoked,
                },
            );
        }
        for i in instances {
            let status = if i.host_id.is_some() {
                "unknown"
            } else {
                "unassigned"
            };
            s.instances.insert(
                i.id,
                InstanceFacts {
                    name: i.name.clone(),
                    host_id: i.host_id,
                    status: status.into(),
                    ..Default::default()
                },
            );
        }
        s.generation += 1;
    }

    /// Applies a committed change, as the hub publishes it.
    pub fn observe(&self, name: &str, data: &Value) {
        match name {
            "instance_updated" => {
                let Some(id) = data["id"].as_i64() else {
                    return;
                };
                let mut s = self.state();
                let entry = s.instances.entry(id).or_default();
                let status = data["status"].as_str().unwrap_or("unknown");
                // Transitions the host reported, not a host coming back (`unknown` → …).
                match (entry.status.as_str(), status) {
                    ("starting", "running") => entry.starts += 1,
                    ("stopping" | "running", "stopped") => entry.stops += 1,
                    ("starting" | "running" | "stopping" | "creating_save", "crashed") => {
                        entry.crashes += 1
                    }
                    _ => {}
                }
                if entry.status != status {
                    entry.status = status.to_string();
                }
                entry.name = data["name"].as_str().unwrap_or_default().to_string();
                entry.host_id = data["host_id"].as_i64();
                entry.players = data["players_online"].as_array().map_or(0, Vec::len);
                s.generation += 1;
            }
            "instance_deleted" => {
                if let Some(id) = data["id"].as_i64() {
                    let mut s = self.state();
                    s.instances.remove(&id);
                    s.generation += 1;
                }
            }
            "host_updated" => {
                let Some(id) = data["id"].as_i64() else {
                    return;
                };
                let mut s = self.state();
                let connected = data["connected"].as_bool().unwrap_or(false);
                let entry = s.hosts.entry(id).or_default();
                entry.name = data["name"].as_str().unwrap_or_default().to_string();
                entry.connected = connected;
                entry.revoked = data["revoked"].as_bool().unwrap_or(false);
                if !connected {
                    // A sample of a host that is away would be stale; it sends anew on return.
                    s.samples.remove(&id);
                }
                s.generation += 1;
            }
            _ => {}
        }
    }

    /// A host's sample arrived over the link. Malformed samples are ignored with a warning.
    pub fn sample(&self, host_id: i64, data: Value) {
        match serde_json::from_value::<HostSample>(data) {
            Ok(sample) => {
                let mut s = self.state();
                if s.hosts.get(&host_id).is_some_and(|h| h.connected) {
                    s.samples.insert(host_id, sample);
                    s.generation += 1;
                }
            }
            Err(e) => {
                tracing::warn!(host_id, error = %e, "ignored a malformed host_metrics sample")
            }
        }
    }

    /// The cluster's series, rendered once per change and at most every [`RENDER_MAX_RATE`]
    /// (a busy cluster changes all the time; scrapers in a burst share one rendering).
    pub fn render(&self) -> Arc<ClusterText> {
        self.render_within(RENDER_MAX_RATE)
    }

    fn render_within(&self, max_age: std::time::Duration) -> Arc<ClusterText> {
        let mut s = self.state();
        if let Some((generation, at, text)) = &s.rendered
            && (*generation == s.generation || at.elapsed() < max_age)
        {
            return text.clone();
        }
        let text = Arc::new(ClusterText::new(render_cluster(&s)));
        s.rendered = Some((s.generation, std::time::Instant::now(), text.clone()));
        text
    }
}

/// A label value in the text format: backslash, quote and newline escaped.
fn esc(v: &str) -> String {
    if !v.contains(['\\', '"', '\n']) {
        return v.to_string();
    }
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A float as the text format writes it (integers without a fraction).
fn num(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else {
        format!("{v}")
    }
}

/// A sampled series: name, type, help, and how to get its value from a sample.
type Series<T> = (
    &'static str,
    &'static str,
    &'static str,
    fn(&T) -> Option<f64>,
);
/// A lifecycle counter: name, help, and its count.
type Lifecycle = (&'static str, &'static str, fn(&InstanceFacts) -> u64);

fn render_cluster(s: &CensusState) -> String {
    let mut out = String::with_capacity(256 + s.instances.len() * 600 + s.hosts.len() * 900);
    let host_name = |id: Option<i64>| {
        id.and_then(|h| s.hosts.get(&h))
            .map(|h| esc(&h.name))
            .unwrap_or_default()
    };
    let host_id = |id: Option<i64>| id.map(|h| h.to_string()).unwrap_or_default();

    // Cluster totals.
    let live_hosts = s.hosts.values().filter(|h| !h.revoked).count();
    let connected = s.hosts.values().filter(|h| h.connected).count();
    head(
        &mut out,
        "clustorio_hosts",
        "gauge",
        "Hosts by state (connected, total).",
    );
    let _ = writeln!(out, "clustorio_hosts{{state=\"connected\"}} {connected}");
    let _ = writeln!(out, "clustorio_hosts{{state=\"total\"}} {live_hosts}");
    head(
        &mut out,
        "clusterio_controller_active_hosts",
        "gauge",
        "Connected hosts (Clusterio's name).",
    );
    let _ = writeln!(out, "clusterio_controller_active_hosts {connected}");
    let mut by_status: BTreeMap<&str, usize> = STATUSES.iter().map(|s| (*s, 0)).collect();
    let mut by_host: BTreeMap<(i64, &str), usize> = BTreeMap::new();
    for i in s.instances.values() {
        *by_status.entry(i.status.as_str()).or_default() += 1;
        if let Some(h) = i.host_id {
            *by_host.entry((h, i.status.as_str())).or_default() += 1;
        }
    }
    head(
        &mut out,
        "clustorio_instances",
        "gauge",
        "Instances by status.",
    );
    for (status, n) in &by_status {
        let _ = writeln!(out, "clustorio_instances{{status=\"{}\"}} {n}", esc(status));
    }
    let players: usize = s.instances.values().map(|i| i.players).sum();
    head(
        &mut out,
        "clustorio_players_online",
        "gauge",
        "Players online across the cluster.",
    );
    let _ = writeln!(out, "clustorio_players_online {players}");

    // Per host.
    head(
        &mut out,
        "clusterio_controller_host_mapping",
        "gauge",
        "Host id to name (always 1).",
    );
    for (id, h) in &s.hosts {
        let _ = writeln!(
            out,
            "clusterio_controller_host_mapping{{host_id=\"{id}\",host_name=\"{}\"}} 1",
            esc(&h.name)
        );
    }
    head(
        &mut out,
        "clustorio_host_connected",
        "gauge",
        "1 while the host's link is attached.",
    );
    for (id, h) in &s.hosts {
        let _ = writeln!(
            out,
            "clustorio_host_connected{{host_id=\"{id}\",host_name=\"{}\"}} {}",
            esc(&h.name),
            u8::from(h.connected)
        );
    }
    head(
        &mut out,
        "clustorio_host_instances",
        "gauge",
        "Instances assigned to each host, by status (statuses with none are left out).",
    );
    for ((id, status), n) in &by_host {
        let _ = writeln!(
            out,
            "clustorio_host_instances{{host_id=\"{id}\",host_name=\"{}\",status=\"{}\"}} {n}",
            host_name(Some(*id)),
            esc(status)
        );
    }
    let host_series: [Series<HostValues>; 10] = [
        (
            "clusterio_host_cpu_seconds_total",
            "counter",
            "CPU time of the host process, in seconds.",
            |v| v.cpu_seconds_total,
        ),
        (
            "clusterio_host_resident_memory_bytes",
            "gauge",
            "Resident memory of the host process.",
            |v| v.resident_memory_bytes,
        ),
        (
            "clusterio_host_start_time_seconds",
            "gauge",
            "Start of the host process, Unix seconds.",
            |v| v.start_time_seconds,
        ),
        (
            "clusterio_host_system_memory_capacity_bytes",
            "gauge",
            "Memory of the host's machine.",
            |v| v.system_memory_capacity_bytes,
        ),
        (
            "clusterio_host_system_memory_available_bytes",
            "gauge",
            "Memory available on the host's machine.",
            |v| v.system_memory_available_bytes,
        ),
        (
            "clusterio_host_system_disk_capacity_bytes",
            "gauge",
            "Size of the file system holding the host's data directory.",
            |v| v.disk_capacity_bytes,
        ),
        (
            "clusterio_host_system_disk_available_bytes",
            "gauge",
            "Free space of the file system holding the host's data directory.",
            |v| v.disk_available_bytes,
        ),
        (
            "clustorio_host_system_cpu_busy_seconds_total",
            "counter",
            "Busy CPU time of the host's machine, all cores, in seconds.",
            |v| v.system_cpu_busy_seconds_total,
        ),
        (
            "clustorio_host_system_cpu_idle_seconds_total",
            "counter",
            "Idle CPU time of the host's machine, all cores, in seconds.",
            |v| v.system_cpu_idle_seconds_total,
        ),
        (
            "clustorio_host_game_ports_free",
            "gauge",
            "Game ports of the host no instance uses.",
            |v| v.game_ports_free,
        ),
    ];
    for (name, kind, help, get) in host_series {
        head(&mut out, name, kind, help);
        for (id, sample) in &s.samples {
            if let Some(v) = get(&sample.host) {
                let _ = writeln!(
                    out,
                    "{name}{{host_id=\"{id}\",host_name=\"{}\"}} {}",
                    host_name(Some(*id)),
                    num(v)
                );
            }
        }
    }

    // Per instance.
    head(
        &mut out,
        "clusterio_controller_instance_mapping",
        "gauge",
        "Instance id to name and host (always 1).",
    );
    for (id, i) in &s.instances {
        let _ = writeln!(
            out,
            "clusterio_controller_instance_mapping{{instance_id=\"{id}\",instance_name=\"{}\",host_id=\"{}\"}} 1",
            esc(&i.name),
            host_id(i.host_id)
        );
    }
    head(
        &mut out,
        "clustorio_instance_status",
        "gauge",
        "One series per instance, labelled with its current status (always 1).",
    );
    for (id, i) in &s.instances {
        let _ = writeln!(
            out,
            "clustorio_instance_status{{instance_id=\"{id}\",instance_name=\"{}\",host_id=\"{}\",host_name=\"{}\",status=\"{}\"}} 1",
            esc(&i.name),
            host_id(i.host_id),
            host_name(i.host_id),
            esc(&i.status)
        );
    }
    head(
        &mut out,
        "clustorio_instance_players_online",
        "gauge",
        "Players online in each instance.",
    );
    for (id, i) in &s.instances {
        let _ = writeln!(
            out,
            "clustorio_instance_players_online{{instance_id=\"{id}\",instance_name=\"{}\"}} {}",
            esc(&i.name),
            i.players
        );
    }
    let lifecycle: [Lifecycle; 3] = [
        (
            "clustorio_instance_starts_total",
            "Times the instance reached running, since the controller started (from the first).",
            |i| i.starts,
        ),
        (
            "clustorio_instance_stops_total",
            "Times the instance stopped cleanly, since the controller started (from the first).",
            |i| i.stops,
        ),
        (
            "clustorio_instance_crashes_total",
            "Times the instance crashed, since the controller started (from the first).",
            |i| i.crashes,
        ),
    ];
    for (name, help, get) in lifecycle {
        head(&mut out, name, "counter", help);
        for (id, i) in &s.instances {
            let n = get(i);
            if n > 0 {
                let _ = writeln!(
                    out,
                    "{name}{{instance_id=\"{id}\",instance_name=\"{}\"}} {n}",
                    esc(&i.name)
                );
            }
        }
    }
    let instance_series: [Series<InstanceValues>; 3] = [
        (
            "clustorio_instance_factorio_cpu_seconds_total",
            "counter",
            "CPU time of the instance's Factorio process, in seconds.",
            |v| v.factorio_cpu_seconds_total,
        ),
        (
            "clustorio_instance_factorio_resident_memory_bytes",
            "gauge",
            "Resident memory of the instance's Factorio process.",
            |v| v.factorio_resident_memory_bytes,
        ),
        (
            "clusterio_instance_factorio_resident_memory_bytes",
            "gauge",
            "Resident memory of the instance's Factorio process (Clusterio's name).",
            |v| v.factorio_resident_memory_bytes,
        ),
    ];
    for (name, kind, help, get) in instance_series {
        head(&mut out, name, kind, help);
        for (hid, sample) in &s.samples {
            for v in &sample.instances {
                // Only instances that exist and are still on this host: a deleted or moved
                // instance's series goes at once, not at the host's next sample.
                let Some(i) = s.instances.get(&v.id).filter(|i| i.host_id == Some(*hid)) else {
                    continue;
                };
                if let Some(x) = get(v) {
                    let _ = writeln!(
                        out,
                        "{name}{{instance_id=\"{}\",instance_name=\"{}\",host_id=\"{hid}\"}} {}",
                        v.id,
                        esc(&i.name),
                        num(x)
                    );
                }
            }
        }
    }
    out
}

/// The standard process metrics of the controller, read from `/proc/self` (sub-second CPU).
fn process_metrics(out: &mut String) {
    let Some(p) = crate::host::metrics::ProcStat::read_self() else {
        return;
    };
    head(
        out,
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
    );
    let _ = writeln!(out, "process_cpu_seconds_total {}", num(p.cpu_seconds));
    head(
        out,
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
    );
    let _ = writeln!(out, "process_resident_memory_bytes {}", p.rss_bytes);
    head(
        out,
        "process_virtual_memory_bytes",
        "gauge",
        "Virtual memory size in bytes.",
    );
    let _ = writeln!(out, "process_virtual_memory_bytes {}", p.vsize_bytes);
    head(
        out,
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
    );
    let _ = writeln!(
        out,
        "process_start_time_seconds {}",
        num(p.start_time_seconds)
    );
    head(out, "process_threads", "gauge", "Number of OS threads.");
    let _ = writeln!(out, "process_threads {}", p.threads);
    if let Some(fds) = crate::host::metrics::open_fds() {
        head(
            out,
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
        );
        let _ = writeln!(out, "process_open_fds {fds}");
    }
    if let Some(max) = crate::host::metrics::max_fds() {
        head(
            out,
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
        );
        let _ = writeln!(out, "process_max_fds {max}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn deleted_instances_and_away_hosts_lose_their_series() {
        let c = Census::default();
        c.observe(
            "host_updated",
            &json!({"id": 1, "name": "h1", "connected": true}),
        );
        for status in ["starting", "running"] {
            c.observe(
                "instance_updated",
                &json!({"id": 7, "name": "a\"b", "host_id": 1, "status": status, "players_online": ["x", "y"]}),
            );
        }
        c.sample(
            1,
            json!({"host": {"cpu_seconds_total": 1.25}, "instances": [{"id": 7, "factorio_resident_memory_bytes": 1000}]}),
        );
        let t = c
            .render_within(std::time::Duration::ZERO)
            .text()
            .to_string();
        assert!(
            t.contains(
                "clustorio_instance_players_online{instance_id=\"7\",instance_name=\"a\\\"b\"} 2"
            ),
            "{t}"
        );
        assert!(
            t.contains("clusterio_host_cpu_seconds_total{host_id=\"1\",host_name=\"h1\"} 1.25"),
            "{t}"
        );
        assert!(
            t.contains("clustorio_instance_starts_total{instance_id=\"7\""),
            "{t}"
        );
        assert!(
            t.contains("clustorio_instance_factorio_resident_memory_bytes{instance_id=\"7\""),
            "{t}"
        );
        assert!(
            t.contains("clustorio_instances{status=\"crashed\"} 0"),
            "{t}"
        );
        c.observe("instance_deleted", &json!({"id": 7, "name": "a\"b"}));
        let t = c
            .render_within(std::time::Duration::ZERO)
            .text()
            .to_string();
        assert!(!t.contains("instance_id=\"7\""), "{t}");
        c.observe(
            "host_updated",
            &json!({"id": 1, "name": "h1", "connected": false}),
        );
        let t = c
            .render_within(std::time::Duration::ZERO)
            .text()
            .to_string();
        assert!(!t.contains("clusterio_host_cpu_seconds_total{"), "{t}");
        assert!(
            t.contains("clustorio_host_connected{host_id=\"1\",host_name=\"h1\"} 0"),
            "{t}"
        );
    }

    #[test]
    fn the_joined_gzip_stream_is_one_valid_member_of_the_whole_body() {
        use std::io::Read;
        let c = Census::default();
        for i in 0..2000 {
            c.observe(
                "instance_updated",
                &json!({"id": i, "name": format!("i{i}"), "status": "stopped"}),
            );
        }
        let cluster = c.render_within(std::time::Duration::ZERO);
        let e = Exposition::new("# head\nx 1\n".into(), cluster, "# tail\ny 2\n".into());
        let gz = e.compress().expect("compressed");
        assert!(
            gz.len() * 5 < e.text.len(),
            "{} of {}",
            gz.len(),
            e.text.len()
        );
        // A single-member decoder that checks the CRC and length reads it all back.
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut back)
            .expect("valid gzip");
        assert_eq!(back, e.text.to_vec());
        // An empty part joins as well.
        let e = Exposition::new(
            String::new(),
            Arc::new(ClusterText::new(String::new())),
            "z 3\n".into(),
        );
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&e.compress().expect("compressed")[..])
            .read_to_end(&mut back)
            .expect("valid gzip");
        assert_eq!(back, b"z 3\n");
    }

    #[test]
    fn process_cpu_has_sub_second_resolution() {
        let mut out = String::new();
        // Burn a little CPU so the figure is not a whole number by chance of being zero.
        let mut x = 0u64;
        for i in 0..3_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        process_metrics(&mut out);
        let line = out
            .lines()
            .find(|l| l.starts_with("process_cpu_seconds_total "))
            .unwrap_or_default();
        let v: f64 = line
            .rsplit(' ')
            .next()
            .unwrap_or("")
            .parse()
            .unwrap_or(-1.0);
        assert!(v >= 0.0, "{out}");
        assert!(out.contains("process_resident_memory_bytes "), "{out}");
    }
}
