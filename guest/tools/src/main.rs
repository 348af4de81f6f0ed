//! `vmlink-guest`: a static program in every guest's initramfs.
//!
//! `vmlink-guest info` asks the hypervisor (CPUID leaves 0x40000000 and
//! 0x40000001) where this VM runs, so tests can assert on what the guest
//! itself learned rather than on what the hypervisor logged.

mod placement;
mod stream;
mod udp;

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
        _ => usage(),
    }
}

fn num_arg(args: &[String], i: usize) -> Option<u64> {
    args.get(i).and_then(|a| a.parse().ok())
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: vmlink-guest info | gen BYTES SEED | check BYTES SEED \
         | udp-send ADDR:PORT SIZE COUNT | udp-recv PORT SIZE COUNT"
    );
    ExitCode::from(2)
}
