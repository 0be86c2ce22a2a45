//! The Players page in a real browser (headless Chromium through chromedriver): the list with
//! online players first and search, a player's detail with history, every action button, the
//! list-file import with its dry run (and a malformed file importing nothing), and the join
//! address with its copy button on the instances page.
//!
//! Needs Debian's `chromium` and `chromium-driver`; `CLUSTORIO_SKIP_BROWSER_TESTS=1` skips.

mod common;

use anyhow::{Result, bail};
use common::browser::{Driver, Ui};
use common::cluster::{Api, HostProcess};
use common::players::{join, leave, player, start_on};
use common::{ControllerProcess, join_token};
use fantoccini::Locator;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Polls the API until `pred` holds on user `name` (10 s).
async fn user_is(api: &Api, name: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (s, u) = api
            .call("GET", &format!("/api/v1/users/{name}"), None)
            .await;
        if s == 200 && pred(&u) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{name} is not {what}: {u}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Clicks `css`, again if the list was redrawn under the pointer (a stale element).
async fn press(ui: &Ui, css: &str) -> Result<()> {
    let mut last = None;
    for _ in 0..5 {
        match ui.click(css).await {
            Ok(()) => return Ok(()),
            Err(e) if format!("{e:#}").contains("stale") => {
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("clicking {css}")))
}

async fn attach(ui: &Ui, css: &str, path: &std::path::Path) -> Result<()> {
    let input = ui.c.find(Locator::Css(css)).await?;
    input.send_keys(&path.to_string_lossy()).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_players_page_lists_searches_shows_history_acts_and_imports() {
    if common::browser::skipped() {
        eprintln!("skipped: CLUSTORIO_SKIP_BROWSER_TESTS is set");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let cdir = root.path().join("c");
    std::fs::create_dir_all(&cdir).unwrap();
    let c = ControllerProcess::start(&cdir);
    let api = Api::new(&c.url(""), &c.first_token);
    let join_tok = join_token(&cdir);
    let env = [("PUBLIC_ADDRESS", "play.example.org")];
    let _h = HostProcess::start(&root.path().join("h"), &c.url(""), &join_tok, "h1", &env);
    let alpha = start_on(&api, "alpha", "h1").await;
    let port = alpha["game_port"].as_u64().unwrap();
    assert_eq!(join(&api, "alpha", "Bob").await, "ok");
    leave(&api, "alpha", "Bob").await;
    assert_eq!(join(&api, "alpha", "Alice").await, "ok");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !player(&api, "Alice")
        .await
        .is_some_and(|p| p["online"] == true)
    {
        assert!(Instant::now() < deadline, "Alice never showed as online");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let driver = Driver::start().expect("chromedriver");
    let ui = Ui::new(&driver, &c.url("/"))
        .await
        .expect("browser session");
    ui.step("log_in", async {
        ui.goto("").await?;
        ui.fill("#token", &c.first_token).await?;
        ui.click("#login-button").await?;
        ui.wait_text("#who", "admin").await?;
        Ok(())
    })
    .await;

    ui.step("player_list_online_first_and_search", async {
        ui.route("#/players").await?;
        ui.wait_text("main h1", "Players").await?;
        ui.wait_text("#players-table tbody tr:first-child", "Alice")
            .await?;
        ui.wait_text("#players-table tr[data-player='Alice']", "alpha")
            .await?;
        ui.wait_text("#players-table tr[data-player='Bob']", "offline")
            .await?;
        ui.fill("#player-search", "bo").await?;
        ui.wait_js(
            "only Bob listed",
            "document.querySelectorAll('#players-table tbody tr').length === 1 && document.querySelector(\"#players-table tr[data-player='Bob']\")",
        )
        .await?;
        // Emptied the way a user does it (clear() alone fires no input event).
        ui.js(
            "const e = document.querySelector('#player-search'); e.value = ''; e.dispatchEvent(new Event('input'));",
            vec![],
        )
        .await?;
        ui.wait_js(
            "everyone listed again",
            "document.querySelectorAll('#players-table tbody tr').length >= 3",
        )
        .await?;
        ui.shot("players-list").await;
        Ok(())
    })
    .await;

    ui.step("player_detail_with_history", async {
        press(&ui, "#players-table tr[data-player='Alice'] a").await?;
        ui.wait_text("main h1", "Alice").await?;
        ui.wait_text("#player-now", "online on alpha").await?;
        ui.wait_text("#player-stats tr[data-instance='alpha']", "1")
            .await?;
        ui.wait_text("#player-history", "alpha").await?;
        ui.route("#/players/Bob").await?;
        ui.wait_text("main h1", "Bob").await?;
        ui.wait_text("#player-history", "left").await?;
        ui.shot("player-detail").await;
        Ok(())
    })
    .await;

    ui.step("kick_from_the_list", async {
        ui.route("#/players").await?;
        press(&ui, "button[data-key='kick-Alice']").await?;
        ui.wait_text("dialog[open] h2", "Kick Alice?").await?;
        ui.fill("dialog[open] input", "afk").await?;
        ui.click("dialog[open] button[type='submit']").await?;
        ui.wait_text("#players-table tr[data-player='Alice']", "offline")
            .await?;
        let d = api.get("/api/v1/players/Alice").await;
        if d["history"][0]["leave_reason"] != "kicked: afk" {
            bail!("the kick's reason is not in the history: {d}");
        }
        Ok(())
    })
    .await;

    ui.step("ban_unban_promote_demote_whitelist_buttons", async {
        press(&ui, "button[data-key='ban-Bob']").await?;
        ui.fill("dialog[open] input", "griefing").await?;
        ui.click("dialog[open] button[type='submit']").await?;
        user_is(&api, "Bob", "banned", |u| {
            u["is_banned"] == true && u["ban_reason"] == "griefing"
        })
        .await?;
        ui.wait_text("#players-table tr[data-player='Bob']", "banned: griefing")
            .await?;
        press(&ui, "button[data-key='unban-Bob']").await?;
        user_is(&api, "Bob", "unbanned", |u| u["is_banned"] == false).await?;
        press(&ui, "button[data-key='promote-Bob']").await?;
        user_is(&api, "Bob", "an admin", |u| u["is_admin"] == true).await?;
        press(&ui, "button[data-key='demote-Bob']").await?;
        user_is(&api, "Bob", "no admin", |u| u["is_admin"] == false).await?;
        press(&ui, "button[data-key='whitelist-Bob']").await?;
        user_is(&api, "Bob", "whitelisted", |u| u["is_whitelisted"] == true).await?;
        press(&ui, "button[data-key='unwhitelist-Bob']").await?;
        user_is(&api, "Bob", "off the whitelist", |u| {
            u["is_whitelisted"] == false
        })
        .await?;
        let audit = api.get("/api/v1/audit?limit=100").await;
        for action in [
            "user.kick",
            "user.ban",
            "user.unban",
            "user.promote",
            "user.demote",
            "user.whitelist",
            "user.unwhitelist",
        ] {
            if !audit
                .as_array()
                .is_some_and(|a| a.iter().any(|r| r["action"] == action))
            {
                bail!("no audit row {action}");
            }
        }
        Ok(())
    })
    .await;

    let files = root.path().join("files");
    std::fs::create_dir_all(&files).unwrap();
    let bans = files.join("server-banlist.json");
    std::fs::write(
        &bans,
        r#"["Mallory", {"username": "Eve", "reason": "spam"}]"#,
    )
    .unwrap();
    let bad = files.join("bad-adminlist.json");
    std::fs::write(&bad, r#"["Zoe", 7]"#).unwrap();

    ui.step("import_dry_run_then_import", async {
        attach(&ui, "#import-bans", &bans).await?;
        ui.click("#import-dry-run").await?;
        ui.wait_text("#import-result", "Dry run").await?;
        ui.wait_text("#import-result", "Mallory").await?;
        let (s, _) = api.call("GET", "/api/v1/users/Mallory", None).await;
        if s != 404 {
            bail!("the dry run created Mallory");
        }
        ui.click("#import-apply").await?;
        ui.wait_text("#import-result", "Imported").await?;
        user_is(&api, "Eve", "banned for spam", |u| {
            u["is_banned"] == true && u["ban_reason"] == "spam"
        })
        .await?;
        ui.wait_text("#players-table tr[data-player='Mallory']", "banned")
            .await?;
        Ok(())
    })
    .await;

    ui.step("a_malformed_file_imports_nothing", async {
        ui.js("document.querySelector('#import-bans').value = ''", vec![])
            .await?;
        attach(&ui, "#import-admins", &bad).await?;
        ui.click("#import-dry-run").await?;
        ui.wait_text("#import-result", "server-adminlist.json entry 2")
            .await?;
        let disabled = ui
            .js(
                "return document.querySelector('#import-apply').disabled",
                vec![],
            )
            .await?;
        if disabled != json!(true) {
            bail!("Import stays enabled after a refused dry run");
        }
        let (s, _) = api.call("GET", "/api/v1/users/Zoe", None).await;
        if s != 404 {
            bail!("a malformed file created Zoe");
        }
        ui.shot("players-import").await;
        Ok(())
    })
    .await;

    ui.step("join_address_with_copy_button", async {
        ui.route("#/instances").await?;
        let want = format!("play.example.org:{port}");
        ui.wait_text("code[data-join-address='alpha']", &want)
            .await?;
        ui.click("#instances-table tr[data-instance='alpha'] .join-address button")
            .await?;
        ui.wait_text("#toasts", "Copied").await?;
        Ok(())
    })
    .await;

    // The refused import's 400 is expected; nothing else may fail.
    let errors: Vec<String> = ui
        .browser_errors()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|e| !e.contains("/api/v1/lists/import"))
        .collect();
    assert!(errors.is_empty(), "browser console errors: {errors:?}");
}
