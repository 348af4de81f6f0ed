//! An emulated local APIC, served through both interfaces: the xAPIC page
//! (register offsets) and the x2APIC MSRs. Linux under an unknown
//! hypervisor uses the xAPIC page; x2APIC is there for guests that enable it.
//!
//! Time is the guest's TSC. The timer counts at the crystal frequency that
//! CPUID leaf 0x15 reports (see `vm::cpuid::crystal`), divided by the
//! divide configuration; TSC-deadline mode compares against the TSC itself.

use crate::devices::vectors::VectorSet;
use crate::vcpu::ApicState;
use crate::vm::cpuid::crystal;

const ID: u32 = 0x20;
const VERSION: u32 = 0x30;
const TPR: u32 = 0x80;
const PPR: u32 = 0xA0;
const EOI: u32 = 0xB0;
const LDR: u32 = 0xD0;
const DFR: u32 = 0xE0;
const SVR: u32 = 0xF0;
const ISR0: u32 = 0x100;
const TMR0: u32 = 0x180;
const IRR0: u32 = 0x200;
const ESR: u32 = 0x280;
const LVT_CMCI: u32 = 0x2F0;
const ICR_LOW: u32 = 0x300;
const ICR_HIGH: u32 = 0x310;
const LVT_TIMER: u32 = 0x320;
const LVT_ERROR: u32 = 0x370;
const TIMER_INITIAL: u32 = 0x380;
const TIMER_CURRENT: u32 = 0x390;
const TIMER_DIVIDE: u32 = 0x3E0;
const SELF_IPI: u32 = 0x3F0;

const MASKED: u32 = 1 << 16;
const SVR_ENABLE: u32 = 1 << 8;

/// Version 0x14; seven LVT entries (CMCI included), so "max LVT" is 6.
const VERSION_VALUE: u32 = 0x0006_0014;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TimerMode {
    OneShot,
    Periodic,
    TscDeadline,
}

/// An IPI the guest asked for that vmlink does not deliver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefusedIpi {
    pub icr: u64,
    /// Whether the APIC was in x2APIC mode (where the destination lies).
    pub x2apic: bool,
}

impl core::fmt::Display for RefusedIpi {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let mode = match (self.icr >> 8) & 7 {
            0 => "fixed",
            1 => "lowest-priority",
            2 => "SMI",
            4 => "NMI",
            5 => "INIT",
            6 => "SIPI",
            _ => "reserved-mode",
        };
        write!(f, "{mode} IPI (vector {:#x}) to ", self.icr & 0xFF)?;
        match (self.icr >> 18) & 3 {
            0 => {
                let dest = if self.x2apic {
                    self.icr >> 32
                } else {
                    self.icr >> 56
                };
                write!(f, "APIC ID {dest}")?;
            }
            1 => write!(f, "self")?,
            2 => write!(f, "all CPUs")?,
            _ => write!(f, "all other CPUs")?,
        }
        write!(f, " (ICR {:#x})", self.icr)
    }
}

/// See [`LocalApic::summary`].
pub struct LapicSummary {
    irr: Option<u8>,
    isr: Option<u8>,
    tpr: u32,
    timer_lvt: u32,
    deadline_in: Option<i128>,
}

impl core::fmt::Display for LapicSummary {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for (name, v) in [("irr", self.irr), ("isr", self.isr)] {
            match v {
                Some(v) => write!(f, "{name}={v:#x} ")?,
                None => write!(f, "{name}=- ")?,
            }
        }
        write!(
            f,
            "tpr={:#x} lvtt={:#x} timer_in=",
            self.tpr, self.timer_lvt
        )?;
        match self.deadline_in {
            Some(d) => write!(f, "{d}"),
            None => write!(f, "off"),
        }
    }
}

