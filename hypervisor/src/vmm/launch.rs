//! Creating a guest on the running CPU and running it to its end: the
//! glue between the boot modules, the guest loader, the VT-x backend and
//! the exit loop. One guest per physical CPU; each CPU calls [`run`] for
//! its own guest.

use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use crate::arch::x64::vmx::{self, ept::Ept, vcpu};
use crate::bootinfo::{BootInfo, Module};
use crate::frames::FrameAllocator;
use crate::guest::{aml, load_linux, AcpiConfig};
use crate::log;
use crate::vm::cpuid::CpuidConfig;
use crate::vmm::platform::{Hidden, Platform};
use crate::vmm::stats::ExitStats;
use crate::vmm::Vm;

pub const MAX_VMS: usize = 8;
pub const NAMES: [&str; MAX_VMS] = ["vm0", "vm1", "vm2", "vm3", "vm4", "vm5", "vm6", "vm7"];
const KERNELS: [&str; MAX_VMS] = [
    "vm0.kernel",
    "vm1.kernel",
    "vm2.kernel",
    "vm3.kernel",
    "vm4.kernel",
    "vm5.kernel",
    "vm6.kernel",
    "vm7.kernel",
];
const INITRDS: [&str; MAX_VMS] = [
    "vm0.initrd",
    "vm1.initrd",
    "vm2.initrd",
    "vm3.initrd",
    "vm4.initrd",
    "vm5.initrd",
    "vm6.initrd",
    "vm7.initrd",
];
/// Guest RAM until partition configurations set it.
pub const DEFAULT_RAM: u64 = 256 << 20;
const CMDLINE: &str = "console=ttyS0 panic=-1 no_timer_check";

const RUNNING: u8 = 0;
const CLEAN: u8 = 1;
const FAILED: u8 = 2;
static RESULT: [AtomicU8; MAX_VMS] = [const { AtomicU8::new(RUNNING) }; MAX_VMS];
static FINISHED: AtomicUsize = AtomicUsize::new(0);

pub fn kernel_module(index: usize) -> &'static str {
    KERNELS[index]
}

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

/// Runs guest `index` on this CPU until it ends, records how it ended.
pub fn run(
    index: usize,
    boot: &BootInfo,
    frames: &spin::Mutex<Option<FrameAllocator>>,
    tsc_hz: u64,
) {
    let clean = match build(index, boot, frames, tsc_hz) {
        Ok(mut vm) => {
            let fate = vm.run();
            log!("{}: {fate}", vm.name);
            let mut line = alloc::string::String::new();
            for (kind, n) in vm.stats.nonzero() {
                use core::fmt::Write;
                let _ = write!(line, " {kind}={n}");
            }
            log!("{}: exits total={}{line}", vm.name, vm.stats.total_exits());
            fate.is_clean()
        }
        Err(e) => {
            log!("{}: not started: {e}", NAMES[index]);
            false
        }
    };
    RESULT[index].store(if clean { CLEAN } else { FAILED }, Ordering::SeqCst);
    FINISHED.fetch_add(1, Ordering::SeqCst);
}

fn build(
    index: usize,
    boot: &BootInfo,
    frames: &spin::Mutex<Option<FrameAllocator>>,
    tsc_hz: u64,
) -> Result<Vm<vcpu::VmxVcpu>, alloc::string::String> {
    use alloc::format;
    let name = NAMES[index];
    let caps = vmx::read_caps();
    let chosen = vcpu::choose_controls(&caps).map_err(|m| format!("{m}"))?;
    let kernel = boot
        .module(KERNELS[index])
        .map(module_bytes)
        .ok_or_else(|| format!("no {} module", KERNELS[index]))?;
    let initrd = boot.module(INITRDS[index]).map(module_bytes).unwrap_or(&[]);
    let mut guard = frames.lock();
    let frames = guard.as_mut().ok_or("no frame allocator")?;
    vcpu::vmxon(frames, &caps)?;
    let hpa = frames.alloc(DEFAULT_RAM, 2 << 20).ok_or_else(|| {
        format!(
            "{} MiB of guest RAM do not fit in the {} MiB left",
            DEFAULT_RAM >> 20,
            frames.free_bytes() >> 20
        )
    })?;
    // SAFETY: a fresh block from the frame allocator, identity-mapped, used
    // only as this guest's RAM from now on.
    let ram = unsafe { core::slice::from_raw_parts_mut(hpa as *mut u8, DEFAULT_RAM as usize) };
    ram.fill(0);
    let acpi = AcpiConfig {
        dsdt_aml: aml::DSDT_BODY,
        ..AcpiConfig::single_cpu(0)
    };
    // The guest learns its name from its command line.
    let cmdline = format!("{CMDLINE} vmlink.name={name}");
    let linux = load_linux(ram, kernel, initrd, &cmdline, &acpi)
        .map_err(|e| format!("{}: {e}", KERNELS[index]))?;
    let mut ept = Ept::new(frames).ok_or("no memory for EPT")?;
    ept.map(frames, 0, hpa, DEFAULT_RAM, chosen.ept_1g, chosen.ept_2m)
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
    )?;
    drop(guard);
    let hidden = Hidden {
        rdtscp: !chosen.rdtscp,
        invpcid: !chosen.invpcid,
        // XSAVES would need IA32_XSS emulated; XSAVEC/XSAVEOPT suffice.
        xsaves: true,
        xcr0_mask: host_xcr0_mask(),
    };
    let mut platform = Platform::new(ram, 0, tsc_hz, CpuidConfig::new(0, tsc_hz), hidden);
    platform.console_input = index == 0;
    log!(
        "{name}: {} MiB RAM at host {:#x}, TSC {} kHz, Linux entry {:#x}",
        DEFAULT_RAM >> 20,
        hpa,
        tsc_hz / 1000,
        linux.entry_rip
    );
    Ok(Vm {
        name,
        vcpu: v,
        platform,
        stats: ExitStats::default(),
        xcr0_mask: host_xcr0_mask(),
    })
}
