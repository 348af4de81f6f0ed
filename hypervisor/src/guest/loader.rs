//! [`load_linux`]: a bzImage, an initrd and a command line into guest RAM,
//! ready for the kernel's 64-bit entry point.

use super::acpi_tables::{self, AcpiConfig, AcpiError, AcpiLayout};
use super::boot_params::{
    self, BootParamsError, E820Entry, E820Type, ZeroPageConfig, ZERO_PAGE_SIZE,
};
use super::bzimage::{BzImage, BzImageError};
use super::layout::{self, *};
use super::Mib;
use crate::range::Range;
use alloc::boxed::Box;
use alloc::vec::Vec;
use core::fmt;

/// Everything the VT-x code needs to start the guest at the 64-bit entry
/// point, and where things went.
///
/// The initial state: CR0 = [`CR0`](Self::CR0), CR3 = `cr3`, CR4 =
/// [`CR4`](Self::CR4), EFER = [`EFER`](Self::EFER), RFLAGS =
/// [`RFLAGS`](Self::RFLAGS) (interrupts off), RIP = `entry_rip`, RSI =
/// `rsi`, other general registers 0; GDTR = `gdt_base`/`gdt_limit`; CS =
/// `code_selector` with [`CODE_ACCESS_RIGHTS`](Self::CODE_ACCESS_RIGHTS),
/// DS/ES/SS (and FS/GS) = `data_selector` with
/// [`DATA_ACCESS_RIGHTS`](Self::DATA_ACCESS_RIGHTS), all base 0, limit
/// 0xFFFFFFFF. The kernel needs no stack or IDT from us. VM entry also
/// wants a usable TR (e.g. base 0, limit 0x67, access rights 0x8B, a busy
/// 64-bit TSS) and an unusable LDTR; the GDT has no TSS entry because the
/// kernel never loads TR through our GDT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinuxBoot {
    /// Load address + 0x200.
    pub entry_rip: u64,
    /// The zero page ([`ZERO_PAGE_GPA`]).
    pub rsi: u64,
    /// The identity-mapping PML4 ([`PML4_GPA`]).
    pub cr3: u64,
    pub gdt_base: u64,
    pub gdt_limit: u16,
    /// `__BOOT_CS`, 0x10.
    pub code_selector: u16,
    /// `__BOOT_DS`, 0x18.
    pub data_selector: u16,
    /// The protected-mode kernel as loaded.
    pub kernel: Range,
    /// What the kernel may use before it reads the e820 map: the image and
    /// `init_size` bytes from its runtime start.
    pub kernel_footprint: Range,
    pub initrd: Option<Range>,
    /// The command line and its NUL.
    pub cmdline: Range,
    pub acpi: AcpiLayout,
    /// The e820 map given to the kernel.
    pub e820: Vec<E820Entry>,
}

impl LinuxBoot {
    /// PE | MP | ET | NE | WP | PG.
    pub const CR0: u64 = 1 | 1 << 1 | 1 << 4 | 1 << 5 | 1 << 16 | 1 << 31;
    /// PAE.
    pub const CR4: u64 = 1 << 5;
    /// LME | LMA.
    pub const EFER: u64 = 1 << 8 | 1 << 10;
    /// Only the reserved bit 1: IF clear.
    pub const RFLAGS: u64 = 1 << 1;
    pub const CODE_ACCESS_RIGHTS: u32 = vmx_access_rights(CODE64_DESCRIPTOR);
    pub const DATA_ACCESS_RIGHTS: u32 = vmx_access_rights(DATA_DESCRIPTOR);
}

