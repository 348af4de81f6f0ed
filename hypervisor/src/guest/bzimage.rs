//! The bzImage format: the real-mode setup header and the protected-mode
//! kernel behind it (Documentation/x86/boot.rst, "THE LINUX/x86 BOOT
//! PROTOCOL").
//!
//! A bzImage is `(setup_sects + 1) * 512` bytes of real-mode code (boot
//! sector plus setup), whose first sector holds the setup header at 0x1F1,
//! followed by the protected-mode kernel (`syssize * 16` bytes). We only
//! use the 64-bit entry point, which needs boot protocol 2.12 or later and
//! `XLF_KERNEL_64`; the real-mode code never runs.
//!
//! Parsing never panics and never reads out of bounds, whatever the input.

use super::le;
use core::fmt;

/// Offset of the setup header in the image and in `struct boot_params`.
pub const SETUP_HEADER_START: usize = 0x1F1;
/// `struct boot_params` keeps the setup header in 0x1F1..0x290 (the EDD
/// MBR signature buffer follows); a longer header is refused.
pub const SETUP_HEADER_MAX_END: usize = 0x290;
/// Where the header length byte sits: the header ends at 0x202 + its value.
const HEADER_LEN_BYTE: usize = 0x201;
/// Bytes needed to see the "HdrS" magic (0x202..0x206).
const MIN_IMAGE_LEN: usize = 0x206;
/// The last field this parser reads is `init_size` (0x260, 4 bytes).
const NEEDED_HEADER_END: usize = 0x264;

/// Boot protocol 2.12: `xloadflags` and the 64-bit entry at load + 0x200.
pub const MIN_PROTOCOL: u16 = 0x020C;
/// Boot protocol 2.14: `acpi_rsdp_addr` in the zero page.
pub const PROTOCOL_ACPI_RSDP: u16 = 0x020E;

/// Header offsets (in the image and in the zero page alike).
pub mod offset {
    pub const SETUP_SECTS: usize = 0x1F1;
    pub const SYSSIZE: usize = 0x1F4;
    pub const BOOT_FLAG: usize = 0x1FE;
    pub const HEADER: usize = 0x202;
    pub const VERSION: usize = 0x206;
    pub const KERNEL_VERSION: usize = 0x20E;
    pub const TYPE_OF_LOADER: usize = 0x210;
    pub const LOADFLAGS: usize = 0x211;
    pub const RAMDISK_IMAGE: usize = 0x218;
    pub const RAMDISK_SIZE: usize = 0x21C;
    pub const HEAP_END_PTR: usize = 0x224;
    pub const CMD_LINE_PTR: usize = 0x228;
    pub const INITRD_ADDR_MAX: usize = 0x22C;
    pub const KERNEL_ALIGNMENT: usize = 0x230;
    pub const RELOCATABLE_KERNEL: usize = 0x234;
    pub const XLOADFLAGS: usize = 0x236;
    pub const CMDLINE_SIZE: usize = 0x238;
    pub const HARDWARE_SUBARCH: usize = 0x23C;
    pub const HARDWARE_SUBARCH_DATA: usize = 0x240;
    pub const SETUP_DATA: usize = 0x250;
    pub const PREF_ADDRESS: usize = 0x258;
    pub const INIT_SIZE: usize = 0x260;
}

/// `loadflags` bits.
pub const LOADED_HIGH: u8 = 1 << 0;
pub const KASLR_FLAG: u8 = 1 << 1;
pub const QUIET_FLAG: u8 = 1 << 5;
pub const KEEP_SEGMENTS: u8 = 1 << 6;
pub const CAN_USE_HEAP: u8 = 1 << 7;

/// `xloadflags` bits.
pub const XLF_KERNEL_64: u16 = 1 << 0;
pub const XLF_CAN_BE_LOADED_ABOVE_4G: u16 = 1 << 1;

