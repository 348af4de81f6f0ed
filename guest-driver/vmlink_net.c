// SPDX-License-Identifier: GPL-2.0
/*
 * vmlink paravirtual NIC (vml0): a net device over the channel region the
 * hypervisor maps into both guests (PCI 564c:0001, BAR0).
 *
 * Transmit copies a frame once into free buffers of our own section and
 * publishes descriptors; the peer reads them in place. Receive (zerocopy
 * mode) hands the network stack skbs whose fragments are the peer's
 * buffers themselves: devm_memremap_pages() gives the BAR struct pages
 * (ZONE_DEVICE, MEMORY_DEVICE_GENERIC), so the stack takes and drops
 * ordinary page references, and when the last one goes the pagemap's
 * page_free callback hands the buffer back to the peer through our return
 * ring. MEMORY_DEVICE_GENERIC because its pages behave like RAM pages for
 * get_page/put_page (refcount 1 when idle, page_free at zero, no migration
 * or DAX semantics) and it maps the range write-back in the direct map.
 *
 * Nothing the peer writes is trusted: vml_ring.h reads each descriptor
 * once and checks it; faults are counted and the frame dropped.
 */
#include <linux/module.h>
#include <linux/init.h>
#include <linux/pci.h>
#include <linux/netdevice.h>
#include <linux/etherdevice.h>
#include <linux/ethtool.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/interrupt.h>
#include <linux/memremap.h>
#include <linux/mm.h>
#include <linux/io.h>
#include <linux/slab.h>
#include <linux/vmalloc.h>
#include <net/ip.h>
#include <asm/processor.h>
#include "vmlink_abi.h"

#define VML_READ_U32(p) READ_ONCE(*(p))
#define VML_WRITE_U32(p, v) WRITE_ONCE(*(p), (v))
#define VML_COPY_DESC(dst, src) memcpy((dst), (const void *)(src), sizeof(struct vmlink_desc))
#include "vml_ring.h"

#define VMLINK_NET_VERSION "0.2.0"
/* Bytes of a received frame copied into the skb's linear part, so the
 * stack can parse headers without touching fragments. */
#define VML_RX_COPYBREAK 128
/* Frames up to this size are copied whole in either mode (counted as
 * rx_copybreak): lending a page, and returning it later, for a few bytes
 * past the headers costs more than copying them, and the buffer goes back
 * at once. */
#define VML_RX_SMALL 256
/* Faults in a row after which the link is reset. */
#define VML_FAULT_LIMIT 16

static char *rx_mode = "zerocopy";
module_param(rx_mode, charp, 0444);
MODULE_PARM_DESC(rx_mode, "copy|zerocopy: how received payloads reach the stack");
/* Ring entries, not frames: the event index compares entries, and a 64 KiB
 * frame takes 16 of them while an ACK takes one. Larger batches save exits
 * in bulk transfers (ACKs), but a receiver that is running finds a frame
 * short of the batch only when it halts or at its next timer tick (4 ms at
 * HZ=250): an application spinning on a socket waited that long for a
 * small reply. So the default rings for every frame. */
static unsigned int rx_batch = 1;
module_param(rx_batch, uint, 0444);
MODULE_PARM_DESC(rx_batch, "ring entries (4 KiB buffers) the peer may publish while we run before it rings, at most half the ring (default 1: ring for each frame; above 1 the hypervisor tells us of the rest when we halt or at our next tick)");
/* The batch after a NAPI pass that took only pure TCP ACKs (segments
 * without payload, SYN, FIN or RST): we are the sending end of a
 * transfer, and a sender needs ACKs only to open its window, which it
 * runs out of by waiting (halting), when the hypervisor tells it of
 * everything anyway. Any frame with payload is rung for at once, so a
 * receiver spinning on small messages never waits for the batch (see
 * docs/ARCHITECTURE.md). */
static unsigned int ack_batch = 4;
module_param(ack_batch, uint, 0444);
MODULE_PARM_DESC(ack_batch, "as rx_batch, after a NAPI pass that received only pure TCP ACKs; default 4");
static char *tx_mode = "ring";
module_param(tx_mode, charp, 0444);
MODULE_PARM_DESC(tx_mode, "ring|mediated: write frames into the ring, or hand each to the hypervisor");

enum vml_stat {
	ST_TX_PACKETS, ST_TX_BYTES, ST_RX_PACKETS, ST_RX_BYTES,
	ST_DOORBELLS, ST_INTERRUPTS, ST_RX_ZEROCOPY, ST_RX_COPIED,
	ST_LAZY_COPIES, ST_TX_DROPS, ST_RX_DROPS, ST_TX_BUSY,
	ST_LINK_RESETS, ST_MEDIATED, ST_RX_COPYBREAK, ST_DOORBELLS_SKIPPED,
	ST_RX_MID_FREE, ST_ACK_BATCHES,
	/* Gauges, filled when read. */
	ST_RX_HELD, ST_TX_FREE, ST_TX_STOPPED,
	ST_FAULT0,
	ST_COUNT = ST_FAULT0 + VML_FAULT_KINDS,
};

static const char vml_stat_names[][ETH_GSTRING_LEN] = {
	"tx_packets", "tx_bytes", "rx_packets", "rx_bytes",
	"doorbells", "interrupts", "rx_zerocopy", "rx_copied",
	"lazy_copies", "tx_drops", "rx_drops", "tx_busy",
	"link_resets", "tx_mediated", "rx_copybreak", "doorbells_skipped",
	"rx_mid_free", "ack_batches",
	"rx_held", "tx_free", "tx_stopped",
	"fault_none", "fault_bad_buffer", "fault_bad_length", "fault_bad_flags",
	"fault_too_many_frags", "fault_index_jump", "fault_bad_return",
	"fault_double_return", "fault_buffer_held",
};

static_assert(ARRAY_SIZE(vml_stat_names) == ST_COUNT);

/* The hypervisor's counters (STATS hypercall), named in shared-abi/. */
static const char vml_hv_names[][ETH_GSTRING_LEN] = { VMLINK_STAT_NAMES };
static_assert(ARRAY_SIZE(vml_hv_names) == VMLINK_STAT_COUNT);

/*
 * A zero-copy frame's buffers, lent to the stack as pages. They go back to
 * the peer together, in one return, when the last page comes back: a
 * return per page costs a lock and two barriers each, about a dozen times
 * per 64 KiB frame.
 */
struct vml_rxframe {
	struct llist_node free;
	atomic_t pages;		/* pages of the frame the stack still holds */
	u32 epoch;
	u32 count;
	u32 bufs[VMLINK_MAX_FRAGS];
};

