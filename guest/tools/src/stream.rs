//! A deterministic byte stream for transfer tests: `gen` writes it, `check`
//! reads what arrived and compares it with the same stream generated
//! locally, and reports a checksum of what it received. Much faster than
//! `seq | md5sum` in an emulated guest, where every instruction counts.

use std::io::{Read, Write};

/// The stream's generator (xorshift64*), 8 bytes per step.
pub struct Stream(u64);

impl Stream {
    pub fn new(seed: u64) -> Stream {
        Stream(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn word(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Fills `buf` (a multiple of 8 bytes) with the next bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_exact_mut(8) {
            c.copy_from_slice(&self.word().to_le_bytes());
        }
    }
}

/// FNV-1a, 64-bit: the receiver's checksum of what it got.
pub fn fnv1a(mut h: u64, data: &[u8]) -> u64 {
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01B3);
    }
    h
}
pub const FNV_START: u64 = 0xCBF2_9CE4_8422_2325;

const CHUNK: usize = 64 * 1024;

/// `gen BYTES SEED`: writes the stream to `out`.
pub fn generate(bytes: u64, seed: u64, out: &mut impl Write) -> std::io::Result<()> {
    let mut s = Stream::new(seed);
    let mut buf = vec![0u8; CHUNK];
    let mut left = bytes;
    while left > 0 {
        s.fill(&mut buf);
        let n = left.min(CHUNK as u64) as usize;
        out.write_all(&buf[..n])?;
        left -= n as u64;
    }
    out.flush()
}

/// The stream as bytes, in any slice sizes.
struct Bytes {
    s: Stream,
    buf: Vec<u8>,
    at: usize,
}

impl Bytes {
    fn new(seed: u64) -> Bytes {
        Bytes {
            s: Stream::new(seed),
            buf: vec![0u8; CHUNK],
            at: CHUNK,
        }
    }

    fn next_into(&mut self, out: &mut [u8]) {
        let mut i = 0;
        while i < out.len() {
            if self.at == CHUNK {
                self.s.fill(&mut self.buf);
                self.at = 0;
            }
            let k = (out.len() - i).min(CHUNK - self.at);
            out[i..i + k].copy_from_slice(&self.buf[self.at..self.at + k]);
            self.at += k;
            i += k;
        }
    }
}

/// `check BYTES SEED`: reads `input` to its end, computes a checksum of
/// what arrived and compares the data with the stream generated here.
pub fn check(bytes: u64, seed: u64, input: &mut impl Read) -> Result<String, String> {
    let mut expected = Bytes::new(seed);
    let mut want = vec![0u8; CHUNK];
    let mut got = vec![0u8; CHUNK];
    let (mut total, mut sum_got, mut sum_want) = (0u64, FNV_START, FNV_START);
    let mut first_diff = None;
    loop {
        let n = input.read(&mut got).map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            break;
        }
        sum_got = fnv1a(sum_got, &got[..n]);
        // Past the expected length nothing is expected: count it only.
        let m = (n as u64).min(bytes.saturating_sub(total)) as usize;
        expected.next_into(&mut want[..m]);
        sum_want = fnv1a(sum_want, &want[..m]);
        if first_diff.is_none() {
            if let Some(i) = (0..m).find(|&i| got[i] != want[i]) {
                first_diff = Some(total + i as u64);
            }
        }
        total += n as u64;
    }
    if total != bytes {
        return Err(format!("received {total} bytes, expected {bytes}"));
    }
    if let Some(at) = first_diff {
        return Err(format!("data differs from offset {at}"));
    }
    if sum_got != sum_want {
        return Err(format!("checksum {sum_got:016x}, expected {sum_want:016x}"));
    }
    Ok(format!(
        "received {total} bytes, checksum {sum_got:016x} as sent"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_streams_check_and_damage_is_found() {
        let mut v = Vec::new();
        generate(200_003, 5, &mut v).unwrap();
        assert_eq!(v.len(), 200_003);
        let ok = check(200_003, 5, &mut &v[..]).unwrap();
        assert!(ok.starts_with("received 200003 bytes, checksum"), "{ok}");
        assert!(check(200_003, 6, &mut &v[..]).is_err(), "another seed");
        assert!(check(200_004, 5, &mut &v[..])
            .unwrap_err()
            .contains("received 200003"));
        v[123_456] ^= 0x10;
        assert_eq!(
            check(200_003, 5, &mut &v[..]).unwrap_err(),
            "data differs from offset 123456"
        );
    }
}