const HDRS_MAGIC: [u8; 4] = *b"HdrS";
const BOOT_FLAG_MAGIC: u16 = 0xAA55;
/// `initrd_addr_max` that boot.rst prescribes when the field is zero.
const DEFAULT_INITRD_ADDR_MAX: u32 = 0x37FF_FFFF;
const SECTOR: usize = 512;

/// Why an image is not a bootable 64-bit bzImage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BzImageError {
    /// Too short to hold the "HdrS" magic.
    TooShort {
        len: usize,
    },
    NoMagic,
    BadBootFlag {
        found: u16,
    },
    ProtocolTooOld {
        version: u16,
    },
    /// The header length byte at 0x201 ends the header before `init_size`.
    HeaderTooShort {
        end: usize,
    },
    /// The header length byte at 0x201 ends the header past what
    /// `struct boot_params` has room for.
    HeaderTooLong {
        end: usize,
    },
    HeaderTruncated {
        end: usize,
        len: usize,
    },
    /// A zImage (`LOADED_HIGH` clear) wants to be loaded at 0x10000.
    NotLoadedHigh,
    Not64Bit,
    BadKernelAlignment {
        alignment: u32,
    },
    SetupTruncated {
        setup_len: usize,
        len: usize,
    },
    EmptyKernel,
    KernelTruncated {
        kernel_len: usize,
        setup_len: usize,
        available: usize,
    },
}

impl fmt::Display for BzImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::TooShort { len } => write!(
                f,
                "not a bzImage: only {len} bytes, a setup header needs at least {MIN_IMAGE_LEN}"
            ),
            Self::NoMagic => write!(f, "not a bzImage: no HdrS magic at offset 0x202"),
            Self::BadBootFlag { found } => write!(
                f,
                "not a bzImage: boot_flag at 0x1FE is {found:#06x}, expected 0xaa55"
            ),
            Self::ProtocolTooOld { version } => write!(
                f,
                "boot protocol {}.{:02} too old: the 64-bit entry point needs 2.12 or later",
                version >> 8,
                version & 0xFF
            ),
            Self::HeaderTooShort { end } => write!(
                f,
                "setup header ends at {end:#x} (length byte at 0x201), \
                 before init_size at 0x260 that protocol 2.12 has"
            ),
            Self::HeaderTooLong { end } => write!(
                f,
                "setup header ends at {end:#x} (length byte at 0x201), \
                 past the {SETUP_HEADER_MAX_END:#x} that boot_params has room for"
            ),
            Self::HeaderTruncated { end, len } => write!(
                f,
                "truncated: setup header ends at {end:#x}, file has {len} bytes"
            ),
            Self::NotLoadedHigh => write!(
                f,
                "not a bzImage: loadflags LOADED_HIGH is clear (a zImage, which is not supported)"
            ),
            Self::Not64Bit => write!(
                f,
                "kernel is not 64-bit capable: xloadflags XLF_KERNEL_64 is clear"
            ),
            Self::BadKernelAlignment { alignment } => write!(
                f,
                "relocatable kernel has kernel_alignment {alignment:#x}, not a power of two"
            ),
            Self::SetupTruncated { setup_len, len } => {
                write!(f, "truncated: setup says {setup_len} bytes, file has {len}")
            }
            Self::EmptyKernel => write!(
                f,
                "not a bzImage: syssize is 0, there is no protected-mode kernel"
            ),
            Self::KernelTruncated {
                kernel_len,
                setup_len,
                available,
            } => write!(
                f,
                "truncated: syssize says the kernel is {kernel_len} bytes, \
                 file has {available} after the {setup_len}-byte setup"
            ),
        }
    }
}

