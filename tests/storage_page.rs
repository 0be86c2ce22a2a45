//! The Storage page (subspace_storage) in a real headless browser: the pool as a searchable
//! table that follows items moving between games without a reload.

mod common;

use anyhow::bail;
use common::browser::{Driver, Ui};
use common::cluster::rcon;
use common::subspace::{Cluster, cycles};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_page_shows_the_pool_and_follows_it_live() {
    if common::browser::skipped() {
        eprintln!("skipped: CLUSTORIO_SKIP_BROWSER_TESTS is set");
        return;
    }
    let c = Cluster::start(&["h1"]).await;
    c.instance("a", "h1").await;
    c.instance("b", "h1").await;
    // Saves only when the test says: its exports stay pending until then.
    c.instance_with("p", "h1", serde_json::json!({ "save_interval": 0 }))
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    rcon(&c.api, "a", "/standin subspace put iron-plate 100").await;
    rcon(&c.api, "a", "/standin subspace put copper-plate 5").await;
    cycles(&c.api, "a", 1).await;
    c.api
        .wait_for("/api/v1/storage", |v| {
            v["items"].as_array().is_some_and(|a| a.len() == 2)
        })
        .await;

    let driver = Driver::start().expect("chromedriver");
    let ui = Ui::new(&driver, &c.controller.url("/"))
        .await
        .expect("browser session");
    let iron = "#storage-list tr[data-item='iron-plate'][data-quality='normal'] .storage-count";

    ui.step("storage_log_in_and_open", async {
        ui.goto("").await?;
        ui.fill("#token", &c.controller.first_token).await?;
        ui.click("#login-button").await?;
        ui.wait_text("#who", "admin").await?;
        ui.route("#/storage").await?;
        ui.wait_text("main h1", "Storage").await?;
        ui.wait_text(iron, "100").await?;
        ui.wait_text("#storage-summary", "2 kinds, 105 items")
            .await?;
        Ok(())
    })
    .await;

    ui.step("storage_search", async {
        ui.fill("#storage-filter", "copper").await?;
        ui.wait_js(
            "only copper is listed",
            "document.querySelectorAll('#storage-list tbody tr').length === 1 && !!document.querySelector(\"#storage-list tr[data-item='copper-plate']\")",
        )
        .await?;
        ui.fill("#storage-filter", "plate").await?;
        ui.wait_text(iron, "100").await?;
        Ok(())
    })
    .await;

    // B's extractor takes 60 plates: the page follows without a reload.
    rcon(&c.api, "b", "/standin subspace request iron-plate 60").await;
    cycles(&c.api, "b", 1).await;
    ui.step("storage_live_update", async {
        ui.wait_text(iron, "40").await?;
        ui.wait_text("#storage-summary", "45 items").await?;
        let errors = ui.browser_errors().await?;
        if !errors.is_empty() {
            bail!("browser errors: {errors:#?}");
        }
        Ok(())
    })
    .await;

    // An export from a game that has not saved since is shown apart, then joins the pool when
    // that game saves.
    rcon(&c.api, "p", "/standin subspace put copper-plate 7").await;
    cycles(&c.api, "p", 1).await;
    ui.step("storage_pending_export", async {
        ui.wait_text("#storage-pending", "7 items").await?;
        ui.wait_text("#storage-pending", "copper-plate 7").await?;
        Ok(())
    })
    .await;
    rcon(&c.api, "p", "/server-save").await;
    ui.step("storage_pending_saved", async {
        ui.wait_text("#storage-summary", "52 items").await?;
        ui.wait_js(
            "nothing pending",
            "document.querySelector('#storage-pending').dataset.count === '0'",
        )
        .await?;
        Ok(())
    })
    .await;
}
