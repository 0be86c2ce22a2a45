//! `/metrics` end to end: two hosts with factorio-sim instances, the per-host and per-instance
//! series with the values a user would check (players after joins, status after a stop, series
//! gone after a delete), promtool-clean; and the shipped Grafana dashboard's every query run
//! against Debian's real Prometheus scraping such a cluster.

mod common;

use common::cluster::{Api, HostProcess, rcon, wait_until};
use common::metrics::{Prometheus, have_tool, promtool_check, scrape, value, wait_metrics};
use common::{ControllerProcess, join_token};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

struct Cluster {
    c: ControllerProcess,
    api: Api,
    _hosts: Vec<HostProcess>,
}

/// A controller and hosts `h1`, `h2`.
fn cluster(root: &Path, env: &[(&str, &str)]) -> Cluster {
    let cdir = root.join("c");
    std::fs::create_dir_all(&cdir).unwrap();
    let c = ControllerProcess::start_with(&cdir, env);
    let api = Api::new(&c.url(""), &c.first_token);
    let join = join_token(&cdir);
    let hosts = ["h1", "h2"]
        .iter()
        .map(|h| HostProcess::start(&root.join(h), &c.url(""), &join, h, &[]))
        .collect();
    Cluster {
        c,
        api,
        _hosts: hosts,
    }
}

