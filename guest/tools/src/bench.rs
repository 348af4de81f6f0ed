//! The channel benchmarks (issue 6), run inside the guests by `cargo xtask
//! bench`: vm1 serves (`bench-serve`), vm0 measures (`bench-rr`,
//! `bench-bulk`, `bench-copy`) and prints one `bench:` line per figure.
//!
//! Time is the guest's TSC: under Bochs it advances with executed
//! instructions, so cycle counts repeat from run to run. Nanoseconds come
//! from CLOCK_MONOTONIC (the guest's clock, which is emulated time under an
//! emulator). CPU cycles of a transfer are the TSC cycles the CPU was not
//! idle (from /proc/stat), so the figure covers the whole guest (driver,
//! stack, application) and nothing of the other guest.
//!
//! Every byte is checked: a round trip must come back as sent, and the bulk
//! receiver compares what arrived with the sender's pattern. A check that
//! fails prints `bench: ERROR ...` and the run has no figure.

use std::io::{BufRead, BufReader, IoSlice, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use crate::mapped_rx::MappedReceiver;
use crate::paired;
use crate::zerocopy;
use vmlink_abi::hypercall::stat::{cause_names, CAUSES};

pub const UDP_ECHO: u16 = 7000;
pub const TCP_ECHO: u16 = 7001;
pub const BULK_SINK: u16 = 7002;
/// TCP echo whose receiving side maps received pages (`mapped_rx`).
pub const TCP_MAPPED_ECHO: u16 = 7003;
/// TCP echo that also sends with MSG_ZEROCOPY (`zerocopy`).
pub const TCP_ZC_ECHO: u16 = 7004;
/// Bulk sink receiving with TCP_ZEROCOPY_RECEIVE.
pub const BULK_SINK_MAPPED: u16 = 7005;
/// What a mapped receiver maps: the largest message, 64 KiB, twice over.
const MAPPED_AREA: usize = 128 << 10;
/// The largest UDP payload over IPv4.
pub const MAX_UDP: usize = 65507;
/// The bulk pattern repeats with this period: generated once on each side,
/// so checking costs a compare, not a generator run per byte.
const BLOCK: usize = 1 << 20;
const CHUNK: usize = 64 * 1024;

fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no memory effects; the guest kernel leaves CR4.TSD
    // clear, so it is allowed in user mode.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Byte `i` of round trip `rep`'s message (never all zeros).
fn rr_byte(rep: u32, i: usize) -> u8 {
    (rep as usize).wrapping_mul(131).wrapping_add(i * 7 + 1) as u8
}

/// The bulk pattern's first period.
pub fn block(seed: u64) -> Vec<u8> {
    let mut b = vec![0u8; BLOCK];
    crate::stream::Stream::new(seed).fill(&mut b);
    b
}

/// min / median / max of samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spread {
    pub min: u64,
    pub median: u64,
    pub max: u64,
}

impl Spread {
    pub fn of(samples: &[u64]) -> Option<Spread> {
        let mut v = samples.to_vec();
        v.sort_unstable();
        Some(Spread {
            min: *v.first()?,
            median: v[v.len() / 2],
            max: *v.last()?,
        })
    }
}

impl std::fmt::Display for Spread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.min, self.median, self.max)
    }
}

/// What this guest had done at one moment: the counters a transfer's cost
/// is computed from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub tsc: u64,
    pub busy_ticks: u64,
    pub all_ticks: u64,
    pub tx_packets: u64,
    pub rx_packets: u64,
    pub hv: HvCounters,
}

/// What the hypervisor counted for this VM (`ethtool -S`'s `hv_*`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HvCounters {
    pub exits: u64,
    pub interrupts: u64,
    /// TSC cycles this VM's CPU spent halted (absent when the driver does
    /// not report it).
    pub halted: Option<u64>,
    /// Exits by cause, in [`cause_names`] order.
    pub causes: [u64; CAUSES],
}

/// `(busy, all)` CPU ticks from /proc/stat's first line.
pub fn parse_proc_stat(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().next()?;
    let mut f = line.split_whitespace();
    if f.next()? != "cpu" {
        return None;
    }
    let v: Vec<u64> = f.filter_map(|x| x.parse().ok()).collect();
    if v.len() < 5 {
        return None;
    }
    // user nice system idle iowait irq softirq steal (guest time is
    // already inside user).
    let all: u64 = v.iter().take(8).sum();
    let idle = v[3] + v[4];
    Some((all - idle, all))
}

fn read_u64(path: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// This VM's exits, injected interrupts and halted cycles, from the
/// driver's ethtool statistics (which ask the hypervisor with the STATS
/// hypercall, whose own exits are not counted). Read in this process: a
/// process started for it would exit to the hypervisor inside the interval.
fn hv_counters() -> HvCounters {
    let stats = crate::ethtool::stats("vml0").unwrap_or_default();
    HvCounters::from_stats(&stats)
}

impl HvCounters {
    /// From the device's ethtool statistics (the hypervisor's carry an
    /// `hv_` prefix).
    pub fn from_stats(stats: &[(String, u64)]) -> HvCounters {
        let get = |name: &str| {
            let name = format!("hv_{name}");
            stats.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)
        };
        let mut causes = [0; CAUSES];
        for (c, name) in causes.iter_mut().zip(cause_names()) {
            *c = get(name).unwrap_or(0);
        }
        HvCounters {
            exits: get("exits").unwrap_or(0),
            interrupts: get("interrupts").unwrap_or(0),
            halted: get("halted_cycles"),
            causes,
        }
    }
}

