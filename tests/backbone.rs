//! The cross-server backbone on real processes: saves patched with the core Lua module and the
//! `ping` plugin, the module's own Lua running in factorio-sim, IPC from game to host to
//! controller to another game, and what happens when links drop or Factorio resets the level.

mod common;

use common::cluster::{Api, HostProcess, rcon, wait_until};
use common::link::LinkClient;
use common::{ControllerProcess, bin, join_token};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// `ping.dump()` of a game, parsed.
async fn ping_state(api: &Api, instance: &str) -> Value {
    let out = rcon(api, instance, "/sc ping.dump()").await;
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("ping.dump() gave {out:?}: {e}"))
}

fn received(state: &Value) -> Vec<Value> {
    // Factorio's table_to_json writes an empty table as an object.
    state["received"].as_array().cloned().unwrap_or_default()
}

async fn create_on(api: &Api, name: &str, host: &str, config: Value) {
    let (s, v) = api
        .post(
            "/api/v1/instances",
            json!({ "name": name, "config": config }),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = api
        .post(
            &format!("/api/v1/instances/{name}/assign"),
            json!({ "host": host }),
        )
        .await;
    assert_eq!(s, 200, "{v}");
}

async fn start(api: &Api, name: &str) -> Value {
    let (s, v) = api
        .post(&format!("/api/v1/instances/{name}/start"), json!({}))
        .await;
    assert_eq!(s, 200, "start {name}: {v}");
    v
}

/// A TCP relay between a host and the controller that the test can cut and restore.
struct Relay {
    port: u16,
    cut: tokio::sync::watch::Sender<u64>,
}

impl Relay {
    async fn start(target: u16) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (cut, _) = tokio::sync::watch::channel(0u64);
        let cuts = cut.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                let mut cut_rx = cuts.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) =
                        tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                    else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut_rx.changed() => {}
                    }
                });
            }
        });
        Relay { port, cut }
    }

    /// Drops every connection through the relay (new ones are accepted again).
    fn cut(&self) {
        self.cut.send_modify(|n| *n += 1);
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// Controller with `PLUGINS=ping`, host `h1` through a relay, host `h2` direct, instance `a` on
/// h1 and `b` on h2: a message from game A reaches game B through the controller, and a host cut
/// off mid-stream loses none and duplicates none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_from_game_a_reaches_game_b_and_a_dropped_host_loses_and_repeats_none() {
    let root = tempfile::tempdir().unwrap();
    let cdir = root.path().join("c");
    std::fs::create_dir_all(&cdir).unwrap();
    let c = ControllerProcess::start_with(&cdir, &[("PLUGINS", "ping")]);
    let api = Api::new(&c.url(""), &c.first_token);
    let join = join_token(&cdir);
    let relay = Relay::start(c.port).await;
    let _h1 = HostProcess::start(&root.path().join("h1"), &relay.url(), &join, "h1", &[]);
    let _h2 = HostProcess::start(&root.path().join("h2"), &c.url(""), &join, "h2", &[]);

    create_on(&api, "a", "h1", json!({})).await;
    create_on(&api, "b", "h2", json!({})).await;
    start(&api, "a").await;
    start(&api, "b").await;

    // Every host runs the plugin, in this build's version.
    let plugins = api.get("/api/v1/plugins").await;
    let ping = plugins
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "ping")
        .expect("ping listed");
    assert_eq!(ping["enabled"], true);
    let hosts: Vec<&str> = ping["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["host"].as_str().unwrap())
        .collect();
    assert_eq!(hosts, vec!["h1", "h2"]);
    assert!(ping["hosts"][0]["version"].is_string());

    // The module runs in both games and knows who it is.
    assert_eq!(
        rcon(
            &api,
            "a",
            "/sc rcon.print(remote.call('clusterio_api', 'get_instance_name'))"
        )
        .await
        .trim(),
        "a"
    );

    // A → controller → B, and a pong back to A.
    rcon(&api, "a", "/sc ping.send('hello from a')").await;
    wait_until("b receives the ping", 20, || async {
        received(&ping_state(&api, "b").await).len() == 1
    })
    .await;
    let b = ping_state(&api, "b").await;
    assert_eq!(received(&b)[0]["from"], "a");
    assert_eq!(received(&b)[0]["text"], "hello from a");
    wait_until("a gets its pong", 20, || async {
        ping_state(&api, "a").await["pongs"]
            .as_array()
            .is_some_and(|p| p.len() == 1)
    })
    .await;
    assert_eq!(ping_state(&api, "a").await["pongs"][0]["delivered"], 1);

    // A payload over 4,000 bytes goes through script-output/ and keeps its place before the
    // next small message.
    let big = "x".repeat(5000);
    rcon(
        &api,
        "a",
        &format!("/sc ping.send('{big}') ping.send('after the big one')"),
    )
    .await;
    wait_until("b receives both", 20, || async {
        received(&ping_state(&api, "b").await).len() == 3
    })
    .await;
    let got = received(&ping_state(&api, "b").await);
    assert_eq!(got[1]["text"].as_str().unwrap().len(), 5000);
    assert_eq!(got[2]["text"], "after the big one");
    let a_dir = root.path().join("h1/instances/a/script-output");
    let leftovers: Vec<_> = std::fs::read_dir(&a_dir)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "IPC files left behind: {leftovers:?}");

    // Two bursts of 200 pings, h1's link cut right after each leaves the game: every one
    // arrives, once, in order.
    for burst in 0..2 {
        let command = format!(
            "/sc for i = {}, {} do ping.send('burst ' .. i) end",
            burst * 200,
            burst * 200 + 199
        );
        loop {
            let (s, v) = api
                .post("/api/v1/instances/a/rcon", json!({ "command": command }))
                .await;
            if s == 200 {
                break;
            }
            // The host is still reconnecting from the last cut; nothing was sent.
            assert_eq!(v["error"]["code"], "host_disconnected", "{v}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        relay.cut();
    }
    wait_until("b receives both bursts", 60, || async {
        received(&ping_state(&api, "b").await).len() >= 403
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = received(&ping_state(&api, "b").await);
    let burst: Vec<String> = got[3..]
        .iter()
        .map(|m| m["text"].as_str().unwrap().to_string())
        .collect();
    let expected: Vec<String> = (0..400).map(|i| format!("burst {i}")).collect();
    assert_eq!(burst, expected, "lost, repeated or reordered");

    // Counted on the controller.
    let (_, metrics) = api.call("GET", "/metrics", None).await;
    let metrics = metrics.as_str().unwrap_or_default().to_string();
    assert!(
        metrics.contains("clustorio_plugin_messages_total{direction=\"in\",plugin=\"ping\"} 403"),
        "{metrics}"
    );
}

/// One host, one instance, `PLUGINS=ping`: what the patched save does across starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patched_save_runs_the_modules_and_is_patched_again_at_every_start() {
    let root = tempfile::tempdir().unwrap();
    let cdir = root.path().join("c");
    std::fs::create_dir_all(&cdir).unwrap();
    let c = ControllerProcess::start_with(&cdir, &[("PLUGINS", "ping")]);
    let api = Api::new(&c.url(""), &c.first_token);
    let _h = HostProcess::start(
        &root.path().join("h"),
        &c.url(""),
        &join_token(&cdir),
        "h",
        &[],
    );
    create_on(&api, "p", "h", json!({})).await;
    start(&api, "p").await;

    assert_eq!(
        rcon(&api, "p", "/sc rcon.print(clusterio_patch_number)")
            .await
            .trim(),
        "1"
    );
    assert_eq!(
        rcon(&api, "p", "/sc rcon.print(storage.clusterio.instance_name .. ' ' .. storage.clusterio.instance_id)")
            .await
            .trim(),
        format!("p {}", api.get("/api/v1/instances/p").await["id"])
    );
    assert_eq!(
        rcon(&api, "p", "/sc rcon.print(type(ping))").await.trim(),
        "table"
    );

    // A promotion in game raises the real event; the module's own player_event reaches the
    // controller.
    rcon(&api, "p", "/standin join Alice").await;
    api.wait_for("/api/v1/instances/p", |v| {
        v["players_online"] == json!(["Alice"])
    })
    .await;
    let mut link = LinkClient::connect(&c.ws_url(), "control", &c.first_token, None, None).await;
    rcon(&api, "p", "/standin promote Alice").await;
    let event = loop {
        let f = tokio::time::timeout(Duration::from_secs(20), link.next())
            .await
            .expect("a player_event within 20 s")
            .expect("link open");
        if f["type"] == "event" && f["name"] == "player_event" {
            break f;
        }
    };
    assert_eq!(event["data"]["type"], "PROMOTE");
    assert_eq!(event["data"]["name"], "Alice");

    // Stop (saves) and start again: patch number 2, on_server_startup again, the modules still
    // there exactly once.
    let (s, v) = api.post("/api/v1/instances/p/stop", json!({})).await;
    assert_eq!(s, 200, "{v}");
    start(&api, "p").await;
    assert_eq!(
        rcon(&api, "p", "/sc rcon.print(clusterio_patch_number)")
            .await
            .trim(),
        "2"
    );
    assert_eq!(
        rcon(&api, "p", "/sc rcon.print(storage.clusterio_patch_number)")
            .await
            .trim(),
        "2"
    );
    let save = root.path().join("h/instances/p/saves/world.zip");
    let mut zip = zip::ZipArchive::new(std::fs::File::open(&save).unwrap()).unwrap();
    let names: Vec<String> = zip
        .file_names()
        .filter_map(|n| n.ok().map(|n| n.to_string()))
        .collect();
    assert_eq!(
        names
            .iter()
            .filter(|n| n.ends_with("modules/ping/ping.lua"))
            .count(),
        1,
        "{names:?}"
    );
    let mut info = String::new();
    std::io::Read::read_to_string(&mut zip.by_name("world/clusterio.json").unwrap(), &mut info)
        .unwrap();
    let info: Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["version"], 1);
    assert_eq!(info["patch_number"], 2);
    let modules: Vec<&str> = info["modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(modules, vec!["clusterio", "ping"]);

    // A Lua error in a module's handler crashes the game; the host reports the traceback.
    rcon(
        &api,
        "p",
        "/sc script.on_nth_tick(1, function() error('boom in a module') end)",
    )
    .await;
    // Alice is on, so the game ticks by itself; the sim's tick verb makes sure (it may find the
    // game already gone).
    let _ = api
        .post(
            "/api/v1/instances/p/rcon",
            json!({ "command": "/standin tick 2" }),
        )
        .await;
    let v = api
        .wait_for("/api/v1/instances/p", |v| v["status"] == "crashed")
        .await;
    let message = v["message"].as_str().unwrap_or_default();
    assert!(message.contains("boom in a module"), "{v}");
    assert!(message.contains("Error while running event"), "{v}");
    assert!(message.contains("stack traceback:"), "{v}");
}

/// A save whose level a Factorio update put back to stock freeplay is patched again and started
/// once more, without the admin; an instance with patching off stays vanilla; a custom scenario
/// is refused with its hash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_levels_are_repatched_vanilla_stays_vanilla_and_unknown_scenarios_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let cdir = root.path().join("c");
    std::fs::create_dir_all(&cdir).unwrap();
    let c = ControllerProcess::start_with(&cdir, &[("PLUGINS", "ping")]);
    let api = Api::new(&c.url(""), &c.first_token);
    let hdir = root.path().join("h");
    // Every save's first load behaves like the first start after a Factorio update: the stock
    // control.lua is back and the modules are gone.
    let _h = HostProcess::start(
        &hdir,
        &c.url(""),
        &join_token(&cdir),
        "h",
        &[("FACTORIO_STANDIN_MIGRATE_LEVEL", "1")],
    );

    create_on(&api, "m", "h", json!({})).await;
    start(&api, "m").await;
    assert_eq!(
        rcon(&api, "m", "/sc rcon.print(type(clusterio_private))")
            .await
            .trim(),
        "table"
    );
    assert_eq!(
        rcon(&api, "m", "/sc rcon.print(type(ping))").await.trim(),
        "table"
    );

    create_on(&api, "v", "h", json!({ "save_patching": false })).await;
    start(&api, "v").await;
    assert_eq!(
        rcon(&api, "v", "/sc rcon.print(type(clusterio_private))")
            .await
            .trim(),
        "nil"
    );

    // A save with a scenario nobody knows.
    create_on(&api, "u", "h", json!({})).await;
    let saves = hdir.join("instances/u/saves");
    std::fs::create_dir_all(&saves).unwrap();
    {
        use std::io::Write;
        let mut w = zip::ZipWriter::new(std::fs::File::create(saves.join("custom.zip")).unwrap());
        let o = zip::write::SimpleFileOptions::default();
        w.start_file("custom/level.dat0", o).unwrap();
        w.write_all(b"level").unwrap();
        w.start_file("custom/control.lua", o).unwrap();
        w.write_all(b"-- my own scenario\n").unwrap();
        w.finish().unwrap();
    }
    let (s, v) = api.post("/api/v1/instances/u/start", json!({})).await;
    assert_ne!(s, 200, "{v}");
    let text = v.to_string();
    assert!(text.contains("not a known scenario"), "{text}");
    assert!(text.contains("patch_unknown_scenario"), "{text}");
}

/// `PLUGINS=nope` stops the controller and the host at start-up with exit 2 and the list.
#[test]
fn an_unknown_plugin_name_exits_2_listing_the_known_ones() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(bin("clustorio"))
        .args(["controller", "run", "--port", "0", "--dir"])
        .arg(dir.path())
        .env("PLUGINS", "ping,nope")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("'nope'") && err.contains("known plugins: ping"),
        "{err}"
    );

    let out = std::process::Command::new(bin("clustorio"))
        .args(["host", "run", "--dir"])
        .arg(dir.path())
        .env("PLUGINS", "nope")
        .env("SLAVE_NAME", "h")
        .env("MASTER_TOKEN", "x")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("'nope'") && err.contains("known plugins: ping"),
        "{err}"
    );
}

