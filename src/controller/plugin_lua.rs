//! The controller's store of plugins' Lua files: what external plugins upload with their
//! declaration and what Lua-only plugins are made of. Hosts fetch a bundle before an instance
//! starts (`GET /api/v1/host/plugin-lua?instance=ID` lists what the instance gets,
//! `GET /api/v1/host/plugin-lua/{name}` is one bundle), check its SHA-256 and patch it into
//! the save like a built-in module (`modules/<plugin>/…`).
//!
//! A bundle is kept in SQLite as its canonical bytes (the JSON of [`LuaBundle`]); the checksum
//! is their SHA-256, so what a host receives is checked byte for byte.
//!
//! Limits: [`MAX_FILES`], [`MAX_FILE_BYTES`], [`MAX_BUNDLE_BYTES`], [`MAX_PATH_BYTES`]; file
//! names obey [`check_path`].

use super::Controller;
use super::auth;
use super::error::ApiError;
use crate::store::{self, Store, StoreError};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

/// Most files in one bundle.
pub const MAX_FILES: usize = 256;
/// Largest single Lua file.
pub const MAX_FILE_BYTES: usize = 1 << 20;
/// Largest bundle (all files together, as stored).
pub const MAX_BUNDLE_BYTES: usize = 4 << 20;
/// Longest file name inside a bundle.
pub const MAX_PATH_BYTES: usize = 200;
/// Header carrying a bundle's SHA-256 on the host route.
pub const CHECKSUM_HEADER: &str = "x-clustorio-sha256";

/// Hex SHA-256 of a bundle's canonical bytes.
pub type Checksum = String;

const MIGRATION_NAME: &str = "core.plugin_lua";

const MIGRATIONS: &[&str] = &[r#"
    CREATE TABLE plugin_lua (
        plugin TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        version TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        size INTEGER NOT NULL,
        bundle BLOB NOT NULL,
        manifest TEXT NOT NULL DEFAULT '{}',
        uploaded_at INTEGER NOT NULL
    );
    "#];

pub async fn migrate(store: &Store) -> anyhow::Result<()> {
    super::plugins::apply_migrations(store, MIGRATION_NAME, MIGRATIONS, "the plugin Lua store")
        .await
}

/// Who a bundle belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// An external-process plugin's Lua (uploaded with its declaration).
    External,
    /// A Lua-only plugin (a zip with `plugin.json`).
    Lua,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::External => "external",
            Kind::Lua => "lua",
        }
    }

    fn parse(s: &str) -> Kind {
        if s == "lua" {
            Kind::Lua
        } else {
            Kind::External
        }
    }
}

/// A plugin's Lua module: patched into saves as `modules/<plugin>/<file>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LuaBundle {
    pub plugin: String,
    pub version: String,
    /// Files loaded as event_handler libraries, in order.
    pub load: Vec<String>,
    /// Files required for their globals, in order.
    pub require: Vec<String>,
    /// File name → Lua source.
    pub files: BTreeMap<String, String>,
}