struct vml_priv {
	struct net_device *ndev;
	struct pci_dev *pdev;
	struct napi_struct napi;
	struct dev_pagemap pgmap;
	bool zerocopy, mediated, pages;
	void *base;
	const struct vmlink_header *hdr;
	u32 side, entries, nbuf;
	struct vmlink_control *own_ctl;
	struct vmlink_desc *own_ring;
	u32 *own_ret;
	u8 *own_buf;
	const struct vmlink_control *peer_ctl;
	const struct vmlink_desc *peer_ring;
	const u32 *peer_ret;
	const u8 *peer_buf;
	unsigned long peer_buf_pfn;
	/* tx_lock: pool, tx_prod, ret_cons (transmit and reclaim). Taken
	 * with bottom halves off (transmit, NAPI, or _bh), never from a
	 * hard interrupt: interrupts stay on while a frame is copied into
	 * the region, which is most of a sender's time, so an interrupt for
	 * it is taken at once instead of after the copy. */
	spinlock_t tx_lock;
	struct vml_pool pool;
	u32 tx_prod, ret_cons;
	/* rx: only NAPI touches rx_cons. */
	u32 rx_cons;
	/* ret_lock: our return ring (NAPI and page_free from any context). */
	spinlock_t ret_lock;
	u32 ret_prod;
	/* Bumped when the peer goes away: buffers of its old life are not
	 * returned to its new one. */
	u32 epoch;
	atomic_t held;
	/* Frame records: NAPI takes them (the only taker, as llist_del_first
	 * wants), page_free puts them back from any context. lent[] marks the
	 * peer's buffers whose pages the stack holds (vml_lend_bufs). */
	struct vml_rxframe *rxf;
	struct llist_head rxf_free;
	u32 *lent;
	u32 state_gen;
	bool peer_up;
	u32 faults_in_row;
	unsigned long faults[VML_FAULT_KINDS];
	atomic64_t st[ST_COUNT];
};

static long vml_hcall(unsigned long nr, unsigned long a0, unsigned long a1,
		      unsigned long a2)
{
	long ret;

	asm volatile("vmcall"
		     : "=a"(ret)
		     : "a"(nr), "D"(a0), "S"(a1), "d"(a2)
		     : "memory");
	return ret;
}

static void vml_count(struct vml_priv *p, enum vml_stat s, u64 n)
{
	atomic64_add(n, &p->st[s]);
}

static void vml_fault(struct vml_priv *p, int kind)
{
	if (kind <= 0 || kind >= VML_FAULT_KINDS)
		return;
	vml_count(p, ST_FAULT0 + kind, 1);
	p->faults_in_row++;
}

static void vml_doorbell(struct vml_priv *p)
{
	if (vml_hcall(VMLINK_HC_DOORBELL, 0, 0, 0) == 0)
		vml_count(p, ST_DOORBELLS, 1);
}

/*
 * Tells the peer about what vml_publish just published (its event index
 * passed). No hypercall while the peer is halted: the hypervisor watches
 * our indices for it then (peer_halted). vml_publish's full barrier orders
 * our index before this read, and the hypervisor clears the flag before
 * its last look, so either it sees the index or we see the flag clear.
 */
static void vml_notify(struct vml_priv *p)
{
	if (READ_ONCE(p->hdr->peer_halted))
		vml_count(p, ST_DOORBELLS_SKIPPED, 1);
	else
		vml_doorbell(p);
}

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

/*
 * Publishes a producer index once the entries it covers are written, then
 * says whether the peer asked to be told (its event index passed).
 */
static bool vml_publish(u32 *prod, u32 new_idx, u32 old, const u32 *peer_event)
{
	smp_wmb();
	WRITE_ONCE(*prod, new_idx);
	smp_mb();
	return vml_need_event(READ_ONCE(*peer_event), new_idx, old);
}

/* --- returning the peer's buffers ------------------------------------ */

/* Appends buffer numbers to our return ring and tells the peer if it
 * asked (its ret_event). Any context. */
static void vml_return(struct vml_priv *p, const u32 *bufs, u32 n, u32 epoch)
{
	unsigned long flags;
	u32 old, i;
	bool ring = false;

	spin_lock_irqsave(&p->ret_lock, flags);
	if (epoch == p->epoch && p->peer_up) {
		old = p->ret_prod;
		for (i = 0; i < n; i++)
			WRITE_ONCE(p->own_ret[(old + i) & (p->entries - 1)], bufs[i]);
		p->ret_prod = old + n;
		ring = vml_publish(&p->own_ctl->ret_prod, p->ret_prod, old,
				   &p->peer_ctl->ret_event);
	}
	spin_unlock_irqrestore(&p->ret_lock, flags);
	if (ring)
		vml_notify(p);
}

/*
 * The stack dropped its last reference to one of a frame's pages. Only pages
 * vml_rx_zerocopy lent come here, each pointing at its frame; a frame in
 * flight holds a module reference, so the callback cannot outlive the module.
 */
static void vml_page_free(struct page *page)
{
	struct vml_priv *p = container_of(page->pgmap, struct vml_priv, pgmap);
	struct vml_rxframe *f = page->zone_device_data;

	if (WARN_ON_ONCE(!f) || !atomic_dec_and_test(&f->pages))
		return;
	vml_unlend_bufs(p->lent, f->bufs, f->count);
	vml_return(p, f->bufs, f->count, f->epoch);
	atomic_sub(f->count, &p->held);
	llist_add(&f->free, &p->rxf_free);
	module_put(THIS_MODULE);
}

static const struct dev_pagemap_ops vml_pgmap_ops = {
	.page_free = vml_page_free,
};

/* --- link state ------------------------------------------------------- */

/* Our section's indices start again from zero whenever the peer (re)starts,
 * and everything we lent it is ours again. */
static void vml_reset_section(struct vml_priv *p)
{
	unsigned long flags;

	spin_lock_bh(&p->tx_lock);
	vml_pool_reset(&p->pool);
	p->tx_prod = 0;
	p->ret_cons = 0;
	spin_unlock_bh(&p->tx_lock);
	spin_lock_irqsave(&p->ret_lock, flags);
	p->ret_prod = 0;
	p->epoch++;
	spin_unlock_irqrestore(&p->ret_lock, flags);
	p->rx_cons = 0;
	memset(p->own_ctl, 0, sizeof(*p->own_ctl));
	p->faults_in_row = 0;
}

