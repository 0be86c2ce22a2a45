//! The Factorio mod portal (`research/factorio.md` §7.4): search it, install a mod with its
//! required dependencies into the controller's mod store, and check the store for updates.
//!
//! The portal's address is the controller setting `mod_portal_url` (a mirror, or a stand-in in
//! tests); downloads need the factorio.com `mod_portal_username` and `mod_portal_token`.
//! Every download is checked against the portal's SHA-1 and opened as a mod zip before anything
//! is stored; an install stores all of its mods or none.

use super::Controller;
use super::error::ApiError;
use super::hub::Event;
use crate::saves;
use crate::store;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use sha1::{Digest, Sha1};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

/// Mods that ship with the game: never downloaded.
pub const BUILTIN_MODS: &[&str] = &["base", "elevated-rails", "quality", "space-age", "recycler"];

pub const DEFAULT_PORTAL_URL: &str = "https://mods.factorio.com";
pub const DEFAULT_FACTORIO_VERSION: &str = "2.0";

/// How long a portal listing is reused for searches.
const SEARCH_TTL: Duration = Duration::from_secs(600);
/// Listings kept (one per portal URL and Factorio version).
const SEARCH_CACHE_ENTRIES: usize = 4;
/// Largest portal JSON answer read (the whole listing is a few MB).
const MAX_JSON_BYTES: usize = 64 << 20;
/// Largest mod zip downloaded.
const MAX_MOD_BYTES: u64 = 1 << 30;
/// Most mods one install may bring in (the mod and its dependencies).
const MAX_PLAN: usize = 100;
/// Most search results answered.
const MAX_RESULTS: usize = 200;

// ---------------------------------------------------------------------------------------------
// Versions and dependency strings.

/// A mod or game version, `major.minor[.patch]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(pub u32, pub u32, pub u32);

impl Version {
    pub fn parse(s: &str) -> Option<Version> {
        let mut parts = s.trim().split('.');
        let mut next = |required: bool| match parts.next() {
            Some(p) => p.parse::<u32>().ok(),
            None if required => None,
            None => Some(0),
        };
        let v = Version(next(true)?, next(true)?, next(false)?);
        if parts.next().is_some() {
            return None;
        }
        Some(v)
    }

    /// The `major.minor` a release's `info_json.factorio_version` names.
    pub fn major_minor(&self) -> (u32, u32) {
        (self.0, self.1)
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Ge,
    Le,
    Gt,
    Lt,
    Eq,
}

impl Op {
    fn parse(s: &str) -> Option<Op> {
        Some(match s {
            ">=" => Op::Ge,
            "<=" => Op::Le,
            ">" => Op::Gt,
            "<" => Op::Lt,
            "=" => Op::Eq,
            _ => return None,
        })
    }

