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
    // The kernel has these types; a host build (the ring tests) gets them
    // from linux/types.h too.
    let _ = writeln!(h, "#include <linux/types.h>\n");
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
    channel(&mut h);
    let _ = writeln!(h, "\n#endif /* VMLINK_ABI_H */");
    h
}

/// One C struct from a Rust `repr(C)` struct: its public fields at their
/// Rust offsets, explicit padding between them, and static assertions that
/// the C compiler agrees on every offset and the size.
struct CStruct {
    name: &'static str,
    size: usize,
    fields: Vec<(&'static str, &'static str, usize, usize)>,
}

impl CStruct {
    fn write(&self, h: &mut String) {
        let _ = writeln!(h, "\nstruct {} {{", self.name);
        let mut at = 0;
        for (i, (ty, field, off, len)) in self.fields.iter().enumerate() {
            if *off > at {
                let _ = writeln!(h, "\t__u8 _pad{i}[{}];", off - at);
            }
            let _ = writeln!(h, "\t{ty} {field};");
            at = off + len;
        }
        if self.size > at {
            let _ = writeln!(h, "\t__u8 _pad_end[{}];", self.size - at);
        }
        let _ = writeln!(h, "}};");
        let _ = writeln!(
            h,
            "_Static_assert(sizeof(struct {}) == {}, \"{} size\");",
            self.name, self.size, self.name
        );
        for (_, field, off, _) in &self.fields {
            let f = field.split('[').next().unwrap_or(field);
            let _ = writeln!(
                h,
                "_Static_assert(__builtin_offsetof(struct {}, {f}) == {off}, \"{}.{f}\");",
                self.name, self.name
            );
        }
    }
}

