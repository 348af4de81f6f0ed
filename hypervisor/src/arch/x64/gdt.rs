//! Per-CPU GDT and TSS. The TSS exists for its interrupt stack table: NMI,
//! double fault and machine check always run on stacks of their own, so a
//! corrupt or overflowed stack still gets a report.

use alloc::boxed::Box;
use x86_64::instructions::segmentation::{Segment, CS, DS, ES, SS};
use x86_64::instructions::tables::load_tss;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable, SegmentSelector};
use x86_64::structures::tss::TaskStateSegment;
use x86_64::VirtAddr;

pub const IST_NMI: u16 = 0;
pub const IST_DOUBLE_FAULT: u16 = 1;
pub const IST_MACHINE_CHECK: u16 = 2;
const IST_STACK_SIZE: usize = 16 * 1024;

#[derive(Clone, Copy)]
pub struct Selectors {
    pub code: SegmentSelector,
    pub data: SegmentSelector,
    pub tss: SegmentSelector,
}

/// Builds and loads this CPU's GDT and TSS (leaked: they live forever).
pub fn init_this_cpu() -> Selectors {
    let mut tss = Box::new(TaskStateSegment::new());
    for ist in [IST_NMI, IST_DOUBLE_FAULT, IST_MACHINE_CHECK] {
        let stack: &'static mut [u8] =
            Box::leak(alloc::vec![0u8; IST_STACK_SIZE].into_boxed_slice());
        let top = VirtAddr::from_ptr(stack.as_ptr()) + IST_STACK_SIZE as u64;
        // The CPU pushes 16-byte aligned frames; keep the top aligned.
        tss.interrupt_stack_table[ist as usize] = top.align_down(16u64);
    }
    let tss: &'static TaskStateSegment = Box::leak(tss);

    let gdt: &'static mut GlobalDescriptorTable = Box::leak(Box::new(GlobalDescriptorTable::new()));
    let code = gdt.append(Descriptor::kernel_code_segment());
    let data = gdt.append(Descriptor::kernel_data_segment());
    let tss_sel = gdt.append(Descriptor::tss_segment(tss));
    gdt.load();
    // SAFETY: the selectors index the GDT just loaded, whose descriptors are
    // the 64-bit code, data and TSS descriptors they were created for.
    unsafe {
        CS::set_reg(code);
        DS::set_reg(data);
        ES::set_reg(data);
        SS::set_reg(data);
        load_tss(tss_sel);
    }
    Selectors {
        code,
        data,
        tss: tss_sel,
    }
}
