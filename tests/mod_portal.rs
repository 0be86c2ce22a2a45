//! The mod portal through the controller's API and ctl, against a local stand-in of the portal
//! (`tests/common/portal.rs`): search with the Factorio version filter (cached), install with
//! required dependencies, refusals (missing or incompatible dependency, SHA-1 mismatch, a
//! corrupt zip, no factorio.com login) that store nothing, and the update check.

mod common;

use common::cluster::Api;
use common::portal::{self, Release, sha1_hex};
use common::{ControllerProcess, bin};
use serde_json::{Value, json};
use std::process::Command;

fn names(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_string())
        .collect()
}

async fn stored(api: &Api) -> Vec<String> {
    names(&api.get("/api/v1/mods").await)
}

async fn install(api: &Api, name: &str) -> (u16, Value) {
    api.post("/api/v1/mod_portal/install", json!({ "name": name }))
        .await
}

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

async fn portal_with_mods() -> portal::Portal {
    let p = portal::start().await;
    p.add(
        "flib",
        "Factorio Library",
        vec![
            Release::new("flib", "0.14.0", "2.0", &["base >= 2.0"]),
            Release::new("flib", "0.15.0", "2.0", &["base >= 2.0"]),
            Release::new("flib", "0.16.0", "2.1", &["base >= 2.1"]),
        ],
    );
    p.add(
        "helper-lib",
        "Helper Library",
        vec![Release::new(
            "helper-lib",
            "1.0.0",
            "2.0",
            &["base >= 2.0", "flib >= 0.14.0"],
        )],
    );
    p.add(
        "big-logistics",
        "Big Logistics",
        vec![Release::new(
            "big-logistics",
            "1.2.0",
            "2.0",
            &[
                "base >= 2.0",
                "helper-lib >= 1.0",
                "? optional-thing",
                "(?) hidden-thing",
                "! evil-mod",
                "~ flib >= 0.15",
            ],
        )],
    );
    p.add(
        "needs-ghost",
        "Needs Ghost",
        vec![Release::new(
            "needs-ghost",
            "1.0.0",
            "2.0",
            &["ghost-lib >= 1.0"],
        )],
    );
    p.add(
        "needs-new-flib",
        "Needs New Flib",
        vec![Release::new(
            "needs-new-flib",
            "1.0.0",
            "2.0",
            &["flib >= 0.16.0"],
        )],
    );
    p.add(
        "conflicted",
        "Conflicted",
        vec![Release::new(
            "conflicted",
            "1.0.0",
            "2.0",
            &["helper-lib", "! flib"],
        )],
    );
    p.add(
        "bad-sum",
        "Bad Checksum",
        vec![Release::new("bad-sum", "1.0.0", "2.0", &[]).with_wrong_sha1()],
    );
    p.add(
        "needs-bad",
        "Needs Bad",
        vec![Release::new("needs-bad", "1.0.0", "2.0", &["bad-sum"])],
    );
    p.add(
        "broken-zip",
        "Broken Zip",
        vec![Release::new("broken-zip", "1.0.0", "2.0", &[]).corrupt()],
    );
    p.add(
        "old-only",
        "Old Only",
        vec![Release::new("old-only", "1.0.0", "1.1", &[])],
    );
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portal_search_install_refusals_and_updates() {
    let portal = portal_with_mods().await;
    let root = tempfile::tempdir().unwrap();
    let cdir = root.path().join("c");
    portal::write_controller_config(&cdir, &portal);
    let c = ControllerProcess::start(&cdir);
    let api = Api::new(&c.url(""), &c.first_token);

    // The token is a secret: the settings view masks it.
    let cfg = api.get("/api/v1/controller/config").await;
    assert!(!cfg.to_string().contains(portal::TOKEN), "{cfg}");
    assert!(cfg.to_string().contains(&portal.url), "{cfg}");

    // --- search: by name or title, for one Factorio version, cached.
    let r = api
        .get("/api/v1/mod_portal/search?q=logistics&factorio_version=2.0")
        .await;
    assert_eq!(names(&r["results"]), ["big-logistics"], "{r}");
    assert_eq!(r["results"][0]["title"], "Big Logistics");
    assert_eq!(r["results"][0]["latest_version"], "1.2.0");
    let listings = portal.listings();
    let r = api.get("/api/v1/mod_portal/search?q=LIBRARY").await;
    let found = names(&r["results"]);
    assert!(found.contains(&"flib".to_string()), "{r}");
    assert!(found.contains(&"helper-lib".to_string()), "{r}");
    assert_eq!(r["cached"], true, "{r}");
    assert_eq!(
        portal.listings(),
        listings,
        "a second search reuses the listing"
    );
    assert_eq!(r["results"][0]["latest_version"], "0.15.0", "{r}");
    // Another Factorio version: its own listing; only mods with a release for it.
    let r = api
        .get("/api/v1/mod_portal/search?q=flib&factorio_version=2.1")
        .await;
    assert_eq!(names(&r["results"]), ["flib"], "{r}");
    assert_eq!(r["results"][0]["latest_version"], "0.16.0");
    assert_eq!(r["factorio_version"], "2.1");
    let r = api.get("/api/v1/mod_portal/search?q=old-only").await;
    assert_eq!(r["total"], 0, "1.1-only mods are not offered for 2.0: {r}");
    let (s, v) = api
        .call(
            "GET",
            "/api/v1/mod_portal/search?q=x&factorio_version=two",
            None,
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("two"));

    // --- install with dependencies: required ones at compatible versions, optional and
    // hidden-optional ones left out, built-ins never downloaded.
    let (s, v) = install(&api, "big-logistics").await;
    assert_eq!(s, 200, "{v}");
    let mut got: Vec<String> = v["installed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["file"].as_str().unwrap().to_string())
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            "big-logistics_1.2.0.zip",
            "flib_0.15.0.zip",
            "helper-lib_1.0.0.zip"
        ],
        "{v}"
    );
    assert_eq!(
        stored(&api).await,
        [
            "big-logistics_1.2.0.zip",
            "flib_0.15.0.zip",
            "helper-lib_1.0.0.zip"
        ]
    );
    // What is stored is what the portal's checksum names.
    let (s, bytes) = api.get_bytes("/api/v1/mods/flib_0.15.0.zip").await;
    assert_eq!(s, 200);
    let flib = Release::new("flib", "0.15.0", "2.0", &["base >= 2.0"]);
    assert_eq!(sha1_hex(&bytes), flib.sha1);
    let downloads = portal.downloads().len();
    // Again: everything is already stored, nothing is downloaded.
    let (s, v) = install(&api, "big-logistics").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["installed"], json!([]), "{v}");
    assert_eq!(v["already_stored"].as_array().unwrap().len(), 3, "{v}");
    assert_eq!(portal.downloads().len(), downloads);
    // The audit log says who installed what from the portal.
    let audit = api.get("/api/v1/audit?limit=50").await;
    assert!(
        audit.to_string().contains("mod.install_from_portal"),
        "{audit}"
    );

    let before = stored(&api).await;
    // --- refusals: each names what is wrong; nothing is stored.
    let (s, v) = install(&api, "needs-ghost").await;
    assert_eq!(s, 422, "{v}");
    assert_eq!(v["error"]["code"], "missing_dependency", "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("ghost-lib >= 1.0.0"), "{msg}");
    assert!(msg.contains("needs-ghost 1.0.0"), "{msg}");

    let (s, v) = install(&api, "needs-new-flib").await;
    assert_eq!(s, 422, "{v}");
    assert_eq!(v["error"]["code"], "incompatible_dependency", "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("flib >= 0.16.0"), "{msg}");
    assert!(msg.contains("Factorio 2.0"), "{msg}");

    let (s, v) = install(&api, "conflicted").await;
    assert_eq!(s, 422, "{v}");
    assert_eq!(v["error"]["code"], "incompatible_dependency", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("incompatible with flib"),
        "{v}"
    );

    let (s, v) = install(&api, "old-only").await;
    assert_eq!(s, 422, "{v}");
    assert_eq!(v["error"]["code"], "no_compatible_release", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("1.0.0 (Factorio 1.1)"),
        "{v}"
    );

    let (s, v) = install(&api, "no-such-mod").await;
    assert_eq!(s, 404, "{v}");

    let (s, v) = install(&api, "bad-sum").await;
    assert_eq!(s, 502, "{v}");
    assert_eq!(v["error"]["code"], "checksum_mismatch", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("nothing was stored")
    );

    // A dependency's bad download: the mod asked for is not stored either.
    let (s, v) = install(&api, "needs-bad").await;
    assert_eq!(s, 502, "{v}");
    assert_eq!(v["error"]["code"], "checksum_mismatch", "{v}");

    let (s, v) = install(&api, "broken-zip").await;
    assert_eq!(s, 502, "{v}");
    assert_eq!(v["error"]["code"], "invalid_mod", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("broken-zip_1.0.0.zip"),
        "{v}"
    );

    let (s, v) = install(&api, "base").await;
    assert_eq!(s, 400, "{v}");

    assert_eq!(stored(&api).await, before);
    let leftovers: Vec<String> = std::fs::read_dir(cdir.join("mods"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !before.contains(n))
        .collect();
    assert!(
        leftovers.is_empty(),
        "half-downloaded files were left: {leftovers:?}"
    );

    // --- update check: a new flib for 2.0 (and one for 2.1, which is not offered).
    portal.add(
        "flib",
        "Factorio Library",
        vec![
            Release::new("flib", "0.14.0", "2.0", &["base >= 2.0"]),
            Release::new("flib", "0.15.0", "2.0", &["base >= 2.0"]),
            Release::new("flib", "0.15.1", "2.0", &["base >= 2.0"]),
            Release::new("flib", "0.17.0", "2.1", &["base >= 2.1"]),
        ],
    );
    let zip = portal::mod_zip("custom", "1.0.0", "2.0", &[], 0);
    let (s, v) = api.put_bytes("/api/v1/mods/custom_1.0.0.zip", zip).await;
    assert_eq!(s, 201, "{v}");
    let u = api.get("/api/v1/mod_portal/updates").await;
    let by_name = |n: &str| {
        u["mods"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == n)
            .cloned()
            .unwrap_or_else(|| panic!("{n} missing in {u}"))
    };
    let f = by_name("flib");
    assert_eq!(f["installed"], "0.15.0", "{u}");
    assert_eq!(f["latest"], "0.15.1", "{u}");
    assert_eq!(f["update_available"], true, "{u}");
    assert_eq!(by_name("helper-lib")["update_available"], false, "{u}");
    assert_eq!(by_name("custom")["on_portal"], false, "{u}");

    // --- ctl: search, updates, install.
    let (ok, out, err) = ctl(&c, &["mod", "search", "logistics"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("big-logistics") && out.contains("1.2.0"),
        "{out}"
    );
    let (ok, out, err) = ctl(&c, &["mod", "updates"]);
    assert!(ok, "{err}");
    assert!(out.contains("flib") && out.contains("0.15.1"), "{out}");
    let (ok, out, err) = ctl(&c, &["mod", "install", "flib"]);
    assert!(ok, "{err}");
    assert!(out.contains("flib_0.15.1.zip"), "{out}");
    let (ok, _, err) = ctl(&c, &["mod", "install", "needs-ghost"]);
    assert!(!ok);
    assert!(err.contains("ghost-lib"), "{err}");
    assert!(stored(&api).await.contains(&"flib_0.15.1.zip".to_string()));

    // --- without a factorio.com login nothing downloads, and the error says what to set.
    let (s, v) = api
        .call(
            "PATCH",
            "/api/v1/controller/config",
            Some(json!({"config": {"mod_portal_token": ""}})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = install(&api, "helper-lib").await;
    assert_eq!(s, 200, "already stored needs no login: {v}");
    portal.add(
        "fresh",
        "Fresh",
        vec![Release::new("fresh", "1.0.0", "2.0", &[])],
    );
    let (s, v) = install(&api, "fresh").await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["error"]["code"], "portal_login", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("mod_portal_token")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portal_operations_need_their_permissions_and_read_the_login_from_the_environment() {
    let portal = portal_with_mods().await;
    let root = tempfile::tempdir().unwrap();
    let cdir = root.path().join("c");
    std::fs::create_dir_all(&cdir).unwrap();
    // The portal and login from the environment this time (a panel's variables).
    let c = ControllerProcess::start_with(
        &cdir,
        &[
            ("MOD_PORTAL_URL", portal.url.as_str()),
            ("FACTORIO_USERNAME", portal::USERNAME),
            ("FACTORIO_TOKEN", portal::TOKEN),
        ],
    );
    let admin = Api::new(&c.url(""), &c.first_token);
    // A user whose only role grants searching, not downloading.
    let (s, role) = admin
        .post(
            "/api/v1/roles",
            json!({"name": "browser", "permissions": ["core.mod.search_portal", "core.mod.list"]}),
        )
        .await;
    assert_eq!(s, 201, "{role}");
    let (s, v) = admin
        .post(
            "/api/v1/users",
            json!({"name": "viewer", "roles": [role["id"]]}),
        )
        .await;
    assert!(s == 200 || s == 201, "{v}");
    let (s, t) = admin
        .post("/api/v1/tokens", json!({"user": "viewer"}))
        .await;
    assert!(s == 200 || s == 201, "{t}");
    let viewer = Api::new(&c.url(""), t["token"].as_str().unwrap());
    let r = viewer.get("/api/v1/mod_portal/search?q=flib").await;
    assert_eq!(names(&r["results"])[0], "flib", "{r}");
    let (s, v) = install(&viewer, "flib").await;
    assert_eq!(s, 403, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("core.mod.download_from_portal"),
        "{v}"
    );
    assert!(portal.downloads().is_empty());
    // The admin may, with the login from the environment.
    let (s, v) = install(&admin, "flib").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(portal.downloads(), ["flib_0.15.0.zip"]);
}
