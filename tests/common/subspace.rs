//! Helpers for subspace_storage tests and benches: a cluster whose instances run the stand-in
//! Subspace Storage mod, what a game holds, what the pool and the spools hold, and a direct RCON
//! connection to a game (for when the controller is down).
#![allow(dead_code)]

use super::cluster::{Api, HostProcess, rcon, wait_until};
use super::{ControllerProcess, bin, join_token};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const MOD_ZIP: &str = "subspace_storage_2.2.20.zip";
pub const CONTROLLER_ENV: &[(&str, &str)] = &[("PLUGINS", "subspace_storage")];

/// Counts by `name:quality`.
pub type Counts = BTreeMap<String, i64>;

pub struct Cluster {
    pub root: tempfile::TempDir,
    pub cdir: PathBuf,
    pub controller: ControllerProcess,
    pub port: u16,
    pub api: Api,
    pub join: String,
    pub hosts: Vec<HostProcess>,
}

impl Cluster {
    /// A controller with the plugin, the mod in its store, and `hosts` connected.
    pub async fn start(hosts: &[&str]) -> Cluster {
        let root = tempfile::tempdir().expect("tempdir");
        let cdir = root.path().join("c");
        std::fs::create_dir_all(&cdir).expect("controller dir");
        let controller = ControllerProcess::start_with(&cdir, CONTROLLER_ENV);
        let port = controller.port;
        let api = Api::new(&controller.url(""), &controller.first_token);
        let join = join_token(&cdir);
        let mods = root.path().join("mod");
        let st = std::process::Command::new(bin("factorio-sim"))
            .arg("install-mod")
            .arg("subspace_storage")
            .arg(&mods)
            .status()
            .expect("factorio-sim install-mod");
        assert!(st.success());
        let zip = std::fs::read(mods.join(MOD_ZIP)).expect("the mod zip");
        let (s, v) = api.put_bytes(&format!("/api/v1/mods/{MOD_ZIP}"), zip).await;
        assert!(s == 200 || s == 201, "uploading the mod: {v}");
        let mut c = Cluster {
            root,
            cdir,
            controller,
            port,
            api,
            join,
            hosts: Vec::new(),
        };
        for h in hosts {
            let host = c.spawn_host(h);
            c.hosts.push(host);
        }
        c
    }

    pub fn host_dir(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }

    pub fn spawn_host(&self, name: &str) -> HostProcess {
        HostProcess::start(
            &self.host_dir(name),
            &self.controller.url(""),
            &self.join,
            name,
            &[],
        )
    }

    /// Kills the controller with -9 and starts it again on the same port; waits for the hosts.
    pub async fn restart_controller(&mut self) {
        self.controller.kill9();
        self.controller = ControllerProcess::start_on(&self.cdir, self.port, CONTROLLER_ENV);
        self.wait_hosts().await;
    }

    /// Waits until every host of the cluster is connected.
    pub async fn wait_hosts(&self) {
        let n = self.hosts.len();
        wait_until("every host is connected", 60, || async {
            let (s, v) = self.api.call("GET", "/api/v1/hosts", None).await;
            s == 200
                && v.as_array()
                    .is_some_and(|a| a.iter().filter(|h| h["connected"] == true).count() >= n)
        })
        .await;
    }

    /// An instance with the mod, on `host`, started; its host saves it 1 s after a transfer
    /// (exports count, imports are final, once the game saved after them).
    pub async fn instance(&self, name: &str, host: &str) {
        self.instance_with(name, host, json!({ "save_interval": 1 }))
            .await
    }

    /// An instance with the mod and this `subspace_storage` config, on `host`, started.
    pub async fn instance_with(&self, name: &str, host: &str, plugin: Value) {
        let (s, v) = self
            .api
            .post(
                "/api/v1/instances",
                json!({ "name": name, "config": { "mods": [MOD_ZIP], "subspace_storage": plugin } }),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        let (s, v) = self
            .api
            .post(
                &format!("/api/v1/instances/{name}/assign"),
                json!({ "host": host }),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        self.start_instance(name).await;
    }

    pub async fn start_instance(&self, name: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let (s, v) = self
                .api
                .post(&format!("/api/v1/instances/{name}/start"), json!({}))
                .await;
            if s == 200 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "start {name}: {s} {v}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.wait_running(name).await;
    }

    pub async fn wait_running(&self, name: &str) {
        wait_until(&format!("{name} runs"), 60, || async {
            let (s, v) = self
                .api
                .call("GET", &format!("/api/v1/instances/{name}"), None)
                .await;
            s == 200 && v["status"] == "running"
        })
        .await;
    }

    /// The pool, by `name:quality` (zero counts left out).
    pub async fn pool(&self) -> Counts {
        let v = self.api.get("/api/v1/storage").await;
        counts(&v["items"])
    }

    /// Exports waiting for their game's next save.
    pub async fn pending(&self) -> Counts {
        let v = self.api.get("/api/v1/storage").await;
        counts(&v["pending"]["items"])
    }

    /// The pool and the items granted but not yet confirmed.
    pub async fn pool_and_in_flight(&self) -> (Counts, Counts) {
        let v = self.api.get("/api/v1/storage").await;
        (counts(&v["items"]), counts(&v["in_flight"]["items"]))
    }
}

fn counts(list: &Value) -> Counts {
    let mut out = Counts::new();
    for i in list.as_array().into_iter().flatten() {
        let n = i["count"].as_i64().unwrap_or(0);
        assert!(n >= 0, "a negative count: {i}");
        if n > 0 {
            let k = format!(
                "{}:{}",
                i["name"].as_str().unwrap_or(""),
                i["quality"].as_str().unwrap_or("")
            );
            *out.entry(k).or_insert(0) += n;
        }
    }
    out
}

/// Sums `b` into `a`.
pub fn add(a: &mut Counts, b: &Counts) {
    for (k, v) in b {
        *a.entry(k.clone()).or_insert(0) += v;
    }
}

/// What `/standin subspace count` printed, summed per item.
pub fn parse_game(out: &str) -> Counts {
    let v: Value = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("subspace count gave {out:?}: {e}"));
    let mut c = Counts::new();
    if let Some(m) = v.as_object() {
        for (k, e) in m {
            let n = ["injected", "stored", "extracted"]
                .iter()
                .map(|f| e[*f].as_i64().unwrap_or(0))
                .sum::<i64>();
            if n > 0 {
                c.insert(k.clone(), n);
            }
        }
    }
    c
}

/// What a game holds (injectors + local storage + extractors), through the API.
pub async fn game(api: &Api, instance: &str) -> Counts {
    parse_game(&rcon(api, instance, "/standin subspace count").await)
}

/// Everything ever put into a game, as its (possibly rolled back) state remembers it.
pub async fn put_total(api: &Api, instance: &str) -> Counts {
    let out = rcon(api, instance, "/standin subspace count").await;
    let v: Value = serde_json::from_str(out.trim()).unwrap_or(Value::Null);
    let mut c = Counts::new();
    for (k, e) in v.as_object().into_iter().flatten() {
        let n = e["put"].as_i64().unwrap_or(0);
        if n > 0 {
            c.insert(k.clone(), n);
        }
    }
    c
}

/// kill -9 of a game (it restarts from its last save).
pub fn kill_game(host: &HostProcess, instance: &str) -> bool {
    match host.factorio_pid(instance) {
        Some(pid) => std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success()),
        None => false,
    }
}

