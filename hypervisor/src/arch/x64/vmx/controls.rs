//! Choosing the VM-execution, exit and entry controls from what the CPU
//! allows (its capability MSRs), never from constants: a control vmlink
//! needs but the CPU cannot set is a clear error, an optional one is used
//! only where offered.

use super::caps::VmxCaps;

pub mod pin {
    pub const EXTERNAL_INTERRUPT_EXITING: u32 = 1 << 0;
    pub const NMI_EXITING: u32 = 1 << 3;
    pub const PREEMPTION_TIMER: u32 = 1 << 6;
}

pub mod proc {
    pub const INTERRUPT_WINDOW_EXITING: u32 = 1 << 2;
    pub const HLT_EXITING: u32 = 1 << 7;
    pub const USE_TPR_SHADOW: u32 = 1 << 21;
    pub const CR3_LOAD_EXITING: u32 = 1 << 15;
    pub const CR3_STORE_EXITING: u32 = 1 << 16;
    pub const USE_IO_BITMAPS: u32 = 1 << 25;
    pub const USE_MSR_BITMAPS: u32 = 1 << 28;
    pub const ACTIVATE_SECONDARY: u32 = 1 << 31;
}

pub mod proc2 {
    pub const VIRTUALIZE_APIC_ACCESSES: u32 = 1 << 0;
    pub const ENABLE_EPT: u32 = 1 << 1;
    pub const ENABLE_RDTSCP: u32 = 1 << 3;
    pub const ENABLE_VPID: u32 = 1 << 5;
    pub const VIRTUAL_INTERRUPT_DELIVERY: u32 = 1 << 9;
    pub const ENABLE_INVPCID: u32 = 1 << 12;
    pub const ENABLE_XSAVES: u32 = 1 << 20;
}

pub mod exit {
    pub const HOST_ADDRESS_SPACE_SIZE: u32 = 1 << 9;
    pub const ACK_INTERRUPT_ON_EXIT: u32 = 1 << 15;
    pub const SAVE_PAT: u32 = 1 << 18;
    pub const LOAD_PAT: u32 = 1 << 19;
    pub const SAVE_EFER: u32 = 1 << 20;
    pub const LOAD_EFER: u32 = 1 << 21;
}

pub mod entry {
    pub const IA32E_MODE_GUEST: u32 = 1 << 9;
    pub const LOAD_PAT: u32 = 1 << 14;
    pub const LOAD_EFER: u32 = 1 << 15;
}

/// The controls vmlink runs guests with, plus which optional features made
/// it in (the CPUID policy hides the instructions whose controls are off).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chosen {
    pub pin: u32,
    pub proc: u32,
    pub proc2: u32,
    pub exit: u32,
    pub entry: u32,
    pub preemption_timer: bool,
    pub vpid: bool,
    pub rdtscp: bool,
    pub invpcid: bool,
    pub xsaves: bool,
    pub ept_2m: bool,
    pub ept_1g: bool,
    /// Virtual-interrupt delivery: the CPU delivers the guest's pending
    /// vectors and retires its EOIs from the virtual-APIC page, so neither
    /// an interrupt window nor an EOI costs an exit.
    pub apic_virt: bool,
}

impl Chosen {
    /// The same controls with the local APIC emulated by exits alone
    /// (the `no-apicv` boot option, the self-test guest).
    pub fn without_apic_virt(mut self) -> Self {
        self.proc &= !proc::USE_TPR_SHADOW;
        self.proc2 &= !(proc2::VIRTUALIZE_APIC_ACCESSES | proc2::VIRTUAL_INTERRUPT_DELIVERY);
        self.apic_virt = false;
        self
    }

    pub fn page_sizes(&self) -> super::ept::PageSizes {
        super::ept::PageSizes {
            gib: self.ept_1g,
            mib2: self.ept_2m,
        }
    }
}

/// A required VT-x feature the CPU lacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Missing(pub &'static str);

impl core::fmt::Display for Missing {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "this CPU's VT-x lacks {}, which vmlink requires (Intel VT-x with EPT, Nehalem or newer; \
             under QEMU/KVM use -cpu host)",
            self.0
        )
    }
}

/// Applies a capability MSR to the wanted bits: allowed-0 bits (low half)
/// are forced on, bits outside allowed-1 (high half) are forced off.
pub fn adjust(msr: u64, want: u32) -> u32 {
    (want | msr as u32) & (msr >> 32) as u32
}

