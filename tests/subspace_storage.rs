//! subspace_storage end to end: the stand-in Subspace Storage mod running in factorio-sim games
//! on two hosts, the controller's SQLite pool, and kill -9 of every part. The games are paused
//! (no players), so each test drives the mod's 62-tick cycle itself with `/standin tick`.

mod common;

use common::cluster::{rcon, wait_until};
use common::subspace::{self, Cluster, Counts, cycles, direct_rcon, extracted, game, spool};
use std::time::Duration;

fn iron(n: i64) -> Counts {
    Counts::from([("iron-plate:normal".to_string(), n)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plates_move_from_a_to_b_and_exports_made_while_the_controller_is_down_arrive() {
    let mut c = Cluster::start(&["h1", "h2"]).await;
    c.instance("a", "h1").await;
    c.instance("b", "h2").await;
    // The hosts' keep-alive reaches the games within a second.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // 100 plates into an injector in A: exported at the cycle's tick 60, into the pool.
    assert_eq!(
        rcon(&c.api, "a", "/standin subspace put iron-plate 100").await,
        "ok\n"
    );
    cycles(&c.api, "a", 1).await;
    wait_until("the pool has A's 100 plates", 30, || async {
        c.pool().await == iron(100)
    })
    .await;
    assert_eq!(
        game(&c.api, "a").await,
        Counts::new(),
        "A exported them all"
    );

    // An extractor in B asks for 100: the orders at tick 61 get a grant, the host imports it,
    // and the next cycle fills the extractor.
    rcon(&c.api, "b", "/standin subspace request iron-plate 100").await;
    cycles(&c.api, "b", 1).await;
    wait_until("the grant is confirmed", 30, || async {
        c.pool_and_in_flight().await == (Counts::new(), Counts::new())
    })
    .await;
    cycles(&c.api, "b", 1).await;
    assert_eq!(extracted(&c.api, "b", "iron-plate:normal").await, 100);
    assert_eq!(game(&c.api, "b").await, iron(100));
    assert_eq!(c.pool().await, Counts::new());
    let metrics = c.api.get("/metrics").await;
    let metrics = metrics.as_str().unwrap_or_default();
    assert!(
        metrics.contains("clusterio_subspace_storage_export_total{instance_id=")
            && metrics.contains("resource=\"iron-plate\",quality=\"normal\"} 100"),
        "{metrics}"
    );
    assert!(
        metrics.contains("clusterio_subspace_storage_import_total{"),
        "{metrics}"
    );
    assert!(metrics.contains("# TYPE clusterio_subspace_storage_controller_inventory gauge"));

    // The controller goes away; A exports 50 copper plates meanwhile (commands straight to its
    // RCON). The host keeps them in its spool on disk, and sends them when the controller is back.
    c.controller.kill9();
    let h1 = &c.hosts[0];
    assert_eq!(
        direct_rcon(h1, "a", "/standin subspace put copper-plate 50"),
        "ok\n"
    );
    direct_rcon(h1, "a", "/standin tick 62");
    let copper = Counts::from([("copper-plate:normal".to_string(), 50)]);
    wait_until("the export is spooled on h1", 30, || async {
        spool(&c.host_dir("h1")) == copper
    })
    .await;
    c.restart_controller();
    wait_until("the spooled export arrives", 60, || async {
        let mut want = copper.clone();
        want.insert("iron-plate:normal".into(), 0);
        want.retain(|_, v| *v > 0);
        spool(&c.host_dir("h1")).is_empty() && c.pool().await == want
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_sent_again_after_the_host_died_mid_send_counts_once() {
    let mut c = Cluster::start(&["h1"]).await;
    c.instance("a", "h1").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Spooled while the controller is away, so the test can keep a copy of the entry.
    c.controller.kill9();
    direct_rcon(&c.hosts[0], "a", "/standin subspace put iron-plate 70");
    direct_rcon(&c.hosts[0], "a", "/standin tick 62");
    let dir = c.host_dir("h1").join("plugins/subspace_storage/spool");
    wait_until("the export is spooled", 30, || async {
        spool(&c.host_dir("h1")) == iron(70)
    })
    .await;
    let entry = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    let copy = std::fs::read(&entry).unwrap();
    c.restart_controller();
    wait_until("the pool has the 70", 60, || async {
        c.pool().await == iron(70)
    })
    .await;
    assert!(spool(&c.host_dir("h1")).is_empty());

    // The host dies after the controller committed but before it deleted the entry: the entry is
    // still on disk when it starts again, and is sent again with the same key.
    c.hosts[0].kill9();
    std::fs::write(&entry, &copy).unwrap();
    c.hosts[0] = c.spawn_host("h1");
    c.start_instance("a").await;
    wait_until("the replayed entry is sent", 60, || async {
        spool(&c.host_dir("h1")).is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(c.pool().await, iron(70), "the replay counted once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_game_killed_between_grant_and_import_gets_nothing_and_the_pool_gets_the_items_back() {
    let c = Cluster::start(&["h1", "h2"]).await;
    c.instance("a", "h1").await;
    c.instance("b", "h2").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    rcon(&c.api, "a", "/standin subspace put iron-plate 100").await;
    cycles(&c.api, "a", 1).await;
    wait_until("the pool has 100", 30, || async {
        c.pool().await == iron(100)
    })
    .await;

    // B orders, and its game thread hangs right after: the grant is made, the Import waits.
    rcon(&c.api, "b", "/standin subspace request iron-plate 100").await;
    rcon(&c.api, "b", "/standin subspace orders-then-hang 5000").await;
    wait_until("the grant is in flight", 30, || async {
        c.pool_and_in_flight().await == (Counts::new(), iron(100))
    })
    .await;
    let pid = c.hosts[1].factorio_pid("b").expect("b's pid");
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();

    // Not delivered and not lost: when B runs again (from its last save, which never had the
    // items) the host finds no trace of the Import in the game and returns the grant.
    wait_until("b is down", 30, || async {
        let v = c.api.get("/api/v1/instances/b").await;
        v["status"] != "running"
    })
    .await;
    assert_eq!(c.pool_and_in_flight().await, (Counts::new(), iron(100)));
    c.start_instance("b").await;
    wait_until("the grant is refunded", 30, || async {
        c.pool_and_in_flight().await == (iron(100), Counts::new())
    })
    .await;
    assert_eq!(game(&c.api, "b").await, Counts::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_corrections_are_audited_and_refused_when_bad() {
    let c = Cluster::start(&[]).await;
    let (s, v) = c
        .api
        .post(
            "/api/v1/storage",
            serde_json::json!({ "name": "iron-plate", "count": 42 }),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(c.pool().await, iron(42));
    let (s, v) = c
        .api
        .post(
            "/api/v1/storage",
            serde_json::json!({ "name": "iron-plate", "count": -1 }),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    let (s, _) = c
        .api
        .post(
            "/api/v1/storage",
            serde_json::json!({ "name": "", "count": 1 }),
        )
        .await;
    assert_eq!(s, 400);
    assert_eq!(c.pool().await, iron(42));
    let audit = c.api.get("/api/v1/audit").await;
    assert!(
        audit.to_string().contains("subspace_storage.set"),
        "{audit}"
    );
    let _ = subspace::MOD_ZIP;
}
