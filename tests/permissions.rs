//! Privilege escalation, the last admin, and hosts speaking for games they do not run — each
//! reproduced as an attacker would (issue 22), against the real controller.

mod common;

use common::cluster::{Api, HostProcess, create_and_start, rcon};
use common::link::LinkClient;
use common::{ControllerProcess, bin, join_token};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Creates a role with `permissions` and a user holding only it; returns (role id, their API).
async fn user_with(admin: &Api, name: &str, permissions: &[&str]) -> (i64, Api) {
    let (s, role) = admin
        .post(
            "/api/v1/roles",
            json!({ "name": format!("{name}-role"), "permissions": permissions }),
        )
        .await;
    assert_eq!(s, 201, "{role}");
    let id = role["id"].as_i64().unwrap();
    let (s, v) = admin
        .post("/api/v1/users", json!({ "name": name, "roles": [id] }))
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, t) = admin.post("/api/v1/tokens", json!({ "user": name })).await;
    assert_eq!(s, 201, "{t}");
    (id, Api::new(&admin.base, t["token"].as_str().unwrap()))
}

async fn patch(api: &Api, path: &str, body: Value) -> (u16, Value) {
    api.call("PATCH", path, Some(body)).await
}

async fn permissions_of(api: &Api) -> Vec<String> {
    let (s, me) = api.call("GET", "/api/v1/me", None).await;
    assert_eq!(s, 200, "{me}");
    serde_json::from_value(me["permissions"].clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_grants_what_they_do_not_hold_and_one_admin_always_remains() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = ControllerProcess::start(dir.path());
    let admin = Api::new(&c.url(""), &c.first_token);

    // core.user.update_roles alone: cannot give themselves Cluster Admin (role 0), nor the
    // Player role's permissions they lack; may still take roles away.
    let (eve_role, eve) = user_with(&admin, "eve", &["core.user.update_roles"]).await;
    let (s, v) = patch(&eve, "/api/v1/users/eve", json!({ "roles": [eve_role, 0] })).await;
    assert_eq!(s, 403, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("core.admin"),
        "{v}"
    );
    let (s, v) = patch(&eve, "/api/v1/users/eve", json!({ "roles": [eve_role, 1] })).await;
    assert_eq!(s, 403, "granted the Player role's permissions: {v}");
    assert_eq!(permissions_of(&eve).await, ["core.user.update_roles"]);
    let (s, v) = admin
        .post("/api/v1/users", json!({ "name": "victim", "roles": [1] }))
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = patch(&eve, "/api/v1/users/victim", json!({ "roles": [] })).await;
    assert_eq!(s, 200, "taking roles away is allowed: {v}");

    // core.role.update alone: cannot add core.admin (or anything else) to their own role, nor
    // to the Player role.
    let (rob_role, rob) = user_with(&admin, "rob", &["core.role.update"]).await;
    for (role, perms) in [
        (rob_role, json!(["core.role.update", "core.admin"])),
        (
            rob_role,
            json!(["core.role.update", "core.instance.delete"]),
        ),
        (1, json!(["core.admin"])),
    ] {
        let (s, v) = patch(
            &rob,
            &format!("/api/v1/roles/{role}"),
            json!({ "permissions": perms }),
        )
        .await;
        assert_eq!(s, 403, "role {role} += {perms}: {v}");
    }
    assert_eq!(permissions_of(&rob).await, ["core.role.update"]);
    let (_, roles) = admin.call("GET", "/api/v1/roles", None).await;
    let player = roles
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == 1)
        .unwrap();
    assert!(
        !player["permissions"]
            .as_array()
            .unwrap()
            .contains(&json!("core.admin")),
        "{player}"
    );
    // core.role.create: a new role only with what they hold.
    let (_, carl) = user_with(&admin, "carl", &["core.role.create"]).await;
    let (s, v) = carl
        .post(
            "/api/v1/roles",
            json!({ "name": "mine", "permissions": ["core.admin"] }),
        )
        .await;
    assert_eq!(s, 403, "{v}");

    // core.user.revoke_other_token: no token for admin, or for anyone holding more.
    let (_, tom) = user_with(&admin, "tom", &["core.user.revoke_other_token"]).await;
    let (s, v) = tom.post("/api/v1/tokens", json!({ "user": "admin" })).await;
    assert_eq!(s, 403, "minted a token for admin: {v}");
    assert!(v.get("token").is_none(), "{v}");
    let (s, v) = tom.post("/api/v1/tokens", json!({ "user": "rob" })).await;
    assert_eq!(s, 403, "minted a token for a user with more: {v}");
    let (s, v) = tom
        .post("/api/v1/tokens", json!({ "user": "victim" }))
        .await;
    assert_eq!(s, 201, "victim holds nothing tom lacks: {v}");

    // The only admin cannot drop their own admin role, be deleted, or lose it through a role.
    let (s, v) = patch(&admin, "/api/v1/users/admin", json!({ "roles": [1] })).await;
    assert_eq!(s, 409, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("without an administrator"),
        "{v}"
    );
    let (s, v) = admin.call("DELETE", "/api/v1/users/admin", None).await;
    assert_eq!(s, 409, "{v}");
    assert!(
        permissions_of(&admin)
            .await
            .contains(&"core.admin".to_string())
    );
    // With a second admin, the first may step down.
    let (s, v) = admin
        .post("/api/v1/users", json!({ "name": "second", "roles": [0] }))
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = patch(&admin, "/api/v1/users/admin", json!({ "roles": [1] })).await;
    assert_eq!(s, 200, "{v}");
    let (s, _) = admin.call("DELETE", "/api/v1/users/second", None).await;
    assert_eq!(s, 403, "admin is no longer an admin");

    // Offline recovery: `clustorio controller admin --user NAME`, then a token for them.
    c.console("stop");
    assert_eq!(c.wait_exit(Duration::from_secs(20)), Some(0));
    let run = |args: &[&str]| {
        let out = std::process::Command::new(bin("clustorio"))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let d = dir.path().to_str().unwrap();
    let said = run(&["controller", "admin", "--dir", d, "--user", "admin"]);
    assert!(said.contains("Cluster Admin"), "{said}");
    let token = run(&["controller", "token", "--dir", d, "--user", "admin"]);
    let c = ControllerProcess::start(dir.path());
    let back = Api::new(&c.url(""), &token);
    assert!(
        permissions_of(&back)
            .await
            .contains(&"core.admin".to_string())
    );
    let (_, audit) = back.call("GET", "/api/v1/audit?limit=50", None).await;
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "user.restore_admin" && e["target"] == "admin"),
        "{audit}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_cannot_speak_for_instances_it_does_not_run() {
    let root = tempfile::tempdir().unwrap();
    let cdir = root.path().join("c");
    std::fs::create_dir_all(&cdir).unwrap();
    let c = ControllerProcess::start(&cdir);
    let api = Api::new(&c.url(""), &c.first_token);
    let join = join_token(&cdir);
    let _h1 = HostProcess::start(&root.path().join("h1"), &c.url(""), &join, "h1", &[]);
    create_and_start(&api, "a", "h1", json!({})).await;
    let id = api
        .wait_for("/api/v1/instances/a", |v| v["status"] == "running")
        .await["id"]
        .as_i64()
        .unwrap();

    let mut watcher = LinkClient::connect(&c.ws_url(), "control", &c.first_token, None, None).await;
    // Anyone with the join token can register a host; this one lies about instance a.
    let mut intruder =
        LinkClient::connect(&c.ws_url(), "host", &join, Some("intruder"), None).await;
    intruder
        .send(json!({"type": "event", "seq": 1, "name": "instance_status",
            "data": {"id": id, "status": "running", "players": ["mallory"], "message": "spoofed"}}))
        .await;
    intruder
        .send(json!({"type": "event", "seq": 2, "name": "instance_log",
            "data": {"id": id, "name": "a", "line": "[CHAT] mallory: SPOOFED LINE"}}))
        .await;
    intruder
        .send(json!({"type": "event", "seq": 3, "name": "instance_log",
            "data": {"instance_id": id, "line": "[CHAT] mallory: SPOOFED LINE 2"}}))
        .await;
    intruder
        .send(json!({"type": "event", "seq": 4, "name": "player_event",
            "data": {"instance_id": id, "type": "join", "name": "mallory"}}))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // A real line from the real host, to know the intruder's events had their chance.
    rcon(&api, "a", "/standin chat alice REAL MARKER").await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        assert!(Instant::now() < deadline, "the real log line never arrived");
        let Some(f) = watcher.next().await else {
            panic!("the watcher's link closed")
        };
        if f["type"] != "event" {
            continue;
        }
        let text = f["data"].to_string();
        assert!(
            !text.contains("SPOOFED") && !text.contains("mallory"),
            "a subscriber saw the intruder's event: {f}"
        );
        if let Some(seq) = f["seq"].as_u64() {
            watcher.ack(seq).await;
        }
        if text.contains("REAL MARKER") {
            break;
        }
    }
    let v = api.get("/api/v1/instances/a").await;
    assert_eq!(v["players_online"], json!([]), "{v}");
    assert_ne!(v["message"], "spoofed", "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_sessions_and_log_streams_lose_what_their_user_loses() {
    let root = tempfile::tempdir().unwrap();
    let cdir = root.path().join("c");
    std::fs::create_dir_all(&cdir).unwrap();
    let c = ControllerProcess::start(&cdir);
    let admin = Api::new(&c.url(""), &c.first_token);
    let _h1 = HostProcess::start(
        &root.path().join("h1"),
        &c.url(""),
        &join_token(&cdir),
        "h1",
        &[],
    );
    create_and_start(&admin, "a", "h1", json!({})).await;
    admin
        .wait_for("/api/v1/instances/a", |v| v["status"] == "running")
        .await;
    let (role, watcher) = user_with(
        &admin,
        "watcher",
        &[
            "core.control.connect",
            "core.instance.subscribe",
            "core.log.follow",
            "core.instance.list",
        ],
    )
    .await;
    let mut link = LinkClient::connect(&c.ws_url(), "control", &watcher.token, None, None).await;
    let mut stream = reqwest::Client::new()
        .get(c.url("/api/v1/instances/a/logs?follow=1"))
        .bearer_auth(&watcher.token)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);

    // Both see a line while they may.
    rcon(&admin, "a", "/standin chat alice BEFORE").await;
    let mut body = String::new();
    while !body.contains("BEFORE") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.chunk())
            .await
            .expect("the stream showed nothing")
            .unwrap()
            .expect("the stream ended early");
        body.push_str(&String::from_utf8_lossy(&chunk));
    }
    wait_event(&mut link, |f| {
        f["name"] == "instance_log" && f.to_string().contains("BEFORE")
    })
    .await;

    // core.log.follow is taken away: neither gets the next line; the stream ends.
    let (s, v) = patch(
        &admin,
        &format!("/api/v1/roles/{role}"),
        json!({ "permissions": ["core.control.connect", "core.instance.subscribe", "core.instance.list"] }),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    rcon(&admin, "a", "/standin chat alice AFTER").await;
    let rest = tokio::time::timeout(Duration::from_secs(10), async {
        let mut rest = String::new();
        while let Ok(Some(chunk)) = stream.chunk().await {
            rest.push_str(&String::from_utf8_lossy(&chunk));
        }
        rest
    })
    .await
    .expect("the log stream kept going after core.log.follow was removed");
    assert!(!rest.contains("AFTER"), "{rest}");
    // Instance updates still come (core.instance.subscribe is kept); the line did not.
    let (s, v) = patch(
        &admin,
        "/api/v1/instances/a",
        json!({ "config": { "server_settings": { "description": "marker" } } }),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let seen = wait_event(&mut link, |f| f["name"] == "instance_updated").await;
    assert!(
        !seen.iter().any(|f| f.to_string().contains("AFTER")),
        "{seen:?}"
    );

    // The user is deleted: the session is closed.
    let (s, v) = admin.call("DELETE", "/api/v1/users/watcher", None).await;
    assert_eq!(s, 200, "{v}");
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match link.next().await {
                None => return "socket closed".to_string(),
                Some(f) if f["type"] == "close" => return f.to_string(),
                Some(_) => continue,
            }
        }
    })
    .await
    .expect("the session stayed open after its user was deleted");
    assert!(!end.is_empty());
}

/// Reads link events (acking them) until one matches; returns every frame read.
async fn wait_event(link: &mut LinkClient, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut seen = Vec::new();
    loop {
        assert!(Instant::now() < deadline, "no such event; saw {seen:#?}");
        let f = link.next().await.expect("the link closed");
        if let Some(seq) = f["seq"].as_u64() {
            link.ack(seq).await;
        }
        let hit = f["type"] == "event" && pred(&f);
        seen.push(f);
        if hit {
            return seen;
        }
    }
}
