//! An instance's mod pack on the host: asks the controller for the pack (which fetches what its
//! store lacks from the mod portal), copies each mod from the host's checksummed cache into the
//! instance's `mods/`, and adds the entries (with version and enabled flag) for `mod-list.json`.
//! The pack's `mod-settings.dat` is written beside them.

use super::transfer::Transfer;
use crate::saves;
use serde_json::{Value, json};
use std::path::Path;

fn decode_b64(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let s: Vec<u8> = s.bytes().filter(|b| *b != b'=').collect();
    let mut out = Vec::new();
    for chunk in s.chunks(4) {
        if chunk.len() == 1 {
            return None;
        }
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= val(*c)? << (18 - 6 * i);
        }
        out.push((n >> 16) as u8);
        if chunk.len() > 2 {
            out.push((n >> 8) as u8);
        }
        if chunk.len() > 3 {
            out.push(n as u8);
        }
    }
    Some(out)
}

/// Installs `pack` into `mod_dir`; returns the `mod-list.json` entries it adds.
pub async fn apply(
    transfer: &Transfer,
    cache: &Path,
    mod_dir: &Path,
    pack: &str,
) -> Result<Vec<Value>, String> {
    let path = format!("/api/v1/host/mod_packs/{}", encode(pack));
    let p = transfer
        .get_json(&path)
        .await
        .map_err(|e| format!("mod pack {pack}: {e}"))?;
    let mut entries = Vec::new();
    for m in p["mods"].as_array().into_iter().flatten() {
        let (Some(name), Some(file)) = (m["name"].as_str(), m["file"].as_str()) else {
            return Err(format!(
                "mod pack {pack}: the controller sent an entry without a file"
            ));
        };
        saves::validate_name(file).map_err(|e| format!("mod pack {pack}: {e}"))?;
        let cached = transfer.fetch_mod(file, cache).await?;
        let target = mod_dir.join(file);
        let tmp = saves::temp_path(&target);
        std::fs::copy(&cached, &tmp).map_err(|e| format!("copying mod {file}: {e}"))?;
        saves::commit(&tmp, &target).map_err(|e| format!("installing mod {file}: {e}"))?;
        entries.push(json!({
            "name": name,
            "enabled": m["enabled"].as_bool().unwrap_or(true),
            "version": m["version"],
        }));
    }
    let settings = mod_dir.join("mod-settings.dat");
    match p["settings_base64"].as_str() {
        Some(b64) => {
            let bytes = decode_b64(b64)
                .ok_or_else(|| format!("mod pack {pack}: its mod-settings.dat is not base64"))?;
            saves::write_atomic(&settings, &bytes)
                .map_err(|e| format!("writing mod-settings.dat: {e}"))?;
        }
        None => {
            let _ = std::fs::remove_file(&settings);
        }
    }
    Ok(entries)
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
