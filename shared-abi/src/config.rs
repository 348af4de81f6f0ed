//! The partition configuration as the hypervisor receives it: a boot
//! module named [`MODULE_NAME`] in this fixed little-endian layout.
//! xtask validates the TOML and encodes it; the hypervisor decodes and
//! validates it again, since a boot module is untrusted input.

pub const MODULE_NAME: &str = "vmlink.config";
pub const MAGIC: [u8; 8] = *b"VMLKCFG1";
pub const MAX_VMS: usize = 8;
pub const NAME_LEN: usize = 16;
pub const CMDLINE_LEN: usize = 256;
/// magic, vm count (u32), channel region MiB (u32, 0: no channel),
/// channel buffers per direction (u32, 0: as many as fit), reserved (u32).
pub const HEADER_LEN: usize = 24;
/// name, cpu mask (u64), ram MiB (u32), reserved (u32), cmdline.
pub const ENTRY_LEN: usize = NAME_LEN + 8 + 4 + 4 + CMDLINE_LEN;
/// Guest RAM bounds, in MiB.
pub const MIN_RAM_MIB: u32 = 32;
pub const MAX_RAM_MIB: u32 = 64 * 1024;

/// One VM. Its kernel and initramfs are the modules `<name>.kernel` and
/// `<name>.initrd`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmEntry {
    pub name: [u8; NAME_LEN],
    /// Bit i: the VM owns CPU i (index in the hypervisor's CPU list).
    pub cpus: u64,
    pub ram_mib: u32,
    pub cmdline: [u8; CMDLINE_LEN],
}

impl VmEntry {
    pub fn name(&self) -> &str {
        text(&self.name)
    }
    pub fn cmdline(&self) -> &str {
        text(&self.cmdline)
    }
}

fn text(b: &[u8]) -> &str {
    let n = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    core::str::from_utf8(&b[..n]).unwrap_or("")
}

/// The inter-VM channel between the first two VMs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChannelConfig {
    /// Region size in MiB; 0 means no channel.
    pub region_mib: u32,
    /// Buffers per direction; 0 means as many as fit.
    pub max_buffers: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    BadMagic,
    Truncated,
    NoVms,
    TooManyVms(usize),
    BadName(usize),
    DuplicateName(usize),
    NoCpu(usize),
    CpuTwice { vm: usize, cpu: u32 },
    RamOutOfRange { vm: usize, mib: u32 },
    BadCmdline(usize),
    Channel(crate::channel::LayoutError),
    ChannelNeedsTwoVms(usize),
}

impl core::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ConfigError::BadMagic => write!(f, "not a vmlink configuration (bad magic)"),
            ConfigError::Truncated => write!(f, "truncated"),
            ConfigError::NoVms => write!(f, "no VMs"),
            ConfigError::TooManyVms(n) => write!(f, "{n} VMs, at most {MAX_VMS}"),
            ConfigError::BadName(i) => write!(f, "vm[{i}].name must be 1-15 of [a-z0-9_-]"),
            ConfigError::DuplicateName(i) => write!(f, "vm[{i}].name is used twice"),
            ConfigError::NoCpu(i) => write!(f, "vm[{i}].cpus is empty"),
            ConfigError::CpuTwice { vm, cpu } => {
                write!(f, "vm[{vm}].cpus: CPU {cpu} is already given to another VM")
            }
            ConfigError::RamOutOfRange { vm, mib } => write!(
                f,
                "vm[{vm}].ram_mib = {mib}: must be {MIN_RAM_MIB}..={MAX_RAM_MIB}"
            ),
            ConfigError::BadCmdline(i) => write!(f, "vm[{i}].cmdline is not text"),
            ConfigError::Channel(e) => write!(f, "channel: {e}"),
            ConfigError::ChannelNeedsTwoVms(n) => {
                write!(
                    f,
                    "channel: joins exactly two VMs, the configuration has {n}"
                )
            }
        }
    }
}

/// Checks the channel settings against the VMs.
pub fn validate_channel(vms: &[VmEntry], ch: &ChannelConfig) -> Result<(), ConfigError> {
    if ch.region_mib == 0 {
        return Ok(());
    }
    if vms.len() != 2 {
        return Err(ConfigError::ChannelNeedsTwoVms(vms.len()));
    }
    crate::channel::Layout::new(u64::from(ch.region_mib) << 20, ch.max_buffers)
        .map(|_| ())
        .map_err(ConfigError::Channel)
}

