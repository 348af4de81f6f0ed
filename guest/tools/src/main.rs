//! `vmlink-guest`: a static program in every guest's initramfs.
//!
//! `vmlink-guest info` asks the hypervisor (CPUID leaves 0x40000000 and
//! 0x40000001) where this VM runs, so tests can assert on what the guest
//! itself learned rather than on what the hypervisor logged.

mod bench;
mod ethtool;
mod mapped_rx;
mod paired;
mod placement;
mod stream;
mod udp;
mod zerocopy;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("info") => match placement::query() {
            Some(p) => {
                println!("vmlink-guest: {p}");
                ExitCode::SUCCESS
            }
            None => {
                println!("vmlink-guest: not running on vmlink");
                ExitCode::FAILURE
            }
        },
        Some("gen") => match (num_arg(&args, 1), num_arg(&args, 2)) {
            (Some(bytes), Some(seed)) => {
                let out = std::io::stdout();
                match stream::generate(bytes, seed, &mut out.lock()) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(_) => ExitCode::FAILURE,
                }
            }
            _ => usage(),
        },
        Some("check") => match (num_arg(&args, 1), num_arg(&args, 2)) {
            (Some(bytes), Some(seed)) => {
                match stream::check(bytes, seed, &mut std::io::stdin().lock()) {
                    Ok(m) => {
                        println!("vmlink-guest: check: {m}");
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        println!("vmlink-guest: check: MISMATCH: {e}");
                        ExitCode::FAILURE
                    }
                }
            }
            _ => usage(),
        },
        // The benchmark's reader of the driver's counters, shown as
        // `ethtool -S` shows them, so a guest can compare the two.
        Some("stats") => match args.get(1).map(|d| ethtool::stats(d)) {
            Some(Ok(stats)) => {
                for (name, value) in stats {
                    println!("{name}: {value}");
                }
                ExitCode::SUCCESS
            }
            Some(Err(e)) => {
                println!("vmlink-guest: stats: ERROR: {e}");
                ExitCode::FAILURE
            }
            None => usage(),
        },
        // The driver's receive mode at run time (its `rx-copy` flag).
        Some("rx-mode") => {
            let r = match args.get(1).map(|m| paired::RxMode::parse(m)) {
                None => paired::current().map(|m| m.name().to_string()),
                Some(Some(m)) => paired::set_local(m).map(|()| m.name().to_string()),
                Some(None) => Err("usage: rx-mode [copy|zerocopy]".into()),
            };
            match r {
                Ok(m) => {
                    println!("vmlink-guest: rx-mode: {m}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    println!("vmlink-guest: rx-mode: ERROR: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some(cmd @ ("udp-send" | "udp-recv")) => {
            let num = |i| num_arg(&args, i);
            let r = match (cmd, args.get(1), num(1), num(2), num(3)) {
                ("udp-send", Some(to), _, Some(size), Some(n)) => {
                    udp::send(to, size as usize, n as u32)
                }
                ("udp-recv", _, Some(port), Some(size), Some(n)) => {
                    udp::recv(port as u16, size as usize, n as u32)
                }
                _ => Err("usage: udp-send ADDR:PORT SIZE COUNT | udp-recv PORT SIZE COUNT".into()),
            };
            match r {
                Ok(m) => {
                    println!("vmlink-guest: udp: {m}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    println!("vmlink-guest: udp: ERROR: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some(
            cmd @ ("bench-serve" | "bench-stop" | "bench-rr" | "bench-rr-ab" | "bench-bulk"
            | "bench-copy"),
        ) => {
            let num = |i| num_arg(&args, i);
            let r = match (cmd, args.get(1), args.get(2)) {
                ("bench-serve", _, _) => bench::serve(),
                ("bench-stop", Some(peer), _) => bench::stop(peer),
                ("bench-rr", Some(proto), Some(peer)) => match (num(3), num(4)) {
                    (Some(size), Some(reps)) => bench::rr(proto, peer, size as usize, reps as u32),
                    _ => Err(BENCH_USAGE.into()),
                },
                ("bench-rr-ab", Some(proto), Some(peer)) => match (num(3), num(4), num(5)) {
                    (Some(size), Some(reps), Some(blocks)) => {
                        paired::rr_ab(proto, peer, size as usize, reps as u32, blocks as u32)
                    }
                    _ => Err(BENCH_USAGE.into()),
                },
                ("bench-bulk", Some(peer), _) => match (
                    num(2),
                    num(3),
                    bench::SendMode::parse(args.get(4).map_or("copy", |s| s.as_str())),
                ) {
                    (Some(bytes), Some(seed), Some(mode)) => bench::bulk(peer, bytes, seed, mode),
                    _ => Err(BENCH_USAGE.into()),
                },
                ("bench-copy", _, _) => match (num(1), num(2)) {
                    (Some(size), Some(reps)) => bench::copy_cost(size as usize, reps as u32),
                    _ => Err(BENCH_USAGE.into()),
                },
                _ => Err(BENCH_USAGE.into()),
            };
            match r {
                Ok(m) => {
                    println!("bench: {m}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    println!("bench: ERROR: {cmd}: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        _ => usage(),
    }
}

const BENCH_USAGE: &str =
    "usage: bench-serve | bench-stop PEER | bench-rr udp|tcp|tcp-mmap|tcp-zc PEER SIZE REPS \
    | bench-rr-ab PROTO PEER SIZE REPS BLOCKS \
    | bench-bulk PEER BYTES SEED [copy|zerocopy|zerocopy-mmap] | bench-copy SIZE REPS";

fn num_arg(args: &[String], i: usize) -> Option<u64> {
    args.get(i).and_then(|a| a.parse().ok())
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: vmlink-guest info | gen BYTES SEED | check BYTES SEED \
         | stats DEV | rx-mode [copy|zerocopy] | udp-send ADDR:PORT SIZE COUNT | udp-recv PORT SIZE COUNT | bench-..."
    );
    eprintln!("{BENCH_USAGE}");
    ExitCode::from(2)
}
