//! The Docker backend against the real daemon: factorio-sim in sibling containers, the way a host
//! with `factorio_backend = docker` runs Factorio (research/docker-backend.md §5).
//!
//! The image is made once per run from this machine's own C library and loader (`docker import`,
//! a few seconds, no registry and no network): the sim and the clustorio binary are mounted into
//! it, as the host's Factorio install is in production. Without a Docker daemon the tests say
//! `SKIPPED` and pass, except the one that is about having no daemon. Containers and networks are
//! found by their labels and removed even when a test fails.

mod common;

use clustorio::host::backend::docker::{DockerBackend, Limits, Settings};
use clustorio::host::backend::{Backend, GameServer};
use clustorio::host::factorio::{
    CreateSpec, Install, SaveToLoad, ServerArgs, ServerEvent, StartSpec,
};
use clustorio::host::instance::{Instance, Saved};
use common::cluster::{Api, HostProcess, free_udp_ports, install_sim};
use common::{ControllerProcess, join_token};
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

const IMAGE: &str = "clustorio-test-runtime:latest";

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

fn inspect(container: &str) -> Value {
    let v: Value = serde_json::from_str(&docker_ok(&["inspect", container])).unwrap();
    v[0].clone()
}

/// The runtime image: this machine's loader and C library (all the sim and clustorio link
/// against), `sh` and `cat` for `docker exec`. Made once per run, reused while its recipe holds.
fn image() -> &'static str {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let files = [
            "/lib64/ld-linux-x86-64.so.2",
            "/lib/x86_64-linux-gnu/libc.so.6",
            "/lib/x86_64-linux-gnu/libm.so.6",
            "/lib/x86_64-linux-gnu/libgcc_s.so.1",
            "/bin/sh",
            "/bin/cat",
            // clustorio's HTTP client wants the system's CA certificates.
            "/etc/ssl/certs/ca-certificates.crt",
        ];
        let mut recipe = String::from("v2");
        for f in files {
            let meta = std::fs::metadata(f).unwrap_or_else(|e| panic!("{f}: {e}"));
            recipe.push_str(&format!(" {f}:{}", meta.len()));
        }
        let have = docker(&[
            "image",
            "inspect",
            "-f",
            "{{index .Config.Labels \"clustorio.test-runtime\"}}",
            IMAGE,
        ]);
        if have.status.success() && String::from_utf8_lossy(&have.stdout).trim() == recipe {
            return;
        }
        let stage = tempfile::tempdir().unwrap();
        let rootfs = stage.path().join("rootfs");
        for f in files {
            let to = rootfs.join(f.trim_start_matches('/'));
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(f, &to).unwrap();
        }
        for d in ["tmp", "etc", "proc", "sys", "dev"] {
            std::fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        std::fs::write(rootfs.join("etc/passwd"), "root:x:0:0::/:/bin/sh\n").unwrap();
        let tarball = stage.path().join("rootfs.tar");
        let st = Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .arg("-cf")
            .arg(&tarball)
            .arg(".")
            .status()
            .unwrap();
        assert!(st.success(), "tar failed");
        let st = Command::new("docker")
            .args(["import", "--change"])
            .arg(format!("LABEL clustorio.test-runtime=\"{recipe}\""))
            .arg(&tarball)
            .arg(IMAGE)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "docker import failed");
    });
    IMAGE
}

fn unique(what: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    format!(
        "t{}-{what}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    )
}

/// Removes every container and network labelled with these host names when dropped.
struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for host in &self.0 {
            let label = format!("label=clustorio.host={host}");
            let ids = docker(&["ps", "-aq", "--filter", &label]);
            for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
                let _ = docker(&["rm", "-f", id]);
            }
            let nets = docker(&["network", "ls", "-q", "--filter", &label]);
            for id in String::from_utf8_lossy(&nets.stdout).split_whitespace() {
                let _ = docker(&["network", "rm", id]);
            }
        }
    }
}

/// Directories under the target dir (not /tmp, which is a tmpfs inside the containers).
fn workdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("docker-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap()
}

struct Bench {
    backend: DockerBackend,
    install: Install,
    root: tempfile::TempDir,
    _cleanup: Cleanup,
    host: String,
}

fn settings(host: &str, root: &Path) -> Settings {
    Settings {
        host_name: host.to_string(),
        host_dir: root.to_path_buf(),
        endpoint: None,
        image: image().to_string(),
        network: String::new(),
        data_dir: String::new(),
        limits: Limits::default(),
        publish_ip: "0.0.0.0".into(),
        stop_timeout_s: 5,
        keep_running: true,
    }
}

