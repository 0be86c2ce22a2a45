//! player_auth end to end: the plugin's real Lua in a factorio-sim game, its `/web-login` command
//! typed by sim players, the controller's unauthenticated routes, and the login page in headless
//! Chromium (which then shows the research_sync page to the player it logged in).

mod common;

use common::browser::{Driver, Ui};
use common::cluster::{Api, HostProcess, create_and_start, rcon};
use common::{ControllerProcess, join_token};
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

/// A controller with player_auth (codes live 5 s, 8 attempts a minute), one host, game "alpha"
/// with the given players in it.
async fn cluster(
    root: &Path,
    plugins: &str,
    players: &[&str],
) -> (ControllerProcess, HostProcess, Api) {
    let cdir = root.join("c");
    std::fs::create_dir_all(&cdir).unwrap();
    std::fs::write(
        cdir.join("config-master.json"),
        json!({ "player_auth": { "code_timeout": 5, "attempts_per_minute": 8 } }).to_string(),
    )
    .unwrap();
    let c = ControllerProcess::start_with(&cdir, &[("PLUGINS", plugins)]);
    let api = Api::new(&c.url(""), &c.first_token);
    let h = HostProcess::start(&root.join("h1"), &c.url(""), &join_token(&cdir), "h1", &[]);
    create_and_start(&api, "alpha", "h1", json!({})).await;
    for p in players {
        rcon(&api, "alpha", &format!("/standin join {p}")).await;
    }
    (c, h, api)
}

/// What `player.print` showed `player` in game since the start, one message a line.
async fn shown_to(api: &Api, player: &str) -> Vec<String> {
    let prefix = format!("@{player} ");
    rcon(api, "alpha", "/standin printed")
        .await
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix).map(String::from))
        .collect()
}

