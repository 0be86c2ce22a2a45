//! Live link sessions: which hosts are connected, and the event stream every subscriber gets.
//!
//! Events go to every subscriber's own queue; each control session has a pump task that copies
//! the events its user may see into the session's outbox (so they wait there across a resume),
//! and each `logs?follow` stream reads its queue as fast as its client takes the lines. Events
//! for hosts go straight into every host session's outbox, serialised once for all of them.
//!
//! A queue holds at most [`SUBSCRIBER_EVENTS`] events and [`SUBSCRIBER_BYTES`] bytes of event
//! data: a subscriber that falls that far behind (a frozen browser tab) is dropped — a session
//! is ended and starts over with the full state, a stream ends — instead of keeping every event
//! since it stopped reading.

use super::session::{Peer, Session, SessionLimits};
use crate::link::ErrorBody;
use crate::link::endpoint::SharedEvent;
use crate::store::{InstanceRecord, Role, User};
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::{Notify, broadcast};

/// Events a subscriber may leave untaken, at most.
pub const SUBSCRIBER_EVENTS: usize = 65_536;
/// Bytes of event data a subscriber may leave untaken, at most.
pub const SUBSCRIBER_BYTES: usize = 8 << 20;
/// Why recently ended sessions ended, kept for clients that try to resume them.
const ENDED_KEPT: usize = 1024;

/// Who may see an instance's config.
pub const INSTANCE_CONFIG_READ: &str = "core.instance.get_config";

#[derive(Debug, Clone)]
pub struct Event {
    pub name: &'static str,
    pub data: Value,
    /// Control clients need this permission to receive it.
    pub permission: &'static str,
    /// Hosts receive it too (user list changes they enforce).
    pub to_hosts: bool,
    /// The data is an instance view: its config goes only to readers of instance config.
    pub instance_view: bool,
}

impl Event {
    pub fn instance_updated(view: &Value) -> Self {
        Event {
            name: "instance_updated",
            data: view.clone(),
            permission: "core.instance.subscribe",
            to_hosts: false,
            instance_view: true,
        }
    }

    pub fn instance_deleted(rec: &InstanceRecord) -> Self {
        Event {
            name: "instance_deleted",
            data: json!({ "id": rec.id, "name": rec.name }),
            permission: "core.instance.subscribe",
            to_hosts: false,
            instance_view: false,
        }
    }

    /// A player event a game's Lua reported (ban, unban, promote, demote).
    pub fn player_event(data: Value) -> Self {
        Event {
            name: "player_event",
            data,
            permission: "core.instance.subscribe",
            to_hosts: false,
            instance_view: false,
        }
    }

    pub fn instance_log(data: Value) -> Self {
        Event {
            name: "instance_log",
            data,
            permission: "core.log.follow",
            to_hosts: false,
            instance_view: false,
        }
    }

    pub fn host_updated(view: &Value) -> Self {
        Event {
            name: "host_updated",
            data: view.clone(),
            permission: "core.host.subscribe",
            to_hosts: false,
            instance_view: false,
        }
    }

    pub fn user_updated(user: &User) -> Self {
        Event {
            name: "user_updated",
            data: serde_json::to_value(user).unwrap_or(Value::Null),
            permission: "core.user.subscribe",
            to_hosts: true,
            instance_view: false,
        }
    }

    pub fn user_deleted(user: &User) -> Self {
        Event {
            name: "user_deleted",
            data: json!({ "id": user.id, "name": user.name }),
            permission: "core.user.subscribe",
            to_hosts: true,
            instance_view: false,
        }
    }

    pub fn role_updated(role: &Role) -> Self {
        Event {
            name: "role_updated",
            data: serde_json::to_value(role).unwrap_or(Value::Null),
            permission: "core.role.subscribe",
            to_hosts: false,
            instance_view: false,
        }
    }

    pub fn role_deleted(id: i64) -> Self {
        Event {
            name: "role_deleted",
            data: json!({ "id": id }),
            permission: "core.role.subscribe",
            to_hosts: false,
            instance_view: false,
        }
    }
}

#[derive(Default)]
struct Queue {
    items: VecDeque<(Arc<Event>, usize)>,
    bytes: usize,
    /// Events dropped since the subscriber fell too far behind.
    lost: u64,
}

struct Subscriber {
    queue: Mutex<Queue>,
    ready: Notify,
}

