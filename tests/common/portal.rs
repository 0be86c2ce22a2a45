//! A local stand-in of the Factorio mod portal's API (`research/factorio.md` §7.4), for tests:
//! `GET /api/mods?page_size=max&version=…` (the listing), `GET /api/mods/<name>/full` and
//! `GET /download/<name>/<version>?username=…&token=…` (the zip). Never the internet.
#![allow(dead_code)]

use serde_json::{Value, json};
use sha1::{Digest, Sha1};
use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const USERNAME: &str = "engineer";
pub const TOKEN: &str = "portal-token-123";

/// A mod zip as the portal serves it: `<name>_<version>/info.json` (+ `data.lua`), padded with
/// `pad` bytes of stored data (big downloads show progress).
pub fn mod_zip(name: &str, version: &str, factorio: &str, deps: &[&str], pad: usize) -> Vec<u8> {
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut zip = zip::ZipWriter::new(&mut buf);
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        let root = format!("{name}_{version}");
        zip.start_file(format!("{root}/info.json"), opts).unwrap();
        let info = json!({
            "name": name, "version": version, "title": name, "author": "test",
            "factorio_version": factorio, "dependencies": deps,
        });
        zip.write_all(info.to_string().as_bytes()).unwrap();
        zip.start_file(format!("{root}/data.lua"), opts).unwrap();
        zip.write_all(b"-- test mod\n").unwrap();
        if pad > 0 {
            zip.start_file(format!("{root}/graphics/pad.bin"), opts)
                .unwrap();
            let mut x: u32 = 12345;
            let bytes: Vec<u8> = (0..pad)
                .map(|_| {
                    x = x.wrapping_mul(1103515245).wrapping_add(12345);
                    (x >> 16) as u8
                })
                .collect();
            zip.write_all(&bytes).unwrap();
        }
        zip.finish().unwrap();
    }
    buf.into_inner()
}

pub fn sha1_hex(bytes: &[u8]) -> String {
    hex::encode(Sha1::digest(bytes))
}

#[derive(Clone)]
pub struct Release {
    pub version: String,
    pub factorio_version: String,
    pub dependencies: Vec<String>,
    /// What the download serves.
    pub zip: Vec<u8>,
    /// What the portal lists as its SHA-1 (normally that of `zip`).
    pub sha1: String,
}

impl Release {
    pub fn new(name: &str, version: &str, factorio: &str, deps: &[&str]) -> Release {
        Self::padded(name, version, factorio, deps, 0)
    }

    pub fn padded(name: &str, version: &str, factorio: &str, deps: &[&str], pad: usize) -> Release {
        let zip = mod_zip(name, version, factorio, deps, pad);
        Release {
            version: version.into(),
            factorio_version: factorio.into(),
            dependencies: deps.iter().map(|s| s.to_string()).collect(),
            sha1: sha1_hex(&zip),
            zip,
        }
    }

    /// The portal lists one checksum, the download is another file.
    pub fn with_wrong_sha1(mut self) -> Release {
        self.sha1 = sha1_hex(b"something else");
        self
    }

    /// The download is not a zip (and the portal lists its checksum, so only the zip check
    /// can tell).
    pub fn corrupt(mut self) -> Release {
        self.zip = b"PK\x03\x04 this is not really a zip".to_vec();
        self.sha1 = sha1_hex(&self.zip);
        self
    }
}

#[derive(Default)]
pub struct State {
    pub mods: Vec<(String, String, Vec<Release>)>,
    /// Listing requests served (the search cache is seen through this).
    pub listings: AtomicUsize,
    pub downloads: Mutex<Vec<String>>,
    /// Pause between 64 KiB chunks of a download.
    pub chunk_delay: Mutex<Duration>,
}

pub struct Portal {
    pub url: String,
    pub state: Arc<Mutex<State>>,
}

impl Portal {
    pub fn add(&self, name: &str, title: &str, releases: Vec<Release>) {
        let mut s = self.state.lock().unwrap();
        s.mods.retain(|(n, _, _)| n != name);
        s.mods.push((name.into(), title.into(), releases));
    }

    pub fn listings(&self) -> usize {
        self.state.lock().unwrap().listings.load(Ordering::SeqCst)
    }

    pub fn downloads(&self) -> Vec<String> {
        self.state.lock().unwrap().downloads.lock().unwrap().clone()
    }

    pub fn set_chunk_delay(&self, d: Duration) {
        *self.state.lock().unwrap().chunk_delay.lock().unwrap() = d;
    }
}

