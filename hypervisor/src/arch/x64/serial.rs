//! The COM1 console (115200 8N1). Lines are written whole under one lock so
//! that CPUs never interleave mid-line.

use core::fmt::{self, Write};
use spin::Mutex;
use uart_16550::SerialPort;

const COM1: u16 = 0x3F8;

static PORT: Mutex<Option<SerialPort>> = Mutex::new(None);

pub fn init() {
    // SAFETY: 0x3F8 is the standard COM1 base; nothing else in vmlink
    // drives it.
    let mut p = unsafe { SerialPort::new(COM1) };
    p.init();
    *PORT.lock() = Some(p);
}

struct Line<'a>(&'a mut SerialPort);

impl Write for Line<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                self.0.send(b'\r');
            }
            self.0.send(b);
        }
        Ok(())
    }
}

/// Writes one line, `prefix` then `args`, then CR LF.
pub fn write_line(prefix: fmt::Arguments, args: fmt::Arguments) {
    let mut guard = PORT.lock();
    if let Some(p) = guard.as_mut() {
        let mut l = Line(p);
        let _ = l.write_fmt(prefix);
        let _ = l.write_fmt(args);
        let _ = l.write_str("\n");
    }
}

/// A byte typed on the console, if one is waiting (never blocks; skips the
/// check while another CPU is printing).
pub fn try_read() -> Option<u8> {
    PORT.try_lock()?.as_mut()?.try_receive().ok()
}

/// Waits until the UART has sent every byte, so that a line printed just
/// before the emulator exits is not cut off.
pub fn flush() {
    let mut lsr: x86_64::instructions::port::Port<u8> =
        x86_64::instructions::port::Port::new(COM1 + 5);
    for _ in 0..1_000_000 {
        // SAFETY: reading COM1's line status register has no side effects
        // on transmission.
        if unsafe { lsr.read() } & 0x40 != 0 {
            break;
        }
        core::hint::spin_loop();
    }
}

/// For the panic path: takes the console even if the panicking CPU (or a
/// stopped one) holds the lock.
pub fn write_line_forced(prefix: fmt::Arguments, args: fmt::Arguments) {
    for _ in 0..1_000_000 {
        if !PORT.is_locked() {
            break;
        }
        core::hint::spin_loop();
    }
    if PORT.is_locked() {
        // SAFETY: the holder is either this CPU (which panicked while
        // printing and will never resume that print) or a CPU that has been
        // stopped; nobody else uses the port any more.
        unsafe { PORT.force_unlock() };
    }
    write_line(prefix, args);
}
