//! The image run the way a panel runs it (research/egg.md §3.3): read-only root, 100 MB tmpfs
//! /tmp, pids limit 512, an arbitrary uid, the server volume at /home/container, STARTUP and the
//! panel's variables, a TTY on stdin. Plus the egg's install script in an install container, and
//! a master with two slaves on a Docker network of the test's own.
//!
//! The image is built once per run by `docker/build-image.sh` (which makes its base image from
//! debootstrap when it is missing), tagged as the egg names it. These tests need a Docker daemon;
//! without one they say so and pass. Containers and networks are removed even when a test fails.

mod common;

use common::cluster::Api;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The uid a panel runs the container as: not in the image's passwd.
const UID: &str = "12345:12345";

fn egg() -> &'static Value {
    static EGG: OnceLock<Value> = OnceLock::new();
    EGG.get_or_init(|| {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/egg/egg-clustorio.json"
        ))
        .unwrap();
        serde_json::from_str(&text).unwrap()
    })
}

/// The egg's `config.startup.done` marker and `config.stop` command.
fn done_marker() -> String {
    let startup: Value =
        serde_json::from_str(egg()["config"]["startup"].as_str().unwrap()).unwrap();
    startup["done"].as_str().unwrap().to_string()
}

fn stop_command() -> &'static str {
    egg()["config"]["stop"].as_str().unwrap()
}

