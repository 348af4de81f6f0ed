/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/* GENERATED from shared-abi/src/lib.rs by xtask/src/guest/abi_header.rs;
 * do not edit. `cargo xtask build` regenerates it. */
#ifndef VMLINK_ABI_H
#define VMLINK_ABI_H

#include <linux/types.h>

#define VMLINK_ABI_VERSION 1u
#define VMLINK_CPUID_HV_BASE 0x40000000u
#define VMLINK_CPUID_HV_MAX 0x40000001u
#define VMLINK_CPUID_SIGNATURE "vmlinkvmlink"
#define VMLINK_CPUID_SIGNATURE_EBX 0x696c6d76u
#define VMLINK_CPUID_SIGNATURE_ECX 0x6d766b6eu
#define VMLINK_CPUID_SIGNATURE_EDX 0x6b6e696cu
#define VMLINK_HC_VERSION 0u
#define VMLINK_HC_ERR_UNKNOWN (-1)
#define VMLINK_HC_ERR_INVALID (-2)
#define VMLINK_CPUID_HV_INFO 0x40000001u
#define VMLINK_PCI_VENDOR_ID 0x564c
#define VMLINK_PCI_DEVICE_ID 0x0001
#define VMLINK_PCI_REGION_BAR 0
#define VMLINK_PAGE_SIZE 4096u
#define VMLINK_BUFFER_SIZE 4096u
#define VMLINK_MAX_RING_ENTRIES 4096u
#define VMLINK_MAX_FRAGS 18u
#define VMLINK_CHANNEL_MAGIC 0x314e48434b4c4d56ull
#define VMLINK_DESC_MORE 0x0001u
#define VMLINK_DESC_CSUM_PARTIAL 0x0002u
#define VMLINK_DESC_GSO_TCPV4 0x0004u
#define VMLINK_DESC_GSO_TCPV6 0x0008u
#define VMLINK_DESC_GSO_UDP_L4 0x0010u
#define VMLINK_DESC_ALL 0x001fu
#define VMLINK_PEER_ATTACHED 0x1u
#define VMLINK_PEER_RUNNING 0x2u
#define VMLINK_HC_CHANNEL_ATTACH 1u
#define VMLINK_HC_CHANNEL_DETACH 2u
#define VMLINK_HC_DOORBELL 3u
#define VMLINK_HC_MEDIATED_SEND 4u
#define VMLINK_HC_STATS 5u
#define VMLINK_STAT_EXITS 0u
#define VMLINK_STAT_INTERRUPTS 1u
#define VMLINK_STAT_CHANNEL_INTERRUPTS 2u
#define VMLINK_STAT_DOORBELLS 3u
#define VMLINK_STAT_MEDIATED_SENDS 4u
#define VMLINK_STAT_HALTED_CYCLES 5u
#define VMLINK_STAT_EXITS_HLT 6u
#define VMLINK_STAT_EXITS_HOST_INTERRUPT 7u
#define VMLINK_STAT_EXITS_TIMER 8u
#define VMLINK_STAT_EXITS_TSC_DEADLINE 9u
#define VMLINK_STAT_EXITS_MSR 10u
#define VMLINK_STAT_EXITS_APIC 11u
#define VMLINK_STAT_EXITS_MEMORY 12u
#define VMLINK_STAT_EXITS_HYPERCALL 13u
#define VMLINK_STAT_EXITS_IO 14u
#define VMLINK_STAT_EXITS_OTHER 15u
#define VMLINK_STAT_COUNT 16u
#define VMLINK_STAT_NAMES "hv_exits", "hv_interrupts", "hv_channel_interrupts", "hv_doorbells", "hv_mediated_sends", "hv_halted_cycles", "hv_exits_hlt", "hv_exits_host_interrupt", "hv_exits_timer", "hv_exits_tsc_deadline", "hv_exits_msr", "hv_exits_apic", "hv_exits_memory", "hv_exits_hypercall", "hv_exits_io", "hv_exits_other"
#define VMLINK_HC_ERR_PEER_DOWN (-3)
#define VMLINK_HC_ERR_NO_CHANNEL (-4)
#define VMLINK_HC_ERR_PRIVILEGE (-5)

