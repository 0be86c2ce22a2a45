//! The image run the way a panel runs it (research/egg.md §3.3): read-only root, 100 MB tmpfs
//! /tmp, pids limit 512, an arbitrary uid, the server volume at /home/container, STARTUP and the
//! panel's variables, a TTY on stdin. Plus the egg's install script in an install container, and
//! a master with two slaves on a Docker network of the test's own.
//!
//! The image is built once per run by `docker/build-image.sh` (which makes its base image from
//! debootstrap when it is missing). These tests need a Docker daemon.

mod common;

use common::cluster::Api;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const IMAGE: &str = "ghcr.io/clustorio/clustorio:latest";
/// The uid a panel runs the container as: not in the image's passwd.
const UID: &str = "12345:12345";

fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("running docker")
}

fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Builds the image once for all tests in this file.
fn image() -> &'static str {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let st = Command::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/docker/build-image.sh"
        ))
        .arg(IMAGE)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("docker/build-image.sh");
        assert!(st.success(), "building the image failed");
    });
    IMAGE
}

/// A container removed when dropped.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.0]);
    }
}

struct Network(String);

impl Drop for Network {
    fn drop(&mut self) {
        let _ = docker(&["network", "rm", &self.0]);
    }
}

fn unique(what: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    format!(
        "clustorio-test-{}-{what}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    )
}

/// A directory the container's arbitrary uid can write.
fn volume(root: &Path, name: &str) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    Command::new("chmod")
        .args(["-R", "a+rwX"])
        .arg(&dir)
        .status()
        .unwrap();
    dir
}

