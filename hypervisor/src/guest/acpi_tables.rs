//! Minimal ACPI tables for a one-CPU guest: RSDP, XSDT, FADT, MADT, DSDT.
//!
//! The platform is "hardware-reduced" (FADT flag HW_REDUCED_ACPI): no PM1
//! event/control blocks, no PM timer, no SMI command port, no SCI, no FACS.
//! Linux 6.1 reads that flag while it parses the FADT and then:
//! - skips every fixed-hardware register check in the FADT and never
//!   installs a FACS (drivers/acpi/acpica/tbfadt.c);
//! - installs no SCI handler and sets up no SCI interrupt override
//!   (arch/x86/kernel/acpi/boot.c);
//! - finds no PM timer because X_PM_TMR_BLK is not in system I/O space;
//! - uses no legacy PIC and no PIT/HPET timer init (`acpi_reduced_hw_init`:
//!   `legacy_pic = &null_legacy_pic`), so it runs on the local APIC timer
//!   and the I/O APIC; with no legacy PIC, ISA IRQs 0-15 get no identity
//!   GSI mapping of their own, so devices such as COM1 need their interrupt
//!   described in the DSDT (`_CRS`) to get one;
//! - creates no fixed power/sleep button devices.
//!
//! IAPC_BOOT_ARCH says: no legacy devices, no 8042, no VGA, no CMOS RTC
//! (so Linux registers no RTC platform device and probes no VGA); MSI is
//! allowed.
//!
//! The DSDT body is AML supplied by the caller (empty for now; later the
//! PCI root bridge), so the DSDT grows without touching the other tables.

use super::Mib;
use crate::range::Range;
use alloc::vec::Vec;
use core::fmt;

/// Where the RSDP goes: 16-byte aligned inside 0xE0000..0x100000, where
/// an OS that finds no RSDP address in its boot parameters scans for it.
pub const RSDP_GPA: u64 = 0xE_0000;
pub const LOCAL_APIC_GPA: u32 = 0xFEE0_0000;
pub const IO_APIC_GPA: u32 = 0xFEC0_0000;

pub const OEM_ID: [u8; 6] = *b"VMLINK";
pub const OEM_TABLE_ID: [u8; 8] = *b"VMLINK  ";
const OEM_REVISION: u32 = 1;
const CREATOR_ID: [u8; 4] = *b"VMLK";
const CREATOR_REVISION: u32 = 1;

pub const HEADER_LEN: usize = 36;
pub const RSDP_LEN: usize = 36;
/// ACPI 6.x FADT (through the Hypervisor Vendor Identity field).
pub const FADT_LEN: usize = 276;
const FADT_REVISION: u8 = 6;
const FADT_MINOR_REVISION: u8 = 5;
const MADT_REVISION: u8 = 5;
/// Revision 2+ makes AML integers 64 bits wide.
const DSDT_REVISION: u8 = 2;
const XSDT_REVISION: u8 = 1;
const TABLE_ALIGN: usize = 16;

/// FADT field offsets (from the start of the table).
pub mod fadt {
    pub const DSDT: usize = 40;
    pub const SCI_INT: usize = 46;
    pub const SMI_CMD: usize = 48;
    pub const PM1A_EVT_BLK: usize = 56;
    pub const PM1A_CNT_BLK: usize = 64;
    pub const PM_TMR_BLK: usize = 76;
    pub const IAPC_BOOT_ARCH: usize = 109;
    pub const FLAGS: usize = 112;
    pub const MINOR_REVISION: usize = 131;
    pub const X_FIRMWARE_CTRL: usize = 132;
    pub const X_DSDT: usize = 140;
    pub const X_PM1A_EVT_BLK: usize = 148;
    pub const X_PM_TMR_BLK: usize = 208;
    pub const SLEEP_CONTROL_REG: usize = 244;
    pub const SLEEP_STATUS_REG: usize = 256;
    pub const HYPERVISOR_VENDOR_ID: usize = 268;

    /// IAPC_BOOT_ARCH bits.
    pub const LEGACY_DEVICES: u16 = 1 << 0;
    pub const I8042: u16 = 1 << 1;
    pub const VGA_NOT_PRESENT: u16 = 1 << 2;
    pub const MSI_NOT_SUPPORTED: u16 = 1 << 3;
    pub const CMOS_RTC_NOT_PRESENT: u16 = 1 << 5;

