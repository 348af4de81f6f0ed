//! Emulated devices of a guest's platform: its local APIC, an I/O APIC, a
//! 16550 UART and PCI configuration space with the channel device. Plain Rust state machines; time comes in as TSC values.

pub mod ioapic;
pub mod lapic;
pub mod pci;
pub mod uart;
pub mod vectors;
