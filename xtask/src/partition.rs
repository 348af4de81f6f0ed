//! Partition configurations (`config/*.toml`): which VMs run, on which
//! CPUs, with how much RAM, which kernel and initramfs, which command line,
//! and the inter-VM channel. xtask checks a configuration against the
//! machine it will boot on, names the field that is wrong, and encodes it
//! into the `vmlink.config` boot module (`vmlink_abi::config`), which the
//! hypervisor decodes and checks again.

use crate::guest::Payloads;
use crate::iso::BootModule;
use crate::util::{out_dir, root};
use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use vmlink_abi::config::{self as abi, ChannelConfig, VmEntry};

/// The configuration `build`, `run` and scenarios use unless told otherwise.
pub const DEFAULT: &str = "config/default.toml";

/// What the hypervisor itself needs of the machine's memory, besides the
/// guests and the channel: the low MiB, its image, heap, page tables, EPT
/// and the boot modules (a generous round figure; the hypervisor checks
/// the real amount again when it allocates).
pub const HYPERVISOR_RESERVE_MIB: u32 = 64;

/// The machine a configuration will boot on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Machine {
    pub cpus: u32,
    pub megs: u32,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    channel: Option<ChannelToml>,
    #[serde(default)]
    vm: Vec<VmToml>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct ChannelToml {
    #[serde(default = "default_region")]
    size_mib: u32,
    #[serde(default)]
    max_buffers: u32,
}

