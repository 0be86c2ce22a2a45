//! Which Factorio an install is (research/factorio.md §1.4, §12.1): the first `Version:` line of
//! `data/changelog.txt` (what CLIO reads), else `data/base/info.json` (FSM), else running
//! `factorio --version` and taking its first line only (the second line differs between releases).

use std::fmt;
use std::path::Path;
use std::time::Duration;

use super::cli::Install;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FactorioVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl FactorioVersion {
    pub fn parse(s: &str) -> Option<FactorioVersion> {
        let mut it = s.trim().split('.');
        let v = FactorioVersion {
            major: it.next()?.parse().ok()?,
            minor: it.next()?.parse().ok()?,
            patch: it.next()?.trim().parse().ok()?,
        };
        it.next().is_none().then_some(v)
    }

    /// Graceful stops exit 0 only from 1.1.93 on (before: 1), §1.5.
    pub fn graceful_stop_exits_zero(&self) -> bool {
        (self.major, self.minor, self.patch) >= (1, 1, 93)
    }
}

impl fmt::Display for FactorioVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VersionError {
    #[error(
        "no Factorio version found under {0} (no data/changelog.txt or data/base/info.json): is this a Factorio install?"
    )]
    NotFound(String),
    #[error("running {0} --version failed: {1}")]
    Probe(String, String),
}

/// First `Version: X.Y.Z` line of a changelog.
pub fn from_changelog(text: &str) -> Option<FactorioVersion> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Version:"))
        .and_then(FactorioVersion::parse)
}

/// `--version` output: `Version: 2.0.77 (build 84539, linux64, headless)` on the first line.
/// Returns the version and the build number.
pub fn from_version_output(out: &str) -> Option<(FactorioVersion, Option<u32>)> {
    let first = out.lines().next()?.trim().strip_prefix("Version:")?.trim();
    let (ver, rest) = first.split_once(' ').unwrap_or((first, ""));
    let v = FactorioVersion::parse(ver)?;
    let build = rest
        .trim_start_matches('(')
        .split(',')
        .next()
        .and_then(|b| b.trim().strip_prefix("build "))
        .and_then(|n| n.parse().ok());
    Some((v, build))
}

/// Detect the version from the install's files (no process started).
pub fn detect(install: &Install) -> Result<FactorioVersion, VersionError> {
    let data = install.data_dir();
    if let Some(v) = std::fs::read_to_string(data.join("changelog.txt"))
        .ok()
        .and_then(|t| from_changelog(&t))
    {
        return Ok(v);
    }
    std::fs::read_to_string(data.join("base").join("info.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|j| {
            j.get("version")
                .and_then(|v| v.as_str())
                .and_then(FactorioVersion::parse)
        })
        .ok_or_else(|| VersionError::NotFound(install.root.display().to_string()))
}

/// Run `factorio --version` (exit 0 expected) and parse its first line.
pub async fn probe(
    executable: &Path,
    timeout: Duration,
) -> Result<(FactorioVersion, Option<u32>), VersionError> {
    let name = executable.display().to_string();
    let run = tokio::process::Command::new(executable)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| VersionError::Probe(name.clone(), "timed out".into()))?
        .map_err(|e| VersionError::Probe(name.clone(), e.to_string()))?;
    if !out.status.success() {
        return Err(VersionError::Probe(
            name,
            format!("exit status {}", out.status),
        ));
    }
    from_version_output(&String::from_utf8_lossy(&out.stdout))
        .ok_or_else(|| VersionError::Probe(name, "unrecognised output".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_output_of_real_builds() {
        let out = "Version: 2.0.77 (build 84539, linux64, headless)\nVersion: 64\nMap input version: 1.0.0-0\nMap output version: 2.0.77-0\n";
        assert_eq!(
            from_version_output(out),
            Some((
                FactorioVersion {
                    major: 2,
                    minor: 0,
                    patch: 77
                },
                Some(84539)
            ))
        );
        // 1.x prints `Binary version:`; only the first line matters.
        let old = "Version: 1.1.76 (build 60350, linux64, headless)\nBinary version: 64\n";
        assert_eq!(
            from_version_output(old).map(|v| v.0.to_string()),
            Some("1.1.76".into())
        );
        assert_eq!(from_version_output("garbage"), None);
    }

    #[test]
    fn changelog_first_version_line() {
        let t = "-----\nVersion: 2.0.77\nDate: x\n-----\nVersion: 2.0.76\n";
        assert_eq!(
            from_changelog(t).map(|v| v.to_string()),
            Some("2.0.77".into())
        );
    }

    #[test]
    fn exit_code_rule() {
        assert!(
            !FactorioVersion::parse("1.1.76")
                .unwrap()
                .graceful_stop_exits_zero()
        );
        assert!(
            FactorioVersion::parse("2.0.77")
                .unwrap()
                .graceful_stop_exits_zero()
        );
    }
}
