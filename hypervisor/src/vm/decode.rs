//! Decoding the MMIO instructions a guest uses on the emulated interrupt
//! controllers' pages, and walking the guest's page tables to fetch them.
//! Only the `mov` family is understood: that is what Linux's readl/writel
//! and its APIC accessors compile to. Anything else is an error the caller
//! reports; it never guesses.

use super::ram::GuestRam;

/// One decoded access. For writes the value is `imm`, or the register
/// `reg`; for reads the result goes to `reg`, zero-extended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    pub write: bool,
    pub size: u8,
    pub reg: Option<u8>,
    pub imm: Option<u64>,
    pub len: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    Truncated,
    Unsupported(u8),
}

pub fn decode(b: &[u8]) -> Result<Access, DecodeError> {
    let mut i = 0;
    let mut opsize16 = false;
    let mut rex = 0u8;
    let at = |i: usize| b.get(i).copied().ok_or(DecodeError::Truncated);
    loop {
        match at(i)? {
            0x66 => opsize16 = true,
            0x2E | 0x3E | 0x26 | 0x36 | 0x64 | 0x65 => {} // segment overrides
            _ => break,
        }
        i += 1;
    }
    if (0x40..=0x4F).contains(&at(i)?) {
        rex = at(i)?;
        i += 1;
    }
    let rex_w = rex & 8 != 0;
    let wide = if rex_w {
        8
    } else if opsize16 {
        2
    } else {
        4
    };
    let mut op = at(i)?;
    i += 1;
    let two_byte = op == 0x0F;
    if two_byte {
        op = at(i)?;
        i += 1;
    }
    let (write, size, imm_size) = match (two_byte, op) {
        (false, 0x88) => (true, 1, 0),
        (false, 0x89) => (true, wide, 0),
        (false, 0x8A) => (false, 1, 0),
        (false, 0x8B) => (false, wide, 0),
        (false, 0xC6) => (true, 1, 1),
        (false, 0xC7) => (true, wide, if opsize16 { 2 } else { 4 }),
        (false, 0x87) => (true, wide, 0),
        (true, 0xB6) => (false, 1, 0),
        (true, 0xB7) => (false, 2, 0),
        (_, o) => return Err(DecodeError::Unsupported(o)),
    };
    let modrm = at(i)?;
    i += 1;
    let md = modrm >> 6;
    let reg = ((modrm >> 3) & 7) | if rex & 4 != 0 { 8 } else { 0 };
    let rm = modrm & 7;
    if md == 3 {
        return Err(DecodeError::Unsupported(modrm)); // register operand: no memory access
    }
    if rm == 4 {
        let sib = at(i)?;
        i += 1;
        if md == 0 && sib & 7 == 5 {
            i += 4;
        }
    }
    i += match (md, rm) {
        (0, 5) => 4, // RIP-relative disp32
        (1, _) => 1,
        (2, _) => 4,
        _ => 0,
    };
    let imm = if imm_size > 0 {
        let mut v = 0u64;
        for k in 0..imm_size {
            v |= u64::from(at(i + k)?) << (8 * k);
        }
        i += imm_size;
        // imm32 with REX.W is sign-extended.
        if imm_size == 4 && rex_w && v & 0x8000_0000 != 0 {
            v |= 0xFFFF_FFFF_0000_0000;
        }
        Some(v)
    } else {
        None
    };
    if op != 0xC6 && op != 0xC7 && i > b.len() {
        return Err(DecodeError::Truncated);
    }
    if i > 15 || i > b.len() {
        return Err(DecodeError::Truncated);
    }
    if (op == 0xC6 || op == 0xC7) && reg & 7 != 0 {
        return Err(DecodeError::Unsupported(modrm));
    }
    Ok(Access {
        write,
        size,
        reg: if imm.is_some() { None } else { Some(reg) },
        imm,
        len: i as u8,
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PagingMode {
    None,
    Bits32,
    Pae,
    Long4,
}

/// Guest-virtual to guest-physical through the guest's page tables.
/// 4-level long mode and no paging are handled (vmlink's guests run 64-bit
/// kernels); the 32-bit modes give None, which callers report.
pub fn translate(
    cr3: u64,
    gva: u64,
    mode: PagingMode,
    read: &dyn Fn(u64) -> Option<u64>,
) -> Option<u64> {
    const ADDR: u64 = 0x000F_FFFF_FFFF_F000;
    match mode {
        PagingMode::None => Some(gva & 0xFFFF_FFFF),
        PagingMode::Bits32 | PagingMode::Pae => None,
        PagingMode::Long4 => {
            let mut table = cr3 & ADDR;
            for level in (0..4).rev() {
                let shift = 12 + 9 * level;
                let e = read(table + ((gva >> shift) & 511) * 8)?;
                if e & 1 == 0 {
                    return None;
                }
                let huge = e & (1 << 7) != 0 && (level == 1 || level == 2);
                if huge || level == 0 {
                    let page_mask = (1u64 << shift) - 1;
                    return Some((e & ADDR & !page_mask) | (gva & page_mask));
                }
                table = e & ADDR;
            }
            None
        }
    }
}

/// The 15 bytes at guest-virtual `rip` (the longest x86 instruction),
/// read from guest RAM through the guest's page tables. The walk is done
/// once per guest page the bytes span (at most two), not per byte: this
/// runs on every MMIO exit, the xAPIC's EOI write above all.
pub fn fetch(
    ram: &GuestRam,
    cr3: u64,
    rip: u64,
    mode: PagingMode,
) -> Result<[u8; 15], &'static str> {
    let read = |gpa: u64| ram.read_u64(gpa);
    let mut out = [0u8; 15];
    let mut done = 0;
    while done < out.len() {
        let gva = rip.wrapping_add(done as u64);
        let gpa = translate(cr3, gva, mode, &read).ok_or("guest RIP not mapped")?;
        // Bytes up to the end of this 4 KiB page are contiguous.
        let n = (out.len() - done).min(0x1000 - (gva & 0xFFF) as usize);
        let src = ram.get(gpa, n as u64).ok_or("guest RIP outside RAM")?;
        out[done..done + n].copy_from_slice(src);
        done += n;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 4-level table mapping two virtual pages to two physical pages
    /// that are not adjacent, in the reverse order.
    fn two_page_guest() -> (Vec<u8>, u64) {
        let mut ram = vec![0u8; 0x10000];
        let mut put = |at: usize, v: u64| ram[at..at + 8].copy_from_slice(&v.to_le_bytes());
        // cr3 = 0x1000 → PDPT 0x2000 → PD 0x3000 → PT 0x4000.
        put(0x1000, 0x2000 | 1);
        put(0x2000, 0x3000 | 1);
        put(0x3000, 0x4000 | 1);
        put(0x4000 + 8 * 8, 0x9000 | 1); // va 0x8000 → pa 0x9000
        put(0x4000 + 9 * 8, 0x6000 | 1); // va 0x9000 → pa 0x6000
        (ram, 0x1000)
    }

    #[test]
    fn fetch_follows_the_page_tables_across_a_page_edge() {
        let (mut ram, cr3) = two_page_guest();
        for i in 0..15u8 {
            let gva = 0x8FF9 + u64::from(i);
            let pa = if gva < 0x9000 {
                0x9000 + (gva & 0xFFF)
            } else {
                0x6000 + (gva & 0xFFF)
            };
            ram[pa as usize] = i + 1;
        }
        let bytes = fetch(&GuestRam::flat(&ram), cr3, 0x8FF9, PagingMode::Long4).unwrap();
        assert_eq!(bytes, core::array::from_fn(|i| i as u8 + 1));
        // Wholly inside one page.
        ram[0x9100..0x910F].copy_from_slice(&[7; 15]);
        assert_eq!(
            fetch(&GuestRam::flat(&ram), cr3, 0x8100, PagingMode::Long4),
            Ok([7; 15])
        );
    }

    #[test]
    fn fetch_refuses_unmapped_code_and_addresses_outside_ram() {
        let (mut ram, cr3) = two_page_guest();
        // The next page (va 0xA000) is not mapped.
        assert_eq!(
            fetch(&GuestRam::flat(&ram), cr3, 0x9FF8, PagingMode::Long4),
            Err("guest RIP not mapped")
        );
        ram[0x4000 + 10 * 8..0x4000 + 11 * 8].copy_from_slice(&(0xF_0000u64 | 1).to_le_bytes());
        assert_eq!(
            fetch(&GuestRam::flat(&ram), cr3, 0xA000, PagingMode::Long4),
            Err("guest RIP outside RAM")
        );
        // A page table outside RAM is "not mapped", not a crash.
        assert_eq!(
            fetch(&GuestRam::flat(&ram), !0xFFF, 0x8000, PagingMode::Long4),
            Err("guest RIP not mapped")
        );
    }

    #[test]
    fn mov_forms_linux_uses() {
        // mov %eax,0x300(%rdx)
        assert_eq!(
            decode(&[0x89, 0x82, 0x00, 0x03, 0x00, 0x00]),
            Ok(Access {
                write: true,
                size: 4,
                reg: Some(0),
                imm: None,
                len: 6
            })
        );
        // mov 0xffffffffff5fd020,%eax (absolute via SIB, no base)
        assert_eq!(
            decode(&[0x8B, 0x04, 0x25, 0x20, 0xD0, 0x5F, 0xFF]),
            Ok(Access {
                write: false,
                size: 4,
                reg: Some(0),
                imm: None,
                len: 7
            })
        );
        // mov %r9d,(%r8)
        assert_eq!(
            decode(&[0x45, 0x89, 0x08]),
            Ok(Access {
                write: true,
                size: 4,
                reg: Some(9),
                imm: None,
                len: 3
            })
        );
        // movl $0x0,0xb0(%rax)
        assert_eq!(
            decode(&[0xC7, 0x80, 0xB0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00]),
            Ok(Access {
                write: true,
                size: 4,
                reg: None,
                imm: Some(0),
                len: 10
            })
        );
        // movzbl 0x10(%rdi),%eax ; mov 0x8(%rbp),%r12
        assert_eq!(decode(&[0x0F, 0xB6, 0x47, 0x10]).unwrap().len, 4);
        assert_eq!(decode(&[0x4C, 0x8B, 0x65, 0x08]).unwrap().reg, Some(12));
        // xchg %eax,(%rdx)
        assert!(decode(&[0x87, 0x02]).unwrap().write);
    }

    #[test]
    fn refuses_what_it_does_not_know() {
        assert_eq!(decode(&[0x01, 0x02]), Err(DecodeError::Unsupported(0x01)));
        assert_eq!(decode(&[0x89]), Err(DecodeError::Truncated));
        assert_eq!(decode(&[0x89, 0xC0]), Err(DecodeError::Unsupported(0xC0)));
        assert_eq!(decode(&[]), Err(DecodeError::Truncated));
    }

    #[test]
    fn page_walk_4k_2m_1g() {
        use std::collections::HashMap;
        let mut m: HashMap<u64, u64> = HashMap::new();
        // PML4 at 0x1000 -> PDPT 0x2000; PDPT[0] -> PD 0x3000; PDPT[1] 1G page at 0x4000_0000
        m.insert(0x1000, 0x2003);
        m.insert(0x2000, 0x3003);
        m.insert(0x2008, 0x8000_0083);
        m.insert(0x3000, 0x0020_0083); // 2M page at 2M
        m.insert(0x3008, 0x4003); // PT at 0x4000
        m.insert(0x4000 + 8 * 5, 0x0009_9003);
        let read = |a: u64| m.get(&a).copied();
        assert_eq!(
            translate(0x1000, 0x1234, PagingMode::Long4, &read),
            Some(0x20_1234)
        );
        assert_eq!(
            translate(0x1000, 0x20_5123, PagingMode::Long4, &read),
            Some(0x9_9123)
        );
        assert_eq!(
            translate(0x1000, 0x4000_0042, PagingMode::Long4, &read),
            Some(0x8000_0042)
        );
        assert_eq!(
            translate(0x1000, 0x8000_0000, PagingMode::Long4, &read),
            None
        );
        assert_eq!(translate(0, 0x1234, PagingMode::None, &read), Some(0x1234));
    }
}
