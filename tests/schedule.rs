//! Bulk start / stop / restart (of a host, of the cluster) and restart schedules on a sim
//! cluster: the chat warning ahead, skipped while players are online, kept across a
//! controller restart.

mod common;

use common::cluster::{Api, HostProcess, rcon, wait_until};
use common::saves::create_started;
use common::{ControllerProcess, join_token};
use serde_json::{Value, json};

fn statuses(instances: &Value) -> Vec<(String, String)> {
    let mut v: Vec<_> = instances
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["name"].as_str().unwrap().to_string(),
                i["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

fn pair(a: &str, b: &str) -> (String, String) {
    (a.to_string(), b.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_actions_cover_a_host_or_the_cluster() {
    let root = tempfile::tempdir().unwrap();
    let cdir = root.path().join("c");
    std::fs::create_dir_all(&cdir).unwrap();
    let c = ControllerProcess::start(&cdir);
    let api = Api::new(&c.url(""), &c.first_token);
    let join = join_token(&cdir);
    let _a = HostProcess::start(&root.path().join("a"), &c.url(""), &join, "a", &[]);
    let _b = HostProcess::start(&root.path().join("b"), &c.url(""), &join, "b", &[]);
    create_started(&api, "x", "a", json!({})).await;
    create_started(&api, "y", "a", json!({})).await;
    create_started(&api, "z", "b", json!({})).await;

    let (s, v) = api
        .post(
            "/api/v1/instances/bulk",
            json!({"action": "stop", "host": "a"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["total"].clone(), v["failed"].clone()),
        (json!(2), json!(0)),
        "{v}"
    );
    assert_eq!(
        statuses(&api.get("/api/v1/instances").await),
        vec![
            pair("x", "stopped"),
            pair("y", "stopped"),
            pair("z", "running")
        ]
    );
    let (s, v) = api
        .post("/api/v1/instances/bulk", json!({"action": "start"}))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["total"], 2, "only the stopped ones: {v}");
    let (s, v) = api
        .post("/api/v1/instances/bulk", json!({"action": "restart"}))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["total"].clone(), v["failed"].clone()),
        (json!(3), json!(0)),
        "{v}"
    );
    assert_eq!(
        statuses(&api.get("/api/v1/instances").await),
        vec![
            pair("x", "running"),
            pair("y", "running"),
            pair("z", "running")
        ]
    );

    // Bad input: a host that does not exist, an action that does not.
    let (s, _) = api
        .post(
            "/api/v1/instances/bulk",
            json!({"action": "stop", "host": "nope"}),
        )
        .await;
    assert_eq!(s, 404);
    let (s, v) = api
        .post("/api/v1/instances/bulk", json!({"action": "explode"}))
        .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(
        statuses(&api.get("/api/v1/instances").await),
        vec![
            pair("x", "running"),
            pair("y", "running"),
            pair("z", "running")
        ]
    );
}

async fn schedule(api: &Api, instance: &str) -> Value {
    api.get(&format!("/api/v1/instances/{instance}/schedule"))
        .await["schedule"]
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_restart_warns_waits_for_players_and_survives_a_controller_restart() {
    let root = tempfile::tempdir().unwrap();
    let cdir = root.path().join("c");
    std::fs::create_dir_all(&cdir).unwrap();
    let mut c = ControllerProcess::start(&cdir);
    let port = c.port;
    let api = Api::new(&c.url(""), &c.first_token);
    let host = HostProcess::start(
        &root.path().join("a"),
        &c.url(""),
        &join_token(&cdir),
        "a",
        &[],
    );
    create_started(&api, "x", "a", json!({})).await;

    // Bad schedules are refused with the reason.
    for (body, needle) in [
        (json!({}), "daily_at"),
        (json!({"daily_at": "25:99"}), "HH:MM"),
        (json!({"every_hours": -1}), "every_hours"),
    ] {
        let (s, v) = api
            .call("PUT", "/api/v1/instances/x/schedule", Some(body))
            .await;
        assert_eq!(s, 400, "{v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(needle),
            "{v}"
        );
    }

    // Every 6 s, warned 3 s ahead, not while players are online.
    rcon(&api, "x", "/standin join alice").await;
    let pid = host.factorio_pid("x").unwrap();
    let (s, v) = api
        .call(
            "PUT",
            "/api/v1/instances/x/schedule",
            Some(
                json!({"every_hours": 6.0 / 3600.0, "warn_minutes": 0.05, "skip_if_players": true}),
            ),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    wait_until("the run is skipped while alice plays", 20, || async {
        schedule(&api, "x").await["last_result"]
            .as_str()
            .is_some_and(|r| r.contains("skipped: 1 player online"))
    })
    .await;
    assert_eq!(
        host.factorio_pid("x"),
        Some(pid),
        "not restarted while alice plays"
    );

    // Nobody online: warned in game chat ahead, then restarted.
    rcon(&api, "x", "/standin leave alice").await;
    wait_until("restarted by the schedule", 30, || async {
        schedule(&api, "x").await["last_result"] == "restarted"
    })
    .await;
    assert_ne!(host.factorio_pid("x"), Some(pid), "a new Factorio process");
    assert_eq!(api.get("/api/v1/instances/x").await["status"], "running");
    let audit = api.get("/api/v1/audit?limit=500").await;
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "instance.rcon"
                && e["actor"] == "scheduler"
                && e["detail"]["command"]
                    .as_str()
                    .is_some_and(|t| t.contains("Scheduled restart in 1 minute"))),
        "the warning went to the game"
    );

    // The schedule is in SQLite: a controller killed with -9 still has it.
    let before = schedule(&api, "x").await;
    c.kill9();
    let c = ControllerProcess::start_on(&cdir, port, &[]);
    let api = Api::new(&c.url(""), &api.token);
    let after = schedule(&api, "x").await;
    assert_eq!(after["every_hours"], before["every_hours"]);
    assert_eq!(after["skip_if_players"], true);
    let (s, _) = api
        .call("DELETE", "/api/v1/instances/x/schedule", None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(schedule(&api, "x").await, Value::Null);
    let (s, _) = api
        .call("DELETE", "/api/v1/instances/x/schedule", None)
        .await;
    assert_eq!(s, 404);
}
