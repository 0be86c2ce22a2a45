//! The web UI: the static files under `web/`, embedded into the binary at build time and served
//! at `/` (DESIGN §2).
//!
//! Every file gets a strong ETag (its SHA-256) and `Cache-Control: no-cache`, so browsers
//! revalidate each load with a cheap 304 instead of running stale code after an upgrade (the
//! file names carry no content hash; there is no build step to add one). Text files are gzipped
//! once, on first use, when the client accepts it and it saves space. Every response carries a
//! strict Content-Security-Policy: scripts, styles and connections only from this origin, no
//! inline code. The pages use relative URLs only, so the UI also works behind a reverse proxy
//! under a sub-path.
//!
//! Release builds carry the files inside the binary. Debug builds read them from `web/` when
//! first served (rust-embed's development mode), so editing the UI needs only a controller
//! restart, not a rebuild.

use bytes::Bytes;
use std::collections::HashMap;
use std::io::Write;
use std::sync::OnceLock;
use warp::http::{HeaderValue, Response, StatusCode, header};
use warp::{Filter, Rejection};

#[derive(rust_embed::Embed)]
#[folder = "web/"]
struct Files;

/// One embedded file, ready to serve.
struct Asset {
    body: Bytes,
    gzip: Option<Bytes>,
    etag: String,
    mime: &'static str,
}

/// The file served for `/`.
const INDEX: &str = "index.html";

/// Text files smaller than this are not worth compressing.
const GZIP_MIN_BYTES: usize = 512;

fn mime(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("json") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn gzip(data: &[u8]) -> Option<Bytes> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(data).ok()?;
    let out = enc.finish().ok()?;
    (out.len() < data.len()).then(|| Bytes::from(out))
}

/// All embedded files, loaded and compressed once.
fn assets() -> &'static HashMap<String, Asset> {
    static ASSETS: OnceLock<HashMap<String, Asset>> = OnceLock::new();
    ASSETS.get_or_init(|| {
        Files::iter()
            .filter_map(|path| {
                let file = Files::get(&path)?;
                let mime = mime(&path);
                let body = Bytes::from(file.data.into_owned());
                let compressible = mime.starts_with("text/") || mime == "image/svg+xml";
                let gzip = (compressible && body.len() >= GZIP_MIN_BYTES)
                    .then(|| gzip(&body))
                    .flatten();
                let etag = hex::encode(&file.metadata.sha256_hash()[..16]);
                Some((
                    path.to_string(),
                    Asset {
                        body,
                        gzip,
                        etag,
                        mime,
                    },
                ))
            })
            .collect()
    })
}

/// The policy for a response to a request that named `host` in its Host header. Browsers differ
/// on whether `'self'` covers `ws:`/`wss:` to the same host, so the socket's origins are named.
fn content_security_policy(host: Option<&str>) -> String {
    let socket = host
        .filter(|h| {
            !h.is_empty()
                && h.len() <= 255
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        })
        .map(|h| format!(" ws://{h} wss://{h}"))
        .unwrap_or_default();
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
         connect-src 'self'{socket}; font-src 'self'; manifest-src 'self'; base-uri 'self'; \
         form-action 'none'; frame-ancestors 'none'"
    )
}

/// True if an `If-None-Match` header names `etag` (or is `*`).
fn matches_etag(header: &str, etag: &str) -> bool {
    header.split(',').any(|t| {
        let t = t.trim().trim_start_matches("W/");
        t == "*" || t.trim_matches('"') == etag
    })
}

pub(super) fn accepts_gzip(header: &str) -> bool {
    header.split(',').any(|part| {
        let mut it = part.split(';');
        let coding = it.next().unwrap_or("").trim();
        let refused = it.any(|p| {
            p.trim()
                .strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q == 0.0)
        });
        (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !refused
    })
}

struct Request {
    if_none_match: Option<String>,
    accept_encoding: Option<String>,
    host: Option<String>,
}

fn respond(path: &str, req: &Request) -> Option<Response<Bytes>> {
    let asset = assets().get(path)?;
    let gzip = asset
        .gzip
        .as_ref()
        .filter(|_| req.accept_encoding.as_deref().is_some_and(accepts_gzip));
    // A representation's tag must differ per encoding.
    let etag = if gzip.is_some() {
        format!("{}-gz", asset.etag)
    } else {
        asset.etag.clone()
    };
    let not_modified = req
        .if_none_match
        .as_deref()
        .is_some_and(|h| matches_etag(h, &etag));
    let mut builder = Response::builder()
        .header(header::ETAG, format!("\"{etag}\""))
        .header(header::CACHE_CONTROL, "no-cache")
        .header(header::VARY, "Accept-Encoding")
        .header(header::CONTENT_TYPE, asset.mime)
        .header("x-content-type-options", "nosniff")
        .header("referrer-policy", "no-referrer")
        .header("x-frame-options", "DENY");
    if let Ok(csp) = HeaderValue::from_str(&content_security_policy(req.host.as_deref())) {
        builder = builder.header("content-security-policy", csp);
    }
    let response = if not_modified {
        builder.status(StatusCode::NOT_MODIFIED).body(Bytes::new())
    } else if let Some(gz) = gzip {
        builder
            .header(header::CONTENT_ENCODING, "gzip")
            .body(gz.clone())
    } else {
        builder.body(asset.body.clone())
    };
    response.ok()
}

/// GET (or HEAD) `/` for the UI's page and `/<file>` for the other embedded files. Unknown
/// paths are rejected, so they fall through to a 404.
pub fn routes() -> impl Filter<Extract = (Response<Bytes>,), Error = Rejection> + Clone {
    warp::get()
        .or(warp::head())
        .unify()
        .and(warp::path::tail())
        .and(warp::header::optional::<String>("if-none-match"))
        .and(warp::header::optional::<String>("accept-encoding"))
        .and(warp::header::optional::<String>("host"))
        .and_then(
            |tail: warp::path::Tail,
             if_none_match: Option<String>,
             accept_encoding: Option<String>,
             host: Option<String>| async move {
                let path = match tail.as_str() {
                    "" => INDEX,
                    p => p,
                };
                let req = Request {
                    if_none_match,
                    accept_encoding,
                    host,
                };
                respond(path, &req).ok_or_else(warp::reject::not_found)
            },
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etag_lists_and_wildcards_match() {
        assert!(matches_etag("\"abc\"", "abc"));
        assert!(matches_etag("W/\"x\", \"abc\"", "abc"));
        assert!(matches_etag("*", "abc"));
        assert!(!matches_etag("\"abd\"", "abc"));
    }

    #[test]
    fn gzip_is_used_only_when_accepted() {
        assert!(accepts_gzip("gzip, deflate, br"));
        assert!(accepts_gzip("br;q=1.0, gzip;q=0.8"));
        assert!(!accepts_gzip("gzip;q=0"));
        assert!(!accepts_gzip("br, deflate"));
    }

    #[test]
    fn policy_names_the_socket_origin_and_ignores_odd_hosts() {
        let p = content_security_policy(Some("example.org:8081"));
        assert!(p.contains("connect-src 'self' ws://example.org:8081 wss://example.org:8081;"));
        let p = content_security_policy(Some("evil.org; script-src *"));
        assert!(p.contains("connect-src 'self';"));
        assert!(!p.contains("unsafe-inline"));
    }

    #[test]
    fn the_index_page_is_embedded() {
        assert!(assets().contains_key(INDEX));
    }
}