    fn as_str(&self) -> &'static str {
        match self {
            Op::Ge => ">=",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Lt => "<",
            Op::Eq => "=",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DepKind {
    /// No prefix: must be there.
    Required,
    /// `~`: required, without affecting load order.
    RequiredNoOrder,
    /// `?`
    Optional,
    /// `(?)`
    HiddenOptional,
    /// `!`
    Incompatible,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    pub kind: DepKind,
    pub name: String,
    pub constraint: Option<(Op, Version)>,
}

impl Dependency {
    /// Parses an `info.json` dependency string: `[! | ? | (?) | ~] name [op version]`.
    /// Names may contain spaces (`Squeak Through`).
    pub fn parse(s: &str) -> Result<Dependency, String> {
        let t = s.trim();
        let (kind, rest) = if let Some(r) = t.strip_prefix("(?)") {
            (DepKind::HiddenOptional, r)
        } else if let Some(r) = t.strip_prefix('?') {
            (DepKind::Optional, r)
        } else if let Some(r) = t.strip_prefix('!') {
            (DepKind::Incompatible, r)
        } else if let Some(r) = t.strip_prefix('~') {
            (DepKind::RequiredNoOrder, r)
        } else {
            (DepKind::Required, t)
        };
        let rest = rest.trim();
        let (name, constraint) = match rest.find(['<', '>', '=']) {
            None => (rest, None),
            Some(i) => {
                let tail = &rest[i..];
                let op_len = if tail.starts_with(">=") || tail.starts_with("<=") {
                    2
                } else {
                    1
                };
                let op = Op::parse(&tail[..op_len])
                    .ok_or_else(|| format!("dependency \"{s}\": unknown operator"))?;
                let v = Version::parse(&tail[op_len..])
                    .ok_or_else(|| format!("dependency \"{s}\": the version is not x.y.z"))?;
                (rest[..i].trim(), Some((op, v)))
            }
        };
        if name.is_empty() {
            return Err(format!("dependency \"{s}\" names no mod"));
        }
        Ok(Dependency {
            kind,
            name: name.to_string(),
            constraint,
        })
    }

    pub fn is_required(&self) -> bool {
        matches!(self.kind, DepKind::Required | DepKind::RequiredNoOrder)
    }
}

fn constraint_text(c: &Option<(Op, Version)>) -> String {
    match c {
        Some((op, v)) => format!(" {} {v}", op.as_str()),
        None => String::new(),
    }
}

/// A version constraint: `>= 1.2.0` and the like.
pub type Constraint = Option<(Op, Version)>;

pub fn satisfies(v: Version, c: &Constraint) -> bool {
    match c {
        None => true,
        Some((Op::Ge, w)) => v >= *w,
        Some((Op::Le, w)) => v <= *w,
        Some((Op::Gt, w)) => v > *w,
        Some((Op::Lt, w)) => v < *w,
        Some((Op::Eq, w)) => v == *w,
    }
}

/// `Name_1.2.3.zip` → (`Name`, 1.2.3).
pub fn split_file_name(file: &str) -> Option<(&str, Version)> {
    let stem = file.strip_suffix(".zip")?;
    let (name, version) = stem.rsplit_once('_')?;
    Some((name, Version::parse(version)?))
}

// ---------------------------------------------------------------------------------------------
// The portal's JSON.

#[derive(Debug, Clone, Deserialize)]
pub struct Release {
    pub download_url: String,
    pub file_name: String,
    #[serde(default)]
    pub info_json: InfoJson,
    pub sha1: String,
    pub version: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct InfoJson {
    #[serde(default)]
    pub factorio_version: Option<String>,
    #[serde(default)]
    pub dependencies: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct FullMod {
    pub name: Option<String>,
    #[serde(default)]
    pub releases: Vec<Release>,
}

impl Release {
    fn parsed_version(&self) -> Option<Version> {
        Version::parse(&self.version)
    }

    /// Built for this game: its `factorio_version` has the game's major.minor.
    fn fits(&self, game: Version) -> bool {
        self.info_json
            .factorio_version
            .as_deref()
            .and_then(Version::parse)
            .is_some_and(|v| v.major_minor() == game.major_minor())
    }
}

// ---------------------------------------------------------------------------------------------
// Settings and the HTTP client.

#[derive(Debug, Clone)]
pub struct PortalConfig {
    pub url: String,
    pub username: String,
    pub token: String,
    pub factorio_version: String,
}

impl PortalConfig {
    pub fn of(ctl: &Controller) -> PortalConfig {
        let s = ctl.settings();
        let or = |v: &str, d: &str| {
            let v = v.trim();
            if v.is_empty() {
                d.to_string()
            } else {
                v.to_string()
            }
        };
        PortalConfig {
            url: or(&s.mod_portal_url, DEFAULT_PORTAL_URL)
                .trim_end_matches('/')
                .to_string(),
            username: s.mod_portal_username.trim().to_string(),
            token: s.mod_portal_token.trim().to_string(),
            factorio_version: or(&s.mod_portal_factorio_version, DEFAULT_FACTORIO_VERSION),
        }
    }

    fn game(&self, requested: Option<&str>) -> Result<Version, ApiError> {
        let v = requested.unwrap_or(&self.factorio_version);
        Version::parse(v).ok_or_else(|| {
            ApiError::bad_request(format!(
                "factorio_version \"{v}\" is not a version like 2.0 or 2.0.77"
            ))
        })
    }
}

fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(15))
            .read_timeout(Duration::from_secs(60))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new())
    })
}

fn portal_error(what: &str, e: impl std::fmt::Display) -> ApiError {
    ApiError::new(502, "portal_unreachable", format!("{what}: {e}"))
}

