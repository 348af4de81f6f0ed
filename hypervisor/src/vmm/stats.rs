//! Per-VM exit statistics for the run summary.

use crate::vcpu::VmExit;

/// Exit kinds as counted and printed.
pub const KINDS: [&str; 19] = [
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
];

pub const INJECTED: usize = 18;

#[derive(Clone, Default)]
pub struct ExitStats {
    counts: [u64; KINDS.len()],
    /// TSC cycles the hypervisor spent answering each kind, from the
    /// backend's return to the next entry, less any wait for the guest's
    /// next interrupt (an idle guest's HLT is not a cost of the exit).
    cycles: [u64; KINDS.len()],
    /// TSC cycles the guest spent halted (waiting in HLT for an interrupt).
    halted: u64,
}

pub fn kind(e: &VmExit) -> usize {
    match e {
        VmExit::Cpuid => 0,
        VmExit::Rdmsr { .. } => 1,
        VmExit::Wrmsr { .. } => 2,
        VmExit::Io { .. } => 3,
        VmExit::Hlt => 4,
        VmExit::HostInterrupt => 5,
        VmExit::InterruptWindow => 6,
        VmExit::Timer => 7,
        VmExit::MemoryFault { .. } => 8,
        VmExit::Hypercall => 9,
        VmExit::Xsetbv => 10,
        VmExit::ControlRegister { .. } => 11,
        VmExit::VirtualizationInstruction => 12,
        VmExit::TripleFault => 13,
        VmExit::EntryFailed => 14,
        VmExit::Other { .. } => 15,
        VmExit::ApicWrite { .. } => 16,
        VmExit::ApicEoi { .. } => 17,
    }
}

impl ExitStats {
    pub fn count(&mut self, e: &VmExit) {
        self.counts[kind(e)] += 1;
    }

    /// Charges `cycles` of handling to the kind of exit `e`.
    pub fn charge(&mut self, e: &VmExit, cycles: u64) {
        self.cycles[kind(e)] += cycles;
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
}
