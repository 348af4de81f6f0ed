//! Creating a guest on the running CPU and running it to its end: the
//! glue between the boot modules, the guest loader, the VT-x backend and
//! the exit loop. One guest per physical CPU; each CPU calls [`run`] for
//! its own guest.

use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use crate::arch::x64::vmx::{self, ept::IdentityTables, vcpu};
use crate::bootinfo::{BootInfo, Module};
use crate::channel::Channel;
use crate::frames::FrameAllocator;
use crate::guest::{aml, load_linux, AcpiConfig};
use crate::log;
use crate::partition::{module_name, Partition};
use crate::range::Range;
use crate::vcpu::Vcpu;
use crate::vm::cpuid::{CpuidConfig, Placement};
use crate::vm::ram::GuestRam;
use crate::vmm::platform::{Hidden, Platform};
use crate::vmm::stats::ExitStats;
use crate::vmm::{memmap, Vm};

pub const MAX_VMS: usize = vmlink_abi::config::MAX_VMS;

const RUNNING: u8 = 0;
const CLEAN: u8 = 1;
const FAILED: u8 = 2;
static RESULT: [AtomicU8; MAX_VMS] = [const { AtomicU8::new(RUNNING) }; MAX_VMS];
static FINISHED: AtomicUsize = AtomicUsize::new(0);

/// Guests that have ended (cleanly or not).
pub fn finished() -> usize {
    FINISHED.load(Ordering::SeqCst)
}

/// Whether guest `index` powered off cleanly.
pub fn clean(index: usize) -> bool {
    RESULT[index].load(Ordering::SeqCst) == CLEAN
}

fn module_bytes(m: &Module) -> &'static [u8] {
    // SAFETY: module ranges are reserved in the frame allocator, so nothing
    // else writes them, and they are identity-mapped.
    unsafe { core::slice::from_raw_parts(m.range.start as *const u8, m.range.len() as usize) }
}

/// XCR0 bits the CPU supports (CPUID 0xD.0), limited to x87, SSE and AVX:
/// the state FXSAVE plus legacy-SSE host code leave intact.
pub fn host_xcr0_mask() -> u64 {
    if !crate::arch::x64::cpu::has_xsave() {
        return 0;
    }
    let r = crate::arch::x64::cpu::cpuid(0xD, 0);
    ((u64::from(r.edx) << 32) | u64::from(r.eax)) & 0b111
}

/// Runs VM `index` of the partition on this CPU until it ends, records
/// how it ended.
pub fn run(
    index: usize,
    part: &'static Partition,
    channel: Option<&'static Channel>,
    boot: &BootInfo,
    frames: &spin::Mutex<Option<FrameAllocator>>,
    tsc_hz: u64,
) {
    // VMs 0 and 1 are the channel's sides 0 and 1.
    let channel = channel.filter(|_| index < 2);
    let clean = match build(index, part, channel, boot, frames, tsc_hz) {
        Ok(mut vm) => {
            if let Some(ch) = channel {
                ch.set_running(index, true);
            }
            let fate = vm.run();
            if let Some(ch) = channel {
                ch.set_running(index, false);
            }
            log!("{}: {fate}", vm.name);
            if let Some(ch) = channel {
                let s = ch.stats(index);
                log!(
                    "{}: channel: doorbells rung={} interrupts injected={} mediated sends={}",
                    vm.name,
                    s.doorbells,
                    s.interrupts,
                    s.mediated
                );
            }
            let mut line = alloc::string::String::new();
            for (kind, n) in vm.stats.nonzero() {
                use core::fmt::Write;
                let _ = write!(line, " {kind}={n}");
            }
            log!("{}: exits total={}{line}", vm.name, vm.stats.total_exits());
            // What each kind costs the hypervisor: the figure that says
            // which exits are worth removing first.
            let mut line = alloc::string::String::new();
            for (kind, c) in vm.stats.mean_cycles() {
                use core::fmt::Write;
                let _ = write!(line, " {kind}={c}");
            }
            log!("{}: mean cycles per exit:{line}", vm.name);
            fate.is_clean()
        }
        Err(e) => {
            log!("{}: not started: {e}", part.vms()[index].name());
            false
        }
    };
    finish(index, clean);
}

/// Records that VM `index` could not start on its CPU.
pub fn not_started(index: usize, part: &Partition, why: &str) {
    log!("{}: not started: {why}", part.vms()[index].name());
    finish(index, false);
}

fn finish(index: usize, clean: bool) {
    RESULT[index].store(if clean { CLEAN } else { FAILED }, Ordering::SeqCst);
    FINISHED.fetch_add(1, Ordering::SeqCst);
}

