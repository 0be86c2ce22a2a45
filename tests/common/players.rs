//! Helpers for the player tests: `clustorio ctl` as a user would run it, instances started on a
//! named host, and a sim player joining.
#![allow(dead_code)]

use super::bin;
use super::cluster::{Api, rcon};
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Command, Stdio};

/// What a ctl run printed and how it ended.
pub struct CtlRun {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// `clustorio ctl <args>` against `api`'s controller with its token, in `home`.
pub fn ctl(api: &Api, home: &Path, args: &[&str]) -> CtlRun {
    std::fs::create_dir_all(home).expect("ctl home");
    let out = Command::new(bin("clustorio"))
        .arg("ctl")
        .args(args)
        .current_dir(home)
        .env("HOME", home)
        .env("CLUSTORIO_URL", &api.base)
        .env("CLUSTORIO_TOKEN", &api.token)
        .env("NO_COLOR", "1")
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("CLUSTORIO_CONFIG")
        .stdin(Stdio::null())
        .output()
        .expect("running clustorio ctl");
    CtlRun {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).to_string(),
    }
}

/// As [`ctl`], asserting success; returns stdout.
pub fn ctl_ok(api: &Api, home: &Path, args: &[&str]) -> String {
    let r = ctl(api, home, args);
    assert_eq!(r.code, 0, "ctl {args:?} failed: {}{}", r.stdout, r.stderr);
    r.stdout
}

/// Creates an instance, assigns it to `host` and starts it.
pub async fn start_on(api: &Api, name: &str, host: &str) -> Value {
    let (s, v) = api.post("/api/v1/instances", json!({ "name": name })).await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = api
        .post(
            &format!("/api/v1/instances/{name}/assign"),
            json!({ "host": host }),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = api
        .post(&format!("/api/v1/instances/{name}/start"), json!({}))
        .await;
    assert_eq!(s, 200, "start {name}: {v}");
    v
}

/// A sim player joins `instance`; returns the game's answer (`ok`, or `refused: <reason>`).
pub async fn join(api: &Api, instance: &str, player: &str) -> String {
    rcon(api, instance, &format!("/standin join {player}"))
        .await
        .trim()
        .to_string()
}

pub async fn leave(api: &Api, instance: &str, player: &str) {
    let out = rcon(api, instance, &format!("/standin leave {player}")).await;
    assert_eq!(out.trim(), "ok", "{player} leaves {instance}");
}

/// The player list entry of `name`, if any.
pub async fn player(api: &Api, name: &str) -> Option<Value> {
    let all = api.get("/api/v1/players").await;
    all.as_array()?
        .iter()
        .find(|p| {
            p["name"]
                .as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
        })
        .cloned()
}

/// Audit rows with `action` on `target`, newest first.
pub async fn audit_rows(api: &Api, action: &str, target: &str) -> Vec<Value> {
    api.get("/api/v1/audit?limit=1000")
        .await
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["action"] == action && r["target"] == target)
        .cloned()
        .collect()
}
