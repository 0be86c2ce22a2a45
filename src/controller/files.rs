//! File streams over HTTP (never the link): save uploads and downloads, backups from hosts, the
//! mod store, and following an instance's log.
//!
//! On disk, under the controller's data directory:
//! `saves/<instance id>/uploads/<save>` (waiting for the host to fetch),
//! `saves/<instance id>/downloads/<save>` (pushed by the host for a user),
//! `saves/<instance id>/backups/<unix ms>-<save>` (copies kept per `backup_retention`),
//! `saves/<instance id>/scenarios/<name>.zip` (an uploaded scenario waiting for the host),
//! `mods/<file>`.

use super::Controller;
use super::auth::{self, Actor};
use super::error::ApiError;
use super::instances::backup_save_name;
use super::requests::Ref;
use crate::saves::{self, SAVE_NAME_HEADER, SHA256_HEADER};
use crate::store::{self, TokenOwner};
use bytes::Buf;
use futures_util::{Stream, StreamExt};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

/// Largest save or mod accepted.
const MAX_FILE_BYTES: u64 = 4 << 30;

/// One operation at a time per file name: a mod's file and its metadata, a save staged for a
/// host, a save pulled from a host. Keyed by path (paths differ between controllers).
static FILE_LOCKS: std::sync::LazyLock<super::instances::KeyedLocks<PathBuf>> =
    std::sync::LazyLock::new(Default::default);

/// A name no other upload in this process uses: concurrent uploads of one name never share
/// a temporary file.
fn unique(dir: &Path, what: &str, name: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    dir.join(format!(".{what}-{}-{n}-{name}", std::process::id()))
}

pub(super) type Resp = warp::reply::Response;

pub(super) fn error(e: ApiError) -> Resp {
    warp::reply::with_status(
        warp::reply::json(&e.to_json()),
        StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
    )
    .into_response()
}

/// 201 with the new file's description, or the error.
fn created(result: Result<Value, ApiError>) -> Resp {
    match result {
        Ok(v) => json_reply(201, &v),
        Err(e) => error(e),
    }
}

fn json_reply(status: u16, v: &Value) -> Resp {
    warp::reply::with_status(
        warp::reply::json(v),
        StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
    )
    .into_response()
}

impl Controller {
    pub fn saves_dir(&self, instance_id: i64) -> PathBuf {
        self.data_dir.join("saves").join(instance_id.to_string())
    }

    pub fn backups_dir(&self, instance_id: i64) -> PathBuf {
        self.saves_dir(instance_id).join("backups")
    }

    pub fn mods_dir(&self) -> PathBuf {
        self.data_dir.join("mods")
    }
}

async fn user(
    ctl: &Controller,
    header: Option<String>,
    permission: &str,
) -> Result<Actor, ApiError> {
    let token = auth::bearer(header.as_deref())?;
    let actor = auth::authenticate(&ctl.store, token).await?;
    actor.require(permission)?;
    Ok(actor)
}

/// The host a host token belongs to (routes only hosts use).
pub(super) async fn host(ctl: &Controller, header: Option<String>) -> Result<i64, ApiError> {
    let token = auth::bearer(header.as_deref())?.to_string();
    match ctl
        .store
        .read(move |c| store::tokens::resolve(c, &token))
        .await?
    {
        Some(TokenOwner::Host { host_id, .. }) => Ok(host_id),
        Some(_) => Err(ApiError::forbidden("this route is for hosts")),
        None => Err(ApiError::unauthorized("invalid or revoked token")),
    }
}

/// Streams a request body into `target` atomically; at most `MAX_FILE_BYTES`.
async fn receive<S, B>(mut body: S, target: &Path) -> Result<(u64, String), ApiError>
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    use sha2::{Digest, Sha256};
    let io = |e: std::io::Error| ApiError::io(format_args!("writing {}", target.display()), &e);
    if let Some(dir) = target.parent() {
        tokio::fs::create_dir_all(dir).await.map_err(io)?;
    }
    let tmp = saves::temp_path(target);
    let mut file = tokio::fs::File::create(&tmp).await.map_err(io)?;
    let (mut size, mut hasher) = (0u64, Sha256::new());
    let result = async {
        while let Some(chunk) = body.next().await {
            let mut chunk =
                chunk.map_err(|e| ApiError::bad_request(format!("the upload broke off: {e}")))?;
            while chunk.has_remaining() {
                let piece = chunk.chunk();
                size += piece.len() as u64;
                if size > MAX_FILE_BYTES {
                    return Err(ApiError::new(
                        413,
                        "too_large",
                        format!("files are limited to {MAX_FILE_BYTES} bytes"),
                    ));
                }
                hasher.update(piece);
                file.write_all(piece).await.map_err(io)?;
                let n = piece.len();
                chunk.advance(n);
            }
        }
        file.flush().await.map_err(io)?;
        Ok(())
    }
    .await;
    drop(file);
    if let Err(e) = result {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(e);
    }
    saves::commit(&tmp, target).map_err(io)?;
    Ok((size, hex::encode(hasher.finalize())))
}

/// Receives into a temporary file of its own, checks it with `check`, then moves it to `target`.
async fn receive_checked<S, B>(
    body: S,
    target: &Path,
    name: &str,
    check: fn(&Path, &str) -> Result<(), saves::SaveError>,
) -> Result<(u64, String), ApiError>
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    let (staging, got) = receive_staged(body, target, name, check).await?;
    std::fs::rename(&staging, target).map_err(|e| {
        let _ = std::fs::remove_file(&staging);
        ApiError::io(format_args!("storing {}", target.display()), &e)
    })?;
    Ok(got)
}

/// Receives into a checked temporary file beside `target` (unique to this upload) and returns
/// it; the caller moves it into place.
async fn receive_staged<S, B>(
    body: S,
    target: &Path,
    name: &str,
    check: fn(&Path, &str) -> Result<(), saves::SaveError>,
) -> Result<(PathBuf, (u64, String)), ApiError>
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    let dir = target.parent().unwrap_or(Path::new("."));
    let staging = unique(dir, "incoming", name);
    let got = receive(body, &staging).await?;
    if let Err(e) = check(&staging, name) {
        let _ = std::fs::remove_file(&staging);
        return Err(ApiError::new(400, "invalid_file", e.to_string()));
    }
    Ok((staging, got))
}

async fn send_file(
    path: &Path,
    download_name: &str,
    extra: Option<(&'static str, String)>,
) -> Resp {
    match std::fs::File::open(path) {
        Ok(f) => send_open_file(f, download_name, extra).await,
        Err(_) => error(ApiError::not_found(format!("no file '{download_name}'"))),
    }
}

/// Streams an open file; its length and checksum are of the same open file, so a file
/// replaced meanwhile (a new upload of the name) never mixes two versions.
async fn send_open_file(
    file: std::fs::File,
    download_name: &str,
    extra: Option<(&'static str, String)>,
) -> Resp {
    let hashed = tokio::task::spawn_blocking(move || {
        use sha2::{Digest, Sha256};
        use std::io::{Read, Seek};
        let mut file = file;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        let mut len = 0u64;
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            len += n as u64;
            hasher.update(&buf[..n]);
        }
        file.seek(std::io::SeekFrom::Start(0))?;
        Ok::<_, std::io::Error>((file, len, hex::encode(hasher.finalize())))
    })
    .await;
    let (file, len, sha) = match hashed {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return error(ApiError::io(format_args!("reading {download_name}"), &e)),
        Err(e) => {
            return error(ApiError::new(
                500,
                "internal",
                format!("reading {download_name}: {e}"),
            ));
        }
    };
    let file = tokio::fs::File::from_std(file);
    let stream = tokio_util::io::ReaderStream::new(file);
    let mut resp = warp::reply::stream(stream).into_response();
    let h = resp.headers_mut();
    let mut set = |k: &'static str, v: String| {
        if let Ok(v) = warp::http::HeaderValue::from_str(&v) {
            h.insert(k, v);
        }
    };
    set("content-type", "application/zip".into());
    set("content-length", len.to_string());
    set(
        "content-disposition",
        format!("attachment; filename=\"{download_name}\""),
    );
    set(SHA256_HEADER, sha);
    if let Some((k, v)) = extra {
        set(k, v);
    }
    resp
}

fn valid(name: &str) -> Result<(), ApiError> {
    saves::validate_name(name).map_err(|e| ApiError::new(400, "invalid_name", e.to_string()))
}

