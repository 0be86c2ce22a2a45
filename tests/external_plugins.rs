//! External-process plugins on real processes: the example Discord bridge (Python) between two
//! sim games and a webhook server this test runs; its restart losing nothing of its durable
//! channel; refusals (wrong token, revoked token, wrong plugin API, channels and permissions it
//! did not declare); bad declarations; a flood held by the rate limit while the controller
//! keeps answering.

mod common;

use common::cluster::{Api, HostProcess, create_and_start, rcon, wait_until};
use common::link::LinkClient;
use common::{ControllerProcess, Proc, join_token};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A webhook receiver: every POSTed JSON body, in order.
fn webhook_server() -> (String, Arc<Mutex<Vec<Value>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/webhook", listener.local_addr().unwrap());
    let got = Arc::new(Mutex::new(Vec::new()));
    let store = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let l = line.trim_end().to_ascii_lowercase();
                if l.is_empty() {
                    break;
                }
                if let Some(v) = l.strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_ok()
                && let Ok(v) = serde_json::from_slice::<Value>(&body)
            {
                store.lock().unwrap().push(v);
            }
            let _ = stream.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
        }
    });
    (url, got)
}

fn contents(got: &Arc<Mutex<Vec<Value>>>) -> Vec<String> {
    got.lock()
        .unwrap()
        .iter()
        .map(|v| {
            format!(
                "{} {}",
                v["username"].as_str().unwrap_or(""),
                v["content"].as_str().unwrap_or("")
            )
        })
        .collect()
}

fn bridge(url: &str, token: &str, webhook: &str, listen: &str, api: Option<&str>) -> Proc {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/discord_bridge/bridge.py"
    );
    let mut cmd = Command::new("python3");
    cmd.arg("-u")
        .arg(script)
        .env("CLUSTORIO_URL", url)
        .env("CLUSTORIO_PLUGIN_TOKEN", token)
        .env("WEBHOOK_URL", webhook)
        .env("LISTEN", listen);
    if let Some(a) = api {
        cmd.env("BRIDGE_PLUGIN_API", a);
    }
    Proc::spawn(cmd)
}

async fn plugin_token(api: &Api, name: &str) -> String {
    let (s, v) = api
        .post(&format!("/api/v1/external-plugins/{name}/token"), json!({}))
        .await;
    assert_eq!(s, 200, "{v}");
    v["token"].as_str().unwrap().to_string()
}

