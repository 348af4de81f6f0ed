//! Decoding of the VT-x capability MSRs (Intel SDM vol. 3, appendix A).
//!
//! Pure functions over the raw MSR values, so the host tests can check them
//! against values read from real CPUs and from Bochs.

use core::fmt;

/// The raw capability MSRs of one CPU.
#[derive(Clone, Copy, Debug, Default)]
pub struct VmxMsrs {
    /// IA32_VMX_BASIC (0x480).
    pub basic: u64,
    /// IA32_VMX_PINBASED_CTLS or IA32_VMX_TRUE_PINBASED_CTLS.
    pub pinbased: u64,
    /// IA32_VMX_PROCBASED_CTLS or its TRUE variant.
    pub procbased: u64,
    /// IA32_VMX_PROCBASED_CTLS2 (0x48B), 0 when secondary controls are absent.
    pub procbased2: u64,
    /// IA32_VMX_MISC (0x485).
    pub misc: u64,
    /// IA32_VMX_EPT_VPID_CAP (0x48C), 0 when neither EPT nor VPID exists.
    pub ept_vpid: u64,
    /// IA32_VMX_EXIT_CTLS or IA32_VMX_TRUE_EXIT_CTLS.
    pub exit: u64,
    /// IA32_VMX_ENTRY_CTLS or IA32_VMX_TRUE_ENTRY_CTLS.
    pub entry: u64,
    /// IA32_VMX_CR0_FIXED0/1 and IA32_VMX_CR4_FIXED0/1: bits that must be
    /// 1 (FIXED0) and bits that may be 1 (FIXED1) in VMX operation.
    pub cr0_fixed: (u64, u64),
    pub cr4_fixed: (u64, u64),
}

/// What IA32_FEATURE_CONTROL (0x3A) allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeatureControl {
    /// Locked with "VMX outside SMX" on.
    Enabled,
    /// Not locked: the hypervisor may set the enable and lock bits itself.
    Unlocked,
    /// Locked with VMX off: only the firmware setup can change it.
    LockedOff,
}

impl FeatureControl {
    pub fn from_msr(v: u64) -> Self {
        let locked = v & 1 != 0;
        let vmx_outside_smx = v & (1 << 2) != 0;
        match (locked, vmx_outside_smx) {
            (true, true) => FeatureControl::Enabled,
            (true, false) => FeatureControl::LockedOff,
            (false, _) => FeatureControl::Unlocked,
        }
    }

    /// The value to write to lock VT-x on.
    pub fn enable_value(v: u64) -> u64 {
        v | 1 | (1 << 2)
    }
}

const PROC_ACTIVATE_SECONDARY: u64 = 1 << 31;
const PIN_PREEMPTION_TIMER: u64 = 1 << 6;
const PIN_POSTED_INTERRUPTS: u64 = 1 << 7;
const SEC_VIRT_APIC_ACCESS: u64 = 1 << 0;
const SEC_EPT: u64 = 1 << 1;
const SEC_VPID: u64 = 1 << 5;
const SEC_UNRESTRICTED: u64 = 1 << 7;
const SEC_APIC_REG_VIRT: u64 = 1 << 8;
const SEC_VIRT_INTR_DELIVERY: u64 = 1 << 9;

/// Decoded view of [`VmxMsrs`].
#[derive(Clone, Copy, Debug)]
pub struct VmxCaps {
    pub msrs: VmxMsrs,
}

/// Allowed-1 half of a control MSR: a control may be 1 when its bit is set.
fn allowed1(msr: u64, bit: u64) -> bool {
    (msr >> 32) & bit != 0
}

impl VmxCaps {
    pub fn new(msrs: VmxMsrs) -> Self {
        VmxCaps { msrs }
    }

    pub fn revision_id(&self) -> u32 {
        (self.msrs.basic & 0x7FFF_FFFF) as u32
    }

    pub fn vmcs_size(&self) -> u32 {
        ((self.msrs.basic >> 32) & 0x1FFF) as u32
    }

