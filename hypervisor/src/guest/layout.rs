//! Guest-physical memory layout for booting Linux through its 64-bit entry
//! point, and the structures that entry needs: a GDT, identity-mapping page
//! tables and the e820 map.
//!
//! ```text
//! 0x0000_0000 .. 0x0000_1000   real-mode IVT and BIOS data area: left as is
//!                              (zeros: no EBDA, so Linux assumes 0x9F000)
//! 0x0000_7000 .. 0x0000_8000   zero page (struct boot_params)
//! 0x0002_0000 .. 0x0003_0000   command line, NUL-terminated (64 KiB room)
//! 0x0009_FC00 .. 0x0010_0000   e820 reserved (EBDA, VGA hole, BIOS area):
//!   0x000E_0000 .. 0x000F_0000     ACPI tables, RSDP first
//!   0x000F_0000 .. 0x000F_0020     GDT (null, null, code 0x10, data 0x18)
//!   0x000F_1000 .. 0x000F_7000     page tables: PML4, PDPT, 4 PDs (2 MiB
//!                                  pages identity-mapping 0..4 GiB)
//! pref_address (16 MiB)        protected-mode kernel, then up to init_size
//! top of RAM below min(initrd_addr_max + 1, RAM end)   initrd, 4 KiB aligned
//! ```
//!
//! The zero page and command line stay e820 RAM: Linux copies both early
//! and reserves what it still needs. The GDT and page tables live in the
//! reserved BIOS area instead, so nothing can overwrite them while the
//! kernel still runs on them; they sit above the 0x9D000..0x9F000 window
//! where Linux's decompressor puts its 5-level paging trampoline (below
//! the lowest of the EBDA and 0x9F000), and a scan of 0xE0000..0x100000
//! for "RSD PTR ", "_MP_" or "_SM_" on 16-byte boundaries cannot match
//! them: the bytes at those boundaries are 0x00 or 0xFF (GDT) or 0x00,
//! 0x03 or 0x83 (page tables), never 'R' or '_'.
//!
//! Guest RAM above 3 GiB: 0xC000_0000..4 GiB is left out of the e820 map
//! (the I/O APIC at 0xFEC0_0000, the local APIC at 0xFEE0_0000 and later
//! PCI windows live there); RAM past 4 GiB is reported from 4 GiB on. The
//! kernel and initrd stay below 3 GiB, inside the identity map.

use super::boot_params::{E820Entry, E820Type};
use super::bzimage::SetupHeader;
use super::loader::LoadError;
use crate::range::Range;
use alloc::vec::Vec;

pub const PAGE_SIZE: u64 = 4096;
pub const ZERO_PAGE_GPA: u64 = 0x7000;
pub const CMDLINE_GPA: u64 = 0x2_0000;
/// Room for the command line, its NUL included.
pub const CMDLINE_ROOM: usize = 0x1_0000;
/// Conventional memory ends where an EBDA would start.
pub const EBDA_START: u64 = 0x9_FC00;
/// Start of the protected-mode area; the kernel and initrd go above it.
pub const HIGH_MEMORY: u64 = 0x10_0000;
/// [`EBDA_START`]..[`HIGH_MEMORY`]: e820 reserved.
pub const LOW_RESERVED: Range = Range::new(EBDA_START, HIGH_MEMORY);
pub const ACPI_REGION: Range = Range::new(0xE_0000, 0xF_0000);
pub const GDT_GPA: u64 = 0xF_0000;
pub const PML4_GPA: u64 = 0xF_1000;
pub const PDPT_GPA: u64 = 0xF_2000;
/// Four page directories, one per GiB.
pub const PD_GPA: u64 = 0xF_3000;
pub const PAGE_TABLES: Range = Range::new(PML4_GPA, PD_GPA + 4 * PAGE_SIZE);
/// Bytes of boot page tables: PML4, PDPT and four page directories.
pub const PAGE_TABLES_LEN: usize = 6 * PAGE_SIZE as usize;
/// The boot page tables map `0..IDENTITY_MAPPED` onto itself.
pub const IDENTITY_MAPPED: u64 = 1 << 32;
/// Guest RAM in here is not reported to the guest (APICs, PCI windows).
pub const MMIO_HOLE: Range = Range::new(0xC000_0000, 1 << 32);

