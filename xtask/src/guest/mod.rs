//! Guest payloads: the Linux kernel (built once from Debian's
//! linux-source-6.1 and cached per user), the guest driver module, and the
//! busybox initramfs.

pub mod abi_header;
mod initramfs;
mod kernel;

use crate::util::{out_dir, root, run, Step};
use crate::BuildOpts;
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::process::Command;

pub struct Payloads {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    pub driver: PathBuf,
    pub kernel_version: String,
}

pub fn build(opts: &BuildOpts) -> Result<Payloads> {
    abi_header::write()?;
    let k = kernel::build()?;
    let driver = build_driver(&k.tree)?;
    let initramfs = initramfs::build(&driver, opts.overlay.as_deref())?;
    let kernel = out_dir().join("bzImage");
    std::fs::copy(k.tree.join("arch/x86/boot/bzImage"), &kernel).context("copy bzImage")?;
    Ok(Payloads {
        kernel,
        initramfs,
        driver,
        kernel_version: k.release,
    })
}

/// Builds guest-driver/ out of tree against the cached kernel, in a copy
/// under target/ so the source folder stays clean.
fn build_driver(kdir: &std::path::Path) -> Result<PathBuf> {
    let _s = Step::new("build guest driver");
    let src = root().join("guest-driver");
    let work = out_dir().join("guest-driver");
    std::fs::create_dir_all(&work)?;
    for e in std::fs::read_dir(&src)? {
        let e = e?;
        if e.file_type()?.is_file() {
            std::fs::copy(e.path(), work.join(e.file_name()))?;
        }
    }
    run(Command::new("make")
        .arg("-s")
        .arg("-C")
        .arg(kdir)
        .arg(format!("M={}", work.display()))
        .arg("modules"))?;
    let ko = work.join("vmlink_net.ko");
    anyhow::ensure!(ko.exists(), "the driver build produced no {}", ko.display());
    Ok(ko)
}