impl LuaBundle {
    /// The bytes stored, served and checksummed.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn checksum(&self) -> Checksum {
        sha256_hex(&self.canonical_bytes())
    }

    /// Checks every limit and name; the first problem, described.
    pub fn validate(&self) -> Result<(), String> {
        check_plugin_name(&self.plugin)?;
        crate::plugins::checks::version(&self.version)?;
        if self.files.is_empty() {
            return Err("the bundle has no Lua files".into());
        }
        if self.files.len() > MAX_FILES {
            return Err(format!(
                "the bundle has {} files; at most {MAX_FILES} are allowed",
                self.files.len()
            ));
        }
        let mut total = 0usize;
        for (path, text) in &self.files {
            check_path(path)?;
            if text.len() > MAX_FILE_BYTES {
                return Err(format!(
                    "{path} is {} bytes; files are limited to {MAX_FILE_BYTES} bytes",
                    text.len()
                ));
            }
            total += text.len();
        }
        if total > MAX_BUNDLE_BYTES {
            return Err(format!(
                "the Lua files come to {total} bytes; a bundle is limited to {MAX_BUNDLE_BYTES} bytes"
            ));
        }
        if self.load.is_empty() && self.require.is_empty() {
            return Err("name at least one file to load or require".into());
        }
        for f in self.load.iter().chain(&self.require) {
            if !self.files.contains_key(f) {
                return Err(format!(
                    "{f} is listed to load or require but is not in the bundle"
                ));
            }
        }
        Ok(())
    }

    /// As the save patcher takes it.
    pub fn to_module(&self) -> crate::host::patch::Module {
        crate::host::patch::Module {
            name: self.plugin.clone(),
            version: self.version.clone(),
            dependencies: [("clusterio".to_string(), "*".to_string())].into(),
            load: self.load.clone(),
            require: self.require.clone(),
            files: self
                .files
                .iter()
                .map(|(p, t)| (p.clone(), t.as_bytes().to_vec()))
                .collect(),
        }
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A plugin name usable as a module name and a Lua identifier prefix: the syntax every plugin
/// name obeys ([`crate::plugins::checks::name_syntax`]).
pub fn check_plugin_name(name: &str) -> Result<(), String> {
    crate::plugins::checks::name_syntax(name)
}

/// A file name inside a bundle: relative, `[A-Za-z0-9_./-]` only, no `..`, `.` or empty
/// segments, ends in `.lua`, at most [`MAX_PATH_BYTES`].
pub fn check_path(path: &str) -> Result<(), String> {
    if path.is_empty() || path.len() > MAX_PATH_BYTES {
        return Err(format!(
            "file name '{path}' must be 1 to {MAX_PATH_BYTES} bytes long"
        ));
    }
    if let Some(c) = path
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-')))
    {
        return Err(format!(
            "file name '{path}' contains '{}'; only A-Z, a-z, 0-9, '_', '.', '/' and '-' are allowed",
            c.escape_default()
        ));
    }
    if path.starts_with('/') {
        return Err(format!(
            "file name '{path}' is absolute; give a relative path"
        ));
    }
    if path
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(format!(
            "file name '{path}' has an empty, '.' or '..' segment"
        ));
    }
    if !path.ends_with(".lua") {
        return Err(format!("file name '{path}' is not a .lua file"));
    }
    Ok(())
}

/// A stored bundle's description (no file contents).
#[derive(Debug, Clone, Serialize)]
pub struct BundleRecord {
    pub plugin: String,
    pub kind: Kind,
    pub version: String,
    pub sha256: String,
    pub size: i64,
    pub load: Vec<String>,
    pub require: Vec<String>,
    pub files: Vec<String>,
    /// A Lua-only plugin's `plugin.json` (empty for external plugins).
    pub manifest: Value,
    pub uploaded_at: i64,
}

fn record(
    row: (String, String, String, String, i64, Vec<u8>, String, i64),
) -> store::Result<BundleRecord> {
    let (plugin, kind, version, sha256, size, bytes, manifest, uploaded_at) = row;
    let b: LuaBundle = serde_json::from_slice(&bytes)?;
    Ok(BundleRecord {
        plugin,
        kind: Kind::parse(&kind),
        version,
        sha256,
        size,
        load: b.load,
        require: b.require,
        files: b.files.into_keys().collect(),
        manifest: serde_json::from_str(&manifest)?,
        uploaded_at,
    })
}

const SELECT: &str =
    "SELECT plugin, kind, version, sha256, size, bundle, manifest, uploaded_at FROM plugin_lua";

type Row = (String, String, String, String, i64, Vec<u8>, String, i64);

fn row(r: &rusqlite::Row) -> rusqlite::Result<Row> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
    ))
}

