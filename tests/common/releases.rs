//! A local stand-in of factorio.com's release downloads, for tests: factorio-sim packed as
//! headless release tarballs. `GET /get-download/<version>/headless/linux64` redirects to
//! `/releases/factorio_headless_x64_<version>.tar.xz` (unknown versions: 404, as factorio.com),
//! and `GET /sha256sums` lists `<sha256>  <tarball>` lines. Never the internet.
#![allow(dead_code)]

use super::bin;
use sha2::Digest;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use warp::Filter;

/// How a release is served.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    /// A good tarball, listed with its true checksum.
    Good,
    /// A good tarball, listed with a wrong checksum.
    WrongChecksum,
    /// Half a tarball (a broken archive), listed with the checksum of what is served.
    Corrupt,
    /// A good tarball that is not listed in the checksums.
    Unlisted,
}

struct Release {
    body: Vec<u8>,
    listed: Option<String>,
}

#[derive(Default)]
struct State {
    releases: BTreeMap<String, Release>,
    chunk_delay: Duration,
    /// Tarball downloads served, in order.
    downloads: Vec<String>,
}

pub struct ReleaseServer {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    state: Arc<Mutex<State>>,
}

pub fn tarball_name(version: &str) -> String {
    format!("factorio_headless_x64_{version}.tar.xz")
}

/// A factorio-sim install of `version` packed like a release (`factorio/…` inside, xz).
pub fn sim_tarball(work: &Path, version: &str) -> Vec<u8> {
    let tree = work.join(format!("tree-{version}"));
    let st = Command::new(bin("factorio-sim"))
        .arg("install")
        .arg(tree.join("factorio"))
        .args(["--version", version])
        .status()
        .expect("factorio-sim install");
    assert!(st.success(), "factorio-sim install {version}");
    // The install may hard-link the sim binary, which other tests link too (its ctime can
    // change under tar's feet): pack a private copy.
    let packed = work.join(format!("packed-{version}"));
    std::fs::create_dir_all(&packed).unwrap();
    let st = Command::new("cp")
        .arg("-rL")
        .arg(tree.join("factorio"))
        .arg(&packed)
        .status()
        .expect("cp");
    assert!(st.success());
    let tarball = work.join(tarball_name(version));
    let st = Command::new("tar")
        .env("XZ_OPT", "-0")
        .arg("-cJf")
        .arg(&tarball)
        .arg("-C")
        .arg(&packed)
        .arg("factorio")
        .status()
        .expect("tar");
    assert!(st.success(), "packing {version}");
    std::fs::read(&tarball).unwrap()
}

fn sha256(b: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(b))
}

impl ReleaseServer {
    /// Serves nothing yet; add releases with [`ReleaseServer::add`].
    pub async fn start() -> ReleaseServer {
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        let redirect =
            warp::path!("get-download" / String / "headless" / "linux64").map(move |v: String| {
                let known = st.lock().unwrap().releases.contains_key(&v);
                let resp = warp::http::Response::builder();
                if known {
                    resp.status(302)
                        .header("location", format!("/releases/{}", tarball_name(&v)))
                        .body(Vec::new())
                        .unwrap()
                } else {
                    resp.status(404).body(b"Not Found".to_vec()).unwrap()
                }
            });
        let st = state.clone();
        let releases = warp::path!("releases" / String).map(move |file: String| {
            use warp::Reply;
            let (body, delay) = {
                let mut s = st.lock().unwrap();
                let found = s
                    .releases
                    .iter()
                    .find(|(v, _)| tarball_name(v) == file)
                    .map(|(_, r)| r.body.clone());
                if found.is_some() {
                    s.downloads.push(file.clone());
                }
                (found, s.chunk_delay)
            };
            let Some(body) = body else {
                return warp::reply::with_status("no such file", warp::http::StatusCode::NOT_FOUND)
                    .into_response();
            };
            let len = body.len();
            let chunks: Vec<Vec<u8>> = body.chunks(64 * 1024).map(|c| c.to_vec()).collect();
            let stream = futures_util::stream::iter(chunks).then(move |c| async move {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                Ok::<_, std::io::Error>(bytes::Bytes::from(c))
            });
            let mut resp = warp::reply::stream(stream).into_response();
            let h = resp.headers_mut();
            h.insert("content-type", "application/x-xz".parse().unwrap());
            h.insert("content-length", len.to_string().parse().unwrap());
            resp
        });
        let st = state.clone();
        let sums = warp::path!("sha256sums").map(move || {
            let s = st.lock().unwrap();
            s.releases
                .iter()
                .filter_map(|(v, r)| {
                    r.listed
                        .as_ref()
                        .map(|sum| format!("{sum}  {}\n", tarball_name(v)))
                })
                .collect::<String>()
        });
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(
            warp::serve(redirect.or(releases).or(sums))
                .incoming(listener)
                .run(),
        );
        ReleaseServer {
            url: format!("http://127.0.0.1:{port}"),
            state,
        }
    }

    /// Serves `version` built from factorio-sim (packed in `work`), as `kind` says.
    pub fn add(&self, work: &Path, version: &str, kind: Kind) {
        let good = sim_tarball(work, version);
        let (body, listed) = match kind {
            Kind::Good => (good.clone(), Some(sha256(&good))),
            Kind::WrongChecksum => (good, Some("0".repeat(64))),
            Kind::Corrupt => {
                let half = good[..good.len() / 2].to_vec();
                let sum = sha256(&half);
                (half, Some(sum))
            }
            Kind::Unlisted => (good, None),
        };
        self.state
            .lock()
            .unwrap()
            .releases
            .insert(version.to_string(), Release { body, listed });
    }

    /// Slows each 64 KiB chunk of a download, so progress shows.
    pub fn set_chunk_delay(&self, d: Duration) {
        self.state.lock().unwrap().chunk_delay = d;
    }

    /// Tarballs downloaded so far.
    pub fn downloads(&self) -> Vec<String> {
        self.state.lock().unwrap().downloads.clone()
    }

    /// The host config (`config-slave.json` keys) that points a host here.
    pub fn host_env(&self) -> Vec<(String, String)> {
        vec![
            (
                "FACTORIO_DOWNLOAD_URL".into(),
                format!("{}/get-download", self.url),
            ),
            (
                "FACTORIO_SHA256_URL".into(),
                format!("{}/sha256sums", self.url),
            ),
        ]
    }
}

use futures_util::StreamExt;
