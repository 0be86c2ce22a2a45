//! The HTTP side of ctl: one `reqwest` client, JSON calls under `/api/v1/`, file transfers, and
//! errors turned into one line that says what failed and why (the API's own message).

use anyhow::Context;
use futures_util::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::time::Duration;

/// An error reply of the controller: `{"error":{"code":…,"message":…}}` with its HTTP status.
#[derive(Debug)]
pub struct ApiFailure {
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // One line, whatever the message holds (start failures carry Factorio's last lines).
        let message = self
            .message
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        write!(f, "{message}")?;
        match self.status {
            401 => write!(
                f,
                " (check --token, CLUSTORIO_TOKEN or `clustorio ctl login`)"
            ),
            403 => write!(f, " (ask an admin for a role with this permission)"),
            _ => Ok(()),
        }
    }
}

impl std::error::Error for ApiFailure {}

/// A connection to one controller.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    /// `http(s)://host:port` (plus any path prefix of a proxy), without a trailing `/`.
    root: String,
    token: Option<String>,
}

impl Client {
    pub fn new(url: &str, token: Option<String>) -> anyhow::Result<Self> {
        let root = url.trim_end_matches('/').to_string();
        if !(root.starts_with("http://") || root.starts_with("https://")) {
            anyhow::bail!("controller URL '{url}' must start with http:// or https://");
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("clustorio-ctl/", env!("CARGO_PKG_VERSION")));
        if root.starts_with("http://") {
            // No TLS will happen: skip loading the system's CA certificates, which costs
            // milliseconds per run. https:// verifies against them (SSL_CERT_FILE honoured).
            builder = builder.tls_certs_only(std::iter::empty());
        }
        let http = builder.build().context("setting up the HTTP client")?;
        Ok(Client { http, root, token })
    }

    pub fn root(&self) -> &str {
        &self.root
    }

    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let req = self
            .http
            .request(method, format!("{}/api/v1{path}", self.root));
        match &self.token {
            Some(token) => req.bearer_auth(token),
            None => req,
        }
    }

    /// A JSON call; `body` is sent as JSON when given. Errors carry the API's message.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let mut req = self.request(method, path);
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = self.send(req).await?;
        json_reply(resp).await
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn patch(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.call(Method::PATCH, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> anyhow::Result<Value> {
        self.call(Method::DELETE, path, None).await
    }

    /// `PUT path` with a raw body (a save or mod zip), JSON reply.
    pub async fn put_body(
        &self,
        path: &str,
        body: reqwest::Body,
        len: u64,
    ) -> anyhow::Result<Value> {
        let req = self
            .request(Method::PUT, path)
            .header(reqwest::header::CONTENT_TYPE, "application/zip")
            .header(reqwest::header::CONTENT_LENGTH, len)
            .body(body);
        json_reply(self.send(req).await?).await
    }

    /// `GET path` whose body is streamed (a download, a log follow); fails on an error status.
    pub async fn stream(&self, path: &str) -> anyhow::Result<reqwest::Response> {
        let resp = self.send(self.request(Method::GET, path)).await?;
        if resp.status().is_success() {
            Ok(resp)
        } else {
            Err(failure(resp).await.into())
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        req.send().await.map_err(|e| self.transport_error(e))
    }

    fn transport_error(&self, e: reqwest::Error) -> anyhow::Error {
        let what = if e.is_connect() {
            "cannot connect to the controller"
        } else if e.is_timeout() {
            "the controller did not answer in time"
        } else {
            "the request to the controller failed"
        };
        anyhow::anyhow!("{what} at {}: {}", self.root, root_cause(&e))
    }
}

/// The innermost cause of an error, e.g. `Connection refused (os error 111)`.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

async fn json_reply(resp: reqwest::Response) -> anyhow::Result<Value> {
    if !resp.status().is_success() {
        return Err(failure(resp).await.into());
    }
    let status = resp.status();
    let bytes = resp
        .bytes()
        .await
        .context("reading the controller's reply")?;
    serde_json::from_slice(&bytes).with_context(|| {
        format!("the controller's reply ({status}) is not JSON; is the URL a clustorio controller?")
    })
}

/// An error reply as [`ApiFailure`], with a fallback for replies that are not the API's JSON
/// (a proxy's error page, a wrong URL).
async fn failure(resp: reqwest::Response) -> ApiFailure {
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    let parsed: Option<Value> = serde_json::from_str(&text).ok();
    let error = parsed.as_ref().map(|v| &v["error"]);
    match error.and_then(|e| e["message"].as_str()) {
        Some(message) => ApiFailure {
            status: status.as_u16(),
            code: error
                .and_then(|e| e["code"].as_str())
                .unwrap_or_default()
                .to_string(),
            message: message.to_string(),
        },
        None => ApiFailure {
            status: status.as_u16(),
            code: String::new(),
            message: fallback_message(status, &text),
        },
    }
}

fn fallback_message(status: StatusCode, text: &str) -> String {
    let snippet: String = text.chars().take(120).collect();
    if snippet.trim().is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {}", snippet.trim())
    }
}

/// A path segment, percent-encoded (save names may hold spaces).
pub fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Streams a file from disk as a request body, advancing `bar` as bytes go out.
pub async fn file_body(
    path: &std::path::Path,
    bar: indicatif::ProgressBar,
) -> anyhow::Result<(reqwest::Body, u64)> {
    let file = tokio::fs::File::open(path)
        .await
        .with_context(|| format!("opening {}", path.display()))?;
    let len = file
        .metadata()
        .await
        .with_context(|| format!("reading the size of {}", path.display()))?
        .len();
    let stream = tokio_util::io::ReaderStream::new(file).map(move |chunk| {
        if let Ok(bytes) = &chunk {
            bar.inc(bytes.len() as u64);
        }
        chunk
    });
    Ok((reqwest::Body::wrap_stream(stream), len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(seg("my save.zip"), "my%20save.zip");
        assert_eq!(seg("web-1_a.b"), "web-1_a.b");
        assert_eq!(seg("a/b"), "a%2Fb");
    }

    #[test]
    fn failures_print_on_one_line_with_a_hint() {
        let f = ApiFailure {
            status: 401,
            code: "unauthorized".into(),
            message: "invalid token".into(),
        };
        assert_eq!(
            f.to_string(),
            "invalid token (check --token, CLUSTORIO_TOKEN or `clustorio ctl login`)"
        );
        let f = ApiFailure {
            status: 500,
            code: "start_failed".into(),
            message: "Factorio exited\n  line 1\n  line 2".into(),
        };
        assert_eq!(f.to_string(), "Factorio exited line 1 line 2");
    }
}
