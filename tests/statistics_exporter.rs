//! statistics_exporter end to end: the plugin's Lua in factorio-sim games on two hosts, samples
//! on the controller's `/metrics`, series gone when a game stops, a frozen game's RCON.

mod common;

use common::cluster::{Api, HostProcess, rcon};
use common::{ControllerProcess, join_token};
use serde_json::json;
use std::time::{Duration, Instant};

async fn metrics(api: &Api) -> String {
    let (s, m) = api.call("GET", "/metrics", None).await;
    assert_eq!(s, 200);
    m.as_str().unwrap_or_default().to_string()
}

async fn wait_metrics(api: &Api, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = metrics(api).await;
        if pred(&m) {
            return m;
        }
        assert!(Instant::now() < deadline, "timed out: {what}\n{m}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn create_and_start(api: &Api, name: &str, host: &str) -> i64 {
    let config = json!({ "statistics_exporter": { "interval_s": 0.2, "command_timeout_s": 0.5 } });
    let (s, v) = api
        .post(
            "/api/v1/instances",
            json!({ "name": name, "config": config }),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let id = v["id"].as_i64().unwrap();
    let (s, v) = api
        .post(
            &format!("/api/v1/instances/{name}/assign"),
            json!({ "host": host }),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = api
        .post(&format!("/api/v1/instances/{name}/start"), json!({}))
        .await;
    assert_eq!(s, 200, "start {name}: {v}");
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statistics_of_running_games_are_on_metrics_and_go_when_they_stop() {
    let root = tempfile::tempdir().unwrap();
    let cdir = root.path().join("c");
    std::fs::create_dir_all(&cdir).unwrap();
    let c = ControllerProcess::start_with(&cdir, &[("PLUGINS", "statistics_exporter")]);
    let api = Api::new(&c.url(""), &c.first_token);
    let join = join_token(&cdir);
    let _h1 = HostProcess::start(&root.path().join("h1"), &c.url(""), &join, "h1", &[]);
    let _h2 = HostProcess::start(&root.path().join("h2"), &c.url(""), &join, "h2", &[]);
    let a = create_and_start(&api, "a", "h1").await;
    let b = create_and_start(&api, "b", "h2").await;

    rcon(
        &api,
        "a",
        "/sc local s = game.forces.player.get_item_production_statistics(1) s.input_counts['iron-plate'] = 1200 s.output_counts['iron-ore'] = 1300",
    )
    .await;
    rcon(
        &api,
        "b",
        "/sc game.forces.enemy.get_kill_count_statistics(1).input_counts['small-biter'] = 7 game.get_pollution_statistics(1).input_counts['boiler'] = 42.5",
    )
    .await;
    let iron = format!(
        "clusterio_statistics_exporter_instance_force_flow_statistics{{instance_id=\"{a}\",direction=\"input\",force=\"player\",name=\"iron-plate\",statistic=\"item_production_statistics\",surface=\"nauvis\"}} 1200"
    );
    let kills = format!(
        "clusterio_statistics_exporter_instance_force_flow_statistics{{instance_id=\"{b}\",direction=\"input\",force=\"enemy\",name=\"small-biter\",statistic=\"kill_count_statistics\",surface=\"nauvis\"}} 7"
    );
    let pollution = format!(
        "clusterio_statistics_exporter_instance_game_flow_statistics{{instance_id=\"{b}\",direction=\"input\",name=\"boiler\",statistic=\"pollution_statistics\",surface=\"nauvis\"}} 42.5"
    );
    let m = wait_metrics(&api, "both games' statistics", |m| {
        m.contains(&iron) && m.contains(&kills) && m.contains(&pollution)
    })
    .await;
    // The reverse direction is filled in for production statistics.
    assert!(
        m.contains(&format!(
            "clusterio_statistics_exporter_instance_force_flow_statistics{{instance_id=\"{a}\",direction=\"output\",force=\"player\",name=\"iron-plate\",statistic=\"item_production_statistics\",surface=\"nauvis\"}} 0"
        )),
        "{m}"
    );
    for id in [a, b] {
        assert!(
            m.contains(&format!(
                "clusterio_statistics_exporter_instance_player_count{{instance_id=\"{id}\"}} 0"
            )),
            "{m}"
        );
        assert!(
            m.contains(&format!(
                "clusterio_statistics_exporter_instance_game_ticks_total{{instance_id=\"{id}\"}}"
            )),
            "{m}"
        );
    }

    // A game whose RCON is frozen: the scrape still answers, with the last values.
    rcon(&api, "b", "/standin hang 3000").await;
    rcon(
        &api,
        "a",
        "/sc game.forces.player.get_item_production_statistics(1).input_counts['iron-plate'] = 1500",
    )
    .await;
    let m = wait_metrics(&api, "a's new value while b is frozen", |m| {
        m.contains(&iron.replace("} 1200", "} 1500"))
    })
    .await;
    assert!(
        m.contains(&kills),
        "b's series stay while it is frozen: {m}"
    );

    // A stopped game's series disappear; the other's stay.
    let (s, v) = api.post("/api/v1/instances/a/stop", json!({})).await;
    assert_eq!(s, 200, "{v}");
    // (The controller's own per-instance series, such as its status, stay: only the plugin's go.)
    let m = wait_metrics(&api, "a's series gone", |m| {
        !m.lines()
            .filter(|l| l.contains("statistics_exporter_"))
            .any(|l| l.contains(&format!("instance_id=\"{a}\"")))
    })
    .await;
    assert!(m.contains(&kills), "{m}");
}
