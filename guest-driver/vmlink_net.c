// SPDX-License-Identifier: GPL-2.0
/*
 * vmlink paravirtual NIC. For now: identifies itself with the ABI version it
 * was built against (from vmlink_abi.h, generated from shared-abi/).
 */
#include <linux/module.h>
#include <linux/init.h>
#include <asm/processor.h>
#include "vmlink_abi.h"

#define VMLINK_NET_VERSION "0.1.0"

/*
 * Reads the hypervisor leaf. Only meaningful when CPUID.1:ECX.hypervisor is
 * set; otherwise the leaf is whatever the CPU returns for it.
 */
static bool vmlink_detect(char sig[13])
{
	unsigned int eax, ebx, ecx, edx;

	memset(sig, 0, 13);
	if (!boot_cpu_has(X86_FEATURE_HYPERVISOR))
		return false;
	cpuid(VMLINK_CPUID_HV_BASE, &eax, &ebx, &ecx, &edx);
	memcpy(sig + 0, &ebx, 4);
	memcpy(sig + 4, &ecx, 4);
	memcpy(sig + 8, &edx, 4);
	return ebx == VMLINK_CPUID_SIGNATURE_EBX &&
	       ecx == VMLINK_CPUID_SIGNATURE_ECX &&
	       edx == VMLINK_CPUID_SIGNATURE_EDX;
}

static int __init vmlink_net_init(void)
{
	char sig[13];
	bool on_vmlink = vmlink_detect(sig);

	pr_info("vmlink_net: vmlink paravirtual NIC driver version %s, ABI %u\n",
		VMLINK_NET_VERSION, VMLINK_ABI_VERSION);
	if (on_vmlink)
		pr_info("vmlink_net: running on vmlink (CPUID signature \"%s\")\n", sig);
	else
		pr_info("vmlink_net: not running on vmlink (hypervisor signature \"%s\")\n", sig);
	return 0;
}

static void __exit vmlink_net_exit(void)
{
	pr_info("vmlink_net: unloaded\n");
}

module_init(vmlink_net_init);
module_exit(vmlink_net_exit);
MODULE_DESCRIPTION("vmlink paravirtual NIC");
MODULE_LICENSE("GPL");
MODULE_VERSION(VMLINK_NET_VERSION);
