//! The boot flow: from the loader's hand-off to every CPU online.

use alloc::boxed::Box;
use core::sync::atomic::{AtomicUsize, Ordering};

use crate::arch::x64::{
    acpi, cpu, gdt, idt, lapic::LocalApic, paging, percpu, pit, power, serial, smp, vmx,
};
use crate::bootinfo::{self, BootInfo, BootInfoError, PhysRead, MB1_MAGIC, MB2_MAGIC};
use crate::cpus::CpuList;
use crate::frames::FrameAllocator;
use crate::range::Range;
use crate::{heap, log};
use vmlink_abi::{exit_status, HALT_MARKER};

/// What the image knows about itself (from the linker script and the boot
/// assembly), handed in by the binary.
pub struct ImageLayout {
    pub image: Range,
    pub ap_trampoline: &'static [u8],
    /// The boot page tables (identity map of the first 4 GiB, below 4 GiB):
    /// the AP trampoline runs on them until the AP loads the real ones.
    pub boot_pml4: u64,
}

const AP_STACK_SIZE: usize = 64 * 1024;

/// Physical memory through the identity map.
struct IdentityMem;

impl PhysRead for IdentityMem {
    fn read(&self, addr: u64, buf: &mut [u8]) {
        // SAFETY: the boot page tables identity-map the first 4 GiB, where
        // multiboot1 information always lies (its pointers are 32-bit).
        unsafe { core::ptr::copy_nonoverlapping(addr as *const u8, buf.as_mut_ptr(), buf.len()) };
    }
}

/// Prints the closing line the test harness waits for, tells an emulator
/// to exit, and stops this CPU.
pub fn system_halt(status: u8) -> ! {
    let word = match status {
        exit_status::OK => "ok",
        exit_status::NO_VMX => "novmx",
        exit_status::PANIC => "panic",
        _ => "fail",
    };
    log!("{HALT_MARKER} status={word}");
    serial::flush();
    power::exit_emulator(status);
    cpu::halt_forever()
}

fn fatal(what: core::fmt::Arguments) -> ! {
    log!("vmlink: fatal: {what}");
    system_halt(exit_status::FAIL)
}

static PML4: spin::Once<u64> = spin::Once::new();
static CPUS: spin::Once<CpuList> = spin::Once::new();

