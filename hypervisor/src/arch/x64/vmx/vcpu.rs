//! The VT-x backend of [`Vcpu`]: one VMCS per virtual CPU, set up from the
//! controls `controls::choose` picked, and the translation of VM exits into
//! arch-neutral [`VmExit`]s.

use alloc::boxed::Box;
use core::fmt::Write;

use super::caps::VmxCaps;
use super::controls::{self, fix_cr, proc, Chosen};
use super::entry::{self, FxArea, GuestRegs};
use super::vmcs::{self, control, guest, host, ro};
use crate::arch::x64::{cpu, idt};
use crate::devices::vectors::VectorSet;
use crate::frames::FrameAllocator;
use crate::vcpu::{ApicState, Gpr, PagingMode, Vcpu, VmExit};
use crate::vm::vid;

/// The guest's initial 64-bit state (Linux's 64-bit boot protocol).
#[derive(Clone, Copy, Debug)]
pub struct BootState {
    pub rip: u64,
    pub rsi: u64,
    pub cr3: u64,
    pub gdt_base: u64,
    pub gdt_limit: u16,
    pub code_selector: u16,
    pub data_selector: u16,
}

const CR0_PE: u64 = 1 << 0;
const CR0_MP: u64 = 1 << 1;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_WP: u64 = 1 << 16;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const CR4_VMXE: u64 = 1 << 13;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const RFLAGS_IF: u64 = 1 << 9;
const PAT_DEFAULT: u64 = 0x0007_0406_0007_0406;

const IA32_EFER: u32 = 0xC000_0080;
const IA32_PAT: u32 = 0x277;
const IA32_GS_BASE: u32 = 0xC000_0101;

const EOI_EXIT_FIELDS: [u32; 4] = [
    control::EOI_EXIT0_FULL,
    control::EOI_EXIT1_FULL,
    control::EOI_EXIT2_FULL,
    control::EOI_EXIT3_FULL,
];

const INTR_INFO_VALID: u64 = 1 << 31;
const INTR_TYPE_EXTERNAL: u64 = 0 << 8;
const INTR_TYPE_HW_EXCEPTION: u64 = 3 << 8;
const INTR_DELIVER_ERROR_CODE: u64 = 1 << 11;

pub struct VmxVcpu {
    regs: Box<GuestRegs>,
    _fx: Box<FxArea>,
    vmcs: u64,
    launched: bool,
    chosen: Chosen,
    timer_rate: u8,
    deadline: Option<u64>,
    proc: u32,
    exit_reason: u32,
    exit_qualification: u64,
    exit_instruction_len: u64,
    event_pending: bool,
    /// With virtual-interrupt delivery: the virtual-APIC page.
    vapic: Option<VirtualApic>,
}

/// The virtual-APIC page (SDM vol. 3, 30.1) and what the backend keeps
/// beside it.
struct VirtualApic {
    page: u64,
    /// Guest-physical address of the APIC page, for the exits it causes.
    gpa: u64,
    /// Pending vectors kept out of the page (`vid::expose`), handed back
    /// on exit.
    withheld: VectorSet,
    eoi_exits: VectorSet,
}

impl VirtualApic {
    fn reg(&self, off: u32) -> *mut u32 {
        (self.page + u64::from(off & 0xFF0)) as *mut u32
    }

    fn read(&self, off: u32) -> u32 {
        // SAFETY: `page` is this vCPU's identity-mapped virtual-APIC frame
        // and `off & 0xFF0` lies within it; the CPU writes it only while
        // this vCPU's guest runs, never concurrently with the hypervisor.
        unsafe { self.reg(off).read_volatile() }
    }

    fn write(&self, off: u32, v: u32) {
        // SAFETY: as for `read`.
        unsafe { self.reg(off).write_volatile(v) }
    }
}

/// MSRs the guest reads and writes directly: state the VMCS saves and loads
/// on every exit and entry (FS/GS base, SYSENTER, PAT), or that the host
/// never uses (the SYSCALL MSRs, KERNEL_GS_BASE), so the guest's values can
/// live in the CPU while it runs.
const PASSTHROUGH_MSRS: [u32; 11] = [
    0x174,       // IA32_SYSENTER_CS
    0x175,       // IA32_SYSENTER_ESP
    0x176,       // IA32_SYSENTER_EIP
    0x277,       // IA32_PAT
    0xC000_0081, // STAR
    0xC000_0082, // LSTAR
    0xC000_0083, // CSTAR
    0xC000_0084, // SFMASK
    0xC000_0100, // FS_BASE
    0xC000_0101, // GS_BASE
    0xC000_0102, // KERNEL_GS_BASE
];
const IA32_TSC_AUX: u32 = 0xC000_0103;

/// Clears the read and write intercept bits of `msr` in an MSR bitmap
/// (SDM vol. 3, 25.6.9: read-low, read-high, write-low, write-high, 1 KiB
/// each).
fn allow_msr(bitmap: u64, msr: u32) {
    let base = match msr {
        0..=0x1FFF => 0,
        0xC000_0000..=0xC000_1FFF => 1024,
        _ => return,
    };
    let bit = u64::from(msr & 0x1FFF);
    for half in [0, 2048] {
        let byte = (bitmap + base + half + bit / 8) as *mut u8;
        // SAFETY: the bitmap page belongs to this vCPU and `byte` lies in it.
        unsafe { *byte &= !(1 << (bit % 8)) };
    }
}

/// A page of all-ones: I/O and MSR bitmaps that make every access exit.
fn all_ones_page(frames: &mut FrameAllocator, pages: u64) -> u64 {
    let pa = frames
        .alloc(pages * 4096, 4096)
        .expect("out of memory for VMX bitmaps");
    // SAFETY: a fresh, identity-mapped frame owned by this vCPU.
    unsafe { core::ptr::write_bytes(pa as *mut u8, 0xFF, (pages * 4096) as usize) };
    pa
}

/// Enters VMX root operation on this CPU (VMXON).
pub fn vmxon(frames: &mut FrameAllocator, caps: &VmxCaps) -> Result<(), &'static str> {
    let region = frames
        .alloc(4096, 4096)
        .ok_or("out of memory for the VMXON region")?;
    // SAFETY: a fresh, identity-mapped frame; VMX wants the revision ID in
    // its first dword and zeros elsewhere.
    unsafe {
        core::ptr::write_bytes(region as *mut u8, 0, 4096);
        *(region as *mut u32) = caps.revision_id();
    }
    let m = &caps.msrs;
    // SAFETY: adjusting CR0/CR4 to the bits VMX operation requires (the
    // fixed bits are all ones vmlink runs with anyway: PE, PG, NE, VMXE).
    unsafe {
        use x86_64::registers::control::{Cr0, Cr4};
        Cr0::write_raw(fix_cr(Cr0::read_raw(), m.cr0_fixed));
        Cr4::write_raw(fix_cr(Cr4::read_raw() | CR4_VMXE, m.cr4_fixed));
        x86::bits64::vmx::vmxon(region).map_err(|_| "VMXON failed")
    }
}