/// Why a kernel could not be loaded. Nothing was written to guest RAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadError {
    Image(BzImageError),
    BootParams(BootParamsError),
    Acpi(AcpiError),
    /// The kernel's footprint ends past usable RAM (`usable` is `ram`, or
    /// the 3 GiB MMIO hole when RAM reaches it).
    RamTooSmall {
        kernel: Range,
        init_size: u32,
        ram: u64,
        usable: u64,
    },
    /// A non-relocatable kernel whose `pref_address` is below 1 MiB.
    KernelAddress {
        pref_address: u64,
    },
    /// No room for the initrd below `limit` outside the kernel.
    InitrdTooBig {
        size: u64,
        limit: u64,
        kernel: Range,
    },
    /// Guest RAM does not even hold the low boot structures.
    NoLowMemory {
        ram: u64,
    },
    /// A structure was placed outside guest RAM (a loader bug).
    OutsideRam {
        gpa: u64,
        len: u64,
        ram: u64,
    },
    /// The RAM meant to lie above everything else does not (a caller bug).
    HighRamOverlaps {
        ram: u64,
        high: Range,
    },
}

impl From<BzImageError> for LoadError {
    fn from(e: BzImageError) -> Self {
        LoadError::Image(e)
    }
}

impl From<BootParamsError> for LoadError {
    fn from(e: BootParamsError) -> Self {
        LoadError::BootParams(e)
    }
}

impl From<AcpiError> for LoadError {
    fn from(e: AcpiError) -> Self {
        LoadError::Acpi(e)
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Image(e) => e.fmt(f),
            Self::BootParams(e) => e.fmt(f),
            Self::Acpi(e) => e.fmt(f),
            Self::RamTooSmall {
                kernel,
                init_size,
                ram,
                usable,
            } => {
                write!(
                    f,
                    "guest RAM too small: the kernel needs {:#x}..{:#x} (load address, \
                     then init_size {}), so RAM up to {}, but the guest has {}",
                    kernel.start,
                    kernel.end,
                    Mib(u64::from(init_size)),
                    Mib(kernel.end),
                    Mib(ram)
                )?;
                if usable < ram {
                    write!(f, " of which {} lie below the MMIO hole", Mib(usable))?;
                }
                Ok(())
            }
            Self::KernelAddress { pref_address } => write!(
                f,
                "kernel is not relocatable and wants to run at {pref_address:#x}, \
                 below 1 MiB where the boot structures live"
            ),
            Self::InitrdTooBig {
                size,
                limit,
                kernel,
            } => write!(
                f,
                "initrd too big: {} does not fit between 1 MiB and {} \
                 (guest RAM or initrd_addr_max) outside the kernel at {}..{}",
                Mib(size),
                Mib(limit),
                Mib(kernel.start),
                Mib(kernel.end)
            ),
            Self::NoLowMemory { ram } => write!(
                f,
                "guest RAM too small: {} cannot hold the boot structures below 1 MiB",
                Mib(ram)
            ),
            Self::OutsideRam { gpa, len, ram } => write!(
                f,
                "guest loader bug: {len} bytes placed at {gpa:#x}, outside guest RAM ({})",
                Mib(ram)
            ),
            Self::HighRamOverlaps { ram, high } => write!(
                f,
                "guest memory map bug: RAM at {:#x}..{:#x} is not above the {} from GPA 0",
                high.start,
                high.end,
                Mib(ram)
            ),
        }
    }
}