static void vml_check_link(struct vml_priv *p)
{
	u32 gen = READ_ONCE(p->hdr->state_gen);
	u32 state;
	bool up;

	if (gen == p->state_gen && p->faults_in_row < VML_FAULT_LIMIT)
		return;
	p->state_gen = gen;
	smp_rmb();
	state = READ_ONCE(p->hdr->peer_state);
	up = (state & (VMLINK_PEER_ATTACHED | VMLINK_PEER_RUNNING)) ==
	     (VMLINK_PEER_ATTACHED | VMLINK_PEER_RUNNING);
	if (p->faults_in_row >= VML_FAULT_LIMIT) {
		netdev_warn(p->ndev, "peer keeps writing bad ring entries: resetting the link\n");
		vml_count(p, ST_LINK_RESETS, 1);
		p->peer_up = false;
		netif_carrier_off(p->ndev);
		vml_reset_section(p);
		/* The peer sees nothing of this; a reattach makes it reset. */
		vml_hcall(VMLINK_HC_CHANNEL_DETACH, 0, 0, 0);
		vml_hcall(VMLINK_HC_CHANNEL_ATTACH, 0, 0, 0);
		return;
	}
	if (up == p->peer_up)
		return;
	if (!up) {
		p->peer_up = false;
		netif_carrier_off(p->ndev);
		vml_reset_section(p);
		netdev_info(p->ndev, "peer down (state %#x): link down\n", state);
	} else {
		vml_reset_section(p);
		p->peer_up = true;
		netif_carrier_on(p->ndev);
		netif_wake_queue(p->ndev);
		netdev_info(p->ndev, "peer up: link up\n");
	}
}

/* --- transmit --------------------------------------------------------- */

static u32 vml_ring_free(struct vml_priv *p);

/*
 * Whether `need` more buffers may go out. Besides free buffers and ring
 * slots, the buffers out at once stay within the ring size: the peer hands
 * each back through its return ring of ring_entries slots, and it must
 * never have more to return than that ring holds (there are about twice as
 * many buffers as slots).
 */
static bool vml_tx_room(struct vml_priv *p, u32 need)
{
	u32 out = p->pool.count - p->pool.nfree;

	return p->pool.nfree >= need && vml_ring_free(p) >= need &&
	       out + need <= p->entries;
}

/*
 * Takes back what the peer returned. While the queue is stopped, asks for
 * an interrupt at the next return (ret_event = what we consume next) and
 * looks once more, since a return may have landed before the peer saw the
 * request; wakes the queue once a largest frame fits again.
 */
static void vml_reclaim_tx(struct vml_priv *p)
{
	bool wake = false;
	long got;

	spin_lock(&p->tx_lock);
	while (p->peer_up) {
		u32 prod = READ_ONCE(p->peer_ctl->ret_prod);

		smp_rmb();
		got = vml_reclaim(p->peer_ret, p->entries, prod, &p->ret_cons,
				  &p->pool, p->faults);
		if (got < 0) {
			p->faults_in_row = VML_FAULT_LIMIT;
			break;
		}
		WRITE_ONCE(p->own_ctl->ret_cons, p->ret_cons);
		if (!netif_queue_stopped(p->ndev))
			break;
		if (vml_tx_room(p, VMLINK_MAX_FRAGS)) {
			wake = true;
			break;
		}
		WRITE_ONCE(p->own_ctl->ret_event, p->ret_cons);
		smp_mb();
		if (READ_ONCE(p->peer_ctl->ret_prod) == p->ret_cons)
			break;
	}
	spin_unlock(&p->tx_lock);
	if (wake)
		netif_wake_queue(p->ndev);
}

/* Ring slots the peer has not consumed yet; a jumping rx_cons counts as a
 * full ring. */
static u32 vml_ring_free(struct vml_priv *p)
{
	long used = vml_pending(p->tx_prod, READ_ONCE(p->peer_ctl->rx_cons), p->entries);

	return used < 0 ? 0 : p->entries - (u32)used;
}

static netdev_tx_t vml_xmit_mediated(struct vml_priv *p, struct sk_buff *skb)
{
	long buf, r;

	if (skb_linearize(skb) || skb->len > VMLINK_BUFFER_SIZE)
		goto drop;
	spin_lock(&p->tx_lock);
	buf = vml_tx_room(p, 1) ? vml_pool_get(&p->pool) : -1;
	if (buf < 0) {
		netif_stop_queue(p->ndev);
		spin_unlock(&p->tx_lock);
		vml_count(p, ST_TX_BUSY, 1);
		vml_reclaim_tx(p);
		return NETDEV_TX_BUSY;
	}
	r = vml_hcall(VMLINK_HC_MEDIATED_SEND, virt_to_phys(skb->data), skb->len, buf);
	if (r == 0)
		p->tx_prod++;
	else
		vml_pool_put(&p->pool, buf);
	spin_unlock(&p->tx_lock);
	if (r != 0)
		goto drop;
	vml_count(p, ST_MEDIATED, 1);
	vml_count(p, ST_TX_PACKETS, 1);
	vml_count(p, ST_TX_BYTES, skb->len);
	dev_consume_skb_any(skb);
	return NETDEV_TX_OK;
drop:
	vml_count(p, ST_TX_DROPS, 1);
	dev_kfree_skb_any(skb);
	return NETDEV_TX_OK;
}

/*
 * Bytes of the frame that go alone into its first buffer: the headers,
 * when they are all the linear part holds and at least a page of payload
 * follows in fragments (TCP and UDP over a scatter-gather device), so that
 * payload starts on a page of its own. A zero-copy receiver then lends the
 * stack whole pages at offset 0, which TCP_ZEROCOPY_RECEIVE can map into
 * user space; a copying receiver does not care. Smaller frames gain
 * nothing from it and would take a buffer more. 0: no split.
 */
static u32 vml_tx_head(const struct sk_buff *skb)
{
	u32 head = skb_headlen(skb);

	return head <= VML_RX_COPYBREAK && skb->len - head >= VMLINK_BUFFER_SIZE ? head : 0;
}

