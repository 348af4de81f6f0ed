//! The partition the hypervisor runs: the `vmlink.config` boot module,
//! decoded and checked again here (a boot module is untrusted input), then
//! checked against this machine. Without the module, each CPU `i` that has
//! a `vm<i>.kernel` module runs `vm<i>` with a default RAM size.

use core::fmt;
use vmlink_abi::config::{self, ChannelConfig, ConfigError, VmEntry, MAX_VMS};

/// Guest RAM when no configuration says otherwise.
pub const DEFAULT_RAM_MIB: u32 = 256;
/// Guest command line when no configuration says otherwise.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 panic=-1 no_timer_check";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Partition {
    vms: [VmEntry; MAX_VMS],
    count: usize,
    pub channel: ChannelConfig,
}

/// Why a (well-formed) configuration cannot run on this machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MachineError {
    NoSuchCpu { vm: usize, cpu: u32, online: usize },
    SeveralCpus { vm: usize },
    NoKernel { vm: usize },
}

/// A configuration refused, with the VM names at hand for the message.
pub struct Refusal<'a> {
    pub partition: &'a Partition,
    pub error: MachineError,
}

impl fmt::Display for Refusal<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = |i: usize| self.partition.vms[i].name();
        match self.error {
            MachineError::NoSuchCpu { vm, cpu, online } => write!(
                f,
                "vm[{vm}] ({}).cpus: CPU {cpu} is not on this machine ({online} CPUs online)",
                name(vm)
            ),
            MachineError::SeveralCpus { vm } => write!(
                f,
                "vm[{vm}] ({}).cpus: a VM runs on exactly one CPU in this version",
                name(vm)
            ),
            MachineError::NoKernel { vm } => write!(
                f,
                "vm[{vm}] ({0}): no boot module named {0}.kernel",
                name(vm)
            ),
        }
    }
}

fn entry(name: &str, cpu: usize, ram_mib: u32, cmdline: &str) -> VmEntry {
    let mut n = [0u8; config::NAME_LEN];
    n[..name.len()].copy_from_slice(name.as_bytes());
    let mut c = [0u8; config::CMDLINE_LEN];
    c[..cmdline.len()].copy_from_slice(cmdline.as_bytes());
    VmEntry {
        name: n,
        cpus: 1 << cpu,
        ram_mib,
        cmdline: c,
    }
}

const DEFAULT_NAMES: [&str; MAX_VMS] = ["vm0", "vm1", "vm2", "vm3", "vm4", "vm5", "vm6", "vm7"];

impl Partition {
    /// Decodes the configuration module.
    pub fn from_blob(blob: &[u8]) -> Result<Partition, ConfigError> {
        let mut vms = [entry("x", 0, 0, ""); MAX_VMS];
        let (count, channel) = config::decode(blob, &mut vms)?;
        Ok(Partition {
            vms,
            count,
            channel,
        })
    }

    /// The partition without a configuration: `vm<i>` on CPU `i` for each
    /// of the `online` CPUs that has a kernel module; no channel.
    pub fn default_for(online: usize, has_kernel: impl Fn(&str) -> bool) -> Partition {
        let mut vms = [entry("x", 0, 0, ""); MAX_VMS];
        let mut count = 0;
        for (cpu, name) in DEFAULT_NAMES.iter().enumerate().take(online) {
            let mut module = [0u8; 16];
            let m = module_name(name, "kernel", &mut module);
            if has_kernel(m) {
                vms[count] = entry(name, cpu, DEFAULT_RAM_MIB, DEFAULT_CMDLINE);
                count += 1;
            }
        }
        Partition {
            vms,
            count,
            channel: ChannelConfig::default(),
        }
    }

    pub fn vms(&self) -> &[VmEntry] {
        &self.vms[..self.count]
    }

    /// Checks the partition against the machine: every CPU is online, one
    /// CPU per VM, every VM's kernel is there.
    pub fn check_machine(
        &self,
        online: usize,
        has_module: impl Fn(&str) -> bool,
    ) -> Result<(), MachineError> {
        for (vm, e) in self.vms().iter().enumerate() {
            if e.cpus.count_ones() != 1 {
                return Err(MachineError::SeveralCpus { vm });
            }
            let cpu = e.cpus.trailing_zeros();
            if cpu as usize >= online {
                return Err(MachineError::NoSuchCpu { vm, cpu, online });
            }
            let mut buf = [0u8; 32];
            if !has_module(module_name(e.name(), "kernel", &mut buf)) {
                return Err(MachineError::NoKernel { vm });
            }
        }
        Ok(())
    }

