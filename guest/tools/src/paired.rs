//! `bench-rr-ab`: round trips in both receive modes in one boot, on one
//! connection, in alternating blocks, so that "path 4 is never slower than
//! path 3" compares like with like.
//!
//! Paths 3 and 4 differ only in how each receiver takes frames (copied out
//! of the region, or lent to the stack), which the driver's `rx-copy`
//! private flag switches at run time. Measured in separate boots, their
//! medians at sizes where both run the same code (frames of 256 bytes or
//! less are copied in either mode) came out up to 1.5% apart either way,
//! from boot to boot; in one boot, blocks on connections of their own still
//! differed by about 1% from block to block, and switching before every
//! round trip over a TCP control connection put that connection's ACKs
//! into the round trips (+70% at 64 B). So: one connection for both modes,
//! the mode changed between blocks by one UDP exchange (no ACKs left in
//! flight), the first round trip after a change not counted, the blocks in
//! the order copy, zero-copy, zero-copy, copy, ..., and a rank test on the
//! blocks' medians, the block being what repeats.

use std::net::UdpSocket;
use std::time::Duration;

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
    let copying = ethtool::set_flag(DEV, FLAG, m == RxMode::Copy)
        .map_err(|e| format!("{DEV} {FLAG} {}: {e}", m.name()))?;
    match (copying, m) {
        (true, RxMode::Copy) | (false, RxMode::Zerocopy) => Ok(()),
        _ => Err(format!("{DEV} still receives in {} mode", m.other().name())),
    }
}

/// A mode change on the wire: `SEQ MODE`, answered `SEQ ok` or `SEQ err
/// WHY`. The number lets a retry tell a late answer to an earlier try
/// from its own; a change asked twice is made twice, which is harmless.
fn request(seq: u32, m: RxMode) -> String {
    format!("{seq} {}", m.name())
}

/// The server's answer to one request.
fn answer(asked: &str) -> String {
    let (seq, mode) = asked.trim().split_once(' ').unwrap_or(("?", asked.trim()));
    let outcome = match RxMode::parse(mode) {
        Some(m) => match set_local(m) {
            Ok(()) => "ok".to_string(),
            Err(e) => format!("err {e}"),
        },
        None => format!("err no receive mode {mode:?} (copy or zerocopy)"),
    };
    format!("{seq} {outcome}")
}

/// What an answer says about request `seq`: None when it answers another.
fn outcome(seq: u32, reply: &str) -> Option<Result<(), String>> {
    let (got, rest) = reply.trim().split_once(' ')?;
    if got.parse::<u32>().ok()? != seq {
        return None;
    }
    Some(match rest {
        "ok" => Ok(()),
        other => Err(other.trim_start_matches("err ").to_string()),
    })
}

/// The server's side of [`Control::set_both`]. Runs until the socket fails.
pub fn mode_control(sock: UdpSocket) {
    let mut buf = [0u8; 64];
    while let Ok((n, from)) = sock.recv_from(&mut buf) {
        let reply = answer(&String::from_utf8_lossy(&buf[..n]));
        let _ = sock.send_to(reply.as_bytes(), from);
    }
}

/// Tries of one change, each waiting this long (guest time) for its answer.
const TRIES: u32 = 5;
const TRY_WAIT: Duration = Duration::from_secs(4);

/// The peer's mode control, kept for a whole comparison. UDP, so that a
/// change leaves no ACK in flight to land in the next round trip; a lost
/// datagram is sent again.
pub struct Control {
    sock: UdpSocket,
    peer: String,
    seq: u32,
}

impl Control {
    pub fn connect(peer: &str) -> Result<Control, String> {
        let sock = UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
        sock.connect((peer, MODE_CONTROL))
            .map_err(|e| format!("mode control on {peer}: {e}"))?;
        sock.set_read_timeout(Some(TRY_WAIT))
            .map_err(|e| e.to_string())?;
        Ok(Control {
            sock,
            peer: peer.to_string(),
            seq: 0,
        })
    }

