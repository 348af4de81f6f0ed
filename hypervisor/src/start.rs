//! The boot flow: from the loader's hand-off to every CPU online.

use alloc::boxed::Box;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use crate::arch::x64::{
    acpi, cpu, gdt, idt, lapic::LocalApic, paging, percpu, pit, power, serial, smp, vmx,
};
use crate::bootinfo::{self, BootInfo, BootInfoError, PhysRead, MB1_MAGIC, MB2_MAGIC};
use crate::channel::Channel;
use crate::cpus::CpuList;
use crate::frames::{FrameAllocator, PAGE_SIZE as PAGE};
use crate::partition::{Partition, Refusal};
use crate::range::Range;
use crate::vmm::launch;
use crate::vmm::memmap::ChannelFrames;
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
        if boot.flag("selftest") {
            selftest(&mut frames);
        }
        // Proves the panic path end to end (report, other CPUs stopped).
        if boot.flag("panic-test") {
            panic!("panic-test requested on the command line");
        }
        run_guests(boot, frames, online);
    }
    log!("vmlink: only {online} of {} CPUs online", cpus.len());
    system_halt(exit_status::FAIL)
}

/// APs that finished their start-up and printed their line.
static REPORTED: AtomicUsize = AtomicUsize::new(0);

/// Shared with the APs once every CPU is online.
static BOOT: spin::Once<BootInfo> = spin::Once::new();
static FRAMES: spin::Mutex<Option<FrameAllocator>> = spin::Mutex::new(None);
static TSC_HZ: AtomicU64 = AtomicU64::new(0);
/// Set when the APs may start their guests.
static GO: AtomicBool = AtomicBool::new(false);

/// The partition every CPU reads once the guests may start.
static PARTITION: spin::Once<Partition> = spin::Once::new();
/// The channel between the partition's two VMs, when it has one.
static CHANNEL: spin::Once<Channel> = spin::Once::new();

fn kick_cpu(index: usize) {
    if let Some(&apic_id) = CPUS.get().and_then(|c| c.as_slice().get(index)) {
        smp::kick(apic_id);
    }
}

/// Allocates, zeroes and describes the channel region the partition asks
/// for; one that does not fit stops the machine before any guest starts.
fn channel(part: &Partition, frames: &mut FrameAllocator) -> Option<&'static Channel> {
    let mib = part.channel.region_mib;
    if mib == 0 {
        return None;
    }
    let size = u64::from(mib) << 20;
    let layout = vmlink_abi::channel::Layout::new(size, part.channel.max_buffers)
        .unwrap_or_else(|e| fatal(format_args!("config: channel: {e}")));
    let free = frames.free_bytes() >> 20;
    let mut page = || frames.alloc(PAGE, PAGE);
    let headers = [page(), page()];
    // 2 MiB alignment lets EPT map the sections' insides with 2 MiB pages
    // (their edges are 4 KiB: a section starts one page in); more would
    // gain nothing and could fail on a fragmented map.
    let region = frames.alloc(size, size.min(2 << 20));
    let (Some(region_hpa), [Some(h0), Some(h1)]) = (region, headers) else {
        fatal(format_args!(
            "config: channel: a region of {mib} MiB does not fit in the {free} MiB left"
        ))
    };
    let frames = ChannelFrames {
        layout,
        region_hpa,
        header_hpa: [h0, h1],
    };
    let cpus = [part.cpu_of(0), part.cpu_of(1)];
    // SAFETY: the frames were just allocated for the channel alone and are
    // identity-mapped (the map covers all RAM).
    let ch = CHANNEL.call_once(|| unsafe { Channel::new(frames, cpus, kick_cpu) });
    log!(
        "vmlink: channel: {mib} MiB at host {region_hpa:#x}, guest {:#x}; {} ring entries, {} buffers per direction",
        crate::vmm::memmap::CHANNEL_GPA,
        layout.ring_entries,
        layout.buffer_count
    );
    Some(ch)
}

