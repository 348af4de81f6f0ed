//! The local APIC of the running CPU, in xAPIC (MMIO) or x2APIC (MSR) mode,
//! whichever the firmware left it in.

use super::cpu::{rdmsr, wrmsr};

const IA32_APIC_BASE: u32 = 0x1B;
const APIC_BASE_X2APIC: u64 = 1 << 10;
const APIC_BASE_ENABLE: u64 = 1 << 11;

const REG_ID: u32 = 0x20;
const REG_EOI: u32 = 0xB0;
const REG_SVR: u32 = 0xF0;
const REG_LVT_LINT0: u32 = 0x350;
const REG_LVT_LINT1: u32 = 0x360;
const REG_ICR_LOW: u32 = 0x300;
const REG_ICR_HIGH: u32 = 0x310;

const ICR_DELIVERY_PENDING: u32 = 1 << 12;
pub const ICR_INIT: u32 = 0b101 << 8;
pub const ICR_STARTUP: u32 = 0b110 << 8;
pub const ICR_NMI: u32 = 0b100 << 8;
pub const ICR_LEVEL_ASSERT: u32 = 1 << 14;
pub const ICR_ALL_EXCLUDING_SELF: u32 = 0b11 << 18;

#[derive(Clone, Copy)]
pub struct LocalApic {
    x2apic: bool,
    base: u64,
}

impl LocalApic {
    /// The running CPU's APIC, software-enabled.
    pub fn this_cpu() -> Self {
        // SAFETY: IA32_APIC_BASE exists on every x86-64 CPU.
        let v = unsafe { rdmsr(IA32_APIC_BASE) };
        if v & APIC_BASE_ENABLE == 0 {
            // SAFETY: turning the APIC on in xAPIC mode at its current base.
            unsafe { wrmsr(IA32_APIC_BASE, v | APIC_BASE_ENABLE) };
        }
        let apic = LocalApic {
            x2apic: v & APIC_BASE_X2APIC != 0,
            base: v & 0x000F_FFFF_FFFF_F000,
        };
        // Software-enable with spurious vector 0xFF.
        let svr = apic.read(REG_SVR);
        apic.write(REG_SVR, svr | 0x1FF);
        apic
    }

    pub fn id(&self) -> u32 {
        let v = self.read(REG_ID);
        if self.x2apic {
            v
        } else {
            v >> 24
        }
    }

    fn read(&self, reg: u32) -> u32 {
        if self.x2apic {
            // SAFETY: x2APIC mode is on, so MSR 0x800 + reg/16 exists.
            unsafe { rdmsr(0x800 + (reg >> 4)) as u32 }
        } else {
            // SAFETY: the APIC page is identity-mapped and `reg` is a
            // register offset inside it.
            unsafe { core::ptr::read_volatile((self.base + u64::from(reg)) as *const u32) }
        }
    }

    fn write(&self, reg: u32, value: u32) {
        if self.x2apic {
            // SAFETY: as in `read`.
            unsafe { wrmsr(0x800 + (reg >> 4), u64::from(value)) }
        } else {
            // SAFETY: as in `read`.
            unsafe { core::ptr::write_volatile((self.base + u64::from(reg)) as *mut u32, value) }
        }
    }

    /// Signals end-of-interrupt for the vector in service.
    pub fn eoi(&self) {
        self.write(REG_EOI, 0);
    }

    /// Masks LINT0/LINT1 so that the legacy PIC and NMI pins the firmware
    /// wired there never reach vmlink (nor, through it, a guest).
    pub fn mask_lints(&self) {
        for reg in [REG_LVT_LINT0, REG_LVT_LINT1] {
            let v = self.read(reg);
            self.write(reg, v | (1 << 16));
        }
    }

    /// Sends an IPI and waits until the APIC has accepted it.
    pub fn send_ipi(&self, dest_apic_id: u32, icr_low: u32) {
        if self.x2apic {
            // SAFETY: the x2APIC ICR is one 64-bit MSR.
            unsafe { wrmsr(0x830, (u64::from(dest_apic_id) << 32) | u64::from(icr_low)) };
            return;
        }
        self.write(REG_ICR_HIGH, dest_apic_id << 24);
        self.write(REG_ICR_LOW, icr_low);
        for _ in 0..10_000_000u32 {
            if self.read(REG_ICR_LOW) & ICR_DELIVERY_PENDING == 0 {
                break;
            }
            core::hint::spin_loop();
        }
    }
}
