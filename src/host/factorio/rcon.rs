//! RCON client for Factorio: the `rcon` crate with its Factorio quirks (one request → exactly one
//! response packet of any size; never an empty sentinel, which Factorio never answers), wrapped in
//! timeouts and reconnection (research/factorio.md §4, §12.7).
//!
//! The crate does not match reply ids, so a reply that arrives after we gave up would be read as
//! the answer to the *next* command. Hence: any timeout or I/O error drops the connection, and the
//! next command reconnects.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::Mutex;

type Connection = rcon::Connection<TcpStream>;

#[derive(Debug, thiserror::Error)]
pub enum RconError {
    #[error("cannot connect to RCON at {addr}: {message}")]
    Connect { addr: SocketAddr, message: String },
    #[error("RCON authentication failed at {0}: check the RCON password")]
    Auth(SocketAddr),
    #[error(
        "RCON {what} timed out after {after:?} at {addr}; the connection was dropped and will be reopened"
    )]
    Timeout {
        what: &'static str,
        after: Duration,
        addr: SocketAddr,
    },
    #[error("RCON connection to {addr} failed: {message}")]
    Io { addr: SocketAddr, message: String },
    #[error("empty RCON commands are never answered by Factorio; not sent")]
    EmptyCommand,
}

/// Timeouts; commands that run Lua over big maps can legitimately take seconds.
#[derive(Clone, Copy, Debug)]
pub struct RconTimeouts {
    pub connect: Duration,
    pub command: Duration,
}

impl Default for RconTimeouts {
    fn default() -> Self {
        RconTimeouts {
            connect: Duration::from_secs(5),
            command: Duration::from_secs(30),
        }
    }
}

/// A reconnecting RCON client. Commands are serialised over one connection (Factorio runs them
/// in order on the game thread anyway); `&self` methods make it shareable behind an `Arc`.
pub struct RconClient {
    addr: SocketAddr,
    password: String,
    timeouts: RconTimeouts,
    conn: Mutex<Option<Connection>>,
}

impl std::fmt::Debug for RconClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the password.
        f.debug_struct("RconClient")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl RconClient {
    /// A client that connects on first use.
    pub fn new(
        addr: SocketAddr,
        password: impl Into<String>,
        timeouts: RconTimeouts,
    ) -> RconClient {
        RconClient {
            addr,
            password: password.into(),
            timeouts,
            conn: Mutex::new(None),
        }
    }

    /// Connect and authenticate now, so a wrong password or a closed port shows up immediately.
    pub async fn connect(
        addr: SocketAddr,
        password: impl Into<String>,
        timeouts: RconTimeouts,
    ) -> Result<RconClient, RconError> {
        let c = RconClient::new(addr, password, timeouts);
        let conn = c.open().await?;
        *c.conn.lock().await = Some(conn);
        Ok(c)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    async fn open(&self) -> Result<Connection, RconError> {
        let addr = self.addr;
        // Never `Connection::connect`: it turns on the Minecraft quirks (1413-byte commands, sleeps).
        let fut = Connection::builder()
            .enable_factorio_quirks(true)
            .connect(addr, &self.password);
        match tokio::time::timeout(self.timeouts.connect, fut).await {
            Err(_) => Err(RconError::Timeout {
                what: "connect",
                after: self.timeouts.connect,
                addr,
            }),
            Ok(Err(rcon::Error::Auth)) => Err(RconError::Auth(addr)),
            Ok(Err(e)) => Err(RconError::Connect {
                addr,
                message: e.to_string(),
            }),
            Ok(Ok(c)) => Ok(c),
        }
    }

    /// Run one console command and return its reply body (often empty).
    pub async fn exec(&self, command: &str) -> Result<String, RconError> {
        self.exec_with_timeout(command, self.timeouts.command).await
    }

    pub async fn exec_with_timeout(
        &self,
        command: &str,
        timeout: Duration,
    ) -> Result<String, RconError> {
        if command.is_empty() {
            return Err(RconError::EmptyCommand);
        }
        let mut slot = self.conn.lock().await;
        let reused = slot.is_some();
        let mut conn = match slot.take() {
            Some(c) => c,
            None => self.open().await?,
        };
        match self.run(&mut conn, command, timeout).await {
            Ok(body) => {
                *slot = Some(conn);
                Ok(body)
            }
            // A kept-open connection can be dead because the server restarted; the new server
            // never saw the command, so one retry on a fresh connection is safe. Timeouts are not
            // retried: the command may still be running.
            Err(RconError::Io { .. }) if reused => {
                let mut fresh = self.open().await?;
                let body = self.run(&mut fresh, command, timeout).await?;
                *slot = Some(fresh);
                Ok(body)
            }
            Err(e) => Err(e),
        }
    }

    async fn run(
        &self,
        conn: &mut Connection,
        command: &str,
        timeout: Duration,
    ) -> Result<String, RconError> {
        let addr = self.addr;
        match tokio::time::timeout(timeout, conn.cmd(command)).await {
            Err(_) => Err(RconError::Timeout {
                what: "command",
                after: timeout,
                addr,
            }),
            Ok(Err(e)) => Err(RconError::Io {
                addr,
                message: e.to_string(),
            }),
            Ok(Ok(body)) => Ok(body),
        }
    }

    /// Drop the connection (e.g. before the server is restarted).
    pub async fn disconnect(&self) {
        *self.conn.lock().await = None;
    }
}