impl Bench {
    fn new(tweak: impl FnOnce(&mut Settings)) -> Bench {
        let host = unique("h");
        let root = workdir();
        install_sim(root.path());
        let mut s = settings(&host, root.path());
        tweak(&mut s);
        Bench {
            backend: DockerBackend::new(s),
            install: Install::new(root.path().join("factorio")),
            _cleanup: Cleanup(vec![host.clone()]),
            root,
            host,
        }
    }

    fn instance(&self, id: i64, config: Value) -> Instance {
        let name = format!("i{id}");
        let dir = self.root.path().join("instances").join(&name);
        std::fs::create_dir_all(dir.join("saves")).unwrap();
        Instance::new(
            dir,
            Saved {
                id,
                name,
                config,
                desired: "running".into(),
                game_port: None,
                pid: None,
                next_save: None,
                loaded_save: None,
            },
        )
    }

    /// A new map made in a one-shot container, then the server on it.
    async fn start(
        &self,
        inst: &Instance,
        env: &[(&str, &str)],
        rcon: bool,
    ) -> (Arc<dyn GameServer>, mpsc::Receiver<ServerEvent>, u16) {
        let save = inst.dir.join("saves/world.zip");
        if !save.exists() {
            let created = self
                .backend
                .create_save(
                    inst,
                    CreateSpec::new(self.install.clone(), &inst.dir, save.clone()),
                )
                .await
                .expect("--create in a container");
            assert_eq!(created, save);
        }
        let port = free_udp_ports(1)[0];
        let mut args = ServerArgs::new(SaveToLoad::File(save));
        args.port = port;
        args.bind = Some("0.0.0.0".into());
        if rcon {
            args.rcon = Some(("127.0.0.1:0".parse().unwrap(), "secret".into()));
        }
        let mut spec = StartSpec::new(self.install.clone(), &inst.dir, args);
        spec.env = [("FACTORIO_STANDIN_SPEED", "0.2")]
            .iter()
            .chain(env)
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        let (server, events) = self.backend.spawn(inst, spec).await.expect("spawn");
        server
            .wait_ready(Duration::from_secs(30))
            .await
            .expect("ready");
        (server, events, port)
    }
}

/// Events until `pred` matches one (or the server exits, which fails the test).
async fn wait_event(
    events: &mut mpsc::Receiver<ServerEvent>,
    pred: impl Fn(&ServerEvent) -> bool,
) -> ServerEvent {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let ev = tokio::time::timeout_at(deadline, events.recv())
            .await
            .expect("the expected event did not come")
            .expect("the event channel closed");
        if pred(&ev) {
            return ev;
        }
        if let ServerEvent::Exited(r) = &ev {
            panic!("exited before the expected event: {r:?}");
        }
    }
}

async fn exited(events: &mut mpsc::Receiver<ServerEvent>) -> clustorio::host::factorio::ExitReport {
    loop {
        match tokio::time::timeout(Duration::from_secs(30), events.recv()).await {
            Ok(Some(ServerEvent::Exited(r))) => return r,
            Ok(Some(_)) => {}
            other => panic!("no exit report: {other:?}"),
        }
    }
}

fn container_id(server: &Arc<dyn GameServer>) -> String {
    server.container().expect("a container")["id"]
        .as_str()
        .unwrap()
        .to_string()
}

fn gone(id: &str) -> bool {
    !docker(&["inspect", id]).status.success()
}

/// `cat` inside the container; the first of `paths` that exists (cgroup v1, then v2).
fn cat_in(id: &str, paths: &[&str]) -> String {
    for p in paths {
        let out = docker(&["exec", id, "cat", p]);
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout).trim().to_string();
        }
    }
    panic!("none of {paths:?} in {id}");
}