/// Path segments arrive percent-encoded (`My%20Save.zip`).
pub(super) fn decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&segment[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn instance_ref(s: &str) -> Ref {
    s.parse::<i64>()
        .map(Ref::Id)
        .unwrap_or_else(|_| Ref::Name(s.to_string()))
}

async fn upload_save<S, B>(
    ctl: Arc<Controller>,
    auth_header: Option<String>,
    instance: String,
    name: String,
    body: S,
) -> Resp
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    let result = async {
        let actor = user(&ctl, auth_header, "core.instance.save.upload").await?;
        valid(&name)?;
        let rec = ctl.record(&instance_ref(&instance)).await?;
        ctl.host_of(&rec).await?;
        let target = ctl.saves_dir(rec.id).join("uploads").join(&name);
        let (staging, (size, sha)) =
            receive_staged(body, &target, &name, saves::check_save_zip).await?;
        // The host keeps it under a name of its own if the running game writes `name`.
        let fetched = hand_to_host(&ctl, &rec, &staging, &target, "save_fetch", &name).await?;
        let stored = fetched["name"]
            .as_str()
            .map(String::from)
            .unwrap_or_else(|| name.clone());
        audit_upload(&ctl, &actor, "save.upload", &rec.name, &stored, sha).await?;
        Ok::<_, ApiError>(
            json!({ "name": stored, "requested": name, "size": size, "load_next": true }),
        )
    }
    .await;
    created(result)
}

/// Puts a received upload where the instance's host fetches it (`target`), has the host fetch
/// it (`request` with `name`) and removes it again. One upload of a name at a time reaches the
/// host: the file it fetches is this one.
async fn hand_to_host(
    ctl: &Controller,
    rec: &store::InstanceRecord,
    staging: &Path,
    target: &Path,
    request: &str,
    name: &str,
) -> Result<Value, ApiError> {
    let _one = FILE_LOCKS.lock(target.to_path_buf()).await;
    if let Err(e) = std::fs::rename(staging, target) {
        let _ = std::fs::remove_file(staging);
        return Err(ApiError::io(format_args!("staging {name}"), &e));
    }
    let fetched = ctl
        .ask_host(
            rec,
            request,
            json!({ "name": name }),
            std::time::Duration::from_secs(600),
        )
        .await;
    let _ = std::fs::remove_file(target);
    fetched
}

/// The audit row of an upload: who, what, and the file's SHA-256.
async fn audit_upload(
    ctl: &Controller,
    actor: &Actor,
    action: &'static str,
    instance: &str,
    name: &str,
    sha256: String,
) -> Result<(), ApiError> {
    let (who, n, inst) = (actor.audit_name(), name.to_string(), instance.to_string());
    ctl.store
        .write(move |c| {
            store::audit::record(
                c,
                &who,
                action,
                &inst,
                &json!({ "name": n, "sha256": sha256 }),
            )
        })
        .await?;
    Ok(())
}

fn check_scenario_zip(path: &Path, _name: &str) -> Result<(), saves::SaveError> {
    crate::host::scenarios::check_zip(path).map_err(saves::SaveError::Invalid)
}

/// `PUT …/scenarios/{name}`: a scenario zip for the instance's new games. The controller checks
/// it is a scenario, the host fetches it and unpacks it into `<instance>/scenarios/<name>/`.
async fn upload_scenario<S, B>(
    ctl: Arc<Controller>,
    auth_header: Option<String>,
    instance: String,
    name: String,
    body: S,
) -> Resp
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    let result = async {
        let actor = user(&ctl, auth_header, "core.instance.scenario.upload").await?;
        let name = crate::host::scenarios::check_upload_name(&name)
            .map_err(|e| ApiError::new(400, "invalid_name", e))?;
        let rec = ctl.record(&instance_ref(&instance)).await?;
        ctl.host_of(&rec).await?;
        let dir = ctl.saves_dir(rec.id).join("scenarios");
        std::fs::create_dir_all(&dir)
            .map_err(|e| ApiError::io(format_args!("creating {}", dir.display()), &e))?;
        let target = dir.join(format!("{name}.zip"));
        let (staging, (size, sha)) =
            receive_staged(body, &target, &name, check_scenario_zip).await?;
        hand_to_host(&ctl, &rec, &staging, &target, "scenario_fetch", &name).await?;
        audit_upload(&ctl, &actor, "scenario.upload", &rec.name, &name, sha).await?;
        Ok::<_, ApiError>(json!({ "name": name, "source": "instance", "size": size }))
    }
    .await;
    created(result)
}