/// TSC, CPU ticks and packet counters: cheap (a few file reads).
fn quick_snapshot() -> Snapshot {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let (busy_ticks, all_ticks) = parse_proc_stat(&stat).unwrap_or((0, 0));
    Snapshot {
        tsc: rdtsc(),
        busy_ticks,
        all_ticks,
        tx_packets: read_u64("/sys/class/net/vml0/statistics/tx_packets"),
        rx_packets: read_u64("/sys/class/net/vml0/statistics/rx_packets"),
        hv: HvCounters::default(),
    }
}

/// The snapshot that opens an interval: the hypervisor's counters first,
/// so that reading them is not inside the interval.
pub fn snapshot_before() -> Snapshot {
    let hv = hv_counters();
    Snapshot {
        hv,
        ..quick_snapshot()
    }
}

/// The snapshot that closes an interval: `then` runs between the quick
/// counters and the hypervisor's (to answer a peer without the delay of
/// reading them).
pub fn snapshot_after(then: impl FnOnce()) -> Snapshot {
    let s = quick_snapshot();
    then();
    Snapshot {
        hv: hv_counters(),
        ..s
    }
}

/// The cost of what happened between two snapshots.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub cycles: u64,
    /// Cycles the CPU was busy: the cycles it did not spend halted, as the
    /// hypervisor counts them; without that count, the busy share of
    /// /proc/stat's ticks applied to the TSC cycles (which samples at the
    /// guest's timer tick, a few dozen times in a transfer).
    pub busy: u64,
    pub tx_packets: u64,
    pub rx_packets: u64,
    pub exits: u64,
    pub interrupts: u64,
    /// Exits by cause, in [`cause_names`] order.
    pub causes: [u64; CAUSES],
}

impl Usage {
    pub fn between(a: &Snapshot, b: &Snapshot) -> Usage {
        let cycles = b.tsc.wrapping_sub(a.tsc);
        let all = b.all_ticks.saturating_sub(a.all_ticks);
        let busy_ticks = b.busy_ticks.saturating_sub(a.busy_ticks).min(all);
        // The halted count is read just outside the TSC interval (before
        // its start, after its end), where the guest is reading it and
        // does not halt.
        let busy = match (a.hv.halted, b.hv.halted) {
            (Some(ha), Some(hb)) => cycles.saturating_sub(hb.saturating_sub(ha)),
            _ if all == 0 => cycles,
            _ => (u128::from(cycles) * u128::from(busy_ticks) / u128::from(all)) as u64,
        };
        Usage {
            cycles,
            busy,
            tx_packets: b.tx_packets.saturating_sub(a.tx_packets),
            rx_packets: b.rx_packets.saturating_sub(a.rx_packets),
            // The snapshot's own STATS hypercalls are not counted, and its
            // ioctls do not exit.
            exits: b.hv.exits.saturating_sub(a.hv.exits),
            interrupts: b.hv.interrupts.saturating_sub(a.hv.interrupts),
            causes: core::array::from_fn(|i| b.hv.causes[i].saturating_sub(a.hv.causes[i])),
        }
    }

    /// `busy=.. cycles=.. tx_packets=.. ...`: the print format, without
    /// the exit causes (the console breaks lines at 200 bytes).
    pub fn fields(&self, prefix: &str) -> String {
        format!(
            "{prefix}busy={} {prefix}cycles={} {prefix}tx_packets={} {prefix}rx_packets={} {prefix}exits={} {prefix}interrupts={}",
            self.busy, self.cycles, self.tx_packets, self.rx_packets, self.exits, self.interrupts
        )
    }

    /// `exit_causes=a/b/...`: the exit counts in [`cause_names`] order.
    pub fn cause_field(&self, prefix: &str) -> String {
        let n: Vec<String> = self.causes.iter().map(u64::to_string).collect();
        format!("{prefix}exit_causes={}", n.join("/"))
    }

    /// Everything, as the bulk sink answers the sender.
    pub fn wire(&self, prefix: &str) -> String {
        format!("{} {}", self.fields(prefix), self.cause_field(prefix))
    }

    pub fn parse(text: &str, prefix: &str) -> Option<Usage> {
        let get = |k: &str| -> Option<u64> {
            let key = format!("{prefix}{k}=");
            text.split_whitespace()
                .find_map(|w| w.strip_prefix(key.as_str()))
                .and_then(|v| v.parse().ok())
        };
        Some(Usage {
            busy: get("busy")?,
            cycles: get("cycles")?,
            tx_packets: get("tx_packets")?,
            rx_packets: get("rx_packets")?,
            exits: get("exits")?,
            interrupts: get("interrupts")?,
            causes: {
                let key = format!("{prefix}exit_causes=");
                let list = text
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix(key.as_str()))?;
                let v: Vec<u64> = list
                    .split('/')
                    .map(|n| n.parse().ok())
                    .collect::<Option<_>>()?;
                v.try_into().ok()?
            },
        })
    }
}

