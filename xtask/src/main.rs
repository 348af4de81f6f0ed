//! `cargo xtask`: builds the hypervisor image and the guest payloads, boots
//! them in an emulator and runs the test scenarios.

mod bench;
mod bench_plot;
mod deps;
mod emulator;
mod guest;
mod hv;
mod iso;
mod partition;
mod scenario;
mod serial;
mod template;
mod util;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Build, run and test vmlink")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args, Clone, Default)]
pub struct BuildOpts {
    /// Extra files for the guests' initramfs: the folder's tree is copied over
    /// the root of the initramfs.
    #[arg(long)]
    pub overlay: Option<PathBuf>,
    /// Partition configuration (default: config/default.toml).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install missing prerequisites (also done by build, run and test).
    Setup,
    /// Build the hypervisor, the guest payloads and the boot ISO.
    Build {
        #[command(flatten)]
        build: BuildOpts,
    },
    /// Build everything and boot it in the best emulator available.
    Run {
        #[command(flatten)]
        build: BuildOpts,
        /// auto, bochs, qemu-kvm or qemu-tcg.
        #[arg(long, default_value = "auto")]
        emulator: emulator::Choice,
        /// Stop the emulator after this many seconds.
        #[arg(long)]
        timeout: Option<u64>,
        /// Non-interactive: no console input, exit status tells the outcome.
        #[arg(long)]
        batch: bool,
        /// Number of emulated CPUs.
        #[arg(long, default_value_t = 2)]
        cpus: u32,
    },
    /// The channel benchmark: every path of the comparison in one run,
    /// tables under target/bench/.
    Bench {
        /// auto, bochs, qemu-kvm or qemu-tcg.
        #[arg(long, default_value = "auto")]
        emulator: emulator::Choice,
        #[command(flatten)]
        opts: bench::Options,
    },
    /// Run the host unit tests and the emulator scenarios.
    Test {
        /// Only run the scenarios whose name contains this text.
        #[arg(long)]
        filter: Option<String>,
        /// Host unit tests only.
        #[arg(long)]
        unit_only: bool,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Setup => deps::ensure(),
        Cmd::Build { build } => {
            deps::ensure()?;
            let out = build_all(&build)?;
            let machine = partition::Machine {
                cpus: 2,
                megs: emulator::DEFAULT_MEGS,
            };
            let part = out.partition(&build, machine)?;
            let iso = iso::build_with(&out.hypervisor, &part, iso::HV_CMDLINE)?;
            println!(
                "ISO: {} (for a machine with 2 CPUs and {} MiB)",
                iso.display(),
                machine.megs
            );
            Ok(())
        }
        Cmd::Run {
            build,
            emulator,
            timeout,
            batch,
            cpus,
        } => {
            deps::ensure()?;
            let out = build_all(&build)?;
            let machine = partition::Machine {
                cpus,
                megs: emulator::DEFAULT_MEGS,
            };
            let part = out.partition(&build, machine)?;
            emulator::run_interactive(&out, &part, emulator, cpus, timeout, batch)
        }
        Cmd::Bench { emulator, opts } => {
            deps::ensure()?;
            bench::run(emulator, &opts)
        }
        Cmd::Test { filter, unit_only } => {
            deps::ensure()?;
            scenario::run_all(filter.as_deref(), unit_only)
        }
    }
}

/// Everything a boot needs.
pub struct Artifacts {
    pub hypervisor: PathBuf,
    pub payloads: guest::Payloads,
}

impl Artifacts {
    /// The partition configuration `opts` names, checked for `machine`.
    pub fn partition(
        &self,
        opts: &BuildOpts,
        machine: partition::Machine,
    ) -> Result<partition::Partition> {
        let path = opts
            .config
            .clone()
            .unwrap_or_else(|| partition::DEFAULT.into());
        partition::load(&path, machine, &self.payloads, true)
    }
}

pub fn build_all(opts: &BuildOpts) -> Result<Artifacts> {
    let hypervisor = hv::build()?;
    let payloads = guest::build(opts)?;
    Ok(Artifacts {
        hypervisor,
        payloads,
    })
}