/// GET a portal JSON document; None on 404.
async fn get_json(url: &str, what: &str) -> Result<Option<Value>, ApiError> {
    let resp = client()
        .get(url)
        .send()
        .await
        .map_err(|e| portal_error(&format!("asking the mod portal for {what}"), e))?;
    if resp.status() == reqwest::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if !resp.status().is_success() {
        return Err(ApiError::new(
            502,
            "portal_error",
            format!("the mod portal answered {} for {what}", resp.status()),
        ));
    }
    let mut body = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| portal_error(&format!("reading {what}"), e))?;
        if body.len() + chunk.len() > MAX_JSON_BYTES {
            return Err(ApiError::new(
                502,
                "portal_error",
                format!("the mod portal's answer for {what} is larger than {MAX_JSON_BYTES} bytes"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).map(Some).map_err(|e| {
        ApiError::new(
            502,
            "portal_error",
            format!("the mod portal's answer for {what} is not JSON: {e}"),
        )
    })
}

fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `…/api/mods/<name>/full`; None when the portal does not know the mod.
async fn full_mod(cfg: &PortalConfig, name: &str) -> Result<Option<FullMod>, ApiError> {
    let url = format!("{}/api/mods/{}/full", cfg.url, encode(name));
    let Some(v) = get_json(&url, &format!("mod {name}")).await? else {
        return Ok(None);
    };
    let m: FullMod = serde_json::from_value(v).map_err(|e| {
        ApiError::new(
            502,
            "portal_error",
            format!("the mod portal's entry for {name} is not understood: {e}"),
        )
    })?;
    // A mod the portal does not host answers JSON without a name.
    Ok(m.name.is_some().then_some(m))
}

// ---------------------------------------------------------------------------------------------
// Search, cached.

#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    pub name: String,
    pub title: String,
    pub summary: String,
    pub owner: String,
    pub downloads_count: u64,
    pub latest_version: Option<String>,
    pub factorio_version: Option<String>,
}

struct Listing {
    key: String,
    fetched: Instant,
    mods: std::sync::Arc<Vec<Summary>>,
}

fn cache() -> &'static Mutex<Vec<Listing>> {
    static CACHE: OnceLock<Mutex<Vec<Listing>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(Vec::new()))
}

fn summary(v: &Value) -> Option<Summary> {
    let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
    let latest = if v["latest_release"].is_object() {
        v["latest_release"].clone()
    } else {
        v["releases"]
            .as_array()
            .and_then(|r| r.last())
            .cloned()
            .unwrap_or(Value::Null)
    };
    Some(Summary {
        name: v["name"].as_str()?.to_string(),
        title: s("title"),
        summary: s("summary"),
        owner: s("owner"),
        downloads_count: v["downloads_count"].as_u64().unwrap_or(0),
        latest_version: latest["version"].as_str().map(String::from),
        factorio_version: latest["info_json"]["factorio_version"]
            .as_str()
            .map(String::from),
    })
}

/// The portal's list of mods for `game` (`/api/mods?page_size=max&version=<major.minor>`),
/// from the cache when fresh. Returns whether it came from the cache.
async fn listing(
    cfg: &PortalConfig,
    game: Version,
) -> Result<(std::sync::Arc<Vec<Summary>>, bool), ApiError> {
    let key = format!("{}|{}.{}", cfg.url, game.0, game.1);
    if let Ok(c) = cache().lock()
        && let Some(l) = c
            .iter()
            .find(|l| l.key == key && l.fetched.elapsed() < SEARCH_TTL)
    {
        return Ok((l.mods.clone(), true));
    }
    let url = format!(
        "{}/api/mods?page_size=max&version={}.{}&hide_deprecated=true",
        cfg.url, game.0, game.1
    );
    let v = get_json(&url, "its list of mods")
        .await?
        .ok_or_else(|| ApiError::new(502, "portal_error", "the mod portal has no mod list"))?;
    let mods: Vec<Summary> = v["results"]
        .as_array()
        .map(|r| r.iter().filter_map(summary).collect())
        .unwrap_or_default();
    let mods = std::sync::Arc::new(mods);
    if let Ok(mut c) = cache().lock() {
        c.retain(|l| l.key != key);
        if c.len() >= SEARCH_CACHE_ENTRIES {
            c.remove(0);
        }
        c.push(Listing {
            key,
            fetched: Instant::now(),
            mods: mods.clone(),
        });
    }
    Ok((mods, false))
}

pub async fn search(
    ctl: &Controller,
    query: &str,
    factorio_version: Option<&str>,
    limit: Option<usize>,
) -> Result<Value, ApiError> {
    let cfg = PortalConfig::of(ctl);
    let game = cfg.game(factorio_version)?;
    let q = query.trim().to_lowercase();
    if q.chars().count() > 100 {
        return Err(ApiError::bad_request("a search is at most 100 characters"));
    }
    let limit = limit.unwrap_or(50).clamp(1, MAX_RESULTS);
    let (mods, cached) = listing(&cfg, game).await?;
    let mut hits: Vec<&Summary> = mods
        .iter()
        .filter(|m| {
            q.is_empty()
                || m.name.to_lowercase().contains(&q)
                || m.title.to_lowercase().contains(&q)
        })
        .collect();
    // Exact names first, then the most downloaded.
    hits.sort_by(|a, b| {
        (b.name.to_lowercase() == q)
            .cmp(&(a.name.to_lowercase() == q))
            .then(b.downloads_count.cmp(&a.downloads_count))
            .then(a.name.cmp(&b.name))
    });
    let total = hits.len();
    hits.truncate(limit);
    Ok(json!({
        "query": query,
        "factorio_version": format!("{}.{}", game.0, game.1),
        "total": total,
        "cached": cached,
        "results": hits,
    }))
}

