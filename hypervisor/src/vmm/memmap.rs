//! What each guest's EPT maps: the plan, as plain data, that the VT-x
//! backend turns into tables. A guest gets its RAM at GPA 0 and, when the
//! partition has a channel, the channel region at [`CHANNEL_GPA`] with the
//! per-page permissions of `vmlink_abi::channel::protection`, and the last
//! [`HIGH_RAM_BYTES`] of its RAM above the region ([`high_ram`]). Nothing
//! else: not the hypervisor, not another guest's RAM, not the page tables.

use alloc::vec::Vec;

use crate::arch::x64::vmx::ept::{Ept, PageSizes, Perm, TableMemory};
use crate::vmm::platform::APIC_BASE;
use vmlink_abi::channel::{protection, Access, Layout, PAGE};

/// Where the channel region appears in both guests: 64 GiB, above any RAM
/// size a configuration allows and aligned for the largest region, so the
/// BAR is naturally aligned as PCI requires.
pub const CHANNEL_GPA: u64 = 64 << 30;

/// How much of a channel guest's RAM lies above the region instead of at
/// the top of its low RAM: one 2 MiB EPT page.
pub const HIGH_RAM_BYTES: u64 = 2 << 20;

/// Where a guest's RAM lies: `low` bytes from GPA 0 and, with a channel,
/// `(gpa, len)` above the region, backed by the last `len` bytes of the
/// guest's host block.
///
/// Why RAM above the region: Linux 6.1 takes a user-space mapping of a page
/// above its highest RAM page for a bad one when it unmaps it
/// (`vm_normal_page` checks `highest_memmap_pfn`, which hot-added device
/// memory does not raise), and the zero-copy receiver maps region pages
/// into user space (TCP_ZEROCOPY_RECEIVE). The first GiB boundary past the
/// region keeps that RAM out of the BAR's Linux memory sections and lets
/// the EPT map it with one large page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RamSplit {
    pub low: u64,
    pub high: Option<(u64, u64)>,
}

pub fn high_ram(ram_bytes: u64, region_size: Option<u64>) -> RamSplit {
    match region_size {
        Some(size) if ram_bytes > HIGH_RAM_BYTES => RamSplit {
            low: ram_bytes - HIGH_RAM_BYTES,
            high: Some((
                (CHANNEL_GPA + size).next_multiple_of(1 << 30),
                HIGH_RAM_BYTES,
            )),
        },
        _ => RamSplit {
            low: ram_bytes,
            high: None,
        },
    }
}

/// The shared region in host memory.
#[derive(Clone, Copy, Debug)]
pub struct ChannelFrames {
    pub layout: Layout,
    /// The region (its first page is never mapped: each guest sees its own
    /// header page there instead).
    pub region_hpa: u64,
    /// One header page per side.
    pub header_hpa: [u64; 2],
}

/// One contiguous mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    pub gpa: u64,
    pub hpa: u64,
    pub len: u64,
    pub perm: Perm,
}

/// The runs of the guest on `side` (0 or 1) of the channel, or of a guest
/// without one, whose RAM starts at `ram_hpa` and lies as `split` says
/// ([`high_ram`]: the loader lays the guest out by the same split).
/// `apic_access` is the page a CPU that virtualizes the local APIC
/// recognises accesses by; without it the APIC page stays unmapped and
/// every access exits as an EPT violation.
pub fn plan(
    ram_hpa: u64,
    split: RamSplit,
    channel: Option<(&ChannelFrames, usize)>,
    apic_access: Option<u64>,
) -> Vec<Run> {
    let mut runs = alloc::vec![Run {
        gpa: 0,
        hpa: ram_hpa,
        len: split.low,
        perm: Perm::ReadWriteExec,
    }];
    if let Some((gpa, len)) = split.high {
        runs.push(Run {
            gpa,
            hpa: ram_hpa + split.low,
            len,
            perm: Perm::ReadWriteExec,
        });
    }
    if let Some(hpa) = apic_access {
        runs.push(Run {
            gpa: APIC_BASE,
            hpa,
            len: PAGE,
            perm: Perm::ReadWrite,
        });
    }
    if let Some((ch, side)) = channel {
        for (off, len, access) in protection(&ch.layout, side) {
            let hpa = if off == 0 {
                ch.header_hpa[side]
            } else {
                ch.region_hpa + off
            };
            runs.push(Run {
                gpa: CHANNEL_GPA + off,
                hpa,
                len,
                perm: match access {
                    Access::ReadOnly => Perm::ReadOnly,
                    Access::ReadWrite => Perm::ReadWrite,
                },
            });
        }
        debug_assert!(runs.iter().all(|r| r.len % PAGE == 0));
    }
    runs
}

