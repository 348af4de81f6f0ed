/*
 * vmlink boot entry: multiboot1 and multiboot2 headers, the 32-bit entry
 * both protocols jump to, and the switch to 64-bit long mode.
 *
 * Register contract on entry (both protocols): protected mode, paging off,
 * EAX = boot magic, EBX = physical address of the boot information.
 * vmlink_main(magic, info) is called with them as its two arguments.
 */

.set MB1_MAGIC, 0x1BADB002
/* bit 0: page-align modules, bit 1: memory map, bit 16: address fields valid
 * (QEMU's -kernel loads only 32-bit ELFs otherwise). */
.set MB1_FLAGS, 0x00010003
.set MB2_MAGIC, 0xE85250D6
.set MB2_LENGTH, mb2_header_end - mb2_header
.set BOOT_STACK_SIZE, 0x10000

.set COM1, 0x3f8
.set QEMU_EXIT_PORT, 0xf4

.section .multiboot, "a"
.balign 4
mb1_header:
    .long MB1_MAGIC
    .long MB1_FLAGS
    .long 0x100000000 - (MB1_MAGIC + MB1_FLAGS)
    .long mb1_header        /* header_addr */
    .long __image_start     /* load_addr */
    .long __load_end        /* load_end_addr */
    .long __image_end       /* bss_end_addr: the loader zeroes up to here */
    .long _start            /* entry_addr */

.balign 8
mb2_header:
    .long MB2_MAGIC
    .long 0                 /* i386 protected mode */
    .long mb2_header_end - mb2_header
    .long 0x100000000 - (MB2_MAGIC + (mb2_header_end - mb2_header))
    /* module alignment tag: page-aligned modules */
    .short 6, 0
    .long 8
    /* end tag */
    .short 0, 0
    .long 8
mb2_header_end:

.section .text.boot, "ax"
.code32
.global _start
_start:
    cli
    cld
    mov %eax, %ebp              /* boot magic */
    mov %ebx, %esi              /* boot information */

    /* Zero .bss: its page tables and stack are used right away. */
    mov $__bss_start, %edi
    mov $__bss_end, %ecx
    sub %edi, %ecx
    xor %eax, %eax
    rep stosb
    mov $boot_stack_top, %esp

    /* Refuse a CPU without long mode with a line on COM1, not a fault. */
    mov $0x80000000, %eax
    cpuid
    cmp $0x80000001, %eax
    jb no_long_mode
    mov $0x80000001, %eax
    cpuid
    test $(1 << 29), %edx
    jz no_long_mode

    /* Identity-map 0..4 GiB with 2 MiB pages: enough to reach the image,
     * the boot modules and the local APIC until Rust builds real tables. */
    mov $boot_pdpt, %eax
    or $0x3, %eax
    mov %eax, boot_pml4
    mov $boot_pd, %eax
    or $0x3, %eax
    xor %ecx, %ecx
1:  mov %eax, boot_pdpt(,%ecx,8)
    add $0x1000, %eax
    inc %ecx
    cmp $4, %ecx
    jb 1b
    mov $0x83, %eax             /* present, writable, 2 MiB page */
    xor %ecx, %ecx
2:  mov %eax, boot_pd(,%ecx,8)
    add $0x200000, %eax
    inc %ecx
    cmp $2048, %ecx
    jb 2b

    /* PAE, and SSE for Rust's prebuilt core (OSFXSR, OSXMMEXCPT). */
    mov %cr4, %eax
    or $((1 << 5) | (1 << 9) | (1 << 10)), %eax
    mov %eax, %cr4
    mov $boot_pml4, %eax
    mov %eax, %cr3
    mov $0xC0000080, %ecx       /* IA32_EFER */
    rdmsr
    or $(1 << 8), %eax          /* LME */
    wrmsr
    mov %cr0, %eax
    and $~(1 << 2), %eax        /* EM off: SSE instructions must not trap */
    or $0x80010023, %eax        /* PG, WP, NE, MP, PE */
    mov %eax, %cr0

    lgdt boot_gdt_ptr
    ljmp $0x08, $long_mode_entry

no_long_mode:
    mov $no_long_mode_msg, %esi
3:  lodsb
    test %al, %al
    jz 5f
    mov %al, %bl
    mov $(COM1 + 5), %dx
4:  inb %dx, %al
    test $0x20, %al
    jz 4b
    mov $COM1, %dx
    mov %bl, %al
    outb %al, %dx
    jmp 3b
5:  mov $QEMU_EXIT_PORT, %dx
    mov $0x13, %al              /* exit_status::NO_VMX */
    outb %al, %dx
6:  hlt
    jmp 6b

.code64
long_mode_entry:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    xor %eax, %eax
    mov %ax, %fs
    mov %ax, %gs
    mov $boot_stack_top, %rsp
    /* Upper halves of registers are undefined after the mode switch:
     * 32-bit moves zero-extend. */
    mov %ebp, %edi
    mov %esi, %esi
    xor %ebp, %ebp
    call vmlink_main
7:  cli
    hlt
    jmp 7b

.section .rodata
no_long_mode_msg:
    .asciz "vmlink: VT-x not available: this CPU has no 64-bit long mode\r\nvmlink: system halted status=novmx\r\n"

.balign 8
boot_gdt:
    .quad 0
    .quad 0x00AF9A000000FFFF    /* 0x08: 64-bit code */
    .quad 0x00CF92000000FFFF    /* 0x10: data */
boot_gdt_end:
.balign 8
boot_gdt_ptr:
    .short boot_gdt_end - boot_gdt - 1
    .quad boot_gdt

.section .bss, "aw", @nobits
.balign 4096
.global boot_pml4
boot_pml4:
    .skip 4096
boot_pdpt:
    .skip 4096
boot_pd:
    .skip 4096 * 4
boot_stack:
    .skip BOOT_STACK_SIZE
boot_stack_top:
