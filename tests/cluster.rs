//! A whole cluster on real processes: a controller, two hosts registered with the join token,
//! instances on factorio-sim — the life of an instance end to end, and bad input on the way.

mod common;

use common::cluster::{Api, HostProcess, factorio_pids_under};
use common::{ControllerProcess, join_token};
use serde_json::{Value, json};

fn saves_in(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .filter(|n| n.ends_with(".zip"))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_lives_its_whole_life_across_two_hosts() {
    let root = tempfile::tempdir().unwrap();
    let ctl_dir = root.path().join("controller");
    std::fs::create_dir_all(&ctl_dir).unwrap();
    let c = ControllerProcess::start(&ctl_dir);
    let api = Api::new(&c.url(""), &c.first_token);
    let join = join_token(&ctl_dir);
    let _a = HostProcess::start(&root.path().join("a"), &c.url(""), &join, "host-a", &[]);
    let _b = HostProcess::start(&root.path().join("b"), &c.url(""), &join, "host-b", &[]);

    // Both hosts registered, and each saved its own token for the next start.
    let hosts = api.get("/api/v1/hosts").await;
    assert_eq!(hosts.as_array().unwrap().len(), 2);
    assert!(
        hosts
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["connected"] == true)
    );
    let cfg: Value = serde_json::from_str(
        &std::fs::read_to_string(root.path().join("a/config-slave.json")).unwrap(),
    )
    .unwrap();
    assert!(cfg["host_token"].as_str().unwrap().starts_with("host_"));

    // Create and auto-assign: the two instances land on different hosts.
    for name in ["alpha", "beta"] {
        assert_eq!(
            api.post("/api/v1/instances", json!({"name": name})).await.0,
            201
        );
        let (s, v) = api
            .post(&format!("/api/v1/instances/{name}/assign"), json!({}))
            .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["delivered"], true);
    }
    let alpha = api.get("/api/v1/instances/alpha").await;
    let beta = api.get("/api/v1/instances/beta").await;
    assert_ne!(alpha["host"], beta["host"], "placement spreads instances");
    let alpha_host = root
        .path()
        .join(if alpha["host"] == "host-a" { "a" } else { "b" });

    // Start: the reply comes once it runs; the status is reported as it happens.
    let (s, v) = api.post("/api/v1/instances/alpha/start", json!({})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["status"], "running");
    assert!(v["game_port"].as_u64().is_some());
    let dir = alpha_host.join("instances/alpha");
    let settings: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("server-settings.json")).unwrap())
            .unwrap();
    assert!(settings["name"].as_str().unwrap().contains("alpha"));

    // RCON through the API. The host has already answered the game's "this disables
    // achievements" prompt (script commands are on by default), so the first Lua command runs.
    let (s, v) = api
        .post(
            "/api/v1/instances/alpha/rcon",
            json!({"command": "/sc rcon.print(\"hello from rcon\")"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["output"].as_str().unwrap().trim(), "hello from rcon");

    // Players joining and leaving show in the instance (the sim's own command makes one join).
    api.post(
        "/api/v1/instances/alpha/rcon",
        json!({"command": "/standin join alice"}),
    )
    .await;
    api.wait_for("/api/v1/instances/alpha", |v| {
        v["players_online"] == json!(["alice"])
    })
    .await;
    // Bans reach the running game.
    api.post("/api/v1/users", json!({"name": "griefer"})).await;
    let (s, _) = api
        .call(
            "PATCH",
            "/api/v1/users/griefer",
            Some(json!({"is_banned": true, "ban_reason": "spam"})),
        )
        .await;
    assert_eq!(s, 200);
    api.post(
        "/api/v1/instances/alpha/rcon",
        json!({"command": "/standin leave alice"}),
    )
    .await;
    api.wait_for("/api/v1/instances/alpha", |v| {
        v["players_online"] == json!([])
    })
    .await;

    // Logs: recent lines include the join.
    let logs = api.get("/api/v1/instances/alpha/logs?lines=200").await;
    assert!(
        logs["lines"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l.as_str().unwrap().contains("[JOIN] alice joined the game")),
        "{logs}"
    );

    // Saves: create one while running; it is listed.
    let (s, v) = api
        .post(
            "/api/v1/instances/alpha/saves",
            json!({"name": "checkpoint"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let saves = api.get("/api/v1/instances/alpha/saves").await;
    assert!(
        saves
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "checkpoint.zip"),
        "{saves}"
    );

    // Stop: saved on the host's disk and backed up to the controller.
    let (s, v) = api.post("/api/v1/instances/alpha/stop", json!({})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["status"], "stopped");
    assert!(
        factorio_pids_under(&alpha_host).is_empty(),
        "Factorio exited"
    );
    assert!(!saves_in(&dir.join("saves")).is_empty());
    let id = alpha["id"].as_i64().unwrap();
    let backups = saves_in(&ctl_dir.join(format!("saves/{id}/backups")));
    assert_eq!(
        backups.len(),
        1,
        "one backup after the graceful stop: {backups:?}"
    );

    // Download a save and upload it under a new name.
    let (s, zip) = api
        .get_bytes("/api/v1/instances/alpha/saves/checkpoint.zip")
        .await;
    assert_eq!(s, 200);
    assert!(zip.starts_with(b"PK"));
    let (s, v) = api
        .put_bytes("/api/v1/instances/alpha/saves/restored.zip", zip.clone())
        .await;
    assert_eq!(s, 201, "{v}");
    assert!(dir.join("saves/restored.zip").exists());

    // Bad input: clear errors, nothing changed.
    let before = saves_in(&dir.join("saves"));
    let (s, v) = api
        .put_bytes(
            "/api/v1/instances/alpha/saves/..%2F..%2Fescape.zip",
            zip.clone(),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    let (s, v) = api
        .put_bytes(
            "/api/v1/instances/alpha/saves/broken.zip",
            b"PK\x03\x04 not really a zip".to_vec(),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("not a"),
        "{v}"
    );
    assert_eq!(saves_in(&dir.join("saves")), before);
    assert!(!root.path().join("escape.zip").exists());
    let (s, _) = api.post("/api/v1/instances/nope/start", json!({})).await;
    assert_eq!(s, 404);
    let (s, v) = api
        .post(
            "/api/v1/instances/alpha/start",
            json!({"save": "missing.zip"}),
        )
        .await;
    assert_eq!(s, 409, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("missing.zip")
    );
    assert_eq!(
        api.get("/api/v1/instances/alpha").await["desired"],
        "stopped"
    );

    // Start again from the uploaded save; a delete while it runs stops the game first.
    let (s, v) = api
        .post(
            "/api/v1/instances/alpha/start",
            json!({"save": "restored.zip"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = api.call("DELETE", "/api/v1/instances/alpha", None).await;
    assert_eq!(s, 200, "{v}");
    assert!(
        factorio_pids_under(&dir).is_empty(),
        "the deleted instance's game still runs"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while dir.exists() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(!dir.exists(), "the host deleted the instance directory");
    let (s, _) = api.call("GET", "/api/v1/instances/alpha", None).await;
    assert_eq!(s, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_started_together_get_different_ports() {
    let root = tempfile::tempdir().unwrap();
    let cdir = root.path().join("c");
    std::fs::create_dir_all(&cdir).unwrap();
    let c = ControllerProcess::start(&cdir);
    let api = Api::new(&c.url(""), &c.first_token);
    let _h = HostProcess::start(
        &root.path().join("h"),
        &c.url(""),
        &join_token(&cdir),
        "h",
        &[],
    );
    for i in 0..4 {
        api.post("/api/v1/instances", json!({"name": format!("p{i}")}))
            .await;
        api.post(&format!("/api/v1/instances/p{i}/assign"), json!({}))
            .await;
    }
    let starts: Vec<_> = (0..4)
        .map(|i| {
            let api = api.clone();
            tokio::spawn(async move {
                api.post(&format!("/api/v1/instances/p{i}/start"), json!({}))
                    .await
            })
        })
        .collect();
    let mut ports = Vec::new();
    for s in starts {
        let (status, v) = s.await.unwrap();
        assert_eq!(status, 200, "{v}");
        ports.push(v["game_port"].as_u64().unwrap());
    }
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 4, "every instance has its own game port");
    // The host has 4 ports: automatic placement finds no host with a free port, and a start on
    // the full host by hand is refused, each with a clear reason.
    api.post("/api/v1/instances", json!({"name": "p4"})).await;
    let (s, v) = api.post("/api/v1/instances/p4/assign", json!({})).await;
    assert_eq!(s, 409, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("game ports"),
        "{v}"
    );
    assert_eq!(
        api.post("/api/v1/instances/p4/assign", json!({"host": "h"}))
            .await
            .0,
        200
    );
    let (s, v) = api.post("/api/v1/instances/p4/start", json!({})).await;
    assert_eq!(s, 409, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no free game port"),
        "{v}"
    );
}
