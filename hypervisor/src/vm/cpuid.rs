//! The guest's CPUID. The host's answers pass through except where they
//! would describe something the guest does not have: VT-x, the host's
//! topology, performance monitoring, machine-check banks and MSRs vmlink
//! does not emulate. vmlink identifies itself in leaf 0x40000000 and gives
//! the TSC frequency in leaves 0x15/0x16 so that Linux never calibrates.

use vmlink_abi::{CPUID_HV_BASE, CPUID_HV_INFO, CPUID_HV_MAX, CPUID_SIGNATURE};

#[derive(Clone, Copy, Debug)]
pub struct CpuidConfig {
    pub apic_id: u32,
    pub tsc_hz: u64,
    /// CPUID.1:ECX.OSXSAVE mirrors the guest's CR4.OSXSAVE.
    pub guest_cr4_osxsave: bool,
    /// Where the partition put this VM, told in leaf 0x40000001.
    pub placement: Placement,
}

/// What leaf [`vmlink_abi::CPUID_HV_INFO`] tells a guest about itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Placement {
    pub physical_cpu: u32,
    pub vm_index: u32,
    pub ram_mib: u32,
}

impl CpuidConfig {
    pub fn new(apic_id: u32, tsc_hz: u64) -> Self {
        CpuidConfig {
            apic_id,
            tsc_hz,
            guest_cr4_osxsave: false,
            placement: Placement::default(),
        }
    }
}

/// The core crystal clock reported in leaf 0x15 and the TSC/crystal ratio:
/// the crystal must fit in 32 bits. The emulated local APIC timer runs at
/// the crystal frequency, as Linux assumes (it derives the APIC timer
/// period from leaf 0x15).
pub fn crystal(tsc_hz: u64) -> (u32, u32) {
    let ratio = tsc_hz.div_ceil(u64::from(u32::MAX)).max(1);
    ((tsc_hz / ratio) as u32, ratio as u32)
}

/// Leaves up to this one exist (0x15/0x16 are synthesized).
const MAX_BASIC: u32 = 0x16;

mod bit {
    // leaf 1 ECX
    pub const DTES64: u32 = 1 << 2;
    pub const MONITOR: u32 = 1 << 3;
    pub const DS_CPL: u32 = 1 << 4;
    pub const VMX: u32 = 1 << 5;
    pub const SMX: u32 = 1 << 6;
    pub const EST: u32 = 1 << 7;
    pub const TM2: u32 = 1 << 8;
    pub const XTPR: u32 = 1 << 14;
    pub const PDCM: u32 = 1 << 15;
    pub const XSAVE: u32 = 1 << 26;
    pub const OSXSAVE: u32 = 1 << 27;
    pub const HYPERVISOR: u32 = 1 << 31;
    // leaf 1 EDX
    pub const MCE: u32 = 1 << 7;
    pub const MCA: u32 = 1 << 14;
    pub const DS: u32 = 1 << 21;
    pub const ACPI: u32 = 1 << 22;
    pub const HTT: u32 = 1 << 28;
    pub const TM: u32 = 1 << 29;
    pub const PBE: u32 = 1 << 31;
}

/// Leaf 7.0 EBX: TSC_ADJUST, SGX, HLE, RTM, RDT-M, MPX, RDT-A, Intel PT.
const LEAF7_EBX_HIDDEN: u32 =
    (1 << 1) | (1 << 2) | (1 << 4) | (1 << 11) | (1 << 12) | (1 << 14) | (1 << 15) | (1 << 25);
/// Leaf 7.0 ECX: PKU, OSPKE, WAITPKG, SGX launch control, PKS.
const LEAF7_ECX_HIDDEN: u32 = (1 << 3) | (1 << 4) | (1 << 5) | (1 << 30) | (1 << 31);
/// Leaf 7.0 EDX: TSX force-abort, PCONFIG, and the speculation-control
/// family (IBRS/IBPB, STIBP, L1D flush, ARCH_CAPABILITIES, core
/// capabilities, SSBD): each comes with MSRs vmlink does not emulate.
const LEAF7_EDX_HIDDEN: u32 =
    (1 << 13) | (1 << 18) | (1 << 26) | (1 << 27) | (1 << 28) | (1 << 29) | (1 << 30) | (1 << 31);

