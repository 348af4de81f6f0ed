//! `cargo xtask bench`: the paper's comparison (issue 6), every path
//! measured in one run on the same emulator. Each path is one boot of both
//! guests with its own partition configuration and driver parameters,
//! except that path 3's round trips run in path 4's boot when both are
//! selected ([`paired`]); the guests run `vmlink-guest bench-*`
//! (tests/overlays/bench/autorun.sh) and print `bench:` lines, which this
//! module turns into tables.

use crate::emulator::{self, Boot, Choice, Console, Outcome};
use crate::partition;
use crate::util::{out_dir, root};
use crate::BuildOpts;
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;
use std::time::Duration;
use vmlink_abi::hypercall::stat::cause_names;

/// One way of moving frames between the guests.
pub struct Path {
    pub id: u8,
    pub name: &'static str,
    pub what: &'static str,
    pub region_mib: u32,
    /// Buffers per direction (0: as many as the region holds).
    pub max_buffers: u32,
    /// Driver parameters, as kernel command-line words.
    pub params: &'static str,
    /// The hypervisor's command line for this path's boot.
    pub hv_cmdline: &'static str,
}

pub const PATHS: [Path; 5] = [
    Path {
        id: 1,
        name: "mediated",
        what: "hypervisor-mediated: a hypercall per frame, the hypervisor copies it",
        region_mib: 64,
        max_buffers: 0,
        params: "vmlink_net.tx_mode=mediated",
        hv_cmdline: "",
    },
    Path {
        id: 2,
        name: "xenloop",
        what: "XenLoop-style: 64 pages (256 KiB) per direction, copy on receive",
        region_mib: 1,
        max_buffers: 64,
        params: "vmlink_net.rx_mode=copy",
        hv_cmdline: "",
    },
    Path {
        id: 3,
        name: "large-copy",
        what: "64 MiB region, copy on receive",
        region_mib: 64,
        max_buffers: 0,
        params: "vmlink_net.rx_mode=copy",
        hv_cmdline: "",
    },
    Path {
        id: 4,
        name: "large-zerocopy",
        what: "64 MiB region, zero-copy receive (vmlink's design)",
        region_mib: 64,
        max_buffers: 0,
        params: "",
        hv_cmdline: "",
    },
    // Not one of the paths: path 4 again with the hypervisor's
    // virtual-interrupt delivery off, so the same run shows what it saves.
    Path {
        id: 5,
        name: "zerocopy-no-apicv",
        what: "path 4 with the local APIC emulated by exits (`no-apicv`: no virtual-interrupt delivery)",
        region_mib: 64,
        max_buffers: 0,
        params: "",
        hv_cmdline: "no-apicv",
    },
];

/// The ways `bench-rr` uses a TCP socket: plain reads and writes, mapped
/// receive (TCP_ZEROCOPY_RECEIVE), and mapped receive with MSG_ZEROCOPY
/// sends.
pub const TCP_MODES: [&str; 3] = ["tcp", "tcp-mmap", "tcp-zc"];

/// Round trips of at most this many bytes run `small_reps` times.
pub const SMALL_RR: usize = 4096;

/// The workload of one path's boot.
#[derive(Clone, Debug)]
pub struct Workload {
    pub sizes: Vec<usize>,
    pub reps: u32,
    /// Round trips per size up to [`SMALL_RR`]: they are short, so more of
    /// them cost little, and they vary most from one to the next.
    pub small_reps: u32,
    pub bulk_bytes: u64,
    pub bulk_reps: u32,
    /// More words for both guests' kernel command line (`--guest-args`).
    pub guest_args: String,
}

impl Workload {
    pub fn full() -> Workload {
        Workload {
            sizes: vec![64, 1024, 4096, 16384, 65536],
            reps: 20,
            small_reps: 200,
            bulk_bytes: 16 << 20,
            bulk_reps: 3,
            guest_args: String::new(),
        }
    }

    /// The CI smoke run: one size, one repetition, every path.
    pub fn smoke() -> Workload {
        Workload {
            sizes: vec![4096],
            reps: 1,
            small_reps: 1,
            bulk_bytes: 1 << 20,
            bulk_reps: 1,
            guest_args: String::new(),
        }
    }

    /// Round trips at `size`.
    pub fn reps_at(&self, size: usize) -> u32 {
        if size <= SMALL_RR {
            self.small_reps
        } else {
            self.reps
        }
    }

    fn cmdline(&self, path: &Path, paired: bool) -> String {
        let list = |v: Vec<String>| v.join(",");
        // Paired, path 3's round trips run in path 4's boot (`AB_ALPHA`).
        let sizes: &[usize] = if paired && path.id == 3 {
            &[]
        } else {
            &self.sizes
        };
        let ab = if paired && path.id == 4 && !sizes.is_empty() {
            format!(" bench.ab={AB_BLOCKS}")
        } else {
            String::new()
        };
        format!(
            "bench.path={} bench.sizes={} bench.reps={}{ab} \
             bench.bulk={} bench.bulk_reps={} {} {}",
            path.id,
            list(sizes.iter().map(|s| s.to_string()).collect()),
            list(sizes.iter().map(|&s| self.reps_at(s).to_string()).collect()),
            self.bulk_bytes,
            self.bulk_reps,
            path.params,
            self.guest_args
        )
    }
}

/// Blocks per receive mode when paths 3 and 4 share a boot for their round
/// trips (`vmlink-guest bench-rr-ab`): with 8 against 8 the rank test on
/// the blocks' medians can reach the Bonferroni level below (the least p of
/// 4 against 4 is 1/70).
pub const AB_BLOCKS: u32 = 8;

/// When paths 3 and 4 share a boot for their round trips, the family-wide chance of calling path 4 slower than path
/// 3 somewhere when it is not: a one-sided Mann–Whitney test on the blocks'
/// medians per size and protocol, Bonferroni over all of them. They share a boot because they
/// differ only in the receivers' mode, which the driver switches at run
/// time, and medians from two boots differed by up to 1.5% either way
/// where both modes run the same code, more than "never slower" can stand.
pub const AB_ALPHA: f64 = 0.05;

/// Whether this selection of paths measures path 3's round trips in path 4's
/// boot: when both are booted.
pub fn paired(paths: &[&Path]) -> bool {
    paths.iter().any(|p| p.id == 3) && paths.iter().any(|p| p.id == 4)
}

/// The partition configuration of `path`: the default two guests with the
/// path's channel and parameters.
pub fn config_text(path: &Path, w: &Workload, paired: bool) -> String {
    let mut s = format!(
        "# Written by `cargo xtask bench` for path {} ({}).\n[channel]\nsize_mib = {}\nmax_buffers = {}\n",
        path.id, path.name, path.region_mib, path.max_buffers
    );
    for (i, ip) in ["10.0.0.1/24", "10.0.0.2/24"].iter().enumerate() {
        let _ = write!(
            s,
            "\n[[vm]]\nname = \"vm{i}\"\ncpus = [{i}]\nram_mib = 256\nkernel = \"guest-kernel\"\n\
             initrd = \"guest-initrd\"\ncmdline = \"console=ttyS0 panic=-1 no_timer_check {}\"\nip = \"{ip}\"\n",
            w.cmdline(path, paired).trim_end()
        );
    }
    s
}

/// min/median/max as the guests print them (`a/b/c`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spread {
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

impl Spread {
    fn parse(s: &str) -> Option<Spread> {
        let v: Vec<f64> = s.split('/').filter_map(|x| x.parse().ok()).collect();
        match v[..] {
            [min, median, max] => Some(Spread { min, median, max }),
            _ => None,
        }
    }

    fn of(samples: &[f64]) -> Option<Spread> {
        let mut v = samples.to_vec();
        v.sort_by(f64::total_cmp);
        Some(Spread {
            min: *v.first()?,
            median: v[v.len() / 2],
            max: *v.last()?,
        })
    }

    fn show(&self, digits: usize) -> String {
        format!(
            "{:.d$} ({:.d$}–{:.d$})",
            self.median,
            self.min,
            self.max,
            d = digits
        )
    }
}

fn fields(line: &str) -> BTreeMap<&str, &str> {
    line.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .collect()
}

