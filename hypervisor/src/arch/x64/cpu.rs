//! CPU identification, MSRs and the instructions that stop a CPU.

use core::arch::x86_64::{__cpuid_count, CpuidResult};
use x86_64::registers::model_specific::Msr;

pub fn cpuid(leaf: u32, sub: u32) -> CpuidResult {
    __cpuid_count(leaf, sub)
}

/// The CPU vendor string ("GenuineIntel", "AuthenticAMD", ...).
pub fn vendor() -> [u8; 12] {
    let r = cpuid(0, 0);
    let mut v = [0u8; 12];
    v[0..4].copy_from_slice(&r.ebx.to_le_bytes());
    v[4..8].copy_from_slice(&r.edx.to_le_bytes());
    v[8..12].copy_from_slice(&r.ecx.to_le_bytes());
    v
}

/// CPUID.1:ECX.VMX.
pub fn has_vmx() -> bool {
    cpuid(1, 0).ecx & (1 << 5) != 0
}

/// CPUID.80000001:EDX.Page1GB.
pub fn has_1g_pages() -> bool {
    cpuid(0x8000_0000, 0).eax >= 0x8000_0001 && cpuid(0x8000_0001, 0).edx & (1 << 26) != 0
}

/// Initial APIC ID of the running CPU (x2APIC ID where leaf 0xB exists).
pub fn apic_id() -> u32 {
    if cpuid(0, 0).eax >= 0xB {
        let r = cpuid(0xB, 0);
        if r.ebx != 0 {
            return r.edx;
        }
    }
    cpuid(1, 0).ebx >> 24
}

/// Reads an MSR.
///
/// # Safety
/// The MSR must exist on this CPU, or RDMSR raises #GP.
pub unsafe fn rdmsr(msr: u32) -> u64 {
    // SAFETY: forwarded to the caller.
    unsafe { Msr::new(msr).read() }
}

/// Writes an MSR.
///
/// # Safety
/// The MSR must exist and the value must be valid for it; some MSRs change
/// how the CPU runs.
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: forwarded to the caller.
    unsafe { Msr::new(msr).write(value) }
}

/// Stops this CPU for good: interrupts off, halt forever (an NMI that
/// arrives returns into the loop).
pub fn halt_forever() -> ! {
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}

/// Spin-wait hint.
pub fn relax() {
    core::hint::spin_loop();
}

/// Masks both legacy 8259 PICs: vmlink takes no interrupts from them, and a
/// PIT tick routed through them must not reach a guest.
pub fn mask_legacy_pic() {
    use x86_64::instructions::port::Port;
    // SAFETY: writing the interrupt mask registers of the two PICs only
    // masks their inputs.
    unsafe {
        Port::<u8>::new(0x21).write(0xFF);
        Port::<u8>::new(0xA1).write(0xFF);
    }
}

/// CPUID.1:ECX.XSAVE.
pub fn has_xsave() -> bool {
    cpuid(1, 0).ecx & (1 << 26) != 0
}

/// Turns on CR4.OSXSAVE where XSAVE exists, so that guests' XSETBV can be
/// emulated by executing it; XCR0 starts as x87|SSE.
pub fn enable_xsave() {
    if !has_xsave() {
        return;
    }
    use x86_64::registers::control::Cr4;
    // SAFETY: OSXSAVE is valid when CPUID reports XSAVE; XCR0 = x87|SSE is
    // always a valid value then.
    unsafe {
        Cr4::write_raw(Cr4::read_raw() | (1 << 18));
        core::arch::x86_64::_xsetbv(0, 3);
    }
}
