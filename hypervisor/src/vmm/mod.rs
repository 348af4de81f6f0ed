//! Running a VM: the arch-neutral exit loop. Each exit the backend reports
//! is answered here with the CPUID/MSR policies (`vm/`) and the device
//! models (`devices/`); what a guest may not do stops that guest alone.

pub mod hypercall;
pub mod launch;
pub mod memmap;
pub mod platform;
pub mod stats;

use core::fmt::Write;

use crate::vcpu::{ApicState, Vcpu, VmExit, RAX, RBX, RCX, RDI, RDX, RSI};
use platform::Platform;
use stats::ExitStats;

/// How a VM ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fate {
    PoweredOff,
    Reset,
    TripleFault,
    /// Halted with interrupts off and nothing that could wake it.
    Halted,
    /// Stopped by vmlink for something it did; the text says what.
    Stopped(alloc::string::String),
}

impl Fate {
    pub fn is_clean(&self) -> bool {
        matches!(self, Fate::PoweredOff)
    }
}

impl core::fmt::Display for Fate {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Fate::PoweredOff => write!(f, "powered off"),
            Fate::Reset => write!(f, "requested a reset (treated as stop)"),
            Fate::TripleFault => write!(f, "triple fault"),
            Fate::Halted => write!(f, "halted with interrupts disabled"),
            Fate::Stopped(why) => write!(f, "stopped: {why}"),
        }
    }
}

/// A VM's exit loop state.
pub struct Vm<V: Vcpu> {
    pub name: &'static str,
    pub vcpu: V,
    pub platform: Platform,
    pub stats: ExitStats,
    /// Host-supported XCR0 bits a guest may enable.
    pub xcr0_mask: u64,
    /// The `trace` sampler, when the hypervisor's command line asks for it.
    pub trace: Option<Trace>,
    /// TSC cycles the current exit spent waiting in `idle` for the guest's
    /// next interrupt (not charged to the exit).
    waited: u64,
    /// A halt longer than this (TSC cycles) gets one line of guest state,
    /// once per VM: a guest that waits that long for an interrupt in a
    /// scripted run is more likely stuck than idle, and the line says on
    /// what, without `trace` having been on. 0: never.
    pub long_halt: u64,
}

/// Prints a line of guest state every `every` TSC ticks: where the guest
/// is, what its interrupt controllers hold and how it exits. It is how a
/// guest that stops making progress is diagnosed without a debugger.
pub struct Trace {
    pub every: u64,
    next: u64,
    last: ExitStats,
}

impl Trace {
    pub fn new(every: u64) -> Self {
        Trace {
            every: every.max(1),
            next: 0,
            last: ExitStats::default(),
        }
    }
}

const GP: u8 = 13;
const UD: u8 = 6;

impl<V: Vcpu> Vm<V> {
    /// Runs until the guest stops; returns why.
    pub fn run(&mut self) -> Fate {
        loop {
            self.deliver_interrupts();
            let exit = self.vcpu.run();
            let t0 = self.vcpu.now();
            if self.vcpu.delivers_interrupts() {
                let mut s = ApicState::default();
                self.vcpu.apic_state(&mut s);
                self.platform.import_apic(&s);
            }
            self.stats.count(&exit);
            self.sample();
            self.waited = 0;
            let fate = self.handle(&exit);
            self.platform.flush_console(self.name);
            if let Some(fate) = fate {
                return fate;
            }
            let spent = self.vcpu.now().saturating_sub(t0 + self.waited);
            self.stats.charge(&exit, spent);
        }
    }

    /// Moves device interrupts into the guest, or asks to be told when it
    /// can take them. A CPU that delivers interrupts itself gets the local
    /// APIC's state instead and delivers when the guest can take them.
    fn deliver_interrupts(&mut self) {
        let now = self.vcpu.now();
        self.platform.poll(now);
        if self.vcpu.delivers_interrupts() {
            self.stats.injected_many(self.platform.take_accepted());
            let mut s = ApicState::default();
            self.platform.export_apic(&mut s);
            self.vcpu.set_apic_state(&s);
            self.vcpu.set_timer(self.platform.next_deadline());
            return;
        }
        match self.platform.pending_interrupt() {
            Some(v) if self.vcpu.interruptible() => {
                self.vcpu.inject_interrupt(v);
                self.platform.acknowledge(v);
                self.stats.injected();
                self.vcpu.request_interrupt_window(false);
            }
            Some(_) => self.vcpu.request_interrupt_window(true),
            None => self.vcpu.request_interrupt_window(false),
        }
        self.vcpu.set_timer(self.platform.next_deadline());
    }

