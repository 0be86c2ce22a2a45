//! The controller's state in SQLite (`clustorio.db`, WAL, foreign keys on).
//!
//! One writer thread owns the write connection. Every write is a closure sent to it; the thread
//! takes all closures that are waiting, runs each in its own savepoint inside one transaction and
//! commits once (group commit), and only then answers the callers. So a caller that got `Ok` knows
//! its change is on disk (`synchronous=FULL`), and a burst of writes pays for one sync, not many.
//! Reads go to a separate connection; WAL lets them run beside the writer.

pub mod audit;
pub mod grants;
pub mod hosts;
pub mod instances;
pub mod known_users;
pub mod mods;
pub mod roles;
mod schema;
pub mod tokens;
pub mod users;

pub use audit::AuditEntry;
pub use hosts::HostRecord;
pub use instances::InstanceRecord;
pub use roles::Role;
pub use tokens::{TokenInfo, TokenOwner};
pub use users::User;

use rusqlite::Connection;
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// File name of the controller database inside the data directory.
pub const DB_FILE: &str = "clustorio.db";

/// Most writes folded into one transaction.
const MAX_GROUP: usize = 512;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    /// The actor may not make this change (a grant beyond what they hold).
    #[error("{0}")]
    Forbidden(String),
    /// A config value the settings schema refuses.
    #[error("{0}")]
    Refused(crate::config::Refusal),
    #[error("database error: {0}")]
    Db(String),
    /// The disk (or the file size limit) is full: SQLite's SQLITE_FULL. Nothing was written.
    #[error("disk full: {0}")]
    Full(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match &e {
            rusqlite::Error::SqliteFailure(f, msg)
                if f.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                StoreError::Conflict(msg.clone().unwrap_or_else(|| "constraint violated".into()))
            }
            rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DiskFull => {
                StoreError::Full(e.to_string())
            }
            _ => StoreError::Db(e.to_string()),
        }
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        StoreError::Db(format!("stored JSON: {e}"))
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// What the writer calls after the commit, with the commit's outcome.
type Completion = Box<dyn FnOnce(Option<&StoreError>) + Send>;
type Job = Box<dyn FnOnce(&Connection) -> Completion + Send>;

#[derive(Clone)]
pub struct Store {
    jobs: std::sync::mpsc::Sender<Job>,
    reader: Arc<Mutex<Connection>>,
    /// User tokens resolved before; see [`known_users`].
    known: Arc<known_users::KnownUsers>,
}

/// What a presented token is, for the API.
#[derive(Debug, Clone)]
pub enum TokenLookup {
    User(Arc<known_users::KnownUser>),
    /// A host, join or plugin token: not for the API.
    NotUser,
    Unknown,
}

