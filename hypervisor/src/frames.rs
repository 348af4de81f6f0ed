//! Physical frame allocator over the boot memory map.
//!
//! The hypervisor owns every usable frame that is not the image, a boot
//! module or the first MiB (real-mode structures and the AP trampoline).
//! Guests later get large contiguous, aligned blocks from here, so this hands
//! out contiguous runs rather than single pages.

use crate::range::{Full, Range, RangeSet};

pub const PAGE_SIZE: u64 = 4096;
/// Below this nothing is handed out: the BIOS data, the EBDA and the AP
/// start-up page live there.
pub const LOW_MEMORY_END: u64 = 0x10_0000;

pub struct FrameAllocator {
    free: RangeSet,
    total: u64,
}

impl FrameAllocator {
    /// Starts from usable RAM and removes the `reserved` ranges.
    pub fn new(ram: &RangeSet, reserved: &[Range]) -> Result<Self, Full> {
        let mut free = ram.clone();
        free.remove(Range::new(0, LOW_MEMORY_END))?;
        for r in reserved {
            free.remove(*r)?;
        }
        free.shrink_to_alignment(PAGE_SIZE);
        let total = free.total();
        Ok(FrameAllocator { free, total })
    }

    /// Allocates `bytes` (rounded up to pages), aligned to `align` (a power
    /// of two, at least a page).
    pub fn alloc(&mut self, bytes: u64, align: u64) -> Option<u64> {
        self.free.take(round_pages(bytes), align.max(PAGE_SIZE))
    }

    /// Like [`alloc`](Self::alloc), but below 4 GiB (for structures that
    /// 32-bit code must reach).
    pub fn alloc_low(&mut self, bytes: u64, align: u64) -> Option<u64> {
        self.free
            .take_below(round_pages(bytes), align.max(PAGE_SIZE), 1 << 32)
    }

    pub fn free_bytes(&self) -> u64 {
        self.free.total()
    }

    pub fn total_bytes(&self) -> u64 {
        self.total
    }

    pub fn free_ranges(&self) -> &[Range] {
        self.free.as_slice()
    }
}

fn round_pages(bytes: u64) -> u64 {
    bytes.div_ceil(PAGE_SIZE) * PAGE_SIZE
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ram() -> RangeSet {
        let mut r = RangeSet::new();
        r.add(Range::new(0, 0x9_F000)).unwrap();
        r.add(Range::new(0x10_0000, 0x2000_0000)).unwrap();
        r.add(Range::new(0x1_0000_0000, 0x1_4000_0000)).unwrap();
        r
    }

    #[test]
    fn reserved_ranges_and_low_memory_are_never_handed_out() {
        let image = Range::new(0x20_0000, 0x40_0000);
        let module = Range::new(0x40_0000, 0x40_0800);
        let mut fa = FrameAllocator::new(&ram(), &[image, module]).unwrap();
        let mut got = Vec::new();
        while let Some(a) = fa.alloc(0x10_0000, PAGE_SIZE) {
            got.push(Range::new(a, a + 0x10_0000));
        }
        assert!(!got.is_empty());
        for g in &got {
            assert!(g.start >= LOW_MEMORY_END);
            assert!(!g.overlaps(&image) && !g.overlaps(&module), "{g:x?}");
        }
        // The partial page after the module is not handed out either.
        assert!(got.iter().all(|g| g.start != 0x40_0800));
    }

    #[test]
    fn large_aligned_blocks_and_low_allocations() {
        let mut fa = FrameAllocator::new(&ram(), &[]).unwrap();
        let big = fa.alloc(256 << 20, 2 << 20).unwrap();
        assert_eq!(big % (2 << 20), 0);
        let low = fa.alloc_low(4096, 4096).unwrap();
        assert!(low < 1 << 32);
        assert_eq!(fa.alloc(4 << 30, 4096), None);
        assert_eq!(fa.free_bytes() + (256 << 20) + 4096, fa.total_bytes());
    }
}
