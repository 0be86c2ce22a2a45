//! The instance page's Saves tab in a real browser (headless Chromium): rename a save, delete
//! one with confirmation, restore a backup, and create a new map from the form. Each step
//! leaves `FAILED-<step>.png` under `target/screenshots/` when it fails.

mod common;

use anyhow::bail;
use common::browser::{Driver, Ui};
use common::cluster::{Api, HostProcess};
use common::saves::{create_started, host_saves};
use common::{ControllerProcess, join_token};
use serde_json::{Value, json};

const DIALOG_OK: &str = "dialog[open] button[type=submit]";
const DIALOG_CANCEL: &str = "dialog[open] button.secondary";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_saves_tab_renames_deletes_restores_and_makes_new_maps() {
    if common::browser::skipped() {
        eprintln!("skipped: CLUSTORIO_SKIP_BROWSER_TESTS is set");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let cdir = root.path().join("c");
    std::fs::create_dir_all(&cdir).unwrap();
    let c = ControllerProcess::start(&cdir);
    let api = Api::new(&c.url(""), &c.first_token);
    let _a = HostProcess::start(
        &root.path().join("a"),
        &c.url(""),
        &join_token(&cdir),
        "a",
        &[],
    );
    let view = create_started(&api, "alpha", "a", json!({"backup_retention": 3})).await;
    let id = view["id"].as_i64().unwrap();
    let (s, v) = api
        .post(
            "/api/v1/instances/alpha/saves",
            json!({"name": "checkpoint"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = api.post("/api/v1/instances/alpha/backup", json!({})).await;
    assert_eq!(s, 200, "{v}");

    let driver = Driver::start().expect("chromedriver");
    let ui = Ui::new(&driver, &c.url("/"))
        .await
        .expect("browser session");
    ui.step("log_in_and_open_the_saves_tab", async {
        ui.goto("").await?;
        ui.fill("#token", &c.first_token).await?;
        ui.click("#login-button").await?;
        ui.wait_text("#who", "admin").await?;
        ui.route(&format!("#/instances/{id}/saves")).await?;
        ui.wait_text("#saves-table tr[data-save='world.zip']", "running")
            .await?;
        ui.wait_text("#backup-retention", "newest 3 backups")
            .await?;
        ui.wait_text("#backups-table", "world.zip").await?;
        Ok(())
    })
    .await;

    ui.step("rename_a_save", async {
        ui.click("[data-key='rename-checkpoint.zip']").await?;
        ui.fill("#dialog-save-name", "before boss").await?;
        ui.click(DIALOG_OK).await?;
        ui.wait_text(
            "#saves-table tr[data-save='before boss.zip']",
            "before boss.zip",
        )
        .await?;
        // Onto a taken name: the dialog says why and nothing changes.
        ui.click("[data-key='rename-before boss.zip']").await?;
        ui.fill("#dialog-save-name", "world.zip").await?;
        ui.click(DIALOG_OK).await?;
        ui.wait_text(
            "dialog[open] .error",
            "already has a save named 'world.zip'",
        )
        .await?;
        ui.click(DIALOG_CANCEL).await?;
        let mut names = host_saves(&api, "alpha").await;
        names.sort();
        if names != ["before boss.zip", "world.zip"] {
            bail!("saves on the host: {names:?}");
        }
        Ok(())
    })
    .await;

    ui.step("delete_with_confirmation", async {
        ui.click("[data-key='delete-before boss.zip']").await?;
        ui.wait_text("dialog[open]", "is deleted from").await?;
        ui.click(DIALOG_CANCEL).await?;
        if !host_saves(&api, "alpha")
            .await
            .contains(&"before boss.zip".to_string())
        {
            bail!("cancel deleted the save");
        }
        ui.click("[data-key='delete-before boss.zip']").await?;
        ui.click(DIALOG_OK).await?;
        ui.wait_js(
            "the row to go",
            "!document.querySelector(\"#saves-table tr[data-save='before boss.zip']\")",
        )
        .await?;
        if host_saves(&api, "alpha")
            .await
            .contains(&"before boss.zip".to_string())
        {
            bail!("the API still lists it");
        }
        // The running game's save offers no delete.
        ui.wait_js(
            "no delete for the running save",
            "!document.querySelector(\"[data-key='delete-world.zip']\")",
        )
        .await?;
        Ok(())
    })
    .await;

    ui.step("restore_a_backup", async {
        ui.click("#backups-table [data-key^='restore-']").await?;
        ui.wait_text("dialog[open]", "stopped first").await?;
        ui.click(DIALOG_OK).await?;
        ui.wait_js(
            "the restore to finish",
            "document.querySelector(\"progress[aria-label='Restore progress']\").value === 1",
        )
        .await?;
        let v = api.get("/api/v1/instances/alpha").await;
        if v["status"] != "running" {
            bail!("not running again after the restore: {v}");
        }
        let audit = api.get("/api/v1/audit?limit=100").await;
        if !audit.to_string().contains("backup.restore") {
            bail!("no audit row for the restore");
        }
        Ok(())
    })
    .await;

    ui.step("new_map_form", async {
        let (s, v) = api.post("/api/v1/instances/alpha/stop", json!({})).await;
        if s != 200 {
            bail!("stop: {v}");
        }
        ui.route(&format!("#/instances/{id}/overview")).await?;
        ui.route(&format!("#/instances/{id}/saves")).await?;
        ui.fill("#map-name", "fresh").await?;
        ui.fill("#map-seed", "777").await?;
        ui.click("#map-peaceful").await?;
        ui.fill("#map-iron-ore-frequency", "2").await?;
        ui.fill("#map-cliffs", "0").await?;
        // Bad raw JSON is refused in the page.
        ui.click("#new-map-form details summary").await?;
        ui.fill("#map-settings-json", "{not json").await?;
        ui.click("#map-create").await?;
        ui.wait_text("#map-error", "not a JSON object").await?;
        ui.fill("#map-settings-json", r#"{"pollution": {"enabled": false}}"#)
            .await?;
        ui.click("#map-create").await?;
        ui.wait_text("#map-result", "Created fresh.zip").await?;
        ui.wait_text("#saves-table tr[data-save='fresh.zip']", "loads next")
            .await?;
        let dir = root.path().join("a/instances/alpha");
        let map_gen: Value =
            serde_json::from_slice(&std::fs::read(dir.join("map-gen-settings.json"))?)?;
        if map_gen["peaceful_mode"] != true
            || map_gen["autoplace_controls"]["iron-ore"]["frequency"] != 2
            || map_gen["cliff_settings"]["richness"] != 0
        {
            bail!("map-gen-settings.json: {map_gen}");
        }
        let ms: Value = serde_json::from_slice(&std::fs::read(dir.join("map-settings.json"))?)?;
        if ms["pollution"]["enabled"] != false {
            bail!("map-settings.json: {ms}");
        }
        let (s, v) = api.post("/api/v1/instances/alpha/start", json!({})).await;
        if s != 200 {
            bail!("start: {v}");
        }
        let seed = common::cluster::rcon(&api, "alpha", "/seed").await;
        if seed.trim() != "777" {
            bail!("seed {seed}");
        }
        Ok(())
    })
    .await;

    ui.step("exchange_string_and_scenario_in_the_form", async {
        let (s, v) = api.post("/api/v1/instances/alpha/stop", json!({})).await;
        if s != 200 {
            bail!("stop: {v}");
        }
        ui.route(&format!("#/instances/{id}/overview")).await?;
        ui.route(&format!("#/instances/{id}/saves")).await?;
        // A string with one character changed: the API's reason is shown, nothing made.
        let broken = EXCHANGE_2_0_76.replacen("eNpjYmBg8AFiBh6W", "eNpjYmBg8AFiBh6X", 1);
        ui.fill("#map-name", "pasted").await?;
        ui.fill("#map-exchange-string", &broken).await?;
        ui.click("#map-create").await?;
        ui.wait_text("#map-error", "map_exchange_string").await?;
        ui.fill("#map-exchange-string", EXCHANGE_2_0_76).await?;
        // The built-in freeplay, picked from the list the host sent.
        ui.wait_js(
            "the scenario list",
            "document.querySelector(\"#map-scenario option[value='base/freeplay']\")",
        )
        .await?;
        ui.js(
            "const s = document.querySelector('#map-scenario'); s.value = 'base/freeplay'; s.dispatchEvent(new Event('change'));",
            vec![],
        )
        .await?;
        ui.click("#map-create").await?;
        ui.wait_text("#map-result", "Created pasted.zip").await?;
        let dir = root.path().join("a/instances/alpha");
        let map_gen: Value =
            serde_json::from_slice(&std::fs::read(dir.join("map-gen-settings.json"))?)?;
        if map_gen["seed"] != 932326217u32 || map_gen["autoplace_controls"]["water"]["size"] != 0.75 {
            bail!("map-gen-settings.json from the string: {map_gen}");
        }
        if dir.join("saves/freeplay.zip").exists() {
            bail!("the scenario run left saves/freeplay.zip");
        }
        let (s, v) = api.post("/api/v1/instances/alpha/start", json!({})).await;
        if s != 200 {
            bail!("start: {v}");
        }
        let seed = common::cluster::rcon(&api, "alpha", "/seed").await;
        if seed.trim() != "932326217" {
            bail!("seed {seed}");
        }
        Ok(())
    })
    .await;

    ui.step("a_scenario_uploaded_in_the_form_starts_a_new_game", async {
        let (s, v) = api.post("/api/v1/instances/alpha/stop", json!({})).await;
        if s != 200 {
            bail!("stop: {v}");
        }
        ui.route(&format!("#/instances/{id}/overview")).await?;
        ui.route(&format!("#/instances/{id}/saves")).await?;
        let zip = root.path().join("duel.zip");
        std::fs::write(
            &zip,
            common::saves::zip_of(&[("duel/control.lua", b"-- duel from the browser\n")]),
        )?;
        ui.wait_js(
            "the scenario form",
            "document.querySelector('#scenario-file')",
        )
        .await?;
        let input =
            ui.c.find(fantoccini::Locator::Css("#scenario-file"))
                .await?;
        input.send_keys(&zip.to_string_lossy()).await?;
        ui.click("#scenario-upload").await?;
        // Uploaded, listed and chosen in the form.
        ui.wait_js(
            "the uploaded scenario chosen",
            "document.querySelector('#map-scenario').value === 'duel'",
        )
        .await?;
        ui.fill("#map-name", "duel-1").await?;
        ui.fill("#map-exchange-string", "").await?;
        ui.click("#map-create").await?;
        ui.wait_text("#map-result", "Created duel-1.zip").await?;
        let save = std::fs::read(root.path().join("a/instances/alpha/saves/duel-1.zip"))?;
        if !common::saves::has_entry(&save, "control.lua", b"-- duel from the browser\n") {
            bail!("the new game is not the uploaded scenario's");
        }
        // Its script is no freeplay the save patcher knows (starting it says so): back to the
        // freeplay game for the next step.
        let (s, v) = api
            .post("/api/v1/instances/alpha/saves/pasted.zip/use", json!({}))
            .await;
        if s != 200 {
            bail!("use pasted.zip: {v}");
        }
        let (s, v) = api.post("/api/v1/instances/alpha/start", json!({})).await;
        if s != 200 {
            bail!("start: {v}");
        }
        Ok(())
    })
    .await;

    ui.step("stop_all_from_the_instances_page", async {
        ui.route("#/instances").await?;
        ui.click("#bulk-stop").await?;
        ui.wait_text("dialog[open]", "every running instance")
            .await?;
        ui.click(DIALOG_OK).await?;
        ui.wait_text("#bulk-note", "1 of 1 done").await?;
        let v = api.get("/api/v1/instances/alpha").await;
        if v["status"] != "stopped" {
            bail!("not stopped: {v}");
        }
        Ok(())
    })
    .await;

    let errors = ui.browser_errors().await.unwrap_or_default();
    let unexpected: Vec<_> = errors
        .iter()
        .filter(|e| !e.contains("409") && !e.contains("400"))
        .collect();
    assert!(unexpected.is_empty(), "browser errors: {unexpected:#?}");
}

/// Printed by Factorio 2.0.76; from the tests of M45-Science/ChatWire (`fact/mapExchange_test.go`).
const EXCHANGE_2_0_76: &str = ">>>eNpjYmBg8AFiBh6W5PzEHAaGBnsY5krOLyhILdLNL0pFFuZMLipNSdXNz0RVnJqXmlupm5RYDFUMAg32HJlF+XnoJvDkJZaWZRbHJ+dkpqUhS7AW5SdnFyOLiBWXJBaVZOalxycWpSbG5+ZnFpeUoprGWlySn4cqUlKUmopiDHdpUWJeZmkuuktYyxNLUosgPAeIKKOn9iTzhhY5BhD+X8+g8P8/CANZD4A+AmEGxgaIDkagIAywQj3DoOAIxE5wSxgZGKtF1rk/rJpizwhRqecAZXyAihxIgol4whh+DjilVGAMEyRzjMHgMxIDYmkJ0AqoKg4HBAMi2QKSZGTsfbt1wfdjF+wY/6z8eMk3KcGe0dBV5N0Ho3V2QEl2kHeZ4MSsmSCwE+YVBpiZD+yhUjftGc+eAYE39oysIB0iIMLBAkgc8GZmYBTgA7IW9AAJBRkGmNPsYMaIODCmgcE3mE8ewxiX7dH9AQwIG5DhciDiBIgAWwh3GSOE6dDvwOggD5OVRCgB6jdiQHZDCsKHJ2HWHkayH80hmBGB7A80ERUHLNHABbIwBU68YIa7BhieF9hhPIf5DozMIAZI1RegGIQHkoEZBaEFHMDBzQxPlB/sUVMaiAEyJP29ZCQA2Pi9LQ==<<<";