async fn wait_shown(api: &Api, player: &str, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let shown = shown_to(api, player).await;
        if let Some(l) = shown.iter().rev().find(|l| l.contains(needle)) {
            return l.clone();
        }
        assert!(
            Instant::now() < deadline,
            "{player} was not shown '{needle}'; shown: {shown:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The player types `/web-login <code>` in game.
async fn type_in_game(api: &Api, player: &str, args: &str) {
    let out = rcon(
        api,
        "alpha",
        &format!("/standin command {player} /web-login {args}"),
    )
    .await;
    assert!(out.contains("ok"), "{out}");
}

/// An unauthenticated call (no token).
async fn public(api: &Api, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    Api::new(&api.base, "").call(method, path, body).await
}

async fn poll(api: &Api, login: &Value) -> (u16, Value) {
    public(
        api,
        "POST",
        "/api/v1/player_auth/poll",
        Some(json!({ "code": login["code"], "poll_token": login["poll_token"] })),
    )
    .await
}

async fn wait_verified(api: &Api, login: &Value) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (s, v) = poll(api, login).await;
        assert_eq!(s, 200, "poll: {v}");
        if v["verified"] == true {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "the login was not confirmed: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn me(api: &Api, token: &str) -> (u16, Value) {
    Api::new(&api.base, token)
        .call("GET", "/api/v1/me", None)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codes_typed_in_game_log_in_and_wrong_or_expired_ones_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let (_c, _h, api) = cluster(root.path(), "player_auth", &["alice", "bob", "mallory"]).await;

    // Not logged in: the running games are listed.
    let (s, servers) = public(&api, "GET", "/api/v1/player_auth/servers", None).await;
    assert_eq!(s, 200, "{servers}");
    assert_eq!(servers[0]["name"], "alpha", "{servers}");
    assert!(
        servers[0].get("address").is_none(),
        "addresses are hidden by default"
    );

    // Web first: the page gets a code; alice types it; the browser's poll gets a token for her
    // (the user did not exist: it is created).
    let (s, login) = public(&api, "POST", "/api/v1/player_auth/start", Some(json!({}))).await;
    assert_eq!(s, 200, "{login}");
    let code = login["code"].as_str().unwrap().to_string();
    assert_eq!(code.len(), 6);
    assert_eq!(login["command"], format!("/web-login {code}"));
    let (s, v) = poll(&api, &login).await;
    assert_eq!((s, &v["verified"]), (200, &json!(false)), "{v}");
    type_in_game(&api, "alice", &code).await;
    let done = wait_verified(&api, &login).await;
    assert_eq!(done["user"], "alice");
    let token = done["token"].as_str().unwrap();
    let (s, who) = me(&api, token).await;
    assert_eq!((s, &who["name"]), (200, &json!("alice")), "{who}");
    wait_shown(&api, "alice", "your browser is now logged in as alice").await;
    // The token is handed out once; the code works once.
    let (s, v) = poll(&api, &login).await;
    assert_eq!(s, 410, "{v}");
    type_in_game(&api, "alice", &code).await;
    wait_shown(&api, "alice", "Web login failed: that code is not right").await;

    // A wrong code is refused in game.
    type_in_game(&api, "bob", "zzzzzz").await;
    wait_shown(&api, "bob", "Web login failed: that code is not right").await;

    // Game first: bob asks the game for a code, enters it on the page, and confirms the verify
    // code in game. alice cannot confirm bob's verify code.
    type_in_game(&api, "bob", "").await;
    let shown = wait_shown(&api, "bob", "enter ").await;
    let player_code = shown
        .split("enter ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap()
        .to_string();
    let (s, v) = public(
        &api,
        "POST",
        "/api/v1/player_auth/player_code",
        Some(json!({ "player_code": "nope42" })),
    )
    .await;
    assert_eq!(s, 404, "{v}");
    let (s, verify) = public(
        &api,
        "POST",
        "/api/v1/player_auth/player_code",
        Some(json!({ "player_code": player_code })),
    )
    .await;
    assert_eq!(s, 200, "{verify}");
    assert_eq!(verify["player"], "bob");
    let vcode = verify["code"].as_str().unwrap().to_string();
    type_in_game(&api, "alice", &vcode).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (s, v) = poll(&api, &verify).await;
    assert_eq!(
        (s, &v["verified"]),
        (200, &json!(false)),
        "alice confirmed bob's code: {v}"
    );
    type_in_game(&api, "bob", &vcode).await;
    let done = wait_verified(&api, &verify).await;
    assert_eq!(done["user"], "bob");
    let (s, who) = me(&api, done["token"].as_str().unwrap()).await;
    assert_eq!((s, &who["name"]), (200, &json!("bob")), "{who}");

    // A banned user gets no token (mallory's user exists since her join, or is created by the
    // ban).
    let (s, v) = api
        .post("/api/v1/users/mallory/ban", json!({ "reason": "griefing" }))
        .await;
    assert!(s == 200 || s == 201, "{s} {v}");
    let (_, login) = public(&api, "POST", "/api/v1/player_auth/start", Some(json!({}))).await;
    type_in_game(&api, "mallory", login["code"].as_str().unwrap()).await;
    wait_shown(&api, "mallory", "banned").await;
    let (s, v) = poll(&api, &login).await;
    assert_eq!((s, &v["verified"]), (200, &json!(false)), "{v}");

    // An expired code is refused in game and by the poll.
    let (_, login) = public(&api, "POST", "/api/v1/player_auth/start", Some(json!({}))).await;
    tokio::time::sleep(Duration::from_millis(5500)).await;
    type_in_game(&api, "bob", login["code"].as_str().unwrap()).await;
    wait_shown(&api, "bob", "expired").await;
    let (s, v) = poll(&api, &login).await;
    assert_eq!(s, 410, "{v}");

    // Audit rows name who logged in where.
    let (_, audit) = api.call("GET", "/api/v1/audit?limit=100", None).await;
    let logins: Vec<&Value> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "player_auth.login")
        .collect();
    let users: Vec<&str> = logins.iter().filter_map(|e| e["target"].as_str()).collect();
    assert!(
        users.contains(&"alice") && users.contains(&"bob"),
        "{audit}"
    );
    assert!(!users.contains(&"mallory"), "{audit}");
    assert_eq!(logins[0]["actor"], "player_auth:alpha", "{audit}");

    // Rate-limited per client address, 8 attempts a minute: this test has made 5 (three codes
    // asked for, two game codes entered).
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let (s, _) = public(&api, "POST", "/api/v1/player_auth/start", Some(json!({}))).await;
        statuses.push(s);
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429, 429], "{statuses:?}");
    let (s, v) = public(&api, "POST", "/api/v1/player_auth/start", Some(json!({}))).await;
    assert_eq!(s, 429);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("wait a minute"),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_login_page_logs_a_player_in_from_the_game() {
    if common::browser::skipped() {
        eprintln!("skipped: CLUSTORIO_SKIP_BROWSER_TESTS is set");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let (c, _h, api) = cluster(root.path(), "player_auth,research_sync", &["alice"]).await;
    rcon(&api, "alpha", "/standin research automation 1 +0.25").await;

    let driver = Driver::start().expect("chromedriver");
    let ui = Ui::new(&driver, &c.url("/")).await.expect("browser");
    ui.step("login_page_offers_factorio", async {
        ui.goto("").await?;
        ui.click("#login-factorio").await?;
        ui.wait_text("#pa-servers", "alpha").await?;
        Ok(())
    })
    .await;
    let command = ui
        .step("web_first_code", async {
            ui.click("#pa-start").await?;
            ui.wait_text("#pa-command", "/web-login ").await
        })
        .await;
    let code = command.trim().trim_start_matches("/web-login ").to_string();
    type_in_game(&api, "alice", &code).await;
    ui.step("logged_in_as_the_player", async {
        ui.wait_text("#who", "alice").await?;
        Ok(())
    })
    .await;
    ui.step("research_page", async {
        ui.route("#/research").await?;
        ui.wait_text("#research-list", "automation").await?;
        ui.wait_text("#research-list", "25.0%").await?;
        Ok(())
    })
    .await;
    ui.step("research_page_updates", async {
        rcon(&api, "alpha", "/standin research optics").await;
        ui.wait_text("#research-list", "optics").await?;
        ui.wait_js(
            "optics shown researched",
            "document.querySelector('#research-list tr[data-tech=\"optics\"]')?.textContent.includes('researched')",
        )
        .await?;
        Ok(())
    })
    .await;
    ui.step("a_wrong_code_from_the_game_is_refused", async {
        ui.click("#logout").await?;
        ui.click("#login-factorio").await?;
        ui.fill("#pa-player-code", "wrong1").await?;
        ui.click("#pa-submit").await?;
        ui.wait_text("#pa-error", "not right").await?;
        Ok(())
    })
    .await;
    // The refused code is a 404 the browser logs; nothing else may be.
    let errors: Vec<String> = ui
        .browser_errors()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|e| !e.contains("player_code - Failed to load resource"))
        .collect();
    assert!(errors.is_empty(), "console errors: {errors:#?}");
}
