//! VMREAD/VMWRITE on the current VMCS. A failure here means vmlink wrote a
//! field the CPU does not have: a bug, reported with the field number.

pub use x86::vmx::vmcs::{control, guest, host, ro};

/// Reads a field of the current VMCS.
pub fn read(field: u32) -> u64 {
    // SAFETY: VMREAD only reads the current VMCS; callers run in VMX root
    // operation with a VMCS loaded (vcpu.rs keeps it current on this CPU).
    unsafe { x86::bits64::vmx::vmread(field) }
        .unwrap_or_else(|e| panic!("VMREAD {field:#x} failed: {e:?}"))
}

/// Writes a field of the current VMCS.
pub fn write(field: u32, value: u64) {
    // SAFETY: as for `read`; writing a VMCS field changes only what the next
    // VM entry loads, which the caller chose.
    unsafe { x86::bits64::vmx::vmwrite(field, value) }
        .unwrap_or_else(|e| panic!("VMWRITE {field:#x}={value:#x} failed: {e:?}"))
}
