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

/// Printed by Factorio 2.0.76 (default settings but no enemy bases, water coverage 75 %,
/// pollution off); from the tests of M45-Science/ChatWire (`fact/mapExchange_test.go`).
const FACTORIO_2_0_76: &str = ">>>eNpjYmBg8AFiBh6W5PzEHAaGBnsY5krOLyhILdLNL0pFFuZMLipNSdXNz0RVnJqXmlupm5RYDFUMAg32HJlF+XnoJvDkJZaWZRbHJ+dkpqUhS7AW5SdnFyOLiBWXJBaVZOalxycWpSbG5+ZnFpeUoprGWlySn4cqUlKUmopiDHdpUWJeZmkuuktYyxNLUosgPAeIKKOn9iTzhhY5BhD+X8+g8P8/CANZD4A+AmEGxgaIDkagIAywQj3DoOAIxE5wSxgZGKtF1rk/rJpizwhRqecAZXyAihxIgol4whh+DjilVGAMEyRzjMHgMxIDYmkJ0AqoKg4HBAMi2QKSZGTsfbt1wfdjF+wY/6z8eMk3KcGe0dBV5N0Ho3V2QEl2kHeZ4MSsmSCwE+YVBpiZD+yhUjftGc+eAYE39oysIB0iIMLBAkgc8GZmYBTgA7IW9AAJBRkGmNPsYMaIODCmgcE3mE8ewxiX7dH9AQwIG5DhciDiBIgAWwh3GSOE6dDvwOggD5OVRCgB6jdiQHZDCsKHJ2HWHkayH80hmBGB7A80ERUHLNHABbIwBU68YIa7BhieF9hhPIf5DozMIAZI1RegGIQHkoEZBaEFHMDBzQxPlB/sUVMaiAEyJP29ZCQA2Pi9LQ==<<<";