fn udp_in_datagrams(id: &str) -> u64 {
    let snmp = cat_in(id, &["/proc/net/snmp"]);
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (udp.next().unwrap(), udp.next().unwrap());
    let i = names
        .split_whitespace()
        .position(|n| n == "InDatagrams")
        .unwrap();
    values.split_whitespace().nth(i).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_runs_in_a_hardened_limited_container_and_stops_gracefully() {
    if !docker_available("an_instance_runs_in_a_hardened_limited_container_and_stops_gracefully") {
        return;
    }
    let b = Bench::new(|s| {
        s.limits = Limits {
            memory_mb: 1024,
            cpus: 2.0,
        }
    });
    // The instance's own limits win over the host's.
    let inst = b.instance(1, json!({"memory_limit_mb": 300, "cpu_limit": 0.5}));
    let (server, mut events, port) = b.start(&inst, &[], true).await;
    let id = container_id(&server);
    assert_eq!(server.container().unwrap()["memory_limit_mb"], 300);
    assert_eq!(server.pid(), None, "no process of the host's to find again");

    let c = inspect(&id);
    let hc = &c["HostConfig"];
    assert_eq!(c["Config"]["Labels"]["clustorio.host"], b.host);
    assert_eq!(c["Config"]["Labels"]["clustorio.instance"], "1");
    assert_eq!(c["Config"]["Tty"], false);
    assert_eq!(c["Config"]["OpenStdin"], true);
    assert_eq!(c["Config"]["StopSignal"], "SIGINT");
    assert_eq!(hc["ReadonlyRootfs"], true);
    assert_eq!(hc["CapDrop"], json!(["ALL"]));
    assert_eq!(hc["SecurityOpt"], json!(["no-new-privileges"]));
    assert_eq!(hc["PidsLimit"], 512);
    assert_eq!(hc["Init"], true);
    assert_eq!(hc["Memory"], 300 << 20);
    assert_eq!(hc["NanoCpus"], 500_000_000);
    assert_eq!(hc["LogConfig"]["Type"], "local");
    assert!(hc["Tmpfs"]["/tmp"].as_str().unwrap().contains("size=100m"));
    assert!(
        ["", "no"].contains(&hc["RestartPolicy"]["Name"].as_str().unwrap_or("")),
        "no Docker restart policy: {}",
        hc["RestartPolicy"]
    );
    let mounts = c["Mounts"].as_array().unwrap();
    let install = mounts
        .iter()
        .find(|m| m["Destination"] == b.install.root.to_str().unwrap())
        .expect("the install is mounted at the host's path");
    assert_eq!(install["RW"], false, "read-only");
    assert!(
        mounts
            .iter()
            .any(|m| m["Destination"] == inst.dir.to_str().unwrap() && m["RW"] == true)
    );

    // The limits are the container's cgroup's.
    let mem = cat_in(
        &id,
        &[
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory.max",
        ],
    );
    assert_eq!(mem, (300u64 << 20).to_string());
    assert_eq!(
        cat_in(
            &id,
            &["/sys/fs/cgroup/pids/pids.max", "/sys/fs/cgroup/pids.max"]
        ),
        "512"
    );
    let cpu = cat_in(
        &id,
        &[
            "/sys/fs/cgroup/cpu/cpu.cfs_quota_us",
            "/sys/fs/cgroup/cpu.max",
        ],
    );
    assert!(cpu.starts_with("50000"), "half a CPU: {cpu}");
    let root_write = docker(&["exec", &id, "/bin/sh", "-c", "echo x > /x"]);
    assert!(
        !root_write.status.success(),
        "the root filesystem is read-only"
    );

    // The game port is published with the same number, UDP only; RCON is not published.
    let ports = &c["NetworkSettings"]["Ports"];
    let published: Vec<&String> = ports
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, _)| k)
        .collect();
    assert_eq!(published, [&format!("{port}/udp")], "{ports}");
    assert_eq!(
        ports[format!("{port}/udp")][0]["HostPort"],
        port.to_string()
    );
    let before = udp_in_datagrams(&id);
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..5 {
        sock.send_to(b"ping", ("127.0.0.1", port)).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while udp_in_datagrams(&id) < before + 5 {
        assert!(
            Instant::now() < deadline,
            "datagrams to 127.0.0.1:{port} did not arrive"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // RCON over the host's network; the console through the attach.
    let players = server.rcon("/players").await.expect("rcon");
    assert!(players.contains("Players"), "{players}");
    server.console("/standin join Alice").await.unwrap();
    wait_event(
        &mut events,
        |e| matches!(e, ServerEvent::PlayerJoined { name } if name == "Alice"),
    )
    .await;

    // A graceful stop writes the save in the mounted directory, and the container goes.
    let save = inst.dir.join("saves/world.zip");
    let mtime = std::fs::metadata(&save).unwrap().modified().unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let report = server.stop(Duration::from_secs(10)).await;
    assert!(report.graceful && report.requested, "{report:?}");
    assert_eq!(report.code, Some(0));
    assert!(
        std::fs::metadata(&save).unwrap().modified().unwrap() > mtime,
        "saved"
    );
    assert!(matches!(exited(&mut events).await, r if r == report));
    assert!(gone(&id), "the container is removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_rcon_the_console_stops_it_and_an_ignored_stop_ends_in_a_kill() {
    if !docker_available("without_rcon_the_console_stops_it_and_an_ignored_stop_ends_in_a_kill") {
        return;
    }
    let b = Bench::new(|_| {});
    // No RCON: `/quit` goes through the attached console, and Factorio saves and quits.
    let inst = b.instance(2, json!({}));
    let (server, _events, _) = b.start(&inst, &[], false).await;
    let report = server.stop(Duration::from_secs(10)).await;
    assert!(report.graceful, "{report:?}");
    assert!(gone(&container_id(&server)));

    // A Factorio that ignores /quit, SIGINT and SIGTERM is killed when the time is up.
    let inst = b.instance(3, json!({}));
    let (server, _events, _) = b
        .start(
            &inst,
            &[("FACTORIO_STANDIN_IGNORE", "quit,sigint,sigterm")],
            true,
        )
        .await;
    let report = server.stop(Duration::from_secs(2)).await;
    assert!(!report.graceful && report.requested, "{report:?}");
    assert_eq!(report.signal, Some(9), "{report:?}");
    assert!(!report.oom_killed);
    assert!(gone(&container_id(&server)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_and_an_oom_kill_are_reported_with_the_last_lines() {
    if !docker_available("a_crash_and_an_oom_kill_are_reported_with_the_last_lines") {
        return;
    }
    let b = Bench::new(|_| {});
    let inst = b.instance(4, json!({}));
    let (server, mut events, _) = b.start(&inst, &[], true).await;
    server.console("/standin crash boom").await.unwrap();
    let report = exited(&mut events).await;
    assert!(!report.requested, "nobody asked: a crash");
    assert_eq!(report.code, Some(1), "{report:?}");
    assert!(!report.oom_killed);
    assert!(
        report.last_lines.iter().any(|l| l.contains("boom")),
        "{:?}",
        report.last_lines
    );
    assert!(gone(&container_id(&server)));

    let inst = b.instance(5, json!({"memory_limit_mb": 64}));
    let (server, mut events, _) = b.start(&inst, &[], true).await;
    server.console("/standin alloc 256").await.unwrap();
    let report = exited(&mut events).await;
    assert!(report.oom_killed, "{report:?}");
    assert!(!report.requested);
    assert_eq!(report.signal, Some(9), "{report:?}");
}

/// A unix → TCP forwarder for the daemon's socket: `DOCKER_HOST=tcp://127.0.0.1:<port>`.
async fn tcp_forwarder() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut unix) = tokio::net::UnixStream::connect("/var/run/docker.sock").await
                {
                    let _ = tokio::io::copy_bidirectional(&mut tcp, &mut unix).await;
                }
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_host_over_tcp_runs_the_same_lifecycle() {
    if !docker_available("docker_host_over_tcp_runs_the_same_lifecycle") {
        return;
    }
    let port = tcp_forwarder().await;
    let b = Bench::new(|s| s.endpoint = Some(format!("tcp://127.0.0.1:{port}")));
    let inst = b.instance(6, json!({}));
    let (server, mut events, _) = b.start(&inst, &[], true).await;
    server.console("/standin join Bob").await.unwrap();
    wait_event(&mut events, |e| {
        matches!(e, ServerEvent::PlayerJoined { .. })
    })
    .await;
    let report = server.stop(Duration::from_secs(10)).await;
    assert!(report.graceful, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_daemon_the_backend_says_why_and_starts_fail_with_it() {
    let root = workdir();
    install_sim(root.path());
    let mut s = settings("nodaemon", root.path());
    s.image = String::new();
    s.endpoint = Some("unix:///nonexistent/docker.sock".into());
    let backend = DockerBackend::new(s);
    let err = backend.connect().await.unwrap_err();
    assert!(err.contains("/nonexistent/docker.sock"), "{err}");
    assert_eq!(backend.unavailable().as_deref(), Some(err.as_str()));
    let inst = Instance::new(
        root.path().join("instances/x"),
        Saved {
            id: 1,
            name: "x".into(),
            config: json!({}),
            desired: "running".into(),
            game_port: None,
            pid: None,
            next_save: None,
            loaded_save: None,
        },
    );
    let spec = StartSpec::new(
        Install::new(root.path().join("factorio")),
        &inst.dir,
        ServerArgs::new(SaveToLoad::Latest),
    );
    let Err(e) = backend.spawn(&inst, spec).await else {
        panic!("started without a daemon")
    };
    assert!(
        e.to_string().contains("Docker backend is unavailable"),
        "{e}"
    );
    assert!(e.to_string().contains("/nonexistent/docker.sock"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Whole hosts (`clustorio host run` with FACTORIO_BACKEND=docker) under a controller.

struct Cluster {
    c: ControllerProcess,
    api: Api,
    join: String,
    root: tempfile::TempDir,
}

fn cluster() -> Cluster {
    let root = workdir();
    let cdir = root.path().join("controller");
    std::fs::create_dir_all(&cdir).unwrap();
    let c = ControllerProcess::start(&cdir);
    let api = Api::new(&c.url(""), &c.first_token);
    let join = join_token(&cdir);
    Cluster { c, api, join, root }
}

impl Cluster {
    fn docker_host(&self, name: &str, env: &[(&str, &str)]) -> HostProcess {
        let mut all = vec![("FACTORIO_BACKEND", "docker"), ("DOCKER_IMAGE", image())];
        all.extend_from_slice(env);
        HostProcess::start(
            &self.root.path().join(name),
            &self.c.url(""),
            &self.join,
            name,
            &all,
        )
    }

    async fn create(&self, name: &str, host: &str, config: Value) {
        let (s, v) = self
            .api
            .post("/api/v1/instances", json!({"name": name, "config": config}))
            .await;
        assert_eq!(s, 201, "{v}");
        let (s, v) = self
            .api
            .post(
                &format!("/api/v1/instances/{name}/assign"),
                json!({"host": host}),
            )
            .await;
        assert_eq!(s, 200, "{v}");
    }

    async fn start(&self, name: &str) -> Value {
        let (s, v) = self
            .api
            .post(&format!("/api/v1/instances/{name}/start"), json!({}))
            .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["status"], "running");
        self.api
            .wait_for(&format!("/api/v1/instances/{name}"), |v| {
                v["status"] == "running"
            })
            .await
    }

    async fn rcon(&self, name: &str, command: &str) -> String {
        let (s, v) = self
            .api
            .post(
                &format!("/api/v1/instances/{name}/rcon"),
                json!({ "command": command }),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        v["output"].as_str().unwrap_or_default().to_string()
    }
}

fn container_of(view: &Value) -> String {
    view["container"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no container in {view}"))
        .to_string()
}

fn started_at(id: &str) -> String {
    inspect(id)["State"]["StartedAt"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_container_is_restarted_and_a_killed_host_adopts_it() {
    if !docker_available("a_crashed_container_is_restarted_and_a_killed_host_adopts_it") {
        return;
    }
    let cl = cluster();
    let host = unique("adopt");
    let other = unique("other");
    let _cleanup = Cleanup(vec![host.clone(), other.clone()]);
    let mut h1 = cl.docker_host(&host, &[]);
    let hosts = cl
        .api
        .wait_for("/api/v1/hosts", |h| h[0]["backend"].is_object())
        .await;
    assert_eq!(hosts[0]["backend"]["name"], "docker", "{hosts}");
    assert!(hosts[0]["backend"]["error"].is_null(), "{hosts}");
    cl.create(
        "east",
        &host,
        json!({"restart_on_crash": true, "memory_limit_mb": 256}),
    )
    .await;
    let v = cl.start("east").await;
    let first = container_of(&v);
    assert_eq!(v["container"]["memory_limit_mb"], 256);

    // A crash: reported with the exit code and the last lines, then restarted after a backoff,
    // in a fresh container.
    // The reply may never come: the game dies on it.
    let _ = cl
        .api
        .post(
            "/api/v1/instances/east/rcon",
            json!({"command": "/standin crash boom"}),
        )
        .await;
    let crashed = cl
        .api
        .wait_for("/api/v1/instances/east", |v| v["status"] == "crashed")
        .await;
    let message = crashed["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("exited with code 1") && message.contains("boom"),
        "{crashed}"
    );
    let v = cl
        .api
        .wait_for("/api/v1/instances/east", |v| {
            v["status"] == "running" && v["container"]["id"].is_string()
        })
        .await;
    let second = container_of(&v);
    assert_ne!(second, first, "every start is a fresh container");
    assert!(gone(&first));

    // Leftovers: a container of an instance this host does not have, and another host's.
    for h in [&host, &other] {
        docker_ok(&[
            "run",
            "-d",
            "-i",
            // Like clustorio's own containers: an init, so the stop signal reaches `sh`.
            "--init",
            "--label",
            &format!("clustorio.host={h}"),
            "--label",
            "clustorio.instance=999",
            "--label",
            "clustorio.role=server",
            image(),
            "/bin/sh",
            "-c",
            "read x",
        ]);
    }
    let _ = cl.rcon("east", "/standin join alice").await;
    cl.api
        .wait_for("/api/v1/instances/east", |v| {
            v["players_online"] == json!(["alice"])
        })
        .await;
    let since = started_at(&second);

    // The host is killed (an upgrade, an OOM of the host): the game keeps running.
    h1.kill9();
    assert_eq!(inspect(&second)["State"]["Running"], true);
    let _h2 = cl.docker_host(&host, &[]);
    let v = cl
        .api
        .wait_for("/api/v1/instances/east", |v| {
            v["status"] == "running" && v["container"]["id"].is_string()
        })
        .await;
    assert_eq!(container_of(&v), second, "the same container, adopted");
    assert_eq!(started_at(&second), since, "the game never stopped");
    assert_eq!(
        v["players_online"],
        json!(["alice"]),
        "replayed from its log: {v}"
    );
    assert!(cl.rcon("east", "/players").await.contains("alice"));
    let label = |h: &str| {
        docker_ok(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=clustorio.host={h}"),
        ])
        .split_whitespace()
        .count()
    };
    // Stopped gracefully in the background, then removed.
    let deadline = Instant::now() + Duration::from_secs(30);
    while label(&host) > 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        label(&host),
        1,
        "the orphan is removed, the instance's container stays: {}",
        docker_ok(&[
            "ps",
            "-a",
            "--filter",
            &format!("label=clustorio.host={host}")
        ])
    );
    assert_eq!(
        label(&other),
        1,
        "another host's container is never touched"
    );

    let (s, v) = cl.api.post("/api/v1/instances/east/stop", json!({})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["status"], "stopped", "{v}");
    let backups = cl
        .root
        .path()
        .join(format!("controller/saves/{}/backups", v["id"]));
    assert!(
        std::fs::read_dir(&backups).map(|d| d.count()).unwrap_or(0) >= 1,
        "the adopted game stopped gracefully and was backed up"
    );
    assert!(gone(&second));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_main_scenario_with_one_host_on_each_backend() {
    if !docker_available("the_main_scenario_with_one_host_on_each_backend") {
        return;
    }
    let cl = cluster();
    let dock = unique("dock");
    let _cleanup = Cleanup(vec![dock.clone()]);
    let _d = cl.docker_host(&dock, &[]);
    let _p = HostProcess::start(
        &cl.root.path().join("proc"),
        &cl.c.url(""),
        &cl.join,
        "proc",
        &[],
    );
    // One instance starts on each backend, then moves to the other one.
    for (name, first, second) in [
        ("alpha", dock.as_str(), "proc"),
        ("beta", "proc", dock.as_str()),
    ] {
        cl.create(name, first, json!({})).await;
        let v = cl.start(name).await;
        assert_eq!(v["container"].is_object(), first == dock, "{v}");
        // The host answered the game's achievements prompt at start: Lua runs at once.
        let lua = "/sc rcon.print(\"hi\")";
        assert_eq!(cl.rcon(name, lua).await.trim(), "hi", "{name}");
        let _ = cl.rcon(name, "/standin join alice").await;
        cl.api
            .wait_for(&format!("/api/v1/instances/{name}"), |v| {
                v["players_online"] == json!(["alice"])
            })
            .await;
        let _ = cl.rcon(name, "/standin leave alice").await;
        let tick = |out: String| -> u64 {
            out.trim()
                .parse()
                .unwrap_or_else(|_| panic!("not a tick: {out}"))
        };
        let before = tick(cl.rcon(name, "/sc rcon.print(game.tick)").await);
        let (s, v) = cl
            .api
            .post(&format!("/api/v1/instances/{name}/stop"), json!({}))
            .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["status"], "stopped", "{v}");
        let id = v["id"].as_i64().unwrap();
        let backups = cl
            .root
            .path()
            .join(format!("controller/saves/{id}/backups"));
        assert_eq!(
            std::fs::read_dir(&backups).map(|d| d.count()).unwrap_or(0),
            1,
            "saved and backed up to the controller"
        );
        // On the other host, the controller's backup is restored and the game goes on from it.
        let (s, v) = cl
            .api
            .post(
                &format!("/api/v1/instances/{name}/assign"),
                json!({"host": second}),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        let v = cl.start(name).await;
        assert_eq!(v["container"].is_object(), second == dock, "{v}");
        // The backup, not a new map: the game goes on from where it stopped.
        let after = tick(cl.rcon(name, "/sc rcon.print(game.tick)").await);
        assert!(after >= before, "{name}: tick {after} after {before}");
        let (s, v) = cl
            .api
            .post(&format!("/api/v1/instances/{name}/stop"), json!({}))
            .await;
        assert_eq!(s, 200, "{v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_without_a_daemon_runs_and_says_why_starts_fail() {
    let cl = cluster();
    let _h = HostProcess::start(
        &cl.root.path().join("h"),
        &cl.c.url(""),
        &cl.join,
        "nodaemon",
        &[
            ("FACTORIO_BACKEND", "docker"),
            ("DOCKER_HOST", "unix:///nonexistent/docker.sock"),
        ],
    );
    let hosts = cl
        .api
        .wait_for("/api/v1/hosts", |h| h[0]["backend"].is_object())
        .await;
    assert_eq!(hosts[0]["connected"], true, "the host runs: {hosts}");
    assert_eq!(hosts[0]["backend"]["name"], "docker");
    let why = hosts[0]["backend"]["error"].as_str().unwrap_or_default();
    assert!(why.contains("/nonexistent/docker.sock"), "{hosts}");
    cl.create("x", "nodaemon", json!({})).await;
    let (s, v) = cl.api.post("/api/v1/instances/x/start", json!({})).await;
    assert_ne!(s, 200, "{v}");
    let message = v["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("Docker backend is unavailable") && message.contains("/nonexistent"),
        "{v}"
    );
}

/// The host in a container as compose or Swarm runs it: the socket mounted, its data at
/// `/home/container` (another path on the machine), an arbitrary uid with or without the
/// socket's group.
fn host_container(
    name: &str,
    net: &str,
    data: &Path,
    url: &str,
    join: &str,
    group: Option<&str>,
) -> String {
    let bin = common::bin("clustorio");
    let port = free_udp_ports(1)[0].to_string();
    let mut args: Vec<String> = [
        "run",
        "-d",
        "--name",
        name,
        "--hostname",
        "panel-like",
        "--network",
        net,
        "--user",
        "12345:12345",
        "-w",
        "/home/container",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(g) = group {
        args.extend(["--group-add".into(), g.into()]);
    }
    for (k, v) in [
        ("MASTER_URL", url),
        ("MASTER_TOKEN", join),
        ("SLAVE_NAME", name),
        ("SERVER_PORT", &port),
        ("FACTORIO_BACKEND", "docker"),
        ("FACTORIO_STANDIN_SPEED", "0.2"),
    ] {
        args.extend(["-e".into(), format!("{k}={v}")]);
    }
    args.extend([
        "-v".into(),
        "/var/run/docker.sock:/var/run/docker.sock".into(),
        "-v".into(),
        format!("{}:/home/container", data.display()),
        "-v".into(),
        format!("{}:/usr/local/bin/clustorio:ro", bin.display()),
        image().into(),
        "/usr/local/bin/clustorio".into(),
        "host".into(),
        "run".into(),
        "--dir".into(),
        "/home/container".into(),
    ]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    docker_ok(&refs)
}

/// Removes a container and then a network when dropped (the host container first: it is on
/// the network).
struct Remove(Vec<String>, Option<String>);

impl Drop for Remove {
    fn drop(&mut self) {
        for c in &self.0 {
            let _ = docker(&["rm", "-f", c]);
        }
        if let Some(n) = &self.1 {
            let _ = docker(&["network", "rm", n]);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_in_a_container_starts_siblings_with_the_daemons_paths() {
    if !docker_available("a_host_in_a_container_starts_siblings_with_the_daemons_paths") {
        return;
    }
    let cl = cluster();
    let (good, denied) = (unique("inbox"), unique("nogroup"));
    let _cleanup = Cleanup(vec![good.clone(), denied.clone()]);
    let net = unique("net");
    docker_ok(&["network", "create", &net]);
    let _remove = Remove(vec![good.clone(), denied.clone()], Some(net.clone()));
    let gateway = docker_ok(&[
        "network",
        "inspect",
        "-f",
        "{{(index .IPAM.Config 0).Gateway}}",
        &net,
    ]);
    let url = format!("http://{gateway}:{}", cl.c.port);
    let sock_gid = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/var/run/docker.sock")
            .unwrap()
            .gid()
            .to_string()
    };
    let data = cl.root.path().join("hostdata");
    install_sim(&data);
    let st = Command::new("chmod")
        .args(["-R", "a+rwX"])
        .arg(&data)
        .status()
        .unwrap();
    assert!(st.success());
    host_container(&good, &net, &data, &url, &cl.join, Some(&sock_gid));
    cl.api
        .wait_for("/api/v1/hosts", |h| {
            h.as_array().is_some_and(|h| {
                h.iter()
                    .any(|h| h["name"] == good.as_str() && h["backend"]["name"] == "docker")
            })
        })
        .await;
    cl.create("west", &good, json!({})).await;
    let v = cl.start("west").await;
    let sibling = inspect(&container_of(&v));
    let mounts = sibling["Mounts"].as_array().unwrap();
    let dir = mounts
        .iter()
        .find(|m| m["Destination"] == "/home/container/instances/west")
        .unwrap_or_else(|| panic!("{mounts:?}"));
    assert_eq!(
        dir["Source"],
        data.join("instances/west").to_str().unwrap(),
        "the daemon's path for the host's /home/container"
    );
    let install = mounts
        .iter()
        .find(|m| m["Destination"] == "/home/container/factorio")
        .unwrap_or_else(|| panic!("{mounts:?}"));
    assert_eq!(install["Source"], data.join("factorio").to_str().unwrap());
    assert_eq!(
        sibling["Config"]["Image"],
        image(),
        "the host's own image by default"
    );
    assert!(data.join("instances/west/saves/world.zip").exists());
    // RCON over the host's network, from the host's container.
    let lua = "/sc rcon.print(\"in a box\")";
    let _ = cl.rcon("west", lua).await;
    assert_eq!(cl.rcon("west", lua).await.trim(), "in a box");
    let (s, v) = cl.api.post("/api/v1/instances/west/stop", json!({})).await;
    assert_eq!(s, 200, "{v}");

    // Without the socket's group: one clear line, the host runs, starts fail with the reason.
    let data2 = cl.root.path().join("hostdata2");
    install_sim(&data2);
    let st = Command::new("chmod")
        .args(["-R", "a+rwX"])
        .arg(&data2)
        .status()
        .unwrap();
    assert!(st.success());
    host_container(&denied, &net, &data2, &url, &cl.join, None);
    let hosts = cl
        .api
        .wait_for("/api/v1/hosts", |h| {
            h.as_array().is_some_and(|h| {
                h.iter()
                    .any(|h| h["name"] == denied.as_str() && h["backend"]["error"].is_string())
            })
        })
        .await;
    let why = hosts
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == denied.as_str())
        .unwrap()["backend"]["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        why.contains("no permission to use the Docker socket"),
        "{why}"
    );
    let logs = docker(&["logs", &denied]);
    let text =
        String::from_utf8_lossy(&logs.stderr).to_string() + &String::from_utf8_lossy(&logs.stdout);
    assert_eq!(
        text.lines().filter(|l| l.contains("no permission")).count(),
        1,
        "{text}"
    );
    cl.create("east", &denied, json!({})).await;
    let (s, v) = cl.api.post("/api/v1/instances/east/start", json!({})).await;
    assert_ne!(s, 200, "{v}");
    assert!(
        v.to_string()
            .contains("no permission to use the Docker socket"),
        "{v}"
    );
}

#[test]
fn the_swarm_stack_file_is_what_docker_stack_deploys() {
    // `docker stack config` parses and resolves the file as `docker stack deploy` would; it
    // needs the CLI only, no swarm.
    let out = Command::new("docker")
        .args(["stack", "config", "-c"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/docker/stack.yml"))
        .env("JOIN_TOKEN", "clu_join")
        .output();
    let Ok(out) = out else {
        eprintln!("SKIPPED the_swarm_stack_file_is_what_docker_stack_deploys: no docker CLI");
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // One service's lines: from `  name:` to the next line indented by two spaces only.
    let service = |name: &str| -> String {
        let mut lines = text.lines().skip_while(|l| *l != format!("  {name}:"));
        let head = lines
            .next()
            .unwrap_or_else(|| panic!("no service {name}: {text}"));
        let body: Vec<&str> = lines
            .take_while(|l| l.starts_with("   ") || l.is_empty())
            .collect();
        format!("{head}\n{}", body.join("\n"))
    };
    let master = service("master");
    assert!(master.contains("replicas: 1"), "{master}");
    let slave = service("slave");
    for needed in [
        "mode: global",
        "FACTORIO_BACKEND: docker",
        "MASTER_TOKEN: clu_join",
        "SLAVE_NAME: '{{.Node.Hostname}}'",
        "source: /var/run/docker.sock",
        "target: /home/container",
    ] {
        assert!(
            slave.contains(needed),
            "the slave service lacks {needed}: {slave}"
        );
    }
    assert!(
        !slave.contains("published"),
        "the slave publishes nothing itself: {slave}"
    );
}
