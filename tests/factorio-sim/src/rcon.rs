//! RCON server with Factorio's behaviour (research/factorio.md §4, §8.7): Source RCON framing,
//! one type-2 auth reply (id -1 on a bad password, then the socket is closed), exactly one type-0
//! reply per command in arrival order, **no reply at all to an empty body**, and responses of any
//! size sent as a single packet (never split at 4096 bytes).

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};

use crate::server::{Msg, Origin};

/// Requests above this are treated as garbage (the real server accepts ≥ 1.25 MB commands).
const MAX_REQUEST: i32 = 16 * 1024 * 1024;
/// Changelog 1.1.54: at most 128 simultaneous RCON connections.
const MAX_CONNECTIONS: usize = 128;

pub fn spawn(
    listener: TcpListener,
    password: String,
    game: mpsc::Sender<Msg>,
    closed: watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        let open = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut closed_l = closed.clone();
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = closed_l.changed() => return,
            };
            let Ok((stream, peer)) = accepted else {
                continue;
            };
            if open.load(std::sync::atomic::Ordering::SeqCst) >= MAX_CONNECTIONS {
                drop(stream);
                continue;
            }
            let _ = game.send(Msg::RconAccepted(peer)).await;
            let open2 = open.clone();
            open2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let (pw, game, mut closed) = (password.clone(), game.clone(), closed.clone());
            tokio::spawn(async move {
                tokio::select! {
                    _ = serve(stream, peer, &pw, &game) => {}
                    _ = closed.changed() => {}
                }
                open2.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            });
        }
    });
}

async fn read_packet(s: &mut TcpStream) -> Option<(i32, i32, Vec<u8>)> {
    let size = s.read_i32_le().await.ok()?;
    if !(10..=MAX_REQUEST).contains(&size) {
        return None;
    }
    let id = s.read_i32_le().await.ok()?;
    let ty = s.read_i32_le().await.ok()?;
    let mut body = vec![0u8; (size - 8) as usize];
    s.read_exact(&mut body).await.ok()?;
    // Drop the two trailing NULs (terminator + pad); tolerate clients that send only one.
    while body.last() == Some(&0) {
        body.pop();
    }
    Some((id, ty, body))
}

pub fn encode(id: i32, ty: i32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 14);
    out.extend_from_slice(&((body.len() + 10) as i32).to_le_bytes());
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&ty.to_le_bytes());
    out.extend_from_slice(body);
    out.extend_from_slice(&[0, 0]);
    out
}

async fn serve(mut s: TcpStream, _peer: SocketAddr, password: &str, game: &mpsc::Sender<Msg>) {
    let mut authed = false;
    while let Some((id, ty, body)) = read_packet(&mut s).await {
        match ty {
            3 => {
                if body == password.as_bytes() {
                    authed = true;
                    if s.write_all(&encode(id, 2, b"")).await.is_err() {
                        return;
                    }
                } else {
                    let _ = s.write_all(&encode(-1, 2, b"")).await;
                    return;
                }
            }
            2 if authed => {
                if body.is_empty() {
                    // The real server answers nothing to an empty command (§4.3).
                    continue;
                }
                let text = String::from_utf8_lossy(&body).into_owned();
                let (tx, rx) = oneshot::channel();
                if game
                    .send(Msg::Command {
                        text,
                        origin: Origin::Rcon,
                        reply: Some(tx),
                    })
                    .await
                    .is_err()
                {
                    return;
                }
                let Ok(answer) = rx.await else { return };
                if s.write_all(&encode(id, 0, answer.as_bytes()))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            // Commands before auth, unknown types: close the connection [G].
            _ => return,
        }
    }
}
