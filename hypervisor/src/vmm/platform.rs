//! One guest's platform: the device models and policies behind the exits,
//! wired together (the UART's interrupt through the IO-APIC into the local
//! APIC, the APIC's timer into the backend's deadline).

use alloc::string::String;

use super::Fate;
use crate::channel::Channel;
use crate::devices::pci::{ChannelFunction, PciBus};
use crate::devices::{ioapic::IoApic, lapic::LocalApic, uart::Uart};
use crate::vcpu::{ApicState, PagingMode, Vcpu};
use crate::vm::ram::GuestRam;
use crate::vm::{cpuid, decode, msr};
use crate::vmm::hypercall::ChannelOps;
use crate::vmm::memmap::CHANNEL_GPA;
use crate::vmm::stats::ExitStats;
use vmlink_abi::hypercall::stat;

pub const APIC_BASE: u64 = 0xFEE0_0000;
pub const IOAPIC_BASE: u64 = 0xFEC0_0000;
const PAGE: u64 = 4096;
const COM1: u16 = 0x3F8;
const COM1_IRQ: u8 = 4;
/// ACPI sleep control register (hardware-reduced FADT): SLP_EN is bit 5.
pub use crate::guest::acpi_tables::SLEEP_CONTROL_PORT;
const RESET_CONTROL_PORT: u16 = 0xCF9;

/// CPUID bits to clear because the VT-x controls that make the
/// instructions work in a guest are off on this CPU, and the XCR0 bits a
/// guest may enable.
#[derive(Clone, Copy, Debug)]
pub struct Hidden {
    pub rdtscp: bool,
    pub invpcid: bool,
    pub xsaves: bool,
    pub xcr0_mask: u64,
}

impl Hidden {
    /// Applies the hiding to one CPUID answer.
    pub fn apply(&self, leaf: u32, sub: u32, r: &mut [u32; 4]) {
        match (leaf, sub) {
            (7, 0) if self.invpcid => r[1] &= !(1 << 10),
            (0xD, 0) => {
                r[0] &= self.xcr0_mask as u32;
                r[3] = 0;
            }
            (0xD, 1) if self.xsaves => r[0] &= !(1 << 3),
            (0x8000_0001, _) if self.rdtscp => r[3] &= !(1 << 27),
            _ => {}
        }
    }
}

pub struct Platform {
    hidden: Hidden,
    /// Whether this guest receives what is typed on the console.
    pub console_input: bool,
    /// The VM's name, for what the hypervisor logs about it.
    pub vm_name: &'static str,
    ram: GuestRam<'static>,
    lapic: LocalApic,
    ioapic: IoApic,
    uart: Uart,
    msrs: msr::GuestMsrs,
    cpuid: cpuid::CpuidConfig,
    uart_irq: bool,
    line: String,
    pci: PciBus,
    /// The channel and which side of it this VM is.
    channel: Option<(&'static Channel, usize)>,
    tsc_hz: u64,
}

impl Platform {
    pub fn new(
        ram: GuestRam<'static>,
        apic_id: u32,
        tsc_hz: u64,
        cpuid: cpuid::CpuidConfig,
        hidden: Hidden,
    ) -> Self {
        Platform {
            hidden,
            console_input: true,
            vm_name: "guest",
            ram,
            lapic: LocalApic::new(apic_id, tsc_hz),
            ioapic: IoApic::new(),
            uart: Uart::new(),
            msrs: msr::GuestMsrs::new(),
            cpuid,
            uart_irq: false,
            line: String::new(),
            pci: PciBus::new(None),
            channel: None,
            tsc_hz,
        }
    }

    /// The guest's TSC frequency.
    pub fn tsc_hz(&self) -> u64 {
        self.tsc_hz
    }

    /// Gives this VM `side` of `channel`: the PCI device with the BAR where
    /// the EPT maps the region.
    pub fn attach_channel(&mut self, channel: &'static Channel, side: usize) {
        let size = channel.layout().region_size;
        self.pci = PciBus::new(Some(ChannelFunction::new(CHANNEL_GPA, size)));
        self.channel = Some((channel, side));
    }

    /// The guest's RAM, by guest-physical address.
    pub fn ram(&self) -> GuestRam<'static> {
        self.ram
    }

    /// The counters the STATS hypercall reads (`hypercall::stat`).
    pub fn counters(&self, stats: &ExitStats) -> [u64; stat::COUNT as usize] {
        let ch = self.channel.map(|(c, s)| c.stats(s)).unwrap_or_default();
        let mut out = [0; stat::COUNT as usize];
        out[stat::EXITS as usize] = stats.total_exits();
        out[stat::INTERRUPTS as usize] = stats.injected_interrupts();
        out[stat::CHANNEL_INTERRUPTS as usize] = ch.interrupts;
        out[stat::DOORBELLS as usize] = ch.doorbells;
        out[stat::MEDIATED_SENDS as usize] = ch.mediated;
        out[stat::HALTED_CYCLES as usize] = stats.halted_cycles();
        for (n, c) in stat::EXIT_CAUSES.zip(stats.causes()) {
            out[n as usize] = c;
        }
        out
    }

    pub fn channel_ops(&self) -> Option<(&dyn ChannelOps, usize)> {
        self.channel.map(|(c, s)| (c as &dyn ChannelOps, s))
    }

    /// The offset into the channel region of `gpa`, if it lies there.
    pub fn channel_offset(&self, gpa: u64) -> Option<u64> {
        let (ch, _) = self.channel?;
        let off = gpa.checked_sub(CHANNEL_GPA)?;
        (off < ch.layout().region_size).then_some(off)
    }

    /// Hands console input to the guest's UART. Called while the guest
    /// idles (a guest waiting for input is halted), not on every exit: under
    /// nested virtualization each host port read is itself an exit.
    pub fn poll_input(&mut self) {
        if self.console_input {
            while let Some(b) = crate::arch::x64::serial::try_read() {
                self.uart.push_input(b);
            }
        }
    }

    /// Advances timers and device interrupt lines to `now`.
    pub fn poll(&mut self, now: u64) {
        self.lapic.poll(now);
        let level = self.uart.irq_pending();
        if level && !self.uart_irq {
            if let Some(v) = self.ioapic.raise(COM1_IRQ) {
                self.lapic.accept(v);
            }
        }
        self.uart_irq = level;
        if let Some((ch, side)) = self.channel {
            if ch.take_pending(side) {
                // Before the driver enabled MSI there is no one to tell; it
                // reads the header when it starts.
                if let Some(v) = self.pci.channel.as_ref().and_then(|f| f.msi_vector()) {
                    self.lapic.accept(v);
                    ch.injected(side);
                }
            }
        }
    }

    /// The guest halted (true) or is about to run again (false): while
    /// halted, a channel notification is polled for rather than sent as an
    /// IPI. After `false`, [`Platform::poll`] must run before the entry.
    pub fn set_idle(&self, idle: bool) {
        if let Some((ch, side)) = self.channel {
            ch.set_idle(side, idle);
        }
    }

    /// While the guest is halted, and at its timer exits: has the channel
    /// notice what the peer published without ringing (see
    /// [`Channel::watch`]).
    pub fn watch_channel(&self) {
        if let Some((ch, side)) = self.channel {
            ch.watch(side);
        }
    }

    /// The device state the `trace` sampler prints.
    pub fn trace(&self, now: u64, out: &mut dyn core::fmt::Write) {
        let _ = write!(
            out,
            "{} pending={:?} uart_irq={} ioapic4={:#x} ",
            self.lapic.summary(now),
            self.lapic.pending(),
            self.uart_irq,
            self.ioapic.entry(COM1_IRQ),
        );
        self.uart.summary(out);
        if let Some((ch, side)) = self.channel {
            let s = ch.stats(side);
            let _ = write!(
                out,
                " ch: doorbells={} interrupts={} msi={:?}",
                s.doorbells,
                s.interrupts,
                self.pci.channel.as_ref().and_then(|f| f.msi_vector())
            );
        }
    }

    pub fn pending_interrupt(&self) -> Option<u8> {
        self.lapic.pending()
    }

    pub fn acknowledge(&mut self, vector: u8) {
        self.lapic.ack(vector);
    }

    /// For a CPU that delivers interrupts itself: the local APIC's state,
    /// with an EOI exit for each vector the I/O APIC delivers level-
    /// triggered (the only EOIs a device model here must hear about).
    pub fn export_apic(&self, s: &mut ApicState) {
        self.lapic.export(s);
        s.eoi_exits = self.ioapic.level_vectors();
    }

    /// What that CPU changed while the guest ran.
    pub fn import_apic(&mut self, s: &ApicState) {
        self.lapic.import(s);
    }

    /// Vectors that became pending since the last call (what a CPU that
    /// delivers interrupts itself will deliver).
    pub fn take_accepted(&mut self) -> u64 {
        self.lapic.take_accepted()
    }

    /// A register write the CPU completed in its register page.
    pub fn apic_write(&mut self, offset: u32, value: u32, now: u64) {
        let ended = self.lapic.write(offset, value, now);
        self.after_apic_write(ended);
    }

    /// An EOI the CPU retired for a vector the I/O APIC asked to hear of.
    pub fn level_eoi(&mut self, vector: u8) {
        self.ioapic.eoi(vector);
    }

    pub fn next_deadline(&self) -> Option<u64> {
        self.lapic.next_deadline()
    }

    pub fn cpuid(&self, leaf: u32, sub: u32, guest_cr4: u64) -> [u32; 4] {
        let mut cfg = self.cpuid;
        cfg.guest_cr4_osxsave = guest_cr4 & (1 << 18) != 0;
        let mut r = cpuid::guest_cpuid(leaf, sub, &host_cpuid, &cfg);
        self.hidden.apply(leaf, sub, &mut r);
        r
    }

    pub fn rdmsr(&mut self, msr_index: u32, now: u64) -> Result<u64, msr::MsrFault> {
        let r = msr::rdmsr(&mut self.msrs, &mut self.lapic, msr_index, now);
        if r.is_err() {
            self.gp_once(msr_index);
        }
        r
    }

    pub fn wrmsr(&mut self, msr_index: u32, value: u64, now: u64) -> Result<(), msr::MsrFault> {
        match msr::wrmsr(&mut self.msrs, &mut self.lapic, msr_index, value, now) {
            Ok(ended) => {
                self.after_apic_write(ended);
                Ok(())
            }
            Err(e) => {
                self.gp_once(msr_index);
                Err(e)
            }
        }
    }

    fn gp_once(&mut self, msr_index: u32) {
        if self.msrs.first_fault(msr_index) {
            crate::log!(
                "{}: #GP for MSR {msr_index:#x} (not emulated; logged once)",
                self.vm_name
            );
        }
    }

    /// Forwards an EOI to the I/O APIC and reports refused IPIs.
    fn after_apic_write(&mut self, ended: Option<u8>) {
        if let Some(v) = ended {
            self.ioapic.eoi(v);
        }
        if let Some(r) = self.lapic.refused.take() {
            crate::log!(
                "{}: {r} refused: a guest may only interrupt its own CPU",
                self.vm_name
            );
        }
    }

    pub fn io_in(&mut self, port: u16, size: u8) -> u32 {
        match port {
            p if PciBus::handles(p) => self.pci.io_in(port, size),
            COM1..=0x3FF if size == 1 => u32::from(self.uart.io_read((port - COM1) as u8)),
            _ => u32::MAX,
        }
    }

    pub fn io_out(&mut self, port: u16, size: u8, value: u32) -> Option<Fate> {
        match port {
            RESET_CONTROL_PORT if size == 1 && value & 0x4 != 0 => return Some(Fate::Reset),
            p if PciBus::handles(p) => {
                self.pci.io_out(port, size, value);
                if let Some(to) = self.pci.channel.as_mut().and_then(|f| f.moved.take()) {
                    crate::log!(
                        "{}: the channel BAR stays at {CHANNEL_GPA:#x} (guest wrote {to:#x})",
                        self.vm_name
                    );
                }
            }
            COM1..=0x3FF if size == 1 => self.uart.io_write((port - COM1) as u8, value as u8),
            SLEEP_CONTROL_PORT if value & (1 << 5) != 0 => return Some(Fate::PoweredOff),
            0x64 if value == 0xFE => return Some(Fate::Reset),
            _ => {}
        }
        None
    }