static netdev_tx_t vml_start_xmit(struct sk_buff *skb, struct net_device *ndev)
{
	struct vml_priv *p = netdev_priv(ndev);
	u32 head = vml_tx_head(skb);
	u32 need = (head ? 1 : 0) + DIV_ROUND_UP(skb->len - head, VMLINK_BUFFER_SIZE);
	u32 i, old, off = 0;
	u16 first_flags = 0;
	bool ring;

	if (!p->peer_up || need == 0 || need > VMLINK_MAX_FRAGS)
		goto drop;
	if (p->mediated)
		return vml_xmit_mediated(p, skb);
	if (skb->ip_summed == CHECKSUM_PARTIAL)
		first_flags |= VMLINK_DESC_CSUM_PARTIAL;
	if (skb_is_gso(skb)) {
		unsigned int t = skb_shinfo(skb)->gso_type;

		if (t & SKB_GSO_TCPV4)
			first_flags |= VMLINK_DESC_GSO_TCPV4;
		else if (t & SKB_GSO_TCPV6)
			first_flags |= VMLINK_DESC_GSO_TCPV6;
		else if (t & SKB_GSO_UDP_L4)
			first_flags |= VMLINK_DESC_GSO_UDP_L4;
		else
			goto drop;
	}
	spin_lock(&p->tx_lock);
	if (!vml_tx_room(p, need)) {
		/* vml_reclaim_tx asks for an interrupt when buffers come
		 * back, and wakes the queue if they already have. */
		netif_stop_queue(ndev);
		spin_unlock(&p->tx_lock);
		vml_count(p, ST_TX_BUSY, 1);
		vml_reclaim_tx(p);
		return NETDEV_TX_BUSY;
	}
	old = p->tx_prod;
	for (i = 0; i < need; i++) {
		u32 buf = (u32)vml_pool_get(&p->pool);
		u32 len = i == 0 && head ? head : min_t(u32, skb->len - off, VMLINK_BUFFER_SIZE);
		struct vmlink_desc d = {
			.buf = buf,
			.len = len,
			.flags = i + 1 < need ? VMLINK_DESC_MORE : 0,
		};

		skb_copy_bits(skb, off, p->own_buf + (size_t)buf * VMLINK_BUFFER_SIZE, len);
		if (i == 0) {
			d.flags |= first_flags;
			if (first_flags & VMLINK_DESC_CSUM_PARTIAL) {
				d.csum_start = skb_checksum_start_offset(skb);
				d.csum_offset = skb->csum_offset;
			}
			if (skb_is_gso(skb))
				d.gso_size = skb_shinfo(skb)->gso_size;
		}
		p->own_ring[(old + i) & (p->entries - 1)] = d;
		off += len;
	}
	p->tx_prod = old + need;
	ring = vml_publish(&p->own_ctl->tx_prod, p->tx_prod, old, &p->peer_ctl->rx_event);
	spin_unlock(&p->tx_lock);
	if (ring)
		vml_notify(p);
	vml_count(p, ST_TX_PACKETS, 1);
	vml_count(p, ST_TX_BYTES, skb->len);
	dev_consume_skb_any(skb);
	return NETDEV_TX_OK;
drop:
	vml_count(p, ST_TX_DROPS, 1);
	dev_kfree_skb_any(skb);
	return NETDEV_TX_OK;
}

/* --- receive ---------------------------------------------------------- */

static const u8 *vml_peer_buf(struct vml_priv *p, u32 buf)
{
	return p->peer_buf + (size_t)buf * VMLINK_BUFFER_SIZE;
}

/* The page of one of the peer's buffers: only in zero-copy mode, where
 * the region has struct pages. */
static struct page *vml_peer_page(const struct vml_priv *p, u32 buf)
{
	return pfn_to_page(p->peer_buf_pfn + buf);
}

static void vml_return_frame(struct vml_priv *p, const struct vml_frame *f)
{
	u32 bufs[VMLINK_MAX_FRAGS], i;

	for (i = 0; i < f->count; i++)
		bufs[i] = f->d[i].buf;
	if (f->count)
		vml_return(p, bufs, f->count, p->epoch);
}

/* The stack's view of the sender's offloads; false when they make no sense. */
static bool vml_rx_offloads(struct sk_buff *skb, const struct vmlink_desc *d)
{
	if (d->flags & VMLINK_DESC_CSUM_PARTIAL) {
		if (!skb_partial_csum_set(skb, d->csum_start, d->csum_offset))
			return false;
	} else {
		/* Frames never leave memory: what the sender did not leave
		 * partial it completed. */
		skb->ip_summed = CHECKSUM_UNNECESSARY;
	}
	if (d->flags & (VMLINK_DESC_GSO_TCPV4 | VMLINK_DESC_GSO_TCPV6 | VMLINK_DESC_GSO_UDP_L4)) {
		if (d->gso_size == 0 || !(d->flags & VMLINK_DESC_CSUM_PARTIAL))
			return false;
		skb_shinfo(skb)->gso_size = d->gso_size;
		skb_shinfo(skb)->gso_type = SKB_GSO_DODGY |
			(d->flags & VMLINK_DESC_GSO_TCPV4 ? SKB_GSO_TCPV4 :
			 d->flags & VMLINK_DESC_GSO_TCPV6 ? SKB_GSO_TCPV6 : SKB_GSO_UDP_L4);
		skb_shinfo(skb)->gso_segs = 0;
	}
	return true;
}

static struct sk_buff *vml_copy_frame(struct vml_priv *p, const struct vml_frame *f)
{
	struct sk_buff *skb = napi_alloc_skb(&p->napi, f->bytes);
	u32 i;

	if (skb)
		for (i = 0; i < f->count; i++)
			skb_put_data(skb, vml_peer_buf(p, f->d[i].buf), f->d[i].len);
	return skb;
}

/* The rx functions hand every buffer of the frame back, or lend it to the
 * stack, whether or not they return an skb. */
static struct sk_buff *vml_rx_copy(struct vml_priv *p, const struct vml_frame *f)
{
	struct sk_buff *skb = vml_copy_frame(p, f);

	vml_return_frame(p, f);
	return skb;
}

/* What lent[] holds for a buffer lent in this life of the link. */
static u32 vml_lend_mark(const struct vml_priv *p)
{
	return p->epoch + 1;
}

/*
 * A frame naming a buffer whose page the stack still holds. Copied; the
 * held buffer goes back with the frame that holds it, unless that frame is
 * from the peer's previous life: this life owns the buffer, and the old
 * frame's return will not count (vml_return's epoch).
 */
static struct sk_buff *vml_rx_copy_held(struct vml_priv *p, const struct vml_frame *f)
{
	struct sk_buff *skb = vml_copy_frame(p, f);
	u32 bufs[VMLINK_MAX_FRAGS], i, n = 0;
	u32 now = vml_lend_mark(p);
	bool ours = false, old = false;

	for (i = 0; i < f->count; i++) {
		u32 mark = READ_ONCE(p->lent[f->d[i].buf]);

		if (mark == now)
			ours = true;
		else
			bufs[n++] = f->d[i].buf;
		old |= mark && mark != now;
	}
	/* Reused while we hold it, or (nothing held at all) named twice in
	 * the frame: the peer's fault. A buffer named twice goes back twice,
	 * which the peer's pool counts as its own fault. */
	if (ours || !old)
		vml_fault(p, VML_BUFFER_HELD);
	if (n)
		vml_return(p, bufs, n, p->epoch);
	return skb;
}

/*
 * Headers into the linear part, the rest as the peer's pages. Copies
 * instead when the peer sent a buffer whose page the stack still holds
 * (a fault), or, which cannot happen while vml_rx_may_hold bounds what is
 * held, when no frame record is free.
 */
static struct sk_buff *vml_rx_zerocopy(struct vml_priv *p, const struct vml_frame *f)
{
	u32 hlen = min_t(u32, f->d[0].len, VML_RX_COPYBREAK);
	u32 first = f->d[0].len == hlen ? 1 : 0;
	struct vml_rxframe *rf;
	struct llist_node *node;
	struct sk_buff *skb;
	u32 i;

	if (first == f->count)
		return vml_rx_copy(p, f);
	/* free_zone_device_page calls page_free, which gave this buffer
	 * back to the peer, before it sets the page's count back to 1: a page
	 * still at 0 is being freed in the context this softirq interrupted.
	 * Lent now, that late reset would overwrite whatever references the
	 * stack took meanwhile; copy instead. */
	for (i = first; i < f->count; i++) {
		if (page_ref_count(vml_peer_page(p, f->d[i].buf)) != 1) {
			vml_count(p, ST_RX_MID_FREE, 1);
			return vml_rx_copy(p, f);
		}
	}
	node = llist_del_first(&p->rxf_free);
	if (!node)
		return vml_rx_copy(p, f);
	rf = llist_entry(node, struct vml_rxframe, free);
	/* A first buffer of headers only (the sender's vml_tx_head) goes
	 * back with the frame's pages: one return per frame, not two. */
	rf->count = f->count;
	for (i = 0; i < rf->count; i++)
		rf->bufs[i] = f->d[i].buf;
	if (!vml_lend_bufs(p->lent, rf->bufs, rf->count, vml_lend_mark(p))) {
		llist_add(node, &p->rxf_free);
		return vml_rx_copy_held(p, f);
	}
	skb = napi_alloc_skb(&p->napi, VML_RX_COPYBREAK);
	if (!skb) {
		vml_unlend_bufs(p->lent, rf->bufs, rf->count);
		llist_add(node, &p->rxf_free);
		vml_return_frame(p, f);
		return NULL;
	}
	skb_put_data(skb, vml_peer_buf(p, f->d[0].buf), hlen);
	rf->epoch = p->epoch;
	atomic_set(&rf->pages, f->count - first);
	atomic_add(rf->count, &p->held);
	__module_get(THIS_MODULE);
	for (i = first; i < f->count; i++) {
		u32 off = i == 0 ? hlen : 0;
		struct page *page = vml_peer_page(p, f->d[i].buf);

		/* The page's idle reference becomes the skb's; page_free
		 * counts the frame's pages back. */
		page->zone_device_data = rf;
		skb_add_rx_frag(skb, i - first, page, off, f->d[i].len - off,
				VMLINK_BUFFER_SIZE);
	}
	return skb;
}

/* Whether a received frame, already past eth_type_trans, is a TCP segment
 * that carries nothing for an application: no payload, no SYN, FIN or
 * RST. Only small frames are asked, and those are copied whole, so the
 * headers are in the linear part and no longer in the peer's reach. IPv6
 * with extension headers, fragments and VLAN tags count as payload: a
 * frame wrongly taken for payload only costs an interrupt. */
static bool vml_pure_ack(const struct sk_buff *skb)
{
	const struct tcphdr *th;
	unsigned int thoff, len;

	if (skb->protocol == htons(ETH_P_IP)) {
		const struct iphdr *iph = (const struct iphdr *)skb->data;

		if (skb_headlen(skb) < sizeof(*iph) || iph->protocol != IPPROTO_TCP ||
		    ip_is_fragment(iph))
			return false;
		thoff = iph->ihl * 4;
		len = ntohs(iph->tot_len);
	} else if (skb->protocol == htons(ETH_P_IPV6)) {
		const struct ipv6hdr *ip6 = (const struct ipv6hdr *)skb->data;

		if (skb_headlen(skb) < sizeof(*ip6) || ip6->nexthdr != IPPROTO_TCP)
			return false;
		thoff = sizeof(*ip6);
		len = thoff + ntohs(ip6->payload_len);
	} else {
		return false;
	}
	if (thoff < sizeof(struct iphdr) || skb_headlen(skb) < thoff + sizeof(*th))
		return false;
	th = (const struct tcphdr *)(skb->data + thoff);
	if (th->syn || th->fin || th->rst)
		return false;
	return len == thoff + th->doff * 4;
}

/* Half the ring at most, so that a sender with every entry out always
 * passes the event. */
static u32 vml_rx_batch(const struct vml_priv *p, bool acks_only)
{
	u32 want = acks_only ? max(ack_batch, rx_batch) : rx_batch;

	return clamp_t(u32, want, 1, max(p->entries / 2, 1u));
}

static int vml_poll(struct napi_struct *napi, int budget)
{
	struct vml_priv *p = container_of(napi, struct vml_priv, napi);
	struct vml_frame f;
	bool acks_only = true;
	bool zerocopy = READ_ONCE(p->zerocopy);
	int done = 0;

	vml_check_link(p);
	vml_reclaim_tx(p);
	while (p->peer_up && done < budget) {
		u32 prod = READ_ONCE(p->peer_ctl->tx_prod);
		struct sk_buff *skb;
		bool copy, lazy, small;
		int r;

		smp_rmb();
		r = vml_read_frame(p->peer_ring, p->entries, prod, &p->rx_cons, p->nbuf, &f);
		if (r == 0)
			break;
		done++;
		if (r < 0) {
			vml_fault(p, -r);
			vml_count(p, ST_RX_DROPS, 1);
			if (-r == VML_INDEX_JUMP)
				break;
			vml_return_frame(p, &f);
			continue;
		}
		p->faults_in_row = 0;
		/* A slow reader holds the peer's buffers: past the limit of
		 * vml_rx_may_hold, copy instead, so the sender never runs
		 * dry. A frame of more buffers than an skb has fragment slots
		 * (only a misbehaving peer sends one: MAX_FRAGS is one more
		 * than MAX_SKB_FRAGS) is copied too. */
		lazy = zerocopy &&
		       !vml_rx_may_hold((u32)atomic_read(&p->held), f.count,
					p->nbuf, p->entries);
		small = f.bytes <= VML_RX_SMALL;
		copy = !zerocopy || lazy || small || f.count > MAX_SKB_FRAGS;
		skb = copy ? vml_rx_copy(p, &f) : vml_rx_zerocopy(p, &f);
		if (!skb) {
			vml_count(p, ST_RX_DROPS, 1);
			continue;
		}
		if (copy)
			vml_count(p, lazy ? ST_LAZY_COPIES :
				     small ? ST_RX_COPYBREAK : ST_RX_COPIED, 1);
		else
			vml_count(p, ST_RX_ZEROCOPY, 1);
		/* Before eth_type_trans: the sender's checksum start counts
		 * from the Ethernet header, where skb->data still is. (After
		 * the pull it pointed ETH_HLEN bytes too far, and a frame
		 * whose linear part is just its headers failed the bound.) */
		if (!vml_rx_offloads(skb, &f.d[0])) {
			vml_count(p, ST_RX_DROPS, 1);
			dev_kfree_skb_any(skb);
			continue;
		}
		skb->protocol = eth_type_trans(skb, p->ndev);
		acks_only &= small && vml_pure_ack(skb);
		vml_count(p, ST_RX_PACKETS, 1);
		vml_count(p, ST_RX_BYTES, f.bytes);
		napi_gro_receive(napi, skb);
	}
	WRITE_ONCE(p->own_ctl->rx_cons, p->rx_cons);
	if (p->faults_in_row >= VML_FAULT_LIMIT)
		vml_check_link(p);
	if (done < budget && napi_complete_done(napi, done)) {
		/* Ask for an interrupt for the next frame, then look again:
		 * one may have arrived before the peer saw the request. */
		acks_only &= done > 0;
		if (acks_only)
			vml_count(p, ST_ACK_BATCHES, 1);
		WRITE_ONCE(p->own_ctl->rx_event,
			   p->rx_cons + vml_rx_batch(p, acks_only) - 1);
		smp_mb();
		if ((p->peer_up && READ_ONCE(p->peer_ctl->tx_prod) != p->rx_cons) ||
		    READ_ONCE(p->hdr->state_gen) != p->state_gen)
			napi_schedule(napi);
	}
	return done;
}

