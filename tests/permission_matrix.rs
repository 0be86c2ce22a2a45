//! Every documented route × role × permission (issue 22, must-show 1): each route of
//! `docs/api.md` is called without a token, by a user with no role, by a Player, and by a user
//! holding exactly the permissions the route names when it refuses — so a route that forgets its
//! check, or checks the wrong permission, fails here. New routes are covered by documenting them.

mod common;

use common::cluster::Api;
use common::link::LinkClient;
use common::{ControllerProcess, bin};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;

/// One row of the API reference: method, path (placeholders filled in) and its permission cell.
#[derive(Debug)]
struct Route {
    method: String,
    path: String,
    doc_permission: String,
    body: Value,
}

/// Reads every `| \`METHOD /path\` | … | permission |` row of `docs/api.md`.
fn documented_routes() -> Vec<Route> {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/api.md")).unwrap();
    let mut routes = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("| `") else {
            continue;
        };
        let Some((code, _)) = rest.split_once('`') else {
            continue;
        };
        let Some((method, path)) = code.split_once(' ') else {
            continue;
        };
        if !["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&method) {
            continue;
        }
        let path = path.split_whitespace().next().unwrap_or_default();
        let cells: Vec<&str> = line.split('|').collect();
        let doc_permission = cells
            .iter()
            .rev()
            .find(|c| !c.trim().is_empty())
            .map(|c| c.trim().to_string())
            .unwrap_or_default();
        routes.push(Route {
            method: method.to_string(),
            path: fill(path),
            doc_permission,
            body: real_body(method, &fill(path)),
        });
    }
    routes
}

/// Fills `{id}`-style placeholders with the fixtures' names; `{a|b}` takes `a`.
fn fill(path: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let Some(len) = rest[start..].find('}') else {
            break;
        };
        let name = &rest[start + 1..start + len];
        let first = name.split('|').next().unwrap_or(name);
        let numeric = out.ends_with("/roles/") || out.ends_with("/tokens/");
        out.push_str(match first {
            "id" if numeric => "9999",
            "id" | "i" | "instance" => "target",
            "host" | "h" => "nohost",
            "name" | "user" | "player" => "victim",
            "save" | "file" | "backup" | "mod" => "x.zip",
            "role" => "9999",
            other if name.contains('|') => other,
            _ => "x",
        });
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    // The reference's "?limit=N" examples: placeholders in queries need a value.
    out.replace("=N", "=1")
        .replace("=NAME", "=victim")
        .replace("=S", "=a")
}

fn is_public(r: &Route) -> bool {
    r.doc_permission == "none"
        || r.path.starts_with("/status")
        || r.path.starts_with("/player_auth/")
}

fn any_user(r: &Route) -> bool {
    r.doc_permission.starts_with("any user")
}

/// A value for a body field the controller says is missing (the matrix is about permissions,
/// so bodies only need to parse).
fn value_for(field: &str) -> Value {
    match field {
        "config" | "data" => json!({}),
        "permissions" | "roles" => json!([]),
        "to_instance" | "instance" => json!("target"),
        "action" => json!("start"),
        "command" => json!("/version"),
        "field" => json!("server_settings.game_password"),
        "to" => json!("renamed.zip"),
        "user" => json!("victim"),
        "text" | "message" | "reason" => json!("hello"),
        _ => json!("matrix-value"),
    }
}

/// The field a 400 says is missing ("missing field `name`").
fn missing_field(body: &Value) -> Option<String> {
    let m = body["error"]["message"].as_str()?;
    let rest = m.split("missing field `").nth(1)?;
    Some(rest.split('`').next()?.to_string())
}

