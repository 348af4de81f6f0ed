//! The hypervisor's own page tables: an identity map of all physical memory
//! (and at least the first 4 GiB, where the APIC and firmware live), with
//! 1 GiB pages when the CPU has them and 2 MiB pages otherwise.

use crate::frames::FrameAllocator;
use x86_64::registers::control::{Cr3, Cr3Flags};
use x86_64::structures::paging::{PageTable, PageTableFlags as F, PhysFrame};
use x86_64::PhysAddr;

const GIB: u64 = 1 << 30;
const MIB2: u64 = 2 << 20;

/// Tables stay below 4 GiB so that 32-bit code could load them into CR3.
fn new_table(frames: &mut FrameAllocator) -> Option<&'static mut PageTable> {
    let pa = frames.alloc_low(4096, 4096)?;
    let t = pa as *mut PageTable;
    // SAFETY: the frame was just handed out by the allocator, so nothing
    // else uses it, and it is identity-mapped by the current tables.
    unsafe {
        t.write(PageTable::new());
        Some(&mut *t)
    }
}

/// Builds the identity map of `[0, top)` and returns the PML4's address.
pub fn build_identity(frames: &mut FrameAllocator, top: u64, use_1g: bool) -> Option<u64> {
    let top = top.max(4 * GIB).div_ceil(GIB) * GIB;
    let rw = F::PRESENT | F::WRITABLE;
    let pml4 = new_table(frames)?;
    let mut gib = 0u64;
    while gib * GIB < top {
        let l4 = (gib / 512) as usize;
        if pml4[l4].is_unused() {
            let pdpt = new_table(frames)?;
            pml4[l4].set_addr(PhysAddr::new(pdpt as *mut _ as u64), rw);
        }
        // SAFETY: the entry was set above to a table allocated here.
        let pdpt = unsafe { &mut *(pml4[l4].addr().as_u64() as *mut PageTable) };
        let l3 = (gib % 512) as usize;
        let base = gib * GIB;
        // The local APIC and firmware sit in the last 32 MiB below 4 GiB.
        if use_1g && base != 3 * GIB {
            pdpt[l3].set_addr(PhysAddr::new(base), rw | F::HUGE_PAGE);
        } else {
            let pd = new_table(frames)?;
            for (i, e) in pd.iter_mut().enumerate() {
                let addr = base + i as u64 * MIB2;
                let mut flags = rw | F::HUGE_PAGE;
                if (0xFE00_0000..0x1_0000_0000).contains(&addr) {
                    flags |= F::NO_CACHE | F::WRITE_THROUGH;
                }
                e.set_addr(PhysAddr::new(addr), flags);
            }
            pdpt[l3].set_addr(PhysAddr::new(pd as *mut _ as u64), rw);
        }
        gib += 1;
    }
    Some(pml4 as *mut _ as u64)
}

/// Switches this CPU to the tables at `pml4`.
pub fn activate(pml4: u64) {
    let frame = PhysFrame::containing_address(PhysAddr::new(pml4));
    // SAFETY: `pml4` is an identity map of all memory built by
    // build_identity, so every address in use stays mapped the same.
    unsafe { Cr3::write(frame, Cr3Flags::empty()) };
}
