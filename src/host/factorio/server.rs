//! Launching and stopping one Factorio server process (research/factorio.md §12.4–§12.10).
//!
//! [`FactorioServer::start`] writes the instance's `config.ini`, spawns Factorio in its own
//! process group with all three stdio pipes (stdin is kept open: EOF would cost us the console),
//! streams stdout through the [`LineParser`] into an event channel, waits for the game to be ready
//! and for RCON to listen, and connects RCON. The returned [`ServerHandle`] runs commands, stops
//! gracefully (`/quit`, then SIGINT, then SIGTERM, then SIGKILL) and reports how the process ended.
//! It knows nothing about instances or statuses: that is the supervisor's job.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::cli::{self, Install, ServerArgs};
use super::ipc;
use super::log::{ExitReport, LineParser, ServerEvent, parse_line};
use super::rcon::{RconClient, RconError, RconTimeouts};

/// Events buffered for a slow consumer. Output lines beyond this are dropped (the typed events
/// never are), so a consumer that stops reading can never stall Factorio on a full stdout pipe
/// for long; it must still drain the receiver to see typed events.
const EVENT_BUFFER: usize = 4096;
/// Lines kept for crash reports.
const TAIL_LINES: usize = 50;

/// Everything needed to start one server.
#[derive(Clone, Debug)]
pub struct StartSpec {
    pub install: Install,
    /// The instance's write-data dir (saves, mods, logs, lock, config.ini).
    pub write_dir: PathBuf,
    pub args: ServerArgs,
    /// Extra environment for the child (the process otherwise inherits ours).
    pub env: Vec<(OsString, OsString)>,
    /// From spawn to "game ready and RCON listening". Big saves and mod loads take tens of seconds.
    pub ready_timeout: Duration,
    pub rcon_timeouts: RconTimeouts,
}

impl StartSpec {
    pub fn new(install: Install, write_dir: impl Into<PathBuf>, args: ServerArgs) -> StartSpec {
        StartSpec {
            install,
            write_dir: write_dir.into(),
            args,
            env: Vec::new(),
            ready_timeout: Duration::from_secs(120),
            rcon_timeouts: RconTimeouts::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("cannot prepare {path}: {message}")]
    Prepare { path: String, message: String },
    #[error("cannot start {exe}: {message} (is FACTORIO_VERSION installed and executable?)")]
    Spawn { exe: String, message: String },
    #[error("Factorio failed to start: {reason}")]
    StartFailed {
        reason: String,
        report: Option<ExitReport>,
    },
    #[error(
        "Factorio was not ready within {0:?}; it was killed. Raise the start timeout for big saves or many mods"
    )]
    ReadyTimeout(Duration),
    #[error(transparent)]
    Rcon(#[from] RconError),
    #[error("this server was started without RCON")]
    NoRcon,
    /// What runs Factorio refused (e.g. the Docker daemon); the message says what to fix.
    #[error("{0}")]
    Backend(String),
}

/// Progress seen in the output so far.
#[derive(Clone, Debug, Default)]
struct Status {
    game_ready: bool,
    rcon_listening: Option<String>,
    hosting: Option<String>,
    start_failed: Option<String>,
    last_error: Option<String>,
    quitting: bool,
    quit_saved: bool,
    goodbye: bool,
    exited: Option<ExitReport>,
}

/// The console input: a child's stdin pipe, or a container's attach stream.
pub(crate) type ConsoleInput = Box<dyn AsyncWrite + Send + Unpin>;
pub(crate) type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// How a Factorio ended, as whatever ran it saw it.
#[derive(Clone, Debug, Default)]
pub(crate) struct Ended {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub oom_killed: bool,
}

