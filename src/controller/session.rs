//! A link session on the controller: outlives its socket for the resume window, so frames sent
//! while the peer is away wait in the outbox and are resent, in order, when it comes back.

use super::auth::Actor;
use crate::link::endpoint::{Endpoint, Wire};
use crate::link::{Accept, ErrorBody, Frame};
use serde_json::Value;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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

/// What the socket writer task sends.
#[derive(Debug)]
pub enum Outgoing {
    Text(String),
    Close(ErrorBody),
}

/// The attached socket, with a generation so a stale socket cannot detach a newer one.
pub struct Socket {
    generation: u64,
    tx: mpsc::UnboundedSender<Outgoing>,
}

impl Wire for Socket {
    fn send_text(&self, text: String) {
        let _ = self.tx.send(Outgoing::Text(text));
    }
}

pub struct Session {
    pub id: String,
    pub peer: Peer,
    link: Endpoint<Socket>,
    detached_at: Mutex<Option<Instant>>,
    generation: AtomicU64,
    dead: AtomicBool,
    /// Woken when the session ends, so its event pump stops.
    pub ended: Notify,
    /// Held while one inbound frame is applied: after a resume, the old socket may still be
    /// applying a frame when the new one delivers the next, which must wait its turn.
    pub applying: tokio::sync::Mutex<()>,
}

impl Session {
    pub fn new(id: String, peer: Peer, outbox_limit: usize) -> Self {
        Session {
            id,
            peer,
            link: Endpoint::new(outbox_limit),
            detached_at: Mutex::new(Some(Instant::now())),
            generation: AtomicU64::new(0),
            dead: AtomicBool::new(false),
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

    /// Attaches a socket: drops what the peer has seen (`peer_last_seq`) and resends the rest.
    /// `first` (the `ready` frame) goes out before the resent frames. Returns the generation.
    pub fn attach(
        &self,
        tx: mpsc::UnboundedSender<Outgoing>,
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
        let socket = Socket { generation, tx };
        socket.send_text(first);
        for text in st.outbox.pending() {
            socket.send_text(text.to_string());
        }
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
        self.dead.store(true, Ordering::SeqCst);
        if let Some(socket) = self.link.lock().socket.take() {
            let _ = socket.tx.send(Outgoing::Close(reason.clone()));
        }
        self.link.fail_pending(&reason.message);
        self.ended.notify_waiters();
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

    /// A peer that lets this many frames go unacknowledged is gone for good: end the session.
    fn check(&self, sent: Result<(), crate::link::session::Overflow>) {
        if let Err(e) = sent {
            self.kill(ErrorBody::new("overflow", e.to_string()));
        }
    }

    pub fn send_event(&self, name: &str, data: Value) {
        if !self.is_dead() {
            self.check(self.link.send_event(name, data));
        }
    }

    pub fn respond(&self, id: u64, result: Result<Value, ErrorBody>) {
        if !self.is_dead() {
            self.check(self.link.respond(id, result));
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