    /// Flags bits.
    pub const PWR_BUTTON: u32 = 1 << 4;
    pub const SLP_BUTTON: u32 = 1 << 5;
    pub const HW_REDUCED_ACPI: u32 = 1 << 20;
}

/// MADT interrupt controller structure types.
pub mod madt {
    pub const LOCAL_APIC: u8 = 0;
    pub const IO_APIC: u8 = 1;
    pub const INTERRUPT_SOURCE_OVERRIDE: u8 = 2;
    pub const LOCAL_X2APIC: u8 = 9;
    /// Local APIC flags: the processor is enabled.
    pub const ENABLED: u32 = 1;
    /// MADT flags: PC-AT dual 8259 present (we leave it clear).
    pub const PCAT_COMPAT: u32 = 1;
}

/// What the tables describe.
#[derive(Clone, Copy, Debug)]
pub struct AcpiConfig<'a> {
    /// The vCPU's (x2)APIC ID; IDs above 254 get a Local x2APIC entry.
    pub apic_id: u32,
    /// Describe an I/O APIC (ID 0, at [`IO_APIC_GPA`], GSI base 0).
    pub ioapic: bool,
    /// AML for the DSDT body, without the table header.
    pub dsdt_aml: &'a [u8],
}

impl AcpiConfig<'_> {
    /// One CPU with local APIC ID `apic_id`, an I/O APIC, an empty DSDT.
    pub const fn single_cpu(apic_id: u32) -> Self {
        AcpiConfig {
            apic_id,
            ioapic: true,
            dsdt_aml: &[],
        }
    }
}

impl Default for AcpiConfig<'_> {
    /// [`single_cpu`](Self::single_cpu) with APIC ID 0.
    fn default() -> Self {
        Self::single_cpu(0)
    }
}

/// Guest-physical addresses of the tables written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AcpiLayout {
    pub rsdp: u64,
    pub xsdt: u64,
    pub fadt: u64,
    pub madt: u64,
    pub dsdt: u64,
    /// Everything written: `rsdp..` the end of the DSDT.
    pub range: Range,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcpiError {
    /// The tables need `needed` bytes, the region has `room`.
    DoesNotFit { needed: u64, room: u64 },
    /// The region is not 16-byte aligned (the RSDP must be).
    Misaligned { at: u64 },
    /// The region lies (partly) outside guest RAM.
    OutsideRam { region: Range, ram: u64 },
}

impl fmt::Display for AcpiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::DoesNotFit { needed, room } => write!(
                f,
                "ACPI tables need {needed} bytes but their region holds {room} \
                 (is the DSDT's AML too big?)"
            ),
            Self::Misaligned { at } => {
                write!(
                    f,
                    "ACPI tables at {at:#x}: the RSDP must be 16-byte aligned"
                )
            }
            Self::OutsideRam { region, ram } => write!(
                f,
                "ACPI table region {:#x}..{:#x} lies outside guest RAM ({})",
                region.start,
                region.end,
                Mib(ram)
            ),
        }
    }
}

/// The byte sum that makes `bytes` plus the result add up to zero.
pub fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |a, &b| a.wrapping_add(b)))
}

