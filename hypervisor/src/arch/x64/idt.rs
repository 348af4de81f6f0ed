//! Exception handling. Stable Rust has no interrupt calling convention, so
//! small assembly stubs save the registers and call one Rust handler with
//! the whole frame. Every exception in the hypervisor itself is a bug:
//! the handler reports it and panics. NMIs are the exception: they are how
//! a panicking CPU stops the others.

use core::arch::global_asm;
use core::sync::atomic::{AtomicBool, Ordering};
use spin::Once;
use x86_64::structures::idt::InterruptDescriptorTable;
use x86_64::VirtAddr;

use super::gdt::{IST_DOUBLE_FAULT, IST_MACHINE_CHECK, IST_NMI};

/// Registers as the stubs leave them on the stack.
#[repr(C)]
#[derive(Debug)]
pub struct ExceptionFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

// Vectors 8, 10-14, 17, 21, 29 and 30 push an error code; the others get a
// dummy so that every frame has the same layout.
global_asm!(
    r#"
.macro VMLINK_EXC_NOERR n
vmlink_exc_\n:
    push 0
    push \n
    jmp vmlink_exc_common
.endm
.macro VMLINK_EXC_ERR n
vmlink_exc_\n:
    push \n
    jmp vmlink_exc_common
.endm

.section .text
VMLINK_EXC_NOERR 0
VMLINK_EXC_NOERR 1
VMLINK_EXC_NOERR 2
VMLINK_EXC_NOERR 3
VMLINK_EXC_NOERR 4
VMLINK_EXC_NOERR 5
VMLINK_EXC_NOERR 6
VMLINK_EXC_NOERR 7
VMLINK_EXC_ERR 8
VMLINK_EXC_NOERR 9
VMLINK_EXC_ERR 10
VMLINK_EXC_ERR 11
VMLINK_EXC_ERR 12
VMLINK_EXC_ERR 13
VMLINK_EXC_ERR 14
VMLINK_EXC_NOERR 15
VMLINK_EXC_NOERR 16
VMLINK_EXC_ERR 17
VMLINK_EXC_NOERR 18
VMLINK_EXC_NOERR 19
VMLINK_EXC_NOERR 20
VMLINK_EXC_ERR 21
VMLINK_EXC_NOERR 22
VMLINK_EXC_NOERR 23
VMLINK_EXC_NOERR 24
VMLINK_EXC_NOERR 25
VMLINK_EXC_NOERR 26
VMLINK_EXC_NOERR 27
VMLINK_EXC_NOERR 28
VMLINK_EXC_ERR 29
VMLINK_EXC_ERR 30
VMLINK_EXC_NOERR 31

vmlink_exc_common:
    push rax
    push rbx
    push rcx
    push rdx
    push rsi
    push rdi
    push rbp
    push r8
    push r9
    push r10
    push r11
    push r12
    push r13
    push r14
    push r15
    mov rdi, rsp
    cld
    call {handler}
    pop r15
    pop r14
    pop r13
    pop r12
    pop r11
    pop r10
    pop r9
    pop r8
    pop rbp
    pop rdi
    pop rsi
    pop rdx
    pop rcx
    pop rbx
    pop rax
    add rsp, 16
    iretq

.section .rodata
.balign 8
.global vmlink_exc_table
vmlink_exc_table:
    .quad vmlink_exc_0, vmlink_exc_1, vmlink_exc_2, vmlink_exc_3
    .quad vmlink_exc_4, vmlink_exc_5, vmlink_exc_6, vmlink_exc_7
    .quad vmlink_exc_8, vmlink_exc_9, vmlink_exc_10, vmlink_exc_11
    .quad vmlink_exc_12, vmlink_exc_13, vmlink_exc_14, vmlink_exc_15
    .quad vmlink_exc_16, vmlink_exc_17, vmlink_exc_18, vmlink_exc_19
    .quad vmlink_exc_20, vmlink_exc_21, vmlink_exc_22, vmlink_exc_23
    .quad vmlink_exc_24, vmlink_exc_25, vmlink_exc_26, vmlink_exc_27
    .quad vmlink_exc_28, vmlink_exc_29, vmlink_exc_30, vmlink_exc_31
.section .text
"#,
    handler = sym exception_handler,
);

extern "C" {
    static vmlink_exc_table: [u64; 32];
}

/// Set by the panic path: an NMI then means "stop this CPU".
pub static STOP_ALL: AtomicBool = AtomicBool::new(false);