/// Loads `kernel` (a bzImage), `initrd` (may be empty) and `cmdline` into
/// `ram` (guest RAM at GPA 0, index = GPA), with ACPI tables from `acpi`;
/// `high_ram` is more RAM the guest has elsewhere (above the channel),
/// which the e820 map reports and nothing is loaded into,
/// as [`layout`](super::layout) describes. Everything is checked before
/// anything is written: on error `ram` is untouched. RAM the layout does
/// not use is left as it was (the caller hands in zeroed memory).
pub fn load_linux(
    ram: &mut [u8],
    high_ram: Option<Range>,
    kernel: &[u8],
    initrd: &[u8],
    cmdline: &str,
    acpi: &AcpiConfig<'_>,
) -> Result<LinuxBoot, LoadError> {
    let image = BzImage::parse(kernel)?;
    let h = image.header();
    boot_params::check_cmdline(h, cmdline, CMDLINE_ROOM)?;
    let ram_len = ram.len() as u64;
    if ram_len < HIGH_MEMORY {
        return Err(LoadError::NoLowMemory { ram: ram_len });
    }

    let k = place_kernel(h, image.kernel().len() as u64, ram_len)?;
    let initrd_range = if initrd.is_empty() {
        None
    } else {
        let limit = low_ram_top(ram_len).min(u64::from(h.initrd_addr_max) + 1);
        let size = initrd.len() as u64;
        Some(
            place_initrd(size, limit, k.footprint).ok_or(LoadError::InitrdTooBig {
                size,
                limit,
                kernel: k.footprint,
            })?,
        )
    };

    let (acpi_layout, acpi_bytes) = acpi_tables::build(ACPI_REGION.start, acpi)?;
    if acpi_bytes.len() as u64 > ACPI_REGION.len() {
        return Err(AcpiError::DoesNotFit {
            needed: acpi_bytes.len() as u64,
            room: ACPI_REGION.len(),
        }
        .into());
    }

    let mut e820 = layout::e820_map(ram_len);
    if let Some(r) = high_ram {
        if r.start < e820.last().map_or(0, |e| e.range().end) {
            return Err(LoadError::HighRamOverlaps {
                ram: ram_len,
                high: r,
            });
        }
        e820.push(E820Entry::new(r, E820Type::Ram));
    }
    let mut zero_page: Box<[u8; ZERO_PAGE_SIZE]> = Box::new([0; ZERO_PAGE_SIZE]);
    boot_params::write_zero_page(
        &mut zero_page,
        h,
        &ZeroPageConfig {
            cmdline_gpa: CMDLINE_GPA,
            cmdline_len: cmdline.len(),
            initrd: initrd_range,
            e820: &e820,
            acpi_rsdp: Some(acpi_layout.rsdp),
        },
    )?;

    let mut tables: Box<[u8; PAGE_TABLES_LEN]> = Box::new([0; PAGE_TABLES_LEN]);
    let cr3 = write_identity_map(&mut tables, PAGE_TABLES.start);
    let mut cmdline_bytes = Vec::with_capacity(cmdline.len() + 1);
    cmdline_bytes.extend_from_slice(cmdline.as_bytes());
    cmdline_bytes.push(0);
    let cmdline_range = Range::new(CMDLINE_GPA, CMDLINE_GPA + cmdline_bytes.len() as u64);
    let gdt = gdt_bytes();

    let writes: [(u64, &[u8]); 7] = [
        (k.image.start, image.kernel()),
        (initrd_range.map_or(0, |r| r.start), initrd),
        (CMDLINE_GPA, &cmdline_bytes),
        (ZERO_PAGE_GPA, &zero_page[..]),
        (GDT_GPA, &gdt),
        (PAGE_TABLES.start, &tables[..]),
        (ACPI_REGION.start, &acpi_bytes),
    ];
    // The placement above keeps every write inside RAM; check anyway so
    // that a mistake there is an error, not a panic or a partial load.
    for &(gpa, bytes) in &writes {
        if span(ram_len, gpa, bytes.len()).is_none() {
            return Err(LoadError::OutsideRam {
                gpa,
                len: bytes.len() as u64,
                ram: ram_len,
            });
        }
    }
    for (gpa, bytes) in writes {
        if let Some(dst) = span(ram_len, gpa, bytes.len()).and_then(|r| ram.get_mut(r)) {
            dst.copy_from_slice(bytes);
        }
    }

    Ok(LinuxBoot {
        entry_rip: k.image.start + 0x200,
        rsi: ZERO_PAGE_GPA,
        cr3,
        gdt_base: GDT_GPA,
        gdt_limit: GDT_LIMIT,
        code_selector: BOOT_CS,
        data_selector: BOOT_DS,
        kernel: k.image,
        kernel_footprint: k.footprint,
        initrd: initrd_range,
        cmdline: cmdline_range,
        acpi: acpi_layout,
        e820,
    })
}

/// The index range of `len` bytes at `gpa` in `ram_len` bytes of RAM.
fn span(ram_len: u64, gpa: u64, len: usize) -> Option<core::ops::Range<usize>> {
    let end = gpa.checked_add(len as u64)?;
    (end <= ram_len).then_some(gpa as usize..end as usize)
}