/// A Factorio that has been started, in whatever runs it (a child process here, a container in
/// the Docker backend): its console and output, and `run`, which delivers the signals it is given
/// while Factorio lives and then says how it ended. [`ServerHandle::supervise`] does the rest the
/// same way for every backend: output parsing, readiness, RCON, the stop escalation, the report.
pub(crate) struct Started<O, E> {
    pub pid: Option<u32>,
    pub stdin: Option<ConsoleInput>,
    pub stdout: Option<O>,
    pub stderr: Option<E>,
    pub run: Box<dyn FnOnce(mpsc::UnboundedReceiver<i32>) -> BoxFuture<Ended> + Send>,
    /// Where the game's `script-output/` is on this machine (IPC file payloads).
    pub script_output: PathBuf,
}

struct Inner {
    pid: Option<u32>,
    status: watch::Receiver<Status>,
    signals: mpsc::UnboundedSender<i32>,
    stdin: tokio::sync::Mutex<Option<ConsoleInput>>,
    rcon: OnceLock<Arc<RconClient>>,
    rcon_config: Option<(SocketAddr, String)>,
    rcon_timeouts: RconTimeouts,
    requested: Arc<AtomicBool>,
}

/// Handle to a running (or exited) server; cheap to clone.
#[derive(Clone)]
pub struct ServerHandle {
    inner: Arc<Inner>,
}

/// Namespace for starting servers.
pub struct FactorioServer;

impl FactorioServer {
    /// Spawn, wait until ready (game in `InGame`, RCON listening) and connect RCON.
    /// On failure the process has exited or been killed; the error carries the reason.
    pub async fn start(
        spec: StartSpec,
    ) -> Result<(ServerHandle, mpsc::Receiver<ServerEvent>), LaunchError> {
        let timeout = spec.ready_timeout;
        let (handle, rx) = FactorioServer::spawn(spec)?;
        handle.wait_ready(timeout).await?;
        Ok((handle, rx))
    }

    /// Spawn without waiting: for callers that want to report progress while it starts.
    /// Follow with [`ServerHandle::wait_ready`].
    pub fn spawn(
        spec: StartSpec,
    ) -> Result<(ServerHandle, mpsc::Receiver<ServerEvent>), LaunchError> {
        let config = cli::write_config(&spec.install, &spec.write_dir).map_err(|e| {
            LaunchError::Prepare {
                path: spec.write_dir.display().to_string(),
                message: e.to_string(),
            }
        })?;
        let exe = spec.install.executable();
        let spawn_error = |e: std::io::Error| LaunchError::Spawn {
            exe: exe.display().to_string(),
            message: e.to_string(),
        };
        // stdout and stderr go through pipes whose read ends the game holds too (as fds 3 and
        // 4; it never reads them): when this host process dies, the pipes stay open, so what
        // the game prints is kept in them — not thrown away, and no SIGPIPE for the game — and
        // the next host process reads it from there ([`FactorioServer::adopt_output`]).
        let (out_r, out_w) = held_pipe().map_err(spawn_error)?;
        let (err_r, err_w) = held_pipe().map_err(spawn_error)?;
        let keep = [out_r.as_raw_fd(), err_r.as_raw_fd()];
        let mut cmd = Command::new(&exe);
        cmd.args(cli::server_args(&config, &spec.args))
            .current_dir(&spec.write_dir)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::from(out_w))
            .stderr(Stdio::from(err_w))
            // Own process group: a Ctrl-C at our terminal must not reach Factorio directly;
            // we decide how it stops.
            .process_group(0)
            .kill_on_drop(true);
        // SAFETY: between fork and exec the closure only makes async-signal-safe calls
        // (fcntl, dup2) on descriptors this process owns.
        unsafe {
            cmd.pre_exec(move || keep_read_ends(keep));
        }
        let mut child = cmd.spawn().map_err(spawn_error)?;
        // The write ends now belong to the child alone: EOF comes when it exits.
        drop(cmd);
        let pid = child.id();
        let stdin = child.stdin.take().map(|s| Box::new(s) as ConsoleInput);
        let stdout =
            Some(tokio::net::unix::pipe::Receiver::from_owned_fd(out_r).map_err(spawn_error)?);
        let stderr =
            Some(tokio::net::unix::pipe::Receiver::from_owned_fd(err_r).map_err(spawn_error)?);
        let started = Started {
            pid,
            stdin,
            stdout,
            stderr,
            run: Box::new(move |signals| Box::pin(wait_child(child, signals))),
            script_output: spec.write_dir.join("script-output"),
        };
        Ok(ServerHandle::supervise(
            started,
            spec.args.rcon.clone(),
            spec.rcon_timeouts,
            false,
        ))
    }
}