/// `docker create` with the settings Wings uses, then start.
fn panel_container(name: &str, volume: &Path, env: &[(&str, &str)], extra: &[&str]) -> Container {
    let mut args: Vec<String> = [
        "create",
        "--name",
        name,
        "-i",
        "-t",
        "--read-only",
        "--tmpfs",
        "/tmp:rw,exec,nosuid,size=100m",
        "--pids-limit",
        "512",
        "--user",
        UID,
        "--security-opt",
        "no-new-privileges",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for cap in [
        "setpcap",
        "mknod",
        "audit_write",
        "net_raw",
        "dac_override",
        "fowner",
        "fsetid",
        "net_bind_service",
        "sys_chroot",
        "setfcap",
    ] {
        args.push("--cap-drop".into());
        args.push(cap.into());
    }
    args.push("-v".into());
    args.push(format!("{}:/home/container", volume.display()));
    args.extend([
        "-e".into(),
        "STARTUP=clustorio entrypoint".into(),
        "-e".into(),
        "TZ=UTC".into(),
    ]);
    for (k, v) in env {
        args.push("-e".into());
        args.push(format!("{k}={v}"));
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push(image().to_string());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    docker_ok(&refs);
    let c = Container(name.to_string());
    docker_ok(&["start", name]);
    c
}

fn logs(name: &str) -> String {
    let out = docker(&["logs", name]);
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Waits until the container's output has `n` lines containing `needle`.
fn wait_log(name: &str, needle: &str, n: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let l = logs(name);
        if l.matches(needle).count() >= n {
            return l;
        }
        assert!(
            Instant::now() < deadline,
            "'{needle}' x{n} did not appear in {name}:\n{l}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Types lines into the container's console through its TTY, as the panel's console does.
fn console(name: &str, lines: &[&str]) {
    let mut child = Command::new("script")
        .args([
            "-qec",
            &format!("docker attach --sig-proxy=false {name}"),
            "/dev/null",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("script (util-linux) to attach with a TTY");
    {
        use std::io::Write;
        let stdin = child.stdin.as_mut().unwrap();
        std::thread::sleep(Duration::from_millis(500));
        for line in lines {
            write!(stdin, "{line}\r").unwrap();
            stdin.flush().unwrap();
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
}

fn exit_code(name: &str) -> i64 {
    docker_ok(&["wait", name]).parse().unwrap()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn the_image_runs_as_a_panel_runs_it_and_keeps_user_edits() {
    let root = tempfile::tempdir().unwrap();
    let vol = volume(root.path(), "server");
    let name = unique("wings");
    let env = [
        ("SERVER_MODE", "master"),
        ("SERVER_PORT", "8081"),
        ("CLUSTER_NAME", "Panel Cluster"),
        ("LOG_LEVEL", "info"),
    ];
    let _c = panel_container(&name, &vol, &env, &[]);
    let out = wait_log(&name, "Started", 1);
    assert!(
        out.contains(":/home/container$ clustorio entrypoint"),
        "the entrypoint prints the command"
    );
    assert!(out.contains("Login token (shown once): clu_"));
    let cfg = read_json(&vol.join("config-master.json"));
    assert_eq!(cfg["port"], 8081);
    assert_eq!(cfg["cluster_name"], "Panel Cluster");

    // The console's `stop` stops it cleanly.
    console(&name, &["status", "stop"]);
    assert_eq!(exit_code(&name), 0);
    let out = logs(&name);
    assert!(
        out.contains("cluster 'Panel Cluster'"),
        "status answered: {out}"
    );

    // A user edits the config; the next start keeps the edit and sets what the panel owns.
    let mut cfg = read_json(&vol.join("config-master.json"));
    cfg["metrics_public"] = json!(true);
    cfg["my_note"] = json!("kept");
    cfg["cluster_name"] = json!("edited by hand");
    std::fs::write(
        vol.join("config-master.json"),
        serde_json::to_vec_pretty(&cfg).unwrap(),
    )
    .unwrap();
    docker_ok(&["start", &name]);
    wait_log(&name, "Started", 2);
    let cfg = read_json(&vol.join("config-master.json"));
    assert_eq!(cfg["my_note"], "kept");
    assert_eq!(cfg["metrics_public"], true);
    assert_eq!(
        cfg["cluster_name"], "Panel Cluster",
        "the panel's variable wins"
    );
    // SIGINT (the image's STOPSIGNAL, what `docker stop` sends) also stops it cleanly.
    docker_ok(&["stop", &name]);
    assert_eq!(exit_code(&name), 0);

    // A misconfigured server says what to fix, in one line, with exit code 2.
    let bad = unique("bad");
    let _b = panel_container(
        &bad,
        &volume(root.path(), "bad"),
        &[("SERVER_MODE", "slave")],
        &[],
    );
    assert_eq!(exit_code(&bad), 2);
    assert!(
        logs(&bad).contains("MASTER_URL is not set"),
        "{}",
        logs(&bad)
    );
}

/// Serves a sim tarball shaped like a Factorio release: `/get-download/<v>/headless/linux64`
/// redirects to `/releases/factorio_headless_x64_<v>.tar.xz`; `/sha256sums/` lists checksums.
async fn release_server(root: &Path) -> u16 {
    use warp::Filter;
    let sim_root = root.join("sim");
    let st = Command::new(common::bin("factorio-sim"))
        .arg("install")
        .arg(sim_root.join("factorio"))
        .args(["--version", "2.0.77"])
        .status()
        .unwrap();
    assert!(st.success());
    // The install may hard-link the sim binary, which other tests link too (changing its ctime
    // under tar's feet): pack a private copy.
    let packed = root.join("packed");
    std::fs::create_dir_all(&packed).unwrap();
    let st = Command::new("cp")
        .arg("-r")
        .arg(sim_root.join("factorio"))
        .arg(&packed)
        .status()
        .unwrap();
    assert!(st.success());
    let tarball = root.join("good.tar.xz");
    let st = Command::new("tar")
        .arg("-cJf")
        .arg(&tarball)
        .arg("-C")
        .arg(&packed)
        .arg("factorio")
        .status()
        .unwrap();
    assert!(st.success());
    let good = std::fs::read(&tarball).unwrap();
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&good))
    };
    let sums = format!(
        "{sha}  factorio_headless_x64_2.0.77.tar.xz\n0000  factorio_headless_x64_2.0.76.tar.xz\n"
    );
    let broken = good[..good.len() / 2].to_vec();
    let redirect =
        warp::path!("get-download" / String / "headless" / "linux64").map(|v: String| {
            let file = match v.as_str() {
                "stable" | "latest" | "2.0.77" => "factorio_headless_x64_2.0.77.tar.xz".to_string(),
                "2.0.76" => "factorio_headless_x64_2.0.76.tar.xz".to_string(),
                _ => {
                    return warp::http::Response::builder()
                        .status(404)
                        .body(Vec::new())
                        .unwrap();
                }
            };
            warp::http::Response::builder()
                .status(302)
                .header("location", format!("/releases/{file}"))
                .body(Vec::new())
                .unwrap()
        });
    let releases = warp::path!("releases" / String).map(move |f: String| {
        let body = if f.contains("2.0.77") {
            good.clone()
        } else {
            broken.clone()
        };
        warp::http::Response::builder().body(body).unwrap()
    });
    let sums = warp::path!("sha256sums").map(move || sums.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(
        warp::serve(redirect.or(releases).or(sums))
            .incoming(listener)
            .run(),
    );
    port
}

fn install(dir: &Path, port: u16, mode: &str, version: &str) -> String {
    let out = docker(&[
        "run",
        "--rm",
        "--network",
        "host",
        "--user",
        "0",
        "--entrypoint",
        "bash",
        "-v",
        &format!("{}:/mnt/server", dir.display()),
        "-v",
        concat!(env!("CARGO_MANIFEST_DIR"), "/egg:/mnt/install:ro"),
        "-e",
        &format!("SERVER_MODE={mode}"),
        "-e",
        &format!("FACTORIO_VERSION={version}"),
        "-e",
        &format!("FACTORIO_DOWNLOAD_URL=http://127.0.0.1:{port}/get-download"),
        "-e",
        &format!("FACTORIO_SHA256_URL=http://127.0.0.1:{port}/sha256sums"),
        image(),
        "/mnt/install/install.sh",
    ]);
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_install_script_installs_factorio_and_fails_clearly() {
    let root = tempfile::tempdir().unwrap();
    let port = release_server(root.path()).await;
    let dir = volume(root.path(), "slave");
    std::fs::write(dir.join("config-slave.json"), "{\"host_token\": \"keep\"}").unwrap();
    let out = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || install(&dir, port, "slave", "2.0.77")
    })
    .await
    .unwrap();
    assert!(
        out.contains("checksum OK") && out.contains("clustorio install: OK"),
        "{out}"
    );
    assert!(out.contains("installed Version: 2.0.77"), "{out}");
    assert!(dir.join("factorio/bin/x64/factorio").exists());
    assert!(dir.join("factorio/data/base/info.json").exists());
    assert_eq!(
        read_json(&dir.join("config-slave.json"))["host_token"],
        "keep",
        "a reinstall keeps configuration"
    );

    for (mode, version, expect) in [
        (
            "slave",
            "nightly",
            "FACTORIO_VERSION must be stable, latest or a version number",
        ),
        ("slave", "9.9.9", "could not download Factorio 9.9.9"),
        ("slave", "2.0.76", "checksum mismatch"),
        ("bogus", "stable", "SERVER_MODE must be master or slave"),
    ] {
        let d = volume(root.path(), &format!("bad-{version}-{mode}"));
        let out = tokio::task::spawn_blocking(move || install(&d, port, mode, version))
            .await
            .unwrap();
        assert!(
            out.contains("clustorio install FAILED") && out.contains(expect),
            "{mode}/{version}: {out}"
        );
    }
    let d = volume(root.path(), "master");
    let out = tokio::task::spawn_blocking(move || install(&d, port, "master", "stable"))
        .await
        .unwrap();
    assert!(
        out.contains("Factorio is not needed") && out.contains("OK"),
        "{out}"
    );
}

fn published(name: &str, port: &str) -> String {
    let out = docker_ok(&["port", name, port]);
    out.lines().next().unwrap().to_string()
}

fn factorio_pids(name: &str) -> Vec<String> {
    docker_ok(&["top", name, "-o", "pid,args"])
        .lines()
        .filter(|l| l.contains("bin/x64/factorio") && l.contains("--start-server"))
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_and_two_slaves_on_a_docker_network() {
    let root = tempfile::tempdir().unwrap();
    let net = Network(unique("net"));
    docker_ok(&["network", "create", &net.0]);
    let mvol = volume(root.path(), "master");
    // A user edit before the first start: a fast heartbeat, so a cut-off slave is noticed quickly.
    std::fs::write(
        mvol.join("config-master.json"),
        r#"{"heartbeat_interval_ms": 500}"#,
    )
    .unwrap();
    Command::new("chmod")
        .args(["a+rw"])
        .arg(mvol.join("config-master.json"))
        .status()
        .unwrap();
    let master = unique("master");
    let net_args = [
        "--network",
        net.0.as_str(),
        "--network-alias",
        "master",
        "-p",
        "127.0.0.1::8081",
    ];
    let _m = panel_container(
        &master,
        &mvol,
        &[("SERVER_MODE", "master"), ("SERVER_PORT", "8081")],
        &net_args,
    );
    let out = wait_log(&master, "Started", 1);
    let token = out
        .split("Login token (shown once): ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let api = Api::new(
        &format!("http://{}", published(&master, "8081/tcp")),
        &token,
    );
    let join = api.get("/api/v1/join-token").await["token"]
        .as_str()
        .unwrap()
        .to_string();

    let mut slaves = Vec::new();
    for s in ["slave-1", "slave-2"] {
        let vol = root.path().join(s);
        common::cluster::install_sim(&vol);
        let vol = volume(root.path(), s);
        let name = unique(s);
        let env = [
            ("SERVER_MODE", "slave"),
            ("SERVER_PORT", "34197"),
            ("MASTER_URL", "http://master:8081"),
            ("MASTER_TOKEN", join.as_str()),
            ("SLAVE_NAME", s),
            ("FACTORIO_STANDIN_SPEED", "0.02"),
        ];
        let c = panel_container(
            &name,
            &vol,
            &env,
            &["--network", net.0.as_str(), "-p", "127.0.0.1::34197/udp"],
        );
        wait_log(&name, "Started", 1);
        slaves.push((name, c));
    }
    let hosts = api.get("/api/v1/hosts").await;
    assert_eq!(hosts.as_array().unwrap().len(), 2, "{hosts}");

    for i in ["east", "west"] {
        assert_eq!(
            api.post("/api/v1/instances", json!({"name": i})).await.0,
            201
        );
        assert_eq!(
            api.post(&format!("/api/v1/instances/{i}/assign"), json!({}))
                .await
                .0,
            200
        );
        let (s, v) = api
            .post(&format!("/api/v1/instances/{i}/start"), json!({}))
            .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["status"], "running");
        assert_eq!(v["game_port"], 34197, "the slave's allocation");
    }
    let east = api.get("/api/v1/instances/east").await;
    let west = api.get("/api/v1/instances/west").await;
    assert_ne!(east["host"], west["host"], "one instance on each slave");
    for (name, _) in &slaves {
        assert!(
            published(name, "34197/udp").starts_with("127.0.0.1:"),
            "the game port is published"
        );
        assert_eq!(factorio_pids(name).len(), 1);
    }
    api.post("/api/v1/users", json!({"name": "engineer"})).await;

    // Stop and start the master container: nothing is lost, the slaves come back by themselves.
    docker_ok(&["stop", &master]);
    assert_eq!(exit_code(&master), 0);
    docker_ok(&["start", &master]);
    wait_log(&master, "Started", 2);
    let api = Api::new(
        &format!("http://{}", published(&master, "8081/tcp")),
        &token,
    );
    api.wait_for("/api/v1/hosts", |h| {
        h.as_array()
            .is_some_and(|h| h.len() == 2 && h.iter().all(|h| h["connected"] == true))
    })
    .await;
    api.wait_for("/api/v1/instances", |v| {
        v.as_array()
            .is_some_and(|v| v.len() == 2 && v.iter().all(|i| i["status"] == "running"))
    })
    .await;
    assert!(
        api.get("/api/v1/users")
            .await
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["name"] == "engineer")
    );

    // Cut one slave off the network: its instance keeps running; reconnected, it comes back.
    let (cut, _) = &slaves[0];
    let cut_host = api
        .get("/api/v1/hosts")
        .await
        .as_array()
        .unwrap()
        .iter()
        .find(|h| cut.contains(h["name"].as_str().unwrap()))
        .unwrap()["name"]
        .clone();
    let before = factorio_pids(cut);
    docker_ok(&["network", "disconnect", &net.0, cut]);
    api.wait_for("/api/v1/hosts", |h| {
        h.as_array().is_some_and(|h| {
            h.iter()
                .any(|h| h["name"] == cut_host && h["connected"] == false)
        })
    })
    .await;
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        factorio_pids(cut),
        before,
        "the instance keeps running while cut off"
    );
    docker_ok(&["network", "connect", &net.0, cut]);
    api.wait_for("/api/v1/hosts", |h| {
        h.as_array()
            .is_some_and(|h| h.iter().all(|h| h["connected"] == true))
    })
    .await;
    api.wait_for("/api/v1/instances", |v| {
        v.as_array()
            .is_some_and(|v| v.iter().all(|i| i["status"] == "running"))
    })
    .await;
    assert_eq!(factorio_pids(cut), before, "not restarted");
}
