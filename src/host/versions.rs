//! The Factorio versions a host has, and installing another one.
//!
//! Layout (README "Factorio versions"): the *Factorio directory* is `factorio_directory`, or
//! `factorio/` in the host's working directory. It may itself be an install (today's single
//! install, what the egg's installer lays out) and it holds one install per version beside
//! that, in `<Factorio directory>/<X.Y.Z>/` (the untarred headless tarball's `factorio/`
//! folder, renamed). With `factorio_directory` unset and no `factorio/`, the working directory
//! itself may be the install, as before. Where two installs are the same version, the
//! versioned folder wins.
//!
//! An install downloads `<factorio_download_url>/<version>/headless/linux64` (factorio.com
//! redirects it to the tarball), checks its SHA-256 against `factorio_sha256_url` when that
//! list names the tarball, extracts it with `tar`, runs `factorio --version` and only then
//! renames it into place: a game running from an older copy of the same version keeps its
//! files (the old folder is moved aside and removed once nothing runs from it).

use super::factorio::Install;
use super::factorio::version::{self, FactorioVersion};
use futures_util::StreamExt;
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

/// Prefix of the work folders of installs in progress (removed at host start).
const WORK_PREFIX: &str = ".install-";
/// Prefix of replaced installs waiting for their last game to stop.
const REPLACED_PREFIX: &str = ".replaced-";
/// A release tarball is about 70 MB; anything far larger is not one.
const MAX_TARBALL_BYTES: u64 = 2 << 30;
/// How long `factorio --version` may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// One installed Factorio.
#[derive(Clone, Debug, Serialize)]
pub struct Installed {
    pub version: String,
    pub path: String,
    /// `versioned`: in `<dir>/<version>/`; `direct`: the Factorio directory itself.
    pub layout: &'static str,
    #[serde(skip)]
    pub parsed: FactorioVersion,
    #[serde(skip)]
    pub install: Install,
}

/// Where this host keeps Factorio.
#[derive(Clone, Debug)]
pub struct Versions {
    /// The Factorio directory: direct install and/or `<version>/` folders.
    pub root: PathBuf,
    /// Also look at the working directory itself (no `factorio_directory`, as before).
    fallback: Option<PathBuf>,
}

/// What an install failed on: a code for the API and a sentence for people.
#[derive(Debug, Clone)]
pub struct InstallError {
    pub code: &'static str,
    pub message: String,
}

fn fail(code: &'static str, message: impl Into<String>) -> InstallError {
    InstallError {
        code,
        message: message.into(),
    }
}

/// `X.Y.Z`, or `stable`/`latest` (what factorio.com's download URL also takes).
pub fn valid_request(v: &str) -> bool {
    v == "stable" || v == "latest" || FactorioVersion::parse(v).is_some_and(|p| p.to_string() == v)
}

impl Versions {
    pub fn new(dir: &Path, factorio_directory: &str) -> Versions {
        if factorio_directory.is_empty() {
            Versions {
                root: dir.join("factorio"),
                fallback: Some(dir.to_path_buf()),
            }
        } else {
            Versions {
                root: dir.join(factorio_directory),
                fallback: None,
            }
        }
    }

