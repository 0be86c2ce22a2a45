//! The web UI's Inventories page in a headless Chromium: a player syncing in a factorio-sim game
//! shows up live (holder, generation), and the detail view lists the stored items.

mod common;

use common::browser::{Driver, Ui};
use common::cluster::{Api, HostProcess, rcon, wait_until};
use common::inventory::{create_and_start, sync_state};
use common::{ControllerProcess, join_token};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventories_page_updates_live_when_a_player_syncs() {
    if common::browser::skipped() {
        eprintln!("skipped: CLUSTORIO_SKIP_BROWSER_TESTS is set");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let cdir = root.path().join("c");
    std::fs::create_dir_all(&cdir).unwrap();
    let c = ControllerProcess::start_with(&cdir, &[("PLUGINS", "inventory_sync")]);
    let api = Api::new(&c.url(""), &c.first_token);
    let join = join_token(&cdir);
    let _h = HostProcess::start(&root.path().join("h1"), &c.url(""), &join, "h1", &[]);
    create_and_start(&api, "a", "h1").await;
    wait_until("a runs the plugin", 60, || async {
        sync_state(&api, "a", "Bob").await.is_object()
    })
    .await;

    let driver = Driver::start().expect("chromedriver");
    let ui = Ui::new(&driver, &c.url("/"))
        .await
        .expect("browser session");
    ui.step("inventories_login", async {
        ui.goto("").await?;
        ui.fill("#token", &c.first_token).await?;
        ui.click("#login-button").await?;
        ui.wait_text("main h1", "Overview").await?;
        ui.click("a[data-page='inventories']").await?;
        ui.wait_text("main h1", "Inventories").await?;
        ui.wait_text("#inventory-list", "No player has synced yet")
            .await?;
        Ok(())
    })
    .await;

    // Bob joins: the row appears with the game holding him, without a reload.
    rcon(&api, "a", "/standin join Bob").await;
    ui.step("inventories_holder_live", async {
        ui.wait_text("#inventory-list tr[data-player='Bob']", "online")
            .await?;
        ui.wait_text("#inventory-list tr[data-player='Bob']", "a")
            .await?;
        Ok(())
    })
    .await;
    wait_until("Bob synced", 30, || async {
        sync_state(&api, "a", "Bob").await["state"] == "synced"
    })
    .await;
    rcon(&api, "a", "/standin give Bob iron-gear-wheel 42").await;
    rcon(&api, "a", "/standin leave Bob").await;
    ui.step("inventories_generation_live", async {
        ui.wait_js(
            "generation 1 and nobody holding Bob",
            "(() => { const r = document.querySelector(\"#inventory-list tr[data-player='Bob']\"); \
             return r && r.querySelector('.generation').textContent === '1' && r.textContent.includes('nobody'); })()",
        )
        .await?;
        ui.wait_text("#inventory-stats", "1 inventories stored").await?;
        ui.fill("#inventory-filter", "nobody-like-this").await?;
        ui.wait_text("#inventory-list", "No player matches").await?;
        ui.fill("#inventory-filter", "bo").await?;
        ui.wait_js(
            "Bob matches the filter",
            "!!document.querySelector(\"#inventory-list tr[data-player='Bob']\")",
        )
        .await?;
        Ok(())
    })
    .await;

    ui.step("inventories_detail", async {
        ui.click("#inventory-list tr[data-player='Bob'] a").await?;
        ui.wait_text("main h1", "Inventory of Bob").await?;
        ui.wait_text("#inventory-detail", "iron-gear-wheel").await?;
        ui.wait_text("#inventory-generation", "1").await?;
        ui.shot("inventories-detail").await;
        Ok(())
    })
    .await;
    // He joins again and leaves: the open detail follows to generation 2.
    rcon(&api, "a", "/standin join Bob").await;
    wait_until("Bob synced again", 30, || async {
        sync_state(&api, "a", "Bob").await["state"] == "synced"
    })
    .await;
    rcon(&api, "a", "/standin leave Bob").await;
    ui.step("inventories_detail_live", async {
        ui.wait_text("#inventory-generation", "2").await?;
        let errors = ui.browser_errors().await?;
        anyhow::ensure!(errors.is_empty(), "browser errors: {errors:?}");
        Ok(())
    })
    .await;
    ui.c.clone().close().await.ok();
}
