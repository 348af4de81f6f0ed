//! Extended page tables: guest-physical to host-physical. A guest sees only
//! what [`crate::vmm::memmap`] plans for it (its RAM, and the channel with
//! per-page permissions); every other access (the APIC and IO-APIC pages, a
//! stray pointer, the other guest's memory) exits as an EPT violation.
//!
//! The table format is written against [`TableMemory`], so the same code
//! builds the tables the CPU walks ([`IdentityTables`]) and tables in a
//! host test, where [`Ept::walk`] checks what a guest can reach.

use crate::frames::FrameAllocator;

const READ: u64 = 1 << 0;
const WRITE: u64 = 1 << 1;
const EXEC: u64 = 1 << 2;
const PERM_MASK: u64 = READ | WRITE | EXEC;
const MEMTYPE_WB: u64 = 6 << 3;
const LARGE: u64 = 1 << 7;
const ADDR_MASK: u64 = 0x000F_FFFF_FFFF_F000;

const GIB: u64 = 1 << 30;
const MIB2: u64 = 2 << 20;
const KIB4: u64 = 4096;

/// What a guest may do with a mapped page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Perm {
    /// Guest RAM.
    ReadWriteExec,
    /// A channel section the guest owns: data, never code.
    ReadWrite,
    /// What the guest may look at but not change (the peer's section, the
    /// header the hypervisor maintains).
    ReadOnly,
}

impl Perm {
    fn bits(self) -> u64 {
        match self {
            Perm::ReadWriteExec => READ | WRITE | EXEC,
            Perm::ReadWrite => READ | WRITE,
            Perm::ReadOnly => READ,
        }
    }

    fn from_bits(bits: u64) -> Option<Perm> {
        match bits & PERM_MASK {
            b if b == READ | WRITE | EXEC => Some(Perm::ReadWriteExec),
            b if b == READ | WRITE => Some(Perm::ReadWrite),
            READ => Some(Perm::ReadOnly),
            _ => None,
        }
    }
}

/// Where page-table frames come from and how their entries are read and
/// written.
pub trait TableMemory {
    /// A zeroed 4 KiB frame, or `None` when memory is out.
    fn new_table(&mut self) -> Option<u64>;
    fn read(&self, pa: u64) -> u64;
    fn write(&mut self, pa: u64, value: u64);
}

/// The hypervisor's own tables: frames from its allocator, reached through
/// the identity map.
pub struct IdentityTables<'a>(pub &'a mut FrameAllocator);

impl TableMemory for IdentityTables<'_> {
    fn new_table(&mut self) -> Option<u64> {
        let pa = self.0.alloc(KIB4, KIB4)?;
        // SAFETY: a fresh frame from the allocator, identity-mapped and
        // owned by nobody else; zeroing makes every entry not-present.
        unsafe { core::ptr::write_bytes(pa as *mut u8, 0, KIB4 as usize) };
        Some(pa)
    }

    fn read(&self, pa: u64) -> u64 {
        // SAFETY: `pa` is an 8-byte aligned entry of a table this type
        // allocated (Ept only passes such addresses), identity-mapped.
        unsafe { core::ptr::read_volatile(pa as *const u64) }
    }

    fn write(&mut self, pa: u64, value: u64) {
        // SAFETY: as in `read`; the tables belong to one guest that is not
        // running while they are built.
        unsafe { core::ptr::write_volatile(pa as *mut u64, value) }
    }
}

/// One guest's EPT hierarchy (its PML4's address).
#[derive(Clone, Copy, Debug)]
pub struct Ept {
    pml4: u64,
}

/// Which large pages the CPU supports (IA32_VMX_EPT_VPID_CAP).
#[derive(Clone, Copy, Debug)]
pub struct PageSizes {
    pub gib: bool,
    pub mib2: bool,
}

fn slot(table: u64, index: u64) -> u64 {
    table + (index & 511) * 8
}

/// Returns the table the entry points to, creating it when absent.
fn next<M: TableMemory>(mem: &mut M, table: u64, index: u64) -> Option<u64> {
    let e = mem.read(slot(table, index));
    if e & PERM_MASK != 0 {
        // A large page here would mean overlapping runs: the plan forbids
        // them, so refuse rather than silently split the page.
        if e & LARGE != 0 {
            return None;
        }
        return Some(e & ADDR_MASK);
    }
    let t = mem.new_table()?;
    mem.write(slot(table, index), t | PERM_MASK);
    Some(t)
}

impl Ept {
    pub fn new<M: TableMemory>(mem: &mut M) -> Option<Self> {
        Some(Ept {
            pml4: mem.new_table()?,
        })
    }