fn require(got: u32, bits: &[(u32, &'static str)]) -> Result<(), Missing> {
    match bits.iter().find(|(b, _)| got & b != *b) {
        Some((_, name)) => Err(Missing(name)),
        None => Ok(()),
    }
}

pub fn choose(caps: &VmxCaps) -> Result<Chosen, Missing> {
    let m = &caps.msrs;
    let pin = adjust(
        m.pinbased,
        pin::EXTERNAL_INTERRUPT_EXITING | pin::NMI_EXITING | pin::PREEMPTION_TIMER,
    );
    require(
        pin,
        &[
            (
                pin::EXTERNAL_INTERRUPT_EXITING,
                "external-interrupt exiting",
            ),
            (pin::NMI_EXITING, "NMI exiting"),
        ],
    )?;
    // CR3 exiting and the like stay on only where the CPU forces them
    // (no TRUE controls); the handler copes with those exits.
    let proc = adjust(
        m.procbased,
        proc::HLT_EXITING
            | proc::USE_IO_BITMAPS
            | proc::USE_MSR_BITMAPS
            | proc::ACTIVATE_SECONDARY
            | proc::USE_TPR_SHADOW,
    );
    require(
        proc,
        &[
            (proc::HLT_EXITING, "HLT exiting"),
            (proc::USE_IO_BITMAPS, "I/O bitmaps"),
            (proc::USE_MSR_BITMAPS, "MSR bitmaps"),
            (
                proc::ACTIVATE_SECONDARY,
                "secondary processor-based controls",
            ),
        ],
    )?;
    if (m.procbased >> 32) as u32 & proc::INTERRUPT_WINDOW_EXITING == 0 {
        return Err(Missing("interrupt-window exiting"));
    }
    let proc2 = adjust(
        m.procbased2,
        proc2::ENABLE_EPT
            | proc2::ENABLE_VPID
            | proc2::ENABLE_RDTSCP
            | proc2::ENABLE_INVPCID
            | proc2::ENABLE_XSAVES
            | proc2::VIRTUALIZE_APIC_ACCESSES
            | proc2::VIRTUAL_INTERRUPT_DELIVERY,
    );
    require(proc2, &[(proc2::ENABLE_EPT, "EPT")])?;
    if !caps.ept_4level() {
        return Err(Missing("4-level EPT page walks"));
    }
    if !caps.ept_wb() {
        return Err(Missing("write-back EPT structures"));
    }
    if !caps.invept() {
        return Err(Missing("INVEPT"));
    }
    let vpid = proc2 & proc2::ENABLE_VPID != 0 && caps.invvpid();
    let proc2 = if vpid {
        proc2
    } else {
        proc2 & !proc2::ENABLE_VPID
    };
    // Virtual-interrupt delivery needs all three controls (and external-
    // interrupt exiting, required above); with any missing, the APIC stays
    // emulated by exits.
    let apic_bits = proc2::VIRTUALIZE_APIC_ACCESSES | proc2::VIRTUAL_INTERRUPT_DELIVERY;
    let apic_virt = proc & proc::USE_TPR_SHADOW != 0 && proc2 & apic_bits == apic_bits;
    let exit = adjust(
        m.exit,
        exit::HOST_ADDRESS_SPACE_SIZE
            | exit::ACK_INTERRUPT_ON_EXIT
            | exit::SAVE_PAT
            | exit::LOAD_PAT
            | exit::SAVE_EFER
            | exit::LOAD_EFER,
    );
    require(
        exit,
        &[
            (
                exit::HOST_ADDRESS_SPACE_SIZE,
                "64-bit host address space on exit",
            ),
            (exit::ACK_INTERRUPT_ON_EXIT, "acknowledge interrupt on exit"),
            (exit::SAVE_PAT | exit::LOAD_PAT, "PAT switching on exit"),
            (exit::SAVE_EFER | exit::LOAD_EFER, "EFER switching on exit"),
        ],
    )?;
    let entry = adjust(
        m.entry,
        entry::IA32E_MODE_GUEST | entry::LOAD_PAT | entry::LOAD_EFER,
    );
    require(
        entry,
        &[
            (entry::IA32E_MODE_GUEST, "IA-32e mode guests"),
            (entry::LOAD_PAT, "PAT loading on entry"),
            (entry::LOAD_EFER, "EFER loading on entry"),
        ],
    )?;
    let chosen = Chosen {
        pin,
        proc,
        proc2,
        exit,
        entry,
        preemption_timer: pin & pin::PREEMPTION_TIMER != 0,
        vpid,
        rdtscp: proc2 & proc2::ENABLE_RDTSCP != 0,
        invpcid: proc2 & proc2::ENABLE_INVPCID != 0,
        xsaves: proc2 & proc2::ENABLE_XSAVES != 0,
        ept_2m: caps.ept_2m(),
        ept_1g: caps.ept_1g(),
        apic_virt,
    };
    // Without all three, none of the APIC controls stays on.
    Ok(if apic_virt {
        chosen
    } else {
        chosen.without_apic_virt()
    })
}

/// Adjusts a CR0/CR4 value to the bits VMX operation fixes.
pub fn fix_cr(value: u64, fixed: (u64, u64)) -> u64 {
    (value | fixed.0) & fixed.1
}

#[cfg(test)]
mod tests {
    use super::super::caps::{VmxCaps, VmxMsrs};
    use super::*;

    fn msrs() -> VmxMsrs {
        VmxMsrs {
            basic: (1 << 55) | (6 << 50) | (0x1000 << 32) | 1,
            pinbased: (0x7F << 32) | 0x16,
            procbased: (0xFFFF_FFFE << 32) | 0x0400_6172,
            procbased2: 0x0011_13FF << 32,
            misc: 5,
            ept_vpid: (1 << 32) | (1 << 20) | (1 << 17) | (1 << 16) | (1 << 14) | (1 << 6),
            exit: (0x003F_FFFF << 32) | 0x0003_6DFF,
            entry: (0x0000_FFFF << 32) | 0x0000_11FF,
            cr0_fixed: (0x8000_0021, 0xFFFF_FFFF),
            cr4_fixed: (0x2000, 0x003F_FFFF),
        }
    }

    #[test]
    fn adjust_honours_both_halves() {
        assert_eq!(
            adjust(0x0000_00F0_0000_0011, 0x0000_0022),
            0x31 & 0xF0 | 0x11 & 0xF0
        );
        assert_eq!(adjust(0xFFFF_FFFF_0000_0001, 0), 1);
        assert_eq!(adjust(0x0000_0000_0000_0000, 0xFFFF), 0);
    }

    #[test]
    fn full_feature_set() {
        let c = choose(&VmxCaps::new(msrs())).unwrap();
        assert!(c.preemption_timer && c.vpid && c.rdtscp && c.invpcid && c.xsaves);
        assert_ne!(c.proc & proc::HLT_EXITING, 0);
        assert_eq!(
            c.proc & proc::CR3_LOAD_EXITING,
            0,
            "TRUE controls let CR3 exiting be off"
        );
        assert_eq!(
            c.proc & proc::INTERRUPT_WINDOW_EXITING,
            0,
            "set on demand only"
        );
        // allowed-0 bits of the MSR stay set
        assert_eq!(c.pin & 0x16, 0x16);
        assert!(c.apic_virt);
        assert_ne!(c.proc & proc::USE_TPR_SHADOW, 0);
        let off = c.without_apic_virt();
        assert!(!off.apic_virt);
        assert_eq!(off.proc & proc::USE_TPR_SHADOW, 0);
        assert_eq!(
            off.proc2 & (proc2::VIRTUALIZE_APIC_ACCESSES | proc2::VIRTUAL_INTERRUPT_DELIVERY),
            0
        );
    }

    #[test]
    fn apic_virtualization_needs_all_three_controls() {
        for (which, bit) in [
            (0, proc2::VIRTUALIZE_APIC_ACCESSES),
            (0, proc2::VIRTUAL_INTERRUPT_DELIVERY),
            (1, proc::USE_TPR_SHADOW),
        ] {
            let mut m = msrs();
            if which == 0 {
                m.procbased2 &= !(u64::from(bit) << 32);
            } else {
                m.procbased &= !(u64::from(bit) << 32);
            }
            let c = choose(&VmxCaps::new(m)).unwrap();
            assert!(!c.apic_virt, "{bit:#x}");
            assert_eq!(c.proc2 & proc2::VIRTUAL_INTERRUPT_DELIVERY, 0);
            assert_eq!(c.proc & proc::USE_TPR_SHADOW, 0);
        }
    }

    #[test]
    fn cr3_exiting_stays_when_the_cpu_forces_it() {
        let mut m = msrs();
        m.procbased |= u64::from(proc::CR3_LOAD_EXITING | proc::CR3_STORE_EXITING);
        let c = choose(&VmxCaps::new(m)).unwrap();
        assert_ne!(c.proc & proc::CR3_LOAD_EXITING, 0);
    }

    #[test]
    fn optional_features_drop_out() {
        let mut m = msrs();
        m.pinbased &= !(u64::from(pin::PREEMPTION_TIMER) << 32);
        m.procbased2 &= !(u64::from(proc2::ENABLE_VPID | proc2::ENABLE_XSAVES) << 32);
        let c = choose(&VmxCaps::new(m)).unwrap();
        assert!(!c.preemption_timer && !c.vpid && !c.xsaves);
        assert_eq!(c.proc2 & proc2::ENABLE_VPID, 0);
    }

    #[test]
    fn missing_ept_is_named() {
        let mut m = msrs();
        m.procbased2 &= !(u64::from(proc2::ENABLE_EPT) << 32);
        let e = choose(&VmxCaps::new(m)).unwrap_err();
        assert_eq!(e, Missing("EPT"));
        assert!(e.to_string().contains("lacks EPT"));
        let mut m = msrs();
        m.ept_vpid &= !(1 << 14);
        assert_eq!(
            choose(&VmxCaps::new(m)).unwrap_err(),
            Missing("write-back EPT structures")
        );
    }

    #[test]
    fn cr_fixed_bits() {
        assert_eq!(fix_cr(0x20, (0x8000_0021, 0xFFFF_FFFF)), 0x8000_0021);
        assert_eq!(fix_cr(0x2000 | (1 << 30), (0x2000, 0x003F_FFFF)), 0x2000);
    }
}
