//! Lua-only plugins end to end: the example in `examples/lua_plugins/announce/`, zipped by the
//! test and uploaded through the API (no rebuild), patched into two factorio-sim games on two
//! hosts whose real Lua runs it: an announcement from game A reaches game B, a counter kept in
//! the controller's key–value store survives `kill -9` of the controller and loses no increment
//! when both games bump it at once (compare-and-set), and bad uploads are refused with a clear
//! 400 and change nothing.

mod common;

use common::cluster::{Api, HostProcess, create_and_start, wait_until};
use common::{ControllerProcess, join_token};
use serde_json::{Value, json};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, data) in entries {
        w.start_file(*name, zip::write::SimpleFileOptions::default())
            .unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// The shipped example, zipped as a user would (its folder at the top).
fn example_zip() -> Vec<u8> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/lua_plugins/announce");
    let mut entries: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            (
                format!("announce/{}", p.file_name().unwrap().to_str().unwrap()),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    entries.sort();
    let refs: Vec<(&str, &[u8])> = entries
        .iter()
        .map(|(n, d)| (n.as_str(), d.as_slice()))
        .collect();
    zip_of(&refs)
}

async fn upload(api: &Api, bytes: Vec<u8>) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/plugins/lua", api.base))
        .bearer_auth(&api.token)
        .body(bytes)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// RCON through the API, retried while a host reconnects after a controller restart.
async fn rcon(api: &Api, instance: &str, command: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (s, v) = api
            .post(
                &format!("/api/v1/instances/{instance}/rcon"),
                json!({ "command": command }),
            )
            .await;
        if s == 200 {
            return v["output"].as_str().unwrap_or_default().to_string();
        }
        assert!(Instant::now() < deadline, "rcon {command}: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `announce.dump()` of a game.
async fn game_state(api: &Api, instance: &str) -> Value {
    let out = rcon(api, instance, "/sc announce.dump()").await;
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("announce.dump() gave {out:?}: {e}"))
}

fn received(state: &Value) -> Vec<Value> {
    // An empty Lua table is written as an object.
    state["received"].as_array().cloned().unwrap_or_default()
}

async fn counter(api: &Api, instance: &str) -> Option<f64> {
    game_state(api, instance).await["counter"].as_f64()
}

async fn lua_plugins(api: &Api) -> Value {
    api.get("/api/v1/plugins/lua").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploaded_lua_plugin_broadcasts_between_games_and_keeps_a_counter_across_kill_9() {
    let root = tempfile::tempdir().unwrap();
    let cdir = root.path().join("c");
    std::fs::create_dir_all(&cdir).unwrap();
    let mut c = ControllerProcess::start(&cdir);
    let port = c.port;
    let api = Api::new(&c.url(""), &c.first_token);

    // Bad uploads: each a 400 that names the problem; nothing is stored.
    let manifest = br#"{"name":"announce","version":"1.0.0","load":["announce.lua"]}"#;
    let big = vec![b'-'; (1 << 20) + 1];
    let bad: Vec<(Vec<u8>, &str)> = vec![
        (b"PK not really a zip".to_vec(), "not a readable zip"),
        (
            zip_of(&[("plugin.json", b"{\"name\": "), ("announce.lua", b"")]),
            "plugin.json is not valid",
        ),
        (
            zip_of(&[("plugin.json", manifest), ("../../etc/evil.lua", b"")]),
            "'..'",
        ),
        (
            zip_of(&[("plugin.json", manifest), ("/abs.lua", b"")]),
            "absolute",
        ),
        (
            zip_of(&[("plugin.json", manifest), ("announce.lua", &big)]),
            "larger than",
        ),
        (
            zip_of(&[
                (
                    "plugin.json",
                    br#"{"name":"global_chat","version":"1.0.0","load":["a.lua"]}"#,
                ),
                ("a.lua", b""),
            ]),
            "built-in plugin",
        ),
        (
            zip_of(&[
                (
                    "plugin.json",
                    br#"{"name":"announce","version":"soon","load":["announce.lua"]}"#,
                ),
                ("announce.lua", b""),
            ]),
            "semantic version",
        ),
    ];
    for (bytes, says) in bad {
        let (s, v) = upload(&api, bytes).await;
        assert_eq!(s, 400, "{v}");
        assert_eq!(v["error"]["code"], "invalid_plugin", "{v}");
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "wanted {says:?} in {message:?}");
    }
    // Larger than the zip limit: refused from its Content-Length, before the body is read (the
    // client sees a 413, or the connection closed while it was still sending).
    let oversized = reqwest::Client::new()
        .post(format!("{}/api/v1/plugins/lua", api.base))
        .bearer_auth(&api.token)
        .body(vec![0u8; (8 << 20) + 1])
        .send()
        .await;
    if let Ok(resp) = oversized {
        assert_eq!(resp.status().as_u16(), 413);
    }
    assert_eq!(lua_plugins(&api).await, json!([]));

    // The example, uploaded through the API.
    let (s, v) = upload(&api, example_zip()).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["plugin"], "announce");
    assert_eq!(v["version"], "1.0.0");
    assert_eq!(v["sha256"].as_str().map(str::len), Some(64), "{v}");
    assert_eq!(v["files"], json!(["announce.lua"]));
    let listed = lua_plugins(&api).await;
    assert_eq!(listed[0]["plugin"], "announce", "{listed}");

    let join = join_token(&cdir);
    let _h1 = HostProcess::start(&root.path().join("h1"), &c.url(""), &join, "h1", &[]);
    let _h2 = HostProcess::start(&root.path().join("h2"), &c.url(""), &join, "h2", &[]);
    create_and_start(&api, "a", "h1", json!({})).await;
    create_and_start(&api, "b", "h2", json!({})).await;
    // A third game that leaves the plugin out hears nothing.
    create_and_start(
        &api,
        "quiet",
        "h1",
        json!({ "lua_plugins": { "disabled": ["announce"] } }),
    )
    .await;
    let out = rcon(&api, "quiet", "/sc announce.dump()").await;
    assert!(
        !out.trim().starts_with('{'),
        "the plugin's Lua should not be in quiet's save: {out}"
    );

    // Game A announces; game B shows it (through its own Lua callback), A does not hear itself.
    rcon(&api, "a", "/sc announce.send(\"hello from A\")").await;
    wait_until("B receives A's announcement", 30, || async {
        received(&game_state(&api, "b").await)
            .iter()
            .any(|m| m["text"] == "hello from A" && m["from"] == "a")
    })
    .await;
    let printed = rcon(&api, "b", "/standin printed").await;
    assert!(printed.contains("[a] hello from A"), "{printed}");
    assert!(received(&game_state(&api, "a").await).is_empty());
    // And the other way.
    rcon(&api, "b", "/announce hello from B").await;
    wait_until("A receives B's announcement", 30, || async {
        received(&game_state(&api, "a").await)
            .iter()
            .any(|m| m["text"] == "hello from B" && m["from"] == "b")
    })
    .await;

    // The shared counter: two bumps in A, one in B, all on the same key.
    rcon(&api, "a", "/sc announce.bump()").await;
    wait_until("A's first bump is stored", 30, || async {
        counter(&api, "a").await == Some(1.0)
    })
    .await;
    rcon(&api, "a", "/count").await;
    wait_until("A's second bump is stored", 30, || async {
        counter(&api, "a").await == Some(2.0)
    })
    .await;
    rcon(&api, "b", "/sc announce.bump()").await;
    wait_until("B sees the shared counter", 30, || async {
        counter(&api, "b").await == Some(3.0)
    })
    .await;

    // kill -9 the controller: what the game was told is on disk.
    let answers_before = game_state(&api, "b").await["answers"]
        .as_f64()
        .unwrap_or(0.0);
    c.kill9();
    let c2 = ControllerProcess::start_on(&cdir, port, &[]);
    let api2 = Api::new(&c2.url(""), &api.token);
    wait_until("the counter survived kill -9", 60, || async {
        // Asked again until an answer comes (the host may still be reconnecting).
        rcon(&api2, "b", "/sc announce.read()").await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let state = game_state(&api2, "b").await;
        state["answers"].as_f64().unwrap_or(0.0) > answers_before
            && state["error"].is_null()
            && state["counter"].as_f64() == Some(3.0)
    })
    .await;
    rcon(&api2, "a", "/count").await;
    wait_until("and carries on from there", 30, || async {
        counter(&api2, "a").await == Some(4.0)
    })
    .await;
    // Both games bump at the same moment, ten times each: every bump reads the counter with
    // its version and writes with that version (compare-and-set), retrying on a conflict, so
    // none of the twenty is lost.
    let _ = tokio::join!(
        rcon(&api2, "a", "/sc for i = 1, 10 do announce.bump() end"),
        rcon(&api2, "b", "/sc for i = 1, 10 do announce.bump() end"),
    );
    wait_until("all twenty concurrent bumps are counted", 60, || async {
        rcon(&api2, "a", "/sc announce.read()").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        counter(&api2, "a").await == Some(24.0)
    })
    .await;
    let conflicts: f64 = [game_state(&api2, "a").await, game_state(&api2, "b").await]
        .iter()
        .map(|s| s["conflicts"].as_f64().unwrap_or(0.0))
        .sum();
    assert!(conflicts > 0.0, "the bumps did race (no conflict seen)");
    tokio::time::sleep(Duration::from_millis(500)).await;
    rcon(&api2, "b", "/sc announce.read()").await;
    wait_until("B reads the same total", 30, || async {
        counter(&api2, "b").await == Some(24.0)
    })
    .await;

    // The plugin is still listed after the restart; the quiet game never heard anything.
    assert_eq!(lua_plugins(&api2).await[0]["plugin"], "announce");
    let quiet = rcon(&api2, "quiet", "/standin printed").await;
    assert!(!quiet.contains("hello from"), "{quiet}");

    // Deleting it: listed no more, and a second delete is a 404.
    let (s, v) = api2
        .call("DELETE", "/api/v1/plugins/lua/announce", None)
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(lua_plugins(&api2).await, json!([]));
    let (s, _) = api2
        .call("DELETE", "/api/v1/plugins/lua/announce", None)
        .await;
    assert_eq!(s, 404);
}

fn ctl(c: &ControllerProcess, token: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new(common::bin("clustorio"))
        .arg("ctl")
        .args(args)
        .args(["--url", &c.url(""), "--token", token])
        .env_remove("CLUSTORIO_URL")
        .env_remove("CLUSTORIO_TOKEN")
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_uploads_lists_and_deletes_lua_plugins() {
    let root = tempfile::tempdir().unwrap();
    let c = ControllerProcess::start(&root.path().join("c"));
    let token = c.first_token.clone();
    let good = root.path().join("announce.zip");
    std::fs::write(&good, example_zip()).unwrap();
    let evil = root.path().join("evil.zip");
    std::fs::write(
        &evil,
        zip_of(&[
            (
                "plugin.json",
                br#"{"name":"evil","version":"1.0.0","load":["x.lua"]}"#,
            ),
            ("x.lua", b""),
            ("../x.lua", b""),
        ]),
    )
    .unwrap();

    let out = ctl(&c, &token, &["plugin", "upload", evil.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("'..'"), "{err}");

    let out = ctl(&c, &token, &["plugin", "upload", good.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("Uploaded Lua-only plugin announce 1.0.0"),
        "{text}"
    );

    let out = ctl(&c, &token, &["plugin", "lua", "list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("announce") && text.contains("1.0.0"),
        "{text}"
    );
    assert!(!text.contains("evil"), "{text}");

    let out = ctl(&c, &token, &["plugin", "lua", "delete", "announce"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = ctl(&c, &token, &["--json", "plugin", "lua", "list"]);
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list, json!([]));
    let out = ctl(&c, &token, &["plugin", "lua", "delete", "announce"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no Lua-only plugin named 'announce'"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_refuses_plugin_lua_whose_checksum_does_not_match() {
    let root = tempfile::tempdir().unwrap();
    let cdir = root.path().join("c");
    std::fs::create_dir_all(&cdir).unwrap();
    let mut c = ControllerProcess::start(&cdir);
    let port = c.port;
    let token = c.first_token.clone();
    let api = Api::new(&c.url(""), &token);
    let (s, v) = upload(&api, example_zip()).await;
    assert_eq!(s, 201, "{v}");
    // The stored bytes change behind the controller's back (its listed checksum does not).
    c.kill9();
    {
        let db = rusqlite::Connection::open(cdir.join("clustorio.db")).unwrap();
        let n = db
            .execute(
                "UPDATE plugin_lua SET bundle = CAST(CAST(bundle AS TEXT) || ' ' AS BLOB) WHERE plugin = 'announce'",
                [],
            )
            .unwrap();
        assert_eq!(n, 1);
    }
    let c = ControllerProcess::start_on(&cdir, port, &[]);
    let api = Api::new(&c.url(""), &token);
    let join = join_token(&cdir);
    let _h = HostProcess::start(&root.path().join("h1"), &c.url(""), &join, "h1", &[]);
    let (s, v) = api
        .post("/api/v1/instances", json!({ "name": "a", "config": {} }))
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = api
        .post("/api/v1/instances/a/assign", json!({ "host": "h1" }))
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = api.post("/api/v1/instances/a/start", json!({})).await;
    assert_ne!(s, 200, "{v}");
    let text = v.to_string();
    assert!(
        text.contains("plugin announce's Lua arrived with SHA-256"),
        "{text}"
    );
    // Nothing was cached under the listed checksum.
    let cache = root.path().join("h1/plugin-lua-cache");
    assert!(
        !cache.exists() || std::fs::read_dir(&cache).unwrap().next().is_none(),
        "a refused bundle was cached"
    );
}
