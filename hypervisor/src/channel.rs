//! The inter-VM channel as the hypervisor keeps it: the region's frames,
//! each side's state (VM running, driver attached), pending notifications
//! and counters. Shared by the two CPUs that run the channel's VMs, so all
//! of it is atomics; the guests see the state only through their
//! read-only header page, which only this module writes.
//!
//! A notification for a side is a flag plus a kick (a physical IPI to the
//! side's CPU): the IPI makes that CPU leave its guest (or wakes it from
//! its idle loop), and its exit loop turns the flag into the MSI vector the
//! guest's driver programmed.

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use crate::vmm::memmap::ChannelFrames;
use core::mem::offset_of;
use vmlink_abi::channel::{
    need_event, peer_state, Control, Desc, Header, Layout, BUFFER_SIZE, PAGE,
};
use vmlink_abi::{HC_ERR_INVALID, HC_ERR_PEER_DOWN};

#[derive(Default)]
struct Side {
    running: AtomicBool,
    attached: AtomicBool,
    /// A notification waits for this side's guest.
    pending: AtomicBool,
    /// This side's CPU is in the hypervisor's idle loop (its guest halted),
    /// which polls `pending`: a notification then needs no IPI, which would
    /// only make the guest exit again right after its next entry.
    idle: AtomicBool,
    /// What the idle watch last notified this side about, per watched
    /// ring ([`WATCH_RX`], [`WATCH_RET`]): bit 32 set, the producer index
    /// in the low half. Forgotten on every link change, since both
    /// drivers then restart their indices from zero and an old value
    /// could hide a new entry.
    watched: [AtomicU64; 2],
    /// Notifications the idle watch raised (rings the peer did not ring
    /// for, since this side was halted).
    watched_notifications: AtomicU64,
    doorbells: AtomicU64,
    interrupts: AtomicU64,
    mediated: AtomicU64,
}

/// The rings the idle watch looks at for a side: the peer's tx ring
/// (frames to receive) and the peer's return ring (our buffers back).
const WATCH_RX: usize = 0;
const WATCH_RET: usize = 1;

/// What a side's counters say.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SideStats {
    pub doorbells: u64,
    pub interrupts: u64,
    pub mediated: u64,
    pub watched: u64,
}

pub struct Channel {
    pub frames: ChannelFrames,
    /// Physical CPU index of each side.
    cpus: [usize; 2],
    kick: fn(usize),
    sides: [Side; 2],
}

impl Channel {
    /// Takes the frames the boot CPU allocated, zeroes the region and writes
    /// both header pages.
    ///
    /// # Safety
    /// `frames` must describe memory this hypervisor owns, reachable at
    /// those addresses (identity map), used by nothing else: the region of
    /// `frames.layout.region_size` bytes and the two header pages.
    pub unsafe fn new(frames: ChannelFrames, cpus: [usize; 2], kick: fn(usize)) -> Channel {
        // SAFETY: the caller hands over the region and header pages.
        unsafe {
            core::ptr::write_bytes(
                frames.region_hpa as *mut u8,
                0,
                frames.layout.region_size as usize,
            );
            for hpa in frames.header_hpa {
                core::ptr::write_bytes(hpa as *mut u8, 0, PAGE as usize);
            }
        }
        let ch = Channel {
            frames,
            cpus,
            kick,
            sides: Default::default(),
        };
        for side in 0..2 {
            let h = frames.layout.header(side as u32, 0, 0);
            // SAFETY: the header page belongs to this channel (above); a
            // Header fits in a page and the page is page-aligned.
            unsafe { core::ptr::write_volatile(frames.header_hpa[side] as *mut Header, h) };
        }
        ch
    }

    pub fn layout(&self) -> &Layout {
        &self.frames.layout
    }

    /// The u32 field at `offset` of `side`'s header (`peer_state`: what
    /// `side` sees of its peer; `state_gen`: its generation).
    fn header_word(&self, side: usize, offset: usize) -> &AtomicU32 {
        debug_assert!(offset.is_multiple_of(4) && offset < core::mem::size_of::<Header>());
        let at = self.frames.header_hpa[side] + offset as u64;
        // SAFETY: inside the header page this channel owns (see `new`),
        // 4-byte aligned (Header is repr(C) with an 8-byte alignment and
        // its u32 fields at multiples of 4); guests map it read-only, so
        // only this module writes it, and only through atomics.
        unsafe { &*(at as *const AtomicU32) }
    }

