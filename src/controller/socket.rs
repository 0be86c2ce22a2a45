//! The link socket at `/api/socket`: handshake, then frames in both directions (DESIGN §3).

use super::Controller;
use super::auth::{self, Actor};
use super::error::ApiError;
use super::requests::ControlRequest;
use super::session::{Outgoing, Peer, Session, WriteBudget};
use super::ws::{Message, WebSocket};
use crate::link::{Accept, ErrorBody, Frame, Hello, PROTOCOL_VERSION, Ready};
use crate::store::{self, TokenOwner};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// A client must say hello within this time.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Close code for a refused handshake (Clusterio uses 3000 Unauthorized, 4000 malformed).
const CLOSE_REFUSED: u16 = 4001;

pub async fn serve(ws: WebSocket, ctl: Arc<Controller>, addr: Option<SocketAddr>) {
    let (mut sink, mut stream) = ws.split();
    let hello = match tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.next()).await {
        Ok(Some(Ok(msg))) => msg,
        _ => return,
    };
    let address = addr.map(|a| a.ip().to_string()).unwrap_or_default();
    // The `plugin` role: an external-process plugin (plugins::external has its own session).
    if let Ok(text) = hello.to_str()
        && crate::plugins::external::is_plugin_hello(text)
    {
        let text = text.to_string();
        if let Ok(ws) = sink.reunite(stream) {
            crate::plugins::external::serve(ws, ctl, text, address).await;
        }
        return;
    }
    let (session, ready) = match handshake(&ctl, &hello, &address).await {
        Ok(pair) => pair,
        Err(reason) => {
            ctl.metrics.link_message("in", "hello_refused");
            tracing::info!(code = %reason.code, message = %reason.message, %address, "link handshake refused");
            let _ = sink
                .send(Message::text(Frame::Close(reason.clone()).to_text()))
                .await;
            let _ = sink
                .send(Message::close_with(CLOSE_REFUSED, reason.code))
                .await;
            return;
        }
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<Outgoing>();
    // What waits for the writer is bounded in bytes: a peer that stops reading is dropped (it
    // may resume; its outbox keeps what it has not acknowledged).
    let budget = Arc::new(WriteBudget::new(session.limits.write_budget));
    let resumed = ready.0.resumed;
    let generation = session.attach(tx, budget.clone(), ready.1, Frame::Ready(ready.0).to_text());
    if session.host_id().is_some() {
        ctl.host_connected(&session, resumed).await;
    }

    let heartbeat = Duration::from_millis(ctl.cfg.heartbeat_interval_ms.max(100));
    let writer_session = session.clone();
    let metrics = ctl.metrics.clone();
    let writer_budget = budget.clone();
    let writer = tokio::spawn(async move {
        let mut ping = tokio::time::interval(heartbeat);
        ping.tick().await;
        loop {
            tokio::select! {
                out = rx.recv() => match out {
                    Some(Outgoing::Text(text)) => {
                        metrics.link_message("out", "frame");
                        let n = text.len();
                        let sent = sink.send(Message::shared(text)).await;
                        writer_budget.written(n);
                        if sent.is_err() { break; }
                    }
                    Some(Outgoing::Resend(text)) => {
                        metrics.link_message("out", "frame");
                        if sink.send(Message::shared(text)).await.is_err() { break; }
                    }
                    Some(Outgoing::Close(reason)) => {
                        let _ = sink.send(Message::text(Frame::Close(reason.clone()).to_text())).await;
                        let _ = sink.send(Message::close_with(1000u16, reason.code)).await;
                        break;
                    }
                    None => break,
                },
                _ = ping.tick() => {
                    let frame = Frame::Ping { ack: writer_session.last_received() };
                    if sink.send(Message::text(frame.to_text())).await.is_err() { break; }
                }
            }
        }
        let _ = sink.close().await;
    });

    // A peer that sends nothing (not even a pong) for three heartbeats is gone.
    let silence = heartbeat * 3;
    let max = ctl.cfg.max_message_bytes;
    loop {
        let next = tokio::select! {
            next = tokio::time::timeout(silence, stream.next()) => next,
            _ = budget.exceeded.notified() => {
                ctl.metrics.slow_consumer("link", "detached");
                tracing::info!(session = %session.id, queued = budget.queued(), limit = session.limits.write_budget, "link peer is not reading; dropping its socket (it may resume)");
                break;
            }
        };
        let msg = match next {
            Ok(Some(Ok(msg))) => msg,
            _ => break,
        };
        if session.is_dead() {
            break;
        }
        if msg.is_close() {
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
            ctl.metrics.link_message("in", "too_large");
            session.send_control(Frame::Error(ErrorBody::new(
                "too_large",
                format!(
                    "frame of {} bytes exceeds the limit of {max} bytes",
                    text.len()
                ),
            )));
            continue;
        }
        let frame = match Frame::parse(text) {
            Ok(f) => f,
            Err(e) => {
                ctl.metrics.link_message("in", "invalid");
                session.send_control(Frame::Error(e));
                continue;
            }
        };
        ctl.metrics.link_message("in", frame_kind(&frame));
        handle_frame(&ctl, &session, frame).await;
    }

    if session.detach(generation) && ctl.hub.host_detached(&session) {
        ctl.host_disconnected(&session).await;
    }
    writer.abort();
}