/// The setup header fields the loader uses, validated, plus a copy of the
/// raw header bytes for the zero page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetupHeader {
    /// Number of 512-byte setup sectors after the boot sector (a 0 in the
    /// image means 4).
    pub setup_sects: u8,
    /// Size of the protected-mode kernel in 16-byte paragraphs.
    pub syssize: u32,
    /// Boot protocol version, major in the high byte (0x020F = 2.15).
    pub version: u16,
    /// Offset of the version string, minus 0x200 (0 = none).
    pub kernel_version: u16,
    pub loadflags: u8,
    /// Highest address the initrd may occupy (inclusive); 0x37FFFFFF when
    /// the image says 0.
    pub initrd_addr_max: u32,
    pub kernel_alignment: u32,
    pub relocatable_kernel: bool,
    pub xloadflags: u16,
    /// Longest command line the kernel takes, without the terminating NUL.
    pub cmdline_size: u32,
    /// Where the kernel prefers to be loaded; a non-relocatable kernel runs
    /// there whatever its load address.
    pub pref_address: u64,
    /// Contiguous memory the kernel needs from its runtime start address
    /// before it reads the memory map.
    pub init_size: u32,
    raw: [u8; SETUP_HEADER_MAX_END - SETUP_HEADER_START],
    raw_len: usize,
}

impl SetupHeader {
    /// Reads and checks the setup header. Needs only the first
    /// `0x202 + image[0x201]` bytes of the image, so the first sectors of a
    /// file are enough.
    pub fn parse(image: &[u8]) -> Result<Self, BzImageError> {
        use offset::*;
        if image.len() < MIN_IMAGE_LEN {
            return Err(BzImageError::TooShort { len: image.len() });
        }
        if image.get(HEADER..HEADER + 4) != Some(&HDRS_MAGIC[..]) {
            return Err(BzImageError::NoMagic);
        }
        let boot_flag = le::u16_at(image, BOOT_FLAG).unwrap_or(0);
        if boot_flag != BOOT_FLAG_MAGIC {
            return Err(BzImageError::BadBootFlag { found: boot_flag });
        }
        let version = le::u16_at(image, VERSION).unwrap_or(0);
        if version < MIN_PROTOCOL {
            return Err(BzImageError::ProtocolTooOld { version });
        }
        let end = 0x202 + usize::from(le::u8_at(image, HEADER_LEN_BYTE).unwrap_or(0));
        if end < NEEDED_HEADER_END {
            return Err(BzImageError::HeaderTooShort { end });
        }
        if end > SETUP_HEADER_MAX_END {
            return Err(BzImageError::HeaderTooLong { end });
        }
        let Some(raw_bytes) = image.get(SETUP_HEADER_START..end) else {
            return Err(BzImageError::HeaderTruncated {
                end,
                len: image.len(),
            });
        };
        // Every field below lies before `end`, which is in bounds.
        let b = |off| le::u8_at(image, off).unwrap_or(0);
        let w = |off| le::u16_at(image, off).unwrap_or(0);
        let d = |off| le::u32_at(image, off).unwrap_or(0);

        let loadflags = b(LOADFLAGS);
        if loadflags & LOADED_HIGH == 0 {
            return Err(BzImageError::NotLoadedHigh);
        }
        let xloadflags = w(XLOADFLAGS);
        if xloadflags & XLF_KERNEL_64 == 0 {
            return Err(BzImageError::Not64Bit);
        }
        let relocatable_kernel = b(RELOCATABLE_KERNEL) != 0;
        let kernel_alignment = d(KERNEL_ALIGNMENT);
        if relocatable_kernel && !kernel_alignment.is_power_of_two() {
            return Err(BzImageError::BadKernelAlignment {
                alignment: kernel_alignment,
            });
        }
        let setup_sects = match b(SETUP_SECTS) {
            0 => 4,
            n => n,
        };
        let initrd_addr_max = match d(INITRD_ADDR_MAX) {
            0 => DEFAULT_INITRD_ADDR_MAX,
            n => n,
        };
        let mut raw = [0u8; SETUP_HEADER_MAX_END - SETUP_HEADER_START];
        raw[..raw_bytes.len()].copy_from_slice(raw_bytes);
        Ok(SetupHeader {
            setup_sects,
            syssize: d(SYSSIZE),
            version,
            kernel_version: w(KERNEL_VERSION),
            loadflags,
            initrd_addr_max,
            kernel_alignment,
            relocatable_kernel,
            xloadflags,
            cmdline_size: d(CMDLINE_SIZE),
            pref_address: le::u64_at(image, PREF_ADDRESS).unwrap_or(0),
            init_size: d(INIT_SIZE),
            raw,
            raw_len: raw_bytes.len(),
        })
    }

