//! Preparing guest memory for an unmodified Linux x86-64 bzImage.
//!
//! Everything here is plain Rust over a byte slice: guest RAM is one
//! contiguous block at guest-physical address 0, handed in as `&mut [u8]`
//! whose index is the GPA. The hypervisor passes the block it maps with EPT;
//! the host tests pass a `Vec`.
//!
//! - [`bzimage`] parses and validates the kernel's setup header
//!   (Documentation/x86/boot.rst, "THE LINUX/x86 BOOT PROTOCOL").
//! - [`boot_params`] builds the zero page (`struct boot_params`) with the
//!   command line, initrd and e820 map.
//! - [`acpi_tables`] builds RSDP, XSDT, FADT (hardware-reduced), MADT and
//!   DSDT for a one-CPU guest.
//! - [`layout`] fixes where each structure lives and builds the GDT, the
//!   identity-mapping page tables and the e820 map.
//! - [`loader`] ties them together: [`load_linux`] writes all of it into
//!   guest RAM and returns the [`LinuxBoot`] register state for the 64-bit
//!   entry point.

pub mod acpi_tables;
pub mod aml;
pub mod boot_params;
pub mod bzimage;
pub mod layout;
pub mod loader;

pub use acpi_tables::{AcpiConfig, AcpiError, AcpiLayout};
pub use boot_params::{BootParamsError, E820Entry, E820Type};
pub use bzimage::{BzImage, BzImageError, SetupHeader};
pub use loader::{load_linux, LinuxBoot, LoadError};

use core::fmt;

/// Bytes shown in MiB for error messages: "24 MiB", or "17.50 MiB" when
/// the size is not a whole number of MiB (two decimals, rounded down);
/// sizes under 1 MiB that are not zero show in KiB, rounded up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mib(pub u64);

impl fmt::Display for Mib {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MIB: u64 = 1 << 20;
        let whole = self.0 / MIB;
        let rest = self.0 % MIB;
        if rest == 0 {
            write!(f, "{whole} MiB")
        } else if whole == 0 {
            write!(f, "{} KiB", self.0.div_ceil(1024))
        } else {
            write!(f, "{whole}.{:02} MiB", rest * 100 / MIB)
        }
    }
}

/// Little-endian reads that return `None` instead of going out of bounds.
pub(crate) mod le {
    fn array<const N: usize>(b: &[u8], off: usize) -> Option<[u8; N]> {
        b.get(off..off.checked_add(N)?)?.try_into().ok()
    }

    pub fn u8_at(b: &[u8], off: usize) -> Option<u8> {
        b.get(off).copied()
    }

    pub fn u16_at(b: &[u8], off: usize) -> Option<u16> {
        array(b, off).map(u16::from_le_bytes)
    }

    pub fn u32_at(b: &[u8], off: usize) -> Option<u32> {
        array(b, off).map(u32::from_le_bytes)
    }

    pub fn u64_at(b: &[u8], off: usize) -> Option<u64> {
        array(b, off).map(u64::from_le_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;

    #[test]
    fn mib_formats_whole_and_fractional_sizes() {
        assert_eq!(format!("{}", Mib(24 << 20)), "24 MiB");
        assert_eq!(format!("{}", Mib(0)), "0 MiB");
        assert_eq!(format!("{}", Mib((17 << 20) + (1 << 19))), "17.50 MiB");
        assert_eq!(format!("{}", Mib(4096)), "4 KiB");
        assert_eq!(format!("{}", Mib(1)), "1 KiB");
    }

    #[test]
    fn le_reads_stop_at_the_end() {
        let b = [1u8, 2, 3, 4, 5, 6, 7, 8];
        assert_eq!(le::u8_at(&b, 7), Some(8));
        assert_eq!(le::u8_at(&b, 8), None);
        assert_eq!(le::u16_at(&b, 6), Some(0x0807));
        assert_eq!(le::u16_at(&b, 7), None);
        assert_eq!(le::u32_at(&b, 4), Some(0x0807_0605));
        assert_eq!(le::u32_at(&b, 5), None);
        assert_eq!(le::u64_at(&b, 0), Some(0x0807_0605_0403_0201));
        assert_eq!(le::u64_at(&b, 1), None);
        assert_eq!(le::u64_at(&b, usize::MAX), None);
    }
}
