//! What the boot loader told us, in one protocol-neutral form.
//!
//! Multiboot1 (QEMU `-kernel`) is parsed here through [`PhysRead`], so the
//! host tests can feed it fake memory; multiboot2 (GRUB) goes through the
//! `multiboot2` crate.

use crate::range::{Range, RangeSet};

pub const MB1_MAGIC: u32 = 0x2BAD_B002;
pub const MB2_MAGIC: u32 = 0x36D7_6289;

pub const MAX_MODULES: usize = 16;
const MAX_NAME: usize = 64;
const MAX_CMDLINE: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Multiboot1,
    Multiboot2,
}

/// A boot module: where the loader put it and the name it was given.
#[derive(Clone, Copy)]
pub struct Module {
    pub range: Range,
    name: [u8; MAX_NAME],
    name_len: usize,
}

impl Module {
    /// `cmdline` is the loader's module string; its last word names the
    /// module (GRUB passes just the name, QEMU `-initrd` passes the file
    /// path first).
    pub fn new(range: Range, cmdline: &str) -> Self {
        let name = cmdline.split_whitespace().last().unwrap_or("");
        let mut m = Module {
            range,
            name: [0; MAX_NAME],
            name_len: 0,
        };
        let n = name.len().min(MAX_NAME);
        m.name[..n].copy_from_slice(&name.as_bytes()[..n]);
        m.name_len = n;
        m
    }

    pub fn name(&self) -> &str {
        core::str::from_utf8(&self.name[..self.name_len]).unwrap_or("<non-utf8>")
    }
}

/// Everything the hypervisor keeps from the boot information. It is copied
/// out before any memory is handed out, so the loader's structures may be
/// overwritten afterwards.
pub struct BootInfo {
    pub protocol: Protocol,
    /// RAM the firmware reports as usable.
    pub ram: RangeSet,
    modules: [Option<Module>; MAX_MODULES],
    pub dropped_modules: usize,
    cmdline: [u8; MAX_CMDLINE],
    cmdline_len: usize,
    /// The ACPI root table the loader passed (its copy of the RSDP lives in
    /// memory we reuse, so only the root table's address is kept).
    pub acpi_root: Option<AcpiRoot>,
}

/// ACPI root system table: the RSDT (revision 0) or the XSDT (revision 2+).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AcpiRoot {
    pub revision: u8,
    pub address: u64,
}

#[derive(Debug, PartialEq, Eq)]
pub enum BootInfoError {
    UnknownMagic(u32),
    NoMemoryMap,
    TooManyRamRanges,
    Multiboot2(&'static str),
}

impl core::fmt::Display for BootInfoError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BootInfoError::UnknownMagic(m) => write!(
                f,
                "unknown boot magic {m:#x}: boot vmlink with a multiboot1 or multiboot2 loader"
            ),
            BootInfoError::NoMemoryMap => write!(f, "the boot loader passed no memory map"),
            BootInfoError::TooManyRamRanges => write!(f, "the memory map has too many ranges"),
            BootInfoError::Multiboot2(e) => write!(f, "bad multiboot2 information: {e}"),
        }
    }
}

impl BootInfo {
    pub fn new(protocol: Protocol) -> Self {
        BootInfo {
            protocol,
            ram: RangeSet::new(),
            modules: [None; MAX_MODULES],
            dropped_modules: 0,
            cmdline: [0; MAX_CMDLINE],
            cmdline_len: 0,
            acpi_root: None,
        }
    }

    pub fn modules(&self) -> impl Iterator<Item = &Module> {
        self.modules.iter().flatten()
    }

    pub fn module(&self, name: &str) -> Option<&Module> {
        self.modules().find(|m| m.name() == name)
    }

    pub fn cmdline(&self) -> &str {
        core::str::from_utf8(&self.cmdline[..self.cmdline_len]).unwrap_or("")
    }

    /// Whether `word` is one of the command line's words (`trace`,
    /// `no-apicv`, `selftest`...).
    pub fn flag(&self, word: &str) -> bool {
        self.cmdline().split_whitespace().any(|w| w == word)
    }

    pub fn set_cmdline(&mut self, s: &str) {
        let n = s.len().min(MAX_CMDLINE);
        self.cmdline[..n].copy_from_slice(&s.as_bytes()[..n]);
        self.cmdline_len = n;
    }

    pub fn add_module(&mut self, m: Module) {
        match self.modules.iter_mut().find(|s| s.is_none()) {
            Some(slot) => *slot = Some(m),
            None => self.dropped_modules += 1,
        }
    }

    pub fn add_ram(&mut self, r: Range) -> Result<(), BootInfoError> {
        self.ram.add(r).map_err(|_| BootInfoError::TooManyRamRanges)
    }
}

/// Read access to physical memory (identity-mapped on the machine, faked in
/// the host tests).
pub trait PhysRead {
    fn read(&self, addr: u64, buf: &mut [u8]);