fn build(
    index: usize,
    part: &'static Partition,
    channel: Option<&'static Channel>,
    boot: &BootInfo,
    frames: &spin::Mutex<Option<FrameAllocator>>,
    tsc_hz: u64,
) -> Result<Vm<vcpu::VmxVcpu>, alloc::string::String> {
    use alloc::format;
    let entry = &part.vms()[index];
    let name = entry.name();
    let ram_bytes = u64::from(entry.ram_mib) << 20;
    let caps = vmx::read_caps();
    let chosen = vcpu::choose_controls(&caps).map_err(|m| format!("{m}"))?;
    // `no-apicv` on the hypervisor's command line keeps the local APIC
    // emulated by exits alone, for comparison or to rule the feature out.
    let chosen = if boot.flag("no-apicv") {
        chosen.without_apic_virt()
    } else {
        chosen
    };
    let (mut kbuf, mut ibuf) = ([0u8; 32], [0u8; 32]);
    let kernel_name = module_name(name, "kernel", &mut kbuf);
    let initrd_name = module_name(name, "initrd", &mut ibuf);
    let kernel = boot
        .module(kernel_name)
        .map(module_bytes)
        .ok_or_else(|| format!("no {kernel_name} module"))?;
    let initrd = boot.module(initrd_name).map(module_bytes).unwrap_or(&[]);
    let mut guard = frames.lock();
    let frames = guard.as_mut().ok_or("no frame allocator")?;
    vcpu::vmxon(frames, &caps)?;
    let hpa = frames.alloc(ram_bytes, 2 << 20).ok_or_else(|| {
        format!(
            "ram_mib: {} MiB of guest RAM do not fit in the {} MiB left",
            entry.ram_mib,
            frames.free_bytes() >> 20
        )
    })?;
    // SAFETY: a fresh block from the frame allocator, identity-mapped, used
    // only as this guest's RAM from now on.
    let ram = unsafe { core::slice::from_raw_parts_mut(hpa as *mut u8, ram_bytes as usize) };
    ram.fill(0);
    let split = memmap::high_ram(ram_bytes, channel.map(|c| c.layout().region_size));
    let (ram, high) = ram.split_at_mut(split.low as usize);
    let high_ram = split.high.map(|(gpa, len)| Range::new(gpa, gpa + len));
    // With a channel, the DSDT's PCI root bridge has the channel's BAR in
    // its window: Linux finds bus 0 through it (it does no legacy scan
    // when ACPI is on) and keeps the BAR where the EPT maps the region.
    let window = channel.map(|c| aml::PciWindow {
        start: memmap::CHANNEL_GPA,
        len: c.layout().region_size,
    });
    let dsdt = aml::dsdt_body(window);
    let acpi = AcpiConfig {
        dsdt_aml: &dsdt,
        ..AcpiConfig::single_cpu(0)
    };
    // The guest learns its name from its command line.
    let cmdline = format!("{} vmlink.name={name}", entry.cmdline());
    let linux = load_linux(ram, high_ram, kernel, initrd, &cmdline, &acpi)
        .map_err(|e| format!("{kernel_name}: {e}"))?;
    // The page the CPU recognises the guest's APIC accesses by; its
    // contents are never used.
    let apic_access = if chosen.apic_virt {
        Some(
            frames
                .alloc(4096, 4096)
                .ok_or("out of memory for the APIC-access page")?,
        )
    } else {
        None
    };
    let runs = memmap::plan(hpa, split, channel.map(|c| (&c.frames, index)), apic_access);
    let ept = memmap::build(&mut IdentityTables(frames), &runs, chosen.page_sizes())
        .ok_or("no memory for EPT")?;
    let state = vcpu::BootState {
        rip: linux.entry_rip,
        rsi: linux.rsi,
        cr3: linux.cr3,
        gdt_base: linux.gdt_base,
        gdt_limit: linux.gdt_limit,
        code_selector: linux.code_selector,
        data_selector: linux.data_selector,
    };
    let v = vcpu::VmxVcpu::new(
        frames,
        &caps,
        chosen,
        ept.pointer(),
        index as u16 + 1,
        &state,
        apic_access.map(|hpa| (hpa, crate::vmm::platform::APIC_BASE)),
    )?;
    drop(guard);
    let hidden = Hidden {
        rdtscp: !chosen.rdtscp,
        invpcid: !chosen.invpcid,
        // XSAVES would need IA32_XSS emulated; XSAVEC/XSAVEOPT suffice.
        xsaves: true,
        xcr0_mask: host_xcr0_mask(),
    };
    let mut cpuid = CpuidConfig::new(0, tsc_hz);
    cpuid.placement = Placement {
        physical_cpu: part.cpu_of(index) as u32,
        vm_index: index as u32,
        ram_mib: entry.ram_mib,
    };
    if let Some(r) = high_ram {
        log!(
            "{name}: the last {} KiB of its RAM at GPA {:#x}, above the channel",
            r.len() >> 10,
            r.start
        );
    }
    let ram = match high_ram {
        Some(r) => GuestRam::split(ram, r.start, high),
        None => GuestRam::flat(ram),
    };
    let mut platform = Platform::new(ram, 0, tsc_hz, cpuid, hidden);
    platform.console_input = index == 0;
    platform.vm_name = name;
    if let Some(ch) = channel {
        platform.attach_channel(ch, index);
    }
    log!(
        "{name}: CPU {}, {} MiB RAM at host {:#x}, TSC {} kHz, Linux entry {:#x}, local APIC: {}",
        part.cpu_of(index),
        entry.ram_mib,
        hpa,
        tsc_hz / 1000,
        linux.entry_rip,
        if v.delivers_interrupts() {
            "virtual-interrupt delivery"
        } else {
            "emulated by exits"
        }
    );
    Ok(Vm {
        name,
        vcpu: v,
        platform,
        stats: ExitStats::default(),
        xcr0_mask: host_xcr0_mask(),
        // `trace`: a line of guest state every half second of TSC.
        trace: boot
            .flag("trace")
            .then(|| crate::vmm::Trace::new(tsc_hz / 2)),
        waited: 0,
        long_halt: tsc_hz.saturating_mul(30),
    })
}
