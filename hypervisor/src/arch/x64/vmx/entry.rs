//! Entering and leaving the guest. The assembly loads the guest's
//! general-purpose and FPU/SSE registers, runs VMLAUNCH/VMRESUME, and on
//! exit stores them back before any Rust code can touch them (the prebuilt
//! `core` uses SSE, so the guest's XMM registers must be saved first).
//! Host code never uses AVX, and legacy SSE leaves the upper YMM/ZMM halves
//! alone, so FXSAVE covers everything the host could clobber.

use core::arch::global_asm;

/// Guest registers the VMCS does not hold. Field order is fixed by the
/// assembly below: GPRs in instruction-encoding order (the RSP slot is
/// unused: RSP lives in the VMCS), then the FXSAVE area pointer.
#[repr(C)]
#[derive(Debug, Default)]
pub struct GuestRegs {
    pub gpr: [u64; 16],
    pub fxsave_area: u64,
}

/// 512-byte FXSAVE image, 16-byte aligned as FXSAVE requires.
#[repr(C, align(16))]
pub struct FxArea(pub [u8; 512]);

impl FxArea {
    /// The FPU state a CPU has after reset: FCW 0x37F, MXCSR 0x1F80.
    pub fn reset() -> Self {
        let mut a = FxArea([0; 512]);
        a.0[0..2].copy_from_slice(&0x37Fu16.to_le_bytes());
        a.0[24..28].copy_from_slice(&0x1F80u32.to_le_bytes());
        a
    }
}

global_asm!(
    r#"
.section .text
.global vmlink_vmx_run
// u64 vmlink_vmx_run(GuestRegs *regs /* rdi */, u64 launched /* rsi */)
// Returns 0 after a VM exit, 1 if VMLAUNCH/VMRESUME failed.
vmlink_vmx_run:
    push rbp
    push rbx
    push r12
    push r13
    push r14
    push r15
    push rdi
    mov rax, 0x6C14             // HOST_RSP: the exit stub finds regs at [rsp]
    vmwrite rax, rsp
    mov rax, [rdi + 128]
    fxrstor64 [rax]
    test rsi, rsi
    mov rax, [rdi + 0]
    mov rcx, [rdi + 8]
    mov rdx, [rdi + 16]
    mov rbx, [rdi + 24]
    mov rbp, [rdi + 40]
    mov rsi, [rdi + 48]
    mov r8,  [rdi + 64]
    mov r9,  [rdi + 72]
    mov r10, [rdi + 80]
    mov r11, [rdi + 88]
    mov r12, [rdi + 96]
    mov r13, [rdi + 104]
    mov r14, [rdi + 112]
    mov r15, [rdi + 120]
    mov rdi, [rdi + 56]
    jnz 2f
    vmlaunch
    jmp 3f
2:
    vmresume
3:
    // Entry failed; the guest's values are in the registers, restore ours.
    pop rdi
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbx
    pop rbp
    mov eax, 1
    ret

.global vmlink_vmx_exit
vmlink_vmx_exit:
    push rdi
    mov rdi, [rsp + 8]
    mov [rdi + 0], rax
    mov [rdi + 8], rcx
    mov [rdi + 16], rdx
    mov [rdi + 24], rbx
    mov [rdi + 40], rbp
    mov [rdi + 48], rsi
    mov [rdi + 64], r8
    mov [rdi + 72], r9
    mov [rdi + 80], r10
    mov [rdi + 88], r11
    mov [rdi + 96], r12
    mov [rdi + 104], r13
    mov [rdi + 112], r14
    mov [rdi + 120], r15
    pop rax
    mov [rdi + 56], rax
    mov rax, [rdi + 128]
    fxsave64 [rax]
    pop rdi
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbx
    pop rbp
    xor eax, eax
    ret
"#
);

extern "C" {
    fn vmlink_vmx_run(regs: *mut GuestRegs, launched: u64) -> u64;
    fn vmlink_vmx_exit();
}

/// Address the CPU jumps to on every VM exit (the VMCS host RIP).
pub fn exit_stub() -> u64 {
    vmlink_vmx_exit as *const () as u64
}

/// Enters the guest; returns false if the entry itself failed.
///
/// # Safety
/// The current VMCS must be fully set up for this CPU with the host RIP at
/// [`exit_stub`], and `regs.fxsave_area` must point to a live [`FxArea`].
pub unsafe fn enter(regs: &mut GuestRegs, launched: bool) -> bool {
    // SAFETY: forwarded to the caller; the assembly preserves the callee-
    // saved registers and the stack across the guest's run.
    unsafe { vmlink_vmx_run(regs, u64::from(launched)) == 0 }
}