/// What one path's boot measured.
#[derive(Clone, Debug, Default)]
pub struct PathRun {
    /// (proto, size) → cycles and nanoseconds per round trip.
    pub rr: BTreeMap<(String, usize), (Spread, Spread)>,
    /// (proto, size) → bytes per received message the stack mapped
    /// instead of copying (tcp-mmap and tcp-zc).
    pub rr_mapped: BTreeMap<(String, usize), u64>,
    /// Round trips this boot ran with the receivers copying (`rx=copy`)
    /// for another path: path 4's boot measures path 3's.
    pub rr_copy: BTreeMap<(String, usize), (Spread, Spread)>,
    pub rr_copy_mapped: BTreeMap<(String, usize), u64>,
    /// (proto, size) → the one-sided p-value that this boot's zero-copy
    /// round trips are longer than its copying ones (`rr-ab`).
    pub ab: BTreeMap<(String, usize), f64>,
    pub bulk: Vec<BTreeMap<String, f64>>,
    pub copy_1500: Option<Spread>,
    pub error: Option<String>,
}

/// Reads the guests' `bench:` lines (vm0 measures; an error from either
/// guest voids the path).
pub fn parse_run(lines: &[String]) -> PathRun {
    let mut r = PathRun::default();
    let mut ended = false;
    for l in lines {
        let Some((vm, rest)) = l.split_once("] bench: ") else {
            continue;
        };
        if rest.starts_with("ERROR") {
            r.error
                .get_or_insert_with(|| format!("{}] {rest}", vm.trim_start_matches('[')));
            continue;
        }
        if !vm.ends_with("vm0") {
            continue;
        }
        let f = fields(rest);
        // What an `rr` or `rr-ab` line is about.
        let key = (
            f.get("proto").copied(),
            f.get("size").and_then(|s| s.parse::<usize>().ok()),
        );
        if rest.starts_with("rr ") {
            let c = f.get("cycles").and_then(|s| Spread::parse(s));
            let n = f.get("ns").and_then(|s| Spread::parse(s));
            if let ((Some(p), Some(size)), Some(c), Some(n)) = (key, c, n) {
                let (rr, mapped) = if f.get("rx") == Some(&"copy") {
                    (&mut r.rr_copy, &mut r.rr_copy_mapped)
                } else {
                    (&mut r.rr, &mut r.rr_mapped)
                };
                rr.insert((p.to_string(), size), (c, n));
                if let Some(m) = f.get("mapped").and_then(|m| m.parse().ok()) {
                    mapped.insert((p.to_string(), size), m);
                }
            }
        } else if rest.starts_with("rr-ab ") {
            let p = f.get("p_slower").and_then(|s| s.parse().ok());
            if let ((Some(proto), Some(size)), Some(p)) = (key, p) {
                r.ab.insert((proto.to_string(), size), p);
            }
        } else if rest.starts_with("bulk ")
            || rest.starts_with("bulk-rx ")
            || rest.starts_with("bulk-exits ")
            || rest.starts_with("bulk-zc ")
        {
            // A transfer prints its figures on several lines (sender's,
            // receiver's, exit causes, zero-copy completions) with the
            // same seed.
            let numbers = f.iter().flat_map(|(k, v)| bulk_numbers(k, v));
            let seed = f.get("seed").and_then(|s| s.parse::<f64>().ok());
            match r.bulk.last_mut() {
                Some(last) if !rest.starts_with("bulk ") && last.get("seed") == seed.as_ref() => {
                    last.extend(numbers)
                }
                _ if rest.starts_with("bulk ") => r.bulk.push(numbers.collect()),
                _ => {}
            }
        } else if rest.starts_with("copy ") && f.get("size") == Some(&"1500") {
            r.copy_1500 = f.get("cycles").and_then(|s| Spread::parse(s));
        } else if rest == "end" {
            ended = true;
        }
    }
    if r.error.is_none() && !ended {
        r.error = Some("the guests did not finish the benchmark (no `bench: end`)".into());
    }
    r
}

/// Gives path 3 the round trips path 4's boot ran for it (a paired run):
/// they are path 3's figures, and a path 4 without figures leaves path 3
/// without them too.
pub fn merge_paired(runs: &mut [(&Path, PathRun)]) {
    let Some(i4) = runs.iter().position(|(p, _)| p.id == 4) else {
        return;
    };
    let r4 = &mut runs[i4].1;
    let (rr, mapped, error) = (
        std::mem::take(&mut r4.rr_copy),
        std::mem::take(&mut r4.rr_copy_mapped),
        r4.error.clone(),
    );
    if let Some((_, r3)) = runs.iter_mut().find(|(p, _)| p.id == 3) {
        if let Some(e) = error {
            r3.error.get_or_insert(format!(
                "its round trips ran in path 4's boot, which failed ({e})"
            ));
        }
        r3.rr.extend(rr);
        r3.rr_mapped.extend(mapped);
    }
}

/// One `key=value` of a bulk line as numbers: `tx_exit_causes=a/b/..`
/// becomes `tx_exits_hlt=a`, ... (the causes in the STATS order).
fn bulk_numbers(key: &str, value: &str) -> Vec<(String, f64)> {
    match key.strip_suffix("exit_causes") {
        Some(side) => cause_names()
            .iter()
            .zip(value.split('/'))
            .filter_map(|(c, v)| Some((format!("{side}{c}"), v.parse().ok()?)))
            .collect(),
        None => value
            .parse()
            .ok()
            .map(|v| vec![(key.to_string(), v)])
            .unwrap_or_default(),
    }
}

/// Figures of the bulk transfers, each over the repetitions.
#[derive(Clone, Debug, Default)]
pub struct BulkFigures {
    /// Bytes per 1000 TSC cycles of the transfer.
    pub bytes_per_kcycle: Option<Spread>,
    /// MB/s of emulated time.
    pub mbps: Option<Spread>,
    pub tx_cycles_per_packet: Option<Spread>,
    pub rx_cycles_per_packet: Option<Spread>,
    /// Receiver cycles per 1500 bytes of payload.
    pub rx_cycles_per_mtu: Option<Spread>,
    /// VM exits of both guests per data packet (a frame on the channel:
    /// with TSO, up to 64 KiB).
    pub exits_per_packet: Option<Spread>,
    /// The same per 1500 bytes of payload, the unit of the receiver's
    /// cycles: what the exits would be per packet of an MTU-1500 wire.
    pub exits_per_mtu: Option<Spread>,
    /// The same by cause, in `stat::cause_names` order (absent where the guests did
    /// not report causes).
    pub exit_causes_per_packet: Vec<Option<Spread>>,
    pub interrupts_per_packet: Option<Spread>,
    /// MSG_ZEROCOPY sends, and those the kernel copied anyway, over all
    /// repetitions.
    pub zc_sends: u64,
    pub zc_copied: u64,
}

/// How the bulk sender handed its bytes to the kernel, and how the sink
/// took them (`zc=` and `mmap=` in the sender's line).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Send {
    /// `write`: copied into socket buffers, then into the channel.
    Copy,
    /// MSG_ZEROCOPY: the driver's copy into the channel is the only one.
    Zerocopy,
    /// MSG_ZEROCOPY to a sink receiving with TCP_ZEROCOPY_RECEIVE.
    ZerocopyMapped,
}

pub const SENDS: [Send; 3] = [Send::Copy, Send::Zerocopy, Send::ZerocopyMapped];

impl Send {
    fn label(self) -> &'static str {
        match self {
            Send::Copy => "write",
            Send::Zerocopy => "MSG_ZEROCOPY",
            Send::ZerocopyMapped => "MSG_ZEROCOPY, mapped receive",
        }
    }
    fn csv(self) -> &'static str {
        match self {
            Send::Copy => "tcp",
            Send::Zerocopy => "tcp-zcsend",
            Send::ZerocopyMapped => "tcp-zcsend-mmap",
        }
    }
    fn of(rep: &BTreeMap<String, f64>) -> Send {
        match (rep.get("zc") == Some(&1.0), rep.get("mmap") == Some(&1.0)) {
            (true, true) => Send::ZerocopyMapped,
            (true, false) => Send::Zerocopy,
            _ => Send::Copy,
        }
    }
}

