//! An instance runs at most once in the cluster, on its assigned host (issue 22, "Races"):
//! concurrent start/stop/delete/assign from several clients on two hosts, and a start followed
//! within 60 ms by a delete, never leave a game running twice, on the wrong host, or for an
//! instance that no longer exists — and the game ports stay reusable.
//!
//! The process table is the witness: every live factorio-sim process is mapped to the host
//! directory and instance directory on its command line.

mod common;

use common::cluster::{Api, HostProcess, factorio_pids_under};
use common::{ControllerProcess, join_token};
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Instance names of every live Factorio process under `host_dir` (from `instances/<name>/`
/// on its command line).
fn games_under(host_dir: &Path) -> Vec<String> {
    factorio_pids_under(host_dir)
        .into_iter()
        .filter_map(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            let rest = cmd.split("/instances/").nth(1)?;
            Some(rest.split('/').next()?.to_string())
        })
        .collect()
}

struct Cluster {
    _root: tempfile::TempDir,
    ctl_dir: PathBuf,
    _controller: ControllerProcess,
    hosts: Vec<(String, PathBuf, HostProcess)>,
    api: Api,
}

fn cluster() -> Cluster {
    let root = tempfile::tempdir().unwrap();
    let ctl_dir = root.path().join("controller");
    std::fs::create_dir_all(&ctl_dir).unwrap();
    let c = ControllerProcess::start(&ctl_dir);
    let api = Api::new(&c.url(""), &c.first_token);
    let join = join_token(&ctl_dir);
    let hosts = ["storm-a", "storm-b"]
        .into_iter()
        .map(|name| {
            let dir = root.path().join(name);
            let h = HostProcess::start(&dir, &c.url(""), &join, name, &[]);
            (name.to_string(), dir, h)
        })
        .collect();
    Cluster {
        _root: root,
        ctl_dir,
        _controller: c,
        hosts,
        api,
    }
}

