//! PCI configuration space through the legacy type-1 ports (0xCF8 address,
//! 0xCFC..0xCFF data): bus 0 holds a host bridge (device 0) and, in a VM
//! with a channel, the vmlink channel device (device 1).
//!
//! The channel device has one 64-bit prefetchable memory BAR (BAR0/BAR1)
//! covering the region and an MSI capability. The BAR's address is fixed
//! where the hypervisor mapped the region: sizing (all ones, then the old
//! value back) works as on hardware, but the guest cannot move it — the
//! EPT mapping stays where it is, so an attempt is only logged. Linux keeps
//! a firmware-assigned BAR that lies inside its root bus window.

use vmlink_abi::channel::pci as ids;

pub const CONFIG_ADDRESS: u16 = 0xCF8;
pub const CONFIG_DATA: u16 = 0xCFC;

const ENABLE: u32 = 1 << 31;
const STATUS_CAP_LIST: u16 = 1 << 4;
/// Command register bits a guest may set: I/O, memory, bus master,
/// INTx disable.
const COMMAND_MASK: u16 = 0x0007 | 0x0400;
const CAP_OFFSET: u8 = 0x40;
const CAP_ID_MSI: u8 = 0x05;
/// Message control: 64-bit address capable.
const MSI_64BIT: u16 = 1 << 7;
const MSI_ENABLE: u16 = 1 << 0;
/// BAR type: 64-bit (bits 2:1 = 10), prefetchable (bit 3).
const BAR_FLAGS: u64 = 0b1100;

/// The channel device's registers a guest can change.
#[derive(Clone, Debug)]
pub struct ChannelFunction {
    pub bar: u64,
    pub size: u64,
    command: u16,
    /// What the guest last wrote to BAR0 and BAR1 (sizing writes ones).
    bar_written: [u32; 2],
    interrupt_line: u8,
    msi_control: u16,
    msi_address: u64,
    msi_data: u16,
    /// Set when the guest tried to move the BAR (for one log line).
    pub moved: Option<u64>,
}

impl ChannelFunction {
    /// `bar` must be aligned to `size`, a power of two.
    pub fn new(bar: u64, size: u64) -> Self {
        debug_assert!(size.is_power_of_two() && bar.is_multiple_of(size));
        ChannelFunction {
            bar,
            size,
            command: 0,
            bar_written: [bar as u32, (bar >> 32) as u32],
            interrupt_line: 0,
            msi_control: MSI_64BIT,
            msi_address: 0,
            msi_data: 0,
            moved: None,
        }
    }

    /// The vector the driver programmed, once MSI is enabled.
    pub fn msi_vector(&self) -> Option<u8> {
        (self.msi_control & MSI_ENABLE != 0 && self.msi_address >> 20 == 0xFEE)
            .then_some(self.msi_data as u8)
            .filter(|&v| v >= 16)
    }

    fn bar_dword(&self, half: usize) -> u32 {
        // While sizing, the address bits read back as the size mask.
        let value = if self.bar_written[half] == u32::MAX {
            !(self.size - 1)
        } else {
            self.bar
        };
        if half == 0 {
            (value as u32 & !0xF) | BAR_FLAGS as u32
        } else {
            (value >> 32) as u32
        }
    }

    fn read(&self, reg: u8) -> u32 {
        match reg {
            0x00 => u32::from(ids::VENDOR_ID) | u32::from(ids::DEVICE_ID) << 16,
            0x04 => u32::from(self.command) | u32::from(STATUS_CAP_LIST) << 16,
            0x08 => {
                u32::from(ids::REVISION)
                    | u32::from(ids::SUBCLASS) << 16
                    | u32::from(ids::CLASS) << 24
            }
            0x10 => self.bar_dword(0),
            0x14 => self.bar_dword(1),
            0x2C => u32::from(ids::VENDOR_ID) | u32::from(ids::DEVICE_ID) << 16,
            0x34 => u32::from(CAP_OFFSET),
            // Interrupt pin 0: no INTx, MSI only.
            0x3C => u32::from(self.interrupt_line),
            0x40 => u32::from(CAP_ID_MSI) | u32::from(self.msi_control) << 16,
            0x44 => self.msi_address as u32,
            0x48 => (self.msi_address >> 32) as u32,
            0x4C => u32::from(self.msi_data),
            _ => 0,
        }
    }

