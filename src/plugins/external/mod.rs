//! External-process plugins: any program that connects to `/api/socket` with `role: "plugin"`,
//! a plugin token (`ctl plugin token NAME`) and a declaration (docs/plugins.md).
//!
//! The controller stores the declaration, routes to the plugin the IPC of the channels it owns
//! (hosts forward channels no built-in owns as `external_plugin.ipc`), the events it subscribed
//! to and user requests `<name>.*`; the plugin calls `instance_list`, `instance_rcon` (through
//! the host's ordered RCON queue), `instance_send` and its key–value store. While it is away its
//! durable channels are queued (bounded), the rest counted and dropped; a restarted process
//! gets the queue. What it sends is rate-limited per session.

pub mod control;
pub mod declaration;
pub mod queue;
pub mod routing;
pub mod session;
pub mod store;

use crate::controller::Controller;
use crate::controller::ws::{Message, WebSocket};
use crate::link::attach::Outgoing;
use crate::link::{ErrorBody, Frame, PROTOCOL_VERSION};
use crate::store::TokenOwner;
use declaration::Declaration;
use futures_util::{SinkExt, StreamExt};
use queue::DurableQueue;
use serde_json::{Value, json};
use session::PluginSession;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// The plugin API this controller speaks. Bumped on incompatible changes to the messages in
/// docs/plugins.md; a plugin declaring another version is refused with both versions named.
pub const PLUGIN_API_VERSION: u32 = 1;
/// Prefix of the host ⇄ controller messages that carry external plugins' traffic.
pub const HOST_PREFIX: &str = "external_plugin.";
/// Messages a second a plugin session may send, unless set per plugin (`ctl plugin limit`).
pub const DEFAULT_RATE: u64 = 2000;
/// Frames the controller keeps unacknowledged for one plugin session.
const OUTBOX_LIMIT: usize = 50_000;
/// Unacknowledged bytes a plugin session may hold before it must start over.
const OUTBOX_BYTES: usize = 16 << 20;
const CLOSE_REFUSED: u16 = 4001;
/// How long a user request or an RCON call waits for its answer.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(15);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One external plugin as the controller knows it, connected or not.
pub struct Live {
    pub decl: Mutex<Declaration>,
    session: Mutex<Option<Arc<PluginSession>>>,
    queue: Mutex<DurableQueue>,
    /// Non-durable messages dropped while it was away.
    dropped_offline: AtomicU64,
    rate_limited: AtomicU64,
    delivered: AtomicU64,
    received: AtomicU64,
    rate: AtomicU64,
}

impl Live {
    fn new(decl: Declaration, rate: u64) -> Self {
        Live {
            decl: Mutex::new(decl),
            session: Mutex::new(None),
            queue: Mutex::new(DurableQueue::new(
                queue::DEFAULT_MAX_COUNT,
                queue::DEFAULT_MAX_BYTES,
            )),
            dropped_offline: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            received: AtomicU64::new(0),
            rate: AtomicU64::new(rate),
        }
    }

    pub fn name(&self) -> String {
        lock(&self.decl).name.clone()
    }

    pub fn session(&self) -> Option<Arc<PluginSession>> {
        lock(&self.session).clone()
    }

    pub fn connected(&self) -> bool {
        self.session().is_some_and(|s| s.is_attached())
    }

