//! The client end of the link, used by hosts: connects, says hello, and keeps the session alive
//! across drops — reconnecting with capped exponential backoff and jitter, resuming the session
//! when the controller still has it, and re-sending whatever the controller has not acknowledged
//! (renumbered into a new session when the old one is gone), so events a host produced while the
//! controller was away are delivered once it is back.

use super::endpoint::Endpoint;
use super::{
    Accept, ErrorBody, Frame, Hello, Inbox, Outbox, PROTOCOL_VERSION, Ready, ResumeInfo,
    SOCKET_PATH,
};
use crate::shutdown::Shutdown;
use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// Unacknowledged frames kept while the controller is away (events of many hours), at most
/// this many and this many bytes.
const OUTBOX_FRAMES: usize = 200_000;
const OUTBOX_BYTES: usize = 256 << 20;

fn outbox_limits(max_frame: usize) -> super::Limits {
    super::Limits {
        outbox_frames: OUTBOX_FRAMES,
        outbox_bytes: OUTBOX_BYTES,
        max_frame,
    }
}

/// Close codes after which retrying cannot help: the operator must fix something.
const FATAL: &[&str] = &[
    "unauthorized",
    "forbidden",
    "name_taken",
    "name_required",
    "version_mismatch",
    "bad_handshake",
    "revoked",
];

#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The controller's base URL (`http://host:8081`) or its socket URL (`ws://…/api/socket`).
    pub url: String,
    pub role: String,
    pub token: String,
    pub name: Option<String>,
    pub software: String,
    pub max_backoff: Duration,
    /// Hosts: the plugins this host runs (told in the hello).
    pub plugins: Vec<crate::plugins::PluginVersion>,
}

/// What the link hands to its owner.
#[derive(Debug)]
pub enum Incoming {
    /// (Re)connected. `ready.resumed` false means the controller lost our session: resend state.
    Connected(Ready),
    Disconnected(String),
    Request {
        id: u64,
        name: String,
        data: Value,
    },
    Event {
        name: String,
        data: Value,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("the controller refused this {role}: {} ({})", .reason.message, .reason.code)]
    Refused { role: String, reason: ErrorBody },
}

struct Shared {
    link: Endpoint<mpsc::UnboundedSender<Arc<str>>>,
    /// The controller's session id, to resume after a drop.
    session: Mutex<Option<String>>,
    token: Mutex<String>,
}

#[derive(Clone)]
pub struct Link {
    shared: Arc<Shared>,
}

/// `http://h:p/` → `ws://h:p/api/socket`.
pub fn socket_url(url: &str) -> String {
    let url = url.trim_end_matches('/');
    if url.starts_with("ws://") || url.starts_with("wss://") {
        return url.to_string();
    }
    let ws = if let Some(rest) = url.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = url.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        format!("ws://{url}")
    };
    format!("{ws}{SOCKET_PATH}")
}

impl Link {
    /// Starts the connection task. It runs until `shutdown`, or returns an error when the
    /// controller refuses us for a reason retrying cannot fix.
    pub fn spawn(
        opts: ClientOptions,
        shutdown: Shutdown,
    ) -> (
        Link,
        mpsc::UnboundedReceiver<Incoming>,
        tokio::task::JoinHandle<Result<(), LinkError>>,
    ) {
        let shared = Arc::new(Shared {
            link: Endpoint::new(outbox_limits(super::DEFAULT_MAX_FRAME)),
            session: Mutex::new(None),
            token: Mutex::new(opts.token.clone()),
        });
        let link = Link { shared };
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(link.clone().run(opts, tx, shutdown));
        (link, rx, task)
    }

    /// Uses `token` from now on (a host's own token after registering with the join token).
    pub fn set_token(&self, token: &str) {
        if let Ok(mut t) = self.shared.token.lock() {
            *t = token.to_string();
        }
    }

    /// The token the link authenticates with now.
    pub fn token(&self) -> String {
        self.shared
            .token
            .lock()
            .map(|t| t.clone())
            .unwrap_or_default()
    }

    pub fn is_connected(&self) -> bool {
        self.shared.link.is_attached()
    }

    /// Sends an event; kept until the controller acknowledges it, across reconnects.
    pub fn send_event(&self, name: &str, data: Value) {
        if let Err(e) = self.shared.link.send_event(name, data) {
            tracing::error!(event = name, error = %e, "link event not sent");
        }
    }

    pub fn respond(&self, id: u64, result: Result<Value, ErrorBody>) {
        let sent = match self.shared.link.respond(id, result) {
            // Too large for the controller: it still gets an answer, an error saying why.
            Err(e @ super::SendError::TooLarge { .. }) => self
                .shared
                .link
                .respond(id, Err(ErrorBody::new("too_large", e.to_string()))),
            other => other,
        };
        if let Err(e) = sent {
            tracing::error!(id, error = %e, "link response not sent");
        }
    }

    pub async fn request(
        &self,
        name: &str,
        data: Value,
        timeout: Duration,
    ) -> Result<Value, ErrorBody> {
        self.shared.link.request(name, data, timeout).await
    }