    /// The VM that owns CPU `cpu`, if any.
    pub fn vm_on_cpu(&self, cpu: usize) -> Option<usize> {
        self.vms().iter().position(|e| e.cpus == 1 << cpu)
    }

    /// The CPU VM `vm` runs on.
    pub fn cpu_of(&self, vm: usize) -> usize {
        self.vms[vm].cpus.trailing_zeros() as usize
    }
}

/// `<name>.<what>` in `buf` (names are at most 15 bytes).
pub fn module_name<'a>(name: &str, what: &str, buf: &'a mut [u8]) -> &'a str {
    let n = name.len();
    let total = n + 1 + what.len();
    if total > buf.len() {
        return "";
    }
    buf[..n].copy_from_slice(name.as_bytes());
    buf[n] = b'.';
    buf[n + 1..total].copy_from_slice(what.as_bytes());
    core::str::from_utf8(&buf[..total]).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    fn blob(vms: &[VmEntry]) -> std::vec::Vec<u8> {
        let mut b = std::vec![0u8; config::HEADER_LEN + vms.len() * config::ENTRY_LEN];
        config::encode(vms, &ChannelConfig::default(), &mut b).unwrap();
        b
    }

    #[test]
    fn default_partition_follows_the_kernel_modules() {
        let p = Partition::default_for(2, |m| m == "vm0.kernel" || m == "vm1.kernel");
        assert_eq!(p.vms().len(), 2);
        assert_eq!(p.vm_on_cpu(1), Some(1));
        assert_eq!(p.vms()[1].ram_mib, DEFAULT_RAM_MIB);
        let p = Partition::default_for(2, |m| m == "vm1.kernel");
        assert_eq!(p.vms().len(), 1);
        assert_eq!(p.vm_on_cpu(0), None);
        assert_eq!(p.vm_on_cpu(1), Some(0));
        assert_eq!(p.vms()[0].name(), "vm1");
    }

    #[test]
    fn machine_checks_name_the_vm_and_field() {
        let any = |_: &str| true;
        let p = Partition::from_blob(&blob(&[entry("web", 0, 64, "x"), entry("db", 3, 64, "x")]))
            .unwrap();
        let e = p.check_machine(2, any).unwrap_err();
        let text = Refusal {
            partition: &p,
            error: e,
        }
        .to_string();
        assert_eq!(
            text,
            "vm[1] (db).cpus: CPU 3 is not on this machine (2 CPUs online)"
        );
        assert!(p.check_machine(4, any).is_ok());
        let e = p.check_machine(4, |m| m != "db.kernel").unwrap_err();
        assert_eq!(e, MachineError::NoKernel { vm: 1 });
        let mut two = entry("big", 0, 64, "x");
        two.cpus = 0b11;
        let p = Partition::from_blob(&blob(&[two])).unwrap();
        assert_eq!(
            p.check_machine(2, any),
            Err(MachineError::SeveralCpus { vm: 0 })
        );
    }

    #[test]
    fn a_bad_blob_is_refused_with_the_reason() {
        let mut b = blob(&[entry("a", 0, 64, "x"), entry("b", 1, 64, "x")]);
        // CPU 0 for both: what xtask refuses, refused again here.
        b[config::HEADER_LEN + config::ENTRY_LEN + config::NAME_LEN] = 1;
        let e = Partition::from_blob(&b).unwrap_err();
        assert_eq!(e, ConfigError::CpuTwice { vm: 1, cpu: 0 });
        assert!(Partition::from_blob(&b[..10]).is_err());
    }

    #[test]
    fn module_names() {
        let mut buf = [0u8; 32];
        assert_eq!(module_name("vm0", "kernel", &mut buf), "vm0.kernel");
        let mut small = [0u8; 4];
        assert_eq!(module_name("vm0", "kernel", &mut small), "");
    }
}