async fn printed(api: &Api, instance: &str) -> Vec<String> {
    rcon(api, instance, "/standin printed")
        .await
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// A game sending on a channel, as a module's `send_json` would (the IPC line on stdout).
async fn game_sends(api: &Api, instance: &str, channel: &str, json_text: &str) {
    let lua = json_text.replace('\\', "\\\\").replace('"', "\\\"");
    rcon(
        api,
        instance,
        &format!("/sc print(\"\\12$ipc:{channel}?j{lua}\")"),
    )
    .await;
}

async fn external(api: &Api, name: &str) -> Value {
    let list = api.get("/api/v1/external-plugins").await;
    list.as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .cloned()
        .unwrap_or(Value::Null)
}

fn free_port() -> u16 {
    common::cluster::free_tcp_port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_bridge_relays_games_and_webhook_and_loses_nothing_across_a_restart() {
    let root = tempfile::tempdir().unwrap();
    let cdir = root.path().join("c");
    std::fs::create_dir_all(&cdir).unwrap();
    let c = ControllerProcess::start(&cdir);
    let api = Api::new(&c.url(""), &c.first_token);
    let join = join_token(&cdir);
    let fast = [("MAX_RECONNECT", "1")];
    let _h1 = HostProcess::start(&root.path().join("h1"), &c.url(""), &join, "h1", &fast);
    let _h2 = HostProcess::start(&root.path().join("h2"), &c.url(""), &join, "h2", &fast);
    create_and_start(&api, "a", "h1", json!({})).await;
    create_and_start(&api, "b", "h2", json!({})).await;
    wait_until("both games run", 60, || async {
        let list = api.get("/api/v1/instances").await;
        list.as_array()
            .is_some_and(|l| l.iter().filter(|i| i["status"] == "running").count() == 2)
    })
    .await;

    let (hook, got) = webhook_server();
    let token = plugin_token(&api, "discord_bridge").await;
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut proc = bridge(&c.url(""), &token, &hook, &listen, None);
    let ready = proc.wait_line(Duration::from_secs(30), |l| {
        l.contains("bridge ready") || l.contains("refused")
    });
    assert!(ready.contains("bridge ready"), "{ready}");

    // Chat in A and a join in B reach the webhook, in Discord's format.
    rcon(&api, "a", "/standin chat alice hello from a").await;
    rcon(&api, "b", "/standin join bob").await;
    wait_until("the webhook gets chat and join", 30, || async {
        let c = contents(&got);
        c.iter().any(|l| l == "a **alice**: hello from a")
            && c.iter().any(|l| l == "b bob joined the game")
    })
    .await;
    let first = got.lock().unwrap()[0].clone();
    assert_eq!(first["allowed_mentions"], json!({ "parse": [] }), "{first}");

    // A message posted to the bridge's endpoint is typed into B only, then into every game.
    let http = reqwest::Client::new();
    let r = http
        .post(format!("http://{listen}/"))
        .json(&json!({ "content": "hi from discord", "instance": "b" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["sent_to"], json!(["b"]));
    assert_eq!(printed(&api, "b").await, vec!["[Discord] hi from discord"]);
    assert!(printed(&api, "a").await.is_empty());
    let r = http
        .post(format!("http://{listen}/"))
        .json(&json!({ "content": "to all", "instance": null }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(printed(&api, "a").await, vec!["[Discord] to all"]);
    let r = http
        .post(format!("http://{listen}/"))
        .json(&json!({ "content": "x", "instance": "nope" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // Kill the process; durable-channel messages sent meanwhile wait on the controller…
    proc.kill9();
    wait_until("the controller sees the plugin gone", 30, || async {
        external(&api, "discord_bridge").await["connected"] == json!(false)
    })
    .await;
    for i in 1..=5 {
        game_sends(
            &api,
            "a",
            "discord_bridge:announce",
            &format!("{{\"text\":\"announce {i}\"}}"),
        )
        .await;
    }
    rcon(&api, "a", "/standin chat alice said while away").await;
    wait_until("five messages queued", 30, || async {
        external(&api, "discord_bridge").await["queued"] == json!(5)
    })
    .await;
    let metrics = reqwest::Client::new()
        .get(c.url("/metrics"))
        .bearer_auth(&c.first_token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("clustorio_plugin_queued{plugin=\"discord_bridge\"} 5"),
        "{metrics}"
    );

    // A channel nobody owns is counted as an unhandled IPC message, not delivered anywhere.
    game_sends(&api, "a", "nobody:x", "{}").await;
    wait_until("the unowned channel is counted", 30, || async {
        let m = reqwest::Client::new()
            .get(c.url("/metrics"))
            .bearer_auth(&c.first_token)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        m.contains("clustorio_plugin_ipc_unowned_total 1")
    })
    .await;

    // …and a restarted process (a reload) gets them all, in order, once each.
    let before = got.lock().unwrap().len();
    let proc2 = bridge(
        &c.url(""),
        &token,
        &hook,
        &format!("127.0.0.1:{}", free_port()),
        None,
    );
    let ready = proc2.wait_line(Duration::from_secs(30), |l| {
        l.contains("bridge ready") || l.contains("refused")
    });
    assert!(ready.contains("5 queued"), "{ready}");
    wait_until("the queued announcements arrive", 30, || async {
        got.lock().unwrap().len() >= before + 5
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after: Vec<String> = contents(&got)[before..].to_vec();
    let want: Vec<String> = (1..=5).map(|i| format!("a announce {i}")).collect();
    assert_eq!(
        after, want,
        "chat while away is not durable; announcements are, in order"
    );
    assert_eq!(external(&api, "discord_bridge").await["queued"], json!(0));

    // A crash reaches the webhook too.
    // The reply may never come: the game dies on it.
    let _ = api
        .post(
            "/api/v1/instances/b/rcon",
            json!({"command": "/standin crash boom"}),
        )
        .await;
    wait_until("the crash is posted", 30, || async {
        contents(&got)
            .iter()
            .any(|l| l.starts_with("b Instance crashed"))
    })
    .await;

    // Revoking the token closes the session at once, with the reason; the next start is refused.
    let mut proc2 = proc2;
    let (s, v) = api
        .post("/api/v1/external-plugins/discord_bridge/revoke", json!({}))
        .await;
    assert_eq!(s, 200, "{v}");
    let closed = proc2.wait_line(Duration::from_secs(20), |l| {
        l.contains("closed by the controller")
    });
    assert!(closed.contains("revoked"), "{closed}");
    assert_eq!(proc2.wait_exit(Duration::from_secs(10)), Some(2));
    let proc3 = bridge(
        &c.url(""),
        &token,
        &hook,
        &format!("127.0.0.1:{}", free_port()),
        None,
    );
    let line = proc3.wait_line(Duration::from_secs(30), |l| l.contains("refused"));
    assert!(
        line.contains("unauthorized: invalid or revoked token"),
        "{line}"
    );

    // The Python process declaring another plugin API is refused with both versions named.
    let fresh = plugin_token(&api, "discord_bridge").await;
    let listen4 = format!("127.0.0.1:{}", free_port());
    let mut proc4 = bridge(&c.url(""), &fresh, &hook, &listen4, Some("2"));
    let line = proc4.wait_line(Duration::from_secs(30), |l| l.contains("refused"));
    assert!(
        line.contains("api_mismatch")
            && line.contains("plugin API 1")
            && line.contains("plugin API 2"),
        "{line}"
    );
    assert_eq!(proc4.wait_exit(Duration::from_secs(10)), Some(2));
}

async fn plugin_hello(c: &ControllerProcess, token: &str, plugin: Value) -> (LinkClient, Value) {
    let hello = json!({ "type": "hello", "version": 1, "role": "plugin", "token": token,
                        "name": plugin["name"], "software": "test", "plugin": plugin });
    let (ws, first) = LinkClient::hello(&c.ws_url(), hello).await;
    (
        LinkClient {
            ws,
            ready: first.clone(),
            seq: 1,
        },
        first,
    )
}

fn decl(name: &str) -> Value {
    json!({ "api": 1, "name": name, "version": "0.1.0",
            "ipc_channels": [format!("{name}:")],
            "durable": [],
            "permissions": [{ "name": format!("{name}.use") }],
            "requests": [{ "name": format!("{name}.hello"), "permission": format!("{name}.use") }],
            "instance_config": [{ "name": format!("{name}.greeting"), "type": "string", "default": "hi" }],
            "lua_functions": [format!("{name}_on_message")],
            "events": ["chat"] })
}

async fn refused(c: &ControllerProcess, token: &str, plugin: Value) -> Value {
    let (_, first) = plugin_hello(c, token, plugin).await;
    assert_eq!(first["type"], "close", "expected a refusal, got {first}");
    first
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_bad_declarations_and_a_flood() {
    let root = tempfile::tempdir().unwrap();
    let cdir = root.path().join("c");
    std::fs::create_dir_all(&cdir).unwrap();
    let mut c = ControllerProcess::start(&cdir);
    let api = Api::new(&c.url(""), &c.first_token);
    let alpha = plugin_token(&api, "alpha").await;
    let beta = plugin_token(&api, "beta").await;

    // Names of built-ins and the core cannot be taken; tokens are admin-only.
    let (s, v) = api
        .post("/api/v1/external-plugins/global_chat/token", json!({}))
        .await;
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("taken"),
        "{v}"
    );
    let (s, _) = api
        .post("/api/v1/external-plugins/../token", json!({}))
        .await;
    assert_ne!(s, 200);

    // Wrong token, another kind of token, wrong plugin API: refused with a reason.
    let r = refused(&c, "plg_nope", decl("alpha")).await;
    assert_eq!(r["code"], "unauthorized", "{r}");
    let r = refused(&c, &c.first_token, decl("alpha")).await;
    assert_eq!(r["code"], "forbidden", "{r}");
    let mut wrong_api = decl("alpha");
    wrong_api["api"] = json!(7);
    let r = refused(&c, &alpha, wrong_api).await;
    assert_eq!(r["code"], "api_mismatch", "{r}");
    let m = r["message"].as_str().unwrap();
    assert!(
        m.contains("plugin API 1") && m.contains("plugin API 7"),
        "{m}"
    );

    // Malformed declarations, each with what is wrong.
    let cases: Vec<(Value, &str)> = vec![
        (json!(null), "needs a \"plugin\" object"),
        (json!({"api": 1}), "malformed"),
        (
            json!({"api": 1, "name": "alpha", "version": 3}),
            "malformed",
        ),
        (
            json!({"api": 1, "name": "alpha", "version": "1", "surprise": true}),
            "unknown field",
        ),
        (
            json!({"api": 1, "name": "beta", "version": "1"}),
            "token belongs to plugin \"alpha\"",
        ),
        (
            json!({"api": 1, "name": "alpha", "version": "1", "ipc_channels": ["beta:x"]}),
            "must start with \"alpha:\"",
        ),
        (
            json!({"api": 1, "name": "alpha", "version": "1", "ipc_channels": ["global_chat:"]}),
            "must start with \"alpha:\"",
        ),
        (
            json!({"api": 1, "name": "alpha", "version": "1", "permissions": [{"name": "core.admin"}]}),
            "alpha.<something>",
        ),
        (
            json!({"api": 1, "name": "alpha", "version": "1", "requests": [{"name": "alpha.x", "permission": "alpha.undeclared"}]}),
            "does not add",
        ),
        (
            json!({"api": 1, "name": "alpha", "version": "1", "lua": {"files": {"../../etc/passwd.lua": "x"}}}),
            "not allowed",
        ),
        (
            json!({"api": 1, "name": "alpha", "version": "1", "lua": {"files": {"modules/../x.lua": "x"}}}),
            "not allowed",
        ),
        (
            json!({"api": 1, "name": "alpha", "version": "1", "lua": {"files": {"a\\b.lua": "x"}}}),
            "not allowed",
        ),
        (
            json!({"api": 1, "name": "alpha", "version": "1", "lua": {"files": {"big.lua": "-".repeat(1024 * 1024 + 1)}}}),
            "at most",
        ),
    ];
    for (plugin, want) in cases {
        let r = refused(&c, &alpha, plugin.clone()).await;
        let m = r["message"].as_str().unwrap_or_default();
        assert!(m.contains(want), "{plugin:.200}: {r}");
    }
    // A frame that is not JSON at all, as a hello.
    let (mut ws, _) = (common::link::connect_raw(&c.ws_url()).await, ());
    use futures_util::SinkExt;
    ws.send(tokio_tungstenite::tungstenite::Message::text(
        "{\"type\":\"hello\",\"role\":\"plugin\"",
    ))
    .await
    .unwrap();
    let first = common::link::next_json(&mut ws).await.unwrap();
    assert_eq!(first["type"], "close", "{first}");

    // Now properly: alpha connects; the controller still answers after all of the above.
    let (mut a, ready) = plugin_hello(&c, &alpha, decl("alpha")).await;
    assert_eq!(ready["type"], "ready", "{ready}");
    assert_eq!(ready["plugin"]["api"], 1);

    // Calls outside its declaration are refused.
    let id = a
        .request(
            "instance_send",
            json!({"instance": "x", "function": "os.exit", "data": {}}),
        )
        .await;
    let r = a.response(id).await;
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not in the declaration"),
        "{r}"
    );
    let id = a
        .request("plugin_kv_get", json!({"plugin": "beta", "key": "k"}))
        .await;
    let r = a.response(id).await;
    assert_eq!(r["error"]["code"], "forbidden", "{r}");
    let id = a.request("teleport", json!({})).await;
    let r = a.response(id).await;
    assert_eq!(r["error"]["code"], "unknown_request", "{r}");
    let id = a
        .request(
            "instance_rcon",
            json!({"instance": "nope", "command": "/help"}),
        )
        .await;
    let r = a.response(id).await;
    assert_eq!(r["error"]["code"], "not_found", "{r}");

    // Its own key–value namespace: put, get, list, delete; another plugin sees none of it.
    let id = a
        .request("plugin_kv_put", json!({"key": "count", "value": 41}))
        .await;
    let r = a.response(id).await;
    assert!(r["error"].is_null(), "{r}");
    let id = a.request("plugin_kv_get", json!({"key": "count"})).await;
    assert_eq!(a.response(id).await["ok"]["value"], json!(41));
    let id = a.request("plugin_kv_list", json!({})).await;
    let r = a.response(id).await;
    assert_eq!(r["ok"][0]["key"], "count", "{r}");
    let id = a
        .request("plugin_kv_put", json!({"key": "", "value": 1}))
        .await;
    assert!(a.response(id).await["error"].is_object());

    // Users reach declared requests only, with the declared permission; the plugin answers.
    let (s, v) = api
        .post(
            "/api/v1/external-plugins/alpha/requests/alpha.undeclared",
            json!({}),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    let (s, v) = api.post("/api/v1/users", json!({"user": "nobody"})).await;
    assert_eq!(s, 201, "{v}");
    let nobody = common::user_token(&cdir, "nobody");
    let plain = Api::new(&c.url(""), &nobody);
    let (s, v) = plain
        .post(
            "/api/v1/external-plugins/alpha/requests/alpha.hello",
            json!({}),
        )
        .await;
    assert_eq!(s, 403, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("alpha.use"),
        "{v}"
    );
    let (s, v) = plain
        .post("/api/v1/external-plugins/alpha/token", json!({}))
        .await;
    assert_eq!(s, 403, "{v}");
    // A role may hold what the plugin declared (and nothing it did not); its users reach the
    // plugin's requests.
    let (s, v) = api
        .post(
            "/api/v1/roles",
            json!({"name": "alpha users", "permissions": ["alpha.other"]}),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    let (s, role) = api
        .post(
            "/api/v1/roles",
            json!({"name": "alpha users", "permissions": ["alpha.use"]}),
        )
        .await;
    assert_eq!(s, 201, "{role}");
    let (s, v) = api
        .post(
            "/api/v1/users",
            json!({"user": "helper", "roles": [role["id"]]}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let helper = common::user_token(&cdir, "helper");
    let call = {
        let api = Api::new(&c.url(""), &helper);
        tokio::spawn(async move {
            api.post(
                "/api/v1/external-plugins/alpha/requests/alpha.hello",
                json!({"data": {"x": 1}}),
            )
            .await
        })
    };
    let req = loop {
        let f = a.next().await.expect("the user request reaches the plugin");
        if f["type"] == "request" {
            break f;
        }
    };
    assert_eq!(req["name"], "alpha.hello");
    assert_eq!(req["data"]["data"], json!({"x": 1}));
    let seq = a.seq;
    a.seq += 1;
    a.send(json!({"type": "response", "seq": seq, "id": req["id"], "ok": {"hello": "back"}}))
        .await;
    let (s, v) = call.await.unwrap();
    assert_eq!(s, 200, "{v}");
    assert_eq!(v, json!({"hello": "back"}));

    // beta cannot take alpha's channels (only its own prefix), and connects with its own.
    let mut steal = decl("beta");
    steal["ipc_channels"] = json!(["alpha:x"]);
    let r = refused(&c, &beta, steal).await;
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .contains("must start with \"beta:\""),
        "{r}"
    );
    // beta uploads Lua files with its declaration (stored for hosts to patch into saves).
    let mut with_lua = decl("beta");
    with_lua["lua"] = json!({"load": ["main.lua"], "files": {"main.lua": "return {}", "lib/util.lua": "return 1"}});
    let (mut b, ready) = plugin_hello(&c, &beta, with_lua).await;
    assert_eq!(ready["type"], "ready", "{ready}");
    let id = b.request("plugin_kv_get", json!({"key": "count"})).await;
    assert_eq!(
        b.response(id).await["ok"]["value"],
        Value::Null,
        "alpha's keys are not beta's"
    );

    // A dropped socket resumes its session: nothing resent twice, the seq goes on.
    let session = b.session();
    drop(b);
    let hello = json!({ "type": "hello", "version": 1, "role": "plugin", "token": beta,
        "name": "beta", "resume": {"session": session, "last_seq": 1}, "plugin": decl("beta") });
    let (ws, ready) = LinkClient::hello(&c.ws_url(), hello).await;
    assert_eq!(ready["resumed"], true, "{ready}");
    assert_eq!(
        ready["last_seq"], 1,
        "the controller has beta's one request: {ready}"
    );
    let mut b = LinkClient { ws, ready, seq: 2 };
    let id = b.request("plugin_kv_get", json!({"key": "nothing"})).await;
    assert_eq!(b.response(id).await["ok"]["value"], Value::Null);

    // A flood: at 50 messages/s, 600 requests as fast as they go are mostly refused, and the
    // controller keeps answering its API meanwhile.
    let (s, v) = api
        .post(
            "/api/v1/external-plugins/alpha/limit",
            json!({"messages_per_s": 50}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (mut a, ready) = plugin_hello(&c, &alpha, decl("alpha")).await;
    assert_eq!(ready["type"], "ready", "{ready}");
    let flood_start = Instant::now();
    let mut ids = Vec::new();
    for _ in 0..600 {
        ids.push(a.request("instance_list", json!({})).await);
    }
    let mut status_ms = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let v = api.get("/api/v1/status").await;
        assert!(v["version"].is_string(), "{v}");
        status_ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    // Answers come in any order (requests run concurrently).
    let (mut limited, mut answered) = (0, 0);
    let mut waiting: std::collections::HashSet<u64> = ids.into_iter().collect();
    while !waiting.is_empty() {
        let f = a.next().await.expect("every request is answered");
        if f["type"] == "response" && waiting.remove(&f["id"].as_u64().unwrap()) {
            if f["error"]["code"] == "rate_limited" {
                limited += 1;
            } else {
                answered += 1;
            }
        }
    }
    let flood = flood_start.elapsed();
    status_ms.sort_by(|x, y| x.total_cmp(y));
    println!(
        "flood: 600 requests in {flood:?}: {answered} answered, {limited} rate-limited; /api/v1/status meanwhile p50 {:.1} ms, max {:.1} ms",
        status_ms[10], status_ms[19]
    );
    assert!(limited > 0 && answered > 0, "{limited} {answered}");
    assert!(
        external(&api, "alpha").await["rate_limited"]
            .as_u64()
            .unwrap()
            > 0
    );

    // A revoked token closes the live session at once, with the reason.
    let (s, v) = api
        .post("/api/v1/external-plugins/alpha/revoke", json!({}))
        .await;
    assert_eq!(s, 200, "{v}");
    let closed = loop {
        match a.next().await {
            Some(f) if f["type"] == "close" => break f,
            Some(_) => continue,
            None => panic!("closed without a reason"),
        }
    };
    assert_eq!(closed["code"], "revoked", "{closed}");
    let r = refused(&c, &alpha, decl("alpha")).await;
    assert_eq!(r["code"], "unauthorized", "{r}");

    // Declarations are stored: after a restart the declared instance field is in the schema,
    // and the plugins are listed while their processes are away.
    c.signal("INT");
    assert_eq!(c.wait_exit(Duration::from_secs(20)), Some(0));
    let port = c.port;
    let c = ControllerProcess::start_on(&cdir, port, &[]);
    let schema = Api::new(&c.url(""), &api_token(&cdir))
        .get("/api/v1/config/schema")
        .await;
    let text = schema.to_string();
    assert!(
        text.contains("beta.greeting") && text.contains("beta.load_plugin"),
        "{text:.400}"
    );
    let api = Api::new(&c.url(""), &api_token(&cdir));
    let b = external(&api, "beta").await;
    assert_eq!(b["version"], "0.1.0", "{b}");
    assert_eq!(b["connected"], false, "{b}");
    assert_eq!(external(&api, "alpha").await["revoked"], true);
}

fn api_token(dir: &std::path::Path) -> String {
    common::user_token(dir, "admin")
}

/// The instance fields the schema lists now.
async fn instance_fields(api: &Api) -> Vec<String> {
    api.get("/api/v1/config/schema").await["instance"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["name"].as_str().map(str::to_string))
        .collect()
}

async fn patch_config(api: &Api, instance: &str, config: Value) -> (u16, Value) {
    api.call(
        "PATCH",
        &format!("/api/v1/instances/{instance}"),
        Some(json!({ "config": config })),
    )
    .await
}

/// The `config` `instance_list` gives the plugin for `instance`.
async fn plugin_view(p: &mut LinkClient, instance: &str) -> Value {
    let id = p.request("instance_list", json!({})).await;
    let r = p.response(id).await;
    r["ok"]
        .as_array()
        .unwrap_or_else(|| panic!("{r}"))
        .iter()
        .find(|i| i["name"] == instance)
        .map(|i| i["config"].clone())
        .unwrap_or_else(|| panic!("{instance} not in {r}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_config_fields_join_the_schema_at_once_and_a_new_version_replaces_them() {
    let root = tempfile::tempdir().unwrap();
    let c = ControllerProcess::start(&root.path().join("c"));
    let api = Api::new(&c.url(""), &c.first_token);
    let token = plugin_token(&api, "gamma").await;

    // Before the plugin ever connected its field is no setting.
    assert!(
        !instance_fields(&api)
            .await
            .contains(&"gamma.greeting".to_string())
    );
    let (s, v) = api
        .post(
            "/api/v1/instances",
            json!({"name": "g", "config": {"gamma": {"greeting": "hey"}}}),
        )
        .await;
    assert_eq!(s, 400, "{v}");

    // Version 0.1.0 declares gamma.greeting: the schema has it as soon as ready comes back,
    // without a controller restart, and instance configs are validated against it.
    let (p, ready) = plugin_hello(&c, &token, decl("gamma")).await;
    assert_eq!(ready["type"], "ready", "{ready}");
    let fields = instance_fields(&api).await;
    assert!(
        fields.contains(&"gamma.greeting".to_string())
            && fields.contains(&"gamma.load_plugin".to_string()),
        "{fields:?}"
    );
    let (s, v) = api
        .post(
            "/api/v1/instances",
            json!({"name": "g", "config": {"gamma": {"greeting": "hey"}}}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = patch_config(&api, "g", json!({"gamma": {"greeting": 5}})).await;
    assert_eq!(s, 400, "{v}");
    assert!(v.to_string().contains("gamma.greeting"), "{v}");
    let mut p = p;
    assert_eq!(
        plugin_view(&mut p, "g").await,
        json!({"load_plugin": true, "greeting": "hey"})
    );
    drop(p);

    // Version 0.2.0 drops gamma.greeting and adds gamma.level: the schema follows at once.
    let mut v2 = decl("gamma");
    v2["version"] = json!("0.2.0");
    v2["instance_config"] =
        json!([{"name": "gamma.level", "type": "integer", "default": 3, "min": 1, "max": 9}]);
    let (mut p, ready) = plugin_hello(&c, &token, v2).await;
    assert_eq!(ready["type"], "ready", "{ready}");
    let fields = instance_fields(&api).await;
    assert!(
        fields.contains(&"gamma.level".to_string())
            && !fields.contains(&"gamma.greeting".to_string()),
        "{fields:?}"
    );
    let (s, v) = patch_config(&api, "g", json!({"gamma": {"greeting": "again"}})).await;
    assert_eq!(s, 400, "{v}");
    assert!(
        v.to_string().contains("gamma.greeting is not a setting"),
        "{v}"
    );
    let (s, v) = patch_config(&api, "g", json!({"gamma": {"level": 12}})).await;
    assert_eq!(s, 400, "out of the declared range: {v}");
    // The plugin sees its declared fields only, defaults filled in; the dropped field's value
    // is kept in the stored config (a rollback finds it) until cleared with null.
    assert_eq!(
        plugin_view(&mut p, "g").await,
        json!({"load_plugin": true, "level": 3})
    );
    let (s, v) = patch_config(&api, "g", json!({"gamma": {"level": 5}})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["config"]["gamma"]["greeting"], "hey", "{v}");
    assert_eq!(
        plugin_view(&mut p, "g").await,
        json!({"load_plugin": true, "level": 5})
    );
    let (s, v) = patch_config(&api, "g", json!({"gamma": {"greeting": null}})).await;
    assert_eq!(s, 200, "{v}");
    assert!(v["config"]["gamma"].get("greeting").is_none(), "{v}");
    assert_eq!(v["config"]["gamma"]["level"], 5, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_compare_and_set_loses_no_update_between_concurrent_writers() {
    let root = tempfile::tempdir().unwrap();
    let c = ControllerProcess::start(&root.path().join("c"));
    let api = Api::new(&c.url(""), &c.first_token);
    let token = plugin_token(&api, "delta").await;
    let (mut p, ready) = plugin_hello(&c, &token, decl("delta")).await;
    assert_eq!(ready["type"], "ready", "{ready}");

    // Requests are handled concurrently: `writers` read-modify-write loops in flight at once,
    // each round all reads, then all writes.
    async fn race(p: &mut LinkClient, key: &str, writers: usize, cas: bool) -> (i64, usize) {
        let mut pending = writers;
        let mut conflicts = 0;
        while pending > 0 {
            let mut gets = Vec::new();
            for _ in 0..pending {
                gets.push(p.request("plugin_kv_get", json!({"key": key})).await);
            }
            let read = answers(p, gets).await;
            let mut puts = Vec::new();
            for r in read {
                let n = r["ok"]["value"].as_i64().unwrap_or(0);
                let mut put = json!({"key": key, "value": n + 1});
                if cas {
                    put["expect_version"] = r["ok"]["version"].clone();
                }
                puts.push(p.request("plugin_kv_put", put).await);
            }
            let written = answers(p, puts).await;
            for w in &written {
                assert!(w["error"].is_null(), "{w}");
            }
            let stored = written.iter().filter(|w| w["ok"]["stored"] == true).count();
            conflicts += written.len() - stored;
            pending -= stored;
        }
        let id = p.request("plugin_kv_get", json!({"key": key})).await;
        let total = p.response(id).await["ok"]["value"].as_i64().unwrap();
        (total, conflicts)
    }

    // Without an expected version the same race loses updates: that is what CAS is for.
    let (plain, _) = race(&mut p, "plain", 20, false).await;
    assert!(plain < 20, "plain puts counted {plain} of 20");
    let (total, conflicts) = race(&mut p, "counter", 20, true).await;
    assert_eq!(
        total, 20,
        "every increment counted ({conflicts} conflicts retried)"
    );
    assert!(conflicts > 0, "the writers did race");

    // A conflict answers what is there; a bad expectation is refused and writes nothing.
    let id = p
        .request(
            "plugin_kv_put",
            json!({"key": "counter", "value": 0, "expect_version": 0}),
        )
        .await;
    let r = p.response(id).await;
    assert_eq!(r["ok"]["stored"], false, "{r}");
    assert_eq!(r["ok"]["value"], 20, "{r}");
    assert!(r["ok"]["version"].as_i64().unwrap() > 0, "{r}");
    let id = p
        .request(
            "plugin_kv_put",
            json!({"key": "counter", "value": 0, "expect_version": "new"}),
        )
        .await;
    let r = p.response(id).await;
    assert_eq!(r["error"]["code"], "bad_request", "{r}");
    let id = p.request("plugin_kv_get", json!({"key": "counter"})).await;
    assert_eq!(p.response(id).await["ok"]["value"], 20);
}

/// The responses to `ids`, in the order of `ids` (they arrive in any order).
async fn answers(p: &mut LinkClient, ids: Vec<u64>) -> Vec<Value> {
    let mut got: std::collections::HashMap<u64, Value> = std::collections::HashMap::new();
    while got.len() < ids.len() {
        let f = p.next().await.expect("every request is answered");
        if f["type"] == "response"
            && let Some(id) = f["id"].as_u64()
            && ids.contains(&id)
        {
            got.insert(id, f);
        }
    }
    ids.iter()
        .map(|id| got.remove(id).unwrap_or_default())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_send_runs_the_plugins_lua_function_in_the_game() {
    let root = tempfile::tempdir().unwrap();
    let cdir = root.path().join("c");
    std::fs::create_dir_all(&cdir).unwrap();
    let c = ControllerProcess::start(&cdir);
    let api = Api::new(&c.url(""), &c.first_token);
    let token = plugin_token(&api, "echo").await;
    // The plugin's Lua defines the function instance_send calls; it is patched into saves.
    let mut d = decl("echo");
    d["lua"] = json!({"load": ["main.lua"], "files": {"main.lua": concat!(
        "local compat = require(\"modules/clusterio/compat\")\n",
        "function echo_on_message(json)\n",
        "  local msg = compat.json_to_table(json)\n",
        "  game.print(\"[echo] \" .. msg.text .. \" from \" .. msg.from)\n",
        "end\n",
        "return {}\n")}});
    let (mut p, ready) = plugin_hello(&c, &token, d).await;
    assert_eq!(ready["type"], "ready", "{ready}");

    let join = join_token(&cdir);
    let _h = HostProcess::start(&root.path().join("h1"), &c.url(""), &join, "h1", &[]);
    create_and_start(&api, "a", "h1", json!({})).await;
    create_and_start(&api, "off", "h1", json!({"echo": {"load_plugin": false}})).await;

    // Quotes and backslashes survive the trip into the game's Lua.
    let text = "hello \"game\" \\o/";
    let id = p
        .request(
            "instance_send",
            json!({"instance": "a", "function": "echo_on_message", "data": {"text": text, "from": "echo"}}),
        )
        .await;
    let r = p.response(id).await;
    assert_eq!(r["ok"]["queued"], true, "{r}");
    let want = format!("[echo] {text} from echo");
    wait_until("the game ran the plugin's function", 30, || async {
        printed(&api, "a").await.contains(&want)
    })
    .await;

    // Not on an instance that switched the plugin off (its save has no such function either).
    let id = p
        .request(
            "instance_send",
            json!({"instance": "off", "function": "echo_on_message", "data": {"text": "no", "from": "x"}}),
        )
        .await;
    let r = p.response(id).await;
    assert_eq!(r["error"]["code"], "forbidden", "{r}");
    let out = rcon(&api, "off", "/sc rcon.print(type(echo_on_message))").await;
    assert_eq!(
        out.trim(),
        "nil",
        "the Lua is left out where the plugin is off"
    );
    assert!(printed(&api, "off").await.is_empty());
}