/// Checks what can be checked without the machine: names, CPU
/// ownership, RAM bounds.
pub fn validate(vms: &[VmEntry]) -> Result<(), ConfigError> {
    if vms.is_empty() {
        return Err(ConfigError::NoVms);
    }
    if vms.len() > MAX_VMS {
        return Err(ConfigError::TooManyVms(vms.len()));
    }
    let mut taken = 0u64;
    for (i, v) in vms.iter().enumerate() {
        let name = v.name();
        let name_ok = !name.is_empty()
            && name.len() < NAME_LEN
            && name
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-')
            && v.name[name.len()..].iter().all(|&c| c == 0);
        if !name_ok {
            return Err(ConfigError::BadName(i));
        }
        if vms[..i].iter().any(|o| o.name() == name) {
            return Err(ConfigError::DuplicateName(i));
        }
        if v.cpus == 0 {
            return Err(ConfigError::NoCpu(i));
        }
        if v.cpus & taken != 0 {
            let cpu = (v.cpus & taken).trailing_zeros();
            return Err(ConfigError::CpuTwice { vm: i, cpu });
        }
        taken |= v.cpus;
        if !(MIN_RAM_MIB..=MAX_RAM_MIB).contains(&v.ram_mib) {
            return Err(ConfigError::RamOutOfRange {
                vm: i,
                mib: v.ram_mib,
            });
        }
        let n = v
            .cmdline
            .iter()
            .position(|&c| c == 0)
            .unwrap_or(CMDLINE_LEN);
        if n == CMDLINE_LEN || core::str::from_utf8(&v.cmdline[..n]).is_err() {
            return Err(ConfigError::BadCmdline(i));
        }
    }
    Ok(())
}

/// Encodes `vms` into `out`; returns the length used.
pub fn encode(
    vms: &[VmEntry],
    channel: &ChannelConfig,
    out: &mut [u8],
) -> Result<usize, ConfigError> {
    let len = HEADER_LEN + vms.len() * ENTRY_LEN;
    if out.len() < len {
        return Err(ConfigError::Truncated);
    }
    out[..8].copy_from_slice(&MAGIC);
    out[8..12].copy_from_slice(&(vms.len() as u32).to_le_bytes());
    out[12..16].copy_from_slice(&channel.region_mib.to_le_bytes());
    out[16..20].copy_from_slice(&channel.max_buffers.to_le_bytes());
    out[20..24].fill(0);
    for (i, v) in vms.iter().enumerate() {
        let e = &mut out[HEADER_LEN + i * ENTRY_LEN..][..ENTRY_LEN];
        e[..NAME_LEN].copy_from_slice(&v.name);
        e[NAME_LEN..NAME_LEN + 8].copy_from_slice(&v.cpus.to_le_bytes());
        e[NAME_LEN + 8..NAME_LEN + 12].copy_from_slice(&v.ram_mib.to_le_bytes());
        e[NAME_LEN + 12..NAME_LEN + 16].fill(0);
        e[NAME_LEN + 16..].copy_from_slice(&v.cmdline);
    }
    Ok(len)
}

