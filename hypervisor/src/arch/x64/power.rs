//! Ending the run: tells the emulator (QEMU's isa-debug-exit device, Bochs's
//! shutdown port) and then stops the CPU.

use x86_64::instructions::port::Port;

/// Asks the emulator to exit with `status`; on real hardware both ports are
/// unused and the CPU just halts afterwards.
pub fn exit_emulator(status: u8) {
    // SAFETY: writes to ports no device vmlink drives uses on a PC; QEMU's
    // debug-exit device and Bochs's shutdown port listen there.
    unsafe {
        Port::<u8>::new(vmlink_abi::QEMU_DEBUG_EXIT_PORT).write(status);
        let mut bochs: Port<u8> = Port::new(0x8900);
        for b in b"Shutdown" {
            bochs.write(*b);
        }
    }
}
