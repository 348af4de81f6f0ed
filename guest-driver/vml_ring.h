/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * The channel's ring protocol, as plain C shared by the kernel driver and
 * the host tests (guest-driver/ring-tests). Nothing here trusts the peer:
 * every index and descriptor it wrote is read once into private memory and
 * checked before use, and a bad one is reported, never followed.
 *
 * The includer defines VML_READ_U32(p), VML_WRITE_U32(p, v) (single,
 * untorn accesses to shared memory) and VML_COPY_DESC(dst, src) (a copy of
 * one descriptor from shared memory).
 */
#ifndef VML_RING_H
#define VML_RING_H

#include "vmlink_abi.h"

/* What can be wrong with what the peer wrote. */
enum vml_fault {
	VML_OK = 0,
	VML_BAD_BUFFER,		/* buffer number past the peer's buffers */
	VML_BAD_LENGTH,		/* 0 or more than a buffer */
	VML_BAD_FLAGS,		/* unknown flag bits */
	VML_TOO_MANY_FRAGS,	/* frame longer than VMLINK_MAX_FRAGS buffers */
	VML_INDEX_JUMP,		/* producer index moved past what a ring holds */
	VML_BAD_RETURN,		/* returned buffer number out of range */
	VML_DOUBLE_RETURN,	/* returned a buffer that was not out */
	VML_BUFFER_HELD,	/* sent a buffer we have not returned yet */
	VML_FAULT_KINDS,
};

/* Whether a producer moving from old to new passed the consumer's event
 * index (virtio's rule): the consumer asked to be told about entry event. */
static inline int vml_need_event(__u32 event, __u32 new_idx, __u32 old)
{
	return (__u32)(new_idx - event - 1) < (__u32)(new_idx - old);
}

/* Entries the peer published that we have not consumed, or -1 when its
 * index claims more than the ring can hold (it jumped). */
static inline long vml_pending(__u32 prod, __u32 cons, __u32 entries)
{
	__u32 n = prod - cons;

	return n > entries ? -1 : (long)n;
}

static inline enum vml_fault vml_check_desc(const struct vmlink_desc *d,
					    __u32 buffer_count)
{
	if (d->buf >= buffer_count)
		return VML_BAD_BUFFER;
	if (d->len == 0 || d->len > VMLINK_BUFFER_SIZE)
		return VML_BAD_LENGTH;
	if (d->flags & ~VMLINK_DESC_ALL)
		return VML_BAD_FLAGS;
	return VML_OK;
}

/* One received frame: its descriptors, copied out of the shared ring. */
struct vml_frame {
	__u32 count;
	__u32 bytes;
	struct vmlink_desc d[VMLINK_MAX_FRAGS];
};

/*
 * Reads the frame at *cons from the peer's ring of `entries` descriptors
 * (published up to `prod`). Returns 1 with the frame in *f when a complete,
 * valid frame was read; 0 when the frame is not complete yet (nothing
 * consumed); or -fault, having consumed the bad frame's descriptors so the
 * caller can return its valid buffers and carry on. *cons advances past
 * every descriptor consumed.
 */
static inline int vml_read_frame(const struct vmlink_desc *ring,
				 __u32 entries, __u32 prod, __u32 *cons,
				 __u32 buffer_count, struct vml_frame *f)
{
	long avail = vml_pending(prod, *cons, entries);
	enum vml_fault fault = VML_OK;
	__u32 i;

	f->count = 0;
	f->bytes = 0;
	if (avail < 0)
		return -VML_INDEX_JUMP;
	for (i = 0; i < (__u32)avail; i++) {
		struct vmlink_desc d;

		VML_COPY_DESC(&d, &ring[(*cons + i) & (entries - 1)]);
		if (i >= VMLINK_MAX_FRAGS) {
			fault = VML_TOO_MANY_FRAGS;
		} else {
			enum vml_fault e = vml_check_desc(&d, buffer_count);

			if (e != VML_OK && fault == VML_OK)
				fault = e;
			/* A bad descriptor's buffer is not recorded: it is
			 * not one the peer can expect back. */
			if (e == VML_OK) {
				f->d[f->count++] = d;
				f->bytes += d.len;
			}
		}
		if (!(d.flags & VMLINK_DESC_MORE)) {
			*cons += i + 1;
			return fault == VML_OK ? 1 : -(int)fault;
		}
	}
	/* A chain longer than any frame can be is bad even if unfinished. */
	if (avail > VMLINK_MAX_FRAGS) {
		*cons += (__u32)avail;
		return -VML_TOO_MANY_FRAGS;
	}
	f->count = 0;
	f->bytes = 0;
	return 0;
}