const NAMES: [&str; 32] = [
    "#DE divide error",
    "#DB debug",
    "NMI",
    "#BP breakpoint",
    "#OF overflow",
    "#BR bound range",
    "#UD invalid opcode",
    "#NM device not available",
    "#DF double fault",
    "coprocessor segment overrun",
    "#TS invalid TSS",
    "#NP segment not present",
    "#SS stack fault",
    "#GP general protection",
    "#PF page fault",
    "reserved 15",
    "#MF x87 floating point",
    "#AC alignment check",
    "#MC machine check",
    "#XM SIMD floating point",
    "#VE virtualization",
    "#CP control protection",
    "reserved 22",
    "reserved 23",
    "reserved 24",
    "reserved 25",
    "reserved 26",
    "reserved 27",
    "#HV hypervisor injection",
    "#VC VMM communication",
    "#SX security",
    "reserved 31",
];

extern "C" fn exception_handler(frame: &mut ExceptionFrame) {
    if frame.vector == 2 {
        if STOP_ALL.load(Ordering::SeqCst) {
            super::cpu::halt_forever();
        }
        // A stray NMI (watchdog, front panel): nothing to do in the
        // hypervisor itself. No formatting here: it could clobber SSE state.
        return;
    }
    let cr2 = x86_64::registers::control::Cr2::read_raw();
    panic!(
        "exception {} (vector {}) error_code={:#x} rip={:#x} rsp={:#x} cr2={:#x} rflags={:#x}\n  rax={:#x} rbx={:#x} rcx={:#x} rdx={:#x} rsi={:#x} rdi={:#x} rbp={:#x}",
        NAMES[frame.vector as usize & 31],
        frame.vector,
        frame.error_code,
        frame.rip,
        frame.rsp,
        cr2,
        frame.rflags,
        frame.rax,
        frame.rbx,
        frame.rcx,
        frame.rdx,
        frame.rsi,
        frame.rdi,
        frame.rbp
    );
}

static IDT: Once<InterruptDescriptorTable> = Once::new();

fn build() -> InterruptDescriptorTable {
    let mut idt = InterruptDescriptorTable::new();
    // SAFETY: reading a table of 32 code addresses defined in the assembly
    // above; it is immutable.
    let stubs = unsafe { &vmlink_exc_table };
    let at = |v: usize| VirtAddr::new(stubs[v]);
    // SAFETY (every set_handler_addr below): each address is the stub for
    // exactly that vector, which saves all registers and returns with
    // IRETQ after discarding the error-code slot; the IST indices name
    // stacks every CPU's TSS sets up (gdt::init_this_cpu).
    unsafe {
        idt.divide_error.set_handler_addr(at(0));
        idt.debug.set_handler_addr(at(1));
        idt.non_maskable_interrupt
            .set_handler_addr(at(2))
            .set_stack_index(IST_NMI);
        idt.breakpoint.set_handler_addr(at(3));
        idt.overflow.set_handler_addr(at(4));
        idt.bound_range_exceeded.set_handler_addr(at(5));
        idt.invalid_opcode.set_handler_addr(at(6));
        idt.device_not_available.set_handler_addr(at(7));
        idt.double_fault
            .set_handler_addr(at(8))
            .set_stack_index(IST_DOUBLE_FAULT);
        idt.invalid_tss.set_handler_addr(at(10));
        idt.segment_not_present.set_handler_addr(at(11));
        idt.stack_segment_fault.set_handler_addr(at(12));
        idt.general_protection_fault.set_handler_addr(at(13));
        idt.page_fault.set_handler_addr(at(14));
        idt.x87_floating_point.set_handler_addr(at(16));
        idt.alignment_check.set_handler_addr(at(17));
        idt.machine_check
            .set_handler_addr(at(18))
            .set_stack_index(IST_MACHINE_CHECK);
        idt.simd_floating_point.set_handler_addr(at(19));
        idt.virtualization.set_handler_addr(at(20));
        idt.cp_protection_exception.set_handler_addr(at(21));
        idt.hv_injection_exception.set_handler_addr(at(28));
        idt.vmm_communication_exception.set_handler_addr(at(29));
        idt.security_exception.set_handler_addr(at(30));
    }
    idt
}

/// Loads the shared IDT on this CPU (built on first use).
pub fn init_this_cpu() {
    IDT.call_once(build).load();
}
