//! Mod packs: named sets of mods (name, version, enabled) with their mod settings
//! (`mod-settings.dat`, `research/factorio.md` §5.3), assigned to instances through their
//! `mod_pack` setting. Before a start the host asks for its pack (`GET
//! /api/v1/host/mod_packs/<name>`); mods the store lacks are fetched from the mod portal then,
//! so the host gets every file it needs from the controller.

use super::Controller;
use super::error::ApiError;
use super::portal::{self, Version};
use crate::store::{self, StoreError, audit};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Largest `mod-settings.dat` accepted.
const MAX_SETTINGS_BYTES: usize = 1 << 20;
const MAX_MODS: usize = 1000;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PackMod {
    pub name: String,
    /// A version (`1.2.3`); none: the newest in the store (or on the portal).
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Serialize)]
pub struct ModPack {
    pub name: String,
    pub description: String,
    pub factorio_version: String,
    pub mods: Vec<PackMod>,
    /// Size of the pack's `mod-settings.dat` (0: none).
    pub settings_size: usize,
    pub updated_at: i64,
}

fn ensure(c: &Connection) -> store::Result<()> {
    c.execute_batch(
        "CREATE TABLE IF NOT EXISTS mod_packs (
            name TEXT PRIMARY KEY,
            description TEXT NOT NULL DEFAULT '',
            factorio_version TEXT NOT NULL,
            mods TEXT NOT NULL,
            settings BLOB,
            updated_at INTEGER NOT NULL
        );",
    )?;
    Ok(())
}

fn row(r: &rusqlite::Row) -> rusqlite::Result<(ModPack, Option<Vec<u8>>)> {
    let mods: String = r.get(3)?;
    let settings: Option<Vec<u8>> = r.get(4)?;
    Ok((
        ModPack {
            name: r.get(0)?,
            description: r.get(1)?,
            factorio_version: r.get(2)?,
            mods: serde_json::from_str(&mods).unwrap_or_default(),
            settings_size: settings.as_ref().map_or(0, |s| s.len()),
            updated_at: r.get(5)?,
        },
        settings,
    ))
}

const COLUMNS: &str = "name, description, factorio_version, mods, settings, updated_at";

fn get(c: &Connection, name: &str) -> store::Result<(ModPack, Option<Vec<u8>>)> {
    ensure(c)?;
    c.query_row(
        &format!("SELECT {COLUMNS} FROM mod_packs WHERE name = ?1"),
        [name],
        row,
    )
    .optional()?
    .ok_or_else(|| StoreError::NotFound(format!("no mod pack named '{name}'")))
}

fn list(c: &Connection) -> store::Result<Vec<ModPack>> {
    ensure(c)?;
    let mut stmt = c.prepare(&format!("SELECT {COLUMNS} FROM mod_packs ORDER BY name"))?;
    let rows = stmt.query_map([], row)?;
    Ok(rows
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .map(|(p, _)| p)
        .collect())
}

fn check_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ' ' | '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "mod pack name \"{name}\": use 1–100 letters, digits, spaces, '-', '_' or '.'"
        )))
    }
}

fn check_mods(mods: &[PackMod]) -> Result<(), ApiError> {
    if mods.len() > MAX_MODS {
        return Err(ApiError::bad_request(format!(
            "a mod pack has at most {MAX_MODS} mods"
        )));
    }
    let mut seen = std::collections::HashSet::new();
    for m in mods {
        let valid_name = !m.name.is_empty()
            && m.name.len() <= 100
            && m.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, ' ' | '-' | '_' | '.'));
        if !valid_name {
            return Err(ApiError::bad_request(format!(
                "\"{}\" is not a mod name",
                m.name
            )));
        }
        if let Some(v) = &m.version
            && Version::parse(v).is_none()
        {
            return Err(ApiError::bad_request(format!(
                "mod {}: version \"{v}\" is not like 1.2.3",
                m.name
            )));
        }
        if !seen.insert(m.name.as_str()) {
            return Err(ApiError::bad_request(format!(
                "mod {} is listed twice",
                m.name
            )));
        }
    }
    Ok(())
}

fn check_version(v: &str) -> Result<(), ApiError> {
    match Version::parse(v) {
        Some(_) => Ok(()),
        None => Err(ApiError::bad_request(format!(
            "factorio_version \"{v}\" is not a version like 2.0"
        ))),
    }
}

/// `mod-settings.dat` from base64: a version header (4 × u16, 1 byte) and a property tree.
fn decode_settings(b64: &str) -> Result<Vec<u8>, ApiError> {
    let bytes = crate::saves::decode_base64(b64)
        .ok_or_else(|| ApiError::bad_request("settings_base64 is not base64"))?;
    // A save (or any zip) given instead: its mod-settings.dat, if it carries one.
    let bytes = if bytes.starts_with(b"PK\x03\x04") {
        settings_from_zip(&bytes)?
    } else {
        bytes
    };
    if bytes.len() > MAX_SETTINGS_BYTES {
        return Err(ApiError::new(
            413,
            "too_large",
            format!("mod-settings.dat is limited to {MAX_SETTINGS_BYTES} bytes"),
        ));
    }
    // Header, then the root: a dictionary (type 5).
    if bytes.len() < 11 || bytes[9] != 5 {
        return Err(ApiError::bad_request(
            "that is not a mod-settings.dat: it starts with a version and a dictionary",
        ));
    }
    Ok(bytes)
}

