//! The GRUB rescue ISO holding the hypervisor and the guest payloads.

use crate::guest::Payloads;
use anyhow::Result;
use std::path::{Path, PathBuf};

pub fn build(_hypervisor: &Path, _payloads: &Payloads) -> Result<PathBuf> {
    todo!("iso")
}
