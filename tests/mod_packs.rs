//! Mod packs through the API on a sim cluster: a pack of mods (versions, enabled flags) and
//! `mod-settings.dat`, assigned to an instance; the host writes `mod-list.json` and gets every
//! file before the start — mods the store lacks come from the mod portal (a local stand-in).
//! Bad packs are refused and change nothing.

mod common;

use common::cluster::{Api, HostProcess, create_and_start};
use common::portal::{self, Release};
use common::{ControllerProcess, join_token};
use serde_json::{Value, json};

/// A minimal `mod-settings.dat`: version 2.0.77.0, a reserved byte, then an empty dictionary.
fn settings_dat() -> Vec<u8> {
    let mut b = Vec::new();
    for v in [2u16, 0, 77, 0] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.push(0);
    b.extend_from_slice(&[5, 0]);
    b.extend_from_slice(&0u32.to_le_bytes());
    b
}

fn b64(b: &[u8]) -> String {
    clustorio::saves::encode_base64(b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mod_pack_reaches_the_instance_with_its_settings() {
    let portal = portal::start().await;
    portal.add(
        "flib",
        "Factorio Library",
        vec![Release::new("flib", "0.15.0", "2.0", &["base >= 2.0"])],
    );
    portal.add(
        "helper-lib",
        "Helper Library",
        vec![Release::new(
            "helper-lib",
            "1.0.0",
            "2.0",
            &["flib >= 0.15"],
        )],
    );
    let root = tempfile::tempdir().unwrap();
    let cdir = root.path().join("c");
    portal::write_controller_config(&cdir, &portal);
    let c = ControllerProcess::start(&cdir);
    let api = Api::new(&c.url(""), &c.first_token);
    let _a = HostProcess::start(
        &root.path().join("a"),
        &c.url(""),
        &join_token(&cdir),
        "a",
        &[],
    );
    // An uploaded mod, and two the store does not have yet (they come from the portal).
    let zip = portal::mod_zip("local-tweaks", "0.1.0", "2.0", &[], 0);
    let (s, v) = api
        .put_bytes("/api/v1/mods/local-tweaks_0.1.0.zip", zip)
        .await;
    assert_eq!(s, 201, "{v}");

    let dat = settings_dat();
    let (s, pack) = api
        .post(
            "/api/v1/mod_packs",
            json!({
                "name": "vanilla plus",
                "description": "QoL",
                "factorio_version": "2.0",
                "mods": [
                    {"name": "local-tweaks", "version": "0.1.0", "enabled": true},
                    {"name": "helper-lib", "enabled": false},
                    {"name": "flib", "version": "0.15.0"},
                ],
                "settings_base64": b64(&dat),
            }),
        )
        .await;
    assert_eq!(s, 201, "{pack}");
    assert_eq!(pack["settings_size"], dat.len(), "{pack}");
    assert_eq!(pack["mods"][1]["enabled"], false);

    // Refusals: a taken name, a bad version, a file that is not mod-settings.dat.
    let (s, v) = api
        .post("/api/v1/mod_packs", json!({"name": "vanilla plus"}))
        .await;
    assert_eq!(s, 409, "{v}");
    let (s, v) = api
        .post(
            "/api/v1/mod_packs",
            json!({"name": "broken", "mods": [{"name": "flib", "version": "latest"}]}),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("latest"));
    let (s, v) = api
        .call(
            "PATCH",
            "/api/v1/mod_packs/vanilla%20plus",
            Some(json!({"settings_base64": b64(b"not settings")})),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    let list = api.get("/api/v1/mod_packs").await;
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["settings_size"], dat.len(), "unchanged: {list}");

    // Assigned to an instance: everything is in place when it starts.
    create_and_start(&api, "alpha", "a", json!({"mod_pack": "vanilla plus"})).await;
    let mods_dir = root.path().join("a/instances/alpha/mods");
    let list: Value =
        serde_json::from_slice(&std::fs::read(mods_dir.join("mod-list.json")).unwrap()).unwrap();
    let entry = |n: &str| {
        list["mods"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == n)
            .cloned()
            .unwrap_or_else(|| panic!("{n} not in {list}"))
    };
    assert_eq!(entry("base")["enabled"], true);
    assert_eq!(entry("local-tweaks")["version"], "0.1.0");
    assert_eq!(entry("helper-lib")["enabled"], false, "{list}");
    assert_eq!(entry("helper-lib")["version"], "1.0.0");
    assert_eq!(entry("flib")["enabled"], true);
    for f in [
        "local-tweaks_0.1.0.zip",
        "helper-lib_1.0.0.zip",
        "flib_0.15.0.zip",
    ] {
        assert!(mods_dir.join(f).is_file(), "{f} missing on the host");
    }
    assert_eq!(
        std::fs::read(mods_dir.join("mod-settings.dat")).unwrap(),
        dat
    );
    // The portal's mods are now in the controller's store too.
    let stored = api.get("/api/v1/mods").await.to_string();
    assert!(stored.contains("helper-lib_1.0.0.zip"), "{stored}");

    // A pack naming a mod that neither the store nor the portal has: the start is refused and
    // says which.
    let (s, v) = api
        .post(
            "/api/v1/mod_packs",
            json!({"name": "ghostly", "mods": [{"name": "ghost-mod"}]}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = api
        .post(
            "/api/v1/instances",
            json!({"name": "beta", "config": {"mod_pack": "ghostly"}}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = api
        .post("/api/v1/instances/beta/assign", json!({"host": "a"}))
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = api.post("/api/v1/instances/beta/start", json!({})).await;
    assert_ne!(s, 200, "{v}");
    assert!(v.to_string().contains("ghost-mod"), "{v}");

    // ctl lists and shows packs.
    let out = std::process::Command::new(common::bin("clustorio"))
        .args(["ctl", "mod", "pack", "show", "vanilla plus"])
        .env("CLUSTORIO_URL", c.url(""))
        .env("CLUSTORIO_TOKEN", &c.first_token)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("helper-lib") && text.contains("newest") && text.contains("no"),
        "{text}"
    );

    // Delete: gone from the list.
    let (s, v) = api.call("DELETE", "/api/v1/mod_packs/ghostly", None).await;
    assert_eq!(s, 200, "{v}");
    let (s, _) = api.call("GET", "/api/v1/mod_packs/ghostly", None).await;
    assert_eq!(s, 404);
}