    pub fn is_mmio(&self, gpa: u64) -> bool {
        (APIC_BASE..APIC_BASE + PAGE).contains(&gpa)
            || (IOAPIC_BASE..IOAPIC_BASE + PAGE).contains(&gpa)
    }

    /// Emulates the instruction at the guest's RIP against the APIC or
    /// IO-APIC page it touched.
    pub fn emulate_mmio(&mut self, vcpu: &mut impl Vcpu, gpa: u64) -> Result<(), &'static str> {
        let bytes = self.fetch(vcpu)?;
        let access = decode::decode(&bytes).map_err(|_| "instruction not understood")?;
        let now = vcpu.now();
        if access.write {
            let value = match (access.imm, access.reg) {
                (Some(i), _) => i,
                (None, Some(r)) => vcpu.gpr(r),
                (None, None) => return Err("write without a source"),
            };
            let value = value as u32;
            if gpa >= APIC_BASE {
                let ended = self.lapic.write((gpa - APIC_BASE) as u32, value, now);
                self.after_apic_write(ended);
            } else {
                self.ioapic.write((gpa - IOAPIC_BASE) as u32, value);
            }
        } else {
            let v = if gpa >= APIC_BASE {
                self.lapic.read((gpa - APIC_BASE) as u32, now)
            } else {
                self.ioapic.read((gpa - IOAPIC_BASE) as u32)
            };
            let r = access.reg.ok_or("read without a destination")?;
            vcpu.set_gpr(r, u64::from(v));
        }
        vcpu.advance_rip(u64::from(access.len));
        Ok(())
    }

    /// Up to 15 instruction bytes at the guest's RIP.
    fn fetch(&self, vcpu: &impl Vcpu) -> Result<[u8; 15], &'static str> {
        let mode = match vcpu.paging_mode() {
            PagingMode::None => decode::PagingMode::None,
            PagingMode::Bits32 => decode::PagingMode::Bits32,
            PagingMode::Pae => decode::PagingMode::Pae,
            PagingMode::Long4 => decode::PagingMode::Long4,
        };
        decode::fetch(&self.ram, vcpu.cr3(), vcpu.rip(), mode)
    }

    /// Prints the guest's complete console lines with its prefix.
    pub fn flush_console(&mut self, vm: &str) {
        while let Some(l) = self.uart.take_line() {
            self.line.clear();
            self.line
                .push_str(core::str::from_utf8(&l).unwrap_or("<non-utf8 line>"));
            crate::console::vm_line(vm, format_args!("{}", self.line.trim_end()));
        }
    }
}

fn host_cpuid(leaf: u32, sub: u32) -> [u32; 4] {
    let r = crate::arch::x64::cpu::cpuid(leaf, sub);
    [r.eax, r.ebx, r.ecx, r.edx]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_features_are_cleared() {
        let h = Hidden {
            rdtscp: true,
            invpcid: true,
            xsaves: true,
            xcr0_mask: 0b111,
        };
        let mut r = [u32::MAX; 4];
        h.apply(7, 0, &mut r);
        assert_eq!(r[1] & (1 << 10), 0);
        let mut r = [u32::MAX; 4];
        h.apply(0xD, 0, &mut r);
        assert_eq!((r[0], r[3]), (0b111, 0));
        let mut r = [u32::MAX; 4];
        h.apply(0x8000_0001, 0, &mut r);
        assert_eq!(r[3] & (1 << 27), 0);
        let keep = Hidden {
            rdtscp: false,
            invpcid: false,
            xsaves: false,
            xcr0_mask: 0b111,
        };
        let mut r = [u32::MAX; 4];
        keep.apply(7, 0, &mut r);
        assert_eq!(r[1], u32::MAX);
    }
}
