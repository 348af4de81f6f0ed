//! What the hypervisor tells a guest about its placement.

use std::fmt;
use vmlink_abi::{CPUID_HV_BASE, CPUID_HV_INFO, CPUID_SIGNATURE};

#[derive(Debug, PartialEq, Eq)]
pub struct Placement {
    pub physical_cpu: u32,
    pub vm_index: u32,
    pub ram_mib: u32,
}

impl fmt::Display for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "vm index {} on physical CPU {} with {} MiB RAM",
            self.vm_index, self.physical_cpu, self.ram_mib
        )
    }
}

/// Decodes the two hypervisor leaves, given as [eax, ebx, ecx, edx].
pub fn decode(base: [u32; 4], info: [u32; 4]) -> Option<Placement> {
    let mut sig = [0u8; 12];
    for (i, r) in base[1..].iter().enumerate() {
        sig[i * 4..i * 4 + 4].copy_from_slice(&r.to_le_bytes());
    }
    if sig != CPUID_SIGNATURE || base[0] < CPUID_HV_INFO {
        return None;
    }
    Some(Placement {
        physical_cpu: info[1],
        vm_index: info[2],
        ram_mib: info[3],
    })
}

fn cpuid(leaf: u32) -> [u32; 4] {
    let r = core::arch::x86_64::__cpuid(leaf);
    [r.eax, r.ebx, r.ecx, r.edx]
}

/// Whether CPUID.1:ECX says a hypervisor is present (else the hypervisor
/// leaves hold whatever the CPU returns for them).
fn under_hypervisor() -> bool {
    cpuid(1)[2] & (1 << 31) != 0
}

pub fn query() -> Option<Placement> {
    if !under_hypervisor() {
        return None;
    }
    decode(cpuid(CPUID_HV_BASE), cpuid(CPUID_HV_INFO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &[u8; 12]) -> [u32; 3] {
        let w = |i: usize| u32::from_le_bytes([s[i], s[i + 1], s[i + 2], s[i + 3]]);
        [w(0), w(4), w(8)]
    }

    #[test]
    fn decodes_vmlink_leaves() {
        let [b, c, d] = words(&CPUID_SIGNATURE);
        let p = decode([CPUID_HV_INFO, b, c, d], [0, 1, 1, 192]).unwrap();
        assert_eq!(
            p.to_string(),
            "vm index 1 on physical CPU 1 with 192 MiB RAM"
        );
    }

    #[test]
    fn another_hypervisor_is_not_vmlink() {
        let [b, c, d] = words(b"KVMKVMKVM\0\0\0");
        assert_eq!(decode([0x4000_0001, b, c, d], [0; 4]), None);
        let [b, c, d] = words(&CPUID_SIGNATURE);
        // An older vmlink without the info leaf.
        assert_eq!(decode([CPUID_HV_BASE, b, c, d], [0; 4]), None);
    }
}