/// A pipe (close-on-exec) with room for what a game prints while no host reads it (1 MiB when
/// the system allows, else the default 64 KiB; a game that fills it waits for the next host).
fn held_pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 writes two descriptors into the array it is given.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both were just created and are owned by nothing else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: plain fcntl on a descriptor we own; failure only leaves the default size.
    unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20) };
    Ok((r, w))
}

/// In the child: the two read ends become fds 3 and 4, kept across exec.
fn keep_read_ends(fds: [RawFd; 2]) -> std::io::Result<()> {
    // Out of the way first (a source may already be 3 or 4), then into place.
    let mut high = [0 as RawFd; 2];
    for (h, fd) in high.iter_mut().zip(fds) {
        // SAFETY: fcntl/dup2 are async-signal-safe and touch descriptors only.
        *h = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10) };
        if *h < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    for (target, h) in [3, 4].into_iter().zip(high) {
        // SAFETY: as above; dup2's copy is not close-on-exec, the high copies are.
        if unsafe { libc::dup2(h, target) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Waits for a process that is not our child (it cannot be reaped here): polls until it is gone
/// or a zombie, delivering the signals it is given meanwhile.
async fn wait_foreign(pid: u32, mut signals: mpsc::UnboundedReceiver<i32>) -> Ended {
    let alive = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
        })
    };
    while alive() {
        tokio::select! {
            Some(sig) = signals.recv() => {
                if let Ok(p) = i32::try_from(pid) {
                    // SAFETY: plain syscall; the process was alive just now.
                    unsafe { libc::kill(p, sig) };
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
    Ended::default()
}

impl FactorioServer {
    /// The output of a Factorio a previous host process started and left running when it died:
    /// the game holds its own pipes' read ends (fds 3 and 4, see [`FactorioServer::spawn`]), so
    /// everything it printed since is still there. Returns a handle that reads it like any
    /// server's output and stops the process (no RCON: by signals), or `None` when fds 3 and 4 are
    /// not its stdout and stderr pipes (an older host started it, or it is gone).
    pub fn adopt_output(
        pid: u32,
        write_dir: &std::path::Path,
    ) -> Option<(ServerHandle, mpsc::Receiver<ServerEvent>)> {
        use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
        let fd = |n: u32| format!("/proc/{pid}/fd/{n}");
        let id = |n: u32| std::fs::metadata(fd(n)).ok().map(|m| (m.dev(), m.ino()));
        if id(1)? != id(3)? || id(2)? != id(4)? {
            return None;
        }
        let open = |n: u32| {
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(fd(n))
                .ok()
                .and_then(|f| tokio::net::unix::pipe::Receiver::from_file(f).ok())
        };
        let (stdout, stderr) = (open(3)?, open(4)?);
        let started = Started {
            pid: Some(pid),
            stdin: None,
            stdout: Some(stdout),
            stderr: Some(stderr),
            run: Box::new(move |signals| Box::pin(wait_foreign(pid, signals))),
            script_output: write_dir.join("script-output"),
        };
        Some(ServerHandle::supervise(
            started,
            None,
            RconTimeouts::default(),
            true,
        ))
    }
}

impl ServerHandle {
    /// Watches a started Factorio: parses its output into events, tracks its progress, and sends
    /// the exit report as the last event. `running` is for a server found already running (a
    /// container adopted after a host restart): it counts as ready, with RCON at `rcon`.
    pub(crate) fn supervise<O, E>(
        started: Started<O, E>,
        rcon: Option<(SocketAddr, String)>,
        rcon_timeouts: RconTimeouts,
        running: bool,
    ) -> (ServerHandle, mpsc::Receiver<ServerEvent>)
    where
        O: AsyncRead + Unpin + Send + 'static,
        E: AsyncRead + Unpin + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(EVENT_BUFFER);
        let mut initial = Status::default();
        if running {
            initial.game_ready = true;
            initial.rcon_listening = rcon.as_ref().map(|(a, _)| a.to_string());
        }
        let (status_tx, status_rx) = watch::channel(initial);
        let status_tx = Arc::new(status_tx);
        let tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL_LINES)));
        let (sig_tx, sig_rx) = mpsc::unbounded_channel();
        let requested = Arc::new(AtomicBool::new(false));

        let script_output = started.script_output;
        let out_task = started.stdout.map(|s| {
            tokio::spawn(read_stdout(
                s,
                tx.clone(),
                status_tx.clone(),
                tail.clone(),
                script_output,
            ))
        });
        let err_task = started
            .stderr
            .map(|s| tokio::spawn(read_stderr(s, tx.clone(), tail.clone())));
        tokio::spawn(report_exit(
            (started.run)(sig_rx),
            [out_task, err_task],
            tx,
            status_tx,
            tail,
            requested.clone(),
        ));

        let handle = ServerHandle {
            inner: Arc::new(Inner {
                pid: started.pid,
                status: status_rx,
                signals: sig_tx,
                stdin: tokio::sync::Mutex::new(started.stdin),
                rcon: OnceLock::new(),
                rcon_config: rcon,
                rcon_timeouts,
                requested,
            }),
        };
        (handle, rx)
    }
}

