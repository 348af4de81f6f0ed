//! Everything both sides of the hypervisor/guest boundary must agree on.
//!
//! This crate is the single source of truth: the hypervisor uses it directly,
//! and the Linux driver's C header is generated from it.
#![cfg_attr(not(test), no_std)]

pub mod channel;

/// CPUID leaf range the hypervisor answers with its own identity.
pub const CPUID_HV_BASE: u32 = 0x4000_0000;
/// Where the guest runs: EAX = 0 (feature bits, none yet), EBX = the
/// physical CPU index, ECX = the VM's index in the partition, EDX = its RAM
/// in MiB.
pub const CPUID_HV_INFO: u32 = 0x4000_0001;
/// Highest hypervisor leaf implemented.
pub const CPUID_HV_MAX: u32 = 0x4000_0001;
/// The 12-byte signature returned in EBX, ECX, EDX of leaf 0x40000000.
pub const CPUID_SIGNATURE: [u8; 12] = *b"vmlinkvmlink";

/// Version of this ABI; bumped on any incompatible change.
pub const ABI_VERSION: u32 = 1;

/// The last line the hypervisor prints on its console before it stops the
/// machine, followed by `status=<word>` (`ok`, `fail`, `panic`, `novmx`).
/// The test harness waits for this line.
pub const HALT_MARKER: &str = "vmlink: system halted";

/// I/O port of QEMU's `isa-debug-exit` device, which the hypervisor writes
/// its exit status to (QEMU then exits with `(status << 1) | 1`).
pub const QEMU_DEBUG_EXIT_PORT: u16 = 0xf4;

/// Exit statuses written to [`QEMU_DEBUG_EXIT_PORT`].
pub mod exit_status {
    pub const OK: u8 = 0x10;
    pub const FAIL: u8 = 0x11;
    pub const PANIC: u8 = 0x12;
    pub const NO_VMX: u8 = 0x13;
}

/// Hypercalls (VMCALL with the number in RAX, arguments in RDI, RSI, RDX;
/// the result comes back in RAX: 0 or a positive value on success, one of
/// the `HC_ERR_*` codes on failure).
pub mod hypercall {
    /// Returns [`ABI_VERSION`](crate::ABI_VERSION).
    pub const VERSION: u64 = 0;
    /// The driver is ready (RDI: the channel's interrupt vector as the
    /// guest programmed it is taken from the device's MSI registers, so no
    /// argument). The peer sees `peer_state::ATTACHED` and gets an interrupt.
    pub const CHANNEL_ATTACH: u64 = 1;
    /// The driver is going away; its buffers are the peer's no longer.
    pub const CHANNEL_DETACH: u64 = 2;
    /// Interrupt the peer (RDI: 0, the only channel). Returns 0, or
    /// `HC_ERR_PEER_DOWN` when the peer has not attached.
    pub const DOORBELL: u64 = 3;
    /// Hypervisor-mediated send, the "traditional path" the benchmarks
    /// compare against: RDI = guest-physical address of a frame in the
    /// caller's RAM, RSI = its length (1..=`channel::BUFFER_SIZE`), RDX = a
    /// free buffer number of the caller's section (the driver keeps its
    /// buffer accounting). The hypervisor copies the frame into that buffer,
    /// writes a descriptor (no flags: checksums complete) at the caller's
    /// `tx_prod`, advances it and interrupts the peer, every time. Returns
    /// 0, `HC_ERR_INVALID` (frame not in RAM, bad length or buffer) or
    /// `HC_ERR_PEER_DOWN`.
    pub const MEDIATED_SEND: u64 = 4;
    /// Reads one of the calling VM's counters (RDI = a `stat::*` number);
    /// returns it (saturated to i64::MAX), or `HC_ERR_INVALID`. The exit
    /// of a STATS call is not in the counters it reads: a measurement that
    /// reads them before and after would otherwise count its own reads.
    pub const STATS: u64 = 5;
    /// Highest number in use.
    pub const MAX: u64 = STATS;