impl Store {
    /// Opens (creating and migrating as needed) the database in `dir`.
    pub fn open(dir: &Path) -> anyhow::Result<Store> {
        let path = dir.join(DB_FILE);
        check_files(&path)?;
        let mut writer = open_connection(&path)?;
        let fresh = schema::version(&writer)? == 0;
        if !fresh {
            let check: String = writer
                .query_row("PRAGMA quick_check", [], |r| r.get(0))
                .map_err(|e| anyhow::anyhow!("{} cannot be read: {e}", path.display()))?;
            if check != "ok" {
                anyhow::bail!(
                    "{} is damaged ({check}); nothing was changed. Restore it from a backup \
                     (clustorio controller backup FILE makes one) or move it away to start a new cluster",
                    path.display()
                );
            }
        }
        schema::migrate(&mut writer)?;
        restrict(&path);
        let reader = open_connection(&path)?;
        let known = Arc::new(known_users::KnownUsers::default());
        {
            let known = known.clone();
            writer.update_hook(Some(
                move |_: rusqlite::hooks::Action, _: &str, table: &str, _: i64| {
                    known.touched(table)
                },
            ))?;
        }
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let done = known.clone();
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer_loop(writer, rx, &done))?;
        Ok(Store {
            jobs: tx,
            reader: Arc::new(Mutex::new(reader)),
            known,
        })
    }

    /// Who a presented token belongs to. A user token seen before is answered from memory
    /// while no token, user or role changed since (exact: see [`known_users`]); anything else
    /// is read from the database.
    pub async fn lookup_token(&self, token: &str) -> Result<TokenLookup> {
        let key = known_users::key(token);
        if let Some(user) = self.known.get(&key) {
            return Ok(TokenLookup::User(user));
        }
        let generation = self.known.generation();
        let token = token.to_string();
        let found = self
            .read(move |conn| {
                Ok(match tokens::resolve(conn, &token)? {
                    Some(TokenOwner::User { user_id, name }) => {
                        let permissions = users::permissions(conn, user_id)?;
                        Some(known_users::KnownUser {
                            user_id,
                            name,
                            permissions,
                        })
                    }
                    Some(_) => None,
                    None => return Ok(TokenLookup::Unknown),
                }
                .map_or(TokenLookup::NotUser, |u| TokenLookup::User(Arc::new(u))))
            })
            .await?;
        if let TokenLookup::User(user) = &found {
            self.known.put(key, generation, user.clone());
        }
        Ok(found)
    }

    /// Runs `f` in a transaction; resolves once the change is committed to disk.
    pub async fn write<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |conn: &Connection| {
            let outcome = in_savepoint(conn, f);
            Box::new(move |commit_error: Option<&StoreError>| {
                let result = match commit_error {
                    Some(e) => Err(e.clone()),
                    None => outcome,
                };
                let _ = tx.send(result);
            }) as Completion
        });
        self.jobs
            .send(job)
            .map_err(|_| StoreError::Db("store writer has stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Db("store writer has stopped".into()))?
    }

    /// Moves everything from the WAL into the database file and empties the WAL, so the file
    /// alone is a complete copy (at a graceful stop).
    pub async fn checkpoint(&self) -> Result<()> {
        self.read(|c| {
            c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            Ok(())
        })
        .await
    }

    /// Runs a read-only query on the reader connection (off the async threads).
    pub async fn read<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R> + Send + 'static,
    {
        let reader = self.reader.clone();
        tokio::task::spawn_blocking(move || {
            let conn = reader
                .lock()
                .map_err(|_| StoreError::Db("reader lock poisoned".into()))?;
            f(&conn)
        })
        .await
        .map_err(|e| StoreError::Db(format!("read task failed: {e}")))?
    }

    /// Blocking read for code outside the runtime (offline CLI commands, start-up).
    pub fn read_blocking<R>(&self, f: impl FnOnce(&Connection) -> Result<R>) -> Result<R> {
        let conn = self
            .reader
            .lock()
            .map_err(|_| StoreError::Db("reader lock poisoned".into()))?;
        f(&conn)
    }

    /// Blocking write for code outside the runtime.
    pub fn write_blocking<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        let (tx, rx) = std::sync::mpsc::channel();
        let job: Job = Box::new(move |conn: &Connection| {
            let outcome = in_savepoint(conn, f);
            Box::new(move |commit_error: Option<&StoreError>| {
                let _ = tx.send(match commit_error {
                    Some(e) => Err(e.clone()),
                    None => outcome,
                });
            }) as Completion
        });
        self.jobs
            .send(job)
            .map_err(|_| StoreError::Db("store writer has stopped".into()))?;
        rx.recv()
            .map_err(|_| StoreError::Db("store writer has stopped".into()))?
    }
}

/// Refuses to open over what is clearly not our database: a zero-length file (a failed copy, a
/// disk that filled at the wrong moment) or a WAL that is not a SQLite WAL — opening either would
/// silently start a new cluster or drop committed changes.
fn check_files(path: &Path) -> anyhow::Result<()> {
    use std::io::Read;
    let advice = "nothing was changed; restore it from a backup (clustorio controller backup FILE \
                  makes one) or move it away to start a new cluster";
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.len() == 0 {
            anyhow::bail!("{} is empty (0 bytes); {advice}", path.display());
        }
        let mut head = [0u8; 16];
        let n = std::fs::File::open(path)
            .and_then(|mut f| f.read(&mut head))
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        if n < 16 || &head != b"SQLite format 3\0" {
            anyhow::bail!("{} is not a SQLite database; {advice}", path.display());
        }
    } else if let Some(dir) = path.parent() {
        // A new database: created private, as its WAL and shared memory then are.
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::create_dir_all(dir).ok();
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| anyhow::anyhow!("creating {}: {e}", path.display()))?;
    }
    let wal = wal_path(path);
    if let Ok(meta) = std::fs::metadata(&wal)
        && meta.len() > 0
    {
        let mut magic = [0u8; 4];
        let ok = std::fs::File::open(&wal)
            .and_then(|mut f| f.read_exact(&mut magic))
            .is_ok()
            && matches!(magic, [0x37, 0x7f, 0x06, 0x82 | 0x83]);
        if !ok {
            anyhow::bail!(
                "{} is not a SQLite write-ahead log (changes not yet in {} live there); {advice}",
                wal.display(),
                path.display()
            );
        }
    }
    Ok(())
}

fn wal_path(path: &Path) -> std::path::PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push("-wal");
    p.into()
}

/// The database and its companions hold token hashes and the join token: owner only.
fn restrict(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600));
    }
}

