//! global_chat on real processes: two hosts, a game on each, chat typed in one game (the sim's
//! `[CHAT]` log line) shown in the other through `game.print`, what is not chat staying local,
//! and chat said while the controller is down arriving once it is back.

mod common;

use clustorio::host::factorio::{RconClient, RconTimeouts};
use common::cluster::{Api, HostProcess, rcon, wait_until};
use common::{ControllerProcess, join_token};
use serde_json::json;

/// What a game showed with `game.print` (the sim keeps it), one message per entry.
fn lines(out: &str) -> Vec<String> {
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

async fn printed(api: &Api, instance: &str) -> Vec<String> {
    lines(&rcon(api, instance, "/standin printed").await)
}

/// As [`printed`], or nothing while the game cannot be reached (a controller starting again).
async fn printed_now(api: &Api, instance: &str) -> Vec<String> {
    let (s, v) = api
        .post(
            &format!("/api/v1/instances/{instance}/rcon"),
            json!({ "command": "/standin printed" }),
        )
        .await;
    if s != 200 {
        return Vec::new();
    }
    lines(v["output"].as_str().unwrap_or_default())
}

async fn create_on(api: &Api, name: &str, host: &str) {
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
}

/// RCON straight to a game (not through the controller), with the port and password its host
/// started it with.
async fn direct_rcon(host: &HostProcess, instance: &str) -> RconClient {
    let pid = host.factorio_pid(instance).expect("the game runs");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).to_string())
        .collect();
    let value = |flag: &str| {
        let i = args.iter().position(|a| a == flag).expect(flag);
        args[i + 1].clone()
    };
    let bind = value("--rcon-bind");
    let port = bind.rsplit(':').next().unwrap();
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    RconClient::connect(addr, value("--rcon-password"), RconTimeouts::default())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_in_one_game_shows_in_the_other_and_survives_a_controller_restart() {
    let root = tempfile::tempdir().unwrap();
    let cdir = root.path().join("c");
    std::fs::create_dir_all(&cdir).unwrap();
    let env = [("PLUGINS", "global_chat")];
    let mut c = ControllerProcess::start_with(&cdir, &env);
    let port = c.port;
    let api = Api::new(&c.url(""), &c.first_token);
    let join = join_token(&cdir);
    let fast = [("MAX_RECONNECT", "1")];
    let h1 = HostProcess::start(&root.path().join("h1"), &c.url(""), &join, "h1", &fast);
    let _h2 = HostProcess::start(&root.path().join("h2"), &c.url(""), &join, "h2", &fast);
    create_on(&api, "a", "h1").await;
    create_on(&api, "b", "h2").await;

    // A player's chat in A shows in B, prefixed, with A's map tags removed.
    rcon(
        &api,
        "a",
        "/standin chat alice look [gps=10,20,nauvis] at \"this\" \\o/",
    )
    .await;
    wait_until("b shows alice's chat", 20, || async {
        !printed(&api, "b").await.is_empty()
    })
    .await;
    assert_eq!(
        printed(&api, "b").await,
        vec!["[a] alice: look  at \"this\" \\o/"]
    );

    // Not relayed: server messages, commands. A later chat arrives right after the first: the
    // others were never sent.
    api.post(
        "/api/v1/instances/a/rcon",
        json!({ "command": "a message from the server console" }),
    )
    .await;
    rcon(&api, "a", "/standin chat alice /c game.print('x')").await;
    rcon(&api, "a", "/standin command alice /help").await;
    rcon(&api, "a", "/standin chat alice second").await;
    wait_until("b shows the second chat", 20, || async {
        printed(&api, "b").await.len() >= 2
    })
    .await;
    assert_eq!(
        printed(&api, "b").await,
        vec!["[a] alice: look  at \"this\" \\o/", "[a] alice: second"]
    );

    // B → A; a game never gets its own chat back.
    rcon(&api, "b", "/standin chat bob hi from b").await;
    wait_until("a shows bob's chat", 20, || async {
        !printed(&api, "a").await.is_empty()
    })
    .await;
    assert_eq!(printed(&api, "a").await, vec!["[b] bob: hi from b"]);

    // The console sends to one game, or to all.
    let (s, v) = api
        .post(
            "/api/v1/global_chat/send",
            json!({ "text": "only a", "instance": "a" }),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["delivered"], 1);
    let (s, v) = api
        .post("/api/v1/global_chat/send", json!({ "text": "   " }))
        .await;
    assert_eq!(s, 400, "{v}");
    wait_until("a shows the console message", 20, || async {
        printed(&api, "a").await.len() == 2
    })
    .await;
    let a = printed(&api, "a").await;
    assert!(
        a[1].starts_with("[Console] ") && a[1].ends_with(": only a"),
        "{a:?}"
    );
    assert_eq!(printed(&api, "b").await.len(), 2, "b did not get it");

    // `ctl chat send` reaches every game.
    let out = std::process::Command::new(common::bin("clustorio"))
        .args([
            "ctl",
            "chat",
            "send",
            "--url",
            &c.url(""),
            "--token",
            &c.first_token,
        ])
        .args(["hello", "everyone"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Sent to 2 game(s)"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    for g in ["a", "b"] {
        wait_until("the ctl message shows", 20, || async {
            printed(&api, g)
                .await
                .last()
                .is_some_and(|l| l.ends_with(": hello everyone"))
        })
        .await;
    }

    // Chat said while the controller is down arrives once it is back.
    let game_a = direct_rcon(&h1, "a").await;
    c.kill9();
    game_a
        .exec("/standin chat alice said while you were away")
        .await
        .unwrap();
    let c2 = ControllerProcess::start_on(&cdir, port, &env);
    wait_until(
        "b shows the chat said while the controller was down",
        60,
        || async { printed_now(&api, "b").await.len() >= 4 },
    )
    .await;
    let b = printed(&api, "b").await;
    assert_eq!(b.len(), 4, "{b:?}");
    assert_eq!(b[3], "[a] alice: said while you were away");
    drop(c2);
}