    /// The header bytes as in the image, from 0x1F1 to its end.
    pub fn raw(&self) -> &[u8] {
        &self.raw[..self.raw_len]
    }

    /// Bytes of real-mode code (boot sector and setup) before the kernel.
    pub fn setup_len(&self) -> usize {
        (usize::from(self.setup_sects) + 1) * SECTOR
    }

    /// Bytes of protected-mode kernel, from `syssize`.
    pub fn kernel_len(&self) -> u64 {
        u64::from(self.syssize) * 16
    }

    pub fn can_load_above_4g(&self) -> bool {
        self.xloadflags & XLF_CAN_BE_LOADED_ABOVE_4G != 0
    }
}

/// A validated bzImage: its header and the protected-mode kernel.
#[derive(Clone, Debug)]
pub struct BzImage<'a> {
    header: SetupHeader,
    kernel: &'a [u8],
    version: Option<&'a str>,
}

impl<'a> BzImage<'a> {
    /// Checks the header and that the file holds the setup and the whole
    /// `syssize * 16`-byte kernel. Bytes after the kernel (a signature, for
    /// instance) are ignored.
    pub fn parse(image: &'a [u8]) -> Result<Self, BzImageError> {
        let header = SetupHeader::parse(image)?;
        let setup_len = header.setup_len();
        let Some(rest) = image.get(setup_len..) else {
            return Err(BzImageError::SetupTruncated {
                setup_len,
                len: image.len(),
            });
        };
        if header.syssize == 0 {
            return Err(BzImageError::EmptyKernel);
        }
        let kernel_len = usize::try_from(header.kernel_len()).unwrap_or(usize::MAX);
        let Some(kernel) = rest.get(..kernel_len) else {
            return Err(BzImageError::KernelTruncated {
                kernel_len,
                setup_len,
                available: rest.len(),
            });
        };
        let version = version_string(&image[..setup_len], header.kernel_version);
        Ok(BzImage {
            header,
            kernel,
            version,
        })
    }

    pub fn header(&self) -> &SetupHeader {
        &self.header
    }

    /// The protected-mode kernel: what gets loaded at the load address.
    pub fn kernel(&self) -> &'a [u8] {
        self.kernel
    }

    /// The kernel's version string ("6.1.x (user@host) #1 ..."), when the
    /// header points at a non-empty NUL-terminated UTF-8 string inside the
    /// setup.
    pub fn version(&self) -> Option<&'a str> {
        self.version
    }
}

