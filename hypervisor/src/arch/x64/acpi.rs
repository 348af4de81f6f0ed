//! Reading the firmware's ACPI tables through the `acpi` crate, over the
//! identity map.

use acpi::{AcpiHandler, AcpiTables, PhysicalMapping};
use core::ptr::NonNull;

use crate::bootinfo::AcpiRoot;
use crate::cpus::MadtCpu;

#[derive(Clone, Copy)]
pub struct IdentityMapped;

impl AcpiHandler for IdentityMapped {
    unsafe fn map_physical_region<T>(
        &self,
        physical_address: usize,
        size: usize,
    ) -> PhysicalMapping<Self, T> {
        // SAFETY: all physical memory is identity-mapped (paging.rs), so the
        // physical address is a valid pointer to the table.
        unsafe {
            PhysicalMapping::new(
                physical_address,
                NonNull::new(physical_address as *mut T).expect("ACPI table at address 0"),
                size,
                size,
                *self,
            )
        }
    }

    fn unmap_physical_region<T>(_region: &PhysicalMapping<Self, T>) {}
}

/// Calls `f` with every processor entry of the MADT. Returns an error text
/// when the tables cannot be found or read.
pub fn for_each_cpu(
    root: Option<AcpiRoot>,
    mut f: impl FnMut(MadtCpu),
) -> Result<(), &'static str> {
    // SAFETY: the root table address comes from the boot loader, or the
    // crate searches the BIOS area for the RSDP; all of it is identity-mapped
    // firmware memory the frame allocator does not hand out.
    let tables = unsafe {
        match root {
            Some(r) => AcpiTables::from_rsdt(IdentityMapped, r.revision, r.address as usize),
            None => AcpiTables::search_for_rsdp_bios(IdentityMapped),
        }
    }
    .map_err(|_| "no valid ACPI root table found")?;
    let madt = tables
        .find_table::<acpi::madt::Madt>()
        .map_err(|_| "no ACPI MADT")?;
    for e in madt.get().entries() {
        match e {
            acpi::madt::MadtEntry::LocalApic(l) => f(MadtCpu {
                apic_id: u32::from(l.apic_id),
                enabled: l.flags & 1 != 0,
                online_capable: l.flags & 2 != 0,
            }),
            acpi::madt::MadtEntry::LocalX2Apic(l) => f(MadtCpu {
                apic_id: l.x2apic_id,
                enabled: l.flags & 1 != 0,
                online_capable: l.flags & 2 != 0,
            }),
            _ => {}
        }
    }
    Ok(())
}