    fn hello(&self, opts: &ClientOptions) -> Frame {
        let session = self.shared.session.lock().ok().and_then(|s| s.clone());
        Frame::Hello(Hello {
            version: PROTOCOL_VERSION,
            role: opts.role.clone(),
            token: self.token(),
            name: opts.name.clone(),
            software: opts.software.clone(),
            plugins: opts.plugins.clone(),
            resume: session.map(|session| ResumeInfo {
                session,
                last_seq: self.shared.link.last_received(),
            }),
        })
    }

    /// Attaches a new socket after `ready`: resend what the controller has not seen.
    fn attach(&self, ready: &Ready, socket: mpsc::UnboundedSender<Arc<str>>) {
        let mut st = self.shared.link.lock();
        let max_frame = match ready.max_frame_bytes {
            0 => super::DEFAULT_MAX_FRAME,
            n => usize::try_from(n)
                .unwrap_or(usize::MAX)
                .min(super::FRAME_CEILING),
        };
        if let Some(why) = &ready.ended {
            tracing::warn!(code = %why.code, message = %why.message, "the controller ended the previous link session; starting a new one");
        }
        if ready.resumed {
            st.outbox.set_max_frame(max_frame);
            st.outbox.ack(ready.last_seq);
        } else {
            // A new session: the controller's seq counters start over, so renumber what is
            // still unacknowledged and send it again.
            let old: Vec<Frame> = st
                .outbox
                .pending()
                .filter_map(|t| Frame::parse(t).ok())
                .collect();
            st.outbox = Outbox::new(outbox_limits(max_frame));
            st.inbox = Inbox::new();
            for frame in old {
                if let Err(e) = st.outbox.push(|seq| renumber(frame, seq)) {
                    tracing::warn!(error = %e, "dropping an unacknowledged frame the new session cannot take");
                }
            }
        }
        if let Ok(mut s) = self.shared.session.lock() {
            *s = Some(ready.session.clone());
        }
        for text in st.outbox.pending() {
            let _ = socket.send(text.clone());
        }
        st.socket = Some(socket);
    }

    fn detach(&self) {
        self.shared.link.lock().socket = None;
    }