/// The repetitions of one send mode.
pub fn bulk_reps(reps: &[BTreeMap<String, f64>], send: Send) -> Vec<BTreeMap<String, f64>> {
    reps.iter()
        .filter(|r| Send::of(r) == send)
        .cloned()
        .collect()
}

pub fn bulk_figures(reps: &[BTreeMap<String, f64>]) -> BulkFigures {
    let fig = |f: &dyn Fn(&BTreeMap<String, f64>) -> Option<f64>| {
        let v: Vec<f64> = reps.iter().filter_map(f).collect();
        if v.len() == reps.len() {
            Spread::of(&v)
        } else {
            None
        }
    };
    let div = |a: f64, b: f64| (b > 0.0).then(|| a / b);
    let total = |k: &str| reps.iter().filter_map(|m| m.get(k)).sum::<f64>() as u64;
    BulkFigures {
        zc_sends: total("zc_sends"),
        zc_copied: total("zc_copied"),
        bytes_per_kcycle: fig(&|m| div(m.get("bytes")? * 1000.0, *m.get("tx_cycles")?)),
        mbps: fig(&|m| div(m.get("bytes")? * 1000.0, *m.get("ns")?)),
        tx_cycles_per_packet: fig(&|m| div(*m.get("tx_busy")?, *m.get("tx_tx_packets")?)),
        rx_cycles_per_packet: fig(&|m| div(*m.get("rx_busy")?, *m.get("rx_rx_packets")?)),
        rx_cycles_per_mtu: fig(&|m| div(m.get("rx_busy")? * 1500.0, *m.get("bytes")?)),
        exits_per_packet: fig(&|m| {
            div(
                m.get("tx_exits")? + m.get("rx_exits")?,
                *m.get("tx_tx_packets")?,
            )
        }),
        exit_causes_per_packet: cause_names()
            .iter()
            .map(|c| {
                fig(&|m| {
                    div(
                        m.get(&format!("tx_{c}"))? + m.get(&format!("rx_{c}"))?,
                        *m.get("tx_tx_packets")?,
                    )
                })
            })
            .collect(),
        exits_per_mtu: fig(&|m| {
            div(
                (m.get("tx_exits")? + m.get("rx_exits")?) * 1500.0,
                *m.get("bytes")?,
            )
        }),
        interrupts_per_packet: fig(&|m| {
            div(
                m.get("tx_interrupts")? + m.get("rx_interrupts")?,
                *m.get("tx_tx_packets")?,
            )
        }),
    }
}

/// The results of every path, in PATHS order.
pub struct Report<'a> {
    pub runs: Vec<(&'a Path, PathRun)>,
    pub workload: Workload,
    pub emulator: String,
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "–".into(),
    }
}

