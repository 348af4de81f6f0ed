//! `bench-rr-ab`: round trips in both receive modes in one boot, in
//! alternating blocks, so that "path 4 is never slower than path 3"
//! compares like with like.
//!
//! Paths 3 and 4 differ only in how each receiver takes frames (copied out
//! of the region, or lent to the stack), which the driver's `rx-copy`
//! private flag switches at run time. Measured in separate boots, their
//! medians at sizes where both run the same code (frames of 256 bytes or
//! less are copied in either mode) came out up to 1.5% apart either way,
//! from boot to boot; in one boot, blocks of round trips on connections of
//! their own still differed by about 1% from block to block. So both modes
//! share one connection, the mode switches before every round trip (copy
//! first in one pair, zero-copy first in the next), and a signed-rank test
//! on the pairs says whether zero-copy is longer beyond what chance
//! explains.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;

use crate::bench::{round_trips, RoundTrips};
use crate::ethtool;

/// The peer's `bench-serve` takes mode changes on this port.
pub const MODE_CONTROL: u16 = 7006;
const DEV: &str = "vml0";
const FLAG: &str = "rx-copy";

/// How a guest's driver hands received frames to the stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RxMode {
    Copy,
    Zerocopy,
}

impl RxMode {
    pub fn name(self) -> &'static str {
        match self {
            RxMode::Copy => "copy",
            RxMode::Zerocopy => "zerocopy",
        }
    }

    pub fn parse(s: &str) -> Option<RxMode> {
        match s {
            "copy" => Some(RxMode::Copy),
            "zerocopy" => Some(RxMode::Zerocopy),
            _ => None,
        }
    }

    fn other(self) -> RxMode {
        match self {
            RxMode::Copy => RxMode::Zerocopy,
            RxMode::Zerocopy => RxMode::Copy,
        }
    }
}

/// This guest's receive mode.
pub fn current() -> Result<RxMode, String> {
    match ethtool::flag(DEV, FLAG) {
        Ok(true) => Ok(RxMode::Copy),
        Ok(false) => Ok(RxMode::Zerocopy),
        Err(e) => Err(format!("{DEV} {FLAG}: {e}")),
    }
}

/// Sets this guest's receive mode, and checks the driver took it.
pub fn set_local(m: RxMode) -> Result<(), String> {
    ethtool::set_flag(DEV, FLAG, m == RxMode::Copy)
        .map_err(|e| format!("{DEV} {FLAG} {}: {e}", m.name()))?;
    match current()? {
        now if now == m => Ok(()),
        now => Err(format!("{DEV} still receives in {} mode", now.name())),
    }
}

/// The server's side of [`Control::set_both`]: one mode name per line, each
/// answered with `ok` or `err WHY`.
pub fn mode_control(c: TcpStream) {
    let mut lines = BufReader::new(&c).lines();
    let mut out = &c;
    while let Some(Ok(l)) = lines.next() {
        let answer = match RxMode::parse(l.trim()) {
            Some(m) => match set_local(m) {
                Ok(()) => "ok".to_string(),
                Err(e) => format!("err {e}"),
            },
            None => format!("err no receive mode {:?} (copy or zerocopy)", l.trim()),
        };
        if writeln!(out, "{answer}").is_err() {
            break;
        }
    }
}

/// A connection to the peer's mode control, kept for a whole comparison:
/// a mode change between two round trips then costs one small exchange.
pub struct Control {
    out: TcpStream,
    answers: BufReader<TcpStream>,
    peer: String,
}

impl Control {
    pub fn connect(peer: &str) -> Result<Control, String> {
        let out = TcpStream::connect((peer, MODE_CONTROL))
            .map_err(|e| format!("mode control on {peer}: {e}"))?;
        // The change's frames must be over before the next round trip.
        out.set_nodelay(true).map_err(|e| e.to_string())?;
        let answers = BufReader::new(out.try_clone().map_err(|e| e.to_string())?);
        Ok(Control {
            out,
            answers,
            peer: peer.to_string(),
        })
    }

    /// Sets the receive mode of both guests: the peer's, then this one's.
    pub fn set_both(&mut self, m: RxMode) -> Result<(), String> {
        let peer = &self.peer;
        writeln!(self.out, "{}", m.name()).map_err(|e| format!("mode control on {peer}: {e}"))?;
        let mut answer = String::new();
        self.answers
            .read_line(&mut answer)
            .map_err(|e| format!("mode control on {peer}: {e}"))?;
        match answer.trim() {
            "ok" => set_local(m),
            "" => Err(format!("mode control on {peer}: closed")),
            other => Err(format!("{peer}: {}", other.trim_start_matches("err "))),
        }
    }
}

/// The modes of `pairs` pairs of round trips, starting with `first`: A B,
/// B A, A B, ..., so that each mode goes first in half of the pairs.
pub fn order(first: RxMode, pairs: u32) -> Vec<RxMode> {
    (0..2 * pairs)
        .map(|i| match i % 4 {
            0 | 3 => first,
            _ => first.other(),
        })
        .collect()
}