fn push_tail(tail: &Mutex<VecDeque<String>>, line: &str) {
    let mut t = tail.lock().unwrap_or_else(|p| p.into_inner());
    if t.len() == TAIL_LINES {
        t.pop_front();
    }
    t.push_back(line.to_string());
}

/// Read lines as bytes: Factorio output is UTF-8, but a mod can print anything.
async fn next_raw_line<'b, R: AsyncRead + Unpin>(
    r: &mut BufReader<R>,
    buf: &'b mut Vec<u8>,
) -> Option<&'b [u8]> {
    buf.clear();
    match r.read_until(b'\n', buf).await {
        Ok(0) | Err(_) => None,
        Ok(_) => {
            while matches!(buf.last(), Some(b'\n' | b'\r')) {
                buf.pop();
            }
            Some(buf.as_slice())
        }
    }
}

async fn next_line<R: AsyncRead + Unpin>(
    r: &mut BufReader<R>,
    buf: &mut Vec<u8>,
) -> Option<String> {
    next_raw_line(r, buf)
        .await
        .map(|b| String::from_utf8_lossy(b).into_owned())
}

/// An `\f$ipc:` line becomes one [`ServerEvent::Ipc`] (file payloads are read here, inline, so
/// they keep their place in the order) or one [`ServerEvent::IpcError`]. It is sent with
/// back-pressure, never dropped, and never shown as a log line.
async fn forward_ipc(
    parsed: Result<ipc::IpcLine, ipc::IpcError>,
    script_output: &std::path::Path,
    tx: &mpsc::Sender<ServerEvent>,
) {
    let event = match parsed.and_then(|line| match line.payload {
        ipc::Payload::Json(data) => Ok((line.channel, data)),
        ipc::Payload::File(name) => {
            ipc::read_file_payload(script_output, &line.channel, &name).map(|d| (line.channel, d))
        }
    }) {
        Ok((channel, data)) => ServerEvent::Ipc { channel, data },
        Err(error) => ServerEvent::IpcError {
            kind: error.kind(),
            message: error.to_string(),
        },
    };
    let _ = tx.send(event).await;
}

