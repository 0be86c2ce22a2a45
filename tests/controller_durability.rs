//! Nothing acknowledged is ever lost: writes in a tight loop, `kill -9` at a random moment,
//! restart, and every change that got a success reply is there, in an intact database.

mod common;

use common::{ControllerProcess, user_token};
use rand::{Rng, SeedableRng};
use reqwest::Client;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Rounds of write → kill -9 → restart → check: 50 by default (CI runs them all).
/// `DURABILITY_ROUNDS` overrides.
fn rounds() -> usize {
    std::env::var("DURABILITY_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50)
}

/// Concurrent writers per round (half create instances, half users).
const WRITERS: usize = 16;

async fn names(c: &ControllerProcess, token: &str, path: &str) -> HashSet<String> {
    let list: Value = Client::new()
        .get(c.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_no_acknowledged_change() {
    let dir = tempfile::tempdir().unwrap();
    let seed: u64 = std::env::var("DURABILITY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("DURABILITY_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let acked_instances = Arc::new(Mutex::new(HashSet::<String>::new()));
    let acked_users = Arc::new(Mutex::new(HashSet::<String>::new()));
    let mut token = String::new();
    let mut total_acked = 0;

    for round in 0..rounds() {
        let mut c = ControllerProcess::start(dir.path());
        if round == 0 {
            token = c.first_token.clone();
        }
        // Everything acknowledged in earlier rounds survived the kill.
        let instances = names(&c, &token, "/api/v1/instances").await;
        let users = names(&c, &token, "/api/v1/users").await;
        let missing_i: Vec<_> = acked_instances
            .lock()
            .unwrap()
            .difference(&instances)
            .cloned()
            .collect();
        let missing_u: Vec<_> = acked_users
            .lock()
            .unwrap()
            .difference(&users)
            .cloned()
            .collect();
        assert!(
            missing_i.is_empty(),
            "round {round}: acknowledged instances lost: {missing_i:?}"
        );
        assert!(
            missing_u.is_empty(),
            "round {round}: acknowledged users lost: {missing_u:?}"
        );

        // Writers in a tight loop, several at once (so group commit is exercised).
        let mut writers = Vec::new();
        for w in 0..WRITERS {
            let (url, token) = (c.url(""), token.clone());
            let acked = if w % 2 == 0 {
                acked_instances.clone()
            } else {
                acked_users.clone()
            };
            writers.push(tokio::spawn(async move {
                let client = Client::new();
                for n in 0.. {
                    let name = format!("r{round}w{w}n{n}");
                    let path = if w % 2 == 0 {
                        "/api/v1/instances"
                    } else {
                        "/api/v1/users"
                    };
                    let resp = client
                        .post(format!("{url}{path}"))
                        .bearer_auth(&token)
                        .json(&json!({ "name": name }))
                        .send()
                        .await;
                    let Ok(resp) = resp else {
                        break;
                    };
                    // Only a complete success reply counts as acknowledged.
                    if resp.status().as_u16() == 201 && resp.bytes().await.is_ok() {
                        acked.lock().unwrap().insert(name);
                    }
                }
            }));
        }
        // The kill comes at a random moment while writes are being acknowledged: counted from
        // the round's first acknowledged write (a fresh controller on a busy machine can take a
        // while to answer the first ones).
        let acked_now =
            || acked_instances.lock().unwrap().len() + acked_users.lock().unwrap().len();
        let before = acked_now();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while acked_now() == before && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(30..400))).await;
        c.kill9();
        for w in writers {
            w.await.unwrap();
        }
        let db = rusqlite::Connection::open(dir.path().join("clustorio.db")).unwrap();
        let check: String = db
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok", "round {round}: database damaged");
        drop(db);
        total_acked = acked_instances.lock().unwrap().len() + acked_users.lock().unwrap().len();
        if round == 0 {
            // Later rounds can log in again even if the first token's row were the one lost.
            token = user_token(dir.path(), "admin");
        }
    }
    let c = ControllerProcess::start(dir.path());
    let instances = names(&c, &token, "/api/v1/instances").await;
    let users = names(&c, &token, "/api/v1/users").await;
    assert!(acked_instances.lock().unwrap().is_subset(&instances));
    assert!(acked_users.lock().unwrap().is_subset(&users));
    assert!(
        total_acked > 100,
        "the test wrote too little to mean anything: {total_acked}"
    );
    println!(
        "{} rounds, {WRITERS} writers, {total_acked} acknowledged writes, none lost",
        rounds()
    );
}

/// `clustorio controller backup FILE` while 16 writers keep committing: every copy opens,
/// passes `integrity_check`, and holds everything acknowledged before the backup began.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_under_write_load_are_whole_and_current() {
    let dir = tempfile::tempdir().unwrap();
    let c = ControllerProcess::start(dir.path());
    let token = c.first_token.clone();
    let acked = Arc::new(Mutex::new(HashSet::<String>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (url, token, acked, stop) = (c.url(""), token.clone(), acked.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let client = Client::new();
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let name = format!("b{w}n{n}");
                n += 1;
                let Ok(resp) = client
                    .post(format!("{url}/api/v1/instances"))
                    .bearer_auth(&token)
                    .json(&json!({ "name": name }))
                    .send()
                    .await
                else {
                    break;
                };
                if resp.status().as_u16() == 201 && resp.bytes().await.is_ok() {
                    acked.lock().unwrap().insert(name);
                }
            }
        }));
    }
    let mut sizes = Vec::new();
    for b in 0..5 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before: HashSet<String> = acked.lock().unwrap().clone();
        let copy = dir.path().join(format!("backup-{b}.db"));
        let out = tokio::task::spawn_blocking({
            let (dir, copy) = (dir.path().to_path_buf(), copy.clone());
            move || {
                std::process::Command::new(common::bin("clustorio"))
                    .args(["controller", "backup", "--dir"])
                    .arg(&dir)
                    .arg(&copy)
                    .output()
                    .unwrap()
            }
        })
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "backup {b}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let db = rusqlite::Connection::open(&copy).unwrap();
        let check: String = db
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok", "backup {b} is damaged");
        let mut stmt = db.prepare("SELECT name FROM instances").unwrap();
        let names: HashSet<String> = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let missing: Vec<_> = before.difference(&names).collect();
        assert!(
            missing.is_empty(),
            "backup {b} lacks {} changes acknowledged before it began: {missing:?}",
            missing.len()
        );
        sizes.push((before.len(), names.len()));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    assert!(
        sizes.last().is_some_and(|(_, n)| *n > 50),
        "too little was written to mean anything: {sizes:?}"
    );
    println!("5 backups under {WRITERS} writers: (acknowledged before, rows in copy) {sizes:?}");
}