    /// Maps `[gpa, gpa + len)` to `[hpa, ...)` with `perm`, write-back,
    /// using the largest pages alignment and `sizes` allow. All three must
    /// be 4 KiB aligned.
    pub fn map<M: TableMemory>(
        &mut self,
        mem: &mut M,
        gpa: u64,
        hpa: u64,
        len: u64,
        perm: Perm,
        sizes: PageSizes,
    ) -> Option<()> {
        let leaf = perm.bits() | MEMTYPE_WB;
        let mut off = 0;
        while off < len {
            let (g, h, left) = (gpa + off, hpa + off, len - off);
            let pdpt = next(mem, self.pml4, g >> 39)?;
            let fits = |size: u64| g % size == 0 && h % size == 0 && left >= size;
            let step = if sizes.gib && fits(GIB) {
                mem.write(slot(pdpt, g >> 30), h | leaf | LARGE);
                GIB
            } else {
                let pd = next(mem, pdpt, g >> 30)?;
                if sizes.mib2 && fits(MIB2) {
                    mem.write(slot(pd, g >> 21), h | leaf | LARGE);
                    MIB2
                } else {
                    let pt = next(mem, pd, g >> 21)?;
                    mem.write(slot(pt, g >> 12), h | leaf);
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

    /// Calls `f(gpa, hpa, len, perm)` for every leaf, in GPA order, and
    /// `table(pa)` for every table frame: everything the CPU can reach
    /// through this hierarchy.
    pub fn walk<M: TableMemory>(
        &self,
        mem: &M,
        f: &mut dyn FnMut(u64, u64, u64, Option<Perm>),
        table: &mut dyn FnMut(u64),
    ) {
        fn level<M: TableMemory>(
            mem: &M,
            t: u64,
            depth: u32,
            base: u64,
            f: &mut dyn FnMut(u64, u64, u64, Option<Perm>),
            table: &mut dyn FnMut(u64),
        ) {
            table(t);
            let shift = 39 - 9 * depth;
            for i in 0..512u64 {
                let e = mem.read(slot(t, i));
                if e & PERM_MASK == 0 {
                    continue;
                }
                let gpa = base | (i << shift);
                let is_leaf = depth == 3 || (depth > 0 && e & LARGE != 0);
                if is_leaf {
                    f(gpa, e & ADDR_MASK, 1 << shift, Perm::from_bits(e));
                } else {
                    level(mem, e & ADDR_MASK, depth + 1, gpa, f, table);
                }
            }
        }
        level(mem, self.pml4, 0, 0, f, table);
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Page tables in a hash map, with frames handed out by a real
    /// allocator, so addresses can be checked against what it reserves.
    pub struct HostTables<'a> {
        pub frames: &'a mut FrameAllocator,
        pub words: HashMap<u64, u64>,
    }

    impl TableMemory for HostTables<'_> {
        fn new_table(&mut self) -> Option<u64> {
            self.frames.alloc(KIB4, KIB4)
        }
        fn read(&self, pa: u64) -> u64 {
            self.words.get(&pa).copied().unwrap_or(0)
        }
        fn write(&mut self, pa: u64, value: u64) {
            self.words.insert(pa, value);
        }
    }

    fn leaves(ept: &Ept, mem: &HostTables) -> Vec<(u64, u64, u64, Option<Perm>)> {
        let mut out = Vec::new();
        ept.walk(mem, &mut |g, h, l, p| out.push((g, h, l, p)), &mut |_| {});
        out
    }

    #[test]
    fn large_pages_follow_alignment_and_permissions_are_kept() {
        let mut ram = crate::range::RangeSet::new();
        ram.add(crate::range::Range::new(0, 1 << 30)).unwrap();
        let mut fa = FrameAllocator::new(&ram, &[]).unwrap();
        let mut mem = HostTables {
            frames: &mut fa,
            words: HashMap::new(),
        };
        let mut ept = Ept::new(&mut mem).unwrap();
        let all = PageSizes {
            gib: true,
            mib2: true,
        };
        // 2 MiB + 4 KiB of RAM: one large page and one small one.
        ept.map(
            &mut mem,
            0,
            0x4000_0000,
            (2 << 20) + 4096,
            Perm::ReadWriteExec,
            all,
        )
        .unwrap();
        ept.map(&mut mem, 1 << 36, 0x8000_0000, 8192, Perm::ReadOnly, all)
            .unwrap();
        let l = leaves(&ept, &mem);
        assert_eq!(
            l,
            vec![
                (0, 0x4000_0000, 2 << 20, Some(Perm::ReadWriteExec)),
                (2 << 20, 0x4020_0000, 4096, Some(Perm::ReadWriteExec)),
                (1 << 36, 0x8000_0000, 4096, Some(Perm::ReadOnly)),
                ((1 << 36) + 4096, 0x8000_1000, 4096, Some(Perm::ReadOnly)),
            ]
        );
        // Mapping over a large page is refused, not silently split.
        assert_eq!(ept.map(&mut mem, 4096, 0, 4096, Perm::ReadOnly, all), None);
    }
}