/// `mod-settings.dat` out of a zip (a save, or the mods folder zipped): the entry of that name
/// at its root or in one top-level folder. Factorio's own saves keep the startup settings
/// inside `level.dat` rather than as this file; such a save is refused saying so.
fn settings_from_zip(bytes: &[u8]) -> Result<Vec<u8>, ApiError> {
    use std::io::Read;
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(|e| {
        ApiError::bad_request(format!("the zip given as settings is not readable ({e})"))
    })?;
    let name = zip
        .file_names()
        .filter_map(|n| n.ok().map(|n| n.to_string()))
        .find(|n| {
            n == "mod-settings.dat"
                || n.split('/').collect::<Vec<_>>().as_slice().get(1..)
                    == Some(&["mod-settings.dat"][..])
        });
    let Some(name) = name else {
        return Err(ApiError::bad_request(
            "the zip has no mod-settings.dat: a Factorio save keeps its mod settings inside level.dat, not as a file clustorio can take out; upload the server's mods/mod-settings.dat instead",
        ));
    };
    let mut out = Vec::new();
    zip.by_name(&name)
        .map_err(|e| ApiError::bad_request(format!("reading {name} from the zip: {e}")))?
        .take(MAX_SETTINGS_BYTES as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| ApiError::bad_request(format!("reading {name} from the zip: {e}")))?;
    Ok(out)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "name", content = "data", rename_all = "snake_case")]
#[allow(clippy::enum_variant_names)]
pub enum PackRequest {
    ModPackList,
    ModPackGet {
        pack: String,
    },
    ModPackCreate {
        #[serde(alias = "pack")]
        name: String,
        #[serde(default)]
        description: Option<String>,
        #[serde(default)]
        factorio_version: Option<String>,
        #[serde(default)]
        mods: Vec<PackMod>,
        #[serde(default)]
        settings_base64: Option<String>,
    },
    ModPackUpdate {
        pack: String,
        #[serde(default)]
        description: Option<String>,
        #[serde(default)]
        factorio_version: Option<String>,
        #[serde(default)]
        mods: Option<Vec<PackMod>>,
        /// New `mod-settings.dat`; "" removes it.
        #[serde(default)]
        settings_base64: Option<String>,
    },
    ModPackDelete {
        pack: String,
    },
}

impl PackRequest {
    pub fn from_link(name: &str, data: &Value) -> Option<Result<Self, ApiError>> {
        const NAMES: &[&str] = &[
            "mod_pack_list",
            "mod_pack_get",
            "mod_pack_create",
            "mod_pack_update",
            "mod_pack_delete",
        ];
        if !NAMES.contains(&name) {
            return None;
        }
        let msg =
            json!({ "name": name, "data": if data.is_null() { json!({}) } else { data.clone() } });
        // Unit variants take no data.
        let msg = if name == "mod_pack_list" {
            json!({ "name": name })
        } else {
            msg
        };
        Some(
            serde_json::from_value(msg)
                .map_err(|e| ApiError::bad_request(format!("invalid \"{name}\" request: {e}"))),
        )
    }

