//! Saves and backups through the API on a sim cluster: an upload while the game runs survives
//! the stop, delete / rename / copy / "load this save", transfers to an instance on another
//! host (and to a host that is down), restoring a backup while the instance runs.

mod common;

use common::cluster::{Api, HostProcess, rcon};
use common::saves::{create_started, has_entry, host_saves, load_next, with_entry};
use common::{ControllerProcess, join_token};
use serde_json::json;

const MARKER: &[u8] = b"uploaded by the test";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_save_uploaded_while_the_game_runs_survives_the_stop() {
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
    create_started(&api, "alpha", "a", json!({})).await;
    assert_eq!(host_saves(&api, "alpha").await, vec!["world.zip"]);

    // A save of this very game, marked, uploaded under the name the running game writes.
    let (s, zip) = api
        .get_bytes("/api/v1/instances/alpha/saves/world.zip")
        .await;
    assert_eq!(s, 200);
    let upload = with_entry(&zip, "marker.txt", MARKER);
    let (s, v) = api
        .put_bytes("/api/v1/instances/alpha/saves/world.zip", upload)
        .await;
    assert_eq!(s, 201, "{v}");
    let stored = v["name"].as_str().unwrap().to_string();

    let (s, v) = api.post("/api/v1/instances/alpha/stop", json!({})).await;
    assert_eq!(s, 200, "{v}");

    // The upload is still there, as uploaded; the game's own save is there too.
    let (s, got) = api
        .get_bytes(&format!("/api/v1/instances/alpha/saves/{stored}"))
        .await;
    assert_eq!(s, 200);
    assert!(
        has_entry(&got, "marker.txt", MARKER),
        "the upload '{stored}' was overwritten by the game's stop"
    );
    let names = host_saves(&api, "alpha").await;
    assert!(names.contains(&"world.zip".to_string()), "{names:?}");
    assert_ne!(stored, "world.zip");
    // It is what the next start loads.
    assert_eq!(
        load_next(&api, "alpha").await.as_deref(),
        Some(stored.as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saves_are_renamed_copied_deleted_and_chosen_and_move_between_hosts() {
    let root = tempfile::tempdir().unwrap();
    let cdir = root.path().join("c");
    std::fs::create_dir_all(&cdir).unwrap();
    let c = ControllerProcess::start(&cdir);
    let api = Api::new(&c.url(""), &c.first_token);
    let join = join_token(&cdir);
    let _a = HostProcess::start(&root.path().join("a"), &c.url(""), &join, "a", &[]);
    let mut b = HostProcess::start(&root.path().join("b"), &c.url(""), &join, "b", &[]);
    create_started(&api, "alpha", "a", json!({})).await;
    create_started(&api, "beta", "b", json!({})).await;
    let (s, v) = api
        .post(
            "/api/v1/instances/alpha/saves",
            json!({"name": "checkpoint"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");

    // While running, the game's own save cannot be deleted or renamed away.
    let (s, v) = api
        .call("DELETE", "/api/v1/instances/alpha/saves/world.zip", None)
        .await;
    assert_eq!(s, 409, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("stop"),
        "{v}"
    );
    let (s, _) = api
        .post(
            "/api/v1/instances/alpha/saves/world.zip/rename",
            json!({"to": "other.zip"}),
        )
        .await;
    assert_eq!(s, 409);

    // Rename onto an existing name: refused, both saves unchanged.
    let (s, v) = api
        .post(
            "/api/v1/instances/alpha/saves/checkpoint.zip/rename",
            json!({"to": "world.zip"}),
        )
        .await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(v["error"]["code"], "already_exists", "{v}");
    let mut names = host_saves(&api, "alpha").await;
    names.sort();
    assert_eq!(names, vec!["checkpoint.zip", "world.zip"]);
    let (s, v) = api
        .post(
            "/api/v1/instances/alpha/saves/checkpoint.zip/rename",
            json!({"to": "../x.zip"}),
        )
        .await;
    assert_eq!(s, 400, "{v}");

    // Rename, copy, delete.
    let (s, v) = api
        .post(
            "/api/v1/instances/alpha/saves/checkpoint.zip/rename",
            json!({"to": "before boss.zip"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = api
        .post(
            "/api/v1/instances/alpha/saves/before%20boss.zip/copy",
            json!({"to": "spare.zip"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, _) = api
        .post(
            "/api/v1/instances/alpha/saves/spare.zip/copy",
            json!({"to": "world.zip"}),
        )
        .await;
    assert_eq!(s, 409, "copy onto an existing save");
    let (s, v) = api
        .call("DELETE", "/api/v1/instances/alpha/saves/spare.zip", None)
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, _) = api
        .call("DELETE", "/api/v1/instances/alpha/saves/spare.zip", None)
        .await;
    assert_eq!(s, 404);
    let mut names = host_saves(&api, "alpha").await;
    names.sort();
    assert_eq!(names, vec!["before boss.zip", "world.zip"]);

    // "Load this save": the next start loads it, not the newest.
    let (s, v) = api
        .post(
            "/api/v1/instances/alpha/saves/before%20boss.zip/use",
            json!({}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        load_next(&api, "alpha").await.as_deref(),
        Some("before boss.zip")
    );
    let (s, v) = api.post("/api/v1/instances/alpha/restart", json!({})).await;
    assert_eq!(s, 200, "{v}");
    let saves = api.get("/api/v1/instances/alpha/saves").await;
    let loaded: Vec<_> = saves
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["loaded"] == json!(true))
        .map(|s| s["name"].clone())
        .collect();
    assert_eq!(loaded, vec![json!("before boss.zip")], "{saves}");

    // Transfer (copy) to an instance on the other host; a taken name gets a suffix.
    let (s, v) = api
        .post(
            "/api/v1/instances/alpha/saves/world.zip/transfer",
            json!({"to_instance": "beta", "copy": true}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["as"], "world-2.zip", "{v}");
    let names = host_saves(&api, "beta").await;
    assert!(names.contains(&"world-2.zip".to_string()), "{names:?}");
    assert!(
        host_saves(&api, "alpha")
            .await
            .contains(&"world.zip".to_string())
    );
    // Moving the save the running game writes is refused; stopped, it moves.
    let (s, _) = api
        .post(
            "/api/v1/instances/alpha/saves/before%20boss.zip/transfer",
            json!({"to_instance": "beta"}),
        )
        .await;
    assert_eq!(s, 409);
    api.post("/api/v1/instances/alpha/stop", json!({})).await;
    let (s, v) = api
        .post(
            "/api/v1/instances/alpha/saves/before%20boss.zip/transfer",
            json!({"to_instance": "beta", "as_name": "from alpha.zip"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert!(
        !host_saves(&api, "alpha")
            .await
            .contains(&"before boss.zip".to_string())
    );
    assert!(
        host_saves(&api, "beta")
            .await
            .contains(&"from alpha.zip".to_string())
    );

    // To a host that is down: a clear error, nothing changed.
    b.kill9();
    api.wait_for("/api/v1/hosts", |v| {
        v.as_array().is_some_and(|l| {
            l.iter()
                .any(|h| h["name"] == "b" && h["connected"] == false)
        })
    })
    .await;
    let before = host_saves(&api, "alpha").await;
    let (s, v) = api
        .post(
            "/api/v1/instances/alpha/saves/world.zip/transfer",
            json!({"to_instance": "beta"}),
        )
        .await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(v["error"]["code"], "host_disconnected", "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("'b'"),
        "{v}"
    );
    assert_eq!(host_saves(&api, "alpha").await, before);

    // Every change is in the audit log.
    let audit = api.get("/api/v1/audit?limit=200").await;
    for action in [
        "save.rename",
        "save.copy",
        "save.delete",
        "save.use",
        "save.transfer",
    ] {
        assert!(
            audit
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["action"] == action),
            "{action} audited"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restoring_a_backup_while_running_stops_first_and_keeps_the_current_save() {
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
    create_started(&api, "alpha", "a", json!({"backup_retention": 1})).await;

    // A backup of the game at tick A; then the game moves on.
    rcon(&api, "alpha", "/sc storage.mark = 'before'").await;
    let (s, v) = api.post("/api/v1/instances/alpha/backup", json!({})).await;
    assert_eq!(s, 200, "{v}");
    let backups = api.get("/api/v1/instances/alpha/backups").await;
    let file = backups[0]["file"].as_str().unwrap().to_string();
    rcon(&api, "alpha", "/sc storage.mark = 'after'").await;

    // One action: stopped (its save backed up), restored, started again from the backup.
    let (s, v) = api
        .post(
            &format!("/api/v1/instances/alpha/backups/{file}/restore"),
            json!({}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["restarted"], true, "{v}");
    assert_eq!(
        api.get("/api/v1/instances/alpha").await["status"],
        "running"
    );
    let mark = rcon(&api, "alpha", "/sc rcon.print(storage.mark)").await;
    assert_eq!(mark.trim(), "before", "the game runs the restored backup");

    // The save it replaced was kept as a backup (retention 1: it is the one left).
    let backups = api.get("/api/v1/instances/alpha/backups").await;
    let kept = backups[0]["file"].as_str().unwrap().to_string();
    assert_ne!(kept, file);
    let (s, zip) = api
        .get_bytes(&format!("/api/v1/instances/alpha/backups/{kept}"))
        .await;
    assert_eq!(s, 200);
    assert!(zip.starts_with(b"PK"));

    // A backup that does not exist: 404, the game keeps running.
    let (s, v) = api
        .post(
            "/api/v1/instances/alpha/backups/1-nope.zip/restore",
            json!({}),
        )
        .await;
    assert_eq!(s, 404, "{v}");
    assert_eq!(
        api.get("/api/v1/instances/alpha").await["status"],
        "running"
    );
}

#[tokio::test]
async fn each_save_backup_bulk_and_schedule_action_needs_its_permission() {
    let dir = tempfile::tempdir().unwrap();
    let c = ControllerProcess::start(dir.path());
    let admin = Api::new(&c.url(""), &c.first_token);
    admin
        .post("/api/v1/instances", json!({"name": "alpha"}))
        .await;
    // A role that may list saves and nothing else of this area.
    let (s, role) = admin
        .post(
            "/api/v1/roles",
            json!({"name": "viewer", "permissions": ["core.instance.save.list"]}),
        )
        .await;
    assert_eq!(s, 201, "{role}");
    let (s, v) = admin
        .post(
            "/api/v1/users",
            json!({"name": "viewer1", "roles": [role["id"]]}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (_, t) = admin
        .post("/api/v1/tokens", json!({"user": "viewer1"}))
        .await;
    let viewer = Api::new(&c.url(""), t["token"].as_str().unwrap());
    for (method, path, body, permission) in [
        (
            "DELETE",
            "/api/v1/instances/alpha/saves/world.zip",
            None,
            "core.instance.save.delete",
        ),
        (
            "POST",
            "/api/v1/instances/alpha/saves/world.zip/rename",
            Some(json!({"to": "b.zip"})),
            "core.instance.save.rename",
        ),
        (
            "POST",
            "/api/v1/instances/alpha/saves/world.zip/copy",
            Some(json!({"to": "b.zip"})),
            "core.instance.save.copy",
        ),
        (
            "POST",
            "/api/v1/instances/alpha/saves/world.zip/use",
            Some(json!({})),
            "core.instance.save.use",
        ),
        (
            "POST",
            "/api/v1/instances/alpha/saves/world.zip/transfer",
            Some(json!({"to_instance": "alpha", "copy": true})),
            "core.instance.save.transfer",
        ),
        (
            "POST",
            "/api/v1/instances/alpha/backups/1-world.zip/restore",
            Some(json!({})),
            "core.instance.backup.restore",
        ),
        (
            "POST",
            "/api/v1/instances/bulk",
            Some(json!({"action": "stop"})),
            "core.instance.stop",
        ),
        (
            "GET",
            "/api/v1/instances/alpha/schedule",
            None,
            "core.instance.schedule.get",
        ),
        (
            "PUT",
            "/api/v1/instances/alpha/schedule",
            Some(json!({"every_hours": 1})),
            "core.instance.schedule.update",
        ),
    ] {
        let (s, v) = viewer.call(method, path, body).await;
        assert_eq!(s, 403, "{method} {path}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains(permission),
            "{method} {path} names {permission}: {v}"
        );
    }
    let listed = admin.get("/api/v1/permissions").await;
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    for gone in [
        "core.instance.export_data",
        "core.instance.extract_players",
        "core.instance.load_scenario",
    ] {
        assert!(!names.contains(&gone), "{gone} names no feature");
    }
}