pub fn list_in(conn: &Connection) -> store::Result<Vec<BundleRecord>> {
    let mut stmt = conn.prepare_cached(&format!("{SELECT} ORDER BY plugin"))?;
    let rows = stmt.query_map([], row)?;
    let mut out = Vec::new();
    for r in rows {
        out.push(record(r?)?);
    }
    Ok(out)
}

pub fn get_in(conn: &Connection, plugin: &str) -> store::Result<Option<BundleRecord>> {
    conn.query_row(&format!("{SELECT} WHERE plugin = ?1"), [plugin], row)
        .optional()?
        .map(record)
        .transpose()
}

/// The canonical bytes and checksum of one bundle.
pub fn bytes_in(conn: &Connection, plugin: &str) -> store::Result<Option<(Vec<u8>, String)>> {
    Ok(conn
        .query_row(
            "SELECT bundle, sha256 FROM plugin_lua WHERE plugin = ?1",
            [plugin],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?)
}

/// Stores (replaces) a bundle of `kind` with `manifest`; refuses a name another kind holds.
pub fn put_in(
    conn: &Connection,
    actor: &str,
    kind: Kind,
    bundle: &LuaBundle,
    manifest: &Value,
) -> store::Result<Checksum> {
    bundle.validate().map_err(StoreError::Invalid)?;
    if let Some(existing) = get_in(conn, &bundle.plugin)?
        && existing.kind != kind
    {
        return Err(StoreError::Conflict(format!(
            "the name '{}' is taken by an {} plugin",
            bundle.plugin,
            existing.kind.as_str()
        )));
    }
    let bytes = bundle.canonical_bytes();
    let sha = sha256_hex(&bytes);
    conn.execute(
        "INSERT INTO plugin_lua (plugin, kind, version, sha256, size, bundle, manifest, uploaded_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT(plugin) DO UPDATE SET kind = excluded.kind, version = excluded.version,
           sha256 = excluded.sha256, size = excluded.size, bundle = excluded.bundle,
           manifest = excluded.manifest, uploaded_at = excluded.uploaded_at",
        params![
            bundle.plugin,
            kind.as_str(),
            bundle.version,
            sha,
            bytes.len() as i64,
            bytes,
            manifest.to_string(),
            store::now_ms()
        ],
    )?;
    store::audit::record(
        conn,
        actor,
        "plugin.lua.put",
        &bundle.plugin,
        &json!({ "version": bundle.version, "sha256": sha, "kind": kind.as_str() }),
    )?;
    Ok(sha)
}

pub fn delete_in(conn: &Connection, actor: &str, plugin: &str) -> store::Result<BundleRecord> {
    let rec = get_in(conn, plugin)?
        .ok_or_else(|| StoreError::NotFound(format!("no plugin Lua named '{plugin}'")))?;
    conn.execute("DELETE FROM plugin_lua WHERE plugin = ?1", [plugin])?;
    store::audit::record(conn, actor, "plugin.lua.delete", plugin, &json!({}))?;
    Ok(rec)
}

/// Stores an external plugin's Lua files; resolves with their checksum once committed.
/// `files` are (name, contents) pairs; the contents must be UTF-8 Lua source.
pub async fn put(
    store: &Store,
    plugin: &str,
    version: &str,
    load: Vec<String>,
    require: Vec<String>,
    files: Vec<(String, Vec<u8>)>,
) -> store::Result<Checksum> {
    let bundle =
        bundle_from_files(plugin, version, load, require, files).map_err(StoreError::Invalid)?;
    let actor = format!("plugin:{plugin}");
    store
        .write(move |c| put_in(c, &actor, Kind::External, &bundle, &json!({})))
        .await
}

/// Builds (and validates) a bundle from raw files.
pub fn bundle_from_files(
    plugin: &str,
    version: &str,
    load: Vec<String>,
    require: Vec<String>,
    files: Vec<(String, Vec<u8>)>,
) -> Result<LuaBundle, String> {
    if files.len() > MAX_FILES {
        return Err(format!(
            "{} files given; at most {MAX_FILES} are allowed",
            files.len()
        ));
    }
    let mut map = BTreeMap::new();
    for (path, bytes) in files {
        check_path(&path)?;
        if bytes.len() > MAX_FILE_BYTES {
            return Err(format!(
                "{path} is {} bytes; files are limited to {MAX_FILE_BYTES} bytes",
                bytes.len()
            ));
        }
        let text = String::from_utf8(bytes).map_err(|_| format!("{path} is not UTF-8 text"))?;
        if map.insert(path.clone(), text).is_some() {
            return Err(format!("{path} is given twice"));
        }
    }
    let bundle = LuaBundle {
        plugin: plugin.to_string(),
        version: version.to_string(),
        load,
        require,
        files: map,
    };
    bundle.validate()?;
    Ok(bundle)
}

/// The one rule for plugins from outside the binary (Lua-only and external): a plugin runs for
/// an instance unless its config lists it in `lua_plugins.disabled` or switches it off with the
/// plugin's own `<name>.load_plugin` (an external plugin declares that field).
pub fn enabled_for(config: &Value, plugin: &str) -> bool {
    let listed = config["lua_plugins"]["disabled"]
        .as_array()
        .is_some_and(|l| l.iter().any(|n| n.as_str() == Some(plugin)));
    !listed && config[plugin]["load_plugin"].as_bool() != Some(false)
}

// --- HTTP: hosts fetch bundles. ---

use super::files::{Resp, error, host as host_of};

async fn host_list(ctl: Arc<Controller>, header: Option<String>, query: String) -> Resp {
    let result = async {
        let host_id = host_of(&ctl, header).await?;
        let id: i64 = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("instance="))
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| ApiError::bad_request("name the instance: ?instance=ID"))?;
        let (inst, bundles) = ctl
            .store
            .read(move |c| Ok((store::instances::get(c, &id.to_string())?, list_in(c)?)))
            .await?;
        if inst.host_id != Some(host_id) {
            return Err(ApiError::forbidden(format!(
                "instance {id} is not assigned to this host"
            )));
        }
        let out: Vec<Value> = bundles
            .into_iter()
            .filter(|b| enabled_for(&inst.config, &b.plugin))
            .map(|b| {
                json!({ "plugin": b.plugin, "kind": b.kind, "version": b.version, "sha256": b.sha256 })
            })
            .collect();
        Ok::<_, ApiError>(json!(out))
    }
    .await;
    match result {
        Ok(v) => warp::reply::json(&v).into_response(),
        Err(e) => error(e),
    }
}

