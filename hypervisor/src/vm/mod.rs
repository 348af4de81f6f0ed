//! The guest's view of the CPU: CPUID and MSR policy, and the decoder for
//! the MMIO instructions the emulated interrupt controllers see, and the
//! guest's RAM as the hypervisor reads it. Plain
//! Rust, tested on the host.

pub mod cpuid;
pub mod decode;
pub mod msr;
pub mod ram;