    /// Every install, newest version first.
    pub fn list(&self) -> Vec<Installed> {
        let mut found: Vec<Installed> = Vec::new();
        if let Ok(entries) = std::fs::read_dir(&self.root) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let Some(parsed) = FactorioVersion::parse(&name).filter(|p| p.to_string() == name)
                else {
                    continue;
                };
                let install = Install::new(entry.path());
                if install.executable().is_file() {
                    found.push(Installed {
                        version: name,
                        path: install.root.display().to_string(),
                        layout: "versioned",
                        parsed,
                        install,
                    });
                }
            }
        }
        let direct = std::iter::once(self.root.clone())
            .chain(self.fallback.clone())
            .map(Install::new)
            .find(|i| i.executable().is_file());
        if let Some(install) = direct
            && let Ok(parsed) = version::detect(&install)
            && !found.iter().any(|f| f.parsed == parsed)
        {
            found.push(Installed {
                version: parsed.to_string(),
                path: install.root.display().to_string(),
                layout: "direct",
                parsed,
                install,
            });
        }
        found.sort_by_key(|i| std::cmp::Reverse(i.parsed));
        found
    }

    /// What the host reports: `[{version, path, layout}]`, newest first.
    pub fn report(&self) -> Value {
        json!(self.list())
    }

    /// The install an instance asking for `wanted` (`latest`, empty, or `X.Y.Z`) runs.
    pub fn resolve(&self, wanted: &str, host: &str) -> Result<Install, String> {
        let all = self.list();
        let wanted = wanted.trim();
        if all.is_empty() {
            return Err(format!(
                "no Factorio install on host '{host}': install one with `clustorio ctl host install-factorio {host} VERSION`, or put Factorio into {}",
                self.root.display()
            ));
        }
        if wanted.is_empty() || wanted == "latest" {
            return Ok(all[0].install.clone());
        }
        all.iter()
            .find(|i| i.version == wanted)
            .map(|i| i.install.clone())
            .ok_or_else(|| {
                let have: Vec<&str> = all.iter().map(|i| i.version.as_str()).collect();
                format!(
                    "Factorio {wanted} is not installed on host '{host}' (installed: {}); install it with `clustorio ctl host install-factorio {host} {wanted}` or change the instance's factorio_version",
                    have.join(", ")
                )
            })
    }

    /// Removes what interrupted installs left, and the replaced copies of versions no game
    /// runs from any more (`in_use`: the install folders of running games; `None`: unknown, so
    /// replaced copies stay). `interrupted`: also the work folders of installs (only at host
    /// start, when none runs).
    pub fn sweep(&self, in_use: Option<&[PathBuf]>, interrupted: bool) {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            let leftover = if name.starts_with(WORK_PREFIX) {
                interrupted
            } else if let Some(rest) = name.strip_prefix(REPLACED_PREFIX) {
                let version = rest.split('-').next().unwrap_or_default();
                in_use.is_some_and(|u| !u.iter().any(|p| p == &self.root.join(version)))
            } else {
                false
            };
            if leftover && let Err(e) = std::fs::remove_dir_all(&path) {
                tracing::warn!(path = %path.display(), error = %e, "could not remove a left-over Factorio folder");
            }
        }
    }

    /// Removes the install of `version` in `<root>/<version>/` (moved aside first, so the
    /// listing never shows half a folder). `in_use`: the install folders of running games.
    pub fn remove(&self, version: &str, in_use: &[PathBuf]) -> Result<Value, InstallError> {
        let Some(found) = self.list().into_iter().find(|i| i.version == version) else {
            return Err(fail(
                "not_found",
                format!("Factorio {version} is not installed here"),
            ));
        };
        if found.layout != "versioned" {
            return Err(fail(
                "conflict",
                format!(
                    "Factorio {version} is the install in {} itself (what the egg's installer or the image put there), not a folder of its own; it stays",
                    found.path
                ),
            ));
        }
        if in_use.iter().any(|p| p == &found.install.root) {
            return Err(fail(
                "conflict",
                format!("a running game uses Factorio {version}; stop it first"),
            ));
        }
        let aside = self.root.join(format!(
            "{REPLACED_PREFIX}{version}-removed-{}",
            crate::store::now_ms()
        ));
        std::fs::rename(&found.install.root, &aside)
            .map_err(|e| fail("io", format!("removing {}: {e}", found.path)))?;
        if let Err(e) = std::fs::remove_dir_all(&aside) {
            // The next sweep takes what is left; the version is gone from the list already.
            tracing::warn!(path = %aside.display(), error = %e, "could not remove all of a removed Factorio folder");
        }
        Ok(json!({ "version": version, "removed": found.path }))
    }

    /// Downloads, checks and installs `wanted` into `<root>/<version>/`. `progress` gets each
    /// stage (`downloading` with bytes, `verifying`, `extracting`, `checking`). Whatever fails
    /// leaves nothing behind.
    pub async fn install(
        &self,
        wanted: &str,
        urls: &Urls,
        in_use: &[PathBuf],
        progress: &(dyn Fn(Value) + Send + Sync),
    ) -> Result<Value, InstallError> {
        if !valid_request(wanted) {
            return Err(fail(
                "bad_request",
                format!(
                    "\"{wanted}\" is not a Factorio version: give one like 2.0.77, or stable or latest"
                ),
            ));
        }
        std::fs::create_dir_all(&self.root).map_err(|e| {
            fail(
                "io",
                format!(
                    "creating the Factorio directory {}: {e}",
                    self.root.display()
                ),
            )
        })?;
        let work = self.root.join(format!(
            "{WORK_PREFIX}{wanted}-{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&work)
            .map_err(|e| fail("io", format!("creating {}: {e}", work.display())))?;
        let result = self.install_in(wanted, urls, &work, in_use, progress).await;
        if let Err(e) = std::fs::remove_dir_all(&work)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %work.display(), error = %e, "could not remove the install's work folder");
        }
        result
    }

    async fn install_in(
        &self,
        wanted: &str,
        urls: &Urls,
        work: &Path,
        in_use: &[PathBuf],
        progress: &(dyn Fn(Value) + Send + Sync),
    ) -> Result<Value, InstallError> {
        let base = urls.download.trim_end_matches('/');
        let url = format!("{base}/{wanted}/headless/linux64");
        let archive = work.join("factorio.tar");
        let (tarball, bytes, sha) = download(&url, wanted, &archive, progress).await?;

        progress(json!({ "stage": "verifying", "bytes": bytes, "total": bytes }));
        let checksum = match published_sum(&urls.sha256, &tarball).await {
            Some(expected) if expected.eq_ignore_ascii_case(&sha) => "verified",
            Some(expected) => {
                return Err(fail(
                    "checksum_mismatch",
                    format!(
                        "checksum mismatch for {tarball}: the published SHA-256 is {expected}, the download's is {sha}; nothing was installed"
                    ),
                ));
            }
            None => "not published",
        };

        progress(json!({ "stage": "extracting", "bytes": bytes, "total": bytes }));
        let out = work.join("x");
        std::fs::create_dir_all(&out)
            .map_err(|e| fail("io", format!("creating {}: {e}", out.display())))?;
        let tar = tokio::process::Command::new("tar")
            .arg("-xf")
            .arg(&archive)
            .arg("-C")
            .arg(&out)
            .arg("--no-same-owner")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| fail("io", format!("running tar to extract {tarball}: {e}")))?;
        if !tar.status.success() {
            let why = String::from_utf8_lossy(&tar.stderr);
            return Err(fail(
                "corrupt_archive",
                format!(
                    "{tarball} is not a valid Factorio archive (tar: {}); nothing was installed",
                    why.lines().next().unwrap_or("failed").trim()
                ),
            ));
        }
        let unpacked = Install::new(out.join("factorio"));
        if !unpacked.executable().is_file() {
            return Err(fail(
                "corrupt_archive",
                format!(
                    "{tarball} has no factorio/bin/x64/factorio: not a Factorio headless release; nothing was installed"
                ),
            ));
        }

        progress(json!({ "stage": "checking", "bytes": bytes, "total": bytes }));
        let (got, build) = version::probe(&unpacked.executable(), PROBE_TIMEOUT)
            .await
            .map_err(|e| {
                fail(
                    "corrupt_archive",
                    format!("the downloaded Factorio does not run ({e}); nothing was installed"),
                )
            })?;
        if wanted != "stable" && wanted != "latest" && got.to_string() != wanted {
            return Err(fail(
                "version_mismatch",
                format!(
                    "{tarball} is Factorio {got}, not {wanted} as asked; nothing was installed"
                ),
            ));
        }
        let version = got.to_string();
        let target = self.root.join(&version);
        let replaced = target.exists();
        if replaced {
            // The running games keep the files they opened; the next start uses the new ones.
            let aside = self.root.join(format!(
                "{REPLACED_PREFIX}{version}-{}",
                work.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            ));
            std::fs::rename(&target, &aside).map_err(|e| {
                fail(
                    "io",
                    format!("moving the old {} aside: {e}", target.display()),
                )
            })?;
            if let Err(e) = std::fs::rename(&unpacked.root, &target) {
                let _ = std::fs::rename(&aside, &target);
                return Err(fail(
                    "io",
                    format!("moving Factorio {version} into {}: {e}", target.display()),
                ));
            }
            if !in_use.iter().any(|p| p == &target) {
                let _ = std::fs::remove_dir_all(&aside);
            }
        } else {
            std::fs::rename(&unpacked.root, &target).map_err(|e| {
                fail(
                    "io",
                    format!("moving Factorio {version} into {}: {e}", target.display()),
                )
            })?;
        }
        Ok(json!({
            "version": version,
            "build": build,
            "path": target.display().to_string(),
            "tarball": tarball,
            "bytes": bytes,
            "sha256": sha,
            "checksum": checksum,
            "replaced": replaced,
        }))
    }
}