#[derive(Clone)]
pub struct LocalApic {
    id: u32,
    x2apic: bool,
    tpr: u32,
    ldr: u32,
    dfr: u32,
    svr: u32,
    isr: VectorSet,
    tmr: VectorSet,
    irr: VectorSet,
    esr: u32,
    /// CMCI, timer, thermal, perf, LINT0, LINT1, error (0x2F0, 0x320..0x370).
    lvt: [u32; 7],
    icr: u64,
    initial: u32,
    divide_reg: u32,
    /// TSC when the current count was last (re)started.
    start: u64,
    /// One-shot that already fired.
    fired: bool,
    tsc_deadline: u64,
    tsc_per_tick: u64,
    /// IPIs refused since the caller last looked.
    pub refused: Option<RefusedIpi>,
    /// Vectors that became pending (not already pending) since the caller
    /// last looked: the interrupts a CPU that delivers them itself will
    /// deliver.
    accepted: u64,
}

fn lvt_index(off: u32) -> Option<usize> {
    match off {
        LVT_CMCI => Some(0),
        0x320..=LVT_ERROR if off.is_multiple_of(0x10) => {
            Some(1 + ((off - LVT_TIMER) / 0x10) as usize)
        }
        _ => None,
    }
}

impl LocalApic {
    pub fn new(id: u32, tsc_hz: u64) -> Self {
        let (_, ratio) = crystal(tsc_hz);
        LocalApic {
            id,
            x2apic: false,
            tpr: 0,
            ldr: 0,
            dfr: u32::MAX,
            svr: 0xFF,
            isr: VectorSet::EMPTY,
            tmr: VectorSet::EMPTY,
            irr: VectorSet::EMPTY,
            esr: 0,
            lvt: [MASKED; 7],
            icr: 0,
            initial: 0,
            divide_reg: 0,
            start: 0,
            fired: false,
            tsc_deadline: 0,
            tsc_per_tick: u64::from(ratio),
            refused: None,
            accepted: 0,
        }
    }

    pub fn id(&self) -> u32 {
        self.id
    }

    pub fn x2apic(&self) -> bool {
        self.x2apic
    }

    pub fn set_x2apic(&mut self, on: bool) {
        self.x2apic = on;
        if on {
            self.ldr = ((self.id >> 4) << 16) | (1 << (self.id & 15));
        }
    }

    fn timer_lvt(&self) -> u32 {
        self.lvt[1]
    }

    fn mode(&self) -> TimerMode {
        match (self.timer_lvt() >> 17) & 3 {
            1 => TimerMode::Periodic,
            2 => TimerMode::TscDeadline,
            _ => TimerMode::OneShot,
        }
    }

    /// Divide configuration: bits 0, 1 and 3 encode 2, 4, ..., 128, 1.
    fn divisor(&self) -> u64 {
        let v = (self.divide_reg & 3) | ((self.divide_reg >> 1) & 4);
        if v == 7 {
            1
        } else {
            2 << v
        }
    }

    fn tsc_per_count(&self) -> u64 {
        self.tsc_per_tick * self.divisor()
    }

    fn period_tsc(&self) -> u64 {
        u64::from(self.initial) * self.tsc_per_count()
    }

    fn current_count(&self, now: u64) -> u32 {
        if self.initial == 0 || self.mode() == TimerMode::TscDeadline {
            return 0;
        }
        let elapsed = now.saturating_sub(self.start) / self.tsc_per_count();
        match self.mode() {
            TimerMode::Periodic => self.initial - (elapsed % u64::from(self.initial)) as u32,
            _ if self.fired || elapsed >= u64::from(self.initial) => 0,
            _ => self.initial - elapsed as u32,
        }
    }

    /// TSC value at which the timer next wants to interrupt.
    pub fn next_deadline(&self) -> Option<u64> {
        if self.timer_lvt() & MASKED != 0 || self.svr & SVR_ENABLE == 0 {
            return None;
        }
        match self.mode() {
            TimerMode::TscDeadline => (self.tsc_deadline != 0).then_some(self.tsc_deadline),
            TimerMode::OneShot if self.initial != 0 && !self.fired => {
                Some(self.start + self.period_tsc())
            }
            TimerMode::Periodic if self.initial != 0 => Some(self.start + self.period_tsc()),
            _ => None,
        }
    }

