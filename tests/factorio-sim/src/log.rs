//! Output in the real server's line shapes (research/factorio.md §3.2):
//! engine lines (`   1.032 Info File.cpp:NN: text` / `   1.032 text`) go to stdout *and*
//! `factorio-current.log`; dated game events (`2019-01-20 10:30:04 [JOIN] …`) go to stdout and the
//! `--console-log` file only; bare lines (`Done.`, command output) go to stdout only.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

#[derive(Clone)]
pub struct Log {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    start: Instant,
    file: Option<File>,
    console: Option<File>,
}

impl Log {
    pub fn new(start: Instant) -> Log {
        Log {
            inner: Arc::new(Mutex::new(Inner {
                start,
                file: None,
                console: None,
            })),
        }
    }

    /// Rotate `factorio-current.log` → `factorio-previous.log` (unless told not to) and start
    /// mirroring engine lines into it.
    pub fn open_log_file(&self, write_dir: &Path, rotate: bool) {
        let current = write_dir.join("factorio-current.log");
        if rotate && current.exists() {
            let _ = std::fs::rename(&current, write_dir.join("factorio-previous.log"));
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(rotate)
            .append(!rotate)
            .open(&current)
            .ok();
        self.lock().file = file;
    }

    pub fn open_console_log(&self, path: &Path) {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .ok();
        self.lock().console = file;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn elapsed(&self) -> f64 {
        self.lock().start.elapsed().as_secs_f64()
    }

    /// Shape B: `%8.3f text`.
    pub fn plain(&self, text: &str) {
        let mut g = self.lock();
        let line = format!("{:8.3} {}\n", g.start.elapsed().as_secs_f64(), text);
        emit_stdout(&line);
        if let Some(f) = g.file.as_mut() {
            let _ = f.write_all(line.as_bytes());
        }
    }

    /// Shape A: `%8.3f Level File.cpp:NNN: text`.
    pub fn engine(&self, level: &str, source: &str, text: &str) {
        self.plain(&format!("{level} {source}: {text}"));
    }

    pub fn info(&self, source: &str, text: &str) {
        self.engine("Info", source, text);
    }

    pub fn error(&self, source: &str, text: &str) {
        self.engine("Error", source, text);
    }

    /// Shape C: `YYYY-MM-DD HH:MM:SS [TAG] text` — stdout and console log, never the log file.
    pub fn event(&self, tag: &str, text: &str) {
        let mut g = self.lock();
        let line = format!("{} [{tag}] {text}\n", local_time());
        emit_stdout(&line);
        if let Some(f) = g.console.as_mut() {
            let _ = f.write_all(line.as_bytes());
        }
    }

    /// Shape C′: dated line without a tag (Lua errors).
    pub fn dated(&self, text: &str) {
        let line = format!("{} {text}\n", local_time());
        let _g = self.lock();
        emit_stdout(&line);
    }

    /// Shape D: bare text on stdout.
    pub fn bare(&self, text: &str) {
        let _g = self.lock();
        emit_stdout(&format!("{text}\n"));
    }

    /// The header's first line: `   0.000 2026-03-01 12:00:00; Factorio …`.
    pub fn header_first(&self, product: &str) {
        self.plain(&format!("{}; {product}", local_time()));
    }
}

fn emit_stdout(line: &str) {
    // The real server flushes every line even into a pipe (§3.1); managers rely on it.
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(line.as_bytes());
    let _ = out.flush();
}

/// Local wall-clock time `%Y-%m-%d %H:%M:%S`, as the real server prints it.
pub fn local_time() -> String {
    // SAFETY: time/localtime_r only write into the provided, properly sized struct.
    unsafe {
        let t = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&t, &mut tm).is_null() {
            return "1970-01-01 00:00:00".into();
        }
        format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            tm.tm_year + 1900,
            tm.tm_mon + 1,
            tm.tm_mday,
            tm.tm_hour,
            tm.tm_min,
            tm.tm_sec
        )
    }
}