/// A map exchange string written from the format (Factorio wiki, "Map exchange string format";
/// 2.0 layout): version, a byte, the map-gen settings, the map settings, CRC32, deflated and
/// base64'd between `>>>` and `<<<`. `edit` may spoil the raw bytes before the checksum.
fn exchange_string(
    version: [u16; 4],
    seed: u32,
    peaceful: bool,
    iron: [f32; 3],
    edit: impl FnOnce(&mut Vec<u8>),
) -> String {
    fn string(b: &mut Vec<u8>, s: &str) {
        b.push(s.len() as u8);
        b.extend_from_slice(s.as_bytes());
    }
    let mut b = Vec::new();
    for v in version {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.push(0);
    // autoplace_controls: {iron-ore: frequency, size, richness}
    b.push(1);
    string(&mut b, "iron-ore");
    for f in iron {
        b.extend_from_slice(&f.to_le_bytes());
    }
    b.push(0); // autoplace_settings: none
    b.push(1); // default_enable_all_autoplace_controls
    for n in [seed, 1000, 800] {
        b.extend_from_slice(&n.to_le_bytes());
    }
    // area_to_generate_at_start: two absolute positions (0x7FFF, i32 x, i32 y), orientation
    for xy in [-224i32, 224] {
        b.extend_from_slice(&0x7FFFi16.to_le_bytes());
        b.extend_from_slice(&(xy * 256).to_le_bytes());
        b.extend_from_slice(&(xy * 256).to_le_bytes());
    }
    b.extend_from_slice(&[0, 0, 0, 0]);
    b.extend_from_slice(&1.5f32.to_le_bytes()); // starting_area
    b.push(peaceful as u8);
    b.push(0); // no_enemies_mode
    // starting_points: one, as a delta of (+10, -4) tiles from the last position (224, 224)
    b.push(1);
    b.extend_from_slice(&(10i16 * 256).to_le_bytes());
    b.extend_from_slice(&(-4i16 * 256).to_le_bytes());
    b.push(0); // property_expression_names
    string(&mut b, "cliff");
    string(&mut b, "nauvis_cliff");
    for f in [10.0f32, 40.0, 0.5, 1.0] {
        b.extend_from_slice(&f.to_le_bytes());
    }
    b.push(0); // territory_settings: absent
    // Map settings: pollution.enabled = false given, everything else absent.
    b.extend_from_slice(&[1, 0]);
    b.extend(std::iter::repeat_n(0u8, 11 + 4 + 4 + 4 + 13 + 13 + 33));
    b.extend_from_slice(&3u32.to_le_bytes()); // max_failed_behavior_count
    b.extend_from_slice(&2.0f64.to_le_bytes()); // technology_price_multiplier
    b.extend_from_slice(&1.0f64.to_le_bytes()); // spoil_time_modifier
    b.extend_from_slice(&[0, 0]); // asteroids: absent
    let mut crc = flate2::Crc::new();
    crc.update(&b);
    b.extend_from_slice(&crc.sum().to_le_bytes());
    edit(&mut b);
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut z, &b).unwrap();
    let zipped = z.finish().unwrap();
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::from(">>>");
    for (i, chunk) in zipped.chunks(3).enumerate() {
        let n = chunk.iter().fold(0u32, |a, &c| (a << 8) | u32::from(c)) << (8 * (3 - chunk.len()));
        for k in 0..=chunk.len() {
            s.push(A[(n >> (18 - 6 * k)) as usize & 63] as char);
        }
        s.extend(std::iter::repeat_n('=', 3 - chunk.len()));
        // Factorio wraps its strings; whitespace must not matter.
        if i % 18 == 17 {
            s.push('\n');
        }
    }
    s + "<<<"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pasted_map_exchange_string_becomes_factorio_s_files() {
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
    let read = |f: &str| -> Value {
        serde_json::from_slice(&std::fs::read(inst_dir.join(f)).unwrap()).unwrap()
    };

    // A string written from the format: every field lands where Factorio reads it.
    let made = exchange_string([2, 0, 77, 0], 31337, true, [2.0, 0.5, 3.0], |_| {});
    let (s, v) = api
        .post(
            "/api/v1/instances/nauvis/saves",
            json!({"name": "made", "map_exchange_string": made}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let g = read("map-gen-settings.json");
    assert_eq!(g["seed"], 31337);
    assert_eq!(
        (g["width"].clone(), g["height"].clone()),
        (json!(1000), json!(800))
    );
    assert_eq!(g["peaceful_mode"], true);
    assert_eq!(g["starting_area"], 1.5);
    assert_eq!(
        g["autoplace_controls"]["iron-ore"],
        json!({"frequency": 2, "size": 0.5, "richness": 3})
    );
    assert_eq!(g["starting_points"], json!([{"x": 234, "y": 220}]));
    assert_eq!(g["cliff_settings"]["control"], "nauvis_cliff");
    assert_eq!(g["cliff_settings"]["richness"], 0.5);
    let m = read("map-settings.json");
    assert_eq!(m["pollution"], json!({"enabled": false}));
    assert_eq!(m["difficulty_settings"]["technology_price_multiplier"], 2);

    // A string printed by Factorio 2.0.76, with a field given beside it (which wins); the
    // next start plays the string's seed.
    let (s, v) = api
        .post(
            "/api/v1/instances/nauvis/saves",
            json!({"name": "real", "map_exchange_string": FACTORIO_2_0_76,
                   "map_gen_settings": {"peaceful_mode": true}}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let g = read("map-gen-settings.json");
    assert_eq!(g["seed"], 932326217);
    assert_eq!(g["peaceful_mode"], true);
    assert_eq!(g["autoplace_controls"]["water"]["size"], 0.75);
    assert_eq!(read("map-settings.json")["pollution"]["enabled"], false);
    assert_eq!(load_next(&api, "nauvis").await.as_deref(), Some("real.zip"));
    let (s, v) = api.post("/api/v1/instances/nauvis/start", json!({})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(rcon(&api, "nauvis", "/seed").await.trim(), "932326217");
    let (s, v) = api.post("/api/v1/instances/nauvis/stop", json!({})).await;
    assert_eq!(s, 200, "{v}");

    // Broken strings: 400 saying what is wrong, no save made.
    let good = exchange_string([2, 0, 77, 0], 1, false, [1.0, 1.0, 1.0], |_| {});
    let inner = good
        .trim_start_matches(">>>")
        .trim_end_matches("<<<")
        .to_string();
    let cases = [
        (inner.clone(), ">>>"),
        (format!(">>>{}#{}<<<", &inner[..20], &inner[20..]), "base64"),
        (format!(">>>{}<<<", &inner[..inner.len() / 2]), "decompress"),
        (
            exchange_string([2, 0, 77, 0], 1, false, [1.0, 1.0, 1.0], |b| b[40] ^= 0x10),
            "checksum",
        ),
        (
            exchange_string([3, 1, 0, 0], 1, false, [1.0, 1.0, 1.0], |_| {}),
            "Factorio 3.1.0",
        ),
        (
            exchange_string([2, 0, 77, 0], 1, false, [1.0, 1.0, 1.0], |b| {
                // Cut inside the map settings, with a checksum that matches the cut data.
                b.truncate(120);
                let mut crc = flate2::Crc::new();
                crc.update(&b[..]);
                b.extend_from_slice(&crc.sum().to_le_bytes());
            }),
            "truncated",
        ),
    ];
    for (text, needle) in cases {
        let (s, v) = api
            .post(
                "/api/v1/instances/nauvis/saves",
                json!({"name": "broken", "map_exchange_string": text}),
            )
            .await;
        assert_eq!(s, 400, "{needle}: {v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains("map_exchange_string") && msg.contains(needle),
            "{needle}: {v}"
        );
    }
    assert!(!inst_dir.join("saves/broken.zip").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_game_from_a_scenario_is_an_ordinary_save() {
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
    // A custom scenario is not a freeplay the save patcher knows: plain saves for this one.
    let (s, v) = api
        .post(
            "/api/v1/instances",
            json!({"name": "arena", "config": {"save_patching": false}}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    api.post("/api/v1/instances/arena/assign", json!({"host": "a"}))
        .await;
    let inst_dir = root.path().join("a/instances/arena");
    let control = b"-- the arena scenario\nlocal rounds = 3\n";
    std::fs::create_dir_all(inst_dir.join("scenarios/pit/locale/en")).unwrap();
    std::fs::write(inst_dir.join("scenarios/pit/control.lua"), control).unwrap();
    std::fs::write(inst_dir.join("scenarios/pit/locale/en/pit.cfg"), b"[x]\n").unwrap();

    // Listed: the instance's own and the install's built-in ones.
    let list = api.get("/api/v1/instances/arena/scenarios").await;
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert!(
        names.contains(&"pit") && names.contains(&"base/freeplay"),
        "{list}"
    );
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "pit" && s["source"] == "instance")
    );

    // Unknown and malformed names are refused, nothing made.
    let (s, v) = api
        .post(
            "/api/v1/instances/arena/saves",
            json!({"name": "x", "scenario": "nope"}),
        )
        .await;
    assert_eq!(s, 404, "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("'nope'") && msg.contains("pit"), "{v}");
    let (s, v) = api
        .post(
            "/api/v1/instances/arena/saves",
            json!({"name": "x", "scenario": "../pit"}),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert!(!inst_dir.join("saves/x.zip").exists());

    // A save named like the scenario is not written over by the scenario's run.
    std::fs::create_dir_all(inst_dir.join("saves")).unwrap();
    std::fs::write(
        inst_dir.join("saves/pit.zip"),
        b"an older save of that name",
    )
    .unwrap();
    let (s, v) = api
        .post(
            "/api/v1/instances/arena/saves",
            json!({"name": "round-1", "scenario": "pit", "seed": 777}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["name"], "round-1.zip");
    let zip = std::fs::read(inst_dir.join("saves/round-1.zip")).unwrap();
    assert!(
        common::saves::has_entry(&zip, "control.lua", control),
        "the scenario's script is the game's"
    );
    assert!(common::saves::has_entry(
        &zip,
        "locale/en/pit.cfg",
        b"[x]\n"
    ));
    assert_eq!(
        std::fs::read(inst_dir.join("saves/pit.zip")).unwrap(),
        b"an older save of that name",
        "the scenario run wrote over the save named like the scenario"
    );
    let st = api.get("/api/v1/instances/arena").await;
    assert_eq!(st["status"], "stopped", "{st}");
    assert_eq!(
        load_next(&api, "arena").await.as_deref(),
        Some("round-1.zip")
    );

    // The next start loads it like any save: the seed asked for, and the stop writes it back.
    let (s, v) = api.post("/api/v1/instances/arena/start", json!({})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(rcon(&api, "arena", "/seed").await.trim(), "777");
    let (s, v) = api.post("/api/v1/instances/arena/stop", json!({})).await;
    assert_eq!(s, 200, "{v}");
    let saves = common::saves::host_saves(&api, "arena").await;
    assert_eq!(saves.len(), 2, "{saves:?}");
    assert!(saves.contains(&"round-1.zip".to_string()), "{saves:?}");

    // A built-in scenario with a map exchange string: the string's seed.
    let (s, v) = api
        .post(
            "/api/v1/instances/arena/saves",
            json!({"name": "fresh", "scenario": "base/freeplay", "map_exchange_string": FACTORIO_2_0_76}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = api.post("/api/v1/instances/arena/start", json!({})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(rcon(&api, "arena", "/seed").await.trim(), "932326217");
    let (s, v) = api.post("/api/v1/instances/arena/stop", json!({})).await;
    assert_eq!(s, 200, "{v}");

    // An uploaded scenario (its files in one folder of the zip) lands in the instance's
    // scenarios/ and starts a game like the others.
    let duel_control = b"-- the duel scenario\nlocal players = 2\n";
    let duel = common::saves::zip_of(&[
        ("duel-v2/control.lua", duel_control),
        ("duel-v2/locale/en/duel.cfg", b"[duel]\n"),
    ]);
    let (s, v) = api
        .put_bytes("/api/v1/instances/arena/scenarios/duel", duel)
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["name"], "duel");
    assert_eq!(
        std::fs::read(inst_dir.join("scenarios/duel/control.lua")).unwrap(),
        duel_control
    );
    let list = api.get("/api/v1/instances/arena/scenarios").await;
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "duel" && s["source"] == "instance"),
        "{list}"
    );
    let (s, v) = api
        .post(
            "/api/v1/instances/arena/saves",
            json!({"name": "duel-1", "scenario": "duel"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let zip = std::fs::read(inst_dir.join("saves/duel-1.zip")).unwrap();
    assert!(common::saves::has_entry(&zip, "control.lua", duel_control));
    let audit = api.get("/api/v1/audit").await;
    assert!(
        audit.to_string().contains("scenario.upload"),
        "the upload is audited"
    );

    // What is not a scenario is refused with the reason, and nothing lands.
    let before = scenario_dirs(&inst_dir);
    let not_scenario = common::saves::zip_of(&[("readme.txt", b"hello")]);
    let (s, v) = api
        .put_bytes("/api/v1/instances/arena/scenarios/junk", not_scenario)
        .await;
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("control.lua"),
        "{v}"
    );
    let (s, v) = api
        .put_bytes(
            "/api/v1/instances/arena/scenarios/junk",
            b"not a zip".to_vec(),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("zip"),
        "{v}"
    );
    let escaping = common::saves::zip_of(&[
        ("control.lua", b"-- x\n"),
        ("../../escape.lua", b"-- out\n"),
    ]);
    let (s, v) = api
        .put_bytes("/api/v1/instances/arena/scenarios/junk", escaping)
        .await;
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unsafe path"),
        "{v}"
    );
    let (s, v) = api
        .put_bytes(
            "/api/v1/instances/arena/scenarios/..%2Fup",
            common::saves::zip_of(&[("control.lua", b"-- x\n")]),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["error"]["code"], "invalid_name", "{v}");
    assert_eq!(scenario_dirs(&inst_dir), before, "nothing landed");
    assert!(!root.path().join("a/instances/escape.lua").exists());
}

/// The folders in an instance's `scenarios/` (uploads in progress included).
fn scenario_dirs(inst_dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(inst_dir.join("scenarios"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}
