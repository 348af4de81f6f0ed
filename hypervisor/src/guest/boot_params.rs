//! The zero page: Linux's `struct boot_params` (Documentation/x86/
//! zero-page.rst), 4096 bytes that the 64-bit entry point finds through
//! `%rsi`.
//!
//! It starts as zeros (so `sentinel` at 0x1EF is 0 and the kernel trusts
//! every field), gets the image's setup header copied to 0x1F1, and then
//! the fields a boot loader owns: loader type, load flags, command line,
//! initrd, e820 map and (protocol 2.14+) the ACPI RSDP address.

use super::bzimage::{offset as hdr, SetupHeader, LOADED_HIGH, PROTOCOL_ACPI_RSDP};
use super::bzimage::{SETUP_HEADER_MAX_END, SETUP_HEADER_START};
use super::Mib;
use crate::range::Range;
use core::fmt;

pub const ZERO_PAGE_SIZE: usize = 4096;
/// Room in `boot_params.e820_table`.
pub const E820_MAX_ENTRIES: usize = 128;
const E820_ENTRY_SIZE: usize = 20;
/// `type_of_loader` for a boot loader without an assigned ID.
pub const LOADER_TYPE_UNDEFINED: u8 = 0xFF;
const FOUR_GIB: u64 = 1 << 32;

/// Zero-page offsets outside the setup header (those are in
/// [`bzimage::offset`](super::bzimage::offset)).
pub mod offset {
    pub const ACPI_RSDP_ADDR: usize = 0x070;
    pub const EXT_RAMDISK_IMAGE: usize = 0x0C0;
    pub const EXT_RAMDISK_SIZE: usize = 0x0C4;
    pub const EXT_CMD_LINE_PTR: usize = 0x0C8;
    pub const E820_ENTRIES: usize = 0x1E8;
    pub const SENTINEL: usize = 0x1EF;
    pub const E820_TABLE: usize = 0x2D0;
}

/// e820 memory types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum E820Type {
    Ram = 1,
    Reserved = 2,
    Acpi = 3,
    Nvs = 4,
    Unusable = 5,
}

/// One e820 entry: `size` bytes from `addr`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct E820Entry {
    pub addr: u64,
    pub size: u64,
    pub kind: E820Type,
}

impl E820Entry {
    pub const fn new(range: Range, kind: E820Type) -> Self {
        E820Entry {
            addr: range.start,
            size: range.len(),
            kind,
        }
    }

    pub const fn range(&self) -> Range {
        Range::new(self.addr, self.addr.saturating_add(self.size))
    }
}

/// What the zero page tells the kernel besides its own header.
#[derive(Clone, Copy, Debug)]
pub struct ZeroPageConfig<'a> {
    /// Guest-physical address of the NUL-terminated command line.
    pub cmdline_gpa: u64,
    /// Command line length without the NUL.
    pub cmdline_len: usize,
    /// Where the initrd was loaded, if there is one.
    pub initrd: Option<Range>,
    pub e820: &'a [E820Entry],
    /// RSDP address; written only for protocol 2.14+ (older kernels scan
    /// 0xE0000..0x100000 for it).
    pub acpi_rsdp: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootParamsError {
    /// The command line (without its NUL) is longer than `max` bytes:
    /// the kernel's `cmdline_size`, or less where the loader has less room.
    CmdlineTooLong {
        len: usize,
        max: usize,
    },
    /// The command line holds a NUL byte, which would cut it short.
    CmdlineNul {
        at: usize,
    },
    TooManyE820 {
        count: usize,
    },
    /// The initrd ends past `initrd_addr_max + 1` (for a kernel without
    /// `XLF_CAN_BE_LOADED_ABOVE_4G`).
    InitrdAboveMax {
        end: u64,
        max: u32,
    },
    /// A structure lies above 4 GiB, but the kernel lacks
    /// `XLF_CAN_BE_LOADED_ABOVE_4G`.
    Above4G {
        what: &'static str,
        end: u64,
    },
}

