//! The inter-VM channel: a region the hypervisor allocates at bootstrap and
//! maps into both guests, presented to each as a PCI device.
//!
//! Region layout (offsets from the start of BAR0, all page-aligned):
//!
//! ```text
//! 0                 header page: per VM, written by the hypervisor only
//!                   (read-only to the guest); says which side the guest is
//! PAGE              section 0: owned by side 0 (read-write for it,
//!                   read-only for side 1)
//! PAGE + S          section 1: owned by side 1
//! ```
//!
//! A section holds everything its owner writes:
//!
//! ```text
//! +0                control page ([`Control`]): indices and event indices
//! +ring_offset      tx ring: `ring_entries` [`Desc`]s, frames the owner sends
//! +ret_offset       return ring: `ring_entries` u32 buffer numbers, the
//!                   peer's buffers the owner has finished with
//! +buffers_offset   `buffer_count` buffers of [`BUFFER_SIZE`] bytes
//! ```
//!
//! So the receiver never writes into the sender's section: it reads
//! descriptors and buffers there, and hands buffers back through the return
//! ring in its own section. Every index is a free-running u32; a ring slot
//! is `index % ring_entries`. Notifications are suppressed as with virtio's
//! event index: a producer rings the doorbell only when its new index
//! passes the event index the consumer published. While a guest is halted
//! the hypervisor watches its rings instead (`Header::peer_halted`), so
//! its peer need not ring at all.

/// PCI identity of the channel device. The IDs are vmlink's own for this
/// prototype (not assigned by the PCI-SIG).
pub mod pci {
    pub const VENDOR_ID: u16 = 0x564c;
    pub const DEVICE_ID: u16 = 0x0001;
    pub const REVISION: u8 = 1;
    /// Network controller, "other".
    pub const CLASS: u8 = 0x02;
    pub const SUBCLASS: u8 = 0x80;
    /// Bus 0, device 1, function 0 (device 0 is the host bridge).
    pub const DEVICE: u8 = 1;
    /// BAR0/BAR1: one 64-bit prefetchable memory BAR covering the region.
    pub const REGION_BAR: usize = 0;
    /// The host bridge at device 0 is vmlink's own (class 06/00 is what
    /// Linux's type-1 probe looks for): a real chipset's IDs would pull in
    /// that chipset's quirks.
    pub const HOST_BRIDGE_VENDOR: u16 = VENDOR_ID;
    pub const HOST_BRIDGE_DEVICE: u16 = 0x0000;
}

pub const PAGE: u64 = 4096;
/// Every buffer is one page, so a received fragment is exactly one page.
pub const BUFFER_SIZE: u32 = 4096;
/// Region size when the configuration names none.
pub const DEFAULT_REGION_MIB: u32 = 64;
/// Smallest region: header plus two sections with a few buffers each.
pub const MIN_REGION: u64 = 1 << 20;
/// Largest region the hypervisor accepts.
pub const MAX_REGION: u64 = 1 << 32;
/// Most descriptors a ring holds (power of two).
pub const MAX_RING_ENTRIES: u32 = 4096;
/// Header magic.
pub const MAGIC: u64 = u64::from_le_bytes(*b"VMLKCHN1");
/// Most descriptors one frame may use: a 64 KiB GSO frame plus headers.
pub const MAX_FRAGS: u32 = 18;

/// Descriptor flags.
pub mod desc_flags {
    /// Another descriptor of the same frame follows.
    pub const MORE: u16 = 1 << 0;
    /// The checksum is not filled in (`csum_start`/`csum_offset` say where).
    pub const CSUM_PARTIAL: u16 = 1 << 1;
    /// The frame is a TCP/IPv4 GSO frame; `gso_size` is the MSS.
    pub const GSO_TCPV4: u16 = 1 << 2;
    pub const GSO_TCPV6: u16 = 1 << 3;
    pub const GSO_UDP_L4: u16 = 1 << 4;
    pub const ALL: u16 = MORE | CSUM_PARTIAL | GSO_TCPV4 | GSO_TCPV6 | GSO_UDP_L4;
}

/// `Header::peer_state` bits, maintained by the hypervisor.
pub mod peer_state {
    /// The peer's driver has attached (hypercall `CHANNEL_ATTACH`).
    pub const ATTACHED: u32 = 1 << 0;
    /// The peer VM is running.
    pub const RUNNING: u32 = 1 << 1;
}

/// One transmit descriptor (16 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Desc {
    /// Buffer number in the owner's section.
    pub buf: u32,
    /// Bytes used in this buffer (1..=BUFFER_SIZE).
    pub len: u32,
    pub flags: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

