//! Helpers for inventory_sync tests: games on sim instances, a player's items as the game has
//! them (`/standin inventory`), their sync record and the controller's row.
#![allow(dead_code)]

use super::cluster::{Api, rcon};
use serde_json::{Value, json};
use std::path::Path;

/// A controller config that makes locks expire `secs` after their holder stops.
pub fn write_lock_timeout(controller_dir: &Path, secs: f64) {
    let text = json!({ "inventory_sync": { "player_lock_timeout": secs } }).to_string();
    std::fs::write(controller_dir.join("config-master.json"), text).expect("config-master.json");
}

/// Creates an instance on `host` and starts it.
pub async fn create_and_start(api: &Api, name: &str, host: &str) {
    let (s, v) = api
        .post("/api/v1/instances", json!({ "name": name, "config": {} }))
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = api
        .post(
            &format!("/api/v1/instances/{name}/assign"),
            json!({ "host": host }),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    start(api, name).await;
}

pub async fn start(api: &Api, name: &str) {
    let (s, v) = api
        .post(&format!("/api/v1/instances/{name}/start"), json!({}))
        .await;
    assert_eq!(s, 200, "start {name}: {v}");
}

/// RCON through the API, retried while the host is (re)connecting; `None` when it never answers.
pub async fn try_rcon(api: &Api, instance: &str, command: &str) -> Option<String> {
    let (s, v) = api
        .post(
            &format!("/api/v1/instances/{instance}/rcon"),
            json!({ "command": command }),
        )
        .await;
    (s == 200).then(|| v["output"].as_str().unwrap_or_default().to_string())
}

/// The player as the game has them: `{controller, main: {item: n}, armor, …, quick_bar, color}`.
pub async fn items(api: &Api, instance: &str, player: &str) -> Value {
    let out = rcon(api, instance, &format!("/standin inventory {player}")).await;
    serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("inventory of {player}: {out:?}: {e}"))
}

/// What the player carries, without the controller (for comparing games).
pub fn carried(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("controller");
    }
    v
}

/// The game's sync record of the player (`inventory_sync.status`).
pub async fn sync_state(api: &Api, instance: &str, player: &str) -> Value {
    let out = try_rcon(
        api,
        instance,
        &format!("/sc inventory_sync.status(\"{player}\")"),
    )
    .await
    .unwrap_or_default();
    serde_json::from_str(out.trim()).unwrap_or(Value::Null)
}

/// The controller's row of the player (`GET /api/v1/inventories/NAME`), or Null.
pub async fn stored(api: &Api, player: &str) -> Value {
    let (s, v) = api
        .call("GET", &format!("/api/v1/inventories/{player}"), None)
        .await;
    if s == 200 { v } else { Value::Null }
}

/// A console line through the sim's control socket (`FACTORIO_STANDIN_CONTROL`), for a game the
/// API cannot reach (the controller is down); its output, without the closing blank line.
pub async fn control(socket: &Path, line: &str) -> String {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .unwrap_or_else(|e| panic!("connecting {}: {e}", socket.display()));
    let (r, mut w) = stream.into_split();
    w.write_all(format!("{line}\n").as_bytes())
        .await
        .expect("writing to the control socket");
    let mut lines = tokio::io::BufReader::new(r).lines();
    let mut out = String::new();
    while let Ok(Some(l)) = lines.next_line().await {
        if l.is_empty() {
            break;
        }
        out.push_str(&l);
        out.push('\n');
    }
    out
}
