//! A guest's RAM as the hypervisor reads it, by guest-physical address.
//!
//! Most of it lies at GPA 0 up. A guest with a channel also has a small
//! piece above the channel's BAR (`vmm::memmap::high_ram`), so that the
//! region lies below the top of its RAM: Linux 6.1 treats a mapped page
//! above its highest RAM page as a bad mapping, and the zero-copy receive
//! path maps region pages into user space (TCP_ZEROCOPY_RECEIVE).

/// The pieces of one guest's RAM.
#[derive(Clone, Copy, Debug)]
pub struct GuestRam<'a> {
    low: &'a [u8],
    high: &'a [u8],
    high_gpa: u64,
}

impl<'a> GuestRam<'a> {
    /// RAM at GPA 0 up, nothing else.
    pub fn flat(low: &'a [u8]) -> Self {
        GuestRam {
            low,
            high: &[],
            high_gpa: u64::MAX,
        }
    }

    /// `low` at GPA 0 up and `high` at `high_gpa`, which must lie above
    /// `low` (it is where the EPT maps `high`).
    pub fn split(low: &'a [u8], high_gpa: u64, high: &'a [u8]) -> Self {
        debug_assert!(high_gpa >= low.len() as u64);
        GuestRam {
            low,
            high,
            high_gpa,
        }
    }

    /// The `len` bytes at `gpa`, when all of them are RAM of one piece
    /// (the pieces are not adjacent, so nothing the guest allocates spans
    /// both).
    pub fn get(&self, gpa: u64, len: u64) -> Option<&'a [u8]> {
        let (piece, base) = if gpa >= self.high_gpa {
            (self.high, self.high_gpa)
        } else {
            (self.low, 0)
        };
        let start = usize::try_from(gpa - base).ok()?;
        let end = start.checked_add(usize::try_from(len).ok()?)?;
        piece.get(start..end)
    }

    /// The little-endian word at `gpa`.
    pub fn read_u64(&self, gpa: u64) -> Option<u64> {
        self.get(gpa, 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_piece_is_read_at_its_own_address_and_nothing_between() {
        let low: Vec<u8> = (0..64).collect();
        let high: Vec<u8> = (100..132).collect();
        let ram = GuestRam::split(&low, 0x1000, &high);
        assert_eq!(ram.get(0, 4), Some(&low[..4]));
        assert_eq!(ram.get(60, 4), Some(&low[60..]));
        assert_eq!(ram.get(61, 4), None, "past the low piece");
        assert_eq!(ram.get(64, 1), None, "the gap");
        assert_eq!(ram.get(0xFFF, 2), None, "into the high piece from below");
        assert_eq!(ram.get(0x1000, 2), Some(&high[..2]));
        assert_eq!(ram.get(0x101F, 1), Some(&high[31..]));
        assert_eq!(ram.get(0x1020, 1), None, "past the high piece");
        assert_eq!(ram.get(u64::MAX, 2), None, "overflow");
        assert_eq!(ram.get(0x1000, u64::MAX), None, "overflow");
        assert_eq!(
            ram.read_u64(0x1008),
            Some(u64::from_le_bytes(high[8..16].try_into().unwrap()))
        );
        let flat = GuestRam::flat(&low);
        assert_eq!(flat.get(8, 8), Some(&low[8..16]));
        assert_eq!(flat.get(u64::MAX - 1, 1), None);
    }
}