impl fmt::Display for BootParamsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::CmdlineTooLong { len, max } => write!(
                f,
                "kernel command line too long: {len} bytes, the kernel takes at most {max}"
            ),
            Self::CmdlineNul { at } => write!(
                f,
                "kernel command line holds a NUL byte at offset {at}, which would cut it short"
            ),
            Self::TooManyE820 { count } => write!(
                f,
                "e820 map has {count} entries, the zero page holds at most {E820_MAX_ENTRIES}"
            ),
            Self::InitrdAboveMax { end, max } => write!(
                f,
                "initrd ends at {end:#x} ({}), past the kernel's initrd_addr_max {max:#x}",
                Mib(end)
            ),
            Self::Above4G { what, end } => write!(
                f,
                "{what} ends at {end:#x}, above 4 GiB, but the kernel lacks \
                 XLF_CAN_BE_LOADED_ABOVE_4G"
            ),
        }
    }
}

/// The longest command line `header`'s kernel takes, capped at `room - 1`
/// bytes (the loader's buffer, NUL included).
pub fn cmdline_max(header: &SetupHeader, room: usize) -> usize {
    usize::try_from(header.cmdline_size)
        .unwrap_or(usize::MAX)
        .min(room.saturating_sub(1))
}

/// Checks a command line against `header`'s `cmdline_size` and a loader
/// buffer of `room` bytes (NUL included).
pub fn check_cmdline(
    header: &SetupHeader,
    cmdline: &str,
    room: usize,
) -> Result<(), BootParamsError> {
    if let Some(at) = cmdline.bytes().position(|b| b == 0) {
        return Err(BootParamsError::CmdlineNul { at });
    }
    let max = cmdline_max(header, room);
    if cmdline.len() > max {
        return Err(BootParamsError::CmdlineTooLong {
            len: cmdline.len(),
            max,
        });
    }
    Ok(())
}

/// Fills `page` with the zero page for `header`'s kernel. Nothing is
/// written when an error is returned.
pub fn write_zero_page(
    page: &mut [u8; ZERO_PAGE_SIZE],
    header: &SetupHeader,
    cfg: &ZeroPageConfig<'_>,
) -> Result<(), BootParamsError> {
    // The whole page is ours, so only the header's own limit applies.
    let max = cmdline_max(header, usize::MAX);
    if cfg.cmdline_len > max {
        return Err(BootParamsError::CmdlineTooLong {
            len: cfg.cmdline_len,
            max,
        });
    }
    if cfg.e820.len() > E820_MAX_ENTRIES {
        return Err(BootParamsError::TooManyE820 {
            count: cfg.e820.len(),
        });
    }
    let high_ok = header.can_load_above_4g();
    let cmdline_end = cfg.cmdline_gpa.saturating_add(cfg.cmdline_len as u64 + 1);
    if !high_ok && cmdline_end > FOUR_GIB {
        return Err(BootParamsError::Above4G {
            what: "the command line",
            end: cmdline_end,
        });
    }
    if let Some(initrd) = cfg.initrd {
        // A kernel that may live above 4 GiB takes its initrd anywhere;
        // otherwise initrd_addr_max (below 4 GiB) holds.
        if !high_ok && initrd.end > u64::from(header.initrd_addr_max) + 1 {
            return Err(BootParamsError::InitrdAboveMax {
                end: initrd.end,
                max: header.initrd_addr_max,
            });
        }
    }

    page.fill(0);
    let raw = header.raw();
    debug_assert!(SETUP_HEADER_START + raw.len() <= SETUP_HEADER_MAX_END);
    page[SETUP_HEADER_START..SETUP_HEADER_START + raw.len()].copy_from_slice(raw);

    page[hdr::TYPE_OF_LOADER] = LOADER_TYPE_UNDEFINED;
    // LOADED_HIGH describes the image (the kernel is at 1 MiB or above);
    // every other bit is a request for the 16-bit setup code, which the
    // 64-bit entry skips (CAN_USE_HEAP and heap_end_ptr), obsolete
    // (KEEP_SEGMENTS), would silence the decompressor (QUIET_FLAG) or is
    // the kernel's own (KASLR_FLAG).
    page[hdr::LOADFLAGS] = LOADED_HIGH;
    put16(page, hdr::HEAP_END_PTR, 0);

    let (lo, hi) = split(cfg.cmdline_gpa);
    put32(page, hdr::CMD_LINE_PTR, lo);
    put32(page, offset::EXT_CMD_LINE_PTR, hi);

    let (image, size) = cfg.initrd.map_or((0, 0), |r| (r.start, r.len()));
    let (lo, hi) = split(image);
    put32(page, hdr::RAMDISK_IMAGE, lo);
    put32(page, offset::EXT_RAMDISK_IMAGE, hi);
    let (lo, hi) = split(size);
    put32(page, hdr::RAMDISK_SIZE, lo);
    put32(page, offset::EXT_RAMDISK_SIZE, hi);

    // A plain PC, no setup_data list.
    put32(page, hdr::HARDWARE_SUBARCH, 0);
    put64(page, hdr::HARDWARE_SUBARCH_DATA, 0);
    put64(page, hdr::SETUP_DATA, 0);

    page[offset::E820_ENTRIES] = cfg.e820.len() as u8;
    for (i, e) in cfg.e820.iter().enumerate() {
        let at = offset::E820_TABLE + i * E820_ENTRY_SIZE;
        put64(page, at, e.addr);
        put64(page, at + 8, e.size);
        put32(page, at + 16, e.kind as u32);
    }

    if header.version >= PROTOCOL_ACPI_RSDP {
        if let Some(rsdp) = cfg.acpi_rsdp {
            put64(page, offset::ACPI_RSDP_ADDR, rsdp);
        }
    }
    Ok(())
}

