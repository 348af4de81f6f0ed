//! The list of CPUs the firmware describes (ACPI MADT), reduced to the ones
//! vmlink can start.

/// Most CPUs vmlink manages; more are reported and left alone.
pub const MAX_CPUS: usize = 64;

/// One processor entry of the MADT, as the arch layer reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MadtCpu {
    pub apic_id: u32,
    /// Flags bit 0: enabled.
    pub enabled: bool,
    /// Flags bit 1: can be enabled later (hot-plug); not started at boot.
    pub online_capable: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuList {
    ids: [u32; MAX_CPUS],
    len: usize,
    /// Enabled CPUs beyond MAX_CPUS.
    pub ignored: usize,
}

impl CpuList {
    /// Keeps enabled CPUs once each, in firmware order, with the boot CPU
    /// first (index 0 is always the CPU we are running on).
    pub fn from_madt(bsp_apic_id: u32, entries: impl Iterator<Item = MadtCpu>) -> Self {
        let mut list = CpuList {
            ids: [0; MAX_CPUS],
            len: 1,
            ignored: 0,
        };
        list.ids[0] = bsp_apic_id;
        for e in entries {
            if !e.enabled || list.as_slice().contains(&e.apic_id) || e.apic_id == u32::MAX {
                continue;
            }
            if list.len == MAX_CPUS {
                list.ignored += 1;
                continue;
            }
            list.ids[list.len] = e.apic_id;
            list.len += 1;
        }
        list
    }

    pub fn as_slice(&self) -> &[u32] {
        &self.ids[..self.len]
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu(apic_id: u32, enabled: bool) -> MadtCpu {
        MadtCpu {
            apic_id,
            enabled,
            online_capable: !enabled,
        }
    }

    #[test]
    fn bsp_first_disabled_and_duplicates_dropped() {
        let l = CpuList::from_madt(
            2,
            [
                cpu(0, true),
                cpu(2, true),
                cpu(4, false),
                cpu(0, true),
                cpu(6, true),
            ]
            .into_iter(),
        );
        assert_eq!(l.as_slice(), &[2, 0, 6]);
        assert_eq!(l.ignored, 0);
    }

    #[test]
    fn overflow_is_counted() {
        let l = CpuList::from_madt(0, (0..MAX_CPUS as u32 + 5).map(|i| cpu(i, true)));
        assert_eq!(l.len(), MAX_CPUS);
        assert_eq!(l.ignored, 5);
    }

    #[test]
    fn no_madt_means_only_the_boot_cpu() {
        let l = CpuList::from_madt(7, core::iter::empty());
        assert_eq!(l.as_slice(), &[7]);
    }
}
