//! A link session on the controller: outlives its socket for the resume window, so frames sent
//! while the peer is away wait in the outbox and are resent, in order, when it comes back.
//!
//! Memory per session is bounded in bytes: frames queued for the socket writer beyond
//! [`SessionLimits::write_budget`] (a peer that does not read) detach the socket — the peer may
//! resume and loses nothing it had not acknowledged — and an outbox over its byte limit ends the
//! session with a `close` frame saying so.

use super::auth::Actor;
use crate::limits::TokenBucket;
use crate::link::endpoint::{Endpoint, SharedEvent, Wire};
use crate::link::{Accept, ErrorBody, Frame, SendError};
use serde_json::Value;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc};

/// Who is on the other end.
#[derive(Debug, Clone)]
pub enum Peer {
    Host {
        id: i64,
        name: String,
    },
    /// A web UI or ctl client; the token is re-checked on every request so revocation bites at once.
    Control {
        actor: Actor,
        token: String,
    },
}

/// What one session may hold, send and ask.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    /// A host session's outbox and frame limits.
    pub link: crate::link::Limits,
    /// A control session's outbox may hold at most this many bytes (a tab that comes back
    /// after more than this reloads its state instead).
    pub control_outbox_bytes: usize,
    /// Bytes queued for the socket writer (not yet written to the socket) beyond which the peer
    /// counts as not reading: the socket is dropped, the session waits for a resume.
    pub write_budget: usize,
    /// Requests per second and burst a control client may send (token bucket; 0 = unlimited);
    /// hosts and administrators are not limited.
    pub request_rate: u32,
    pub request_burst: u32,
}

/// What the socket writer task sends.
#[derive(Debug)]
pub enum Outgoing {
    /// A new frame: counts against the write budget until written.
    Text(Arc<str>),
    /// A frame resent after a resume (already held by the outbox; not counted).
    Resend(Arc<str>),
    Close(ErrorBody),
}

/// Bytes queued for one socket's writer, and the signal that the peer stopped reading.
#[derive(Debug)]
pub struct WriteBudget {
    queued: AtomicUsize,
    limit: usize,
    over: AtomicBool,
    /// Notified once when the budget is exceeded: the socket's tasks end.
    pub exceeded: tokio::sync::Notify,
}

impl WriteBudget {
    pub fn new(limit: usize) -> Self {
        WriteBudget {
            queued: AtomicUsize::new(0),
            limit,
            over: AtomicBool::new(false),
            exceeded: tokio::sync::Notify::new(),
        }
    }

    /// The writer wrote a counted frame of `n` bytes.
    pub fn written(&self, n: usize) {
        self.queued.fetch_sub(n, Ordering::SeqCst);
    }

    /// Bytes waiting for the writer.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }

    pub fn is_over(&self) -> bool {
        self.over.load(Ordering::SeqCst)
    }

    fn trip(&self) {
        if !self.over.swap(true, Ordering::SeqCst) {
            self.exceeded.notify_one();
        }
    }
}

/// The attached socket, with a generation so a stale socket cannot detach a newer one.
pub struct Socket {
    generation: u64,
    tx: mpsc::UnboundedSender<Outgoing>,
    budget: Arc<WriteBudget>,
}

impl Wire for Socket {
    fn send_text(&self, text: Arc<str>) {
        if self.budget.is_over() {
            return; // the socket is being dropped; the outbox keeps the frame for the resume
        }
        let n = text.len();
        let queued = self.budget.queued.fetch_add(n, Ordering::SeqCst) + n;
        if queued > self.budget.limit {
            self.budget.queued.fetch_sub(n, Ordering::SeqCst);
            self.budget.trip();
            return;
        }
        if self.tx.send(Outgoing::Text(text)).is_err() {
            self.budget.queued.fetch_sub(n, Ordering::SeqCst);
        }
    }
}

pub struct Session {
    pub id: String,
    pub peer: Peer,
    link: Endpoint<Socket>,
    detached_at: Mutex<Option<Instant>>,
    generation: AtomicU64,
    dead: AtomicBool,
    /// Why it ended, once it did.
    end_reason: Mutex<Option<ErrorBody>>,
    /// Woken when the session ends, so its event pump stops.
    pub ended: Notify,
    /// Held while one inbound frame is applied: after a resume, the old socket may still be
    /// applying a frame when the new one delivers the next, which must wait its turn.
    pub applying: tokio::sync::Mutex<()>,
    pub limits: SessionLimits,
    /// Requests a control client may still send now.
    requests: Mutex<Option<TokenBucket>>,
}

impl Session {
    pub fn new(id: String, peer: Peer, limits: SessionLimits) -> Self {
        let requests = match &peer {
            // Administrators can do anything anyway (bulk scripts, benchmarks): not limited.
            Peer::Control { actor, .. }
                if limits.request_rate > 0
                    && !actor
                        .permissions
                        .iter()
                        .any(|p| p == crate::permissions::ADMIN) =>
            {
                Some(TokenBucket::new(limits.request_rate, limits.request_burst))
            }
            _ => None,
        };
        let mut link = limits.link;
        if matches!(peer, Peer::Control { .. }) {
            link.outbox_bytes = limits.control_outbox_bytes;
        }
        Session {
            requests: Mutex::new(requests),
            limits,
            id,
            peer,
            link: Endpoint::new(link),
            detached_at: Mutex::new(Some(Instant::now())),
            generation: AtomicU64::new(0),
            dead: AtomicBool::new(false),
            end_reason: Mutex::new(None),
            ended: Notify::new(),
            applying: tokio::sync::Mutex::new(()),
        }
    }