async fn create_on(api: &Api, name: &str, host: &str, config: Value) -> i64 {
    let (s, v) = api
        .post(
            "/api/v1/instances",
            json!({ "name": name, "config": config }),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = api
        .post(
            &format!("/api/v1/instances/{name}/assign"),
            json!({ "host": host }),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    v["id"].as_i64().unwrap()
}

async fn act(api: &Api, name: &str, verb: &str) {
    let (s, v) = api
        .post(&format!("/api/v1/instances/{name}/{verb}"), json!({}))
        .await;
    assert_eq!(s, 200, "{verb} {name}: {v}");
}

async fn host_id(api: &Api, name: &str) -> i64 {
    let hosts = api.get("/api/v1/hosts").await;
    hosts
        .as_array()
        .and_then(|a| a.iter().find(|h| h["name"] == name))
        .and_then(|h| h["id"].as_i64())
        .unwrap_or_else(|| panic!("host {name} in {hosts}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_each_host_and_instance_and_follow_changes() {
    let root = tempfile::tempdir().unwrap();
    let cl = cluster(root.path(), &[]);
    let api = &cl.api;
    let a = create_on(api, "alpha", "h1", json!({})).await;
    let b = create_on(api, "beta", "h2", json!({})).await;
    act(api, "alpha", "start").await;
    act(api, "beta", "start").await;
    let (h1, h2) = (host_id(api, "h1").await, host_id(api, "h2").await);
    let (a, b, h1, h2) = (a.to_string(), b.to_string(), h1.to_string(), h2.to_string());

    rcon(api, "alpha", "/standin join Alice").await;
    rcon(api, "alpha", "/standin join Bob").await;
    let m = wait_metrics(api, "two players in alpha and both hosts' samples", |m| {
        value(
            m,
            "clustorio_instance_players_online",
            &[("instance_id", &a)],
        ) == Some(2.0)
            && value(m, "clusterio_host_cpu_seconds_total", &[("host_id", &h1)]).is_some()
            && value(m, "clusterio_host_cpu_seconds_total", &[("host_id", &h2)]).is_some()
            && value(
                m,
                "clustorio_instance_factorio_resident_memory_bytes",
                &[("instance_id", &b)],
            )
            .is_some()
    })
    .await;
    let v = |name: &str, labels: &[(&str, &str)]| value(&m, name, labels);
    assert_eq!(
        v(
            "clustorio_instance_players_online",
            &[("instance_id", &b), ("instance_name", "beta")]
        ),
        Some(0.0)
    );
    assert_eq!(v("clustorio_players_online", &[]), Some(2.0));
    for (id, name, host, host_name) in [(&a, "alpha", &h1, "h1"), (&b, "beta", &h2, "h2")] {
        let status = [
            ("instance_id", id.as_str()),
            ("instance_name", name),
            ("host_id", host.as_str()),
            ("host_name", host_name),
            ("status", "running"),
        ];
        assert_eq!(v("clustorio_instance_status", &status), Some(1.0), "{m}");
        assert_eq!(
            v(
                "clusterio_controller_instance_mapping",
                &[
                    ("instance_id", id),
                    ("instance_name", name),
                    ("host_id", host)
                ]
            ),
            Some(1.0)
        );
        assert_eq!(
            v("clustorio_instance_starts_total", &[("instance_id", id)]),
            Some(1.0)
        );
        assert!(
            v(
                "clustorio_instance_factorio_resident_memory_bytes",
                &[("instance_id", id), ("host_id", host)]
            )
            .is_some_and(|rss| rss > 100_000.0),
            "{m}"
        );
        assert!(
            v(
                "clustorio_instance_factorio_cpu_seconds_total",
                &[("instance_id", id)]
            )
            .is_some()
        );
        let h = [("host_id", host.as_str()), ("host_name", host_name)];
        assert_eq!(v("clustorio_host_connected", &h), Some(1.0));
        assert_eq!(v("clusterio_controller_host_mapping", &h), Some(1.0));
        let running = [h[0], h[1], ("status", "running")];
        assert_eq!(v("clustorio_host_instances", &running), Some(1.0));
        assert!(v("clusterio_host_resident_memory_bytes", &h).is_some_and(|x| x > 1e6));
        assert!(v("clusterio_host_system_disk_available_bytes", &h).is_some_and(|x| x > 0.0));
        assert!(v("clusterio_host_system_memory_capacity_bytes", &h).is_some_and(|x| x > 0.0));
        assert!(v("clustorio_host_game_ports_free", &h).is_some());
    }
    assert_eq!(v("clustorio_hosts", &[("state", "connected")]), Some(2.0));
    assert_eq!(
        v("clustorio_instances", &[("status", "running")]),
        Some(2.0)
    );
    // Every status is there, zeros included.
    assert_eq!(
        v("clustorio_instances", &[("status", "crashed")]),
        Some(0.0)
    );
    // The standard process metrics, under their standard names, with sub-second CPU.
    let cpu = m
        .lines()
        .find(|l| l.starts_with("process_cpu_seconds_total "))
        .unwrap_or_else(|| panic!("process_cpu_seconds_total in\n{m}"));
    assert!(cpu.contains('.') || cpu.ends_with(" 0"), "{cpu}");
    assert!(v("process_resident_memory_bytes", &[]).is_some_and(|x| x > 1e6));
    assert!(!m.contains("clustorio_process_"), "{m}");

    // A player leaves, an instance stops.
    rcon(api, "alpha", "/standin leave Bob").await;
    act(api, "beta", "stop").await;
    let m = wait_metrics(api, "beta stopped, one player in alpha", |m| {
        value(
            m,
            "clustorio_instance_status",
            &[("instance_id", &b), ("status", "stopped")],
        ) == Some(1.0)
            && value(
                m,
                "clustorio_instance_players_online",
                &[("instance_id", &a)],
            ) == Some(1.0)
    })
    .await;
    assert!(
        value(
            &m,
            "clustorio_instance_status",
            &[("instance_id", &b), ("status", "running")]
        )
        .is_none(),
        "one status series per instance\n{m}"
    );
    assert_eq!(
        value(&m, "clustorio_instance_stops_total", &[("instance_id", &b)]),
        Some(1.0)
    );
    assert_eq!(
        value(&m, "clustorio_instances", &[("status", "stopped")]),
        Some(1.0)
    );

    // Deleted: every series of beta goes.
    let (s, v) = api.call("DELETE", "/api/v1/instances/beta", None).await;
    assert_eq!(s, 200, "{v}");
    let m = wait_metrics(api, "beta's series gone", |m| {
        !m.contains(&format!("instance_id=\"{b}\""))
    })
    .await;
    assert!(!m.contains("instance_name=\"beta\""), "{m}");
    assert!(m.contains(&format!("instance_id=\"{a}\"")), "{m}");

    // The web UI links the dashboard and scrape config served beside /metrics.
    let (s, dash) = api.get_bytes("/metrics/grafana-dashboard.json").await;
    assert_eq!(s, 200);
    let shipped = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docker/grafana/clustorio.json"
    ))
    .unwrap();
    assert_eq!(dash, shipped);
    let (s, _) = api.get_bytes("/metrics/prometheus.yml").await;
    assert_eq!(s, 200);

    let (body, content_type) = scrape(&api.base, &api.token).await;
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    if have_tool("promtool") {
        let complaints = promtool_check(&body);
        assert!(
            complaints.trim().is_empty(),
            "promtool check metrics:\n{complaints}"
        );
    }

    // A scraper that accepts gzip (Prometheus does) gets the same exposition gzipped.
    let resp = reqwest::Client::new()
        .get(format!("{}/metrics", api.base))
        .bearer_auth(&api.token)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(header("content-encoding"), "gzip");
    assert_eq!(
        header("content-type"),
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let gz = resp.bytes().await.unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gz[..]), &mut text)
        .expect("a valid gzip body");
    assert!(
        gz.len() < text.len(),
        "{} compressed vs {}",
        gz.len(),
        text.len()
    );
    assert_eq!(
        value(
            &text,
            "clustorio_instance_status",
            &[("instance_id", &a), ("status", "running")]
        ),
        Some(1.0),
        "{text}"
    );
    assert!(text.contains("\nprocess_cpu_seconds_total "), "{text}");
    if have_tool("promtool") {
        let complaints = promtool_check(&text);
        assert!(
            complaints.trim().is_empty(),
            "promtool check metrics (gzip):\n{complaints}"
        );
    }
    drop(cl.c);
}

/// `label_values(metric{…}, label)` of a Grafana variable, or None for another kind of query.
fn label_values(query: &str) -> Option<(String, String)> {
    let inner = query
        .trim()
        .strip_prefix("label_values(")?
        .strip_suffix(')')?;
    let (series, label) = inner.rsplit_once(',')?;
    Some((series.trim().to_string(), label.trim().to_string()))
}

/// A query with the dashboard's variables replaced by what "All" means.
fn substitute(expr: &str) -> String {
    let mut e = expr.to_string();
    for (var, value) in [
        ("$__rate_interval", "15s"),
        ("$__interval", "5s"),
        ("${job}", ".*"),
        ("$job", ".*"),
        ("${host}", ".*"),
        ("$host", ".*"),
        ("${instance}", ".*"),
        ("$instance", ".*"),
    ] {
        e = e.replace(var, value);
    }
    assert!(
        !e.contains('$'),
        "a variable the test does not know in {expr}"
    );
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_returns_data_from_real_prometheus() {
    if !have_tool("prometheus") {
        return;
    }
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/docker/grafana/clustorio.json"
        ))
        .expect("reading docker/grafana/clustorio.json"),
    )
    .expect("the dashboard is JSON");
    let root = tempfile::tempdir().unwrap();
    let cl = cluster(root.path(), &[("PLUGINS", "statistics_exporter")]);
    let api = &cl.api;
    let stats = json!({ "statistics_exporter": { "interval_s": 0.5 } });
    for (name, host) in [("north", "h1"), ("south", "h2"), ("flaky", "h1")] {
        create_on(api, name, host, stats.clone()).await;
        act(api, name, "start").await;
    }
    rcon(api, "north", "/standin join Alice").await;
    act(api, "south", "stop").await;
    act(api, "south", "start").await;
    // A crash (no restart configured): the crash counter exists.
    let _ = api
        .post(
            "/api/v1/instances/flaky/rcon",
            json!({ "command": "/standin crash" }),
        )
        .await;
    wait_until("flaky crashed", 30, || async {
        api.get("/api/v1/instances/flaky").await["status"] == "crashed"
    })
    .await;

    let pdir = root.path().join("prometheus");
    std::fs::create_dir_all(&pdir).unwrap();
    let prom = Prometheus::start(&pdir, cl.c.port, &api.token);
    wait_until("Prometheus scraped the controller", 60, || async {
        prom.query("up{job=\"clustorio\"} == 1")
            .await
            .is_ok_and(|r| !r.is_empty())
    })
    .await;

    // The variables: every label_values query lists values.
    let vars = dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list");
    let mut checked = BTreeMap::new();
    for var in vars.iter().filter(|v| v["type"] == "query") {
        let q = var["query"]["query"]
            .as_str()
            .or(var["query"].as_str())
            .unwrap_or_default();
        let (series, label) = label_values(q)
            .unwrap_or_else(|| panic!("variable {}: unsupported query {q}", var["name"]));
        let matcher = substitute(&series);
        let values = prom
            .api(
                &format!("/api/v1/label/{label}/values"),
                &[("match[]", matcher.as_str())],
            )
            .await
            .unwrap_or_else(|e| panic!("variable {}: {e}", var["name"]));
        assert!(
            values.as_array().is_some_and(|a| !a.is_empty()),
            "variable {} ({q}) lists no values",
            var["name"]
        );
        checked.insert(format!("variable {}", var["name"]), values);
    }

    // Every target of every panel (rows hold panels too when collapsed).
    let mut targets = Vec::new();
    let mut stack: Vec<&Value> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .collect();
    while let Some(p) = stack.pop() {
        if let Some(inner) = p["panels"].as_array() {
            stack.extend(inner.iter());
        }
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("panel {}: a target without expr", p["title"]));
            targets.push((
                p["title"].as_str().unwrap_or_default().to_string(),
                substitute(expr),
            ));
        }
    }
    assert!(targets.len() >= 20, "{} queries", targets.len());
    // Rates need two scrapes in their window; give each query time to fill.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut missing = Vec::new();
    for (title, expr) in &targets {
        loop {
            match prom.query(expr).await {
                Ok(r) if !r.is_empty() => break,
                Ok(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(500)).await
                }
                Ok(_) => {
                    missing.push(format!("panel '{title}': no data for {expr}"));
                    break;
                }
                Err(e) => {
                    missing.push(format!("panel '{title}': {expr} failed: {e}"));
                    break;
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} queries:\n{}",
        missing.len(),
        targets.len(),
        missing.join("\n")
    );
    eprintln!(
        "{} dashboard queries and {} variables returned data",
        targets.len(),
        checked.len()
    );
}
