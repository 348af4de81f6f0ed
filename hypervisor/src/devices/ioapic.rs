//! A minimal I/O APIC at 0xFEC00000: ID, version, arbitration and 24
//! redirection entries. With one vCPU per guest the destination fields are
//! kept but not used: every unmasked line goes to the guest's local APIC.

use crate::devices::vectors::VectorSet;

pub const PINS: usize = 24;
const MASKED: u64 = 1 << 16;
const LEVEL: u64 = 1 << 15;
const REMOTE_IRR: u64 = 1 << 14;

#[derive(Clone)]
pub struct IoApic {
    select: u32,
    id: u32,
    redir: [u64; PINS],
}

impl Default for IoApic {
    fn default() -> Self {
        Self::new()
    }
}

impl IoApic {
    pub fn new() -> Self {
        IoApic {
            select: 0,
            id: 0,
            redir: [MASKED; PINS],
        }
    }

    /// MMIO read at `off` in the page (IOREGSEL at 0x00, IOWIN at 0x10).
    pub fn read(&self, off: u32) -> u32 {
        match off {
            0x00 => self.select,
            0x10 => self.read_reg(self.select),
            _ => 0,
        }
    }

    pub fn write(&mut self, off: u32, value: u32) {
        match off {
            0x00 => self.select = value & 0xFF,
            0x10 => self.write_reg(self.select, value),
            _ => {}
        }
    }

    fn read_reg(&self, reg: u32) -> u32 {
        match reg {
            0 => self.id << 24,
            1 => ((PINS as u32 - 1) << 16) | 0x20,
            2 => self.id << 24,
            r @ 0x10..=0x3F => {
                let e = self.redir[((r - 0x10) / 2) as usize];
                if r % 2 == 0 {
                    e as u32
                } else {
                    (e >> 32) as u32
                }
            }
            _ => 0,
        }
    }

    fn write_reg(&mut self, reg: u32, value: u32) {
        match reg {
            0 => self.id = (value >> 24) & 0xF,
            r @ 0x10..=0x3F => {
                let e = &mut self.redir[((r - 0x10) / 2) as usize];
                if r % 2 == 0 {
                    // Delivery status and remote IRR are read-only.
                    let keep = *e & (REMOTE_IRR | (1 << 12));
                    *e = (*e & !0xFFFF_FFFF)
                        | u64::from(value & !(REMOTE_IRR as u32 | 1 << 12))
                        | keep;
                } else {
                    *e = (*e & 0xFFFF_FFFF) | (u64::from(value) << 32);
                }
            }
            _ => {}
        }
    }

    /// An edge (or a level going active) on `pin`: the vector to deliver,
    /// unless the entry is masked or a level interrupt is still in service.
    pub fn raise(&mut self, pin: u8) -> Option<u8> {
        let e = self.redir.get_mut(usize::from(pin))?;
        if *e & MASKED != 0 {
            return None;
        }
        if *e & LEVEL != 0 {
            if *e & REMOTE_IRR != 0 {
                return None;
            }
            *e |= REMOTE_IRR;
        }
        Some((*e & 0xFF) as u8)
    }

    /// Redirection entry `pin` (for diagnostics).
    pub fn entry(&self, pin: u8) -> u64 {
        self.redir.get(usize::from(pin)).copied().unwrap_or(0)
    }

    /// The local APIC ended `vector`: level entries with it may fire again.
    pub fn eoi(&mut self, vector: u8) {
        for e in self.redir.iter_mut() {
            if *e & 0xFF == u64::from(vector) {
                *e &= !REMOTE_IRR;
            }
        }
    }

    /// The vectors of level-triggered lines, one bit each: the EOIs this
    /// I/O APIC must hear about.
    pub fn level_vectors(&self) -> VectorSet {
        let mut v = VectorSet::EMPTY;
        for e in self.redir.iter().filter(|e| *e & LEVEL != 0) {
            v.insert((*e & 0xFF) as u8);
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_vectors_are_the_eois_to_hear() {
        let mut io = IoApic::new();
        assert_eq!(io.level_vectors(), VectorSet::EMPTY);
        io.write(0x00, 0x10 + 2 * 4);
        io.write(0x10, 0x34); // edge
        io.write(0x00, 0x10 + 2 * 9);
        io.write(0x10, LEVEL as u32 | MASKED as u32 | 0x91);
        assert_eq!(io.level_vectors(), VectorSet::of(&[0x91]));
    }

    fn program(io: &mut IoApic, pin: u32, low: u32) {
        io.write(0, 0x10 + 2 * pin);
        io.write(0x10, low);
    }

    #[test]
    fn version_and_masked_by_default() {
        let mut io = IoApic::new();
        io.write(0, 1);
        assert_eq!(io.read(0x10), 0x0017_0020);
        assert_eq!(io.raise(4), None);
    }

    #[test]
    fn edge_and_level_delivery() {
        let mut io = IoApic::new();
        program(&mut io, 4, 0x24);
        assert_eq!(io.raise(4), Some(0x24));
        assert_eq!(io.raise(4), Some(0x24), "edges always deliver");
        program(&mut io, 9, 0x29 | LEVEL as u32);
        assert_eq!(io.raise(9), Some(0x29));
        assert_eq!(io.raise(9), None, "remote IRR set");
        io.eoi(0x29);
        assert_eq!(io.raise(9), Some(0x29));
        io.write(0, 0x10 + 18);
        assert_ne!(u64::from(io.read(0x10)) & REMOTE_IRR, 0);
        assert_eq!(io.raise(200), None);
    }
}