/// Builds the tables as they must sit at `base` (16-byte aligned): the
/// returned bytes go to `base..base + len`.
pub fn build(base: u64, cfg: &AcpiConfig<'_>) -> Result<(AcpiLayout, Vec<u8>), AcpiError> {
    if !base.is_multiple_of(TABLE_ALIGN as u64) {
        return Err(AcpiError::Misaligned { at: base });
    }
    let madt = madt_table(cfg);
    let xsdt_len = HEADER_LEN + 2 * 8;
    let dsdt_len = HEADER_LEN + cfg.dsdt_aml.len();
    let xsdt_off = align(RSDP_LEN);
    let fadt_off = align(xsdt_off + xsdt_len);
    let madt_off = align(fadt_off + FADT_LEN);
    let dsdt_off = align(madt_off + madt.len());
    let total = dsdt_off + dsdt_len;
    let too_big = AcpiError::DoesNotFit {
        needed: total as u64,
        room: u64::from(u32::MAX),
    };
    if u32::try_from(dsdt_len).is_err() {
        return Err(too_big);
    }
    let end = base.checked_add(total as u64).ok_or(too_big)?;
    let at = |off: usize| base + off as u64;
    let layout = AcpiLayout {
        rsdp: base,
        xsdt: at(xsdt_off),
        fadt: at(fadt_off),
        madt: at(madt_off),
        dsdt: at(dsdt_off),
        range: Range::new(base, end),
    };

    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&rsdp(layout.xsdt));
    out.resize(xsdt_off, 0);
    let mut xsdt = Table::new(b"XSDT", XSDT_REVISION);
    xsdt.push(&layout.fadt.to_le_bytes());
    xsdt.push(&layout.madt.to_le_bytes());
    out.extend_from_slice(&xsdt.finish());
    out.resize(fadt_off, 0);
    out.extend_from_slice(&fadt_table(layout.dsdt));
    out.resize(madt_off, 0);
    out.extend_from_slice(&madt);
    out.resize(dsdt_off, 0);
    let mut dsdt = Table::new(b"DSDT", DSDT_REVISION);
    dsdt.push(cfg.dsdt_aml);
    out.extend_from_slice(&dsdt.finish());
    debug_assert_eq!(out.len(), total);
    Ok((layout, out))
}

/// Builds the tables and writes them into `ram` (index = GPA) at
/// `region.start`; they must fit in `region`.
pub fn write(ram: &mut [u8], region: Range, cfg: &AcpiConfig<'_>) -> Result<AcpiLayout, AcpiError> {
    let ram_len = ram.len() as u64;
    let dst = usize::try_from(region.start)
        .ok()
        .zip(usize::try_from(region.end).ok())
        .filter(|&(s, e)| s <= e)
        .and_then(|(s, e)| ram.get_mut(s..e))
        .ok_or(AcpiError::OutsideRam {
            region,
            ram: ram_len,
        })?;
    let (layout, bytes) = build(region.start, cfg)?;
    let Some(dst) = dst.get_mut(..bytes.len()) else {
        return Err(AcpiError::DoesNotFit {
            needed: bytes.len() as u64,
            room: region.len(),
        });
    };
    dst.copy_from_slice(&bytes);
    Ok(layout)
}

fn align(off: usize) -> usize {
    off.next_multiple_of(TABLE_ALIGN)
}

/// RSDP revision 2 (ACPI 2.0+): no RSDT, the XSDT only.
fn rsdp(xsdt: u64) -> [u8; RSDP_LEN] {
    let mut r = [0u8; RSDP_LEN];
    r[0..8].copy_from_slice(b"RSD PTR ");
    r[9..15].copy_from_slice(&OEM_ID);
    r[15] = 2;
    // RsdtAddress (16..20) stays 0.
    r[20..24].copy_from_slice(&(RSDP_LEN as u32).to_le_bytes());
    r[24..32].copy_from_slice(&xsdt.to_le_bytes());
    r[8] = checksum(&r[..20]);
    r[32] = checksum(&r);
    r
}

/// I/O ports of the hardware-reduced sleep control and status registers:
/// writing SLP_EN (bit 5) with the \_S5 sleep type to the control register
/// powers the guest off.
pub const SLEEP_CONTROL_PORT: u16 = 0x600;
pub const SLEEP_STATUS_PORT: u16 = 0x601;

/// A Generic Address Structure for one byte in system I/O space.
fn gas_io8(port: u16) -> [u8; 12] {
    let mut g = [0u8; 12];
    g[0] = 1; // system I/O
    g[1] = 8; // bit width
    g[3] = 1; // byte access
    g[4..12].copy_from_slice(&u64::from(port).to_le_bytes());
    g
}

