//! The vmlink hypervisor.
//!
//! Hardware-touching code lives in `arch` (thin modules over one piece of
//! hardware each); the logic beside it (boot information, memory ranges,
//! frame allocation, CPU lists, VT-x capability decoding) is plain Rust that
//! `cargo test` runs on the host. `start` is the boot flow that ties them
//! together.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod arch;
pub mod bootinfo;
pub mod channel;
pub mod console;
pub mod cpus;
pub mod devices;
pub mod frames;
pub mod guest;
pub mod heap;
pub mod partition;
pub mod range;
pub mod selftest;
pub mod start;
pub mod vcpu;
pub mod vm;
pub mod vmm;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
