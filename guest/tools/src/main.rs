//! `vmlink-guest`: a static program in every guest's initramfs.
//!
//! `vmlink-guest info` asks the hypervisor (CPUID leaves 0x40000000 and
//! 0x40000001) where this VM runs, so tests can assert on what the guest
//! itself learned rather than on what the hypervisor logged.

mod placement;

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
        _ => {
            eprintln!("usage: vmlink-guest info");
            ExitCode::from(2)
        }
    }
}
