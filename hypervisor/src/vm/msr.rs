//! The guest's MSRs that exit to vmlink (the VT-x backend passes through
//! the ones the VMCS switches and emulates EFER itself). An explicit list
//! is emulated; every other MSR is a #GP for the guest, logged once.

use crate::devices::lapic::LocalApic;

const IA32_TSC: u32 = 0x10;
const IA32_APIC_BASE: u32 = 0x1B;
const IA32_FEATURE_CONTROL: u32 = 0x3A;
const IA32_TSC_ADJUST: u32 = 0x3B;
const IA32_BIOS_SIGN_ID: u32 = 0x8B;
const IA32_MTRRCAP: u32 = 0xFE;
const IA32_MISC_ENABLE: u32 = 0x1A0;
const IA32_MTRR_DEF_TYPE: u32 = 0x2FF;
const IA32_TSC_DEADLINE: u32 = 0x6E0;

const APIC_BASE: u64 = 0xFEE0_0000;
const APIC_BSP: u64 = 1 << 8;
const APIC_X2APIC: u64 = 1 << 10;
const APIC_ENABLE: u64 = 1 << 11;

/// The guest must get #GP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsrFault;

/// MSR state the guest owns; the caller keeps one per vCPU.
pub struct GuestMsrs {
    apic_base: u64,
    mtrr_def_type: u64,
    logged: [u32; 32],
    nlogged: usize,
}

impl Default for GuestMsrs {
    fn default() -> Self {
        Self::new()
    }
}

impl GuestMsrs {
    pub fn new() -> Self {
        GuestMsrs {
            apic_base: APIC_BASE | APIC_ENABLE | APIC_BSP,
            mtrr_def_type: 0xC06,
            logged: [0; 32],
            nlogged: 0,
        }
    }

    /// True the first time an unknown `msr` faults (so it is logged once).
    pub fn first_fault(&mut self, msr: u32) -> bool {
        if self.logged[..self.nlogged].contains(&msr) {
            return false;
        }
        if self.nlogged < self.logged.len() {
            self.logged[self.nlogged] = msr;
            self.nlogged += 1;
        }
        true
    }
}

pub fn rdmsr(m: &mut GuestMsrs, apic: &mut LocalApic, msr: u32, now: u64) -> Result<u64, MsrFault> {
    Ok(match msr {
        IA32_TSC => now,
        IA32_APIC_BASE => m.apic_base,
        IA32_FEATURE_CONTROL => 1, // locked, VMX off
        IA32_TSC_ADJUST | IA32_BIOS_SIGN_ID | IA32_MTRRCAP => 0,
        // Fast strings on; branch trace and PEBS unavailable.
        IA32_MISC_ENABLE => 1 | (1 << 11) | (1 << 12),
        IA32_MTRR_DEF_TYPE => m.mtrr_def_type,
        IA32_TSC_DEADLINE => apic.tsc_deadline(),
        0x800..=0x8FF => apic.rdmsr(msr, now).ok_or(MsrFault)?,
        _ => return Err(MsrFault),
    })
}

/// Returns the vector an x2APIC EOI ended, for the I/O APIC.
pub fn wrmsr(
    m: &mut GuestMsrs,
    apic: &mut LocalApic,
    msr: u32,
    v: u64,
    now: u64,
) -> Result<Option<u8>, MsrFault> {
    match msr {
        // Writing the TSC is not supported; ignoring it keeps time monotonic.
        IA32_TSC | IA32_BIOS_SIGN_ID | IA32_MISC_ENABLE => {}
        IA32_TSC_ADJUST if v == 0 => {}
        IA32_APIC_BASE => {
            let fixed = APIC_BASE | APIC_BSP;
            if v & !(APIC_X2APIC | APIC_ENABLE) != fixed {
                return Err(MsrFault); // relocating the APIC is not supported
            }
            let (was_x2, x2) = (m.apic_base & APIC_X2APIC != 0, v & APIC_X2APIC != 0);
            // x2APIC needs the APIC enabled; leaving x2APIC needs disabling.
            if (x2 && v & APIC_ENABLE == 0) || (was_x2 && !x2 && v & APIC_ENABLE != 0) {
                return Err(MsrFault);
            }
            apic.set_x2apic(x2);
            m.apic_base = v;
        }
        IA32_MTRR_DEF_TYPE if v & !0xCFF == 0 => m.mtrr_def_type = v,
        IA32_TSC_DEADLINE => apic.set_tsc_deadline(v),
        0x800..=0x8FF => return apic.wrmsr(msr, v, now).ok_or(MsrFault),
        _ => return Err(MsrFault),
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (GuestMsrs, LocalApic) {
        (GuestMsrs::new(), LocalApic::new(0, 1_000_000_000))
    }

    #[test]
    fn unknown_msrs_fault_and_log_once() {
        let (mut m, mut a) = setup();
        assert_eq!(rdmsr(&mut m, &mut a, 0x179, 0), Err(MsrFault));
        assert_eq!(wrmsr(&mut m, &mut a, 0x48, 1, 0), Err(MsrFault));
        assert!(m.first_fault(0x179));
        assert!(!m.first_fault(0x179));
    }

    #[test]
    fn apic_base_modes() {
        let (mut m, mut a) = setup();
        let base = rdmsr(&mut m, &mut a, IA32_APIC_BASE, 0).unwrap();
        assert_eq!(base, 0xFEE0_0900);
        assert_eq!(
            wrmsr(&mut m, &mut a, IA32_APIC_BASE, 0xFED0_0900, 0),
            Err(MsrFault)
        );
        wrmsr(&mut m, &mut a, IA32_APIC_BASE, base | APIC_X2APIC, 0).unwrap();
        assert!(a.x2apic());
        assert_eq!(rdmsr(&mut m, &mut a, 0x802, 0), Ok(0));
        assert_eq!(
            wrmsr(&mut m, &mut a, IA32_APIC_BASE, base, 0),
            Err(MsrFault),
            "x2APIC -> xAPIC directly"
        );
    }

    #[test]
    fn tsc_and_deadline() {
        let (mut m, mut a) = setup();
        assert_eq!(rdmsr(&mut m, &mut a, IA32_TSC, 1234), Ok(1234));
        a.write(0xF0, 0x1FF, 0);
        a.write(0x320, (2 << 17) | 0xEF, 0);
        wrmsr(&mut m, &mut a, IA32_TSC_DEADLINE, 999, 0).unwrap();
        assert_eq!(rdmsr(&mut m, &mut a, IA32_TSC_DEADLINE, 0), Ok(999));
        assert_eq!(rdmsr(&mut m, &mut a, IA32_FEATURE_CONTROL, 0), Ok(1));
    }
}
