// SPDX-License-Identifier: GPL-2.0
/*
 * vmlink paravirtual NIC. For now: identifies itself with the ABI version it
 * was built against (from vmlink_abi.h, generated from shared-abi/).
 */
#include <linux/module.h>
#include <linux/init.h>
#include "vmlink_abi.h"

#define VMLINK_NET_VERSION "0.1.0"

static int __init vmlink_net_init(void)
{
	pr_info("vmlink_net: vmlink paravirtual NIC driver version %s, ABI %u\n",
		VMLINK_NET_VERSION, VMLINK_ABI_VERSION);
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