async fn download_save(
    ctl: Arc<Controller>,
    auth_header: Option<String>,
    instance: String,
    name: String,
) -> Resp {
    let result = async {
        user(&ctl, auth_header, "core.instance.save.download").await?;
        valid(&name)?;
        let rec = ctl.record(&instance_ref(&instance)).await?;
        if rec.host_id.is_some_and(|h| ctl.hub.host_connected(h)) {
            let pulled = ctl
                .pull_save(&rec, &name, std::time::Duration::from_secs(600))
                .await?;
            // Open, then gone from the disk: the open file streams, nothing is left behind.
            let file = std::fs::File::open(&pulled)
                .map_err(|e| ApiError::io(format_args!("opening the pulled {name}"), &e));
            let _ = std::fs::remove_file(&pulled);
            return Ok(Pulled::Open(file?));
        }
        // Host away: the newest backup of that save, if there is one.
        let backups = saves::list(&ctl.backups_dir(rec.id)).unwrap_or_default();
        backups
            .iter()
            .find(|b| backup_save_name(&b.name) == name)
            .map(|b| Pulled::Path(ctl.backups_dir(rec.id).join(&b.name)))
            .ok_or_else(|| {
                ApiError::not_found(format!(
                    "the host is not connected and there is no backup of '{name}'"
                ))
            })
    }
    .await;
    match result {
        Ok(Pulled::Open(file)) => send_open_file(file, &name, None).await,
        Ok(Pulled::Path(path)) => send_file(&path, &name, None).await,
        Err(e) => error(e),
    }
}

/// What a download sends: a save just pulled from the host (already unlinked), or a backup.
enum Pulled {
    Open(std::fs::File),
    Path(PathBuf),
}

impl Controller {
    /// Has the host push save `name` of `rec` and returns the copy as a file of its own
    /// (the caller removes it). Pulls of one name run one at a time, so concurrent downloads
    /// and transfers each get a whole copy.
    pub async fn pull_save(
        &self,
        rec: &store::InstanceRecord,
        name: &str,
        timeout: std::time::Duration,
    ) -> Result<PathBuf, ApiError> {
        let dir = self.saves_dir(rec.id).join("downloads");
        let arrived = dir.join(name);
        let _one = FILE_LOCKS.lock(arrived.clone()).await;
        self.ask_host(rec, "save_push", json!({ "name": name }), timeout)
            .await?;
        let mine = unique(&dir, "pulled", name);
        std::fs::rename(&arrived, &mine)
            .map_err(|e| ApiError::io(format_args!("taking the pulled save {name}"), &e))?;
        Ok(mine)
    }
}

/// One of the controller's backup copies, for a user.
async fn download_backup(
    ctl: Arc<Controller>,
    auth_header: Option<String>,
    instance: String,
    file: String,
) -> Resp {
    let result = async {
        user(&ctl, auth_header, "core.instance.save.download").await?;
        valid(&file)?;
        let rec = ctl.record(&instance_ref(&instance)).await?;
        Ok::<_, ApiError>(ctl.backups_dir(rec.id).join(&file))
    }
    .await;
    match result {
        Ok(path) => send_file(&path, &file, None).await,
        Err(e) => error(e),
    }
}

