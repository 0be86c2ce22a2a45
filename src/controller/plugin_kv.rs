//! The key–value store external and Lua-only plugins keep their data in (SQLite, on the
//! controller). Each plugin has its own namespace: a plugin only ever names its own keys.
//!
//! Values are JSON. Every write is committed before the caller hears `Ok` (the store's rule), so
//! a counter a game was told about survives `kill -9` of the controller.
//!
//! Every write gives the key a new **version**, drawn from one clock for the whole store, so a
//! version is never reused (not even after the key is deleted and set again). [`put_if`] is the
//! compare-and-set: it writes only if the key still has the version the caller read (0: only
//! if the key does not exist), and otherwise returns the current entry — a read-modify-write
//! loop on it loses no update however many writers race.
//!
//! Limits (each a clear [`StoreError::Invalid`] naming what is wrong; nothing is changed):
//! [`MAX_KEY_BYTES`], [`MAX_VALUE_BYTES`], [`MAX_KEYS_PER_PLUGIN`], [`MAX_PLUGIN_NAME_BYTES`].

use crate::store::{self, Result, Store, StoreError};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use serde_json::Value;

/// Longest key, in bytes (UTF-8).
pub const MAX_KEY_BYTES: usize = 256;
/// Largest value, in bytes of its JSON text.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// Most keys one plugin may hold.
pub const MAX_KEYS_PER_PLUGIN: i64 = 10_000;
/// Longest plugin name (the namespace).
pub const MAX_PLUGIN_NAME_BYTES: usize = 64;
/// Most entries one [`list`] returns (in key order; ask again with a longer prefix for more).
pub const MAX_LIST_ENTRIES: usize = 1_000;

/// Recorded in `plugin_migrations` under this name (not a plugin's name: it has a dot).
const MIGRATION_NAME: &str = "core.plugin_kv";

const MIGRATIONS: &[&str] = &[
    r#"
    CREATE TABLE plugin_kv (
        plugin TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (plugin, key)
    );
    "#,
    r#"
    ALTER TABLE plugin_kv ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
    UPDATE plugin_kv SET version = rowid;
    CREATE TABLE plugin_kv_clock (id INTEGER PRIMARY KEY CHECK (id = 1), n INTEGER NOT NULL);
    INSERT INTO plugin_kv_clock (id, n) VALUES (1, (SELECT COALESCE(MAX(version), 0) FROM plugin_kv));
    "#,
];

/// Creates the table (once; recorded like the plugins' own tables).
pub async fn migrate(store: &Store) -> anyhow::Result<()> {
    super::plugins::apply_migrations(
        store,
        MIGRATION_NAME,
        MIGRATIONS,
        "the plugin key-value store",
    )
    .await
}

/// One stored key.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KvEntry {
    pub key: String,
    pub value: Value,
    /// Milliseconds since the Unix epoch.
    pub updated_at: i64,
    /// Changes with every write (never reused); what [`put_if`] compares.
    pub version: i64,
}

/// What a compare-and-set did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Cas {
    /// The key had the expected version; this is the new entry.
    Stored(KvEntry),
    /// It had another (or none: `None`); nothing was written.
    Conflict(Option<KvEntry>),
}

/// A plugin name usable as a namespace: 1–64 bytes of `[A-Za-z0-9_-]`.
pub fn check_plugin(plugin: &str) -> Result<()> {
    if plugin.is_empty() || plugin.len() > MAX_PLUGIN_NAME_BYTES {
        return Err(StoreError::Invalid(format!(
            "plugin name must be 1 to {MAX_PLUGIN_NAME_BYTES} bytes long (got {})",
            plugin.len()
        )));
    }
    if !plugin
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(StoreError::Invalid(format!(
            "plugin name '{plugin}' may only contain letters, digits, '_' and '-'"
        )));
    }
    Ok(())
}