    /// Fires the timer if its deadline has passed.
    pub fn poll(&mut self, now: u64) {
        let Some(deadline) = self.next_deadline() else {
            return;
        };
        if now < deadline {
            return;
        }
        let vector = (self.timer_lvt() & 0xFF) as u8;
        match self.mode() {
            TimerMode::TscDeadline => self.tsc_deadline = 0,
            TimerMode::OneShot => self.fired = true,
            TimerMode::Periodic => {
                // Rearm from the deadline, not from now: no drift.
                let p = self.period_tsc();
                let missed = (now - deadline) / p;
                self.start = deadline + missed * p;
            }
        }
        self.accept(vector);
    }

    /// Sets a vector pending (from the timer, a self-IPI or the I/O APIC).
    pub fn accept(&mut self, vector: u8) {
        if vector >= 16 && self.irr.insert(vector) {
            self.accepted += 1;
        }
    }

    /// How many vectors became pending since the last call.
    pub fn take_accepted(&mut self) -> u64 {
        core::mem::take(&mut self.accepted)
    }

    /// The state a CPU that delivers interrupts itself works from; the
    /// caller adds which vectors' EOIs must exit.
    pub fn export(&self, s: &mut ApicState) {
        s.irr = self.irr;
        s.isr = self.isr;
        s.tpr = self.tpr;
        s.id = self.read(ID, 0);
        s.icr_high = (self.icr >> 32) as u32;
        s.enabled = self.svr & SVR_ENABLE != 0;
    }

    /// Takes back what that CPU changed while the guest ran: vectors it
    /// delivered (IRR to ISR), EOIs it retired, TPR writes and self-IPIs.
    pub fn import(&mut self, s: &ApicState) {
        self.irr = s.irr;
        self.isr = s.isr;
        self.tpr = s.tpr & 0xFF;
    }

    /// SDM 11.8.3.1: TPR if its class is at least the highest in-service
    /// class, else that class.
    fn ppr(&self) -> u32 {
        let isr = self.isr.highest().map_or(0, |v| u32::from(v) & 0xF0);
        if self.tpr & 0xF0 >= isr {
            self.tpr
        } else {
            isr
        }
    }

    /// The vector to deliver now, if any beats the processor priority.
    pub fn pending(&self) -> Option<u8> {
        if self.svr & SVR_ENABLE == 0 {
            return None;
        }
        let v = self.irr.highest()?;
        (u32::from(v) & 0xF0 > self.ppr() & 0xF0).then_some(v)
    }

    /// The vector was injected: IRR to ISR.
    pub fn ack(&mut self, vector: u8) {
        self.irr.remove(vector);
        self.isr.insert(vector);
    }

    /// EOI: ends the highest in-service vector and returns it.
    fn eoi(&mut self) -> Option<u8> {
        let v = self.isr.highest()?;
        self.isr.remove(v);
        Some(v)
    }

    /// One line of state for the hypervisor's `trace` sampler: the highest
    /// pending and in-service vectors, TPR, and the timer relative to `now`.
    pub fn summary(&self, now: u64) -> LapicSummary {
        LapicSummary {
            irr: self.irr.highest(),
            isr: self.isr.highest(),
            tpr: self.tpr,
            timer_lvt: self.timer_lvt(),
            deadline_in: self.next_deadline().map(|d| d as i128 - i128::from(now)),
        }
    }

    /// Register read through the xAPIC page.
    pub fn read(&self, off: u32, now: u64) -> u32 {
        match off & 0xFF0 {
            ID => {
                if self.x2apic {
                    self.id
                } else {
                    self.id << 24
                }
            }
            VERSION => VERSION_VALUE,
            TPR => self.tpr,
            PPR => self.ppr(),
            LDR => self.ldr,
            DFR => self.dfr,
            SVR => self.svr,
            o @ ISR0..=0x170 => self.isr.register(((o - ISR0) / 0x10) as usize),
            o @ TMR0..=0x1F0 => self.tmr.register(((o - TMR0) / 0x10) as usize),
            o @ IRR0..=0x270 => self.irr.register(((o - IRR0) / 0x10) as usize),
            ESR => self.esr,
            ICR_LOW => self.icr as u32,
            ICR_HIGH => (self.icr >> 32) as u32,
            TIMER_INITIAL => self.initial,
            TIMER_CURRENT => self.current_count(now),
            TIMER_DIVIDE => self.divide_reg,
            o => lvt_index(o).map_or(0, |i| self.lvt[i]),
        }
    }