/// `bench-serve`: echoes UDP datagrams and TCP messages back, and sinks
/// bulk transfers (checking them and answering with the receiver's cost).
/// Runs until killed.
pub fn serve() -> Result<String, String> {
    let udp = UdpSocket::bind(("0.0.0.0", UDP_ECHO)).map_err(|e| format!("bind udp: {e}"))?;
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        while let Ok((n, from)) = udp.recv_from(&mut buf) {
            let _ = udp.send_to(&buf[..n], from);
        }
    });
    // Echoes take a thread per connection; the mapped bulk sink takes one
    // transfer at a time (the client runs them in turn), so that its cost
    // is this CPU's.
    accept_on(TCP_ECHO, "tcp", |c| {
        std::thread::spawn(move || tcp_echo(c));
    })?;
    accept_on(TCP_MAPPED_ECHO, "tcp-mmap", |c| {
        std::thread::spawn(move || tcp_mapped_echo(c, false));
    })?;
    accept_on(TCP_ZC_ECHO, "tcp-zc", |c| {
        std::thread::spawn(move || tcp_mapped_echo(c, true));
    })?;
    accept_on(BULK_SINK_MAPPED, "bulk-mmap", |c| {
        bulk_sink(c, true);
    })?;
    let mode = UdpSocket::bind(("0.0.0.0", paired::MODE_CONTROL))
        .map_err(|e| format!("bind mode control: {e}"))?;
    std::thread::spawn(move || paired::mode_control(mode));
    let sink = TcpListener::bind(("0.0.0.0", BULK_SINK)).map_err(|e| format!("bind bulk: {e}"))?;
    println!(
        "bench: serving udp {UDP_ECHO}, tcp {TCP_ECHO}, tcp-mmap {TCP_MAPPED_ECHO}, \
         tcp-zc {TCP_ZC_ECHO}, bulk {BULK_SINK}, bulk-mmap {BULK_SINK_MAPPED}, \
         mode {}",
        paired::MODE_CONTROL
    );
    for c in sink.incoming().flatten() {
        if bulk_sink(c, false) == Sink::Stop {
            return Ok("stopped by the peer".into());
        }
    }
    Ok("sink closed".into())
}

/// Listens on `port` and hands each connection to `take`, in a thread of
/// its own.
fn accept_on(port: u16, what: &str, take: fn(TcpStream)) -> Result<(), String> {
    let l = TcpListener::bind(("0.0.0.0", port)).map_err(|e| format!("bind {what}: {e}"))?;
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            take(c);
        }
    });
    Ok(())
}

#[derive(PartialEq, Eq)]
enum Sink {
    Go,
    Stop,
}

/// `bench-stop PEER`: ends the peer's `bench-serve` (a bulk transfer of
/// zero bytes).
pub fn stop(peer: &str) -> Result<String, String> {
    let mut c = TcpStream::connect((peer, BULK_SINK)).map_err(|e| format!("stop {peer}: {e}"))?;
    c.write_all(&[0u8; 16]).map_err(|e| e.to_string())?;
    let mut reply = String::new();
    let _ = BufReader::new(&c).read_line(&mut reply);
    Ok(format!("server on {peer} stopped"))
}

/// The message size a TCP echo connection starts with (4 bytes, little
/// endian); every message on it then has that size and nothing else, as
/// in netperf's TCP_RR. (A length before each message cost a frame of its
/// own per round trip, and made the receiver wake twice when the two
/// frames came apart.)
fn echo_size(c: &TcpStream) -> Option<usize> {
    let mut len = [0u8; 4];
    let mut c = c;
    c.read_exact(&mut len).ok()?;
    Some(u32::from_le_bytes(len) as usize)
}

/// A TCP echo connection: messages of the size it starts with, each sent
/// back as it came.
fn tcp_echo(mut c: TcpStream) {
    let _ = c.set_nodelay(true);
    let Some(size) = echo_size(&c) else {
        return;
    };
    let mut buf = vec![0u8; size];
    while c.read_exact(&mut buf).is_ok() && c.write_all(&buf).is_ok() {}
}

