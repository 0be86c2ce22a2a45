//! research_sync end to end: factorio-sim games on two hosts running the plugin's real Lua, the
//! controller's SQLite state, and a controller killed with -9.

mod common;

use common::cluster::{Api, HostProcess, create_and_start, wait_until};
use common::{ControllerProcess, join_token};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

async fn rcon(api: &Api, instance: &str, command: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (s, v) = api
            .post(
                &format!("/api/v1/instances/{instance}/rcon"),
                json!({ "command": command }),
            )
            .await;
        if s == 200 {
            return v["output"].as_str().unwrap_or_default().to_string();
        }
        // A host still reconnecting after a controller restart.
        assert!(Instant::now() < deadline, "rcon {command}: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One technology as a game has it (`research_sync.dump_technologies()`).
async fn game_tech(api: &Api, instance: &str, tech: &str) -> Value {
    let out = rcon(api, instance, "/sc research_sync.dump_technologies()").await;
    let all: Value = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("dump_technologies gave {out:?}: {e}"));
    all.as_array()
        .and_then(|a| a.iter().find(|t| t["name"] == tech).cloned())
        .unwrap_or_else(|| panic!("{instance} has no {tech}"))
}

/// One technology as the controller has it (`GET /api/v1/research`).
async fn cluster_tech(api: &Api, tech: &str) -> Value {
    let (s, v) = api.call("GET", "/api/v1/research", None).await;
    if s != 200 {
        return Value::Null;
    }
    v.as_array()
        .and_then(|a| a.iter().find(|t| t["name"] == tech).cloned())
        .unwrap_or(Value::Null)
}

fn near(v: &Value, x: f64) -> bool {
    v.as_f64().is_some_and(|p| (p - x).abs() < 1e-6)
}

async fn printed(api: &Api, instance: &str) -> String {
    rcon(api, instance, "/standin printed").await
}

async fn plugin_messages_in(api: &Api) -> u64 {
    let (_, m) = api.call("GET", "/metrics", None).await;
    m.as_str()
        .unwrap_or_default()
        .lines()
        .find(|l| {
            l.starts_with("clustorio_plugin_messages_total")
                && l.contains("direction=\"in\"")
                && l.contains("plugin=\"research_sync\"")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn research_adds_up_finishes_everywhere_catches_up_and_survives_kill_9() {
    let root = tempfile::tempdir().unwrap();
    let cdir = root.path().join("c");
    std::fs::create_dir_all(&cdir).unwrap();
    let env = [("PLUGINS", "research_sync")];
    let mut c = ControllerProcess::start_with(&cdir, &env);
    let port = c.port;
    let api = Api::new(&c.url(""), &c.first_token);
    let join = join_token(&cdir);
    let _h1 = HostProcess::start(&root.path().join("h1"), &c.url(""), &join, "h1", &[]);
    let _h2 = HostProcess::start(&root.path().join("h2"), &c.url(""), &join, "h2", &[]);
    create_and_start(&api, "a", "h1", json!({})).await;
    create_and_start(&api, "b", "h2", json!({})).await;
    wait_until("both games synced at start", 30, || async {
        !cluster_tech(&api, "automation").await.is_null()
    })
    .await;

    // Labs in A and in B both work on automation: the cluster has the sum, and so do both games.
    rcon(&api, "a", "/standin research automation 1 +0.3").await;
    rcon(&api, "b", "/standin research automation 1 +0.25").await;
    wait_until("the controller adds A's and B's progress", 30, || async {
        near(&cluster_tech(&api, "automation").await["progress"], 0.55)
    })
    .await;
    for game in ["a", "b"] {
        wait_until(
            &format!("{game} shows the cluster's progress"),
            30,
            || async { near(&game_tech(&api, game, "automation").await["progress"], 0.55) },
        )
        .await;
    }

    // A technology finished in B is finished in A, with the message and the sound, and A does
    // not send it back.
    let before = plugin_messages_in(&api).await;
    rcon(&api, "b", "/standin research optics").await;
    wait_until("A has optics", 30, || async {
        game_tech(&api, "a", "optics").await["researched"] == json!(true)
    })
    .await;
    let shown = printed(&api, "a").await;
    assert!(shown.contains("Researched [technology=optics]"), "{shown}");
    assert!(
        shown.contains("sound: utility/research_completed"),
        "{shown}"
    );
    // One more report from A; had A echoed the finish, it would have arrived before this one.
    rcon(&api, "a", "/standin research logistics 1 +0.1").await;
    wait_until("the controller has A's logistics", 30, || async {
        near(&cluster_tech(&api, "logistics").await["progress"], 0.1)
    })
    .await;
    assert_eq!(
        plugin_messages_in(&api).await,
        before + 2,
        "B's finish and A's contribution, and nothing else"
    );

    // Infinite research: a level finished in A moves B to the next level.
    rcon(&api, "a", "/standin research mining-productivity-3 3").await;
    wait_until("B is on level 4", 30, || async {
        game_tech(&api, "b", "mining-productivity-3").await["level"] == json!(4)
    })
    .await;
    assert!(
        printed(&api, "b")
            .await
            .contains("Researched [technology=mining-productivity-3] level 3")
    );

    // A third game started later catches up at its start.
    create_and_start(&api, "late", "h1", json!({})).await;
    wait_until("the late game catches up", 30, || async {
        let optics = game_tech(&api, "late", "optics").await;
        let automation = game_tech(&api, "late", "automation").await;
        let mining = game_tech(&api, "late", "mining-productivity-3").await;
        optics["researched"] == json!(true)
            && near(&automation["progress"], 0.55)
            && mining["level"] == json!(4)
    })
    .await;
    assert!(
        printed(&api, "late")
            .await
            .contains("Research synchronised with the cluster")
    );

    // Acknowledged progress survives kill -9.
    rcon(&api, "a", "/standin research logistics 1 +0.2").await;
    wait_until("the controller has 0.3 logistics", 30, || async {
        near(&cluster_tech(&api, "logistics").await["progress"], 0.3)
    })
    .await;
    // A report the controller may or may not have acknowledged when it dies: the host resends
    // it to the next controller, which counts it once.
    rcon(&api, "b", "/standin research logistics 1 +0.15").await;
    c.kill9();
    let c2 = ControllerProcess::start_on(&cdir, port, &env);
    assert_eq!(c2.port, port);
    wait_until("the restarted controller has every report", 60, || async {
        near(&cluster_tech(&api, "logistics").await["progress"], 0.45)
            && near(&cluster_tech(&api, "automation").await["progress"], 0.55)
            && cluster_tech(&api, "optics").await["researched"] == json!(true)
    })
    .await;

    // A game stopped right after researching, before any other report: its progress is in its
    // save and counted at its next start, once.
    for action in ["stop", "start"] {
        wait_until(&format!("late {action}s"), 30, || async {
            let (s, v) = api
                .post(&format!("/api/v1/instances/late/{action}"), json!({}))
                .await;
            // The host may still be reconnecting to the restarted controller.
            assert!(s == 200 || v["error"]["code"] == "host_disconnected", "{v}");
            s == 200
        })
        .await;
    }
    wait_until("the restart adds nothing twice", 30, || async {
        game_tech(&api, "late", "logistics").await["progress"]
            .as_f64()
            .is_some_and(|p| p > 0.0)
    })
    .await;
    assert!(near(
        &cluster_tech(&api, "logistics").await["progress"],
        0.45
    ));

    // ctl shows the same table.
    let out = std::process::Command::new(common::bin("clustorio"))
        .args([
            "ctl",
            "--url",
            &c2.url(""),
            "--token",
            &api.token,
            "research",
            "list",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let optics = text.lines().find(|l| l.starts_with("optics")).unwrap_or("");
    assert!(optics.contains("researched"), "{text}");
    let logistics = text
        .lines()
        .find(|l| l.starts_with("logistics "))
        .unwrap_or("");
    assert!(logistics.contains("45.0%"), "{text}");
}
