//! The product's RCON client against the stand-in: auth failure, commands, replies far above
//! 4096 bytes, concurrency, a server that stops answering (must time out, never hang), and a
//! server that goes away and comes back (must reconnect by itself).

mod common;
mod factorio_common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clustorio::host::factorio::{RconClient, RconError, RconTimeouts};
use factorio_common::*;

const FAST_TIMEOUTS: RconTimeouts = RconTimeouts {
    connect: Duration::from_secs(2),
    command: Duration::from_millis(500),
};

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A running sim with RCON on an OS-chosen port.
fn start_sim(inst: &SimInstall, name: &str) -> (Proc, u16) {
    let dir = inst.instance(name);
    let save = inst.create(&dir, "world");
    let p = Proc::spawn(server_cmd(inst, &dir, &save));
    let (_, rcon) = p.wait_ready();
    (p, rcon.unwrap())
}

async fn client(port: u16) -> RconClient {
    RconClient::connect(addr(port), "secret", FAST_TIMEOUTS)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_an_auth_error() {
    let inst = SimInstall::new();
    let (_p, port) = start_sim(&inst, "a");
    let err = RconClient::connect(addr(port), "wrong", FAST_TIMEOUTS)
        .await
        .unwrap_err();
    assert!(matches!(err, RconError::Auth(_)), "{err:?}");
    // A lazily connecting client reports the same on first use.
    let lazy = RconClient::new(addr(port), "wrong", FAST_TIMEOUTS);
    assert!(matches!(
        lazy.exec("/version").await,
        Err(RconError::Auth(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_reply_and_empty_reply() {
    let inst = SimInstall::new();
    let (p, port) = start_sim(&inst, "a");
    let c = client(port).await;
    assert_eq!(c.exec("/version").await.unwrap(), "2.0.77\n");
    // Commands without output answer an empty body; chat shows up on the console.
    assert_eq!(c.exec("hello from rcon").await.unwrap(), "");
    p.wait_for("[CHAT] <server>: hello from rcon");
    assert!(matches!(c.exec("").await, Err(RconError::EmptyCommand)));
    assert_eq!(
        c.exec("/banlist get Bob").await.unwrap(),
        "Bob is not banned.\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_larger_than_4096_bytes_arrives_whole_in_one_packet() {
    let inst = SimInstall::new();
    let (_p, port) = start_sim(&inst, "a");
    let c = client(port).await;
    let cmd = "/sc rcon.print(string.rep('x', 100000))";
    // First script command trips the achievements gate (§4.4); the repeat runs.
    let gate = c.exec(cmd).await.unwrap();
    assert!(gate.contains("achievements"), "{gate}");
    let big = c.exec(cmd).await.unwrap();
    assert_eq!(big.len(), 100_001);
    assert!(big.starts_with("xxxx") && big.ends_with("x\n"));
    // The connection is still in sync afterwards.
    assert_eq!(c.exec("/version").await.unwrap(), "2.0.77\n");

    // On the wire it is one packet whose size field is far above 4096.
    let mut raw = RawRcon::connect(port);
    raw.auth("secret");
    raw.send(5, 2, cmd);
    let (size, id, ty, body) = raw.recv().unwrap();
    assert_eq!((id, ty, body.len()), (5, 0, 100_001));
    assert_eq!(size as usize, 100_001 + 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commands_each_get_their_own_reply() {
    let inst = SimInstall::new();
    let (_p, port) = start_sim(&inst, "a");
    let c = Arc::new(client(port).await);
    c.exec("/sc rcon.print('x')").await.unwrap();
    assert_eq!(c.exec("/sc rcon.print('x')").await.unwrap(), "x\n");
    let mut tasks = Vec::new();
    for i in 0..40 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            (i, c.exec(&format!("/sc rcon.print('n{i}')")).await)
        }));
    }
    // And several connections at once, like DOCK's CLI next to a manager.
    let mut others = Vec::new();
    for i in 0..5 {
        others.push(tokio::spawn(async move {
            let c = RconClient::connect(addr(port), "secret", FAST_TIMEOUTS)
                .await
                .unwrap();
            (i, c.exec(&format!("/sc rcon.print('c{i}')")).await)
        }));
    }
    for t in tasks {
        let (i, r) = t.await.unwrap();
        assert_eq!(r.unwrap(), format!("n{i}\n"));
    }
    for t in others {
        let (i, r) = t.await.unwrap();
        assert_eq!(r.unwrap(), format!("c{i}\n"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_that_stops_answering_times_out_and_recovers() {
    let inst = SimInstall::new();
    let (p, port) = start_sim(&inst, "a");
    let c = client(port).await;
    assert_eq!(c.exec("/version").await.unwrap(), "2.0.77\n");

    // A frozen process (SIGSTOP): the socket stays open but nothing answers.
    p.signal("STOP");
    let t = Instant::now();
    let err = c.exec("/version").await.unwrap_err();
    assert!(matches!(err, RconError::Timeout { .. }), "{err:?}");
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "no timeout: {:?}",
        t.elapsed()
    );
    p.signal("CONT");
    // The timed-out connection was dropped: a late reply cannot be mistaken for the next one.
    assert_eq!(
        c.exec("/players online").await.unwrap(),
        "Online players (0):\n"
    );

    // A hung game thread (sim-only fault): same behaviour.
    let _ = c.exec("/standin hang 1500").await;
    let err = c.exec("/version").await.unwrap_err();
    assert!(matches!(err, RconError::Timeout { .. }), "{err:?}");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(c.exec("/version").await.unwrap(), "2.0.77\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_going_away_and_coming_back() {
    let inst = SimInstall::new();
    let dir = inst.instance("a");
    let save = inst.create(&dir, "world");
    // A fixed port this time, so the second server listens where the first did.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let start = || {
        let mut c = inst.cmd(&dir);
        c.arg("--start-server").arg(&save);
        c.args([
            "--port",
            "0",
            "--rcon-bind",
            &format!("127.0.0.1:{port}"),
            "--rcon-password",
            "secret",
        ]);
        let p = Proc::spawn(c);
        p.wait_ready();
        p
    };
    let mut p = start();
    let c = client(port).await;
    assert_eq!(c.exec("/version").await.unwrap(), "2.0.77\n");

    p.signal("KILL");
    p.wait_exit(Duration::from_secs(10));
    let t = Instant::now();
    let err = c.exec("/version").await.unwrap_err();
    assert!(
        matches!(err, RconError::Io { .. } | RconError::Connect { .. }),
        "{err:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(3));

    let _p2 = start();
    // Same client object: reconnects by itself.
    assert_eq!(c.exec("/version").await.unwrap(), "2.0.77\n");
    assert_eq!(
        c.exec("/players online").await.unwrap(),
        "Online players (0):\n"
    );
}
