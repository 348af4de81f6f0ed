//! A few-instruction guest that proves VM entry and the basic exits work on
//! this CPU before any Linux is involved: `vmlink selftest` on the
//! hypervisor command line runs it on the boot CPU.

use crate::vcpu::{Vcpu, VmExit, RAX, RBX};

/// Guest-physical layout of the test guest.
pub const CODE_GPA: u64 = 0x10_0000;
pub const PML4_GPA: u64 = 0x1000;
pub const GDT_GPA: u64 = 0x500;

/// mov eax,0x40000000; cpuid; mov eax,ebx; mov dx,0x3f8; out dx,al;
/// shr eax,8; out dx,al; mov al,'\n'; out dx,al; hlt
const CODE: &[u8] = &[
    0xB8, 0x00, 0x00, 0x00, 0x40, // mov eax, 0x40000000
    0x0F, 0xA2, // cpuid
    0x89, 0xD8, // mov eax, ebx
    0x66, 0xBA, 0xF8, 0x03, // mov dx, 0x3f8
    0xEE, // out dx, al
    0xC1, 0xE8, 0x08, // shr eax, 8
    0xEE, // out dx, al
    0xB0, 0x0A, // mov al, '\n'
    0xEE, // out dx, al
    0xF4, // hlt
];

/// Writes the code, a GDT and page tables mapping the first GiB into `ram`.
pub fn build(ram: &mut [u8]) {
    ram[CODE_GPA as usize..CODE_GPA as usize + CODE.len()].copy_from_slice(CODE);
    let put = |ram: &mut [u8], at: u64, v: u64| {
        ram[at as usize..at as usize + 8].copy_from_slice(&v.to_le_bytes());
    };
    put(ram, GDT_GPA + 0x10, 0x00AF_9B00_0000_FFFF);
    put(ram, GDT_GPA + 0x18, 0x00CF_9300_0000_FFFF);
    put(ram, PML4_GPA, (PML4_GPA + 0x1000) | 3);
    put(ram, PML4_GPA + 0x1000, (PML4_GPA + 0x2000) | 3);
    for i in 0..512u64 {
        put(ram, PML4_GPA + 0x2000 + i * 8, (i << 21) | 0x83);
    }
}

/// Runs the test guest; returns what it printed or why it failed.
pub fn run(vcpu: &mut impl Vcpu, signature_ebx: u32) -> Result<[u8; 2], &'static str> {
    let mut out = [0u8; 2];
    let mut n = 0;
    for _ in 0..16 {
        match vcpu.run() {
            VmExit::Cpuid => {
                vcpu.set_gpr(RAX, 0);
                vcpu.set_gpr(RBX, u64::from(signature_ebx));
                vcpu.skip_instruction();
            }
            VmExit::Io {
                port: 0x3F8,
                input: false,
                ..
            } => {
                let c = vcpu.gpr(RAX) as u8;
                if c != b'\n' && n < 2 {
                    out[n] = c;
                    n += 1;
                }
                vcpu.skip_instruction();
            }
            VmExit::Hlt => {
                return if n == 2 {
                    Ok(out)
                } else {
                    Err("halted before printing")
                }
            }
            VmExit::EntryFailed => return Err("VM entry failed"),
            _ => return Err("unexpected exit"),
        }
    }
    Err("too many exits")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_self_consistent() {
        let mut ram = vec![0u8; 2 << 20];
        build(&mut ram);
        assert_eq!(ram[CODE_GPA as usize + CODE.len() - 1], 0xF4);
        let pdpt = u64::from_le_bytes(ram[0x1000..0x1008].try_into().unwrap()) & !0xFFF;
        assert_eq!(pdpt, 0x2000);
        let pde1 = u64::from_le_bytes(ram[0x3008..0x3010].try_into().unwrap());
        assert_eq!(pde1, (1 << 21) | 0x83);
    }
}
