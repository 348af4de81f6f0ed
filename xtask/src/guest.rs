//! Guest payloads: the Linux kernel, the initramfs and the guest driver.

use crate::BuildOpts;
use anyhow::Result;
use std::path::PathBuf;

pub struct Payloads {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    pub driver: PathBuf,
    pub kernel_version: String,
}

pub fn build(_opts: &BuildOpts) -> Result<Payloads> {
    todo!("guest payloads")
}