    /// Rewrites what `side` sees of its peer and tells it.
    fn publish_peer_state(&self, side: usize) {
        for s in &self.sides {
            for w in &s.watched {
                w.store(0, Ordering::SeqCst);
            }
        }
        let peer = &self.sides[1 - side];
        let mut word = 0;
        if peer.running.load(Ordering::SeqCst) {
            word |= peer_state::RUNNING;
        }
        if peer.attached.load(Ordering::SeqCst) {
            word |= peer_state::ATTACHED;
        }
        self.header_word(side, core::mem::offset_of!(Header, peer_state))
            .store(word, Ordering::SeqCst);
        self.header_word(side, core::mem::offset_of!(Header, state_gen))
            .fetch_add(1, Ordering::SeqCst);
        self.notify(side);
    }

    fn notify(&self, side: usize) {
        // A kick is already on its way while the flag is set (the side
        // clears it before it injects): one IPI per notification taken,
        // however fast a peer rings.
        // No IPI to a side in its idle loop: it polls the flag. Both
        // flags are SeqCst, and the side clears `idle` before it polls
        // `pending` again, so either it sees the flag or this sees it busy.
        let s = &self.sides[side];
        if !s.pending.swap(true, Ordering::SeqCst) && !s.idle.load(Ordering::SeqCst) {
            (self.kick)(self.cpus[side]);
        }
    }

    /// The u32 at `offset` of `side`'s control page, which that side's
    /// guest writes whenever it likes: any value may be read.
    fn control_word(&self, side: usize, offset: usize) -> &AtomicU32 {
        debug_assert!(offset.is_multiple_of(4) && offset < core::mem::size_of::<Control>());
        let at = self.frames.region_hpa + self.frames.layout.section(side) + offset as u64;
        // SAFETY: the control page opens the side's section inside the
        // region this channel owns (Layout), and `offset` is a u32 field
        // of Control, so the word is in bounds and 4-byte aligned. The
        // guest shares it: it holds a plain u32, read only atomically.
        unsafe { &*(at as *const AtomicU32) }
    }

    /// `side`'s CPU enters (true) or leaves its idle loop. After leaving,
    /// it must look at [`Channel::take_pending`] before entering its guest.
    ///
    /// While `side` idles, its peer's header says so (`peer_halted`) and
    /// the peer's driver does not ring: [`Channel::watch`] notices what it
    /// publishes. Leaving, the flag is cleared before one last look, so a
    /// peer that still saw it set published before that look (both sides
    /// order the flag and the indices with full barriers).
    pub fn set_idle(&self, side: usize, idle: bool) {
        self.sides[side].idle.store(idle, Ordering::SeqCst);
        self.header_word(1 - side, core::mem::offset_of!(Header, peer_halted))
            .store(u32::from(idle), Ordering::SeqCst);
        if !idle {
            self.watch(side);
        }
    }

    /// Called on `side`'s CPU while its guest is halted (and at its timer
    /// exits, for a guest that never halts): notifies it of frames the
    /// peer published that it has not consumed (whatever its `rx_event`:
    /// a driver that batches asks for a doorbell only after several and
    /// relies on this for the rest), and of buffers coming back once its
    /// `ret_event` asks for them. Once per producer index, so a guest that
    /// stopped listening (its interface down) is not woken again and again
    /// for the same entry. The indices are the guests' to write: wrong
    /// ones cost the side at most an interrupt per value its peer writes.
    pub fn watch(&self, side: usize) {
        let peer = 1 - side;
        let word = |s: usize, at: usize| self.control_word(s, at).load(Ordering::SeqCst);
        let tx_prod = word(peer, offset_of!(Control, tx_prod));
        let ret_prod = word(peer, offset_of!(Control, ret_prod));
        let frames = tx_prod != word(side, offset_of!(Control, rx_cons));
        let returns = need_event(
            word(side, offset_of!(Control, ret_event)),
            ret_prod,
            word(side, offset_of!(Control, ret_cons)),
        );
        for (ring, prod, wanted) in [(WATCH_RX, tx_prod, frames), (WATCH_RET, ret_prod, returns)] {
            if !wanted {
                continue;
            }
            let seen = (1 << 32) | u64::from(prod);
            if self.sides[side].watched[ring].swap(seen, Ordering::Relaxed) != seen {
                self.sides[side]
                    .watched_notifications
                    .fetch_add(1, Ordering::Relaxed);
                self.notify(side);
            }
        }
    }

