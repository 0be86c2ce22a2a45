//! Live link sessions: which hosts are connected, and the event stream every subscriber gets.
//!
//! Events go through a broadcast channel; each session has a pump task that copies the events
//! its peer may see into the session's outbox (so they wait there across a resume).

use super::session::{Peer, Session};
use crate::link::ErrorBody;
use crate::store::{InstanceRecord, Role, User};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast;

/// Capacity of the event broadcast; a session that falls this far behind is ended and must
/// start over (it then gets the full state again).
const EVENT_BACKLOG: usize = 65_536;

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

pub struct Hub {
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    /// Host id → its session, while a socket is attached.
    hosts: Mutex<HashMap<i64, Arc<Session>>>,
    events: broadcast::Sender<Arc<Event>>,
    pub outbox_limit: usize,
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
        outbox_limit: usize,
        store: crate::store::Store,
        census: Arc<super::metrics::Census>,
    ) -> Self {
        Hub {
            census,
            sessions: Mutex::new(HashMap::new()),
            hosts: Mutex::new(HashMap::new()),
            events: broadcast::channel(EVENT_BACKLOG).0,
            outbox_limit,
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

    /// A receiver of every event from now on (HTTP log streams).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.events.subscribe()
    }

    pub fn publish(&self, event: Event) {
        self.census.observe(event.name, &event.data);
        // No receivers is fine: nobody is subscribed.
        let _ = self.events.send(Arc::new(event));
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

    /// Registers a new session and starts copying events to it.
    pub fn add_session(self: &Arc<Self>, session: Arc<Session>) {
        self.sessions().insert(session.id.clone(), session.clone());
        let mut events = self.events.subscribe();
        let hub = self.clone();
        let mut watch = match &session.peer {
            Peer::Control { actor, token } => Some(self.watch(token, actor)),
            Peer::Host { .. } => None,
        };
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    ev = events.recv() => match ev {
                        Ok(ev) => {
                            let data = match watch.as_mut() {
                                None => ev.to_hosts.then(|| ev.data.clone()),
                                Some(w) => match w.actor(&hub).await {
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
                                },
                            };
                            if let Some(data) = data {
                                session.send_event(ev.name, data);
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            session.kill(ErrorBody::new("lagged", format!("{n} events were missed; reconnect for a fresh state")));
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

    /// Ends sessions detached for longer than the resume window.
    pub fn reap(&self, window: Duration) {
        let expired: Vec<_> = self
            .sessions()
            .values()
            .filter(|s| s.expired(window))
            .cloned()
            .collect();
        for s in expired {
            self.remove(&s, ErrorBody::new("expired", "the resume window passed"));
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
