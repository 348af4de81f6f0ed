//! Host tests of the guest driver's ring code (`guest-driver/vml_ring.h`,
//! compiled from C by `build.rs`): an honest peer's frames arrive intact
//! across wraparound, and a hostile peer — random indices, descriptors and
//! returned buffer numbers — never makes the honest side read outside the
//! ring, accept a bad descriptor, or hand a buffer out twice.

use vmlink_abi::channel::{Desc, MAX_FRAGS};

/// `struct vml_frame`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Frame {
    pub count: u32,
    pub bytes: u32,
    pub d: [Desc; MAX_FRAGS as usize],
}

impl Default for Frame {
    fn default() -> Self {
        Frame {
            count: 0,
            bytes: 0,
            d: [Desc::default(); MAX_FRAGS as usize],
        }
    }
}

/// `struct vml_pool`.
#[repr(C)]
pub struct Pool {
    pub count: u32,
    pub nfree: u32,
    pub free: *mut u32,
    pub out: *mut u8,
}

/// `enum vml_fault`.
pub mod fault {
    pub const BAD_BUFFER: i32 = 1;
    pub const BAD_LENGTH: i32 = 2;
    pub const BAD_FLAGS: i32 = 3;
    pub const TOO_MANY_FRAGS: i32 = 4;
    pub const INDEX_JUMP: i32 = 5;
    pub const BAD_RETURN: i32 = 6;
    pub const DOUBLE_RETURN: i32 = 7;
    pub const BUFFER_HELD: i32 = 8;
    pub const KINDS: usize = 9;
}

extern "C" {
    pub fn shim_need_event(event: u32, new_idx: u32, old: u32) -> i32;
    pub fn shim_read_frame(
        ring: *const Desc,
        entries: u32,
        prod: u32,
        cons: *mut u32,
        buffer_count: u32,
        f: *mut Frame,
    ) -> i32;
    pub fn shim_pool_reset(p: *mut Pool);
    pub fn shim_pool_get(p: *mut Pool) -> i64;
    pub fn shim_pool_put(p: *mut Pool, b: u32) -> i32;
    pub fn shim_reclaim(
        ret: *const u32,
        entries: u32,
        ret_prod: u32,
        ret_cons: *mut u32,
        p: *mut Pool,
        faults: *mut u64,
    ) -> i64;
    pub fn shim_rx_may_hold(held: u32, count: u32, buffer_count: u32, entries: u32) -> i32;
    pub fn shim_lend_bufs(lent: *mut u32, bufs: *const u32, n: u32, mark: u32) -> i32;
    pub fn shim_unlend_bufs(lent: *mut u32, bufs: *const u32, n: u32);
}

/// Small deterministic generator (xorshift64*), so failures reproduce.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// A sender's buffer pool with its storage.
pub struct OwnedPool {
    pub pool: Pool,
    free: Vec<u32>,
    out: Vec<u8>,
}

impl OwnedPool {
    pub fn new(count: u32) -> Box<OwnedPool> {
        let mut p = Box::new(OwnedPool {
            pool: Pool {
                count,
                nfree: 0,
                free: std::ptr::null_mut(),
                out: std::ptr::null_mut(),
            },
            free: vec![0; count as usize],
            out: vec![0; count as usize],
        });
        p.pool.free = p.free.as_mut_ptr();
        p.pool.out = p.out.as_mut_ptr();
        // SAFETY: the pool points at vectors of `count` entries it owns.
        unsafe { shim_pool_reset(&mut p.pool) };
        p
    }

    pub fn get(&mut self) -> Option<u32> {
        // SAFETY: as in `new`.
        let b = unsafe { shim_pool_get(&mut self.pool) };
        (b >= 0).then_some(b as u32)
    }

    pub fn put(&mut self, b: u32) -> i32 {
        // SAFETY: as in `new`.
        unsafe { shim_pool_put(&mut self.pool, b) }
    }

    /// Every buffer is exactly once either free or out.
    pub fn consistent(&self) -> bool {
        let n = self.pool.count as usize;
        let mut seen = vec![0u8; n];
        for &b in &self.free[..self.pool.nfree as usize] {
            if b as usize >= n || seen[b as usize] != 0 || self.out[b as usize] != 0 {
                return false;
            }
            seen[b as usize] = 1;
        }
        (0..n).all(|b| (seen[b] == 1) != (self.out[b] == 1))
    }
}