impl Report<'_> {
    fn ok(&self, id: u8) -> Option<&PathRun> {
        self.runs
            .iter()
            .find(|(p, r)| p.id == id && r.error.is_none())
            .map(|(_, r)| r)
    }

    fn rr_median(&self, id: u8, proto: &str, size: usize) -> Option<f64> {
        self.ok(id)?
            .rr
            .get(&(proto.to_string(), size))
            .map(|(c, _)| c.median)
    }

    /// Round-trip medians per protocol and size (nothing when no path ran
    /// round trips, as with --bulk-only).
    fn rr_table(&self, s: &mut String) {
        let keys = self.rr_keys();
        if keys.is_empty() {
            return;
        }
        let _ = writeln!(
            s,
            "\n### Round-trip latency (cycles; UDP at 65536 means 65507, the largest datagram)\n"
        );
        let _ = writeln!(
            s,
            "| proto | size | path | cycles | ns (emulated) | ÷ path 1 | ÷ path 2 |\n|---|---|---|---|---|---|---|"
        );
        for (proto, size) in keys {
            for (p, r) in &self.runs {
                let Some((c, n)) =
                    r.rr.get(&(proto.clone(), size))
                        .filter(|_| r.error.is_none())
                else {
                    continue;
                };
                let shown = if proto == "udp" {
                    size.min(65536)
                } else {
                    size
                };
                let _ = writeln!(
                    s,
                    "| {proto} | {shown} | {} {} | {} | {} | {} | {} |",
                    p.id,
                    p.name,
                    c.show(0),
                    n.show(0),
                    ratio(Some(c.median), self.rr_median(1, &proto, size)),
                    ratio(Some(c.median), self.rr_median(2, &proto, size)),
                );
            }
        }
        let mapped: Vec<String> = self
            .runs
            .iter()
            .filter(|(_, r)| r.error.is_none() && !r.rr_mapped.is_empty())
            .map(|(p, r)| {
                let sizes: Vec<String> = r
                    .rr_mapped
                    .iter()
                    .map(|((proto, size), m)| format!("{proto} {m} of {size}"))
                    .collect();
                format!("path {}: {}", p.id, sizes.join(", "))
            })
            .collect();
        if !mapped.is_empty() {
            let _ = writeln!(
                s,
                "\ntcp-mmap and tcp-zc receive with TCP_ZEROCOPY_RECEIVE on both sides; bytes of each received message the stack mapped instead of copying (mean over the round trips): {}",
                mapped.join("; ")
            );
        }
        self.paired_table(s);
    }

    /// Path 4's same-boot test against path 3, when they shared a boot.
    fn ab(&self) -> Option<&BTreeMap<(String, usize), f64>> {
        self.ok(4).map(|r| &r.ab).filter(|ab| !ab.is_empty())
    }

    /// Path 4 against path 3 in one boot, when they shared it.
    fn paired_table(&self, s: &mut String) {
        let Some(ab) = self.ab() else {
            return;
        };
        let _ = writeln!(
            s,
            "\nPath 3's round trips ran in path 4's boot, on the same connections: both guests' \
             drivers switched receive mode at run time (`rx-copy`) between blocks, up to \
             {AB_BLOCKS} per mode, in the order copy, zero-copy, zero-copy, copy, and so on, and \
             the first round trip after each switch is not counted; path 3's bulk transfers ran \
             in its own boot. p is the one-sided Mann–Whitney test's chance, on the blocks' \
             median cycles, of ranks this far in favour of path 4 taking longer if neither \
             mode did.\n\n\
             | proto | size | path 4 ÷ path 3 | p |\n|---|---|---|---|"
        );
        for ((proto, size), p) in ab {
            let _ = writeln!(
                s,
                "| {proto} | {size} | {} | {p:.2e} |",
                ratio(
                    self.rr_median(4, proto, *size),
                    self.rr_median(3, proto, *size)
                )
            );
        }
    }

    /// Bulk exits per packet by cause (medians), for the paths whose
    /// guests reported them.
    fn exit_cause_table(&self, s: &mut String) {
        let mut rows = Vec::new();
        for send in SENDS {
            for (p, _) in &self.runs {
                let Some(b) = self.bulk(p.id, send) else {
                    continue;
                };
                if b.exit_causes_per_packet.iter().any(Option::is_none) {
                    continue;
                }
                let cells: Vec<String> = b
                    .exit_causes_per_packet
                    .iter()
                    .chain([&b.exits_per_packet])
                    .map(|c| c.map_or("–".into(), |c| format!("{:.3}", c.median)))
                    .collect();
                rows.push(format!(
                    "| {} {} | {} | {} |",
                    p.id,
                    p.name,
                    send.label(),
                    cells.join(" | ")
                ));
            }
        }
        if rows.is_empty() {
            return;
        }
        let names: Vec<&str> = cause_names()
            .iter()
            .map(|c| c.trim_start_matches("exits_"))
            .collect();
        let _ = writeln!(
            s,
            "\nWhere the bulk exits come from: both guests' VM exits per packet, by cause \
             (medians; the counter reads that bracket a transfer are not counted).\n\n\
             | path | send | {} | all |\n|---|---|{}---|",
            names.join(" | "),
            "---|".repeat(names.len())
        );
        for r in rows {
            let _ = writeln!(s, "{r}");
        }
    }

    fn bulk(&self, id: u8, send: Send) -> Option<BulkFigures> {
        self.ok(id).map(|r| bulk_figures(&bulk_reps(&r.bulk, send)))
    }

    /// The median of one bulk figure of a path and send mode.
    fn bulk_median(
        &self,
        id: u8,
        send: Send,
        figure: fn(&BulkFigures) -> Option<Spread>,
    ) -> Option<f64> {
        self.bulk(id, send)
            .and_then(|b| figure(&b))
            .map(|s| s.median)
    }

    fn rr_keys(&self) -> Vec<(String, usize)> {
        let mut keys: Vec<(String, usize)> = self
            .runs
            .iter()
            .flat_map(|(_, r)| r.rr.keys().cloned())
            .collect();
        keys.sort_by(|a, b| (a.0.as_str(), a.1).cmp(&(b.0.as_str(), b.1)));
        keys.dedup();
        keys
    }

    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "Measured by `cargo xtask bench` on {}. Cycles are the guests' TSC \
             cycles{}; figures are median (min–max) over the repetitions ({} round \
             trips per size, {} up to {} B); ratios are medians divided by path 1's \
             and path 2's.\n",
            self.emulator,
            if self.emulator.starts_with("Bochs") {
                " (under Bochs the TSC follows executed instructions, so they repeat \
                 from run to run); ns and MB/s are emulator time, not real time"
            } else {
                ""
            },
            self.workload.reps,
            self.workload.small_reps,
            SMALL_RR
        );
        if !self.workload.guest_args.is_empty() {
            let _ = writeln!(
                s,
                "Both guests booted with `{}` added to their kernel command line.\n",
                self.workload.guest_args
            );
        }
        let _ = writeln!(s, "| path | what | status |\n|---|---|---|");
        for (p, r) in &self.runs {
            let status = match &r.error {
                Some(e) => format!("no figures: {e}"),
                None => "ok, all data checked".into(),
            };
            let _ = writeln!(s, "| {} {} | {} | {} |", p.id, p.name, p.what, status);
        }
        self.rr_table(&mut s);
        // No bulk section at all for a run without transfers (--rr-only).
        if self.workload.bulk_reps > 0 {
            self.bulk_tables(&mut s);
        }
        let _ = writeln!(s, "\n### The issue's bars (path 4 against path 2 and 3)\n");
        for (bar, verdict) in self.bars() {
            let _ = writeln!(s, "- {verdict}: {bar}");
        }
        s
    }

    /// Bulk throughput, cycles and exits per packet, and exits by cause.
    fn bulk_tables(&self, s: &mut String) {
        let _ = writeln!(
            s,
            "\n### Bulk TCP ({} bytes × {})\n",
            self.workload.bulk_bytes, self.workload.bulk_reps
        );
        let _ = writeln!(
            s,
            "Each transfer runs three times per repetition: the sender writing with `write` \
             (the stack copies into socket buffers, the driver copies those into the \
             channel), with MSG_ZEROCOPY (the driver's copy into the channel is the only one \
             on the sending side), and with MSG_ZEROCOPY to a receiver that maps what it gets \
             (TCP_ZEROCOPY_RECEIVE: on path 4 the driver's copy is then the only one of the \
             transfer; elsewhere the receiver copies as before). Ratios compare the same \
             mode.\n"
        );
        let _ = writeln!(
            s,
            "| path | send | bytes/kcycle | MB/s (emulated) | ÷ path 1 | ÷ path 2 | tx cycles/pkt | rx cycles/pkt | rx cycles/1500 B | exits/pkt | exits/1500 B | interrupts/pkt |\n|---|---|---|---|---|---|---|---|---|---|---|---|"
        );
        let med = |f: &Option<Spread>| f.map(|s| s.median);
        let mut copied = Vec::new();
        for send in SENDS {
            for (p, _) in &self.runs {
                let Some(b) = self.bulk(p.id, send) else {
                    continue;
                };
                if b.bytes_per_kcycle.is_none() {
                    continue;
                }
                if b.zc_copied > 0 {
                    copied.push(format!("path {}: {} of {}", p.id, b.zc_copied, b.zc_sends));
                }
                let show = |f: &Option<Spread>, d| f.map(|s| s.show(d)).unwrap_or("–".into());
                let tput = |id| self.bulk_median(id, send, |b| b.bytes_per_kcycle);
                let _ = writeln!(
                    s,
                    "| {} {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    p.id,
                    p.name,
                    send.label(),
                    show(&b.bytes_per_kcycle, 0),
                    show(&b.mbps, 1),
                    ratio(med(&b.bytes_per_kcycle), tput(1)),
                    ratio(med(&b.bytes_per_kcycle), tput(2)),
                    show(&b.tx_cycles_per_packet, 0),
                    show(&b.rx_cycles_per_packet, 0),
                    show(&b.rx_cycles_per_mtu, 0),
                    show(&b.exits_per_packet, 3),
                    show(&b.exits_per_mtu, 3),
                    show(&b.interrupts_per_packet, 3),
                );
            }
        }
        if !copied.is_empty() {
            let _ = writeln!(
                s,
                "\nMSG_ZEROCOPY sends the kernel copied anyway (its completions say so): {}",
                copied.join("; ")
            );
        }
        self.exit_cause_table(s);
    }

    /// Each acceptance bar with MET, NOT MET or "not measured".
    pub fn bars(&self) -> Vec<(String, &'static str)> {
        let mut out = Vec::new();
        let verdict = |ok: Option<bool>| match ok {
            Some(true) => "MET",
            Some(false) => "NOT MET",
            None => "not measured",
        };
        for proto in std::iter::once("udp").chain(TCP_MODES) {
            for size in [16384, 65536] {
                let size_key = if proto == "udp" && size == 65536 {
                    65507
                } else {
                    size
                };
                let p4 = self.rr_median(4, proto, size_key);
                // The zero-copy socket modes are held to path 2's fastest
                // TCP mode: mapping gains it nothing (its copies land in
                // linear skbs) and costs it the calls.
                let (p2, against) = if proto.starts_with("tcp-") {
                    let best = TCP_MODES
                        .iter()
                        .filter_map(|m| self.rr_median(2, m, size))
                        .reduce(f64::min);
                    (best, "path 2's fastest TCP mode")
                } else {
                    (self.rr_median(2, proto, size_key), "path 2")
                };
                let ok = p4.zip(p2).map(|(a, b)| a <= 0.6 * b);
                out.push((
                    format!(
                        "{proto} round trip at {size} B at least 40% lower: path 4 ÷ {against} = {}",
                        ratio(p4, p2)
                    ),
                    verdict(ok),
                ));
            }
        }
        let copy = self.ok(4).and_then(|r| r.copy_1500.map(|s| s.median));
        for send in SENDS {
            // Path 2's figure to beat: the same mode's, but for mapped
            // receive its best mode's (mapping gains it nothing: its
            // copies land in linear skbs).
            let path2 = |figure: fn(&BulkFigures) -> Option<Spread>, best: fn(f64, f64) -> f64| {
                if send == Send::ZerocopyMapped {
                    SENDS
                        .iter()
                        .filter_map(|s| self.bulk_median(2, *s, figure))
                        .reduce(best)
                } else {
                    self.bulk_median(2, send, figure)
                }
            };
            let against = if send == Send::ZerocopyMapped {
                "path 2's best mode"
            } else {
                "path 2"
            };
            let tput4 = self.bulk_median(4, send, |b| b.bytes_per_kcycle);
            let tput2 = path2(|b| b.bytes_per_kcycle, f64::max);
            out.push((
                format!(
                    "bulk throughput at least 45% higher ({} sender): path 4 ÷ {against} = {}",
                    send.label(),
                    ratio(tput4, tput2)
                ),
                verdict(tput4.zip(tput2).map(|(a, b)| a >= 1.45 * b)),
            ));
            let mtu4 = self.bulk_median(4, send, |b| b.rx_cycles_per_mtu);
            let mtu2 = path2(|b| b.rx_cycles_per_mtu, f64::min);
            out.push((
                format!(
                    "receiver cycles per 1500 B lower by at least one 1500-byte copy ({} cycles, `rep movsb` as the guest kernel copies; {} sender): {against} {} → path 4 {}",
                    copy.map_or("–".into(), |c| format!("{c:.0}")),
                    send.label(),
                    mtu2.map_or("–".into(), |c| format!("{c:.0}")),
                    mtu4.map_or("–".into(), |c| format!("{c:.0}")),
                ),
                verdict(mtu4.zip(mtu2).zip(copy).map(|((a, b), c)| b - a >= c)),
            ));
        }
        let keys = self.rr_keys();
        let above = |(proto, size): &(String, usize)| {
            let (a, b) = (
                self.rr_median(4, proto, *size)?,
                self.rr_median(3, proto, *size)?,
            );
            (a > b).then(|| format!("{proto} {size}"))
        };
        let (worse, how) = match self.ab() {
            // Same boot: slower only where the test says so.
            Some(ab) => {
                let level = AB_ALPHA / ab.len() as f64;
                let worse: Vec<String> = ab
                    .iter()
                    .filter(|(_, p)| **p < level)
                    .map(|((proto, size), p)| format!("{proto} {size} (p = {p:.2e})"))
                    .collect();
                let noise: Vec<String> = keys
                    .iter()
                    .filter(|k| ab.get(*k).is_some_and(|p| *p >= level))
                    .filter_map(above)
                    .collect();
                (
                    worse,
                    format!(
                        "in one boot, longer where a one-sided Mann–Whitney test on blocks gives p < {AB_ALPHA} / {} comparisons{}",
                        ab.len(),
                        if noise.is_empty() {
                            String::new()
                        } else {
                            format!("; median above but within chance at {}", noise.join(", "))
                        }
                    ),
                )
            }
            None => (
                keys.iter().filter_map(above).collect(),
                "separate boots, medians compared".to_string(),
            ),
        };
        // With no round trips run (--bulk-only) there is nothing to compare.
        let measured = self.ok(4).is_some() && self.ok(3).is_some() && !keys.is_empty();
        out.push((
            format!(
                "path 4 never slower than path 3 (round trips; {how}){}",
                if worse.is_empty() {
                    String::new()
                } else {
                    format!(": slower at {}", worse.join(", "))
                }
            ),
            verdict(measured.then_some(worse.is_empty())),
        ));
        for send in SENDS {
            let tput = |id| self.bulk_median(id, send, |b| b.bytes_per_kcycle);
            out.push((
                format!(
                    "path 4 bulk throughput not below path 3 ({} sender): path 4 ÷ path 3 = {}",
                    send.label(),
                    ratio(tput(4), tput(3))
                ),
                verdict(tput(4).zip(tput(3)).map(|(a, b)| a >= b)),
            ));
        }
        for send in SENDS {
            // Judged per frame on the channel (the stricter unit: a TSO
            // frame carries many MTU-size packets); per 1500 bytes for
            // comparison with the receiver's bar.
            let exits = self.bulk_median(4, send, |b| b.exits_per_packet);
            let per_mtu = self.bulk_median(4, send, |b| b.exits_per_mtu);
            out.push((
                format!(
                    "bulk TCP on path 4 under 0.1 VM exits per packet ({} sender): {} per frame ({} per 1500 B of payload)",
                    send.label(),
                    exits.map_or("–".into(), |e| format!("{e:.3}")),
                    per_mtu.map_or("–".into(), |e| format!("{e:.3}")),
                ),
                verdict(exits.map(|e| e < 0.1)),
            ));
        }
        out
    }

    pub fn csv(&self) -> String {
        let mut s = String::from("path,name,test,proto,size,metric,min,median,max\n");
        for (p, r) in &self.runs {
            if let Some(e) = &r.error {
                let _ = writeln!(
                    s,
                    "{},{},error,,,\"{}\",,,",
                    p.id,
                    p.name,
                    e.replace('"', "'")
                );
                continue;
            }
            for ((proto, size), (c, n)) in &r.rr {
                for (metric, v) in [("cycles", c), ("ns", n)] {
                    let _ = writeln!(
                        s,
                        "{},{},rr,{proto},{size},{metric},{},{},{}",
                        p.id, p.name, v.min, v.median, v.max
                    );
                }
            }
            for send in SENDS {
                let b = bulk_figures(&bulk_reps(&r.bulk, send));
                for (metric, v) in [
                    ("bytes_per_kcycle", b.bytes_per_kcycle),
                    ("mb_per_s", b.mbps),
                    ("tx_cycles_per_packet", b.tx_cycles_per_packet),
                    ("rx_cycles_per_packet", b.rx_cycles_per_packet),
                    ("rx_cycles_per_1500b", b.rx_cycles_per_mtu),
                    ("exits_per_packet", b.exits_per_packet),
                    ("exits_per_1500b", b.exits_per_mtu),
                    ("interrupts_per_packet", b.interrupts_per_packet),
                ]
                .into_iter()
                .map(|(m, v)| (m.to_string(), v))
                .chain(
                    cause_names()
                        .iter()
                        .zip(&b.exit_causes_per_packet)
                        .map(|(c, v)| (format!("{c}_per_packet"), *v)),
                ) {
                    if let Some(v) = v {
                        let _ = writeln!(
                            s,
                            "{},{},bulk,{},{},{metric},{},{},{}",
                            p.id,
                            p.name,
                            send.csv(),
                            self.workload.bulk_bytes,
                            v.min,
                            v.median,
                            v.max
                        );
                    }
                }
            }
            if let Some(c) = r.copy_1500 {
                let _ = writeln!(
                    s,
                    "{},{},copy,,1500,cycles,{},{},{}",
                    p.id, p.name, c.min, c.median, c.max
                );
            }
        }
        s
    }
}

