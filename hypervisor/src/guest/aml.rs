//! The guest's DSDT body, AML (ACPI 6.4, chapter 20) built from a few
//! encoders:
//!
//! ```text
//! Scope (\_SB) {
//!     Device (COM1) {
//!         Name (_HID, EisaId ("PNP0501"))
//!         Name (_UID, One)
//!         Name (_CRS, ResourceTemplate () { IO (Decode16, 0x3F8, 0x3F8, 1, 8) IRQNoFlags () {4} })
//!     }
//!     Device (PCI0) {                       // only for a VM with a channel
//!         Name (_HID, EisaId ("PNP0A03"))
//!         Name (_UID, Zero)
//!         Name (_CRS, ResourceTemplate () {
//!             WordBusNumber (ResourceProducer, MinFixed, MaxFixed, PosDecode, 0, 0, 0, 0, 1)
//!             QWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, Prefetchable,
//!                          ReadWrite, 0, <window start>, <window end>, 0, <window length>)
//!         })
//!     }
//! }
//! Name (_S5, Package () { 5, 5, 0, 0 })
//! ```
//!
//! COM1 is described because a hardware-reduced platform has no legacy
//! PIC: Linux maps ISA IRQ 4 only for a device that names it, and the 8250
//! PnP driver then takes the port over with a working interrupt. PCI0 is
//! the root bridge Linux scans bus 0 under when ACPI is on (it does no
//! legacy scan then); its one memory window holds the channel's BAR, so
//! Linux keeps the BAR where the hypervisor put it. `_S5` gives the sleep
//! type written to the sleep control register on poweroff.

use alloc::vec::Vec;

/// Sleep type for S5 in `_S5` (the guest writes `SLP_TYP << 2 | SLP_EN`).
pub const S5_SLEEP_TYPE: u8 = 5;

const NAME_OP: u8 = 0x08;
const SCOPE_OP: u8 = 0x10;
const BUFFER_OP: u8 = 0x11;
const PACKAGE_OP: u8 = 0x12;
const BYTE_PREFIX: u8 = 0x0A;
const DWORD_PREFIX: u8 = 0x0C;
const EXT_OP: u8 = 0x5B;
const DEVICE_OP: u8 = 0x82;
const ZERO: u8 = 0x00;
const ONE: u8 = 0x01;

/// The PCI root bridge's memory window (for a VM with a channel).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciWindow {
    pub start: u64,
    pub len: u64,
}

/// `body` preceded by its PkgLength (which counts itself).
fn pkg(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 4);
    let n = body.len();
    if n + 1 < 0x40 {
        out.push((n + 1) as u8);
    } else {
        // Lead byte: count of extra bytes in bits 7:6, low nibble of the
        // length; the rest follows in 8-bit steps.
        let extra = if n + 2 < 1 << 12 {
            1
        } else if n + 3 < 1 << 20 {
            2
        } else {
            3
        };
        let total = n + 1 + extra;
        out.push(((extra as u8) << 6) | (total & 0xF) as u8);
        for i in 0..extra {
            out.push((total >> (4 + 8 * i)) as u8);
        }
    }
    out.extend_from_slice(body);
    out
}

fn name(seg: &[u8; 4], value: &[u8]) -> Vec<u8> {
    let mut v = alloc::vec![NAME_OP];
    v.extend_from_slice(seg);
    v.extend_from_slice(value);
    v
}

fn device(seg: &[u8; 4], contents: &[u8]) -> Vec<u8> {
    let mut body = seg.to_vec();
    body.extend_from_slice(contents);
    let mut v = alloc::vec![EXT_OP, DEVICE_OP];
    v.extend(pkg(&body));
    v
}

/// A resource template: the descriptors, then the end tag.
fn buffer(descriptors: &[u8]) -> Vec<u8> {
    let mut data = descriptors.to_vec();
    data.extend_from_slice(&[0x79, 0x00]);
    let mut body = alloc::vec![BYTE_PREFIX, data.len() as u8];
    body.extend(data);
    let mut v = alloc::vec![BUFFER_OP];
    v.extend(pkg(&body));
    v
}

/// A compressed EISA ID ("PNP0A03"): three letters in 5 bits each, then
/// four hex digits, as a big-endian DWordConst.
fn eisa_id(id: &[u8; 7]) -> [u8; 5] {
    let l = |c: u8| u16::from(c - b'@') & 0x1F;
    let vendor = (l(id[0]) << 10) | (l(id[1]) << 5) | l(id[2]);
    let hex = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
    let [v0, v1] = vendor.to_be_bytes();
    [
        DWORD_PREFIX,
        v0,
        v1,
        (hex(id[3]) << 4) | hex(id[4]),
        (hex(id[5]) << 4) | hex(id[6]),
    ]
}

fn com1() -> Vec<u8> {
    let mut d = name(b"_HID", &eisa_id(b"PNP0501"));
    d.extend(name(b"_UID", &[ONE]));
    // IO (Decode16, 0x3F8, 0x3F8, 1, 8), IRQNoFlags () {4}.
    let crs = [
        0x47, 0x01, 0xF8, 0x03, 0xF8, 0x03, 0x01, 0x08, 0x22, 0x10, 0x00,
    ];
    d.extend(name(b"_CRS", &buffer(&crs)));
    device(b"COM1", &d)
}

