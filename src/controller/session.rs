//! A link session on the controller: outlives its socket for the resume window, so frames sent
//! while the peer is away wait in the outbox and are resent, in order, when it comes back.

use super::auth::Actor;
use crate::link::{Accept, ErrorBody, Frame, Inbox, Outbox};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc, oneshot};

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

struct State {
    outbox: Outbox,
    inbox: Inbox,
    /// The attached socket, with a generation so a stale socket cannot detach a newer one.
    socket: Option<(u64, mpsc::UnboundedSender<Outgoing>)>,
    detached_at: Option<Instant>,
}

pub struct Session {
    pub id: String,
    pub peer: Peer,
    state: Mutex<State>,
    generation: AtomicU64,
    next_request_id: AtomicU64,
    pending: Mutex<HashMap<u64, oneshot::Sender<Result<Value, ErrorBody>>>>,
    dead: AtomicBool,
    /// Woken when the session ends, so its event pump stops.
    pub ended: Notify,
}

impl Session {
    pub fn new(id: String, peer: Peer, outbox_limit: usize) -> Self {
        Session {
            id,
            peer,
            state: Mutex::new(State {
                outbox: Outbox::new(outbox_limit),
                inbox: Inbox::new(),
                socket: None,
                detached_at: Some(Instant::now()),
            }),
            generation: AtomicU64::new(0),
            next_request_id: AtomicU64::new(1),
            pending: Mutex::new(HashMap::new()),
            dead: AtomicBool::new(false),
            ended: Notify::new(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the state half-changed in a way that
        // matters more than losing the session, so recover the guard.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
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
        self.state().inbox.last_seq()
    }

    /// Attaches a socket: drops what the peer has seen (`peer_last_seq`) and resends the rest.
    /// `first` (the `ready` frame) goes out before the resent frames. Returns the generation.
    pub fn attach(
        &self,
        socket: mpsc::UnboundedSender<Outgoing>,
        peer_last_seq: u64,
        first: String,
    ) -> u64 {
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let mut st = self.state();
        if let Some((_, old)) = st.socket.take() {
            let _ = old.send(Outgoing::Close(ErrorBody::new(
                "replaced",
                "the session was resumed on another socket",
            )));
        }
        st.outbox.ack(peer_last_seq);
        let _ = socket.send(Outgoing::Text(first));
        for text in st.outbox.pending() {
            let _ = socket.send(Outgoing::Text(text.to_string()));
        }
        st.socket = Some((generation, socket));
        st.detached_at = None;
        generation
    }

    /// Detaches the socket of `generation` (if it is still the current one). True if it was.
    pub fn detach(&self, generation: u64) -> bool {
        let mut st = self.state();
        if st.socket.as_ref().is_some_and(|(g, _)| *g == generation) {
            st.socket = None;
            st.detached_at = Some(Instant::now());
            true
        } else {
            false
        }
    }

    /// Detached for longer than `window`.
    pub fn expired(&self, window: Duration) -> bool {
        self.state()
            .detached_at
            .is_some_and(|at| at.elapsed() > window)
    }

    /// Ends the session: closes the socket with `reason`, fails pending requests.
    pub fn kill(&self, reason: ErrorBody) {
        self.dead.store(true, Ordering::SeqCst);
        if let Some((_, socket)) = self.state().socket.take() {
            let _ = socket.send(Outgoing::Close(reason.clone()));
        }
        let pending: Vec<_> = self
            .pending
            .lock()
            .map(|mut p| p.drain().collect())
            .unwrap_or_default();
        for (_, tx) in pending {
            let _ = tx.send(Err(ErrorBody::new("session_lost", reason.message.clone())));
        }
        self.ended.notify_waiters();
    }

    pub fn inbound(&self, seq: u64) -> Accept {
        self.state().inbox.accept(seq)
    }

    pub fn acked(&self, ack: u64) {
        self.state().outbox.ack(ack);
    }

    /// Sends an unsequenced frame (ack, pong, error) if a socket is attached.
    pub fn send_control(&self, frame: Frame) {
        if let Some((_, socket)) = &self.state().socket {
            let _ = socket.send(Outgoing::Text(frame.to_text()));
        }
    }

    /// Queues a sequenced frame; it is delivered now if attached, or on resume.
    fn send_sequenced(&self, build: impl FnOnce(u64, u64) -> Frame) {
        if self.is_dead() {
            return;
        }
        let overflow = {
            let mut st = self.state();
            let ack = st.inbox.last_seq();
            match st.outbox.push(|seq| build(seq, ack)) {
                Ok(text) => {
                    if let Some((_, socket)) = &st.socket {
                        let _ = socket.send(Outgoing::Text(text));
                    }
                    None
                }
                Err(e) => Some(e),
            }
        };
        if let Some(e) = overflow {
            self.kill(ErrorBody::new("overflow", e.to_string()));
        }
    }

    pub fn send_event(&self, name: &str, data: Value) {
        self.send_sequenced(|seq, ack| Frame::Event {
            seq,
            ack: Some(ack),
            name: name.to_string(),
            data,
        });
    }

    pub fn respond(&self, id: u64, result: Result<Value, ErrorBody>) {
        let (ok, error) = match result {
            Ok(v) => (Some(v), None),
            Err(e) => (None, Some(e)),
        };
        self.send_sequenced(|seq, ack| Frame::Response {
            seq,
            ack: Some(ack),
            id,
            ok,
            error,
        });
    }

    /// Sends a request to the peer and waits for its response.
    pub async fn request(
        &self,
        name: &str,
        data: Value,
        timeout: Duration,
    ) -> Result<Value, ErrorBody> {
        let id = self.next_request_id.fetch_add(1, Ordering::SeqCst);
        let (tx, rx) = oneshot::channel();
        if let Ok(mut p) = self.pending.lock() {
            p.insert(id, tx);
        }
        self.send_sequenced(|seq, ack| Frame::Request {
            seq,
            ack: Some(ack),
            id,
            name: name.to_string(),
            data,
        });
        let result = tokio::time::timeout(timeout, rx).await;
        if let Ok(mut p) = self.pending.lock() {
            p.remove(&id);
        }
        match result {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(ErrorBody::new("session_lost", "the link session ended")),
            Err(_) => Err(ErrorBody::new(
                "timeout",
                format!("no response to {name} within {timeout:?}"),
            )),
        }
    }

    /// Hands a response from the peer to whoever is waiting for it.
    pub fn resolve(&self, id: u64, result: Result<Value, ErrorBody>) {
        let waiter = self.pending.lock().ok().and_then(|mut p| p.remove(&id));
        if let Some(tx) = waiter {
            let _ = tx.send(result);
        }
    }
}