/// The boot CPU's path. `magic` and `info` are what the loader passed.
pub fn bsp_main(magic: u32, info: u32, layout: ImageLayout) -> ! {
    percpu::install_bsp();
    serial::init();
    log!(
        "vmlink {} (shared ABI {}) starting",
        crate::VERSION,
        vmlink_abi::ABI_VERSION
    );

    let boot = match magic {
        MB1_MAGIC => bootinfo::parse_mb1(&IdentityMem, u64::from(info)),
        // SAFETY: with this magic, `info` is GRUB's multiboot2 structure,
        // identity-mapped and untouched so far.
        MB2_MAGIC => unsafe { bootinfo::parse_mb2(u64::from(info)) },
        other => Err(BootInfoError::UnknownMagic(other)),
    };
    let boot = boot.unwrap_or_else(|e| fatal(format_args!("{e}")));
    report_boot(&boot);

    // A machine without VT-x gets one clear line before anything else.
    if let Err(why) = vmx::check_and_enable() {
        log!("vmlink: VT-x not available: {why}");
        system_halt(exit_status::NO_VMX);
    }

    let mut frames = memory_init(&boot, &layout);
    gdt::init_this_cpu();
    idt::init_this_cpu();
    cpu::enable_xsave();
    cpu::mask_legacy_pic();

    let top = boot.ram.as_slice().last().map_or(0, |r| r.end);
    let pml4 = paging::build_identity(&mut frames, top, cpu::has_1g_pages())
        .unwrap_or_else(|| fatal(format_args!("out of memory building page tables")));
    paging::activate(pml4);
    PML4.call_once(|| pml4);

    let apic = LocalApic::this_cpu();
    apic.mask_lints();
    let bsp_id = apic.id();
    let mut entries = alloc::vec::Vec::new();
    if let Err(e) = acpi::for_each_cpu(boot.acpi_root, |c| entries.push(c)) {
        log!("vmlink: warning: {e}; starting the boot CPU only");
    }
    let cpus = *CPUS.call_once(|| CpuList::from_madt(bsp_id, entries.into_iter()));
    if cpus.ignored > 0 {
        log!(
            "vmlink: warning: {} CPUs beyond the first {} are left offline",
            cpus.ignored,
            cpus.len()
        );
    }
    log!(
        "vmlink: ACPI lists {} CPUs: APIC IDs {:?}",
        cpus.len(),
        cpus.as_slice()
    );
    report_cpu(bsp_id);

    // SAFETY: the first MiB is never handed out by the frame allocator, so
    // the trampoline page is ours, and it is identity-mapped.
    unsafe { smp::install_trampoline(layout.ap_trampoline) };
    let mut online = 1;
    for (index, &apic_id) in cpus.as_slice().iter().enumerate().skip(1) {
        let stack = frames
            .alloc(AP_STACK_SIZE as u64, 4096)
            .unwrap_or_else(|| fatal(format_args!("out of memory for AP stacks")));
        let pc: &'static percpu::PerCpu = Box::leak(Box::new(percpu::PerCpu {
            index: index as u64,
            apic_id: u64::from(apic_id),
        }));
        let ap = smp::ApStart {
            apic_id,
            cr3: layout.boot_pml4,
            stack_top: stack + AP_STACK_SIZE as u64,
            arg: pc as *const percpu::PerCpu as u64,
            entry: ap_entry,
        };
        // SAFETY: the trampoline is installed; the stack was just allocated
        // and is used by this AP alone.
        if unsafe { smp::start_ap(&apic, layout.ap_trampoline.len(), &ap) } {
            online += 1;
        } else {
            log!("vmlink: CPU {index} (APIC ID {apic_id}) did not start");
        }
    }
    // The APs report themselves; wait (boundedly) until each has.
    for _ in 0..5000 {
        if REPORTED.load(Ordering::SeqCst) >= online - 1 {
            break;
        }
        pit::delay_us(1000);
    }
    let online = 1 + REPORTED.load(Ordering::SeqCst);
    if online == cpus.len() {
        log!("vmlink: all {online} CPUs online");
        let flag = |w: &str| boot.cmdline().split_whitespace().any(|x| x == w);
        if flag("selftest") {
            selftest(&mut frames);
        }
        // Proves the panic path end to end (report, other CPUs stopped).
        if flag("panic-test") {
            panic!("panic-test requested on the command line");
        }
        if boot.module(VM0_KERNEL).is_none() {
            log!("vmlink: no guest kernel module ({VM0_KERNEL}): nothing to run");
            system_halt(exit_status::OK);
        }
        run_vm0(&boot, &mut frames);
    }
    log!("vmlink: only {online} of {} CPUs online", cpus.len());
    system_halt(exit_status::FAIL)
}

/// APs that finished their start-up and printed their line.
static REPORTED: AtomicUsize = AtomicUsize::new(0);

/// Every application processor starts here (called by the trampoline with
/// its PerCpu block).
extern "C" fn ap_entry(percpu_block: u64) -> ! {
    // SAFETY: the BSP passed a leaked PerCpu block that lives forever.
    percpu::install(unsafe { &*(percpu_block as *const percpu::PerCpu) });
    smp::STARTED.fetch_add(1, Ordering::SeqCst);
    paging::activate(*PML4.get().expect("page tables built before APs start"));
    gdt::init_this_cpu();
    idt::init_this_cpu();
    cpu::enable_xsave();
    let apic = LocalApic::this_cpu();
    apic.mask_lints();
    match vmx::check_and_enable() {
        Ok(()) => report_cpu(apic.id()),
        Err(why) => log!("vmlink: VT-x not available on this CPU: {why}"),
    }
    REPORTED.fetch_add(1, Ordering::SeqCst);
    cpu::halt_forever()
}

fn report_boot(boot: &BootInfo) {
    log!(
        "boot: {:?}, {} MiB usable RAM in {} ranges, cmdline {:?}",
        boot.protocol,
        boot.ram.total() >> 20,
        boot.ram.as_slice().len(),
        boot.cmdline()
    );
    for m in boot.modules() {
        log!(
            "boot: module {:?} at {:#x}..{:#x} ({} KiB)",
            m.name(),
            m.range.start,
            m.range.end,
            m.range.len() >> 10
        );
    }
    if boot.dropped_modules > 0 {
        log!(
            "boot: warning: {} modules beyond the first {} ignored",
            boot.dropped_modules,
            bootinfo::MAX_MODULES
        );
    }
}