/// `GET /api/v1/host/plugin-lua/{name}`: one bundle's canonical bytes, its SHA-256 in
/// [`CHECKSUM_HEADER`].
async fn host_get(ctl: Arc<Controller>, header: Option<String>, name: String) -> Resp {
    let result = async {
        host_of(&ctl, header).await?;
        let n = name.clone();
        ctl.store
            .read(move |c| bytes_in(c, &n))
            .await?
            .ok_or_else(|| ApiError::not_found(format!("no plugin Lua named '{name}'")))
    }
    .await;
    match result {
        Ok((bytes, sha)) => {
            let mut resp =
                warp::reply::with_header(bytes, "content-type", "application/json").into_response();
            if let Ok(v) = warp::http::HeaderValue::from_str(&sha) {
                resp.headers_mut().insert(CHECKSUM_HEADER, v);
            }
            resp
        }
        Err(e) => error(e),
    }
}

// --- Lua-only plugins: the reserved channels, carried by the controller. ---

/// Is `plugin` a stored Lua-only plugin that instance `rec` enables?
fn lua_only_for(bundles: &[BundleRecord], rec: &store::InstanceRecord, plugin: &str) -> bool {
    bundles
        .iter()
        .any(|b| b.plugin == plugin && b.kind == Kind::Lua)
        && enabled_for(&rec.config, plugin)
}