    pub fn permissions(&self) -> Vec<&'static str> {
        match self {
            PackRequest::ModPackList => vec!["core.mod_pack.list"],
            PackRequest::ModPackGet { .. } => vec!["core.mod_pack.get"],
            PackRequest::ModPackCreate { .. } => vec!["core.mod_pack.create"],
            PackRequest::ModPackUpdate { .. } => vec!["core.mod_pack.update"],
            PackRequest::ModPackDelete { .. } => vec!["core.mod_pack.delete"],
        }
    }

    pub async fn run(self, ctl: &Controller, who: &str) -> Result<(u16, Value), ApiError> {
        let who = who.to_string();
        let to = |p: ModPack| serde_json::to_value(p).unwrap_or(Value::Null);
        match self {
            PackRequest::ModPackList => {
                let packs = ctl.store.write(list).await?;
                Ok((200, json!(packs)))
            }
            PackRequest::ModPackGet { pack } => {
                let (p, _) = ctl.store.write(move |c| get(c, &pack)).await?;
                Ok((200, to(p)))
            }
            PackRequest::ModPackCreate {
                name,
                description,
                factorio_version,
                mods,
                settings_base64,
            } => {
                check_name(&name)?;
                check_mods(&mods)?;
                let fv = factorio_version
                    .unwrap_or_else(|| portal::PortalConfig::of(ctl).factorio_version);
                check_version(&fv)?;
                let settings = match settings_base64.as_deref() {
                    Some(s) if !s.is_empty() => Some(decode_settings(s)?),
                    _ => None,
                };
                let text = serde_json::to_string(&mods).unwrap_or_else(|_| "[]".into());
                let p = ctl
                    .store
                    .write(move |c| {
                        ensure(c)?;
                        let taken: Option<String> = c
                            .query_row("SELECT name FROM mod_packs WHERE name = ?1", [&name], |r| {
                                r.get(0)
                            })
                            .optional()?;
                        if taken.is_some() {
                            return Err(StoreError::Conflict(format!(
                                "a mod pack named '{name}' exists already"
                            )));
                        }
                        c.execute(
                            "INSERT INTO mod_packs (name, description, factorio_version, mods, settings, updated_at)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                            params![name, description.unwrap_or_default(), fv, text, settings, store::now_ms()],
                        )?;
                        audit::record(c, &who, "mod_pack.create", &name, &json!({}))?;
                        get(c, &name)
                    })
                    .await?;
                Ok((201, to(p.0)))
            }
            PackRequest::ModPackUpdate {
                pack,
                description,
                factorio_version,
                mods,
                settings_base64,
            } => {
                if let Some(m) = &mods {
                    check_mods(m)?;
                }
                if let Some(v) = &factorio_version {
                    check_version(v)?;
                }
                let settings = match settings_base64.as_deref() {
                    None => None,
                    Some("") => Some(None),
                    Some(s) => Some(Some(decode_settings(s)?)),
                };
                let p = ctl
                    .store
                    .write(move |c| {
                        let (mut p, mut blob) = get(c, &pack)?;
                        if let Some(d) = description {
                            p.description = d;
                        }
                        if let Some(v) = factorio_version {
                            p.factorio_version = v;
                        }
                        if let Some(m) = mods {
                            p.mods = m;
                        }
                        if let Some(s) = settings {
                            blob = s;
                        }
                        let text = serde_json::to_string(&p.mods).unwrap_or_else(|_| "[]".into());
                        c.execute(
                            "UPDATE mod_packs SET description = ?2, factorio_version = ?3, mods = ?4,
                             settings = ?5, updated_at = ?6 WHERE name = ?1",
                            params![pack, p.description, p.factorio_version, text, blob, store::now_ms()],
                        )?;
                        audit::record(c, &who, "mod_pack.update", &pack, &json!({}))?;
                        get(c, &pack)
                    })
                    .await?;
                Ok((200, to(p.0)))
            }
            PackRequest::ModPackDelete { pack } => {
                ctl.store
                    .write(move |c| {
                        get(c, &pack)?;
                        c.execute("DELETE FROM mod_packs WHERE name = ?1", [&pack])?;
                        audit::record(c, &who, "mod_pack.delete", &pack, &json!({}))?;
                        Ok(())
                    })
                    .await?;
                Ok((200, json!({ "deleted": true })))
            }
        }
    }
}

/// What a host needs for `pack`: the file of each mod (fetched from the portal first when the
/// store has none that fits), enabled flags, and the settings file.
pub async fn for_host(ctl: &Controller, host_id: i64, pack: &str) -> Result<Value, ApiError> {
    let name = pack.to_string();
    let (p, settings) = ctl.store.write(move |c| get(c, &name)).await?;
    let who = format!("host:{host_id}");
    let mut out = Vec::new();
    for m in &p.mods {
        let file = match stored_file(ctl, &m.name, m.version.as_deref()).await? {
            Some(f) => f,
            None => {
                portal::install(
                    ctl,
                    &who,
                    &m.name,
                    m.version.as_deref(),
                    Some(&p.factorio_version),
                )
                .await
                .map_err(|e| ApiError {
                    message: format!("mod pack {}: {}: {}", p.name, m.name, e.message),
                    ..e
                })?;
                stored_file(ctl, &m.name, m.version.as_deref())
                    .await?
                    .ok_or_else(|| {
                        ApiError::new(
                            500,
                            "internal",
                            format!("mod {} was installed but is not in the store", m.name),
                        )
                    })?
            }
        };
        let version = portal::split_file_name(&file)
            .map(|(_, v)| v.to_string())
            .unwrap_or_default();
        out.push(json!({ "name": m.name, "version": version, "enabled": m.enabled, "file": file }));
    }
    Ok(json!({
        "name": p.name,
        "factorio_version": p.factorio_version,
        "mods": out,
        "settings_base64": settings.map(|s| crate::saves::encode_base64(&s)),
    }))
}

/// The store's file for mod `name` at `version`, or its newest when no version is named.
async fn stored_file(
    ctl: &Controller,
    name: &str,
    version: Option<&str>,
) -> Result<Option<String>, ApiError> {
    let want = version.and_then(Version::parse);
    let stored = ctl.store.read(store::mods::list).await?;
    Ok(stored
        .iter()
        .filter_map(|m| {
            let (n, v) = portal::split_file_name(&m.name)?;
            (n == name && want.is_none_or(|w| w == v)).then_some((v, m.name.clone()))
        })
        .max_by_key(|(v, _)| *v)
        .map(|(_, f)| f))
}