/// Items of one kind a game's extractors hold.
pub async fn extracted(api: &Api, instance: &str, item: &str) -> i64 {
    let out = rcon(api, instance, "/standin subspace count").await;
    let v: Value = serde_json::from_str(out.trim()).unwrap_or(Value::Null);
    v[item]["extracted"].as_i64().unwrap_or(0)
}

/// Items waiting in a host's export spool.
pub fn spool(host_dir: &Path) -> Counts {
    let dir = host_dir.join("plugins/subspace_storage/spool");
    let mut c = Counts::new();
    for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let Ok(v) = std::fs::read(&p).map(|b| serde_json::from_slice::<Value>(&b)) else {
            continue;
        };
        let Ok(v) = v else { continue };
        for i in v["items"].as_array().into_iter().flatten() {
            let k = format!(
                "{}:{}",
                i[0].as_str().unwrap_or(""),
                i[2].as_str().unwrap_or("normal")
            );
            *c.entry(k).or_insert(0) += i[1].as_i64().unwrap_or(0);
        }
    }
    c
}

/// Runs the game's cycle `cycles` times (62 ticks each; the games are paused without players).
pub async fn cycles(api: &Api, instance: &str, cycles: u32) {
    for _ in 0..cycles {
        rcon(api, instance, "/standin tick 62").await;
    }
}

/// The RCON address and password of a running game, from its command line.
pub fn game_rcon_address(host: &HostProcess, instance: &str) -> Option<(u16, String)> {
    let pid = host.factorio_pid(instance)?;
    let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<String> = cmd
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).to_string())
        .collect();
    let after = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let port = after("--rcon-port")
        .or_else(|| after("--rcon-bind").and_then(|b| b.rsplit(':').next().map(String::from)))?
        .parse()
        .ok()?;
    Some((port, after("--rcon-password")?))
}

/// One command straight to a game's RCON (not through the controller).
pub fn direct_rcon(host: &HostProcess, instance: &str, command: &str) -> String {
    try_direct_rcon(host, instance, command).expect("a direct RCON command")
}

/// The same, `None` when the game does not run or answer (its RCON is not up, it died).
pub fn try_direct_rcon(host: &HostProcess, instance: &str, command: &str) -> Option<String> {
    let (port, password) = game_rcon_address(host, instance)?;
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let send = |s: &mut TcpStream, id: i32, ty: i32, body: &str| {
        let mut p = Vec::new();
        p.extend_from_slice(&((body.len() + 10) as i32).to_le_bytes());
        p.extend_from_slice(&id.to_le_bytes());
        p.extend_from_slice(&ty.to_le_bytes());
        p.extend_from_slice(body.as_bytes());
        p.extend_from_slice(&[0, 0]);
        s.write_all(&p).ok()
    };
    let recv = |s: &mut TcpStream| -> Option<(i32, String)> {
        let mut h = [0u8; 12];
        s.read_exact(&mut h).ok()?;
        let size = i32::from_le_bytes([h[0], h[1], h[2], h[3]]);
        let id = i32::from_le_bytes([h[4], h[5], h[6], h[7]]);
        let mut body = vec![0u8; (size - 8).max(2) as usize];
        s.read_exact(&mut body).ok()?;
        body.truncate(body.len() - 2);
        Some((id, String::from_utf8_lossy(&body).to_string()))
    };
    send(&mut s, 1, 3, &password)?;
    let (id, _) = recv(&mut s)?;
    assert_eq!(id, 1, "RCON auth refused");
    send(&mut s, 2, 2, command)?;
    Some(recv(&mut s)?.1)
}