    /// Memory type for the VMCS and VMX structures (6 = write-back).
    pub fn vmcs_memory_type(&self) -> u8 {
        ((self.msrs.basic >> 50) & 0xF) as u8
    }

    /// Whether the TRUE_* control MSRs exist (IA32_VMX_BASIC bit 55).
    pub fn has_true_controls(&self) -> bool {
        self.msrs.basic & (1 << 55) != 0
    }

    pub fn has_secondary(&self) -> bool {
        allowed1(self.msrs.procbased, PROC_ACTIVATE_SECONDARY)
    }

    fn secondary(&self, bit: u64) -> bool {
        self.has_secondary() && allowed1(self.msrs.procbased2, bit)
    }

    pub fn ept(&self) -> bool {
        self.secondary(SEC_EPT)
    }

    pub fn vpid(&self) -> bool {
        self.secondary(SEC_VPID)
    }

    pub fn unrestricted_guest(&self) -> bool {
        self.secondary(SEC_UNRESTRICTED)
    }

    pub fn apic_access(&self) -> bool {
        self.secondary(SEC_VIRT_APIC_ACCESS)
    }

    pub fn apic_register_virtualization(&self) -> bool {
        self.secondary(SEC_APIC_REG_VIRT)
    }

    pub fn virtual_interrupt_delivery(&self) -> bool {
        self.secondary(SEC_VIRT_INTR_DELIVERY)
    }

    /// Posted-interrupt processing: another CPU could make a vector pending
    /// in a running guest without an exit there. vmlink does not use it yet;
    /// the boot line says whether the CPU has it.
    pub fn posted_interrupts(&self) -> bool {
        allowed1(self.msrs.pinbased, PIN_POSTED_INTERRUPTS)
    }

    pub fn preemption_timer(&self) -> bool {
        allowed1(self.msrs.pinbased, PIN_PREEMPTION_TIMER)
    }

    /// The preemption timer counts down once every 2^rate TSC ticks.
    pub fn preemption_timer_rate(&self) -> u8 {
        (self.msrs.misc & 0x1F) as u8
    }

    pub fn ept_4level(&self) -> bool {
        self.ept() && self.msrs.ept_vpid & (1 << 6) != 0
    }

    pub fn ept_wb(&self) -> bool {
        self.ept() && self.msrs.ept_vpid & (1 << 14) != 0
    }

    pub fn ept_2m(&self) -> bool {
        self.ept() && self.msrs.ept_vpid & (1 << 16) != 0
    }

    pub fn ept_1g(&self) -> bool {
        self.ept() && self.msrs.ept_vpid & (1 << 17) != 0
    }

    pub fn invept(&self) -> bool {
        self.ept() && self.msrs.ept_vpid & (1 << 20) != 0
    }

    pub fn ept_ad(&self) -> bool {
        self.ept() && self.msrs.ept_vpid & (1 << 21) != 0
    }

    /// INVEPT with the all-context type (EPT_VPID_CAP bit 26).
    pub fn invept_all_context(&self) -> bool {
        self.invept() && self.msrs.ept_vpid & (1 << 26) != 0
    }

    /// INVVPID with the all-context type (EPT_VPID_CAP bit 42).
    pub fn invvpid_all_context(&self) -> bool {
        self.invvpid() && self.msrs.ept_vpid & (1 << 42) != 0
    }

    pub fn invvpid(&self) -> bool {
        self.vpid() && self.msrs.ept_vpid & (1 << 32) != 0
    }
}

