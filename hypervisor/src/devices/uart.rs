//! A 16550A UART (COM1). Output is collected into lines for the hypervisor
//! console; input comes from `push_input`.
//!
//! Interrupts: transmission is instantaneous, so "THR empty" is raised
//! whenever the guest writes THR or enables the THRE interrupt, and
//! cleared when the guest reads IIR while it is the reported cause (the
//! 16550's rule). The line is a level; the caller turns rising edges into
//! I/O APIC edges, which is how Linux's 8250 driver expects ISA IRQ 4.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

const IER_RDI: u8 = 1 << 0;
const IER_THRI: u8 = 1 << 1;
const LCR_DLAB: u8 = 1 << 7;
const LSR_DR: u8 = 1 << 0;
const LSR_THRE: u8 = 1 << 5;
const LSR_TEMT: u8 = 1 << 6;
const IIR_NONE: u8 = 1;
const IIR_THRI: u8 = 0x2;
const IIR_RDI: u8 = 0x4;
const IIR_FIFO: u8 = 0xC0;
const MAX_LINE: usize = 200;
const MAX_INPUT: usize = 4096;

#[derive(Default)]
pub struct Uart {
    ier: u8,
    lcr: u8,
    mcr: u8,
    scr: u8,
    fcr: u8,
    dll: u8,
    dlm: u8,
    thre_pending: bool,
    input: VecDeque<u8>,
    line: Vec<u8>,
    lines: VecDeque<Vec<u8>>,
}

impl Uart {
    pub fn new() -> Self {
        Uart {
            dll: 1,
            ..Default::default()
        }
    }

    pub fn push_input(&mut self, b: u8) {
        if self.input.len() < MAX_INPUT {
            self.input.push_back(b);
        }
    }

    /// A complete output line (without its newline), if any.
    pub fn take_line(&mut self) -> Option<Vec<u8>> {
        self.lines.pop_front()
    }

    fn output(&mut self, b: u8) {
        match b {
            b'\n' => self.lines.push_back(core::mem::take(&mut self.line)),
            b'\r' => {}
            _ => {
                self.line.push(b);
                if self.line.len() >= MAX_LINE {
                    self.lines.push_back(core::mem::take(&mut self.line));
                }
            }
        }
    }

    fn iir(&self) -> u8 {
        let fifo = if self.fcr & 1 != 0 { IIR_FIFO } else { 0 };
        let cause = if self.ier & IER_RDI != 0 && !self.input.is_empty() {
            IIR_RDI
        } else if self.ier & IER_THRI != 0 && self.thre_pending {
            IIR_THRI
        } else {
            IIR_NONE
        };
        fifo | cause
    }

    /// Whether the interrupt line is active. On a PC the UART's interrupt
    /// reaches the bus only through the OUT2 gate (MCR bit 3).
    pub fn irq_pending(&self) -> bool {
        self.iir() & IIR_NONE == 0 && self.mcr & (1 << 3) != 0
    }

    /// Interrupt-related state (for diagnostics).
    pub fn summary(&self, out: &mut dyn core::fmt::Write) {
        let _ = write!(
            out,
            "uart: ier={:#x} mcr={:#x} thre={} input={}",
            self.ier,
            self.mcr,
            self.thre_pending,
            self.input.len()
        );
    }

    pub fn io_read(&mut self, off: u8) -> u8 {
        let dlab = self.lcr & LCR_DLAB != 0;
        match off {
            0 if dlab => self.dll,
            0 => self.input.pop_front().unwrap_or(0),
            1 if dlab => self.dlm,
            1 => self.ier,
            2 => {
                let v = self.iir();
                if v & 0xF == IIR_THRI {
                    self.thre_pending = false;
                }
                v
            }
            3 => self.lcr,
            4 => self.mcr,
            5 => LSR_THRE | LSR_TEMT | if self.input.is_empty() { 0 } else { LSR_DR },
            6 => 0xB0, // DCD, DSR, CTS
            7 => self.scr,
            _ => 0xFF,
        }
    }

    pub fn io_write(&mut self, off: u8, v: u8) {
        let dlab = self.lcr & LCR_DLAB != 0;
        match off {
            0 if dlab => self.dll = v,
            0 => {
                self.output(v);
                self.thre_pending = true;
            }
            1 if dlab => self.dlm = v,
            1 => {
                if v & IER_THRI != 0 && self.ier & IER_THRI == 0 {
                    self.thre_pending = true;
                }
                self.ier = v & 0x0F;
            }
            2 => self.fcr = v & 0xC9,
            3 => self.lcr = v,
            4 => self.mcr = v & 0x1F,
            7 => self.scr = v,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_long_lines() {
        let mut u = Uart::new();
        for b in b"hello\r\nworld" {
            u.io_write(0, *b);
        }
        assert_eq!(u.take_line().as_deref(), Some(&b"hello"[..]));
        assert_eq!(u.take_line(), None);
        for _ in 0..MAX_LINE {
            u.io_write(0, b'x');
        }
        assert_eq!(u.take_line().map(|l| l.len()), Some(MAX_LINE));
    }

    #[test]
    fn thre_interrupt_like_a_16550() {
        let mut u = Uart::new();
        u.io_write(4, 0x08); // OUT2: interrupts reach the bus
        assert!(!u.irq_pending());
        u.io_write(1, IER_THRI);
        assert!(u.irq_pending(), "enabling THRI with THR empty interrupts");
        assert_eq!(u.io_read(2) & 0xF, IIR_THRI);
        assert!(!u.irq_pending(), "reading IIR clears THRE");
        assert_eq!(u.io_read(2) & 0xF, IIR_NONE);
        u.io_write(0, b'a');
        assert!(u.irq_pending());
        u.io_write(1, 0);
        assert!(!u.irq_pending());
    }

    #[test]
    fn input_and_divisor_latch() {
        let mut u = Uart::new();
        u.io_write(3, LCR_DLAB);
        u.io_write(0, 0x0C);
        assert_eq!(u.io_read(0), 0x0C);
        u.io_write(3, 0x03);
        u.push_input(b'k');
        assert_eq!(u.io_read(5) & LSR_DR, LSR_DR);
        u.io_write(1, IER_RDI);
        u.io_write(4, 0x08);
        assert!(u.irq_pending());
        assert_eq!(u.io_read(0), b'k');
        assert!(!u.irq_pending());
        u.io_write(2, 0xC7);
        assert_eq!(u.io_read(2) & 0xC0, 0xC0, "16550A FIFO");
    }
}
