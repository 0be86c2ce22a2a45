//! `clustorio demo`: a controller, one host and two instances on factorio-sim with a few
//! simulated players chatting — a first look at a working cluster in one command. The demo runs
//! the real roles as child processes of this binary; only its Factorio is the stand-in, and the
//! simulated players come through the stand-in's own script channel.

use anyhow::{Context, bail};
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Names players chat with in the demo.
const PLAYERS: &[&str] = &["Alice", "Bob", "Chandra"];

pub struct DemoOptions {
    pub dir: Option<PathBuf>,
    pub port: u16,
}

/// `factorio-sim`, beside this binary (both are built by `cargo build --workspace`).
fn find_sim() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating this binary")?;
    let sim = exe.with_file_name("factorio-sim");
    if sim.is_file() {
        Ok(sim)
    } else {
        bail!(
            "factorio-sim was not found next to {} — build it with `cargo build --release --workspace`",
            exe.display()
        )
    }
}

/// A script of joins and chat for the stand-in (`FACTORIO_STANDIN_SCRIPT`), looping a while.
fn player_script(dir: &Path) -> anyhow::Result<PathBuf> {
    let mut lines = Vec::new();
    let mut at = 2_000u64;
    for round in 0..200u64 {
        for (i, name) in PLAYERS.iter().enumerate() {
            if round == 0 {
                lines.push(json!({"at_ms": at, "do": "join", "name": name}).to_string());
                at += 1_500;
            }
            let text = match (round + i as u64) % 4 {
                0 => "anyone seen my iron plates?",
                1 => "the main bus needs more copper",
                2 => "research done, rocket soon",
                _ => "gg",
            };
            lines.push(json!({"at_ms": at, "do": "chat", "name": name, "text": text}).to_string());
            at += 7_000;
        }
    }
    let path = dir.join("demo-players.jsonl");
    std::fs::write(&path, lines.join("\n"))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Starts a child and waits for its line containing `Started`; returns the lines before it.
fn start_child(mut cmd: Command, what: &str) -> anyhow::Result<(Child, Vec<String>)> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .stdin(Stdio::null())
        .spawn()
        .with_context(|| format!("starting the {what}"))?;
    let stdout = child.stdout.take().context("child stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line.clone()).is_err() {
                // Nobody listens any more: keep echoing so the child never blocks on a full pipe.
                println!("{line}");
            }
        }
    });
    let mut seen = Vec::new();
    loop {
        let line = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => line,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                bail!("the {what} did not start within 60 s")
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                let status = child
                    .wait()
                    .with_context(|| format!("waiting for the {what}"))?;
                bail!("the {what} stopped before it started ({status}); its error is above")
            }
        };
        let started = line.contains("Started");
        seen.push(line);
        if started {
            return Ok((child, seen));
        }
    }
}

pub async fn run(opts: DemoOptions) -> anyhow::Result<()> {
    let sim = find_sim()?;
    // A taken port is the common failure: say so before anything is created or started.
    if let Err(e) = std::net::TcpListener::bind(("0.0.0.0", opts.port)) {
        bail!(
            "port {} cannot be used ({e}): is another demo or controller running? \
             Pick another with `clustorio demo --port N`",
            opts.port
        );
    }
    let Some(dir) = opts.dir.clone() else {
        // A temporary directory of our own is removed again when the demo fails to start.
        let dir = std::env::temp_dir().join(format!("clustorio-demo-{}", std::process::id()));
        let result = run_in(opts, sim, dir.clone()).await;
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        return result;
    };
    run_in(opts, sim, dir).await
}

async fn run_in(opts: DemoOptions, sim: PathBuf, dir: PathBuf) -> anyhow::Result<()> {
    let (cdir, hdir) = (dir.join("controller"), dir.join("host"));
    for d in [&cdir, &hdir] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    if !hdir.join("factorio/bin/x64/factorio").exists() {
        let st = Command::new(&sim)
            .arg("install")
            .arg(hdir.join("factorio"))
            .status()?;
        if !st.success() {
            bail!("factorio-sim install failed");
        }
    }
    let exe = std::env::current_exe()?;

    let mut ccmd = Command::new(&exe);
    ccmd.args([
        "controller",
        "run",
        "--port",
        &opts.port.to_string(),
        "--dir",
    ])
    .arg(&cdir)
    .env("CLUSTER_NAME", "Demo Cluster");
    let (mut controller, lines) = start_child(ccmd, "controller")?;
    let url = format!("http://127.0.0.1:{}", opts.port);
    let token_out = Command::new(&exe)
        .args(["controller", "token", "--user", "admin", "--dir"])
        .arg(&cdir)
        .output()?;
    let admin_token = String::from_utf8_lossy(&token_out.stdout)
        .trim()
        .to_string();
    let join_out = Command::new(&exe)
        .args(["controller", "token", "--join", "--dir"])
        .arg(&cdir)
        .output()?;
    let join = String::from_utf8_lossy(&join_out.stdout).trim().to_string();
    drop(lines);

    // Two ports for the demo's instances and two free for the README's walkthrough.
    let ports: Vec<String> = (0..4)
        .map(|_| {
            std::net::UdpSocket::bind("0.0.0.0:0")
                .and_then(|s| s.local_addr())
                .map(|a| a.port().to_string())
        })
        .collect::<Result<_, _>>()?;
    let mut hcmd = Command::new(&exe);
    hcmd.args(["host", "run", "--dir"])
        .arg(&hdir)
        .env("MASTER_URL", &url)
        .env("MASTER_TOKEN", &join)
        .env("SLAVE_NAME", "demo-host")
        .env("SERVER_PORT", ports.join(","))
        .env("FACTORIO_STANDIN_SCRIPT", player_script(&dir)?);
    let (mut host, _) = match start_child(hcmd, "host") {
        Ok(h) => h,
        Err(e) => {
            let _ = controller.kill();
            return Err(e);
        }
    };

    let client = reqwest::Client::new();
    for name in ["nauvis", "vulcanus"] {
        let post = |path: String, body: serde_json::Value| {
            client
                .post(format!("{url}{path}"))
                .bearer_auth(&admin_token)
                .json(&body)
                .send()
        };
        post("/api/v1/instances".into(), json!({ "name": name, "config": { "server_settings": { "description": "clustorio demo" } } })).await?;
        post(format!("/api/v1/instances/{name}/assign"), json!({})).await?;
        let resp = post(format!("/api/v1/instances/{name}/start"), json!({})).await?;
        if !resp.status().is_success() {
            eprintln!(
                "starting {name} failed: {}",
                resp.text().await.unwrap_or_default()
            );
        }
    }

    println!();
    println!("clustorio demo is running in {}", dir.display());
    println!("  web UI and API:  {url}/");
    println!("  admin token:     {admin_token}");
    println!(
        "  try:             curl -s -H 'Authorization: Bearer {admin_token}' {url}/api/v1/instances"
    );
    println!("Press Ctrl-C to stop (instances are saved and stopped).");

    let shutdown = crate::shutdown::Shutdown::new();
    shutdown.listen_for_signals()?;
    shutdown.wait().await;
    // Ctrl-C reaches the children too (same process group); SIGINT them anyway for SIGTERM.
    for child in [&host, &controller] {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGINT);
        }
    }
    let _ = tokio::task::spawn_blocking(move || {
        let _ = host.wait();
        let _ = controller.wait();
    })
    .await;
    println!("demo stopped; its files stay in {}", dir.display());
    Ok(())
}