fn default_region() -> u32 {
    vmlink_abi::channel::DEFAULT_REGION_MIB
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct VmToml {
    name: String,
    cpus: Vec<u32>,
    ram_mib: u32,
    /// `"guest-kernel"`: the kernel xtask builds; otherwise a path from the
    /// repository root.
    kernel: String,
    /// `"guest-initrd"`: the busybox initramfs xtask builds; otherwise a path.
    initrd: String,
    cmdline: String,
    /// The address the guest's init gives the channel interface.
    #[serde(default)]
    ip: Option<String>,
}

/// A configuration checked and encoded, with its files resolved.
#[derive(Debug)]
pub struct Partition {
    /// The file's stem, for naming outputs.
    pub stem: String,
    pub vms: Vec<PlannedVm>,
    pub blob: Vec<u8>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct PlannedVm {
    pub name: String,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
}

/// Reads, checks (unless `checked` is false: scenarios use that to hand the
/// hypervisor a bad configuration on purpose) and encodes a configuration.
pub fn load(
    path: &Path,
    machine: Machine,
    payloads: &Payloads,
    checked: bool,
) -> Result<Partition> {
    let full = if path.is_absolute() {
        path.to_path_buf()
    } else {
        root().join(path)
    };
    let text = std::fs::read_to_string(&full)
        .with_context(|| format!("reading partition configuration {}", path.display()))?;
    let stem = full
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "config".into());
    let p = plan(&text, machine, checked, &|word| resolve(word, payloads))
        .with_context(|| format!("partition configuration {}", path.display()))?;
    Ok(Partition { stem, ..p })
}

/// A file named in the configuration: the built payloads or a path.
fn resolve(word: &str, payloads: &Payloads) -> Result<PathBuf> {
    Ok(match word {
        "guest-kernel" => payloads.kernel.clone(),
        "guest-initrd" => payloads.initramfs.clone(),
        other => root().join(other),
    })
}

/// The checks and the encoding, apart from the file system.
fn plan(
    text: &str,
    machine: Machine,
    checked: bool,
    resolve: &dyn Fn(&str) -> Result<PathBuf>,
) -> Result<Partition> {
    let file: ConfigFile = toml::from_str(text)?;
    let channel = file
        .channel
        .as_ref()
        .map(|c| ChannelConfig {
            region_mib: c.size_mib,
            max_buffers: c.max_buffers,
        })
        .unwrap_or_default();
    if checked {
        check(&file, &channel, machine)?;
    }
    let mut entries = Vec::new();
    let mut vms = Vec::new();
    for (i, v) in file.vm.iter().enumerate() {
        let field = |f: &str| format!("vm[{i}] ({}).{f}", v.name);
        let kernel = resolve(&v.kernel)?;
        let initrd = resolve(&v.initrd)?;
        if checked {
            for (f, p) in [("kernel", &kernel), ("initrd", &initrd)] {
                if !p.is_file() {
                    bail!("{}: {} does not exist", field(f), p.display());
                }
            }
        }
        let mut cmdline = v.cmdline.trim().to_string();
        if let Some(ip) = &v.ip {
            cmdline.push_str(&format!(" vmlink.ip={ip}"));
        }
        entries.push(entry(&v.name, &v.cpus, v.ram_mib, &cmdline));
        vms.push(PlannedVm {
            name: v.name.clone(),
            kernel,
            initrd,
        });
    }
    if checked {
        // What the hypervisor will check again, with the same words.
        abi::validate(&entries)
            .and_then(|()| abi::validate_channel(&entries, &channel))
            .map_err(|e| anyhow!("{e}"))?;
    }
    let mut blob = vec![0u8; abi::HEADER_LEN + entries.len() * abi::ENTRY_LEN];
    abi::encode(&entries, &channel, &mut blob).map_err(|e| anyhow!("encoding: {e}"))?;
    Ok(Partition {
        stem: String::new(),
        vms,
        blob,
    })
}

/// The checks that need the machine or the TOML's own words.
fn check(file: &ConfigFile, channel: &ChannelConfig, m: Machine) -> Result<()> {
    if file.vm.is_empty() {
        bail!("no [[vm]] entries");
    }
    if file.vm.len() > abi::MAX_VMS {
        bail!("{} VMs: at most {}", file.vm.len(), abi::MAX_VMS);
    }
    let mut owner: Vec<Option<usize>> = vec![None; m.cpus as usize];
    for (i, v) in file.vm.iter().enumerate() {
        let field = |f: &str| format!("vm[{i}] ({}).{f}", v.name);
        if v.cpus.is_empty() {
            bail!("{}: no CPU given", field("cpus"));
        }
        for &c in &v.cpus {
            let Some(slot) = owner.get_mut(c as usize) else {
                bail!(
                    "{}: CPU {c} does not exist on this {}-CPU machine",
                    field("cpus"),
                    m.cpus
                );
            };
            if let Some(other) = slot {
                bail!(
                    "{}: CPU {c} is already given to vm[{other}] ({})",
                    field("cpus"),
                    file.vm[*other].name
                );
            }
            *slot = Some(i);
        }
        if v.cpus.len() > 1 {
            bail!(
                "{}: a VM runs on exactly one CPU in this version of vmlink",
                field("cpus")
            );
        }
        if !(abi::MIN_RAM_MIB..=abi::MAX_RAM_MIB).contains(&v.ram_mib) {
            bail!(
                "{}: {} MiB is outside {}..={} MiB",
                field("ram_mib"),
                v.ram_mib,
                abi::MIN_RAM_MIB,
                abi::MAX_RAM_MIB
            );
        }
        if v.cmdline.len() >= abi::CMDLINE_LEN - 40 || v.cmdline.contains(['\n', '\0']) {
            bail!(
                "{}: at most {} bytes on one line",
                field("cmdline"),
                abi::CMDLINE_LEN - 41
            );
        }
        if let Some(ip) = &v.ip {
            parse_cidr(ip).with_context(|| field("ip"))?;
        }
    }
    let guests: u64 = file.vm.iter().map(|v| u64::from(v.ram_mib)).sum();
    let need = guests + u64::from(channel.region_mib) + u64::from(HYPERVISOR_RESERVE_MIB);
    if need > u64::from(m.megs) {
        bail!(
            "vm[*].ram_mib: the VMs' {guests} MiB, the channel's {} MiB and about \
             {HYPERVISOR_RESERVE_MIB} MiB for the hypervisor do not fit in the machine's {} MiB",
            channel.region_mib,
            m.megs
        );
    }
    Ok(())
}

fn parse_cidr(s: &str) -> Result<()> {
    let (addr, len) = s
        .split_once('/')
        .ok_or_else(|| anyhow!("{s:?}: want ADDRESS/PREFIX, e.g. 10.0.0.1/24"))?;
    addr.parse::<std::net::Ipv4Addr>()
        .map_err(|e| anyhow!("{s:?}: {e}"))?;
    match len.parse::<u8>() {
        Ok(n) if n <= 32 => Ok(()),
        _ => bail!("{s:?}: the prefix length must be 0..=32"),
    }
}

/// The binary entry; fields that do not fit are cut, so that a scenario can
/// hand the hypervisor something the checks would have refused.
fn entry(name: &str, cpus: &[u32], ram_mib: u32, cmdline: &str) -> VmEntry {
    let mut n = [0u8; abi::NAME_LEN];
    let len = name.len().min(abi::NAME_LEN);
    n[..len].copy_from_slice(&name.as_bytes()[..len]);
    let mut c = [0u8; abi::CMDLINE_LEN];
    let len = cmdline.len().min(abi::CMDLINE_LEN - 1);
    c[..len].copy_from_slice(&cmdline.as_bytes()[..len]);
    VmEntry {
        name: n,
        cpus: cpus
            .iter()
            .filter(|&&c| c < 64)
            .fold(0, |m, &c| m | (1 << c)),
        ram_mib,
        cmdline: c,
    }
}

/// The boot modules of a partition: per VM its kernel and initramfs, then
/// the configuration itself.
pub fn modules(p: &Partition) -> Result<Vec<BootModule>> {
    let mut out = Vec::new();
    for v in &p.vms {
        out.push(BootModule {
            source: v.kernel.clone(),
            iso_name: format!("{}-kernel", v.name),
            cmdline: format!("{}.kernel", v.name),
        });
        out.push(BootModule {
            source: v.initrd.clone(),
            iso_name: format!("{}-initrd", v.name),
            cmdline: format!("{}.initrd", v.name),
        });
    }
    let blob = out_dir().join(format!("{}.vmlink-config", p.stem));
    if std::fs::read(&blob).ok().as_deref() != Some(&p.blob[..]) {
        std::fs::write(&blob, &p.blob)?;
    }
    out.push(BootModule {
        source: blob,
        iso_name: "vmlink-config".into(),
        cmdline: abi::MODULE_NAME.into(),
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO: &str = r#"
        [channel]
        size_mib = 64

        [[vm]]
        name = "vm0"
        cpus = [0]
        ram_mib = 256
        kernel = "k"
        initrd = "i"
        cmdline = "console=ttyS0"
        ip = "10.0.0.1/24"

        [[vm]]
        name = "vm1"
        cpus = [1]
        ram_mib = 192
        kernel = "k"
        initrd = "i"
        cmdline = "console=ttyS0"
    "#;

    const MACHINE: Machine = Machine {
        cpus: 2,
        megs: 1024,
    };

    fn here(dir: &Path) -> impl Fn(&str) -> Result<PathBuf> + '_ {
        move |w| Ok(dir.join(w))
    }

    fn files() -> tempdir::Dir {
        let d = tempdir::Dir::new();
        std::fs::write(d.0.join("k"), b"kernel").unwrap();
        std::fs::write(d.0.join("i"), b"initrd").unwrap();
        d
    }

    mod tempdir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Dir {
                use std::sync::atomic::{AtomicU32, Ordering};
                static N: AtomicU32 = AtomicU32::new(0);
                let p = std::env::temp_dir().join(format!(
                    "vmlink-partition-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::SeqCst)
                ));
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    fn err(text: &str, m: Machine) -> String {
        let d = files();
        format!("{:#}", plan(text, m, true, &here(&d.0)).unwrap_err())
    }

    /// Every benchmark path's configuration passes the checks, its guests'
    /// command lines (the workload rides on them) within the length limit.
    #[test]
    fn the_benchmark_configurations_are_accepted() {
        let d = files();
        let resolve = |w: &str| {
            Ok(d.0.join(match w {
                "guest-kernel" => "k",
                "guest-initrd" => "i",
                other => other,
            }))
        };
        for w in [
            crate::bench::Workload::full(),
            crate::bench::Workload::smoke(),
        ] {
            for path in &crate::bench::PATHS {
                let text = crate::bench::config_text(path, &w, true);
                let m = Machine {
                    cpus: 2,
                    megs: 1024,
                };
                if let Err(e) = plan(&text, m, true, &resolve) {
                    panic!("path {}: {e:#}", path.id);
                }
            }
        }
    }

    #[test]
    fn a_good_configuration_round_trips_to_the_hypervisor_format() {
        let d = files();
        let p = plan(TWO, MACHINE, true, &here(&d.0)).unwrap();
        assert_eq!(p.vms.len(), 2);
        let mut out = [entry("x", &[0], 32, ""); abi::MAX_VMS];
        let (n, ch) = abi::decode(&p.blob, &mut out).unwrap();
        assert_eq!(n, 2);
        assert_eq!(ch.region_mib, 64);
        assert_eq!(out[0].cmdline(), "console=ttyS0 vmlink.ip=10.0.0.1/24");
        assert_eq!(out[1].cpus, 2);
        assert_eq!(out[1].ram_mib, 192);
    }

    #[test]
    fn each_mistake_names_its_field() {
        let cases: [(&str, &str, &str); 9] = [
            (
                "cpus = [1]",
                "cpus = [0]",
                "vm[1] (vm1).cpus: CPU 0 is already given to vm[0] (vm0)",
            ),
            (
                "cpus = [1]",
                "cpus = [5]",
                "vm[1] (vm1).cpus: CPU 5 does not exist on this 2-CPU",
            ),
            ("cpus = [1]", "cpus = []", "vm[1] (vm1).cpus: no CPU given"),
            (
                "ram_mib = 192",
                "ram_mib = 900",
                "do not fit in the machine's 1024 MiB",
            ),
            (
                "ram_mib = 192",
                "ram_mib = 8",
                "vm[1] (vm1).ram_mib: 8 MiB is outside",
            ),
            ("10.0.0.1/24", "10.0.0.300/24", "vm[0] (vm0).ip"),
            ("size_mib = 64", "size_mib = 48", "channel: channel region"),
            ("name = \"vm1\"", "name = \"VM!\"", "vm[1].name must be"),
            ("ram_mib = 192", "ram = 192", "unknown field `ram`"),
        ];
        for (from, to, want) in cases {
            let got = err(&TWO.replace(from, to), MACHINE);
            assert!(got.contains(want), "wanted {want:?} in {got:?}");
        }
    }

    #[test]
    fn the_kernel_check_finds_a_missing_file() {
        let d = files();
        let text = TWO.replacen("kernel = \"k\"", "kernel = \"missing\"", 1);
        let e = format!("{:#}", plan(&text, MACHINE, true, &here(&d.0)).unwrap_err());
        assert!(
            e.contains("vm[0] (vm0).kernel:") && e.contains("does not exist"),
            "{e}"
        );
    }

    #[test]
    fn a_two_vm_configuration_does_not_fit_one_cpu() {
        let one = Machine {
            cpus: 1,
            megs: 1024,
        };
        assert!(
            err(TWO, one).contains("vm[1] (vm1).cpus: CPU 1 does not exist on this 1-CPU machine")
        );
    }

    #[test]
    fn unchecked_plans_encode_what_the_hypervisor_must_refuse() {
        let d = files();
        let text = TWO.replace("cpus = [1]", "cpus = [0]");
        let p = plan(&text, MACHINE, false, &here(&d.0)).unwrap();
        let mut out = [entry("x", &[0], 32, ""); abi::MAX_VMS];
        assert_eq!(
            abi::decode(&p.blob, &mut out),
            Err(abi::ConfigError::CpuTwice { vm: 1, cpu: 0 })
        );
    }

    #[test]
    fn repository_configurations_are_valid() {
        for name in ["default", "one-vm"] {
            let text = std::fs::read_to_string(root().join(format!("config/{name}.toml"))).unwrap();
            let d = files();
            let any = |_: &str| Ok(d.0.join("k"));
            plan(&text, MACHINE, true, &any).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        }
    }
}