/// An instance that auto-starts right as its host boots (before the handshake) still loads the
/// cluster's plugins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_started_as_its_host_boots_still_loads_its_plugins() {
    let root = tempfile::tempdir().unwrap();
    let cdir = root.path().join("c");
    std::fs::create_dir_all(&cdir).unwrap();
    let c = ControllerProcess::start_with(&cdir, &[("PLUGINS", "ping")]);
    let api = Api::new(&c.url(""), &c.first_token);
    let hdir = root.path().join("h");
    let join = join_token(&cdir);
    let mut h = HostProcess::start(&hdir, &c.url(""), &join, "h", &[]);
    create_on(&api, "auto", "h", json!({})).await;
    start(&api, "auto").await;
    // The host dies with the game; its next boot starts the instance at once.
    h.kill9();
    drop(h);
    let _h = HostProcess::spawn(&hdir, &c.url(""), &join, "h", &[]);
    // (The controller may still show the old run for a moment: ask the game itself.)
    let deadline = Instant::now() + Duration::from_secs(30);
    let answer = loop {
        let (s, v) = api
            .post(
                "/api/v1/instances/auto/rcon",
                json!({ "command": "/sc rcon.print(type(ping))" }),
            )
            .await;
        if s == 200 {
            break v["output"].as_str().unwrap_or_default().trim().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "the restarted game never answered: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(answer, "table");
}
