//! Per-VM exit statistics for the run summary.

use crate::vcpu::VmExit;

use vmlink_abi::hypercall::stat::CAUSES;

/// Exit kinds as counted and printed.
pub const KINDS: [&str; 20] = [
    "cpuid",
    "rdmsr",
    "wrmsr",
    "io",
    "hlt",
    "host-interrupt",
    "interrupt-window",
    "timer",
    "memory-fault",
    "hypercall",
    "xsetbv",
    "control-register",
    "virtualization-instruction",
    "triple-fault",
    "entry-failed",
    "other",
    "apic-write",
    "apic-eoi",
    "injected-interrupts",
    "stats-read",
];

pub const INJECTED: usize = 18;
/// STATS hypercalls: listed in the summary, but neither in the exit total
/// nor in the counters the guest reads, which would otherwise count the
/// reads that measure them.
const STATS_READ: usize = 19;
const HYPERCALL: usize = 9;
/// IA32_TSC_DEADLINE: its writes are counted on their own, as the guest
/// arming its timer.
const MSR_TSC_DEADLINE: u32 = 0x6e0;

#[derive(Clone, Default)]
pub struct ExitStats {
    counts: [u64; KINDS.len()],
    /// TSC cycles the hypervisor spent answering each kind, from the
    /// backend's return to the next entry, less any wait for the guest's
    /// next interrupt (an idle guest's HLT is not a cost of the exit).
    cycles: [u64; KINDS.len()],
    /// TSC cycles the guest spent halted (waiting in HLT for an interrupt).
    halted: u64,
    /// WRMSRs to IA32_TSC_DEADLINE (also counted under "wrmsr").
    tsc_deadline: u64,
    /// The exit being handled is a STATS read (its cycles go there too).
    reading_stats: bool,
}

// Indices into KINDS of the exits that `causes` groups.
const RDMSR: usize = 1;
const WRMSR: usize = 2;
const IO: usize = 3;
const HLT: usize = 4;
const HOST_INTERRUPT: usize = 5;
const INTERRUPT_WINDOW: usize = 6;
const TIMER: usize = 7;
const MEMORY_FAULT: usize = 8;
const APIC_WRITE: usize = 16;
const APIC_EOI: usize = 17;

pub fn kind(e: &VmExit) -> usize {
    match e {
        VmExit::Cpuid => 0,
        VmExit::Rdmsr { .. } => RDMSR,
        VmExit::Wrmsr { .. } => WRMSR,
        VmExit::Io { .. } => IO,
        VmExit::Hlt => HLT,
        VmExit::HostInterrupt => HOST_INTERRUPT,
        VmExit::InterruptWindow => INTERRUPT_WINDOW,
        VmExit::Timer => TIMER,
        VmExit::MemoryFault { .. } => MEMORY_FAULT,
        VmExit::Hypercall => HYPERCALL,
        VmExit::Xsetbv => 10,
        VmExit::ControlRegister { .. } => 11,
        VmExit::VirtualizationInstruction => 12,
        VmExit::TripleFault => 13,
        VmExit::EntryFailed => 14,
        VmExit::Other { .. } => 15,
        VmExit::ApicWrite { .. } => APIC_WRITE,
        VmExit::ApicEoi { .. } => APIC_EOI,
    }
}

impl ExitStats {
    pub fn count(&mut self, e: &VmExit) {
        self.counts[kind(e)] += 1;
        self.reading_stats = false;
        if matches!(e, VmExit::Wrmsr { msr, .. } if *msr == MSR_TSC_DEADLINE) {
            self.tsc_deadline += 1;
        }
    }

    /// The hypercall just counted was a STATS read: it moves out of the
    /// exit counts (see [`STATS_READ`]).
    pub fn stats_read(&mut self) {
        if self.counts[HYPERCALL] > 0 && !self.reading_stats {
            self.counts[HYPERCALL] -= 1;
            self.counts[STATS_READ] += 1;
            self.reading_stats = true;
        }
    }

    /// Exits by cause, in `hypercall::stat::EXIT_CAUSES` order (HLT, host
    /// interrupt, timer, TSC deadline, other MSRs, APIC, memory, hypercall,
    /// I/O, other). They add up to [`Self::total_exits`].
    pub fn causes(&self) -> [u64; CAUSES] {
        let k = |i: usize| self.counts[i];
        let mut c = [
            k(HLT),
            k(HOST_INTERRUPT),
            k(TIMER),
            self.tsc_deadline,
            k(RDMSR) + k(WRMSR) - self.tsc_deadline,
            k(INTERRUPT_WINDOW) + k(APIC_WRITE) + k(APIC_EOI),
            k(MEMORY_FAULT),
            k(HYPERCALL),
            k(IO),
            0,
        ];
        c[CAUSES - 1] = self.total_exits() - c.iter().sum::<u64>();
        c
    }