/// A host sends a save: a backup (kept per retention) or one a user asked to download.
async fn host_put_save<S, B>(
    ctl: Arc<Controller>,
    auth_header: Option<String>,
    id: i64,
    name: String,
    query: String,
    body: S,
) -> Resp
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    let result = async {
        let host_id = host(&ctl, auth_header).await?;
        valid(&name)?;
        let rec = ctl
            .store
            .read(move |c| store::instances::get(c, &id.to_string()))
            .await?;
        if rec.host_id != Some(host_id) {
            return Err(ApiError::forbidden(
                "the instance is not assigned to this host",
            ));
        }
        let backup = query.split('&').any(|kv| kv == "purpose=backup");
        let target = if backup {
            ctl.backups_dir(id)
                .join(format!("{}-{name}", store::now_ms()))
        } else {
            ctl.saves_dir(id).join("downloads").join(&name)
        };
        let (size, sha) = receive_checked(body, &target, &name, saves::check_save_zip).await?;
        if backup {
            let keep = ctl.schemas.get().instance.resolve(&rec.config)["backup_retention"]
                .as_u64()
                .map_or(1, |n| n.max(1) as usize);
            let all = saves::list(&ctl.backups_dir(id)).unwrap_or_default();
            for old in all.iter().skip(keep) {
                let _ = std::fs::remove_file(ctl.backups_dir(id).join(&old.name));
            }
            tracing::info!(instance = %rec.name, save = %name, size, "backup stored");
        }
        Ok(json!({ "name": name, "size": size, "sha256": sha }))
    }
    .await;
    created(result)
}

/// The host asking is the one instance `id` is assigned to.
async fn assigned_host(
    ctl: &Controller,
    auth_header: Option<String>,
    id: i64,
) -> Result<(), ApiError> {
    let host_id = host(ctl, auth_header).await?;
    let rec = ctl
        .store
        .read(move |c| store::instances::get(c, &id.to_string()))
        .await?;
    if rec.host_id != Some(host_id) {
        return Err(ApiError::forbidden(
            "the instance is not assigned to this host",
        ));
    }
    Ok(())
}

/// `GET /api/v1/host/scenarios/{id}/{name}`: an uploaded scenario zip, for the instance's host.
async fn host_get_scenario(
    ctl: Arc<Controller>,
    auth_header: Option<String>,
    id: i64,
    name: String,
) -> Resp {
    let result = async {
        assigned_host(&ctl, auth_header, id).await?;
        let name = crate::host::scenarios::check_upload_name(&name)
            .map_err(|e| ApiError::new(400, "invalid_name", e))?;
        let file = format!("{name}.zip");
        Ok::<_, ApiError>((ctl.saves_dir(id).join("scenarios").join(&file), file))
    }
    .await;
    match result {
        Ok((path, file)) => send_file(&path, &file, None).await,
        Err(e) => error(e),
    }
}

async fn host_get_save(
    ctl: Arc<Controller>,
    auth_header: Option<String>,
    id: i64,
    name: String,
) -> Resp {
    let result = async {
        assigned_host(&ctl, auth_header, id).await?;
        if name == "latest" {
            let newest = saves::list(&ctl.backups_dir(id))
                .unwrap_or_default()
                .into_iter()
                .next()
                .ok_or_else(|| ApiError::not_found("no backup yet"))?;
            let save = backup_save_name(&newest.name).to_string();
            return Ok((ctl.backups_dir(id).join(&newest.name), save));
        }
        valid(&name)?;
        Ok((ctl.saves_dir(id).join("uploads").join(&name), name))
    }
    .await;
    match result {
        Ok((path, save)) => send_file(&path, &save.clone(), Some((SAVE_NAME_HEADER, save))).await,
        Err(e) => error(e),
    }
}

async fn upload_mod<S, B>(
    ctl: Arc<Controller>,
    auth_header: Option<String>,
    name: String,
    body: S,
) -> Resp
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    let result = async {
        let actor = user(&ctl, auth_header, "core.mod.upload").await?;
        valid(&name)?;
        let target = ctl.mods_dir().join(&name);
        let (staging, (size, sha)) =
            receive_staged(body, &target, &name, saves::check_mod_zip).await?;
        // File and metadata change together, one upload of a name at a time: whichever
        // upload commits last is what is stored, whole; a failed commit puts the old file back.
        let _one = FILE_LOCKS.lock(target.clone()).await;
        let previous = unique(&ctl.mods_dir(), "previous", &name);
        // A second name for the stored file (readers keep seeing it until the rename).
        let had_previous = std::fs::hard_link(&target, &previous).is_ok();
        let restore = || {
            if had_previous {
                let _ = std::fs::rename(&previous, &target);
            } else {
                let _ = std::fs::remove_file(&target);
            }
        };
        if let Err(e) = saves::commit(&staging, &target) {
            let _ = std::fs::remove_file(&staging);
            restore();
            return Err(ApiError::io(format_args!("storing mod {name}"), &e));
        }
        let who = actor.audit_name();
        let n = name.clone();
        let written = ctl
            .store
            .write(move |c| store::mods::put(c, &who, &n, size as i64, &sha))
            .await;
        match written {
            Ok(rec) => {
                if had_previous {
                    let _ = std::fs::remove_file(&previous);
                }
                Ok::<_, ApiError>(json!(rec))
            }
            Err(e) => {
                restore();
                Err(e.into())
            }
        }
    }
    .await;
    created(result)
}