/// Where releases come from (host config `factorio_download_url`, `factorio_sha256_url`).
#[derive(Clone, Debug)]
pub struct Urls {
    pub download: String,
    pub sha256: String,
}

/// Streams the release to `to`; returns the tarball's name, its size and SHA-256.
async fn download(
    url: &str,
    wanted: &str,
    to: &Path,
    progress: &(dyn Fn(Value) + Send + Sync),
) -> Result<(String, u64, String), InstallError> {
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(20))
        .build()
        .map_err(|e| fail("io", format!("creating an HTTP client: {e}")))?;
    let resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| fail("download_failed", format!("downloading {url}: {e}")))?;
    let status = resp.status();
    if status == reqwest::StatusCode::NOT_FOUND {
        return Err(fail(
            "not_found",
            format!("Factorio {wanted} does not exist: {url} answered 404 Not Found"),
        ));
    }
    if !status.is_success() {
        return Err(fail(
            "download_failed",
            format!("downloading Factorio {wanted} from {url}: HTTP {status}"),
        ));
    }
    let tarball = resp
        .url()
        .path_segments()
        .and_then(|mut s| s.next_back().map(String::from))
        .filter(|s| !s.is_empty() && s != "linux64")
        .unwrap_or_else(|| format!("factorio_headless_x64_{wanted}.tar.xz"));
    let total = resp.content_length();
    if total.is_some_and(|t| t > MAX_TARBALL_BYTES) {
        return Err(fail(
            "too_large",
            format!("{tarball} is larger than {MAX_TARBALL_BYTES} bytes: not a Factorio release"),
        ));
    }
    let mut file = tokio::fs::File::create(to)
        .await
        .map_err(|e| fail("io", format!("creating {}: {e}", to.display())))?;
    let mut hasher = Sha256::new();
    let mut got = 0u64;
    let mut last = Instant::now();
    progress(json!({ "stage": "downloading", "bytes": 0, "total": total, "tarball": tarball }));
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            fail(
                "download_failed",
                format!("the download of {tarball} broke off after {got} bytes: {e}"),
            )
        })?;
        got += chunk.len() as u64;
        if got > MAX_TARBALL_BYTES {
            return Err(fail(
                "too_large",
                format!(
                    "{tarball} is larger than {MAX_TARBALL_BYTES} bytes: not a Factorio release"
                ),
            ));
        }
        hasher.update(&chunk);
        file.write_all(&chunk).await.map_err(|e| {
            fail(
                if crate::controller::error::is_disk_full(&e) {
                    "disk_full"
                } else {
                    "io"
                },
                format!("writing {}: {e}", to.display()),
            )
        })?;
        if last.elapsed() >= Duration::from_millis(200) {
            last = Instant::now();
            progress(
                json!({ "stage": "downloading", "bytes": got, "total": total, "tarball": tarball }),
            );
        }
    }
    file.flush()
        .await
        .map_err(|e| fail("io", format!("writing {}: {e}", to.display())))?;
    if let Some(t) = total
        && got != t
    {
        return Err(fail(
            "download_failed",
            format!("the download of {tarball} ended after {got} of {t} bytes"),
        ));
    }
    progress(
        json!({ "stage": "downloading", "bytes": got, "total": total.unwrap_or(got), "tarball": tarball }),
    );
    Ok((tarball, got, hex::encode(hasher.finalize())))
}

