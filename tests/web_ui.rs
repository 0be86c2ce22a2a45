//! The web UI in a real browser: headless Chromium driven through chromedriver (WebDriver), on a
//! controller, a host and factorio-sim.
//!
//! One browser session and one cluster serve every step (the machine has two cores; starting
//! Chromium is the slow part). Each step saves a screenshot `FAILED-<step>.png` under
//! `target/screenshots/` when it fails; the tour step saves one of every page there.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them). Set
//! `CLUSTORIO_SKIP_BROWSER_TESTS=1` to skip on a machine without them.

mod common;

use anyhow::{Result, anyhow, bail};
use common::browser::{Driver, Ui, WAIT};
use common::cluster::{Api, HostProcess, free_tcp_port};
use common::{ControllerProcess, join_token};
use fantoccini::Locator;
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A secret of instance beta that no page may show.
const GAME_PASSWORD: &str = "pw-not-for-players-4711";

/// Basic screen-reader checks on the current page: every control has a name, ids are unique,
/// one h1, and the page has a language.
const A11Y_CHECK: &str = r#"
const problems = [];
const named = (e) => (e.getAttribute('aria-label') || '').trim() || e.getAttribute('aria-labelledby')
  || (e.id && document.querySelector(`label[for="${CSS.escape(e.id)}"]`)) || e.closest('label');
for (const e of document.querySelectorAll('input, select, textarea')) {
  if (e.type !== 'hidden' && !named(e)) problems.push(`unlabelled ${e.tagName} ${e.id || e.name || ''}`);
}
for (const e of document.querySelectorAll('button, a[href]')) {
  if (!(e.textContent.trim() || e.getAttribute('aria-label'))) problems.push(`nameless ${e.tagName} ${e.outerHTML.slice(0, 80)}`);
}
const ids = [...document.querySelectorAll('[id]')].map((e) => e.id);
for (const id of new Set(ids)) if (ids.filter((x) => x === id).length > 1) problems.push(`duplicate id ${id}`);
if (document.querySelectorAll('main h1').length !== 1) problems.push('not exactly one h1');
if (!document.documentElement.lang) problems.push('no lang');
return problems;
"#;

fn save_zip(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let file = std::fs::File::create(&path).expect("creating the save");
    let mut w = zip::ZipWriter::new(file);
    let stem = name.trim_end_matches(".zip");
    for (entry, data) in [
        (format!("{stem}/level.dat0"), vec![7u8; 200_000]),
        (format!("{stem}/level-init.dat"), vec![1u8; 1000]),
        (format!("{stem}/control.lua"), b"-- test".to_vec()),
    ] {
        w.start_file(entry, zip::write::SimpleFileOptions::default())
            .expect("zip entry");
        w.write_all(&data).expect("zip data");
    }
    w.finish().expect("zip finish");
    path
}

