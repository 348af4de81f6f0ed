//! The guest's view of the CPU: CPUID and MSR policy, the decoder for the
//! MMIO instructions the emulated interrupt controllers see, the guest's
//! RAM as the hypervisor reads it, and what virtual-interrupt delivery is
//! shown. Plain Rust, tested on the host.

pub mod cpuid;
pub mod decode;
pub mod msr;
pub mod ram;
pub mod vid;