fn release_json(name: &str, r: &Release) -> Value {
    json!({
        "download_url": format!("/download/{name}/{}", r.version),
        "file_name": format!("{name}_{}.zip", r.version),
        "info_json": {"factorio_version": r.factorio_version, "dependencies": r.dependencies},
        "released_at": "2026-01-01T00:00:00.000000Z",
        "sha1": r.sha1,
        "version": r.version,
    })
}

fn query_map(q: &str) -> HashMap<String, String> {
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(x) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(x);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Starts the stand-in on loopback.
pub async fn start() -> Portal {
    use futures_util::StreamExt;
    use warp::{Filter, Reply};
    let state = Arc::new(Mutex::new(State::default()));
    let query = warp::query::raw().or(warp::any().map(String::new)).unify();

    let s = state.clone();
    let list = warp::path!("api" / "mods")
        .and(warp::get())
        .and(query)
        .map(move |q: String| {
            let st = s.lock().unwrap();
            st.listings.fetch_add(1, Ordering::SeqCst);
            let version = query_map(&q).get("version").cloned().unwrap_or_default();
            let results: Vec<Value> = st
                .mods
                .iter()
                .filter_map(|(name, title, releases)| {
                    let latest = releases
                        .iter()
                        .rfind(|r| version.is_empty() || r.factorio_version == version)?;
                    Some(json!({
                        "name": name, "title": title, "owner": "tester",
                        "summary": format!("{title}: a test mod"),
                        "downloads_count": 1000 * releases.len(),
                        "latest_release": release_json(name, latest),
                    }))
                })
                .collect();
            warp::reply::json(&json!({
                "pagination": {"count": results.len(), "page": 1, "page_count": 1},
                "results": results,
            }))
        });

    let s = state.clone();
    let full = warp::path!("api" / "mods" / String / "full")
        .and(warp::get())
        .map(move |name: String| {
            let name = decode(&name);
            let st = s.lock().unwrap();
            match st.mods.iter().find(|(n, _, _)| *n == name) {
                Some((n, title, releases)) => warp::reply::with_status(
                    warp::reply::json(&json!({
                        "name": n, "owner": "tester", "title": title,
                        "summary": "a test mod", "downloads_count": 1000,
                        "releases": releases.iter().map(|r| release_json(n, r)).collect::<Vec<_>>(),
                    })),
                    warp::http::StatusCode::OK,
                ),
                None => warp::reply::with_status(
                    warp::reply::json(&json!({"message": "Mod not found"})),
                    warp::http::StatusCode::NOT_FOUND,
                ),
            }
        });

    let s = state.clone();
    let download = warp::path!("download" / String / String)
        .and(warp::get())
        .and(query)
        .map(move |name: String, version: String, q: String| {
            let name = decode(&name);
            let params = query_map(&q);
            let st = s.lock().unwrap();
            if params.get("username").map(|u| decode(u)) != Some(USERNAME.into())
                || params.get("token").map(|t| decode(t)) != Some(TOKEN.into())
            {
                return warp::reply::with_status(
                    "login required",
                    warp::http::StatusCode::FORBIDDEN,
                )
                .into_response();
            }
            let Some(r) = st
                .mods
                .iter()
                .find(|(n, _, _)| *n == name)
                .and_then(|(_, _, rs)| rs.iter().find(|r| r.version == version))
            else {
                return warp::reply::with_status(
                    "no such release",
                    warp::http::StatusCode::NOT_FOUND,
                )
                .into_response();
            };
            st.downloads
                .lock()
                .unwrap()
                .push(format!("{name}_{version}.zip"));
            let delay = *st.chunk_delay.lock().unwrap();
            let chunks: Vec<Vec<u8>> = r.zip.chunks(64 * 1024).map(|c| c.to_vec()).collect();
            let len = r.zip.len();
            let stream = futures_util::stream::iter(chunks).then(move |c| async move {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                Ok::<_, std::io::Error>(bytes::Bytes::from(c))
            });
            let mut resp = warp::reply::stream(stream).into_response();
            let h = resp.headers_mut();
            h.insert("content-type", "application/zip".parse().unwrap());
            h.insert("content-length", len.to_string().parse().unwrap());
            resp
        });

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(
        warp::serve(full.or(list).or(download))
            .incoming(listener)
            .run(),
    );
    Portal {
        url: format!("http://127.0.0.1:{port}"),
        state,
    }
}

/// `config-master.json` pointing the controller at `portal` with the test login.
pub fn write_controller_config(dir: &std::path::Path, portal: &Portal) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("config-master.json"),
        json!({"mod_portal_url": portal.url, "mod_portal_username": USERNAME, "mod_portal_token": TOKEN})
            .to_string(),
    )
    .unwrap();
}