async fn read_stdout<R: AsyncRead + Unpin + Send>(
    out: R,
    tx: mpsc::Sender<ServerEvent>,
    status: Arc<watch::Sender<Status>>,
    tail: Arc<Mutex<VecDeque<String>>>,
    script_output: PathBuf,
) {
    let mut parser = LineParser::new();
    let mut r = BufReader::new(out);
    let mut buf = Vec::new();
    while let Some(bytes) = next_raw_line(&mut r, &mut buf).await {
        if let Some(parsed) = ipc::parse(bytes) {
            forward_ipc(parsed, &script_output, &tx).await;
            continue;
        }
        let raw = String::from_utf8_lossy(bytes).into_owned();
        push_tail(&tail, &raw);
        let (line, events) = parser.feed(&raw);
        for e in &events {
            status.send_modify(|s| match e {
                ServerEvent::GameReady => s.game_ready = true,
                ServerEvent::RconReady { address } => s.rcon_listening = Some(address.clone()),
                ServerEvent::HostingGame { address } => s.hosting = Some(address.clone()),
                ServerEvent::StartFailed { reason } => s.start_failed = Some(reason.clone()),
                ServerEvent::Error { message } => s.last_error = Some(message.clone()),
                ServerEvent::Quitting { .. } => s.quitting = true,
                ServerEvent::SaveFinished {
                    kind: super::log::SaveKind::Quit { .. },
                } => s.quit_saved = true,
                ServerEvent::Goodbye => s.goodbye = true,
                _ => {}
            });
        }
        // Lines may be dropped under back-pressure; typed events may not.
        let _ = tx.try_send(ServerEvent::Line(line));
        for e in events {
            let _ = tx.send(e).await;
        }
    }
}

async fn read_stderr<R: AsyncRead + Unpin + Send>(
    err: R,
    tx: mpsc::Sender<ServerEvent>,
    tail: Arc<Mutex<VecDeque<String>>>,
) {
    let mut r = BufReader::new(err);
    let mut buf = Vec::new();
    while let Some(raw) = next_line(&mut r, &mut buf).await {
        push_tail(&tail, &raw);
        let _ = tx.try_send(ServerEvent::Line(parse_line(&raw)));
    }
}

/// Owns the child: delivers signals while it is alive (so a pid is never signalled after it was
/// reaped and possibly reused), then says how it ended.
async fn wait_child(mut child: Child, mut signals: mpsc::UnboundedReceiver<i32>) -> Ended {
    let pid = child.id();
    let exit = loop {
        tokio::select! {
            r = child.wait() => break r,
            Some(sig) = signals.recv() => {
                if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
                    // SAFETY: plain syscall; the child is not reaped yet (we own it and have not
                    // completed `wait`), so `pid` still names it.
                    unsafe { libc::kill(pid, sig) };
                }
            }
        }
    };
    use std::os::unix::process::ExitStatusExt;
    match &exit {
        Ok(st) => Ended {
            code: st.code(),
            signal: st.signal(),
            oom_killed: false,
        },
        Err(_) => Ended::default(),
    }
}

/// Waits for the end, then reports it as the last event.
async fn report_exit(
    ended: BoxFuture<Ended>,
    readers: [Option<tokio::task::JoinHandle<()>>; 2],
    tx: mpsc::Sender<ServerEvent>,
    status: Arc<watch::Sender<Status>>,
    tail: Arc<Mutex<VecDeque<String>>>,
    requested: Arc<AtomicBool>,
) {
    let Ended {
        code,
        signal,
        oom_killed,
    } = ended.await;
    // Let the readers drain what is left in the pipes, so `Exited` comes after the last line.
    for r in readers.into_iter().flatten() {
        let _ = tokio::time::timeout(Duration::from_secs(2), r).await;
    }
    let s = status.borrow().clone();
    let report = ExitReport {
        code,
        signal,
        oom_killed,
        graceful: s.goodbye && s.quit_saved && signal.is_none(),
        requested: requested.load(Ordering::SeqCst),
        last_lines: tail
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect(),
    };
    status.send_modify(|s| s.exited = Some(report.clone()));
    let _ = tx.send(ServerEvent::Exited(report)).await;
}

