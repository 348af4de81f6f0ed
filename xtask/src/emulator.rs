//! Boots an image in Bochs or QEMU and captures the serial console.

use crate::Artifacts;
use anyhow::Result;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Choice {
    Auto,
    Bochs,
    QemuKvm,
    QemuTcg,
}

pub fn run_interactive(
    _a: &Artifacts,
    _choice: Choice,
    _cpus: u32,
    _timeout: Option<u64>,
    _batch: bool,
) -> Result<()> {
    todo!()
}
