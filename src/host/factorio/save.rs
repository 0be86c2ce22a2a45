//! Creating a new map with `factorio --create` (research/factorio.md §1.5, §12.3): success is
//! exit status 0 **and** the file exists (`.zip` is appended by Factorio when missing).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use super::cli::{self, CreateArgs, Install};

#[derive(Clone, Debug)]
pub struct CreateSpec {
    pub install: Install,
    /// The instance's write dir (gets `config.ini`; Factorio locks it while creating).
    pub write_dir: PathBuf,
    /// Absolute path of the new save.
    pub save: PathBuf,
    pub args: CreateArgs,
    pub env: Vec<(OsString, OsString)>,
    pub timeout: Duration,
}

impl CreateSpec {
    pub fn new(
        install: Install,
        write_dir: impl Into<PathBuf>,
        save: impl Into<PathBuf>,
    ) -> CreateSpec {
        CreateSpec {
            install,
            write_dir: write_dir.into(),
            save: save.into(),
            args: CreateArgs::default(),
            env: Vec::new(),
            timeout: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error(
        "save path {0} must be absolute (Factorio resolves relative paths against its working directory)"
    )]
    RelativePath(String),
    #[error("cannot prepare {path}: {message}")]
    Prepare { path: String, message: String },
    #[error("cannot run {exe}: {message}")]
    Spawn { exe: String, message: String },
    #[error("creating {save} timed out after {after:?}")]
    Timeout { save: String, after: Duration },
    #[error("creating {save} failed ({status}); last output:\n{output}")]
    Failed {
        save: String,
        status: String,
        output: String,
    },
    #[error("factorio --create exited 0 but {0} does not exist")]
    Missing(String),
}

/// The file Factorio writes for `--create <path>`: `.zip` appended when absent.
pub fn created_file(save: &Path) -> PathBuf {
    if save.extension().is_some_and(|e| e == "zip") {
        save.to_path_buf()
    } else {
        let mut s = save.as_os_str().to_owned();
        s.push(".zip");
        PathBuf::from(s)
    }
}

/// Run `--create`; returns the path of the new save and the process output.
pub async fn create_save(spec: &CreateSpec) -> Result<(PathBuf, String), CreateError> {
    if !spec.save.is_absolute() {
        return Err(CreateError::RelativePath(spec.save.display().to_string()));
    }
    let prepare = |p: &Path, e: std::io::Error| CreateError::Prepare {
        path: p.display().to_string(),
        message: e.to_string(),
    };
    let config = cli::write_config(&spec.install, &spec.write_dir)
        .map_err(|e| prepare(&spec.write_dir, e))?;
    if let Some(dir) = spec.save.parent() {
        std::fs::create_dir_all(dir).map_err(|e| prepare(dir, e))?;
    }
    let exe = spec.install.executable();
    let child = tokio::process::Command::new(&exe)
        .args(cli::create_args(&config, &spec.save, &spec.args))
        .current_dir(&spec.write_dir)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .output();
    let save = spec.save.display().to_string();
    let out = tokio::time::timeout(spec.timeout, child)
        .await
        .map_err(|_| CreateError::Timeout {
            save: save.clone(),
            after: spec.timeout,
        })?
        .map_err(|e| CreateError::Spawn {
            exe: exe.display().to_string(),
            message: e.to_string(),
        })?;
    let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
    output.push_str(&String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        let tail: Vec<&str> = output.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(CreateError::Failed {
            save,
            status: out.status.to_string(),
            output: tail.join("\n"),
        });
    }
    let file = created_file(&spec.save);
    if !file.is_file() {
        return Err(CreateError::Missing(file.display().to_string()));
    }
    Ok((file, output))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zip_is_appended_like_factorio_does() {
        assert_eq!(
            created_file(Path::new("/s/world")),
            PathBuf::from("/s/world.zip")
        );
        assert_eq!(
            created_file(Path::new("/s/world.zip")),
            PathBuf::from("/s/world.zip")
        );
    }
}
