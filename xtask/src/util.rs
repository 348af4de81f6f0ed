//! Paths and small process helpers shared by the xtask modules.

use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Where build outputs go: `target/vmlink/`.
pub fn out_dir() -> PathBuf {
    let d = root().join("target").join("vmlink");
    std::fs::create_dir_all(&d).expect("create target/vmlink");
    d
}

/// Per-user cache for expensive artifacts (the guest kernel above all),
/// shared by every clone: `$XDG_CACHE_HOME/vmlink` or `~/.cache/vmlink`.
pub fn cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    let d = base.join("vmlink");
    std::fs::create_dir_all(&d).expect("create cache dir");
    d
}

/// Runs a command to completion, failing with its command line on error.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// Prints how long a long step took.
pub struct Step {
    name: String,
    start: Instant,
}

impl Step {
    pub fn new(name: impl Into<String>) -> Self {
        let name = name.into();
        eprintln!("==> {name} ...");
        Step {
            name,
            start: Instant::now(),
        }
    }
}

impl Drop for Step {
    fn drop(&mut self) {
        eprintln!(
            "==> {} took {:.1}s",
            self.name,
            self.start.elapsed().as_secs_f64()
        );
    }
}