fn frame_kind(frame: &Frame) -> &'static str {
    match frame {
        Frame::Hello(_) => "hello",
        Frame::Ready(_) => "ready",
        Frame::Ack { .. } => "ack",
        Frame::Ping { .. } => "ping",
        Frame::Pong { .. } => "pong",
        Frame::Error(_) => "error",
        Frame::Close(_) => "close",
        Frame::Request { .. } => "request",
        Frame::Response { .. } => "response",
        Frame::Event { .. } => "event",
    }
}

/// Checks the hello and finds or creates the session. Returns the ready frame and the seq the
/// client has seen (to resend the rest).
async fn handshake(
    ctl: &Arc<Controller>,
    msg: &Message,
    address: &str,
) -> Result<(Arc<Session>, (Ready, u64)), ErrorBody> {
    let text = msg
        .to_str()
        .map_err(|_| ErrorBody::new("bad_handshake", "the first frame must be a JSON hello"))?;
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
                "this controller speaks link protocol {PROTOCOL_VERSION}, the client {}; run the same clustorio version on both",
                hello.version
            ),
        ));
    }
    let (peer, host_token) = authenticate(ctl, &hello, address).await?;
    if let Peer::Host { id, .. } = &peer {
        ctl.plugins.host_said(*id, hello.plugins.clone());
    }

    // Resume the old session if it still exists and belongs to the same peer.
    if let Some(resume) = &hello.resume
        && let Some(session) = ctl.hub.find_session(&resume.session)
        && !session.is_dead()
        && same_peer(&session.peer, &peer)
    {
        let ready = ready_frame(ctl, &session, true, None);
        return Ok((session.clone(), (ready, resume.last_seq)));
    }
    let session = Arc::new(Session::new(
        store::tokens::generate("sess"),
        peer,
        ctl.hub.limits,
    ));
    ctl.hub.add_session(session.clone());
    let mut ready = ready_frame(ctl, &session, false, host_token);
    // Say why the session asked for is gone, so the client knows it starts over.
    ready.ended = hello.resume.as_ref().map(|r| {
        ctl.hub.ended_reason(&r.session).unwrap_or_else(|| {
            ErrorBody::new(
                "unknown_session",
                "the session to resume is not known (expired, or the controller restarted)",
            )
        })
    });
    Ok((session, (ready, 0)))
}

fn same_peer(a: &Peer, b: &Peer) -> bool {
    match (a, b) {
        (Peer::Host { id: x, .. }, Peer::Host { id: y, .. }) => x == y,
        (Peer::Control { actor: x, .. }, Peer::Control { actor: y, .. }) => x.user_id == y.user_id,
        _ => false,
    }
}

fn ready_frame(
    ctl: &Controller,
    session: &Session,
    resumed: bool,
    host_token: Option<String>,
) -> Ready {
    let (host, user) = match &session.peer {
        Peer::Host { id, name } => (Some(json!({ "id": id, "name": name })), None),
        Peer::Control { actor, .. } => (
            None,
            Some(json!({ "name": actor.name, "permissions": actor.permissions })),
        ),
    };
    Ready {
        session: session.id.clone(),
        heartbeat_ms: ctl.cfg.heartbeat_interval_ms,
        resume_window_ms: ctl.cfg.resume_window_ms,
        resumed,
        last_seq: session.last_received(),
        plugins: if host.is_some() {
            ctl.plugins.versions()
        } else {
            Vec::new()
        },
        host,
        host_token,
        user,
        max_frame_bytes: ctl.cfg.max_message_bytes as u64,
        ended: None,
    }
}