    /// Writes the bytes of `value` selected by `mask` into dword `reg`.
    fn write(&mut self, reg: u8, value: u32, mask: u32) {
        let merge = |old: u32| (old & !mask) | (value & mask);
        match reg {
            0x04 => self.command = merge(u32::from(self.command)) as u16 & COMMAND_MASK,
            0x10 | 0x14 => {
                let half = usize::from(reg == 0x14);
                let v = merge(self.bar_dword(half));
                self.bar_written[half] = v;
                // Any other value is an attempt to move the BAR: keep the
                // fixed address, note the attempt.
                if v != u32::MAX {
                    let (fixed, addr_bits) = if half == 0 {
                        (self.bar as u32 & !0xF, v & !0xF)
                    } else {
                        ((self.bar >> 32) as u32, v)
                    };
                    if addr_bits != fixed {
                        self.moved = Some(u64::from(v));
                    }
                    self.bar_written[half] = fixed;
                }
            }
            0x3C => self.interrupt_line = merge(u32::from(self.interrupt_line)) as u8,
            0x40 => {
                let ctl = (merge(u32::from(self.msi_control) << 16) >> 16) as u16;
                self.msi_control = MSI_64BIT | (ctl & MSI_ENABLE);
            }
            0x44 => {
                let lo = merge(self.msi_address as u32) & !3;
                self.msi_address = (self.msi_address & !0xFFFF_FFFF) | u64::from(lo);
            }
            0x48 => {
                let hi = merge((self.msi_address >> 32) as u32);
                self.msi_address = (self.msi_address & 0xFFFF_FFFF) | u64::from(hi) << 32;
            }
            0x4C => self.msi_data = merge(u32::from(self.msi_data)) as u16,
            _ => {}
        }
    }
}

/// Bus 0 as one guest sees it.
#[derive(Clone, Debug)]
pub struct PciBus {
    address: u32,
    pub channel: Option<ChannelFunction>,
}

impl PciBus {
    pub fn new(channel: Option<ChannelFunction>) -> Self {
        PciBus {
            address: 0,
            channel,
        }
    }

    pub fn handles(port: u16) -> bool {
        (CONFIG_ADDRESS..CONFIG_DATA + 4).contains(&port)
    }

    /// (device, function, dword register) the address latch selects.
    fn selected(&self) -> Option<(u8, u8, u8)> {
        let a = self.address;
        let bus = (a >> 16) as u8;
        (a & ENABLE != 0 && bus == 0).then_some((
            ((a >> 11) & 0x1F) as u8,
            ((a >> 8) & 7) as u8,
            (a & 0xFC) as u8,
        ))
    }

    fn read_dword(&self) -> u32 {
        match self.selected() {
            Some((0, 0, reg)) => host_bridge(reg),
            Some((d, 0, reg)) if d == ids::DEVICE => {
                self.channel.as_ref().map_or(u32::MAX, |c| c.read(reg))
            }
            _ => u32::MAX,
        }
    }

    pub fn io_in(&mut self, port: u16, size: u8) -> u32 {
        if port == CONFIG_ADDRESS && size == 4 {
            return self.address;
        }
        if port < CONFIG_DATA {
            return u32::MAX;
        }
        let shift = u32::from(port - CONFIG_DATA) * 8;
        let v = self.read_dword() >> shift;
        match size {
            1 => v & 0xFF,
            2 => v & 0xFFFF,
            _ => v,
        }
    }

