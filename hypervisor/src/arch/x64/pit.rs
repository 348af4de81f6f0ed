//! Busy-wait delays from the 8254 PIT's channel 2 (the speaker channel,
//! whose output bit can be polled without interrupts). Used only for the
//! waits of the INIT-SIPI-SIPI sequence.

use x86_64::instructions::port::Port;

const PIT_HZ: u64 = 1_193_182;
const MAX_CHUNK_US: u64 = 50_000;

/// Waits at least `us` microseconds.
pub fn delay_us(mut us: u64) {
    while us > 0 {
        let chunk = us.min(MAX_CHUNK_US);
        wait_chunk(chunk);
        us -= chunk;
    }
}

fn wait_chunk(us: u64) {
    let count = ((us * PIT_HZ) / 1_000_000).clamp(1, 0xFFFF) as u16;
    let mut ctrl: Port<u8> = Port::new(0x61);
    let mut mode: Port<u8> = Port::new(0x43);
    let mut ch2: Port<u8> = Port::new(0x42);
    // SAFETY: the PIT and the port-B gate at 0x61 are legacy devices only
    // vmlink drives; channel 2 mode 0 counts down once and raises OUT2.
    unsafe {
        let v = ctrl.read();
        ctrl.write((v & !0x02) | 0x01); // gate on, speaker off
        mode.write(0b1011_0000); // channel 2, lo/hi byte, mode 0, binary
        ch2.write(count as u8);
        ch2.write((count >> 8) as u8);
        // Bounded: a machine without a PIT must not hang us here.
        for _ in 0..50_000_000u64 {
            if ctrl.read() & 0x20 != 0 {
                break;
            }
            core::hint::spin_loop();
        }
    }
}

/// Measures the TSC frequency against the PIT (10 ms), in Hz. Guests are
/// told this frequency (CPUID 0x15/0x16) so they need no calibration.
pub fn measure_tsc_hz() -> u64 {
    const MS: u64 = 10;
    // SAFETY: RDTSC has no side effects.
    let t0 = unsafe { core::arch::x86_64::_rdtsc() };
    delay_us(MS * 1000);
    // SAFETY: as above.
    let t1 = unsafe { core::arch::x86_64::_rdtsc() };
    (t1 - t0) * (1000 / MS)
}
