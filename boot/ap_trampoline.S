/*
 * Start-up code for the application processors. The bootstrap processor
 * copies the bytes between ap_trampoline_start and ap_trampoline_end to
 * physical TRAMP_BASE (the SIPI vector is TRAMP_BASE >> 12), fills the
 * parameter block at its end, and sends INIT-SIPI-SIPI. The AP goes
 * real mode -> protected mode -> long mode and calls the entry with its
 * CPU index. Everything here is addressed relative to TRAMP_BASE because
 * the code never runs where it was linked.
 */

.set TRAMP_BASE, 0x8000

.section .rodata.ap_trampoline, "a"
.global ap_trampoline_start
.global ap_trampoline_end
.balign 16
.code16
ap_trampoline_start:
    cli
    cld
    xor %ax, %ax
    mov %ax, %ds
    lgdtl tramp_gdt_ptr - ap_trampoline_start + TRAMP_BASE
    mov %cr0, %eax
    or $1, %eax
    mov %eax, %cr0
    ljmpl $0x08, $((tramp_pm32 - ap_trampoline_start + TRAMP_BASE))

.code32
tramp_pm32:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov %cr4, %eax
    or $((1 << 5) | (1 << 9) | (1 << 10)), %eax     /* PAE, OSFXSR, OSXMMEXCPT */
    mov %eax, %cr4
    mov tramp_cr3 - ap_trampoline_start + TRAMP_BASE, %eax
    mov %eax, %cr3
    mov $0xC0000080, %ecx
    rdmsr
    or $(1 << 8), %eax                              /* EFER.LME */
    wrmsr
    mov %cr0, %eax
    and $~(1 << 2), %eax
    or $0x80010022, %eax                            /* PG, WP, NE, MP */
    mov %eax, %cr0
    ljmp $0x18, $((tramp_lm64 - ap_trampoline_start + TRAMP_BASE))

.code64
tramp_lm64:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    xor %eax, %eax
    mov %ax, %fs
    mov %ax, %gs
    mov tramp_stack - ap_trampoline_start + TRAMP_BASE, %rsp
    mov tramp_arg - ap_trampoline_start + TRAMP_BASE, %rdi
    mov tramp_entry - ap_trampoline_start + TRAMP_BASE, %rax
    xor %ebp, %ebp
    call *%rax
1:  cli
    hlt
    jmp 1b

.balign 8
tramp_gdt:
    .quad 0
    .quad 0x00CF9A000000FFFF    /* 0x08: 32-bit code */
    .quad 0x00CF92000000FFFF    /* 0x10: data */
    .quad 0x00AF9A000000FFFF    /* 0x18: 64-bit code */
tramp_gdt_end:
tramp_gdt_ptr:
    .short tramp_gdt_end - tramp_gdt - 1
    .long (tramp_gdt - ap_trampoline_start + TRAMP_BASE)

/* Parameter block: the last 32 bytes, written by the BSP before each SIPI. */
.balign 8
tramp_cr3:
    .quad 0
tramp_stack:
    .quad 0
tramp_arg:
    .quad 0
tramp_entry:
    .quad 0
ap_trampoline_end:
