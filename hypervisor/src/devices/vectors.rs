//! A set of the 256 interrupt vectors, laid out as the APIC lays out IRR,
//! ISR and TMR: eight 32-bit registers, vector `v` at bit `v % 32` of
//! register `v / 32`. The virtual-APIC page holds them the same way, and
//! VT-x's EOI-exit bitmap is the same bits two registers to a field, so
//! one type carries a set from the device model to the CPU and back.

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VectorSet([u32; 8]);

impl VectorSet {
    pub const EMPTY: Self = Self([0; 8]);

    pub fn of(vectors: &[u8]) -> Self {
        let mut s = Self::EMPTY;
        for &v in vectors {
            s.insert(v);
        }
        s
    }

    fn bit(v: u8) -> (usize, u32) {
        (usize::from(v / 32), 1 << (v % 32))
    }

    /// Adds `v`; false if it was already in.
    pub fn insert(&mut self, v: u8) -> bool {
        let (i, b) = Self::bit(v);
        let new = self.0[i] & b == 0;
        self.0[i] |= b;
        new
    }

    pub fn remove(&mut self, v: u8) {
        let (i, b) = Self::bit(v);
        self.0[i] &= !b;
    }

    /// The highest vector in the set: the one the APIC serves first.
    pub fn highest(&self) -> Option<u8> {
        (0..8).rev().find_map(|i| {
            let w = self.0[i];
            (w != 0).then(|| (i * 32 + 31 - w.leading_zeros() as usize) as u8)
        })
    }

    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|&w| w == 0)
    }

    /// Register `i` (0–7) of the set as the APIC shows it.
    pub fn register(&self, i: usize) -> u32 {
        self.0[i]
    }

    pub fn set_register(&mut self, i: usize, bits: u32) {
        self.0[i] = bits;
    }

    /// The set as four 64-bit words, vector `v` at bit `v % 64` of word
    /// `v / 64`: the EOI-exit bitmap's fields.
    pub fn words64(&self) -> [u64; 4] {
        core::array::from_fn(|i| u64::from(self.0[2 * i]) | u64::from(self.0[2 * i + 1]) << 32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_sit_where_the_apic_registers_put_them() {
        let s = VectorSet::of(&[0x00, 0x41, 0xff]);
        assert_eq!(s.register(0), 1);
        assert_eq!(s.register(2), 1 << 1);
        assert_eq!(s.register(7), 1 << 31);
        assert_eq!(s.words64(), [1, 1 << 1, 0, 1 << 63]);
        assert_eq!(s.highest(), Some(0xff));
    }

    #[test]
    fn insert_and_remove() {
        let mut s = VectorSet::EMPTY;
        assert!(s.is_empty());
        assert_eq!(s.highest(), None);
        assert!(s.insert(0x61));
        assert!(!s.insert(0x61), "already in");
        s.remove(0x61);
        assert!(s.is_empty());
        let mut t = VectorSet::of(&[0x30, 0xec]);
        t.remove(0xec);
        assert_eq!(t, VectorSet::of(&[0x30]));
        assert_eq!(t.highest(), Some(0x30));
    }
}