/// Builds the EPT for `runs`.
pub fn build<M: TableMemory>(mem: &mut M, runs: &[Run], sizes: PageSizes) -> Option<Ept> {
    let mut ept = Ept::new(mem)?;
    for r in runs {
        ept.map(mem, r.gpa, r.hpa, r.len, r.perm, sizes)?;
    }
    Some(ept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::x64::vmx::ept::tests::HostTables;
    use crate::frames::FrameAllocator;
    use crate::range::{Range, RangeSet};
    use std::collections::HashMap;

    struct Mapped {
        leaves: Vec<(u64, u64, u64, Option<Perm>)>,
        tables: Vec<u64>,
    }

    fn walk(ept: &Ept, mem: &HostTables) -> Mapped {
        let mut m = Mapped {
            leaves: Vec::new(),
            tables: Vec::new(),
        };
        let mut tables = Vec::new();
        ept.walk(
            mem,
            &mut |g, h, l, p| m.leaves.push((g, h, l, p)),
            &mut |t| tables.push(t),
        );
        m.tables = tables;
        m
    }

    fn host_range(l: &(u64, u64, u64, Option<Perm>)) -> Range {
        Range::new(l.1, l.1 + l.2)
    }

    /// Builds two guests' memory as `launch` does, on a machine with the
    /// hypervisor image and boot modules reserved, and checks what each
    /// guest's EPT reaches.
    fn two_guests(sizes: PageSizes, region: u64) {
        let mut ram = RangeSet::new();
        ram.add(Range::new(0, 0x9_F000)).unwrap();
        ram.add(Range::new(0x10_0000, 0xBFF0_0000)).unwrap();
        ram.add(Range::new(1 << 32, 3 << 32)).unwrap();
        let image = Range::new(0x20_0000, 0x60_0000);
        let modules = Range::new(0x100_0000, 0x180_0000);
        let mut fa = FrameAllocator::new(&ram, &[image, modules]).unwrap();
        let hypervisor_heap = fa.alloc(8 << 20, 4096).unwrap();
        let mut mem = HostTables {
            frames: &mut fa,
            words: HashMap::new(),
        };
        let layout = Layout::new(region, 0).unwrap();
        let ch = ChannelFrames {
            layout,
            region_hpa: mem.frames.alloc(region, region.min(2 << 20)).unwrap(),
            header_hpa: [
                mem.frames.alloc(PAGE, PAGE).unwrap(),
                mem.frames.alloc(PAGE, PAGE).unwrap(),
            ],
        };
        let sizes_mib = [256u64, 160];
        let mut guests = Vec::new();
        for (side, mib) in sizes_mib.iter().enumerate() {
            let bytes = mib << 20;
            let hpa = mem.frames.alloc(bytes, 2 << 20).unwrap();
            let runs = plan(hpa, high_ram(bytes, Some(region)), Some((&ch, side)), None);
            let ept = build(&mut mem, &runs, sizes).unwrap();
            guests.push((Range::new(hpa, hpa + bytes), walk(&ept, &mem)));
        }
        let region_r = Range::new(ch.region_hpa, ch.region_hpa + region);
        let all_tables: Vec<u64> = guests.iter().flat_map(|g| g.1.tables.clone()).collect();
        for (side, (own_ram, m)) in guests.iter().enumerate() {
            let other_ram = guests[1 - side].0;
            let mut ram_bytes = 0;
            for l in &m.leaves {
                let h = host_range(l);
                // Nothing of the hypervisor: image, modules, heap, low
                // memory, any EPT table (its own or the other guest's).
                assert!(!h.overlaps(&image) && !h.overlaps(&modules), "{l:x?}");
                assert!(
                    !h.overlaps(&Range::new(hypervisor_heap, hypervisor_heap + (8 << 20))),
                    "{l:x?}"
                );
                assert!(h.start >= crate::frames::LOW_MEMORY_END, "{l:x?}");
                for t in &all_tables {
                    assert!(
                        !h.overlaps(&Range::new(*t, t + 4096)),
                        "table {t:x} in {l:x?}"
                    );
                }
                // Nothing of the other guest, RAM or header page.
                assert!(!h.overlaps(&other_ram), "{l:x?}");
                let peer_header = ch.header_hpa[1 - side];
                assert!(!h.overlaps(&Range::new(peer_header, peer_header + PAGE)));
                let split = high_ram(own_ram.len(), Some(region));
                let (high_gpa, high_len) = split.high.unwrap();
                if l.0 < CHANNEL_GPA {
                    // RAM: exactly its own, at GPA = offset.
                    assert!(own_ram.contains_range(&h), "{l:x?}");
                    assert_eq!(l.1 - own_ram.start, l.0);
                    assert!(l.0 + l.2 <= split.low, "{l:x?}");
                    assert_eq!(l.3, Some(Perm::ReadWriteExec));
                    ram_bytes += l.2;
                } else if l.0 >= high_gpa {
                    // The rest of its RAM, above the region.
                    assert!(l.0 >= CHANNEL_GPA + region, "{l:x?}");
                    assert!(l.0 + l.2 <= high_gpa + high_len, "{l:x?}");
                    assert_eq!(l.1 - own_ram.start, split.low + (l.0 - high_gpa));
                    assert_eq!(l.3, Some(Perm::ReadWriteExec));
                    ram_bytes += l.2;
                } else {
                    let off = l.0 - CHANNEL_GPA;
                    if off == 0 {
                        assert_eq!((l.1, l.2), (ch.header_hpa[side], PAGE));
                        assert_eq!(l.3, Some(Perm::ReadOnly));
                        continue;
                    }
                    assert!(region_r.contains_range(&h), "{l:x?}");
                    assert_eq!(l.1 - ch.region_hpa, off);
                    let own = layout.section(side);
                    let writable = off >= own && off < own + layout.section_size;
                    let want = if writable {
                        Perm::ReadWrite
                    } else {
                        Perm::ReadOnly
                    };
                    assert_eq!(l.3, Some(want), "{l:x?}");
                }
            }
            assert_eq!(ram_bytes, own_ram.len());
        }
        // The two guests' RAM is disjoint, and the frames behind their EPTs
        // are nobody's RAM.
        assert!(!guests[0].0.overlaps(&guests[1].0));
        for t in &all_tables {
            let t = Range::new(*t, t + 4096);
            assert!(
                !t.overlaps(&guests[0].0) && !t.overlaps(&guests[1].0) && !t.overlaps(&region_r)
            );
        }
    }

    #[test]
    fn guests_reach_only_their_ram_and_the_channel_as_allowed() {
        let big = PageSizes {
            gib: true,
            mib2: true,
        };
        two_guests(big, 64 << 20);
        two_guests(big, 1 << 30);
        two_guests(
            PageSizes {
                gib: false,
                mib2: false,
            },
            1 << 20,
        );
    }

    #[test]
    fn channel_guests_keep_a_little_ram_above_the_region() {
        const GIB: u64 = 1 << 30;
        for (region, gpa) in [
            (1 << 20, 65 * GIB),
            (64 << 20, 65 * GIB),
            (GIB, 65 * GIB),
            (4 * GIB, 68 * GIB),
        ] {
            let s = high_ram(256 << 20, Some(region));
            assert_eq!(s.low, (256 << 20) - HIGH_RAM_BYTES);
            assert_eq!(s.high, Some((gpa, HIGH_RAM_BYTES)));
            assert!(gpa >= CHANNEL_GPA + region && gpa % (2 << 20) == 0);
        }
        assert_eq!(
            high_ram(256 << 20, None),
            RamSplit {
                low: 256 << 20,
                high: None
            }
        );
    }

    #[test]
    fn a_guest_without_channel_maps_only_its_ram() {
        let runs = plan(0x4000_0000, high_ram(32 << 20, None), None, None);
        assert_eq!(
            runs,
            vec![Run {
                gpa: 0,
                hpa: 0x4000_0000,
                len: 32 << 20,
                perm: Perm::ReadWriteExec
            }]
        );
    }

    #[test]
    fn the_apic_access_page_is_mapped_data_only_where_given() {
        let runs = plan(0x4000_0000, high_ram(32 << 20, None), None, Some(0x7000));
        assert_eq!(
            runs[1],
            Run {
                gpa: APIC_BASE,
                hpa: 0x7000,
                len: 4096,
                perm: Perm::ReadWrite
            }
        );
    }
}