/// Completes a body the controller finds incomplete, field by field, asking as the admin (so the
/// body is known to parse before the roles are tried).
async fn complete_body(client: &reqwest::Client, base: &str, admin: &str, r: &mut Route) {
    if !matches!(r.method.as_str(), "POST" | "PATCH" | "PUT") {
        return;
    }
    for _ in 0..6 {
        let (s, body) = call(client, base, Some(admin), r).await;
        let Some(field) = missing_field(&body).filter(|_| s == 400) else {
            return;
        };
        r.body[field.as_str()] = value_for(&field);
    }
}

/// Calls a route with a short timeout (follow streams never end; that is not a refusal).
async fn call(
    client: &reqwest::Client,
    base: &str,
    token: Option<&str>,
    r: &Route,
) -> (u16, Value) {
    let path = if r.path == "/metrics" {
        r.path.clone()
    } else {
        format!("/api/v1{}", r.path)
    };
    let method = reqwest::Method::from_bytes(r.method.as_bytes()).unwrap();
    let mut req = client
        .request(method, format!("{base}{path}"))
        .timeout(Duration::from_secs(3));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if matches!(r.method.as_str(), "POST" | "PATCH" | "PUT") {
        req = req.json(&r.body);
    }
    match req.send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let body = tokio::time::timeout(Duration::from_secs(2), resp.bytes())
                .await
                .ok()
                .and_then(Result::ok)
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or(Value::Null);
            (status, body)
        }
        // A stream that keeps the reply open: accepted, not refused.
        Err(e) if e.is_timeout() => (200, Value::Null),
        Err(e) => panic!("{} {}: {e}", r.method, r.path),
    }
}

/// The permission a 403 names: "user 'x' lacks the permission core.y", or the grant rule's
/// "user 'x' cannot grant core.y: they do not hold it themselves".
fn named_permission(body: &Value) -> Option<String> {
    let m = body["error"]["message"].as_str()?;
    let p = if let Some(rest) = m.split("lacks the permission ").nth(1) {
        rest
    } else {
        m.split("cannot grant ").nth(1)?.split(':').next()?
    };
    Some(p.trim().trim_end_matches('.').to_string())
}

/// A body for the routes where an empty one is a no-op that needs less than the real thing.
fn real_body(method: &str, path: &str) -> Value {
    match (method, path) {
        ("PATCH", "/users/victim") => json!({ "is_whitelisted": true }),
        _ => json!({}),
    }
}

