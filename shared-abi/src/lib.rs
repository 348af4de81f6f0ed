//! Everything both sides of the hypervisor/guest boundary must agree on.
//!
//! This crate is the single source of truth: the hypervisor uses it directly,
//! and the Linux driver's C header is generated from it.
#![cfg_attr(not(test), no_std)]

pub mod channel;

/// CPUID leaf range the hypervisor answers with its own identity.
pub const CPUID_HV_BASE: u32 = 0x4000_0000;
/// Highest hypervisor leaf implemented.
pub const CPUID_HV_MAX: u32 = 0x4000_0001;
/// The 12-byte signature returned in EBX, ECX, EDX of leaf 0x40000000.
pub const CPUID_SIGNATURE: [u8; 12] = *b"vmlinkvmlink";

/// Version of this ABI; bumped on any incompatible change.
pub const ABI_VERSION: u32 = 1;

/// The last line the hypervisor prints on its console before it stops the
/// machine, followed by `status=<word>` (`ok`, `fail`, `panic`, `novmx`).
/// The test harness waits for this line.
pub const HALT_MARKER: &str = "vmlink: system halted";

/// I/O port of QEMU's `isa-debug-exit` device, which the hypervisor writes
/// its exit status to (QEMU then exits with `(status << 1) | 1`).
pub const QEMU_DEBUG_EXIT_PORT: u16 = 0xf4;

/// Exit statuses written to [`QEMU_DEBUG_EXIT_PORT`].
pub mod exit_status {
    pub const OK: u8 = 0x10;
    pub const FAIL: u8 = 0x11;
    pub const PANIC: u8 = 0x12;
    pub const NO_VMX: u8 = 0x13;
}

/// Hypercalls (VMCALL with the number in RAX, arguments in RDI, RSI, RDX;
/// the result comes back in RAX: 0 or a positive value on success, one of
/// the `HC_ERR_*` codes on failure).
pub mod hypercall {
    /// Returns [`ABI_VERSION`](crate::ABI_VERSION).
    pub const VERSION: u64 = 0;
    /// The driver is ready (RDI: the channel's interrupt vector as the
    /// guest programmed it is taken from the device's MSI registers, so no
    /// argument). The peer sees `peer_state::ATTACHED` and gets an interrupt.
    pub const CHANNEL_ATTACH: u64 = 1;
    /// The driver is going away; its buffers are the peer's no longer.
    pub const CHANNEL_DETACH: u64 = 2;
    /// Interrupt the peer (RDI: 0, the only channel). Returns 0, or
    /// `HC_ERR_PEER_DOWN` when the peer has not attached.
    pub const DOORBELL: u64 = 3;
    /// Hypervisor-mediated send, the "traditional path" the benchmarks
    /// compare against: RDI = guest-physical address of a frame in the
    /// caller's RAM, RSI = its length. The hypervisor copies it into a free
    /// buffer of the caller's section and publishes it as if the caller had.
    pub const MEDIATED_SEND: u64 = 4;
    /// Highest number in use.
    pub const MAX: u64 = MEDIATED_SEND;
}

/// The peer has no driver attached (or its VM stopped).
pub const HC_ERR_PEER_DOWN: i64 = -3;
/// The VM has no channel.
pub const HC_ERR_NO_CHANNEL: i64 = -4;

/// The hypercall number is not known.
pub const HC_ERR_UNKNOWN: i64 = -1;
/// An argument is out of range.
pub const HC_ERR_INVALID: i64 = -2;

/// The partition configuration as the hypervisor receives it: a boot
/// module named [`config::MODULE_NAME`] in this fixed little-endian layout.
/// xtask validates the TOML and encodes it; the hypervisor decodes and
/// validates it again, since a boot module is untrusted input.
pub mod config {
    pub const MODULE_NAME: &str = "vmlink.config";
    pub const MAGIC: [u8; 8] = *b"VMLKCFG1";
    pub const MAX_VMS: usize = 8;
    pub const NAME_LEN: usize = 16;
    pub const CMDLINE_LEN: usize = 256;
    /// magic, vm count (u32), reserved (u32).
    pub const HEADER_LEN: usize = 16;
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
            }
        }
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
                && name.bytes().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-'
                })
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
    pub fn encode(vms: &[VmEntry], out: &mut [u8]) -> Result<usize, ConfigError> {
        let len = HEADER_LEN + vms.len() * ENTRY_LEN;
        if out.len() < len {
            return Err(ConfigError::Truncated);
        }
        out[..8].copy_from_slice(&MAGIC);
        out[8..12].copy_from_slice(&(vms.len() as u32).to_le_bytes());
        out[12..16].fill(0);
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

    /// Decodes and validates a blob; `out` receives the VMs.
    pub fn decode(blob: &[u8], out: &mut [VmEntry; MAX_VMS]) -> Result<usize, ConfigError> {
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
        validate(&out[..n])?;
        Ok(n)
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
            let len = encode(&vms, &mut buf).unwrap();
            let mut out = [vm("x", 1, 32); MAX_VMS];
            assert_eq!(decode(&buf[..len], &mut out), Ok(2));
            assert_eq!(&out[..2], &vms);
            assert_eq!(out[1].name(), "vm1");
        }

        #[test]
        fn hostile_blobs_are_refused() {
            let mut out = [vm("x", 1, 32); MAX_VMS];
            assert_eq!(decode(b"short", &mut out), Err(ConfigError::Truncated));
            assert_eq!(decode(&[0u8; 64], &mut out), Err(ConfigError::BadMagic));
            let mut buf = [0u8; HEADER_LEN + ENTRY_LEN];
            encode(&[vm("vm0", 1, 256)], &mut buf).unwrap();
            buf[8] = 200;
            assert_eq!(decode(&buf, &mut out), Err(ConfigError::TooManyVms(200)));
            buf[8] = 2;
            assert_eq!(decode(&buf, &mut out), Err(ConfigError::Truncated));
            buf[8] = 1;
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
            assert!(ConfigError::CpuTwice { vm: 1, cpu: 0 }
                .to_string()
                .contains("vm[1].cpus"));
        }
    }
}
