//! Helpers for the Factorio tests: a throw-away install of `factorio-sim`, instance dirs, a
//! synchronous process wrapper that collects stdout lines, and a raw RCON client that shows the
//! exact wire behaviour. Every server binds port 0 (game and RCON) and reports the real port in
//! its log, so parallel tests never collide.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Sim speed for tests: every built-in delay ×0.02 (startup in a few ms, 1 s empty-server delay → 20 ms).
pub const FAST: &[(&str, &str)] = &[("FACTORIO_STANDIN_SPEED", "0.02")];

pub struct SimInstall {
    pub tmp: tempfile::TempDir,
    pub root: PathBuf,
}

impl SimInstall {
    pub fn new() -> SimInstall {
        SimInstall::with_version("2.0.77")
    }

    pub fn with_version(v: &str) -> SimInstall {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("factorio");
        let st = Command::new(crate::common::bin("factorio-sim"))
            .args(["install"])
            .arg(&root)
            .args(["--version", v])
            .status()
            .expect("run factorio-sim install");
        assert!(st.success());
        SimInstall { tmp, root }
    }

    pub fn exe(&self) -> PathBuf {
        self.root.join("bin/x64/factorio")
    }

    /// A fresh instance dir with a CLIO-style `config.ini` (read from the install, write here).
    pub fn instance(&self, name: &str) -> PathBuf {
        let dir = self.tmp.path().join("instances").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("config.ini"),
            format!(
                "[path]\nread-data={}/data\nwrite-data={}\n",
                self.root.display(),
                dir.display()
            ),
        )
        .unwrap();
        dir
    }

    pub fn cmd(&self, dir: &Path) -> Command {
        let mut c = Command::new(self.exe());
        c.current_dir(dir).envs(FAST.iter().copied());
        c.arg("--config").arg(dir.join("config.ini"));
        c
    }

    /// `--create <dir>/saves/<name>.zip`, asserting success.
    pub fn create(&self, dir: &Path, name: &str) -> PathBuf {
        let save = dir.join("saves").join(format!("{name}.zip"));
        let out = self.cmd(dir).arg("--create").arg(&save).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(save.is_file());
        save
    }
}

/// A running sim with its stdout collected line by line.
pub struct Proc {
    pub child: Child,
    pub stdin: Option<ChildStdin>,
    lines: Arc<(Mutex<Vec<String>>, Condvar)>,
}

impl Proc {
    pub fn spawn(mut cmd: Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sim");
        let stdin = child.stdin.take();
        let lines = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let l = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    l.0.lock().unwrap().push(line);
                    l.1.notify_all();
                }
            });
        }
        Proc {
            child,
            stdin,
            lines,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.0.lock().unwrap().clone()
    }

    pub fn text(&self) -> String {
        self.lines().join("\n")
    }

    /// Wait for a line containing `needle` (after skipping `skip` matches); panics on timeout.
    pub fn wait_for_nth(&self, needle: &str, n: usize, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let (m, cv) = &*self.lines;
        let mut g = m.lock().unwrap();
        loop {
            if let Some(l) = g.iter().filter(|l| l.contains(needle)).nth(n) {
                return l.clone();
            }
            let now = Instant::now();
            if now >= deadline {
                panic!(
                    "timed out waiting for {needle:?} (#{n}); output:\n{}",
                    g.join("\n")
                );
            }
            g = cv.wait_timeout(g, deadline - now).unwrap().0;
        }
    }

    pub fn wait_for(&self, needle: &str) -> String {
        self.wait_for_nth(needle, 0, Duration::from_secs(20))
    }

    pub fn count(&self, needle: &str) -> usize {
        self.lines().iter().filter(|l| l.contains(needle)).count()
    }

    /// Wait until the server is ready; returns (game port, rcon port if any).
    pub fn wait_ready(&self) -> (u16, Option<u16>) {
        let hosting = self.wait_for("Hosting game at");
        self.wait_for("changing state from(CreatingGame) to(InGame)");
        let game = port_of(&hosting);
        self.wait_for("Maximum segment size");
        let rcon = self
            .lines()
            .iter()
            .find(|l| l.contains("Starting RCON interface at"))
            .map(|l| port_of(l));
        (game, rcon)
    }

    pub fn console(&mut self, line: &str) {
        let s = self.stdin.as_mut().expect("stdin");
        writeln!(s, "{line}").unwrap();
        s.flush().unwrap();
    }

    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(st.success());
    }

    /// Wait for exit; returns the exit code (None if killed by a signal).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                // Let the reader threads catch the last lines.
                std::thread::sleep(Duration::from_millis(50));
                return st.code();
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!("sim did not exit in {timeout:?}; output:\n{}", self.text());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `… IP ADDR:({0.0.0.0:34197})` → 34197.
pub fn port_of(line: &str) -> u16 {
    let inner = line
        .split("({")
        .nth(1)
        .and_then(|s| s.split("})").next())
        .expect("address in line");
    inner.rsplit(':').next().unwrap().parse().unwrap()
}

/// Standard server flags with ports chosen by the OS.
pub fn server_cmd(inst: &SimInstall, dir: &Path, save: &Path) -> Command {
    let mut c = inst.cmd(dir);
    c.arg("--start-server").arg(save);
    c.args([
        "--port",
        "0",
        "--rcon-bind",
        "127.0.0.1:0",
        "--rcon-password",
        "secret",
    ]);
    c
}

/// Minimal synchronous RCON client that exposes the raw wire behaviour.
pub struct RawRcon {
    pub s: TcpStream,
}

impl RawRcon {
    pub fn connect(port: u16) -> RawRcon {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        RawRcon { s }
    }

    pub fn send(&mut self, id: i32, ty: i32, body: &str) {
        let mut p = Vec::new();
        p.extend_from_slice(&((body.len() + 10) as i32).to_le_bytes());
        p.extend_from_slice(&id.to_le_bytes());
        p.extend_from_slice(&ty.to_le_bytes());
        p.extend_from_slice(body.as_bytes());
        p.extend_from_slice(&[0, 0]);
        self.s.write_all(&p).unwrap();
    }

    /// Read one packet: (size field, id, type, body).
    pub fn recv(&mut self) -> std::io::Result<(i32, i32, i32, String)> {
        let mut h = [0u8; 12];
        self.s.read_exact(&mut h)?;
        let size = i32::from_le_bytes(h[0..4].try_into().unwrap());
        let id = i32::from_le_bytes(h[4..8].try_into().unwrap());
        let ty = i32::from_le_bytes(h[8..12].try_into().unwrap());
        let mut body = vec![0u8; (size - 8) as usize];
        self.s.read_exact(&mut body)?;
        body.truncate(body.len() - 2);
        Ok((size, id, ty, String::from_utf8(body).unwrap()))
    }

    pub fn auth(&mut self, pw: &str) -> (i32, i32) {
        self.send(1, 3, pw);
        let (_, id, ty, _) = self.recv().unwrap();
        (id, ty)
    }

    pub fn exec(&mut self, id: i32, cmd: &str) -> String {
        self.send(id, 2, cmd);
        let (_, rid, ty, body) = self.recv().unwrap();
        assert_eq!((rid, ty), (id, 0));
        body
    }
}