fn mod_zip(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let file = std::fs::File::create(&path).expect("creating the mod");
    let mut w = zip::ZipWriter::new(file);
    let stem = name.trim_end_matches(".zip");
    w.start_file(
        format!("{stem}/info.json"),
        zip::write::SimpleFileOptions::default(),
    )
    .expect("zip entry");
    w.write_all(br#"{"name":"speedy","version":"1.0.0"}"#)
        .expect("zip data");
    w.finish().expect("zip finish");
    path
}

/// A reverse proxy that serves the controller under `/cluster/` (like nginx `location
/// /cluster/ { proxy_pass http://controller/; }`): one request per connection, WebSocket
/// upgrades piped through.
async fn sub_path_proxy(upstream: u16) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("proxy bind");
    let port = listener.local_addr().expect("proxy addr").port();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let head_end = loop {
                    let Ok(n) = client.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                let mut lines = head.split("\r\n");
                let first = lines.next().unwrap_or_default();
                let mut parts = first.splitn(3, ' ');
                let (method, path, version) = (
                    parts.next().unwrap_or_default(),
                    parts.next().unwrap_or_default(),
                    parts.next().unwrap_or_default(),
                );
                let Some(rest) = path.strip_prefix("/cluster/") else {
                    let _ = client
                        .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                        .await;
                    return;
                };
                let upgrade = head.to_ascii_lowercase().contains("upgrade: websocket");
                let mut out = format!("{method} /{rest} {version}\r\n");
                for l in lines.filter(|l| !l.is_empty()) {
                    if !upgrade && l.to_ascii_lowercase().starts_with("connection:") {
                        continue;
                    }
                    out.push_str(l);
                    out.push_str("\r\n");
                }
                if !upgrade {
                    out.push_str("connection: close\r\n");
                }
                out.push_str("\r\n");
                let Ok(mut server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                else {
                    return;
                };
                if server.write_all(out.as_bytes()).await.is_err()
                    || server.write_all(&buf[head_end..]).await.is_err()
                {
                    return;
                }
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_ui_in_a_real_browser() {
    if common::browser::skipped() {
        eprintln!("skipped: CLUSTORIO_SKIP_BROWSER_TESTS is set");
        return;
    }
    let started = Instant::now();
    let root = tempfile::tempdir().expect("tempdir");
    let cdir = root.path().join("controller");
    std::fs::create_dir_all(&cdir).expect("controller dir");
    let plugins = [("PLUGINS", "global_chat")];
    let mut controller = ControllerProcess::start_with(&cdir, &plugins);
    let port = controller.port;
    let base = controller.url("/");
    let token = controller.first_token.clone();
    assert!(!token.is_empty(), "first boot prints a login token");
    let api = Api::new(&controller.url(""), &token);
    let join = join_token(&cdir);
    let host = HostProcess::start(
        &root.path().join("host-one"),
        &controller.url(""),
        &join,
        "host-one",
        &[],
    );
    let (s, v) = api
        .post("/api/v1/instances", json!({ "name": "alpha" }))
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = api
        .post(
            "/api/v1/instances/alpha/assign",
            json!({ "host": "host-one" }),
        )
        .await;
    assert_eq!(s, 200, "{v}");

    let driver = Driver::start().expect("chromedriver");
    let ui = Ui::new(&driver, &base).await.expect("browser session");

    ui.step("wrong_token_is_refused", async {
        ui.goto("").await?;
        ui.fill("#token", "clu_this-is-not-a-token").await?;
        ui.click("#login-button").await?;
        ui.wait_text("#login-error", "wrong or has been revoked")
            .await?;
        let stored = ui
            .js("return localStorage.getItem('clustorio.token')", vec![])
            .await?;
        if !stored.is_null() {
            bail!("a refused token was remembered: {stored}");
        }
        Ok(())
    })
    .await;

    ui.step("log_in", async {
        ui.fill("#token", &token).await?;
        ui.click("#login-button").await?;
        ui.wait_text("#who", "admin").await?;
        ui.wait_text("main h1", "Overview").await?;
        ui.wait_text("main", "alpha").await?;
        // The console log really is read: a probe error shows up, and nothing else so far.
        ui.js("console.error('clustorio-log-probe')", vec![])
            .await?;
        let errors = ui.browser_errors().await?;
        if errors.len() != 1 || !errors[0].contains("clustorio-log-probe") {
            bail!("expected only the probe in the browser log, got {errors:#?}");
        }
        Ok(())
    })
    .await;

    ui.step("see_a_host_and_its_instances", async {
        ui.route("#/hosts").await?;
        let row = "#hosts-table tr[data-host='host-one']";
        ui.wait_text(row, "connected").await?;
        ui.wait_text(row, "alpha").await?;
        let token = ui
            .js("return document.querySelector('#join-token').value", vec![])
            .await?;
        if token.as_str().is_none_or(str::is_empty) {
            bail!("the join token is not shown");
        }
        Ok(())
    })
    .await;

    ui.step("create_assign_and_start_an_instance", async {
        ui.route("#/instances").await?;
        ui.fill("#new-instance-name", "beta").await?;
        ui.wait_js("host-one in the host list", "[...document.querySelectorAll('#new-instance-host option')].some(o => o.value === 'host-one')").await?;
        ui.js("const s = document.querySelector('#new-instance-host'); s.value = 'host-one';", vec![]).await?;
        ui.click("#create-instance").await?;
        ui.wait_text("main h1", "beta").await?;
        ui.wait_text("#instance-status", "stopped").await?;
        ui.wait_text("#instance-status", "host-one").await?;
        ui.click("#action-start:not([disabled])").await?;
        // The status turns running through link events, without reloading.
        ui.wait_text("#instance-status .badge", "running").await?;
        let v = api.get("/api/v1/instances/beta").await;
        if v["status"] != "running" {
            bail!("the API says {}", v["status"]);
        }
        Ok(())
    })
    .await;

    ui.step("players_online_arrive_live", async {
        let (s, v) = api
            .post(
                "/api/v1/instances/beta/rcon",
                json!({ "command": "/standin join alice" }),
            )
            .await;
        if s != 200 {
            bail!("rcon: {s} {v}");
        }
        ui.wait_text("#players-online", "alice").await?;
        Ok(())
    })
    .await;

    ui.step("console_command_and_live_log", async {
        ui.click("#tab-console").await?;
        ui.wait_text("#log-view", "alice").await?;
        ui.fill("#rcon-command", "/players online").await?;
        ui.click("#rcon-send").await?;
        ui.wait_text("#console-output", "Online players").await?;
        ui.wait_text("#console-output", "alice").await?;
        // A chat line sent from the game shows up in the live log.
        api.post(
            "/api/v1/instances/beta/rcon",
            json!({ "command": "/standin chat alice hello from the game" }),
        )
        .await;
        ui.wait_text("#log-view", "hello from the game").await?;
        Ok(())
    })
    .await;

    ui.step("cluster_chat_page", async {
        ui.route("#/chat").await?;
        ui.wait_text("main h1", "Chat").await?;
        // Chat said in the game arrives live.
        api.post(
            "/api/v1/instances/beta/rcon",
            json!({ "command": "/standin chat alice hi everyone" }),
        )
        .await;
        ui.wait_text("#chat-log", "alice: hi everyone").await?;
        // A message typed here reaches the chosen game.
        ui.wait_js(
            "beta among the targets",
            "[...document.querySelectorAll('#chat-target option')].some(o => o.textContent === 'beta')",
        )
        .await?;
        ui.js(
            "const s = document.querySelector('#chat-target'); s.value = [...s.options].find(o => o.textContent === 'beta').value;",
            vec![],
        )
        .await?;
        ui.fill("#chat-text", "hello beta").await?;
        ui.click("#chat-send").await?;
        ui.wait_text("#chat-log", "hello beta").await?;
        let deadline = Instant::now() + WAIT;
        loop {
            let (_, v) = api
                .post(
                    "/api/v1/instances/beta/rcon",
                    json!({ "command": "/standin printed" }),
                )
                .await;
            if v["output"]
                .as_str()
                .is_some_and(|o| o.contains("[Console] admin: hello beta"))
            {
                break;
            }
            if Instant::now() > deadline {
                bail!("the game did not show the message: {v}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Back where the next step starts.
        ui.route("#/instances/beta/console").await?;
        ui.wait_text("main h1", "beta").await?;
        Ok(())
    })
    .await;

    ui.step("config_form_saves_shows_the_servers_message_and_restart_marks", async {
        let (s, v) = api
            .call(
                "PATCH",
                "/api/v1/instances/beta",
                Some(json!({"config": {"server_settings": {"game_password": GAME_PASSWORD, "name": "Beta World"}}})),
            )
            .await;
        if s != 200 {
            bail!("setting a password: {s} {v}");
        }
        ui.click("#tab-config").await?;
        let max = "#cfg-server_settings-max_players";
        ui.wait_js("the generated form", &format!("document.querySelector('{max}')")).await?;
        // Sections, the right inputs, the restart mark on a restart-required field only.
        for section in ["Server", "Game", "Backups", "Advanced"] {
            ui.wait_text(&format!("#cfg-section-{section} legend"), section).await?;
        }
        ui.wait_js("a number input with the schema's range", &format!("document.querySelector('{max}').type === 'number' && document.querySelector('{max}').max === '65535'")).await?;
        ui.wait_js("a checkbox for a bool", "document.querySelector('#cfg-auto_start').type === 'checkbox'").await?;
        ui.wait_js("a select for an enum", "document.querySelector('#cfg-server_settings-allow_commands').tagName === 'SELECT'").await?;
        ui.wait_text("[data-setting='server_settings.max_players'] .restart-mark", "restart to apply").await?;
        ui.wait_js("no mark on a live field", "!document.querySelector(\"[data-setting='auto_start'] .restart-mark\")").await?;
        // The secret shows as set, never its value.
        ui.wait_text("#cfg-server_settings-game_password-note", "Set (hidden)").await?;
        let page = ui.js("return document.documentElement.outerHTML + [...document.querySelectorAll('input')].map(i => i.value).join(' ')", vec![]).await?;
        if page.as_str().unwrap_or_default().contains(GAME_PASSWORD) {
            bail!("the game password is on the page");
        }

        // Edit max_players in the form: saved, siblings kept, and (it runs) waiting for a restart.
        ui.fill(max, "24").await?;
        ui.click("#cfg-save").await?;
        ui.wait_text("#cfg-problem", "Saved.").await?;
        let v = api.get("/api/v1/instances/beta").await;
        if v["config"]["server_settings"]["max_players"] != 24 || v["config"]["server_settings"]["name"] != "Beta World" {
            bail!("the form did not save max_players alone: {}", v["config"]);
        }
        if v["secrets"]["server_settings.game_password"] != "set" {
            bail!("the password was lost: {v}");
        }
        ui.wait_text("#cfg-server_settings-max_players-note", "waits for a restart").await?;

        // An invalid value: the server's message, beside the field; nothing stored.
        ui.fill(max, "70000").await?;
        ui.click("#cfg-save").await?;
        ui.wait_text(
            "#cfg-server_settings-max_players-error",
            "server_settings.max_players must be an integer from 0 to 65535",
        )
        .await?;
        ui.wait_js("the field marked invalid", &format!("document.querySelector('{max}').getAttribute('aria-invalid') === 'true'")).await?;
        let v = api.get("/api/v1/instances/beta").await;
        if v["config"]["server_settings"]["max_players"] != 24 {
            bail!("a refused value was stored: {}", v["config"]);
        }

        // The raw JSON, behind Advanced: the server's message there too, then a save.
        ui.click("#config-advanced summary").await?;
        ui.fill("#config-editor", r#"{"game_port": "high"}"#).await?;
        ui.click("#config-save").await?;
        ui.wait_text("#config-problems", "game_port must be a port number from 1 to 65535").await?;
        ui.fill("#config-editor", "{ not json").await?;
        ui.click("#config-save").await?;
        ui.wait_text("#config-problems", "Not valid JSON").await?;
        ui.fill(
            "#config-editor",
            r#"{"restart_on_crash": true, "backup_retention": 3, "server_settings": {"max_players": 24, "name": "Beta World"}}"#,
        )
        .await?;
        ui.click("#config-save").await?;
        let deadline = Instant::now() + WAIT;
        loop {
            let v = api.get("/api/v1/instances/beta").await;
            if v["config"]["restart_on_crash"] == true && v["config"]["backup_retention"] == 3 {
                if v["secrets"]["server_settings.game_password"] != "set" {
                    bail!("the raw editor dropped the hidden password: {v}");
                }
                break;
            }
            if Instant::now() > deadline {
                bail!("the config was not saved: {}", v["config"]);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The form follows the change.
        ui.wait_js("the checkbox follows", "document.querySelector('#cfg-restart_on_crash').checked").await?;
        // The two refusals are the only errors the browser saw (it logs every 400).
        let errors = ui.browser_errors().await?;
        if errors.len() != 2 || !errors.iter().all(|e| e.contains("400 (Bad Request)")) {
            bail!("expected the two refused saves in the browser log, got {errors:#?}");
        }
        Ok(())
    })
    .await;

    ui.step(
        "settings_page_shows_controller_and_host_config_with_secrets_masked",
        async {
            ui.route("#/settings").await?;
            ui.wait_text("main h1", "Settings").await?;
            ui.wait_js(
                "the controller form",
                "document.querySelector('#controller-settings-cluster_name')",
            )
            .await?;
            ui.wait_js(
                "the host form",
                "document.querySelector('#host-settings-controller_token')",
            )
            .await?;
            ui.wait_text("#host-settings-controller_token-note", "Set (hidden)")
                .await?;
            ui.click("#controller-settings-metrics_public").await?;
            ui.click("#controller-settings-save").await?;
            ui.wait_text("#controller-settings-problem", "Saved.")
                .await?;
            let v = api.get("/api/v1/controller/config").await;
            if v["config"]["metrics_public"] != true {
                bail!("the controller setting was not saved: {v}");
            }
            let page = ui
                .js("return document.documentElement.outerHTML", vec![])
                .await?;
            if page.as_str().unwrap_or_default().contains(&join) {
                bail!("the host's token is on the page");
            }
            ui.route("#/instances/beta/config").await?;
            ui.wait_text("main h1", "beta").await?;
            Ok(())
        },
    )
    .await;

    let save = save_zip(root.path(), "uploaded-map.zip");
    ui.step("upload_a_save", async {
        ui.click("#tab-saves").await?;
        ui.wait_js("the save form", "document.querySelector('#save-file')")
            .await?;
        let input = ui.c.find(Locator::Css("#save-file")).await?;
        input.send_keys(&save.to_string_lossy()).await?;
        ui.click("#save-upload").await?;
        ui.wait_text(
            "#saves-table tr[data-save='uploaded-map.zip']",
            "uploaded-map.zip",
        )
        .await?;
        // XHR upload progress reached the end.
        ui.wait_js(
            "a full upload progress bar",
            "document.querySelector(\"progress[aria-label='Upload progress']\").value === 1",
        )
        .await?;
        let saves = api.get("/api/v1/instances/beta/saves").await;
        if !saves.to_string().contains("uploaded-map.zip") {
            bail!("the API does not list it: {saves}");
        }
        // A backup of the running game to the controller.
        ui.click("#backup-button").await?;
        ui.wait_text("#saves-result", "Backed up").await?;
        Ok(())
    })
    .await;

    let mod_zip = mod_zip(root.path(), "speedy_1.0.0.zip");
    ui.step("upload_a_mod", async {
        ui.route("#/mods").await?;
        ui.wait_js("the mod form", "document.querySelector('#mod-file')")
            .await?;
        let input = ui.c.find(Locator::Css("#mod-file")).await?;
        input.send_keys(&mod_zip.to_string_lossy()).await?;
        ui.click("#mod-upload").await?;
        ui.wait_text(
            "#mods-table tr[data-mod='speedy_1.0.0.zip']",
            "speedy_1.0.0.zip",
        )
        .await?;
        Ok(())
    })
    .await;

    ui.step("ban_a_user", async {
        ui.route("#/users").await?;
        ui.fill("#new-user-name", "griefer").await?;
        ui.click("#create-user").await?;
        let row = "#users-table tr[data-user='griefer']";
        ui.wait_text(row, "griefer").await?;
        ui.click(&format!("{row} button[data-key^='ban-']")).await?;
        ui.fill("#ban-reason", "took all the copper").await?;
        ui.click("dialog[open] button[type='submit']").await?;
        ui.wait_text(&format!("{row} .banned"), "took all the copper")
            .await?;
        let u = api.get("/api/v1/users/griefer").await;
        if u["is_banned"] != true || u["ban_reason"] != "took all the copper" {
            bail!("the API says {u}");
        }
        Ok(())
    })
    .await;

    ui.step(
        "a_crash_says_why_first_and_shows_the_output_as_lines",
        async {
            let (s, v) = api.post("/api/v1/instances/alpha/start", json!({})).await;
            if s != 200 {
                bail!("start: {s} {v}");
            }
            let Some(pid) = host.factorio_pid("alpha") else {
                bail!("alpha's game has no pid");
            };
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            ui.route("#/instances/alpha").await?;
            ui.wait_text("#instance-status .badge", "crashed").await?;
            // The status line says what happened, in one line, without the output.
            let said = ui.text(".inst-message").await?.unwrap_or_default();
            if !said.contains("killed by signal 9") || said.contains("last output") {
                bail!("the status line says {said:?}");
            }
            // The details say it once more, with the game's last lines as lines, folded away.
            ui.wait_js(
            "the output as lines",
            "(() => { const p = document.querySelector('.inst-report details pre.inst-output'); \
             return !!p && p.textContent.split('\\n').length > 1; })()",
        )
        .await?;
            let summary = ui.text(".inst-report strong").await?.unwrap_or_default();
            if !summary.contains("killed by signal 9") {
                bail!("the details say {summary:?}");
            }
            Ok(())
        },
    )
    .await;

    ui.step("delete_an_instance_after_confirming", async {
        ui.route("#/instances/alpha").await?;
        ui.wait_text("main h1", "alpha").await?;
        ui.click("#action-delete:not([disabled])").await?;
        ui.wait_text("dialog[open] h2", "Delete instance alpha?")
            .await?;
        // Cancel first: nothing happens.
        ui.click("dialog[open] button.secondary").await?;
        ui.wait_js(
            "the dialog to close",
            "!document.querySelector('dialog[open]')",
        )
        .await?;
        let (s, _) = api.call("GET", "/api/v1/instances/alpha", None).await;
        if s != 200 {
            bail!("cancel deleted it ({s})");
        }
        ui.click("#action-delete:not([disabled])").await?;
        ui.click("dialog[open] button[type='submit']").await?;
        ui.wait_text("main h1", "Instances").await?;
        ui.wait_js(
            "alpha gone from the list",
            "!document.querySelector(\"#instances-table tr[data-instance='alpha']\")",
        )
        .await?;
        let (s, _) = api.call("GET", "/api/v1/instances/alpha", None).await;
        if s != 404 {
            bail!("the API still has it ({s})");
        }
        Ok(())
    })
    .await;

    ui.step("create_a_role", async {
        ui.route("#/roles").await?;
        ui.click("#create-role").await?;
        ui.wait_js(
            "the permission list",
            "document.querySelector(\"dialog[open] input[data-perm='core.instance.list']\")",
        )
        .await?;
        ui.fill("dialog[open] input:not([type='checkbox'])", "Moderator")
            .await?;
        ui.click("dialog[open] input[data-perm='core.instance.list']")
            .await?;
        ui.click("dialog[open] button[type='submit']").await?;
        ui.wait_text("#roles-table", "Moderator").await?;
        let roles = api.get("/api/v1/roles").await;
        let ok =
            roles.as_array().into_iter().flatten().any(|r| {
                r["name"] == "Moderator" && r["permissions"] == json!(["core.instance.list"])
            });
        if !ok {
            bail!("the API says {roles}");
        }
        Ok(())
    })
    .await;

    ui.step("every_page_loads_without_errors", async {
        let pages = [
            ("overview", "#/overview", "Overview"),
            ("instances", "#/instances", "Instances"),
            ("instance", "#/instances/beta/overview", "beta"),
            ("instance-config", "#/instances/beta/config", "beta"),
            ("instance-saves", "#/instances/beta/saves", "beta"),
            ("instance-console", "#/instances/beta/console", "beta"),
            ("hosts", "#/hosts", "Hosts"),
            ("users", "#/users", "Users"),
            ("roles", "#/roles", "Roles"),
            ("mods", "#/mods", "Mods"),
            ("audit", "#/audit", "Audit log"),
            ("settings", "#/settings", "Settings"),
            ("chat", "#/chat", "Chat"),
        ];
        // A full load first: the errors a fresh page would log count too.
        ui.goto("#/overview").await?;
        ui.c.refresh().await?;
        for (name, hash, heading) in pages {
            ui.route(hash).await?;
            ui.wait_text("main h1", heading).await?;
            tokio::time::sleep(Duration::from_millis(400)).await;
            ui.shot(name).await;
            let problems = ui.js(A11Y_CHECK, vec![]).await?;
            if problems.as_array().is_some_and(|p| !p.is_empty()) {
                bail!("page {name}: accessibility problems: {problems:#}");
            }
        }
        ui.c.set_window_size(390, 844).await?;
        for (name, hash, heading) in [
            ("phone-overview", "#/overview", "Overview"),
            ("phone-instance", "#/instances/beta/console", "beta"),
        ] {
            ui.route(hash).await?;
            ui.wait_text("main h1", heading).await?;
            tokio::time::sleep(Duration::from_millis(400)).await;
            ui.shot(name).await;
        }
        let wide = ui
            .js(
                "return document.documentElement.scrollWidth > window.innerWidth + 1",
                vec![],
            )
            .await?;
        ui.c.set_window_size(1280, 900).await?;
        if wide == json!(true) {
            bail!("the page scrolls sideways on a phone-sized screen");
        }
        let errors = ui.browser_errors().await?;
        if !errors.is_empty() {
            bail!("the browser logged errors: {errors:#?}");
        }
        let foreign = ui.foreign_requests().await?;
        if !foreign.is_empty() {
            bail!("requests to other origins: {foreign:?}");
        }
        Ok(())
    })
    .await;

    ui.step("reconnects_after_a_controller_restart", async {
        ui.route("#/instances").await?;
        ui.wait_text("#instances-table", "beta").await?;
        controller.kill9();
        ui.wait_js("the banner", "!document.querySelector('#banner').hidden")
            .await?;
        ui.wait_text("#banner", "reconnecting").await?;
        ui.shot("controller-away").await;
        controller = ControllerProcess::start_on(&cdir, port, &plugins);
        ui.wait_js(
            "the banner to go",
            "document.querySelector('#banner').hidden",
        )
        .await?;
        // State is reloaded: the host comes back and its instances with it.
        ui.wait_text("#instances-table tr[data-instance='beta']", "running")
            .await?;
        Ok(())
    })
    .await;

    ui.step("log_out", async {
        ui.click("#logout").await?;
        ui.wait_js("the login form", "document.querySelector('#login-form')")
            .await?;
        ui.c.refresh().await?;
        ui.wait_js(
            "the login form after a reload",
            "document.querySelector('#login-form')",
        )
        .await?;
        let stored = ui
            .js("return localStorage.getItem('clustorio.token')", vec![])
            .await?;
        if !stored.is_null() {
            bail!("the token is still stored after logout");
        }
        Ok(())
    })
    .await;

    let (s, v) = api.post("/api/v1/users", json!({ "name": "pat" })).await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = api.post("/api/v1/tokens", json!({ "user": "pat" })).await;
    assert_eq!(s, 201, "{v}");
    let player_token = v["token"].as_str().expect("token").to_string();
    ui.step("a_player_sees_no_config_and_no_secret", async {
        ui.fill("#token", &player_token).await?;
        ui.click("#login-button").await?;
        ui.wait_text("#who", "pat").await?;
        ui.route("#/instances/beta/config").await?;
        ui.wait_text("main h1", "beta").await?;
        ui.wait_text("#instance-status", "running").await?;
        let shown = ui
            .js("return [!!document.querySelector('#tab-config'), !!document.querySelector('#cfg-form, #config-editor'), document.documentElement.outerHTML]", vec![])
            .await?;
        if shown[0] == true || shown[1] == true {
            bail!("a player is offered the config tab");
        }
        let html = shown[2].as_str().unwrap_or_default();
        if html.contains(GAME_PASSWORD) || html.contains("Beta World") {
            bail!("a player's page shows the config");
        }
        if ui.js("return [...document.querySelectorAll('#nav a')].some(a => a.dataset.page === 'settings')", vec![]).await? == json!(true) {
            bail!("a player is offered the settings page");
        }
        ui.click("#logout").await?;
        ui.wait_js("the login form", "document.querySelector('#login-form')").await?;
        Ok(())
    })
    .await;

    let proxy = sub_path_proxy(port).await;
    // A second token for this origin, revoked at the end.
    let (s, second) = api.post("/api/v1/tokens", json!({ "user": "admin" })).await;
    assert_eq!(s, 201, "{second}");
    let second_token = second["token"].as_str().expect("token").to_string();
    ui.step("works_under_a_sub_path_behind_a_proxy", async {
        ui.c.goto(&format!("http://127.0.0.1:{proxy}/cluster/")).await?;
        ui.fill("#token", &second_token).await?;
        ui.click("#login-button").await?;
        ui.wait_text("main h1", "Overview").await?;
        ui.route("#/instances/beta/console").await?;
        ui.fill("#rcon-command", "/players online").await?;
        ui.click("#rcon-send").await?;
        ui.wait_text("#console-output", "Online players").await?;
        let foreign = ui.foreign_requests().await?;
        if !foreign.is_empty() {
            bail!("requests outside the sub-path's origin: {foreign:?}");
        }
        let outside = ui
            .js("return performance.getEntriesByType('resource').map(e => e.name).filter(n => !n.includes('/cluster/'))", vec![])
            .await?;
        if outside.as_array().is_some_and(|a| !a.is_empty()) {
            bail!("requests outside the sub-path: {outside}");
        }
        // The restart step made Chromium log failed socket attempts; anything else is a bug.
        let errors: Vec<String> = ui
            .browser_errors()
            .await?
            .into_iter()
            .filter(|e| !e.contains("WebSocket connection to"))
            .collect();
        if !errors.is_empty() {
            bail!("the browser logged errors: {errors:#?}");
        }
        Ok(())
    })
    .await;

    ui.step("a_token_revoked_while_logged_in_logs_out", async {
        let (s, v) = api
            .call("DELETE", &format!("/api/v1/tokens/{}", second["id"]), None)
            .await;
        if s != 200 {
            bail!("revoking: {s} {v}");
        }
        ui.wait_text("#login-error", "revoked").await?;
        let stored = ui
            .js("return localStorage.getItem('clustorio.token')", vec![])
            .await?;
        if !stored.is_null() {
            bail!("the revoked token is still stored");
        }
        Ok(())
    })
    .await;

    ui.c.clone().close().await.map_err(|e| anyhow!("{e}")).ok();
    eprintln!(
        "web ui: all steps in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// Regenerates `docs/screenshot.png` (the README's picture) from `clustorio demo` after it has
/// run long enough for the charts to show something:
/// `cargo test --test web_ui readme_screenshot -- --ignored` (about two minutes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "regenerates docs/screenshot.png; run by hand"]
async fn readme_screenshot() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_tcp_port();
    let mut demo = Command::new(common::bin("clustorio"))
        .args(["demo", "--port", &port.to_string(), "--dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("clustorio demo");
    let stdout = demo.stdout.take().expect("stdout");
    let mut token = String::new();
    for line in std::io::BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
    {
        if let Some(t) = line.split("admin token:").nth(1) {
            token = t.trim().to_string();
            break;
        }
    }
    assert!(!token.is_empty(), "the demo prints its admin token");
    // The controller samples every 10 s; give the charts a few minutes of history.
    tokio::time::sleep(Duration::from_secs(100)).await;

    let driver = Driver::start().expect("chromedriver");
    let ui = Ui::new(&driver, &format!("http://127.0.0.1:{port}/"))
        .await
        .expect("browser session");
    ui.step("readme_screenshot", async {
        ui.c.set_window_size(1280, 1060).await?;
        ui.goto("").await?;
        ui.fill("#token", &token).await?;
        ui.click("#login-button").await?;
        ui.wait_text("main h1", "Overview").await?;
        ui.wait_js(
            "the charts",
            "document.querySelectorAll('.chart-svg').length === 2",
        )
        .await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let png = ui.c.screenshot().await?;
        let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/screenshot.png");
        std::fs::write(&out, png)?;
        eprintln!("wrote {}", out.display());
        Ok(())
    })
    .await;
    ui.c.clone().close().await.ok();
    // SIGINT: the demo stops its instances and host gracefully.
    let _ = Command::new("kill")
        .args(["-INT", &demo.id().to_string()])
        .status();
    let _ = demo.wait();
}