    /// Sends an event to the plugin now, or keeps it (`durable`) or counts it as dropped.
    pub fn deliver(&self, name: &str, data: Value, durable: bool) {
        match self.session().filter(|s| s.is_attached()) {
            Some(s) => {
                s.send_event(name, data);
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            None if durable => {
                lock(&self.queue).push(name, data);
            }
            None => {
                self.dropped_offline.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Every external plugin, and the RCON calls waiting for a host's answer.
pub struct External {
    plugins: Mutex<HashMap<String, Arc<Live>>>,
    calls: Mutex<HashMap<u64, oneshot::Sender<Result<Value, ErrorBody>>>>,
    next_call: AtomicU64,
    /// Last status seen per instance (for `instance_status` events on changes only).
    statuses: Mutex<HashMap<i64, String>>,
    unowned_ipc: AtomicU64,
    /// Each plugin's declared config fields as schema fields, with the declared fields they
    /// were made from (a redeclaration with the same fields reuses them: schema fields are
    /// `'static`, so only a change leaks a new set).
    fields: Mutex<std::collections::BTreeMap<String, (Value, crate::config::PluginSettings)>>,
}

/// The part of a declaration the schemas are made from.
fn schema_part(d: &Declaration) -> Value {
    json!([d.instance_config, d.controller_config])
}

impl External {
    /// The plugins stored in SQLite (their last declarations), none connected.
    pub fn load(store: &crate::store::Store) -> anyhow::Result<External> {
        let records = store
            .read_blocking(store::list)
            .map_err(|e| anyhow::anyhow!("reading external plugins: {e}"))?;
        let mut plugins = HashMap::new();
        let mut fields = std::collections::BTreeMap::new();
        for r in records {
            let Some(text) = &r.declaration else { continue };
            match serde_json::from_str::<Declaration>(text) {
                Ok(d) => {
                    let rate = r
                        .rate_limit
                        .map(|n| n.max(1) as u64)
                        .unwrap_or(DEFAULT_RATE);
                    fields.insert(r.name.clone(), (schema_part(&d), d.settings()));
                    plugins.insert(r.name.clone(), Arc::new(Live::new(d, rate)));
                }
                Err(e) => {
                    tracing::warn!(plugin = %r.name, error = %e, "stored declaration unreadable; ignored")
                }
            }
        }
        Ok(External {
            plugins: Mutex::new(plugins),
            calls: Mutex::new(HashMap::new()),
            next_call: AtomicU64::new(1),
            statuses: Mutex::new(HashMap::new()),
            unowned_ipc: AtomicU64::new(0),
            fields: Mutex::new(fields),
        })
    }

    /// The schema settings of every declaration, by plugin name (for `Schemas::new`).
    pub fn schema_settings(&self) -> Vec<crate::config::PluginSettings> {
        lock(&self.fields).values().map(|(_, s)| *s).collect()
    }

    /// A plugin (re)declared itself: when its config fields differ from those in the schemas,
    /// the controller's schemas are rebuilt at once (the instance form and every validation see
    /// the new fields; a field it no longer declares leaves them, its stored values are kept).
    pub fn declared_fields(&self, ctl: &Controller, decl: &Declaration) {
        let part = schema_part(decl);
        let mut fields = lock(&self.fields);
        if fields.get(&decl.name).is_some_and(|(p, _)| *p == part) {
            return;
        }
        fields.insert(decl.name.clone(), (part, decl.settings()));
        let mut all = crate::plugins::settings();
        all.extend(fields.values().map(|(_, s)| *s));
        // Set while `fields` is held, so two plugins declaring at once cannot undo each other.
        ctl.schemas.set(crate::config::Schemas::new(&all));
        tracing::info!(plugin = %decl.name, "config schema updated with the plugin's fields");
    }

    pub fn get(&self, name: &str) -> Option<Arc<Live>> {
        lock(&self.plugins).get(name).cloned()
    }

    pub fn all(&self) -> Vec<Arc<Live>> {
        lock(&self.plugins).values().cloned().collect()
    }

    /// The plugin that owns `channel`, if any.
    pub fn owner_of(&self, channel: &str) -> Option<Arc<Live>> {
        self.all()
            .into_iter()
            .find(|l| lock(&l.decl).owns_channel(channel))
    }

    /// Ends the plugin's session at once (its token was revoked).
    pub fn close(&self, name: &str, reason: ErrorBody) {
        if let Some(live) = self.get(name)
            && let Some(s) = lock(&live.session).take()
        {
            s.kill(reason);
        }
    }

    pub fn set_rate(&self, name: &str, rate: u64) {
        if let Some(live) = self.get(name) {
            live.rate.store(rate, Ordering::Relaxed);
            if let Some(s) = live.session() {
                s.set_rate(rate);
            }
        }
    }

    fn new_call(&self) -> (u64, oneshot::Receiver<Result<Value, ErrorBody>>) {
        let id = self.next_call.fetch_add(1, Ordering::SeqCst);
        let (tx, rx) = oneshot::channel();
        lock(&self.calls).insert(id, tx);
        (id, rx)
    }

    fn finish_call(&self, id: u64, result: Result<Value, ErrorBody>) {
        if let Some(tx) = lock(&self.calls).remove(&id) {
            let _ = tx.send(result);
        }
    }

    fn forget_call(&self, id: u64) {
        lock(&self.calls).remove(&id);
    }

    /// Prometheus lines: per plugin, connected, queued, dropped, rate-limited, messages.
    pub fn metrics_text(&self) -> String {
        let mut all = self.all();
        all.sort_by_key(|l| l.name());
        let mut out = String::new();
        let series: [(&str, &str, &str); 6] = [
            (
                "clustorio_plugin_connected",
                "gauge",
                "1 while the external plugin's process is connected",
            ),
            (
                "clustorio_plugin_queued",
                "gauge",
                "Messages of durable channels kept for an external plugin that is away",
            ),
            (
                "clustorio_plugin_dropped_total",
                "counter",
                "Messages for an external plugin dropped (away and not durable, or its queue full)",
            ),
            (
                "clustorio_plugin_rate_limited_total",
                "counter",
                "Messages from an external plugin refused by its rate limit",
            ),
            (
                "clustorio_plugin_delivered_total",
                "counter",
                "Messages delivered to an external plugin",
            ),
            (
                "clustorio_plugin_received_total",
                "counter",
                "Messages received from an external plugin",
            ),
        ];
        for (i, (name, kind, help)) in series.iter().enumerate() {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
            for l in &all {
                let plugin = l.name();
                if i == 2 {
                    let full = lock(&l.queue).dropped;
                    let away = l.dropped_offline.load(Ordering::Relaxed);
                    out.push_str(&format!(
                        "{name}{{plugin=\"{plugin}\",reason=\"away\"}} {away}\n{name}{{plugin=\"{plugin}\",reason=\"queue_full\"}} {full}\n"
                    ));
                    continue;
                }
                let v = match i {
                    0 => u64::from(l.connected()),
                    1 => lock(&l.queue).len() as u64,
                    3 => l.rate_limited.load(Ordering::Relaxed),
                    4 => l.delivered.load(Ordering::Relaxed),
                    _ => l.received.load(Ordering::Relaxed),
                };
                out.push_str(&format!("{name}{{plugin=\"{plugin}\"}} {v}\n"));
            }
        }
        out.push_str(&format!(
            "# HELP clustorio_plugin_ipc_unowned_total IPC messages on channels no plugin owns\n# TYPE clustorio_plugin_ipc_unowned_total counter\nclustorio_plugin_ipc_unowned_total {}\n",
            self.unowned_ipc.load(Ordering::Relaxed)
        ));
        out
    }

    /// State of every external plugin, for `GET /api/v1/external-plugins` and the web page.
    pub fn state(&self, records: Vec<store::Record>) -> Value {
        let list: Vec<Value> = records
            .into_iter()
            .map(|r| {
                let live = self.get(&r.name);
                let decl = live.as_ref().map(|l| lock(&l.decl).clone());
                let connected = live.as_ref().is_some_and(|l| l.connected());
                let queued = live.as_ref().map(|l| lock(&l.queue).len()).unwrap_or(0);
                let dropped = live
                    .as_ref()
                    .map(|l| l.dropped_offline.load(Ordering::Relaxed) + lock(&l.queue).dropped)
                    .unwrap_or(0);
                json!({
                    "name": r.name,
                    "version": r.version,
                    "revoked": r.revoked,
                    "connected": connected,
                    "last_seen": r.last_seen,
                    "created_at": r.created_at,
                    "queued": queued,
                    "dropped": dropped,
                    "rate_limit": live.as_ref().map(|l| l.rate.load(Ordering::Relaxed)).unwrap_or(DEFAULT_RATE),
                    "rate_limited": live.as_ref().map(|l| l.rate_limited.load(Ordering::Relaxed)).unwrap_or(0),
                    "title": decl.as_ref().map(|d| d.title.clone()),
                    "description": decl.as_ref().map(|d| d.description.clone()),
                    "permissions": decl.as_ref().map(|d| d.permissions.clone()),
                    "requests": decl.as_ref().map(|d| d.requests.clone()),
                    "ipc_channels": decl.as_ref().map(|d| d.ipc_channels.clone()),
                    "durable": decl.as_ref().map(|d| d.durable.clone()),
                    "events": decl.as_ref().map(|d| d.events.clone()),
                    "instance_config": decl.as_ref().map(|d| d.instance_config.clone()),
                    "controller_config": decl.as_ref().map(|d| d.controller_config.clone()),
                })
            })
            .collect();
        json!(list)
    }
}

/// Is this first frame a plugin's hello?
pub fn is_plugin_hello(text: &str) -> bool {
    serde_json::from_str::<Value>(text).is_ok_and(|v| v["type"] == "hello" && v["role"] == "plugin")
}

/// Checks the hello; returns the plugin, its session, the ready frame and the seq the plugin
/// has seen.
async fn handshake(
    ctl: &Arc<Controller>,
    text: &str,
) -> Result<(Arc<Live>, Arc<PluginSession>, String, u64), ErrorBody> {
    let hello = match Frame::parse(text)? {
        Frame::Hello(h) => h,
        _ => {
            return Err(ErrorBody::new(
                "bad_handshake",
                "the first frame must be a hello",
            ));
        }
    };
    if hello.version != PROTOCOL_VERSION {
        return Err(ErrorBody::new(
            "version_mismatch",
            format!(
                "this controller speaks link protocol {PROTOCOL_VERSION}, the plugin {}",
                hello.version
            ),
        ));
    }
    let raw: Value = serde_json::from_str(text)
        .map_err(|e| ErrorBody::new("bad_frame", format!("frame is not valid JSON: {e}")))?;
    let token = hello.token.clone();
    let owner = ctl
        .store
        .read(move |c| crate::store::tokens::resolve(c, &token))
        .await
        .map_err(|e| ErrorBody::new("internal", format!("reading tokens: {e}")))?;
    let name = match owner {
        Some(TokenOwner::Plugin { name }) => name,
        Some(_) => {
            return Err(ErrorBody::new(
                "forbidden",
                "this is not a plugin token; create one with `clustorio ctl plugin token NAME`",
            ));
        }
        None => return Err(ErrorBody::new("unauthorized", "invalid or revoked token")),
    };
    if !raw["plugin"].is_object() {
        Declaration::parse(&Value::Null)?;
    }
    // The API version first: a plugin for another API may not even parse as a declaration.
    let api = raw["plugin"]["api"].as_u64();
    if api != Some(u64::from(PLUGIN_API_VERSION)) {
        let theirs = api.map(|a| a.to_string()).unwrap_or_else(|| "none".into());
        return Err(ErrorBody::new(
            "api_mismatch",
            format!(
                "this controller speaks plugin API {PLUGIN_API_VERSION}; plugin \"{name}\" declares plugin API {theirs}"
            ),
        ));
    }
    let decl = Declaration::parse(&raw["plugin"])?;
    decl.check(&name)?;
    if let Some((channel, builtin)) = decl.builtin_clash() {
        return Err(ErrorBody::new(
            "channel_taken",
            format!("IPC channel \"{channel}\" is owned by the built-in plugin {builtin}"),
        ));
    }
    for other in ctl.external.all() {
        let o = lock(&other.decl).clone();
        if o.name != decl.name
            && let Some(channel) = decl.channel_clash(&o)
        {
            return Err(ErrorBody::new(
                "channel_taken",
                format!(
                    "IPC channel \"{channel}\" is owned by the plugin {}",
                    o.name
                ),
            ));
        }
    }
    if let Some(lua) = &decl.lua {
        routing::store_lua(ctl, &decl.name, &decl.version, lua).await?;
    }
    let text_decl = serde_json::to_string(&decl).unwrap_or_default();
    let (n, v) = (decl.name.clone(), decl.version.clone());
    let rec = ctl
        .store
        .write(move |c| {
            store::save_declaration(c, &n, &v, &text_decl)?;
            store::get(c, &n)
        })
        .await
        .map_err(|e| ErrorBody::new("internal", format!("storing the declaration: {e}")))?;
    ctl.external.declared_fields(ctl, &decl);
    let rate = rec
        .and_then(|r| r.rate_limit)
        .map(|n| n.max(1) as u64)
        .unwrap_or(DEFAULT_RATE);

    let live = {
        let mut all = lock(&ctl.external.plugins);
        let live = all
            .entry(name.clone())
            .or_insert_with(|| Arc::new(Live::new(decl.clone(), rate)))
            .clone();
        *lock(&live.decl) = decl.clone();
        live.rate.store(rate, Ordering::Relaxed);
        live
    };
    let window = Duration::from_millis(ctl.cfg.resume_window_ms);
    let old = live.session();
    if let (Some(resume), Some(s)) = (&hello.resume, &old)
        && s.id == resume.session
        && !s.is_dead()
        && !s.expired(window)
    {
        let queued = lock(&live.queue).len();
        let ready = ready_text(ctl, s, true, &decl, queued);
        return Ok((live.clone(), s.clone(), ready, resume.last_seq));
    }
    // A new process (a reload): what the old one never acknowledged on durable channels is
    // delivered first, then what was queued while it was away.
    if let Some(old) = old {
        let kept: Vec<(String, Value)> = old
            .unacked_events()
            .into_iter()
            .filter(|(n, d)| {
                n == "ipc" && d["channel"].as_str().is_some_and(|c| decl.is_durable(c))
            })
            .collect();
        old.kill(ErrorBody::new(
            "replaced",
            "the plugin connected again with a new session",
        ));
        lock(&live.queue).push_front_all(kept);
    }
    let session = Arc::new(PluginSession::new(
        crate::store::tokens::generate("psess"),
        name.clone(),
        crate::link::Limits {
            outbox_frames: OUTBOX_LIMIT,
            outbox_bytes: OUTBOX_BYTES,
            max_frame: ctl.cfg.max_message_bytes,
        },
        rate,
    ));
    *lock(&live.session) = Some(session.clone());
    let queued = lock(&live.queue).len();
    let ready = ready_text(ctl, &session, false, &decl, queued);
    tracing::info!(plugin = %name, version = %decl.version, queued, "external plugin connected");
    Ok((live, session, ready, 0))
}

fn ready_text(
    ctl: &Controller,
    s: &PluginSession,
    resumed: bool,
    decl: &Declaration,
    queued: usize,
) -> String {
    let settings = ctl.settings();
    let config: serde_json::Map<String, Value> = decl
        .controller_config
        .iter()
        .map(|f| {
            let v = Some(settings.plugin_setting(&f.name))
                .filter(|v| !v.is_null())
                .unwrap_or_else(|| f.default.clone());
            (f.name.clone(), v)
        })
        .collect();
    json!({
        "type": "ready",
        "session": s.id,
        "heartbeat_ms": ctl.cfg.heartbeat_interval_ms,
        "resume_window_ms": ctl.cfg.resume_window_ms,
        "resumed": resumed,
        "last_seq": s.last_received(),
        "plugins": [],
        "plugin": {
            "name": decl.name,
            "api": PLUGIN_API_VERSION,
            "queued": queued,
            "rate_limit": s_rate(ctl, &decl.name),
            "config": config,
        },
    })
    .to_string()
}

fn s_rate(ctl: &Controller, name: &str) -> u64 {
    ctl.external
        .get(name)
        .map(|l| l.rate.load(Ordering::Relaxed))
        .unwrap_or(DEFAULT_RATE)
}

/// Serves a plugin's socket whose first frame was `hello_text`.
pub async fn serve(ws: WebSocket, ctl: Arc<Controller>, hello_text: String, address: String) {
    let (mut sink, mut stream) = ws.split();
    let (live, session, ready, peer_seq) = match handshake(&ctl, &hello_text).await {
        Ok(x) => x,
        Err(reason) => {
            tracing::info!(code = %reason.code, message = %reason.message, %address, "plugin handshake refused");
            let _ = sink
                .send(Message::text(Frame::Close(reason.clone()).to_text()))
                .await;
            let _ = sink
                .send(Message::close_with(CLOSE_REFUSED, reason.code))
                .await;
            return;
        }
    };
    let (tx, rx) = mpsc::unbounded_channel::<Outgoing>();
    let generation = session.attach(tx, peer_seq, ready);
    // What was kept while it was away, in order, after anything resent.
    let kept = lock(&live.queue).drain();
    for (name, data) in kept {
        session.send_event(&name, data);
        live.delivered.fetch_add(1, Ordering::Relaxed);
    }

    let heartbeat = Duration::from_millis(ctl.cfg.heartbeat_interval_ms.max(100));
    let writer_session = session.clone();
    let writer = tokio::spawn(crate::link::attach::write_loop(
        sink,
        rx,
        heartbeat,
        move || writer_session.last_received(),
    ));

    let silence = heartbeat * 3;
    let max = ctl.cfg.max_message_bytes;
    loop {
        let msg = match tokio::time::timeout(silence, stream.next()).await {
            Ok(Some(Ok(msg))) => msg,
            _ => break,
        };
        if session.is_dead() || msg.is_close() {
            break;
        }
        if msg.is_ping() || msg.is_pong() {
            continue;
        }
        let Ok(text) = msg.to_str() else {
            session.send_control(Frame::Error(ErrorBody::new(
                "bad_frame",
                "binary frames are not supported; send JSON text",
            )));
            continue;
        };
        if text.len() > max {
            session.send_control(Frame::Error(ErrorBody::new(
                "too_large",
                format!(
                    "frame of {} bytes exceeds the limit of {max} bytes",
                    text.len()
                ),
            )));
            continue;
        }
        match Frame::parse(text) {
            Ok(frame) => handle_frame(&ctl, &live, &session, frame).await,
            Err(e) => session.send_control(Frame::Error(e)),
        }
    }
    if session.detach(generation) {
        tracing::info!(plugin = %session.plugin, "external plugin disconnected");
    }
    let name = session.plugin.clone();
    let _ = ctl.store.write(move |c| store::touch(c, &name)).await;
    writer.abort();
}

async fn handle_frame(
    ctl: &Arc<Controller>,
    live: &Arc<Live>,
    session: &Arc<PluginSession>,
    frame: Frame,
) {
    let _in_order = session.applying.lock().await;
    if let Some(ack) = frame.ack() {
        session.acked(ack);
    }
    if let Some(seq) = frame.seq() {
        match session.inbound(seq) {
            crate::link::Accept::New => {}
            crate::link::Accept::Duplicate => {
                session.send_control(Frame::Ack {
                    ack: session.last_received(),
                });
                return;
            }
            crate::link::Accept::Gap { expected } => {
                session.send_control(Frame::Error(ErrorBody::new(
                    "bad_seq",
                    format!("expected seq {expected}, got {seq}; the frame was ignored"),
                )));
                return;
            }
        }
    }
    let limited = matches!(frame, Frame::Request { .. } | Frame::Event { .. }) && !session.admit();
    if limited {
        live.rate_limited.fetch_add(1, Ordering::Relaxed);
    }
    match frame {
        Frame::Ping { .. } => session.send_control(Frame::Pong {
            ack: session.last_received(),
        }),
        Frame::Ack { .. } | Frame::Pong { .. } | Frame::Close(_) => {}
        Frame::Hello(_) | Frame::Ready(_) => session.send_control(Frame::Error(ErrorBody::new(
            "unexpected",
            "the handshake is already done",
        ))),
        Frame::Error(e) => {
            tracing::warn!(plugin = %session.plugin, code = %e.code, message = %e.message, "plugin reported an error")
        }
        Frame::Request { id, .. } if limited => {
            let rate = live.rate.load(Ordering::Relaxed);
            session.respond(
                id,
                Err(ErrorBody::new(
                    "rate_limited",
                    format!("more than {rate} messages a second; slow down"),
                )),
            );
        }
        Frame::Request { id, name, data, .. } => {
            live.received.fetch_add(1, Ordering::Relaxed);
            let (ctl, live, session) = (ctl.clone(), live.clone(), session.clone());
            tokio::spawn(async move {
                let result = routing::plugin_request(&ctl, &live, &name, data).await;
                session.respond(id, result);
            });
        }
        Frame::Response { id, ok, error, .. } => {
            session.resolve(
                id,
                match error {
                    Some(e) => Err(e),
                    None => Ok(ok.unwrap_or(Value::Null)),
                },
            );
            session.send_control(Frame::Ack {
                ack: session.last_received(),
            });
        }
        Frame::Event { name, .. } => {
            let message = if limited {
                "rate limit exceeded; the event was dropped".to_string()
            } else {
                format!("plugins send no events (\"{name}\"); use requests (docs/plugins.md)")
            };
            session.send_control(Frame::Error(ErrorBody::new(
                if limited {
                    "rate_limited"
                } else {
                    "unknown_event"
                },
                message,
            )));
            session.send_control(Frame::Ack {
                ack: session.last_received(),
            });
        }
    }
}