impl Controller {
    /// `plugin_lua.broadcast {instance_id, plugin, data}` from a host (the instance is checked to
    /// be that host's): to every other running instance with the plugin, on connected hosts.
    pub(super) async fn plugin_lua_broadcast(&self, _host_id: i64, data: Value) {
        let (Some(from), Some(plugin)) = (data["instance_id"].as_i64(), data["plugin"].as_str())
        else {
            tracing::warn!("malformed plugin_lua.broadcast");
            return;
        };
        if data["data"].to_string().len() > super::plugin_kv::MAX_VALUE_BYTES {
            tracing::warn!(
                plugin,
                instance_id = from,
                "broadcast larger than 64 KiB; dropped"
            );
            return;
        }
        let Ok((all, bundles)) = self
            .store
            .read(|c| Ok((store::instances::list(c)?, list_in(c)?)))
            .await
        else {
            return;
        };
        let from_name = all
            .iter()
            .find(|r| r.id == from)
            .map(|r| r.name.clone())
            .unwrap_or_default();
        self.metrics.plugin_message(plugin, "in");
        let mut sent = 0;
        for rec in &all {
            let Some(host) = rec.host_id else { continue };
            if rec.id == from
                || rec.status != "running"
                || !lua_only_for(&bundles, rec, plugin)
                || !self.hub.host_connected(host)
            {
                continue;
            }
            self.hub.send_to_host(
                host,
                "plugin_lua.broadcast",
                json!({
                    "instance_id": rec.id,
                    "plugin": plugin,
                    "from_instance_id": from,
                    "from_instance": from_name,
                    "data": data["data"],
                }),
            );
            self.metrics.plugin_message(plugin, "out");
            sent += 1;
        }
        tracing::debug!(plugin, from = %from_name, sent, "Lua plugin broadcast");
    }

    /// `plugin_lua.kv {instance_id, plugin, op: get|set|delete, key, value}` from a host: the
    /// plugin's namespace of the key–value store; a set is committed before the answer.
    pub(super) async fn plugin_lua_kv(&self, host_id: i64, data: Value) -> Result<Value, ApiError> {
        let id = data["instance_id"]
            .as_i64()
            .ok_or_else(|| ApiError::bad_request("instance_id is missing"))?;
        let plugin = data["plugin"]
            .as_str()
            .ok_or_else(|| ApiError::bad_request("plugin is missing"))?
            .to_string();
        let key = data["key"]
            .as_str()
            .ok_or_else(|| ApiError::bad_request("key must be a string"))?
            .to_string();
        let (rec, bundles) = self
            .store
            .read(move |c| Ok((store::instances::get(c, &id.to_string())?, list_in(c)?)))
            .await?;
        if rec.host_id != Some(host_id) {
            return Err(ApiError::forbidden(format!(
                "instance {id} is not assigned to this host"
            )));
        }
        if !lua_only_for(&bundles, &rec, &plugin) {
            return Err(ApiError::forbidden(format!(
                "instance {} does not run the Lua-only plugin '{plugin}'",
                rec.name
            )));
        }
        self.metrics.plugin_message(&plugin, "in");
        match data["op"].as_str() {
            Some("get") => {
                let e = super::plugin_kv::get_entry(&self.store, &plugin, &key).await?;
                Ok(json!({
                    "key": key,
                    "value": e.as_ref().map(|e| e.value.clone()),
                    "version": e.map_or(0, |e| e.version),
                }))
            }
            Some("set") => {
                use super::plugin_kv::{Cas, put, put_if};
                let value = data["value"].clone();
                let cas = match &data["version"] {
                    Value::Null => Cas::Stored(put(&self.store, &plugin, &key, value).await?),
                    v => {
                        let expected = v.as_i64().filter(|n| *n >= 0).ok_or_else(|| {
                            ApiError::bad_request(
                                "version must be one a kv_get answered (0: not set yet)",
                            )
                        })?;
                        put_if(&self.store, &plugin, &key, value, expected).await?
                    }
                };
                Ok(match cas {
                    Cas::Stored(e) => {
                        json!({ "key": key, "value": e.value, "version": e.version, "stored": true })
                    }
                    Cas::Conflict(current) => json!({
                        "key": key,
                        "value": current.as_ref().map(|e| e.value.clone()),
                        "version": current.map_or(0, |e| e.version),
                        "stored": false,
                    }),
                })
            }
            Some("delete") => {
                let existed = super::plugin_kv::delete(&self.store, &plugin, &key).await?;
                Ok(json!({ "key": key, "value": Value::Null, "existed": existed }))
            }
            other => Err(ApiError::bad_request(format!(
                "op must be get, set or delete, not {}",
                other.unwrap_or("missing")
            ))),
        }
    }
}