/// Memory with an inaccessible page on each side, so reading past either
/// end faults.
pub struct Guarded {
    base: *mut u8,
    total: usize,
    pub data: *mut u8,
}

impl Guarded {
    pub fn new(bytes: usize) -> Guarded {
        let page = 4096;
        let inner = bytes.div_ceil(page) * page;
        let total = inner + 2 * page;
        // SAFETY: an anonymous private mapping; checked for failure.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                total,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED);
        // The data ends exactly at the upper guard page.
        // SAFETY: inside the mapping just made.
        let data = unsafe { (base as *mut u8).add(page + inner - bytes) };
        // SAFETY: the inner pages of the mapping.
        let r = unsafe {
            libc::mprotect(
                (base as *mut u8).add(page) as *mut libc::c_void,
                inner,
                libc::PROT_READ | libc::PROT_WRITE,
            )
        };
        assert_eq!(r, 0);
        Guarded {
            base: base as *mut u8,
            total,
            data,
        }
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`.
        unsafe { libc::munmap(self.base as *mut libc::c_void, self.total) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmlink_abi::channel::{desc_flags, BUFFER_SIZE};

    const ENTRIES: u32 = 64;
    const NBUF: u32 = 100;

    fn ring() -> (Guarded, *mut Desc) {
        let g = Guarded::new(ENTRIES as usize * std::mem::size_of::<Desc>());
        let r = g.data as *mut Desc;
        (g, r)
    }

    fn read(ring: *const Desc, prod: u32, cons: &mut u32, f: &mut Frame) -> i32 {
        // SAFETY: `ring` has ENTRIES descriptors.
        unsafe { shim_read_frame(ring, ENTRIES, prod, cons, NBUF, f) }
    }

    #[test]
    fn event_index_rule() {
        // SAFETY: pure functions.
        unsafe {
            assert_eq!(shim_need_event(5, 6, 5), 1);
            assert_eq!(shim_need_event(5, 10, 6), 0, "event already passed");
            assert_eq!(shim_need_event(9, 10, 6), 1);
            assert_eq!(shim_need_event(u32::MAX, 1, u32::MAX - 1), 1, "wraps");
        }
    }

    /// An honest sender and receiver: frames of 1..=MAX_FRAGS buffers go
    /// around the ring many times and arrive as sent.
    #[test]
    fn honest_frames_arrive_intact_across_wraparound() {
        let (_g, ring) = ring();
        let mut rng = Rng(7);
        let mut pool = OwnedPool::new(NBUF);
        let (mut prod, mut cons) = (u32::MAX - 300, u32::MAX - 300);
        for _ in 0..5000 {
            let n = 1 + rng.below(u64::from(MAX_FRAGS)) as u32;
            if ENTRIES - prod.wrapping_sub(cons) < n || pool.pool.nfree < n {
                // Receive everything and give the buffers back.
                let mut f = Frame::default();
                while read(ring, prod, &mut cons, &mut f) == 1 {
                    for d in &f.d[..f.count as usize] {
                        assert_eq!(pool.put(d.buf), 0);
                    }
                }
                assert_eq!(cons, prod);
                continue;
            }
            let mut sent = Vec::new();
            for i in 0..n {
                let d = Desc {
                    buf: pool.get().unwrap(),
                    len: 1 + rng.below(u64::from(BUFFER_SIZE)) as u32,
                    flags: if i + 1 < n { desc_flags::MORE } else { 0 },
                    ..Desc::default()
                };
                // SAFETY: the index is masked into the ring.
                unsafe {
                    ring.add((prod.wrapping_add(i) & (ENTRIES - 1)) as usize)
                        .write(d)
                };
                sent.push(d);
            }
            // Incomplete until the last descriptor is published.
            let mut f = Frame::default();
            let before = cons;
            if n > 1 {
                assert_eq!(read(ring, prod.wrapping_add(n - 1), &mut cons, &mut f), 0);
                assert_eq!(cons, before);
            }
            prod = prod.wrapping_add(n);
            assert_eq!(read(ring, prod, &mut cons, &mut f), 1);
            assert_eq!(&f.d[..f.count as usize], &sent[..]);
            assert_eq!(f.bytes, sent.iter().map(|d| d.len).sum::<u32>());
            for d in &sent {
                assert_eq!(pool.put(d.buf), 0);
            }
            assert!(pool.consistent());
        }
    }

    /// A hostile sender writes random descriptors and indices: every frame
    /// the receiver accepts is valid, rejected ones are classified, the
    /// consumer index only moves forward by what was published, and no
    /// read leaves the ring (the guard pages would fault).
    #[test]
    fn hostile_sender_cannot_get_a_bad_frame_accepted() {
        let (_g, ring) = ring();
        for seed in 1..200u64 {
            let mut rng = Rng(seed);
            let mut cons = rng.next_u64() as u32;
            for _ in 0..200 {
                for i in 0..ENTRIES as usize {
                    let d = Desc {
                        buf: if rng.below(4) == 0 {
                            rng.next_u64() as u32
                        } else {
                            rng.below(u64::from(NBUF) + 2) as u32
                        },
                        len: if rng.below(4) == 0 {
                            rng.next_u64() as u32
                        } else {
                            rng.below(u64::from(BUFFER_SIZE) + 2) as u32
                        },
                        flags: if rng.below(8) == 0 {
                            rng.next_u64() as u16
                        } else {
                            (rng.below(2) as u16) * desc_flags::MORE
                        },
                        gso_size: rng.next_u64() as u16,
                        csum_start: rng.next_u64() as u16,
                        csum_offset: rng.next_u64() as u16,
                    };
                    // SAFETY: i < ENTRIES.
                    unsafe { ring.add(i).write(d) };
                }
                let prod = if rng.below(3) == 0 {
                    rng.next_u64() as u32
                } else {
                    cons.wrapping_add(rng.below(u64::from(ENTRIES) + 1) as u32)
                };
                let before = cons;
                let mut f = Frame::default();
                let r = read(ring, prod, &mut cons, &mut f);
                let moved = cons.wrapping_sub(before);
                assert!(moved <= prod.wrapping_sub(before) || r == -fault::INDEX_JUMP);
                match r {
                    1 => {
                        assert!(f.count >= 1 && f.count <= MAX_FRAGS);
                        for d in &f.d[..f.count as usize] {
                            assert!(d.buf < NBUF && d.len >= 1 && d.len <= BUFFER_SIZE);
                            assert_eq!(d.flags & !desc_flags::ALL, 0);
                        }
                        assert_eq!(moved, f.count);
                    }
                    0 => assert_eq!(moved, 0),
                    r if r == -fault::INDEX_JUMP => {
                        assert!(prod.wrapping_sub(before) > ENTRIES);
                        assert_eq!(moved, 0);
                    }
                    r => {
                        assert!((1..fault::KINDS as i32).contains(&-r), "fault {r}");
                        assert!(moved >= 1);
                        // What it hands back is only valid buffers.
                        for d in &f.d[..f.count as usize] {
                            assert!(d.buf < NBUF);
                        }
                    }
                }
            }
        }
    }

    /// A hostile receiver returns random buffer numbers, duplicates and
    /// jumping indices: the sender's pool stays consistent (no buffer
    /// handed out twice) and each kind is counted.
    #[test]
    fn hostile_returns_never_corrupt_the_pool() {
        let g = Guarded::new(ENTRIES as usize * 4);
        let ret = g.data as *mut u32;
        for seed in 1..100u64 {
            let mut rng = Rng(seed);
            let mut pool = OwnedPool::new(NBUF);
            let mut faults = [0u64; fault::KINDS];
            let (mut prod, mut cons) = (0u32, 0u32);
            for _ in 0..300 {
                for _ in 0..rng.below(20) {
                    pool.get();
                }
                let n = rng.below(u64::from(ENTRIES) + 1) as u32;
                for i in 0..n {
                    let b = match rng.below(3) {
                        0 => rng.next_u64() as u32,
                        _ => rng.below(u64::from(NBUF)) as u32,
                    };
                    // SAFETY: masked index.
                    unsafe {
                        ret.add((prod.wrapping_add(i) & (ENTRIES - 1)) as usize)
                            .write(b)
                    };
                }
                prod = if rng.below(10) == 0 {
                    rng.next_u64() as u32
                } else {
                    prod.wrapping_add(n)
                };
                // SAFETY: the ring has ENTRIES entries; the pool is valid.
                let got = unsafe {
                    shim_reclaim(
                        ret,
                        ENTRIES,
                        prod,
                        &mut cons,
                        &mut pool.pool,
                        faults.as_mut_ptr(),
                    )
                };
                if got < 0 {
                    // Jumped: nothing consumed; the honest side resets.
                    prod = cons;
                }
                assert!(pool.consistent(), "seed {seed}");
            }
            assert!(faults[fault::DOUBLE_RETURN as usize] > 0);
            assert!(faults[fault::BAD_RETURN as usize] > 0);
        }
    }

    /// What a receiver holds never keeps the sender from a largest frame
    /// (it has at most min(buffers, ring entries) out), whatever the
    /// layout; and a receiver holding little takes frames zero-copy.
    #[test]
    fn held_buffers_always_leave_the_sender_a_largest_frame() {
        let mut rng = Rng(11);
        for _ in 0..20_000 {
            let nbuf = MAX_FRAGS + rng.below(9000) as u32;
            let entries = 1u32 << (4 + rng.below(9));
            let cap = nbuf.min(entries);
            let mut held = 0u32;
            for _ in 0..50 {
                let count = 1 + rng.below(u64::from(MAX_FRAGS)) as u32;
                // SAFETY: pure function.
                if unsafe { shim_rx_may_hold(held, count, nbuf, entries) } == 1 {
                    held += count;
                    assert!(
                        held + MAX_FRAGS <= cap,
                        "nbuf {nbuf} entries {entries} held {held}"
                    );
                } else if held > 0 && rng.below(3) == 0 {
                    held -= 1 + rng.below(u64::from(held)) as u32;
                }
            }
            if cap >= 4 * MAX_FRAGS {
                // SAFETY: pure function.
                assert_eq!(
                    unsafe { shim_rx_may_hold(0, MAX_FRAGS - 1, nbuf, entries) },
                    1
                );
            }
        }
    }

    #[test]
    fn pool_gives_each_buffer_once() {
        let mut p = OwnedPool::new(4);
        let got: Vec<u32> = std::iter::from_fn(|| p.get()).collect();
        assert_eq!(got.len(), 4);
        assert_eq!(p.get(), None);
        assert_eq!(p.put(got[0]), 0);
        assert_eq!(p.put(got[0]), fault::DOUBLE_RETURN);
        assert_eq!(p.put(99), fault::BAD_RETURN);
        assert!(p.consistent());
    }

    fn lend(lent: &mut [u32], bufs: &[u32], mark: u32) -> bool {
        // SAFETY: every buffer number indexes `lent`; the shim reads
        // `bufs.len()` entries of `bufs`.
        unsafe { shim_lend_bufs(lent.as_mut_ptr(), bufs.as_ptr(), bufs.len() as u32, mark) == 1 }
    }

    /// A page lent to the stack is never lent again before it comes back,
    /// and a refused frame leaves the marks exactly as they were.
    #[test]
    fn a_buffer_is_lent_to_the_stack_once_at_a_time() {
        let mut rng = Rng(5);
        let mut lent = vec![0u32; 64];
        let mut frames: Vec<Vec<u32>> = Vec::new();
        for _ in 0..20_000 {
            if !frames.is_empty() && rng.below(3) == 0 {
                // A frame's pages all came back.
                let f = frames.swap_remove(rng.below(frames.len() as u64) as usize);
                // SAFETY: as in `lend`.
                unsafe { shim_unlend_bufs(lent.as_mut_ptr(), f.as_ptr(), f.len() as u32) };
                assert!(f.iter().all(|&b| lent[b as usize] == 0));
                continue;
            }
            let n = 1 + rng.below(6) as usize;
            let bufs: Vec<u32> = (0..n).map(|_| rng.below(64) as u32).collect();
            let before = lent.clone();
            let mut seen = std::collections::HashSet::new();
            let fresh = bufs
                .iter()
                .all(|&b| before[b as usize] == 0 && seen.insert(b));
            let mark = 1 + rng.below(3) as u32;
            assert_eq!(lend(&mut lent, &bufs, mark), fresh, "{bufs:?}");
            if fresh {
                assert!(bufs.iter().all(|&b| lent[b as usize] == mark));
                frames.push(bufs);
            } else {
                assert_eq!(lent, before);
            }
        }
    }
}