    /// Sets the receive mode of both guests: the peer's, then this one's.
    pub fn set_both(&mut self, m: RxMode) -> Result<(), String> {
        self.seq = self.seq.wrapping_add(1);
        let peer = &self.peer;
        let asked = request(self.seq, m);
        let mut buf = [0u8; 256];
        for _ in 0..TRIES {
            self.sock
                .send(asked.as_bytes())
                .map_err(|e| format!("mode control on {peer}: {e}"))?;
            // Answers to earlier tries are read and passed over.
            loop {
                match self.sock.recv(&mut buf) {
                    Ok(n) => match outcome(self.seq, &String::from_utf8_lossy(&buf[..n])) {
                        Some(Ok(())) => return set_local(m),
                        Some(Err(why)) => return Err(format!("{peer}: {why}")),
                        None => continue,
                    },
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        break
                    }
                    Err(e) => return Err(format!("mode control on {peer}: {e}")),
                }
            }
        }
        Err(format!(
            "mode control on {peer}: no answer to {:?} in {TRIES} tries",
            m.name()
        ))
    }
}

/// The modes of `blocks` blocks each, starting with `first`: A B B A A B
/// B A ..., so that each mode runs as often first as second of a pair.
pub fn order(first: RxMode, blocks: u32) -> Vec<RxMode> {
    (0..2 * blocks)
        .map(|i| match i % 4 {
            0 | 3 => first,
            _ => first.other(),
        })
        .collect()
}

/// `reps` round trips split into at most `blocks` blocks as evenly as they
/// go (the first ones take the remainder); no empty block.
pub fn block_reps(reps: u32, blocks: u32) -> Vec<u32> {
    let blocks = blocks.clamp(1, reps.max(1));
    (0..blocks)
        .map(|i| reps / blocks + u32::from(i < reps % blocks))
        .collect()
}

/// Pooled samples up to this many get the exact test; beyond, its
/// distribution is close enough to normal and the exact count too dear.
const EXACT_UP_TO: usize = 40;

/// One-sided Mann–Whitney test: the chance of ranks at least this far in
/// favour of `b` being larger than `a` if both came from one distribution.
/// Exact for small samples (the bench's 8 + 8 block medians), the normal
/// approximation beyond. 1 when the samples cannot tell (empty, or every
/// value the same).
pub fn p_larger(a: &[u64], b: &[u64]) -> f64 {
    if a.is_empty() || b.is_empty() {
        return 1.0;
    }
    if a.len() + b.len() <= EXACT_UP_TO {
        p_larger_exact(a, b)
    } else {
        p_larger_normal(a, b)
    }
}

/// Twice each value's mid-rank in the pooled samples (integers, ties
/// sharing the mean of their ranks), in the order of `a` then `b`.
fn doubled_ranks(a: &[u64], b: &[u64]) -> Vec<u64> {
    let mut sorted: Vec<u64> = a.iter().chain(b).copied().collect();
    sorted.sort_unstable();
    a.iter()
        .chain(b)
        .map(|v| {
            let first = sorted.partition_point(|x| x < v) as u64 + 1;
            let last = sorted.partition_point(|x| x <= v) as u64;
            first + last
        })
        .collect()
}

/// The permutation test on ranks: of all ways to deal the pooled ranks
/// into groups the sizes of `a` and `b`, the share whose `b` group ranks
/// at least as high as the observed one. Ties keep their mid-ranks, so
/// this is the exact test given the ties.
fn p_larger_exact(a: &[u64], b: &[u64]) -> f64 {
    let ranks = doubled_ranks(a, b);
    let observed: u64 = ranks[a.len()..].iter().sum();
    let top = ranks.iter().sum::<u64>() as usize;
    // ways[k][s]: the subsets of k ranks seen so far that sum to s. Counts
    // stay below C(40, 20) < 2^53, exact in an f64.
    let k_max = b.len();
    let mut ways = vec![vec![0f64; top + 1]; k_max + 1];
    ways[0][0] = 1.0;
    for &r in &ranks {
        let r = r as usize;
        for k in (1..=k_max).rev() {
            let (lower, upper) = ways.split_at_mut(k);
            for s in (r..=top).rev() {
                upper[0][s] += lower[k - 1][s - r];
            }
        }
    }
    let all: f64 = ways[k_max].iter().sum();
    let at_least: f64 = ways[k_max][observed as usize..].iter().sum();
    at_least / all
}

