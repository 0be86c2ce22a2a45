//! One external plugin's link session: seq/ack/resume like any session (the shared
//! [`Endpoint`], sockets attached and written by [`crate::link::attach`]), and a rate limit on
//! what the plugin sends.

use crate::limits::TokenBucket;
use crate::link::attach::{Attached, Outgoing, Sockets};
use crate::link::endpoint::Endpoint;
use crate::link::{Accept, ErrorBody, Frame};
use serde_json::Value;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;

/// The plugin's rate limit: `rate` messages a second, bursts up to one second's worth.
fn bucket(rate: u64) -> TokenBucket {
    let rate = u32::try_from(rate.max(1)).unwrap_or(u32::MAX);
    TokenBucket::new(rate, rate)
}

pub struct PluginSession {
    pub id: String,
    pub plugin: String,
    link: Endpoint<Attached>,
    sockets: Sockets,
    dead: AtomicBool,
    /// Held while one inbound frame is applied (a resumed socket waits for the old one).
    pub applying: tokio::sync::Mutex<()>,
    bucket: Mutex<TokenBucket>,
    pub connected_at: i64,
}

impl PluginSession {
    pub fn new(id: String, plugin: String, limits: crate::link::Limits, rate: u64) -> Self {
        PluginSession {
            id,
            plugin,
            link: Endpoint::new(limits),
            sockets: Sockets::new(),
            dead: AtomicBool::new(false),
            applying: tokio::sync::Mutex::new(()),
            bucket: Mutex::new(bucket(rate)),
            connected_at: crate::store::now_ms(),
        }
    }

    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::SeqCst)
    }

    /// A socket is attached now.
    pub fn is_attached(&self) -> bool {
        !self.is_dead() && self.link.is_attached()
    }

    /// Detached for longer than `window` (a resume is no longer possible).
    pub fn expired(&self, window: Duration) -> bool {
        self.sockets.expired(window)
    }

    pub fn set_rate(&self, rate: u64) {
        *self.bucket.lock().unwrap_or_else(|e| e.into_inner()) = bucket(rate);
    }

    /// May the plugin send one more message now?
    pub fn admit(&self) -> bool {
        self.bucket.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Attaches the socket whose writer reads `tx` ([`Sockets::attach`]); its generation.
    pub fn attach(
        &self,
        tx: mpsc::UnboundedSender<Outgoing>,
        peer_last_seq: u64,
        first: String,
    ) -> u64 {
        self.sockets.attach(&self.link, tx, peer_last_seq, first)
    }

    pub fn detach(&self, generation: u64) -> bool {
        self.sockets.detach(&self.link, generation)
    }

    /// Ends the session: closes the socket with `reason`, fails what waits on the plugin.
    pub fn kill(&self, reason: ErrorBody) {
        self.dead.store(true, Ordering::SeqCst);
        self.sockets.close(&self.link, reason.clone());
        self.link.fail_pending(&reason.message);
    }

    /// Events still unacknowledged, oldest first (a restarted process gets the durable ones).
    pub fn unacked_events(&self) -> Vec<(String, Value)> {
        self.link
            .lock()
            .outbox
            .pending()
            .filter_map(|t| match Frame::parse(t) {
                Ok(Frame::Event { name, data, .. }) => Some((name, data)),
                _ => None,
            })
            .collect()
    }

    pub fn inbound(&self, seq: u64) -> Accept {
        self.link.accept(seq)
    }

    pub fn acked(&self, ack: u64) {
        self.link.acked(ack);
    }

    pub fn last_received(&self) -> u64 {
        self.link.last_received()
    }

    pub fn send_control(&self, frame: Frame) {
        self.link.send_control(frame);
    }

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

    pub async fn request(
        &self,
        name: &str,
        data: Value,
        timeout: Duration,
    ) -> Result<Value, ErrorBody> {
        self.link.request(name, data, timeout).await
    }

    pub fn resolve(&self, id: u64, result: Result<Value, ErrorBody>) {
        self.link.resolve(id, result);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_admits_a_seconds_worth_then_refuses() {
        let mut b = bucket(10);
        let admitted = (0..100).filter(|_| b.take()).count();
        assert!((10..=11).contains(&admitted), "{admitted}");
    }
}