    fn handle(&mut self, exit: &VmExit) -> Option<Fate> {
        match *exit {
            VmExit::Cpuid => {
                let leaf = self.vcpu.gpr(RAX) as u32;
                let sub = self.vcpu.gpr(RCX) as u32;
                let r = self.platform.cpuid(leaf, sub, self.vcpu.cr4());
                for (reg, v) in [(RAX, r[0]), (RBX, r[1]), (RCX, r[2]), (RDX, r[3])] {
                    self.vcpu.set_gpr(reg, u64::from(v));
                }
                self.vcpu.skip_instruction();
            }
            VmExit::Rdmsr { msr } => {
                let now = self.vcpu.now();
                match self.platform.rdmsr(msr, now) {
                    Ok(v) => {
                        self.vcpu.set_gpr(RAX, v & 0xFFFF_FFFF);
                        self.vcpu.set_gpr(RDX, v >> 32);
                        self.vcpu.skip_instruction();
                    }
                    Err(_) => self.vcpu.inject_exception(GP, Some(0)),
                }
            }
            VmExit::Wrmsr { msr, value } => {
                let now = self.vcpu.now();
                match self.platform.wrmsr(msr, value, now) {
                    Ok(()) => self.vcpu.skip_instruction(),
                    Err(_) => self.vcpu.inject_exception(GP, Some(0)),
                }
            }
            VmExit::Io {
                port,
                size,
                input,
                string,
            } => {
                if string {
                    return Some(
                        self.stop(format_args!("string I/O on port {port:#x} is not emulated")),
                    );
                }
                let mask = if size >= 4 {
                    u64::from(u32::MAX)
                } else {
                    (1u64 << (size * 8)) - 1
                };
                if input {
                    let v = self.platform.io_in(port, size);
                    let rax = self.vcpu.gpr(RAX);
                    self.vcpu
                        .set_gpr(RAX, (rax & !mask) | (u64::from(v) & mask));
                } else {
                    let v = (self.vcpu.gpr(RAX) & mask) as u32;
                    if let Some(fate) = self.platform.io_out(port, size, v) {
                        return Some(fate);
                    }
                }
                self.vcpu.skip_instruction();
            }
            VmExit::Hlt => {
                self.vcpu.skip_instruction();
                return self.idle();
            }
            VmExit::MemoryFault {
                gpa,
                read,
                write,
                exec,
            } => {
                if let Some(off) = self.platform.channel_offset(gpa) {
                    let rip = self.vcpu.rip();
                    return Some(self.stop(format_args!(
                        "{} channel offset {off:#x} (gpa={gpa:#x}), which it may only read, at rip={rip:#x}",
                        if exec { "executed" } else { "wrote to" },
                    )));
                }
                if exec || !self.platform.is_mmio(gpa) {
                    let rip = self.vcpu.rip();
                    return Some(self.stop(format_args!(
                        "access outside its memory: gpa={gpa:#x} ({}{}{}) at rip={rip:#x}",
                        if read { "r" } else { "-" },
                        if write { "w" } else { "-" },
                        if exec { "x" } else { "-" },
                    )));
                }
                if let Err(e) = self.platform.emulate_mmio(&mut self.vcpu, gpa) {
                    return Some(self.stop(format_args!("MMIO at gpa={gpa:#x}: {e}")));
                }
            }
            VmExit::Xsetbv => {
                let xcr = self.vcpu.gpr(RCX) as u32;
                let value = (self.vcpu.gpr(RDX) << 32) | (self.vcpu.gpr(RAX) & 0xFFFF_FFFF);
                if xcr_valid(xcr, value, self.xcr0_mask) {
                    self.vcpu.set_xcr0(value);
                    self.vcpu.skip_instruction();
                } else {
                    self.vcpu.inject_exception(GP, Some(0));
                }
            }
            VmExit::Hypercall => {
                let call = hypercall::Call {
                    nr: self.vcpu.gpr(RAX),
                    args: [self.vcpu.gpr(RDI), self.vcpu.gpr(RSI), self.vcpu.gpr(RDX)],
                    cpl: self.vcpu.cpl(),
                };
                if call.nr == vmlink_abi::hypercall::STATS {
                    self.stats.stats_read();
                }
                let (platform, stats) = (&self.platform, &self.stats);
                // Gathered only if the call reads them (STATS).
                let counter = |i: usize| platform.counters(stats).get(i).copied();
                let caller = hypercall::Caller {
                    ram: platform.ram(),
                    counter: &counter,
                    channel: platform.channel_ops(),
                };
                let r = hypercall::dispatch(call, &caller);
                self.vcpu.set_gpr(RAX, r as u64);
                self.vcpu.skip_instruction();
            }
            VmExit::ApicWrite { offset, value } => {
                let now = self.vcpu.now();
                self.platform.apic_write(offset, value, now);
            }
            VmExit::ApicEoi { vector } => self.platform.level_eoi(vector),
            VmExit::VirtualizationInstruction => self.vcpu.inject_exception(UD, None),
            VmExit::HostInterrupt | VmExit::InterruptWindow => {}
            // The guest's timer: a guest that never halts still hears of
            // frames its peer did not ring for (see Channel::watch) within
            // a tick.
            VmExit::Timer => self.platform.watch_channel(),
            VmExit::TripleFault => return Some(Fate::TripleFault),
            VmExit::EntryFailed => return Some(self.stop(format_args!("VM entry failed"))),
            VmExit::ControlRegister { qualification } => {
                return Some(self.stop(format_args!(
                    "unsupported control-register access {qualification:#x}"
                )))
            }
            VmExit::Other {
                code,
                qualification,
            } => {
                return Some(self.stop(format_args!("unhandled exit {code} ({qualification:#x})")))
            }
        }
        None
    }