/// The partition from the `vmlink.config` module (or the default one),
/// checked against this machine; a configuration that cannot run stops
/// the machine before any guest starts.
fn partition(boot: &BootInfo, online: usize) -> Partition {
    let has = |m: &str| boot.module(m).is_some();
    let part = match boot.module(vmlink_abi::config::MODULE_NAME) {
        Some(m) => {
            // SAFETY: module ranges are reserved in the frame allocator and
            // identity-mapped; nothing writes them.
            let blob = unsafe {
                core::slice::from_raw_parts(m.range.start as *const u8, m.range.len() as usize)
            };
            Partition::from_blob(blob).unwrap_or_else(|e| {
                fatal(format_args!(
                    "config: {} refused: {e}",
                    vmlink_abi::config::MODULE_NAME
                ))
            })
        }
        None => {
            log!(
                "vmlink: no {} module: vm<i> on CPU i for each vm<i>.kernel module",
                vmlink_abi::config::MODULE_NAME
            );
            Partition::default_for(online, has)
        }
    };
    if let Err(error) = part.check_machine(online, has) {
        let r = Refusal {
            partition: &part,
            error,
        };
        fatal(format_args!("config: refused: {r}"));
    }
    for (i, e) in part.vms().iter().enumerate() {
        log!(
            "vmlink: config: vm[{i}] {} on CPU {}, {} MiB RAM, cmdline {:?}",
            e.name(),
            part.cpu_of(i),
            e.ram_mib,
            e.cmdline()
        );
    }
    if part.channel.region_mib != 0 {
        log!(
            "vmlink: config: channel of {} MiB between {} and {}",
            part.channel.region_mib,
            part.vms()[0].name(),
            part.vms()[1].name()
        );
    }
    part
}

/// One guest per CPU as the partition says. The boot CPU runs its own
/// guest (if it has one), then waits for every guest to end and prints the
/// summary.
fn run_guests(boot: BootInfo, frames: FrameAllocator, online: usize) -> ! {
    let boot = BOOT.call_once(|| boot);
    let part = PARTITION.call_once(|| partition(boot, online));
    let mut frames = frames;
    let ch = channel(part, &mut frames);
    *FRAMES.lock() = Some(frames);
    TSC_HZ.store(pit::measure_tsc_hz(), Ordering::SeqCst);
    let count = part.vms().len();
    if count == 0 {
        log!("vmlink: no guest kernel module (vm0.kernel): nothing to run");
        system_halt(exit_status::OK);
    }
    log!("vmlink: starting {count} guest(s), one per CPU");
    GO.store(true, Ordering::SeqCst);
    if let Some(vm) = part.vm_on_cpu(0) {
        launch::run(vm, part, ch, boot, &FRAMES, TSC_HZ.load(Ordering::SeqCst));
    }
    while launch::finished() < count {
        cpu::relax();
    }
    let mut all_clean = true;
    for (i, e) in part.vms().iter().enumerate() {
        let clean = launch::clean(i);
        all_clean &= clean;
        log!(
            "vmlink: summary: {} {}",
            e.name(),
            if clean { "ok" } else { "failed" }
        );
    }
    system_halt(if all_clean {
        exit_status::OK
    } else {
        exit_status::FAIL
    })
}

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
    let vmx_ok = match vmx::check_and_enable() {
        Ok(()) => {
            report_cpu(apic.id());
            true
        }
        Err(why) => {
            log!("vmlink: VT-x not available on this CPU: {why}");
            false
        }
    };
    REPORTED.fetch_add(1, Ordering::SeqCst);
    while !GO.load(Ordering::SeqCst) {
        cpu::relax();
    }
    let index = percpu::index() as usize;
    if let (Some(boot), Some(part)) = (BOOT.get(), PARTITION.get()) {
        if let Some(vm) = part.vm_on_cpu(index) {
            if vmx_ok {
                let ch = CHANNEL.get();
                launch::run(vm, part, ch, boot, &FRAMES, TSC_HZ.load(Ordering::SeqCst));
            } else {
                launch::not_started(vm, part, "this CPU has no usable VT-x");
            }
        }
    }
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
    use crate::arch::x64::vmx::{ept::IdentityTables, vcpu};
    use crate::selftest as t;
    let caps = vmx::read_caps();
    let chosen = vcpu::choose_controls(&caps)
        .unwrap_or_else(|m| fatal(format_args!("{m}")))
        .without_apic_virt();
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
    let runs = crate::vmm::memmap::plan(hpa, crate::vmm::memmap::high_ram(RAM, None), None, None);
    let ept = crate::vmm::memmap::build(&mut IdentityTables(frames), &runs, chosen.page_sizes())
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
    let mut v = vcpu::VmxVcpu::new(frames, &caps, chosen, ept.pointer(), 1, &boot, None)
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
