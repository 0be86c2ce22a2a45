//! New maps through the API on a sim host: seed, map-gen settings and map settings written as
//! Factorio's `--create` reads them, the new map loaded by the next start, and bad settings
//! refused with the field named.

mod common;

use common::cluster::{Api, HostProcess, rcon};
use common::saves::load_next;
use common::{ControllerProcess, join_token};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_map_gets_its_seed_and_settings_and_is_loaded_next() {
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
    let (s, v) = api
        .post("/api/v1/instances", json!({"name": "nauvis"}))
        .await;
    assert_eq!(s, 201, "{v}");
    api.post("/api/v1/instances/nauvis/assign", json!({"host": "a"}))
        .await;
    let inst_dir = root.path().join("a/instances/nauvis");

    let map_gen = json!({
        "peaceful_mode": true,
        "starting_area": 2,
        "autoplace_controls": {
            "iron-ore": {"frequency": 2, "size": 1.5, "richness": 1},
            "enemy-base": {"frequency": 0, "size": 0, "richness": 0}
        },
        "cliff_settings": {"name": "cliff", "cliff_elevation_0": 10, "cliff_elevation_interval": 40, "richness": 0}
    });
    let map_settings =
        json!({"pollution": {"enabled": false}, "enemy_evolution": {"enabled": false}});

    // Bad settings: 400 naming the field; nothing written.
    for (body, needle) in [
        (json!({"name": "bad", "seed": "x"}), "seed"),
        (
            json!({"name": "bad", "map_gen_settings": {"autoplace_controls": {"coal": {"frequency": "lots"}}}}),
            "coal.frequency",
        ),
        (
            json!({"name": "bad", "map_settings": "peaceful"}),
            "map_settings",
        ),
        (json!({"name": "bad", "preset": "giant"}), "preset"),
    ] {
        let (s, v) = api.post("/api/v1/instances/nauvis/saves", body).await;
        assert_eq!(s, 400, "{v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(needle),
            "{v}"
        );
    }
    assert!(!inst_dir.join("saves/bad.zip").exists());

    let (s, v) = api
        .post(
            "/api/v1/instances/nauvis/saves",
            json!({"name": "seeded", "seed": 4242, "map_gen_settings": map_gen, "map_settings": map_settings}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["name"], "seeded.zip");
    // Factorio's own files, as --map-gen-settings / --map-settings read them.
    let written: Value =
        serde_json::from_slice(&std::fs::read(inst_dir.join("map-gen-settings.json")).unwrap())
            .unwrap();
    assert_eq!(written, map_gen);
    let written: Value =
        serde_json::from_slice(&std::fs::read(inst_dir.join("map-settings.json")).unwrap())
            .unwrap();
    assert_eq!(written, map_settings);
    assert_eq!(
        load_next(&api, "nauvis").await.as_deref(),
        Some("seeded.zip")
    );

    // The same name again: refused, the map kept.
    let (s, v) = api
        .post(
            "/api/v1/instances/nauvis/saves",
            json!({"name": "seeded", "seed": 1}),
        )
        .await;
    assert_eq!(s, 409, "{v}");

    // The next start loads the new map: its seed is the one asked for.
    let (s, v) = api.post("/api/v1/instances/nauvis/start", json!({})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(rcon(&api, "nauvis", "/seed").await.trim(), "4242");

    // While it runs, a new map is refused (a plain save of the game is not).
    let (s, v) = api
        .post(
            "/api/v1/instances/nauvis/saves",
            json!({"name": "other", "seed": 7}),
        )
        .await;
    assert_eq!(s, 409, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("stop"),
        "{v}"
    );
    let (s, v) = api
        .post(
            "/api/v1/instances/nauvis/saves",
            json!({"name": "snapshot"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
}
