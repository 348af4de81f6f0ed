//! Guest payloads: the Linux kernel (built once from Debian's
//! linux-source-6.1 and cached per user), the guest driver module, and the
//! busybox initramfs.

pub mod abi_header;
mod cpio;
mod initramfs;
mod kernel;

use crate::util::{out_dir, root, run, Step};
use crate::BuildOpts;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Payloads {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    pub driver: PathBuf,
    pub kernel_version: String,
}

pub fn build(opts: &BuildOpts) -> Result<Payloads> {
    // Check the overlay before the long steps.
    let overlay = opts
        .overlay
        .as_deref()
        .map(initramfs::find_overlay)
        .transpose()?;
    abi_header::write()?;
    let k = kernel::build()?;
    let driver = build_driver(&k.tree)?;
    let tools = build_tools()?;
    let initramfs = initramfs::build(&driver, &tools, overlay.as_deref())?;
    let kernel = out_dir().join("bzImage");
    std::fs::copy(k.tree.join("arch/x86/boot/bzImage"), &kernel).context("copy bzImage")?;
    Ok(Payloads {
        kernel,
        initramfs,
        driver,
        kernel_version: k.release,
    })
}

/// Builds guest/tools (`vmlink-guest`) as a static executable for the
/// initramfs: the host's target with a static C runtime, stripped, in a
/// target folder of its own so host builds keep their flags.
fn build_tools() -> Result<PathBuf> {
    let _s = Step::new("build guest tools");
    const TARGET: &str = "x86_64-unknown-linux-gnu";
    let dir = root().join("target/guest-tools");
    run(Command::new(env!("CARGO"))
        .current_dir(root())
        .env(
            "RUSTFLAGS",
            "-C target-feature=+crt-static -C strip=symbols",
        )
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .args(["build", "--release", "--quiet", "-p", "vmlink-guest-tools"])
        .args(["--target", TARGET, "--target-dir"])
        .arg(&dir))?;
    Ok(dir.join(TARGET).join("release/vmlink-guest"))
}

/// Builds guest-driver/ out of tree against the cached kernel (through its
/// Makefile, as a developer would by hand), in a copy under target/ so the
/// source folder stays clean; the module ends up in out_dir().
fn build_driver(kdir: &Path) -> Result<PathBuf> {
    let _s = Step::new("build guest driver");
    let src = root().join("guest-driver");
    let work = out_dir().join("guest-driver");
    std::fs::create_dir_all(&work)?;
    for e in std::fs::read_dir(&src)? {
        let e = e?;
        if e.file_type()?.is_file() {
            let dest = work.join(e.file_name());
            // Copy only what changed, so make's timestamps stay meaningful.
            if std::fs::read(&dest).ok() != Some(std::fs::read(e.path())?) {
                std::fs::copy(e.path(), &dest)?;
            }
        }
    }
    run(Command::new("make")
        .arg("-s")
        .arg("-C")
        .arg(&work)
        .arg(format!("KDIR={}", kdir.display())))?;
    let built = work.join("vmlink_net.ko");
    anyhow::ensure!(
        built.exists(),
        "the driver build produced no {}",
        built.display()
    );
    let ko = out_dir().join("vmlink_net.ko");
    std::fs::copy(&built, &ko)?;
    Ok(ko)
}