/// `tcp_echo` receiving with TCP_ZEROCOPY_RECEIVE: each message goes back
/// from the pages it arrived in (mapped ones included), with `write` or
/// (`zerocopy`) with MSG_ZEROCOPY. On vmlink's zero-copy path those pages
/// are the sender's channel buffers, so with MSG_ZEROCOPY the only copy
/// left is the driver's into this side's own.
fn tcp_mapped_echo(c: TcpStream, zerocopy: bool) {
    let _ = c.set_nodelay(true);
    let what = if zerocopy { "tcp-zc" } else { "tcp-mmap" };
    let Ok(mut rx) = MappedReceiver::new(&c, MAPPED_AREA) else {
        println!("bench: ERROR {what} echo: cannot map the socket");
        return;
    };
    let mut tx = None;
    if zerocopy {
        match zerocopy::Sender::new(&c) {
            Ok(t) => tx = Some(t),
            Err(e) => {
                println!("bench: ERROR {what} echo: SO_ZEROCOPY: {e}");
                return;
            }
        }
    }
    let Some(size) = echo_size(&c) else {
        return;
    };
    loop {
        // The copy buffer is about to be reused: the stack must be done
        // with what the last zero-copy echo sent from it (its ACK comes
        // with the next request at the latest). Mapped pages need no
        // wait: the send holds references to them, and the next receive
        // maps other pages in their place.
        if let Some(tx) = tx.as_mut().filter(|_| rx.copied_any()) {
            if let Err(e) = tx.finish(Duration::from_secs(20)) {
                println!("bench: ERROR {what} echo: {e}");
                return;
            }
        }
        if rx.recv_exact(size).is_err() {
            break;
        }
        let sent = match tx.as_mut() {
            Some(tx) => tx.send_all(&mut rx.io_slices()),
            None => rx.echo(),
        };
        if sent.is_err() {
            break;
        }
    }
}

/// Compares `data`, which starts at stream offset `at`, with the pattern.
fn matches_pattern(block: &[u8], at: u64, data: &[u8]) -> bool {
    let mut off = (at % BLOCK as u64) as usize;
    let mut rest = data;
    while !rest.is_empty() {
        let k = rest.len().min(BLOCK - off);
        if rest[..k] != block[off..off + k] {
            return false;
        }
        rest = &rest[k..];
        off = 0;
    }
    true
}

/// Receives one bulk transfer, with `read` or (`mapped`) with
/// TCP_ZEROCOPY_RECEIVE, checking every byte.
fn bulk_sink(mut c: TcpStream, mapped: bool) -> Sink {
    let mut head = [0u8; 16];
    if c.read_exact(&mut head).is_err() {
        return Sink::Go;
    }
    let bytes = u64::from_le_bytes(head[..8].try_into().unwrap());
    let seed = u64::from_le_bytes(head[8..].try_into().unwrap());
    if bytes == 0 {
        let _ = c.write_all(b"bye\n");
        return Sink::Stop;
    }
    let pattern = block(seed);
    let mut buf = vec![0u8; CHUNK];
    let mut rx = match mapped {
        true => match MappedReceiver::new(&c, MAPPED_AREA) {
            Ok(rx) => Some(rx),
            Err(e) => {
                let _ = (&c).write_all(format!("err cannot map the socket: {e}\n").as_bytes());
                return Sink::Go;
            }
        },
        false => None,
    };
    let before = snapshot_before();
    // "Go": the sender starts its clock now, with this side's counters set.
    if (&c).write_all(b"g").is_err() {
        return Sink::Go;
    }
    let (mut total, mut bad_at) = (0u64, None);
    loop {
        let got = match rx.as_mut() {
            Some(rx) => rx.recv_some(CHUNK),
            None => (&c).read(&mut buf),
        };
        match got {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let pieces = match rx.as_ref() {
                    Some(rx) => rx.slices(),
                    None => vec![&buf[..n]],
                };
                let mut at = total;
                for p in pieces {
                    if bad_at.is_none() && !matches_pattern(&pattern, at, p) {
                        bad_at = Some(total);
                    }
                    at += p.len() as u64;
                }
                total += n as u64;
            }
        }
    }
    drop(rx);
    // "Done" as soon as the last byte is in: the sender stops its clock.
    let after = snapshot_after(|| {
        let _ = c.write_all(b"d");
    });
    let reply = match bad_at {
        _ if total != bytes => format!("err received {total} of {bytes} bytes\n"),
        Some(at) => format!("err data differs in the chunk at offset {at}\n"),
        None => format!("ok {}\n", Usage::between(&before, &after).wire("rx_")),
    };
    println!("bench: sink {}", reply.trim_end());
    let _ = c.write_all(reply.as_bytes());
    Sink::Go
}

/// `bench-rr udp|tcp|tcp-mmap|tcp-zc PEER SIZE REPS`: REPS round trips of
/// SIZE bytes. `tcp-mmap` receives on both sides with TCP_ZEROCOPY_RECEIVE
/// (`mapped_rx`), copying only what the stack cannot map; `tcp-zc` also
/// sends with MSG_ZEROCOPY (`zerocopy`).
pub fn rr(proto: &str, peer: &str, size: usize, reps: u32) -> Result<String, String> {
    let t = round_trips(proto, peer, size, reps, |_| Ok(()))?;
    t.line(proto, size, reps, None)
}

/// What `reps` round trips measured: one sample each.
pub struct RoundTrips {
    pub cycles: Vec<u64>,
    pub ns: Vec<u64>,
    /// Bytes of each message the stack mapped instead of copying (empty:
    /// the mode does not map).
    pub mapped: Vec<u64>,
}