/// The SHA-256 the release list gives for `tarball` (`<hex>  <file>` lines), if it lists it.
async fn published_sum(url: &str, tarball: &str) -> Option<String> {
    if url.trim().is_empty() {
        return None;
    }
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(20))
        .timeout(Duration::from_secs(60))
        .build()
        .ok()?;
    let resp = client.get(url).send().await.ok()?;
    if !resp.status().is_success() {
        tracing::warn!(url, status = %resp.status(), "no SHA-256 list; the install is not checked");
        return None;
    }
    let text = resp.text().await.ok()?;
    sum_for(&text, tarball)
}

fn sum_for(list: &str, tarball: &str) -> Option<String> {
    list.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        let sum = it.next()?;
        let file = it.next()?.trim_start_matches('*');
        (file == tarball).then(|| sum.to_string())
    })
}

impl super::Host {
    /// The install folders running games were started from.
    pub(super) fn factorio_in_use(&self) -> Vec<PathBuf> {
        let roots = self
            .factorio_roots
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default();
        self.instances()
            .iter()
            .filter(|i| i.server().is_some())
            .filter_map(|i| roots.get(&i.id).cloned())
            .collect()
    }

    /// The install an instance starts with (its `factorio_version`), remembered while it runs.
    pub(super) fn factorio_for(
        &self,
        inst: &super::instance::Instance,
        wanted: &str,
    ) -> Result<Install, String> {
        self.versions.sweep(Some(&self.factorio_in_use()), false);
        let install = self.versions.resolve(wanted, &self.cfg.host_name)?;
        if let Ok(mut roots) = self.factorio_roots.lock() {
            roots.insert(inst.id, install.root.clone());
        }
        Ok(install)
    }

