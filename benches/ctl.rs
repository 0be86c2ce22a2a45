//! ctl benchmark: wall time of whole `clustorio ctl` invocations (process start, HTTP call,
//! output) against a controller holding 1,000 instances. Figures in BENCHMARKS.md come from here.
//! Run: `cargo bench --bench ctl` (release build; prints a Markdown table).

#[path = "../tests/common/mod.rs"]
mod common;

use common::{ControllerProcess, bin};
use serde_json::json;
use std::process::{Command, Stdio};
use std::time::Instant;

const INSTANCES: usize = 1_000;
const RUNS: usize = 50;

fn ctl(url: &str, token: &str, args: &[&str]) -> f64 {
    let start = Instant::now();
    let out = Command::new(bin("clustorio"))
        .arg("ctl")
        .args(args)
        .env("CLUSTORIO_URL", url)
        .env("CLUSTORIO_TOKEN", token)
        .env_remove("CLUSTORIO_CONFIG")
        .stdin(Stdio::null())
        .output()
        .expect("running clustorio ctl");
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    assert!(
        out.status.success(),
        "ctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    ms
}

/// (median, p90, min) of `runs` timings.
fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (v[v.len() / 2], v[v.len() * 9 / 10], v[0])
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = ControllerProcess::start(dir.path());
    let url = c.url("");
    let token = c.first_token.clone();

    // 1,000 instances, created over REST with a few clients.
    let client = reqwest::Client::new();
    let mut tasks = Vec::new();
    for w in 0..8 {
        let (client, url, token) = (client.clone(), c.url("/api/v1/instances"), token.clone());
        tasks.push(tokio::spawn(async move {
            for n in (w..INSTANCES).step_by(8) {
                let r = client
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&json!({ "name": format!("seed-{n}") }))
                    .send()
                    .await
                    .expect("create");
                assert_eq!(r.status().as_u16(), 201);
            }
        }));
    }
    for t in tasks {
        t.await.expect("seeding task");
    }

    // The controller's share: the same GET from inside this process, new connection each time.
    let mut raw = Vec::new();
    for _ in 0..=RUNS {
        let start = Instant::now();
        let body = reqwest::Client::new()
            .get(c.url("/api/v1/instances"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("GET /instances")
            .bytes()
            .await
            .expect("body");
        assert!(body.len() > INSTANCES * 50);
        raw.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    raw.remove(0);
    let (median, p90, min) = stats(raw);
    let raw_row = format!(
        "| for reference: `GET /api/v1/instances` (1,000) from a running process | {median:.1} ms | {p90:.1} ms | {min:.1} ms |"
    );

    let mut rows = Vec::new();
    let mut measure = |label: &str, f: &mut dyn FnMut(usize) -> f64| {
        f(usize::MAX); // warm-up: page cache, controller statements
        let times: Vec<f64> = (0..RUNS).map(&mut *f).collect();
        let (median, p90, min) = stats(times);
        rows.push(format!(
            "| {label} | {median:.1} ms | {p90:.1} ms | {min:.1} ms |"
        ));
    };
    measure("`ctl instance list` (table of 1,000)", &mut |_| {
        ctl(&url, &token, &["instance", "list"])
    });
    measure("`ctl instance list --json` (1,000)", &mut |_| {
        ctl(&url, &token, &["instance", "list", "--json"])
    });
    measure("`ctl instance create NAME`", &mut |n| {
        let name = if n == usize::MAX {
            "warm".to_string()
        } else {
            format!("bench-{n}")
        };
        ctl(&url, &token, &["instance", "create", &name])
    });
    measure("`ctl instance show NAME`", &mut |_| {
        ctl(&url, &token, &["instance", "show", "seed-500"])
    });
    measure("`ctl status`", &mut |_| ctl(&url, &token, &["status"]));

    println!(
        "\nclustorio ctl against a controller with {INSTANCES} instances, {RUNS} runs each \
         (whole process: start, HTTP call, output)\n"
    );
    println!("| command | median | p90 | min |");
    println!("|---|---|---|---|");
    for row in rows {
        println!("{row}");
    }
    println!("{raw_row}");
}