    /// Charges `cycles` of handling to the kind of exit `e`.
    pub fn charge(&mut self, e: &VmExit, cycles: u64) {
        let k = if self.reading_stats {
            STATS_READ
        } else {
            kind(e)
        };
        self.cycles[k] += cycles;
    }

    /// Mean handling cycles per exit of each kind that occurred.
    pub fn mean_cycles(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        KINDS[..INJECTED]
            .iter()
            .zip(self.counts.iter().zip(self.cycles.iter()))
            .filter(|(_, (n, _))| **n > 0)
            .map(|(k, (n, c))| (*k, c / n))
    }

    /// The guest waited `cycles` in HLT.
    pub fn halted(&mut self, cycles: u64) {
        self.halted += cycles;
    }

    pub fn halted_cycles(&self) -> u64 {
        self.halted
    }

    pub fn injected(&mut self) {
        self.injected_many(1);
    }

    pub fn injected_many(&mut self, n: u64) {
        self.counts[INJECTED] += n;
    }

    pub fn get(&self, name: &str) -> u64 {
        KINDS
            .iter()
            .position(|k| *k == name)
            .map_or(0, |i| self.counts[i])
    }

    pub fn injected_interrupts(&self) -> u64 {
        self.counts[INJECTED]
    }

    pub fn total_exits(&self) -> u64 {
        self.counts[..INJECTED].iter().sum()
    }

    /// Non-zero counters, in table order.
    pub fn nonzero(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        KINDS
            .iter()
            .zip(self.counts.iter())
            .filter(|(_, c)| **c > 0)
            .map(|(k, c)| (*k, *c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_kind() {
        let mut s = ExitStats::default();
        s.count(&VmExit::Cpuid);
        s.count(&VmExit::Cpuid);
        s.count(&VmExit::Io {
            port: 0x3f8,
            size: 1,
            input: false,
            string: false,
        });
        s.injected();
        s.halted(5);
        s.halted(7);
        assert_eq!(s.halted_cycles(), 12);
        assert_eq!(s.get("cpuid"), 2);
        assert_eq!(s.get("io"), 1);
        assert_eq!(s.total_exits(), 3);
        let v: Vec<_> = s.nonzero().collect();
        assert_eq!(v, [("cpuid", 2), ("io", 1), ("injected-interrupts", 1)]);
        s.charge(&VmExit::Cpuid, 100);
        s.charge(&VmExit::Cpuid, 300);
        let m: Vec<_> = s.mean_cycles().collect();
        assert_eq!(m, [("cpuid", 200), ("io", 0)]);
    }

    #[test]
    fn causes_add_up_and_stats_reads_are_not_exits() {
        let mut s = ExitStats::default();
        for e in [
            VmExit::Hlt,
            VmExit::Wrmsr {
                msr: 0x6e0,
                value: 1,
            },
            VmExit::Wrmsr {
                msr: 0x6e0,
                value: 2,
            },
            VmExit::Wrmsr {
                msr: 0x10,
                value: 0,
            },
            VmExit::Rdmsr { msr: 0x1b },
            VmExit::ApicEoi { vector: 0x30 },
            VmExit::InterruptWindow,
            VmExit::Timer,
            VmExit::Cpuid,
            VmExit::Hypercall,
            VmExit::Hypercall,
        ] {
            s.count(&e);
        }
        s.stats_read();
        s.stats_read();
        s.charge(&VmExit::Hypercall, 500);
        s.count(&VmExit::Hypercall);
        s.charge(&VmExit::Hypercall, 100);
        assert_eq!(s.total_exits(), 11);
        assert_eq!(s.causes(), [1, 0, 1, 2, 2, 2, 0, 2, 0, 1]);
        assert_eq!(s.causes().iter().sum::<u64>(), s.total_exits());
        assert_eq!(s.get("stats-read"), 1);
        for (i, name) in [
            (RDMSR, "rdmsr"),
            (WRMSR, "wrmsr"),
            (IO, "io"),
            (HLT, "hlt"),
            (HOST_INTERRUPT, "host-interrupt"),
            (INTERRUPT_WINDOW, "interrupt-window"),
            (TIMER, "timer"),
            (MEMORY_FAULT, "memory-fault"),
            (HYPERCALL, "hypercall"),
            (APIC_WRITE, "apic-write"),
            (APIC_EOI, "apic-eoi"),
            (STATS_READ, "stats-read"),
        ] {
            assert_eq!(KINDS[i], name);
        }
        // The STATS read's cycles are not the other hypercalls' cost.
        let m: Vec<_> = s.mean_cycles().collect();
        assert!(m.contains(&("hypercall", 50)), "{m:?}");
    }
}
