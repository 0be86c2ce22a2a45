//! The controller as a user sees it: start-up, the console, tokens and permissions on every route.

mod common;

use common::{ControllerProcess, join_token, user_token};
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;

/// Every route, with a body where it takes one. `{i}` is an existing instance.
const ROUTES: &[(&str, &str)] = &[
    ("GET", "/api/v1/me"),
    ("GET", "/api/v1/permissions"),
    ("GET", "/api/v1/users"),
    ("POST", "/api/v1/users"),
    ("GET", "/api/v1/users/admin"),
    ("PATCH", "/api/v1/users/admin"),
    ("DELETE", "/api/v1/users/admin"),
    ("POST", "/api/v1/users/admin/revoke-tokens"),
    ("GET", "/api/v1/tokens"),
    ("POST", "/api/v1/tokens"),
    ("DELETE", "/api/v1/tokens/1"),
    ("GET", "/api/v1/roles"),
    ("POST", "/api/v1/roles"),
    ("PATCH", "/api/v1/roles/1"),
    ("DELETE", "/api/v1/roles/5"),
    ("GET", "/api/v1/hosts"),
    ("POST", "/api/v1/hosts/1/revoke"),
    ("GET", "/api/v1/join-token"),
    ("POST", "/api/v1/join-token/rotate"),
    ("GET", "/api/v1/instances"),
    ("POST", "/api/v1/instances"),
    ("GET", "/api/v1/instances/{i}"),
    ("PATCH", "/api/v1/instances/{i}"),
    ("DELETE", "/api/v1/instances/{i}"),
    ("POST", "/api/v1/instances/{i}/assign"),
    ("GET", "/api/v1/audit"),
    ("GET", "/metrics"),
];

