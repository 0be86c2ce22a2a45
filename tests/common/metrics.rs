//! Helpers for tests of `/metrics`: the scrape itself, reading one series' value, and Debian's
//! Prometheus tools (`promtool`, `prometheus`), which must be installed when `CI` is set.
#![allow(dead_code)]

use super::cluster::{Api, free_tcp_port};
use serde_json::Value;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `/metrics` body and its Content-Type.
pub async fn scrape(base: &str, token: &str) -> (String, String) {
    let resp = reqwest::Client::new()
        .get(format!("{base}/metrics"))
        .bearer_auth(token)
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(resp.status().as_u16(), 200, "GET /metrics");
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (resp.text().await.expect("metrics body"), ct)
}

/// The value of the first sample of `name` whose labels include every `labels` pair.
pub fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
        })
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Polls `/metrics` until `pred` holds (30 s); returns that body.
pub async fn wait_metrics(api: &Api, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (m, _) = scrape(&api.base, &api.token).await;
        if pred(&m) {
            return m;
        }
        assert!(Instant::now() < deadline, "timed out: {what}\n{m}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// True when `tool` is on PATH. Absent outside CI: the caller skips, saying why. Absent in CI:
/// a failure (`.ci/run` installs the `prometheus` package).
pub fn have_tool(tool: &str) -> bool {
    let found = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{tool} is not installed but CI is set: install Debian's `prometheus` package"
        );
        eprintln!(
            "SKIPPED: {tool} is not installed (apt-get install prometheus); this test runs in CI"
        );
    }
    found
}

/// `promtool check metrics` on `text`: its complaints, empty when clean.
pub fn promtool_check(text: &str) -> String {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running promtool");
    child
        .stdin
        .take()
        .expect("promtool stdin")
        .write_all(text.as_bytes())
        .expect("writing to promtool");
    let out = child.wait_with_output().expect("promtool output");
    let mut s = String::from_utf8_lossy(&out.stdout).to_string();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    if !out.status.success() && s.trim().is_empty() {
        s = format!("promtool exited with {}", out.status);
    }
    s
}

/// Debian's Prometheus server on loopback, scraping one controller every second. Killed on drop.
pub struct Prometheus {
    child: Child,
    pub base: String,
    client: reqwest::Client,
}

impl Prometheus {
    pub fn start(dir: &Path, controller_port: u16, token: &str) -> Self {
        let port = free_tcp_port();
        std::fs::write(dir.join("token"), token).expect("writing the token file");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: clustorio\n    metrics_path: /metrics\n    authorization:\n      type: Bearer\n      credentials_file: {}\n    static_configs:\n      - targets: [\"127.0.0.1:{controller_port}\"]\n",
            dir.join("token").display()
        );
        let cfg = dir.join("prometheus.yml");
        std::fs::write(&cfg, config).expect("writing prometheus.yml");
        let log = std::fs::File::create(dir.join("prometheus.log")).expect("prometheus log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("starting prometheus");
        Prometheus {
            child,
            base: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::new(),
        }
    }

    /// GET on the HTTP API; the `data` of a success, None otherwise (not up yet, bad query).
    pub async fn api(&self, path: &str, query: &[(&str, &str)]) -> Result<Value, String> {
        let url = reqwest::Url::parse_with_params(&format!("{}{path}", self.base), query)
            .map_err(|e| e.to_string())?;
        let resp = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let v: Value = resp.json().await.map_err(|e| e.to_string())?;
        if v["status"] == "success" {
            Ok(v["data"].clone())
        } else {
            Err(v.to_string())
        }
    }

    /// An instant query's result vector (empty: no data).
    pub async fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let data = self.api("/api/v1/query", &[("query", expr)]).await?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