fn memory_init(boot: &BootInfo, layout: &ImageLayout) -> FrameAllocator {
    let mut reserved = [Range::new(0, 0); bootinfo::MAX_MODULES + 1];
    reserved[0] = layout.image;
    for (slot, m) in reserved[1..].iter_mut().zip(boot.modules()) {
        *slot = m.range;
    }
    let mut frames = FrameAllocator::new(&boot.ram, &reserved)
        .unwrap_or_else(|_| fatal(format_args!("memory map too fragmented")));
    let heap_at = frames
        .alloc_low(heap::HEAP_SIZE, 2 << 20)
        .unwrap_or_else(|| {
            fatal(format_args!(
                "not enough memory for the {} MiB heap",
                heap::HEAP_SIZE >> 20
            ))
        });
    // SAFETY: the block was just taken from the allocator (so nothing else
    // uses it), lies below 4 GiB where the boot tables map it, and this is
    // the only call.
    unsafe { heap::init(heap_at, heap::HEAP_SIZE) };
    log!(
        "memory: {} MiB free for guests and the hypervisor, heap {} MiB at {:#x}",
        frames.free_bytes() >> 20,
        heap::HEAP_SIZE >> 20,
        heap_at
    );
    frames
}

/// Logs the running CPU's "online" line with its VT-x capabilities.
fn report_cpu(apic_id: u32) {
    log!("online: apic_id={apic_id} vmx: {}", vmx::read_caps());
}

/// Runs the built-in test guest on this CPU (see `selftest`).
fn selftest(frames: &mut FrameAllocator) -> ! {
    use crate::arch::x64::vmx::{ept::Ept, vcpu};
    use crate::selftest as t;
    let caps = vmx::read_caps();
    let chosen = vcpu::choose_controls(&caps).unwrap_or_else(|m| fatal(format_args!("{m}")));
    vcpu::vmxon(frames, &caps).unwrap_or_else(|e| fatal(format_args!("{e}")));
    const RAM: u64 = 2 << 20;
    let hpa = frames
        .alloc(RAM, RAM)
        .unwrap_or_else(|| fatal(format_args!("no memory for the self-test guest")));
    // SAFETY: a fresh block from the frame allocator, identity-mapped, used
    // only as this guest's RAM.
    let ram = unsafe { core::slice::from_raw_parts_mut(hpa as *mut u8, RAM as usize) };
    ram.fill(0);
    t::build(ram);
    let mut ept = Ept::new(frames).unwrap_or_else(|| fatal(format_args!("no memory for EPT")));
    ept.map(frames, 0, hpa, RAM, chosen.ept_1g, chosen.ept_2m)
        .unwrap_or_else(|| fatal(format_args!("no memory for EPT")));
    let boot = vcpu::BootState {
        rip: t::CODE_GPA,
        rsi: 0,
        cr3: t::PML4_GPA,
        gdt_base: t::GDT_GPA,
        gdt_limit: 0x1F,
        code_selector: 0x10,
        data_selector: 0x18,
    };
    let mut v = vcpu::VmxVcpu::new(frames, &caps, chosen, ept.pointer(), 1, &boot)
        .unwrap_or_else(|e| fatal(format_args!("{e}")));
    let sig = u32::from_le_bytes([
        vmlink_abi::CPUID_SIGNATURE[0],
        vmlink_abi::CPUID_SIGNATURE[1],
        vmlink_abi::CPUID_SIGNATURE[2],
        vmlink_abi::CPUID_SIGNATURE[3],
    ]);
    match t::run(&mut v, sig) {
        Ok(out) => {
            log!(
                "selftest: guest ran and printed {:?} from CPUID (controls {:x?})",
                core::str::from_utf8(&out).unwrap_or("?"),
                chosen
            );
            system_halt(exit_status::OK)
        }
        Err(e) => {
            let mut d = alloc::string::String::new();
            crate::vcpu::Vcpu::dump(&v, &mut d);
            log!("selftest: failed: {e} [{d}]");
            system_halt(exit_status::FAIL)
        }
    }
}

const VM0_KERNEL: &str = "vm0.kernel";
const VM0_INITRD: &str = "vm0.initrd";
const VM0_RAM: u64 = 256 << 20;
const VM0_CMDLINE: &str = "console=ttyS0 panic=-1 no_timer_check";

/// The bytes of a boot module (identity-mapped, reserved from the frame
/// allocator).
fn module_bytes(m: &bootinfo::Module) -> &'static [u8] {
    // SAFETY: module ranges are reserved in the frame allocator, so nothing
    // else writes them, and they are identity-mapped.
    unsafe { core::slice::from_raw_parts(m.range.start as *const u8, m.range.len() as usize) }
}