/// A key: 1 to [`MAX_KEY_BYTES`] bytes, no control characters.
pub fn check_key(key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(StoreError::Invalid("key must not be empty".into()));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(StoreError::Invalid(format!(
            "key is {} bytes long; at most {MAX_KEY_BYTES} bytes are allowed",
            key.len()
        )));
    }
    if key.chars().any(char::is_control) {
        return Err(StoreError::Invalid(
            "key must not contain control characters".into(),
        ));
    }
    Ok(())
}

/// The value's JSON text, if it is small enough.
fn encode_value(value: &Value) -> Result<String> {
    let text = serde_json::to_string(value)
        .map_err(|e| StoreError::Invalid(format!("value is not JSON: {e}")))?;
    if text.len() > MAX_VALUE_BYTES {
        return Err(StoreError::Invalid(format!(
            "value is {} bytes of JSON; at most {MAX_VALUE_BYTES} bytes are allowed",
            text.len()
        )));
    }
    Ok(text)
}

// --- On a connection (inside `Store::write`/`read`, for callers batching with other changes). ---

pub fn get_in(conn: &Connection, plugin: &str, key: &str) -> Result<Option<KvEntry>> {
    check_plugin(plugin)?;
    check_key(key)?;
    let row: Option<(String, i64, i64)> = conn
        .query_row(
            "SELECT value, updated_at, version FROM plugin_kv WHERE plugin = ?1 AND key = ?2",
            params![plugin, key],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    row.map(|(text, updated_at, version)| {
        Ok(KvEntry {
            key: key.to_string(),
            value: serde_json::from_str(&text)?,
            updated_at,
            version,
        })
    })
    .transpose()
}

pub fn put_in(conn: &Connection, plugin: &str, key: &str, value: &Value) -> Result<KvEntry> {
    check_plugin(plugin)?;
    check_key(key)?;
    let text = encode_value(value)?;
    let exists = get_in(conn, plugin, key)?.is_some();
    write_in(conn, plugin, key, value, &text, exists)
}

/// Compare-and-set: writes `value` only if the key's version is `expected` (0: only if the key
/// does not exist). Limits are checked first, as for [`put_in`].
pub fn put_if_in(
    conn: &Connection,
    plugin: &str,
    key: &str,
    value: &Value,
    expected: i64,
) -> Result<Cas> {
    check_plugin(plugin)?;
    check_key(key)?;
    if expected < 0 {
        return Err(StoreError::Invalid(format!(
            "expected version {expected} is not a version (0 means \"not set yet\")"
        )));
    }
    let text = encode_value(value)?;
    let current = get_in(conn, plugin, key)?;
    if current.as_ref().map_or(0, |e| e.version) != expected {
        return Ok(Cas::Conflict(current));
    }
    write_in(conn, plugin, key, value, &text, current.is_some()).map(Cas::Stored)
}

fn write_in(
    conn: &Connection,
    plugin: &str,
    key: &str,
    value: &Value,
    text: &str,
    exists: bool,
) -> Result<KvEntry> {
    if !exists {
        let count: i64 = conn.query_row(
            "SELECT COUNT(*) FROM plugin_kv WHERE plugin = ?1",
            [plugin],
            |r| r.get(0),
        )?;
        if count >= MAX_KEYS_PER_PLUGIN {
            return Err(StoreError::Invalid(format!(
                "plugin {plugin} already holds {count} keys, the most allowed \
                 ({MAX_KEYS_PER_PLUGIN}); delete some before adding '{key}'"
            )));
        }
    }
    let version: i64 = conn.query_row(
        "UPDATE plugin_kv_clock SET n = n + 1 WHERE id = 1 RETURNING n",
        [],
        |r| r.get(0),
    )?;
    let now = store::now_ms();
    conn.execute(
        "INSERT INTO plugin_kv (plugin, key, value, updated_at, version) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(plugin, key) DO UPDATE SET value = excluded.value,
             updated_at = excluded.updated_at, version = excluded.version",
        params![plugin, key, text, now, version],
    )?;
    Ok(KvEntry {
        key: key.to_string(),
        value: value.clone(),
        updated_at: now,
        version,
    })
}

/// Removes a key; whether it was there.
pub fn delete_in(conn: &Connection, plugin: &str, key: &str) -> Result<bool> {
    check_plugin(plugin)?;
    check_key(key)?;
    let n = conn.execute(
        "DELETE FROM plugin_kv WHERE plugin = ?1 AND key = ?2",
        params![plugin, key],
    )?;
    Ok(n > 0)
}

/// The plugin's keys starting with `prefix` (empty: all), in key order, at most
/// [`MAX_LIST_ENTRIES`].
pub fn list_in(conn: &Connection, plugin: &str, prefix: &str) -> Result<Vec<KvEntry>> {
    check_plugin(plugin)?;
    if prefix.len() > MAX_KEY_BYTES {
        return Err(StoreError::Invalid(format!(
            "prefix is {} bytes long; keys are at most {MAX_KEY_BYTES} bytes",
            prefix.len()
        )));
    }
    let mut stmt = conn.prepare_cached(
        "SELECT key, value, updated_at, version FROM plugin_kv
         WHERE plugin = ?1 AND substr(key, 1, length(?2)) = ?2
         ORDER BY key LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![plugin, prefix, MAX_LIST_ENTRIES as i64], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, i64>(3)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (key, text, updated_at, version) = row?;
        out.push(KvEntry {
            key,
            value: serde_json::from_str(&text)?,
            updated_at,
            version,
        });
    }
    Ok(out)
}

/// How many keys the plugin holds.
pub fn count_in(conn: &Connection, plugin: &str) -> Result<i64> {
    check_plugin(plugin)?;
    Ok(conn.query_row(
        "SELECT COUNT(*) FROM plugin_kv WHERE plugin = ?1",
        [plugin],
        |r| r.get(0),
    )?)
}

// --- On the store (each call its own committed change). ---

/// The value under `key` in `plugin`'s namespace, if any.
pub async fn get(store: &Store, plugin: &str, key: &str) -> Result<Option<Value>> {
    Ok(get_entry(store, plugin, key).await?.map(|e| e.value))
}

/// The entry under `key` (value, version, time), if any.
pub async fn get_entry(store: &Store, plugin: &str, key: &str) -> Result<Option<KvEntry>> {
    let (plugin, key) = (plugin.to_string(), key.to_string());
    store.read(move |c| get_in(c, &plugin, &key)).await
}

/// Compare-and-set ([`put_if_in`]); resolves once committed.
pub async fn put_if(
    store: &Store,
    plugin: &str,
    key: &str,
    value: Value,
    expected: i64,
) -> Result<Cas> {
    let (plugin, key) = (plugin.to_string(), key.to_string());
    store
        .write(move |c| put_if_in(c, &plugin, &key, &value, expected))
        .await
}

/// Sets `key` to `value`; resolves once committed to disk.
pub async fn put(store: &Store, plugin: &str, key: &str, value: Value) -> Result<KvEntry> {
    let (plugin, key) = (plugin.to_string(), key.to_string());
    store.write(move |c| put_in(c, &plugin, &key, &value)).await
}

/// Removes `key`; whether it was there. Resolves once committed.
pub async fn delete(store: &Store, plugin: &str, key: &str) -> Result<bool> {
    let (plugin, key) = (plugin.to_string(), key.to_string());
    store.write(move |c| delete_in(c, &plugin, &key)).await
}

/// `plugin`'s entries whose key starts with `prefix`, in key order, at most [`MAX_LIST_ENTRIES`].
pub async fn list(store: &Store, plugin: &str, prefix: &str) -> Result<Vec<KvEntry>> {
    let (plugin, prefix) = (plugin.to_string(), prefix.to_string());
    store.read(move |c| list_in(c, &plugin, &prefix)).await
}

/// Removes every key of `plugin` (when the plugin itself is deleted); how many there were.
pub async fn clear(store: &Store, plugin: &str) -> Result<usize> {
    let plugin = plugin.to_string();
    store
        .write(move |c| {
            check_plugin(&plugin)?;
            Ok(c.execute("DELETE FROM plugin_kv WHERE plugin = ?1", [&plugin])?)
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    async fn ready() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        migrate(&s).await.unwrap();
        (dir, s)
    }

    #[tokio::test]
    async fn put_get_delete_list_per_namespace() {
        let (_d, s) = ready().await;
        assert_eq!(get(&s, "a", "count").await.unwrap(), None);
        put(&s, "a", "count", json!(1)).await.unwrap();
        put(&s, "a", "count", json!(2)).await.unwrap();
        put(&s, "a", "score/bob", json!({"n": 5})).await.unwrap();
        put(&s, "a", "score/amy", json!({"n": 7})).await.unwrap();
        put(&s, "b", "count", json!("other")).await.unwrap();
        assert_eq!(get(&s, "a", "count").await.unwrap(), Some(json!(2)));
        assert_eq!(get(&s, "b", "count").await.unwrap(), Some(json!("other")));
        let keys: Vec<String> = list(&s, "a", "score/")
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.key)
            .collect();
        assert_eq!(keys, vec!["score/amy", "score/bob"]);
        assert_eq!(list(&s, "a", "").await.unwrap().len(), 3);
        assert!(list(&s, "c", "").await.unwrap().is_empty());
        assert!(delete(&s, "a", "count").await.unwrap());
        assert!(!delete(&s, "a", "count").await.unwrap());
        assert_eq!(get(&s, "a", "count").await.unwrap(), None);
        assert_eq!(get(&s, "b", "count").await.unwrap(), Some(json!("other")));
        assert_eq!(clear(&s, "a").await.unwrap(), 2);
        assert!(list(&s, "a", "").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn prefix_with_like_wildcards_is_literal() {
        let (_d, s) = ready().await;
        put(&s, "a", "x%y", json!(1)).await.unwrap();
        put(&s, "a", "xzy", json!(2)).await.unwrap();
        put(&s, "a", "x_1", json!(3)).await.unwrap();
        let l = list(&s, "a", "x%").await.unwrap();
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].key, "x%y");
        assert_eq!(list(&s, "a", "x_").await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn limits_are_refused_and_change_nothing() {
        let (_d, s) = ready().await;
        put(&s, "a", "k", json!(1)).await.unwrap();
        let long = "k".repeat(MAX_KEY_BYTES + 1);
        let e = put(&s, "a", &long, json!(1)).await.unwrap_err().to_string();
        assert!(e.contains("at most 256 bytes"), "{e}");
        assert!(
            put(&s, "a", &"k".repeat(MAX_KEY_BYTES), json!(1))
                .await
                .is_ok()
        );
        let e = put(&s, "a", "", json!(1)).await.unwrap_err().to_string();
        assert!(e.contains("empty"), "{e}");
        let e = put(&s, "a", "a\nb", json!(1))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("control"), "{e}");
        let big = json!("x".repeat(MAX_VALUE_BYTES));
        let e = put(&s, "a", "k", big).await.unwrap_err().to_string();
        assert!(e.contains("at most 65536 bytes"), "{e}");
        assert_eq!(get(&s, "a", "k").await.unwrap(), Some(json!(1)));
        for bad in ["", "a b", "../x", &"p".repeat(65)] {
            let e = put(&s, bad, "k", json!(1)).await.unwrap_err();
            assert!(matches!(e, StoreError::Invalid(_)), "{bad}: {e}");
        }
        assert!(matches!(
            get(&s, "a", &long).await.unwrap_err(),
            StoreError::Invalid(_)
        ));
    }

    #[tokio::test]
    async fn keys_per_plugin_are_bounded() {
        let (_d, s) = ready().await;
        s.write(|c| {
            for i in 0..MAX_KEYS_PER_PLUGIN {
                put_in(c, "a", &format!("k{i}"), &json!(i))?;
            }
            Ok(())
        })
        .await
        .unwrap();
        let e = put(&s, "a", "one-more", json!(0))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("the most allowed (10000)"), "{e}");
        // Overwriting an existing key and other namespaces still work.
        put(&s, "a", "k0", json!("new")).await.unwrap();
        put(&s, "b", "k0", json!(1)).await.unwrap();
        assert_eq!(
            s.read(|c| count_in(c, "a")).await.unwrap(),
            MAX_KEYS_PER_PLUGIN
        );
        assert_eq!(list(&s, "a", "").await.unwrap().len(), MAX_LIST_ENTRIES);
    }

    #[tokio::test]
    async fn committed_values_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            migrate(&s).await.unwrap();
            put(&s, "a", "count", json!(41)).await.unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        migrate(&s).await.unwrap();
        assert_eq!(get(&s, "a", "count").await.unwrap(), Some(json!(41)));
    }

    #[tokio::test]
    async fn compare_and_set_writes_only_over_the_version_read() {
        let (_d, s) = ready().await;
        let first = match put_if(&s, "a", "k", json!(1), 0).await.unwrap() {
            Cas::Stored(e) => e,
            other => panic!("{other:?}"),
        };
        assert!(first.version > 0);
        // Not set yet (0) no longer holds; the answer carries what is there.
        match put_if(&s, "a", "k", json!(9), 0).await.unwrap() {
            Cas::Conflict(Some(e)) => assert_eq!((e.value, e.version), (json!(1), first.version)),
            other => panic!("{other:?}"),
        }
        let second = match put_if(&s, "a", "k", json!(2), first.version).await.unwrap() {
            Cas::Stored(e) => e,
            other => panic!("{other:?}"),
        };
        assert!(second.version > first.version);
        assert!(matches!(
            put_if(&s, "a", "k", json!(3), first.version).await.unwrap(),
            Cas::Conflict(Some(_))
        ));
        // A deleted and re-created key never gets an old version back (no ABA).
        delete(&s, "a", "k").await.unwrap();
        assert!(matches!(
            put_if(&s, "a", "k", json!(4), second.version)
                .await
                .unwrap(),
            Cas::Conflict(None)
        ));
        let again = put(&s, "a", "k", json!(5)).await.unwrap();
        assert!(again.version > second.version);
        assert!(matches!(
            put_if(&s, "a", "k", json!(6), second.version)
                .await
                .unwrap(),
            Cas::Conflict(Some(_))
        ));
        assert!(put_if(&s, "a", "k", json!(1), -1).await.is_err());
        assert_eq!(get(&s, "a", "k").await.unwrap(), Some(json!(5)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_increments_with_compare_and_set_lose_nothing() {
        let (_d, s) = ready().await;
        let (writers, each) = (8, 25);
        let mut tasks = Vec::new();
        for _ in 0..writers {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                let mut conflicts = 0;
                for _ in 0..each {
                    loop {
                        let cur = get_entry(&s, "a", "n").await.unwrap();
                        let (n, v) = cur.map_or((0, 0), |e| (e.value.as_i64().unwrap(), e.version));
                        match put_if(&s, "a", "n", json!(n + 1), v).await.unwrap() {
                            Cas::Stored(_) => break,
                            Cas::Conflict(_) => conflicts += 1,
                        }
                    }
                }
                conflicts
            }));
        }
        let mut conflicts = 0;
        for t in tasks {
            conflicts += t.await.unwrap();
        }
        assert_eq!(
            get(&s, "a", "n").await.unwrap(),
            Some(json!(writers * each)),
            "{conflicts} conflicts retried"
        );
    }

    #[tokio::test]
    async fn keys_stored_before_versions_get_one() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        // The first step only, as an older clustorio left it.
        super::super::plugins::apply_migrations(&s, MIGRATION_NAME, &MIGRATIONS[..1], "kv")
            .await
            .unwrap();
        s.write(|c| {
            c.execute(
                "INSERT INTO plugin_kv (plugin, key, value, updated_at) VALUES ('a', 'old', '7', 1)",
                [],
            )?;
            Ok(())
        })
        .await
        .unwrap();
        migrate(&s).await.unwrap();
        let e = get_entry(&s, "a", "old").await.unwrap().unwrap();
        assert!(e.version > 0, "{e:?}");
        let next = put(&s, "a", "new", json!(1)).await.unwrap();
        assert!(next.version > e.version);
    }
}