    /// Counters [`STATS`] reads, for the driver's `ethtool -S` and the
    /// benchmarks' exits-per-packet figures.
    pub mod stat {
        /// VM exits of this VM so far.
        pub const EXITS: u64 = 0;
        /// Interrupts injected into this VM (all sources).
        pub const INTERRUPTS: u64 = 1;
        /// Channel interrupts injected into this VM.
        pub const CHANNEL_INTERRUPTS: u64 = 2;
        /// Doorbells this VM rang.
        pub const DOORBELLS: u64 = 3;
        /// Frames this VM sent through [`super::MEDIATED_SEND`].
        pub const MEDIATED_SENDS: u64 = 4;
        /// TSC cycles this VM's CPU spent halted (in HLT, waiting for an
        /// interrupt): what it did not spend is its busy time, exactly,
        /// where the guest's own accounting samples at its timer tick.
        pub const HALTED_CYCLES: u64 = 5;
        /// This VM's exits by cause (they add up to [`EXITS`]), so that a
        /// benchmark can say which mechanism its exits come from. HLT: the
        /// guest idled.
        pub const EXITS_HLT: u64 = 6;
        /// A physical interrupt arrived while the guest ran (a doorbell
        /// from the peer, or the hypervisor's own timer).
        pub const EXITS_HOST_INTERRUPT: u64 = 7;
        /// The guest's local APIC timer expired.
        pub const EXITS_TIMER: u64 = 8;
        /// Writes to IA32_TSC_DEADLINE: the guest arming its timer.
        pub const EXITS_TSC_DEADLINE: u64 = 9;
        /// Other MSR reads and writes.
        pub const EXITS_MSR: u64 = 10;
        /// Local APIC emulation: register writes, EOIs the CPU could not
        /// complete alone, interrupt windows.
        pub const EXITS_APIC: u64 = 11;
        /// Accesses to unmapped guest-physical memory (emulated MMIO).
        pub const EXITS_MEMORY: u64 = 12;
        /// Hypercalls other than STATS (doorbells, mediated sends, ...).
        pub const EXITS_HYPERCALL: u64 = 13;
        /// Port I/O (serial console, PCI configuration, ...).
        pub const EXITS_IO: u64 = 14;
        /// Everything else (CPUID, XSETBV, control registers, ...).
        pub const EXITS_OTHER: u64 = 15;
        pub const COUNT: u64 = 16;
        /// The counters' names, in number order, as the driver shows them
        /// (with an `hv_` prefix) in `ethtool -S`.
        pub const NAMES: [&str; COUNT as usize] = [
            "exits",
            "interrupts",
            "channel_interrupts",
            "doorbells",
            "mediated_sends",
            "halted_cycles",
            "exits_hlt",
            "exits_host_interrupt",
            "exits_timer",
            "exits_tsc_deadline",
            "exits_msr",
            "exits_apic",
            "exits_memory",
            "exits_hypercall",
            "exits_io",
            "exits_other",
        ];
        /// The numbers of the by-cause exit counters.
        pub const EXIT_CAUSES: core::ops::Range<u64> = EXITS_HLT..COUNT;
        /// How many exit causes there are.
        pub const CAUSES: usize = (COUNT - EXITS_HLT) as usize;

        /// The exit causes' names (`exits_hlt`, ...), in number order.
        pub fn cause_names() -> &'static [&'static str] {
            &NAMES[EXITS_HLT as usize..]
        }
    }
}

/// The peer has no driver attached (or its VM stopped).
pub const HC_ERR_PEER_DOWN: i64 = -3;
/// The VM has no channel.
pub const HC_ERR_NO_CHANNEL: i64 = -4;
/// Hypercalls are for the guest kernel: user mode (CPL > 0) gets this.
pub const HC_ERR_PRIVILEGE: i64 = -5;

/// The hypercall number is not known.
pub const HC_ERR_UNKNOWN: i64 = -1;
/// An argument is out of range.
pub const HC_ERR_INVALID: i64 = -2;

pub mod config;

#[cfg(test)]
mod tests {
    use super::hypercall::stat::*;

    #[test]
    fn stat_names_follow_the_numbers() {
        let named = [
            (EXITS, "exits"),
            (INTERRUPTS, "interrupts"),
            (CHANNEL_INTERRUPTS, "channel_interrupts"),
            (DOORBELLS, "doorbells"),
            (MEDIATED_SENDS, "mediated_sends"),
            (HALTED_CYCLES, "halted_cycles"),
            (EXITS_HLT, "exits_hlt"),
            (EXITS_HOST_INTERRUPT, "exits_host_interrupt"),
            (EXITS_TIMER, "exits_timer"),
            (EXITS_TSC_DEADLINE, "exits_tsc_deadline"),
            (EXITS_MSR, "exits_msr"),
            (EXITS_APIC, "exits_apic"),
            (EXITS_MEMORY, "exits_memory"),
            (EXITS_HYPERCALL, "exits_hypercall"),
            (EXITS_IO, "exits_io"),
            (EXITS_OTHER, "exits_other"),
        ];
        assert_eq!(named.len() as u64, COUNT);
        for (n, name) in named {
            assert_eq!(NAMES[n as usize], name);
        }
        assert_eq!(EXIT_CAUSES.end, COUNT);
        assert_eq!(cause_names().len(), CAUSES);
        assert_eq!(cause_names()[0], "exits_hlt");
    }
}