    /// The VM on `side` starts or stops running. A stopped VM's driver is
    /// gone too: the peer reclaims its buffers.
    pub fn set_running(&self, side: usize, running: bool) {
        self.sides[side].running.store(running, Ordering::SeqCst);
        if !running {
            self.sides[side].attached.store(false, Ordering::SeqCst);
        }
        self.publish_peer_state(1 - side);
    }

    /// Hypercall CHANNEL_ATTACH / CHANNEL_DETACH from `side`'s driver.
    pub fn set_attached(&self, side: usize, attached: bool) -> i64 {
        self.sides[side].attached.store(attached, Ordering::SeqCst);
        self.publish_peer_state(1 - side);
        0
    }

    /// Hypercall DOORBELL from `side`.
    pub fn doorbell(&self, side: usize) -> i64 {
        let peer = &self.sides[1 - side];
        if !peer.running.load(Ordering::SeqCst) || !peer.attached.load(Ordering::SeqCst) {
            return HC_ERR_PEER_DOWN;
        }
        self.sides[side].doorbells.fetch_add(1, Ordering::Relaxed);
        self.notify(1 - side);
        0
    }

    /// Hypercall MEDIATED_SEND from `side`: copies `frame` (already taken
    /// from the caller's RAM) into buffer `buf` of the caller's section,
    /// publishes a descriptor for it and interrupts the peer.
    pub fn mediated_send(&self, side: usize, frame: &[u8], buf: u64) -> i64 {
        let l = &self.frames.layout;
        if frame.is_empty()
            || frame.len() > BUFFER_SIZE as usize
            || buf >= u64::from(l.buffer_count)
        {
            return HC_ERR_INVALID;
        }
        let peer = &self.sides[1 - side];
        if !peer.running.load(Ordering::SeqCst) || !peer.attached.load(Ordering::SeqCst) {
            return HC_ERR_PEER_DOWN;
        }
        let section = self.frames.region_hpa + l.section(side);
        // Any value the guest left there is fine: it is used modulo the
        // ring size.
        let prod = self.control_word(side, offset_of!(Control, tx_prod));
        let index = prod.load(Ordering::Acquire);
        let slot = section
            + u64::from(l.ring_offset)
            + u64::from(index % l.ring_entries) * core::mem::size_of::<Desc>() as u64;
        let dst = section + u64::from(l.buffers_offset) + buf * u64::from(BUFFER_SIZE);
        let desc = Desc {
            buf: buf as u32,
            len: frame.len() as u32,
            ..Desc::default()
        };
        // SAFETY: `buf` < buffer_count and `index % ring_entries` keep both
        // destinations inside the caller's section of the region (Layout
        // guarantees the ring and buffers fit). The memory is shared with
        // guests, which may write it at any time: it holds plain bytes, no
        // Rust object, and a guest racing its own buffer only spoils its
        // own frame.
        unsafe {
            core::ptr::copy_nonoverlapping(frame.as_ptr(), dst as *mut u8, frame.len());
            core::ptr::write_volatile(slot as *mut Desc, desc);
        }
        prod.store(index.wrapping_add(1), Ordering::Release);
        self.sides[side].mediated.fetch_add(1, Ordering::Relaxed);
        self.notify(1 - side);
        0
    }

    /// Whether a notification waits for `side`; clears it.
    pub fn take_pending(&self, side: usize) -> bool {
        self.sides[side].pending.swap(false, Ordering::SeqCst)
    }

    /// Counts an interrupt injected into `side`'s guest.
    pub fn injected(&self, side: usize) {
        self.sides[side].interrupts.fetch_add(1, Ordering::Relaxed);
    }