/// The owner's control page. Each group the two sides poll lives on its
/// own cache line.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Control {
    /// Descriptors published in the owner's tx ring.
    pub tx_prod: u32,
    /// The owner wants an interrupt once the peer's `ret_prod` passes this.
    pub ret_event: u32,
    _pad0: [u32; 14],
    /// Descriptors of the peer's tx ring the owner has consumed.
    pub rx_cons: u32,
    /// The owner wants an interrupt once the peer's `tx_prod` passes this.
    pub rx_event: u32,
    _pad1: [u32; 14],
    /// Entries published in the owner's return ring.
    pub ret_prod: u32,
    /// Entries of the peer's return ring the owner has consumed.
    pub ret_cons: u32,
    _pad2: [u32; 14],
}

/// The per-VM header page at offset 0 of the region (read-only to guests).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    pub magic: u64,
    pub version: u32,
    /// Which section this guest owns (0 or 1).
    pub side: u32,
    pub region_size: u64,
    /// Offset of section 0; section 1 follows at `+ section_size`.
    pub section_offset: u64,
    pub section_size: u64,
    pub ring_entries: u32,
    pub buffer_count: u32,
    /// Offsets inside a section.
    pub ring_offset: u32,
    pub ret_offset: u32,
    pub buffers_offset: u32,
    pub buffer_size: u32,
    /// [`peer_state`] bits; changes raise the channel interrupt.
    pub peer_state: u32,
    /// Bumped on every `peer_state` change.
    pub state_gen: u32,
    /// This guest's MAC address, then the peer's.
    pub mac: [u8; 6],
    pub peer_mac: [u8; 6],
    /// Nonzero while the peer's guest is halted and the hypervisor, on the
    /// peer's CPU, watches the rings for it: it notifies the peer itself of
    /// any frame it has not consumed (and of returns past its
    /// `ret_event`), so a DOORBELL is not needed. Read it after
    /// publishing, behind a full barrier; zero means ring as usual.
    pub peer_halted: u32,
}

/// virtio's event-index rule: a producer moving its index from `old` to
/// `new` passed `event`, the entry the consumer asked to be told about.
/// The hypervisor's watch uses it for returns with the consumer's own
/// index as `old`: any entry not consumed yet that it asked about. (The C
/// side has its twin, `vml_need_event` in guest-driver/vml_ring.h.)
pub fn need_event(event: u32, new: u32, old: u32) -> bool {
    new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
}

/// Where things are in a region of a given size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub region_size: u64,
    pub section_size: u64,
    pub ring_entries: u32,
    pub buffer_count: u32,
    pub ring_offset: u32,
    pub ret_offset: u32,
    pub buffers_offset: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// Not a power of two between [`MIN_REGION`] and [`MAX_REGION`].
    BadSize(u64),
    /// `max_buffers` leaves no room for a frame.
    TooFewBuffers(u32),
}

impl core::fmt::Display for LayoutError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            LayoutError::BadSize(s) => write!(
                f,
                "channel region of {s} bytes: must be a power of two from {} KiB to {} GiB",
                MIN_REGION >> 10,
                MAX_REGION >> 30
            ),
            LayoutError::TooFewBuffers(n) => write!(
                f,
                "{n} buffers per direction: at least {} are needed for one frame",
                MAX_FRAGS
            ),
        }
    }
}

impl Layout {
    /// Splits a region of `region_size` bytes. `max_buffers` (0: no limit)
    /// caps the buffers per direction, to model small channels.
    pub fn new(region_size: u64, max_buffers: u32) -> Result<Layout, LayoutError> {
        if !region_size.is_power_of_two() || !(MIN_REGION..=MAX_REGION).contains(&region_size) {
            return Err(LayoutError::BadSize(region_size));
        }
        if max_buffers != 0 && max_buffers < MAX_FRAGS {
            return Err(LayoutError::TooFewBuffers(max_buffers));
        }
        // Both sections are page-aligned; the header takes the first page
        // and the sections split the rest evenly.
        let section_size = ((region_size - PAGE) / 2) & !(PAGE - 1);
        let pages = section_size / PAGE;
        // One descriptor per buffer is enough; more only wastes space.
        let fit = (pages - 3).min(u64::from(MAX_RING_ENTRIES)) as u32;
        let mut ring_entries = if max_buffers != 0 {
            max_buffers.min(fit)
        } else {
            fit
        };
        ring_entries = 1 << (31 - ring_entries.leading_zeros());
        let ring_bytes = u64::from(ring_entries) * core::mem::size_of::<Desc>() as u64;
        let ret_bytes = u64::from(ring_entries) * 4;
        let ring_offset = PAGE;
        let ret_offset = ring_offset + ring_bytes.next_multiple_of(PAGE);
        let buffers_offset = ret_offset + ret_bytes.next_multiple_of(PAGE);
        let mut buffer_count = ((section_size - buffers_offset) / PAGE) as u32;
        if max_buffers != 0 {
            buffer_count = buffer_count.min(max_buffers);
        }
        Ok(Layout {
            region_size,
            section_size,
            ring_entries,
            buffer_count,
            ring_offset: ring_offset as u32,
            ret_offset: ret_offset as u32,
            buffers_offset: buffers_offset as u32,
        })
    }