#[cfg(test)]
mod tests {
    use super::super::acpi_tables::tests::{madt_entries, walk};
    use super::super::boot_params::{offset as zp, E820Type};
    use super::super::bzimage::tests::{real_image, synthetic_image, Rng, REAL_FILE_SIZE};
    use super::super::layout::tests::translate;
    use super::super::le;
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;

    const MIB: u64 = 1 << 20;
    const CMDLINE: &str = "console=ttyS0 earlyprintk=serial,ttyS0 rdinit=/init";

    fn initrd_bytes(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + 1) as u8).collect()
    }

    fn load(ram_mib: u64, initrd: &[u8], cmdline: &str) -> (Vec<u8>, Result<LinuxBoot, LoadError>) {
        let mut ram = vec![0u8; (ram_mib * MIB) as usize];
        let image = real_image();
        let r = load_linux(
            &mut ram,
            None,
            &image,
            initrd,
            cmdline,
            &AcpiConfig::default(),
        );
        (ram, r)
    }

    #[test]
    fn real_kernel_loads() {
        let initrd = initrd_bytes(3 * MIB as usize + 123);
        let (ram, boot) = load(64, &initrd, CMDLINE);
        let boot = boot.unwrap();
        let image = real_image();
        let kernel = &image[16384..];

        assert_eq!(boot.entry_rip, 0x100_0200);
        assert_eq!(boot.rsi, 0x7000);
        assert_eq!(boot.cr3, 0xF_1000);
        assert_eq!(boot.gdt_base, 0xF_0000);
        assert_eq!(boot.gdt_limit, 31);
        assert_eq!(boot.code_selector, 0x10);
        assert_eq!(boot.data_selector, 0x18);
        assert_eq!(LinuxBoot::CR0, 0x8001_0033);
        assert_eq!(LinuxBoot::CR4, 0x20);
        assert_eq!(LinuxBoot::EFER, 0x500);
        assert_eq!(LinuxBoot::RFLAGS, 2);
        assert_eq!(LinuxBoot::CODE_ACCESS_RIGHTS, 0xA09B);
        assert_eq!(LinuxBoot::DATA_ACCESS_RIGHTS, 0xC093);

        // The kernel, byte for byte, at 16 MiB.
        assert_eq!(
            boot.kernel,
            Range::new(0x100_0000, 0x100_0000 + kernel.len() as u64)
        );
        assert_eq!(&ram[0x100_0000..0x100_0000 + kernel.len()], kernel);
        assert_eq!(
            boot.kernel_footprint,
            Range::new(0x100_0000, 0x100_0000 + 0x100_B000)
        );

        // The initrd: page aligned, at the top of RAM, clear of the kernel.
        let r = boot.initrd.unwrap();
        assert_eq!(r.start % 4096, 0);
        assert_eq!(r.len(), initrd.len() as u64);
        assert!(r.end <= 64 * MIB && r.end + 4096 > 64 * MIB);
        assert!(r.end <= 0x7FFF_FFFF + 1);
        assert!(!r.overlaps(&boot.kernel_footprint));
        assert_eq!(&ram[r.start as usize..r.end as usize], &initrd[..]);

        // The command line and its NUL.
        assert_eq!(
            boot.cmdline,
            Range::new(0x2_0000, 0x2_0000 + CMDLINE.len() as u64 + 1)
        );
        assert_eq!(&ram[0x2_0000..0x2_0000 + CMDLINE.len()], CMDLINE.as_bytes());
        assert_eq!(ram[0x2_0000 + CMDLINE.len()], 0);

        // The zero page points at all of it.
        let page = &ram[0x7000..0x8000];
        let u32_ = |o| le::u32_at(page, o).unwrap();
        assert_eq!(&page[0x202..0x206], b"HdrS");
        assert_eq!(page[0x210], 0xFF);
        assert_eq!(page[0x211], 0x01);
        assert_eq!(u32_(0x228), 0x2_0000);
        assert_eq!(u32_(zp::EXT_CMD_LINE_PTR), 0);
        assert_eq!(u32_(0x218) as u64, r.start);
        assert_eq!(u32_(0x21C) as u64, r.len());
        assert_eq!(u32_(zp::EXT_RAMDISK_IMAGE), 0);
        assert_eq!(u32_(zp::EXT_RAMDISK_SIZE), 0);
        assert_eq!(u32_(0x23C), 0);
        assert_eq!(le::u64_at(page, zp::ACPI_RSDP_ADDR), Some(0xE_0000));
        assert_eq!(page[zp::SENTINEL], 0);

        // The e820 map, in the zero page and in the result.
        let want = [
            (0, 0x9_FC00, E820Type::Ram),
            (0x9_FC00, 0x10_0000 - 0x9_FC00, E820Type::Reserved),
            (0x10_0000, 63 * MIB, E820Type::Ram),
        ];
        assert_eq!(page[zp::E820_ENTRIES], 3);
        for (i, &(addr, size, kind)) in want.iter().enumerate() {
            let at = zp::E820_TABLE + 20 * i;
            assert_eq!(le::u64_at(page, at), Some(addr), "e820[{i}].addr");
            assert_eq!(le::u64_at(page, at + 8), Some(size), "e820[{i}].size");
            assert_eq!(
                le::u32_at(page, at + 16),
                Some(kind as u32),
                "e820[{i}].type"
            );
            assert_eq!(boot.e820[i], E820Entry { addr, size, kind });
        }
        // GDT, page tables and ACPI tables are in the reserved entry.
        for gpa in [
            boot.gdt_base,
            boot.cr3,
            PAGE_TABLES.end - 1,
            boot.acpi.rsdp,
            boot.acpi.range.end - 1,
        ] {
            assert!(
                (LOW_RESERVED.start..LOW_RESERVED.end).contains(&gpa),
                "{gpa:#x}"
            );
        }

        // The GDT in memory.
        let gdt = &ram[0xF_0000..0xF_0020];
        assert_eq!(le::u64_at(gdt, 0x10), Some(CODE64_DESCRIPTOR));
        assert_eq!(le::u64_at(gdt, 0x18), Some(DATA_DESCRIPTOR));

        // Identity mapping of everything the kernel needs.
        for va in [
            0x100_0000,
            boot.entry_rip,
            boot.kernel_footprint.end - 1,
            boot.rsi,
            boot.cmdline.start,
            r.start,
            r.end - 1,
            boot.gdt_base,
            boot.acpi.rsdp,
        ] {
            assert_eq!(translate(&ram, boot.cr3, va), Some(va), "{va:#x}");
        }

        // ACPI: the RSDP chain checks out and the MADT has one CPU.
        let tables = walk(&ram, boot.acpi.rsdp);
        let madt = tables.iter().find(|t| &t.bytes[..4] == b"APIC").unwrap();
        let entries = madt_entries(madt.bytes);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].0, 0);
        assert_eq!(entries[1].0, 1);

        // Nothing between the structures was written.
        assert!(ram[..0x7000].iter().all(|&b| b == 0));
        assert!(ram[0x8000..0x2_0000].iter().all(|&b| b == 0));
        assert!(ram[0x2_0000 + CMDLINE.len() + 1..0xE_0000]
            .iter()
            .all(|&b| b == 0));
        let kend = boot.kernel.end as usize;
        assert!(ram[0xF_7000..0x100_0000].iter().all(|&b| b == 0));
        assert!(ram[kend..r.start as usize].iter().all(|&b| b == 0));
    }

    #[test]
    fn no_initrd_empty_cmdline() {
        let (ram, boot) = load(40, &[], "");
        let boot = boot.unwrap();
        assert_eq!(boot.initrd, None);
        assert_eq!(boot.cmdline, Range::new(0x2_0000, 0x2_0001));
        let page = &ram[0x7000..0x8000];
        assert_eq!(le::u64_at(page, 0x218), Some(0));
        assert_eq!(le::u32_at(page, 0x228), Some(0x2_0000));
        assert_eq!(ram[0x2_0000], 0);
    }

    #[test]
    fn initrd_goes_below_the_kernel_when_needed() {
        // 34 MiB of RAM: 1.96 MiB above the kernel's footprint, so a 5 MiB
        // initrd goes below 16 MiB.
        let initrd = initrd_bytes(5 * MIB as usize);
        let (ram, boot) = load(34, &initrd, CMDLINE);
        let boot = boot.unwrap();
        let r = boot.initrd.unwrap();
        assert_eq!(r, Range::new(11 * MIB, 16 * MIB));
        assert_eq!(&ram[r.start as usize..r.end as usize], &initrd[..]);
    }

    #[test]
    fn initrd_respects_initrd_addr_max() {
        let mut image = real_image();
        image[0x22C..0x230].copy_from_slice(&(40 * MIB as u32 - 1).to_le_bytes());
        let mut ram = vec![0u8; 64 * MIB as usize];
        let initrd = initrd_bytes(MIB as usize);
        let boot = load_linux(&mut ram, None, &image, &initrd, "", &AcpiConfig::default()).unwrap();
        assert_eq!(boot.initrd, Some(Range::new(39 * MIB, 40 * MIB)));
    }

    #[test]
    fn relocatable_kernel_entry_and_large_ram() {
        let image = synthetic_image();
        // RAM past the 3 GiB hole is not allocated in a test: use the
        // layout functions for that case.
        let mut ram = vec![0u8; 32 * MIB as usize];
        let acpi = AcpiConfig {
            apic_id: 2,
            ioapic: false,
            dsdt_aml: &[0x5B, 0x80],
        };
        // RAM above a channel: reported last, nothing loaded there (the
        // initrd still goes to the top of the low RAM).
        let high = Range::new(65 << 30, (65 << 30) + 2 * MIB);
        let boot = load_linux(&mut ram, Some(high), &image, b"initrd", "quiet", &acpi).unwrap();
        assert_eq!(boot.e820.last(), Some(&E820Entry::new(high, E820Type::Ram)));
        let below = Range::new(16 * MIB, 18 * MIB);
        let mut fresh = vec![0u8; 32 * MIB as usize];
        assert!(matches!(
            load_linux(&mut fresh, Some(below), &image, b"", "", &acpi),
            Err(LoadError::HighRamOverlaps { .. })
        ));
        assert!(untouched(&fresh));
        assert_eq!(boot.entry_rip, 16 * MIB + 0x200);
        assert_eq!(
            &ram[16 * MIB as usize..16 * MIB as usize + 4096],
            &image[1024..]
        );
        assert_eq!(
            boot.initrd,
            Some(Range::new(32 * MIB - 4096, 32 * MIB - 4096 + 6))
        );
        let tables = walk(&ram, 0xE_0000);
        let madt = tables.iter().find(|t| &t.bytes[..4] == b"APIC").unwrap();
        assert_eq!(madt_entries(madt.bytes).len(), 1);
        let dsdt = &ram[boot.acpi.dsdt as usize..boot.acpi.range.end as usize];
        assert_eq!(&dsdt[36..], &[0x5B, 0x80]);
    }

    fn untouched(ram: &[u8]) -> bool {
        ram.iter().all(|&b| b == 0)
    }

    #[test]
    fn error_paths() {
        // Truncated kernel.
        let mut ram = vec![0u8; 64 * MIB as usize];
        let image = real_image();
        let err = load_linux(
            &mut ram,
            None,
            &image[..REAL_FILE_SIZE - 512],
            &[],
            "",
            &AcpiConfig::default(),
        )
        .unwrap_err();
        assert!(matches!(
            err,
            LoadError::Image(BzImageError::KernelTruncated { .. })
        ));
        assert!(err.to_string().starts_with("truncated: "), "{err}");

        // Not a bzImage.
        let elf = b"\x7fELF\x02\x01\x01\0".repeat(200);
        let err = load_linux(&mut ram, None, &elf, &[], "", &AcpiConfig::default()).unwrap_err();
        assert_eq!(err, LoadError::Image(BzImageError::NoMagic));
        assert_eq!(
            err.to_string(),
            "not a bzImage: no HdrS magic at offset 0x202"
        );
        assert!(untouched(&ram));

        // RAM too small for 16 MiB + init_size.
        let (ram, r) = load(32, &[], CMDLINE);
        let err = r.unwrap_err();
        assert_eq!(
            err,
            LoadError::RamTooSmall {
                kernel: Range::new(0x100_0000, 0x200_B000),
                init_size: 0x100_B000,
                ram: 32 * MIB,
                usable: 32 * MIB
            }
        );
        assert_eq!(
            err.to_string(),
            "guest RAM too small: the kernel needs 0x1000000..0x200b000 (load address, \
             then init_size 16.04 MiB), so RAM up to 32.04 MiB, but the guest has 32 MiB"
        );
        assert!(untouched(&ram));
        let (_, r) = load(0, &[], "");
        assert_eq!(
            r.unwrap_err().to_string(),
            "guest RAM too small: 0 MiB cannot hold the boot structures below 1 MiB"
        );

        // Initrd too big: 64 MiB RAM holds the kernel in 16..32.04 MiB; the
        // free room is 15 MiB below and 31.95 MiB above.
        let initrd = vec![1u8; 32 * MIB as usize];
        let (ram, r) = load(64, &initrd, CMDLINE);
        let err = r.unwrap_err();
        assert_eq!(
            err,
            LoadError::InitrdTooBig {
                size: 32 * MIB,
                limit: 64 * MIB,
                kernel: Range::new(0x100_0000, 0x200_B000)
            }
        );
        assert_eq!(
            err.to_string(),
            "initrd too big: 32 MiB does not fit between 1 MiB and 64 MiB \
             (guest RAM or initrd_addr_max) outside the kernel at 16 MiB..32.04 MiB"
        );
        assert!(untouched(&ram));

        // Command line too long for cmdline_size (2047).
        let long = "a".repeat(2048);
        let (ram, r) = load(64, &[], &long);
        let err = r.unwrap_err();
        assert_eq!(
            err,
            LoadError::BootParams(BootParamsError::CmdlineTooLong {
                len: 2048,
                max: 2047
            })
        );
        assert_eq!(
            err.to_string(),
            "kernel command line too long: 2048 bytes, the kernel takes at most 2047"
        );
        assert!(untouched(&ram));
        let (_, r) = load(64, &[], &long[..2047]);
        assert!(r.is_ok());

        // DSDT too big for the ACPI region.
        let aml = vec![0u8; 0x1_0000];
        let mut ram = vec![0u8; 64 * MIB as usize];
        let acpi = AcpiConfig {
            dsdt_aml: &aml,
            ..AcpiConfig::default()
        };
        let err = load_linux(&mut ram, None, &image, &[], "", &acpi).unwrap_err();
        assert!(
            matches!(err, LoadError::Acpi(AcpiError::DoesNotFit { .. })),
            "{err}"
        );
        assert!(untouched(&ram));
    }

    #[test]
    fn hostile_images_never_panic_the_loader() {
        let mut rng = Rng(0xD1B5_4A32_D192_ED03);
        let base = synthetic_image();
        let mut ram = vec![0u8; 40 * MIB as usize];
        let initrds = [0, 1, 4096, 5 << 20, 60 << 20].map(|len| vec![0xABu8; len]);
        for _ in 0..3000 {
            let mut image = base.clone();
            for _ in 0..1 + rng.below(8) {
                let at = 0x1F0 + rng.below(0x80);
                image[at] = rng.next() as u8;
            }
            let cut = if rng.below(4) == 0 {
                rng.below(image.len())
            } else {
                image.len()
            };
            let initrd = &initrds[rng.below(initrds.len())];
            if let Ok(boot) = load_linux(
                &mut ram,
                None,
                &image[..cut],
                initrd,
                "x",
                &AcpiConfig::default(),
            ) {
                assert!(boot.kernel_footprint.end <= ram.len() as u64);
                if let Some(r) = boot.initrd {
                    assert!(!r.overlaps(&boot.kernel_footprint));
                    assert!(r.start >= HIGH_MEMORY && r.end <= ram.len() as u64);
                }
            }
        }
    }
}
