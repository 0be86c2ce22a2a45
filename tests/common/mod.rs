//! Shared helpers for integration tests: locating the workspace's binaries.
#![allow(dead_code)]

pub mod browser;
pub mod cluster;
pub mod inventory;
pub mod link;
pub mod metrics;
pub mod players;
pub mod portal;
pub mod releases;
pub mod saves;
pub mod subspace;

use std::path::PathBuf;
use std::sync::OnceLock;

/// Path to a binary of this workspace (`clustorio` or `factorio-sim`), built once per test process.
/// `cargo test --workspace` builds every binary before running tests; the fallback build covers
/// `cargo test --test X` runs that did not.
pub fn bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    let dir = target_dir();
    let path = dir.join(name);
    if !path.exists() {
        BUILT.get_or_init(|| {
            let mut args = vec!["build", "--workspace", "--bins"];
            if dir.ends_with("release") {
                args.push("--release");
            }
            let status = std::process::Command::new(env!("CARGO"))
                .args(&args)
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .status()
                .expect("running cargo build");
            assert!(status.success(), "cargo build --workspace failed");
        });
    }
    assert!(path.exists(), "binary {} not found", path.display());
    path
}

/// `target/<profile>/`, derived from the running test executable (`target/<profile>/deps/test-…`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(|deps| deps.parent())
        .map(PathBuf::from)
        .expect("test executable lives in target/<profile>/deps")
}

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A child process whose stdout lines can be awaited and whose stdin is its console. Killed
/// when dropped.
pub struct Proc {
    pub child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl Proc {
    pub fn spawn(mut cmd: Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawning a child process");
        let stdout = child.stdout.take().expect("stdout");
        let stdin = child.stdin.take();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc {
            child,
            stdin,
            lines,
        }
    }

    /// The next stdout line matching `pred`, within `timeout`.
    pub fn wait_line(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let line = self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("expected output did not appear");
            if pred(&line) {
                return line;
            }
        }
    }

    /// Sends a console line.
    pub fn console(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{line}").expect("writing to the console");
        stdin.flush().expect("flushing the console");
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn signal(&self, sig: &str) {
        Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `clustorio controller run` process in a data directory, on a free port.
pub struct ControllerProcess {
    pub proc: Proc,
    pub port: u16,
    /// The login token printed on first boot (empty on later boots).
    pub first_token: String,
}

impl std::ops::Deref for ControllerProcess {
    type Target = Proc;
    fn deref(&self) -> &Proc {
        &self.proc
    }
}

impl std::ops::DerefMut for ControllerProcess {
    fn deref_mut(&mut self) -> &mut Proc {
        &mut self.proc
    }
}

impl ControllerProcess {
    pub fn start(dir: &Path) -> Self {
        Self::start_with(dir, &[])
    }

    pub fn start_with(dir: &Path, env: &[(&str, &str)]) -> Self {
        Self::start_on(dir, 0, env)
    }

    /// On a given port (0: any free one), e.g. to restart on the port hosts know.
    pub fn start_on(dir: &Path, port: u16, env: &[(&str, &str)]) -> Self {
        Self::start_cmd(dir, port, env, Stdio::inherit())
    }

    /// With its log (stderr) written to `log`.
    pub fn start_logged(dir: &Path, env: &[(&str, &str)], log: &Path) -> Self {
        let file = std::fs::File::create(log).expect("creating the log file");
        Self::start_cmd(dir, 0, env, Stdio::from(file))
    }

    fn start_cmd(dir: &Path, port: u16, env: &[(&str, &str)], stderr: Stdio) -> Self {
        let mut cmd = Command::new(bin("clustorio"));
        cmd.args(["controller", "run", "--port", &port.to_string(), "--dir"])
            .arg(dir)
            .env("LOG_LEVEL", "warn")
            .stderr(stderr);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let proc = Proc::spawn(cmd);
        let mut first_token = String::new();
        let line = proc.wait_line(Duration::from_secs(30), |l| {
            l.contains("Started") || l.contains("Login token (shown once): ")
        });
        let line = if let Some(rest) = line.split("Login token (shown once): ").nth(1) {
            first_token = rest.trim().to_string();
            proc.wait_line(Duration::from_secs(30), |l| l.contains("Started"))
        } else {
            line
        };
        let port = line
            .split("http://")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|addr| addr.rsplit(':').next())
            .and_then(|port| port.parse().ok())
            .expect("Started line names the address");
        ControllerProcess {
            proc,
            port,
            first_token,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/api/socket", self.port)
    }
}

/// Prints a new login token for `user` with the offline CLI.
pub fn user_token(dir: &Path, user: &str) -> String {
    let out = Command::new(bin("clustorio"))
        .args(["controller", "token", "--user", user, "--dir"])
        .arg(dir)
        .output()
        .expect("clustorio controller token");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf8")
        .trim()
        .to_string()
}

pub fn join_token(dir: &Path) -> String {
    let out = Command::new(bin("clustorio"))
        .args(["controller", "token", "--join", "--dir"])
        .arg(dir)
        .output()
        .expect("clustorio controller token --join");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf8")
        .trim()
        .to_string()
}