    /// Offset of `side`'s section in the region.
    pub fn section(&self, side: usize) -> u64 {
        PAGE + side as u64 * self.section_size
    }

    /// The header page for the guest on `side`.
    pub fn header(&self, side: u32, peer_state: u32, state_gen: u32) -> Header {
        let mac = |s: u32| [0x02, 0x56, 0x4c, 0x00, 0x00, s as u8 + 1];
        Header {
            magic: MAGIC,
            version: crate::ABI_VERSION,
            side,
            region_size: self.region_size,
            section_offset: PAGE,
            section_size: self.section_size,
            ring_entries: self.ring_entries,
            buffer_count: self.buffer_count,
            ring_offset: self.ring_offset,
            ret_offset: self.ret_offset,
            buffers_offset: self.buffers_offset,
            buffer_size: BUFFER_SIZE,
            peer_state,
            state_gen,
            mac: mac(side),
            peer_mac: mac(1 - side),
            peer_halted: 0,
        }
    }
}

/// Access a guest has to a page of the region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    ReadOnly,
    ReadWrite,
}

/// The region's protection map for the guest on `side`: (offset, length,
/// access) runs covering the whole region. The header page is read-only;
/// the guest's own section read-write; the peer's read-only.
pub fn protection(layout: &Layout, side: usize) -> [(u64, u64, Access); 3] {
    let own = layout.section(side);
    let peer = layout.section(1 - side);
    let mut runs = [
        (0, PAGE, Access::ReadOnly),
        (own, layout.section_size, Access::ReadWrite),
        (peer, layout.section_size, Access::ReadOnly),
    ];
    if runs[1].0 > runs[2].0 {
        runs.swap(1, 2);
    }
    runs
}

#[cfg(test)]
mod tests {
    #[test]
    fn need_event_is_virtios_rule() {
        use super::need_event;
        // Consumed up to 10 and asked about entry 10.
        assert!(!need_event(10, 10, 10));
        assert!(need_event(10, 11, 10));
        assert!(need_event(10, 300, 10));
        // Asked long ago (a stale event index, behind what it consumed):
        // not told again.
        assert!(!need_event(5, 11, 10));
        // Across the wrap of the free-running indices.
        assert!(need_event(u32::MAX, 0, u32::MAX));
        assert!(!need_event(u32::MAX, u32::MAX, u32::MAX));
    }

    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn abi_struct_sizes() {
        assert_eq!(size_of::<Desc>(), 16);
        assert_eq!(size_of::<Control>(), 192);
        assert_eq!(offset_of!(Control, rx_cons), 64);
        assert_eq!(offset_of!(Control, ret_prod), 128);
        assert!(size_of::<Header>() <= PAGE as usize);
        assert_eq!(size_of::<Header>() % 8, 0);
    }

    #[test]
    fn default_region_layout() {
        let l = Layout::new(u64::from(DEFAULT_REGION_MIB) << 20, 0).unwrap();
        assert_eq!(l.ring_entries, MAX_RING_ENTRIES);
        assert!(l.buffer_count > 8000);
        assert!(l.section(1) + l.section_size <= l.region_size);
        let end = u64::from(l.buffers_offset) + u64::from(l.buffer_count) * PAGE;
        assert!(end <= l.section_size);
        assert!(u64::from(l.ring_offset) + u64::from(l.ring_entries) * 16 <= l.ret_offset.into());
    }

    #[test]
    fn small_and_huge_regions() {
        let small = Layout::new(1 << 20, 64).unwrap();
        assert_eq!(small.buffer_count, 64);
        assert_eq!(small.ring_entries, 64);
        let gib = Layout::new(1 << 30, 0).unwrap();
        assert!(gib.buffer_count > 130_000);
        assert_eq!(Layout::new(3 << 20, 0), Err(LayoutError::BadSize(3 << 20)));
        assert_eq!(Layout::new(1 << 12, 0), Err(LayoutError::BadSize(1 << 12)));
        assert_eq!(Layout::new(1 << 20, 4), Err(LayoutError::TooFewBuffers(4)));
    }

    #[test]
    fn each_side_writes_only_its_own_section() {
        let l = Layout::new(64 << 20, 0).unwrap();
        for side in 0..2 {
            let runs = protection(&l, side);
            // Contiguous, covering the region up to the second section's end.
            let mut at = 0;
            for r in runs {
                assert_eq!(r.0, at);
                at += r.1;
            }
            assert!(at <= l.region_size);
            let rw = runs.iter().filter(|r| r.2 == Access::ReadWrite).count();
            assert_eq!(rw, 1);
            let own = runs.iter().find(|r| r.2 == Access::ReadWrite).unwrap();
            assert_eq!(own.0, l.section(side));
            assert_eq!(runs[0], (0, PAGE, Access::ReadOnly));
        }
    }
}