/// What `cargo xtask bench` was asked for (its command-line options).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct Options {
    /// One size, one repetition, every path: checks that it completes
    /// with no data lost (what the CI test run does).
    #[arg(long)]
    pub smoke: bool,
    /// Rebuild the tables and the plot from the last run's console
    /// logs, booting nothing.
    #[arg(long)]
    pub report_only: bool,
    /// Only these paths, e.g. `--paths 2,4` (tables then go to
    /// target/bench/partial/).
    #[arg(long, value_delimiter = ',')]
    pub paths: Vec<u8>,
    /// Round-trip payload sizes instead of 64,1024,4096,16384,65536.
    #[arg(long, value_delimiter = ',')]
    pub sizes: Option<Vec<usize>>,
    /// Bulk transfers only, no round trips.
    #[arg(long)]
    pub bulk_only: bool,
    /// Round trips only, no bulk transfers.
    #[arg(long, conflicts_with = "bulk_only")]
    pub rr_only: bool,
    /// More words for both guests' kernel command line, e.g.
    /// `--guest-args nohz=off`.
    #[arg(long, default_value = "")]
    pub guest_args: String,
}

impl Options {
    /// A run that is not the full comparison (a subset of paths, other
    /// sizes, other guest arguments): its tables go to target/bench/partial/
    /// so they never replace a full run's.
    fn partial(&self) -> bool {
        !self.paths.is_empty()
            || self.sizes.is_some()
            || self.bulk_only
            || self.rr_only
            || !self.guest_args.is_empty()
    }

