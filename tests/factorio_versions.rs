//! Factorio versions per host (README "Factorio versions"): a host reports what it has
//! installed, an admin installs more from a local release server (factorio-sim packed as
//! release tarballs, `tests/common/releases.rs`) through the API and ctl, with progress; an
//! instance runs the version its `factorio_version` names (or the newest); failed installs
//! (no such version, checksum mismatch, corrupt tarball) say why and leave nothing behind.

mod common;

use common::cluster::{Api, HostProcess, rcon, wait_until};
use common::link::LinkClient;
use common::releases::{Kind, ReleaseServer};
use common::{ControllerProcess, bin, join_token};
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn ctl(c: &ControllerProcess, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin("clustorio"))
        .arg("ctl")
        .args(args)
        .env("CLUSTORIO_URL", c.url(""))
        .env("CLUSTORIO_TOKEN", &c.first_token)
        .env("NO_COLOR", "1")
        .output()
        .expect("clustorio ctl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn versions(host: &Value) -> Vec<String> {
    host["factorio_versions"]
        .as_array()
        .unwrap_or_else(|| panic!("no factorio_versions in {host}"))
        .iter()
        .map(|v| v["version"].as_str().unwrap().to_string())
        .collect()
}

/// Names in the host's Factorio directory (installs, and anything an install left).
fn factorio_dir(host: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(host.join("factorio"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

async fn cluster(root: &Path, releases: &ReleaseServer) -> (ControllerProcess, HostProcess, Api) {
    let c = ControllerProcess::start(&root.join("c"));
    let env = releases.host_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let h = HostProcess::start(
        &root.join("h"),
        &c.url(""),
        &join_token(&root.join("c")),
        "h1",
        &env,
    );
    let api = Api::new(&c.url(""), &c.first_token);
    // The host reports its install as it connects: factorio/ itself (the sim, 2.0.77).
    api.wait_for("/api/v1/hosts/h1", |h| {
        h["factorio_versions"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
    })
    .await;
    (c, h, api)
}

async fn install(api: &Api, version: &str) -> (u16, Value) {
    api.post(
        "/api/v1/hosts/h1/factorio-versions",
        json!({ "version": version }),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_versions_installed_and_an_instance_on_each() {
    let root = tempfile::tempdir().unwrap();
    let releases = ReleaseServer::start().await;
    let work = root.path().join("releases");
    releases.add(&work, "2.0.72", Kind::Good);
    releases.add(&work, "2.0.78", Kind::Good);
    let (c, h, api) = cluster(root.path(), &releases).await;

    let host = api.get("/api/v1/hosts/h1").await;
    assert_eq!(versions(&host), vec!["2.0.77"], "{host}");
    assert_eq!(host["factorio_versions"][0]["layout"], "direct", "{host}");

    // Watch the link events while 2.0.72 installs (slowly, so there is progress to see).
    let mut link = LinkClient::connect(&c.ws_url(), "control", &c.first_token, None, None).await;
    releases.set_chunk_delay(Duration::from_millis(30));
    let installing = {
        let api = Api::new(&c.url(""), &c.first_token);
        tokio::spawn(async move { install(&api, "2.0.72").await })
    };
    // While it runs, the host view says how far it is.
    let during = api
        .wait_for("/api/v1/hosts/h1", |h| {
            h["factorio_installing"]
                .as_array()
                .and_then(|a| a.first())
                .is_some_and(|p| p["stage"] == "downloading" && p["bytes"].as_u64() > Some(0))
        })
        .await;
    let p = &during["factorio_installing"][0];
    assert_eq!(p["version"], "2.0.72", "{during}");
    assert!(
        p["total"].as_u64().unwrap() >= p["bytes"].as_u64().unwrap(),
        "{during}"
    );
    let (s, v) = installing.await.unwrap();
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["version"], "2.0.72", "{v}");
    assert_eq!(v["checksum"], "verified", "{v}");
    assert_eq!(v["replaced"], false, "{v}");
    releases.set_chunk_delay(Duration::ZERO);

    let mut stages = Vec::new();
    let mut most = 0u64;
    while !stages.iter().any(|s| s == "done") {
        let f = link.next().await.expect("factorio_install_progress events");
        if f["type"] == "event" && f["name"] == "factorio_install_progress" {
            let d = &f["data"];
            assert_eq!(d["host"], "h1", "{f}");
            assert_eq!(d["version"], "2.0.72", "{f}");
            most = most.max(d["bytes"].as_u64().unwrap_or(0));
            let stage = d["stage"].as_str().unwrap().to_string();
            if stages.last() != Some(&stage) {
                stages.push(stage);
            }
        }
    }
    assert_eq!(
        stages,
        ["downloading", "verifying", "extracting", "checking", "done"],
        "stages in order"
    );
    assert_eq!(
        most,
        v["bytes"].as_u64().unwrap(),
        "progress reached the size"
    );

    // The second through ctl.
    let (ok, out, err) = ctl(&c, &["host", "install-factorio", "h1", "2.0.78"]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("Installed Factorio 2.0.78 on h1") && out.contains("checksum verified"),
        "{out}"
    );
    let host = api.get("/api/v1/hosts/h1").await;
    assert_eq!(
        versions(&host),
        vec!["2.0.78", "2.0.77", "2.0.72"],
        "{host}"
    );
    let (ok, out, err) = ctl(&c, &["host", "show", "h1"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("2.0.78 (latest)") && out.contains("2.0.72"),
        "{out}"
    );
    assert_eq!(
        factorio_dir(&h.dir)
            .into_iter()
            .filter(|n| n.starts_with('.') || n.starts_with("2."))
            .collect::<Vec<_>>(),
        vec!["2.0.72", "2.0.78"],
        "the installs sit beside the direct one, nothing else left"
    );

    // An instance on each: a named version, and the default (the newest installed).
    common::cluster::create_and_start(&api, "old", "h1", json!({ "factorio_version": "2.0.72" }))
        .await;
    common::cluster::create_and_start(&api, "new", "h1", json!({})).await;
    assert_eq!(rcon(&api, "old", "/version").await.trim(), "2.0.72");
    assert_eq!(rcon(&api, "new", "/version").await.trim(), "2.0.78");

    // A version the host lacks is a clear start error.
    let (s, v) = api
        .post(
            "/api/v1/instances",
            json!({ "name": "missing", "config": { "factorio_version": "2.0.50" } }),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = api
        .post("/api/v1/instances/missing/assign", json!({ "host": "h1" }))
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = api.post("/api/v1/instances/missing/start", json!({})).await;
    assert_eq!(s, 409, "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("Factorio 2.0.50 is not installed on host 'h1'") && msg.contains("2.0.78"),
        "{msg}"
    );
    // A version that is not one is refused when set.
    let (s, v) = api
        .call(
            "PATCH",
            "/api/v1/instances/missing",
            Some(json!({ "config": { "factorio_version": "two" } })),
        )
        .await;
    assert_eq!(s, 400, "{v}");

    // Installing the version a game runs again: the game keeps running on its files, the
    // next start uses the new copy.
    let pid = h.factorio_pid("new").expect("new runs");
    let (s, v) = install(&api, "2.0.78").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["replaced"], true, "{v}");
    assert_eq!(
        h.factorio_pid("new"),
        Some(pid),
        "the game was not restarted"
    );
    // It still runs the files it started with, moved aside; the new copy is in place.
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert!(
        exe.to_string_lossy()
            .contains("/factorio/.replaced-2.0.78-"),
        "the running game's binary: {}",
        exe.display()
    );
    assert!(h.dir.join("factorio/2.0.78/bin/x64/factorio").is_file());
    assert_eq!(rcon(&api, "new", "/version").await.trim(), "2.0.78");
    let (s, v) = api.post("/api/v1/instances/new/restart", json!({})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(rcon(&api, "new", "/version").await.trim(), "2.0.78");
    assert_ne!(h.factorio_pid("new"), Some(pid), "restarted");
    // The copy the old game ran from goes once nothing runs from it (at the next start).
    wait_until("the replaced copy is removed", 20, || async {
        !factorio_dir(&h.dir)
            .iter()
            .any(|n| n.starts_with(".replaced-"))
    })
    .await;

    // Removing a version: refused while an instance asks for it (running or not), while a
    // game runs it, for the install the egg put in the Factorio directory itself, and for
    // what is not installed or not a version. Each refusal says why and removes nothing.
    let remove = |v: &'static str| {
        let api = Api::new(&c.url(""), &c.first_token);
        async move {
            api.call(
                "DELETE",
                &format!("/api/v1/hosts/h1/factorio-versions/{v}"),
                None,
            )
            .await
        }
    };
    let (s, v) = remove("2.0.72").await;
    assert_eq!(s, 409, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("old"),
        "names the instance: {v}"
    );
    let (s, v) = api.post("/api/v1/instances/old/stop", json!({})).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = remove("2.0.72").await;
    assert_eq!(s, 409, "a stopped instance still asks for it: {v}");
    let (s, v) = remove("2.0.78").await;
    assert_eq!(s, 409, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("running game"),
        "{v}"
    );
    let (s, v) = remove("2.0.77").await;
    assert_eq!(s, 409, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("stays"),
        "{v}"
    );
    let (s, v) = remove("2.0.50").await;
    assert_eq!(s, 404, "{v}");
    let (s, v) = remove("two").await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(
        versions(&api.get("/api/v1/hosts/h1").await),
        vec!["2.0.78", "2.0.77", "2.0.72"],
        "nothing was removed"
    );
    // Once nothing asks for it, ctl removes it: gone from the list and from the disk.
    let (s, v) = api
        .call(
            "PATCH",
            "/api/v1/instances/old",
            Some(json!({ "config": { "factorio_version": "latest" } })),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (ok, out, err) = ctl(&c, &["host", "remove-factorio", "h1", "2.0.72"]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("Removed Factorio 2.0.72 from host h1"),
        "{out}"
    );
    assert_eq!(
        versions(&api.get("/api/v1/hosts/h1").await),
        vec!["2.0.78", "2.0.77"]
    );
    assert!(!h.dir.join("factorio/2.0.72").exists());
    assert!(
        !factorio_dir(&h.dir).iter().any(|n| n.starts_with('.')),
        "nothing left aside"
    );

    // Audited.
    let audit = api.get("/api/v1/audit?limit=50").await;
    for action in ["host.install_factorio", "host.remove_factorio"] {
        assert!(
            audit
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["action"] == action && e["target"] == "h1"),
            "{action}: {audit}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_installs_say_why_and_leave_nothing() {
    let root = tempfile::tempdir().unwrap();
    let releases = ReleaseServer::start().await;
    let work = root.path().join("releases");
    releases.add(&work, "2.0.70", Kind::WrongChecksum);
    releases.add(&work, "2.0.71", Kind::Corrupt);
    releases.add(&work, "2.0.73", Kind::Unlisted);
    let (c, h, api) = cluster(root.path(), &releases).await;
    let before = factorio_dir(&h.dir);

    let (s, v) = install(&api, "2.0.50").await;
    assert_eq!(s, 404, "{v}");
    assert_eq!(v["error"]["code"], "not_found", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Factorio 2.0.50 does not exist"),
        "{v}"
    );

    let (s, v) = install(&api, "2.0.70").await;
    assert_eq!(s, 502, "{v}");
    assert_eq!(v["error"]["code"], "checksum_mismatch", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("checksum mismatch for factorio_headless_x64_2.0.70.tar.xz"),
        "{v}"
    );

    let (s, v) = install(&api, "2.0.71").await;
    assert_eq!(s, 502, "{v}");
    assert_eq!(v["error"]["code"], "corrupt_archive", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("is not a valid Factorio archive"),
        "{v}"
    );

    let (s, v) = install(&api, "../2.0").await;
    assert_eq!(s, 400, "{v}");

    // ctl says why too, and fails.
    let (ok, out, err) = ctl(&c, &["host", "install-factorio", "h1", "2.0.50"]);
    assert!(!ok, "{out}");
    assert!(err.contains("does not exist"), "{err}");

    assert_eq!(factorio_dir(&h.dir), before, "nothing left behind");
    let host = api.get("/api/v1/hosts/h1").await;
    assert_eq!(versions(&host), vec!["2.0.77"], "{host}");
    assert_eq!(host["factorio_installing"], json!([]), "{host}");

    // A release the checksum list does not name installs, saying it was not checked.
    let (s, v) = install(&api, "2.0.73").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["checksum"], "not published", "{v}");
    let host = api.get("/api/v1/hosts/h1").await;
    assert_eq!(versions(&host), vec!["2.0.77", "2.0.73"], "{host}");

    // A disconnected host cannot install.
    drop(h);
    api.wait_for("/api/v1/hosts/h1", |h| h["connected"] == false)
        .await;
    let (s, v) = install(&api, "2.0.73").await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(v["error"]["code"], "host_disconnected", "{v}");
}

/// The Hosts page in a real browser (headless Chromium): the host's versions, and an install
/// from the form with the download's progress, then a refused one, then a removal. A failing
/// step leaves `FAILED-<step>.png` under `target/screenshots/`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hosts_page_installs_a_version_with_progress() {
    use common::browser::{Driver, Ui};
    if common::browser::skipped() {
        eprintln!("skipped: CLUSTORIO_SKIP_BROWSER_TESTS is set");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let releases = ReleaseServer::start().await;
    let work = root.path().join("releases");
    releases.add(&work, "2.0.76", Kind::Good);
    releases.add(&work, "2.0.70", Kind::WrongChecksum);
    // Slow enough that the progress shows while it downloads.
    releases.set_chunk_delay(Duration::from_millis(40));
    let (c, _h, api) = cluster(root.path(), &releases).await;

    let driver = Driver::start().expect("chromedriver");
    let ui = Ui::new(&driver, &c.url("/"))
        .await
        .expect("browser session");
    ui.step("log_in_and_open_hosts", async {
        ui.goto("").await?;
        ui.fill("#token", &c.first_token).await?;
        ui.click("#login-button").await?;
        ui.wait_text("#who", "admin").await?;
        ui.route("#/hosts").await?;
        ui.wait_text("[data-factorio-versions='h1']", "2.0.77 (latest)")
            .await?;
        Ok(())
    })
    .await;

    ui.step("install_with_progress", async {
        ui.wait_text("#fv-host", "h1").await?;
        ui.fill("#fv-version", "2.0.76").await?;
        ui.click("#fv-install").await?;
        // Live progress from the host's events, while it downloads.
        ui.wait_text("#fv-note", "downloading factorio_headless_x64_2.0.76.tar.xz")
            .await?;
        ui.wait_js(
            "the bar to move",
            "document.querySelector('#fv-progress').value > 0 && document.querySelector('#fv-progress').max > 1",
        )
        .await?;
        ui.wait_text("#fv-log", "Downloading factorio_headless_x64_2.0.76.tar.xz")
            .await?;
        ui.wait_text("#fv-log", "Checking the SHA-256 checksum").await?;
        ui.wait_text("#fv-log", "Extracting").await?;
        ui.wait_text("#fv-log", "Installed Factorio 2.0.76").await?;
        ui.wait_text("#fv-log", "checksum verified").await?;
        ui.wait_text("#fv-note", "installed").await?;
        // The host's row lists it (the host view's update event).
        ui.wait_text("[data-factorio-versions='h1']", "2.0.76").await?;
        Ok(())
    })
    .await;

    ui.step("a_checksum_mismatch_is_refused", async {
        ui.fill("#fv-version", "2.0.70").await?;
        ui.click("#fv-install").await?;
        ui.wait_text("#fv-error", "checksum mismatch").await?;
        ui.wait_text("#fv-note", "failed").await?;
        Ok(())
    })
    .await;

    let host = api.get("/api/v1/hosts/h1").await;
    assert_eq!(versions(&host), vec!["2.0.77", "2.0.76"], "{host}");

    ui.step("remove_a_version_after_confirming", async {
        // Only the version in a folder of its own has the button, not the direct install.
        ui.wait_js(
            "the remove button",
            "document.querySelector(\"[data-factorio-versions='h1'] button[data-remove-version='2.0.76']\") && !document.querySelector(\"[data-factorio-versions='h1'] button[data-remove-version='2.0.77']\")",
        )
        .await?;
        ui.click("[data-factorio-versions='h1'] button[data-remove-version='2.0.76']")
            .await?;
        ui.wait_text("dialog[open]", "Remove Factorio 2.0.76 from h1?")
            .await?;
        ui.click("dialog[open] button[type=submit]").await?;
        ui.wait_js(
            "2.0.76 gone from the list",
            "!document.querySelector(\"[data-factorio-versions='h1']\").textContent.includes('2.0.76')",
        )
        .await?;
        Ok(())
    })
    .await;
    let host = api.get("/api/v1/hosts/h1").await;
    assert_eq!(versions(&host), vec!["2.0.77"], "{host}");
    // The refused install's 502 is logged by the browser; nothing else may be.
    let errors = ui.browser_errors().await.unwrap_or_default();
    let unexpected: Vec<_> = errors
        .iter()
        .filter(|e| !(e.contains("factorio-versions") && e.contains("502")))
        .collect();
    assert!(unexpected.is_empty(), "browser errors: {unexpected:#?}");
}