impl VmxVcpu {
    /// Creates the VMCS for a guest whose memory `ept_pointer` maps.
    /// `apic_access` is the page (host-physical) the EPT maps at the
    /// guest's APIC address (guest-physical), for virtual-interrupt
    /// delivery; without it the APIC is emulated by exits alone.
    pub fn new(
        frames: &mut FrameAllocator,
        caps: &VmxCaps,
        chosen: Chosen,
        ept_pointer: u64,
        vpid: u16,
        boot: &BootState,
        apic_access: Option<(u64, u64)>,
    ) -> Result<Self, &'static str> {
        let chosen = match apic_access {
            Some(_) if chosen.apic_virt => chosen,
            _ => chosen.without_apic_virt(),
        };
        let vmcs_pa = frames
            .alloc(4096, 4096)
            .ok_or("out of memory for the VMCS")?;
        // SAFETY: fresh identity-mapped frame; revision ID first, as for
        // VMXON. VMCLEAR/VMPTRLD make it this CPU's current VMCS.
        unsafe {
            core::ptr::write_bytes(vmcs_pa as *mut u8, 0, 4096);
            *(vmcs_pa as *mut u32) = caps.revision_id();
            x86::bits64::vmx::vmclear(vmcs_pa).map_err(|_| "VMCLEAR failed")?;
            x86::bits64::vmx::vmptrld(vmcs_pa).map_err(|_| "VMPTRLD failed")?;
        }
        let mut fx = Box::new(FxArea::reset());
        let regs = Box::new(GuestRegs {
            gpr: [0; 16],
            fxsave_area: &mut *fx as *mut FxArea as u64,
        });
        let mut v = VmxVcpu {
            regs,
            _fx: fx,
            vmcs: vmcs_pa,
            launched: false,
            chosen,
            timer_rate: caps.preemption_timer_rate(),
            deadline: None,
            proc: chosen.proc,
            exit_reason: 0,
            exit_qualification: 0,
            exit_instruction_len: 0,
            event_pending: false,
            vapic: None,
        };
        v.regs.gpr[6] = boot.rsi;
        // The EPT structures and VPID are new to this CPU, but a VPID or EPTP
        // value may have been used before (a reloaded hypervisor, a guest
        // restarted): drop whatever the TLBs cached for them (SDM 29.4.3).
        if caps.invept_all_context() {
            invept_all();
        }
        if chosen.vpid && caps.invvpid_all_context() {
            invvpid_all();
        }
        v.setup_controls(frames, ept_pointer, vpid);
        if let (true, Some((hpa, gpa))) = (chosen.apic_virt, apic_access) {
            v.setup_virtual_apic(frames, hpa, gpa)?;
        }
        v.setup_host();
        v.setup_guest(caps, boot);
        Ok(v)
    }

    fn setup_controls(&mut self, frames: &mut FrameAllocator, eptp: u64, vpid: u16) {
        let c = &self.chosen;
        vmcs::write(control::PINBASED_EXEC_CONTROLS, c.pin.into());
        vmcs::write(control::PRIMARY_PROCBASED_EXEC_CONTROLS, c.proc.into());
        vmcs::write(control::SECONDARY_PROCBASED_EXEC_CONTROLS, c.proc2.into());
        vmcs::write(control::VMEXIT_CONTROLS, c.exit.into());
        vmcs::write(control::VMENTRY_CONTROLS, c.entry.into());
        vmcs::write(control::EXCEPTION_BITMAP, 0);
        vmcs::write(control::CR3_TARGET_COUNT, 0);
        let io = all_ones_page(frames, 2);
        vmcs::write(control::IO_BITMAP_A_ADDR_FULL, io);
        vmcs::write(control::IO_BITMAP_B_ADDR_FULL, io + 4096);
        let bitmap = all_ones_page(frames, 1);
        let mut pass: alloc::vec::Vec<u32> = PASSTHROUGH_MSRS.to_vec();
        if c.rdtscp {
            pass.push(IA32_TSC_AUX);
        }
        for msr in pass {
            allow_msr(bitmap, msr);
        }
        vmcs::write(control::MSR_BITMAPS_ADDR_FULL, bitmap);
        vmcs::write(control::EPTP_FULL, eptp);
        if c.vpid {
            vmcs::write(control::VPID, vpid.into());
        }
        if c.xsaves {
            vmcs::write(control::XSS_EXITING_BITMAP_FULL, 0);
        }
        vmcs::write(guest::LINK_PTR_FULL, u64::MAX);
    }

    fn setup_virtual_apic(
        &mut self,
        frames: &mut FrameAllocator,
        access_hpa: u64,
        gpa: u64,
    ) -> Result<(), &'static str> {
        let page = frames
            .alloc(4096, 4096)
            .ok_or("out of memory for the virtual-APIC page")?;
        // SAFETY: a fresh, identity-mapped frame owned by this vCPU.
        unsafe { core::ptr::write_bytes(page as *mut u8, 0, 4096) };
        vmcs::write(control::VIRT_APIC_ADDR_FULL, page);
        vmcs::write(control::APIC_ACCESS_ADDR_FULL, access_hpa);
        vmcs::write(control::TPR_THRESHOLD, 0);
        for f in EOI_EXIT_FIELDS {
            vmcs::write(f, 0);
        }
        vmcs::write(guest::INTERRUPT_STATUS, 0);
        self.vapic = Some(VirtualApic {
            page,
            gpa,
            withheld: VectorSet::EMPTY,
            eoi_exits: VectorSet::EMPTY,
        });
        Ok(())
    }

    fn setup_host(&mut self) {
        use x86_64::instructions::tables::{sgdt, sidt};
        use x86_64::registers::control::{Cr0, Cr3, Cr4};
        use x86_64::registers::segmentation::{Segment, CS, DS, ES, FS, GS, SS};
        vmcs::write(host::CR0, Cr0::read_raw());
        vmcs::write(host::CR3, Cr3::read_raw().0.start_address().as_u64());
        vmcs::write(host::CR4, Cr4::read_raw());
        vmcs::write(host::CS_SELECTOR, CS::get_reg().0.into());
        vmcs::write(host::SS_SELECTOR, SS::get_reg().0.into());
        vmcs::write(host::DS_SELECTOR, DS::get_reg().0.into());
        vmcs::write(host::ES_SELECTOR, ES::get_reg().0.into());
        vmcs::write(host::FS_SELECTOR, FS::get_reg().0.into());
        vmcs::write(host::GS_SELECTOR, GS::get_reg().0.into());
        let tr: u16;
        // SAFETY: STR only reads the task register selector.
        unsafe {
            core::arch::asm!("str {0:x}", out(reg) tr, options(nomem, nostack, preserves_flags))
        };
        vmcs::write(host::TR_SELECTOR, tr.into());
        let gdt = sgdt();
        vmcs::write(host::GDTR_BASE, gdt.base.as_u64());
        vmcs::write(host::IDTR_BASE, sidt().base.as_u64());
        vmcs::write(host::TR_BASE, tss_base(gdt.base.as_u64(), tr));
        vmcs::write(host::FS_BASE, 0);
        // SAFETY: these MSRs exist on every x86-64 CPU.
        unsafe {
            vmcs::write(host::GS_BASE, cpu::rdmsr(IA32_GS_BASE));
            vmcs::write(host::IA32_EFER_FULL, cpu::rdmsr(IA32_EFER));
            vmcs::write(host::IA32_PAT_FULL, cpu::rdmsr(IA32_PAT));
        }
        vmcs::write(host::IA32_SYSENTER_CS, 0);
        vmcs::write(host::IA32_SYSENTER_ESP, 0);
        vmcs::write(host::IA32_SYSENTER_EIP, 0);
        vmcs::write(host::RIP, entry::exit_stub());
    }

    fn setup_guest(&mut self, caps: &VmxCaps, b: &BootState) {
        let m = &caps.msrs;
        let cr0 = fix_cr(
            CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG,
            m.cr0_fixed,
        );
        let cr4 = fix_cr(CR4_PAE, m.cr4_fixed);
        vmcs::write(guest::CR0, cr0);
        vmcs::write(control::CR0_GUEST_HOST_MASK, m.cr0_fixed.0);
        vmcs::write(control::CR0_READ_SHADOW, cr0);
        vmcs::write(guest::CR4, cr4);
        // The guest owns every CR4 bit but those VMX fixes (VMXE): it sees
        // them as 0 and cannot clear them.
        vmcs::write(control::CR4_GUEST_HOST_MASK, m.cr4_fixed.0);
        vmcs::write(control::CR4_READ_SHADOW, cr4 & !m.cr4_fixed.0);
        vmcs::write(guest::CR3, b.cr3);

        let code_ar = 0xA09B; // present, S, execute/read accessed, L=1, G
        let data_ar = 0xC093; // present, S, read/write accessed, D/B, G
        vmcs::write(guest::CS_SELECTOR, b.code_selector.into());
        vmcs::write(guest::CS_BASE, 0);
        vmcs::write(guest::CS_LIMIT, 0xFFFF_FFFF);
        vmcs::write(guest::CS_ACCESS_RIGHTS, code_ar);
        for (sel, base, limit, ar) in [
            (
                guest::SS_SELECTOR,
                guest::SS_BASE,
                guest::SS_LIMIT,
                guest::SS_ACCESS_RIGHTS,
            ),
            (
                guest::DS_SELECTOR,
                guest::DS_BASE,
                guest::DS_LIMIT,
                guest::DS_ACCESS_RIGHTS,
            ),
            (
                guest::ES_SELECTOR,
                guest::ES_BASE,
                guest::ES_LIMIT,
                guest::ES_ACCESS_RIGHTS,
            ),
            (
                guest::FS_SELECTOR,
                guest::FS_BASE,
                guest::FS_LIMIT,
                guest::FS_ACCESS_RIGHTS,
            ),
            (
                guest::GS_SELECTOR,
                guest::GS_BASE,
                guest::GS_LIMIT,
                guest::GS_ACCESS_RIGHTS,
            ),
        ] {
            vmcs::write(sel, b.data_selector.into());
            vmcs::write(base, 0);
            vmcs::write(limit, 0xFFFF_FFFF);
            vmcs::write(ar, data_ar);
        }
        vmcs::write(guest::LDTR_SELECTOR, 0);
        vmcs::write(guest::LDTR_BASE, 0);
        vmcs::write(guest::LDTR_LIMIT, 0);
        vmcs::write(guest::LDTR_ACCESS_RIGHTS, 1 << 16); // unusable
        vmcs::write(guest::TR_SELECTOR, 0);
        vmcs::write(guest::TR_BASE, 0);
        vmcs::write(guest::TR_LIMIT, 0x67);
        vmcs::write(guest::TR_ACCESS_RIGHTS, 0x8B); // present, busy 64-bit TSS
        vmcs::write(guest::GDTR_BASE, b.gdt_base);
        vmcs::write(guest::GDTR_LIMIT, b.gdt_limit.into());
        vmcs::write(guest::IDTR_BASE, 0);
        vmcs::write(guest::IDTR_LIMIT, 0);
        vmcs::write(guest::DR7, 0x400);
        vmcs::write(guest::RSP, 0);
        vmcs::write(guest::RIP, b.rip);
        vmcs::write(guest::RFLAGS, 2);
        vmcs::write(guest::IA32_EFER_FULL, EFER_LME | EFER_LMA);
        vmcs::write(guest::IA32_PAT_FULL, PAT_DEFAULT);
        vmcs::write(guest::IA32_DEBUGCTL_FULL, 0);
        vmcs::write(guest::IA32_SYSENTER_CS, 0);
        vmcs::write(guest::IA32_SYSENTER_ESP, 0);
        vmcs::write(guest::IA32_SYSENTER_EIP, 0);
        vmcs::write(guest::INTERRUPTIBILITY_STATE, 0);
        vmcs::write(guest::ACTIVITY_STATE, 0);
        vmcs::write(guest::PENDING_DBG_EXCEPTIONS, 0);
    }

    fn program_timer(&mut self) {
        if !self.chosen.preemption_timer {
            return;
        }
        let value = match self.deadline {
            None => u32::MAX as u64,
            Some(d) => {
                let now = rdtsc();
                (d.saturating_sub(now) >> self.timer_rate).min(u32::MAX as u64)
            }
        };
        vmcs::write(guest::VMX_PREEMPTION_TIMER_VALUE, value);
    }

    /// Re-queues an event whose delivery the exit interrupted (SDM 27.2.4).
    fn requeue_interrupted_event(&mut self) {
        let info = vmcs::read(ro::IDT_VECTORING_INFO);
        if info & INTR_INFO_VALID == 0 {
            return;
        }
        vmcs::write(control::VMENTRY_INTERRUPTION_INFO_FIELD, info & !(1 << 12));
        if info & INTR_DELIVER_ERROR_CODE != 0 {
            vmcs::write(
                control::VMENTRY_EXCEPTION_ERR_CODE,
                vmcs::read(ro::IDT_VECTORING_ERR_CODE),
            );
        }
        let t = (info >> 8) & 7;
        if t == 4 || t == 5 || t == 6 {
            vmcs::write(control::VMENTRY_INSTRUCTION_LEN, self.exit_instruction_len);
        }
        self.event_pending = true;
    }

    /// The exit as a [`VmExit`], or None when the backend absorbed it and
    /// the guest can simply go on.
    fn translate(&mut self) -> Option<VmExit> {
        let q = self.exit_qualification;
        Some(match self.exit_reason & 0xFFFF {
            0 => {
                let info = vmcs::read(ro::VMEXIT_INTERRUPTION_INFO);
                if (info >> 8) & 7 == 2 && idt::STOP_ALL.load(core::sync::atomic::Ordering::SeqCst)
                {
                    cpu::halt_forever();
                }
                VmExit::Other {
                    code: 0,
                    qualification: info,
                }
            }
            1 => {
                acknowledge_host_interrupt();
                VmExit::HostInterrupt
            }
            2 => VmExit::TripleFault,
            7 => VmExit::InterruptWindow,
            10 => VmExit::Cpuid,
            12 => VmExit::Hlt,
            18 => VmExit::Hypercall,
            19..=27 | 50 | 53 => VmExit::VirtualizationInstruction,
            28 => return self.control_register(q),
            30 => VmExit::Io {
                port: (q >> 16) as u16,
                size: (q & 7) as u8 + 1,
                input: q & (1 << 3) != 0,
                string: q & (1 << 4) != 0,
            },
            31 if self.regs.gpr[1] as u32 == IA32_EFER => {
                let v = vmcs::read(guest::IA32_EFER_FULL);
                self.regs.gpr[0] = v & 0xFFFF_FFFF;
                self.regs.gpr[2] = v >> 32;
                self.skip_instruction();
                return None;
            }
            32 if self.regs.gpr[1] as u32 == IA32_EFER => {
                let v = (self.regs.gpr[2] << 32) | (self.regs.gpr[0] & 0xFFFF_FFFF);
                if self.write_efer(v) {
                    self.skip_instruction();
                } else {
                    self.inject_exception(13, Some(0));
                }
                return None;
            }
            31 => VmExit::Rdmsr {
                msr: self.regs.gpr[1] as u32,
            },
            32 => VmExit::Wrmsr {
                msr: self.regs.gpr[1] as u32,
                value: (self.regs.gpr[2] << 32) | (self.regs.gpr[0] & 0xFFFF_FFFF),
            },
            48 => VmExit::MemoryFault {
                gpa: vmcs::read(ro::GUEST_PHYSICAL_ADDR_FULL),
                read: q & 1 != 0,
                write: q & 2 != 0,
                exec: q & 4 != 0,
            },
            44 => return Some(self.apic_access(q)),
            45 => VmExit::ApicEoi { vector: q as u8 },
            52 => VmExit::Timer,
            55 => VmExit::Xsetbv,
            56 => {
                let offset = (q & 0xFF0) as u32;
                let value = self.vapic.as_ref().map_or(0, |a| a.read(offset));
                VmExit::ApicWrite { offset, value }
            }
            code => VmExit::Other {
                code,
                qualification: q,
            },
        })
    }

    /// An APIC access the CPU did not virtualize (SDM vol. 3, 28.2.1,
    /// table 28-6): a data read or write goes up as an access to the APIC
    /// page, for the same emulation as without virtualization; anything
    /// else (a fetch, an access during event delivery) is reported as is.
    fn apic_access(&self, q: u64) -> VmExit {
        let gpa = self.vapic.as_ref().map_or(0, |a| a.gpa) + (q & 0xFFF);
        match (q >> 12) & 0xF {
            0 => VmExit::MemoryFault {
                gpa,
                read: true,
                write: false,
                exec: false,
            },
            1 => VmExit::MemoryFault {
                gpa,
                read: false,
                write: true,
                exec: false,
            },
            _ => VmExit::Other {
                code: 44,
                qualification: q,
            },
        }
    }

    /// MOV to/from CR3 exits exist only where the CPU forces CR3 exiting;
    /// they are absorbed here. Anything else goes up.
    fn control_register(&mut self, q: u64) -> Option<VmExit> {
        let cr = q & 0xF;
        let access = (q >> 4) & 3;
        let reg = ((q >> 8) & 0xF) as Gpr;
        match (cr, access) {
            (3, 0) => {
                vmcs::write(guest::CR3, self.gpr(reg) & !(1 << 63));
                self.skip_instruction();
                None
            }
            (3, 1) => {
                let v = vmcs::read(guest::CR3);
                self.set_gpr(reg, v);
                self.skip_instruction();
                None
            }
            _ => Some(VmExit::ControlRegister { qualification: q }),
        }
    }
}