async fn user_with(admin: &Api, name: &str, permissions: &[String]) -> String {
    let (s, role) = admin
        .post(
            "/api/v1/roles",
            json!({ "name": format!("{name}-role"), "permissions": permissions }),
        )
        .await;
    assert_eq!(s, 201, "{role}");
    let (s, v) = admin
        .post(
            "/api/v1/users",
            json!({ "name": name, "roles": [role["id"]] }),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    token(admin, name).await
}

async fn token(admin: &Api, name: &str) -> String {
    let (s, t) = admin.post("/api/v1/tokens", json!({ "user": name })).await;
    assert_eq!(s, 201, "{t}");
    t["token"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_checks_its_permission_for_every_role() {
    let _ = bin("clustorio");
    let dir = tempfile::tempdir().unwrap();
    let c = ControllerProcess::start(dir.path());
    let base = c.url("");
    let admin = Api::new(&base, &c.first_token);
    let client = reqwest::Client::new();

    let mut routes = documented_routes();
    assert!(
        routes.len() > 60,
        "the reference lists the routes: {}",
        routes.len()
    );
    let known: BTreeSet<String> = admin
        .get("/api/v1/permissions")
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    let roles = admin.get("/api/v1/roles").await;
    let player_role = roles
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "Player")
        .expect("a Player role")
        .clone();
    let player_may: BTreeSet<String> = player_role["permissions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();

    let (s, v) = admin
        .post("/api/v1/users", json!({ "name": "nobody", "roles": [] }))
        .await;
    assert_eq!(s, 201, "{v}");
    let nobody = token(&admin, "nobody").await;
    let (s, v) = admin
        .post(
            "/api/v1/users",
            json!({ "name": "player", "roles": [player_role["id"]] }),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let player = token(&admin, "player").await;

    let mut checked = 0;
    let mut problems = Vec::new();
    for (n, r) in routes.iter_mut().enumerate() {
        // Fresh fixtures for each route: an earlier DELETE must not turn a refusal into a 404.
        let _ = admin
            .post("/api/v1/instances", json!({ "name": "target" }))
            .await;
        let _ = admin
            .post("/api/v1/users", json!({ "name": "victim" }))
            .await;
        complete_body(&client, &base, &c.first_token, r).await;
        let r = &*r;
        let what = format!("{} {}", r.method, r.path);

        let (s, body) = call(&client, &base, None, r).await;
        if is_public(r) {
            if s == 401 || s == 403 {
                problems.push(format!("{what}: public, but {s} without a token: {body}"));
            }
            continue;
        }
        if r.path == "/metrics" {
            continue; // its own rule: metrics_public or a scraper's token
        }
        if s != 401 {
            problems.push(format!("{what}: {s} without a token (want 401): {body}"));
        }

        let (s, body) = call(&client, &base, Some(&nobody), r).await;
        if any_user(r) {
            if s == 401 || s == 403 {
                problems.push(format!(
                    "{what}: any user may, but a user with no role got {s}"
                ));
            }
            continue;
        }
        if s != 403 {
            problems.push(format!(
                "{what}: a user with no role got {s} (want 403): {body}"
            ));
            continue;
        }

        // Grant exactly what it names until it stops refusing; each named permission must be
        // a real one, and the route must then let the user through.
        let mut granted: Vec<String> = Vec::new();
        let mut body = body;
        let mut passed = false;
        for round in 0..40 {
            let Some(p) = named_permission(&body) else {
                problems.push(format!("{what}: a 403 that names no permission: {body}"));
                break;
            };
            if !known.contains(&p) {
                problems.push(format!(
                    "{what}: refuses for '{p}', which is not a permission"
                ));
                break;
            }
            if granted.contains(&p) {
                problems.push(format!("{what}: still refuses for {p} once it is held"));
                break;
            }
            granted.push(p);
            let t = user_with(&admin, &format!("u{n}-{round}"), &granted).await;
            let (s, b) = call(&client, &base, Some(&t), r).await;
            if s != 403 {
                passed = s != 401;
                break;
            }
            body = b;
        }
        if !passed {
            problems.push(format!("{what}: not reachable with {granted:?}"));
            continue;
        }
        // The documented permission is the one checked (the reference says "same" for a row
        // sharing the one above it).
        if !r.doc_permission.starts_with("same")
            && !granted.iter().any(|p| {
                let last = p.rsplit('.').next().unwrap_or(p);
                r.doc_permission.contains(p.as_str()) || r.doc_permission.contains(last)
            })
        {
            problems.push(format!(
                "{what}: checks {granted:?}, the reference says '{}'",
                r.doc_permission
            ));
        }

        // The Player role: refused exactly when it lacks the first permission the route needs.
        let (s, body) = call(&client, &base, Some(&player), r).await;
        let needs = &granted[0];
        let has = player_may.contains(needs);
        if !has && s != 403 {
            problems.push(format!("{what}: Player lacks {needs} but got {s}: {body}"));
        }
        if has && s == 403 && named_permission(&body).as_deref() == Some(needs.as_str()) {
            problems.push(format!(
                "{what}: Player holds {needs} but was refused for it"
            ));
        }
        checked += 1;
    }
    println!("permission matrix: {checked} routes checked against 4 roles");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The link request names the reference lists ("`user_list|get|create`" → user_list, user_get,
/// user_create).
fn documented_link_requests() -> Vec<String> {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/api.md")).unwrap();
    let start = text
        .find("Every REST request is also available as a link request")
        .expect("the reference lists the link requests");
    let para = text[start..].split("\n\n").next().unwrap_or_default();
    let mut names = BTreeSet::new();
    for (i, span) in para.split('`').enumerate() {
        if i % 2 == 0 || span.contains([' ', '{', '/', '.']) {
            continue;
        }
        let alts: Vec<&str> = span.split('|').collect();
        let prefix = alts[0].rfind('_').map_or("", |at| &alts[0][..=at]);
        names.insert(alts[0].to_string());
        for alt in &alts[1..] {
            names.insert(format!("{prefix}{alt}"));
        }
    }
    names.into_iter().collect()
}

/// Sends one link request and returns its response frame.
async fn link_call(link: &mut LinkClient, name: &str, data: &Value) -> Value {
    let id = link.request(name, data.clone()).await;
    link.response(id).await
}

fn link_error_code(resp: &Value) -> Option<&str> {
    resp["error"]["code"].as_str()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_link_request_checks_its_permission() {
    let dir = tempfile::tempdir().unwrap();
    let c = ControllerProcess::start(dir.path());
    let admin = Api::new(&c.url(""), &c.first_token);
    let ws = c.ws_url();
    let names = documented_link_requests();
    assert!(
        names.len() > 50,
        "the reference names the link requests: {names:?}"
    );
    let mut root = LinkClient::connect(&ws, "control", &c.first_token, None, None).await;
    let connect = vec!["core.control.connect".to_string()];
    let only_connect = user_with(&admin, "link-only", &connect).await;
    let mut bare = LinkClient::connect(&ws, "control", &only_connect, None, None).await;

    let mut problems = Vec::new();
    let mut checked = 0;
    for (n, name) in names.iter().enumerate() {
        let _ = admin
            .post("/api/v1/instances", json!({ "name": "target" }))
            .await;
        let _ = admin
            .post("/api/v1/users", json!({ "name": "victim" }))
            .await;
        // A body that parses, found as the admin.
        let mut data = json!({});
        for _ in 0..6 {
            let resp = link_call(&mut root, name, &data).await;
            let missing = link_error_code(&resp)
                .filter(|c| *c == "bad_request")
                .and_then(|_| missing_field(&resp));
            let Some(field) = missing else { break };
            data[field.as_str()] = match field.as_str() {
                "host" => json!("nohost"),
                "id" => json!(9999),
                "save" | "file" => json!("x.zip"),
                "name" => json!(format!("matrix-{n}")),
                other => value_for(other),
            };
        }
        let resp = link_call(&mut bare, name, &data).await;
        if link_error_code(&resp) == Some("unknown_request") {
            problems.push(format!(
                "{name}: documented, but the controller does not know it"
            ));
            continue;
        }
        if link_error_code(&resp) != Some("forbidden") {
            // Needs nothing beyond connecting: only what the reference says any user may do.
            if !["status", "me", "config_schema"].contains(&name.as_str()) {
                problems.push(format!(
                    "{name}: allowed with only core.control.connect: {resp}"
                ));
            }
            continue;
        }
        let mut granted = connect.clone();
        let mut resp = resp;
        let mut passed = false;
        for round in 0..40 {
            let Some(p) = named_permission(&resp) else {
                problems.push(format!("{name}: refused naming no permission: {resp}"));
                break;
            };
            if granted.contains(&p) {
                problems.push(format!("{name}: still refused for {p} once it is held"));
                break;
            }
            granted.push(p);
            let t = user_with(&admin, &format!("l{n}-{round}"), &granted).await;
            let mut link = LinkClient::connect(&ws, "control", &t, None, None).await;
            resp = link_call(&mut link, name, &data).await;
            if link_error_code(&resp) != Some("forbidden") {
                passed = true;
                break;
            }
        }
        if !passed {
            problems.push(format!("{name}: not reachable with {granted:?}"));
            continue;
        }
        checked += 1;
    }
    println!("permission matrix: {checked} link requests checked");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
