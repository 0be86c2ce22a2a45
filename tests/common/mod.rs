//! Shared helpers for integration tests: locating the workspace's binaries.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

/// Path to a binary of this workspace (`clustorio` or `factorio-sim`), built once per test process.
/// `cargo test --workspace` builds every binary before running tests; the fallback build covers
/// `cargo test --test X` runs that did not.
pub fn bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    let dir = target_dir();
    let path = dir.join(name);
    if !path.exists() {
        BUILT.get_or_init(|| {
            let status = std::process::Command::new(env!("CARGO"))
                .args(["build", "--workspace", "--bins"])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .status()
                .expect("running cargo build");
            assert!(status.success(), "cargo build --workspace failed");
        });
    }
    assert!(path.exists(), "binary {} not found", path.display());
    path
}

/// `target/<profile>/`, derived from the running test executable (`target/<profile>/deps/test-…`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(|deps| deps.parent())
        .map(PathBuf::from)
        .expect("test executable lives in target/<profile>/deps")
}