impl VmxVcpu {
    /// WRMSR EFER: SCE, LME and NXE are the guest's; LMA follows LME while
    /// paging is on (SDM vol. 3, 10.8.5), and the entry control that says
    /// "IA-32e mode guest" must agree with it. Returns false for a value
    /// the guest may not write (#GP).
    fn write_efer(&mut self, v: u64) -> bool {
        const SCE: u64 = 1;
        const NXE: u64 = 1 << 11;
        if v & !(SCE | EFER_LME | EFER_LMA | NXE) != 0 {
            return false;
        }
        let paging = vmcs::read(guest::CR0) & CR0_PG != 0;
        let old = vmcs::read(guest::IA32_EFER_FULL);
        if paging && (v ^ old) & EFER_LME != 0 {
            return false;
        }
        let lma = if paging && v & EFER_LME != 0 {
            EFER_LMA
        } else {
            0
        };
        let new = (v & !EFER_LMA) | lma;
        vmcs::write(guest::IA32_EFER_FULL, new);
        let mut entry = self.chosen.entry;
        if lma == 0 {
            entry &= !controls::entry::IA32E_MODE_GUEST;
        }
        vmcs::write(control::VMENTRY_CONTROLS, entry.into());
        true
    }
}

/// INVEPT, all-context (type 2), where the CPU offers that type.
fn invept_all() {
    let descriptor = [0u64; 2];
    // SAFETY: INVEPT only invalidates cached translations; the descriptor is
    // a valid 16-byte memory operand, and VMX root operation is on.
    unsafe {
        core::arch::asm!("invept {0}, [{1}]", in(reg) 2u64, in(reg) descriptor.as_ptr(), options(nostack));
    }
}