    /// HLT: waits for the next interrupt (a timer, or console input).
    fn idle(&mut self) -> Option<Fate> {
        let t0 = self.vcpu.now();
        self.platform.set_idle(true);
        let fate = self.wait_for_interrupt();
        // The next `deliver_interrupts` polls the channel again.
        self.platform.set_idle(false);
        self.waited = self.vcpu.now().saturating_sub(t0);
        self.stats.halted(self.waited);
        fate
    }

    fn wait_for_interrupt(&mut self) -> Option<Fate> {
        let start = self.vcpu.now();
        loop {
            self.sample();
            let now = self.vcpu.now();
            if self.long_halt != 0 && now.saturating_sub(start) > self.long_halt {
                self.long_halt = 0;
                let mut line = alloc::string::String::new();
                self.state_line(now, &mut line);
                crate::log!(
                    "{}: halted for over {} s (reported once): {line}",
                    self.name,
                    (now - start) / self.platform.tsc_hz().max(1)
                );
            }
            self.platform.poll_input();
            self.platform.watch_channel();
            self.platform.poll(now);
            // `poll` turned any channel notification into an interrupt.
            if self.platform.pending_interrupt().is_some() {
                return None;
            }
            if !self.vcpu.interrupts_enabled() && self.platform.next_deadline().is_none() {
                return Some(Fate::Halted);
            }
            core::hint::spin_loop();
        }
    }

    fn sample(&mut self) {
        let Some(next) = self.trace.as_ref().map(|t| t.next) else {
            return;
        };
        let now = self.vcpu.now();
        if now < next {
            return;
        }
        let mut line = alloc::string::String::new();
        let _ = write!(line, "{}: trace ", self.name);
        self.state_line(now, &mut line);
        let _ = write!(line, " exits:");
        let Some(t) = self.trace.as_mut() else {
            return;
        };
        t.next = now + t.every;
        for (kind, n) in self.stats.nonzero() {
            let d = n - t.last.get(kind);
            if d > 0 {
                let _ = write!(line, " {kind}+{d}");
            }
        }
        t.last = self.stats.clone();
        crate::log!("{line}");
    }

    /// Where the guest is and what its interrupt controllers and devices
    /// hold (the `trace` line, the long-halt report).
    fn state_line(&self, now: u64, line: &mut alloc::string::String) {
        let _ = write!(
            line,
            "rip={:#x} if={} interruptible={} ",
            self.vcpu.rip(),
            self.vcpu.interrupts_enabled() as u8,
            self.vcpu.interruptible() as u8,
        );
        self.platform.trace(now, line);
    }

    /// Stops the VM with a report including the backend's register dump.
    fn stop(&self, why: core::fmt::Arguments) -> Fate {
        let mut s = alloc::string::String::new();
        let _ = write!(s, "{why}");
        let mut dump = alloc::string::String::new();
        self.vcpu.dump(&mut dump);
        crate::log!("{}: {} [{}]", self.name, s, dump);
        Fate::Stopped(s)
    }
}

/// XSETBV rules (SDM vol. 1, 13.3): XCR0 only, x87 always on, AVX needs
/// SSE, and nothing the host does not support.
pub fn xcr_valid(xcr: u32, value: u64, supported: u64) -> bool {
    xcr == 0 && value & 1 != 0 && value & !supported == 0 && (value & 4 == 0 || value & 2 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xsetbv_rules() {
        assert!(xcr_valid(0, 0b111, 0b111));
        assert!(xcr_valid(0, 0b011, 0b111));
        assert!(!xcr_valid(0, 0b110, 0b111), "x87 must stay on");
        assert!(!xcr_valid(0, 0b101, 0b111), "AVX needs SSE");
        assert!(!xcr_valid(0, 0b1011, 0b111), "unsupported bit");
        assert!(!xcr_valid(1, 0b1, 0b111), "only XCR0");
    }
}