impl Cluster {
    /// Where each instance's games run now: name → hosts (one entry per live process).
    fn games(&self) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (host, dir, _) in &self.hosts {
            for name in games_under(dir) {
                out.entry(name).or_default().push(host.clone());
            }
        }
        out
    }

    /// Instance name → assigned host name, as the controller says.
    async fn assignments(&self) -> HashMap<String, Option<String>> {
        let hosts = self.api.get("/api/v1/hosts").await;
        let host_name: HashMap<i64, String> = hosts
            .as_array()
            .unwrap()
            .iter()
            .map(|h| {
                (
                    h["id"].as_i64().unwrap(),
                    h["name"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        self.api
            .get("/api/v1/instances")
            .await
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                (
                    i["name"].as_str().unwrap().to_string(),
                    i["host_id"]
                        .as_i64()
                        .and_then(|h| host_name.get(&h).cloned()),
                )
            })
            .collect()
    }

    /// Every game belongs to an existing instance, runs once, on the instance's host.
    async fn check_at_most_once(&self, when: &str) {
        let games = self.games();
        let assigned = self.assignments().await;
        for (name, on) in &games {
            assert_eq!(
                on.len(),
                1,
                "{when}: instance '{name}' runs {} times: on {on:?}",
                on.len()
            );
            match assigned.get(name) {
                None => panic!("{when}: a game of '{name}' runs, but no such instance exists"),
                Some(host) => assert_eq!(
                    host.as_deref(),
                    Some(on[0].as_str()),
                    "{when}: '{name}' runs on {} but is assigned to {host:?}",
                    on[0]
                ),
            }
        }
    }

    /// Four fresh instances start on one host: its four game ports are all free again.
    async fn ports_reusable(&self, host: &str, prefix: &str) {
        for n in 0..4 {
            let name = format!("{prefix}{n}");
            common::cluster::create_and_start(&self.api, &name, host, json!({})).await;
        }
        for n in 0..4 {
            let (s, v) = self
                .api
                .post(&format!("/api/v1/instances/{prefix}{n}/stop"), json!({}))
                .await;
            assert_eq!(s, 200, "stop {prefix}{n}: {v}");
        }
    }

    /// Stops every instance and waits until no game runs anywhere.
    async fn stop_everything(&self) {
        for i in self.api.get("/api/v1/instances").await.as_array().unwrap() {
            let name = i["name"].as_str().unwrap();
            if i["host_id"].is_i64() {
                self.api
                    .post(&format!("/api/v1/instances/{name}/stop"), json!({}))
                    .await;
            }
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.games().is_empty() {
            assert!(
                Instant::now() < deadline,
                "games still running after every instance was stopped: {:?}",
                self.games()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Must-show 4: 30 s of start/stop/restart/delete/assign from four clients on six instances
/// spread over two hosts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lifecycle_storm_leaves_every_instance_running_at_most_once_on_its_host() {
    let cl = cluster();
    let names: Vec<String> = (0..6).map(|n| format!("storm{n}")).collect();
    for (n, name) in names.iter().enumerate() {
        let (s, v) = cl
            .api
            .post("/api/v1/instances", json!({ "name": name }))
            .await;
        assert_eq!(s, 201, "{v}");
        let host = &cl.hosts[n % 2].0;
        let (s, v) = cl
            .api
            .post(
                &format!("/api/v1/instances/{name}/assign"),
                json!({ "host": host }),
            )
            .await;
        assert_eq!(s, 200, "{v}");
    }

    let seed: u64 = std::env::var("STORM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("STORM_SEED={seed}");
    let secs: u64 = std::env::var("STORM_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let codes = Arc::new(Mutex::new(BTreeMap::<String, usize>::new()));
    let end = Instant::now() + Duration::from_secs(secs);
    let host_names: Vec<String> = cl.hosts.iter().map(|h| h.0.clone()).collect();
    let mut clients = Vec::new();
    for client in 0..4u64 {
        let api = Api::new(&cl.api.base, &cl.api.token);
        let (names, hosts, codes) = (names.clone(), host_names.clone(), codes.clone());
        clients.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed.wrapping_add(client));
            while Instant::now() < end {
                let name = &names[rng.random_range(0..names.len())];
                let (op, result) = match rng.random_range(0..12) {
                    0..=3 => (
                        "start",
                        api.post(&format!("/api/v1/instances/{name}/start"), json!({}))
                            .await,
                    ),
                    4..=5 => (
                        "stop",
                        api.post(&format!("/api/v1/instances/{name}/stop"), json!({}))
                            .await,
                    ),
                    6 => (
                        "restart",
                        api.post(&format!("/api/v1/instances/{name}/restart"), json!({}))
                            .await,
                    ),
                    7..=8 => {
                        let host = &hosts[rng.random_range(0..hosts.len())];
                        (
                            "assign",
                            api.post(
                                &format!("/api/v1/instances/{name}/assign"),
                                json!({ "host": host }),
                            )
                            .await,
                        )
                    }
                    9 => (
                        "delete",
                        api.call("DELETE", &format!("/api/v1/instances/{name}"), None)
                            .await,
                    ),
                    _ => {
                        // Bring a deleted name back, on a random host.
                        let r = api.post("/api/v1/instances", json!({ "name": name })).await;
                        if r.0 == 201 {
                            let host = &hosts[rng.random_range(0..hosts.len())];
                            api.post(
                                &format!("/api/v1/instances/{name}/assign"),
                                json!({ "host": host }),
                            )
                            .await;
                        }
                        ("create", r)
                    }
                };
                let (status, body) = result;
                assert!(
                    status < 500 || status == 502 || status == 504,
                    "{op} {name}: {status} {body}"
                );
                *codes
                    .lock()
                    .unwrap()
                    .entry(format!("{op} {status}"))
                    .or_default() += 1;
            }
        }));
    }
    // While the storm runs: never twice, never on the wrong host. (A game may be seen for a
    // moment after its instance left, while its host stops it: only the end state is strict.)
    let mut samples = 0;
    let mut worst = 0;
    while Instant::now() < end {
        let most = cl.games().values().map(Vec::len).max().unwrap_or(0);
        worst = worst.max(most);
        samples += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for c in clients {
        c.await.unwrap();
    }
    println!("storm results: {:?}", codes.lock().unwrap());
    println!("process table sampled {samples} times; most games of one instance at once: {worst}");
    assert!(
        worst <= 1,
        "an instance ran {worst} times at once during the storm"
    );

    // Settled: hosts have finished stopping what left them.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let games = cl.games();
        let assigned = cl.assignments().await;
        let settled = games.iter().all(|(name, on)| {
            on.len() == 1 && assigned.get(name).cloned().flatten().as_deref() == Some(&*on[0])
        });
        if settled || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cl.check_at_most_once("after the storm").await;
    // What the controller says runs is what runs.
    let games = cl.games();
    for i in cl.api.get("/api/v1/instances").await.as_array().unwrap() {
        let name = i["name"].as_str().unwrap();
        if i["status"] == "running" {
            assert!(
                games.contains_key(name),
                "'{name}' is reported running but no game runs: {i}"
            );
        }
    }
    println!("after the storm: {} games running: {games:?}", games.len());

    cl.stop_everything().await;
    for (host, _, _) in &cl.hosts {
        cl.ports_reusable(host, &format!("{host}-fresh")).await;
    }
    cl.check_at_most_once("after the port check").await;
}

/// A start followed within 60 ms by a delete, 30 times: the delete waits for the start and
/// stops its game, so no game runs without an instance and the ports are free after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_right_after_a_start_leaves_no_game_behind() {
    let cl = cluster();
    let host = cl.hosts[0].0.clone();
    let mut rng = rand::rngs::StdRng::seed_from_u64(rand::random());
    let mut deleted = 0;
    for trial in 0..30 {
        let name = format!("quick{trial}");
        let (s, v) = cl
            .api
            .post("/api/v1/instances", json!({ "name": name }))
            .await;
        assert_eq!(s, 201, "{v}");
        let (s, v) = cl
            .api
            .post(
                &format!("/api/v1/instances/{name}/assign"),
                json!({ "host": host }),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        let starter = {
            let api = Api::new(&cl.api.base, &cl.api.token);
            let name = name.clone();
            tokio::spawn(async move {
                api.post(&format!("/api/v1/instances/{name}/start"), json!({}))
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..60))).await;
        let (s, v) = cl
            .api
            .call("DELETE", &format!("/api/v1/instances/{name}"), None)
            .await;
        let (start_status, start_body) = starter.await.unwrap();
        assert!(
            matches!(start_status, 200 | 404 | 409),
            "trial {trial}: start answered {start_status} {start_body}"
        );
        assert_eq!(s, 200, "trial {trial}: delete answered {s} {v}");
        deleted += 1;
        // The delete answered after the game was stopped: nothing of it runs now.
        let games = cl.games();
        assert!(
            !games.contains_key(&name),
            "trial {trial}: '{name}' was deleted but its game runs: {games:?} (start: {start_status} {start_body})"
        );
        let (s, _) = cl
            .api
            .call("GET", &format!("/api/v1/instances/{name}"), None)
            .await;
        assert_eq!(
            s, 404,
            "trial {trial}: the deleted instance is still listed"
        );
    }
    // Nothing came back later either (a start queued behind the delete is refused).
    tokio::time::sleep(Duration::from_secs(2)).await;
    cl.check_at_most_once("after 30 start+delete trials").await;
    assert!(cl.games().is_empty(), "games left: {:?}", cl.games());
    cl.ports_reusable(&host, "after").await;
    println!("{deleted} of 30 deletes right after a start; no game left behind");
}

fn zip_with(entries: &[(&str, &[u8])]) -> Vec<u8> {
    use std::io::Write;
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut w = zip::ZipWriter::new(&mut buf);
        for (name, data) in entries {
            w.start_file(*name, zip::write::SimpleFileOptions::default())
                .unwrap();
            w.write_all(data).unwrap();
        }
        w.finish().unwrap();
    }
    buf.into_inner()
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// A PUT whose body arrives in 64 KiB pieces a few milliseconds apart, so concurrent uploads
/// are being received at the same time.
async fn slow_put(url: &str, token: &str, body: Vec<u8>) -> (u16, serde_json::Value) {
    let pieces: Vec<Result<Vec<u8>, std::io::Error>> =
        body.chunks(64 << 10).map(|c| Ok(c.to_vec())).collect();
    let stream = futures_util::StreamExt::then(futures_util::stream::iter(pieces), |p| async {
        tokio::time::sleep(Duration::from_millis(3)).await;
        p
    });
    let resp = reqwest::Client::new()
        .put(url)
        .bearer_auth(token)
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .expect("upload");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

/// Four uploads of one mod name at once, five rounds: each answer is 201 or a clear 409, and
/// the stored file and its metadata are both one upload that got 201 — never a mix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_uploads_of_one_mod_name_store_one_whole_upload() {
    let dir = tempfile::tempdir().unwrap();
    let c = ControllerProcess::start(dir.path());
    let api = Api::new(&c.url(""), &c.first_token);
    let path = "/api/v1/mods/racy_1.0.0.zip";
    for round in 0..5 {
        let uploads: Vec<Vec<u8>> = (0..4)
            .map(|n| {
                // Big enough that the four bodies are being written at the same time.
                let padding: Vec<u8> = (0..(2 << 20))
                    .map(|i| ((i * 7 + n * 13 + round) % 251) as u8)
                    .collect();
                zip_with(&[
                    (
                        "racy_1.0.0/info.json",
                        format!(r#"{{"name":"racy","version":"1.0.0","upload":{n}}}"#).as_bytes(),
                    ),
                    ("racy_1.0.0/data.bin", &padding),
                ])
            })
            .collect();
        let tasks: Vec<_> = uploads
            .iter()
            .cloned()
            .map(|body| {
                let (url, token) = (format!("{}{path}", api.base), api.token.clone());
                tokio::spawn(async move { slow_put(&url, &token, body).await })
            })
            .collect();
        let mut accepted = Vec::new();
        for (n, t) in tasks.into_iter().enumerate() {
            let (s, v) = t.await.unwrap();
            assert!(matches!(s, 201 | 409), "round {round} upload {n}: {s} {v}");
            if s == 201 {
                assert_eq!(
                    v["sha256"],
                    sha256(&uploads[n]),
                    "round {round}: the reply describes another upload"
                );
                accepted.push(sha256(&uploads[n]));
            }
        }
        assert!(
            !accepted.is_empty(),
            "round {round}: no upload was accepted"
        );
        let (s, stored) = api.get_bytes(path).await;
        assert_eq!(s, 200);
        let (s, meta) = api.call("GET", &format!("{path}?meta=1"), None).await;
        assert_eq!(s, 200, "{meta}");
        let stored_sha = sha256(&stored);
        assert!(
            accepted.contains(&stored_sha),
            "round {round}: the stored file is none of the accepted uploads"
        );
        assert_eq!(
            meta["sha256"], stored_sha,
            "round {round}: metadata of another upload than the file"
        );
        assert_eq!(meta["size"], stored.len() as u64);
    }
    // No temporary file is left in the mod store.
    let extra: Vec<_> = std::fs::read_dir(dir.path().join("mods"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n != "racy_1.0.0.zip")
        .collect();
    assert!(extra.is_empty(), "left in the mod store: {extra:?}");
}

/// Eight downloads of one save at once (the host pushes it through the controller for each):
/// all succeed with the whole save, and no pulled copy stays on the controller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_concurrent_downloads_of_one_save_all_succeed() {
    let cl = cluster();
    let host = cl.hosts[0].0.clone();
    common::cluster::create_and_start(&cl.api, "dl", &host, json!({})).await;
    let (s, v) = cl.api.post("/api/v1/instances/dl/stop", json!({})).await;
    assert_eq!(s, 200, "{v}");
    let id = cl.api.get("/api/v1/instances/dl").await["id"]
        .as_i64()
        .unwrap();
    for round in 0..3 {
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let api = Api::new(&cl.api.base, &cl.api.token);
                tokio::spawn(
                    async move { api.get_bytes("/api/v1/instances/dl/saves/world.zip").await },
                )
            })
            .collect();
        let mut bodies = Vec::new();
        for (n, t) in tasks.into_iter().enumerate() {
            let (s, body) = t.await.unwrap();
            assert_eq!(
                s,
                200,
                "round {round} download {n}: {}",
                String::from_utf8_lossy(&body)
            );
            assert!(
                zip::ZipArchive::new(std::io::Cursor::new(&body)).is_ok(),
                "round {round} download {n}: not a whole zip"
            );
            bodies.push(body);
        }
        assert!(
            bodies.windows(2).all(|w| w[0] == w[1]),
            "round {round}: downloads differ"
        );
    }
    let downloads = cl
        .ctl_dir
        .join("saves")
        .join(id.to_string())
        .join("downloads");
    let left: Vec<_> = std::fs::read_dir(&downloads)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "pulled saves left on the controller: {left:?}"
    );
}
