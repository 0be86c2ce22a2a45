//! Malformed, oversized and random input to the REST API and the link: clear 4xx errors and
//! error frames, and the controller keeps serving with its state intact.

mod common;

use common::ControllerProcess;
use common::link::{LinkClient, next_json};
use futures_util::SinkExt;
use rand::{Rng, SeedableRng};
use reqwest::Client;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

async fn raw(
    c: &ControllerProcess,
    method: &str,
    path: &str,
    token: &str,
    body: Vec<u8>,
) -> (u16, Value) {
    let resp = Client::new()
        .request(
            reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
            c.url(path),
        )
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("the controller still answers");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("error body is JSON: {text}")),
    )
}

#[tokio::test]
async fn malformed_and_oversized_api_input_gets_clear_4xx_errors() {
    let dir = tempfile::tempdir().unwrap();
    let c = ControllerProcess::start(dir.path());
    let t = c.first_token.clone();
    assert_eq!(
        raw(
            &c,
            "POST",
            "/api/v1/instances",
            &t,
            br#"{"name":"keep"}"#.to_vec()
        )
        .await
        .0,
        201
    );

    let deep = "[".repeat(100_000);
    let cases: Vec<(&str, &str, Vec<u8>)> = vec![
        ("POST", "/api/v1/instances", b"".to_vec()),
        ("POST", "/api/v1/instances", b"{".to_vec()),
        ("POST", "/api/v1/instances", b"[]".to_vec()),
        ("POST", "/api/v1/instances", b"null".to_vec()),
        ("POST", "/api/v1/instances", b"\"name\"".to_vec()),
        ("POST", "/api/v1/instances", br#"{"name": 5}"#.to_vec()),
        (
            "POST",
            "/api/v1/instances",
            br#"{"name": "../etc"}"#.to_vec(),
        ),
        ("POST", "/api/v1/instances", br#"{"name": "a/b"}"#.to_vec()),
        ("POST", "/api/v1/instances", br#"{"name": ""}"#.to_vec()),
        (
            "POST",
            "/api/v1/instances",
            br#"{"name": "ok", "config": [1]}"#.to_vec(),
        ),
        ("POST", "/api/v1/instances", deep.clone().into_bytes()),
        ("POST", "/api/v1/instances", vec![0xff, 0xfe, 0x00, 0x7b]),
        (
            "PATCH",
            "/api/v1/instances/keep",
            br#"{"config": "x"}"#.to_vec(),
        ),
        ("PATCH", "/api/v1/instances/keep", br#"{}"#.to_vec()),
        (
            "PATCH",
            "/api/v1/instances/nope",
            br#"{"config": {}}"#.to_vec(),
        ),
        ("GET", "/api/v1/instances/nope", vec![]),
        ("DELETE", "/api/v1/instances/999999", vec![]),
        ("POST", "/api/v1/instances/nope/assign", b"{}".to_vec()),
        (
            "POST",
            "/api/v1/users",
            br#"{"name": "bad name!"}"#.to_vec(),
        ),
        (
            "POST",
            "/api/v1/users",
            br#"{"name": "u", "roles": [42]}"#.to_vec(),
        ),
        (
            "POST",
            "/api/v1/users",
            br#"{"name": "u", "surprise": true}"#.to_vec(),
        ),
        (
            "PATCH",
            "/api/v1/users/nobody",
            br#"{"is_admin": true}"#.to_vec(),
        ),
        (
            "PATCH",
            "/api/v1/users/admin",
            br#"{"is_admin": "yes"}"#.to_vec(),
        ),
        ("PATCH", "/api/v1/roles/abc", br#"{"name": "x"}"#.to_vec()),
        ("DELETE", "/api/v1/tokens/-1", vec![]),
        ("POST", "/api/v1/tokens", br#"{"user": "ghost"}"#.to_vec()),
        ("POST", "/api/v1/hosts/ghost/revoke", vec![]),
        ("GET", "/api/v1/nothing-here", vec![]),
        ("PUT", "/api/v1/instances", vec![]),
        ("POST", "/api/v1/instances", vec![b' '; 2 << 20]),
    ];
    for (method, path, body) in cases {
        let shown = String::from_utf8_lossy(&body[..body.len().min(40)]).to_string();
        let (status, err) = raw(&c, method, path, &t, body).await;
        assert!(
            (400..500).contains(&status),
            "{method} {path} {shown:?} → {status} {err}"
        );
        assert!(
            err["error"]["code"].is_string() && err["error"]["message"].is_string(),
            "{err}"
        );
    }
    let (status, err) = raw(&c, "POST", "/api/v1/instances", &t, vec![b' '; 2 << 20]).await;
    assert_eq!(status, 413, "{err}");

    // Random bytes, seeded so a failure can be replayed.
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for _ in 0..300 {
        let len = rng.random_range(0..200);
        let mut body: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        if rng.random_bool(0.5) && !body.is_empty() {
            body[0] = b'{';
        }
        let (status, _) = raw(&c, "POST", "/api/v1/instances", &t, body).await;
        assert!((400..500).contains(&status));
    }

    // Still serving, nothing half-written.
    let list: Value = Client::new()
        .get(c.url("/api/v1/instances"))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["keep"]);
}

#[tokio::test]
async fn bad_frames_get_error_frames_and_the_link_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let c = ControllerProcess::start(dir.path());
    let mut link = LinkClient::connect(&c.ws_url(), "control", &c.first_token, None, None).await;

    let bad: Vec<(Message, &str)> = vec![
        (Message::text("not json"), "bad_frame"),
        (Message::text("[1,2,3]"), "bad_frame"),
        (Message::text(r#"{"seq": 1}"#), "bad_frame"),
        (Message::text(r#"{"type": "teleport"}"#), "unknown_type"),
        (
            Message::text(r#"{"type": "request", "seq": "one"}"#),
            "bad_frame",
        ),
        (
            Message::text(r#"{"type": "request", "seq": 5, "id": 1, "name": "status"}"#),
            "bad_seq",
        ),
        (Message::binary(vec![1u8, 2, 3]), "bad_frame"),
        (
            Message::text(format!(
                r#"{{"type":"event","seq":1,"name":"x","data":"{}"}}"#,
                "a".repeat(5 << 20)
            )),
            "too_large",
        ),
        (
            Message::text(r#"{"type": "hello", "version": 1, "role": "control", "token": "x"}"#),
            "unexpected",
        ),
    ];
    for (msg, code) in bad {
        link.ws.send(msg).await.unwrap();
        let f = link.next().await.expect("an error frame, not a disconnect");
        assert_eq!(f["type"], "error", "{f}");
        assert_eq!(f["code"], code, "{f}");
        assert!(f["message"].as_str().is_some_and(|m| !m.is_empty()));
    }

    // Requests that parse as frames but not as requests get error responses by id.
    let id = link.request("teleport", json!({})).await;
    assert_eq!(link.response(id).await["error"]["code"], "unknown_request");
    let id = link.request("instance_create", json!({"name": 12})).await;
    assert_eq!(link.response(id).await["error"]["code"], "bad_request");
    // A repeated seq is ignored (not applied twice).
    let seq = link.seq;
    link.seq += 1;
    let create = json!({"type": "request", "seq": seq, "id": 100, "name": "instance_create", "data": {"name": "once"}});
    link.send(create.clone()).await;
    assert!(link.response(100).await["ok"].is_object());
    link.send(create).await;
    let id = link.request("instance_list", Value::Null).await;
    let list = link.response(id).await;
    assert_eq!(
        list["ok"].as_array().unwrap().len(),
        1,
        "duplicate seq was not applied twice"
    );

    // Random garbage frames never kill the link.
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    for _ in 0..200 {
        let len = rng.random_range(1..300);
        let text: String = (0..len)
            .map(|_| rng.random_range(0x20u8..0x7f) as char)
            .collect();
        link.ws.send(Message::text(text)).await.unwrap();
        let f = link.next().await.expect("error frame");
        assert_eq!(f["type"], "error");
    }
    let id = link.request("status", Value::Null).await;
    assert_eq!(link.response(id).await["ok"]["name"], "clustorio");

    // A socket that never says hello, or says something else first, is closed with a reason.
    let (_, r) = LinkClient::hello(&c.ws_url(), json!({"type": "ping", "ack": 0})).await;
    assert_eq!(r["code"], "bad_handshake");
    let mut ws = common::link::connect_raw(&c.ws_url()).await;
    ws.send(Message::text("{{{{")).await.unwrap();
    let r = next_json(&mut ws).await.unwrap();
    assert_eq!(r["type"], "close");
}
