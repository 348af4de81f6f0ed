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
        "/* GENERATED from shared-abi/src/lib.rs by xtask/src/guest/abi_header.rs;\n \
         * do not edit. `cargo xtask build` regenerates it. */"
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
    // The same, as CPUID 0x40000000 returns it in EBX, ECX, EDX.
    for (reg, word) in ["EBX", "ECX", "EDX"]
        .iter()
        .zip(vmlink_abi::CPUID_SIGNATURE.chunks_exact(4))
    {
        let v = u32::from_le_bytes(word.try_into().expect("4 bytes"));
        let _ = writeln!(h, "#define VMLINK_CPUID_SIGNATURE_{reg} 0x{v:08x}u");
    }
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

    /// Fails when shared-abi/ changed and the header was not regenerated.
    /// `VMLINK_REGENERATE=1` makes it rewrite the header instead.
    #[test]
    fn checked_in_header_is_current() {
        if std::env::var_os("VMLINK_REGENERATE").is_some() {
            write().unwrap();
        }
        let on_disk = std::fs::read_to_string(root().join(HEADER_PATH)).unwrap_or_default();
        assert!(
            on_disk == generate(),
            "{HEADER_PATH} is stale (shared-abi/ changed): regenerate it with \
             `cargo xtask build` or `VMLINK_REGENERATE=1 cargo test -p xtask abi_header`, \
             and commit it"
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
        // "vmli" little-endian.
        assert!(h.contains("#define VMLINK_CPUID_SIGNATURE_EBX 0x696c6d76u"));
    }
}
