//! The link socket's WebSocket upgrade, done here instead of by warp so the controller chooses
//! tungstenite's buffer sizes: its defaults reserve a 128 KiB read buffer per connection (touched
//! on the first read), 128 MB for a thousand hosts that each send a few hundred bytes at a time.
//!
//! [`WebSocket`] and [`Message`] mirror the parts of `warp::ws` the link uses.

use futures_util::{Sink, Stream};
use hyper_util::rt::TokioIo;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Utf8Bytes};
use warp::http::{HeaderMap, StatusCode, header};

/// Bytes the socket reads at a time; a larger frame grows the buffer as far as it needs.
const READ_BUFFER: usize = 4 << 10;

/// A request's pending upgrade, put where a route can take it (see `limits::serve`).
#[derive(Clone, Default)]
pub struct UpgradeSlot(Arc<Mutex<Option<hyper::upgrade::OnUpgrade>>>);

impl UpgradeSlot {
    pub fn new(on: hyper::upgrade::OnUpgrade) -> Self {
        UpgradeSlot(Arc::new(Mutex::new(Some(on))))
    }

    fn take(&self) -> Option<hyper::upgrade::OnUpgrade> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// Answers a WebSocket handshake: `101 Switching Protocols` and, once the connection is handed
/// over, `serve` runs on the socket. A request that is not a version-13 WebSocket handshake gets
/// `400` saying what is missing.
pub fn upgrade<F, U>(
    headers: &HeaderMap,
    slot: Option<UpgradeSlot>,
    max_message: usize,
    serve: F,
) -> warp::reply::Response
where
    F: FnOnce(WebSocket) -> U + Send + 'static,
    U: std::future::Future<Output = ()> + Send + 'static,
{
    let has = |name: header::HeaderName, want: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str().is_ok_and(|v| {
                v.split(',')
                    .any(|part| part.trim().eq_ignore_ascii_case(want))
            })
        })
    };
    let key = headers.get(header::SEC_WEBSOCKET_KEY);
    let missing = if !has(header::CONNECTION, "upgrade") {
        Some("a \"Connection: upgrade\" header")
    } else if !has(header::UPGRADE, "websocket") {
        Some("an \"Upgrade: websocket\" header")
    } else if !has(header::SEC_WEBSOCKET_VERSION, "13") {
        Some("\"Sec-WebSocket-Version: 13\"")
    } else if key.is_none() {
        Some("a Sec-WebSocket-Key header")
    } else {
        None
    };
    let on = slot.and_then(|s| s.take());
    let (Some(key), Some(on), None) = (key, on, missing) else {
        let why = missing.unwrap_or("an upgradable connection (HTTP/1.1)");
        let mut reply = warp::reply::Response::new(
            format!("this is the link's WebSocket; the request lacks {why}\n").into(),
        );
        *reply.status_mut() = StatusCode::BAD_REQUEST;
        return reply;
    };
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        // Each frame is written out when sent: nothing waits in tungstenite's buffer.
        .write_buffer_size(0)
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message));
    tokio::spawn(async move {
        match on.await {
            Ok(upgraded) => {
                let io = TokioIo::new(upgraded);
                let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
                serve(WebSocket(ws)).await;
            }
            Err(e) => tracing::debug!(error = %e, "link socket upgrade failed"),
        }
    });
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut reply = warp::reply::Response::default();
    *reply.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = reply.headers_mut();
    h.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("upgrade"),
    );
    h.insert(
        header::UPGRADE,
        header::HeaderValue::from_static("websocket"),
    );
    if let Ok(v) = header::HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    reply
}

/// A WebSocket message (what `warp::ws::Message` offered).
#[derive(Debug, Clone)]
pub struct Message(tungstenite::Message);

/// An `Arc<str>` as bytes, so a frame kept in an outbox is written without copying it.
struct SharedText(Arc<str>);

impl AsRef<[u8]> for SharedText {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl Message {
    pub fn text(text: impl Into<String>) -> Message {
        Message(tungstenite::Message::Text(Utf8Bytes::from(text.into())))
    }

    /// A text message sharing `text`'s bytes.
    pub fn shared(text: Arc<str>) -> Message {
        let bytes = bytes::Bytes::from_owner(SharedText(text));
        // The bytes came from a `str`: always UTF-8.
        match Utf8Bytes::try_from(bytes) {
            Ok(t) => Message(tungstenite::Message::Text(t)),
            Err(_) => Message(tungstenite::Message::Text(Utf8Bytes::from_static(""))),
        }
    }

    pub fn close_with(code: impl Into<u16>, reason: impl Into<String>) -> Message {
        Message(tungstenite::Message::Close(Some(CloseFrame {
            code: code.into().into(),
            reason: Utf8Bytes::from(reason.into()),
        })))
    }

    pub fn is_close(&self) -> bool {
        self.0.is_close()
    }

    pub fn is_ping(&self) -> bool {
        self.0.is_ping()
    }

    pub fn is_pong(&self) -> bool {
        self.0.is_pong()
    }

    /// The text of a text message (as `warp::ws::Message::to_str`).
    #[allow(clippy::result_unit_err)]
    pub fn to_str(&self) -> Result<&str, ()> {
        match &self.0 {
            tungstenite::Message::Text(t) => Ok(t.as_str()),
            _ => Err(()),
        }
    }
}

/// The link's side of an upgraded connection.
pub struct WebSocket(WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>);

impl Stream for WebSocket {
    type Item = Result<Message, tungstenite::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.0)
            .poll_next(cx)
            .map(|m| m.map(|r| r.map(Message)))
    }
}

impl Sink<Message> for WebSocket {
    type Error = tungstenite::Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.0).poll_ready(cx)
    }

    fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), Self::Error> {
        Pin::new(&mut self.0).start_send(item.0)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.0).poll_close(cx)
    }
}