/// `0.0.0.0:27015` as printed by Factorio → where to connect (loopback for a wildcard address).
fn connectable(printed: &str, configured: SocketAddr) -> SocketAddr {
    let mut addr = printed.parse::<SocketAddr>().unwrap_or(configured);
    if configured.port() != 0 {
        addr.set_port(configured.port());
    }
    if addr.ip().is_unspecified() {
        addr.set_ip(if configured.ip().is_unspecified() {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            configured.ip()
        });
    }
    addr
}

impl ServerHandle {
    pub fn pid(&self) -> Option<u32> {
        self.inner.pid
    }

    /// The game address from `Hosting game at` (shows the real port when started with port 0).
    pub fn game_address(&self) -> Option<String> {
        self.inner.status.borrow().hosting.clone()
    }

    pub fn rcon_address(&self) -> Option<SocketAddr> {
        self.inner.rcon.get().map(|c| c.addr())
    }

    /// The exit report, once the process has exited.
    pub fn exited(&self) -> Option<ExitReport> {
        self.inner.status.borrow().exited.clone()
    }

    /// Wait until the game runs and RCON is connected; see [`FactorioServer::start`].
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), LaunchError> {
        let deadline = Instant::now() + timeout;
        let want_rcon = self.inner.rcon_config.is_some();
        let mut st = self.inner.status.clone();
        let waited = tokio::time::timeout_at(
            deadline,
            st.wait_for(|s| {
                (s.game_ready && (!want_rcon || s.rcon_listening.is_some()))
                    || s.start_failed.is_some()
                    || s.exited.is_some()
            }),
        )
        .await
        // Clone out of the watch guard at once: holding it across an await would make this
        // future !Send.
        .map(|r| r.map(|s| s.clone()));
        let snapshot = match waited {
            Ok(Ok(s)) => s,
            // Sender gone means the process is gone: treat like an exit.
            Ok(Err(_)) => self.inner.status.borrow().clone(),
            Err(_) => {
                self.kill().await;
                return Err(LaunchError::ReadyTimeout(timeout));
            }
        };
        if snapshot.start_failed.is_some() || snapshot.exited.is_some() {
            // A failed start ends with its own `Goodbye` and exit 1; collect the report.
            let report = tokio::time::timeout(Duration::from_secs(10), self.wait())
                .await
                .ok();
            if report.is_none() {
                self.kill().await;
            }
            let reason = snapshot
                .start_failed
                .or(snapshot.last_error)
                .or_else(|| report.as_ref().and_then(|r| r.last_lines.last().cloned()))
                .unwrap_or_else(|| "the process exited before the game was ready".into());
            return Err(LaunchError::StartFailed { reason, report });
        }
        if let Some((configured, password)) = &self.inner.rcon_config {
            let printed = snapshot.rcon_listening.unwrap_or_default();
            let addr = connectable(&printed, *configured);
            // "InGame seen" does not imply RCON accepts yet (§3.4); retry briefly until the deadline.
            let client = loop {
                match RconClient::connect(addr, password.clone(), self.inner.rcon_timeouts).await {
                    Ok(c) => break c,
                    Err(RconError::Auth(a)) => return Err(RconError::Auth(a).into()),
                    Err(e) if Instant::now() + Duration::from_millis(100) >= deadline => {
                        self.kill().await;
                        return Err(e.into());
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            };
            let _ = self.inner.rcon.set(Arc::new(client));
        }
        Ok(())
    }

    /// Run a console command over RCON and return the reply body.
    pub async fn rcon(&self, command: &str) -> Result<String, LaunchError> {
        let client = self.inner.rcon.get().ok_or(LaunchError::NoRcon)?;
        Ok(client.exec(command).await?)
    }

    /// The shared RCON client, e.g. for a poller with its own timeouts.
    pub fn rcon_client(&self) -> Option<Arc<RconClient>> {
        self.inner.rcon.get().cloned()
    }

    /// Write one line to the server console (stdin). A line without `/` is chat.
    pub async fn send_console(&self, line: &str) -> std::io::Result<()> {
        let mut guard = self.inner.stdin.lock().await;
        let stdin = guard
            .as_mut()
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "stdin closed"))?;
        stdin.write_all(format!("{line}\n").as_bytes()).await?;
        stdin.flush().await
    }

    /// Send a signal (e.g. `libc::SIGINT`); ignored once the process has exited.
    pub fn signal(&self, sig: i32) {
        let _ = self.inner.signals.send(sig);
    }

    /// Wait for the process to exit.
    pub async fn wait(&self) -> ExitReport {
        let mut st = self.inner.status.clone();
        if let Ok(s) = st.wait_for(|s| s.exited.is_some()).await
            && let Some(r) = s.exited.clone()
        {
            return r;
        }
        // The reporting task is gone without a report: the runtime is shutting down.
        ExitReport {
            code: None,
            signal: None,
            oom_killed: false,
            graceful: false,
            requested: true,
            last_lines: Vec::new(),
        }
    }

    async fn wait_until(&self, deadline: Instant, pred: impl Fn(&Status) -> bool) -> bool {
        let mut st = self.inner.status.clone();
        matches!(
            tokio::time::timeout_at(deadline, st.wait_for(|s| pred(s))).await,
            Ok(Ok(_))
        )
    }

    /// Graceful stop within `timeout`: RCON `/quit` (stdin `/quit` without RCON) — which saves —
    /// then SIGINT and SIGTERM if Factorio does not start quitting, and SIGKILL when the time is up.
    /// Judge the result by [`ExitReport::graceful`] (1.1 before 1.1.93 exits 1 even when graceful).
    pub async fn stop(&self, timeout: Duration) -> ExitReport {
        if let Some(r) = self.exited() {
            return r;
        }
        self.inner.requested.store(true, Ordering::SeqCst);
        let start = Instant::now();
        let deadline = start + timeout;
        let step = (timeout / 4).max(Duration::from_millis(200)).min(timeout);
        let quitting = |s: &Status| s.quitting || s.exited.is_some();
        match self.inner.rcon.get() {
            // The reply may never come: the server closes connections while quitting.
            Some(c) => {
                let _ = c.exec_with_timeout("/quit", step).await;
            }
            None => {
                let _ = self.send_console("/quit").await;
            }
        }
        for sig in [libc::SIGINT, libc::SIGTERM] {
            if self
                .wait_until((Instant::now() + step).min(deadline), quitting)
                .await
            {
                break;
            }
            tracing::info!(pid = ?self.pid(), signal = sig, "Factorio did not start quitting; signalling");
            self.signal(sig);
        }
        // Quitting has started (or nothing helped): give the save the rest of the time.
        if !self.wait_until(deadline, |s| s.exited.is_some()).await {
            tracing::warn!(pid = ?self.pid(), ?timeout, "Factorio did not exit in time; killing it");
            self.signal(libc::SIGKILL);
        }
        self.wait().await
    }

    /// SIGKILL now; no save. Returns the exit report.
    pub async fn kill(&self) -> ExitReport {
        self.inner.requested.store(true, Ordering::SeqCst);
        if self.exited().is_none() {
            self.signal(libc::SIGKILL);
        }
        self.wait().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rcon_address_from_log_line() {
        let cfg: SocketAddr = "127.0.0.1:0".parse().unwrap();
        assert_eq!(
            connectable("0.0.0.0:4000", cfg),
            "127.0.0.1:4000".parse().unwrap()
        );
        let cfg: SocketAddr = "127.0.0.1:27015".parse().unwrap();
        assert_eq!(connectable("127.0.0.1:27015", cfg), cfg);
        let wild: SocketAddr = "0.0.0.0:27015".parse().unwrap();
        assert_eq!(
            connectable("0.0.0.0:27015", wild),
            "127.0.0.1:27015".parse().unwrap()
        );
    }
}
