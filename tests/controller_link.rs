//! The link socket: sessions that survive a dropped socket, hosts registering, assignments.

mod common;

use common::link::{LinkClient, next_json};
use common::{ControllerProcess, join_token};
use reqwest::Client;
use serde_json::{Value, json};
use std::collections::HashSet;

async fn post(c: &ControllerProcess, token: &str, path: &str, body: Value) -> (u16, Value) {
    let resp = Client::new()
        .post(c.url(path))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

async fn get(c: &ControllerProcess, token: &str, path: &str) -> Value {
    Client::new()
        .get(c.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Reads events until `n` instance_updated events arrived; returns (names, highest seq).
async fn take_instance_events(
    link: &mut LinkClient,
    n: usize,
    names: &mut Vec<String>,
    seqs: &mut Vec<u64>,
) {
    let mut got = 0;
    while got < n {
        let f = link.next().await.expect("event");
        if f["type"] == "event" {
            seqs.push(f["seq"].as_u64().unwrap());
            if f["name"] == "instance_updated" {
                names.push(f["data"]["name"].as_str().unwrap().to_string());
                got += 1;
            }
        }
    }
}

#[tokio::test]
async fn a_dropped_session_resumes_and_receives_every_event_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let c = ControllerProcess::start(dir.path());
    let token = c.first_token.clone();
    let mut link = LinkClient::connect(&c.ws_url(), "control", &token, None, None).await;
    assert_eq!(link.ready["resumed"], false);
    assert_eq!(link.ready["user"]["name"], "admin");
    let session = link.session();

    for i in 0..20 {
        assert_eq!(
            post(
                &c,
                &token,
                "/api/v1/instances",
                json!({"name": format!("a{i}")})
            )
            .await
            .0,
            201
        );
    }
    let (mut names, mut seqs) = (Vec::new(), Vec::new());
    // Read only part of the stream, acknowledge less than that, then drop the socket mid-stream.
    take_instance_events(&mut link, 8, &mut names, &mut seqs).await;
    link.ack(seqs[3]).await;
    drop(link);

    for i in 0..20 {
        assert_eq!(
            post(
                &c,
                &token,
                "/api/v1/instances",
                json!({"name": format!("b{i}")})
            )
            .await
            .0,
            201
        );
    }
    let last = *seqs.last().unwrap();
    let mut link = LinkClient::connect(
        &c.ws_url(),
        "control",
        &token,
        None,
        Some((session.clone(), last)),
    )
    .await;
    assert_eq!(link.ready["resumed"], true, "{}", link.ready);
    assert_eq!(link.session(), session);
    take_instance_events(&mut link, 32, &mut names, &mut seqs).await;

    let expected: Vec<String> = (0..20)
        .map(|i| format!("a{i}"))
        .chain((0..20).map(|i| format!("b{i}")))
        .collect();
    assert_eq!(names, expected, "every event exactly once, in order");
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "seqs continue without gaps or repeats: {seqs:?}"
    );
    // Nothing more is pending: a new event arrives next, not a repeat.
    assert_eq!(
        post(&c, &token, "/api/v1/instances", json!({"name": "c0"}))
            .await
            .0,
        201
    );
    let mut more = (Vec::new(), Vec::new());
    take_instance_events(&mut link, 1, &mut more.0, &mut more.1).await;
    assert_eq!(more.0, vec!["c0"]);

    // An unknown session id starts a fresh session instead.
    let fresh = LinkClient::connect(
        &c.ws_url(),
        "control",
        &token,
        None,
        Some(("sess_nope".into(), 3)),
    )
    .await;
    assert_eq!(fresh.ready["resumed"], false);
}

#[tokio::test]
async fn requests_over_the_link_are_answered_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let c = ControllerProcess::start(dir.path());
    let mut link = LinkClient::connect(&c.ws_url(), "control", &c.first_token, None, None).await;
    let id = link
        .request(
            "instance_create",
            json!({"name": "via-link", "config": {"auto_start": true}}),
        )
        .await;
    let r = link.response(id).await;
    assert_eq!(r["ok"]["name"], "via-link", "{r}");
    let id = link.request("instance_list", Value::Null).await;
    let r = link.response(id).await;
    assert_eq!(r["ok"].as_array().unwrap().len(), 1);
    let id = link
        .request("instance_get", json!({"instance": "nope"}))
        .await;
    assert_eq!(link.response(id).await["error"]["code"], "not_found");
    let id = link.request("status", Value::Null).await;
    assert_eq!(link.response(id).await["ok"]["name"], "clustorio");

    // A player's session is refused what the player's roles lack.
    let (_, _) = post(&c, &c.first_token, "/api/v1/users", json!({"name": "p"})).await;
    let (_, t) = post(&c, &c.first_token, "/api/v1/tokens", json!({"user": "p"})).await;
    let ptoken = t["token"].as_str().unwrap().to_string();
    let mut plink = LinkClient::connect(&c.ws_url(), "control", &ptoken, None, None).await;
    let id = plink
        .request("instance_delete", json!({"instance": "via-link"}))
        .await;
    assert_eq!(plink.response(id).await["error"]["code"], "forbidden");
    // Revoking the token ends the session at once.
    let (s, _) = post(
        &c,
        &c.first_token,
        "/api/v1/users/p/revoke-tokens",
        json!({}),
    )
    .await;
    assert_eq!(s, 200);
    let mut closed = false;
    while let Some(f) = next_json(&mut plink.ws).await {
        if f["type"] == "close" {
            assert_eq!(f["code"], "revoked");
            closed = true;
            break;
        }
    }
    assert!(closed);
}

