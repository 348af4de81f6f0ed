//! Starting the application processors: the AP trampoline is copied to a
//! fixed low page, its parameter block filled, and each AP is woken with
//! INIT-SIPI-SIPI (Intel SDM vol. 3, 9.4.4). APs are started one at a time
//! so the single parameter block suffices.

use super::lapic::{LocalApic, ICR_INIT, ICR_LEVEL_ASSERT, ICR_STARTUP};
use super::pit::delay_us;
use core::sync::atomic::{AtomicU64, Ordering};

/// Physical address the trampoline runs at; the SIPI vector is its page
/// number. Must match TRAMP_BASE in boot/ap_trampoline.S.
pub const TRAMPOLINE_BASE: u64 = 0x8000;
const PARAMS_SIZE: usize = 32;

/// Parameter block at the end of the trampoline (see ap_trampoline.S).
#[repr(C)]
struct Params {
    cr3: u64,
    stack_top: u64,
    arg: u64,
    entry: u64,
}

/// Counts APs that reached Rust; an AP bumps it from its entry function.
pub static STARTED: AtomicU64 = AtomicU64::new(0);

/// What an AP needs to start.
pub struct ApStart {
    pub apic_id: u32,
    /// CR3 the trampoline loads (must be below 4 GiB).
    pub cr3: u64,
    pub stack_top: u64,
    /// Passed to `entry` in RDI.
    pub arg: u64,
    pub entry: extern "C" fn(u64) -> !,
}

/// Copies the trampoline code to [`TRAMPOLINE_BASE`].
///
/// # Safety
/// The page at TRAMPOLINE_BASE must be reserved for this (the frame
/// allocator never hands out the first MiB) and identity-mapped.
pub unsafe fn install_trampoline(code: &[u8]) {
    assert!(
        code.len() <= 4096 && code.len() >= PARAMS_SIZE,
        "AP trampoline size"
    );
    // SAFETY: per the function contract the destination page is ours.
    unsafe {
        core::ptr::copy_nonoverlapping(code.as_ptr(), TRAMPOLINE_BASE as *mut u8, code.len());
    }
}

/// Starts one AP and waits until it has entered Rust. Returns false if it
/// did not within about a second.
///
/// # Safety
/// The trampoline must be installed with a code length of `tramp_len`, and
/// the stack must be memory nobody else uses.
pub unsafe fn start_ap(apic: &LocalApic, tramp_len: usize, ap: &ApStart) -> bool {
    let params = (TRAMPOLINE_BASE as usize + tramp_len - PARAMS_SIZE) as *mut Params;
    // SAFETY: the parameter block is the last 32 bytes of the installed
    // trampoline; no AP is running the trampoline now (APs start one by one).
    unsafe {
        params.write_volatile(Params {
            cr3: ap.cr3,
            stack_top: ap.stack_top,
            arg: ap.arg,
            entry: ap.entry as *const () as u64,
        });
    }
    let before = STARTED.load(Ordering::SeqCst);
    let vector = (TRAMPOLINE_BASE >> 12) as u32;
    apic.send_ipi(ap.apic_id, ICR_INIT | ICR_LEVEL_ASSERT);
    delay_us(10_000);
    for _ in 0..2 {
        apic.send_ipi(ap.apic_id, ICR_STARTUP | vector);
        delay_us(200);
        if STARTED.load(Ordering::SeqCst) != before {
            return true;
        }
    }
    for _ in 0..1000 {
        if STARTED.load(Ordering::SeqCst) != before {
            return true;
        }
        delay_us(1000);
    }
    false
}

/// Vector of the IPI that makes another CPU leave its guest so that it
/// looks at what the channel has for it. It never reaches the IDT: the
/// hypervisor runs with interrupts off, and in a guest the CPU exits and
/// acknowledges it ("acknowledge interrupt on exit").
pub const KICK_VECTOR: u8 = 0xF2;

/// Sends the kick IPI to the CPU with `apic_id`.
pub fn kick(apic_id: u32) {
    LocalApic::this_cpu().send_ipi(apic_id, u32::from(KICK_VECTOR) | ICR_LEVEL_ASSERT);
}