/// `__BOOT_CS` and `__BOOT_DS` of the boot protocol.
pub const BOOT_CS: u16 = 0x10;
pub const BOOT_DS: u16 = 0x18;
/// 64-bit code, flat 4 GiB: G, L, present, DPL 0, execute/read, accessed.
pub const CODE64_DESCRIPTOR: u64 = 0x00AF_9B00_0000_FFFF;
/// Data, flat 4 GiB: G, D/B, present, DPL 0, read/write, accessed.
pub const DATA_DESCRIPTOR: u64 = 0x00CF_9300_0000_FFFF;
pub const GDT: [u64; 4] = [0, 0, CODE64_DESCRIPTOR, DATA_DESCRIPTOR];
pub const GDT_LIMIT: u16 = (GDT.len() * 8 - 1) as u16;

/// The VMCS "access rights" encoding of a segment descriptor (descriptor
/// bits 40..56, with the limit's high nibble masked out).
pub const fn vmx_access_rights(descriptor: u64) -> u32 {
    ((descriptor >> 40) & 0xF0FF) as u32
}

/// The GDT as bytes, for [`GDT_GPA`].
pub fn gdt_bytes() -> [u8; GDT.len() * 8] {
    let mut out = [0u8; GDT.len() * 8];
    for (chunk, d) in out.chunks_exact_mut(8).zip(GDT) {
        chunk.copy_from_slice(&d.to_le_bytes());
    }
    out
}

const PRESENT: u64 = 1 << 0;
const WRITABLE: u64 = 1 << 1;
const HUGE: u64 = 1 << 7;

/// Writes a PML4, a PDPT and four page directories that identity-map
/// `0..4 GiB` with 2 MiB pages into `tables`, the bytes that go to guest
/// memory at `base` (page aligned): PML4 at `base`, PDPT at `base + 4 KiB`,
/// the directories after it. Returns CR3.
pub fn write_identity_map(tables: &mut [u8; PAGE_TABLES_LEN], base: u64) -> u64 {
    tables.fill(0);
    let page = PAGE_SIZE as usize;
    let (pml4, rest) = tables.split_at_mut(page);
    let (pdpt, pds) = rest.split_at_mut(page);
    let pdpt_gpa = base + PAGE_SIZE;
    pml4[..8].copy_from_slice(&(pdpt_gpa | PRESENT | WRITABLE).to_le_bytes());
    for (gib, pd) in pds.chunks_exact_mut(page).enumerate() {
        let pd_gpa = pdpt_gpa + PAGE_SIZE * (gib as u64 + 1);
        pdpt[gib * 8..gib * 8 + 8].copy_from_slice(&(pd_gpa | PRESENT | WRITABLE).to_le_bytes());
        for (i, entry) in pd.chunks_exact_mut(8).enumerate() {
            let addr = ((gib as u64) << 30) | ((i as u64) << 21);
            entry.copy_from_slice(&(addr | PRESENT | WRITABLE | HUGE).to_le_bytes());
        }
    }
    base
}

/// Where guest RAM usable for the kernel and initrd ends: the RAM's end,
/// or the start of the MMIO hole below 4 GiB.
pub fn low_ram_top(ram_len: u64) -> u64 {
    ram_len.min(MMIO_HOLE.start)
}

/// The e820 map for `ram_len` bytes of guest RAM at GPA 0: RAM below the
/// EBDA, the reserved BIOS area, RAM from 1 MiB to the end (or to the MMIO
/// hole, continuing at 4 GiB). Empty entries are left out.
pub fn e820_map(ram_len: u64) -> Vec<E820Entry> {
    let mut map = Vec::with_capacity(4);
    let mut add = |start: u64, end: u64, kind| {
        let end = end.min(ram_len);
        if start < end {
            map.push(E820Entry::new(Range::new(start, end), kind));
        }
    };
    add(0, EBDA_START, E820Type::Ram);
    add(LOW_RESERVED.start, LOW_RESERVED.end, E820Type::Reserved);
    add(HIGH_MEMORY, MMIO_HOLE.start, E820Type::Ram);
    add(MMIO_HOLE.end, u64::MAX, E820Type::Ram);
    map
}