    /// `factorio_remove {version}`: deletes an install no running game uses and no instance
    /// of this host asks for by version; the new list goes out as `factorio_versions`.
    pub(super) async fn remove_factorio(
        self: &std::sync::Arc<Self>,
        data: &Value,
    ) -> Result<Value, crate::link::ErrorBody> {
        use crate::link::ErrorBody;
        let version = data["version"].as_str().unwrap_or_default().trim();
        if FactorioVersion::parse(version).is_none_or(|p| p.to_string() != version) {
            return Err(ErrorBody::new(
                "bad_request",
                format!("\"{version}\" is not a Factorio version: give one like 2.0.77"),
            ));
        }
        if !self.versions.list().iter().any(|i| i.version == version) {
            return Err(ErrorBody::new(
                "not_found",
                format!(
                    "Factorio {version} is not installed on host '{}'",
                    self.cfg.host_name
                ),
            ));
        }
        let pinned: Vec<String> = self
            .instances()
            .iter()
            .filter(|i| self.settings(i)["factorio_version"].as_str() == Some(version))
            .map(|i| i.name.clone())
            .collect();
        if !pinned.is_empty() {
            return Err(ErrorBody::new(
                "conflict",
                format!(
                    "instance(s) {} ask for Factorio {version} (setting factorio_version); set them to another version or latest first",
                    pinned.join(", ")
                ),
            ));
        }
        if self
            .factorio_installing
            .lock()
            .is_ok_and(|busy| busy.contains(version))
        {
            return Err(ErrorBody::new(
                "conflict",
                format!("Factorio {version} is being installed; wait for it to finish"),
            ));
        }
        let done = self
            .versions
            .remove(version, &self.factorio_in_use())
            .map_err(|e| ErrorBody::new(e.code, e.message))?;
        tracing::info!(version, "Factorio removed");
        self.link.send_event(
            "factorio_versions",
            json!({ "versions": self.versions.report() }),
        );
        Ok(done)
    }