    /// The kind of run, as folder names show it: "", "-smoke" or "-partial".
    fn tag(&self) -> &'static str {
        if self.smoke {
            "-smoke"
        } else if self.partial() {
            "-partial"
        } else {
            ""
        }
    }

    /// The paths to boot, checked against PATHS.
    fn selected(&self) -> Result<Vec<&'static Path>> {
        for id in &self.paths {
            if !PATHS.iter().any(|p| p.id == *id) {
                bail!(
                    "--paths: there is no path {id} (paths are {})",
                    PATHS
                        .iter()
                        .map(|p| p.id.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
        Ok(PATHS
            .iter()
            .filter(|p| self.paths.is_empty() || self.paths.contains(&p.id))
            .collect())
    }

    /// The workload these options describe; the guest arguments are checked,
    /// since they land in a quoted TOML string and a kernel command line.
    fn workload(&self) -> Result<Workload> {
        let mut w = if self.smoke {
            Workload::smoke()
        } else {
            Workload::full()
        };
        if let Some(sizes) = &self.sizes {
            if let Some(bad) = sizes.iter().find(|s| **s == 0 || **s > 1 << 20) {
                bail!("--sizes: {bad} is not a payload size (1 to 1048576 bytes)");
            }
            w.sizes = sizes.clone();
        }
        if self.bulk_only {
            w.sizes.clear();
        }
        if self.rr_only {
            w.bulk_reps = 0;
        }
        if let Some(c) = self
            .guest_args
            .chars()
            .find(|c| matches!(c, '"' | '\\') || c.is_control())
        {
            bail!("--guest-args: {c:?} cannot go on a kernel command line here");
        }
        w.guest_args = self.guest_args.trim().to_string();
        Ok(w)
    }
}

/// The run folder of a path's boot (target/vmlink/run/<name>/).
fn run_name(tag: &str, path: &Path) -> String {
    format!("bench{tag}-path{}", path.id)
}

/// The console log a path's boot left (what `--report-only` reads again).
fn console_log(tag: &str, path: &Path) -> PathBuf {
    out_dir()
        .join("run")
        .join(run_name(tag, path))
        .join("com1.log")
}

/// Where the tables go: target/bench/, target/bench/smoke/ for the smoke
/// run or target/bench/partial/ for a partial one, which must not replace
/// a full run's tables.
fn results_dir(tag: &str) -> Result<PathBuf> {
    let dir = out_dir().join("..").join("bench");
    let dir = match tag.strip_prefix('-') {
        Some(sub) => dir.join(sub),
        None => dir,
    };
    fs::create_dir_all(&dir)?;
    Ok(dir.canonicalize()?)
}

/// `cargo xtask bench [--smoke] [--report-only]`: `report_only` rebuilds
/// the tables and the plot from the last run's console logs, booting
/// nothing.
pub fn run(choice: Choice, o: &Options) -> Result<()> {
    let workload = o.workload()?;
    let paths = o.selected()?;
    let tag = o.tag();
    let dir = results_dir(tag)?;
    if o.report_only {
        let mut runs = Vec::new();
        for path in paths {
            let log = console_log(tag, path);
            let raw = fs::read(&log)
                .with_context(|| format!("{} (run `cargo xtask bench` first)", log.display()))?;
            let lines: Vec<String> = raw
                .split(|b| *b == b'\n')
                .map(crate::serial::clean_line)
                .collect();
            let mut r = parse_run(&lines);
            if !lines
                .iter()
                .any(|l| crate::serial::halt_status(l).as_deref() == Some("ok"))
            {
                r.error
                    .get_or_insert_with(|| "the run did not end with status=ok".into());
            }
            runs.push((path, r));
        }
        merge_paired(&mut runs);
        return write_report(
            Report {
                runs,
                workload,
                emulator: emulator::describe(choice),
            },
            &dir,
        );
    }
    let choice = emulator::resolve(choice);
    let opts = BuildOpts {
        overlay: Some(root().join("tests/overlays/bench")),
        config: None,
    };
    let a = crate::build_all(&opts)?;
    let machine = partition::Machine {
        cpus: 2,
        megs: emulator::DEFAULT_MEGS,
    };
    let timeout = Duration::from_secs(if o.smoke { 1200 } else { 3 * 3600 });
    let paired = paired(&paths);
    let mut runs = Vec::new();
    for path in paths {
        let config: PathBuf = dir.join(format!("path{}-{}.toml", path.id, path.name));
        fs::write(&config, config_text(path, &workload, paired))?;
        let part = partition::load(&config, machine, &a.payloads, true)
            .with_context(|| format!("path {}", path.id))?;
        let boot = Boot {
            name: run_name(tag, path),
            label: format!("bench path {} {}", path.id, path.name),
            kind: emulator::kind_for(choice, &a, &part, path.hv_cmdline)?,
            cpus: 2,
            megs: machine.megs,
            timeout: Some(timeout),
            console: Console::Stream,
            give_up: Some(crate::serial::guest_lost),
        };
        eprintln!("==> bench path {}: {}", path.id, path.what);
        let cap = emulator::boot(&boot)?;
        let mut r = parse_run(&cap.lines);
        match &cap.outcome {
            Outcome::Halted(s) if s == "ok" => {}
            Outcome::Interrupted => bail!("interrupted"),
            // Why it stopped says more than what it did not finish.
            o @ Outcome::GaveUp(_) => r.error = Some(format!("the run ended: {o}")),
            o => {
                r.error.get_or_insert_with(|| format!("the run ended: {o}"));
            }
        }
        if let Some(e) = &r.error {
            eprintln!("==> bench path {}: {e}", path.id);
        }
        runs.push((path, r));
    }
    merge_paired(&mut runs);
    write_report(
        Report {
            runs,
            workload,
            emulator: emulator::describe(choice),
        },
        &dir,
    )
}

fn write_report(report: Report, dir: &std::path::Path) -> Result<()> {
    let md = report.markdown();
    fs::write(dir.join("results.md"), &md)?;
    fs::write(dir.join("results.csv"), report.csv())?;
    if let Err(e) = crate::bench_plot::draw(&report, &dir.join("results.png")) {
        eprintln!("==> warning: no plot: {e:#}");
    }
    println!("{md}");
    println!(
        "==> tables: {} (and results.csv, results.png)",
        dir.join("results.md").display()
    );
    let failed: Vec<String> = report
        .runs
        .iter()
        .filter_map(|(p, r)| r.error.as_ref().map(|e| format!("path {}: {e}", p.id)))
        .collect();
    if !failed.is_empty() {
        bail!("paths without figures: {}", failed.join("; "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    const BULK: &str = "[vm0] bench: bulk seed=1 bytes=3000000 ns=2000000 tx_busy=1000000 tx_cycles=2000000 tx_tx_packets=100 tx_rx_packets=50 tx_exits=20 tx_interrupts=5";
    const BULK_RX: &str = "[vm0] bench: bulk-rx seed=1 rx_busy=600000 rx_cycles=2000000 rx_tx_packets=50 rx_rx_packets=100 rx_exits=10 rx_interrupts=5";
    const BULK_EXITS: &str = "[vm0] bench: bulk-exits seed=1 tx_exit_causes=1/2/3/4/5/0/0/0/0/5 rx_exit_causes=10/0/0/0/0/0/0/0/0/0";

    #[test]
    fn config_has_the_path_and_workload() {
        let t = config_text(&PATHS[1], &Workload::smoke(), true);
        assert!(t.contains("size_mib = 1\nmax_buffers = 64"), "{t}");
        assert!(t.contains("vmlink_net.rx_mode=copy"), "{t}");
        assert!(t.contains("bench.sizes=4096 "), "{t}");
        assert_eq!(t.matches("[[vm]]").count(), 2);
        let t = config_text(&PATHS[3], &Workload::full(), false);
        assert!(
            t.contains("bench.sizes=64,1024,4096,16384,65536 bench.reps=200,200,200,20,20 "),
            "{t}"
        );
        assert!(!t.contains("bench.ab="), "{t}");
        // Paired, path 4's boot runs path 3's round trips (bench.ab) and
        // path 3's runs only its bulk transfers.
        let t = config_text(&PATHS[3], &Workload::full(), true);
        assert!(
            t.contains("bench.reps=200,200,200,20,20 bench.ab=8 "),
            "{t}"
        );
        let t = config_text(&PATHS[2], &Workload::full(), true);
        assert!(t.contains("bench.sizes= bench.reps= bench.bulk="), "{t}");
        assert!(!t.contains("bench.ab="), "{t}");
        let ids = |v: &[u8]| -> Vec<&Path> { PATHS.iter().filter(|p| v.contains(&p.id)).collect() };
        assert!(paired(&ids(&[1, 2, 3, 4, 5])));
        assert!(!paired(&ids(&[2, 4])));
        assert!(!paired(&ids(&[3])));
    }

    #[test]
    fn options_choose_paths_sizes_and_guest_args() {
        let full = Options::default();
        assert_eq!(full.tag(), "");
        assert_eq!(full.selected().unwrap().len(), PATHS.len());
        let o = Options {
            paths: vec![4, 2],
            bulk_only: true,
            guest_args: " nohz=off ".into(),
            ..Default::default()
        };
        assert_eq!(o.tag(), "-partial");
        let ids: Vec<u8> = o.selected().unwrap().iter().map(|p| p.id).collect();
        assert_eq!(ids, [2, 4], "in PATHS order");
        let w = o.workload().unwrap();
        assert!(w.sizes.is_empty());
        let t = config_text(&PATHS[3], &w, false);
        assert!(t.contains("bench.sizes= "), "{t}");
        assert!(t.contains(" nohz=off\""), "{t}");
        let smoke = Options {
            smoke: true,
            sizes: Some(vec![64]),
            ..Default::default()
        };
        assert_eq!(smoke.tag(), "-smoke");
        assert_eq!(smoke.workload().unwrap().sizes, [64]);
    }

    #[test]
    fn options_refuse_what_cannot_run() {
        let e = |o: Options| format!("{:#}", o.selected().and(o.workload()).unwrap_err());
        assert!(e(Options {
            paths: vec![9],
            ..Default::default()
        })
        .contains("no path 9"));
        assert!(e(Options {
            sizes: Some(vec![0]),
            ..Default::default()
        })
        .contains("--sizes"));
        for bad in ["a\"b", "x\\y", "p\nq"] {
            let msg = e(Options {
                guest_args: bad.into(),
                ..Default::default()
            });
            assert!(msg.contains("--guest-args"), "{bad}: {msg}");
        }
    }

    #[test]
    fn parses_what_the_guests_print() {
        let r = parse_run(&lines(&[
            "[vm0] bench: copy size=1500 reps=200 cycles=300/310/400",
            "[vm0] bench: rr proto=udp size=4096 reps=1 cycles=10/20/30 ns=1/2/3",
            "[vm1] bench: sink ok rx_busy=1",
            BULK,
            BULK_RX,
            BULK_EXITS,
            &BULK
                .replace("seed=1", "seed=1 zc=1")
                .replace("tx_cycles=2000000", "tx_cycles=1000000"),
            BULK_RX,
            "[vm0] bench: bulk-zc seed=1 zc_sends=40 zc_copied=2",
            "[vm0] bench: end",
        ]));
        assert_eq!(r.error, None);
        assert_eq!(r.bulk.len(), 2);
        let zc = bulk_figures(&bulk_reps(&r.bulk, Send::Zerocopy));
        assert_eq!(zc.bytes_per_kcycle.unwrap().median, 3000.0);
        assert_eq!((zc.zc_sends, zc.zc_copied), (40, 2));
        let r = PathRun {
            bulk: bulk_reps(&r.bulk, Send::Copy),
            ..r
        };
        assert_eq!(r.rr[&("udp".to_string(), 4096)].0.median, 20.0);
        assert_eq!(r.copy_1500.unwrap().median, 310.0);
        let b = bulk_figures(&r.bulk);
        assert_eq!(b.bytes_per_kcycle.unwrap().median, 1500.0);
        assert_eq!(b.mbps.unwrap().median, 1500.0);
        assert_eq!(b.tx_cycles_per_packet.unwrap().median, 10000.0);
        assert_eq!(b.rx_cycles_per_packet.unwrap().median, 6000.0);
        assert_eq!(b.rx_cycles_per_mtu.unwrap().median, 300.0);
        assert_eq!(b.exits_per_packet.unwrap().median, 0.3);
        assert_eq!(b.exits_per_mtu.unwrap().median, 0.015);
        let causes: Vec<f64> = b
            .exit_causes_per_packet
            .iter()
            .map(|c| c.unwrap().median)
            .collect();
        assert_eq!(
            causes,
            [0.11, 0.02, 0.03, 0.04, 0.05, 0.0, 0.0, 0.0, 0.0, 0.05]
        );
        // The zero-copy transfer had no exits line: no causes.
        assert!(zc.exit_causes_per_packet.iter().all(Option::is_none));
    }

    /// Path 4's boot with path 3's round trips (`bench-rr-ab`).
    fn paired_runs(p_udp: f64, p_tcp: f64) -> Vec<(&'static Path, PathRun)> {
        let p4 = parse_run(&lines(&[
            "[vm0] bench: rr proto=udp size=64 reps=200 rx=copy cycles=90/100/200 ns=1/2/3",
            "[vm0] bench: rr proto=udp size=64 reps=200 rx=zerocopy cycles=91/101/190 ns=1/2/3",
            &format!("[vm0] bench: rr-ab proto=udp size=64 reps=200 blocks=4 p_slower={p_udp}"),
            "[vm0] bench: rr proto=tcp-zc size=4096 reps=200 rx=copy cycles=900/1000/2000 ns=1/2/3 mapped=0",
            "[vm0] bench: rr proto=tcp-zc size=4096 reps=200 rx=zerocopy cycles=500/600/700 ns=1/2/3 mapped=4096",
            &format!("[vm0] bench: rr-ab proto=tcp-zc size=4096 reps=200 blocks=4 p_slower={p_tcp}"),
            "[vm0] bench: end",
        ]));
        let p3 = parse_run(&lines(&[BULK, BULK_RX, "[vm0] bench: end"]));
        let mut runs = vec![(&PATHS[2], p3), (&PATHS[3], p4)];
        merge_paired(&mut runs);
        runs
    }

    #[test]
    fn path_3s_round_trips_come_from_path_4s_boot() {
        let runs = paired_runs(0.3, 1.0);
        let (r3, r4) = (&runs[0].1, &runs[1].1);
        assert_eq!(r3.error, None);
        assert_eq!(r3.rr[&("udp".to_string(), 64)].0.median, 100.0);
        assert_eq!(r4.rr[&("udp".to_string(), 64)].0.median, 101.0);
        assert_eq!(r3.rr_mapped[&("tcp-zc".to_string(), 4096)], 0);
        assert_eq!(r4.rr_mapped[&("tcp-zc".to_string(), 4096)], 4096);
        assert_eq!(r3.bulk.len(), 1, "path 3 keeps its own bulk transfers");
        assert_eq!(r4.ab[&("tcp-zc".to_string(), 4096)], 1.0);
        // Path 4's boot failed: path 3 has no round trips to show.
        let mut p4 = parse_run(&lines(&[
            "[vm0] bench: rr proto=udp size=64 reps=1 rx=copy cycles=1/1/1 ns=1/1/1",
        ]));
        assert!(p4.error.is_some());
        p4.rr_copy.clear();
        let mut runs = vec![(&PATHS[2], PathRun::default()), (&PATHS[3], p4)];
        merge_paired(&mut runs);
        assert!(runs[0]
            .1
            .error
            .as_deref()
            .unwrap()
            .contains("path 4's boot, which failed"));
    }

    #[test]
    fn never_slower_is_judged_by_the_same_boot_test() {
        let report = |p_udp, p_tcp| Report {
            runs: paired_runs(p_udp, p_tcp),
            workload: Workload::smoke(),
            emulator: "test".into(),
        };
        let bar = |r: &Report| {
            r.bars()
                .into_iter()
                .find(|(b, _)| b.contains("never slower than path 3"))
                .unwrap()
        };
        // UDP 64's median is 1% above path 3's, but within chance.
        let (text, verdict) = bar(&report(0.3, 1.0));
        assert_eq!(verdict, "MET", "{text}");
        assert!(text.contains("p < 0.05 / 2 comparisons"), "{text}");
        assert!(text.contains("within chance at udp 64"), "{text}");
        // Below 0.05 / 2: slower.
        let (text, verdict) = bar(&report(0.02, 1.0));
        assert_eq!(verdict, "NOT MET", "{text}");
        assert!(text.ends_with(": slower at udp 64 (p = 2.00e-2)"), "{text}");
        let md = report(0.3, 1.0).markdown();
        assert!(md.contains("| udp | 64 | 1.01 | 3.00e-1 |"), "{md}");
        assert!(
            md.contains("| tcp-zc | 4096 | 3 large-copy | 1000 (900–2000)"),
            "{md}"
        );
    }

    #[test]
    fn errors_and_unfinished_runs_void_a_path() {
        let r = parse_run(&lines(&[
            "[vm1] bench: ERROR: bench-serve: bind",
            "[vm0] bench: end",
        ]));
        assert!(r.error.unwrap().contains("vm1] ERROR"));
        let r = parse_run(&lines(&[
            "[vm0] bench: rr proto=udp size=1 reps=1 cycles=1/1/1 ns=1/1/1",
        ]));
        assert!(r.error.unwrap().contains("did not finish"));
    }

    #[test]
    fn bars_compare_path_4_with_2_and_3() {
        let run = |rr16: f64, tput_cycles: f64| {
            let mut r = parse_run(&lines(&[
                &format!("[vm0] bench: rr proto=tcp size=16384 reps=1 cycles={rr16}/{rr16}/{rr16} ns=1/1/1"),
                &BULK.replace("tx_cycles=2000000", &format!("tx_cycles={tput_cycles}")),
                BULK_RX,
                BULK_EXITS,
                "[vm0] bench: copy size=1500 reps=1 cycles=100/100/100",
                "[vm0] bench: end",
            ]));
            r.error = None;
            r
        };
        let report = Report {
            runs: vec![
                (&PATHS[1], run(1000.0, 2_000_000.0)),
                (&PATHS[2], run(500.0, 1_000_000.0)),
                (&PATHS[3], run(500.0, 1_000_000.0)),
            ],
            workload: Workload::smoke(),
            emulator: "test".into(),
        };
        let bars = report.bars();
        let find = |t: &str| bars.iter().find(|(b, _)| b.contains(t)).unwrap().1;
        assert_eq!(find("tcp round trip at 16384"), "MET");
        assert_eq!(find("udp round trip at 16384"), "not measured");
        assert_eq!(find("throughput at least 45% higher (write"), "MET");
        assert_eq!(
            find("throughput at least 45% higher (MSG_ZEROCOPY"),
            "not measured"
        );
        assert_eq!(find("never slower than path 3"), "MET");
        assert_eq!(find("0.1 VM exits"), "NOT MET");
        let md = report.markdown();
        assert!(
            md.contains("| tcp | 16384 | 4 large-zerocopy | 500 (500–500)"),
            "{md}"
        );
        assert!(report
            .csv()
            .contains("4,large-zerocopy,rr,tcp,16384,cycles,500,500,500"));
        assert!(
            md.contains("| path | send | hlt | host_interrupt | timer | tsc_deadline |"),
            "{md}"
        );
        assert!(
            md.contains("| 4 large-zerocopy | write | 0.110 | 0.020 | 0.030 | 0.040 | 0.050 | 0.000 | 0.000 | 0.000 | 0.000 | 0.050 | 0.300 |"),
            "{md}"
        );
        let csv = report.csv();
        assert!(
            csv.contains("4,large-zerocopy,bulk,tcp,1048576,exits_hlt_per_packet,0.11,0.11,0.11"),
            "{csv}"
        );
    }

    #[test]
    fn zero_copy_socket_modes_are_held_to_path_2s_fastest_tcp_mode() {
        let run = |rows: &[(&str, f64)]| {
            let mut l: Vec<String> = rows
                .iter()
                .map(|(proto, c)| {
                    // Only the mapped modes say how much they mapped.
                    let mapped = if *proto == "tcp" { "" } else { " mapped=4096" };
                    format!("[vm0] bench: rr proto={proto} size=65536 reps=1 cycles={c}/{c}/{c} ns=1/1/1{mapped}")
                })
                .collect();
            l.push("[vm0] bench: end".into());
            let mut r = parse_run(&l);
            r.error = None;
            r
        };
        let report = |p4: f64| Report {
            runs: vec![
                (
                    &PATHS[1],
                    run(&[("tcp", 1000.0), ("tcp-mmap", 1100.0), ("tcp-zc", 980.0)]),
                ),
                (&PATHS[3], run(&[("tcp", 900.0), ("tcp-mmap", p4)])),
            ],
            workload: Workload::smoke(),
            emulator: "test".into(),
        };
        let verdict = |p4| {
            let bars = report(p4).bars();
            bars.iter()
                .find(|(b, _)| b.contains("tcp-mmap round trip at 65536"))
                .unwrap()
                .1
        };
        assert_eq!(verdict(580.0), "MET");
        // 0.59 of path 2's tcp, but 0.6 of its fastest mode (tcp-zc).
        assert_eq!(verdict(590.0), "NOT MET");
        assert_eq!(verdict(650.0), "NOT MET");
        let md = report(590.0).markdown();
        assert!(
            md.contains("| tcp-mmap | 65536 | 4 large-zerocopy | 590"),
            "{md}"
        );
        assert!(
            md.contains("path 2: tcp-mmap 4096 of 65536, tcp-zc 4096 of 65536; path 4: tcp-mmap 4096 of 65536"),
            "{md}"
        );
    }

    #[test]
    fn mapped_bulk_receive_is_held_to_path_2s_best_mode() {
        let run = |modes: &[(&str, u32)]| {
            let mut l = vec!["[vm0] bench: copy size=1500 reps=1 cycles=100/100/100".to_string()];
            for (mode, rx_busy) in modes {
                l.push(BULK.replace("seed=1", &format!("seed=1 {mode}")));
                l.push(BULK_RX.replace("rx_busy=600000", &format!("rx_busy={rx_busy}")));
            }
            l.push("[vm0] bench: end".into());
            let mut r = parse_run(&l);
            r.error = None;
            r
        };
        // rx cycles per 1500 B = rx_busy × 1500 / 3000000.
        let report = |p4: u32| Report {
            runs: vec![
                (
                    &PATHS[1],
                    run(&[
                        ("zc=0", 600_000),
                        ("zc=1 mmap=0", 500_000),
                        ("zc=1 mmap=1", 700_000),
                    ]),
                ),
                (&PATHS[3], run(&[("zc=1 mmap=1", p4)])),
            ],
            workload: Workload::smoke(),
            emulator: "test".into(),
        };
        let verdict = |p4| {
            report(p4)
                .bars()
                .into_iter()
                .find(|(b, _)| b.contains("copy (100 cycles, `rep movsb` as the guest kernel copies; MSG_ZEROCOPY, mapped receive"))
                .unwrap()
        };
        let (bar, v) = verdict(300_000);
        assert_eq!(v, "MET", "{bar}");
        assert!(bar.contains("path 2's best mode 250 → path 4 150"), "{bar}");
        // 180 saves 170 against path 2's mapped-receive run, 70 against its best.
        assert_eq!(verdict(360_000).1, "NOT MET");
        let md = report(300_000).markdown();
        assert!(
            md.contains("| 4 large-zerocopy | MSG_ZEROCOPY, mapped receive |"),
            "{md}"
        );
    }

    #[test]
    fn bulk_only_runs_do_not_pass_round_trip_bars() {
        let run = || {
            let mut r = parse_run(&lines(&[BULK, BULK_RX, "[vm0] bench: end"]));
            r.error = None;
            r
        };
        let report = Report {
            runs: vec![(&PATHS[2], run()), (&PATHS[3], run())],
            workload: Options {
                paths: vec![3, 4],
                bulk_only: true,
                guest_args: "idle=poll".into(),
                ..Default::default()
            }
            .workload()
            .unwrap(),
            emulator: "test".into(),
        };
        let bars = report.bars();
        let find = |t: &str| bars.iter().find(|(b, _)| b.contains(t)).unwrap().1;
        assert_eq!(find("never slower than path 3"), "not measured");
        assert_eq!(find("tcp round trip at 65536"), "not measured");
        let md = report.markdown();
        assert!(md.contains("booted with `idle=poll`"));
        assert!(!md.contains("Round-trip latency"), "no empty table: {md}");
        let rr_only = Options {
            paths: vec![4],
            rr_only: true,
            ..Default::default()
        };
        assert!(rr_only.partial());
        let w = rr_only.workload().unwrap();
        assert_eq!((w.bulk_reps, w.sizes.len()), (0, 5));
        let report = Report {
            runs: vec![(&PATHS[3], run())],
            workload: w,
            emulator: "test".into(),
        };
        assert!(!report.markdown().contains("Bulk TCP"), "no bulk section");
    }
}
