//! inventory_sync end to end: factorio-sim games on two hosts running the plugin's real Lua, the
//! controller's locks and generations in SQLite, a game killed with -9 while its player is online,
//! and a sync that fails while the controller is away.

mod common;

use common::cluster::{Api, HostProcess, rcon, wait_until};
use common::inventory::{
    carried, control, create_and_start, items, start, stored, sync_state, write_lock_timeout,
};
use common::{ControllerProcess, join_token};
use serde_json::{Value, json};

const P: &str = "Alice";

async fn state_is(api: &Api, instance: &str, want: &str) -> bool {
    sync_state(api, instance, P).await["state"] == json!(want)
}

async fn synced_on(api: &Api, instance: &str) {
    wait_until(&format!("{P} synced on {instance}"), 60, || async {
        state_is(api, instance, "synced").await
    })
    .await;
}

async fn stored_generation(api: &Api) -> Option<i64> {
    stored(api, P).await["generation"].as_i64()
}

fn ctl(url: &str, token: &str, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(common::bin("clustorio"))
        .args(["ctl", "--url", url, "--token", token, "inventory"])
        .args(args)
        .output()
        .expect("ctl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventories_follow_players_one_holder_never_older_nothing_lost() {
    let root = tempfile::tempdir().unwrap();
    let cdir = root.path().join("c");
    std::fs::create_dir_all(&cdir).unwrap();
    write_lock_timeout(&cdir, 3.0);
    let env = [("PLUGINS", "inventory_sync")];
    let mut c = ControllerProcess::start_with(&cdir, &env);
    let port = c.port;
    let api = Api::new(&c.url(""), &c.first_token);
    let join = join_token(&cdir);
    // A's console, reachable without the controller.
    let socket = root.path().join("a.sock");
    let socket_env = socket.to_string_lossy().to_string();
    let h1 = HostProcess::start(
        &root.path().join("h1"),
        &c.url(""),
        &join,
        "h1",
        &[("FACTORIO_STANDIN_CONTROL", &socket_env)],
    );
    let _h2 = HostProcess::start(&root.path().join("h2"), &c.url(""), &join, "h2", &[]);
    create_and_start(&api, "a", "h1").await;
    create_and_start(&api, "b", "h2").await;
    for game in ["a", "b"] {
        wait_until(&format!("{game} runs the plugin"), 60, || async {
            sync_state(&api, game, P).await.is_object()
        })
        .await;
    }

    // A first visit: A has nothing for Alice, so her own character becomes the synced one.
    rcon(&api, "a", &format!("/standin join {P}")).await;
    synced_on(&api, "a").await;
    assert_eq!(
        rcon(&api, "a", &format!("/standin give {P} iron-plate 150"))
            .await
            .trim(),
        "inserted 150"
    );
    rcon(&api, "a", &format!("/standin give {P} copper-cable 37")).await;
    rcon(
        &api,
        "a",
        &format!("/sc local p = game.get_player(\"{P}\") p.get_inventory(defines.inventory.character_armor).insert(\"light-armor\") p.set_quick_bar_slot(3, \"iron-plate\") p.color = {{r = 0.25, g = 0.5, b = 0.75, a = 1}} \
                  p.get_inventory(defines.inventory.character_guns).insert(\"pistol\") \
                  p.get_inventory(defines.inventory.character_ammo).insert({{name = \"firearm-magazine\", count = 30, quality = \"rare\"}}) \
                  p.begin_crafting({{count = 2, recipe = \"iron-gear-wheel\"}})"),
    )
    .await;
    let on_a = items(&api, "a", P).await;
    assert_eq!(on_a["main"], json!({"iron-plate": 150, "copper-cable": 37}));
    assert_eq!(on_a["armor"], json!({"light-armor": 1}));
    assert_eq!(on_a["ammo"], json!({"firearm-magazine:rare": 30}));
    assert_eq!(on_a["crafting_queue"], json!(["iron-gear-wheel x2"]));

    // She leaves A: generation 1 is on the controller and nobody holds her.
    rcon(&api, "a", &format!("/standin leave {P}")).await;
    wait_until("generation 1 stored and released", 30, || async {
        let s = stored(&api, P).await;
        s["generation"] == json!(1) && s["holder"].is_null()
    })
    .await;
    let row = stored(&api, P).await;
    assert_eq!(row["last_instance"], json!("a"));
    assert!(row["size"].as_i64().unwrap_or(0) > 50, "{row}");

    // She joins B with exactly what she had on A.
    rcon(&api, "b", &format!("/standin join {P}")).await;
    synced_on(&api, "b").await;
    let on_b = items(&api, "b", P).await;
    assert_eq!(carried(&on_b), carried(&on_a), "B has what A had");
    assert_eq!(on_b["controller"], json!("character"));
    assert_eq!(stored(&api, P).await["holder"], json!("b"));

    // While B holds her, joining A waits (a spectator), then A gets her after B's upload.
    rcon(&api, "b", &format!("/standin give {P} wood 20")).await;
    rcon(&api, "a", &format!("/standin join {P}")).await;
    wait_until("A waits for B", 30, || async {
        let s = sync_state(&api, "a", P).await;
        s["state"] == json!("waiting") && s["holder"] == json!("b")
    })
    .await;
    assert_eq!(items(&api, "a", P).await["controller"], json!("spectator"));
    let gen2 = items(&api, "b", P).await;
    rcon(&api, "b", &format!("/standin leave {P}")).await;
    synced_on(&api, "a").await;
    assert_eq!(stored_generation(&api).await, Some(2));
    let on_a = items(&api, "a", P).await;
    assert_eq!(carried(&on_a), carried(&gen2), "A got B's upload");
    assert_eq!(on_a["main"]["wood"], json!(20));
    assert_eq!(stored(&api, P).await["holder"], json!("a"));

    // A's game is killed with Alice online, after she picked up stone it never uploaded. B waits
    // while A holds her, and after the lock expires gets the last uploaded generation (2, with
    // the wood; never generation 1 without it).
    rcon(&api, "a", &format!("/standin give {P} stone 10")).await;
    let pid = h1.factorio_pid("a").expect("a's pid");
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    rcon(&api, "b", &format!("/standin join {P}")).await;
    wait_until("B waits for A's lock", 30, || async {
        sync_state(&api, "b", P).await["holder"] == json!("a")
    })
    .await;
    synced_on(&api, "b").await;
    let on_b = items(&api, "b", P).await;
    assert_eq!(carried(&on_b), carried(&gen2), "generation 2 exactly");
    assert!(on_b["main"].get("stone").is_none(), "{on_b}");
    assert_eq!(stored_generation(&api).await, Some(2));
    assert_eq!(stored(&api, P).await["holder"], json!("b"));

    // A comes back; Alice leaves B (generation 3). The controller is killed, so when she joins
    // A the sync fails: she plays with a temporary inventory…
    start(&api, "a").await;
    wait_until("a runs again", 60, || async {
        sync_state(&api, "a", P).await.is_object()
    })
    .await;
    rcon(&api, "b", &format!("/standin leave {P}")).await;
    wait_until("generation 3 stored", 30, || async {
        stored_generation(&api).await == Some(3) && stored(&api, P).await["holder"].is_null()
    })
    .await;
    let gen3 = items(&api, "b", P).await;
    c.kill9();
    let rcon_a = |cmd: String| {
        let socket = socket.clone();
        async move { control(&socket, &cmd).await }
    };
    rcon_a(format!("/standin join {P}")).await;
    let mut temporary = false;
    for _ in 0..300 {
        let s = rcon_a(format!("/sc inventory_sync.status(\"{P}\")")).await;
        if s.contains("\"temporary\"") {
            temporary = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(temporary, "the failed sync gives a temporary inventory");
    let temp: Value =
        serde_json::from_str(rcon_a(format!("/standin inventory {P}")).await.trim()).unwrap();
    assert_eq!(temp["controller"], json!("character"));
    assert_eq!(temp["main"], json!({}), "a fresh character: {temp}");
    rcon_a(format!("/standin give {P} coal 5")).await;

    // …which is merged into generation 3 once the controller is back.
    let c2 = ControllerProcess::start_on(&cdir, port, &env);
    wait_until("both hosts are back", 60, || async {
        let (s, v) = api.call("GET", "/api/v1/hosts", None).await;
        s == 200
            && v.as_array()
                .is_some_and(|hs| hs.len() == 2 && hs.iter().all(|h| h["connected"] == json!(true)))
    })
    .await;
    synced_on(&api, "a").await;
    let merged = items(&api, "a", P).await;
    let mut want = carried(&gen3);
    want["main"]["coal"] = json!(5);
    assert_eq!(
        carried(&merged),
        want,
        "generation 3 plus the temporary coal"
    );
    let shown = rcon(&api, "a", "/standin printed").await;
    assert!(
        shown.contains("temporary inventory (5 items) was merged"),
        "{shown}"
    );
    rcon(&api, "a", &format!("/standin leave {P}")).await;
    wait_until("generation 4 with the coal", 30, || async {
        let s = stored(&api, P).await;
        s["generation"] == json!(4) && s["data"]["inventories"].to_string().contains("coal")
    })
    .await;

    // Admin tools: list, export, import (a new generation, audited) and release.
    let url = c2.url("");
    let (ok, text) = ctl(&url, &api.token, &["list"]);
    assert!(
        ok && text.contains(P) && text.contains("1 inventories"),
        "{text}"
    );
    let file = root.path().join("alice.json");
    let (ok, text) = ctl(&url, &api.token, &["export", P, file.to_str().unwrap()]);
    assert!(ok, "{text}");
    let mut exported: Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    exported["inventories"]["main"] = json!([[1, "iron-plate", 7, "normal"]]);
    std::fs::write(&file, exported.to_string()).unwrap();
    let (ok, text) = ctl(&url, &api.token, &["import", P, file.to_str().unwrap()]);
    assert!(ok && text.contains("generation 5"), "{text}");
    let (ok, text) = ctl(&url, &api.token, &["show", P]);
    assert!(
        ok && text.contains("iron-plate ×7") && text.contains("generation 5"),
        "{text}"
    );
    rcon(&api, "b", &format!("/standin join {P}")).await;
    synced_on(&api, "b").await;
    assert_eq!(items(&api, "b", P).await["main"], json!({"iron-plate": 7}));
    let (ok, text) = ctl(&url, &api.token, &["import", P, file.to_str().unwrap()]);
    assert!(!ok && text.contains("held by instance 'b'"), "{text}");
    let (ok, text) = ctl(&url, &api.token, &["release", P]);
    assert!(ok, "{text}");
    assert!(stored(&api, P).await["holder"].is_null());
    let audit = api.get("/api/v1/audit").await;
    let actions: Vec<&str> = audit
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert!(
        actions.contains(&"inventory_sync.import") && actions.contains(&"inventory_sync.release"),
        "{audit}"
    );

    // The sim keeps players in the save: her character on B survives a restart of B.
    rcon(&api, "b", &format!("/standin leave {P}")).await;
    wait_until("generation 6 stored", 30, || async {
        stored_generation(&api).await == Some(6)
    })
    .await;
    let before = items(&api, "b", P).await;
    for action in ["stop", "start"] {
        let (s, v) = api
            .post(&format!("/api/v1/instances/b/{action}"), json!({}))
            .await;
        assert_eq!(s, 200, "{action} b: {v}");
    }
    wait_until("b runs again", 60, || async {
        sync_state(&api, "b", P).await["state"] == json!("offline")
    })
    .await;
    assert_eq!(carried(&items(&api, "b", P).await), carried(&before));
    assert_eq!(
        stored_generation(&api).await,
        Some(6),
        "nothing re-uploaded"
    );

    let (_, metrics) = api.call("GET", "/metrics", None).await;
    assert!(
        metrics
            .as_str()
            .unwrap_or_default()
            .contains("clustorio_inventory_sync_inventories 1"),
        "{metrics}"
    );
}

/// A download that stops half-way (the game hangs for longer than the download may take, as a
/// game thread stuck on a slow save would) leaves the player on a temporary inventory; its items
/// are merged when the game retries and the download completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_that_stops_gives_a_temporary_inventory_merged_at_the_next_sync() {
    let root = tempfile::tempdir().unwrap();
    let cdir = root.path().join("c");
    std::fs::create_dir_all(&cdir).unwrap();
    let env = [("PLUGINS", "inventory_sync")];
    let c = ControllerProcess::start_with(&cdir, &env);
    let api = Api::new(&c.url(""), &c.first_token);
    let join = join_token(&cdir);
    let _h1 = HostProcess::start(&root.path().join("h1"), &c.url(""), &join, "h1", &[]);
    let socket = root.path().join("c.sock");
    let socket_env = socket.to_string_lossy().to_string();
    let _h2 = HostProcess::start(
        &root.path().join("h2"),
        &c.url(""),
        &join,
        "h2",
        &[("FACTORIO_STANDIN_CONTROL", &socket_env)],
    );
    create_and_start(&api, "a", "h1").await;
    // Small chunks: the download of a full inventory takes many RCON commands.
    let (s, v) = api
        .post(
            "/api/v1/instances",
            json!({ "name": "c", "config": { "inventory_sync": { "rcon_chunk_size": 100 } } }),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = api
        .post("/api/v1/instances/c/assign", json!({ "host": "h2" }))
        .await;
    assert_eq!(s, 200, "{v}");
    start(&api, "c").await;
    for game in ["a", "c"] {
        wait_until(&format!("{game} runs the plugin"), 60, || async {
            sync_state(&api, game, P).await.is_object()
        })
        .await;
    }

    rcon(&api, "a", &format!("/standin join {P}")).await;
    synced_on(&api, "a").await;
    let fill = format!(
        "/sc local main = game.get_player(\"{P}\").get_main_inventory() \
         for s = 1, #main - 1 do main[s].set_stack({{name = \"an-item-with-a-rather-long-name-\" .. s, count = 3}}) end"
    );
    assert!(rcon(&api, "a", &fill).await.trim().is_empty());
    let full = items(&api, "a", P).await;
    rcon(&api, "a", &format!("/standin leave {P}")).await;
    wait_until("generation 1 stored", 30, || async {
        stored_generation(&api).await == Some(1) && stored(&api, P).await["holder"].is_null()
    })
    .await;

    // Join C and hang its game as soon as the download has begun (one slot was left free for
    // what she picks up on the temporary inventory).
    control(&socket, &format!("/standin join {P}")).await;
    let status = format!("/sc inventory_sync.status(\"{P}\")");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let s = control(&socket, &status).await;
        if s.contains("\"downloading\"") {
            control(&socket, "/standin hang 11000").await;
            break;
        }
        assert!(
            !s.contains("\"synced\""),
            "the download finished before the hang: {s}"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the download never began: {s}"
        );
    }
    wait_until("C gives up the stopped download", 40, || async {
        state_is(&api, "c", "temporary").await
    })
    .await;
    let temp = items(&api, "c", P).await;
    assert_eq!(temp["controller"], json!("character"));
    assert_eq!(temp["main"], json!({}), "a fresh character: {temp}");
    rcon(&api, "c", &format!("/standin give {P} coal 5")).await;

    // The retry downloads the whole inventory and merges the coal into it.
    synced_on(&api, "c").await;
    let merged = items(&api, "c", P).await;
    let mut want = carried(&full);
    want["main"]["coal"] = json!(5);
    assert_eq!(carried(&merged), want);
    let shown = rcon(&api, "c", "/standin printed").await;
    assert!(shown.contains("the download stopped"), "{shown}");
    assert!(
        shown.contains("temporary inventory (5 items) was merged"),
        "{shown}"
    );
}

/// The host of the game holding a player dies (kill -9): its lock expires `player_lock_timeout`
/// after the controller lost the host, and the other game gets the last uploaded generation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_expires_after_its_host_is_killed() {
    let root = tempfile::tempdir().unwrap();
    let cdir = root.path().join("c");
    std::fs::create_dir_all(&cdir).unwrap();
    write_lock_timeout(&cdir, 2.0);
    let env = [("PLUGINS", "inventory_sync")];
    let c = ControllerProcess::start_with(&cdir, &env);
    let api = Api::new(&c.url(""), &c.first_token);
    let join = join_token(&cdir);
    let mut h1 = HostProcess::start(&root.path().join("h1"), &c.url(""), &join, "h1", &[]);
    let _h2 = HostProcess::start(&root.path().join("h2"), &c.url(""), &join, "h2", &[]);
    create_and_start(&api, "a", "h1").await;
    create_and_start(&api, "b", "h2").await;
    for game in ["a", "b"] {
        wait_until(&format!("{game} runs the plugin"), 60, || async {
            sync_state(&api, game, P).await.is_object()
        })
        .await;
    }
    rcon(&api, "a", &format!("/standin join {P}")).await;
    synced_on(&api, "a").await;
    rcon(&api, "a", &format!("/standin give {P} iron-plate 12")).await;
    let gen1 = items(&api, "a", P).await;
    rcon(&api, "a", &format!("/standin leave {P}")).await;
    wait_until("generation 1 stored", 30, || async {
        stored_generation(&api).await == Some(1) && stored(&api, P).await["holder"].is_null()
    })
    .await;
    rcon(&api, "a", &format!("/standin join {P}")).await;
    synced_on(&api, "a").await;
    rcon(&api, "a", &format!("/standin give {P} stone 3")).await;

    h1.proc.kill9();
    rcon(&api, "b", &format!("/standin join {P}")).await;
    wait_until("B waits for the game of the dead host", 30, || async {
        sync_state(&api, "b", P).await["holder"] == json!("a")
    })
    .await;
    synced_on(&api, "b").await;
    let on_b = items(&api, "b", P).await;
    assert_eq!(
        carried(&on_b),
        carried(&gen1),
        "the last upload, without the stone"
    );
    assert_eq!(stored_generation(&api).await, Some(1));
    assert_eq!(stored(&api, P).await["holder"], json!("b"));
}
