//! A token's owner and permissions are remembered between requests (no database read per
//! request), yet every change to tokens, users and roles counts from the very next request:
//! a revoked token, a removed permission, a removed role or a deleted user is refused at once,
//! on the API and on `/metrics`.

mod common;

use common::ControllerProcess;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

struct Caller {
    client: Client,
    base: String,
}

impl Caller {
    async fn call(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn scrape(&self, token: &str) -> StatusCode {
        self.client
            .get(format!("{}/metrics", self.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status()
    }
}

/// Many requests with the same token, so a remembered answer would be used if it were kept.
async fn warm(c: &Caller, token: &str, path: &str, expect: u16) {
    for _ in 0..20 {
        let (s, v) = c.call(token, "GET", path, None).await;
        assert_eq!(s, expect, "{path}: {v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_to_tokens_users_and_roles_count_from_the_next_request() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = ControllerProcess::start(dir.path());
    let admin = ctl.first_token.clone();
    let c = Caller {
        client: Client::new(),
        base: ctl.url(""),
    };

    // A role that may list instances, a user holding it, and two tokens of theirs.
    let (s, role) = c
        .call(
            &admin,
            "POST",
            "/api/v1/roles",
            Some(json!({"name": "viewer", "permissions": ["core.instance.list"]})),
        )
        .await;
    assert_eq!(s, 201, "{role}");
    let role_id = role["id"].as_i64().unwrap();
    let (s, v) = c
        .call(
            &admin,
            "POST",
            "/api/v1/users",
            Some(json!({"name": "bob", "roles": [role_id]})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let mut tokens = Vec::new();
    for _ in 0..2 {
        let (s, v) = c
            .call(
                &admin,
                "POST",
                "/api/v1/tokens",
                Some(json!({"user": "bob"})),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        tokens.push((
            v["id"].as_i64().unwrap(),
            v["token"].as_str().unwrap().to_string(),
        ));
    }
    let (first_id, first) = tokens[0].clone();
    let (_, second) = tokens[1].clone();

    // Revoking a token: refused on the next request, on the API and on /metrics.
    warm(&c, &first, "/api/v1/instances", 200).await;
    assert_eq!(c.scrape(&first).await, StatusCode::OK);
    let (s, v) = c
        .call(
            &admin,
            "DELETE",
            &format!("/api/v1/tokens/{first_id}"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = c.call(&first, "GET", "/api/v1/instances", None).await;
    assert_eq!(s, 401, "a revoked token was accepted: {v}");
    assert_eq!(c.scrape(&first).await, StatusCode::UNAUTHORIZED);
    // The other token of the same user still works.
    warm(&c, &second, "/api/v1/instances", 200).await;

    // Removing the permission from the role: refused on the next request.
    let (s, v) = c
        .call(
            &admin,
            "PATCH",
            &format!("/api/v1/roles/{role_id}"),
            Some(json!({"permissions": ["core.host.list"]})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = c.call(&second, "GET", "/api/v1/instances", None).await;
    assert_eq!(s, 403, "a removed permission still worked: {v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("core.instance.list"),
        "{v}"
    );
    // ... and the new one works at once.
    warm(&c, &second, "/api/v1/hosts", 200).await;

    // Taking the role from the user: refused on the next request.
    let (s, v) = c
        .call(
            &admin,
            "PATCH",
            "/api/v1/users/bob",
            Some(json!({"roles": []})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = c.call(&second, "GET", "/api/v1/hosts", None).await;
    assert_eq!(s, 403, "a removed role still worked: {v}");

    // Deleting the user: every token of theirs is refused on the next request.
    warm(&c, &second, "/api/v1/me", 200).await;
    let (s, v) = c.call(&admin, "DELETE", "/api/v1/users/bob", None).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = c.call(&second, "GET", "/api/v1/me", None).await;
    assert_eq!(s, 401, "a deleted user's token was accepted: {v}");
    assert_eq!(c.scrape(&second).await, StatusCode::UNAUTHORIZED);

    // A token issued while the controller runs, by the offline command, works at once.
    let (s, v) = c
        .call(
            &admin,
            "POST",
            "/api/v1/users",
            Some(json!({"name": "carol"})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let offline = common::user_token(dir.path(), "carol");
    warm(&c, &offline, "/api/v1/me", 200).await;

    // The admin's own token was never disturbed.
    warm(&c, &admin, "/api/v1/instances", 200).await;
}