fn fadt_table(dsdt: u64) -> Vec<u8> {
    let mut t = Table::new(b"FACP", FADT_REVISION);
    t.bytes.resize(FADT_LEN, 0);
    // FIRMWARE_CTRL/X_FIRMWARE_CTRL stay 0: no FACS on hardware-reduced
    // platforms. SCI_INT, SMI_CMD, the PM1/PM2/PM timer/GPE blocks and
    // their X_ forms stay 0 as well; the sleep registers are what a
    // hardware-reduced guest powers off through.
    t.put(fadt::SLEEP_CONTROL_REG, &gas_io8(SLEEP_CONTROL_PORT));
    t.put(fadt::SLEEP_STATUS_REG, &gas_io8(SLEEP_STATUS_PORT));
    t.put(fadt::DSDT, &u32::try_from(dsdt).unwrap_or(0).to_le_bytes());
    t.put(
        fadt::IAPC_BOOT_ARCH,
        &(fadt::VGA_NOT_PRESENT | fadt::CMOS_RTC_NOT_PRESENT).to_le_bytes(),
    );
    t.put(
        fadt::FLAGS,
        &(fadt::HW_REDUCED_ACPI | fadt::PWR_BUTTON | fadt::SLP_BUTTON).to_le_bytes(),
    );
    t.put(fadt::MINOR_REVISION, &[FADT_MINOR_REVISION]);
    t.put(fadt::X_DSDT, &dsdt.to_le_bytes());
    t.put(fadt::HYPERVISOR_VENDOR_ID, b"VMLINK\0\0");
    t.finish()
}

fn madt_table(cfg: &AcpiConfig<'_>) -> Vec<u8> {
    let mut t = Table::new(b"APIC", MADT_REVISION);
    t.push(&LOCAL_APIC_GPA.to_le_bytes());
    // Flags 0: no PC-AT dual 8259.
    t.push(&0u32.to_le_bytes());
    match u8::try_from(cfg.apic_id) {
        Ok(id) if id != 0xFF => {
            // Processor Local APIC: type, length, ACPI processor UID 0,
            // APIC ID, flags.
            t.push(&[madt::LOCAL_APIC, 8, 0, id]);
            t.push(&madt::ENABLED.to_le_bytes());
        }
        _ => {
            // Processor Local x2APIC: type, length, reserved, x2APIC ID,
            // flags, ACPI processor UID 0.
            t.push(&[madt::LOCAL_X2APIC, 16, 0, 0]);
            t.push(&cfg.apic_id.to_le_bytes());
            t.push(&madt::ENABLED.to_le_bytes());
            t.push(&0u32.to_le_bytes());
        }
    }
    if cfg.ioapic {
        // I/O APIC: type, length, I/O APIC ID 0, reserved, address, GSI
        // base 0. No interrupt source overrides: ISA IRQ n is GSI n with
        // the ISA defaults (edge, active high), so COM1's IRQ 4 is GSI 4
        // (in hardware-reduced mode Linux learns that from the DSDT; see
        // the module documentation).
        t.push(&[madt::IO_APIC, 12, 0, 0]);
        t.push(&IO_APIC_GPA.to_le_bytes());
        t.push(&0u32.to_le_bytes());
    }
    t.finish()
}

/// A system description table: the 36-byte header, then the body.
struct Table {
    bytes: Vec<u8>,
}

impl Table {
    fn new(signature: &[u8; 4], revision: u8) -> Self {
        let mut bytes = Vec::with_capacity(FADT_LEN);
        bytes.extend_from_slice(signature);
        bytes.extend_from_slice(&[0; 4]); // length, set by finish()
        bytes.push(revision);
        bytes.push(0); // checksum, set by finish()
        bytes.extend_from_slice(&OEM_ID);
        bytes.extend_from_slice(&OEM_TABLE_ID);
        bytes.extend_from_slice(&OEM_REVISION.to_le_bytes());
        bytes.extend_from_slice(&CREATOR_ID);
        bytes.extend_from_slice(&CREATOR_REVISION.to_le_bytes());
        Table { bytes }
    }

    fn push(&mut self, b: &[u8]) {
        self.bytes.extend_from_slice(b);
    }

    /// Overwrites bytes at a fixed offset inside the (already sized) body.
    fn put(&mut self, off: usize, b: &[u8]) {
        self.bytes[off..off + b.len()].copy_from_slice(b);
    }