    fn read_u32(&self, addr: u64) -> u32 {
        let mut b = [0; 4];
        self.read(addr, &mut b);
        u32::from_le_bytes(b)
    }

    fn read_u64(&self, addr: u64) -> u64 {
        let mut b = [0; 8];
        self.read(addr, &mut b);
        u64::from_le_bytes(b)
    }

    /// Reads a NUL-terminated string of at most `out.len()` bytes.
    fn read_cstr<'a>(&self, addr: u64, out: &'a mut [u8]) -> &'a str {
        let mut n = 0;
        while n < out.len() {
            let mut b = [0u8];
            self.read(addr + n as u64, &mut b);
            if b[0] == 0 {
                break;
            }
            out[n] = b[0];
            n += 1;
        }
        core::str::from_utf8(&out[..n]).unwrap_or("")
    }
}

const MB1_FLAG_CMDLINE: u32 = 1 << 2;
const MB1_FLAG_MODS: u32 = 1 << 3;
const MB1_FLAG_MMAP: u32 = 1 << 6;
const MB1_MMAP_AVAILABLE: u32 = 1;
const MB1_MAX_MMAP_BYTES: u32 = 64 * 1024;

/// Parses the multiboot1 information structure at `info`.
pub fn parse_mb1(mem: &impl PhysRead, info: u64) -> Result<BootInfo, BootInfoError> {
    let mut bi = BootInfo::new(Protocol::Multiboot1);
    let flags = mem.read_u32(info);
    let mut buf = [0u8; MAX_CMDLINE];

    if flags & MB1_FLAG_CMDLINE != 0 {
        let s = mem.read_cstr(u64::from(mem.read_u32(info + 16)), &mut buf);
        bi.set_cmdline(s);
    }

    if flags & MB1_FLAG_MODS != 0 {
        let count = mem.read_u32(info + 20);
        let addr = u64::from(mem.read_u32(info + 24));
        for i in 0..u64::from(count) {
            let e = addr + i * 16;
            let start = u64::from(mem.read_u32(e));
            let end = u64::from(mem.read_u32(e + 4));
            let name_addr = u64::from(mem.read_u32(e + 8));
            let name = if name_addr != 0 {
                mem.read_cstr(name_addr, &mut buf)
            } else {
                ""
            };
            bi.add_module(Module::new(Range::new(start, end.max(start)), name));
        }
    }

    if flags & MB1_FLAG_MMAP == 0 {
        return Err(BootInfoError::NoMemoryMap);
    }
    let len = mem.read_u32(info + 44).min(MB1_MAX_MMAP_BYTES);
    let base = u64::from(mem.read_u32(info + 48));
    let mut off = 0u64;
    while off + 24 <= u64::from(len) {
        let e = base + off;
        let size = mem.read_u32(e);
        let addr = mem.read_u64(e + 4);
        let length = mem.read_u64(e + 12);
        let kind = mem.read_u32(e + 20);
        if kind == MB1_MMAP_AVAILABLE {
            bi.add_ram(Range::new(addr, addr.saturating_add(length)))?;
        }
        // The size field does not count itself; a zero size would loop.
        off += u64::from(size.max(20)) + 4;
    }
    Ok(bi)
}

