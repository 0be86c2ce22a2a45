//! What users can make the controller keep (issue 22, "Data on disk"): audit rows hold a
//! bounded summary of a config patch, `/audit` replies are bounded in bytes, a no-op user
//! update writes and broadcasts nothing, own tokens are capped, and the files of a deleted
//! instance leave the controller with it.

mod common;

use common::cluster::{Api, HostProcess};
use common::link::LinkClient;
use common::{ControllerProcess, join_token};
use serde_json::{Value, json};
use std::path::Path;

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| {
                    let m = e.metadata().unwrap();
                    if m.is_dir() {
                        dir_bytes(&e.path())
                    } else {
                        m.len()
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_rows_of_big_config_edits_are_summaries_and_the_audit_reply_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let c = ControllerProcess::start(dir.path());
    let api = Api::new(&c.url(""), &c.first_token);
    let (s, v) = api
        .post("/api/v1/instances", json!({ "name": "big" }))
        .await;
    assert_eq!(s, 201, "{v}");
    // 40 edits of a large config: 1,024 tags of 256 characters (256 KiB) each time.
    for i in 0..40 {
        let tags: Vec<String> = (0..1024)
            .map(|t| format!("{i}-{t}-{}", "t".repeat(250)))
            .collect();
        let (s, v) = api
            .call(
                "PATCH",
                "/api/v1/instances/big",
                Some(json!({ "config": { "server_settings": { "tags": tags } } })),
            )
            .await;
        assert_eq!(
            s,
            200,
            "edit {i}: {}",
            v.to_string().chars().take(300).collect::<String>()
        );
    }
    let (s, text) = {
        let resp = reqwest::Client::new()
            .get(c.url("/api/v1/audit?limit=10000"))
            .bearer_auth(&c.first_token)
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    };
    assert_eq!(s, 200);
    let rows: Vec<Value> = serde_json::from_str(&text).unwrap();
    let edits: Vec<&Value> = rows
        .iter()
        .filter(|r| r["action"] == "instance.update_config")
        .collect();
    assert_eq!(edits.len(), 40, "every edit is audited");
    for e in &edits {
        let detail = e["detail"].to_string();
        assert!(
            detail.len() <= 4096 + 64,
            "an audit row of {} bytes",
            detail.len()
        );
        // What changed is still said: the field, cut values, how big it was.
        assert!(
            detail.contains("\"tags\"") && detail.contains("bytes)") && detail.contains("more"),
            "{detail}"
        );
    }
    assert!(
        text.len() <= (1 << 20) + 64 * 1024,
        "/audit replied {} bytes",
        text.len()
    );
    let db = dir_bytes(dir.path());
    println!(
        "40 edits of a 256 KiB field: /audit?limit=10000 reply {} bytes, data directory {} bytes",
        text.len(),
        db
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_player_cannot_grow_the_audit_log_or_their_tokens_without_bound() {
    let dir = tempfile::tempdir().unwrap();
    let c = ControllerProcess::start(dir.path());
    let admin = Api::new(&c.url(""), &c.first_token);
    for name in ["pat", "marker"] {
        let (s, v) = admin.post("/api/v1/users", json!({ "name": name })).await;
        assert_eq!(s, 201, "{v}");
    }
    let (s, v) = admin.post("/api/v1/tokens", json!({ "user": "pat" })).await;
    assert_eq!(s, 201, "{v}");
    let pat = Api::new(&c.url(""), v["token"].as_str().unwrap());
    let mut link = LinkClient::connect(&c.ws_url(), "control", &c.first_token, None, None).await;

    let audit_rows = |rows: Value| rows.as_array().unwrap().len();
    let before = audit_rows(admin.get("/api/v1/audit?limit=10000").await);
    // A Player's no-op updates of anyone: 200, but no row and no event.
    for target in ["admin", "pat", "marker"] {
        for _ in 0..30 {
            let (s, v) = pat
                .call("PATCH", &format!("/api/v1/users/{target}"), Some(json!({})))
                .await;
            assert_eq!(s, 200, "{v}");
            assert_eq!(v["name"], target);
        }
    }
    // Setting a flag to the value it has is no change either.
    let (s, v) = admin
        .call(
            "PATCH",
            "/api/v1/users/marker",
            Some(json!({ "is_whitelisted": false })),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let after = audit_rows(admin.get("/api/v1/audit?limit=10000").await);
    assert_eq!(after, before, "no-op updates wrote audit rows");
    // A real change: its event is the first user event the admin's session sees.
    let (s, v) = admin
        .call(
            "PATCH",
            "/api/v1/users/marker",
            Some(json!({ "is_whitelisted": true })),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let mut user_events = Vec::new();
    loop {
        let f = link.next().await.expect("the marker's event");
        if f["type"] == "event" && f["name"] == "user_updated" {
            user_events.push(f["data"]["name"].as_str().unwrap_or("").to_string());
            if f["data"]["name"] == "marker" && f["data"]["is_whitelisted"] == true {
                break;
            }
        }
    }
    assert_eq!(
        user_events,
        vec!["marker".to_string()],
        "no-op updates were broadcast"
    );
    assert_eq!(
        audit_rows(admin.get("/api/v1/audit?limit=10000").await),
        before + 1
    );

    // Own tokens: capped, with a clear error; revoking one makes room.
    let mut made = Vec::new();
    let refusal = loop {
        let (s, v) = pat.post("/api/v1/tokens", json!({ "user": "pat" })).await;
        if s != 201 {
            break (s, v);
        }
        made.push(v["id"].as_i64().unwrap());
        assert!(made.len() <= 100, "no cap on own tokens");
    };
    assert_eq!(refusal.0, 409, "{}", refusal.1);
    let msg = refusal.1["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("active tokens") && msg.contains("revoke"),
        "{msg}"
    );
    // 50 in all: the one the admin made plus those pat made.
    assert_eq!(made.len() + 1, 50);
    let (s, v) = pat
        .call("DELETE", &format!("/api/v1/tokens/{}", made[0]), None)
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = pat.post("/api/v1/tokens", json!({ "user": "pat" })).await;
    assert_eq!(s, 201, "{v}");
    println!("own tokens capped at {} active", made.len() + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_instance_leaves_no_files_on_the_controller() {
    let root = tempfile::tempdir().unwrap();
    let cdir = root.path().join("controller");
    std::fs::create_dir_all(&cdir).unwrap();
    let c = ControllerProcess::start(&cdir);
    let api = Api::new(&c.url(""), &c.first_token);
    let join = join_token(&cdir);
    let _h = HostProcess::start(&root.path().join("h"), &c.url(""), &join, "h", &[]);
    common::cluster::create_and_start(&api, "gone", "h", json!({})).await;
    let id = api.get("/api/v1/instances/gone").await["id"]
        .as_i64()
        .unwrap();
    // A stop backs the save up to the controller; a download pulls it through the controller.
    let (s, v) = api.post("/api/v1/instances/gone/stop", json!({})).await;
    assert_eq!(s, 200, "{v}");
    let files = cdir.join("saves").join(id.to_string());
    assert!(
        dir_bytes(&files.join("backups")) > 0,
        "the stop left a backup on the controller"
    );
    let (s, bytes) = api
        .get_bytes("/api/v1/instances/gone/saves/world.zip")
        .await;
    assert_eq!(s, 200);
    assert!(bytes.starts_with(b"PK"));
    let leftovers: Vec<_> = std::fs::read_dir(files.join("downloads"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        leftovers.is_empty(),
        "downloaded saves stay on the controller: {leftovers:?}"
    );

    let (s, v) = api.call("DELETE", "/api/v1/instances/gone", None).await;
    assert_eq!(s, 200, "{v}");
    assert!(
        !files.exists(),
        "files of the deleted instance stay: {} bytes in {}",
        dir_bytes(&files),
        files.display()
    );
}