#[tokio::test]
async fn hosts_register_with_the_join_token_and_receive_assignments() {
    let dir = tempfile::tempdir().unwrap();
    let c = ControllerProcess::start(dir.path());
    let admin = c.first_token.clone();
    let join = join_token(dir.path());

    let mut host = LinkClient::connect(&c.ws_url(), "host", &join, Some("host-a"), None).await;
    let host_token = host.ready["host_token"]
        .as_str()
        .expect("a host token on registration")
        .to_string();
    assert_eq!(host.ready["host"]["name"], "host-a");
    // The controller sends the host its (empty) desired state first.
    let sync = host.next().await.unwrap();
    assert_eq!(sync["name"], "instances_sync");
    assert_eq!(sync["data"]["instances"], json!([]));

    // A second host may not take the same name.
    let (_, refused) = LinkClient::hello(
        &c.ws_url(),
        json!({"type": "hello", "version": 1, "role": "host", "token": join, "name": "host-a"}),
    )
    .await;
    assert_eq!(refused["type"], "close");
    assert_eq!(refused["code"], "name_taken");
    // A user token cannot act as a host; a wrong token is refused; so is another protocol version.
    let (_, r) = LinkClient::hello(
        &c.ws_url(),
        json!({"type": "hello", "version": 1, "role": "host", "token": admin, "name": "x"}),
    )
    .await;
    assert_eq!(r["code"], "forbidden");
    let (_, r) = LinkClient::hello(
        &c.ws_url(),
        json!({"type": "hello", "version": 1, "role": "control", "token": "clu_nope"}),
    )
    .await;
    assert_eq!(r["code"], "unauthorized");
    let (_, r) = LinkClient::hello(
        &c.ws_url(),
        json!({"type": "hello", "version": 99, "role": "control", "token": admin}),
    )
    .await;
    assert_eq!(r["code"], "version_mismatch");

    let hosts = get(&c, &admin, "/api/v1/hosts").await;
    assert_eq!(hosts[0]["name"], "host-a");
    assert_eq!(hosts[0]["connected"], true);

    // Automatic assignment picks the connected host and delivers it over the link.
    post(&c, &admin, "/api/v1/instances", json!({"name": "i1"})).await;
    let assign = tokio::spawn({
        let url = c.url("/api/v1/instances/i1/assign");
        let admin = admin.clone();
        async move {
            Client::new()
                .post(url)
                .bearer_auth(admin)
                .json(&json!({}))
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    });
    let req = host.next().await.unwrap();
    assert_eq!(req["type"], "request");
    assert_eq!(req["name"], "instance_assigned");
    assert_eq!(req["data"]["name"], "i1");
    let seq = host.seq;
    host.seq += 1;
    host.send(json!({"type": "response", "seq": seq, "id": req["id"], "ok": {}}))
        .await;
    let view = assign.await.unwrap();
    assert_eq!(view["host"], "host-a");
    assert_eq!(view["delivered"], true);
    assert_eq!(view["status"], "stopped");

    // Status reports from the host show up in the API.
    let id = view["id"].as_i64().unwrap();
    let seq = host.seq;
    host.seq += 1;
    host.send(json!({"type": "event", "seq": seq, "name": "instance_status", "data": {"id": id, "status": "running", "game_port": 34197}})).await;
    let mut status = Value::Null;
    for _ in 0..50 {
        status = get(&c, &admin, "/api/v1/instances/i1").await;
        if status["status"] == "running" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(status["status"], "running");
    assert_eq!(status["game_port"], 34197);

    // While the host is away, its instances show as unknown; reconnecting with its own token
    // gives it its desired state again.
    drop(host);
    let mut unknown = false;
    for _ in 0..100 {
        if get(&c, &admin, "/api/v1/instances/i1").await["status"] == "unknown" {
            unknown = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(unknown);
    let mut host = LinkClient::connect(&c.ws_url(), "host", &host_token, None, None).await;
    assert!(host.ready.get("host_token").is_none());
    let sync = host.next().await.unwrap();
    assert_eq!(sync["name"], "instances_sync");
    assert_eq!(sync["data"]["instances"][0]["name"], "i1");

    // Revoking the host closes its link and its token stops working.
    let (s, _) = post(&c, &admin, "/api/v1/hosts/host-a/revoke", json!({})).await;
    assert_eq!(s, 200);
    let mut closed = false;
    while let Some(f) = next_json(&mut host.ws).await {
        if f["type"] == "close" {
            closed = true;
            break;
        }
    }
    assert!(closed);
    let (_, r) = LinkClient::hello(
        &c.ws_url(),
        json!({"type": "hello", "version": 1, "role": "host", "token": host_token}),
    )
    .await;
    assert_eq!(r["code"], "unauthorized");
    let names: HashSet<String> = get(&c, &admin, "/api/v1/hosts")
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap().into())
        .collect();
    assert!(names.contains("host-a"));
}