pub fn guest_cpuid(
    leaf: u32,
    sub: u32,
    host: &dyn Fn(u32, u32) -> [u32; 4],
    cfg: &CpuidConfig,
) -> [u32; 4] {
    let host_max = host(0, 0)[0];
    match leaf {
        0 => {
            let mut r = host(0, 0);
            r[0] = MAX_BASIC;
            r
        }
        1 => {
            let [eax, ebx, mut ecx, mut edx] = host(1, 0);
            ecx &= !(bit::DTES64
                | bit::MONITOR
                | bit::DS_CPL
                | bit::VMX
                | bit::SMX
                | bit::EST
                | bit::TM2
                | bit::XTPR
                | bit::PDCM
                | bit::OSXSAVE);
            if cfg.guest_cr4_osxsave && ecx & bit::XSAVE != 0 {
                ecx |= bit::OSXSAVE;
            }
            ecx |= bit::HYPERVISOR;
            edx &= !(bit::MCE | bit::MCA | bit::DS | bit::ACPI | bit::HTT | bit::TM | bit::PBE);
            // APIC ID, one logical processor, CLFLUSH size kept.
            let ebx = (cfg.apic_id << 24) | (1 << 16) | (ebx & 0xFF00);
            [eax, ebx, ecx, edx]
        }
        4 => {
            let mut r = host(4, sub);
            // One core, one thread shares each cache.
            r[0] &= 0x3FFF;
            r
        }
        5 | 0xA => [0; 4],
        6 => [1 << 2, 0, 0, 0], // ARAT: the APIC timer keeps running in idle
        7 if sub == 0 => {
            let mut r = host(7, 0);
            r[0] = 0; // no further subleaves
            r[1] &= !LEAF7_EBX_HIDDEN;
            r[2] &= !LEAF7_ECX_HIDDEN;
            r[3] &= !LEAF7_EDX_HIDDEN;
            r
        }
        7 => [0; 4],
        0xB | 0x1F => match sub {
            0 => [0, 1, 1 << 8, cfg.apic_id],
            1 => [0, 1, 1 | (2 << 8), cfg.apic_id],
            _ => [0, 0, sub & 0xFF, cfg.apic_id],
        },
        0x15 => {
            let (hz, ratio) = crystal(cfg.tsc_hz);
            [1, ratio, hz, 0]
        }
        0x16 => {
            let mhz = (cfg.tsc_hz / 1_000_000) as u32;
            [mhz, mhz, 100, 0]
        }
        l if l <= MAX_BASIC && l > host_max => [0; 4],
        l if l <= MAX_BASIC => host(l, sub),
        CPUID_HV_BASE => {
            let s = &CPUID_SIGNATURE;
            let w = |i: usize| u32::from_le_bytes([s[i], s[i + 1], s[i + 2], s[i + 3]]);
            [CPUID_HV_MAX, w(0), w(4), w(8)]
        }
        CPUID_HV_INFO => {
            let p = cfg.placement;
            [0, p.physical_cpu, p.vm_index, p.ram_mib]
        }
        0x4000_0002..=0x4000_00FF => [0; 4],
        0x8000_0007 => [0, 0, 0, 1 << 8], // invariant TSC only
        l if l >= 0x8000_0000 && l <= host(0x8000_0000, 0)[0] => host(l, sub),
        _ => [0; 4],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(leaf: u32, _sub: u32) -> [u32; 4] {
        match leaf {
            0 => [
                0xD,
                u32::from_le_bytes(*b"Genu"),
                u32::from_le_bytes(*b"ntel"),
                u32::from_le_bytes(*b"ineI"),
            ],
            0x8000_0000 => [0x8000_0008, 0, 0, 0],
            _ => [u32::MAX; 4],
        }
    }

    fn q(leaf: u32, sub: u32) -> [u32; 4] {
        guest_cpuid(leaf, sub, &host, &CpuidConfig::new(3, 2_000_000_000))
    }

    #[test]
    fn hides_vmx_and_says_hypervisor() {
        let r = q(1, 0);
        assert_eq!(r[2] & bit::VMX, 0);
        assert_eq!(r[2] & (bit::SMX | bit::MONITOR | bit::OSXSAVE), 0);
        assert_ne!(r[2] & bit::HYPERVISOR, 0);
        assert_eq!(r[3] & (bit::MCE | bit::MCA | bit::HTT), 0);
        assert_eq!(r[1] >> 24, 3, "APIC ID");
        assert_eq!((r[1] >> 16) & 0xFF, 1, "one logical CPU");
    }

    #[test]
    fn osxsave_follows_guest_cr4() {
        let mut cfg = CpuidConfig::new(0, 1_000_000_000);
        cfg.guest_cr4_osxsave = true;
        assert_ne!(guest_cpuid(1, 0, &host, &cfg)[2] & bit::OSXSAVE, 0);
    }

    #[test]
    fn signature_and_tsc_leaves() {
        assert_eq!(q(0, 0)[0], 0x16);
        let r = q(0x4000_0000, 0);
        assert_eq!(r[0], CPUID_HV_MAX);
        let mut sig = [0u8; 12];
        sig[0..4].copy_from_slice(&r[1].to_le_bytes());
        sig[4..8].copy_from_slice(&r[2].to_le_bytes());
        sig[8..12].copy_from_slice(&r[3].to_le_bytes());
        assert_eq!(&sig, b"vmlinkvmlink");
        let [den, num, crystal_hz, _] = q(0x15, 0);
        assert_eq!(
            u64::from(crystal_hz) * u64::from(num) / u64::from(den),
            2_000_000_000
        );
        assert_eq!(q(0x16, 0)[0], 2000);
        // Leaves between the host's max (0xD) and 0x16 are zero.
        assert_eq!(q(0x14, 0), [0; 4]);
        assert_eq!(q(0x4000_0005, 0), [0; 4]);
        assert_eq!(q(0x9000_0000, 0), [0; 4]);
    }

    #[test]
    fn info_leaf_tells_the_guest_its_placement() {
        let mut cfg = CpuidConfig::new(0, 1_000_000_000);
        cfg.placement = Placement {
            physical_cpu: 1,
            vm_index: 1,
            ram_mib: 192,
        };
        assert_eq!(guest_cpuid(CPUID_HV_INFO, 0, &host, &cfg), [0, 1, 1, 192]);
    }

    #[test]
    fn big_tsc_fits_the_crystal_field() {
        let (hz, ratio) = crystal(10_000_000_000);
        let back = u64::from(hz) * u64::from(ratio);
        assert!(10_000_000_000 - back < u64::from(ratio), "{back}");
    }

    #[test]
    fn topology_is_one_thread() {
        assert_eq!(q(0xB, 0), [0, 1, 1 << 8, 3]);
        assert_eq!(q(4, 0)[0] >> 14, 0);
        assert_eq!(q(7, 0)[3] & (1 << 29), 0, "no ARCH_CAPABILITIES");
        assert_eq!(q(0xA, 0), [0; 4], "no PMU");
    }
}