impl Subscriber {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// False when the subscriber is over its budget (its queue is then emptied).
    fn push(&self, ev: &Arc<Event>, bytes: usize) -> bool {
        let mut q = self.lock();
        if q.lost > 0 {
            q.lost += 1;
            return false;
        }
        if q.items.len() >= SUBSCRIBER_EVENTS || q.bytes + bytes > SUBSCRIBER_BYTES {
            q.lost = q.items.len() as u64 + 1;
            q.items.clear();
            q.bytes = 0;
            drop(q);
            self.ready.notify_one();
            return false;
        }
        q.items.push_back((ev.clone(), bytes));
        q.bytes += bytes;
        drop(q);
        self.ready.notify_one();
        true
    }
}

/// One subscriber's events, in order.
pub struct Subscription {
    sub: Arc<Subscriber>,
    /// HTTP streams end when they fell behind; sessions are told how much they lost.
    end_when_behind: bool,
}

impl Subscription {
    /// The next event. A subscriber that fell too far behind gets `Closed` (HTTP streams) or
    /// `Lagged` (sessions) and nothing more.
    pub async fn recv(&mut self) -> Result<Arc<Event>, broadcast::error::RecvError> {
        loop {
            {
                let mut q = self.sub.lock();
                if q.lost > 0 {
                    return Err(if self.end_when_behind {
                        broadcast::error::RecvError::Closed
                    } else {
                        broadcast::error::RecvError::Lagged(q.lost)
                    });
                }
                if let Some((ev, bytes)) = q.items.pop_front() {
                    q.bytes -= bytes;
                    return Ok(ev);
                }
            }
            self.sub.ready.notified().await;
        }
    }
}

pub struct Hub {
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    /// Host id → its session, while a socket is attached.
    hosts: Mutex<HashMap<i64, Arc<Session>>>,
    subscribers: Mutex<Vec<Weak<Subscriber>>>,
    /// Why recently ended sessions ended (id, reason), newest last.
    ended: Mutex<VecDeque<(String, ErrorBody)>>,
    /// Subscribers dropped for not reading (the metric).
    slow_consumers: prometheus::IntCounterVec,
    pub limits: SessionLimits,
    store: crate::store::Store,
    /// Bumped on every change to users, roles or tokens: sessions and log streams then check
    /// their token again before they pass on the next event.
    grants: std::sync::atomic::AtomicU64,
    /// `/metrics`' picture of the cluster, kept from the events published after each commit.
    census: Arc<super::metrics::Census>,
}

/// What a control client may see, re-checked whenever users, roles or tokens changed since.
pub struct Watch {
    token: String,
    actor: super::auth::Actor,
    seen: u64,
}

impl Watch {
    /// The actor as of now; `None` when the token no longer works (revoked, user deleted).
    pub async fn actor(&mut self, hub: &Hub) -> Option<&super::auth::Actor> {
        let now = hub.grants.load(std::sync::atomic::Ordering::SeqCst);
        if now != self.seen {
            self.actor = super::auth::authenticate(&hub.store, &self.token)
                .await
                .ok()?;
            self.seen = now;
        }
        Some(&self.actor)
    }
}

