//! The accepting side of a session that outlives its sockets: which socket is attached to an
//! [`Endpoint`] now (a generation, so a stale socket cannot detach a newer one), since when
//! none is (for the resume window), and the task writing one socket — the sequenced frames, a
//! ping every heartbeat, the close frame with its reason.
//!
//! External plugin sessions use it whole. (The controller's host and control sessions,
//! `controller/session.rs` and `controller/socket.rs`, still have their own copy with a write
//! budget on top; they can move onto it by giving [`Attached`] that budget.)

use super::endpoint::{Endpoint, Wire};
use super::{ErrorBody, Frame};
use futures_util::{Sink, SinkExt};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// What the socket writer sends.
#[derive(Debug)]
pub enum Outgoing {
    Text(Arc<str>),
    /// The close frame with this reason, then the WebSocket close; the writer ends.
    Close(ErrorBody),
}

/// The socket attached to an endpoint now.
pub struct Attached {
    generation: u64,
    tx: mpsc::UnboundedSender<Outgoing>,
}

impl Wire for Attached {
    fn send_text(&self, text: Arc<str>) {
        // A writer that ended just misses the frame; the outbox keeps it for the resume.
        let _ = self.tx.send(Outgoing::Text(text));
    }
}

impl Attached {
    fn close(&self, reason: ErrorBody) {
        let _ = self.tx.send(Outgoing::Close(reason));
    }
}

/// Sockets coming and going on one endpoint.
#[derive(Debug)]
pub struct Sockets {
    generation: AtomicU64,
    detached_at: Mutex<Option<Instant>>,
}

impl Default for Sockets {
    fn default() -> Self {
        Sockets::new()
    }
}

impl Sockets {
    /// None attached yet (the resume window runs from now).
    pub fn new() -> Self {
        Sockets {
            generation: AtomicU64::new(0),
            detached_at: Mutex::new(Some(Instant::now())),
        }
    }

    fn detached_at(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.detached_at.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Attaches the socket whose writer reads `tx`: a socket attached before is closed
    /// (`replaced`), what the peer has seen (`peer_last_seq`) is dropped from the outbox, then
    /// `first` (the `ready` frame) and every frame still unacknowledged are sent, in order.
    /// Returns the socket's generation, for [`Sockets::detach`].
    pub fn attach(
        &self,
        link: &Endpoint<Attached>,
        tx: mpsc::UnboundedSender<Outgoing>,
        peer_last_seq: u64,
        first: String,
    ) -> u64 {
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let mut st = link.lock();
        if let Some(old) = st.socket.take() {
            old.close(ErrorBody::new(
                "replaced",
                "the session was resumed on another socket",
            ));
        }
        st.outbox.ack(peer_last_seq);
        let socket = Attached { generation, tx };
        socket.send_text(first.into());
        for text in st.outbox.pending() {
            socket.send_text(text.clone());
        }
        st.socket = Some(socket);
        *self.detached_at() = None;
        generation
    }

    /// Detaches the socket of `generation` if it is still the attached one; true if it was.
    pub fn detach(&self, link: &Endpoint<Attached>, generation: u64) -> bool {
        let mut st = link.lock();
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

    /// Closes the attached socket, if any, with `reason`.
    pub fn close(&self, link: &Endpoint<Attached>, reason: ErrorBody) {
        if let Some(socket) = link.lock().socket.take() {
            socket.close(reason);
        }
    }

    /// No socket for longer than `window` (a resume is no longer possible).
    pub fn expired(&self, window: Duration) -> bool {
        self.detached_at().is_some_and(|at| at.elapsed() > window)
    }
}

/// Writes what `rx` brings to one WebSocket, and `{"type":"ping","ack":N}` every `heartbeat`
/// (`ack()` gives N). Ends when the socket fails, on [`Outgoing::Close`] or when every sender
/// is gone; the sink is closed.
pub async fn write_loop<S>(
    mut sink: S,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
    heartbeat: Duration,
    ack: impl Fn() -> u64,
) where
    S: Sink<crate::controller::ws::Message> + Unpin,
{
    use crate::controller::ws::Message;
    let mut ping = tokio::time::interval(heartbeat);
    ping.tick().await;
    loop {
        tokio::select! {
            out = rx.recv() => match out {
                Some(Outgoing::Text(text)) => {
                    if sink.send(Message::text(text.to_string())).await.is_err() { break; }
                }
                Some(Outgoing::Close(reason)) => {
                    let _ = sink.send(Message::text(Frame::Close(reason.clone()).to_text())).await;
                    let _ = sink.send(Message::close_with(1000u16, reason.code)).await;
                    break;
                }
                None => break,
            },
            _ = ping.tick() => {
                let frame = Frame::Ping { ack: ack() };
                if sink.send(Message::text(frame.to_text())).await.is_err() { break; }
            }
        }
    }
    let _ = sink.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::Limits;

    fn endpoint() -> Endpoint<Attached> {
        Endpoint::new(Limits {
            outbox_frames: 100,
            outbox_bytes: 1 << 20,
            max_frame: 1 << 20,
        })
    }

    fn texts(rx: &mut mpsc::UnboundedReceiver<Outgoing>) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(o) = rx.try_recv() {
            out.push(match o {
                Outgoing::Text(t) => t.to_string(),
                Outgoing::Close(r) => format!("close {}", r.code),
            });
        }
        out
    }

    #[test]
    fn attach_sends_first_then_what_the_peer_has_not_seen_and_replaces_the_old_socket() {
        let (link, sockets) = (endpoint(), Sockets::new());
        for n in 0..3 {
            link.send_event("e", serde_json::json!(n)).unwrap();
        }
        let (tx1, mut rx1) = mpsc::unbounded_channel();
        let g1 = sockets.attach(&link, tx1, 1, "ready".into());
        let sent = texts(&mut rx1);
        assert_eq!(sent[0], "ready");
        let seqs: Vec<_> = sent[1..]
            .iter()
            .map(|t| Frame::parse(t).unwrap().seq())
            .collect();
        assert_eq!(seqs, vec![Some(2), Some(3)]);
        assert!(!sockets.expired(Duration::ZERO));

        let (tx2, mut rx2) = mpsc::unbounded_channel();
        let g2 = sockets.attach(&link, tx2, 3, "ready again".into());
        assert_eq!(texts(&mut rx1), vec!["close replaced"]);
        assert_eq!(texts(&mut rx2), vec!["ready again"]);
        // The old socket going away later does not detach the new one.
        assert!(!sockets.detach(&link, g1));
        assert!(link.is_attached());
        assert!(sockets.detach(&link, g2));
        assert!(!link.is_attached());
        std::thread::sleep(Duration::from_millis(5));
        assert!(sockets.expired(Duration::from_millis(1)));
    }
}