// --- HTTP: users upload, list and delete Lua-only plugins. ---

async fn user_of(
    ctl: &Controller,
    header: Option<String>,
    permission: &str,
) -> Result<auth::Actor, ApiError> {
    let token = auth::bearer(header.as_deref())?;
    let actor = auth::authenticate(&ctl.store, token).await?;
    actor.require(permission)?;
    Ok(actor)
}

fn reply(status: u16, result: Result<Value, ApiError>) -> Resp {
    match result {
        Ok(v) => warp::reply::with_status(
            warp::reply::json(&v),
            StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
        )
        .into_response(),
        Err(e) => error(e),
    }
}

/// An upload body, at most [`MAX_ZIP_BYTES`](crate::plugins::lua_only::MAX_ZIP_BYTES): a
/// larger `Content-Length` is refused before anything is read.
async fn read_limited<S, B>(len: Option<u64>, mut body: S) -> Result<Vec<u8>, ApiError>
where
    S: futures_util::Stream<Item = Result<B, warp::Error>> + Unpin,
    B: bytes::Buf,
{
    use futures_util::StreamExt;
    let limit = crate::plugins::lua_only::MAX_ZIP_BYTES;
    let too_large = || {
        ApiError::new(
            413,
            "too_large",
            format!("Lua-only plugin uploads are limited to {limit} bytes"),
        )
    };
    if len.is_some_and(|l| l > limit as u64) {
        return Err(too_large());
    }
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        let mut chunk =
            chunk.map_err(|e| ApiError::bad_request(format!("the upload broke off: {e}")))?;
        while chunk.has_remaining() {
            let piece = chunk.chunk();
            if out.len() + piece.len() > limit {
                return Err(too_large());
            }
            out.extend_from_slice(piece);
            let n = piece.len();
            chunk.advance(n);
        }
    }
    Ok(out)
}

/// `POST /api/v1/plugins/lua` (or `PUT`, as `ctl` sends files; body: the zip): 201 with the stored plugin.
async fn upload(ctl: Arc<Controller>, header: Option<String>, body: Vec<u8>) -> Resp {
    let result = async {
        let actor = user_of(&ctl, header, "core.plugin.install").await?;
        let (manifest, bundle) = crate::plugins::lua_only::read_zip(&body)
            .map_err(|m| ApiError::new(400, "invalid_plugin", m))?;
        let who = actor.audit_name();
        let manifest_json = serde_json::to_value(&manifest)
            .map_err(|e| ApiError::new(500, "internal", e.to_string()))?;
        let name = bundle.plugin.clone();
        let rec = ctl
            .store
            .write(move |c| {
                put_in(c, &who, Kind::Lua, &bundle, &manifest_json)?;
                get_in(c, &name)
            })
            .await?;
        tracing::info!(plugin = %manifest.name, version = %manifest.version, "Lua-only plugin uploaded");
        Ok::<_, ApiError>(json!(rec))
    }
    .await;
    reply(201, result)
}