/// `clustorio controller backup FILE`: a consistent copy of the database in `dir`, made with
/// SQLite's `VACUUM INTO` (works while the controller runs and writes), then checked. Returns
/// the copy's size in bytes.
pub fn backup(dir: &Path, to: &Path) -> anyhow::Result<u64> {
    use anyhow::Context;
    let path = dir.join(DB_FILE);
    check_files(&path)?;
    if !path.exists() {
        anyhow::bail!("no database at {}", path.display());
    }
    if to.exists() {
        anyhow::bail!("{} exists; give a new file name", to.display());
    }
    let target = to
        .to_str()
        .ok_or_else(|| anyhow::anyhow!("the backup path must be UTF-8"))?;
    let conn = open_connection(&path)?;
    conn.execute("VACUUM INTO ?1", [target])
        .with_context(|| format!("writing the backup to {}", to.display()))?;
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o600));
    let copy = Connection::open(to).with_context(|| format!("opening {}", to.display()))?;
    let check: String = copy.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    if check != "ok" {
        anyhow::bail!(
            "the backup at {} failed its integrity check: {check}",
            to.display()
        );
    }
    Ok(std::fs::metadata(to)?.len())
}

fn open_connection(path: &Path) -> anyhow::Result<Connection> {
    use anyhow::Context;
    let conn = Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
    // FULL: a commit is on disk before we acknowledge it, even across a power cut.
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON; PRAGMA busy_timeout=10000;",
    )
    .with_context(|| format!("configuring {}", path.display()))?;
    // The writer runs many kinds of statement; keep the hot ones parsed.
    conn.set_prepared_statement_cache_capacity(128);
    Ok(conn)
}

/// One job's changes stand or fall alone: a failing job rolls back to its savepoint and the
/// others in the same group still commit.
fn in_savepoint<R>(conn: &Connection, f: impl FnOnce(&Connection) -> Result<R>) -> Result<R> {
    run_cached(conn, "SAVEPOINT job")?;
    match f(conn) {
        Ok(r) => {
            run_cached(conn, "RELEASE job")?;
            Ok(r)
        }
        Err(e) => {
            conn.execute_batch("ROLLBACK TO job; RELEASE job")?;
            Err(e)
        }
    }
}

/// One statement without parameters, parsed once per connection.
fn run_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}

fn writer_loop(
    conn: Connection,
    jobs: std::sync::mpsc::Receiver<Job>,
    known: &known_users::KnownUsers,
) {
    while let Ok(first) = jobs.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let begin = run_cached(&conn, "BEGIN IMMEDIATE").map_err(StoreError::from);
        let completions: Vec<Completion> = match &begin {
            Ok(()) => group.into_iter().map(|job| job(&conn)).collect(),
            Err(_) => Vec::new(),
        };
        let commit = begin.and_then(|()| run_cached(&conn, "COMMIT").map_err(StoreError::from));
        if let Err(e) = &commit {
            tracing::error!(error = %e, "commit failed; the group's changes are rolled back");
            let _ = conn.execute_batch("ROLLBACK");
        }
        // Before anyone hears of the commit: user tokens read before it are no longer used.
        known.group_done();
        for done in completions {
            done(commit.as_ref().err());
        }
    }
}

/// Host and instance names: as [`check_name`], and not all digits — the API and ctl take an id
/// or a name in the same place, so a name "7" would shadow the id 7 of another.
pub fn check_addressable_name(what: &str, name: &str, max: usize) -> Result<()> {
    check_name(what, name, max)?;
    if name.bytes().all(|b| b.is_ascii_digit()) {
        return Err(StoreError::Invalid(format!(
            "invalid {what} name '{name}': a name of only digits would be taken for an id; add a letter"
        )));
    }
    Ok(())
}

/// Names of users, hosts and instances: 1–`max` letters, digits, '-', '_' or '.', not starting
/// with '.' (host and instance names become directory names).
pub fn check_name(what: &str, name: &str, max: usize) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= max
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "invalid {what} name '{name}': use 1-{max} letters, digits, '-', '_' or '.', not starting with '.'"
        )))
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn failing_job_does_not_spoil_its_group() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut handles = Vec::new();
        for i in 0..50 {
            let s = store.clone();
            handles.push(tokio::spawn(async move {
                let name = if i % 10 == 0 {
                    "dup".to_string()
                } else {
                    format!("i{i}")
                };
                s.write(move |c| {
                    instances::create(
                        c,
                        "test",
                        &name,
                        &serde_json::json!({}),
                        &crate::config::instance_schema(&[]),
                    )
                })
                .await
            }));
        }
        let mut ok = 0;
        for h in handles {
            if h.await.unwrap().is_ok() {
                ok += 1;
            }
        }
        // 45 unique names plus exactly one "dup".
        assert_eq!(ok, 46);
        let n = store.read(instances::list).await.unwrap().len();
        assert_eq!(n, 46);
    }
}
