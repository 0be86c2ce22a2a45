//! Players on the sim cluster: a first join creates the user; joins and leaves on two instances
//! give the history and online time; kick, ban (synced: refused on every instance), promote and
//! whitelist work from the API and from ctl, each with its audit row; Factorio's list files
//! import (a malformed entry imports nothing) and export back to the same lists; each game's
//! join address and a slave's game defaults.

mod common;

use common::cluster::{Api, HostProcess, rcon, wait_until};
use common::players::{audit_rows, ctl, ctl_ok, join, leave, player, start_on};
use common::{ControllerProcess, join_token, user_token};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;

async fn wait_player(api: &Api, name: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(p) = player(api, name).await
            && pred(&p)
        {
            return p;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out: {name} {what}; last: {:?}",
            player(api, name).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn online_on(p: &Value) -> Vec<String> {
    p["online_on"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(String::from))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_on_two_instances_make_users_with_history_online_time_and_join_addresses() {
    let root = tempfile::tempdir().unwrap();
    let cdir = root.path().join("c");
    std::fs::create_dir_all(&cdir).unwrap();
    let c = ControllerProcess::start(&cdir);
    let api = Api::new(&c.url(""), &c.first_token);
    let join_tok = join_token(&cdir);
    // h1 is a panel slave with the egg's variables; h2 has none and runs beside the controller.
    let h1_env = [
        ("PUBLIC_ADDRESS", "play.example.org"),
        ("GAME_NAME_TEMPLATE", "{cluster} / {host} / {instance}"),
        ("GAME_PASSWORD", "hunter2"),
        ("MAX_PLAYERS", "12"),
        ("SERVER_IP", "0.0.0.0"),
    ];
    let h1 = HostProcess::start(
        &root.path().join("h1"),
        &c.url(""),
        &join_tok,
        "h1",
        &h1_env,
    );
    let _h2 = HostProcess::start(&root.path().join("h2"), &c.url(""), &join_tok, "h2", &[]);
    // h3 is a panel slave without a public address: the panel's allocation IP is its address.
    let h3_env = [("SERVER_IP", "198.51.100.7")];
    let _h3 = HostProcess::start(
        &root.path().join("h3"),
        &c.url(""),
        &join_tok,
        "h3",
        &h3_env,
    );
    let a = start_on(&api, "a", "h1").await;
    start_on(&api, "b", "h2").await;
    let c3 = start_on(&api, "c3", "h3").await;
    let c3_port = c3["game_port"].as_u64().unwrap();
    let c3 = api.get("/api/v1/instances/c3").await;
    assert_eq!(c3["join_address"], json!(format!("198.51.100.7:{c3_port}")));

    // Where to connect: h1's public address; h2 connects from 127.0.0.1, which is never shown.
    let port = a["game_port"].as_u64().unwrap();
    let a = api.get("/api/v1/instances/a").await;
    assert_eq!(a["join_address"], json!(format!("play.example.org:{port}")));
    assert_eq!(
        api.get("/api/v1/instances/b").await["join_address"],
        Value::Null
    );
    let hosts = api.get("/api/v1/hosts").await;
    let h1_view = hosts
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == "h1")
        .unwrap();
    assert_eq!(h1_view["join_host"]["source"], "public_address");
    let h2_view = hosts
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == "h2")
        .unwrap();
    assert_eq!(
        h2_view["join_host"],
        Value::Null,
        "127.0.0.1 is not a join address"
    );

    // The slave's game defaults reached the game: its server-settings.json and the password.
    let settings: Value = serde_json::from_str(
        &std::fs::read_to_string(h1.dir.join("instances/a/server-settings.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(settings["name"], "Your Cluster / h1 / a");
    assert_eq!(settings["max_players"], 12);
    assert_eq!(settings["game_password"], "hunter2");
    assert_eq!(join(&api, "a", "Alice").await, "refused: PasswordMissing");
    let out = rcon(&api, "a", "/standin join Alice --password hunter2").await;
    assert_eq!(out.trim(), "ok");

    // Alice's first join made her a user with the default role, written by "game" in the audit.
    let p = wait_player(&api, "Alice", "online on a", |p| online_on(p) == ["a"]).await;
    assert_eq!(p["roles"], json!([1]), "the Player role");
    assert_eq!(p["seen_in_game"], true);
    assert_eq!(p["join_count"], 1);
    let created = audit_rows(&api, "user.create", "Alice").await;
    assert_eq!(created.len(), 1);
    assert_eq!(created[0]["actor"], "game");

    // Alice moves from a to b; Bob joins a.
    tokio::time::sleep(Duration::from_millis(400)).await;
    leave(&api, "a", "Alice").await;
    wait_player(&api, "Alice", "offline", |p| p["online"] == false).await;
    assert_eq!(join(&api, "b", "alice").await, "ok");
    let out = rcon(&api, "a", "/standin join Bob --password hunter2").await;
    assert_eq!(out.trim(), "ok");
    wait_player(&api, "Alice", "online on b", |p| online_on(p) == ["b"]).await;
    wait_player(&api, "Bob", "online on a", |p| online_on(p) == ["a"]).await;

    let d = api.get("/api/v1/players/alice").await;
    assert_eq!(
        d["name"], "Alice",
        "one user, whatever the case of the name"
    );
    assert_eq!(d["join_count"], 2);
    let history = d["history"].as_array().unwrap();
    assert_eq!(history.len(), 2, "{d}");
    assert_eq!(history[0]["instance"], "b");
    assert_eq!(history[0]["left_at"], Value::Null, "still on b");
    assert_eq!(history[1]["instance"], "a");
    assert_eq!(history[1]["leave_reason"], "left");
    let on_a = history[1]["duration_ms"].as_i64().unwrap();
    assert!(on_a >= 400, "she stayed on a at least 400 ms: {on_a}");
    let stats = d["instance_stats"].as_array().unwrap();
    let a_stats = stats.iter().find(|s| s["instance"] == "a").unwrap();
    assert_eq!(a_stats["join_count"], 1);
    assert_eq!(a_stats["online_time_ms"], json!(on_a));
    assert_eq!(a_stats["online"], false);
    assert!(
        stats
            .iter()
            .any(|s| s["instance"] == "b" && s["online"] == true)
    );
    assert!(d["online_time_ms"].as_i64().unwrap() >= on_a);

    // The list: online players first, search by part of the name.
    let all = api.get("/api/v1/players").await;
    let names: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    let admin = names.iter().position(|n| *n == "admin").unwrap();
    assert!(names.iter().position(|n| *n == "Alice").unwrap() < admin);
    assert!(names.iter().position(|n| *n == "Bob").unwrap() < admin);
    let found = api.get("/api/v1/players?search=LIC").await;
    assert_eq!(found.as_array().unwrap().len(), 1);
    assert_eq!(found[0]["name"], "Alice");

    // Stopping b ends Alice's session there.
    let (s, v) = api.post("/api/v1/instances/b/stop", json!({})).await;
    assert_eq!(s, 200, "{v}");
    let p = wait_player(&api, "Alice", "offline after b stopped", |p| {
        p["online"] == false
    })
    .await;
    assert_eq!(p["join_count"], 2);
    let d = api.get("/api/v1/players/Alice").await;
    assert_eq!(d["history"][0]["leave_reason"], "server stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kick_ban_promote_and_whitelist_from_api_and_ctl_reach_every_instance() {
    let root = tempfile::tempdir().unwrap();
    let cdir = root.path().join("c");
    std::fs::create_dir_all(&cdir).unwrap();
    let c = ControllerProcess::start(&cdir);
    let api = Api::new(&c.url(""), &c.first_token);
    let join_tok = join_token(&cdir);
    let _h1 = HostProcess::start(&root.path().join("h1"), &c.url(""), &join_tok, "h1", &[]);
    let _h2 = HostProcess::start(&root.path().join("h2"), &c.url(""), &join_tok, "h2", &[]);
    start_on(&api, "a", "h1").await;
    start_on(&api, "b", "h2").await;
    let home = root.path().join("home");

    // Kick (API) with a reason: over RCON to the game she is in; the history says why.
    assert_eq!(join(&api, "a", "Alice").await, "ok");
    wait_player(&api, "Alice", "online", |p| p["online"] == true).await;
    let (s, v) = api
        .post("/api/v1/users/Alice/kick", json!({ "reason": "afk" }))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["kicked_from"], json!(["a"]));
    wait_player(&api, "Alice", "offline", |p| p["online"] == false).await;
    let d = api.get("/api/v1/players/Alice").await;
    assert_eq!(d["history"][0]["leave_reason"], "kicked: afk");
    let out = rcon(&api, "a", "/players online").await;
    assert!(!out.contains("Alice"), "{out}");
    let kick = audit_rows(&api, "user.kick", "Alice").await;
    assert_eq!(kick[0]["detail"]["reason"], "afk");
    // Kicking someone who is in no game says so.
    let (s, v) = api.post("/api/v1/users/Alice/kick", json!({})).await;
    assert_eq!(s, 409, "{v}");

    // Ban (ctl) of a name never seen: the user is created, and every instance refuses her.
    let out = ctl_ok(
        &api,
        &home,
        &["user", "ban", "Chandra", "--reason", "griefing"],
    );
    assert!(out.contains("Chandra"), "{out}");
    let u = api.get("/api/v1/users/Chandra").await;
    assert_eq!(
        (u["is_banned"].clone(), u["ban_reason"].clone()),
        (json!(true), json!("griefing"))
    );
    for instance in ["a", "b"] {
        wait_until(&format!("{instance} refuses Chandra"), 20, || async {
            join(&api, instance, "Chandra").await.starts_with("refused")
        })
        .await;
    }
    assert_eq!(
        audit_rows(&api, "user.ban", "Chandra").await[0]["detail"]["reason"],
        "griefing"
    );
    assert_eq!(audit_rows(&api, "user.create", "Chandra").await.len(), 1);
    // A game started after the ban has it in its ban list file from the start.
    start_on(&api, "c", "h1").await;
    assert!(join(&api, "c", "Chandra").await.starts_with("refused"));

    // Unban (API): she gets in again, everywhere.
    let (s, v) = api.post("/api/v1/users/Chandra/unban", json!({})).await;
    assert_eq!(s, 200, "{v}");
    wait_until("b lets Chandra in", 20, || async {
        join(&api, "b", "Chandra").await == "ok"
    })
    .await;
    assert_eq!(audit_rows(&api, "user.unban", "Chandra").await.len(), 1);

    // Promote (API) and demote (ctl): /admins on both games follows.
    let (s, v) = api.post("/api/v1/users/Bob/promote", json!({})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["is_admin"], true);
    for instance in ["a", "b"] {
        wait_until(&format!("Bob is admin on {instance}"), 20, || async {
            rcon(&api, instance, "/admins").await.contains("Bob")
        })
        .await;
    }
    ctl_ok(&api, &home, &["user", "demote", "Bob"]);
    wait_until("Bob is no admin on b", 20, || async {
        !rcon(&api, "b", "/admins").await.contains("Bob")
    })
    .await;
    assert_eq!(audit_rows(&api, "user.promote", "Bob").await.len(), 1);
    assert_eq!(audit_rows(&api, "user.demote", "Bob").await.len(), 1);

    // Whitelist (ctl) and unwhitelist (API).
    ctl_ok(&api, &home, &["user", "whitelist", "Dora"]);
    wait_until("Dora is on a's whitelist", 20, || async {
        rcon(&api, "a", "/whitelist get Dora")
            .await
            .contains("is whitelisted")
    })
    .await;
    let (s, _) = api.post("/api/v1/users/Dora/unwhitelist", json!({})).await;
    assert_eq!(s, 200);
    wait_until("Dora is off a's whitelist", 20, || async {
        rcon(&api, "a", "/whitelist get Dora")
            .await
            .contains("not whitelisted")
    })
    .await;
    assert_eq!(audit_rows(&api, "user.whitelist", "Dora").await.len(), 1);
    assert_eq!(audit_rows(&api, "user.unwhitelist", "Dora").await.len(), 1);

    // A ban typed into one game's console becomes the cluster's: the other game refuses too.
    rcon(&api, "a", "/ban Mallory cheating").await;
    wait_until("the cluster has Mallory's ban", 20, || async {
        let (s, u) = api.call("GET", "/api/v1/users/Mallory", None).await;
        s == 200 && u["is_banned"] == true && u["ban_reason"] == "cheating"
    })
    .await;
    wait_until("b refuses Mallory", 20, || async {
        join(&api, "b", "Mallory").await.starts_with("refused")
    })
    .await;
    assert_eq!(
        audit_rows(&api, "user.ban", "Mallory").await[0]["actor"],
        "game:a"
    );
    // The games' echoes of the cluster's own changes are no new changes: Bob stays demoted.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(api.get("/api/v1/users/Bob").await["is_admin"], false);
    assert_eq!(audit_rows(&api, "user.promote", "Bob").await.len(), 1);

    // Taking a flag from a name nobody knows is an error, not a new user.
    let (s, v) = api.post("/api/v1/users/Nobody/unban", json!({})).await;
    assert_eq!(s, 404, "{v}");
    // ctl kick of a player not in a game fails with the reason.
    let r = ctl(&api, &home, &["user", "kick", "Dora"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("not in any game"), "{}", r.stderr);

    // Each action needs its permission: a Player may do none of them.
    ctl_ok(&api, &home, &["user", "create", "pleb"]);
    let pleb = Api::new(&c.url(""), &user_token(&cdir, "pleb"));
    for (path, body) in [
        ("/api/v1/users/Bob/kick", json!({})),
        ("/api/v1/users/Bob/ban", json!({})),
        ("/api/v1/users/Bob/promote", json!({})),
        ("/api/v1/users/Bob/whitelist", json!({})),
        ("/api/v1/lists/import", json!({ "admins": ["pleb"] })),
    ] {
        let (s, v) = pleb.post(path, body).await;
        assert_eq!(s, 403, "{path}: {v}");
    }
    let (s, _) = pleb.call("GET", "/api/v1/lists/bans", None).await;
    assert_eq!(s, 403);
    assert_eq!(api.get("/api/v1/users/pleb").await["is_admin"], false);
}

fn names(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_files_import_with_a_dry_run_refuse_malformed_entries_and_export_back() {
    let root = tempfile::tempdir().unwrap();
    let cdir = root.path().join("c");
    std::fs::create_dir_all(&cdir).unwrap();
    let c = ControllerProcess::start(&cdir);
    let api = Api::new(&c.url(""), &c.first_token);
    let home = root.path().join("home");
    let files = root.path().join("files");
    std::fs::create_dir_all(&files).unwrap();
    let write = |name: &str, text: &str| {
        let p = files.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_string_lossy().to_string()
    };
    let admins = write("server-adminlist.json", "[\"Alice\", \"bob\"]\n");
    let bans = write(
        "server-banlist.json",
        r#"["Mallory", {"username": "Eve", "reason": "spam", "address": "192.0.2.1"}]"#,
    );
    let white = write("server-whitelist.json", "[\n  \"Alice\",\n  \"Zed\"\n]\n");
    let bad_bans = write(
        "bad-banlist.json",
        r#"["Mallory", {"username": "Eve"}, 42, {"reason": "no name"}]"#,
    );

    // A malformed entry: nothing is imported, every bad entry is named.
    let users_before = api.get("/api/v1/users").await;
    let r = ctl(
        &api,
        &home,
        &["user", "import", "--admins", &admins, "--bans", &bad_bans],
    );
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("server-banlist.json entry 3"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("server-banlist.json entry 4"),
        "{}",
        r.stderr
    );
    assert_eq!(
        api.get("/api/v1/users").await,
        users_before,
        "nothing half-applied"
    );
    let (s, v) = api
        .post("/api/v1/lists/import", json!({ "whitelist": "{not json" }))
        .await;
    assert_eq!(s, 400);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("server-whitelist.json")
    );

    // The dry run says what would change, and changes nothing.
    let out = ctl_ok(
        &api,
        &home,
        &[
            "user",
            "import",
            "--admins",
            &admins,
            "--bans",
            &bans,
            "--whitelist",
            &white,
            "--dry-run",
        ],
    );
    assert!(out.contains("Dry run"), "{out}");
    let (s, plan) = api
        .post(
            "/api/v1/lists/import",
            json!({
                "admins": std::fs::read_to_string(&admins).unwrap(),
                "bans": std::fs::read_to_string(&bans).unwrap(),
                "dry_run": true,
            }),
        )
        .await;
    assert_eq!(s, 200, "{plan}");
    assert_eq!(plan["dry_run"], true);
    assert_eq!(
        names(&plan["created"]),
        names(&json!(["Alice", "bob", "Mallory", "Eve"]))
    );
    assert_eq!(
        names(&plan["bans"]["added"]),
        names(&json!(["Mallory", "Eve"]))
    );
    assert_eq!(
        api.get("/api/v1/users").await,
        users_before,
        "a dry run changes nothing"
    );

    // Import for real (ctl), then export (ctl) to files in Factorio's formats.
    ctl_ok(
        &api,
        &home,
        &[
            "user",
            "import",
            "--admins",
            &admins,
            "--bans",
            &bans,
            "--whitelist",
            &white,
        ],
    );
    let eve = api.get("/api/v1/users/Eve").await;
    assert_eq!(
        (eve["is_banned"].clone(), eve["ban_reason"].clone()),
        (json!(true), json!("spam"))
    );
    assert_eq!(audit_rows(&api, "user.import", "lists").await.len(), 1);
    let out_dir = root.path().join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let path = |n: &str| out_dir.join(n).to_string_lossy().to_string();
    ctl_ok(
        &api,
        &home,
        &[
            "user",
            "export",
            "--admins",
            &path("server-adminlist.json"),
            "--bans",
            &path("server-banlist.json"),
            "--whitelist",
            &path("server-whitelist.json"),
        ],
    );
    let read = |n: &str| -> Value {
        serde_json::from_str(&std::fs::read_to_string(out_dir.join(n)).unwrap()).unwrap()
    };
    // The same lists (the first admin from ADMIN_STRING was there before), the plain-string ban
    // now an object with an empty reason, as Factorio writes it.
    assert_eq!(
        names(&read("server-adminlist.json")),
        names(&json!(["admin", "Alice", "bob"]))
    );
    assert_eq!(
        read("server-banlist.json"),
        json!([{"username": "Eve", "reason": "spam"}, {"username": "Mallory", "reason": ""}])
    );
    assert_eq!(read("server-whitelist.json"), json!(["Alice", "Zed"]));

    // The exported files import again as "nothing changes".
    let (s, again) = api
        .post(
            "/api/v1/lists/import",
            json!({
                "admins": read("server-adminlist.json"),
                "bans": read("server-banlist.json"),
                "whitelist": read("server-whitelist.json"),
                "dry_run": true,
            }),
        )
        .await;
    assert_eq!(s, 200, "{again}");
    for l in ["admins", "bans", "whitelist"] {
        assert_eq!(again[l]["added"], json!([]), "{l}: {again}");
        assert_eq!(again[l]["updated"], json!([]), "{l}: {again}");
    }
    assert_eq!(again["created"], json!([]));

    // Replace: users missing from the file lose the flag.
    let (s, v) = api
        .post(
            "/api/v1/lists/import",
            json!({ "whitelist": ["Zed"], "replace": true }),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["whitelist"]["removed"], json!(["Alice"]));
    assert_eq!(api.get("/api/v1/lists/whitelist").await, json!(["Zed"]));
}