impl RoundTrips {
    /// The `rr` line of these samples; `rx` names the receive mode they
    /// ran in when a run compares modes.
    pub fn line(
        &self,
        proto: &str,
        size: usize,
        reps: u32,
        rx: Option<&str>,
    ) -> Result<String, String> {
        let (Some(c), Some(n)) = (Spread::of(&self.cycles), Spread::of(&self.ns)) else {
            return Err("no round trips".into());
        };
        Ok(format!(
            "rr proto={proto} size={size} reps={reps}{} cycles={c} ns={n}{}",
            rx.map_or(String::new(), |m| format!(" rx={m}")),
            // How much of what came back the stack mapped, not copied.
            match self.mapped.len() as u64 {
                0 => String::new(),
                n => format!(" mapped={}", self.mapped.iter().sum::<u64>() / n),
            }
        ))
    }
}

/// The round trips of [`rr`], as samples. `before(i)` runs before counted
/// round trip `i`, while the connection is quiet (`bench-rr-ab` switches
/// the receive mode there).
pub fn round_trips(
    proto: &str,
    peer: &str,
    size: usize,
    reps: u32,
    mut before: impl FnMut(usize) -> Result<(), String>,
) -> Result<RoundTrips, String> {
    if size == 0 || (proto == "udp" && size > MAX_UDP) {
        return Err(format!("size {size} out of range for {proto}"));
    }
    let mut msg = vec![0u8; size];
    let mut back = vec![0u8; size];
    let (mut cycles, mut ns, mut mapped) = (Vec::new(), Vec::new(), Vec::new());
    enum Sock<'s> {
        Udp(UdpSocket),
        Tcp(&'s TcpStream),
        Mapped(&'s TcpStream, MappedReceiver<'s>),
        Zc(MappedReceiver<'s>, zerocopy::Sender<'s>),
    }
    let tcp_port = match proto {
        "udp" => None,
        "tcp" => Some(TCP_ECHO),
        "tcp-mmap" => Some(TCP_MAPPED_ECHO),
        "tcp-zc" => Some(TCP_ZC_ECHO),
        _ => return Err(format!("unknown protocol {proto}")),
    };
    let stream = match tcp_port {
        Some(port) => {
            let mut s =
                TcpStream::connect((peer, port)).map_err(|e| format!("{proto} to {peer}: {e}"))?;
            s.set_nodelay(true).map_err(|e| e.to_string())?;
            // The message size, once (`echo_size`).
            s.write_all(&(size as u32).to_le_bytes())
                .map_err(|e| format!("{proto} to {peer}: {e}"))?;
            Some(s)
        }
        None => None,
    };
    let mut sock = match (&stream, proto) {
        (Some(s), "tcp") => Sock::Tcp(s),
        (Some(s), "tcp-mmap") => Sock::Mapped(
            s,
            MappedReceiver::new(s, MAPPED_AREA).map_err(|e| format!("map the socket: {e}"))?,
        ),
        (Some(s), _) => Sock::Zc(
            MappedReceiver::new(s, MAPPED_AREA).map_err(|e| format!("map the socket: {e}"))?,
            zerocopy::Sender::new(s).map_err(|e| format!("SO_ZEROCOPY: {e}"))?,
        ),
        (None, _) => {
            let s = UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
            s.connect((peer, UDP_ECHO))
                .map_err(|e| format!("udp to {peer}: {e}"))?;
            // Guest time: generous, a lost datagram is an error anyway.
            s.set_read_timeout(Some(Duration::from_secs(20)))
                .map_err(|e| e.to_string())?;
            Sock::Udp(s)
        }
    };
    // Two warm-up round trips (ARP, TCP window), not counted.
    for rep in 0..reps + 2 {
        if rep >= 2 {
            before(rep as usize - 2)?;
        }
        for (i, b) in msg.iter_mut().enumerate() {
            *b = rr_byte(rep, i);
        }
        let (t0, c0) = (Instant::now(), rdtsc());
        match &mut sock {
            Sock::Udp(s) => {
                s.send(&msg).map_err(|e| format!("send: {e}"))?;
                let n = s
                    .recv(&mut back)
                    .map_err(|e| format!("round trip {rep}: datagram lost ({e})"))?;
                if n != size {
                    return Err(format!("round trip {rep}: {n} bytes back of {size}"));
                }
            }
            Sock::Tcp(s) => {
                s.write_all(&msg)
                    .and_then(|_| s.read_exact(&mut back))
                    .map_err(|e| format!("round trip {rep}: {e}"))?;
            }
            Sock::Mapped(s, rx) => {
                s.write_all(&msg)
                    .and_then(|_| rx.recv_exact(size))
                    .map_err(|e| format!("round trip {rep}: {e}"))?;
            }
            Sock::Zc(rx, tx) => {
                // Completions are read inside the round trip: they are
                // part of what sending this way costs.
                tx.send_all(&mut [IoSlice::new(&msg)])
                    .and_then(|_| rx.recv_exact(size))
                    .and_then(|_| tx.reap_queued())
                    .map_err(|e| format!("round trip {rep}: {e}"))?;
            }
        }
        let (c1, t1) = (rdtsc(), t0.elapsed());
        if let Sock::Zc(_, tx) = &mut sock {
            // `msg` changes for the next round trip.
            tx.finish(Duration::from_secs(20))
                .map_err(|e| format!("round trip {rep}: {e}"))?;
        }
        let same = match &sock {
            Sock::Mapped(_, rx) | Sock::Zc(rx, _) => {
                if rep >= 2 {
                    mapped.push(rx.mapped() as u64);
                }
                rx.equals(&msg)
            }
            _ => back == msg,
        };
        if !same {
            return Err(format!("round trip {rep}: data came back changed"));
        }
        if rep >= 2 {
            cycles.push(c1 - c0);
            ns.push(t1.as_nanos() as u64);
        }
    }
    Ok(RoundTrips { cycles, ns, mapped })
}