// ---------------------------------------------------------------------------------------------
// Install: resolve, download, verify, store.

#[derive(Debug, Clone)]
struct Planned {
    name: String,
    version: Version,
    release: Release,
    /// Who needs it (None: asked for).
    needed_by: Option<String>,
}

fn refused(code: &'static str, message: String) -> ApiError {
    ApiError::new(422, code, message)
}

/// The mod and every required dependency, at the newest releases built for `game` that meet
/// every constraint; refuses missing, unmet and incompatible dependencies.
async fn resolve(
    cfg: &PortalConfig,
    name: &str,
    version: Option<Version>,
    game: Version,
) -> Result<Vec<Planned>, ApiError> {
    let mut fetched: HashMap<String, Option<FullMod>> = HashMap::new();
    let mut chosen: BTreeMap<String, Planned> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    // (mod, constraint, needed by)
    let mut queue: Vec<(String, Constraint, Option<String>)> =
        vec![(name.to_string(), version.map(|v| (Op::Eq, v)), None)];
    let mut incompatible: Vec<(String, String)> = Vec::new();
    while let Some((m, constraint, by)) = queue.pop() {
        if BUILTIN_MODS.contains(&m.as_str()) {
            if m == "base"
                && let Some((op, v)) = constraint
                && !satisfies(Version(game.0, game.1, u32::MAX), &Some((op, v)))
                && !satisfies(game, &Some((op, v)))
            {
                return Err(refused(
                    "incompatible_dependency",
                    format!(
                        "{} needs base {} {v}, which Factorio {}.{} is not",
                        by.unwrap_or_else(|| m.clone()),
                        op.as_str(),
                        game.0,
                        game.1
                    ),
                ));
            }
            continue;
        }
        if let Some(p) = chosen.get(&m) {
            if !satisfies(p.version, &constraint) {
                return Err(refused(
                    "incompatible_dependency",
                    format!(
                        "{} needs {m}{}, but {} needs {m} {}",
                        by.unwrap_or_else(|| m.clone()),
                        constraint_text(&constraint),
                        p.needed_by.clone().unwrap_or_else(|| "the request".into()),
                        p.version
                    ),
                ));
            }
            continue;
        }
        if chosen.len() >= MAX_PLAN {
            return Err(refused(
                "too_many_dependencies",
                format!("{name} needs more than {MAX_PLAN} mods"),
            ));
        }
        if !fetched.contains_key(&m) {
            let f = full_mod(cfg, &m).await?;
            fetched.insert(m.clone(), f);
        }
        let Some(Some(full)) = fetched.get(&m) else {
            return Err(match &by {
                None => ApiError::not_found(format!("the mod portal has no mod named '{m}'")),
                Some(b) => refused(
                    "missing_dependency",
                    format!(
                        "{b} needs {m}{}, which the mod portal does not have",
                        constraint_text(&constraint)
                    ),
                ),
            });
        };
        let pick = full
            .releases
            .iter()
            .filter_map(|r| r.parsed_version().map(|v| (v, r)))
            .filter(|(v, r)| r.fits(game) && satisfies(*v, &constraint))
            .max_by_key(|(v, _)| *v);
        let Some((v, release)) = pick else {
            let what = match &by {
                None => format!("{m}{}", constraint_text(&constraint)),
                Some(b) => format!("{b} needs {m}{}, but", constraint_text(&constraint)),
            };
            let code = if by.is_some() {
                "incompatible_dependency"
            } else {
                "no_compatible_release"
            };
            let versions: Vec<String> = full
                .releases
                .iter()
                .map(|r| {
                    format!(
                        "{} (Factorio {})",
                        r.version,
                        r.info_json.factorio_version.as_deref().unwrap_or("?")
                    )
                })
                .collect();
            return Err(refused(
                code,
                format!(
                    "{what} the mod portal has no release of {m} for Factorio {}.{} that fits (it has: {})",
                    game.0,
                    game.1,
                    if versions.is_empty() {
                        "none".to_string()
                    } else {
                        versions.join(", ")
                    }
                ),
            ));
        };
        for d in &release.info_json.dependencies {
            let dep = Dependency::parse(d).map_err(|e| {
                refused(
                    "bad_dependency",
                    format!("{m} {v}: the portal lists a dependency this cannot read: {e}"),
                )
            })?;
            if dep.is_required() {
                queue.push((dep.name, dep.constraint, Some(format!("{m} {v}"))));
            } else if dep.kind == DepKind::Incompatible {
                incompatible.push((dep.name, format!("{m} {v}")));
            }
        }
        order.push(m.clone());
        chosen.insert(
            m.clone(),
            Planned {
                name: m,
                version: v,
                release: release.clone(),
                needed_by: by,
            },
        );
    }
    for (other, by) in incompatible {
        if let Some(p) = chosen.get(&other) {
            return Err(refused(
                "incompatible_dependency",
                format!(
                    "{by} is incompatible with {other}, which {} needs",
                    p.needed_by.clone().unwrap_or_else(|| "the request".into())
                ),
            ));
        }
    }
    Ok(order
        .into_iter()
        .filter_map(|n| chosen.remove(&n))
        .collect())
}

