//! Settings declared once: every writer is validated by the schema, PATCH merges, secrets stay
//! hidden from everyone without the reveal permission, config stays hidden from players, and an
//! instance stored before the schema keeps its values.

mod common;

use common::cluster::{Api, HostProcess};
use common::link::LinkClient;
use common::{ControllerProcess, join_token};
use serde_json::{Value, json};
use std::time::Duration;

const PASSWORD: &str = "hunter2-game-pw";
const TOKEN: &str = "f00dfacef00dfacef00dface";

/// A user with exactly these permissions (a role of their own); returns their API client.
async fn user_with(admin: &Api, name: &str, permissions: &[&str]) -> Api {
    let (s, role) = admin
        .post(
            "/api/v1/roles",
            json!({ "name": format!("role-{name}"), "permissions": permissions }),
        )
        .await;
    assert_eq!(s, 201, "{role}");
    let (s, u) = admin
        .post(
            "/api/v1/users",
            json!({ "name": name, "roles": [role["id"]] }),
        )
        .await;
    assert_eq!(s, 201, "{u}");
    let (s, t) = admin.post("/api/v1/tokens", json!({ "user": name })).await;
    assert_eq!(s, 201, "{t}");
    Api::new(&admin.base, t["token"].as_str().unwrap())
}

/// A user with the default Player role.
async fn player(admin: &Api, name: &str) -> Api {
    let (s, u) = admin.post("/api/v1/users", json!({ "name": name })).await;
    assert_eq!(s, 201, "{u}");
    let (s, t) = admin.post("/api/v1/tokens", json!({ "user": name })).await;
    assert_eq!(s, 201, "{t}");
    Api::new(&admin.base, t["token"].as_str().unwrap())
}

