//! The guest's view of the CPU: CPUID and MSR policy, and the decoder for
//! the MMIO instructions the emulated interrupt controllers see. Plain
//! Rust, tested on the host.

pub mod cpuid;
pub mod decode;
pub mod msr;