/// Decodes and validates a blob; `out` receives the VMs, the result is
/// their count and the channel settings.
pub fn decode(
    blob: &[u8],
    out: &mut [VmEntry; MAX_VMS],
) -> Result<(usize, ChannelConfig), ConfigError> {
    if blob.len() < HEADER_LEN {
        return Err(ConfigError::Truncated);
    }
    if blob[..8] != MAGIC {
        return Err(ConfigError::BadMagic);
    }
    let n = u32::from_le_bytes([blob[8], blob[9], blob[10], blob[11]]) as usize;
    if n > MAX_VMS {
        return Err(ConfigError::TooManyVms(n));
    }
    if blob.len() < HEADER_LEN + n * ENTRY_LEN {
        return Err(ConfigError::Truncated);
    }
    for (i, slot) in out.iter_mut().enumerate().take(n) {
        let e = &blob[HEADER_LEN + i * ENTRY_LEN..][..ENTRY_LEN];
        let mut name = [0u8; NAME_LEN];
        name.copy_from_slice(&e[..NAME_LEN]);
        let mut cmdline = [0u8; CMDLINE_LEN];
        cmdline.copy_from_slice(&e[NAME_LEN + 16..]);
        let mut cpus = [0u8; 8];
        cpus.copy_from_slice(&e[NAME_LEN..NAME_LEN + 8]);
        let mut ram = [0u8; 4];
        ram.copy_from_slice(&e[NAME_LEN + 8..NAME_LEN + 12]);
        *slot = VmEntry {
            name,
            cpus: u64::from_le_bytes(cpus),
            ram_mib: u32::from_le_bytes(ram),
            cmdline,
        };
    }
    let word = |at: usize| u32::from_le_bytes([blob[at], blob[at + 1], blob[at + 2], blob[at + 3]]);
    let channel = ChannelConfig {
        region_mib: word(12),
        max_buffers: word(16),
    };
    validate(&out[..n])?;
    validate_channel(&out[..n], &channel)?;
    Ok((n, channel))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(name: &str, cpus: u64, ram_mib: u32) -> VmEntry {
        let mut n = [0; NAME_LEN];
        n[..name.len()].copy_from_slice(name.as_bytes());
        let mut c = [0; CMDLINE_LEN];
        c[..7].copy_from_slice(b"console");
        VmEntry {
            name: n,
            cpus,
            ram_mib,
            cmdline: c,
        }
    }

    #[test]
    fn round_trip() {
        let vms = [vm("vm0", 1, 256), vm("vm1", 2, 512)];
        let mut buf = [0u8; HEADER_LEN + 2 * ENTRY_LEN];
        let ch = ChannelConfig {
            region_mib: 64,
            max_buffers: 0,
        };
        let len = encode(&vms, &ch, &mut buf).unwrap();
        let mut out = [vm("x", 1, 32); MAX_VMS];
        assert_eq!(decode(&buf[..len], &mut out), Ok((2, ch)));
        assert_eq!(&out[..2], &vms);
        assert_eq!(out[1].name(), "vm1");
    }

    #[test]
    fn hostile_blobs_are_refused() {
        let mut out = [vm("x", 1, 32); MAX_VMS];
        assert_eq!(decode(b"short", &mut out), Err(ConfigError::Truncated));
        assert_eq!(decode(&[0u8; 64], &mut out), Err(ConfigError::BadMagic));
        let mut buf = [0u8; HEADER_LEN + ENTRY_LEN];
        encode(&[vm("vm0", 1, 256)], &ChannelConfig::default(), &mut buf).unwrap();
        buf[8] = 200;
        assert_eq!(decode(&buf, &mut out), Err(ConfigError::TooManyVms(200)));
        buf[8] = 2;
        assert_eq!(decode(&buf, &mut out), Err(ConfigError::Truncated));
        buf[8] = 1;
        buf[12] = 64;
        assert_eq!(
            decode(&buf, &mut out),
            Err(ConfigError::ChannelNeedsTwoVms(1))
        );
        buf[12] = 0;
        buf[HEADER_LEN + NAME_LEN + 16..].fill(b'x');
        assert_eq!(decode(&buf, &mut out), Err(ConfigError::BadCmdline(0)));
    }

    #[test]
    fn validation_names_the_field() {
        assert_eq!(validate(&[]), Err(ConfigError::NoVms));
        assert_eq!(
            validate(&[vm("a", 3, 256), vm("b", 2, 256)]),
            Err(ConfigError::CpuTwice { vm: 1, cpu: 1 })
        );
        assert_eq!(validate(&[vm("a", 0, 256)]), Err(ConfigError::NoCpu(0)));
        assert_eq!(
            validate(&[vm("a", 1, 8)]),
            Err(ConfigError::RamOutOfRange { vm: 0, mib: 8 })
        );
        assert_eq!(validate(&[vm("A!", 1, 64)]), Err(ConfigError::BadName(0)));
        assert_eq!(
            validate(&[vm("a", 1, 64), vm("a", 2, 64)]),
            Err(ConfigError::DuplicateName(1))
        );
        let two = [vm("a", 1, 64), vm("b", 2, 64)];
        let bad = ChannelConfig {
            region_mib: 3,
            max_buffers: 0,
        };
        assert!(matches!(
            validate_channel(&two, &bad),
            Err(ConfigError::Channel(_))
        ));
        assert!(ConfigError::CpuTwice { vm: 1, cpu: 0 }
            .to_string()
            .contains("vm[1].cpus"));
    }
}