    /// Register write through the xAPIC page. Returns the vector an EOI
    /// ended (the I/O APIC needs it for level-triggered lines).
    pub fn write(&mut self, off: u32, value: u32, now: u64) -> Option<u8> {
        match off & 0xFF0 {
            ID if !self.x2apic => {} // read-only here
            TPR => self.tpr = value & 0xFF,
            EOI => return self.eoi(),
            LDR if !self.x2apic => self.ldr = value & 0xFF00_0000,
            DFR if !self.x2apic => self.dfr = value | 0x0FFF_FFFF,
            SVR => {
                self.svr = value & 0x13FF;
                if value & SVR_ENABLE == 0 {
                    for l in self.lvt.iter_mut() {
                        *l |= MASKED;
                    }
                }
            }
            ESR => self.esr = 0,
            ICR_HIGH if !self.x2apic => {
                self.icr = (self.icr & 0xFFFF_FFFF) | (u64::from(value) << 32)
            }
            ICR_LOW => {
                self.icr = (self.icr & !0xFFFF_FFFF) | u64::from(value & !(1 << 12));
                self.send_ipi();
            }
            SELF_IPI if self.x2apic => self.accept(value as u8),
            TIMER_INITIAL => {
                if self.mode() != TimerMode::TscDeadline {
                    self.initial = value;
                    self.start = now;
                    self.fired = false;
                }
            }
            TIMER_DIVIDE => {
                // Keep the count continuous across a divider change.
                let current = self.current_count(now);
                self.divide_reg = value & 0xB;
                if self.initial != 0 && current != 0 {
                    let done = u64::from(self.initial - current) * self.tsc_per_count();
                    self.start = now.saturating_sub(done);
                }
            }
            o => {
                if let Some(i) = lvt_index(o) {
                    let mut v = value & 0x0007_17FF;
                    if self.svr & SVR_ENABLE == 0 {
                        v |= MASKED;
                    }
                    let was = self.mode();
                    self.lvt[i] = v;
                    if i == 1 && was != self.mode() {
                        // A mode change stops the timer (SDM 11.5.4.1).
                        self.initial = 0;
                        self.tsc_deadline = 0;
                    }
                }
            }
        }
        None
    }

    /// Only fixed-mode IPIs to this very APIC are delivered: a partitioned
    /// guest owns exactly one CPU. Everything else is recorded as refused.
    fn send_ipi(&mut self) {
        let icr = self.icr;
        let vector = (icr & 0xFF) as u8;
        let mode = (icr >> 8) & 7;
        let shorthand = (icr >> 18) & 3;
        let dest = if self.x2apic {
            (icr >> 32) as u32
        } else {
            (icr >> 56) as u32
        };
        let to_self = shorthand == 1 || (shorthand == 0 && dest == self.id);
        if mode == 0 && to_self {
            self.accept(vector);
        } else {
            self.refused = Some(RefusedIpi {
                icr,
                x2apic: self.x2apic,
            });
        }
    }

    /// IA32_TSC_DEADLINE.
    pub fn tsc_deadline(&self) -> u64 {
        if self.mode() == TimerMode::TscDeadline {
            self.tsc_deadline
        } else {
            0
        }
    }

    pub fn set_tsc_deadline(&mut self, v: u64) {
        if self.mode() == TimerMode::TscDeadline {
            self.tsc_deadline = v;
        }
    }