async fn authenticate(
    ctl: &Arc<Controller>,
    hello: &Hello,
    address: &str,
) -> Result<(Peer, Option<String>), ErrorBody> {
    let token = hello.token.clone();
    let owner = ctl
        .store
        .read(move |c| store::tokens::resolve(c, &token))
        .await
        .map_err(|e| ApiError::from(e).to_body())?;
    match (hello.role.as_str(), owner) {
        ("host", Some(TokenOwner::Host { host_id, name })) => {
            let (version, address) = (hello.software.clone(), address.to_string());
            ctl.store
                .write(move |c| store::hosts::touch(c, host_id, &version, &address))
                .await
                .map_err(|e| ApiError::from(e).to_body())?;
            Ok((Peer::Host { id: host_id, name }, None))
        }
        ("host", Some(TokenOwner::Join)) => {
            let name = hello
                .name
                .clone()
                .filter(|n| !n.is_empty())
                .ok_or_else(|| {
                    ErrorBody::new(
                        "name_required",
                        "registering with the join token needs a host name (SLAVE_NAME)",
                    )
                })?;
            let (version, address) = (hello.software.clone(), address.to_string());
            let (host, token) = ctl
                .store
                .write(move |c| store::hosts::register(c, &name, &version, &address))
                .await
                .map_err(|e| match e {
                    store::StoreError::Conflict(m) => ErrorBody::new("name_taken", m),
                    other => ApiError::from(other).to_body(),
                })?;
            tracing::info!(host = %host.name, id = host.id, "host registered");
            Ok((
                Peer::Host {
                    id: host.id,
                    name: host.name,
                },
                Some(token),
            ))
        }
        ("host", Some(TokenOwner::Plugin { .. })) => Err(ErrorBody::new(
            "forbidden",
            "a plugin token cannot connect as a host; connect with role \"plugin\"",
        )),
        ("host", Some(TokenOwner::User { .. })) => Err(ErrorBody::new(
            "forbidden",
            "a user token cannot connect as a host; use the join token (MASTER_TOKEN)",
        )),
        ("control", Some(TokenOwner::User { .. })) => {
            let actor: Actor = auth::authenticate(&ctl.store, &hello.token)
                .await
                .map_err(|e| e.to_body())?;
            actor
                .require("core.control.connect")
                .map_err(|e| e.to_body())?;
            Ok((
                Peer::Control {
                    actor,
                    token: hello.token.clone(),
                },
                None,
            ))
        }
        ("control", Some(_)) => Err(ErrorBody::new(
            "forbidden",
            "host and join tokens cannot connect as control clients; use a user token",
        )),
        ("host" | "control", None) => {
            Err(ErrorBody::new("unauthorized", "invalid or revoked token"))
        }
        (other, _) => Err(ErrorBody::new(
            "bad_handshake",
            format!("unknown role \"{other}\"; expected \"host\", \"control\" or \"plugin\""),
        )),
    }
}

/// Handles one frame. A host's events are applied here, in order, before the next frame is read:
/// a response that follows a status event must not overtake it.
async fn handle_frame(ctl: &Arc<Controller>, session: &Arc<Session>, frame: Frame) {
    let _in_order = session.applying.lock().await;
    if let Some(ack) = frame.ack() {
        session.acked(ack);
    }
    if let Some(seq) = frame.seq() {
        match session.inbound(seq) {
            Accept::New => {}
            Accept::Duplicate => {
                session.send_control(Frame::Ack {
                    ack: session.last_received(),
                });
                return;
            }
            Accept::Gap { expected } => {
                session.send_control(Frame::Error(ErrorBody::new(
                    "bad_seq",
                    format!("expected seq {expected}, got {seq}; the frame was ignored"),
                )));
                return;
            }
        }
    }
    match frame {
        Frame::Ping { .. } => session.send_control(Frame::Pong {
            ack: session.last_received(),
        }),
        Frame::Ack { .. } | Frame::Pong { .. } => {}
        Frame::Hello(_) | Frame::Ready(_) => session.send_control(Frame::Error(ErrorBody::new(
            "unexpected",
            "the handshake is already done",
        ))),
        Frame::Error(e) => {
            tracing::warn!(session = %session.id, code = %e.code, message = %e.message, "peer reported an error")
        }
        Frame::Close(_) => {}
        Frame::Request { id, .. } if !session.take_request() => {
            ctl.metrics.rate_limited.inc();
            let l = session.limits;
            session.respond(
                id,
                Err(ErrorBody::new(
                    "rate_limited",
                    format!(
                        "more than {} requests a second (bursts of {}); nothing was done, try again shortly",
                        l.request_rate, l.request_burst
                    ),
                )),
            );
        }
        Frame::Request { id, name, data, .. } => {
            let ctl = ctl.clone();
            let session = session.clone();
            tokio::spawn(async move {
                let result = match &session.peer {
                    Peer::Control { token, .. } => control_request(&ctl, token, &name, data).await,
                    Peer::Host { id: host_id, .. } => ctl.host_request(*host_id, &name, data).await,
                };
                session.respond(id, result.map_err(|e| e.to_body()));
            });
        }
        Frame::Response { id, ok, error, .. } => {
            session.resolve(
                id,
                match error {
                    Some(e) => Err(e),
                    None => Ok(ok.unwrap_or(serde_json::Value::Null)),
                },
            );
            session.send_control(Frame::Ack {
                ack: session.last_received(),
            });
        }
        Frame::Event { name, data, .. } => {
            if let Some(host_id) = session.host_id() {
                ctl.host_event(host_id, &name, data).await;
            }
            session.send_control(Frame::Ack {
                ack: session.last_received(),
            });
        }
    }
}

/// A request from a web UI or ctl client: the token is checked again, so a revoked token stops
/// working at once, and the permission is checked by the request itself.
async fn control_request(
    ctl: &Arc<Controller>,
    token: &str,
    name: &str,
    data: serde_json::Value,
) -> Result<serde_json::Value, ApiError> {
    let actor = auth::authenticate(&ctl.store, token).await?;
    let request = ControlRequest::from_link(name, data)?;
    request.execute(ctl, &actor).await.map(|r| r.body)
}
