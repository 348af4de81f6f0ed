//! Per-CPU data, reached through the GS base so that any code can tell
//! which CPU it runs on without a CPUID or an APIC read.

use core::arch::asm;

/// Lives for the whole run; GS base points at it.
#[repr(C)]
pub struct PerCpu {
    /// Index in the CPU list (0 = boot CPU). Must stay the first field.
    pub index: u64,
    pub apic_id: u64,
}

const IA32_GS_BASE: u32 = 0xC000_0101;

static BSP: PerCpu = PerCpu {
    index: 0,
    apic_id: 0,
};

/// Installs `pc` as this CPU's per-CPU block.
pub fn install(pc: &'static PerCpu) {
    // SAFETY: IA32_GS_BASE exists on every x86-64 CPU; vmlink uses GS for
    // nothing else.
    unsafe { super::cpu::wrmsr(IA32_GS_BASE, pc as *const PerCpu as u64) };
}

/// The boot CPU's block, usable before the heap exists.
pub fn install_bsp() {
    install(&BSP);
}

/// Index of the running CPU.
pub fn index() -> u64 {
    let v: u64;
    // SAFETY: GS base points at a live PerCpu (installed first thing on every
    // CPU) whose first field is `index`.
    unsafe { asm!("mov {}, gs:[0]", out(reg) v, options(nostack, readonly, preserves_flags)) };
    v
}
