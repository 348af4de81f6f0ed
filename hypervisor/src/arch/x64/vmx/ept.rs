//! Extended page tables: guest-physical to host-physical. A guest's RAM is
//! one contiguous host block mapped at GPA 0 with the largest pages its
//! alignment allows; nothing else is mapped, so every other access (the
//! APIC and IO-APIC pages, a stray pointer) exits as an EPT violation.

use crate::frames::FrameAllocator;

const READ: u64 = 1 << 0;
const WRITE: u64 = 1 << 1;
const EXEC: u64 = 1 << 2;
const MEMTYPE_WB: u64 = 6 << 3;
const LARGE: u64 = 1 << 7;
const RWX: u64 = READ | WRITE | EXEC;

const GIB: u64 = 1 << 30;
const MIB2: u64 = 2 << 20;
const KIB4: u64 = 4096;

pub struct Ept {
    pml4: u64,
}

fn table(frames: &mut FrameAllocator) -> Option<u64> {
    let pa = frames.alloc(KIB4, KIB4)?;
    // SAFETY: a fresh frame from the allocator, identity-mapped; zeroing
    // makes every entry not-present.
    unsafe { core::ptr::write_bytes(pa as *mut u8, 0, KIB4 as usize) };
    Some(pa)
}

/// The entry at `index` of the table at `pa`.
fn entry(pa: u64, index: u64) -> *mut u64 {
    (pa + index * 8) as *mut u64
}

/// Returns the table the entry points to, creating it when absent.
fn next(frames: &mut FrameAllocator, pa: u64, index: u64) -> Option<u64> {
    let e = entry(pa, index);
    // SAFETY: `pa` is a table built here, `index` < 512.
    unsafe {
        if *e & RWX == 0 {
            *e = table(frames)? | RWX;
        }
        Some(*e & 0x000F_FFFF_FFFF_F000)
    }
}

impl Ept {
    pub fn new(frames: &mut FrameAllocator) -> Option<Self> {
        Some(Ept {
            pml4: table(frames)?,
        })
    }

    /// Maps `[gpa, gpa + len)` to `[hpa, ...)` read/write/execute,
    /// write-back. Both must be 4 KiB aligned.
    pub fn map(
        &mut self,
        frames: &mut FrameAllocator,
        gpa: u64,
        hpa: u64,
        len: u64,
        use_1g: bool,
        use_2m: bool,
    ) -> Option<()> {
        let mut off = 0;
        while off < len {
            let (g, h, left) = (gpa + off, hpa + off, len - off);
            let pdpt = next(frames, self.pml4, (g >> 39) & 511)?;
            let step = if use_1g && g % GIB == 0 && h % GIB == 0 && left >= GIB {
                // SAFETY: pdpt is a table built here.
                unsafe { *entry(pdpt, (g >> 30) & 511) = h | RWX | MEMTYPE_WB | LARGE };
                GIB
            } else {
                let pd = next(frames, pdpt, (g >> 30) & 511)?;
                if use_2m && g % MIB2 == 0 && h % MIB2 == 0 && left >= MIB2 {
                    // SAFETY: pd is a table built here.
                    unsafe { *entry(pd, (g >> 21) & 511) = h | RWX | MEMTYPE_WB | LARGE };
                    MIB2
                } else {
                    let pt = next(frames, pd, (g >> 21) & 511)?;
                    // SAFETY: pt is a table built here.
                    unsafe { *entry(pt, (g >> 12) & 511) = h | RWX | MEMTYPE_WB };
                    KIB4
                }
            };
            off += step;
        }
        Some(())
    }

    /// The EPT pointer: 4-level walk, write-back paging structures.
    pub fn pointer(&self) -> u64 {
        self.pml4 | (3 << 3) | 6
    }
}