struct vmlink_desc {
	__u32 buf;
	__u32 len;
	__u16 flags;
	__u16 gso_size;
	__u16 csum_start;
	__u16 csum_offset;
};
_Static_assert(sizeof(struct vmlink_desc) == 16, "vmlink_desc size");
_Static_assert(__builtin_offsetof(struct vmlink_desc, buf) == 0, "vmlink_desc.buf");
_Static_assert(__builtin_offsetof(struct vmlink_desc, len) == 4, "vmlink_desc.len");
_Static_assert(__builtin_offsetof(struct vmlink_desc, flags) == 8, "vmlink_desc.flags");
_Static_assert(__builtin_offsetof(struct vmlink_desc, gso_size) == 10, "vmlink_desc.gso_size");
_Static_assert(__builtin_offsetof(struct vmlink_desc, csum_start) == 12, "vmlink_desc.csum_start");
_Static_assert(__builtin_offsetof(struct vmlink_desc, csum_offset) == 14, "vmlink_desc.csum_offset");

struct vmlink_control {
	__u32 tx_prod;
	__u32 ret_event;
	__u8 _pad2[56];
	__u32 rx_cons;
	__u32 rx_event;
	__u8 _pad4[56];
	__u32 ret_prod;
	__u32 ret_cons;
	__u8 _pad_end[56];
};
_Static_assert(sizeof(struct vmlink_control) == 192, "vmlink_control size");
_Static_assert(__builtin_offsetof(struct vmlink_control, tx_prod) == 0, "vmlink_control.tx_prod");
_Static_assert(__builtin_offsetof(struct vmlink_control, ret_event) == 4, "vmlink_control.ret_event");
_Static_assert(__builtin_offsetof(struct vmlink_control, rx_cons) == 64, "vmlink_control.rx_cons");
_Static_assert(__builtin_offsetof(struct vmlink_control, rx_event) == 68, "vmlink_control.rx_event");
_Static_assert(__builtin_offsetof(struct vmlink_control, ret_prod) == 128, "vmlink_control.ret_prod");
_Static_assert(__builtin_offsetof(struct vmlink_control, ret_cons) == 132, "vmlink_control.ret_cons");

struct vmlink_header {
	__u64 magic;
	__u32 version;
	__u32 side;
	__u64 region_size;
	__u64 section_offset;
	__u64 section_size;
	__u32 ring_entries;
	__u32 buffer_count;
	__u32 ring_offset;
	__u32 ret_offset;
	__u32 buffers_offset;
	__u32 buffer_size;
	__u32 peer_state;
	__u32 state_gen;
	__u8 mac[6];
	__u8 peer_mac[6];
	__u32 peer_halted;
};
_Static_assert(sizeof(struct vmlink_header) == 88, "vmlink_header size");
_Static_assert(__builtin_offsetof(struct vmlink_header, magic) == 0, "vmlink_header.magic");
_Static_assert(__builtin_offsetof(struct vmlink_header, version) == 8, "vmlink_header.version");
_Static_assert(__builtin_offsetof(struct vmlink_header, side) == 12, "vmlink_header.side");
_Static_assert(__builtin_offsetof(struct vmlink_header, region_size) == 16, "vmlink_header.region_size");
_Static_assert(__builtin_offsetof(struct vmlink_header, section_offset) == 24, "vmlink_header.section_offset");
_Static_assert(__builtin_offsetof(struct vmlink_header, section_size) == 32, "vmlink_header.section_size");
_Static_assert(__builtin_offsetof(struct vmlink_header, ring_entries) == 40, "vmlink_header.ring_entries");
_Static_assert(__builtin_offsetof(struct vmlink_header, buffer_count) == 44, "vmlink_header.buffer_count");
_Static_assert(__builtin_offsetof(struct vmlink_header, ring_offset) == 48, "vmlink_header.ring_offset");
_Static_assert(__builtin_offsetof(struct vmlink_header, ret_offset) == 52, "vmlink_header.ret_offset");
_Static_assert(__builtin_offsetof(struct vmlink_header, buffers_offset) == 56, "vmlink_header.buffers_offset");
_Static_assert(__builtin_offsetof(struct vmlink_header, buffer_size) == 60, "vmlink_header.buffer_size");
_Static_assert(__builtin_offsetof(struct vmlink_header, peer_state) == 64, "vmlink_header.peer_state");
_Static_assert(__builtin_offsetof(struct vmlink_header, state_gen) == 68, "vmlink_header.state_gen");
_Static_assert(__builtin_offsetof(struct vmlink_header, mac) == 72, "vmlink_header.mac");
_Static_assert(__builtin_offsetof(struct vmlink_header, peer_mac) == 78, "vmlink_header.peer_mac");
_Static_assert(__builtin_offsetof(struct vmlink_header, peer_halted) == 84, "vmlink_header.peer_halted");

#endif /* VMLINK_ABI_H */
