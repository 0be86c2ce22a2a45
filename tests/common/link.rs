//! A bare link client for tests: raw JSON frames, so tests control drops and seq numbers.
#![allow(dead_code)]

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub struct LinkClient {
    pub ws: Socket,
    pub ready: Value,
    /// Next seq to send.
    pub seq: u64,
}

pub async fn connect_raw(url: &str) -> Socket {
    let (ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("connecting to the link");
    ws
}

impl LinkClient {
    /// Connects and says hello; returns the client and the server's first frame (ready or close).
    pub async fn hello(url: &str, hello: Value) -> (Socket, Value) {
        let mut ws = connect_raw(url).await;
        ws.send(Message::text(hello.to_string()))
            .await
            .expect("sending hello");
        let first = next_json(&mut ws).await.expect("a reply to hello");
        (ws, first)
    }

    pub async fn connect(
        url: &str,
        role: &str,
        token: &str,
        name: Option<&str>,
        resume: Option<(String, u64)>,
    ) -> Self {
        let mut hello = json!({ "type": "hello", "version": 1, "role": role, "token": token, "software": "test" });
        if let Some(n) = name {
            hello["name"] = json!(n);
        }
        if let Some((session, last_seq)) = resume {
            hello["resume"] = json!({ "session": session, "last_seq": last_seq });
        }
        let (ws, ready) = Self::hello(url, hello).await;
        assert_eq!(ready["type"], "ready", "expected ready, got {ready}");
        LinkClient { ws, ready, seq: 1 }
    }

    pub fn session(&self) -> String {
        self.ready["session"]
            .as_str()
            .expect("session id")
            .to_string()
    }

    pub async fn send(&mut self, frame: Value) {
        self.ws
            .send(Message::text(frame.to_string()))
            .await
            .expect("sending a frame");
    }

    /// Sends a request with the next seq; returns its seq (also used as request id).
    pub async fn request(&mut self, name: &str, data: Value) -> u64 {
        let seq = self.seq;
        self.seq += 1;
        self.send(json!({ "type": "request", "seq": seq, "id": seq, "name": name, "data": data }))
            .await;
        seq
    }

    /// The next frame that is not a ping/pong/ack, within 10 s.
    pub async fn next(&mut self) -> Option<Value> {
        loop {
            let f = next_json(&mut self.ws).await?;
            match f["type"].as_str() {
                Some("ping") | Some("pong") | Some("ack") => continue,
                _ => return Some(f),
            }
        }
    }

    /// Waits for the response to request `id`, skipping other frames.
    pub async fn response(&mut self, id: u64) -> Value {
        loop {
            let f = self.next().await.expect("link closed before the response");
            if f["type"] == "response" && f["id"] == json!(id) {
                return f;
            }
        }
    }

    pub async fn ack(&mut self, seq: u64) {
        self.send(json!({ "type": "ack", "ack": seq })).await;
    }
}

/// The next text frame as JSON, within 10 s; None when the socket ends.
pub async fn next_json(ws: &mut Socket) -> Option<Value> {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .ok()??
            .ok()?;
        match msg {
            Message::Text(t) => return serde_json::from_str(t.as_str()).ok(),
            Message::Close(_) => return None,
            _ => continue,
        }
    }
}