    /// Sets the length (which `build` keeps below 4 GiB) and checksum.
    fn finish(mut self) -> Vec<u8> {
        let len = self.bytes.len() as u32;
        self.bytes[4..8].copy_from_slice(&len.to_le_bytes());
        self.bytes[9] = 0;
        self.bytes[9] = checksum(&self.bytes);
        self.bytes
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::le;
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |a, &x| a.wrapping_add(x))
    }

    /// A table found in RAM: its GPA and bytes (length from its header).
    pub struct Found<'a> {
        pub gpa: u64,
        pub bytes: &'a [u8],
    }

    /// Checks a system description table at `gpa`: signature, length,
    /// checksum and the common header fields.
    pub fn table_at<'a>(ram: &'a [u8], gpa: u64, signature: &[u8; 4]) -> Found<'a> {
        let at = gpa as usize;
        assert_eq!(&ram[at..at + 4], signature, "signature at {gpa:#x}");
        let len = le::u32_at(ram, at + 4).unwrap() as usize;
        assert!(len >= HEADER_LEN);
        let bytes = &ram[at..at + len];
        assert_eq!(
            sum(bytes),
            0,
            "{} checksum",
            core::str::from_utf8(signature).unwrap()
        );
        assert_eq!(&bytes[10..16], b"VMLINK");
        assert_eq!(&bytes[16..24], b"VMLINK  ");
        assert_eq!(&bytes[28..32], b"VMLK");
        Found { gpa, bytes }
    }

    /// Walks RSDP -> XSDT -> tables as an OS would, checking every
    /// checksum; returns the tables the XSDT lists.
    pub fn walk(ram: &[u8], rsdp: u64) -> Vec<Found<'_>> {
        let r = &ram[rsdp as usize..rsdp as usize + RSDP_LEN];
        assert_eq!(&r[..8], b"RSD PTR ");
        assert_eq!(sum(&r[..20]), 0, "RSDP checksum (first 20 bytes)");
        assert_eq!(sum(r), 0, "RSDP extended checksum");
        assert_eq!(r[15], 2, "RSDP revision");
        assert_eq!(&r[9..15], b"VMLINK");
        assert_eq!(le::u32_at(r, 16), Some(0), "no RSDT");
        assert_eq!(le::u32_at(r, 20), Some(36));
        let xsdt = table_at(ram, le::u64_at(r, 24).unwrap(), b"XSDT");
        assert_eq!(xsdt.bytes[8], 1);
        xsdt.bytes[HEADER_LEN..]
            .chunks(8)
            .map(|c| {
                let gpa = u64::from_le_bytes(c.try_into().unwrap());
                let sig: [u8; 4] = ram[gpa as usize..gpa as usize + 4].try_into().unwrap();
                table_at(ram, gpa, &sig)
            })
            .collect()
    }

    /// The MADT's interrupt controller structures as (type, bytes).
    pub fn madt_entries(madt: &[u8]) -> Vec<(u8, &[u8])> {
        let mut v = Vec::new();
        let mut at = 44;
        while at < madt.len() {
            let len = madt[at + 1] as usize;
            assert!(len >= 2 && at + len <= madt.len(), "MADT entry at {at}");
            v.push((madt[at], &madt[at + 2..at + len]));
            at += len;
        }
        v
    }

    fn ram_with(cfg: &AcpiConfig<'_>) -> (Vec<u8>, AcpiLayout) {
        let mut ram = vec![0u8; 0x10_0000];
        let layout = write(&mut ram, Range::new(RSDP_GPA, 0xF_0000), cfg).unwrap();
        (ram, layout)
    }

    #[test]
    fn tables_checksum_and_link_up() {
        let aml = [0x10u8, 0x05, 0x5C, 0x2E, 0x5F, 0x53, 0x42, 0x5F]; // any bytes
        let cfg = AcpiConfig {
            apic_id: 3,
            ioapic: true,
            dsdt_aml: &aml,
        };
        let (ram, layout) = ram_with(&cfg);
        assert_eq!(layout.rsdp, 0xE_0000);
        assert_eq!(layout.range.start, 0xE_0000);
        for a in [layout.xsdt, layout.fadt, layout.madt, layout.dsdt] {
            assert_eq!(a % 16, 0);
            assert!(layout.range.start < a && a < layout.range.end);
        }
        // Nothing past the end was touched.
        assert!(ram[layout.range.end as usize..].iter().all(|&b| b == 0));

        let tables = walk(&ram, RSDP_GPA);
        assert_eq!(tables.len(), 2);
        assert_eq!(&tables[0].bytes[..4], b"FACP");
        assert_eq!(tables[0].gpa, layout.fadt);
        assert_eq!(&tables[1].bytes[..4], b"APIC");
        assert_eq!(tables[1].gpa, layout.madt);

        let dsdt = table_at(&ram, layout.dsdt, b"DSDT");
        assert_eq!(dsdt.bytes[8], 2);
        assert_eq!(&dsdt.bytes[HEADER_LEN..], &aml);
        assert_eq!(
            layout.range.end,
            layout.dsdt + HEADER_LEN as u64 + aml.len() as u64
        );
    }

    #[test]
    fn a_bios_area_scan_finds_the_rsdp() {
        let (ram, _) = ram_with(&AcpiConfig::default());
        let hits: Vec<usize> = (0xE_0000..0x10_0000)
            .step_by(16)
            .filter(|&a| &ram[a..a + 8] == b"RSD PTR " && sum(&ram[a..a + 20]) == 0)
            .collect();
        assert_eq!(hits, [0xE_0000]);
    }

    #[test]
    fn fadt_is_hardware_reduced() {
        let (ram, layout) = ram_with(&AcpiConfig::default());
        let f = table_at(&ram, layout.fadt, b"FACP").bytes;
        assert_eq!(f.len(), 276);
        assert_eq!(f[8], 6, "FADT major revision");
        assert_eq!(f[fadt::MINOR_REVISION], 5);
        let flags = le::u32_at(f, fadt::FLAGS).unwrap();
        assert_eq!(flags & fadt::HW_REDUCED_ACPI, 1 << 20);
        assert_eq!(flags & (fadt::PWR_BUTTON | fadt::SLP_BUTTON), 0x30);
        let arch = le::u16_at(f, fadt::IAPC_BOOT_ARCH).unwrap();
        assert_eq!(arch & fadt::VGA_NOT_PRESENT, 1 << 2);
        assert_eq!(arch & fadt::CMOS_RTC_NOT_PRESENT, 1 << 5);
        assert_eq!(arch & fadt::MSI_NOT_SUPPORTED, 0);
        assert_eq!(arch & (fadt::LEGACY_DEVICES | fadt::I8042), 0);
        assert_eq!(le::u32_at(f, fadt::DSDT), Some(layout.dsdt as u32));
        assert_eq!(le::u64_at(f, fadt::X_DSDT), Some(layout.dsdt));
        // No FACS, SCI, SMI port, PM1 blocks, PM timer or sleep registers.
        assert_eq!(le::u64_at(f, fadt::X_FIRMWARE_CTRL), Some(0));
        assert_eq!(le::u32_at(f, 36), Some(0));
        assert_eq!(le::u16_at(f, fadt::SCI_INT), Some(0));
        assert_eq!(le::u32_at(f, fadt::SMI_CMD), Some(0));
        assert_eq!(le::u32_at(f, fadt::PM1A_EVT_BLK), Some(0));
        assert_eq!(le::u32_at(f, fadt::PM1A_CNT_BLK), Some(0));
        assert_eq!(le::u32_at(f, fadt::PM_TMR_BLK), Some(0));
        assert!(f[fadt::X_PM1A_EVT_BLK..fadt::SLEEP_CONTROL_REG]
            .iter()
            .all(|&b| b == 0));
        assert_eq!(f[fadt::X_PM_TMR_BLK], 0, "PM timer not in system I/O");
        assert_eq!(
            &f[fadt::SLEEP_CONTROL_REG..fadt::SLEEP_CONTROL_REG + 12],
            &[1, 8, 0, 1, 0x00, 0x06, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(
            le::u64_at(f, fadt::SLEEP_STATUS_REG + 4),
            Some(u64::from(SLEEP_STATUS_PORT))
        );
        assert_eq!(&f[fadt::HYPERVISOR_VENDOR_ID..], b"VMLINK\0\0");
    }

    #[test]
    fn madt_entries_for_one_cpu_and_an_ioapic() {
        let cfg = AcpiConfig {
            apic_id: 7,
            ..AcpiConfig::default()
        };
        let (ram, layout) = ram_with(&cfg);
        let m = table_at(&ram, layout.madt, b"APIC").bytes;
        assert_eq!(m[8], 5);
        assert_eq!(le::u32_at(m, 36), Some(0xFEE0_0000));
        assert_eq!(le::u32_at(m, 40), Some(0), "no PCAT_COMPAT");
        let entries = madt_entries(m);
        assert_eq!(entries.len(), 2);
        let (ty, lapic) = entries[0];
        assert_eq!(ty, madt::LOCAL_APIC);
        assert_eq!(lapic.len(), 6);
        assert_eq!(lapic[0], 0, "ACPI processor UID");
        assert_eq!(lapic[1], 7, "APIC ID");
        assert_eq!(le::u32_at(lapic, 2), Some(madt::ENABLED));
        let (ty, ioapic) = entries[1];
        assert_eq!(ty, madt::IO_APIC);
        assert_eq!(ioapic.len(), 10);
        assert_eq!(ioapic[0], 0, "I/O APIC ID");
        assert_eq!(le::u32_at(ioapic, 2), Some(0xFEC0_0000));
        assert_eq!(le::u32_at(ioapic, 6), Some(0), "GSI base");
        assert!(!entries
            .iter()
            .any(|&(t, _)| t == madt::INTERRUPT_SOURCE_OVERRIDE));
    }

    #[test]
    fn madt_x2apic_and_no_ioapic() {
        let cfg = AcpiConfig {
            apic_id: 0x1234,
            ioapic: false,
            dsdt_aml: &[],
        };
        let (ram, layout) = ram_with(&cfg);
        let m = table_at(&ram, layout.madt, b"APIC").bytes;
        let entries = madt_entries(m);
        assert_eq!(entries.len(), 1);
        let (ty, x2) = entries[0];
        assert_eq!(ty, madt::LOCAL_X2APIC);
        assert_eq!(x2.len(), 14);
        assert_eq!(le::u32_at(x2, 2), Some(0x1234));
        assert_eq!(le::u32_at(x2, 6), Some(madt::ENABLED));
        assert_eq!(le::u32_at(x2, 10), Some(0));
        // 255 is the broadcast ID: it needs the x2APIC form too.
        let (ram, layout) = ram_with(&AcpiConfig {
            apic_id: 255,
            ..cfg
        });
        let entries = madt_entries(table_at(&ram, layout.madt, b"APIC").bytes);
        assert_eq!(entries[0].0, madt::LOCAL_X2APIC);
        walk(&ram, RSDP_GPA);
    }

    #[test]
    fn errors() {
        let mut ram = vec![0u8; 0x10_0000];
        let aml = vec![0u8; 0x1_0000];
        let cfg = AcpiConfig {
            dsdt_aml: &aml,
            ..AcpiConfig::default()
        };
        let err = write(&mut ram, Range::new(0xE_0000, 0xF_0000), &cfg).unwrap_err();
        assert!(
            matches!(err, AcpiError::DoesNotFit { room: 0x1_0000, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("DSDT"));
        assert!(ram.iter().all(|&b| b == 0), "nothing written");

        let err = write(
            &mut ram,
            Range::new(0xE_0008, 0xF_0000),
            &AcpiConfig::default(),
        );
        assert_eq!(err, Err(AcpiError::Misaligned { at: 0xE_0008 }));

        let err = write(
            &mut ram,
            Range::new(0xF_0000, 0x11_0000),
            &AcpiConfig::default(),
        );
        assert!(matches!(err, Err(AcpiError::OutsideRam { .. })));
        let err = write(
            &mut ram,
            Range::new(0xF_0000, 0xE_0000),
            &AcpiConfig::default(),
        );
        assert!(matches!(err, Err(AcpiError::OutsideRam { .. })));
    }

    #[test]
    fn checksum_makes_the_sum_zero() {
        let mut b = [1u8, 2, 3, 250, 0];
        b[4] = checksum(&b[..4]);
        assert_eq!(sum(&b), 0);
        assert_eq!(checksum(&[]), 0);
    }
}
