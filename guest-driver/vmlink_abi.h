/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/* Generated from shared-abi/ by `cargo xtask build`. Do not edit. */
#ifndef VMLINK_ABI_H
#define VMLINK_ABI_H

#define VMLINK_ABI_VERSION 1u
#define VMLINK_CPUID_HV_BASE 0x40000000u
#define VMLINK_CPUID_HV_MAX 0x40000001u
#define VMLINK_CPUID_SIGNATURE "vmlinkvmlink"
#define VMLINK_HC_VERSION 0u
#define VMLINK_HC_ERR_UNKNOWN (-1)
#define VMLINK_HC_ERR_INVALID (-2)

#endif /* VMLINK_ABI_H */
