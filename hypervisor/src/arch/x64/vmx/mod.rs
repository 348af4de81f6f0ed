//! VT-x on the running CPU: is it there, may it be turned on, and what can
//! it do; the submodules enter VMX operation and run guests.

pub mod caps;
pub mod controls;
mod entry;
pub mod ept;
pub mod vcpu;
pub mod vmcs;

use super::cpu::{has_vmx, rdmsr, vendor, wrmsr};
use caps::{FeatureControl, VmxCaps, VmxMsrs};

const IA32_FEATURE_CONTROL: u32 = 0x3A;
const IA32_VMX_BASIC: u32 = 0x480;
const IA32_VMX_PINBASED_CTLS: u32 = 0x481;
const IA32_VMX_PROCBASED_CTLS: u32 = 0x482;
const IA32_VMX_MISC: u32 = 0x485;
const IA32_VMX_PROCBASED_CTLS2: u32 = 0x48B;
const IA32_VMX_EPT_VPID_CAP: u32 = 0x48C;
const IA32_VMX_TRUE_PINBASED_CTLS: u32 = 0x48D;
const IA32_VMX_TRUE_PROCBASED_CTLS: u32 = 0x48E;
const IA32_VMX_EXIT_CTLS: u32 = 0x483;
const IA32_VMX_ENTRY_CTLS: u32 = 0x484;
const IA32_VMX_TRUE_EXIT_CTLS: u32 = 0x48F;
const IA32_VMX_TRUE_ENTRY_CTLS: u32 = 0x490;
const IA32_VMX_CR0_FIXED0: u32 = 0x486;
const IA32_VMX_CR0_FIXED1: u32 = 0x487;
const IA32_VMX_CR4_FIXED0: u32 = 0x488;
const IA32_VMX_CR4_FIXED1: u32 = 0x489;

/// Why VT-x cannot be used on this CPU, with what to do about it.
#[derive(Clone, Copy, Debug)]
pub enum Unavailable {
    NotIntel([u8; 12]),
    NoVmxFlag,
    DisabledByFirmware,
}

impl core::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        const HOWTO: &str =
            "run vmlink on an Intel CPU with VT-x, under QEMU/KVM with nested VT-x \
             (modprobe kvm_intel nested=1; cargo xtask run --emulator qemu-kvm) \
             or under Bochs (cargo xtask run --emulator bochs)";
        match self {
            Unavailable::NotIntel(v) => write!(
                f,
                "the CPU vendor is {} and vmlink needs Intel VT-x; {HOWTO}",
                core::str::from_utf8(v).unwrap_or("unknown")
            ),
            Unavailable::NoVmxFlag => write!(
                f,
                "CPUID.1:ECX.VMX is 0 (no VT-x, or the emulator does not expose it); {HOWTO}"
            ),
            Unavailable::DisabledByFirmware => write!(
                f,
                "VT-x is disabled and locked by the firmware (IA32_FEATURE_CONTROL); \
                 enable Intel Virtualization Technology in the firmware setup"
            ),
        }
    }
}

/// Checks that VT-x can be turned on here, enabling it in
/// IA32_FEATURE_CONTROL when the firmware left that unlocked.
pub fn check_and_enable() -> Result<(), Unavailable> {
    let v = vendor();
    if &v != b"GenuineIntel" && !has_vmx() {
        return Err(Unavailable::NotIntel(v));
    }
    if !has_vmx() {
        return Err(Unavailable::NoVmxFlag);
    }
    // SAFETY: IA32_FEATURE_CONTROL exists on every CPU with VMX.
    let fc = unsafe { rdmsr(IA32_FEATURE_CONTROL) };
    match FeatureControl::from_msr(fc) {
        FeatureControl::Enabled => Ok(()),
        FeatureControl::LockedOff => Err(Unavailable::DisabledByFirmware),
        FeatureControl::Unlocked => {
            // SAFETY: the MSR is unlocked, so writing the enable and lock
            // bits is allowed; it only permits VMXON outside SMX.
            unsafe { wrmsr(IA32_FEATURE_CONTROL, FeatureControl::enable_value(fc)) };
            Ok(())
        }
    }
}

/// Reads the capability MSRs (only call after [`check_and_enable`]).
pub fn read_caps() -> VmxCaps {
    // SAFETY: every MSR read below exists when CPUID reports VMX; the TRUE_*
    // ones and CTLS2/EPT_VPID_CAP are read only when the MSRs that announce
    // them say they exist (SDM vol. 3, A.1-A.3).
    unsafe {
        let basic = rdmsr(IA32_VMX_BASIC);
        let true_ctls = basic & (1 << 55) != 0;
        let (pin, proc_, exit, entry) = if true_ctls {
            (
                IA32_VMX_TRUE_PINBASED_CTLS,
                IA32_VMX_TRUE_PROCBASED_CTLS,
                IA32_VMX_TRUE_EXIT_CTLS,
                IA32_VMX_TRUE_ENTRY_CTLS,
            )
        } else {
            (
                IA32_VMX_PINBASED_CTLS,
                IA32_VMX_PROCBASED_CTLS,
                IA32_VMX_EXIT_CTLS,
                IA32_VMX_ENTRY_CTLS,
            )
        };
        let procbased = rdmsr(proc_);
        let procbased2 = if (procbased >> 32) & (1 << 31) != 0 {
            rdmsr(IA32_VMX_PROCBASED_CTLS2)
        } else {
            0
        };
        // EPT_VPID_CAP exists if either EPT or VPID may be enabled.
        let ept_vpid = if (procbased2 >> 32) & ((1 << 1) | (1 << 5)) != 0 {
            rdmsr(IA32_VMX_EPT_VPID_CAP)
        } else {
            0
        };
        VmxCaps::new(VmxMsrs {
            basic,
            pinbased: rdmsr(pin),
            procbased,
            procbased2,
            misc: rdmsr(IA32_VMX_MISC),
            ept_vpid,
            exit: rdmsr(exit),
            entry: rdmsr(entry),
            cr0_fixed: (rdmsr(IA32_VMX_CR0_FIXED0), rdmsr(IA32_VMX_CR0_FIXED1)),
            cr4_fixed: (rdmsr(IA32_VMX_CR4_FIXED0), rdmsr(IA32_VMX_CR4_FIXED1)),
        })
    }
}