/* The sender's private view of its buffers: a stack of free ones and a
 * mark for each buffer the peer holds. */
struct vml_pool {
	__u32 count;
	__u32 nfree;
	__u32 *free;		/* count entries */
	unsigned char *out;	/* count entries: 1 = with the peer */
};

static inline void vml_pool_reset(struct vml_pool *p)
{
	__u32 i;

	p->nfree = p->count;
	for (i = 0; i < p->count; i++) {
		p->free[i] = p->count - 1 - i;
		p->out[i] = 0;
	}
}

/* Takes a free buffer; -1 when none is left. */
static inline long vml_pool_get(struct vml_pool *p)
{
	__u32 b;

	if (p->nfree == 0)
		return -1;
	b = p->free[--p->nfree];
	p->out[b] = 1;
	return b;
}

/* A buffer comes back from the peer (or from a frame never published). */
static inline enum vml_fault vml_pool_put(struct vml_pool *p, __u32 b)
{
	if (b >= p->count)
		return VML_BAD_RETURN;
	if (!p->out[b])
		return VML_DOUBLE_RETURN;
	p->out[b] = 0;
	p->free[p->nfree++] = b;
	return VML_OK;
}

/*
 * Reclaims what the peer returned through its return ring (published up to
 * ret_prod; we consumed up to *ret_cons). Counts each fault in faults[]
 * (VML_FAULT_KINDS entries). Returns the buffers reclaimed, or -1 when the
 * peer's index jumped (nothing is consumed then).
 */
static inline long vml_reclaim(const __u32 *ret_ring, __u32 entries,
			       __u32 ret_prod, __u32 *ret_cons,
			       struct vml_pool *p, unsigned long *faults)
{
	long avail = vml_pending(ret_prod, *ret_cons, entries);
	long got = 0, i;

	if (avail < 0) {
		faults[VML_INDEX_JUMP]++;
		return -1;
	}
	for (i = 0; i < avail; i++) {
		__u32 b = VML_READ_U32(&ret_ring[(*ret_cons + i) & (entries - 1)]);
		enum vml_fault e = vml_pool_put(p, b);

		if (e == VML_OK)
			got++;
		else
			faults[e]++;
	}
	*ret_cons += (__u32)avail;
	return got;
}

/*
 * Whether the receiver may hold (zero-copy) a frame of `count` more of the
 * sender's buffers while it already holds `held`. The sender keeps at most
 * min(buffer_count, ring_entries) buffers out (vml_tx_room in the driver)
 * and restarts a stopped queue only once a largest frame fits, so what the
 * receiver holds must always leave VMLINK_MAX_FRAGS of them, or a reader
 * that waits (an unread socket, TCP waiting for a retransmission stuck
 * behind the stopped queue) stalls the channel; beyond half of them a slow
 * reader crowds out other flows. Past the limit the receiver copies and
 * hands the buffers back at once (lazy copy).
 */
static inline int vml_rx_may_hold(__u32 held, __u32 count, __u32 buffer_count,
				  __u32 entries)
{
	__u32 cap = buffer_count < entries ? buffer_count : entries;
	__u32 limit = cap / 2;

	if (cap < VMLINK_MAX_FRAGS)
		return 0;
	if (limit > cap - VMLINK_MAX_FRAGS)
		limit = cap - VMLINK_MAX_FRAGS;
	return held <= limit && count <= limit - held;
}

/* Clears the marks of `n` buffers: their pages are back, or a lend is undone. */
static inline void vml_unlend_bufs(__u32 *lent, const __u32 *bufs, __u32 n)
{
	__u32 i;

	for (i = 0; i < n; i++)
		VML_WRITE_U32(&lent[bufs[i]], 0);
}

/*
 * Marks the `n` buffers a zero-copy frame lends to the stack with `mark`
 * (non-zero: the driver's link epoch plus one). lent[] has one entry per
 * peer buffer, zero while its page is not with the stack. Returns 0 and
 * leaves everything as it was when one of them is lent already (the peer
 * reused a buffer it has not had back, or named one twice in a frame):
 * handing such a page to the stack again would give it two owners under a
 * single reference, so the caller copies instead.
 */
static inline int vml_lend_bufs(__u32 *lent, const __u32 *bufs, __u32 n, __u32 mark)
{
	__u32 i;

	for (i = 0; i < n; i++) {
		if (VML_READ_U32(&lent[bufs[i]])) {
			vml_unlend_bufs(lent, bufs, i);
			return 0;
		}
		VML_WRITE_U32(&lent[bufs[i]], mark);
	}
	return 1;
}

#endif /* VML_RING_H */