fn version_string(setup: &[u8], kernel_version: u16) -> Option<&str> {
    if kernel_version == 0 {
        return None;
    }
    let start = usize::from(kernel_version) + 0x200;
    let tail = setup.get(start..)?;
    let tail = &tail[..tail.len().min(256)];
    let len = tail.iter().position(|&c| c == 0)?;
    core::str::from_utf8(&tail[..len])
        .ok()
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;
    use alloc::vec::Vec;

    /// The first 1024 bytes of a Linux 6.1.192 x86-64 bzImage built for
    /// vmlink (tinyconfig plus the project's fragment; not relocatable,
    /// 5-level paging capable): boot sector and setup header, no kernel code.
    pub const REAL_HEADER: &[u8] = include_bytes!("testdata/bzimage-6.1-header.bin");
    /// Size of the whole file the header was cut from.
    pub const REAL_FILE_SIZE: usize = 2_757_632;

    /// The real header padded with zeros to the size it claims.
    pub fn real_image() -> Vec<u8> {
        let mut v = REAL_HEADER.to_vec();
        v.resize(REAL_FILE_SIZE, 0);
        v
    }

    /// A small synthetic image: protocol 2.15, relocatable, 64-bit, with a
    /// version string, `setup_sects` 1 and a 4 KiB kernel.
    pub fn synthetic_image() -> Vec<u8> {
        let mut v = vec![0u8; 1024 + 4096];
        let put = |v: &mut Vec<u8>, off: usize, bytes: &[u8]| {
            v[off..off + bytes.len()].copy_from_slice(bytes)
        };
        put(&mut v, offset::SETUP_SECTS, &[1]);
        put(&mut v, offset::SYSSIZE, &(4096u32 / 16).to_le_bytes());
        put(&mut v, offset::BOOT_FLAG, &0xAA55u16.to_le_bytes());
        put(&mut v, HEADER_LEN_BYTE, &[0x6A]);
        put(&mut v, offset::HEADER, b"HdrS");
        put(&mut v, offset::VERSION, &0x020Fu16.to_le_bytes());
        put(&mut v, offset::KERNEL_VERSION, &0x100u16.to_le_bytes());
        put(&mut v, 0x300, b"6.1.0-test (vmlink) #1\0");
        put(&mut v, offset::LOADFLAGS, &[LOADED_HIGH]);
        put(
            &mut v,
            offset::INITRD_ADDR_MAX,
            &0x7FFF_FFFFu32.to_le_bytes(),
        );
        put(
            &mut v,
            offset::KERNEL_ALIGNMENT,
            &0x20_0000u32.to_le_bytes(),
        );
        put(&mut v, offset::RELOCATABLE_KERNEL, &[1]);
        put(&mut v, offset::XLOADFLAGS, &0x3u16.to_le_bytes());
        put(&mut v, offset::CMDLINE_SIZE, &2047u32.to_le_bytes());
        put(&mut v, offset::PREF_ADDRESS, &0x100_0000u64.to_le_bytes());
        put(&mut v, offset::INIT_SIZE, &0x80_0000u32.to_le_bytes());
        v[1024..].fill(0xCC);
        v
    }

    #[test]
    fn real_header_fields() {
        let h = SetupHeader::parse(REAL_HEADER).unwrap();
        assert_eq!(h.version, 0x020F);
        assert_eq!(h.setup_sects, 31);
        assert_eq!(h.setup_len(), 32 * 512);
        assert_eq!(h.syssize, 0x29D40);
        assert_eq!(h.setup_len() as u64 + h.kernel_len(), REAL_FILE_SIZE as u64);
        assert_eq!(h.loadflags & LOADED_HIGH, LOADED_HIGH);
        assert_eq!(h.kernel_alignment, 0x20_0000);
        assert!(!h.relocatable_kernel);
        assert_eq!(h.xloadflags & XLF_KERNEL_64, XLF_KERNEL_64);
        assert!(!h.can_load_above_4g());
        assert_eq!(h.cmdline_size, 2047);
        assert_eq!(h.initrd_addr_max, 0x7FFF_FFFF);
        assert_eq!(h.pref_address, 0x100_0000);
        assert_eq!(h.init_size, 0x100_B000);
        assert_eq!(h.raw().len(), 0x26C - 0x1F1);
        assert_eq!(h.raw(), &REAL_HEADER[0x1F1..0x26C]);
    }

    #[test]
    fn real_header_alone_is_truncated_and_padded_parses() {
        assert_eq!(
            BzImage::parse(REAL_HEADER).unwrap_err(),
            BzImageError::SetupTruncated {
                setup_len: 16384,
                len: 1024
            }
        );
        let image = real_image();
        let bz = BzImage::parse(&image).unwrap();
        assert_eq!(bz.kernel().len(), REAL_FILE_SIZE - 16384);
        assert_eq!(bz.header().version, 0x020F);
        // The version string lies in the setup code that the fixture lacks
        // (zeros here).
        assert_eq!(bz.header().kernel_version, 0x3720);
        assert_eq!(bz.version(), None);

        let mut short = real_image();
        short.truncate(REAL_FILE_SIZE - 1);
        let err = BzImage::parse(&short).unwrap_err();
        assert_eq!(
            err,
            BzImageError::KernelTruncated {
                kernel_len: REAL_FILE_SIZE - 16384,
                setup_len: 16384,
                available: REAL_FILE_SIZE - 16384 - 1
            }
        );
        assert_eq!(
            err.to_string(),
            "truncated: syssize says the kernel is 2741248 bytes, \
             file has 2741247 after the 16384-byte setup"
        );
    }

    #[test]
    fn synthetic_image_parses_with_version_and_trailing_bytes() {
        let mut image = synthetic_image();
        image.extend_from_slice(b"signature");
        let bz = BzImage::parse(&image).unwrap();
        assert_eq!(bz.version(), Some("6.1.0-test (vmlink) #1"));
        assert_eq!(bz.kernel().len(), 4096);
        assert!(bz.kernel().iter().all(|&b| b == 0xCC));
        assert!(bz.header().relocatable_kernel);
        assert!(bz.header().can_load_above_4g());
    }

    #[test]
    fn setup_sects_zero_means_four() {
        let mut image = synthetic_image();
        image[offset::SETUP_SECTS] = 0;
        let h = SetupHeader::parse(&image).unwrap();
        assert_eq!(h.setup_sects, 4);
        assert_eq!(h.setup_len(), 5 * 512);
    }

    #[test]
    fn initrd_addr_max_zero_means_default() {
        let mut image = synthetic_image();
        image[offset::INITRD_ADDR_MAX..offset::INITRD_ADDR_MAX + 4].fill(0);
        assert_eq!(
            SetupHeader::parse(&image).unwrap().initrd_addr_max,
            0x37FF_FFFF
        );
    }

    fn err_of(image: &[u8]) -> (BzImageError, alloc::string::String) {
        let e = BzImage::parse(image).unwrap_err();
        (e, e.to_string())
    }

    #[test]
    fn rejections_name_the_problem() {
        let (e, s) = err_of(&[0u8; 100]);
        assert_eq!(e, BzImageError::TooShort { len: 100 });
        assert_eq!(
            s,
            "not a bzImage: only 100 bytes, a setup header needs at least 518"
        );

        let (e, s) = err_of(&[0x7Fu8; 4096]);
        assert_eq!(e, BzImageError::NoMagic);
        assert_eq!(s, "not a bzImage: no HdrS magic at offset 0x202");

        let mut image = synthetic_image();
        image[offset::BOOT_FLAG] = 0;
        let (e, s) = err_of(&image);
        assert_eq!(e, BzImageError::BadBootFlag { found: 0xAA00 });
        assert_eq!(
            s,
            "not a bzImage: boot_flag at 0x1FE is 0xaa00, expected 0xaa55"
        );

        let mut image = synthetic_image();
        image[offset::VERSION] = 0x0B;
        let (e, s) = err_of(&image);
        assert_eq!(e, BzImageError::ProtocolTooOld { version: 0x020B });
        assert_eq!(
            s,
            "boot protocol 2.11 too old: the 64-bit entry point needs 2.12 or later"
        );

        let mut image = synthetic_image();
        image[HEADER_LEN_BYTE] = 0x40;
        let (e, s) = err_of(&image);
        assert_eq!(e, BzImageError::HeaderTooShort { end: 0x242 });
        assert!(s.contains("before init_size"), "{s}");

        let mut image = synthetic_image();
        image[HEADER_LEN_BYTE] = 0xFF;
        let (e, s) = err_of(&image);
        assert_eq!(e, BzImageError::HeaderTooLong { end: 0x301 });
        assert!(s.contains("past the 0x290"), "{s}");

        let image = synthetic_image();
        let (e, s) = err_of(&image[..0x250]);
        assert_eq!(
            e,
            BzImageError::HeaderTruncated {
                end: 0x26C,
                len: 0x250
            }
        );
        assert_eq!(
            s,
            "truncated: setup header ends at 0x26c, file has 592 bytes"
        );

        let mut image = synthetic_image();
        image[offset::LOADFLAGS] = 0;
        assert_eq!(err_of(&image).0, BzImageError::NotLoadedHigh);

        let mut image = synthetic_image();
        image[offset::XLOADFLAGS] = 0x2;
        let (e, s) = err_of(&image);
        assert_eq!(e, BzImageError::Not64Bit);
        assert_eq!(
            s,
            "kernel is not 64-bit capable: xloadflags XLF_KERNEL_64 is clear"
        );

        let mut image = synthetic_image();
        image[offset::KERNEL_ALIGNMENT..offset::KERNEL_ALIGNMENT + 4]
            .copy_from_slice(&0x30_0000u32.to_le_bytes());
        let (e, s) = err_of(&image);
        assert_eq!(
            e,
            BzImageError::BadKernelAlignment {
                alignment: 0x30_0000
            }
        );
        assert!(s.contains("0x300000"), "{s}");

        let image = synthetic_image();
        let (e, s) = err_of(&image[..1000]);
        assert_eq!(
            e,
            BzImageError::SetupTruncated {
                setup_len: 1024,
                len: 1000
            }
        );
        assert_eq!(s, "truncated: setup says 1024 bytes, file has 1000");

        let mut image = synthetic_image();
        image[offset::SYSSIZE..offset::SYSSIZE + 4].fill(0);
        let (e, s) = err_of(&image);
        assert_eq!(e, BzImageError::EmptyKernel);
        assert!(s.contains("syssize is 0"), "{s}");
    }

    /// xorshift64*: a deterministic generator for the fuzz tests.
    pub struct Rng(pub u64);

    impl Rng {
        pub fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        pub fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn hostile_input_never_panics() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        // Pure noise of every small length, and longer noise.
        for len in 0..2048 {
            let v: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            let _ = BzImage::parse(&v);
        }
        // Noise that passes the magic checks, so the later checks run.
        for _ in 0..4000 {
            let len = rng.below(0x1400);
            let mut v: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            if v.len() >= 0x208 {
                v[0x1FE..0x200].copy_from_slice(&0xAA55u16.to_le_bytes());
                v[0x202..0x206].copy_from_slice(b"HdrS");
                v[0x206..0x208].copy_from_slice(&0x020Fu16.to_le_bytes());
            }
            if let Ok(bz) = BzImage::parse(&v) {
                assert!(bz.kernel().len() as u64 == bz.header().kernel_len());
                let _ = bz.version();
            }
        }
        // Every prefix of the real header and of the synthetic image.
        for len in 0..=REAL_HEADER.len() {
            let _ = BzImage::parse(&REAL_HEADER[..len]);
            let _ = SetupHeader::parse(&REAL_HEADER[..len]);
        }
        let synthetic = synthetic_image();
        for len in 0..=synthetic.len() {
            let r = BzImage::parse(&synthetic[..len]);
            assert_eq!(r.is_ok(), len == synthetic.len(), "prefix {len}");
        }
        // The synthetic image with random bytes of its header replaced.
        for _ in 0..4000 {
            let mut v = synthetic.clone();
            for _ in 0..1 + rng.below(6) {
                let at = 0x1F0 + rng.below(0x80);
                v[at] = rng.next() as u8;
            }
            if let Ok(bz) = BzImage::parse(&v) {
                let _ = bz.version();
            }
        }
    }
}
