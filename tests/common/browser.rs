//! A headless Chromium driven through chromedriver (WebDriver), for the browser tests.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them). Set
//! `CLUSTORIO_SKIP_BROWSER_TESTS` to skip on a machine without them.

use super::cluster::free_tcp_port;
use anyhow::{Context, Result, bail};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// True when the browser tests are skipped on this machine (`CLUSTORIO_SKIP_BROWSER_TESTS=1`).
pub fn skipped() -> bool {
    std::env::var_os("CLUSTORIO_SKIP_BROWSER_TESTS").is_some()
}

/// How long a step waits for the page to show something.
pub const WAIT: Duration = Duration::from_secs(20);

pub fn screenshots_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&dir).expect("creating target/screenshots");
    dir
}

/// A chromedriver process on a free port; killed on drop.
pub struct Driver {
    child: Child,
    pub port: u16,
}

impl Driver {
    pub fn start() -> Result<Driver> {
        let port = free_tcp_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context(
                "cannot run chromedriver; install Debian's chromium and chromium-driver \
                 (apt-get install chromium chromium-driver), or set CLUSTORIO_SKIP_BROWSER_TESTS=1",
            )?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("chromedriver did not listen on port {port} within 20 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Driver { child, port })
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// chromedriver's (non-W3C) log endpoint: the browser console since the last call.
#[derive(Debug)]
struct BrowserLog;

impl fantoccini::wd::WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base: &reqwest::Url,
        session: Option<&str>,
    ) -> std::result::Result<reqwest::Url, url_error::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &reqwest::Url) -> (warp::http::Method, Option<String>) {
        (
            warp::http::Method::POST,
            Some(json!({ "type": "browser" }).to_string()),
        )
    }
}

/// `url::ParseError`, named through reqwest (which re-exports the url crate's `Url` only).
mod url_error {
    pub type ParseError = <reqwest::Url as std::str::FromStr>::Err;
}

/// The browser, pointed at one controller.
pub struct Ui {
    pub c: Client,
    pub base: String,
    pub shots: PathBuf,
}

impl Ui {
    pub async fn new(driver: &Driver, base: &str) -> Result<Ui> {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                         "--disable-gpu", "--window-size=1280,900", "--lang=en-US"],
            }),
        );
        caps.insert("goog:loggingPrefs".into(), json!({ "browser": "ALL" }));
        let c = ClientBuilder::rustls()?
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", driver.port))
            .await
            .context("starting a Chromium session through chromedriver")?;
        Ok(Ui {
            c,
            base: base.to_string(),
            shots: screenshots_dir(),
        })
    }

    pub async fn shot(&self, name: &str) {
        if let Ok(png) = self.c.screenshot().await {
            let _ = std::fs::write(self.shots.join(format!("{name}.png")), png);
        }
    }

    /// Runs one step; on failure saves a screenshot and fails the test with the step's name.
    pub async fn step<T>(&self, name: &str, f: impl Future<Output = Result<T>>) -> T {
        let started = Instant::now();
        match f.await {
            Ok(v) => {
                eprintln!(
                    "web ui: {name} ok ({:.1} s)",
                    started.elapsed().as_secs_f64()
                );
                v
            }
            Err(e) => {
                self.shot(&format!("FAILED-{name}")).await;
                let url = self.c.current_url().await.map(|u| u.to_string());
                panic!(
                    "step '{name}' failed: {e:#}\n(page: {url:?}; screenshot: {})",
                    self.shots.join(format!("FAILED-{name}.png")).display()
                );
            }
        }
    }

    pub async fn goto(&self, route: &str) -> Result<()> {
        let url = format!("{}{route}", self.base);
        self.c.goto(&url).await?;
        Ok(())
    }

    /// Navigates inside the app (hash route) without reloading the page.
    pub async fn route(&self, hash: &str) -> Result<()> {
        self.c
            .execute("location.hash = arguments[0]", vec![json!(hash)])
            .await?;
        Ok(())
    }

    pub async fn js(&self, script: &str, args: Vec<Value>) -> Result<Value> {
        Ok(self.c.execute(script, args).await?)
    }

    /// The text of the first element matching `css`, or None.
    pub async fn text(&self, css: &str) -> Result<Option<String>> {
        let v = self
            .js(
                "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
                vec![json!(css)],
            )
            .await?;
        Ok(v.as_str().map(String::from))
    }

    /// Waits until the element matching `css` contains `needle`.
    pub async fn wait_text(&self, css: &str, needle: &str) -> Result<String> {
        let deadline = Instant::now() + WAIT;
        loop {
            let t = self.text(css).await?;
            if let Some(t) = &t
                && t.contains(needle)
            {
                return Ok(t.clone());
            }
            if Instant::now() > deadline {
                bail!("'{css}' did not show '{needle}' within {WAIT:?}; it shows {t:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `script` (a JS expression) is truthy.
    pub async fn wait_js(&self, what: &str, script: &str) -> Result<()> {
        let deadline = Instant::now() + WAIT;
        loop {
            if self.js(&format!("return !!({script});"), vec![]).await? == json!(true) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("timed out waiting for {what}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn click(&self, css: &str) -> Result<()> {
        let e = self
            .c
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(css))
            .await
            .with_context(|| format!("no element '{css}'"))?;
        // Centre it first: chromedriver's own scrolling can leave it under the sticky top bar.
        self.c
            .execute(
                "arguments[0].scrollIntoView({block: 'center'})",
                vec![serde_json::to_value(&e)?],
            )
            .await?;
        e.click()
            .await
            .with_context(|| format!("clicking '{css}'"))?;
        Ok(())
    }

    pub async fn fill(&self, css: &str, text: &str) -> Result<()> {
        let e = self
            .c
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(css))
            .await
            .with_context(|| format!("no element '{css}'"))?;
        e.clear().await?;
        e.send_keys(text).await?;
        Ok(())
    }

    /// Console messages at level SEVERE since the last call.
    pub async fn browser_errors(&self) -> Result<Vec<String>> {
        let v = self.c.issue_cmd(BrowserLog).await?;
        Ok(v.as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["level"] == "SEVERE")
            .map(|e| e["message"].as_str().unwrap_or_default().to_string())
            .collect())
    }

    /// Every resource the page loaded came from its own origin.
    pub async fn foreign_requests(&self) -> Result<Vec<String>> {
        let v = self
            .js(
                "return performance.getEntriesByType('resource').map(e => e.name)
                   .filter(n => !n.startsWith(location.origin + '/'));",
                vec![],
            )
            .await?;
        Ok(v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| n.as_str().map(String::from))
            .collect())
    }
}