fn progress(request: &str, data: Value) -> Event {
    let mut d = data;
    d["request"] = json!(request);
    Event {
        name: "mod_progress",
        data: d,
        permission: "core.mod.subscribe",
        to_hosts: false,
        instance_view: false,
    }
}

/// Checks a downloaded zip: a mod zip (`<folder>/info.json`) whose info.json names `name`
/// and `version`.
fn check_downloaded(path: &Path, file: &str, name: &str, version: Version) -> Result<(), String> {
    saves::check_mod_zip(path, file).map_err(|e| e.to_string())?;
    let f = std::fs::File::open(path).map_err(|e| format!("opening {file}: {e}"))?;
    let mut zip = zip::ZipArchive::new(f).map_err(|e| format!("{file} is not a zip: {e}"))?;
    let info_name = zip
        .file_names()
        .filter_map(|n| n.ok().map(|n| n.to_string()))
        .find(|n| n.matches('/').count() == 1 && n.ends_with("/info.json"))
        .ok_or_else(|| format!("{file} has no <folder>/info.json"))?;
    let mut entry = zip
        .by_name(&info_name)
        .map_err(|e| format!("{file}: reading info.json: {e}"))?;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut entry, &mut text)
        .map_err(|e| format!("{file}: reading info.json: {e}"))?;
    let info: Value =
        serde_json::from_str(&text).map_err(|e| format!("{file}: info.json is not JSON: {e}"))?;
    if info["name"].as_str() != Some(name) {
        return Err(format!(
            "{file}: info.json names the mod {}, not {name}",
            info["name"]
        ));
    }
    if info["version"].as_str().and_then(Version::parse) != Some(version) {
        return Err(format!(
            "{file}: info.json says version {}, not {version}",
            info["version"]
        ));
    }
    Ok(())
}

/// Downloads one release to `staging`, verifying its SHA-1; progress as it goes.
async fn download(
    ctl: &Controller,
    cfg: &PortalConfig,
    request: &str,
    p: &Planned,
    index: usize,
    count: usize,
    staging: &Path,
) -> Result<u64, ApiError> {
    let file = &p.release.file_name;
    let url = format!(
        "{}{}{}username={}&token={}",
        cfg.url,
        p.release.download_url,
        if p.release.download_url.contains('?') {
            "&"
        } else {
            "?"
        },
        encode(&cfg.username),
        encode(&cfg.token)
    );
    let fail = |e: String| ApiError::new(502, "download_failed", e);
    let resp = client()
        .get(&url)
        .send()
        .await
        .map_err(|e| fail(format!("downloading {file} from the mod portal: {e}")))?;
    match resp.status().as_u16() {
        200 => {}
        401 | 403 => {
            return Err(ApiError::new(
                502,
                "portal_login",
                format!(
                    "the mod portal refused the download of {file} ({}): check mod_portal_username and mod_portal_token",
                    resp.status()
                ),
            ));
        }
        s => {
            return Err(fail(format!(
                "the mod portal answered {s} for the download of {file}"
            )));
        }
    }
    let total = resp.content_length();
    let io = |e: std::io::Error| ApiError::new(500, "io", format!("writing {file}: {e}"));
    let mut out = tokio::fs::File::create(staging).await.map_err(io)?;
    let mut hasher = Sha1::new();
    let (mut got, mut last) = (0u64, 0u32);
    let mut stream = resp.bytes_stream();
    let step = |got: u64| -> u32 {
        match total {
            Some(t) if t > 0 => ((got.min(t) * 100) / t) as u32,
            _ => 0,
        }
    };
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| fail(format!("the download of {file} broke off: {e}")))?;
        got += chunk.len() as u64;
        if got > MAX_MOD_BYTES {
            return Err(fail(format!("{file} is larger than {MAX_MOD_BYTES} bytes")));
        }
        hasher.update(&chunk);
        out.write_all(&chunk).await.map_err(io)?;
        let pct = step(got);
        if pct >= last + 10 {
            last = pct;
            ctl.hub.publish(progress(
                request,
                json!({"stage": "downloading", "mod": p.name, "file": file,
                       "index": index, "count": count, "percent": pct, "bytes": got, "total": total}),
            ));
        }
    }
    out.flush().await.map_err(io)?;
    drop(out);
    let sha = hex::encode(hasher.finalize());
    if !sha.eq_ignore_ascii_case(p.release.sha1.trim()) {
        return Err(ApiError::new(
            502,
            "checksum_mismatch",
            format!(
                "{file} from the mod portal has SHA-1 {sha}, but the portal lists {}: nothing was stored",
                p.release.sha1
            ),
        ));
    }
    check_downloaded(staging, file, &p.name, p.version).map_err(|e| {
        ApiError::new(
            502,
            "invalid_mod",
            format!("{e}: the download is not a usable mod, nothing was stored"),
        )
    })?;
    Ok(got)
}