/// INVVPID, all-context (type 2), where the CPU offers that type.
fn invvpid_all() {
    let descriptor = [0u64; 2];
    // SAFETY: as for invept_all.
    unsafe {
        core::arch::asm!("invvpid {0}, [{1}]", in(reg) 2u64, in(reg) descriptor.as_ptr(), options(nostack));
    }
}

/// TSS base from its 16-byte descriptor in the GDT.
fn tss_base(gdt_base: u64, selector: u16) -> u64 {
    let d = (gdt_base + u64::from(selector & !7)) as *const u64;
    // SAFETY: the selector was read from TR, so it indexes a present TSS
    // descriptor (two qwords) in the live GDT.
    let (lo, hi) = unsafe { (d.read(), d.add(1).read()) };
    ((lo >> 16) & 0xFF_FFFF) | (((lo >> 56) & 0xFF) << 24) | ((hi & 0xFFFF_FFFF) << 32)
}

fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no side effects.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// With "acknowledge interrupt on exit", the vector was taken from the
/// local APIC; signal EOI so it can deliver the next one. vmlink has no
/// host interrupt sources of its own, so there is nothing else to do.
fn acknowledge_host_interrupt() {
    crate::arch::x64::lapic::LocalApic::this_cpu().eoi();
}

impl Vcpu for VmxVcpu {
    fn run(&mut self) -> VmExit {
        // Exits the backend absorbs (EFER, CR3) loop here rather than
        // recursing: a guest may cause any number of them in a row.
        loop {
            if let Some(exit) = self.run_once() {
                return exit;
            }
        }
    }

