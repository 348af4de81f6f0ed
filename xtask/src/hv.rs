//! Builds the freestanding hypervisor ELF.
//!
//! No bare-metal target can be installed here, so the image is built for
//! x86_64-unknown-linux-gnu as a static, freestanding ELF: static relocation
//! model, no red zone (interrupts and exceptions land on the hypervisor's
//! stacks), no C runtime, and boot/linker.ld for the layout. The flags go in
//! RUSTFLAGS with an explicit --target so that build scripts and host
//! crates are not built with them, and in a target folder of their own so
//! host builds are not invalidated.

use crate::util::{out_dir, root, run, Step};
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::process::Command;

const TARGET: &str = "x86_64-unknown-linux-gnu";

pub fn rustflags() -> String {
    let script = root().join("boot/linker.ld");
    [
        "-C relocation-model=static".to_string(),
        "-C no-redzone=yes".to_string(),
        "-C force-frame-pointers=yes".to_string(),
        "-C link-arg=-nostartfiles".to_string(),
        "-C link-arg=-nostdlib".to_string(),
        "-C link-arg=-static".to_string(),
        "-C link-arg=-no-pie".to_string(),
        "-C link-arg=-Wl,--build-id=none".to_string(),
        "-C link-arg=-Wl,-z,max-page-size=0x1000".to_string(),
        "-C link-arg=-Wl,--no-eh-frame-hdr".to_string(),
        format!("-C link-arg=-T{}", script.display()),
    ]
    .join(" ")
}

/// Builds the image and copies it to target/vmlink/vmlink.elf.
pub fn build() -> Result<PathBuf> {
    let _s = Step::new("build hypervisor");
    run(Command::new(env!("CARGO"))
        .current_dir(root())
        .env("RUSTFLAGS", rustflags())
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .args(["build", "--release", "--quiet", "-p", "vmlink-hypervisor"])
        .args(["--bin", "vmlink", "--features", "image", "--target", TARGET])
        .arg("--target-dir")
        .arg(root().join("target/hypervisor")))?;
    let built = root()
        .join("target/hypervisor")
        .join(TARGET)
        .join("release/vmlink");
    let out = out_dir().join("vmlink.elf");
    std::fs::copy(&built, &out).with_context(|| format!("copy {}", built.display()))?;
    Ok(out)
}