impl Hub {
    pub fn new(
        limits: SessionLimits,
        store: crate::store::Store,
        census: Arc<super::metrics::Census>,
        slow_consumers: prometheus::IntCounterVec,
    ) -> Self {
        Hub {
            census,
            sessions: Mutex::new(HashMap::new()),
            hosts: Mutex::new(HashMap::new()),
            subscribers: Mutex::new(Vec::new()),
            ended: Mutex::new(VecDeque::new()),
            slow_consumers,
            limits,
            store,
            grants: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Session>>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn hosts(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Arc<Session>>> {
        self.hosts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every event from now on, for an HTTP stream: it ends if its client stops reading.
    pub fn subscribe(&self) -> Subscription {
        self.subscription(true)
    }

    fn subscription(&self, end_when_behind: bool) -> Subscription {
        let sub = Arc::new(Subscriber {
            queue: Mutex::new(Queue::default()),
            ready: Notify::new(),
        });
        self.subscribers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::downgrade(&sub));
        Subscription {
            sub,
            end_when_behind,
        }
    }

    pub fn publish(&self, event: Event) {
        self.census.observe(event.name, &event.data);
        let ev = Arc::new(event);
        // What holding this event costs a subscriber (its data dominates).
        let bytes = approximate_size(&ev.data) + 64;
        // Held while the event goes to everyone, so every host and subscriber sees events in
        // the same order.
        let mut subs = self.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        if ev.to_hosts {
            // Hosts get it straight into their sessions' outboxes (kept across a resume), its
            // data serialised once for all of them: no task per host, no copy per host.
            let hosts: Vec<Arc<Session>> = self
                .sessions()
                .values()
                .filter(|s| s.host_id().is_some())
                .cloned()
                .collect();
            if !hosts.is_empty() {
                let shared = SharedEvent::new(ev.name, &ev.data);
                for s in &hosts {
                    s.send_shared_event(&shared);
                }
            }
        }
        subs.retain(|w| w.strong_count() > 0);
        for sub in subs.iter().filter_map(Weak::upgrade) {
            let was_behind = sub.lock().lost > 0;
            if !sub.push(&ev, bytes) && !was_behind {
                self.slow_consumers
                    .with_label_values(&["event_queue", "closed"])
                    .inc();
            }
        }
    }

    /// Why session `id` ended, if it ended lately.
    pub fn ended_reason(&self, id: &str) -> Option<ErrorBody> {
        self.ended
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .rev()
            .find(|(s, _)| s == id)
            .map(|(_, r)| r.clone())
    }

    /// Users, roles or tokens changed: every open session and stream checks its token again.
    pub fn grants_changed(&self) {
        self.grants
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// A watch on what `token` (held by `actor` now) may see.
    pub fn watch(&self, token: &str, actor: &super::auth::Actor) -> Watch {
        Watch {
            token: token.to_string(),
            actor: actor.clone(),
            seen: self.grants.load(std::sync::atomic::Ordering::SeqCst),
        }
    }

    /// Registers a new session. A control client's session gets a task that copies the events
    /// its user may see; hosts get theirs from [`Self::publish`] directly.
    pub fn add_session(self: &Arc<Self>, session: Arc<Session>) {
        let (actor, token) = match &session.peer {
            Peer::Control { actor, token } => (actor.clone(), token.clone()),
            Peer::Host { .. } => {
                self.sessions().insert(session.id.clone(), session);
                return;
            }
        };
        self.sessions().insert(session.id.clone(), session.clone());
        let mut events = self.subscription(false);
        let hub = self.clone();
        let mut watch = self.watch(&token, &actor);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    ev = events.recv() => match ev {
                        Ok(ev) => {
                            let data = match watch.actor(&hub).await {
                                None => {
                                    hub.remove(&session, ErrorBody::new("revoked", "this login is no longer valid (token revoked or user deleted)"));
                                    break;
                                }
                                Some(actor) if !actor.has(ev.permission) => None,
                                Some(actor) if ev.instance_view => Some(super::view_for(
                                    actor.has(INSTANCE_CONFIG_READ),
                                    ev.data.clone(),
                                )),
                                Some(_) => Some(ev.data.clone()),
                            };
                            if let Some(data) = data {
                                session.send_event(ev.name, data);
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            hub.slow_consumers.with_label_values(&["link", "closed"]).inc();
                            hub.remove(&session, ErrorBody::new("lagged", format!("{n} events were missed; reconnect for a fresh state")));
                            break;
                        }
                        Err(broadcast::error::RecvError::Closed) => break,
                    },
                    _ = session.ended.notified() => break,
                }
            }
        });
    }

    pub fn find_session(&self, id: &str) -> Option<Arc<Session>> {
        self.sessions().get(id).cloned()
    }

    pub fn session_count(&self) -> usize {
        self.sessions().len()
    }

    /// Marks `session` as its host's live connection; any other session of that host ends.
    pub fn host_attached(&self, session: &Arc<Session>) {
        let Some(id) = session.host_id() else { return };
        let old = self.hosts().insert(id, session.clone());
        if let Some(old) = old
            && old.id != session.id
        {
            self.remove(
                &old,
                ErrorBody::new("replaced", "the host connected again with a new session"),
            );
        }
    }

    /// The host's socket went away. True if it was the live one (the host is now disconnected).
    pub fn host_detached(&self, session: &Arc<Session>) -> bool {
        let Some(id) = session.host_id() else {
            return false;
        };
        let mut hosts = self.hosts();
        if hosts.get(&id).is_some_and(|s| s.id == session.id) {
            hosts.remove(&id);
            true
        } else {
            false
        }
    }

    pub fn host_connected(&self, host_id: i64) -> bool {
        self.hosts().contains_key(&host_id)
    }

    pub fn connected_hosts(&self) -> Vec<i64> {
        self.hosts().keys().copied().collect()
    }

    pub fn host_session(&self, host_id: i64) -> Option<Arc<Session>> {
        self.hosts().get(&host_id).cloned()
    }

    /// Sends an event to one host, if connected (otherwise it learns on reconnect).
    pub fn send_to_host(&self, host_id: i64, name: &str, data: Value) {
        if let Some(s) = self.host_session(host_id) {
            s.send_event(name, data);
        }
    }

    pub async fn request_host(
        &self,
        host_id: i64,
        name: &str,
        data: Value,
        timeout: Duration,
    ) -> Result<Value, ErrorBody> {
        match self.host_session(host_id) {
            Some(s) => s.request(name, data, timeout).await,
            None => Err(ErrorBody::new(
                "host_disconnected",
                "the host is not connected",
            )),
        }
    }

    fn remove(&self, session: &Arc<Session>, reason: ErrorBody) {
        {
            let mut ended = self.ended.lock().unwrap_or_else(|e| e.into_inner());
            if ended.len() >= ENDED_KEPT {
                ended.pop_front();
            }
            ended.push_back((session.id.clone(), reason.clone()));
        }
        session.kill(reason);
        self.sessions().remove(&session.id);
        self.host_detached(session);
    }

    pub fn close_host(&self, host_id: i64, reason: &str) {
        let victims: Vec<_> = self
            .sessions()
            .values()
            .filter(|s| s.host_id() == Some(host_id))
            .cloned()
            .collect();
        for s in victims {
            self.remove(&s, ErrorBody::new("revoked", reason));
        }
    }

    pub fn close_user_sessions(&self, user_id: i64, reason: &str) {
        let victims: Vec<_> = self
            .sessions()
            .values()
            .filter(|s| matches!(&s.peer, Peer::Control { actor, .. } if actor.user_id == user_id))
            .cloned()
            .collect();
        for s in victims {
            self.remove(&s, ErrorBody::new("revoked", reason));
        }
    }

    /// Ends sessions detached for longer than the resume window, and forgets those that ended
    /// themselves (their outbox overflowed).
    pub fn reap(&self, window: Duration) {
        let expired: Vec<_> = self
            .sessions()
            .values()
            .filter(|s| s.expired(window) || s.is_dead())
            .cloned()
            .collect();
        for s in expired {
            let reason = match s.end_reason() {
                Some(r) => {
                    if r.code == "overflow" {
                        self.slow_consumers
                            .with_label_values(&["link", "closed"])
                            .inc();
                    }
                    r
                }
                None => ErrorBody::new("expired", "the resume window passed"),
            };
            self.remove(&s, reason);
        }
    }

    /// Ends every session (controller shutdown).
    pub fn close_all(&self, reason: &str) {
        let all: Vec<_> = self.sessions().values().cloned().collect();
        for s in all {
            self.remove(&s, ErrorBody::new("shutdown", reason));
        }
    }
}

/// About the bytes `value` takes as JSON, without writing it out.
fn approximate_size(value: &Value) -> usize {
    match value {
        Value::Null | Value::Bool(_) | Value::Number(_) => 8,
        Value::String(s) => s.len() + 2,
        Value::Array(items) => items.iter().map(approximate_size).sum::<usize>() + items.len() + 2,
        Value::Object(map) => {
            map.iter()
                .map(|(k, v)| k.len() + 4 + approximate_size(v))
                .sum::<usize>()
                + 2
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subscription(end_when_behind: bool) -> Subscription {
        Subscription {
            sub: Arc::new(Subscriber {
                queue: Mutex::new(Queue::default()),
                ready: Notify::new(),
            }),
            end_when_behind,
        }
    }

    fn event() -> Arc<Event> {
        Arc::new(Event::role_deleted(1))
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_by_bytes_is_dropped_not_buffered() {
        let mut stream = subscription(true);
        assert!(stream.sub.push(&event(), SUBSCRIBER_BYTES / 2));
        assert!(stream.recv().await.is_ok());
        assert!(stream.sub.push(&event(), SUBSCRIBER_BYTES / 2));
        assert!(stream.sub.push(&event(), SUBSCRIBER_BYTES / 2));
        assert!(!stream.sub.push(&event(), SUBSCRIBER_BYTES / 2));
        assert_eq!(stream.sub.lock().items.len(), 0, "its queue was freed");
        assert!(matches!(
            stream.recv().await,
            Err(broadcast::error::RecvError::Closed)
        ));

        let mut session = subscription(false);
        for _ in 0..3 {
            session.sub.push(&event(), SUBSCRIBER_BYTES / 2);
        }
        assert!(matches!(
            session.recv().await,
            Err(broadcast::error::RecvError::Lagged(3))
        ));
    }
}
