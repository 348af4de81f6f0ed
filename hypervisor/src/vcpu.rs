//! The boundary between a virtualization backend (VT-x today; AMD SVM could
//! slot in) and everything above it. The backend runs the guest and
//! translates each exit into a [`VmExit`]; CPUID, MSR, I/O and device
//! handling are written once against [`Vcpu`] and never see a VMCS field.

use crate::devices::vectors::VectorSet;

/// General-purpose registers in the encoding order instructions use
/// (0 = RAX, 1 = RCX, 2 = RDX, 3 = RBX, 4 = RSP, 5 = RBP, 6 = RSI, 7 = RDI,
/// 8-15 = R8-R15).
pub type Gpr = u8;
pub const RAX: Gpr = 0;
pub const RCX: Gpr = 1;
pub const RDX: Gpr = 2;
pub const RBX: Gpr = 3;
pub const RSI: Gpr = 6;
pub const RDI: Gpr = 7;

/// Why the guest stopped running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmExit {
    Cpuid,
    Rdmsr {
        msr: u32,
    },
    Wrmsr {
        msr: u32,
        value: u64,
    },
    /// Port I/O. For OUT the value is in RAX; string forms are reported as
    /// such and not emulated.
    Io {
        port: u16,
        size: u8,
        input: bool,
        string: bool,
    },
    Hlt,
    /// A physical interrupt arrived (already acknowledged by the backend).
    HostInterrupt,
    /// The guest can take an interrupt now (requested with
    /// [`Vcpu::request_interrupt_window`]).
    InterruptWindow,
    /// The deadline set with [`Vcpu::set_timer`] has passed.
    Timer,
    /// A write to a local APIC register that the CPU completed in its
    /// register page and left for the caller to act on (the ICR, for an IPI
    /// that is not a plain self-IPI).
    ApicWrite {
        offset: u32,
        value: u32,
    },
    /// The guest ended `vector`, which is marked as needing it, in its
    /// local APIC: a level-triggered line waiting for its EOI, or a vector
    /// the backend showed with others waiting behind it (`vm::vid`).
    ApicEoi {
        vector: u8,
    },
    /// An access to guest-physical memory that is not mapped for it.
    MemoryFault {
        gpa: u64,
        read: bool,
        write: bool,
        exec: bool,
    },
    Hypercall,
    /// XSETBV: XCR number in ECX, value in EDX:EAX.
    Xsetbv,
    /// A control-register access the backend could not absorb.
    ControlRegister {
        qualification: u64,
    },
    /// A virtualization instruction (VMXON, VMCALL-family, INVEPT...): the
    /// guest gets #UD.
    VirtualizationInstruction,
    TripleFault,
    /// The CPU refused to enter the guest; the text says why.
    EntryFailed,
    /// Any other exit; `code` is backend-specific, for the report.
    Other {
        code: u32,
        qualification: u64,
    },
}

/// The local APIC's interrupt state, handed to a CPU that delivers
/// interrupts itself ([`Vcpu::delivers_interrupts`]) before each entry and
/// read back after each exit: pending (IRR) and in-service (ISR) vectors
/// and the task priority move while the guest runs; the rest tells the CPU
/// how to treat them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApicState {
    pub irr: VectorSet,
    pub isr: VectorSet,
    pub tpr: u32,
    /// The APIC ID register and the ICR's destination half, which the CPU
    /// consults to recognise a self-IPI it may deliver on its own.
    pub id: u32,
    pub icr_high: u32,
    /// Software-enabled (SVR bit 8): a disabled APIC delivers nothing.
    pub enabled: bool,
    /// Vectors whose EOI must exit ([`VmExit::ApicEoi`]).
    pub eoi_exits: VectorSet,
}

/// Guest paging mode, for walking the guest's page tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PagingMode {
    None,
    Bits32,
    Pae,
    Long4,
}

/// A virtual CPU as the arch-neutral code sees it.
pub trait Vcpu {
    /// Runs the guest until the next exit.
    fn run(&mut self) -> VmExit;
    fn gpr(&self, r: Gpr) -> u64;
    fn set_gpr(&mut self, r: Gpr, v: u64);
    fn rip(&self) -> u64;
    /// The guest's current privilege level (0 = kernel).
    fn cpl(&self) -> u8;
    /// Moves past the instruction that caused the exit.
    fn skip_instruction(&mut self);
    /// Moves past `len` bytes (for instructions the caller decoded).
    fn advance_rip(&mut self, len: u64);
    /// The guest's time-stamp counter now.
    fn now(&self) -> u64;
    /// RFLAGS.IF.
    fn interrupts_enabled(&self) -> bool;
    /// Whether an external interrupt can be injected right now.
    fn interruptible(&self) -> bool;
    fn inject_interrupt(&mut self, vector: u8);
    /// Whether the CPU delivers the guest's interrupts and retires its EOIs
    /// itself from the state given with [`Vcpu::set_apic_state`] (VT-x
    /// virtual-interrupt delivery). Without it the caller injects each
    /// vector and emulates every APIC access.
    fn delivers_interrupts(&self) -> bool;
    /// Hands the APIC state to the CPU for the next entry; what it shows
    /// the CPU of the pending vectors is `vm::vid::expose`'s choice.
    fn set_apic_state(&mut self, s: &ApicState);
    /// Reads back what the CPU changed while the guest ran (IRR, ISR, TPR).
    fn apic_state(&self, s: &mut ApicState);
    fn inject_exception(&mut self, vector: u8, error_code: Option<u32>);
    fn request_interrupt_window(&mut self, on: bool);
    /// Exit with [`VmExit::Timer`] once the TSC passes `deadline`.
    fn set_timer(&mut self, deadline: Option<u64>);
    fn cr3(&self) -> u64;
    fn cr4(&self) -> u64;
    fn paging_mode(&self) -> PagingMode;
    /// Sets XCR0 for the guest after the caller validated the value.
    fn set_xcr0(&mut self, value: u64);
    /// Prints the backend's view of the guest state (for fatal reports).
    fn dump(&self, out: &mut dyn core::fmt::Write);
}
