//! Console logging: every line carries the CPU it came from.

use crate::arch::x64::{percpu, serial};

/// Logs one line with the running CPU's prefix, e.g. `[cpu1] ...`.
#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => {
        $crate::console::line(format_args!($($arg)*))
    };
}

pub fn line(args: core::fmt::Arguments) {
    serial::write_line(format_args!("[cpu{}] ", percpu::index()), args);
}

/// For the panic path (see serial::write_line_forced).
pub fn line_forced(args: core::fmt::Arguments) {
    serial::write_line_forced(format_args!("[cpu{}] ", percpu::index()), args);
}

/// A line of guest console output, prefixed with its VM (`[vm0] ...`).
pub fn vm_line(vm: &str, args: core::fmt::Arguments) {
    serial::write_line(format_args!("[{vm}] "), args);
}
