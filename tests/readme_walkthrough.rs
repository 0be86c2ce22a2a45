//! The README's `ctl` walkthrough runs, as written, against `clustorio demo`: every instance
//! and save line of the "Command-line client" block exits 0 (lines that need a terminal or a
//! file of your own — login, mod upload — and the placeholder lines with `|` or `[…]` are left
//! out).

mod common;

use common::cluster::free_tcp_port;
use common::{Proc, bin};
use std::process::{Command, Stdio};
use std::time::Duration;

fn walkthrough() -> Vec<String> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let block = readme
        .split("## Command-line client")
        .nth(1)
        .and_then(|s| s.split("```sh").nth(1))
        .and_then(|s| s.split("```").next())
        .expect("the README's ctl block");
    block
        .lines()
        .map(|l| l.split("  #").next().unwrap_or(l).trim())
        .flat_map(|l| l.split("; ").map(str::to_string).collect::<Vec<_>>())
        .filter(|l| l.starts_with("clustorio ctl "))
        .filter(|l| !l.contains('|') && !l.contains('['))
        .filter(|l| {
            [" instance ", " save ", " status", " host list"]
                .iter()
                .any(|k| l.contains(k))
        })
        .collect()
}

#[test]
fn the_readme_walkthrough_works_against_the_demo() {
    bin("factorio-sim");
    let lines = walkthrough();
    assert!(lines.len() >= 20, "the walkthrough: {lines:#?}");
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("cwd");
    std::fs::create_dir_all(&work).unwrap();
    let port = free_tcp_port();
    let mut cmd = Command::new(bin("clustorio"));
    cmd.args(["demo", "--port", &port.to_string(), "--dir"])
        .arg(dir.path().join("demo"))
        .env("LOG_LEVEL", "warn")
        .stderr(Stdio::null());
    let mut demo = Proc::spawn(cmd);
    let line = demo.wait_line(Duration::from_secs(90), |l| l.contains("admin token:"));
    let token = line
        .split("admin token:")
        .nth(1)
        .unwrap()
        .trim()
        .to_string();
    demo.wait_line(Duration::from_secs(30), |l| l.contains("Press Ctrl-C"));

    for line in &lines {
        let words = shell_words(line.trim_start_matches("clustorio "));
        let out = Command::new(bin("clustorio"))
            .args(&words)
            .current_dir(&work)
            .env("CLUSTORIO_URL", format!("http://127.0.0.1:{port}"))
            .env("CLUSTORIO_TOKEN", &token)
            .env("HOME", dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "`{line}` failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    demo.signal("INT");
    assert_eq!(
        demo.wait_exit(Duration::from_secs(60)),
        Some(0),
        "the demo stops cleanly"
    );
}

/// Splits on spaces, keeping `"…"` together (the README's `--set key="A B"` style).
fn shell_words(line: &str) -> Vec<String> {
    let (mut out, mut cur, mut quoted) = (Vec::new(), String::new(), false);
    for ch in line.chars() {
        match ch {
            '"' => quoted = !quoted,
            ' ' if !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}