/// One-sided Wilcoxon signed-rank test on paired samples `(a, b)`: the
/// chance of differences at least this far in favour of `b` being the
/// larger if neither tended to be (normal approximation, zero differences
/// dropped, tied ranks averaged, with the tie and continuity corrections).
/// 1 when the pairs cannot tell (none differ).
pub fn p_larger(pairs: &[(u64, u64)]) -> f64 {
    let mut d: Vec<(u64, bool)> = pairs
        .iter()
        .filter(|(a, b)| a != b)
        .map(|&(a, b)| (a.abs_diff(b), b > a))
        .collect();
    if d.is_empty() {
        return 1.0;
    }
    d.sort_unstable();
    let n = d.len() as f64;
    let (mut w, mut ties, mut i) = (0.0, 0.0, 0);
    while i < d.len() {
        let j = i + d[i..].iter().take_while(|x| x.0 == d[i].0).count();
        // Ranks i+1 ..= j share their mean.
        let rank = (i + 1 + j) as f64 / 2.0;
        w += rank * d[i..j].iter().filter(|x| x.1).count() as f64;
        let t = (j - i) as f64;
        ties += t * t * t - t;
        i = j;
    }
    let var = n * (n + 1.0) * (2.0 * n + 1.0) / 24.0 - ties / 48.0;
    if var <= 0.0 {
        return 1.0;
    }
    upper_tail((w - n * (n + 1.0) / 4.0 - 0.5) / var.sqrt())
}

/// P(Z > z) for a standard normal Z.
fn upper_tail(z: f64) -> f64 {
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// The complementary error function (Numerical Recipes' `erfcc`, relative
/// error under 1.2e-7 everywhere).
fn erfc(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.5 * x.abs());
    let poly = -x * x - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

/// `bench-rr-ab PROTO PEER SIZE REPS`: REPS round trips in each receive
/// mode, on both guests, on one connection, the mode switched before each
/// round trip in the order of [`order`]. Prints an `rr` line per mode
/// (`rx=copy`, `rx=zerocopy`) and an `rr-ab` line with the signed-rank
/// test's p-value that zero-copy round trips take longer than the copying
/// one beside them; leaves both guests in the mode this one started in.
pub fn rr_ab(proto: &str, peer: &str, size: usize, reps: u32) -> Result<String, String> {
    let start = current()?;
    let modes = order(RxMode::Copy, reps);
    let mut ctl = Control::connect(peer)?;
    let result = round_trips(proto, peer, size, 2 * reps, |i| ctl.set_both(modes[i]));
    // Back to where it started, even after an error, so what runs next
    // runs in the mode its path chose.
    let restored = ctl.set_both(start);
    let all = result?;
    restored?;
    let of = |m: RxMode| {
        let pick = |v: &[u64]| -> Vec<u64> {
            v.iter()
                .zip(&modes)
                .filter(|(_, &mode)| mode == m)
                .map(|(x, _)| *x)
                .collect()
        };
        RoundTrips {
            cycles: pick(&all.cycles),
            ns: pick(&all.ns),
            mapped: pick(&all.mapped),
        }
    };
    let (copy, zc) = (of(RxMode::Copy), of(RxMode::Zerocopy));
    let pairs: Vec<(u64, u64)> = copy
        .cycles
        .iter()
        .copied()
        .zip(zc.cycles.iter().copied())
        .collect();
    let slower = pairs.iter().filter(|(c, z)| z > c).count();
    Ok(format!(
        "{}\nbench: {}\nbench: rr-ab proto={proto} size={size} pairs={} zerocopy_longer={slower} p_slower={:.6}",
        copy.line(proto, size, reps, Some(RxMode::Copy.name()))?,
        zc.line(proto, size, reps, Some(RxMode::Zerocopy.name()))?,
        pairs.len(),
        p_larger(&pairs),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_alternate_which_mode_goes_first() {
        use RxMode::{Copy as C, Zerocopy as Z};
        assert_eq!(order(C, 4), [C, Z, Z, C, C, Z, Z, C]);
        assert_eq!(order(C, 1), [C, Z]);
        assert!(order(C, 0).is_empty());
        assert_eq!(RxMode::parse("zerocopy"), Some(Z));
        assert_eq!(RxMode::parse("copy").map(RxMode::name), Some("copy"));
        assert_eq!(RxMode::parse("lend"), None);
    }

    #[test]
    fn signed_rank_test_finds_a_shift_and_not_noise() {
        // A pseudo-random spread around 24000, the same for both sides.
        let mut x = 88172645463325252u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            24000 + x % 1000
        };
        let same: Vec<(u64, u64)> = (0..200).map(|_| (next(), next())).collect();
        let p = p_larger(&same);
        assert!(p > 0.01 && p < 0.99, "{p}");
        // b 1% longer than a, under noise of ±2%: found; the other way: not.
        let slower: Vec<(u64, u64)> = same.iter().map(|&(a, b)| (a, b + 240)).collect();
        assert!(p_larger(&slower) < 1e-6, "{}", p_larger(&slower));
        let faster: Vec<(u64, u64)> = slower.iter().map(|&(a, b)| (b, a)).collect();
        assert!(p_larger(&faster) > 0.999_999);
        // Nothing to tell.
        assert_eq!(p_larger(&[(5, 5), (7, 7)]), 1.0);
        assert_eq!(p_larger(&[]), 1.0);
        // Five pairs all one way is p = 1/32 in the exact test; the
        // approximation lands near it. Ties share ranks.
        let p = p_larger(&[(1, 2), (1, 3), (1, 4), (1, 5), (1, 6)]);
        assert!(p > 0.02 && p < 0.06, "{p}");
        let p = p_larger(&[(1, 2), (1, 2), (1, 2), (2, 1)]);
        assert!(p > 0.1 && p < 0.5, "{p}");
    }

    #[test]
    fn normal_tail() {
        assert!((upper_tail(0.0) - 0.5).abs() < 1e-7);
        assert!((upper_tail(1.959_964) - 0.025).abs() < 1e-6);
        assert!((upper_tail(-1.644_854) - 0.95).abs() < 1e-6);
        assert!(upper_tail(8.0) < 1e-14);
    }
}