pub async fn install(
    ctl: &Controller,
    who: &str,
    name: &str,
    version: Option<&str>,
    factorio_version: Option<&str>,
) -> Result<Value, ApiError> {
    let cfg = PortalConfig::of(ctl);
    let game = cfg.game(factorio_version)?;
    let name = name.trim();
    if name.is_empty() || name.len() > 100 || name.contains(['/', '\\']) {
        return Err(ApiError::bad_request(format!(
            "\"{name}\" is not a mod name"
        )));
    }
    let version =
        match version.map(str::trim).filter(|v| !v.is_empty()) {
            None => None,
            Some(v) => Some(Version::parse(v).ok_or_else(|| {
                ApiError::bad_request(format!("version \"{v}\" is not like 1.2.3"))
            })?),
        };
    if BUILTIN_MODS.contains(&name) {
        return Err(ApiError::bad_request(format!(
            "{name} ships with Factorio; it is never downloaded"
        )));
    }
    let request = name.to_string();
    ctl.hub.publish(progress(
        &request,
        json!({"stage": "resolving", "percent": 0}),
    ));
    let result = install_inner(ctl, &cfg, who, name, version, game).await;
    match &result {
        Ok(v) => ctl.hub.publish(progress(
            &request,
            json!({"stage": "done", "percent": 100, "installed": v["installed"]}),
        )),
        Err(e) => ctl.hub.publish(progress(
            &request,
            json!({"stage": "failed", "percent": 100, "error": e.message}),
        )),
    }
    result
}