/// Converts GRUB's multiboot2 information.
///
/// # Safety
/// `info` must point to a multiboot2 information structure that stays
/// readable for the duration of the call.
pub unsafe fn parse_mb2(info: u64) -> Result<BootInfo, BootInfoError> {
    use multiboot2::{BootInformation, BootInformationHeader, MemoryAreaType};

    // SAFETY: the caller guarantees `info` is a live multiboot2 structure.
    let mbi = unsafe { BootInformation::load(info as *const BootInformationHeader) }
        .map_err(|_| BootInfoError::Multiboot2("header or tags malformed"))?;
    let mut bi = BootInfo::new(Protocol::Multiboot2);

    if let Some(c) = mbi.command_line_tag() {
        bi.set_cmdline(c.cmdline().unwrap_or(""));
    }
    for m in mbi.module_tags() {
        let start = u64::from(m.start_address());
        let end = u64::from(m.end_address()).max(start);
        bi.add_module(Module::new(
            Range::new(start, end),
            m.cmdline().unwrap_or(""),
        ));
    }
    let mmap = mbi.memory_map_tag().ok_or(BootInfoError::NoMemoryMap)?;
    for a in mmap.memory_areas() {
        if a.typ() == MemoryAreaType::Available {
            bi.add_ram(Range::new(a.start_address(), a.end_address()))?;
        }
    }
    if let Some(r) = mbi.rsdp_v2_tag() {
        bi.acpi_root = Some(AcpiRoot {
            revision: r.revision().max(2),
            address: r.xsdt_address() as u64,
        });
    } else if let Some(r) = mbi.rsdp_v1_tag() {
        bi.acpi_root = Some(AcpiRoot {
            revision: 0,
            address: r.rsdt_address() as u64,
        });
    }
    Ok(bi)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Sparse fake physical memory.
    #[derive(Default)]
    struct FakeMem(BTreeMap<u64, u8>);

    impl FakeMem {
        fn put(&mut self, addr: u64, bytes: &[u8]) {
            for (i, b) in bytes.iter().enumerate() {
                self.0.insert(addr + i as u64, *b);
            }
        }
        fn put32(&mut self, addr: u64, v: u32) {
            self.put(addr, &v.to_le_bytes());
        }
        fn put64(&mut self, addr: u64, v: u64) {
            self.put(addr, &v.to_le_bytes());
        }
    }

    impl PhysRead for FakeMem {
        fn read(&self, addr: u64, buf: &mut [u8]) {
            for (i, b) in buf.iter_mut().enumerate() {
                *b = *self.0.get(&(addr + i as u64)).unwrap_or(&0);
            }
        }
    }

    fn mmap_entry(m: &mut FakeMem, at: u64, base: u64, len: u64, kind: u32) {
        m.put32(at, 20);
        m.put64(at + 4, base);
        m.put64(at + 12, len);
        m.put32(at + 20, kind);
    }

    #[test]
    fn mb1_memory_map_modules_and_cmdline() {
        let mut m = FakeMem::default();
        let info = 0x9000;
        m.put32(info, MB1_FLAG_CMDLINE | MB1_FLAG_MODS | MB1_FLAG_MMAP);
        m.put32(info + 16, 0xA000);
        m.put(0xA000, b"loglevel=debug\0");
        m.put32(info + 20, 2);
        m.put32(info + 24, 0xB000);
        m.put32(0xB000, 0x40_0000);
        m.put32(0xB004, 0x50_0000);
        m.put32(0xB008, 0xC000);
        m.put(0xC000, b"vm0.kernel\0");
        m.put32(0xB010, 0x50_0000);
        m.put32(0xB014, 0x50_1000);
        m.put32(0xB018, 0xC100);
        m.put(0xC100, b"vm0.initrd\0");
        m.put32(info + 44, 72);
        m.put32(info + 48, 0xD000);
        mmap_entry(&mut m, 0xD000, 0, 0x9_F000, 1);
        mmap_entry(&mut m, 0xD018, 0xF_0000, 0x1_0000, 2);
        mmap_entry(&mut m, 0xD030, 0x10_0000, 0x1FF0_0000, 1);

        let bi = parse_mb1(&m, info).unwrap();
        assert_eq!(bi.protocol, Protocol::Multiboot1);
        assert_eq!(bi.cmdline(), "loglevel=debug");
        assert!(bi.flag("loglevel=debug") && !bi.flag("loglevel") && !bi.flag("debug"));
        let names: Vec<_> = bi.modules().map(|m| m.name()).collect();
        assert_eq!(names, ["vm0.kernel", "vm0.initrd"]);
        assert_eq!(
            bi.module("vm0.initrd").unwrap().range,
            Range::new(0x50_0000, 0x50_1000)
        );
        let ram: Vec<_> = bi.ram.as_slice().to_vec();
        assert_eq!(
            ram,
            [Range::new(0, 0x9_F000), Range::new(0x10_0000, 0x2000_0000)]
        );
    }

    #[test]
    fn mb1_without_memory_map_is_refused() {
        let mut m = FakeMem::default();
        m.put32(0x9000, MB1_FLAG_CMDLINE);
        assert_eq!(
            parse_mb1(&m, 0x9000).err(),
            Some(BootInfoError::NoMemoryMap)
        );
    }

    #[test]
    fn mb1_zero_sized_entries_do_not_loop() {
        let mut m = FakeMem::default();
        m.put32(0x9000, MB1_FLAG_MMAP);
        m.put32(0x9000 + 44, 48);
        m.put32(0x9000 + 48, 0xD000);
        mmap_entry(&mut m, 0xD000, 0x10_0000, 0x10_0000, 1);
        m.put32(0xD000, 0);
        let bi = parse_mb1(&m, 0x9000).unwrap();
        assert_eq!(bi.ram.total(), 0x10_0000);
    }

    #[test]
    fn module_name_is_the_last_word() {
        let m = Module::new(Range::new(0, 1), "/tmp/x/bzImage vm0.kernel");
        assert_eq!(m.name(), "vm0.kernel");
        assert_eq!(
            Module::new(Range::new(0, 1), "vm0.initrd").name(),
            "vm0.initrd"
        );
        assert_eq!(Module::new(Range::new(0, 1), "").name(), "");
    }

    #[test]
    fn module_table_overflow_is_counted() {
        let mut bi = BootInfo::new(Protocol::Multiboot2);
        for i in 0..MAX_MODULES + 3 {
            bi.add_module(Module::new(Range::new(0, i as u64), "m"));
        }
        assert_eq!(bi.modules().count(), MAX_MODULES);
        assert_eq!(bi.dropped_modules, 3);
    }
}