    async fn run(
        self,
        opts: ClientOptions,
        incoming: mpsc::UnboundedSender<Incoming>,
        shutdown: Shutdown,
    ) -> Result<(), LinkError> {
        let url = socket_url(&opts.url);
        let mut attempt: u32 = 0;
        loop {
            if shutdown.is_triggered() {
                return Ok(());
            }
            match self.session_once(&url, &opts, &incoming, &shutdown).await {
                Ok(connected) => {
                    if connected {
                        attempt = 0;
                    }
                }
                Err(SessionEnd::Fatal(reason)) => {
                    return Err(LinkError::Refused {
                        role: opts.role.clone(),
                        reason,
                    });
                }
                Err(SessionEnd::Unreachable(e)) => {
                    if attempt.is_multiple_of(10) {
                        tracing::warn!(url = %url, error = %e, "cannot reach the controller; retrying");
                    }
                }
            }
            let delay = backoff(attempt, opts.max_backoff);
            attempt = attempt.saturating_add(1);
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.wait() => return Ok(()),
            }
        }
    }

    /// One connection: returns Ok(true) after a session that was established and then dropped.
    async fn session_once(
        &self,
        url: &str,
        opts: &ClientOptions,
        incoming: &mpsc::UnboundedSender<Incoming>,
        shutdown: &Shutdown,
    ) -> Result<bool, SessionEnd> {
        // Whatever the controller may send (its frame limit is at most the ceiling), we take.
        let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .max_message_size(Some(super::FRAME_CEILING))
            .max_frame_size(Some(super::FRAME_CEILING));
        let connect = tokio::time::timeout(
            Duration::from_secs(10),
            tokio_tungstenite::connect_async_with_config(url, Some(config), false),
        );
        let (ws, _) = match connect.await {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => return Err(SessionEnd::Unreachable(e.to_string())),
            Err(_) => return Err(SessionEnd::Unreachable("connection timed out".into())),
        };
        let (mut sink, mut stream) = ws.split();
        sink.send(Message::text(self.hello(opts).to_text()))
            .await
            .map_err(|e| SessionEnd::Unreachable(e.to_string()))?;
        let first = match tokio::time::timeout(Duration::from_secs(15), stream.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                Frame::parse(t.as_str()).map_err(SessionEnd::Fatal)?
            }
            Ok(_) => {
                return Err(SessionEnd::Unreachable(
                    "the controller closed the connection".into(),
                ));
            }
            Err(_) => return Err(SessionEnd::Unreachable("no answer to hello".into())),
        };
        let ready = match first {
            Frame::Ready(r) => r,
            Frame::Close(reason) if FATAL.contains(&reason.code.as_str()) => {
                return Err(SessionEnd::Fatal(reason));
            }
            Frame::Close(reason) => return Err(SessionEnd::Unreachable(reason.message)),
            other => {
                return Err(SessionEnd::Fatal(ErrorBody::new(
                    "bad_handshake",
                    format!("unexpected first frame {other:?}"),
                )));
            }
        };
        if let Some(token) = &ready.host_token {
            self.set_token(token);
        }
        let heartbeat = Duration::from_millis(ready.heartbeat_ms.max(100));
        let (tx, mut rx) = mpsc::unbounded_channel::<Arc<str>>();
        self.attach(&ready, tx);
        let _ = incoming.send(Incoming::Connected(ready));

        let writer = tokio::spawn(async move {
            while let Some(text) = rx.recv().await {
                if sink.send(Message::text(text.to_string())).await.is_err() {
                    break;
                }
            }
            let _ = sink.close().await;
        });
        let mut fatal = None;
        loop {
            let msg = tokio::select! {
                m = tokio::time::timeout(heartbeat * 3, stream.next()) => m,
                _ = shutdown.wait() => break,
            };
            let text = match msg {
                Ok(Some(Ok(Message::Text(t)))) => t,
                Ok(Some(Ok(Message::Close(_)))) | Ok(Some(Err(_))) | Ok(None) | Err(_) => break,
                Ok(Some(Ok(_))) => continue,
            };
            let frame = match Frame::parse(text.as_str()) {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!(code = %e.code, message = %e.message, "unreadable frame from the controller");
                    continue;
                }
            };
            if let Frame::Close(reason) = &frame {
                if FATAL.contains(&reason.code.as_str()) {
                    fatal = Some(reason.clone());
                }
                break;
            }
            self.handle(frame, incoming);
        }
        self.detach();
        writer.abort();
        if let Some(reason) = fatal {
            return Err(SessionEnd::Fatal(reason));
        }
        let _ = incoming.send(Incoming::Disconnected("link closed".into()));
        Ok(true)
    }

    fn handle(&self, frame: Frame, incoming: &mpsc::UnboundedSender<Incoming>) {
        let link = &self.shared.link;
        if let Some(ack) = frame.ack() {
            link.acked(ack);
        }
        if let Some(seq) = frame.seq() {
            match link.accept(seq) {
                Accept::New => {}
                Accept::Duplicate => {
                    link.send_ack();
                    return;
                }
                Accept::Gap { expected } => {
                    tracing::warn!(seq, expected, "link frame out of order; ignored");
                    return;
                }
            }
        }
        match frame {
            Frame::Ping { .. } => link.send_control(Frame::Pong {
                ack: link.last_received(),
            }),
            Frame::Request { id, name, data, .. } => {
                let _ = incoming.send(Incoming::Request { id, name, data });
            }
            Frame::Response { id, ok, error, .. } => {
                link.resolve(
                    id,
                    match error {
                        Some(e) => Err(e),
                        None => Ok(ok.unwrap_or(Value::Null)),
                    },
                );
                link.send_ack();
            }
            Frame::Event { name, data, .. } => {
                let _ = incoming.send(Incoming::Event { name, data });
                link.send_ack();
            }
            Frame::Error(e) => {
                tracing::warn!(code = %e.code, message = %e.message, "the controller reported a link error")
            }
            _ => {}
        }
    }
}

enum SessionEnd {
    Unreachable(String),
    Fatal(ErrorBody),
}

fn renumber(frame: Frame, seq: u64) -> Frame {
    match frame {
        Frame::Request { id, name, data, .. } => Frame::Request {
            seq,
            ack: None,
            id,
            name,
            data,
        },
        Frame::Response { id, ok, error, .. } => Frame::Response {
            seq,
            ack: None,
            id,
            ok,
            error,
        },
        Frame::Event { name, data, .. } => Frame::Event {
            seq,
            ack: None,
            name,
            data,
        },
        other => other,
    }
}

/// Uniform in [base·2^n / 2, base·2^n], capped at `max` (Clusterio's scheme, with a floor so a
/// restarting controller is not hammered).
fn backoff(attempt: u32, max: Duration) -> Duration {
    let base = Duration::from_millis(500);
    let ceiling = base
        .saturating_mul(1u32 << attempt.min(16))
        .min(max.max(base));
    let ms = ceiling.as_millis() as u64;
    Duration::from_millis(rand::rng().random_range(ms / 2..=ms.max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_urls_are_derived_from_base_urls() {
        assert_eq!(
            socket_url("http://10.0.0.1:8081"),
            "ws://10.0.0.1:8081/api/socket"
        );
        assert_eq!(
            socket_url("https://c.example/"),
            "wss://c.example/api/socket"
        );
        assert_eq!(socket_url("master:8081"), "ws://master:8081/api/socket");
        assert_eq!(socket_url("ws://x/api/socket"), "ws://x/api/socket");
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let max = Duration::from_secs(30);
        assert!(backoff(0, max) <= Duration::from_millis(500));
        for n in 0..40 {
            assert!(backoff(n, max) <= max);
        }
        assert!(backoff(10, max) >= Duration::from_secs(15));
    }
}