async fn get_mod(
    ctl: Arc<Controller>,
    auth_header: Option<String>,
    name: String,
    query: String,
    for_host: bool,
) -> Resp {
    let result = async {
        if for_host {
            host(&ctl, auth_header).await?;
        } else {
            user(&ctl, auth_header, "core.mod.download").await?;
        }
        valid(&name)?;
        let n = name.clone();
        Ok::<_, ApiError>(ctl.store.read(move |c| store::mods::get(c, &n)).await?)
    }
    .await;
    match result {
        Ok(m) if query.contains("meta=1") => json_reply(200, &json!(m)),
        Ok(_) => send_file(&ctl.mods_dir().join(&name), &name, None).await,
        Err(e) => error(e),
    }
}

/// `GET …/logs?follow=1`: recent lines, then every new line as it arrives.
async fn follow_logs(ctl: Arc<Controller>, auth_header: Option<String>, instance: String) -> Resp {
    let result = async {
        let token = auth::bearer(auth_header.as_deref())?.to_string();
        let actor = user(&ctl, auth_header, "core.log.follow").await?;
        let watch = ctl.hub.watch(&token, &actor);
        let rec = ctl.record(&instance_ref(&instance)).await?;
        let recent = ctl
            .logs(Ref::Id(rec.id), 100)
            .await
            .unwrap_or(json!({ "lines": [] }));
        Ok::<_, ApiError>((rec.id, recent, watch))
    }
    .await;
    let (id, recent, watch) = match result {
        Ok(r) => r,
        Err(e) => return error(e),
    };
    let first: Vec<Result<String, std::io::Error>> = recent["lines"]
        .as_array()
        .map(|l| {
            l.iter()
                .filter_map(|v| v.as_str())
                .map(|s| Ok(format!("{s}\n")))
                .collect()
        })
        .unwrap_or_default();
    let live = tokio_stream_lines(ctl.hub.clone(), watch, id);
    let stream = futures_util::stream::iter(first).chain(live);
    let mut resp = warp::reply::stream(stream).into_response();
    resp.headers_mut().insert(
        "content-type",
        warp::http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// Log lines of one instance from the event stream, until the client goes away or its login
/// stops allowing it (token revoked, user deleted, `core.log.follow` taken away).
fn tokio_stream_lines(
    hub: Arc<super::hub::Hub>,
    watch: super::hub::Watch,
    id: i64,
) -> impl Stream<Item = Result<String, std::io::Error>> + Send + 'static {
    let rx = hub.subscribe();
    futures_util::stream::unfold((rx, watch), move |(mut rx, mut watch)| {
        let hub = hub.clone();
        async move {
            loop {
                match rx.recv().await {
                    Ok(ev) if ev.name == "instance_log" && ev.data["id"] == json!(id) => {
                        match watch.actor(&hub).await {
                            Some(a) if a.has("core.log.follow") => {}
                            _ => return None,
                        }
                        let line = ev.data["line"].as_str().unwrap_or_default().to_string();
                        return Some((Ok(format!("{line}\n")), (rx, watch)));
                    }
                    Ok(_) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => return None,
                }
            }
        }
    })
}

pub fn routes(ctl: Arc<Controller>) -> impl Filter<Extract = (Resp,), Error = Rejection> + Clone {
    let with = warp::any().map(move || ctl.clone());
    let auth = warp::header::optional::<String>("authorization");
    let query = warp::query::raw().or(warp::any().map(String::new)).unify();
    let v1 = warp::path("api").and(warp::path("v1"));

    let put_save = v1
        .and(warp::path!("instances" / String / "saves" / String))
        .and(warp::put())
        .and(with.clone())
        .and(auth)
        .and(warp::body::stream())
        .then(|i: String, n: String, ctl, a, body| async move {
            upload_save(ctl, a, decode(&i), decode(&n), Box::pin(body)).await
        });
    let get_save = v1
        .and(warp::path!("instances" / String / "saves" / String))
        .and(warp::get())
        .and(with.clone())
        .and(auth)
        .then(|i: String, n: String, ctl, a| async move {
            download_save(ctl, a, decode(&i), decode(&n)).await
        });
    let get_backup = v1
        .and(warp::path!("instances" / String / "backups" / String))
        .and(warp::get())
        .and(with.clone())
        .and(auth)
        .then(|i: String, f: String, ctl, a| async move {
            download_backup(ctl, a, decode(&i), decode(&f)).await
        });
    let logs = v1
        .and(warp::path!("instances" / String / "logs"))
        .and(warp::get())
        .and(query)
        .and_then(|i: String, q: String| async move {
            if q.split('&')
                .any(|kv| kv == "follow=1" || kv == "follow=true")
            {
                Ok(i)
            } else {
                Err(warp::reject::not_found())
            }
        })
        .and(with.clone())
        .and(auth)
        .then(|i: String, ctl, a| async move { follow_logs(ctl, a, decode(&i)).await });
    let put_mod = v1
        .and(warp::path!("mods" / String))
        .and(warp::put())
        .and(with.clone())
        .and(auth)
        .and(warp::body::stream())
        .then(|n: String, ctl, a, body| async move {
            upload_mod(ctl, a, decode(&n), Box::pin(body)).await
        });
    let get_mod_user = v1
        .and(warp::path!("mods" / String))
        .and(warp::get())
        .and(with.clone())
        .and(auth)
        .and(query)
        .then(|n: String, ctl, a, q| async move { get_mod(ctl, a, decode(&n), q, false).await });
    let host_put = v1
        .and(warp::path!("host" / "saves" / i64 / String))
        .and(warp::put())
        .and(with.clone())
        .and(auth)
        .and(query)
        .and(warp::body::stream())
        .then(|id: i64, n: String, ctl, a, q, body| async move {
            host_put_save(ctl, a, id, decode(&n), q, Box::pin(body)).await
        });
    let host_get = v1
        .and(warp::path!("host" / "saves" / i64 / String))
        .and(warp::get())
        .and(with.clone())
        .and(auth)
        .then(
            |id: i64, n: String, ctl, a| async move { host_get_save(ctl, a, id, decode(&n)).await },
        );
    let put_scenario = v1
        .and(warp::path!("instances" / String / "scenarios" / String))
        .and(warp::put())
        .and(with.clone())
        .and(auth)
        .and(warp::body::stream())
        .then(|i: String, n: String, ctl, a, body| async move {
            upload_scenario(ctl, a, decode(&i), decode(&n), Box::pin(body)).await
        });
    let host_scenario = v1
        .and(warp::path!("host" / "scenarios" / i64 / String))
        .and(warp::get())
        .and(with.clone())
        .and(auth)
        .then(|id: i64, n: String, ctl, a| async move {
            host_get_scenario(ctl, a, id, decode(&n)).await
        });
    let host_pack = v1
        .and(warp::path!("host" / "mod_packs" / String))
        .and(warp::get())
        .and(with.clone())
        .and(auth)
        .then(|n: String, ctl: Arc<Controller>, a| async move {
            let result = async {
                let host_id = host(&ctl, a).await?;
                super::mod_packs::for_host(&ctl, host_id, &decode(&n)).await
            }
            .await;
            match result {
                Ok(v) => json_reply(200, &v),
                Err(e) => error(e),
            }
        });
    let host_mod = v1
        .and(warp::path!("host" / "mods" / String))
        .and(warp::get())
        .and(with)
        .and(auth)
        .and(query)
        .then(|n: String, ctl, a, q| async move { get_mod(ctl, a, decode(&n), q, true).await });

    put_save
        .or(get_save)
        .unify()
        .or(get_backup)
        .unify()
        .or(logs)
        .unify()
        .or(put_mod)
        .unify()
        .or(get_mod_user)
        .unify()
        .or(host_put)
        .unify()
        .or(host_get)
        .unify()
        .or(host_mod)
        .unify()
        .or(host_pack)
        .unify()
        .or(put_scenario)
        .unify()
        .or(host_scenario)
        .unify()
}