    /// `factorio_install {version}`: download, check, extract, verify; progress as
    /// `factorio_install_progress` events, the new list as `factorio_versions`.
    pub(super) async fn install_factorio(
        self: &std::sync::Arc<Self>,
        data: &Value,
    ) -> Result<Value, crate::link::ErrorBody> {
        use crate::link::ErrorBody;
        let wanted = data["version"]
            .as_str()
            .unwrap_or_default()
            .trim()
            .to_string();
        if !valid_request(&wanted) {
            return Err(ErrorBody::new(
                "bad_request",
                format!(
                    "\"{wanted}\" is not a Factorio version: give one like 2.0.77, or stable or latest"
                ),
            ));
        }
        {
            let mut busy = self
                .factorio_installing
                .lock()
                .map_err(|_| ErrorBody::new("internal", "install state unavailable"))?;
            if !busy.insert(wanted.clone()) {
                return Err(ErrorBody::new(
                    "conflict",
                    format!(
                        "Factorio {wanted} is already being installed on host '{}'",
                        self.cfg.host_name
                    ),
                ));
            }
        }
        // Read now: a URL changed in the host's settings applies to the next install.
        let cfg = crate::config::HostConfig::load(&self.dir).unwrap_or_else(|_| self.cfg.clone());
        let urls = Urls {
            download: cfg.factorio_download_url,
            sha256: cfg.factorio_sha256_url,
        };
        let link = self.link.clone();
        let v = wanted.clone();
        let progress = move |mut p: Value| {
            p["version"] = json!(v);
            link.send_event("factorio_install_progress", p);
        };
        tracing::info!(version = %wanted, "installing Factorio");
        let result = self
            .versions
            .install(&wanted, &urls, &self.factorio_in_use(), &progress)
            .await;
        if let Ok(mut busy) = self.factorio_installing.lock() {
            busy.remove(&wanted);
        }
        match result {
            Ok(done) => {
                tracing::info!(version = %done["version"], checksum = %done["checksum"], "Factorio installed");
                let mut p = done.clone();
                p["stage"] = json!("done");
                progress(p);
                self.link.send_event(
                    "factorio_versions",
                    json!({ "versions": self.versions.report() }),
                );
                Ok(done)
            }
            Err(e) => {
                tracing::warn!(version = %wanted, error = %e.message, "Factorio install failed");
                progress(json!({ "stage": "failed", "code": e.code, "message": e.message }));
                Err(ErrorBody::new(e.code, e.message))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_sum_lists() {
        assert!(valid_request("2.0.77"));
        assert!(valid_request("stable"));
        assert!(!valid_request("2.0"));
        assert!(!valid_request("2.0.077"));
        assert!(!valid_request("../x"));
        let list =
            "abc  factorio_headless_x64_2.0.77.tar.xz\ndef *factorio_headless_x64_2.0.76.tar.xz\n";
        assert_eq!(
            sum_for(list, "factorio_headless_x64_2.0.76.tar.xz").as_deref(),
            Some("def")
        );
        assert_eq!(sum_for(list, "factorio_headless_x64_2.0.1.tar.xz"), None);
    }
}