    fn gpr(&self, r: Gpr) -> u64 {
        if r == 4 {
            vmcs::read(guest::RSP)
        } else {
            self.regs.gpr[usize::from(r & 15)]
        }
    }

    fn set_gpr(&mut self, r: Gpr, v: u64) {
        if r == 4 {
            vmcs::write(guest::RSP, v);
        } else {
            self.regs.gpr[usize::from(r & 15)] = v;
        }
    }

    fn rip(&self) -> u64 {
        vmcs::read(guest::RIP)
    }

    fn cpl(&self) -> u8 {
        // SS.DPL is the CPL (SDM vol. 3, 24.4.1).
        ((vmcs::read(guest::SS_ACCESS_RIGHTS) >> 5) & 3) as u8
    }

    fn skip_instruction(&mut self) {
        self.advance_rip(self.exit_instruction_len);
    }

    fn advance_rip(&mut self, len: u64) {
        vmcs::write(guest::RIP, self.rip() + len);
        // Skipping an instruction ends STI / MOV SS blocking.
        let s = vmcs::read(guest::INTERRUPTIBILITY_STATE);
        if s & 3 != 0 {
            vmcs::write(guest::INTERRUPTIBILITY_STATE, s & !3);
        }
    }

    fn now(&self) -> u64 {
        rdtsc()
    }