static irqreturn_t vml_interrupt(int irq, void *data)
{
	struct vml_priv *p = data;

	vml_count(p, ST_INTERRUPTS, 1);
	napi_schedule(&p->napi);
	return IRQ_HANDLED;
}

/* --- net device ------------------------------------------------------- */

static int vml_open(struct net_device *ndev)
{
	struct vml_priv *p = netdev_priv(ndev);

	napi_enable(&p->napi);
	netif_start_queue(ndev);
	napi_schedule(&p->napi);
	return 0;
}

static int vml_stop(struct net_device *ndev)
{
	struct vml_priv *p = netdev_priv(ndev);

	netif_stop_queue(ndev);
	napi_disable(&p->napi);
	return 0;
}

static void vml_get_stats64(struct net_device *ndev, struct rtnl_link_stats64 *s)
{
	struct vml_priv *p = netdev_priv(ndev);
	int i;

	s->tx_packets = atomic64_read(&p->st[ST_TX_PACKETS]);
	s->tx_bytes = atomic64_read(&p->st[ST_TX_BYTES]);
	s->rx_packets = atomic64_read(&p->st[ST_RX_PACKETS]);
	s->rx_bytes = atomic64_read(&p->st[ST_RX_BYTES]);
	s->tx_dropped = atomic64_read(&p->st[ST_TX_DROPS]);
	s->rx_dropped = atomic64_read(&p->st[ST_RX_DROPS]);
	for (i = 1; i < VML_FAULT_KINDS; i++)
		s->rx_errors += atomic64_read(&p->st[ST_FAULT0 + i]);
}

static int vml_change_mtu(struct net_device *ndev, int mtu)
{
	struct vml_priv *p = netdev_priv(ndev);

	/* The mediated path hands the hypervisor one buffer per frame. */
	if (p->mediated && mtu + ETH_HLEN > VMLINK_BUFFER_SIZE)
		return -EINVAL;
	ndev->mtu = mtu;
	return 0;
}

/*
 * The stack found the queue stopped for watchdog_timeo: every way buffers
 * come back raises an interrupt, so this is a lost notification or a peer
 * that stopped returning. Say where each index stands, then poke both
 * sides (our poll reclaims, the peer's poll reads our ring and returns
 * what it can) so one lost interrupt does not cost the link.
 */
static void vml_tx_timeout(struct net_device *ndev, unsigned int txqueue)
{
	struct vml_priv *p = netdev_priv(ndev);

	netdev_warn(ndev, "tx stalled: peer %s, %u buffers free of %u, %u ring slots free, tx_prod %u peer rx_cons %u rx_event %u, ret_cons %u peer ret_prod %u our ret_event %u; receiving: rx_cons %u peer tx_prod %u, holding %d, ret_prod %u peer ret_event %u\n",
		    p->peer_up ? "up" : "down", p->pool.nfree, p->pool.count,
		    vml_ring_free(p), p->tx_prod, READ_ONCE(p->peer_ctl->rx_cons),
		    READ_ONCE(p->peer_ctl->rx_event), p->ret_cons,
		    READ_ONCE(p->peer_ctl->ret_prod), READ_ONCE(p->own_ctl->ret_event),
		    p->rx_cons, READ_ONCE(p->peer_ctl->tx_prod), atomic_read(&p->held),
		    READ_ONCE(p->own_ctl->ret_prod), READ_ONCE(p->peer_ctl->ret_event));
	if (p->peer_up)
		vml_doorbell(p);
	napi_schedule(&p->napi);
}

static const struct net_device_ops vml_netdev_ops = {
	.ndo_open = vml_open,
	.ndo_stop = vml_stop,
	.ndo_start_xmit = vml_start_xmit,
	.ndo_get_stats64 = vml_get_stats64,
	.ndo_change_mtu = vml_change_mtu,
	.ndo_tx_timeout = vml_tx_timeout,
	.ndo_set_mac_address = eth_mac_addr,
	.ndo_validate_addr = eth_validate_addr,
};

/* `ethtool --set-priv-flags vml0 rx-copy on|off` switches the receive
 * mode while the link runs, which rx_mode only chooses at load: the
 * benchmark compares the two modes in one boot, and a user can fall back
 * to copying without reloading. NAPI reads the mode once per pass, and
 * frames already lent stay lent until the stack lets them go. */
static const char vml_pflag_names[][ETH_GSTRING_LEN] = { "rx-copy" };
#define VML_PFLAG_RX_COPY BIT(0)

static int vml_sset_count(struct net_device *ndev, int set)
{
	switch (set) {
	case ETH_SS_STATS:
		return ST_COUNT + VMLINK_STAT_COUNT;
	case ETH_SS_PRIV_FLAGS:
		return ARRAY_SIZE(vml_pflag_names);
	default:
		return -EOPNOTSUPP;
	}
}

static void vml_get_strings(struct net_device *ndev, u32 set, u8 *data)
{
	if (set == ETH_SS_PRIV_FLAGS) {
		memcpy(data, vml_pflag_names, sizeof(vml_pflag_names));
		return;
	}
	if (set != ETH_SS_STATS)
		return;
	memcpy(data, vml_stat_names, sizeof(vml_stat_names));
	memcpy(data + sizeof(vml_stat_names), vml_hv_names, sizeof(vml_hv_names));
}

static u32 vml_get_priv_flags(struct net_device *ndev)
{
	struct vml_priv *p = netdev_priv(ndev);

	return READ_ONCE(p->zerocopy) ? 0 : VML_PFLAG_RX_COPY;
}

