//! The Mods page in a real browser (headless Chromium): search the mod portal (a local
//! stand-in), install a mod with its dependency and watch the download's progress, and see a
//! checksum mismatch refused, and create a mod pack. Each step leaves `FAILED-<step>.png` under `target/screenshots/`
//! when it fails.

mod common;

use anyhow::bail;
use common::ControllerProcess;
use common::browser::{Driver, Ui};
use common::cluster::Api;
use common::portal::{self, Release};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mods_page_searches_the_portal_and_installs_with_progress() {
    if common::browser::skipped() {
        eprintln!("skipped: CLUSTORIO_SKIP_BROWSER_TESTS is set");
        return;
    }
    let portal = portal::start().await;
    portal.add(
        "flib",
        "Factorio Library",
        vec![Release::new("flib", "0.15.0", "2.0", &["base >= 2.0"])],
    );
    // Big enough to arrive in many chunks, so the progress shows while it downloads.
    portal.add(
        "big-logistics",
        "Big Logistics",
        vec![Release::padded(
            "big-logistics",
            "1.2.0",
            "2.0",
            &["base >= 2.0", "flib >= 0.15"],
            1 << 20,
        )],
    );
    portal.add(
        "bad-sum",
        "Bad Checksum",
        vec![Release::new("bad-sum", "1.0.0", "2.0", &[]).with_wrong_sha1()],
    );
    portal.set_chunk_delay(Duration::from_millis(60));
    let root = tempfile::tempdir().unwrap();
    let cdir = root.path().join("c");
    portal::write_controller_config(&cdir, &portal);
    let c = ControllerProcess::start(&cdir);
    let api = Api::new(&c.url(""), &c.first_token);

    let driver = Driver::start().expect("chromedriver");
    let ui = Ui::new(&driver, &c.url("/"))
        .await
        .expect("browser session");
    ui.step("log_in_and_open_mods", async {
        ui.goto("").await?;
        ui.fill("#token", &c.first_token).await?;
        ui.click("#login-button").await?;
        ui.wait_text("#who", "admin").await?;
        ui.route("#/mods").await?;
        ui.wait_text("#mods-list", "No mods uploaded").await?;
        Ok(())
    })
    .await;

    ui.step("search_the_portal", async {
        ui.fill("#portal-q", "logistics").await?;
        ui.click("#portal-search").await?;
        ui.wait_text("#portal-table tr[data-portal-mod='big-logistics']", "1.2.0")
            .await?;
        if ui
            .text("#portal-table")
            .await?
            .unwrap_or_default()
            .contains("flib")
        {
            bail!("flib does not match \"logistics\"");
        }
        Ok(())
    })
    .await;

    ui.step("install_with_progress", async {
        ui.click("[data-key='install-big-logistics']").await?;
        // Live progress from the controller's mod_progress events, while it downloads.
        ui.wait_text("#portal-note", "downloading").await?;
        ui.wait_text("#portal-log", "Resolving the dependencies of big-logistics")
            .await?;
        ui.wait_text("#portal-log", "Downloading big-logistics_1.2.0.zip")
            .await?;
        ui.wait_text(
            "#portal-log",
            "Installed flib_0.15.0.zip (needed by big-logistics 1.2.0)",
        )
        .await?;
        ui.wait_text("#portal-note", "installed").await?;
        ui.wait_text("#mods-table", "big-logistics_1.2.0.zip")
            .await?;
        ui.wait_text("#mods-table", "flib_0.15.0.zip").await?;
        Ok(())
    })
    .await;

    ui.step("a_checksum_mismatch_is_refused", async {
        ui.fill("#portal-q", "checksum").await?;
        ui.click("#portal-search").await?;
        ui.wait_text("#portal-table", "bad-sum").await?;
        ui.click("[data-key='install-bad-sum']").await?;
        ui.wait_text("#portal-error", "SHA-1").await?;
        ui.wait_text("#portal-note", "failed").await?;
        Ok(())
    })
    .await;

    ui.step("create_a_mod_pack", async {
        ui.wait_text("#packs-list", "No mod packs").await?;
        ui.fill("#pack-name", "qol").await?;
        ui.fill("#pack-mods", "flib 0.15.0\nbig-logistics off")
            .await?;
        ui.click("#pack-create").await?;
        ui.wait_text(
            "#packs-table tr[data-pack='qol']",
            "flib 0.15.0, big-logistics (off)",
        )
        .await?;
        Ok(())
    })
    .await;

    let packs = api.get("/api/v1/mod_packs").await;
    assert_eq!(packs[0]["mods"][1]["enabled"], false, "{packs}");
    let stored = api.get("/api/v1/mods").await;
    assert!(!stored.to_string().contains("bad-sum"), "{stored}");
    // The refused install's 502 is logged by the browser; nothing else may be.
    let errors = ui.browser_errors().await.unwrap_or_default();
    let unexpected: Vec<_> = errors
        .iter()
        .filter(|e| !(e.contains("mod_portal/install") && e.contains("502")))
        .collect();
    assert!(unexpected.is_empty(), "browser errors: {unexpected:#?}");
}