    fn interrupts_enabled(&self) -> bool {
        vmcs::read(guest::RFLAGS) & RFLAGS_IF != 0
    }

    fn interruptible(&self) -> bool {
        !self.event_pending
            && vmcs::read(guest::RFLAGS) & RFLAGS_IF != 0
            && vmcs::read(guest::INTERRUPTIBILITY_STATE) & 3 == 0
    }

    fn inject_interrupt(&mut self, vector: u8) {
        vmcs::write(
            control::VMENTRY_INTERRUPTION_INFO_FIELD,
            INTR_INFO_VALID | INTR_TYPE_EXTERNAL | u64::from(vector),
        );
        self.event_pending = true;
    }

    fn inject_exception(&mut self, vector: u8, error_code: Option<u32>) {
        let mut info = INTR_INFO_VALID | INTR_TYPE_HW_EXCEPTION | u64::from(vector);
        if let Some(e) = error_code {
            info |= INTR_DELIVER_ERROR_CODE;
            vmcs::write(control::VMENTRY_EXCEPTION_ERR_CODE, e.into());
        }
        vmcs::write(control::VMENTRY_INTERRUPTION_INFO_FIELD, info);
        self.event_pending = true;
    }

    fn delivers_interrupts(&self) -> bool {
        self.vapic.is_some()
    }

    fn set_apic_state(&mut self, s: &ApicState) {
        let open = self.interruptible();
        let Some(a) = self.vapic.as_mut() else {
            return;
        };
        let e = vid::expose(s, open);
        a.withheld = e.withheld;
        for i in 0..8u32 {
            a.write(0x200 + i * 0x10, e.shown.register(i as usize));
            a.write(0x100 + i * 0x10, s.isr.register(i as usize));
        }
        a.write(0x80, s.tpr);
        a.write(0x20, s.id);
        a.write(0x310, s.icr_high);
        // RVI (low byte) and SVI (high byte), 0 for none: the CPU works
        // from these, not from scanning the page (SDM vol. 3, 30.1.2).
        let byte = |set: &VectorSet| u64::from(set.highest().unwrap_or(0));
        let status = (byte(&s.isr) << 8) | byte(&e.shown);
        vmcs::write(guest::INTERRUPT_STATUS, status);
        let mut eoi_exits = s.eoi_exits;
        if let Some(v) = e.eoi_exit {
            eoi_exits.insert(v);
        }
        if a.eoi_exits != eoi_exits {
            a.eoi_exits = eoi_exits;
            for (f, v) in EOI_EXIT_FIELDS.into_iter().zip(eoi_exits.words64()) {
                vmcs::write(f, v);
            }
        }
        self.request_interrupt_window(e.window);
    }

    fn apic_state(&self, s: &mut ApicState) {
        let Some(a) = self.vapic.as_ref() else {
            return;
        };
        for i in 0..8u32 {
            let r = i as usize;
            s.irr
                .set_register(r, a.read(0x200 + i * 0x10) | a.withheld.register(r));
            s.isr.set_register(r, a.read(0x100 + i * 0x10));
        }
        s.tpr = a.read(0x80);
    }

