//! x86-64 hardware access. Each module is a thin layer over one piece of
//! hardware; the decisions are made by the arch-neutral code that calls it.

pub mod acpi;
pub mod cpu;
pub mod gdt;
pub mod idt;
pub mod lapic;
pub mod paging;
pub mod percpu;
pub mod pit;
pub mod power;
pub mod serial;
pub mod smp;
pub mod vmx;
