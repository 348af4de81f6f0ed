// SPDX-License-Identifier: GPL-2.0 OR MIT
/* The driver's ring code for host tests: the same header the module
 * includes, with shared-memory accessors from the C11 builtins. */
#include <string.h>
#define VML_READ_U32(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define VML_WRITE_U32(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define VML_COPY_DESC(dst, src) memcpy((dst), (const void *)(src), sizeof(struct vmlink_desc))
#include "vml_ring.h"

int shim_need_event(__u32 event, __u32 new_idx, __u32 old)
{
	return vml_need_event(event, new_idx, old);
}

int shim_read_frame(const struct vmlink_desc *ring, __u32 entries, __u32 prod,
		    __u32 *cons, __u32 buffer_count, struct vml_frame *f)
{
	return vml_read_frame(ring, entries, prod, cons, buffer_count, f);
}

void shim_pool_reset(struct vml_pool *p)
{
	vml_pool_reset(p);
}

long shim_pool_get(struct vml_pool *p)
{
	return vml_pool_get(p);
}

int shim_pool_put(struct vml_pool *p, __u32 b)
{
	return vml_pool_put(p, b);
}

long shim_reclaim(const __u32 *ret_ring, __u32 entries, __u32 ret_prod,
		  __u32 *ret_cons, struct vml_pool *p, unsigned long *faults)
{
	return vml_reclaim(ret_ring, entries, ret_prod, ret_cons, p, faults);
}

int shim_rx_may_hold(__u32 held, __u32 count, __u32 buffer_count, __u32 entries)
{
	return vml_rx_may_hold(held, count, buffer_count, entries);
}

int shim_lend_bufs(__u32 *lent, const __u32 *bufs, __u32 n, __u32 mark)
{
	return vml_lend_bufs(lent, bufs, n, mark);
}

void shim_unlend_bufs(__u32 *lent, const __u32 *bufs, __u32 n)
{
	vml_unlend_bufs(lent, bufs, n);
}