async fn create_secret_instance(admin: &Api, name: &str) -> Value {
    let (s, v) = admin
        .post(
            "/api/v1/instances",
            json!({ "name": name, "config": { "server_settings": {
                "name": "Nauvis One", "game_password": PASSWORD, "token": TOKEN, "username": "alice"
            }}}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    v
}

fn patch(admin: &Api, instance: &str, config: Value) -> impl Future<Output = (u16, Value)> {
    let admin = admin.clone();
    let path = format!("/api/v1/instances/{instance}");
    async move {
        admin
            .call("PATCH", &path, Some(json!({ "config": config })))
            .await
    }
}

#[tokio::test]
async fn each_bad_value_is_refused_naming_the_field_and_nothing_changes() {
    let dir = tempfile::tempdir().unwrap();
    let c = ControllerProcess::start(dir.path());
    let admin = Api::new(&c.url(""), &c.first_token);
    create_secret_instance(&admin, "nauvis").await;
    let before = admin.get("/api/v1/instances/nauvis").await;
    let bad = [
        (
            json!({"game_port": "abc"}),
            "game_port",
            "must be a port number from 1 to 65535",
        ),
        (
            json!({"game_port": 99999}),
            "game_port",
            "must be a port number from 1 to 65535",
        ),
        (
            json!({"mods": "x"}),
            "mods",
            "must be a list of mod zip names",
        ),
        (
            json!({"mods": ["x"]}),
            "mods",
            "must be a list of mod zip names",
        ),
        (
            json!({"backup_retention": 0}),
            "backup_retention",
            "must be an integer from 1 to 1000",
        ),
        (
            json!({"server_settings": {"max_players": "lots"}}),
            "server_settings.max_players",
            "server_settings.max_players must be an integer from 0 to 65535",
        ),
        (
            json!({"server_settings": 5}),
            "server_settings",
            "must be an object of settings",
        ),
        (json!({"no_such_key": 1}), "no_such_key", "is not a setting"),
        (
            json!({"server_settings": {"visibility": {"public": "yes"}}}),
            "server_settings.visibility.public",
            "must be true or false",
        ),
        (
            json!({"server_settings": {"allow_commands": "sometimes"}}),
            "server_settings.allow_commands",
            "must be one of \"true\", \"false\", \"admins-only\"",
        ),
    ];
    for (config, field, rule) in &bad {
        let (s, e) = patch(&admin, "nauvis", config.clone()).await;
        assert_eq!(s, 400, "{config}: {e}");
        assert_eq!(e["error"]["field"], *field, "{config}: {e}");
        assert_eq!(e["error"]["code"], "invalid_config");
        let message = e["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with(field) && message.contains(rule),
            "{config}: {message}"
        );
    }
    // The link is a writer too, and refuses the same way.
    let mut link = LinkClient::connect(&c.ws_url(), "control", &c.first_token, None, None).await;
    let id = link
        .request(
            "instance_update_config",
            json!({"instance": "nauvis", "config": {"server_settings": {"max_players": "lots"}}}),
        )
        .await;
    let r = link.response(id).await;
    assert_eq!(
        r["error"]["message"], "server_settings.max_players must be an integer from 0 to 65535",
        "{r}"
    );
    let after = admin.get("/api/v1/instances/nauvis").await;
    assert_eq!(before, after, "a refused change stores nothing");
    // Nothing refused reached the audit log either.
    let audit = admin.get("/api/v1/audit?limit=100").await;
    assert!(
        !audit.to_string().contains("lots"),
        "a refused change was audited: {audit}"
    );
}

#[tokio::test]
async fn a_nested_patch_keeps_its_siblings_and_null_restores_the_default() {
    let dir = tempfile::tempdir().unwrap();
    let c = ControllerProcess::start(dir.path());
    let admin = Api::new(&c.url(""), &c.first_token);
    create_secret_instance(&admin, "nauvis").await;
    let (s, v) = patch(
        &admin,
        "nauvis",
        json!({"server_settings": {"max_players": 16}}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["config"]["server_settings"],
        json!({"name": "Nauvis One", "username": "alice", "max_players": 16}),
        "siblings kept (secrets are not shown)"
    );
    assert_eq!(v["secrets"]["server_settings.game_password"], "set");
    assert_eq!(v["secrets"]["server_settings.token"], "set");
    let (s, r) = admin
        .post(
            "/api/v1/instances/nauvis/reveal",
            json!({"field": "server_settings.game_password"}),
        )
        .await;
    assert_eq!((s, r["value"].as_str()), (200, Some(PASSWORD)), "{r}");

    // null: back to the default, which the schema says.
    let (s, v) = patch(
        &admin,
        "nauvis",
        json!({"server_settings": {"max_players": null}}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert!(
        v["config"]["server_settings"].get("max_players").is_none(),
        "{v}"
    );
    let schema = admin.get("/api/v1/config/schema").await;
    let max_players = schema["instance"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "server_settings.max_players")
        .unwrap();
    assert_eq!(max_players["default"], 0);
    assert_eq!(v["config"]["server_settings"]["name"], "Nauvis One");
    // A whole group to null: everything in it goes back to its default.
    let (s, v) = patch(
        &admin,
        "nauvis",
        json!({"server_settings": null, "auto_start": true}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["config"], json!({"auto_start": true}));
    assert_eq!(v["secrets"]["server_settings.game_password"], "not set");
}

#[tokio::test]
async fn create_with_a_bad_config_is_refused_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let c = ControllerProcess::start(dir.path());
    let admin = Api::new(&c.url(""), &c.first_token);
    for config in [
        json!({"server_settings": {"max_players": "lots"}}),
        json!({"game_port": 99999}),
        json!({"max_players": 10}),
        json!([1]),
    ] {
        let (s, e) = admin
            .post(
                "/api/v1/instances",
                json!({"name": "bad", "config": config}),
            )
            .await;
        assert_eq!(s, 400, "{config}: {e}");
        let (s, _) = admin.call("GET", "/api/v1/instances/bad", None).await;
        assert_eq!(s, 404, "{config} created an instance");
    }
    assert_eq!(admin.get("/api/v1/instances").await, json!([]));
    // A good one, with a null (nothing) and a nested value.
    let (s, v) = admin
        .post(
            "/api/v1/instances",
            json!({"name": "good", "config": {"game_port": null, "server_settings": {"max_players": 4}}}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["config"], json!({"server_settings": {"max_players": 4}}));
}

/// Reads link frames until an `instance_updated` event for `name`.
async fn next_instance_event(link: &mut LinkClient, name: &str) -> Value {
    loop {
        let f = link.next().await.expect("an instance_updated event");
        if f["type"] == "event" && f["name"] == "instance_updated" && f["data"]["name"] == name {
            return f;
        }
    }
}

#[tokio::test]
async fn a_player_sees_no_config_and_no_secret_anywhere() {
    let dir = tempfile::tempdir().unwrap();
    let c = ControllerProcess::start(dir.path());
    let admin = Api::new(&c.url(""), &c.first_token);
    create_secret_instance(&admin, "nauvis").await;
    let player = player(&admin, "pat").await;
    let shown = |v: &Value| {
        let text = v.to_string();
        assert!(
            !text.contains(PASSWORD) && !text.contains(TOKEN),
            "a secret leaked: {text}"
        );
    };

    // REST list and get: name, status, host, port and players; no config.
    let list = player.get("/api/v1/instances").await;
    let one = &list[0];
    assert_eq!(one["name"], "nauvis");
    for key in ["status", "host", "game_port", "players_online"] {
        assert!(one.get(key).is_some(), "{key} missing: {one}");
    }
    for key in ["config", "secrets", "pending_restart"] {
        assert!(one.get(key).is_none(), "{key} shown to a player: {one}");
    }
    shown(&list);
    let got = player.get("/api/v1/instances/nauvis").await;
    assert!(got.get("config").is_none(), "{got}");
    shown(&got);
    let (s, _) = player
        .post(
            "/api/v1/instances/nauvis/reveal",
            json!({"field": "server_settings.game_password"}),
        )
        .await;
    assert_eq!(s, 403);

    // The link: instance_list, instance_get and the instance events.
    let mut link = LinkClient::connect(&c.ws_url(), "control", &player.token, None, None).await;
    let id = link.request("instance_list", Value::Null).await;
    let r = link.response(id).await;
    assert_eq!(r["ok"][0]["name"], "nauvis", "{r}");
    assert!(r["ok"][0].get("config").is_none(), "{r}");
    shown(&r);
    let id = link
        .request("instance_get", json!({"instance": "nauvis"}))
        .await;
    let r = link.response(id).await;
    assert!(r["ok"].get("config").is_none(), "{r}");
    let mut admin_link =
        LinkClient::connect(&c.ws_url(), "control", &c.first_token, None, None).await;
    let (s, _) = patch(
        &admin,
        "nauvis",
        json!({"server_settings": {"max_players": 3}}),
    )
    .await;
    assert_eq!(s, 200);
    let ev = next_instance_event(&mut link, "nauvis").await;
    assert!(ev["data"].get("config").is_none(), "{ev}");
    shown(&ev);
    // An admin's event carries the config, still without the secrets' values.
    let ev = next_instance_event(&mut admin_link, "nauvis").await;
    assert_eq!(
        ev["data"]["config"]["server_settings"]["max_players"], 3,
        "{ev}"
    );
    assert_eq!(
        ev["data"]["secrets"]["server_settings.game_password"],
        "set"
    );
    shown(&ev);
}

#[tokio::test]
async fn a_config_reader_sees_secrets_only_as_set_and_a_reveal_is_audited() {
    let dir = tempfile::tempdir().unwrap();
    let c = ControllerProcess::start(dir.path());
    let admin = Api::new(&c.url(""), &c.first_token);
    create_secret_instance(&admin, "nauvis").await;
    let reader = user_with(
        &admin,
        "rita",
        &[
            "core.instance.list",
            "core.instance.get",
            "core.instance.get_config",
        ],
    )
    .await;
    let v = reader.get("/api/v1/instances/nauvis").await;
    assert_eq!(v["config"]["server_settings"]["name"], "Nauvis One");
    assert_eq!(v["secrets"]["server_settings.game_password"], "set");
    assert_eq!(v["secrets"]["server_settings.password"], "not set");
    assert!(
        v["config"]["server_settings"]
            .get("game_password")
            .is_none(),
        "{v}"
    );
    let list = reader.get("/api/v1/instances").await;
    assert!(!list.to_string().contains(PASSWORD), "{list}");
    let reveal = json!({"field": "server_settings.game_password"});
    let (s, e) = reader
        .post("/api/v1/instances/nauvis/reveal", reveal.clone())
        .await;
    assert_eq!(s, 403, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("core.instance.reveal_secret"),
        "{e}"
    );

    let revealer = user_with(
        &admin,
        "vic",
        &["core.instance.get_config", "core.instance.reveal_secret"],
    )
    .await;
    let (s, r) = revealer
        .post("/api/v1/instances/nauvis/reveal", reveal)
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["value"], PASSWORD);
    // Not a secret: nothing to reveal (it is in the plain view).
    let (s, _) = revealer
        .post(
            "/api/v1/instances/nauvis/reveal",
            json!({"field": "server_settings.name"}),
        )
        .await;
    assert_eq!(s, 400);

    // Changing a secret is audited as "changed"; the reveal is a row naming the field.
    let (s, _) = patch(
        &admin,
        "nauvis",
        json!({"server_settings": {"game_password": "new-secret-pw"}}),
    )
    .await;
    assert_eq!(s, 200);
    let audit = admin.get("/api/v1/audit?limit=50").await;
    let rows = audit.as_array().unwrap();
    let reveal_row = rows
        .iter()
        .find(|r| r["action"] == "instance.reveal_secret")
        .expect("a reveal row");
    assert_eq!(reveal_row["actor"], "user:vic");
    assert_eq!(reveal_row["target"], "nauvis");
    assert_eq!(
        reveal_row["detail"]["field"],
        "server_settings.game_password"
    );
    let change = rows
        .iter()
        .find(|r| r["action"] == "instance.update_config")
        .expect("a config change row");
    assert_eq!(
        change["detail"]["server_settings"]["game_password"],
        "changed"
    );
    let text = audit.to_string();
    assert!(
        !text.contains(PASSWORD) && !text.contains("new-secret-pw"),
        "{text}"
    );
}

#[tokio::test]
async fn any_logged_in_user_reads_the_schema() {
    let dir = tempfile::tempdir().unwrap();
    let c = ControllerProcess::start(dir.path());
    let admin = Api::new(&c.url(""), &c.first_token);
    let nobody = user_with(&admin, "nobody", &[]).await;
    let schema = nobody.get("/api/v1/config/schema").await;
    let field = |kind: &str, name: &str| {
        schema[kind]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == name)
            .unwrap_or_else(|| panic!("{kind} field {name} missing"))
            .clone()
    };
    let mp = field("instance", "server_settings.max_players");
    assert_eq!(
        (mp["type"].as_str(), mp["min"].as_i64(), mp["max"].as_i64()),
        (Some("integer"), Some(0), Some(65535))
    );
    assert_eq!(mp["section"], "Server");
    assert_eq!(mp["restart_required"], true);
    assert_eq!(
        field("instance", "server_settings.game_password")["secret"],
        true
    );
    assert_eq!(field("instance", "save_patching")["default"], true);
    assert_eq!(field("instance", "script_commands")["default"], true);
    assert_eq!(
        field("instance", "server_settings.allow_commands")["options"],
        json!(["true", "false", "admins-only"])
    );
    assert_eq!(field("controller", "port")["env"], json!(["SERVER_PORT"]));
    assert_eq!(field("host", "controller_token")["secret"], true);
    let (s, _) = Api::new(&c.url(""), "clu_not-a-token")
        .call("GET", "/api/v1/config/schema", None)
        .await;
    assert_eq!(s, 401);
}

#[tokio::test]
async fn the_controller_settings_show_masked_values_and_apply_what_can_change_live() {
    let dir = tempfile::tempdir().unwrap();
    let c = ControllerProcess::start_with(dir.path(), &[("CLUSTER_NAME", "From Env")]);
    let admin = Api::new(&c.url(""), &c.first_token);
    let v = admin.get("/api/v1/controller/config").await;
    assert_eq!(v["config"]["cluster_name"], "From Env");
    assert!(
        v["from_env"]
            .as_array()
            .unwrap()
            .contains(&json!("cluster_name")),
        "{v}"
    );
    assert_eq!(v["pending_restart"], json!([]));
    let status = reqwest::get(c.url("/metrics"))
        .await
        .unwrap()
        .status()
        .as_u16();
    assert_eq!(status, 401, "metrics need a token by default");

    // A runtime field applies at once, and lands in config-master.json.
    let (s, v) = admin
        .call(
            "PATCH",
            "/api/v1/controller/config",
            Some(json!({"config": {"metrics_public": true}})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["config"]["metrics_public"], true);
    assert_eq!(v["pending_restart"], json!([]));
    let status = reqwest::get(c.url("/metrics"))
        .await
        .unwrap()
        .status()
        .as_u16();
    assert_eq!(status, 200, "metrics_public applied without a restart");
    let file: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("config-master.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(file["metrics_public"], true);
    // A restart field waits for the restart, and says so.
    let (s, v) = admin
        .call(
            "PATCH",
            "/api/v1/controller/config",
            Some(json!({"config": {"heartbeat_interval_ms": 20000}})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["pending_restart"], json!(["heartbeat_interval_ms"]));
    // Refused: a bad value, and a field the environment sets.
    let (s, e) = admin
        .call(
            "PATCH",
            "/api/v1/controller/config",
            Some(json!({"config": {"port": "x"}})),
        )
        .await;
    assert_eq!(
        (s, e["error"]["field"].as_str()),
        (400, Some("port")),
        "{e}"
    );
    let (s, e) = admin
        .call(
            "PATCH",
            "/api/v1/controller/config",
            Some(json!({"config": {"cluster_name": "Mine"}})),
        )
        .await;
    assert_eq!(s, 400, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("CLUSTER_NAME"),
        "{e}"
    );
    // Players may not read it.
    let p = player(&admin, "pat").await;
    let (s, _) = p.call("GET", "/api/v1/controller/config", None).await;
    assert_eq!(s, 403);
}

#[tokio::test]
async fn a_running_instance_gets_its_secrets_lists_pending_restarts_and_no_log_has_them() {
    let root = tempfile::tempdir().unwrap();
    let cdir = root.path().join("controller");
    std::fs::create_dir_all(&cdir).unwrap();
    let (clog, hlog) = (
        root.path().join("controller.log"),
        root.path().join("host.log"),
    );
    let c = ControllerProcess::start_logged(&cdir, &[("LOG_LEVEL", "verbose")], &clog);
    let admin = Api::new(&c.url(""), &c.first_token);
    let join = join_token(&cdir);
    let hdir = root.path().join("host");
    let _host = HostProcess::start_logged(
        &hdir,
        &c.url(""),
        &join,
        "host-one",
        &[("LOG_LEVEL", "verbose")],
        &hlog,
    );
    create_secret_instance(&admin, "nauvis").await;
    let (s, v) = admin
        .post(
            "/api/v1/instances/nauvis/assign",
            json!({"host": "host-one"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = admin
        .post("/api/v1/instances/nauvis/start", json!({}))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["status"], "running");
    assert_eq!(v["pending_restart"], json!([]));

    // The host got the real values: Factorio's settings file has them, with the schema's
    // defaults for everything not set.
    let settings: Value = serde_json::from_str(
        &std::fs::read_to_string(hdir.join("instances/nauvis/server-settings.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(settings["game_password"], PASSWORD);
    assert_eq!(settings["token"], TOKEN);
    assert_eq!(settings["name"], "Nauvis One");
    assert_eq!(settings["max_heartbeats_per_second"], 60);
    assert_eq!(
        settings["visibility"],
        json!({"public": false, "lan": true})
    );

    // A restart-required change waits; one that is not does not.
    let (s, v) = patch(
        &admin,
        "nauvis",
        json!({"server_settings": {"max_players": 12}, "auto_start": true}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["pending_restart"], json!(["server_settings.max_players"]));
    let (s, v) = admin
        .post("/api/v1/instances/nauvis/restart", json!({}))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["pending_restart"], json!([]), "{v}");
    let settings: Value = serde_json::from_str(
        &std::fs::read_to_string(hdir.join("instances/nauvis/server-settings.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(settings["max_players"], 12);

    // The host's settings, through the controller: secrets masked by the host.
    let v = admin.get("/api/v1/hosts/host-one/config").await;
    assert_eq!(v["secrets"]["controller_token"], "set");
    assert_eq!(v["config"]["host_name"], "host-one");
    assert!(!v.to_string().contains(&join), "{v}");
    let (s, v) = admin
        .call(
            "PATCH",
            "/api/v1/hosts/host-one/config",
            Some(json!({"config": {"stop_timeout_s": 45}})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["pending_restart"], json!(["stop_timeout_s"]));
    let file: Value =
        serde_json::from_str(&std::fs::read_to_string(hdir.join("config-slave.json")).unwrap())
            .unwrap();
    assert_eq!(file["stop_timeout_s"], 45);
    let (s, e) = admin
        .call(
            "PATCH",
            "/api/v1/hosts/host-one/config",
            Some(json!({"config": {"stop_timeout_s": 0}})),
        )
        .await;
    assert_eq!(s, 400, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("stop_timeout_s must be"),
        "{e}"
    );

    // Verbose logs of both sides hold no secret (give the log writers a moment to flush).
    let (s, _) = admin.post("/api/v1/instances/nauvis/stop", json!({})).await;
    assert_eq!(s, 200);
    tokio::time::sleep(Duration::from_millis(200)).await;
    for log in [&clog, &hlog] {
        let text = std::fs::read_to_string(log).unwrap();
        assert!(
            !text.trim().is_empty(),
            "{} is empty: is it logging?",
            log.display()
        );
        for secret in [PASSWORD, TOKEN, join.as_str()] {
            assert!(
                !text.contains(secret),
                "{} holds a secret: {}",
                log.display(),
                text.lines()
                    .find(|l| l.contains(secret))
                    .unwrap_or_default()
            );
        }
    }
}

#[tokio::test]
async fn an_instance_stored_before_the_schema_keeps_every_value() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = ControllerProcess::start(dir.path());
    let token = c.first_token.clone();
    c.console("stop");
    assert_eq!(c.wait_exit(Duration::from_secs(20)), Some(0));
    drop(c);
    // The database as the previous version left it: migration 3, an instance with free config.
    let old = json!({
        "game_port": 34300,
        "restart_on_crash": true,
        "mods": ["speedy_1.0.0.zip"],
        "server_settings": {"max_players": 8, "game_password": "old-pw", "visibility": {"public": false}},
        "backup_interval_minutes": 0.5,
        "legacy_key": "kept",
    });
    {
        let db = rusqlite::Connection::open(dir.path().join("clustorio.db")).unwrap();
        db.execute_batch(
            "ALTER TABLE instances DROP COLUMN running_config; PRAGMA user_version = 3;",
        )
        .unwrap();
        db.execute(
            "INSERT INTO instances (name, config, created_at, updated_at) VALUES ('old', ?1, 0, 0)",
            [old.to_string()],
        )
        .unwrap();
    }
    let c = ControllerProcess::start(dir.path());
    let admin = Api::new(&c.url(""), &token);
    let v = admin.get("/api/v1/instances/old").await;
    let mut expected = old.clone();
    expected["server_settings"]
        .as_object_mut()
        .unwrap()
        .remove("game_password");
    assert_eq!(v["config"], expected);
    assert_eq!(v["secrets"]["server_settings.game_password"], "set");
    let (s, r) = admin
        .post(
            "/api/v1/instances/old/reveal",
            json!({"field": "server_settings.game_password"}),
        )
        .await;
    assert_eq!((s, r["value"].as_str()), (200, Some("old-pw")));
    // A change keeps every other stored value, unknown ones included.
    let (s, v) = patch(
        &admin,
        "old",
        json!({"server_settings": {"max_players": 9}}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    expected["server_settings"]["max_players"] = json!(9);
    assert_eq!(v["config"], expected);
}