/// Boots the first guest on this CPU and reports how it ended.
fn run_vm0(boot: &BootInfo, frames: &mut FrameAllocator) -> ! {
    use crate::arch::x64::vmx::{ept::Ept, vcpu};
    use crate::vmm::{
        platform::{self, Platform},
        stats::ExitStats,
        Vm,
    };
    let name = "vm0";
    let caps = vmx::read_caps();
    let chosen = vcpu::choose_controls(&caps).unwrap_or_else(|m| fatal(format_args!("{m}")));
    vcpu::vmxon(frames, &caps).unwrap_or_else(|e| fatal(format_args!("{e}")));
    let tsc_hz = pit::measure_tsc_hz();
    log!(
        "{name}: TSC {} kHz, {} MiB RAM",
        tsc_hz / 1000,
        VM0_RAM >> 20
    );

    let kernel = boot.module(VM0_KERNEL).map(module_bytes).unwrap_or(&[]);
    let initrd = boot.module(VM0_INITRD).map(module_bytes).unwrap_or(&[]);
    let Some(hpa) = frames.alloc(VM0_RAM, 2 << 20) else {
        log!(
            "{name}: not started: {} MiB of guest RAM do not fit in the {} MiB left",
            VM0_RAM >> 20,
            frames.free_bytes() >> 20
        );
        system_halt(exit_status::FAIL);
    };
    // SAFETY: a fresh block from the frame allocator, identity-mapped, used
    // only as this guest's RAM from now on.
    let ram = unsafe { core::slice::from_raw_parts_mut(hpa as *mut u8, VM0_RAM as usize) };
    ram.fill(0);
    let acpi = crate::guest::AcpiConfig {
        dsdt_aml: crate::guest::aml::DSDT_BODY,
        ..crate::guest::AcpiConfig::single_cpu(0)
    };
    let linux = match crate::guest::load_linux(ram, kernel, initrd, VM0_CMDLINE, &acpi) {
        Ok(l) => l,
        Err(e) => {
            log!("{name}: not started: {VM0_KERNEL}: {e}");
            system_halt(exit_status::FAIL);
        }
    };
    let mut ept = Ept::new(frames).unwrap_or_else(|| fatal(format_args!("no memory for EPT")));
    ept.map(frames, 0, hpa, VM0_RAM, chosen.ept_1g, chosen.ept_2m)
        .unwrap_or_else(|| fatal(format_args!("no memory for EPT")));
    let state = vcpu::BootState {
        rip: linux.entry_rip,
        rsi: linux.rsi,
        cr3: linux.cr3,
        gdt_base: linux.gdt_base,
        gdt_limit: linux.gdt_limit,
        code_selector: linux.code_selector,
        data_selector: linux.data_selector,
    };
    let v = vcpu::VmxVcpu::new(frames, &caps, chosen, ept.pointer(), 1, &state)
        .unwrap_or_else(|e| fatal(format_args!("{e}")));
    let cpuid = crate::vm::cpuid::CpuidConfig::new(0, tsc_hz);
    let hidden = platform::Hidden {
        rdtscp: !chosen.rdtscp,
        invpcid: !chosen.invpcid,
        // XSAVES would need IA32_XSS emulated; XSAVEC/XSAVEOPT suffice.
        xsaves: true,
        xcr0_mask: host_xcr0_mask(),
    };
    let platform = Platform::new(ram, 0, tsc_hz, cpuid, hidden);
    let mut vm = Vm {
        name,
        vcpu: v,
        platform,
        stats: ExitStats::default(),
        xcr0_mask: host_xcr0_mask(),
    };
    log!("{name}: starting Linux at {:#x}", linux.entry_rip);
    let fate = vm.run();
    log!("{name}: {fate}");
    let mut line = alloc::string::String::new();
    for (kind, n) in vm.stats.nonzero() {
        use core::fmt::Write;
        let _ = write!(line, " {kind}={n}");
    }
    log!("{name}: exits total={}{line}", vm.stats.total_exits());
    log!(
        "vmlink: summary: {name} {}",
        if fate.is_clean() { "ok" } else { "failed" }
    );
    system_halt(if fate.is_clean() {
        exit_status::OK
    } else {
        exit_status::FAIL
    })
}

/// XCR0 bits the CPU supports (CPUID 0xD.0 EAX/EDX), limited to x87, SSE
/// and AVX: the state FXSAVE plus legacy-SSE host code leave intact.
fn host_xcr0_mask() -> u64 {
    if !cpu::has_xsave() {
        return 0;
    }
    let r = cpu::cpuid(0xD, 0);
    ((u64::from(r.edx) << 32) | u64::from(r.eax)) & 0b111
}
