//! How the controller serves the web UI (caching, compression, security headers), and that the
//! pages use only relative URLs so they work behind a reverse proxy under a sub-path. No browser
//! needed; `web_ui.rs` drives a real one.

mod common;

use common::ControllerProcess;
use std::path::{Path, PathBuf};

fn web_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).expect("reading web/").flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("web"), &mut out);
    out
}

#[tokio::test]
async fn the_ui_is_served_with_caching_compression_and_a_strict_policy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = ControllerProcess::start(dir.path());
    let http = reqwest::Client::new();

    let r = http.get(c.url("/")).send().await.expect("GET /");
    assert_eq!(r.status().as_u16(), 200);
    let h = r.headers().clone();
    assert!(h["content-type"].to_str().unwrap().starts_with("text/html"));
    assert_eq!(h["cache-control"], "no-cache");
    assert_eq!(h["x-content-type-options"], "nosniff");
    let csp = h["content-security-policy"].to_str().unwrap().to_string();
    for part in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(part), "CSP lacks {part}: {csp}");
    }
    assert!(!csp.contains("unsafe"), "{csp}");
    let host = format!("127.0.0.1:{}", c.port);
    assert!(
        csp.contains(&format!("connect-src 'self' ws://{host} wss://{host}")),
        "the link socket's origin is allowed: {csp}"
    );
    let etag = h["etag"].to_str().unwrap().to_string();
    let body = r.text().await.unwrap();
    assert!(body.contains("<script type=\"module\" src=\"js/app.js\">"));

    // HEAD works too (health checks, proxies), without a body.
    let r = http.head(c.url("/")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["etag"].to_str().unwrap(), etag);

    // Revalidation is a cheap 304.
    let r = http
        .get(c.url("/"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 304);
    assert!(r.bytes().await.unwrap().is_empty());

    // Gzip when accepted (and it helps), with its own tag; never when not accepted.
    let r = http.get(c.url("/js/instance.js")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404, "pages live under js/pages/");
    let plain = http
        .get(c.url("/js/pages/instance.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status().as_u16(), 200);
    assert!(plain.headers().get("content-encoding").is_none());
    assert!(
        plain.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    let plain_len = plain.bytes().await.unwrap().len();
    let gz = http
        .get(c.url("/js/pages/instance.js"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(gz.headers()["content-encoding"], "gzip");
    assert_eq!(gz.headers()["vary"], "Accept-Encoding");
    assert!(gz.headers()["etag"].to_str().unwrap().ends_with("-gz\""));
    let gz_len = gz.bytes().await.unwrap().len();
    assert!(gz_len * 2 < plain_len, "{gz_len} vs {plain_len}");

    // Unknown files are 404; the API and metrics are untouched by the UI's routes.
    assert_eq!(
        http.get(c.url("/nope.js"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        404
    );
    assert_eq!(
        http.get(c.url("/api/v1/status"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    assert_eq!(
        http.get(c.url("/api/v1/nope"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        404
    );
}

#[test]
fn pages_use_only_relative_urls_and_no_inline_code() {
    let files = web_files();
    assert!(files.iter().any(|f| f.ends_with("index.html")));
    for f in &files {
        let name = f.display().to_string();
        let ext = f.extension().and_then(|e| e.to_str()).unwrap_or_default();
        if !matches!(ext, "html" | "js" | "css") {
            continue;
        }
        let text = std::fs::read_to_string(f).expect("reading a web file");
        // Absolute paths break under a sub-path; other origins are not allowed at all.
        for bad in [
            "href=\"/",
            "src=\"/",
            "url(/",
            "fetch(\"/",
            "fetch('/",
            "\"/api",
            "'/api",
            "`/api",
            "//cdn",
            "https://",
            "@import",
        ] {
            assert!(!text.contains(bad), "{name} contains {bad:?}");
        }
        for (i, line) in text.lines().enumerate() {
            if line.contains("http://") {
                assert!(
                    line.contains("http://www.w3.org/2000/svg"),
                    "{name}:{}: a URL to another origin: {line}",
                    i + 1
                );
            }
            if ext == "js" {
                for kw in ["import ", "from "] {
                    if let Some(rest) = line.trim_start().strip_prefix(kw)
                        && let Some(q) = rest.find('"')
                    {
                        let spec = &rest[q + 1..];
                        assert!(
                            spec.starts_with("./") || spec.starts_with("../"),
                            "{name}:{}: imports must be relative: {line}",
                            i + 1
                        );
                    }
                }
                assert!(
                    !line.contains("innerHTML"),
                    "{name}:{}: no innerHTML",
                    i + 1
                );
                assert!(!line.contains("eval("), "{name}:{}: no eval", i + 1);
            }
        }
        if ext == "html" {
            // The CSP forbids inline code; make sure none was written.
            assert!(!text.contains(" style=\""), "{name}: inline style");
            assert!(!text.contains(" onclick="), "{name}: inline handler");
            for script in text.split("<script").skip(1) {
                assert!(
                    script.trim_start().starts_with("type=\"module\" src="),
                    "{name}: inline script"
                );
            }
        }
    }
}