async fn install_inner(
    ctl: &Controller,
    cfg: &PortalConfig,
    who: &str,
    name: &str,
    version: Option<Version>,
    game: Version,
) -> Result<Value, ApiError> {
    let plan = resolve(cfg, name, version, game).await?;
    let stored: Vec<store::mods::ModRecord> = ctl.store.read(store::mods::list).await?;
    let have = |file: &str| stored.iter().any(|m| m.name == file);
    let (present, todo): (Vec<&Planned>, Vec<&Planned>) =
        plan.iter().partition(|p| have(&p.release.file_name));
    if !todo.is_empty() && (cfg.username.is_empty() || cfg.token.is_empty()) {
        return Err(ApiError::new(
            400,
            "portal_login",
            "downloads from the mod portal need a factorio.com login: set mod_portal_username and mod_portal_token in the controller's settings",
        ));
    }
    for p in &todo {
        saves::validate_name(&p.release.file_name).map_err(|e| {
            ApiError::new(
                502,
                "portal_error",
                format!("the portal names a file badly: {e}"),
            )
        })?;
        if split_file_name(&p.release.file_name).map(|(n, _)| n) != Some(p.name.as_str()) {
            return Err(ApiError::new(
                502,
                "portal_error",
                format!(
                    "the portal's file {} does not look like {}_<version>.zip",
                    p.release.file_name, p.name
                ),
            ));
        }
    }
    let dir = ctl.mods_dir();
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| ApiError::new(500, "io", format!("creating {}: {e}", dir.display())))?;
    let mut staged: Vec<(PathBuf, &Planned, u64)> = Vec::new();
    let count = todo.len();
    let mut failure = None;
    for (i, p) in todo.iter().enumerate() {
        let staging = dir.join(format!(
            ".portal-{}-{}",
            std::process::id(),
            p.release.file_name
        ));
        ctl.hub.publish(progress(
            name,
            json!({"stage": "downloading", "mod": p.name, "file": p.release.file_name,
                   "index": i, "count": count, "percent": 0}),
        ));
        match download(ctl, cfg, name, p, i, count, &staging).await {
            Ok(size) => staged.push((staging, p, size)),
            Err(e) => {
                let _ = std::fs::remove_file(&staging);
                failure = Some(e);
                break;
            }
        }
    }
    if let Some(e) = failure {
        for (path, _, _) in &staged {
            let _ = std::fs::remove_file(path);
        }
        return Err(e);
    }
    let mut installed = Vec::new();
    for (staging, p, size) in staged {
        let file = p.release.file_name.clone();
        let target = dir.join(&file);
        let sha256 = saves::sha256_file(&staging)
            .map_err(|e| ApiError::new(500, "io", format!("reading {file}: {e}")))?;
        std::fs::rename(&staging, &target)
            .map_err(|e| ApiError::new(500, "io", format!("storing {file}: {e}")))?;
        let (w, f, s, v, by) = (
            who.to_string(),
            file.clone(),
            sha256.clone(),
            p.version.to_string(),
            p.needed_by.clone(),
        );
        let sha1 = p.release.sha1.clone();
        ctl.store
            .write(move |c| {
                let rec = store::mods::put(c, &w, &f, size as i64, &s)?;
                store::audit::record(
                    c,
                    &w,
                    "mod.install_from_portal",
                    &f,
                    &json!({ "version": v, "sha1": sha1, "needed_by": by }),
                )?;
                Ok(rec)
            })
            .await?;
        installed.push(json!({
            "name": p.name, "version": p.version.to_string(), "file": file,
            "size": size, "sha256": sha256, "needed_by": p.needed_by,
        }));
    }
    let already: Vec<Value> = present
        .iter()
        .map(|p| json!({"name": p.name, "version": p.version.to_string(), "file": p.release.file_name}))
        .collect();
    ctl.hub.publish(Event {
        name: "mods_changed",
        data: json!({ "installed": installed.len() }),
        permission: "core.mod.subscribe",
        to_hosts: false,
        instance_view: false,
    });
    Ok(json!({
        "mod": name,
        "factorio_version": format!("{}.{}", game.0, game.1),
        "installed": installed,
        "already_stored": already,
    }))
}

// ---------------------------------------------------------------------------------------------
// Update checks.

pub async fn updates(ctl: &Controller, factorio_version: Option<&str>) -> Result<Value, ApiError> {
    let cfg = PortalConfig::of(ctl);
    let game = cfg.game(factorio_version)?;
    let stored: Vec<store::mods::ModRecord> = ctl.store.read(store::mods::list).await?;
    // Newest stored version of each mod.
    let mut newest: BTreeMap<String, (Version, String)> = BTreeMap::new();
    let mut unnamed = Vec::new();
    for m in &stored {
        match split_file_name(&m.name) {
            Some((n, v)) => {
                let e = newest.entry(n.to_string()).or_insert((v, m.name.clone()));
                if v > e.0 {
                    *e = (v, m.name.clone());
                }
            }
            None => unnamed.push(m.name.clone()),
        }
    }
    let mut out = Vec::new();
    for (name, (installed, file)) in newest.into_iter().take(500) {
        let full = full_mod(&cfg, &name).await?;
        let latest = full.as_ref().and_then(|f| {
            f.releases
                .iter()
                .filter(|r| r.fits(game))
                .filter_map(|r| r.parsed_version().map(|v| (v, r)))
                .max_by_key(|(v, _)| *v)
        });
        out.push(json!({
            "name": name,
            "installed": installed.to_string(),
            "file": file,
            "on_portal": full.is_some(),
            "latest": latest.map(|(v, _)| v.to_string()),
            "latest_file": latest.map(|(_, r)| r.file_name.clone()),
            "update_available": latest.is_some_and(|(v, _)| v > installed),
        }));
    }
    Ok(json!({
        "factorio_version": format!("{}.{}", game.0, game.1),
        "mods": out,
        "not_checked": unnamed,
    }))
}

// ---------------------------------------------------------------------------------------------
// The requests.

/// The mod portal's requests, a family beside [`super::requests::ControlRequest`].
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "name", content = "data", rename_all = "snake_case")]
#[allow(clippy::enum_variant_names)]
pub enum PortalRequest {
    ModPortalSearch {
        #[serde(default, alias = "q")]
        query: Option<String>,
        #[serde(default)]
        factorio_version: Option<Value>,
        #[serde(default)]
        limit: Option<usize>,
    },
    ModPortalInstall {
        #[serde(alias = "mod")]
        name: String,
        #[serde(default)]
        version: Option<Value>,
        #[serde(default)]
        factorio_version: Option<Value>,
    },
    ModUpdates {
        #[serde(default)]
        factorio_version: Option<Value>,
    },
}