    /// x2APIC MSR read (0x800-0x8FF); None means #GP.
    pub fn rdmsr(&self, msr: u32, now: u64) -> Option<u64> {
        let off = (msr - 0x800) << 4;
        if !self.x2apic || matches!(off, EOI | SELF_IPI | DFR | ICR_HIGH) {
            return None;
        }
        Some(match off {
            ICR_LOW => self.icr,
            _ => u64::from(self.read(off, now)),
        })
    }

    /// x2APIC MSR write; false means #GP.
    pub fn wrmsr(&mut self, msr: u32, value: u64, now: u64) -> Option<Option<u8>> {
        let off = (msr - 0x800) << 4;
        if !self.x2apic
            || matches!(
                off,
                ID | VERSION | PPR | LDR | DFR | ICR_HIGH | TIMER_CURRENT
            )
        {
            return None;
        }
        if off == ICR_LOW {
            self.icr = value & !(1 << 12);
            self.send_ipi();
            return Some(None);
        }
        Some(self.write(off, value as u32, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HZ: u64 = 1_000_000_000;

    fn apic() -> LocalApic {
        let mut a = LocalApic::new(2, HZ);
        a.write(SVR, 0x1FF, 0);
        a
    }

    #[test]
    fn identity_and_version() {
        let a = apic();
        assert_eq!(a.read(ID, 0), 2 << 24);
        assert_eq!(a.read(VERSION, 0) & 0xFF, 0x14);
    }

    #[test]
    fn priority_eoi_and_tpr() {
        let mut a = apic();
        a.accept(0x31);
        a.accept(0x52);
        assert_eq!(a.pending(), Some(0x52));
        a.ack(0x52);
        assert_eq!(a.pending(), None, "0x31 is below the in-service class");
        assert_eq!(a.read(PPR, 0) & 0xF0, 0x50);
        assert_eq!(a.write(EOI, 0, 0), Some(0x52));
        assert_eq!(a.pending(), Some(0x31));
        a.write(TPR, 0x40, 0);
        assert_eq!(a.pending(), None, "TPR masks class 3");
        a.write(TPR, 0, 0);
        assert_eq!(a.read(IRR0 + 0x10, 0), 1 << (0x31 - 32));
    }

    #[test]
    fn one_shot_timer() {
        let mut a = apic();
        a.write(TIMER_DIVIDE, 0xB, 0); // divide by 1
        a.write(LVT_TIMER, 0xEF, 0);
        a.write(TIMER_INITIAL, 1000, 100);
        assert_eq!(a.next_deadline(), Some(1100));
        assert_eq!(a.read(TIMER_CURRENT, 600), 500);
        a.poll(1099);
        assert_eq!(a.pending(), None);
        a.poll(1100);
        assert_eq!(a.pending(), Some(0xEF));
        assert_eq!(a.next_deadline(), None, "one-shot fires once");
        assert_eq!(a.read(TIMER_CURRENT, 5000), 0);
    }

    #[test]
    fn periodic_timer_does_not_drift() {
        let mut a = apic();
        a.write(TIMER_DIVIDE, 0x0, 0); // divide by 2
        a.write(LVT_TIMER, (1 << 17) | 0xEC, 0);
        a.write(TIMER_INITIAL, 50, 0);
        assert_eq!(a.next_deadline(), Some(100));
        a.poll(130);
        assert_eq!(a.next_deadline(), Some(200), "rearmed from the deadline");
        a.poll(450);
        assert_eq!(a.next_deadline(), Some(500));
    }

    #[test]
    fn tsc_deadline_and_masking() {
        let mut a = apic();
        a.write(LVT_TIMER, (2 << 17) | 0xEB, 0);
        a.set_tsc_deadline(5000);
        assert_eq!(a.tsc_deadline(), 5000);
        a.poll(5000);
        assert_eq!(a.pending(), Some(0xEB));
        assert_eq!(a.tsc_deadline(), 0);
        a.write(LVT_TIMER, MASKED | (2 << 17) | 0xEB, 0);
        a.set_tsc_deadline(6000);
        assert_eq!(a.next_deadline(), None, "masked timer wants no wake-up");
    }

    #[test]
    fn divide_values() {
        let mut a = apic();
        for (reg, div) in [
            (0x0, 2),
            (0x1, 4),
            (0x2, 8),
            (0x3, 16),
            (0x8, 32),
            (0x9, 64),
            (0xA, 128),
            (0xB, 1),
        ] {
            a.write(TIMER_DIVIDE, reg, 0);
            assert_eq!(a.divisor(), div, "{reg:#x}");
        }
    }

    #[test]
    fn only_self_ipis_are_delivered() {
        let mut a = apic();
        a.write(ICR_HIGH, 2 << 24, 0);
        a.write(ICR_LOW, 0x40, 0);
        assert_eq!(a.pending(), Some(0x40));
        a.write(ICR_HIGH, 5 << 24, 0);
        a.write(ICR_LOW, 0x41, 0);
        assert!(a.refused.is_some(), "other CPU");
        a.refused = None;
        a.write(ICR_LOW, 0x500, 0); // INIT
        assert_eq!(
            a.refused.take().unwrap().to_string(),
            "INIT IPI (vector 0x0) to APIC ID 5 (ICR 0x500000000000500)"
        );
        a.write(ICR_LOW, 0x699, 0); // SIPI
        assert!(a
            .refused
            .take()
            .unwrap()
            .to_string()
            .starts_with("SIPI IPI (vector 0x99)"));
        a.write(ICR_LOW, (3 << 18) | 0x400, 0); // NMI to all others
        assert!(a
            .refused
            .take()
            .unwrap()
            .to_string()
            .contains("NMI IPI (vector 0x0) to all other CPUs"));
        a.write(ICR_LOW, (2 << 18) | 0x43, 0); // fixed to all, self included
        assert!(a.refused.take().is_some());
        assert_eq!(
            a.pending(),
            Some(0x40),
            "nothing delivered by the refused ones"
        );
        a.write(ICR_LOW, (1 << 18) | 0x42, 0); // shorthand self
        assert!(a.refused.is_none());
    }

    #[test]
    fn hardware_delivery_round_trip() {
        let mut a = apic();
        a.write(TPR, 0x20, 0);
        a.accept(0x41);
        a.accept(0x41);
        a.accept(0x61);
        assert_eq!(a.take_accepted(), 2, "a vector already pending counts once");
        assert_eq!(a.take_accepted(), 0);
        let mut s = ApicState::default();
        a.export(&mut s);
        assert!(s.enabled);
        assert_eq!(s.id, 2 << 24);
        assert_eq!(s.tpr, 0x20);
        assert_eq!(s.irr, VectorSet::of(&[0x41, 0x61]));
        // The CPU delivered 0x61, the guest ended it, then 0x41 was delivered.
        s.irr = VectorSet::EMPTY;
        s.isr = VectorSet::of(&[0x41]);
        s.tpr = 0;
        a.import(&s);
        assert_eq!(a.read(ISR0 + 0x20, 0), 1 << 1);
        assert_eq!(a.read(IRR0 + 0x60, 0), 0);
        assert_eq!(a.read(TPR, 0), 0);
        assert_eq!(a.pending(), None, "0x41 is in service");
        assert_eq!(a.write(EOI, 0, 0), Some(0x41));
        a.write(SVR, 0xFF, 0);
        a.export(&mut s);
        assert!(!s.enabled);
    }

    #[test]
    fn x2apic_msrs() {
        let mut a = apic();
        assert_eq!(a.rdmsr(0x802, 0), None, "x2APIC off");
        a.set_x2apic(true);
        assert_eq!(a.rdmsr(0x802, 0), Some(2));
        assert_eq!(a.wrmsr(0x802, 7, 0), None, "ID is read-only");
        a.wrmsr(0x830, 0x45 | (2u64 << 32), 0).unwrap();
        assert_eq!(a.pending(), Some(0x45));
        a.wrmsr(0x83F, 0x46, 0).unwrap();
        assert_eq!(a.irr.highest(), Some(0x46));
    }
}
