//! The guest's DSDT body, hand-encoded AML (ACPI 6.4, chapter 20):
//!
//! ```text
//! Scope (\_SB) {
//!     Device (COM1) {
//!         Name (_HID, EisaId ("PNP0501"))
//!         Name (_UID, One)
//!         Name (_CRS, ResourceTemplate () { IO (Decode16, 0x3F8, 0x3F8, 1, 8) IRQNoFlags () {4} })
//!     }
//! }
//! Name (_S5, Package () { 5, 5, 0, 0 })
//! ```
//!
//! COM1 is described because a hardware-reduced platform has no legacy
//! PIC: Linux maps ISA IRQ 4 only for a device that names it, and the 8250
//! PnP driver then takes the port over with a working interrupt. `_S5`
//! gives the sleep type written to the sleep control register on poweroff.

/// Sleep type for S5 in `_S5` (the guest writes `SLP_TYP << 2 | SLP_EN`).
pub const S5_SLEEP_TYPE: u8 = 5;

pub const DSDT_BODY: &[u8] = &[
    // Scope (\_SB), PkgLength 0x33
    0x10,
    0x33,
    b'\\',
    b'_',
    b'S',
    b'B',
    b'_',
    // Device (COM1), PkgLength 0x2B
    0x5B,
    0x82,
    0x2B,
    b'C',
    b'O',
    b'M',
    b'1',
    // Name (_HID, EisaId ("PNP0501"))
    0x08,
    b'_',
    b'H',
    b'I',
    b'D',
    0x0C,
    0x41,
    0xD0,
    0x05,
    0x01,
    // Name (_UID, One)
    0x08,
    b'_',
    b'U',
    b'I',
    b'D',
    0x01,
    // Name (_CRS, Buffer (13) { IO, IRQNoFlags, End })
    0x08,
    b'_',
    b'C',
    b'R',
    b'S',
    0x11,
    0x10,
    0x0A,
    0x0D,
    0x47,
    0x01,
    0xF8,
    0x03,
    0xF8,
    0x03,
    0x01,
    0x08, // IO 0x3F8, 8 ports
    0x22,
    0x10,
    0x00, // IRQ 4
    0x79,
    0x00, // end tag
    // Name (_S5, Package (4) { 5, 5, 0, 0 })
    0x08,
    b'_',
    b'S',
    b'5',
    b'_',
    0x12,
    0x08,
    0x04,
    0x0A,
    S5_SLEEP_TYPE,
    0x0A,
    S5_SLEEP_TYPE,
    0x00,
    0x00,
];

#[cfg(test)]
mod tests {
    use super::*;

    /// One-byte PkgLength: the count covers itself and what follows, to the
    /// end of the object.
    fn pkg_end(body: &[u8], at: usize) -> usize {
        at + body[at] as usize
    }

    #[test]
    fn package_lengths_are_consistent() {
        let b = DSDT_BODY;
        // Scope ends where the _S5 name begins.
        let s5 = b.windows(4).position(|w| w == b"_S5_").unwrap() - 1;
        assert_eq!(pkg_end(b, 1), s5);
        // Device (PkgLength at 9) ends at the scope's end too.
        assert_eq!(pkg_end(b, 9), s5);
        // _CRS buffer: PkgLength at its 0x11 opcode + 1.
        let buf = b.iter().position(|&x| x == 0x11).unwrap();
        assert_eq!(
            pkg_end(b, buf + 1),
            b.iter().position(|&x| x == 0x79).unwrap() + 2
        );
        // _S5 package runs to the end.
        let pkg = b.len() - 9;
        assert_eq!(b[pkg], 0x12);
        assert_eq!(pkg_end(b, pkg + 1), b.len());
    }

    #[test]
    fn eisa_id_encodes_pnp0501() {
        let b = DSDT_BODY;
        let i = b.windows(4).position(|w| w == b"_HID").unwrap() + 5;
        let id = u16::from_be_bytes([b[i], b[i + 1]]);
        let c = |s: u16| char::from(b'@' + (s & 0x1F) as u8);
        assert_eq!([c(id >> 10), c(id >> 5), c(id)], ['P', 'N', 'P']);
        assert_eq!(&b[i + 2..i + 4], &[0x05, 0x01]);
    }
}
