//! The guest driver's C header, generated from `shared-abi/` so that the
//! hypervisor and the driver cannot disagree. The generated file is checked
//! in; a unit test fails when it is stale.

use crate::util::root;
use anyhow::Result;
use std::fmt::Write;

pub const HEADER_PATH: &str = "guest-driver/vmlink_abi.h";

pub fn generate() -> String {
    let mut h = String::new();
    let sig = std::str::from_utf8(&vmlink_abi::CPUID_SIGNATURE).expect("ASCII signature");
    let _ = writeln!(h, "/* SPDX-License-Identifier: GPL-2.0 OR MIT */");
    let _ = writeln!(
        h,
        "/* Generated from shared-abi/ by `cargo xtask build`. Do not edit. */"
    );
    let _ = writeln!(h, "#ifndef VMLINK_ABI_H\n#define VMLINK_ABI_H\n");
    let _ = writeln!(h, "#define VMLINK_ABI_VERSION {}u", vmlink_abi::ABI_VERSION);
    let _ = writeln!(
        h,
        "#define VMLINK_CPUID_HV_BASE 0x{:08x}u",
        vmlink_abi::CPUID_HV_BASE
    );
    let _ = writeln!(
        h,
        "#define VMLINK_CPUID_HV_MAX 0x{:08x}u",
        vmlink_abi::CPUID_HV_MAX
    );
    let _ = writeln!(h, "#define VMLINK_CPUID_SIGNATURE \"{sig}\"");
    let _ = writeln!(
        h,
        "#define VMLINK_HC_VERSION {}u",
        vmlink_abi::hypercall::VERSION
    );
    let _ = writeln!(
        h,
        "#define VMLINK_HC_ERR_UNKNOWN ({})",
        vmlink_abi::HC_ERR_UNKNOWN
    );
    let _ = writeln!(
        h,
        "#define VMLINK_HC_ERR_INVALID ({})",
        vmlink_abi::HC_ERR_INVALID
    );
    let _ = writeln!(h, "\n#endif /* VMLINK_ABI_H */");
    h
}

/// Rewrites the header if it differs from what shared-abi says now.
pub fn write() -> Result<()> {
    let path = root().join(HEADER_PATH);
    let want = generate();
    if std::fs::read_to_string(&path).ok().as_deref() != Some(want.as_str()) {
        std::fs::write(&path, want)?;
        eprintln!("==> regenerated {HEADER_PATH}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checked_in_header_is_current() {
        let on_disk = std::fs::read_to_string(root().join(HEADER_PATH)).unwrap_or_default();
        assert!(
            on_disk == generate(),
            "{HEADER_PATH} is stale: run `cargo xtask build` (it regenerates the header) and commit it"
        );
    }

    #[test]
    fn header_carries_the_abi() {
        let h = generate();
        assert!(h.contains(&format!(
            "#define VMLINK_ABI_VERSION {}u",
            vmlink_abi::ABI_VERSION
        )));
        assert!(h.contains("\"vmlinkvmlink\""));
    }
}