async fn call(
    client: &Client,
    c: &ControllerProcess,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = client.request(Method::from_bytes(method.as_bytes()).unwrap(), c.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test]
async fn starts_prints_started_and_answers_status_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let c = ControllerProcess::start_with(dir.path(), &[("CLUSTER_NAME", "Test Cluster")]);
    assert!(
        c.first_token.starts_with("clu_"),
        "first boot prints a login token"
    );
    let client = Client::new();
    let (status, body) = call(&client, &c, "GET", "/api/v1/status", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["cluster_name"], "Test Cluster");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    // The first token works.
    let (status, users) = call(
        &client,
        &c,
        "GET",
        "/api/v1/users",
        Some(&c.first_token),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(users[0]["name"], "admin");
    assert_eq!(users[0]["roles"], json!([0]));
}

#[tokio::test]
async fn every_route_refuses_missing_wrong_revoked_and_host_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let c = ControllerProcess::start(dir.path());
    let client = Client::new();
    let admin = c.first_token.clone();
    let (_, inst) = call(
        &client,
        &c,
        "POST",
        "/api/v1/instances",
        Some(&admin),
        Some(json!({"name": "alpha"})),
    )
    .await;
    let id = inst["id"].as_i64().unwrap().to_string();

    // A token that worked, then was revoked.
    let revoked = user_token(dir.path(), "admin");
    let (status, _) = call(&client, &c, "GET", "/api/v1/users", Some(&revoked), None).await;
    assert_eq!(status, StatusCode::OK);
    let (_, tokens) = call(
        &client,
        &c,
        "GET",
        "/api/v1/tokens?user=admin",
        Some(&admin),
        None,
    )
    .await;
    let last = tokens.as_array().unwrap().last().unwrap()["id"]
        .as_i64()
        .unwrap();
    let (status, _) = call(
        &client,
        &c,
        "DELETE",
        &format!("/api/v1/tokens/{last}"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let join = join_token(dir.path());

    for (method, path) in ROUTES {
        let path = path.replace("{i}", &id);
        let body = Some(json!({}));
        let (s, b) = call(&client, &c, method, &path, None, body.clone()).await;
        assert_eq!(
            s,
            StatusCode::UNAUTHORIZED,
            "{method} {path} without a token: {b}"
        );
        assert!(
            b["error"]["code"].is_string(),
            "{method} {path}: JSON error body"
        );
        let (s, _) = call(&client, &c, method, &path, Some("clu_wrong"), body.clone()).await;
        assert_eq!(
            s,
            StatusCode::UNAUTHORIZED,
            "{method} {path} with a wrong token"
        );
        let (s, _) = call(&client, &c, method, &path, Some(&revoked), body.clone()).await;
        assert_eq!(
            s,
            StatusCode::UNAUTHORIZED,
            "{method} {path} with a revoked token"
        );
        let (s, _) = call(&client, &c, method, &path, Some(&join), body.clone()).await;
        assert_eq!(
            s,
            StatusCode::FORBIDDEN,
            "{method} {path} with the join token"
        );
    }
    // Nothing was changed by any of the refused calls.
    let (_, users) = call(&client, &c, "GET", "/api/v1/users", Some(&admin), None).await;
    assert_eq!(users.as_array().unwrap().len(), 1);
    let (_, instances) = call(&client, &c, "GET", "/api/v1/instances", Some(&admin), None).await;
    assert_eq!(instances.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn users_without_a_permission_are_refused_what_needs_it() {
    let dir = tempfile::tempdir().unwrap();
    let c = ControllerProcess::start(dir.path());
    let client = Client::new();
    let admin = c.first_token.clone();
    // A plain player: the default role can list but not create or change.
    let (s, player) = call(
        &client,
        &c,
        "POST",
        "/api/v1/users",
        Some(&admin),
        Some(json!({"name": "Player1"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{player}");
    assert_eq!(player["roles"], json!([1]));
    let (s, t) = call(
        &client,
        &c,
        "POST",
        "/api/v1/tokens",
        Some(&admin),
        Some(json!({"user": "player1"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let player_token = t["token"].as_str().unwrap().to_string();
    let (s, me) = call(&client, &c, "GET", "/api/v1/me", Some(&player_token), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(me["name"], "Player1");
    let perms = me["permissions"].as_array().unwrap();
    assert!(perms.iter().any(|p| p == "core.instance.list"));
    assert!(!perms.iter().any(|p| p == "core.instance.create"));

    let (s, _) = call(
        &client,
        &c,
        "GET",
        "/api/v1/instances",
        Some(&player_token),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, b) = call(
        &client,
        &c,
        "POST",
        "/api/v1/instances",
        Some(&player_token),
        Some(json!({"name": "x"})),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(b["error"]["code"], "forbidden");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("core.instance.create")
    );
    for (method, path, body) in [
        ("GET", "/api/v1/audit", None),
        ("GET", "/api/v1/join-token", None),
        (
            "PATCH",
            "/api/v1/users/admin",
            Some(json!({"is_banned": true, "ban_reason": "x"})),
        ),
        ("POST", "/api/v1/roles", Some(json!({"name": "r"}))),
        ("DELETE", "/api/v1/users/admin", None),
        ("POST", "/api/v1/users/admin/revoke-tokens", None),
    ] {
        let (s, _) = call(&client, &c, method, path, Some(&player_token), body).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{method} {path} as a player");
    }
    // A player may revoke their own tokens.
    let (s, _) = call(
        &client,
        &c,
        "GET",
        "/api/v1/tokens?user=player1",
        Some(&player_token),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);

    // Grant a role with just core.instance.create: creating works, deleting still does not.
    let (s, role) = call(
        &client,
        &c,
        "POST",
        "/api/v1/roles",
        Some(&admin),
        Some(json!({"name": "Creator", "permissions": ["core.instance.create"]})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{role}");
    assert!(role["id"].as_i64().unwrap() >= 5);
    let (s, _) = call(
        &client,
        &c,
        "PATCH",
        "/api/v1/users/player1",
        Some(&admin),
        Some(json!({"roles": [1, role["id"]]})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = call(
        &client,
        &c,
        "POST",
        "/api/v1/instances",
        Some(&player_token),
        Some(json!({"name": "x"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = call(
        &client,
        &c,
        "DELETE",
        "/api/v1/instances/x",
        Some(&player_token),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // Unknown permissions are refused when defining roles.
    let (s, b) = call(
        &client,
        &c,
        "POST",
        "/api/v1/roles",
        Some(&admin),
        Some(json!({"name": "Bad", "permissions": ["core.fly"]})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
}

#[tokio::test]
async fn metrics_need_a_token_unless_public_and_name_clustorio_series() {
    let dir = tempfile::tempdir().unwrap();
    let c = ControllerProcess::start(dir.path());
    let client = Client::new();
    let (s, _) = call(&client, &c, "GET", "/metrics", None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    call(
        &client,
        &c,
        "POST",
        "/api/v1/instances",
        Some(&c.first_token),
        Some(json!({"name": "m"})),
    )
    .await;
    let resp = client
        .get(c.url("/metrics"))
        .bearer_auth(&c.first_token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.text().await.unwrap();
    for series in [
        "\nprocess_resident_memory_bytes ",
        "clustorio_hosts{state=\"connected\"} 0",
        "clustorio_hosts{state=\"total\"} 0",
        "clustorio_instances{status=\"unassigned\"} 1",
        "clustorio_http_requests_total{method=\"POST\",route=\"/instances\",status=\"201\"} 1",
        "clustorio_link_sessions",
    ] {
        assert!(text.contains(series), "missing {series} in\n{text}");
    }

    let dir2 = tempfile::tempdir().unwrap();
    std::fs::write(
        dir2.path().join("config-master.json"),
        r#"{"metrics_public": true}"#,
    )
    .unwrap();
    let c2 = ControllerProcess::start(dir2.path());
    let (s, _) = call(&client, &c2, "GET", "/metrics", None, None).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn users_roles_instances_and_audit_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let c = ControllerProcess::start(dir.path());
    let client = Client::new();
    let t = c.first_token.clone();
    let (s, i) = call(
        &client,
        &c,
        "POST",
        "/api/v1/instances",
        Some(&t),
        Some(json!({"name": "nauvis", "config": {"server_settings": {"max_players": 10}}})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(i["status"], "unassigned");
    let (s, dup) = call(
        &client,
        &c,
        "POST",
        "/api/v1/instances",
        Some(&t),
        Some(json!({"name": "nauvis"})),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{dup}");
    let (s, i) = call(
        &client,
        &c,
        "PATCH",
        "/api/v1/instances/nauvis",
        Some(&t),
        Some(json!({"config": {"server_settings": {"description": "main", "max_players": null}}})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        i["config"],
        json!({"server_settings": {"description": "main"}})
    );
    let (s, by_id) = call(
        &client,
        &c,
        "GET",
        &format!("/api/v1/instances/{}", i["id"]),
        Some(&t),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(by_id["name"], "nauvis");
    // Assigning with no host connected is refused clearly.
    let (s, b) = call(
        &client,
        &c,
        "POST",
        "/api/v1/instances/nauvis/assign",
        Some(&t),
        Some(json!({})),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no host is connected")
    );

    let (s, u) = call(
        &client,
        &c,
        "POST",
        "/api/v1/users",
        Some(&t),
        Some(json!({"name": "Griefer"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(u["is_banned"], false);
    let (s, u) = call(
        &client,
        &c,
        "PATCH",
        "/api/v1/users/griefer",
        Some(&t),
        Some(json!({"is_banned": true, "ban_reason": "spam"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(u["is_banned"], true);
    assert_eq!(u["ban_reason"], "spam");
    let (s, _) = call(
        &client,
        &c,
        "DELETE",
        "/api/v1/users/griefer",
        Some(&t),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = call(&client, &c, "GET", "/api/v1/users/griefer", Some(&t), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = call(
        &client,
        &c,
        "DELETE",
        "/api/v1/instances/nauvis",
        Some(&t),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = call(&client, &c, "DELETE", "/api/v1/roles/0", Some(&t), None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    let (s, audit) = call(&client, &c, "GET", "/api/v1/audit?limit=50", Some(&t), None).await;
    assert_eq!(s, StatusCode::OK);
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for a in [
        "instance.create",
        "instance.update_config",
        "user.create",
        "user.update",
        "user.delete",
        "instance.delete",
    ] {
        assert!(actions.contains(&a), "audit lacks {a}: {actions:?}");
    }
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["actor"] == "user:admin" && e["target"] == "Griefer")
    );
}

#[tokio::test]
async fn console_answers_commands_and_stop_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = ControllerProcess::start(dir.path());
    c.console("help");
    c.wait_line(Duration::from_secs(5), |l| l.contains("commands:"));
    c.console("teleport me");
    c.wait_line(Duration::from_secs(5), |l| {
        l.contains("unknown command 'teleport me'")
    });
    c.console("token");
    let line = c.wait_line(Duration::from_secs(5), |l| l.contains("join token"));
    assert!(line.contains(&join_token(dir.path())));
    c.console("token rotate");
    let line = c.wait_line(Duration::from_secs(5), |l| l.contains("new join token"));
    assert!(
        line.contains(&join_token(dir.path())),
        "rotation is persisted"
    );
    c.console("admin-token admin");
    let line = c.wait_line(Duration::from_secs(5), |l| l.contains("login token"));
    let token = line.rsplit(' ').next().unwrap().to_string();
    let (s, _) = call(
        &Client::new(),
        &c,
        "GET",
        "/api/v1/users",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    c.console("status");
    c.wait_line(Duration::from_secs(5), |l| l.contains("hosts 0 connected"));
    c.console("stop");
    assert_eq!(c.wait_exit(Duration::from_secs(10)), Some(0));
}

#[tokio::test]
async fn sigint_and_sigterm_stop_cleanly_and_the_token_is_not_shown_twice() {
    for sig in ["INT", "TERM"] {
        let dir = tempfile::tempdir().unwrap();
        let mut c = ControllerProcess::start(dir.path());
        assert!(!c.first_token.is_empty());
        c.signal(sig);
        assert_eq!(c.wait_exit(Duration::from_secs(10)), Some(0), "SIG{sig}");
        let mut again = ControllerProcess::start(dir.path());
        assert!(
            again.first_token.is_empty(),
            "the login token is printed on first boot only"
        );
        again.signal(sig);
        assert_eq!(again.wait_exit(Duration::from_secs(10)), Some(0));
    }
}

#[tokio::test]
async fn admin_string_creates_every_named_admin() {
    let dir = tempfile::tempdir().unwrap();
    let c = ControllerProcess::start_with(dir.path(), &[("ADMIN_STRING", "alice, Bob")]);
    let (_, users) = call(
        &Client::new(),
        &c,
        "GET",
        "/api/v1/users",
        Some(&c.first_token),
        None,
    )
    .await;
    let names: Vec<_> = users
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, vec!["alice", "Bob"]);
    assert!(
        users
            .as_array()
            .unwrap()
            .iter()
            .all(|u| u["is_admin"] == true && u["roles"] == json!([0]))
    );
}
