//! A cluster on real processes for tests: hosts running `clustorio host run` with factorio-sim
//! installed in their directory, and a small JSON API client.
#![allow(dead_code)]

use super::{Proc, bin};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Sim speed for cluster tests (delays ×0.02).
pub const SIM_SPEED: &str = "0.02";

/// `n` UDP ports that are free right now (for game ports that never collide between tests).
pub fn free_udp_ports(n: usize) -> Vec<u16> {
    let sockets: Vec<_> = (0..n)
        .map(|_| std::net::UdpSocket::bind("0.0.0.0:0").expect("udp bind"))
        .collect();
    sockets
        .iter()
        .map(|s| s.local_addr().expect("addr").port())
        .collect()
}

pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("tcp bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Installs factorio-sim into `<dir>/factorio` (where hosts auto-detect Factorio).
pub fn install_sim(dir: &Path) {
    let root = dir.join("factorio");
    if root.join("bin/x64/factorio").exists() {
        return;
    }
    let st = Command::new(bin("factorio-sim"))
        .arg("install")
        .arg(&root)
        .status()
        .expect("factorio-sim install");
    assert!(st.success());
}

pub struct HostProcess {
    pub proc: Proc,
    pub dir: PathBuf,
}

impl std::ops::Deref for HostProcess {
    type Target = Proc;
    fn deref(&self) -> &Proc {
        &self.proc
    }
}

impl std::ops::DerefMut for HostProcess {
    fn deref_mut(&mut self) -> &mut Proc {
        &mut self.proc
    }
}

impl HostProcess {
    /// Starts a host in `dir` and waits for `Started` (it has connected).
    pub fn start(dir: &Path, url: &str, token: &str, name: &str, env: &[(&str, &str)]) -> Self {
        let h = Self::spawn(dir, url, token, name, env);
        h.wait_line(Duration::from_secs(30), |l| l.contains("Started"));
        h
    }

    /// Starts a host without waiting for it to connect.
    pub fn spawn(dir: &Path, url: &str, token: &str, name: &str, env: &[(&str, &str)]) -> Self {
        Self::spawn_cmd(dir, url, token, name, env, Stdio::inherit())
    }

    /// Starts a host with its log (stderr) written to `log`, and waits for `Started`.
    pub fn start_logged(
        dir: &Path,
        url: &str,
        token: &str,
        name: &str,
        env: &[(&str, &str)],
        log: &Path,
    ) -> Self {
        let file = std::fs::File::create(log).expect("creating the log file");
        let h = Self::spawn_cmd(dir, url, token, name, env, Stdio::from(file));
        h.wait_line(Duration::from_secs(30), |l| l.contains("Started"));
        h
    }

    fn spawn_cmd(
        dir: &Path,
        url: &str,
        token: &str,
        name: &str,
        env: &[(&str, &str)],
        stderr: Stdio,
    ) -> Self {
        std::fs::create_dir_all(dir).expect("host dir");
        install_sim(dir);
        let ports: Vec<String> = free_udp_ports(4).iter().map(u16::to_string).collect();
        let mut cmd = Command::new(bin("clustorio"));
        cmd.args(["host", "run", "--dir"])
            .arg(dir)
            .env("MASTER_URL", url)
            .env("MASTER_TOKEN", token)
            .env("SLAVE_NAME", name)
            .env("SERVER_PORT", ports.join(","))
            .env("LOG_LEVEL", "warn")
            .env("FACTORIO_STANDIN_SPEED", SIM_SPEED)
            .stderr(stderr);
        for (k, v) in env {
            cmd.env(k, v);
        }
        HostProcess {
            proc: Proc::spawn(cmd),
            dir: dir.to_path_buf(),
        }
    }

    /// The pid of the Factorio process of `instance`, from the host's state file.
    pub fn factorio_pid(&self, instance: &str) -> Option<u32> {
        let text = std::fs::read_to_string(
            self.dir
                .join("instances")
                .join(instance)
                .join("instance.json"),
        )
        .ok()?;
        let v: Value = serde_json::from_str(&text).ok()?;
        v["pid"].as_u64().map(|p| p as u32)
    }
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        self.proc.kill9();
        // Factorio runs in its own process group; make sure no test leaves one behind.
        for pid in factorio_pids_under(&self.dir) {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
}

/// Pids of live processes whose command line mentions `dir` and `factorio`.
pub fn factorio_pids_under(dir: &Path) -> Vec<u32> {
    let needle = dir.to_string_lossy().to_string();
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                s.rsplit(')')
                    .next()
                    .is_some_and(|r| r.trim_start().starts_with('Z'))
            })
            .unwrap_or(true);
        if !zombie
            && cmd.contains(&needle)
            && cmd.contains("bin/x64/factorio")
            && !cmd.contains("host run")
        {
            out.push(pid);
        }
    }
    out
}

/// A JSON client of the REST API.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub token: String,
    client: reqwest::Client,
}

impl Api {
    pub fn new(base: &str, token: &str) -> Self {
        Api {
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
            client: reqwest::Client::new(),
        }
    }

    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .client
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).expect("method"),
                format!("{}{path}", self.base),
            )
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn get(&self, path: &str) -> Value {
        let (s, v) = self.call("GET", path, None).await;
        assert_eq!(s, 200, "GET {path}: {v}");
        v
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call("POST", path, Some(body)).await
    }

    pub async fn put_bytes(&self, path: &str, bytes: Vec<u8>) -> (u16, Value) {
        let resp = self
            .client
            .put(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .body(bytes)
            .send()
            .await
            .expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn get_bytes(&self, path: &str) -> (u16, Vec<u8>) {
        let resp = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("request");
        let status = resp.status().as_u16();
        (
            status,
            resp.bytes().await.map(|b| b.to_vec()).unwrap_or_default(),
        )
    }

    /// Polls `GET path` until `pred` holds (10 s), returning the last value.
    pub async fn wait_for(&self, path: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (_, v) = self.call("GET", path, None).await;
            if pred(&v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting on {path}; last: {v}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Runs a console command in an instance through the API; asserts it was answered.
pub async fn rcon(api: &Api, instance: &str, command: &str) -> String {
    let (s, v) = api
        .post(
            &format!("/api/v1/instances/{instance}/rcon"),
            serde_json::json!({ "command": command }),
        )
        .await;
    assert_eq!(s, 200, "rcon {command}: {v}");
    v["output"].as_str().unwrap_or_default().to_string()
}

/// Polls `f` every 50 ms until it holds, failing after `secs` seconds.
pub async fn wait_until<F, Fut>(what: &str, secs: u64, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Creates an instance with `config`, assigns it to `host` and starts it; asserts each step.
pub async fn create_and_start(api: &Api, name: &str, host: &str, config: serde_json::Value) {
    let (s, v) = api
        .post(
            "/api/v1/instances",
            serde_json::json!({ "name": name, "config": config }),
        )
        .await;
    assert_eq!(s, 201, "create {name}: {v}");
    let (s, v) = api
        .post(
            &format!("/api/v1/instances/{name}/assign"),
            serde_json::json!({ "host": host }),
        )
        .await;
    assert_eq!(s, 200, "assign {name}: {v}");
    let (s, v) = api
        .post(
            &format!("/api/v1/instances/{name}/start"),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(s, 200, "start {name}: {v}");
}
