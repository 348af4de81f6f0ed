//! Emulated devices of a guest's platform: its local APIC, an I/O APIC and
//! a 16550 UART. Plain Rust state machines; time comes in as TSC values.

pub mod ioapic;
pub mod lapic;
pub mod uart;