    pub fn stats(&self, side: usize) -> SideStats {
        SideStats {
            doorbells: self.sides[side].doorbells.load(Ordering::Relaxed),
            interrupts: self.sides[side].interrupts.load(Ordering::Relaxed),
            mediated: self.sides[side].mediated.load(Ordering::Relaxed),
            watched: self.sides[side]
                .watched_notifications
                .load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    static KICKS: Mutex<Vec<usize>> = Mutex::new(Vec::new());

    fn kick(cpu: usize) {
        KICKS.lock().unwrap().push(cpu);
    }

    /// Page-aligned memory standing in for host frames (on the host the
    /// "identity map" is the process's own address space).
    fn pages(n: usize) -> u64 {
        let layout = std::alloc::Layout::from_size_align(n * PAGE as usize, PAGE as usize).unwrap();
        // SAFETY: non-zero size; leaked on purpose (the channel lives for
        // the test).
        let p = unsafe { std::alloc::alloc(layout) };
        assert!(!p.is_null());
        p as u64
    }

    fn header(hpa: u64) -> Header {
        // SAFETY: a page from `pages`, written by Channel.
        unsafe { core::ptr::read_volatile(hpa as *const Header) }
    }

    #[test]
    fn state_changes_reach_the_peer_header_and_kick_its_cpu() {
        let layout = Layout::new(1 << 20, 0).unwrap();
        let region = pages(256);
        // SAFETY: garbage first, to see that `new` zeroes.
        unsafe { core::ptr::write_bytes(region as *mut u8, 0xAB, 1 << 20) };
        let frames = ChannelFrames {
            layout,
            region_hpa: region,
            header_hpa: [pages(1), pages(1)],
        };
        // SAFETY: the memory above is this test's.
        let ch = unsafe { Channel::new(frames, [4, 7], kick) };
        // SAFETY: as above.
        let bytes = unsafe { core::slice::from_raw_parts(region as *const u8, 1 << 20) };
        assert!(bytes.iter().all(|&b| b == 0));
        for side in 0..2 {
            let h = header(frames.header_hpa[side]);
            assert_eq!(h.side, side as u32);
            assert_eq!(h.magic, vmlink_abi::channel::MAGIC);
            assert_eq!((h.peer_state, h.state_gen), (0, 0));
        }
        KICKS.lock().unwrap().clear();
        // vm1 not up yet: the doorbell says so and kicks nobody.
        ch.set_running(0, true);
        assert_eq!(ch.doorbell(0), HC_ERR_PEER_DOWN);
        let h1 = header(frames.header_hpa[1]);
        assert_eq!((h1.peer_state, h1.state_gen), (peer_state::RUNNING, 1));
        assert_eq!(*KICKS.lock().unwrap(), vec![7]);
        assert!(ch.take_pending(1) && !ch.take_pending(1));
        ch.set_running(1, true);
        assert_eq!(ch.set_attached(1, true), 0);
        let h0 = header(frames.header_hpa[0]);
        assert_eq!(h0.peer_state, peer_state::RUNNING | peer_state::ATTACHED);
        assert_eq!(h0.state_gen, 2);
        KICKS.lock().unwrap().clear();
        assert_eq!(ch.doorbell(0), 0);
        assert_eq!(ch.doorbell(0), 0);
        assert_eq!(ch.stats(0).doorbells, 2);
        // Two doorbells before vm1 looked: one kick.
        assert_eq!(*KICKS.lock().unwrap(), vec![7]);
        assert!(ch.take_pending(1));
        assert_eq!(ch.doorbell(0), 0);
        assert_eq!(*KICKS.lock().unwrap(), vec![7, 7]);
        // vm1 idles, polling its flag: the doorbell sets it, no IPI.
        assert!(ch.take_pending(1));
        ch.set_idle(1, true);
        assert_eq!(ch.doorbell(0), 0);
        assert_eq!(*KICKS.lock().unwrap(), vec![7, 7]);
        ch.set_idle(1, false);
        assert!(ch.take_pending(1));
        // The mediated path: frame copied into buffer 3 of vm0's section,
        // descriptor at vm0's tx_prod, which advances; bad input refused.
        let frame = [0x5Au8; 100];
        assert_eq!(ch.mediated_send(0, &frame, 3), 0);
        let sec = region + layout.section(0);
        // SAFETY: inside the test's region.
        let (desc, prod, copied) = unsafe {
            (
                core::ptr::read_volatile((sec + u64::from(layout.ring_offset)) as *const Desc),
                core::ptr::read_volatile(sec as *const u32),
                core::slice::from_raw_parts(
                    (sec + u64::from(layout.buffers_offset) + 3 * 4096) as *const u8,
                    101,
                ),
            )
        };
        assert_eq!((desc.buf, desc.len, desc.flags, prod), (3, 100, 0, 1));
        assert!(copied[..100].iter().all(|&b| b == 0x5A) && copied[100] == 0);
        let n = u64::from(layout.buffer_count);
        assert_eq!(ch.mediated_send(0, &frame, n), HC_ERR_INVALID);
        assert_eq!(ch.mediated_send(0, &[], 0), HC_ERR_INVALID);
        assert_eq!(ch.mediated_send(0, &[0; 4097], 0), HC_ERR_INVALID);
        assert_eq!(ch.stats(0).mediated, 1);
        // vm1 stops: vm0 sees it gone, driver included.
        ch.set_running(1, false);
        let h0 = header(frames.header_hpa[0]);
        assert_eq!((h0.peer_state, h0.state_gen), (0, 3));
        assert_eq!(ch.doorbell(0), HC_ERR_PEER_DOWN);
        assert_eq!(ch.mediated_send(0, &frame, 0), HC_ERR_PEER_DOWN);
        // The rest of the header is untouched by state changes.
        assert_eq!(h0.region_size, 1 << 20);
        assert_eq!(h0.side, 0);
    }

    #[test]
    fn idle_watch_notices_what_the_peer_did_not_ring_for() {
        let layout = Layout::new(1 << 20, 0).unwrap();
        let region = pages(256);
        let frames = ChannelFrames {
            layout,
            region_hpa: region,
            header_hpa: [pages(1), pages(1)],
        };
        fn nop(_: usize) {}
        // SAFETY: the memory above is this test's.
        let ch = unsafe { Channel::new(frames, [0, 1], nop) };
        let set = |side: usize, at: usize, v: u32| {
            let w = (region + layout.section(side) + at as u64) as *mut u32;
            // SAFETY: a Control field inside the test's region.
            unsafe { core::ptr::write_volatile(w, v) };
        };
        // vm1 consumed 5 frames and asked for a doorbell at the 4th more
        // (rx_batch 4); then it halts, which vm0's header shows.
        set(1, offset_of!(Control, rx_cons), 5);
        set(1, offset_of!(Control, rx_event), 8);
        set(0, offset_of!(Control, tx_prod), 5);
        ch.set_idle(1, true);
        assert_eq!(header(frames.header_hpa[0]).peer_halted, 1);
        assert_eq!(header(frames.header_hpa[1]).peer_halted, 0);
        ch.watch(1);
        assert!(!ch.take_pending(1), "nothing new");
        // vm0 publishes the 6th and does not ring: a halted guest hears of
        // any frame, batch or not; once.
        set(0, offset_of!(Control, tx_prod), 6);
        ch.watch(1);
        ch.watch(1);
        assert!(ch.take_pending(1));
        ch.watch(1);
        assert!(!ch.take_pending(1), "the same index is told once");
        set(0, offset_of!(Control, tx_prod), 7);
        ch.watch(1);
        assert!(ch.take_pending(1), "a new one is told again");
        // Returns: vm1 did not ask (its ret_event is behind what it took
        // back), so buffers coming back wake nobody...
        set(1, offset_of!(Control, ret_cons), 3);
        set(1, offset_of!(Control, ret_event), 1);
        set(0, offset_of!(Control, ret_prod), 4);
        ch.watch(1);
        assert!(!ch.take_pending(1));
        // ...until it waits for them.
        set(1, offset_of!(Control, ret_event), 3);
        ch.watch(1);
        assert!(ch.take_pending(1));
        assert_eq!(ch.stats(1).watched, 3);
        // Leaving idle clears the flag, then looks once more: a frame
        // published by a peer that still saw the flag set is not lost.
        set(0, offset_of!(Control, tx_prod), 8);
        ch.set_idle(1, false);
        assert_eq!(header(frames.header_hpa[0]).peer_halted, 0);
        assert!(ch.take_pending(1));
        // vm0's driver reattaches and starts its indices again: the same
        // index value is a new entry, and is told.
        ch.set_idle(1, true);
        ch.watch(1);
        assert!(!ch.take_pending(1));
        ch.set_attached(0, true);
        assert!(ch.take_pending(1), "the state change itself");
        ch.watch(1);
        assert!(ch.take_pending(1), "index 8 again, after the restart");
    }
}