/// Query strings turn `2` into a number; versions are text.
fn text(v: &Option<Value>) -> Option<String> {
    match v {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    }
}

impl PortalRequest {
    pub fn from_link(name: &str, data: &Value) -> Option<Result<Self, ApiError>> {
        const NAMES: &[&str] = &["mod_portal_search", "mod_portal_install", "mod_updates"];
        if !NAMES.contains(&name) {
            return None;
        }
        let mut data = if data.is_null() {
            json!({})
        } else {
            data.clone()
        };
        // `?q=2` arrives as a number.
        for key in ["query", "q"] {
            if let Some(q) = data.get_mut(key)
                && q.is_number()
            {
                *q = json!(q.to_string());
            }
        }
        Some(
            serde_json::from_value(json!({ "name": name, "data": data }))
                .map_err(|e| ApiError::bad_request(format!("invalid \"{name}\" request: {e}"))),
        )
    }

    pub fn permissions(&self) -> Vec<&'static str> {
        match self {
            PortalRequest::ModPortalSearch { .. } => vec!["core.mod.search_portal"],
            PortalRequest::ModPortalInstall { .. } => {
                vec!["core.mod.download_from_portal", "core.mod.upload"]
            }
            PortalRequest::ModUpdates { .. } => vec!["core.mod.list", "core.mod.search_portal"],
        }
    }

    pub async fn run(self, ctl: &Controller, who: &str) -> Result<Value, ApiError> {
        match self {
            PortalRequest::ModPortalSearch {
                query,
                factorio_version,
                limit,
            } => {
                search(
                    ctl,
                    &super::files::decode(query.as_deref().unwrap_or("")),
                    text(&factorio_version).as_deref(),
                    limit,
                )
                .await
            }
            PortalRequest::ModPortalInstall {
                name,
                version,
                factorio_version,
            } => {
                install(
                    ctl,
                    who,
                    &name,
                    text(&version).as_deref(),
                    text(&factorio_version).as_deref(),
                )
                .await
            }
            PortalRequest::ModUpdates { factorio_version } => {
                updates(ctl, text(&factorio_version).as_deref()).await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependency_strings() {
        let d = Dependency::parse("base >= 2.0").unwrap();
        assert_eq!(d.kind, DepKind::Required);
        assert_eq!(d.name, "base");
        assert_eq!(d.constraint, Some((Op::Ge, Version(2, 0, 0))));
        let d = Dependency::parse("? Squeak Through >= 1.8.2").unwrap();
        assert_eq!(d.kind, DepKind::Optional);
        assert_eq!(d.name, "Squeak Through");
        assert_eq!(d.constraint, Some((Op::Ge, Version(1, 8, 2))));
        let d = Dependency::parse("(?) hidden").unwrap();
        assert_eq!(d.kind, DepKind::HiddenOptional);
        assert_eq!(d.constraint, None);
        let d = Dependency::parse("!bad-mod").unwrap();
        assert_eq!(d.kind, DepKind::Incompatible);
        assert_eq!(d.name, "bad-mod");
        let d = Dependency::parse("~ flib>0.14.1").unwrap();
        assert_eq!(d.kind, DepKind::RequiredNoOrder);
        assert_eq!(d.constraint, Some((Op::Gt, Version(0, 14, 1))));
        let d = Dependency::parse("x = 1.0.0").unwrap();
        assert_eq!(d.constraint, Some((Op::Eq, Version(1, 0, 0))));
        let d = Dependency::parse("x <= 1.0").unwrap();
        assert_eq!(d.constraint, Some((Op::Le, Version(1, 0, 0))));
        assert!(Dependency::parse("? >= 1.0").is_err());
        assert!(Dependency::parse("x >= one").is_err());
        assert!(Dependency::parse("x => 1.0").is_err());
    }

    #[test]
    fn versions_compare_numerically() {
        assert!(Version::parse("1.10.0").unwrap() > Version::parse("1.9.9").unwrap());
        assert_eq!(Version::parse("2.0"), Some(Version(2, 0, 0)));
        assert_eq!(Version::parse("1.2.3.4"), None);
        assert_eq!(Version::parse("1.x"), None);
        assert!(satisfies(
            Version(1, 2, 0),
            &Some((Op::Lt, Version(1, 3, 0)))
        ));
        assert_eq!(
            split_file_name("Squeak Through_1.8.2.zip"),
            Some(("Squeak Through", Version(1, 8, 2)))
        );
        assert_eq!(split_file_name("noversion.zip"), None);
    }
}