/// How the bulk sender hands its bytes to the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendMode {
    /// Plain `write`: the stack copies into socket buffers, and the driver
    /// copies those into the channel: two copies per byte.
    Copy,
    /// MSG_ZEROCOPY: the stack references the sender's pages and the
    /// driver's copy into the channel is the only one.
    Zerocopy,
    /// MSG_ZEROCOPY to a sink that receives with TCP_ZEROCOPY_RECEIVE: on
    /// vmlink's zero-copy path the driver's copy is the only one of the
    /// whole transfer.
    ZerocopyMapped,
}

impl SendMode {
    pub fn parse(s: &str) -> Option<SendMode> {
        match s {
            "copy" => Some(SendMode::Copy),
            "zerocopy" => Some(SendMode::Zerocopy),
            "zerocopy-mmap" => Some(SendMode::ZerocopyMapped),
            _ => None,
        }
    }
}

/// `bench-bulk PEER BYTES SEED [copy|zerocopy]`: one TCP transfer of BYTES
/// to the sink; prints both sides' costs. A zero-copy sender whose socket
/// refuses SO_ZEROCOPY says so and sends with copies (`zc=0` in its line).
pub fn bulk(peer: &str, bytes: u64, seed: u64, mode: SendMode) -> Result<String, String> {
    // Never freed or changed: zero-copy sends may still reference its pages
    // after `send` returns.
    let pattern: &'static [u8] = Box::leak(block(seed).into_boxed_slice());
    let (port, mapped) = match mode {
        SendMode::ZerocopyMapped => (BULK_SINK_MAPPED, true),
        _ => (BULK_SINK, false),
    };
    let c = TcpStream::connect((peer, port)).map_err(|e| format!("bulk to {peer}: {e}"))?;
    let mut zc = match mode {
        SendMode::Copy => None,
        SendMode::Zerocopy | SendMode::ZerocopyMapped => match crate::zerocopy::Sender::new(&c) {
            Ok(z) => Some(z),
            Err(e) => {
                println!("bench: note: SO_ZEROCOPY refused ({e}); sending with copies");
                None
            }
        },
    };
    let mut head = [0u8; 16];
    head[..8].copy_from_slice(&bytes.to_le_bytes());
    head[8..].copy_from_slice(&seed.to_le_bytes());
    (&c).write_all(&head).map_err(|e| e.to_string())?;
    let mut flag = [0u8; 1];
    (&c).read_exact(&mut flag)
        .map_err(|e| format!("no go from the sink: {e}"))?;
    if flag[0] != b'g' {
        let mut why = String::new();
        let _ = BufReader::new(&c).read_line(&mut why);
        return Err(format!(
            "the sink refused: {}{}",
            flag[0] as char,
            why.trim_end()
        ));
    }
    let before = snapshot_before();
    let t0 = Instant::now();
    let mut sent = 0u64;
    while sent < bytes {
        let off = (sent % BLOCK as u64) as usize;
        let k = ((bytes - sent) as usize).min(CHUNK).min(BLOCK - off);
        let chunk = &pattern[off..off + k];
        sent += match zc.as_mut() {
            Some(z) => z.send(chunk),
            None => (&c).write(chunk),
        }
        .map_err(|e| format!("send at {sent}: {e}"))? as u64;
    }
    c.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
    // The interval ends when the receiver has every byte.
    let done = (&c).read_exact(&mut flag);
    let ns = t0.elapsed().as_nanos();
    let after = snapshot_after(|| {});
    done.map_err(|e| format!("no done from the sink: {e}"))?;
    let mut reply = String::new();
    BufReader::new(&c)
        .read_line(&mut reply)
        .map_err(|e| format!("no answer from the sink: {e}"))?;
    // Every zero-copy send must have completed: the receiver has all the
    // bytes, so the stack is done with the pages.
    let zc_line = match zc.as_mut() {
        Some(z) => {
            z.finish(Duration::from_secs(5))
                .map_err(|e| e.to_string())?;
            format!(
                "\nbench: bulk-zc seed={seed} zc_sends={} zc_copied={}",
                z.sends, z.copied
            )
        }
        None => String::new(),
    };
    let tx = Usage::between(&before, &after);
    match reply.trim_end().strip_prefix("ok ") {
        // Several lines: the hypervisor's console breaks lines at 200 bytes.
        Some(rx) => match Usage::parse(rx, "rx_") {
            Some(rx) => Ok(format!(
                "bulk seed={seed} zc={} mmap={} bytes={bytes} ns={ns} {}\nbench: bulk-rx seed={seed} {}\nbench: bulk-exits seed={seed} {} {}{zc_line}",
                zc.is_some() as u8,
                mapped as u8,
                tx.fields("tx_"),
                rx.fields("rx_"),
                tx.cause_field("tx_"),
                rx.cause_field("rx_"),
            )),
            None => Err(format!("the sink's answer makes no sense: {rx}")),
        },
        _ => Err(format!("receiver: {}", reply.trim_end())),
    }
}