fn yn(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

impl fmt::Display for VmxCaps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "basic={:#018x} rev={:#x} vmcs={}B true_ctls={} ept={}",
            self.msrs.basic,
            self.revision_id(),
            self.vmcs_size(),
            yn(self.has_true_controls()),
            yn(self.ept()),
        )?;
        if self.ept() {
            let mut sep = '(';
            for (on, name) in [
                (self.ept_4level(), "4-level"),
                (self.ept_wb(), "WB"),
                (self.ept_2m(), "2M"),
                (self.ept_1g(), "1G"),
                (self.ept_ad(), "A/D"),
                (self.invept(), "invept"),
            ] {
                if on {
                    write!(f, "{sep}{name}")?;
                    sep = ',';
                }
            }
            if sep == ',' {
                write!(f, ")")?;
            }
        }
        write!(
            f,
            " vpid={} unrestricted_guest={} preemption_timer={}",
            yn(self.vpid()),
            yn(self.unrestricted_guest()),
            yn(self.preemption_timer()),
        )?;
        if self.preemption_timer() {
            write!(f, "(tsc/2^{})", self.preemption_timer_rate())?;
        }
        write!(
            f,
            " apic_reg_virt={} virt_intr_delivery={} posted_interrupts={}",
            yn(self.apic_register_virtualization()),
            yn(self.virtual_interrupt_delivery()),
            yn(self.posted_interrupts()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values in the shape Bochs's corei7_skylake_x reports: everything on.
    fn full() -> VmxMsrs {
        VmxMsrs {
            basic: (1 << 55) | (6 << 50) | (0x1000 << 32) | 1,
            pinbased: (0x7F << 32) | 0x16,
            procbased: (0xFFFF_FFFE << 32) | 0x0401_E172,
            procbased2: (0x0000_03FF << 32),
            misc: 5,
            ept_vpid: (1 << 32)
                | (1 << 21)
                | (1 << 20)
                | (1 << 17)
                | (1 << 16)
                | (1 << 14)
                | (1 << 6),
            exit: (0x003F_FFFF << 32) | 0x0003_6DFF,
            entry: (0x0000_FFFF << 32) | 0x0000_11FF,
            cr0_fixed: (0x8000_0021, 0xFFFF_FFFF),
            cr4_fixed: (0x2000, 0x003F_FFFF),
        }
    }

    #[test]
    fn decodes_a_full_feature_set() {
        let c = VmxCaps::new(full());
        assert_eq!(c.revision_id(), 1);
        assert_eq!(c.vmcs_size(), 0x1000);
        assert_eq!(c.vmcs_memory_type(), 6);
        assert!(c.has_true_controls());
        assert!(c.ept() && c.ept_4level() && c.ept_wb() && c.ept_2m() && c.ept_1g());
        assert!(c.vpid() && c.invvpid() && c.invept() && c.ept_ad());
        assert!(c.unrestricted_guest() && c.preemption_timer());
        assert!(c.apic_register_virtualization() && c.virtual_interrupt_delivery());
        assert!(!c.posted_interrupts(), "Bochs 2.7 has none");
        assert_eq!(c.preemption_timer_rate(), 5);
        let s = c.to_string();
        assert!(s.contains("ept=yes(4-level,WB,2M,1G,A/D,invept)"), "{s}");
        assert!(s.contains("preemption_timer=yes(tsc/2^5)"), "{s}");
    }

    #[test]
    fn secondary_controls_count_only_when_activatable() {
        let mut m = full();
        m.procbased &= !(PROC_ACTIVATE_SECONDARY << 32);
        let c = VmxCaps::new(m);
        assert!(!c.ept() && !c.vpid() && !c.unrestricted_guest() && !c.invvpid());
        assert!(c.to_string().contains("ept=no vpid=no"));
    }

    #[test]
    fn no_preemption_timer() {
        let mut m = full();
        m.pinbased &= !(PIN_PREEMPTION_TIMER << 32);
        assert!(!VmxCaps::new(m).preemption_timer());
    }

    #[test]
    fn feature_control_states() {
        assert_eq!(FeatureControl::from_msr(0b101), FeatureControl::Enabled);
        assert_eq!(FeatureControl::from_msr(0b001), FeatureControl::LockedOff);
        assert_eq!(FeatureControl::from_msr(0), FeatureControl::Unlocked);
        assert_eq!(FeatureControl::enable_value(0), 0b101);
    }
}