fn split(v: u64) -> (u32, u32) {
    (v as u32, (v >> 32) as u32)
}

// Offsets are constants inside the page (or, for e820, bounded by
// E820_MAX_ENTRIES), so these slices are always in bounds.
fn put16(page: &mut [u8; ZERO_PAGE_SIZE], at: usize, v: u16) {
    page[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

fn put32(page: &mut [u8; ZERO_PAGE_SIZE], at: usize, v: u32) {
    page[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put64(page: &mut [u8; ZERO_PAGE_SIZE], at: usize, v: u64) {
    page[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::super::bzimage::tests::{synthetic_image, REAL_HEADER};
    use super::super::le;
    use super::*;
    use alloc::string::ToString;
    use alloc::vec::Vec;

    const E820: [E820Entry; 3] = [
        E820Entry::new(Range::new(0, 0x9_FC00), E820Type::Ram),
        E820Entry::new(Range::new(0x9_FC00, 0x10_0000), E820Type::Reserved),
        E820Entry::new(Range::new(0x10_0000, 0x1000_0000), E820Type::Ram),
    ];

    fn config(initrd: Option<Range>) -> ZeroPageConfig<'static> {
        ZeroPageConfig {
            cmdline_gpa: 0x2_0000,
            cmdline_len: 29,
            initrd,
            e820: &E820,
            acpi_rsdp: Some(0xE_0000),
        }
    }

    fn page_for(image: &[u8], cfg: &ZeroPageConfig<'_>) -> [u8; ZERO_PAGE_SIZE] {
        let h = SetupHeader::parse(image).unwrap();
        let mut page = [0xEEu8; ZERO_PAGE_SIZE];
        write_zero_page(&mut page, &h, cfg).unwrap();
        page
    }

    #[test]
    fn real_header_zero_page_fields() {
        let initrd = Range::new(0x7F00_0000, 0x7F12_3456);
        let page = page_for(REAL_HEADER, &config(Some(initrd)));
        let u8_ = |o| le::u8_at(&page, o).unwrap();
        let u16_ = |o| le::u16_at(&page, o).unwrap();
        let u32_ = |o| le::u32_at(&page, o).unwrap();
        let u64_ = |o| le::u64_at(&page, o).unwrap();

        // Everything before the header is zero except what we set.
        assert_eq!(u64_(offset::ACPI_RSDP_ADDR), 0xE_0000);
        assert_eq!(u8_(offset::SENTINEL), 0);
        assert_eq!(u8_(offset::E820_ENTRIES), 3);
        // The copied header.
        assert_eq!(&page[0x202..0x206], b"HdrS");
        assert_eq!(u16_(0x1FE), 0xAA55);
        assert_eq!(u16_(0x206), 0x020F);
        assert_eq!(u8_(0x1F1), 31);
        assert_eq!(u32_(0x260), 0x100_B000);
        assert_eq!(u64_(0x258), 0x100_0000);
        assert_eq!(u32_(0x238), 2047);
        // Untouched header bytes equal the image's.
        assert_eq!(&page[0x1F1..0x210], &REAL_HEADER[0x1F1..0x210]);
        assert_eq!(&page[0x22C..0x23C], &REAL_HEADER[0x22C..0x23C]);
        assert_eq!(&page[0x258..0x26C], &REAL_HEADER[0x258..0x26C]);
        // Loader-owned fields.
        assert_eq!(u8_(0x210), 0xFF);
        assert_eq!(u8_(0x211), LOADED_HIGH);
        assert_eq!(u16_(0x224), 0);
        assert_eq!(u32_(0x228), 0x2_0000);
        assert_eq!(u32_(offset::EXT_CMD_LINE_PTR), 0);
        assert_eq!(u32_(0x218), 0x7F00_0000);
        assert_eq!(u32_(0x21C), 0x12_3456);
        assert_eq!(u32_(offset::EXT_RAMDISK_IMAGE), 0);
        assert_eq!(u32_(offset::EXT_RAMDISK_SIZE), 0);
        assert_eq!(u32_(0x23C), 0);
        assert_eq!(u64_(0x240), 0);
        assert_eq!(u64_(0x250), 0);
        // Between the header's end and the e820 table nothing is written.
        assert!(page[0x26C..offset::E820_TABLE].iter().all(|&b| b == 0));
        // The e820 table, 20 bytes an entry.
        for (i, e) in E820.iter().enumerate() {
            let at = offset::E820_TABLE + 20 * i;
            assert_eq!(u64_(at), e.addr);
            assert_eq!(u64_(at + 8), e.size);
            assert_eq!(u32_(at + 16), e.kind as u32);
        }
        let table_end = offset::E820_TABLE + 20 * E820.len();
        assert!(page[table_end..].iter().all(|&b| b == 0));
        assert!(page[..offset::ACPI_RSDP_ADDR].iter().all(|&b| b == 0));
    }

    #[test]
    fn high_initrd_and_cmdline_use_the_ext_fields() {
        // The synthetic kernel has XLF_CAN_BE_LOADED_ABOVE_4G, so its
        // initrd_addr_max (0x7FFFFFFF) does not bind.
        let mut cfg = config(Some(Range::new(
            0x1_2345_6000,
            0x1_2345_6000 + 0x1_0000_1000,
        )));
        cfg.cmdline_gpa = 0x3_0000_1000;
        let page = page_for(&synthetic_image(), &cfg);
        assert_eq!(le::u32_at(&page, 0x228), Some(0x1000));
        assert_eq!(le::u32_at(&page, offset::EXT_CMD_LINE_PTR), Some(3));
        assert_eq!(le::u32_at(&page, 0x218), Some(0x2345_6000));
        assert_eq!(le::u32_at(&page, offset::EXT_RAMDISK_IMAGE), Some(1));
        assert_eq!(le::u32_at(&page, 0x21C), Some(0x1000));
        assert_eq!(le::u32_at(&page, offset::EXT_RAMDISK_SIZE), Some(1));
    }

    #[test]
    fn no_initrd_no_rsdp() {
        let mut cfg = config(None);
        cfg.acpi_rsdp = None;
        let page = page_for(REAL_HEADER, &cfg);
        assert_eq!(le::u64_at(&page, offset::ACPI_RSDP_ADDR), Some(0));
        assert_eq!(le::u64_at(&page, 0x218), Some(0));
        assert_eq!(le::u64_at(&page, offset::EXT_RAMDISK_IMAGE), Some(0));
    }

    #[test]
    fn rsdp_needs_protocol_2_14() {
        let mut image = synthetic_image();
        image[0x206..0x208].copy_from_slice(&0x020Du16.to_le_bytes());
        let page = page_for(&image, &config(None));
        assert_eq!(le::u64_at(&page, offset::ACPI_RSDP_ADDR), Some(0));
        image[0x206..0x208].copy_from_slice(&0x020Eu16.to_le_bytes());
        let page = page_for(&image, &config(None));
        assert_eq!(le::u64_at(&page, offset::ACPI_RSDP_ADDR), Some(0xE_0000));
    }

    #[test]
    fn errors() {
        let h = SetupHeader::parse(REAL_HEADER).unwrap();
        let mut page = [0xEEu8; ZERO_PAGE_SIZE];

        let mut cfg = config(None);
        cfg.cmdline_len = 2048;
        let err = write_zero_page(&mut page, &h, &cfg).unwrap_err();
        assert_eq!(
            err,
            BootParamsError::CmdlineTooLong {
                len: 2048,
                max: 2047
            }
        );
        assert_eq!(
            err.to_string(),
            "kernel command line too long: 2048 bytes, the kernel takes at most 2047"
        );
        // Nothing was written.
        assert!(page.iter().all(|&b| b == 0xEE));

        let many: Vec<E820Entry> = (0..129)
            .map(|i| E820Entry::new(Range::new(i << 20, (i + 1) << 20), E820Type::Ram))
            .collect();
        let mut cfg = config(None);
        cfg.e820 = &many;
        let err = write_zero_page(&mut page, &h, &cfg).unwrap_err();
        assert_eq!(err, BootParamsError::TooManyE820 { count: 129 });
        assert!(err.to_string().contains("at most 128"));
        cfg.e820 = &many[..128];
        write_zero_page(&mut page, &h, &cfg).unwrap();
        assert_eq!(page[offset::E820_ENTRIES], 128);
        let last = offset::E820_TABLE + 127 * 20;
        assert_eq!(le::u64_at(&page, last), Some(127 << 20));
        assert_eq!(last + 20, 0xCD0);

        // The real kernel is not XLF_CAN_BE_LOADED_ABOVE_4G.
        let mut cfg = config(None);
        cfg.cmdline_gpa = 1 << 32;
        let err = write_zero_page(&mut page, &h, &cfg).unwrap_err();
        assert!(matches!(err, BootParamsError::Above4G { .. }), "{err}");
        assert!(err.to_string().contains("XLF_CAN_BE_LOADED_ABOVE_4G"));

        // initrd_addr_max is 0x7FFFFFFF: the last initrd byte may be there.
        let cfg = config(Some(Range::new(0x7FFF_F000, 0x8000_0000)));
        write_zero_page(&mut page, &h, &cfg).unwrap();
        let cfg = config(Some(Range::new(0x7FFF_F000, 0x8000_0001)));
        let err = write_zero_page(&mut page, &h, &cfg).unwrap_err();
        assert_eq!(
            err,
            BootParamsError::InitrdAboveMax {
                end: 0x8000_0001,
                max: 0x7FFF_FFFF
            }
        );
    }

    #[test]
    fn cmdline_checks() {
        let h = SetupHeader::parse(REAL_HEADER).unwrap();
        let long = "x".repeat(2048);
        assert_eq!(check_cmdline(&h, &long[..2047], 0x1_0000), Ok(()));
        assert_eq!(
            check_cmdline(&h, &long, 0x1_0000),
            Err(BootParamsError::CmdlineTooLong {
                len: 2048,
                max: 2047
            })
        );
        // A loader buffer smaller than cmdline_size caps it.
        assert_eq!(
            check_cmdline(&h, &long[..100], 100),
            Err(BootParamsError::CmdlineTooLong { len: 100, max: 99 })
        );
        let err = check_cmdline(&h, "console=ttyS0\0x", 0x1_0000).unwrap_err();
        assert_eq!(err, BootParamsError::CmdlineNul { at: 13 });
        assert!(err.to_string().contains("NUL byte at offset 13"));
    }
}