/// Where the protected-mode kernel goes and what it occupies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelPlacement {
    /// The loaded image: `load..load + syssize * 16`. The 64-bit entry
    /// point is `load + 0x200`.
    pub image: Range,
    /// `runtime_start..runtime_start + init_size`: where the kernel
    /// decompresses and runs before it reads the memory map.
    pub runtime: Range,
    /// Everything the kernel may touch early: from `image.start` to the
    /// later of both ends. Nothing else may go here.
    pub footprint: Range,
}

/// Places the kernel at `pref_address`.
///
/// That is also where it runs: a non-relocatable kernel always runs at
/// `pref_address` (its `LOAD_PHYSICAL_ADDR`), and a relocatable one runs
/// at `max(align_up(load, kernel_alignment), pref_address)` (boot.rst and
/// the decompressor's `startup_64`), so loading below `pref_address` would
/// not lower the memory it needs. Only a relocatable kernel whose
/// `pref_address` is below 1 MiB goes elsewhere: at the first
/// `kernel_alignment`-aligned address from 1 MiB on.
pub fn place_kernel(
    h: &SetupHeader,
    image_len: u64,
    ram_len: u64,
) -> Result<KernelPlacement, LoadError> {
    let pref = h.pref_address;
    let align = u64::from(h.kernel_alignment.max(1));
    let align_up = |x: u64| x.saturating_add(align - 1) & !(align - 1);
    let (load, runtime_start) = if h.relocatable_kernel {
        let load = if pref >= HIGH_MEMORY {
            pref
        } else {
            align_up(HIGH_MEMORY)
        };
        (load, align_up(load).max(pref))
    } else if pref >= HIGH_MEMORY {
        (pref, pref)
    } else {
        return Err(LoadError::KernelAddress { pref_address: pref });
    };
    let image = Range::new(load, load.saturating_add(image_len));
    let runtime = Range::new(
        runtime_start,
        runtime_start.saturating_add(u64::from(h.init_size)),
    );
    let footprint = Range::new(load, image.end.max(runtime.end));
    let top = low_ram_top(ram_len);
    if footprint.end > top {
        return Err(LoadError::RamTooSmall {
            kernel: footprint,
            init_size: h.init_size,
            ram: ram_len,
            usable: top,
        });
    }
    Ok(KernelPlacement {
        image,
        runtime,
        footprint,
    })
}