/// `GET /api/v1/plugins/lua`: every stored Lua-only plugin.
async fn list(ctl: Arc<Controller>, header: Option<String>) -> Resp {
    let result = async {
        user_of(&ctl, header, "core.plugin.list").await?;
        let all = ctl.store.read(list_in).await?;
        let lua: Vec<BundleRecord> = all.into_iter().filter(|b| b.kind == Kind::Lua).collect();
        Ok::<_, ApiError>(json!(lua))
    }
    .await;
    reply(200, result)
}

/// `DELETE /api/v1/plugins/lua/{name}`: removes the plugin's Lua (its key–value data stays, so
/// uploading it again carries on). Instances drop it at their next start.
async fn delete(ctl: Arc<Controller>, header: Option<String>, name: String) -> Resp {
    let result = async {
        let actor = user_of(&ctl, header, "core.plugin.install").await?;
        let who = actor.audit_name();
        let rec = ctl
            .store
            .write(move |c| {
                let rec = get_in(c, &name)?
                    .filter(|r| r.kind == Kind::Lua)
                    .ok_or_else(|| {
                        StoreError::NotFound(format!("no Lua-only plugin named '{name}'"))
                    })?;
                delete_in(c, &who, &rec.plugin)
            })
            .await?;
        Ok::<_, ApiError>(json!(rec))
    }
    .await;
    reply(200, result)
}