    fn detached_at(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.detached_at.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn host_id(&self) -> Option<i64> {
        match &self.peer {
            Peer::Host { id, .. } => Some(*id),
            Peer::Control { .. } => None,
        }
    }

    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::SeqCst)
    }

    /// Highest seq taken from the peer.
    pub fn last_received(&self) -> u64 {
        self.link.last_received()
    }

    /// False when a control client is over its request rate: answer `rate_limited`, do nothing.
    pub fn take_request(&self) -> bool {
        match self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            Some(bucket) => bucket.take(),
            None => true,
        }
    }

    /// Attaches a socket: drops what the peer has seen (`peer_last_seq`) and resends the rest.
    /// `first` (the `ready` frame) goes out before the resent frames. Returns the generation.
    pub fn attach(
        &self,
        tx: mpsc::UnboundedSender<Outgoing>,
        budget: Arc<WriteBudget>,
        peer_last_seq: u64,
        first: String,
    ) -> u64 {
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let mut st = self.link.lock();
        if let Some(old) = st.socket.take() {
            let _ = old.tx.send(Outgoing::Close(ErrorBody::new(
                "replaced",
                "the session was resumed on another socket",
            )));
        }
        st.outbox.ack(peer_last_seq);
        let _ = tx.send(Outgoing::Resend(Arc::from(first)));
        for text in st.outbox.pending() {
            let _ = tx.send(Outgoing::Resend(text.clone()));
        }
        let socket = Socket {
            generation,
            tx,
            budget,
        };
        st.socket = Some(socket);
        *self.detached_at() = None;
        generation
    }

    /// Detaches the socket of `generation` (if it is still the current one). True if it was.
    pub fn detach(&self, generation: u64) -> bool {
        let mut st = self.link.lock();
        if st
            .socket
            .as_ref()
            .is_some_and(|s| s.generation == generation)
        {
            st.socket = None;
            *self.detached_at() = Some(Instant::now());
            true
        } else {
            false
        }
    }

    /// Detached for longer than `window`.
    pub fn expired(&self, window: Duration) -> bool {
        self.detached_at().is_some_and(|at| at.elapsed() > window)
    }

    /// Ends the session: closes the socket with `reason`, fails pending requests.
    pub fn kill(&self, reason: ErrorBody) {
        if self.dead.swap(true, Ordering::SeqCst) {
            return;
        }
        *self.end_reason.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason.clone());
        if let Some(socket) = self.link.lock().socket.take() {
            let _ = socket.tx.send(Outgoing::Close(reason.clone()));
        }
        // The outbox's frames are of no use to anyone now.
        {
            let mut st = self.link.lock();
            let limits = st.outbox.limits();
            st.outbox = crate::link::Outbox::new(limits);
        }
        self.link.fail_pending(&reason.message);
        self.ended.notify_waiters();
    }

    /// Why the session ended, if it did.
    pub fn end_reason(&self) -> Option<ErrorBody> {
        self.end_reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn inbound(&self, seq: u64) -> Accept {
        self.link.accept(seq)
    }

    pub fn acked(&self, ack: u64) {
        self.link.acked(ack);
    }

    /// Sends an unsequenced frame (ack, pong, error) if a socket is attached.
    pub fn send_control(&self, frame: Frame) {
        self.link.send_control(frame);
    }

    /// A peer that lets this much go unacknowledged is gone for good: end the session. A frame
    /// too large for the peer is dropped (events) or answered with an error (responses).
    fn check(&self, sent: Result<(), SendError>) -> Result<(), SendError> {
        match sent {
            Err(e @ SendError::Overflow { .. }) => {
                tracing::warn!(session = %self.id, error = %e, "link session ended: its outbox is full");
                self.kill(e.to_body());
                Err(e)
            }
            other => other,
        }
    }

    pub fn send_event(&self, name: &str, data: Value) {
        if !self.is_dead()
            && let Err(e @ SendError::TooLarge { .. }) =
                self.check(self.link.send_event(name, data))
        {
            tracing::warn!(session = %self.id, event = name, error = %e, "event not sent");
        }
    }

    /// Sends an event serialised once for many sessions.
    pub fn send_shared_event(&self, event: &SharedEvent) {
        if !self.is_dead()
            && let Err(e @ SendError::TooLarge { .. }) =
                self.check(self.link.send_shared_event(event))
        {
            tracing::warn!(session = %self.id, error = %e, "event not sent");
        }
    }

    pub fn respond(&self, id: u64, result: Result<Value, ErrorBody>) {
        if self.is_dead() {
            return;
        }
        if let Err(e @ SendError::TooLarge { .. }) = self.check(self.link.respond(id, result)) {
            let body = ErrorBody::new(
                "too_large",
                format!("{e}; ask for less, or use the HTTP API"),
            );
            let _ = self.check(self.link.respond(id, Err(body)));
        }
    }

    /// Sends a request to the peer and waits for its response.
    pub async fn request(
        &self,
        name: &str,
        data: Value,
        timeout: Duration,
    ) -> Result<Value, ErrorBody> {
        self.link.request(name, data, timeout).await
    }

    /// Hands a response from the peer to whoever is waiting for it.
    pub fn resolve(&self, id: u64, result: Result<Value, ErrorBody>) {
        self.link.resolve(id, result);
    }
}