/// The highest 4 KiB-aligned spot for `len` bytes that ends at or below
/// `limit`, starts at or above 1 MiB and does not overlap `avoid`.
pub fn place_initrd(len: u64, limit: u64, avoid: Range) -> Option<Range> {
    let below = |top: u64| {
        let start = top.checked_sub(len)? & !(PAGE_SIZE - 1);
        (start >= HIGH_MEMORY).then(|| Range::new(start, start + len))
    };
    match below(limit) {
        Some(r) if !r.overlaps(&avoid) => Some(r),
        _ => below(limit.min(avoid.start)).filter(|r| !r.overlaps(&avoid)),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::bzimage::tests::{synthetic_image, REAL_HEADER};
    use super::*;
    use alloc::vec;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    /// Translates `va` through 4-level page tables in `ram`, as the CPU
    /// would (4 KiB, 2 MiB and 1 GiB pages); `None` if not present.
    pub fn translate(ram: &[u8], cr3: u64, va: u64) -> Option<u64> {
        let entry = |table: u64, index: u64| {
            let at = (table + index * 8) as usize;
            u64::from_le_bytes(ram[at..at + 8].try_into().unwrap())
        };
        let addr = |e: u64| e & 0x000F_FFFF_FFFF_F000;
        let pml4e = entry(cr3 & !0xFFF, (va >> 39) & 511);
        if pml4e & PRESENT == 0 {
            return None;
        }
        let pdpte = entry(addr(pml4e), (va >> 30) & 511);
        if pdpte & PRESENT == 0 {
            return None;
        }
        if pdpte & HUGE != 0 {
            return Some((pdpte & 0x000F_FFFF_C000_0000) | (va & (GIB - 1)));
        }
        let pde = entry(addr(pdpte), (va >> 21) & 511);
        if pde & PRESENT == 0 {
            return None;
        }
        if pde & HUGE != 0 {
            return Some((pde & 0x000F_FFFF_FFE0_0000) | (va & (2 * MIB - 1)));
        }
        let pte = entry(addr(pde), (va >> 12) & 511);
        (pte & PRESENT != 0).then(|| addr(pte) | (va & 0xFFF))
    }

    #[test]
    fn page_tables_identity_map_4_gib() {
        let mut ram = vec![0u8; HIGH_MEMORY as usize];
        let tables: &mut [u8; PAGE_TABLES_LEN] = (&mut ram
            [PAGE_TABLES.start as usize..PAGE_TABLES.end as usize])
            .try_into()
            .unwrap();
        let cr3 = write_identity_map(tables, PML4_GPA);
        assert_eq!(cr3, PML4_GPA);
        assert_eq!(PAGE_TABLES.len(), 0x6000);
        for va in [
            0,
            0x7000,
            0x2_0000,
            0x100_0000,
            0x1000_0123,
            0x3FFF_FFFF,
            0x4000_0000,
            0xBFFF_F000,
            0xFEE0_0000,
            0xFFFF_FFFF,
        ] {
            assert_eq!(translate(&ram, cr3, va), Some(va), "{va:#x}");
        }
        assert_eq!(translate(&ram, cr3, 1 << 32), None);
        assert_eq!(translate(&ram, cr3, 1 << 39), None);
        // The entries themselves: present, writable, 2 MiB.
        let pde = |gib: u64, i: u64| {
            let at = (PD_GPA + gib * PAGE_SIZE + i * 8) as usize;
            u64::from_le_bytes(ram[at..at + 8].try_into().unwrap())
        };
        assert_eq!(pde(0, 8), 0x100_0000 | 0x83);
        assert_eq!(pde(3, 511), 0xFFE0_0000 | 0x83);
        let pml4e = u64::from_le_bytes(ram[0xF_1000..0xF_1008].try_into().unwrap());
        assert_eq!(pml4e, PDPT_GPA | 3);
        // Nothing is written outside PAGE_TABLES.
        assert!(ram[..PAGE_TABLES.start as usize].iter().all(|&b| b == 0));
        assert!(ram[PAGE_TABLES.end as usize..].iter().all(|&b| b == 0));
    }

    #[test]
    fn gdt_descriptors() {
        let gdt = gdt_bytes();
        assert_eq!(gdt.len(), usize::from(GDT_LIMIT) + 1);
        let d = |sel: u16| {
            let at = usize::from(sel);
            u64::from_le_bytes(gdt[at..at + 8].try_into().unwrap())
        };
        assert_eq!(d(0), 0);
        for sel in [BOOT_CS, BOOT_DS] {
            let desc = d(sel);
            let base = (desc >> 16) & 0xFF_FFFF | ((desc >> 56) << 24);
            let limit = (desc & 0xFFFF) | ((desc >> 48) & 0xF) << 16;
            assert_eq!(base, 0, "{sel:#x} base");
            assert_eq!(limit, 0xF_FFFF, "{sel:#x} limit");
            assert_eq!(desc >> 55 & 1, 1, "{sel:#x} 4 KiB granularity");
            assert_eq!(desc >> 47 & 1, 1, "{sel:#x} present");
            assert_eq!(desc >> 45 & 3, 0, "{sel:#x} DPL 0");
            assert_eq!(desc >> 44 & 1, 1, "{sel:#x} code/data");
        }
        let cs = d(BOOT_CS);
        assert_eq!(cs >> 40 & 0xF, 0xB, "execute/read, accessed");
        assert_eq!(cs >> 53 & 1, 1, "L: 64-bit");
        assert_eq!(cs >> 54 & 1, 0, "D must be 0 with L");
        let ds = d(BOOT_DS);
        assert_eq!(ds >> 40 & 0xF, 0x3, "read/write, accessed");
        assert_eq!(ds >> 54 & 1, 1, "B: 32-bit stack");
        assert_eq!(vmx_access_rights(cs), 0xA09B);
        assert_eq!(vmx_access_rights(ds), 0xC093);
    }

    #[test]
    fn e820_maps() {
        let kinds = |ram: u64| -> Vec<(u64, u64, E820Type)> {
            e820_map(ram)
                .iter()
                .map(|e| (e.addr, e.size, e.kind))
                .collect()
        };
        use E820Type::*;
        assert_eq!(
            kinds(256 * MIB),
            [
                (0, 0x9_FC00, Ram),
                (0x9_FC00, 0x6_0400, Reserved),
                (MIB, 255 * MIB, Ram)
            ]
        );
        assert_eq!(kinds(3 * GIB), kinds(3 * GIB + 512 * MIB));
        assert_eq!(
            kinds(6 * GIB)[2..],
            [(MIB, 3 * GIB - MIB, Ram), (4 * GIB, 2 * GIB, Ram)]
        );
        assert_eq!(kinds(MIB).len(), 2);
        assert_eq!(kinds(0x8_0000), [(0, 0x8_0000, Ram)]);
    }

    #[test]
    fn kernel_goes_to_pref_address() {
        let h = SetupHeader::parse(REAL_HEADER).unwrap();
        let k = place_kernel(&h, h.kernel_len(), 64 * MIB).unwrap();
        assert_eq!(k.image, Range::new(16 * MIB, 16 * MIB + h.kernel_len()));
        assert_eq!(k.runtime, Range::new(16 * MIB, 16 * MIB + 0x100_B000));
        assert_eq!(k.footprint, Range::new(16 * MIB, 16 * MIB + 0x100_B000));
        // Exactly enough RAM, then one page less.
        let end = k.footprint.end;
        assert!(place_kernel(&h, h.kernel_len(), end).is_ok());
        let err = place_kernel(&h, h.kernel_len(), end - PAGE_SIZE).unwrap_err();
        assert!(matches!(err, LoadError::RamTooSmall { .. }), "{err}");
    }

    #[test]
    fn relocatable_kernel_placement() {
        let mut image = synthetic_image();
        let h = SetupHeader::parse(&image).unwrap();
        let k = place_kernel(&h, 4096, 64 * MIB).unwrap();
        assert_eq!(k.image.start, 16 * MIB);
        assert_eq!(k.footprint, Range::new(16 * MIB, 24 * MIB));

        // pref_address below 1 MiB: first 2 MiB-aligned address >= 1 MiB.
        image[0x258..0x260].copy_from_slice(&0x1000u64.to_le_bytes());
        let h = SetupHeader::parse(&image).unwrap();
        let k = place_kernel(&h, 4096, 64 * MIB).unwrap();
        assert_eq!(k.image.start, 2 * MIB);
        assert_eq!(k.runtime, Range::new(2 * MIB, 10 * MIB));

        // A non-relocatable kernel that wants to run below 1 MiB.
        image[0x234] = 0;
        let h = SetupHeader::parse(&image).unwrap();
        let err = place_kernel(&h, 4096, 64 * MIB).unwrap_err();
        assert_eq!(
            err,
            LoadError::KernelAddress {
                pref_address: 0x1000
            }
        );

        // Absurd values saturate into "RAM too small", never overflow.
        image[0x258..0x260].copy_from_slice(&u64::MAX.to_le_bytes());
        let h = SetupHeader::parse(&image).unwrap();
        assert!(matches!(
            place_kernel(&h, u64::MAX, u64::MAX),
            Err(LoadError::RamTooSmall { .. })
        ));
    }

    #[test]
    fn initrd_placement() {
        let kernel = Range::new(16 * MIB, 33 * MIB);
        // Top of RAM, page aligned.
        let r = place_initrd(0x12_3456, 64 * MIB, kernel).unwrap();
        assert_eq!(r.start % PAGE_SIZE, 0);
        assert_eq!(r.len(), 0x12_3456);
        assert!(r.end <= 64 * MIB && r.end > 64 * MIB - PAGE_SIZE);
        // Limit inside the kernel: below the kernel.
        let r = place_initrd(MIB, 20 * MIB, kernel).unwrap();
        assert_eq!(r, Range::new(15 * MIB, 16 * MIB));
        // Too big above the kernel, fits below it.
        let r = place_initrd(40 * MIB, 64 * MIB, Range::new(50 * MIB, 60 * MIB)).unwrap();
        assert_eq!(r, Range::new(10 * MIB, 50 * MIB));
        // Fits nowhere.
        assert_eq!(place_initrd(32 * MIB, 64 * MIB, kernel), None);
        assert_eq!(place_initrd(16 * MIB, 17 * MIB, kernel), None);
        assert_eq!(place_initrd(u64::MAX, 64 * MIB, kernel), None);
        assert_eq!(place_initrd(PAGE_SIZE, MIB / 2, kernel), None);
        // Exactly the room between 1 MiB and the kernel.
        assert_eq!(
            place_initrd(15 * MIB, 16 * MIB, kernel),
            Some(Range::new(MIB, 16 * MIB))
        );
    }
}