pub fn routes(ctl: Arc<Controller>) -> impl Filter<Extract = (Resp,), Error = Rejection> + Clone {
    let with = warp::any().map(move || ctl.clone());
    let auth = warp::header::optional::<String>("authorization");
    let query = warp::query::raw().or(warp::any().map(String::new)).unify();
    let v1 = warp::path("api").and(warp::path("v1"));
    let list_for_host = v1
        .and(warp::path!("host" / "plugin-lua"))
        .and(warp::get())
        .and(with.clone())
        .and(auth)
        .and(query)
        .then(|ctl, a, q| async move { host_list(ctl, a, q).await });
    let get = v1
        .and(warp::path!("host" / "plugin-lua" / String))
        .and(warp::get())
        .and(with.clone())
        .and(auth)
        .then(|n: String, ctl, a| async move { host_get(ctl, a, n).await });
    let up = v1
        .and(warp::path!("plugins" / "lua"))
        .and(warp::post().or(warp::put()).unify())
        .and(with.clone())
        .and(auth)
        .and(warp::header::optional::<u64>("content-length"))
        .and(warp::body::stream())
        .then(|ctl, a, len: Option<u64>, body| async move {
            match read_limited(len, Box::pin(body)).await {
                Ok(bytes) => upload(ctl, a, bytes).await,
                Err(e) => error(e),
            }
        });
    let user_list = v1
        .and(warp::path!("plugins" / "lua"))
        .and(warp::get())
        .and(with.clone())
        .and(auth)
        .then(|ctl, a| async move { list(ctl, a).await });
    let del = v1
        .and(warp::path!("plugins" / "lua" / String))
        .and(warp::delete())
        .and(with.clone())
        .and(auth)
        .then(|n: String, ctl, a| async move { delete(ctl, a, n).await });
    list_for_host
        .or(get)
        .unify()
        .or(up)
        .unify()
        .or(user_list)
        .unify()
        .or(del)
        .unify()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(list: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        list.iter()
            .map(|(p, t)| (p.to_string(), t.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn file_names_are_checked() {
        for ok in ["a.lua", "lib/x-y_z.lua", "A/B/c.d.lua"] {
            assert!(check_path(ok).is_ok(), "{ok}");
        }
        for (bad, says) in [
            ("../x.lua", "'..'"),
            ("a/../x.lua", "'..'"),
            ("/etc/x.lua", "absolute"),
            ("a//b.lua", "empty"),
            ("./a.lua", "'.'"),
            ("a b.lua", "' '"),
            ("a\\b.lua", "'\\\\'"),
            ("x.txt", "not a .lua"),
            ("", "1 to 200"),
        ] {
            let e = check_path(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        assert!(check_path(&format!("{}.lua", "a".repeat(200))).is_err());
    }

    /// Plugin `demo`'s bundle of `files`, loading `load`.
    fn bundle(
        version: &str,
        load: &str,
        files: Vec<(String, Vec<u8>)>,
    ) -> Result<LuaBundle, String> {
        bundle_from_files("demo", version, vec![load.into()], vec![], files)
    }

    /// Stores plugin `ext`'s Lua as its declaration would.
    async fn put_ext(
        s: &Store,
        version: &str,
        load: &str,
        list: &[(&str, &str)],
    ) -> store::Result<Checksum> {
        put(s, "ext", version, vec![load.into()], vec![], files(list)).await
    }

    #[test]
    fn names_and_bundles_are_checked() {
        assert!(check_plugin_name("announce_2").is_ok());
        for bad in ["", "p", "2x", "Caps", "a-b", "clusterio", "a.b"] {
            assert!(check_plugin_name(bad).is_err(), "{bad}");
        }
        assert!(bundle("1.0.0", "a.lua", files(&[("a.lua", "x")])).is_ok());
        let big = "x".repeat(MAX_FILE_BYTES + 1);
        for (version, load, given, says) in [
            ("one", "a.lua", files(&[("a.lua", "x")]), "semantic version"),
            (
                "1.0.0",
                "b.lua",
                files(&[("a.lua", "x")]),
                "b.lua is listed",
            ),
            ("1.0.0", "a.lua", files(&[("a.lua", &big)]), "limited to"),
            (
                "1.0.0",
                "a.lua",
                vec![("a.lua".into(), vec![0xff, 0xfe])],
                "UTF-8",
            ),
            (
                "1.0.0",
                "a.lua",
                files(&[("a.lua", "x"), ("a.lua", "y")]),
                "given twice",
            ),
        ] {
            let e = bundle(version, load, given).unwrap_err();
            assert!(e.contains(says), "wanted {says:?} in {e:?}");
        }
    }

    #[tokio::test]
    async fn put_list_delete_and_kinds_do_not_clash() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        migrate(&s).await.unwrap();
        let main = [("main.lua", "return {}")];
        let sha = put_ext(&s, "1.0.0", "main.lua", &main).await.unwrap();
        assert_eq!(sha.len(), 64);
        let (bytes, stored) = s.read(|c| bytes_in(c, "ext")).await.unwrap().unwrap();
        assert_eq!(stored, sha);
        assert_eq!(sha256_hex(&bytes), sha);
        let b: LuaBundle = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(b.files["main.lua"], "return {}");
        // Same content, same checksum.
        assert_eq!(put_ext(&s, "1.0.0", "main.lua", &main).await.unwrap(), sha);
        // A Lua-only plugin may not take an external plugin's name.
        let e = s
            .write(move |c| put_in(c, "admin", Kind::Lua, &b, &json!({})))
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::Conflict(_)), "{e}");
        // Bad input changes nothing.
        let e = put_ext(&s, "2.0.0", "../x.lua", &[("../x.lua", "")])
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::Invalid(_)), "{e}");
        let l = s.read(list_in).await.unwrap();
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].version, "1.0.0");
        assert_eq!(l[0].files, vec!["main.lua"]);
        s.write(|c| delete_in(c, "admin", "ext")).await.unwrap();
        assert!(s.read(list_in).await.unwrap().is_empty());
    }

    #[test]
    fn the_instance_switch() {
        assert!(enabled_for(&json!({}), "a"));
        assert!(!enabled_for(
            &json!({"lua_plugins": {"disabled": ["a"]}}),
            "a"
        ));
        assert!(enabled_for(
            &json!({"lua_plugins": {"disabled": ["b"]}}),
            "a"
        ));
    }
}
