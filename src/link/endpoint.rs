//! One end of a link session, the same on the controller and in a host: sequenced frames kept
//! until acknowledged, duplicates recognised, requests matched to their responses. Each side adds
//! only what differs — the controller keeps sessions across sockets, the client reconnects.

use super::session::{Limits, SendError};
use super::{Accept, ErrorBody, Frame, Inbox, Outbox};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Where frames go while a socket is attached.
pub trait Wire: Send {
    /// A frame's text; shared with the outbox, so a frame waiting in both costs its bytes once.
    fn send_text(&self, text: Arc<str>);
}

impl Wire for mpsc::UnboundedSender<Arc<str>> {
    fn send_text(&self, text: Arc<str>) {
        // A closed socket just misses the frame; it stays in the outbox for the resend.
        let _ = self.send(text);
    }
}

/// The sequencing state, with the attached socket.
pub struct Sequencing<W> {
    pub outbox: Outbox,
    pub inbox: Inbox,
    pub socket: Option<W>,
}

type Waiter = oneshot::Sender<Result<Value, ErrorBody>>;

pub struct Endpoint<W> {
    state: Mutex<Sequencing<W>>,
    pending: Mutex<HashMap<u64, Waiter>>,
    next_id: AtomicU64,
}

impl<W: Wire> Endpoint<W> {
    pub fn new(limits: Limits) -> Self {
        Endpoint {
            state: Mutex::new(Sequencing {
                outbox: Outbox::new(limits),
                inbox: Inbox::new(),
                socket: None,
            }),
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
        }
    }

    /// The state, for attaching and detaching sockets. A panic while it was held cannot leave
    /// it worse than a lost session, so a poisoned lock is recovered.
    pub fn lock(&self) -> MutexGuard<'_, Sequencing<W>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn pending(&self) -> MutexGuard<'_, HashMap<u64, Waiter>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a sequenced frame (`build` gets seq and ack); sent at once if a socket is attached.
    pub fn send_sequenced(&self, build: impl FnOnce(u64, u64) -> Frame) -> Result<(), SendError> {
        let mut st = self.lock();
        let ack = st.inbox.last_seq();
        let text = st.outbox.push(|seq| build(seq, ack))?;
        if let Some(socket) = &st.socket {
            socket.send_text(text);
        }
        Ok(())
    }

    pub fn send_event(&self, name: &str, data: Value) -> Result<(), SendError> {
        self.send_sequenced(|seq, ack| Frame::Event {
            seq,
            ack: Some(ack),
            name: name.to_string(),
            data,
        })
    }

    /// Sends an event serialised once for many sessions (see [`SharedEvent`]).
    pub fn send_shared_event(&self, event: &SharedEvent) -> Result<(), SendError> {
        let mut st = self.lock();
        let ack = st.inbox.last_seq();
        let text = st
            .outbox
            .push_text(|seq| ("event", event.frame(seq, ack)))?;
        if let Some(socket) = &st.socket {
            socket.send_text(text);
        }
        Ok(())
    }

    pub fn respond(&self, id: u64, result: Result<Value, ErrorBody>) -> Result<(), SendError> {
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
        })
    }

    /// Sends a request and waits for its response.
    pub async fn request(
        &self,
        name: &str,
        data: Value,
        timeout: Duration,
    ) -> Result<Value, ErrorBody> {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let (tx, rx) = oneshot::channel();
        self.pending().insert(id, tx);
        let sent = self.send_sequenced(|seq, ack| Frame::Request {
            seq,
            ack: Some(ack),
            id,
            name: name.to_string(),
            data,
        });
        if let Err(e) = sent {
            self.pending().remove(&id);
            return Err(e.to_body());
        }
        let result = tokio::time::timeout(timeout, rx).await;
        self.pending().remove(&id);
        match result {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(ErrorBody::new("session_lost", "the link session ended")),
            Err(_) => Err(ErrorBody::new(
                "timeout",
                format!("no response to {name} within {timeout:?}"),
            )),
        }
    }

    /// Hands a response from the peer to whoever waits for it.
    pub fn resolve(&self, id: u64, result: Result<Value, ErrorBody>) {
        if let Some(tx) = self.pending().remove(&id) {
            let _ = tx.send(result);
        }
    }

    /// Fails every waiting request (the session is over).
    pub fn fail_pending(&self, reason: &str) {
        let waiters: Vec<_> = self.pending().drain().collect();
        for (_, tx) in waiters {
            let _ = tx.send(Err(ErrorBody::new("session_lost", reason)));
        }
    }

    /// An unsequenced frame (ack, pong, error), if a socket is attached.
    pub fn send_control(&self, frame: Frame) {
        if let Some(socket) = &self.lock().socket {
            socket.send_text(Arc::from(frame.to_text()));
        }
    }

    pub fn send_ack(&self) {
        let ack = self.last_received();
        self.send_control(Frame::Ack { ack });
    }

    pub fn accept(&self, seq: u64) -> Accept {
        self.lock().inbox.accept(seq)
    }

    pub fn acked(&self, ack: u64) {
        self.lock().outbox.ack(ack);
    }

    pub fn last_received(&self) -> u64 {
        self.lock().inbox.last_seq()
    }

    pub fn is_attached(&self) -> bool {
        self.lock().socket.is_some()
    }
}

/// An event's name and data written out once; each session only splices its seq and ack into
/// the envelope, so fanning one event out to a thousand hosts serialises its data once.
#[derive(Debug, Clone)]
pub struct SharedEvent {
    /// `{"type":"event","name":…,"seq":`: up to where the seq goes.
    head: Arc<str>,
    /// `,"data":…}`: what follows the ack.
    tail: Arc<str>,
}

impl SharedEvent {
    pub fn new(name: &str, data: &Value) -> Self {
        // Serialising a `Value` or a `str` cannot fail: every map key is a string.
        let name = serde_json::to_string(name).unwrap_or_else(|_| "\"\"".into());
        let data = serde_json::to_string(data).unwrap_or_else(|_| "null".into());
        SharedEvent {
            head: Arc::from(format!(r#"{{"type":"event","name":{name},"seq":"#)),
            tail: Arc::from(format!(r#","data":{data}}}"#)),
        }
    }

    /// The frame's text for one session.
    pub fn frame(&self, seq: u64, ack: u64) -> String {
        let mut text = String::with_capacity(self.head.len() + self.tail.len() + 32);
        text.push_str(&self.head);
        text.push_str(&seq.to_string());
        text.push_str(",\"ack\":");
        text.push_str(&ack.to_string());
        text.push_str(&self.tail);
        text
    }
}
