/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/* GENERATED from shared-abi/src/lib.rs by xtask/src/guest/abi_header.rs;
 * do not edit. `cargo xtask build` regenerates it. */
#ifndef VMLINK_ABI_H
#define VMLINK_ABI_H

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

#endif /* VMLINK_ABI_H */