static int vml_set_priv_flags(struct net_device *ndev, u32 flags)
{
	struct vml_priv *p = netdev_priv(ndev);
	bool zerocopy = !(flags & VML_PFLAG_RX_COPY);

	/* Lending needs struct pages over the region (probe said so). */
	if (zerocopy && !p->pages) {
		netdev_warn(ndev, "rx-copy off: no struct pages for the region, receives stay copied\n");
		return -EOPNOTSUPP;
	}
	/* Debug only: the benchmark switches hundreds of times a run. */
	netdev_dbg(ndev, "rx %s\n", zerocopy ? "zerocopy" : "copy");
	WRITE_ONCE(p->zerocopy, zerocopy);
	return 0;
}

static void vml_get_ethtool_stats(struct net_device *ndev, struct ethtool_stats *es, u64 *data)
{
	struct vml_priv *p = netdev_priv(ndev);
	int i;

	atomic64_set(&p->st[ST_RX_HELD], atomic_read(&p->held));
	atomic64_set(&p->st[ST_TX_FREE], READ_ONCE(p->pool.nfree));
	atomic64_set(&p->st[ST_TX_STOPPED], netif_queue_stopped(ndev));
	for (i = 0; i < ST_COUNT; i++)
		data[i] = atomic64_read(&p->st[i]);
	for (i = 0; i < VMLINK_STAT_COUNT; i++) {
		long v = vml_hcall(VMLINK_HC_STATS, i, 0, 0);

		data[ST_COUNT + i] = v < 0 ? 0 : v;
	}
}

static void vml_get_drvinfo(struct net_device *ndev, struct ethtool_drvinfo *info)
{
	struct vml_priv *p = netdev_priv(ndev);

	strscpy(info->driver, KBUILD_MODNAME, sizeof(info->driver));
	strscpy(info->version, VMLINK_NET_VERSION, sizeof(info->version));
	strscpy(info->bus_info, pci_name(p->pdev), sizeof(info->bus_info));
}

static const struct ethtool_ops vml_ethtool_ops = {
	.get_drvinfo = vml_get_drvinfo,
	.get_link = ethtool_op_get_link,
	.get_sset_count = vml_sset_count,
	.get_strings = vml_get_strings,
	.get_ethtool_stats = vml_get_ethtool_stats,
	.get_priv_flags = vml_get_priv_flags,
	.set_priv_flags = vml_set_priv_flags,
};

/* --- PCI -------------------------------------------------------------- */

/* Checks the hypervisor's header against the BAR before any pointer is
 * derived from it. */
static int vml_check_header(struct pci_dev *pdev, const struct vmlink_header *h, u64 bar_len)
{
	u64 sec_end = h->section_offset + 2 * h->section_size;

	if (h->magic != VMLINK_CHANNEL_MAGIC || h->version != VMLINK_ABI_VERSION) {
		dev_err(&pdev->dev, "channel header: magic %#llx version %u, want %#llx version %u\n",
			h->magic, h->version, VMLINK_CHANNEL_MAGIC, VMLINK_ABI_VERSION);
		return -EINVAL;
	}
	if (h->side > 1 || h->region_size != bar_len || sec_end > bar_len ||
	    h->section_offset % PAGE_SIZE || h->section_size % PAGE_SIZE ||
	    !is_power_of_2(h->ring_entries) || h->ring_entries > VMLINK_MAX_RING_ENTRIES ||
	    h->buffer_size != VMLINK_BUFFER_SIZE ||
	    h->ring_offset < sizeof(struct vmlink_control) ||
	    h->ring_offset + (u64)h->ring_entries * sizeof(struct vmlink_desc) > h->ret_offset ||
	    h->ret_offset + (u64)h->ring_entries * 4 > h->buffers_offset ||
	    h->buffers_offset % PAGE_SIZE ||
	    h->buffers_offset + (u64)h->buffer_count * VMLINK_BUFFER_SIZE > h->section_size ||
	    h->buffer_count < VMLINK_MAX_FRAGS) {
		dev_err(&pdev->dev, "channel header: inconsistent layout (side %u, region %llu, BAR %llu, section %llu, %u entries, %u buffers)\n",
			h->side, h->region_size, bar_len, h->section_size,
			h->ring_entries, h->buffer_count);
		return -EINVAL;
	}
	return 0;
}