/// Is there a Docker daemon? Without one the tests print why they skip.
fn docker_available(test: &str) -> bool {
    static UP: OnceLock<bool> = OnceLock::new();
    let up = *UP.get_or_init(|| {
        Command::new("docker")
            .args(["info", "--format", "{{.ServerVersion}}"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if !up {
        eprintln!("SKIPPED {test}: no Docker daemon (`docker info` failed)");
    }
    up
}

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

/// Builds the image the egg names, once for all tests in this file.
fn image() -> &'static str {
    static BUILT: OnceLock<String> = OnceLock::new();
    BUILT.get_or_init(|| {
        let images = egg()["docker_images"].as_object().unwrap();
        let image = images.values().next().unwrap().as_str().unwrap();
        // `~` means "local, never pull" to Wings; the tag itself follows it.
        let image = image.trim_start_matches('~').to_string();
        let st = Command::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/docker/build-image.sh"
        ))
        .arg(&image)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("docker/build-image.sh");
        assert!(st.success(), "building the image failed");
        image
    })
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

/// The environment Wings gives a server container (research/egg.md §3.3): its own variables
/// (`STARTUP` raw, as Pterodactyl sends it), then every egg variable — the server's value from
/// `values`, else the egg's default — and the panel's `P_SERVER_*`.
fn panel_env(values: &[(&str, &str)]) -> Vec<(String, String)> {
    let value = |k: &str| {
        values
            .iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string())
    };
    let mut env: Vec<(String, String)> = vec![
        ("TZ".into(), "UTC".into()),
        ("STARTUP".into(), egg()["startup"].as_str().unwrap().into()),
        ("SERVER_MEMORY".into(), "0".into()),
        (
            "SERVER_IP".into(),
            value("SERVER_IP").unwrap_or_else(|| "0.0.0.0".into()),
        ),
        (
            "SERVER_PORT".into(),
            value("SERVER_PORT").unwrap_or_else(|| "8081".into()),
        ),
    ];
    for v in egg()["variables"].as_array().unwrap() {
        let name = v["env_variable"].as_str().unwrap();
        let default = v["default_value"].as_str().unwrap().to_string();
        env.push((name.to_uppercase(), value(name).unwrap_or(default)));
    }
    env.extend([
        ("P_SERVER_LOCATION".into(), "test".into()),
        (
            "P_SERVER_UUID".into(),
            "00000000-0000-4000-8000-000000000000".into(),
        ),
        ("P_SERVER_ALLOCATION_LIMIT".into(), "0".into()),
    ]);
    // Anything else a test passes (not a panel variable, e.g. the sim's speed).
    for (k, v) in values {
        if !env.iter().any(|(n, _)| n == k) {
            env.push((k.to_string(), v.to_string()));
        }
    }
    env
}

/// `docker create` with the settings Wings uses (no entrypoint, command or working directory
/// override: the image's own run), then start.
fn panel_container(
    name: &str,
    volume: &Path,
    values: &[(&str, &str)],
    extra: &[&str],
) -> Container {
    let mut args: Vec<String> = [
        "create",
        "--name",
        name,
        "--hostname",
        name,
        "--label",
        "Service=Pterodactyl",
        "--label",
        "ContainerType=server_process",
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
    for (k, v) in panel_env(values) {
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
    if !docker_available("the_image_runs_as_a_panel_runs_it_and_keeps_user_edits") {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let vol = volume(root.path(), "server");
    let name = unique("wings");
    // A master with every other variable at the egg's default (the slave ones empty).
    let env = [
        ("SERVER_MODE", "master"),
        ("SERVER_PORT", "8081"),
        ("CLUSTER_NAME", "Panel Cluster"),
    ];
    let _c = panel_container(&name, &vol, &env, &[]);
    let done = done_marker();
    let out = wait_log(&name, &done, 1);
    let echoed = format!(":/home/container$ {}", egg()["startup"].as_str().unwrap());
    assert!(out.contains(&echoed), "the entrypoint prints the command");
    let before_ready = &out[..out.find(&done).unwrap()];
    assert!(
        before_ready.contains(&echoed) && !before_ready.contains(stop_command()),
        "nothing before the ready line looks like it, or like the stop command"
    );
    assert!(out.contains("Login token (shown once): clu_"));
    let cfg = read_json(&vol.join("config-master.json"));
    assert_eq!(cfg["port"], 8081);
    assert_eq!(cfg["cluster_name"], "Panel Cluster");
    assert_eq!(cfg["admin_string"], "admin", "the egg's default");
    assert!(vol.join(".tmp").is_dir(), "TMPDIR is on the volume");

    // The panel's stop button types the egg's stop command into the console.
    console(&name, &["status", stop_command()]);
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
    wait_log(&name, &done, 2);
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

    // A misconfigured server says what to fix, in one line, with exit code 2: a slave created
    // with the egg's defaults, and a port that is not a number.
    for (what, env, expect) in [
        (
            "slave",
            vec![("SERVER_MODE", "slave")],
            "error: MASTER_URL is not set",
        ),
        (
            "port",
            vec![("SERVER_MODE", "master"), ("SERVER_PORT", "80a")],
            "error: SERVER_PORT is '80a'; accepted values",
        ),
    ] {
        let bad = unique(&format!("bad-{what}"));
        let _b = panel_container(&bad, &volume(root.path(), &bad), &env, &[]);
        assert_eq!(exit_code(&bad), 2, "{}", logs(&bad));
        let out = logs(&bad);
        let lines: Vec<&str> = out.lines().filter(|l| l.contains("error")).collect();
        assert_eq!(lines.len(), 1, "one line: {out}");
        assert!(lines[0].starts_with(expect), "{out}");
    }
}

/// Serves a sim tarball shaped like a Factorio release: `/get-download/<v>/headless/linux64`
/// redirects to `/releases/factorio_headless_x64_<v>.tar.xz`; `/sha256sums/` lists checksums.
async fn release_server(root: &Path, ip: &str) -> u16 {
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
    // 2.0.76 is listed with a wrong sum; 2.0.75 is not listed at all (both are cut short).
    let sums = format!(
        "{sha}  factorio_headless_x64_2.0.77.tar.xz\n0000  factorio_headless_x64_2.0.76.tar.xz\n"
    );
    let broken = good[..good.len() / 2].to_vec();
    let redirect =
        warp::path!("get-download" / String / "headless" / "linux64").map(|v: String| {
            let file = match v.as_str() {
                "stable" | "latest" | "2.0.77" => "factorio_headless_x64_2.0.77.tar.xz".to_string(),
                "2.0.76" | "2.0.75" => format!("factorio_headless_x64_{v}.tar.xz"),
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
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(
        warp::serve(redirect.or(releases).or(sums))
            .incoming(listener)
            .run(),
    );
    port
}

/// The egg's install script run as Wings runs it (research/egg.md §3.6): the script written to
/// `/mnt/install/install.sh`, the server's directory at `/mnt/server`, a tmpfs `/tmp`, the panel's
/// environment, `Cmd = [scripts.installation.entrypoint, /mnt/install/install.sh]` with the image's
/// own ENTRYPOINT kept. The egg's install image cannot be pulled here, so the clustorio image
/// (bash, curl, xz) stands in for it, as root like an installer image.
fn install(dir: &Path, net: &str, base: &str, mode: &str, version: &str) -> String {
    let script_dir = tempfile::tempdir().unwrap();
    let inst = &egg()["scripts"]["installation"];
    std::fs::write(
        script_dir.path().join("install.sh"),
        inst["script"].as_str().unwrap().replace("\r\n", "\n"),
    )
    .unwrap();
    let mut args: Vec<String> = [
        "run",
        "--rm",
        "--network",
        net,
        "--hostname",
        "installer",
        "--user",
        "0",
        "--tmpfs",
        "/tmp:rw,exec,nosuid,size=100m",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push("-v".into());
    args.push(format!("{}:/mnt/server", dir.display()));
    args.push("-v".into());
    args.push(format!("{}:/mnt/install", script_dir.path().display()));
    let env = panel_env(&[
        ("SERVER_MODE", mode),
        ("SERVER_PORT", "34197"),
        ("FACTORIO_VERSION", version),
        ("FACTORIO_DOWNLOAD_URL", &format!("{base}/get-download")),
        ("FACTORIO_SHA256_URL", &format!("{base}/sha256sums")),
    ]);
    for (k, v) in env {
        args.push("-e".into());
        args.push(format!("{k}={v}"));
    }
    args.push(image().to_string());
    args.push(inst["entrypoint"].as_str().unwrap().to_string());
    args.push("/mnt/install/install.sh".into());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = docker(&refs);
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_install_script_installs_factorio_and_fails_clearly() {
    if !docker_available("the_install_script_installs_factorio_and_fails_clearly") {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    // The release server listens on the gateway of a network of the test's own; the install
    // container reaches it there, and nothing else.
    let net = Network(unique("install-net"));
    docker_ok(&["network", "create", &net.0]);
    let gateway = docker_ok(&[
        "network",
        "inspect",
        "-f",
        "{{(index .IPAM.Config 0).Gateway}}",
        &net.0,
    ]);
    let port = release_server(root.path(), &gateway).await;
    let base = format!("http://{gateway}:{port}");
    let dir = volume(root.path(), "slave");
    std::fs::write(dir.join("config-slave.json"), "{\"host_token\": \"keep\"}").unwrap();
    let run = |dir: PathBuf, mode: &'static str, version: &'static str| {
        let (net, base) = (net.0.clone(), base.clone());
        tokio::task::spawn_blocking(move || install(&dir, &net, &base, mode, version))
    };
    let out = run(dir.clone(), "slave", "2.0.77").await.unwrap();
    assert!(
        out.contains("checksum OK") && out.contains("clustorio install: OK"),
        "{out}"
    );
    assert!(out.contains("installed Version: 2.0.77"), "{out}");
    assert!(dir.join("factorio/bin/x64/factorio").exists());
    assert!(dir.join("factorio/data/base/info.json").exists());
    // A reinstall (here: `stable`) replaces Factorio and keeps everything else, the versions
    // the host installed beside it in factorio/<version>/ included.
    std::fs::create_dir_all(dir.join("instances/east")).unwrap();
    std::fs::create_dir_all(dir.join("factorio/2.0.72/bin/x64")).unwrap();
    std::fs::write(dir.join("factorio/2.0.72/bin/x64/factorio"), "kept").unwrap();
    let out = run(dir.clone(), "slave", "stable").await.unwrap();
    assert!(out.contains("clustorio install: OK"), "{out}");
    assert!(out.contains("kept Factorio 2.0.72"), "{out}");
    assert_eq!(
        std::fs::read_to_string(dir.join("factorio/2.0.72/bin/x64/factorio")).unwrap(),
        "kept",
        "a reinstall keeps the versions installed beside it"
    );
    assert_eq!(
        read_json(&dir.join("config-slave.json"))["host_token"],
        "keep",
        "a reinstall keeps configuration"
    );
    assert!(dir.join("instances/east").is_dir(), "and instances");
    assert!(!dir.join("factorio.old").exists());

    for (mode, version, expect) in [
        (
            "slave",
            "nightly",
            "FACTORIO_VERSION must be stable, latest or a version number",
        ),
        (
            "slave",
            "2.0",
            "FACTORIO_VERSION must be stable, latest or a version number",
        ),
        ("slave", "9.9.9", "could not download Factorio 9.9.9"),
        ("slave", "2.0.76", "checksum mismatch"),
        (
            "slave",
            "2.0.75",
            "the download is not a valid Factorio archive",
        ),
        ("bogus", "stable", "SERVER_MODE must be master or slave"),
    ] {
        let d = volume(root.path(), &format!("bad-{version}-{mode}"));
        let out = run(d.clone(), mode, version).await.unwrap();
        assert!(
            out.contains("clustorio install FAILED") && out.contains(expect),
            "{mode}/{version}: {out}"
        );
        assert!(!out.contains("clustorio install: OK"), "{out}");
        assert!(!d.join("factorio").exists(), "nothing half-installed");
        let left: Vec<_> = std::fs::read_dir(&d).unwrap().collect();
        assert!(left.is_empty(), "no temporary files left: {left:?}");
    }
    let d = volume(root.path(), "master");
    let out = run(d.clone(), "master", "stable").await.unwrap();
    assert!(
        out.contains("Factorio is not needed") && out.contains("clustorio install: OK"),
        "{out}"
    );
    assert!(!d.join("factorio").exists());
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
    if !docker_available("a_master_and_two_slaves_on_a_docker_network") {
        return;
    }
    let done = done_marker();
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
    let out = wait_log(&master, &done, 1);
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
        // slave-1 has the egg's Public address; slave-2 nothing (Wings' SERVER_IP is 0.0.0.0).
        let public = if s == "slave-1" {
            "play.example.org"
        } else {
            ""
        };
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
            ("PUBLIC_ADDRESS", public),
            ("FACTORIO_STANDIN_SPEED", "0.02"),
        ];
        let c = panel_container(
            &name,
            &vol,
            &env,
            &["--network", net.0.as_str(), "-p", "127.0.0.1::34197/udp"],
        );
        wait_log(&name, &done, 1);
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

    // Where players connect: slave-1's public address; slave-2 has none, and what the master
    // sees it connect from is a container address on the Docker network, so no join address is
    // claimed — never that address, never 127.0.0.1.
    let hosts = api.get("/api/v1/hosts").await;
    let host = |name: &str| {
        hosts
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["name"] == name)
            .cloned()
            .unwrap()
    };
    let (one, two) = (host("slave-1"), host("slave-2"));
    assert_eq!(one["join_host"]["address"], "play.example.org", "{one}");
    assert_eq!(one["join_host"]["source"], "public_address");
    let seen = two["address"].as_str().unwrap().to_string();
    let slave_two = &slaves
        .iter()
        .find(|(n, _)| n.contains("-slave-2-"))
        .unwrap()
        .0;
    let container_ip = docker_ok(&[
        "inspect",
        "-f",
        &format!(
            "{{{{(index .NetworkSettings.Networks \"{}\").IPAddress}}}}",
            net.0
        ),
        slave_two,
    ]);
    assert_eq!(
        seen, container_ip,
        "the master sees slave-2's address on the Docker network: {two}"
    );
    // Docker's default pools are in 172.16.0.0/12, which is never shown; a daemon out of those
    // hands out 192.168.x networks, which look like a LAN and are shown as such.
    let in_docker_range = seen.strip_prefix("172.").is_some_and(|rest| {
        rest.split('.')
            .next()
            .and_then(|o| o.parse::<u8>().ok())
            .is_some_and(|o| (16..32).contains(&o))
    });
    if in_docker_range {
        assert_eq!(two["join_host"], Value::Null, "{two}");
    } else {
        eprintln!("slave-2 is on {seen}, outside Docker's 172.16.0.0/12: shown as a LAN address");
        assert_eq!(two["join_host"]["address"], json!(seen), "{two}");
    }
    for i in ["east", "west"] {
        let v = api.get(&format!("/api/v1/instances/{i}")).await;
        let on_one = v["host"] == "slave-1";
        let join = v["join_address"].clone();
        if on_one {
            assert_eq!(join, json!("play.example.org:34197"), "{v}");
        } else if in_docker_range {
            assert_eq!(join, Value::Null, "{v}");
        } else {
            assert!(
                join.as_str()
                    .is_some_and(|j| j.starts_with(&format!("{seen}:"))),
                "{v}"
            );
        }
    }
    let all = api.get("/api/v1/instances").await.to_string();
    assert!(
        !in_docker_range || !all.contains(&format!("{seen}:")),
        "no Docker address as a join address"
    );
    assert!(!all.contains("127.0.0.1:34197"), "no loopback join address");

    // Stop and start the master container: nothing is lost, the slaves come back by themselves.
    docker_ok(&["stop", &master]);
    assert_eq!(exit_code(&master), 0);
    docker_ok(&["start", &master]);
    wait_log(&master, &done, 2);
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
