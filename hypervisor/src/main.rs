//! The vmlink image: the boot assembly, and the runtime pieces a
//! freestanding Rust binary must bring itself (panic handler, unwinding
//! stubs, mem* functions). Everything else is in the library.
#![no_std]
#![no_main]

use core::arch::{asm, global_asm};
use core::panic::PanicInfo;
use core::sync::atomic::{AtomicBool, Ordering};

use vmlink_hypervisor::arch::x64::{cpu, idt, lapic, percpu};
use vmlink_hypervisor::range::Range;
use vmlink_hypervisor::start::{self, ImageLayout};

global_asm!(include_str!("../../boot/entry.S"), options(att_syntax));
global_asm!(
    include_str!("../../boot/ap_trampoline.S"),
    options(att_syntax)
);

extern "C" {
    static __image_start: u8;
    static __image_end: u8;
    static ap_trampoline_start: u8;
    static ap_trampoline_end: u8;
    static boot_pml4: u8;
}

/// Called by boot/entry.S in long mode on the boot stack.
#[no_mangle]
extern "C" fn vmlink_main(magic: u32, info: u32) -> ! {
    // SAFETY: these are linker-script and assembly symbols; only their
    // addresses are taken, and the trampoline bytes are immutable rodata.
    let layout = unsafe {
        let start = &raw const ap_trampoline_start;
        let end = &raw const ap_trampoline_end;
        ImageLayout {
            image: Range::new(
                &raw const __image_start as u64,
                &raw const __image_end as u64,
            ),
            ap_trampoline: core::slice::from_raw_parts(start, end as usize - start as usize),
            boot_pml4: &raw const boot_pml4 as u64,
        }
    };
    start::bsp_main(magic, info, layout)
}

static PANICKING: AtomicBool = AtomicBool::new(false);

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    if PANICKING.swap(true, Ordering::SeqCst) {
        // Another CPU is already reporting; stop quietly.
        cpu::halt_forever();
    }
    // Stop every other CPU with an NMI (idt.rs halts on it once STOP_ALL is set).
    idt::STOP_ALL.store(true, Ordering::SeqCst);
    lapic::LocalApic::this_cpu().send_ipi(0, lapic::ICR_NMI | lapic::ICR_ALL_EXCLUDING_SELF);
    let (file, line) = info.location().map_or(("?", 0), |l| (l.file(), l.line()));
    vmlink_hypervisor::console::line_forced(format_args!(
        "PANIC on CPU {} at {}:{}: {}",
        percpu::index(),
        file,
        line,
        info.message()
    ));
    start::system_halt(vmlink_abi::exit_status::PANIC)
}

// The prebuilt `core`/`alloc` reference these even with panic=abort.
#[no_mangle]
extern "C" fn rust_eh_personality() {}

#[no_mangle]
extern "C" fn _Unwind_Resume() -> ! {
    cpu::halt_forever()
}

// mem* in assembly: a Rust loop could be compiled back into a call to
// itself.
#[no_mangle]
unsafe extern "C" fn memcpy(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees both ranges are valid and disjoint.
    unsafe {
        asm!("rep movsb", inout("rcx") n => _, inout("rdi") dest => _, inout("rsi") src => _, options(nostack, preserves_flags));
    }
    dest
}

#[no_mangle]
unsafe extern "C" fn memmove(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dest as usize) <= (src as usize) || (dest as usize) >= (src as usize).wrapping_add(n) {
        // SAFETY: copying forwards is safe when dest is below src or the
        // ranges are disjoint.
        return unsafe { memcpy(dest, src, n) };
    }
    // SAFETY: overlapping with dest above src: copy backwards, last byte
    // first, with the direction flag set and restored.
    unsafe {
        asm!(
            "std",
            "rep movsb",
            "cld",
            inout("rcx") n => _,
            inout("rdi") dest.add(n - 1) => _,
            inout("rsi") src.add(n - 1) => _,
            options(nostack)
        );
    }
    dest
}

#[no_mangle]
unsafe extern "C" fn memset(dest: *mut u8, c: i32, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees the range is valid.
    unsafe {
        asm!("rep stosb", inout("rcx") n => _, inout("rdi") dest => _, in("al") c as u8, options(nostack, preserves_flags));
    }
    dest
}

#[no_mangle]
unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    for i in 0..n {
        // SAFETY: the caller guarantees both ranges hold n bytes.
        let (x, y) = unsafe { (a.add(i).read_volatile(), b.add(i).read_volatile()) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
    }
    0
}

#[no_mangle]
unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: same contract as memcmp.
    unsafe { memcmp(a, b, n) }
}