    fn request_interrupt_window(&mut self, on: bool) {
        let p = if on {
            self.proc | proc::INTERRUPT_WINDOW_EXITING
        } else {
            self.proc & !proc::INTERRUPT_WINDOW_EXITING
        };
        if p != self.proc {
            self.proc = p;
            vmcs::write(control::PRIMARY_PROCBASED_EXEC_CONTROLS, p.into());
        }
    }

    fn set_timer(&mut self, deadline: Option<u64>) {
        self.deadline = deadline;
    }

    fn cr3(&self) -> u64 {
        vmcs::read(guest::CR3)
    }

    fn cr4(&self) -> u64 {
        vmcs::read(control::CR4_READ_SHADOW)
    }

    fn paging_mode(&self) -> PagingMode {
        let cr0 = vmcs::read(guest::CR0);
        let cr4 = vmcs::read(guest::CR4);
        let efer = vmcs::read(guest::IA32_EFER_FULL);
        if cr0 & CR0_PG == 0 {
            PagingMode::None
        } else if efer & EFER_LMA != 0 {
            PagingMode::Long4
        } else if cr4 & CR4_PAE != 0 {
            PagingMode::Pae
        } else {
            PagingMode::Bits32
        }
    }

    fn set_xcr0(&mut self, value: u64) {
        // SAFETY: the caller validated `value` against what the CPU supports
        // (CPUID leaf 0xD); host code never uses XSAVE state beyond SSE.
        unsafe { core::arch::x86_64::_xsetbv(0, value) };
    }

    fn dump(&self, out: &mut dyn Write) {
        let f = |w: &mut dyn Write, name: &str, field: u32| {
            let _ = write!(w, " {name}={:#x}", vmcs::read(field));
        };
        let _ = write!(
            out,
            "exit_reason={} qualification={:#x} vm_instruction_error={}",
            self.exit_reason & 0xFFFF,
            self.exit_qualification,
            vmcs::read(ro::VM_INSTRUCTION_ERROR)
        );
        f(out, "rip", guest::RIP);
        f(out, "rsp", guest::RSP);
        f(out, "rflags", guest::RFLAGS);
        f(out, "cr0", guest::CR0);
        f(out, "cr3", guest::CR3);
        f(out, "cr4", guest::CR4);
        f(out, "efer", guest::IA32_EFER_FULL);
        f(out, "cs", guest::CS_SELECTOR);
        f(out, "cs_ar", guest::CS_ACCESS_RIGHTS);
        f(out, "ss_ar", guest::SS_ACCESS_RIGHTS);
        f(out, "tr_ar", guest::TR_ACCESS_RIGHTS);
        f(out, "interruptibility", guest::INTERRUPTIBILITY_STATE);
        f(
            out,
            "entry_intr_info",
            control::VMENTRY_INTERRUPTION_INFO_FIELD,
        );
        if self.vapic.is_some() {
            f(out, "intr_status", guest::INTERRUPT_STATUS);
        }
        let _ = write!(out, " vmcs={:#x} regs={:x?}", self.vmcs, &self.regs.gpr);
    }
}

impl VmxVcpu {
    pub fn controls(&self) -> &Chosen {
        &self.chosen
    }
}

/// Checks the VMX requirements on this CPU and picks the controls.
pub fn choose_controls(caps: &VmxCaps) -> Result<Chosen, controls::Missing> {
    controls::choose(caps)
}

impl VmxVcpu {
    /// One entry and exit; None when the exit needed nothing from above.
    fn run_once(&mut self) -> Option<VmExit> {
        self.program_timer();

        // SAFETY: this vCPU's VMCS is current on this CPU and fully set up
        // (new()), the host RIP is the exit stub, and regs.fxsave_area points
        // into self._fx, alive as long as self.
        let entered = unsafe { entry::enter(&mut self.regs, self.launched) };
        if !entered {
            return Some(VmExit::EntryFailed);
        }
        self.launched = true;
        self.event_pending = false;
        vmcs::write(control::VMENTRY_INTERRUPTION_INFO_FIELD, 0);
        self.exit_reason = vmcs::read(ro::EXIT_REASON) as u32;
        if self.exit_reason & (1 << 31) != 0 {
            return Some(VmExit::EntryFailed);
        }
        self.exit_qualification = vmcs::read(ro::EXIT_QUALIFICATION);
        self.exit_instruction_len = vmcs::read(ro::VMEXIT_INSTRUCTION_LEN);
        self.requeue_interrupted_event();
        self.translate()
    }
}