/// The normal approximation, with the tie and continuity corrections.
fn p_larger_normal(a: &[u64], b: &[u64]) -> f64 {
    let (na, nb) = (a.len() as f64, b.len() as f64);
    // U of b: pairs where b's sample is the larger, ties counting half.
    let u: f64 = b
        .iter()
        .flat_map(|y| a.iter().map(move |x| (x, y)))
        .map(|(x, y)| match y.cmp(x) {
            std::cmp::Ordering::Greater => 1.0,
            std::cmp::Ordering::Equal => 0.5,
            std::cmp::Ordering::Less => 0.0,
        })
        .sum();
    let mut all: Vec<u64> = a.iter().chain(b).copied().collect();
    all.sort_unstable();
    let n = na + nb;
    let ties: f64 = all
        .chunk_by(|x, y| x == y)
        .map(|run| {
            let t = run.len() as f64;
            t * t * t - t
        })
        .sum();
    let var = na * nb / 12.0 * ((n + 1.0) - ties / (n * (n - 1.0)));
    if var <= 0.0 {
        return 1.0;
    }
    upper_tail((u - na * nb / 2.0 - 0.5) / var.sqrt())
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

/// `bench-rr-ab PROTO PEER SIZE REPS BLOCKS`: REPS round trips in each
/// receive mode, on both guests, on one connection, in up to BLOCKS blocks
/// per mode in the order of [`order`], each after one round trip that is
/// not counted. Prints an `rr` line per mode (`rx=copy`, `rx=zerocopy`) and
/// an `rr-ab` line with the test's p-value that the zero-copy blocks'
/// medians rank above the copying ones'; leaves both guests in the mode
/// this one started in.
pub fn rr_ab(
    proto: &str,
    peer: &str,
    size: usize,
    reps: u32,
    blocks: u32,
) -> Result<String, String> {
    let start = current()?;
    let split = block_reps(reps, blocks);
    let modes = order(RxMode::Copy, split.len() as u32);
    // Each round trip's block, or None for the one after a change.
    let mut plan: Vec<(Option<usize>, RxMode)> = Vec::new();
    for (b, &m) in modes.iter().enumerate() {
        plan.push((None, m));
        plan.extend((0..split[b / 2]).map(|_| (Some(b), m)));
    }
    let mut ctl = Control::connect(peer)?;
    let result = round_trips(proto, peer, size, plan.len() as u32, |i| match plan[i] {
        (None, m) => ctl.set_both(m),
        _ => Ok(()),
    });
    // Back to where it started, even after an error, so what runs next
    // runs in the mode its path chose.
    let restored = ctl.set_both(start);
    let all = result?;
    restored?;
    let counted = |m: RxMode, v: &[u64]| -> Vec<u64> {
        v.iter()
            .zip(&plan)
            .filter(|(_, (b, mode))| b.is_some() && *mode == m)
            .map(|(x, _)| *x)
            .collect()
    };
    let of = |m: RxMode| RoundTrips {
        cycles: counted(m, &all.cycles),
        ns: counted(m, &all.ns),
        mapped: counted(m, &all.mapped),
    };
    let block_medians = |m: RxMode| -> Vec<u64> {
        (0..modes.len())
            .filter(|&b| modes[b] == m)
            .filter_map(|b| {
                let v: Vec<u64> = all
                    .cycles
                    .iter()
                    .zip(&plan)
                    .filter(|(_, (blk, _))| *blk == Some(b))
                    .map(|(x, _)| *x)
                    .collect();
                crate::bench::Spread::of(&v).map(|s| s.median)
            })
            .collect()
    };
    let p = p_larger(
        &block_medians(RxMode::Copy),
        &block_medians(RxMode::Zerocopy),
    );
    Ok(format!(
        "{}\nbench: {}\nbench: rr-ab proto={proto} size={size} reps={reps} blocks={} p_slower={p:.6}",
        of(RxMode::Copy).line(proto, size, reps, Some(RxMode::Copy.name()))?,
        of(RxMode::Zerocopy).line(proto, size, reps, Some(RxMode::Zerocopy.name()))?,
        split.len(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_alternate_and_split_the_round_trips() {
        use RxMode::{Copy as C, Zerocopy as Z};
        assert_eq!(order(C, 4), [C, Z, Z, C, C, Z, Z, C]);
        assert_eq!(order(C, 1), [C, Z]);
        assert_eq!(block_reps(200, 8), [25; 8]);
        assert_eq!(block_reps(20, 8), [3, 3, 3, 3, 2, 2, 2, 2]);
        assert_eq!(block_reps(1, 8), [1]);
        assert_eq!(block_reps(0, 8), [0]);
        assert_eq!(RxMode::parse("zerocopy"), Some(Z));
        assert_eq!(RxMode::parse("copy").map(RxMode::name), Some("copy"));
        assert_eq!(RxMode::parse("lend"), None);
    }

    #[test]
    fn mode_changes_match_their_answers() {
        assert_eq!(request(3, RxMode::Zerocopy), "3 zerocopy");
        assert_eq!(outcome(3, "3 ok\n"), Some(Ok(())));
        assert_eq!(
            outcome(3, "3 err vml0 still receives in copy mode"),
            Some(Err("vml0 still receives in copy mode".to_string()))
        );
        // A late answer to an earlier try, or garbage, answers nothing.
        assert_eq!(outcome(3, "2 ok"), None);
        assert_eq!(outcome(3, "ok"), None);
        assert_eq!(outcome(3, "x ok"), None);
        // A request naming no mode is refused without touching the device.
        let refused = answer("9 lend");
        assert!(
            refused.starts_with("9 err no receive mode \"lend\""),
            "{refused}"
        );
        assert_eq!(outcome(9, &refused).map(|r| r.is_err()), Some(true));
    }

    #[test]
    fn rank_test_finds_a_shift_and_not_noise() {
        // A pseudo-random spread around 24000, the same for both.
        let noise = |seed: u64, n: usize| -> Vec<u64> {
            let mut x = seed;
            (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    24000 + x % 1000
                })
                .collect()
        };
        let (a, b) = (noise(1, 200), noise(2, 200));
        let p = p_larger(&a, &b);
        assert!(p > 0.01 && p < 0.99, "{p}");
        // b 2% longer: found; the other way round: not.
        let slower: Vec<u64> = b.iter().map(|v| v + 480).collect();
        assert!(p_larger(&a, &slower) < 1e-6);
        assert!(p_larger(&slower, &a) > 0.999_999);
        // Nothing to tell.
        assert_eq!(p_larger(&[5, 5], &[5, 5, 5]), 1.0);
        assert_eq!(p_larger(&[], &[1]), 1.0);
        // Eight blocks a side, wholly separated: 1 in C(16, 8) = 12870,
        // below the bench's 0.05 / 16. With one of the eight tied at the
        // bottom it is 46/12870, not below.
        let lo: Vec<u64> = (0..8).collect();
        let hi: Vec<u64> = (8..16).collect();
        assert!((p_larger(&lo, &hi) - 1.0 / 12870.0).abs() < 1e-12);
        let mixed: Vec<u64> = std::iter::once(0).chain(9..16).collect();
        assert!((p_larger(&lo, &mixed) - 46.0 / 12870.0).abs() < 1e-12);
        assert!(p_larger(&lo, &mixed) > 0.05 / 16.0);
        // The normal approximation is close there but not exact.
        let approx = p_larger_normal(&lo, &hi);
        assert!(approx > 1e-4 && approx < 1e-3, "{approx}");
        // Small cases by hand: of the 20 ways to pick 3 of {1, 2.5, 2.5,
        // 4.5, 4.5, 6}, 5 reach b's rank sum of 13.
        assert!((p_larger(&[1, 2, 3], &[2, 3, 4]) - 0.25).abs() < 1e-12);
        assert_eq!(p_larger(&[4, 5, 6], &[1, 2, 3]), 1.0);
        assert!((p_larger(&[1], &[2]) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn normal_tail() {
        assert!((upper_tail(0.0) - 0.5).abs() < 1e-7);
        assert!((upper_tail(1.959_964) - 0.025).abs() < 1e-6);
        assert!((upper_tail(-1.644_854) - 0.95).abs() < 1e-6);
        assert!(upper_tail(8.0) < 1e-14);
    }
}