fn pci0(w: PciWindow) -> Vec<u8> {
    let mut d = name(b"_HID", &eisa_id(b"PNP0A03"));
    d.extend(name(b"_UID", &[ZERO]));
    // General flags 0x0C: producer, positive decode, min and max fixed.
    let mut crs = alloc::vec![0x88, 13, 0, 2, 0x0C, 0];
    for field in [0u16, 0, 0, 0, 1] {
        crs.extend_from_slice(&field.to_le_bytes());
    }
    // Memory, type-specific 0x07: prefetchable, read-write.
    crs.extend_from_slice(&[0x8A, 43, 0, 0, 0x0C, 0x07]);
    for field in [0, w.start, w.start + w.len - 1, 0, w.len] {
        crs.extend_from_slice(&field.to_le_bytes());
    }
    d.extend(name(b"_CRS", &buffer(&crs)));
    device(b"PCI0", &d)
}

/// The DSDT body; `pci` adds the PCI root bridge with that window.
pub fn dsdt_body(pci: Option<PciWindow>) -> Vec<u8> {
    let mut sb = b"\\_SB_".to_vec();
    sb.extend(com1());
    if let Some(w) = pci {
        sb.extend(pci0(w));
    }
    let mut out = alloc::vec![SCOPE_OP];
    out.extend(pkg(&sb));
    let s5 = [
        PACKAGE_OP,
        0x08,
        0x04,
        BYTE_PREFIX,
        S5_SLEEP_TYPE,
        BYTE_PREFIX,
        S5_SLEEP_TYPE,
        ZERO,
        ZERO,
    ];
    out.extend(name(b"_S5_", &s5));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes the PkgLength at `at`: (length, bytes it occupies).
    fn pkg_len(b: &[u8], at: usize) -> (usize, usize) {
        let lead = b[at] as usize;
        let extra = lead >> 6;
        if extra == 0 {
            return (lead & 0x3F, 1);
        }
        let mut n = lead & 0xF;
        for i in 0..extra {
            n |= (b[at + 1 + i] as usize) << (4 + 8 * i);
        }
        (n, 1 + extra)
    }

    fn find(b: &[u8], pat: &[u8]) -> usize {
        b.windows(pat.len()).position(|w| w == pat).unwrap()
    }

    #[test]
    fn package_lengths_nest_exactly() {
        for pci in [
            None,
            Some(PciWindow {
                start: 64 << 30,
                len: 4 << 30,
            }),
        ] {
            let b = dsdt_body(pci);
            // The scope ends where the _S5 name begins.
            let (scope, _) = pkg_len(&b, 1);
            let s5 = find(&b, b"_S5_") - 1;
            assert_eq!(1 + scope, s5);
            // Each device ends at the next device or at the scope's end.
            let com1 = find(&b, b"COM1");
            let (len, used) = pkg_len(&b, com1 - 1);
            assert_eq!(used, 1);
            let com1_end = com1 - 1 + len;
            if pci.is_some() {
                let p = find(&b, b"PCI0");
                assert_eq!(&b[com1_end..com1_end + 2], &[EXT_OP, DEVICE_OP]);
                let (len, used) = pkg_len(&b, com1_end + 2);
                assert_eq!(p, com1_end + 2 + used);
                assert_eq!(com1_end + 2 + len, s5);
            } else {
                assert_eq!(com1_end, s5);
            }
            // _S5 package runs to the end.
            assert_eq!(b[s5 + 5], PACKAGE_OP);
            assert_eq!(s5 + 6 + b[s5 + 6] as usize, b.len());
        }
    }

    #[test]
    fn eisa_ids_and_the_pci_window() {
        assert_eq!(eisa_id(b"PNP0501"), [0x0C, 0x41, 0xD0, 0x05, 0x01]);
        assert_eq!(eisa_id(b"PNP0A03"), [0x0C, 0x41, 0xD0, 0x0A, 0x03]);
        let w = PciWindow {
            start: 0x10_0000_0000,
            len: 0x1_0000_0000,
        };
        let b = dsdt_body(Some(w));
        let q = find(&b, &[0x8A, 43, 0]);
        let word =
            |i: usize| u64::from_le_bytes(b[q + 6 + 8 * i..q + 14 + 8 * i].try_into().unwrap());
        assert_eq!(
            [word(1), word(2), word(4)],
            [0x10_0000_0000, 0x10_FFFF_FFFF, 0x1_0000_0000]
        );
        // The end tag follows the QWord descriptor.
        assert_eq!(&b[q + 46..q + 48], &[0x79, 0x00]);
        assert!(!dsdt_body(None).windows(4).any(|w| w == b"PCI0"));
    }

    #[test]
    fn long_package_lengths() {
        for n in [0usize, 61, 62, 63, 200, 4093, 4094, 5000] {
            let body = alloc::vec![0xAAu8; n];
            let p = pkg(&body);
            let (len, used) = pkg_len(&p, 0);
            assert_eq!(len, p.len(), "n={n}");
            assert_eq!(len, n + used);
        }
    }
}
