//! Save files, shared by the controller and hosts: safe names, the zip check, listings and
//! atomic writes (tmp + fsync + rename + fsync of the directory).

use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Header carrying a file's SHA-256 (hex) on downloads from the controller.
pub const SHA256_HEADER: &str = "x-sha256";
/// Header naming the save a `…/latest` download returns.
pub const SAVE_NAME_HEADER: &str = "x-save-name";

#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    #[error(
        "invalid file name '{0}': use letters, digits, spaces, '.', '_' or '-', ending in .zip"
    )]
    BadName(String),
    #[error("'{name}' is not a Factorio save: {reason}")]
    NotASave { name: String, reason: String },
    /// Another kind of file that is not what it must be (e.g. a scenario zip without `control.lua`).
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Base64 (standard alphabet) for binary files the JSON API carries, e.g. `mod-settings.dat`.
pub fn encode_base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Reads [`encode_base64`]'s text, forgiving what people paste: whitespace and line breaks,
/// missing padding, the URL-safe alphabet. `None` if it is not base64.
pub fn decode_base64(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    let cleaned: String = text
        .chars()
        .filter(|c| !c.is_ascii_whitespace() && *c != '=')
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            c => c,
        })
        .collect();
    let lenient = GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(true);
    GeneralPurpose::new(&base64::alphabet::STANDARD, lenient)
        .decode(cleaned)
        .ok()
}

/// A save or mod file name: no directories, no `..`, ends in `.zip`.
pub fn validate_name(name: &str) -> Result<(), SaveError> {
    let ok = name.len() <= 200
        && name.ends_with(".zip")
        && name.len() > 4
        && !name.starts_with('.')
        && !name.ends_with(".tmp.zip")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ' ' | '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(SaveError::BadName(name.to_string()))
    }
}

/// A Factorio save is a zip with one top-level directory holding `level.dat*`
/// (research/factorio.md §5.5).
pub fn check_save_zip(path: &Path, name: &str) -> Result<(), SaveError> {
    let not = |reason: String| SaveError::NotASave {
        name: name.to_string(),
        reason,
    };
    let file = std::fs::File::open(path)?;
    let zip = zip::ZipArchive::new(file).map_err(|e| not(format!("not a readable zip ({e})")))?;
    let names: Vec<String> = zip
        .file_names()
        .filter_map(|n| n.ok().map(|n| n.to_string()))
        .collect();
    let has_level = names.iter().any(|n| {
        n.split_once('/')
            .is_some_and(|(_, rest)| rest.starts_with("level.dat") && !rest.contains('/'))
    });
    if has_level {
        Ok(())
    } else {
        Err(not("it has no level.dat in a top-level folder".into()))
    }
}

/// Same check as [`check_save_zip`], for a zip that must hold a mod (`info.json`).
pub fn check_mod_zip(path: &Path, name: &str) -> Result<(), SaveError> {
    let file = std::fs::File::open(path)?;
    let zip = zip::ZipArchive::new(file).map_err(|e| SaveError::NotASave {
        name: name.to_string(),
        reason: format!("not a readable zip ({e})"),
    })?;
    if zip
        .file_names()
        .any(|n| n.is_ok_and(|n| n.ends_with("/info.json")))
    {
        Ok(())
    } else {
        Err(SaveError::NotASave {
            name: name.to_string(),
            reason: "a mod zip needs <mod>/info.json".into(),
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SaveInfo {
    pub name: String,
    pub size: u64,
    pub modified_ms: i64,
}

/// Saves in `dir`, newest first; half-written `.tmp.zip` files are not saves.
pub fn list(dir: &Path) -> std::io::Result<Vec<SaveInfo>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().to_string();
        if !name.ends_with(".zip") || name.ends_with(".tmp.zip") {
            continue;
        }
        let meta = entry.metadata()?;
        if !meta.is_file() {
            continue;
        }
        let modified_ms = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        out.push(SaveInfo {
            name,
            size: meta.len(),
            modified_ms,
        });
    }
    out.sort_by(|a, b| b.modified_ms.cmp(&a.modified_ms).then(a.name.cmp(&b.name)));
    Ok(out)
}

/// A temporary path beside `target` for an atomic write.
pub fn temp_path(target: &Path) -> PathBuf {
    let mut name = target
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(format!(".{}.partial", std::process::id()));
    target.with_file_name(name)
}

/// Moves a fully written `tmp` over `target`, syncing file and directory so the rename survives
/// a crash.
pub fn commit(tmp: &Path, target: &Path) -> std::io::Result<()> {
    std::fs::File::open(tmp)?.sync_all()?;
    std::fs::rename(tmp, target)?;
    if let Some(dir) = target.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Writes `bytes` to `target` atomically, readable by the owner only (these are config files:
/// `config-slave.json` holds the host token, `server-settings.json` the game password).
pub fn write_atomic(target: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let tmp = temp_path(target);
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        // An older temp file keeps its mode through `open`; set it.
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        f.write_all(bytes)?;
    }
    commit(&tmp, target)
}

/// SHA-256 of a file, hex.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    let mut f = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = std::io::Read::read(&mut f, &mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_escape_their_directory() {
        for bad in [
            "../x.zip",
            "a/b.zip",
            "x",
            ".hidden.zip",
            "x.tmp.zip",
            "..",
            "a\\b.zip",
            ".zip",
        ] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
        for good in ["world.zip", "My Save 2.zip", "_autosave1.zip"] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn a_zip_without_level_dat_is_not_a_save() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.zip");
        std::fs::write(&path, b"not a zip").unwrap();
        assert!(check_save_zip(&path, "x.zip").is_err());
        let mut w = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
        w.start_file("x/readme.txt", zip::write::SimpleFileOptions::default())
            .unwrap();
        w.finish().unwrap();
        assert!(check_save_zip(&path, "x.zip").is_err());
        let mut w = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
        w.start_file("x/level.dat0", zip::write::SimpleFileOptions::default())
            .unwrap();
        w.finish().unwrap();
        assert!(check_save_zip(&path, "x.zip").is_ok());
    }

    #[test]
    fn base64_round_trips_and_forgives_pasting() {
        for b in [
            &b""[..],
            b"a",
            b"ab",
            b"abc",
            b"abcd",
            &[0, 255, 7, 9, 200, 251],
        ] {
            assert_eq!(decode_base64(&encode_base64(b)).as_deref(), Some(b));
        }
        assert_eq!(decode_base64("aGVs\nbG8=").as_deref(), Some(&b"hello"[..]));
        assert_eq!(decode_base64("aGVsbG8").as_deref(), Some(&b"hello"[..]));
        assert_eq!(
            decode_base64("-_8").as_deref(),
            decode_base64("+/8").as_deref()
        );
        assert!(decode_base64("a").is_none());
        assert!(decode_base64("!!!!").is_none());
    }
}