/// The channel: PCI identity, layout constants, flags, hypercalls and the
/// structures both sides read and write.
fn channel(h: &mut String) {
    use core::mem::{offset_of, size_of};
    use vmlink_abi::channel::{self as ch, desc_flags, pci, peer_state, Control, Desc, Header};
    use vmlink_abi::hypercall::{self as hc, stat};
    let mut def = |name: &str, v: String| {
        let _ = writeln!(h, "#define VMLINK_{name} {v}");
    };
    def(
        "CPUID_HV_INFO",
        format!("0x{:08x}u", vmlink_abi::CPUID_HV_INFO),
    );
    def("PCI_VENDOR_ID", format!("0x{:04x}", pci::VENDOR_ID));
    def("PCI_DEVICE_ID", format!("0x{:04x}", pci::DEVICE_ID));
    def("PCI_REGION_BAR", format!("{}", pci::REGION_BAR));
    def("PAGE_SIZE", format!("{}u", ch::PAGE));
    def("BUFFER_SIZE", format!("{}u", ch::BUFFER_SIZE));
    def("MAX_RING_ENTRIES", format!("{}u", ch::MAX_RING_ENTRIES));
    def("MAX_FRAGS", format!("{}u", ch::MAX_FRAGS));
    def("CHANNEL_MAGIC", format!("0x{:016x}ull", ch::MAGIC));
    for (n, v) in [
        ("MORE", desc_flags::MORE),
        ("CSUM_PARTIAL", desc_flags::CSUM_PARTIAL),
        ("GSO_TCPV4", desc_flags::GSO_TCPV4),
        ("GSO_TCPV6", desc_flags::GSO_TCPV6),
        ("GSO_UDP_L4", desc_flags::GSO_UDP_L4),
        ("ALL", desc_flags::ALL),
    ] {
        def(&format!("DESC_{n}"), format!("0x{v:04x}u"));
    }
    def("PEER_ATTACHED", format!("0x{:x}u", peer_state::ATTACHED));
    def("PEER_RUNNING", format!("0x{:x}u", peer_state::RUNNING));
    for (n, v) in [
        ("CHANNEL_ATTACH", hc::CHANNEL_ATTACH),
        ("CHANNEL_DETACH", hc::CHANNEL_DETACH),
        ("DOORBELL", hc::DOORBELL),
        ("MEDIATED_SEND", hc::MEDIATED_SEND),
        ("STATS", hc::STATS),
    ] {
        def(&format!("HC_{n}"), format!("{v}u"));
    }
    // The counters are numbered in NAMES order (a unit test checks the
    // constants agree), so the names give the C constants and the driver's
    // ethtool strings.
    for (v, n) in stat::NAMES.iter().enumerate() {
        def(&format!("STAT_{}", n.to_uppercase()), format!("{v}u"));
    }
    def("STAT_COUNT", format!("{}u", stat::COUNT));
    let names: Vec<String> = stat::NAMES.iter().map(|n| format!("\"hv_{n}\"")).collect();
    def("STAT_NAMES", names.join(", "));
    for (n, v) in [
        ("PEER_DOWN", vmlink_abi::HC_ERR_PEER_DOWN),
        ("NO_CHANNEL", vmlink_abi::HC_ERR_NO_CHANNEL),
        ("PRIVILEGE", vmlink_abi::HC_ERR_PRIVILEGE),
    ] {
        def(&format!("HC_ERR_{n}"), format!("({v})"));
    }
    let structs = [
        CStruct {
            name: "vmlink_desc",
            size: size_of::<Desc>(),
            fields: vec![
                ("__u32", "buf", offset_of!(Desc, buf), 4),
                ("__u32", "len", offset_of!(Desc, len), 4),
                ("__u16", "flags", offset_of!(Desc, flags), 2),
                ("__u16", "gso_size", offset_of!(Desc, gso_size), 2),
                ("__u16", "csum_start", offset_of!(Desc, csum_start), 2),
                ("__u16", "csum_offset", offset_of!(Desc, csum_offset), 2),
            ],
        },
        CStruct {
            name: "vmlink_control",
            size: size_of::<Control>(),
            fields: vec![
                ("__u32", "tx_prod", offset_of!(Control, tx_prod), 4),
                ("__u32", "ret_event", offset_of!(Control, ret_event), 4),
                ("__u32", "rx_cons", offset_of!(Control, rx_cons), 4),
                ("__u32", "rx_event", offset_of!(Control, rx_event), 4),
                ("__u32", "ret_prod", offset_of!(Control, ret_prod), 4),
                ("__u32", "ret_cons", offset_of!(Control, ret_cons), 4),
            ],
        },
        CStruct {
            name: "vmlink_header",
            size: size_of::<Header>(),
            fields: vec![
                ("__u64", "magic", offset_of!(Header, magic), 8),
                ("__u32", "version", offset_of!(Header, version), 4),
                ("__u32", "side", offset_of!(Header, side), 4),
                ("__u64", "region_size", offset_of!(Header, region_size), 8),
                (
                    "__u64",
                    "section_offset",
                    offset_of!(Header, section_offset),
                    8,
                ),
                ("__u64", "section_size", offset_of!(Header, section_size), 8),
                ("__u32", "ring_entries", offset_of!(Header, ring_entries), 4),
                ("__u32", "buffer_count", offset_of!(Header, buffer_count), 4),
                ("__u32", "ring_offset", offset_of!(Header, ring_offset), 4),
                ("__u32", "ret_offset", offset_of!(Header, ret_offset), 4),
                (
                    "__u32",
                    "buffers_offset",
                    offset_of!(Header, buffers_offset),
                    4,
                ),
                ("__u32", "buffer_size", offset_of!(Header, buffer_size), 4),
                ("__u32", "peer_state", offset_of!(Header, peer_state), 4),
                ("__u32", "state_gen", offset_of!(Header, state_gen), 4),
                ("__u8", "mac[6]", offset_of!(Header, mac), 6),
                ("__u8", "peer_mac[6]", offset_of!(Header, peer_mac), 6),
                ("__u32", "peer_halted", offset_of!(Header, peer_halted), 4),
            ],
        },
    ];
    for s in &structs {
        s.write(h);
    }
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