static int vml_probe(struct pci_dev *pdev, const struct pci_device_id *id)
{
	struct net_device *ndev;
	struct vml_priv *p;
	resource_size_t start, len;
	u8 *own, *peer;
	int err;
	u32 i;

	err = pcim_enable_device(pdev);
	if (err)
		return err;
	start = pci_resource_start(pdev, VMLINK_PCI_REGION_BAR);
	len = pci_resource_len(pdev, VMLINK_PCI_REGION_BAR);
	if (!len || !(pci_resource_flags(pdev, VMLINK_PCI_REGION_BAR) & IORESOURCE_MEM)) {
		dev_err(&pdev->dev, "BAR%d is not a memory BAR\n", VMLINK_PCI_REGION_BAR);
		return -ENODEV;
	}
	ndev = alloc_netdev(sizeof(*p), "vml%d", NET_NAME_ENUM, ether_setup);
	if (!ndev)
		return -ENOMEM;
	SET_NETDEV_DEV(ndev, &pdev->dev);
	p = netdev_priv(ndev);
	p->ndev = ndev;
	p->pdev = pdev;
	spin_lock_init(&p->tx_lock);
	spin_lock_init(&p->ret_lock);
	p->zerocopy = strcmp(rx_mode, "copy") != 0;
	p->mediated = strcmp(tx_mode, "mediated") == 0;

	/* Struct pages over the whole BAR (it is ordinary memory to us); the
	 * direct map then reaches it too. */
	p->pgmap.type = MEMORY_DEVICE_GENERIC;
	p->pgmap.range.start = start;
	p->pgmap.range.end = start + len - 1;
	p->pgmap.nr_range = 1;
	p->pgmap.ops = &vml_pgmap_ops;
	/* Memory hotplug works in whole subsections (2 MiB) and warns with a
	 * stack trace about anything else: ask only for what it can give. */
	if (IS_ALIGNED(start, SUBSECTION_SIZE) && IS_ALIGNED(len, SUBSECTION_SIZE))
		p->base = devm_memremap_pages(&pdev->dev, &p->pgmap);
	else
		p->base = ERR_PTR(-EINVAL);
	if (IS_ERR(p->base)) {
		dev_warn(&pdev->dev, "no struct pages for the region (%ld%s): copying receives\n",
			 PTR_ERR(p->base),
			 IS_ALIGNED(len, SUBSECTION_SIZE) ? "" : ", not whole 2 MiB subsections");
		p->zerocopy = false;
		p->base = devm_memremap(&pdev->dev, start, len, MEMREMAP_WB);
		if (IS_ERR(p->base)) {
			err = PTR_ERR(p->base);
			goto free;
		}
	} else {
		p->pages = true;
	}
	p->hdr = p->base;
	err = vml_check_header(pdev, p->hdr, len);
	if (err)
		goto free;
	p->side = p->hdr->side;
	p->entries = p->hdr->ring_entries;
	p->nbuf = p->hdr->buffer_count;
	p->state_gen = READ_ONCE(p->hdr->state_gen) - 1; /* look at it once */
	own = (u8 *)p->base + p->hdr->section_offset + p->side * p->hdr->section_size;
	peer = (u8 *)p->base + p->hdr->section_offset + (1 - p->side) * p->hdr->section_size;
	p->own_ctl = (struct vmlink_control *)own;
	p->own_ring = (struct vmlink_desc *)(own + p->hdr->ring_offset);
	p->own_ret = (u32 *)(own + p->hdr->ret_offset);
	p->own_buf = own + p->hdr->buffers_offset;
	p->peer_ctl = (const struct vmlink_control *)peer;
	p->peer_ring = (const struct vmlink_desc *)(peer + p->hdr->ring_offset);
	p->peer_ret = (const u32 *)(peer + p->hdr->ret_offset);
	p->peer_buf = peer + p->hdr->buffers_offset;
	p->peer_buf_pfn = PHYS_PFN(start + (p->peer_buf - (u8 *)p->base));
	p->pool.count = p->nbuf;
	p->pool.free = kvcalloc(p->nbuf, sizeof(u32), GFP_KERNEL);
	p->pool.out = kvzalloc(p->nbuf, GFP_KERNEL);
	p->lent = kvcalloc(p->nbuf, sizeof(u32), GFP_KERNEL);
	p->rxf = kvcalloc(p->entries, sizeof(*p->rxf), GFP_KERNEL);
	if (!p->pool.free || !p->pool.out || !p->lent || !p->rxf) {
		err = -ENOMEM;
		goto free;
	}
	/* More than enough: a frame in flight holds at least one buffer, and
	 * vml_rx_may_hold keeps what is held under half the ring. */
	init_llist_head(&p->rxf_free);
	for (i = 0; i < p->entries; i++)
		llist_add(&p->rxf[i].free, &p->rxf_free);
	vml_reset_section(p);

	eth_hw_addr_set(ndev, p->hdr->mac);
	ndev->netdev_ops = &vml_netdev_ops;
	ndev->ethtool_ops = &vml_ethtool_ops;
	ndev->min_mtu = ETH_MIN_MTU;
	ndev->max_mtu = p->mediated ? VMLINK_BUFFER_SIZE - ETH_HLEN : 65535;
	if (!p->mediated) {
		ndev->hw_features = NETIF_F_SG | NETIF_F_HW_CSUM | NETIF_F_TSO |
				    NETIF_F_TSO6 | NETIF_F_GSO_UDP_L4;
		ndev->features = ndev->hw_features | NETIF_F_HIGHDMA;
		netif_set_tso_max_size(ndev, VMLINK_MAX_FRAGS * VMLINK_BUFFER_SIZE - 2 * VMLINK_BUFFER_SIZE);
	}
	/* Long, for guest time under emulation: only a stall gets there. */
	ndev->watchdog_timeo = 10 * HZ;
	netif_napi_add(ndev, &p->napi, vml_poll);
	netif_carrier_off(ndev);

	err = pci_alloc_irq_vectors(pdev, 1, 1, PCI_IRQ_MSI);
	if (err < 0) {
		dev_err(&pdev->dev, "no MSI vector: %d\n", err);
		goto free;
	}
	err = request_irq(pci_irq_vector(pdev, 0), vml_interrupt, 0, "vmlink", p);
	if (err)
		goto vectors;
	err = register_netdev(ndev);
	if (err)
		goto irq;
	pci_set_drvdata(pdev, p);
	err = vml_hcall(VMLINK_HC_CHANNEL_ATTACH, 0, 0, 0);
	if (err) {
		dev_err(&pdev->dev, "attach hypercall failed: %d\n", err);
		unregister_netdev(ndev);
		goto irq;
	}
	netdev_info(ndev, "vmlink channel side %u: %llu MiB region, %u ring entries, %u buffers, rx %s, tx %s\n",
		    p->side, p->hdr->region_size >> 20, p->entries, p->nbuf,
		    p->zerocopy ? "zerocopy" : "copy", p->mediated ? "mediated" : "ring");
	napi_schedule(&p->napi);
	return 0;
irq:
	free_irq(pci_irq_vector(pdev, 0), p);
vectors:
	pci_free_irq_vectors(pdev);
free:
	kvfree(p->pool.free);
	kvfree(p->pool.out);
	kvfree(p->lent);
	kvfree(p->rxf);
	free_netdev(ndev);
	return err;
}

static void vml_remove(struct pci_dev *pdev)
{
	struct vml_priv *p = pci_get_drvdata(pdev);

	vml_hcall(VMLINK_HC_CHANNEL_DETACH, 0, 0, 0);
	unregister_netdev(p->ndev);
	free_irq(pci_irq_vector(pdev, 0), p);
	pci_free_irq_vectors(pdev);
	/* Pages still with the stack hold module references, so by now
	 * none is out (rmmod refuses while any is). */
	WARN_ON(atomic_read(&p->held));
	kvfree(p->pool.free);
	kvfree(p->pool.out);
	kvfree(p->lent);
	kvfree(p->rxf);
	free_netdev(p->ndev);
}

static const struct pci_device_id vml_ids[] = {
	{ PCI_DEVICE(VMLINK_PCI_VENDOR_ID, VMLINK_PCI_DEVICE_ID) },
	{ }
};
MODULE_DEVICE_TABLE(pci, vml_ids);

static struct pci_driver vml_driver = {
	.name = "vmlink_net",
	.id_table = vml_ids,
	.probe = vml_probe,
	.remove = vml_remove,
};

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
	if (strcmp(rx_mode, "copy") && strcmp(rx_mode, "zerocopy")) {
		pr_err("vmlink_net: rx_mode=%s: must be copy or zerocopy\n", rx_mode);
		return -EINVAL;
	}
	if (strcmp(tx_mode, "ring") && strcmp(tx_mode, "mediated")) {
		pr_err("vmlink_net: tx_mode=%s: must be ring or mediated\n", tx_mode);
		return -EINVAL;
	}
	/* Hypercalls are VMCALLs: only on vmlink. */
	if (!on_vmlink)
		return 0;
	return pci_register_driver(&vml_driver);
}

static void __exit vmlink_net_exit(void)
{
	char sig[13];

	if (vmlink_detect(sig))
		pci_unregister_driver(&vml_driver);
	pr_info("vmlink_net: unloaded\n");
}

module_init(vmlink_net_init);
module_exit(vmlink_net_exit);
MODULE_DESCRIPTION("vmlink paravirtual NIC");
MODULE_LICENSE("GPL");
MODULE_VERSION(VMLINK_NET_VERSION);