/// Copies `src` into `dst` the way the guest kernel's `memcpy` does on a
/// CPU with ERMS (Linux 6.1 picks `memcpy_erms`, one `rep movsb`). Under
/// Bochs that instruction costs about a cycle per byte, many times what the
/// vector loop of user-space `memcpy` costs for small sizes, so the
/// yardstick has to be the kernel's way.
fn rep_movsb(dst: &mut [u8], src: &[u8]) {
    let n = dst.len().min(src.len());
    // SAFETY: `dst` and `src` are valid for `n` bytes and do not overlap
    // (a shared and a mutable borrow); the direction flag is clear on entry
    // to Rust code (System V ABI), so `rep movsb` copies exactly `n` bytes
    // upward from rsi to rdi and touches nothing else.
    unsafe {
        core::arch::asm!(
            "rep movsb",
            inout("rcx") n => _,
            inout("rdi") dst.as_mut_ptr() => _,
            inout("rsi") src.as_ptr() => _,
            options(nostack, preserves_flags)
        );
    }
}

/// `bench-copy SIZE REPS`: what copying SIZE bytes costs here, in cycles:
/// `cycles` the kernel's way (`rep movsb`, the copy the zero-copy receive
/// removes), `memcpy_cycles` user space's.
pub fn copy_cost(size: usize, reps: u32) -> Result<String, String> {
    if size == 0 || size > BLOCK {
        return Err(format!("size {size} out of range"));
    }
    // Sources spread over a block, as frames are.
    let src = block(1);
    let mut dst = vec![0u8; size];
    let (mut kernel, mut libc) = (Vec::new(), Vec::new());
    for rep in 0..reps.max(1) {
        let off = (rep as usize * 4096) % (BLOCK - size + 1);
        let c0 = rdtsc();
        rep_movsb(&mut dst, &src[off..off + size]);
        let c1 = rdtsc();
        std::hint::black_box(&mut dst);
        if dst[..] != src[off..off + size] {
            return Err("rep movsb copied wrongly".into());
        }
        let c2 = rdtsc();
        dst.copy_from_slice(std::hint::black_box(&src[off..off + size]));
        let c3 = rdtsc();
        std::hint::black_box(&mut dst);
        kernel.push(c1 - c0);
        libc.push(c3 - c2);
    }
    let k = Spread::of(&kernel).ok_or("no samples")?;
    let l = Spread::of(&libc).ok_or("no samples")?;
    Ok(format!(
        "copy size={size} reps={reps} cycles={k} memcpy_cycles={l}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_and_proc_stat() {
        assert_eq!(
            Spread::of(&[5, 1, 9, 3]),
            Some(Spread {
                min: 1,
                median: 5,
                max: 9
            })
        );
        assert_eq!(Spread::of(&[]), None);
        let stat = "cpu  10 2 30 400 5 6 7 0 0 0\ncpu0 10 2 30 400 5 6 7 0 0 0\n";
        assert_eq!(parse_proc_stat(stat), Some((55, 460)));
        assert_eq!(parse_proc_stat("intr 5\n"), None);
    }

    #[test]
    fn hypervisor_counters_from_ethtool_statistics() {
        let s = |k: &str, v| (k.to_string(), v);
        let stats = [
            s("tx_packets", 12),
            s("hv_exits", 9),
            s("hv_exits_hlt", 4),
            s("hv_exits_other", 5),
            s("hv_halted_cycles", 77),
        ];
        let hv = HvCounters::from_stats(&stats);
        assert_eq!((hv.exits, hv.interrupts, hv.halted), (9, 0, Some(77)));
        assert_eq!(hv.causes, [4, 0, 0, 0, 0, 0, 0, 0, 0, 5]);
        assert_eq!(HvCounters::from_stats(&stats[..1]).halted, None);
    }

    #[test]
    fn usage_is_the_busy_share_and_round_trips_as_text() {
        let a = Snapshot {
            tsc: 1000,
            busy_ticks: 10,
            all_ticks: 100,
            tx_packets: 5,
            rx_packets: 7,
            hv: HvCounters {
                exits: 100,
                interrupts: 3,
                halted: None,
                causes: [60, 0, 0, 0, 0, 0, 0, 0, 0, 40],
            },
        };
        let b = Snapshot {
            tsc: 11000,
            busy_ticks: 35,
            all_ticks: 200,
            tx_packets: 25,
            rx_packets: 8,
            hv: HvCounters {
                exits: 150,
                interrupts: 13,
                halted: None,
                causes: [90, 0, 0, 0, 0, 0, 0, 0, 0, 60],
            },
        };
        let u = Usage::between(&a, &b);
        assert_eq!((u.cycles, u.busy), (10000, 2500));
        // With the hypervisor's halted count, busy is what was not halted.
        let (mut ah, mut bh) = (a, b);
        ah.hv.halted = Some(40_000);
        bh.hv.halted = Some(46_500);
        assert_eq!(Usage::between(&ah, &bh).busy, 3500);
        bh.hv.halted = Some(90_000);
        assert_eq!(Usage::between(&ah, &bh).busy, 0, "never below zero");
        assert_eq!(
            (u.tx_packets, u.rx_packets, u.exits, u.interrupts),
            (20, 1, 50, 10)
        );
        assert_eq!(u.causes, [30, 0, 0, 0, 0, 0, 0, 0, 0, 20]);
        assert_eq!(u.cause_field("rx_"), "rx_exit_causes=30/0/0/0/0/0/0/0/0/20");
        assert_eq!(Usage::parse(&u.wire("rx_"), "rx_"), Some(u));
        assert_eq!(Usage::parse(&u.wire("rx_"), "tx_"), None);
        assert_eq!(Usage::parse(&u.fields("rx_"), "rx_"), None, "no causes");
    }

    #[test]
    fn pattern_checks_across_block_edges() {
        let b = block(3);
        let mut data = b[BLOCK - 10..].to_vec();
        data.extend_from_slice(&b[..20]);
        assert!(matches_pattern(&b, (BLOCK - 10) as u64, &data));
        assert!(matches_pattern(&b, (3 * BLOCK - 10) as u64, &data));
        data[15] ^= 1;
        assert!(!matches_pattern(&b, (BLOCK - 10) as u64, &data));
    }

    #[test]
    fn over_loopback() {
        let server = std::thread::spawn(serve);
        std::thread::sleep(Duration::from_millis(200));
        let r = rr("udp", "127.0.0.1", 1000, 3).unwrap();
        assert!(
            r.starts_with("rr proto=udp size=1000 reps=3 cycles="),
            "{r}"
        );
        let r = rr("tcp", "127.0.0.1", 70000, 2).unwrap();
        assert!(r.starts_with("rr proto=tcp size=70000"), "{r}");
        // Mapped receive on both ends (over loopback the stack maps
        // nothing: every byte takes the copying fallback).
        let r = rr("tcp-mmap", "127.0.0.1", 70000, 2).unwrap();
        assert!(r.starts_with("rr proto=tcp-mmap size=70000"), "{r}");
        assert!(r.ends_with(" mapped=0"), "{r}");
        let r = rr("tcp-zc", "127.0.0.1", 70000, 2).unwrap();
        assert!(r.starts_with("rr proto=tcp-zc size=70000"), "{r}");
        let r = bulk("127.0.0.1", 3 * BLOCK as u64 + 5, 9, SendMode::Copy).unwrap();
        assert!(
            r.starts_with("bulk seed=9 zc=0 mmap=0 bytes=3145733 "),
            "{r}"
        );
        assert!(r.lines().all(|l| l.len() < 190), "{r}");
        assert!(Usage::parse(&r, "tx_").is_some() && Usage::parse(&r, "rx_").is_some());
        // Every MSG_ZEROCOPY send completes (over loopback the kernel may
        // copy after all; the completions say how many).
        let r = bulk("127.0.0.1", 2 * BLOCK as u64 + 7, 4, SendMode::Zerocopy).unwrap();
        assert!(
            r.starts_with("bulk seed=4 zc=1 mmap=0 bytes=2097159 "),
            "{r}"
        );
        assert!(r.lines().all(|l| l.len() < 190), "{r}");
        let zc = r.lines().last().unwrap();
        let num = |k: &str| -> u32 {
            zc.split_whitespace()
                .find_map(|w| w.strip_prefix(k))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{k} in {zc}"))
        };
        assert!(zc.starts_with("bench: bulk-zc seed=4 "), "{zc}");
        assert!(num("zc_sends=") >= 32, "{zc}");
        assert!(num("zc_copied=") <= num("zc_sends="), "{zc}");
        // The mapped sink checks every byte too.
        let r = bulk(
            "127.0.0.1",
            2 * BLOCK as u64 + 9,
            5,
            SendMode::ZerocopyMapped,
        )
        .unwrap();
        assert!(
            r.starts_with("bulk seed=5 zc=1 mmap=1 bytes=2097161 "),
            "{r}"
        );
        assert!(copy_cost(1500, 10).unwrap().starts_with("copy size=1500"));
        // Mode changes reach the peer, and its refusal comes back named
        // (loopback has no vml0 to switch).
        let mut ctl = paired::Control::connect("127.0.0.1").unwrap();
        let e = ctl.set_both(paired::RxMode::Copy).unwrap_err();
        assert!(e.starts_with("127.0.0.1: vml0 rx-copy copy: "), "{e}");
        stop("127.0.0.1").unwrap();
        assert_eq!(server.join().unwrap().unwrap(), "stopped by the peer");
    }
}