    pub fn io_out(&mut self, port: u16, size: u8, value: u32) {
        if port == CONFIG_ADDRESS {
            if size == 4 {
                self.address = value & 0x80FF_FFFC;
            }
            return;
        }
        if port < CONFIG_DATA {
            return;
        }
        let shift = u32::from(port - CONFIG_DATA) * 8;
        let width: u32 = match size {
            1 => 0xFF,
            2 => 0xFFFF,
            _ => u32::MAX,
        };
        let mask = width.checked_shl(shift).unwrap_or(0);
        let value = value.checked_shl(shift).unwrap_or(0);
        if let (Some((d, 0, reg)), Some(c)) = (self.selected(), self.channel.as_mut()) {
            if d == ids::DEVICE {
                c.write(reg, value, mask);
            }
        }
    }
}

/// A host bridge with nothing to configure: Linux's type-1 probe wants to
/// find one (or a VGA device) on bus 0 before it trusts the mechanism.
fn host_bridge(reg: u8) -> u32 {
    match reg {
        0x00 => u32::from(ids::HOST_BRIDGE_VENDOR) | u32::from(ids::HOST_BRIDGE_DEVICE) << 16,
        // Class 06/00: host bridge.
        0x08 => 0x0600_0000,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BAR: u64 = 64 << 30;
    const SIZE: u64 = 64 << 20;

    fn cfg(bus: &mut PciBus, dev: u8, reg: u8) -> u32 {
        bus.io_out(
            CONFIG_ADDRESS,
            4,
            ENABLE | u32::from(dev) << 11 | u32::from(reg),
        );
        bus.io_in(CONFIG_DATA, 4)
    }

    fn set(bus: &mut PciBus, dev: u8, reg: u8, v: u32) {
        bus.io_out(
            CONFIG_ADDRESS,
            4,
            ENABLE | u32::from(dev) << 11 | u32::from(reg),
        );
        bus.io_out(CONFIG_DATA, 4, v);
    }

    fn bus() -> PciBus {
        PciBus::new(Some(ChannelFunction::new(BAR, SIZE)))
    }

    #[test]
    fn enumeration_finds_the_bridge_and_the_channel_only() {
        let mut b = bus();
        assert_eq!(cfg(&mut b, 0, 0), 0x0000_564c);
        assert_eq!(cfg(&mut b, 0, 8) >> 16, 0x0600);
        assert_eq!(cfg(&mut b, 1, 0), 0x0001_564c);
        assert_eq!(cfg(&mut b, 1, 8) >> 8, 0x02_80_00);
        for dev in 2..32 {
            assert_eq!(cfg(&mut b, dev, 0), u32::MAX);
        }
        // Another function or bus: nothing.
        b.io_out(CONFIG_ADDRESS, 4, ENABLE | 1 << 11 | 1 << 8);
        assert_eq!(b.io_in(CONFIG_DATA, 4), u32::MAX);
        b.io_out(CONFIG_ADDRESS, 4, ENABLE | 1 << 16 | 1 << 11);
        assert_eq!(b.io_in(CONFIG_DATA, 4), u32::MAX);
        // Without a channel, device 1 is absent.
        let mut none = PciBus::new(None);
        assert_eq!(cfg(&mut none, 1, 0), u32::MAX);
        // The type-1 probe reads the address latch back.
        b.io_out(CONFIG_ADDRESS, 4, 0x8000_0000);
        assert_eq!(b.io_in(CONFIG_ADDRESS, 4), 0x8000_0000);
        // Byte reads of the data port select the right lane.
        b.io_out(CONFIG_ADDRESS, 4, ENABLE | 1 << 11);
        assert_eq!(b.io_in(CONFIG_DATA + 2, 2), 0x0001);
        assert_eq!(b.io_in(CONFIG_DATA + 1, 1), 0x56);
    }

    #[test]
    fn bar_sizing_and_restore_keep_the_fixed_address() {
        let mut b = bus();
        assert_eq!(cfg(&mut b, 1, 0x10), 0xC);
        assert_eq!(cfg(&mut b, 1, 0x14), 0x10);
        set(&mut b, 1, 0x10, u32::MAX);
        set(&mut b, 1, 0x14, u32::MAX);
        let lo = cfg(&mut b, 1, 0x10);
        let hi = cfg(&mut b, 1, 0x14);
        let size = !((u64::from(hi) << 32 | u64::from(lo)) & !0xF) + 1;
        assert_eq!(size, SIZE);
        assert_eq!(lo & 0xF, 0xC, "64-bit prefetchable");
        set(&mut b, 1, 0x10, 0xC);
        set(&mut b, 1, 0x14, 0x10);
        assert_eq!(cfg(&mut b, 1, 0x10), 0xC);
        assert_eq!(cfg(&mut b, 1, 0x14), 0x10);
        assert_eq!(b.channel.as_ref().unwrap().moved, None);
        // Moving it is refused (and noted).
        set(&mut b, 1, 0x14, 0x20);
        assert_eq!(cfg(&mut b, 1, 0x14), 0x10);
        assert_eq!(b.channel.as_ref().unwrap().moved, Some(0x20));
    }

    #[test]
    fn msi_vector_once_enabled() {
        let mut b = bus();
        // Capability list: status bit, pointer, MSI ID.
        assert_ne!(cfg(&mut b, 1, 4) & (1 << 20), 0);
        assert_eq!(cfg(&mut b, 1, 0x34), 0x40);
        assert_eq!(cfg(&mut b, 1, 0x40) & 0xFF, 0x05);
        assert_eq!(b.channel.as_ref().unwrap().msi_vector(), None);
        set(&mut b, 1, 0x44, 0xFEE0_0000);
        set(&mut b, 1, 0x48, 0);
        set(&mut b, 1, 0x4C, 0x41);
        assert_eq!(b.channel.as_ref().unwrap().msi_vector(), None);
        // Enable with a 16-bit write to message control (offset 0x42).
        b.io_out(CONFIG_ADDRESS, 4, ENABLE | 1 << 11 | 0x40);
        b.io_out(CONFIG_DATA + 2, 2, 1);
        assert_eq!(b.channel.as_ref().unwrap().msi_vector(), Some(0x41));
        assert_eq!(cfg(&mut b, 1, 0x40) >> 16, 0x81);
        // Message ID stays 5 whatever is written over it.
        set(&mut b, 1, 0x40, 0xFFFF_FFFF);
        assert_eq!(cfg(&mut b, 1, 0x40), 0x0081_0005);
        // A vector below 16 or an address that is not the APIC's: nothing.
        set(&mut b, 1, 0x4C, 3);
        assert_eq!(b.channel.as_ref().unwrap().msi_vector(), None);
        set(&mut b, 1, 0x4C, 0x41);
        set(&mut b, 1, 0x44, 0x1000);
        assert_eq!(b.channel.as_ref().unwrap().msi_vector(), None);
    }

    #[test]
    fn writes_to_read_only_registers_change_nothing() {
        let mut b = bus();
        for reg in [0x00, 0x08, 0x2C, 0x34] {
            let before = cfg(&mut b, 1, reg);
            set(&mut b, 1, reg, 0x1234_5678);
            assert_eq!(cfg(&mut b, 1, reg), before, "reg {reg:#x}");
        }
        set(&mut b, 0, 0, 0);
        assert_eq!(cfg(&mut b, 0, 0), 0x0000_564c);
        // Odd port widths and disabled addresses never panic.
        b.io_out(CONFIG_ADDRESS, 4, 0x0000_0810);
        assert_eq!(b.io_in(CONFIG_DATA, 4), u32::MAX);
        b.io_out(CONFIG_DATA + 3, 4, u32::MAX);
        b.io_in(CONFIG_DATA + 3, 4);
        b.io_out(CONFIG_ADDRESS + 3, 1, 1);
    }
}
