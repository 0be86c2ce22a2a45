//! An instance's mod pack on the host: asks the controller for the pack (which fetches what its
//! store lacks from the mod portal), copies each mod from the host's checksummed cache into the
//! instance's `mods/`, and adds the entries (with version and enabled flag) for `mod-list.json`.
//! The pack's `mod-settings.dat` is written beside them.

use super::transfer::Transfer;
use crate::saves;
use serde_json::{Value, json};
use std::path::Path;

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
            let bytes = saves::decode_base64(b64)
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
