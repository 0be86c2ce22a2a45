//! Files between a host and the controller go over HTTP streams, never the link: saves up
//! (backups, downloads) and down (uploads, restores), and mods down into a checksummed cache.

use crate::link::client::Link;
use crate::saves;
use futures_util::StreamExt;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;

use crate::saves::{SAVE_NAME_HEADER, SHA256_HEADER};

pub struct Transfer {
    client: reqwest::Client,
    base: String,
    link: Link,
}

impl Transfer {
    pub fn new(base: &str, link: Link) -> Self {
        Transfer {
            client: reqwest::Client::new(),
            base: base.trim_end_matches('/').to_string(),
            link,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Streams a save to the controller; `purpose` is `backup` or `download`.
    pub async fn upload_save(
        &self,
        instance_id: i64,
        path: &Path,
        name: &str,
        purpose: &str,
    ) -> Result<Value, String> {
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| format!("opening {}: {e}", path.display()))?;
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
        let resp = self
            .client
            .put(self.url(&format!(
                "/api/v1/host/saves/{instance_id}/{name}?purpose={purpose}"
            )))
            .bearer_auth(self.link.token())
            .body(body)
            .send()
            .await
            .map_err(|e| format!("uploading {name} to the controller: {e}"))?;
        let status = resp.status();
        let value: Value = resp.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            Ok(value)
        } else {
            Err(format!(
                "the controller refused {name}: {}",
                value["error"]["message"]
            ))
        }
    }

    /// Downloads `path` into `dir`; the file name comes from `name` or the save-name header.
    /// Returns None on 404. The content is checked against the SHA-256 header when present.
    async fn download(
        &self,
        path: &str,
        dir: &Path,
        name: Option<&str>,
    ) -> Result<Option<PathBuf>, String> {
        let resp = self
            .client
            .get(self.url(path))
            .bearer_auth(self.link.token())
            .send()
            .await
            .map_err(|e| format!("downloading from the controller: {e}"))?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(format!(
                "the controller answered {} for {path}",
                resp.status()
            ));
        }
        let header = |h: &str| {
            resp.headers()
                .get(h)
                .and_then(|v| v.to_str().ok())
                .map(String::from)
        };
        let expected = header(SHA256_HEADER);
        let name = match name {
            Some(n) => n.to_string(),
            None => header(SAVE_NAME_HEADER).ok_or("the controller did not name the file")?,
        };
        saves::validate_name(&name).map_err(|e| e.to_string())?;
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| e.to_string())?;
        let target = dir.join(&name);
        let tmp = saves::temp_path(&target);
        let mut file = tokio::fs::File::create(&tmp)
            .await
            .map_err(|e| e.to_string())?;
        let mut hasher = Sha256::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| format!("download of {name} broke off: {e}"))?;
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(|e| e.to_string())?;
        }
        file.flush().await.map_err(|e| e.to_string())?;
        drop(file);
        let got = hex::encode(hasher.finalize());
        if let Some(expected) = expected
            && expected != got
        {
            let _ = std::fs::remove_file(&tmp);
            return Err(format!("{name} arrived damaged (checksum mismatch)"));
        }
        saves::commit(&tmp, &target).map_err(|e| e.to_string())?;
        Ok(Some(target))
    }

    /// The controller's newest backup of an instance, into `saves_dir`; None if it has none.
    pub async fn restore_latest_backup(
        &self,
        instance_id: i64,
        saves_dir: &Path,
    ) -> Result<Option<PathBuf>, String> {
        self.download(
            &format!("/api/v1/host/saves/{instance_id}/latest"),
            saves_dir,
            None,
        )
        .await
    }

    /// A save the controller holds for this instance, stored as `target` in `saves_dir`.
    pub async fn fetch_save_as(
        &self,
        instance_id: i64,
        name: &str,
        saves_dir: &Path,
        target: &str,
    ) -> Result<PathBuf, String> {
        self.download(
            &format!("/api/v1/host/saves/{instance_id}/{name}"),
            saves_dir,
            Some(target),
        )
        .await?
        .ok_or_else(|| format!("the controller has no upload named {name}"))
    }

    /// A scenario zip the controller holds for this instance, stored as `target` in `dir`.
    pub async fn fetch_scenario_as(
        &self,
        instance_id: i64,
        name: &str,
        dir: &Path,
        target: &str,
    ) -> Result<PathBuf, String> {
        self.download(
            &format!("/api/v1/host/scenarios/{instance_id}/{name}"),
            dir,
            Some(target),
        )
        .await?
        .ok_or_else(|| format!("the controller has no scenario upload named {name}"))
    }

    /// A JSON document from the controller's host routes (`/api/v1/host/…`).
    pub async fn get_json(&self, path: &str) -> Result<Value, String> {
        let resp = self
            .client
            .get(self.url(path))
            .bearer_auth(self.link.token())
            .send()
            .await
            .map_err(|e| format!("asking the controller for {path}: {e}"))?;
        let status = resp.status();
        let value: Value = resp.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            Ok(value)
        } else {
            Err(value["error"]["message"]
                .as_str()
                .unwrap_or("the controller refused")
                .to_string())
        }
    }

    /// A mod from the controller's store, through the host's cache (`<cache>/<sha256>/<file>`).
    pub async fn fetch_mod(&self, file: &str, cache: &Path) -> Result<PathBuf, String> {
        let meta: Value = self
            .client
            .get(self.url(&format!("/api/v1/host/mods/{file}?meta=1")))
            .bearer_auth(self.link.token())
            .send()
            .await
            .map_err(|e| format!("asking the controller for mod {file}: {e}"))?
            .json()
            .await
            .map_err(|e| format!("asking the controller for mod {file}: {e}"))?;
        let sha = meta["sha256"].as_str().ok_or_else(|| {
            format!("the controller has no mod {file}: upload it first (PUT /api/v1/mods/{file})")
        })?;
        let dir = cache.join(sha);
        let cached = dir.join(file);
        if cached.exists() && saves::sha256_file(&cached).is_ok_and(|s| s == sha) {
            return Ok(cached);
        }
        self.download(&format!("/api/v1/host/mods/{file}"), &dir, Some(file))
            .await?
            .ok_or_else(|| format!("the controller has no mod {file}"))
    }
}
