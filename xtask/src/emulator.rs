//! Boots an image in Bochs or QEMU and captures the serial console.
//!
//! [`boot`] is the one entry point: it takes a [`Boot`] description, starts
//! the emulator, follows COM1 line by line (echoing it when asked), stops the
//! emulator when the hypervisor's halt line appears, when it exits by itself
//! or on timeout, and returns the console lines and an [`Outcome`].

use crate::iso::{self, BootModule};
use crate::partition::Partition;
use crate::serial::{self, Tail};
use crate::template;
use crate::util::{out_dir, root};
use crate::Artifacts;
use anyhow::{bail, Context, Result};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::{self, File};
use std::io::{IsTerminal, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Choice {
    /// QEMU/KVM when the host has VT-x and /dev/kvm, else Bochs.
    Auto,
    /// Bochs booting the GRUB ISO (VT-x emulated; slow).
    Bochs,
    /// QEMU with KVM (nested VT-x) loading the hypervisor with -kernel.
    QemuKvm,
    /// QEMU with KVM booting the GRUB ISO, like bare metal.
    QemuKvmIso,
    /// QEMU without acceleration: no VT-x, so the hypervisor stops (novmx).
    QemuTcg,
}

/// Bochs' CPU when none is named: the model with the fullest VT-x.
pub const DEFAULT_BOCHS_CPU: &str = "corei7_skylake_x";
/// Instructions per emulated second under Bochs.
pub const BOCHS_IPS: u64 = 200_000_000;
/// Guest memory in MiB when none is named.
pub const DEFAULT_MEGS: u32 = 1024;
/// The guest kernel's command line when QEMU boots it without the
/// hypervisor.
pub const LINUX_APPEND: &str = "console=ttyS0 panic=-1";
/// How long `run --batch` waits when no --timeout is given.
pub const BATCH_TIMEOUT: Duration = Duration::from_secs(900);
/// The CPU QEMU/KVM offers the hypervisor: the host's, minus the KVM
/// paravirtual features a bare-metal hypervisor does not expect.
pub const KVM_CPU_FLAGS: &str =
    "-kvmclock,-kvm-pv-eoi,-kvm-pv-ipi,-kvm-asyncpf,-kvm-asyncpf-int,-kvm-steal-time";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    Tcg,
    Kvm,
}

/// What to boot, and how.
#[derive(Clone, Debug)]
pub enum Kind {
    /// Bochs booting the GRUB rescue ISO from its CD-ROM.
    BochsIso { iso: PathBuf, cpu_model: String },
    /// QEMU loading the hypervisor as a multiboot1 kernel (`-kernel`), the
    /// modules as `-initrd`.
    QemuMultiboot {
        accel: Accel,
        cpu_model: Option<String>,
        hypervisor: PathBuf,
        cmdline: String,
        modules: Vec<BootModule>,
    },
    /// QEMU booting the GRUB rescue ISO (`-cdrom`).
    QemuIso {
        accel: Accel,
        cpu_model: Option<String>,
        iso: PathBuf,
    },
    /// QEMU booting the guest Linux directly, no hypervisor: checks the
    /// guest payloads on their own.
    QemuLinux {
        accel: Accel,
        cpu_model: Option<String>,
        kernel: PathBuf,
        initramfs: PathBuf,
        append: String,
    },
}

/// How the console is shown while the emulator runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Console {
    /// Captured only.
    Quiet,
    /// Captured and echoed line by line, prefixed with the boot's label.
    Stream,
    /// QEMU's serial port and monitor on this terminal (Ctrl-A X quits,
    /// Ctrl-A C switches to the monitor); still captured. Bochs streams.
    Interactive,
}

#[derive(Clone, Debug)]
pub struct Boot {
    /// Names the run's folder (target/vmlink/run/<name>/).
    pub name: String,
    /// Prefix of echoed console lines.
    pub label: String,
    pub kind: Kind,
    pub cpus: u32,
    pub megs: u32,
    pub timeout: Option<Duration>,
    pub console: Console,
    /// Ends the run early when it returns a reason for a console line (a
    /// guest lost mid-run, which its peer would wait for until the
    /// timeout).
    pub give_up: Option<fn(&str) -> Option<String>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The hypervisor printed its halt line with this status word.
    Halted(String),
    /// The emulator exited by itself (`None`: killed by a signal).
    Exited(Option<i32>),
    TimedOut(Duration),
    /// Stopped because this tool got SIGINT/SIGTERM/SIGHUP.
    Interrupted,
    /// Stopped early: `Boot::give_up` named this reason.
    GaveUp(String),
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Halted(s) => write!(f, "halted with status={s}"),
            Outcome::Exited(Some(c)) => {
                write!(f, "emulator exited with code {c}")?;
                match serial::qemu_exit_status(*c) {
                    Some(s) => write!(f, " (exit port status {s}, but no halt line)"),
                    None => Ok(()),
                }
            }
            Outcome::Exited(None) => write!(f, "emulator was killed by a signal"),
            Outcome::TimedOut(d) => write!(f, "timed out after {}s", d.as_secs()),
            Outcome::Interrupted => write!(f, "interrupted"),
            Outcome::GaveUp(why) => write!(f, "stopped early: {why}"),
        }
    }
}

/// What a boot produced.
#[derive(Debug)]
pub struct Capture {
    pub lines: Vec<String>,
    pub outcome: Outcome,
    pub elapsed: Duration,
    /// The raw console output.
    pub serial_log: PathBuf,
    /// The emulator's own logs and output (Bochs' log and terminal, QEMU's
    /// stderr).
    pub emulator_logs: Vec<PathBuf>,
}

impl Capture {
    /// The last `n` console lines.
    pub fn tail(&self, n: usize) -> &[String] {
        &self.lines[self.lines.len().saturating_sub(n)..]
    }

    /// The last `n` lines of each of the emulator's own logs that has any,
    /// for when it stopped unexpectedly.
    pub fn emulator_log_tails(&self, n: usize) -> Vec<(&Path, Vec<String>)> {
        self.emulator_logs
            .iter()
            .filter_map(|p| {
                let text = fs::read(p).ok()?;
                let lines: Vec<String> = text
                    .split(|&b| b == b'\n')
                    .map(serial::clean_line)
                    .filter(|l| !l.trim().is_empty())
                    .collect();
                let tail = lines[lines.len().saturating_sub(n)..].to_vec();
                (!tail.is_empty()).then_some((p.as_path(), tail))
            })
            .collect()
    }
}

/// Picks the emulator for [`Choice::Auto`] from whether /dev/kvm exists and
/// the host's /proc/cpuinfo, with the reason.
pub fn auto_choice(kvm_device: bool, cpuinfo: &str) -> (Choice, &'static str) {
    let vmx = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx"));
    match (vmx, kvm_device) {
        (true, true) => (Choice::QemuKvm, "the host has VT-x and /dev/kvm"),
        (true, false) => (
            Choice::Bochs,
            "the host has VT-x but no /dev/kvm (load kvm_intel with nested=1 for QEMU/KVM)",
        ),
        (false, _) => (
            Choice::Bochs,
            "the host CPU has no VT-x (no vmx flag in /proc/cpuinfo)",
        ),
    }
}

/// `auto` made concrete for this host (and said why).
pub fn resolve(choice: Choice) -> Choice {
    match choice {
        Choice::Auto => {
            let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
            let (c, why) = auto_choice(Path::new("/dev/kvm").exists(), &cpuinfo);
            eprintln!("==> emulator: {c:?}, because {why}");
            c
        }
        c => c,
    }
}

/// The emulator in words, for reports: whether its time is real.
pub fn describe(choice: Choice) -> String {
    match choice {
        Choice::Bochs | Choice::Auto => {
            format!("Bochs ({DEFAULT_BOCHS_CPU}, {BOCHS_IPS} instructions per emulated second)")
        }
        Choice::QemuKvm | Choice::QemuKvmIso => "QEMU/KVM with nested VT-x (real time)".to_string(),
        Choice::QemuTcg => "QEMU TCG (no VT-x)".to_string(),
    }
}

/// How to boot `part` with the chosen (resolved) emulator.
pub fn kind_for(choice: Choice, a: &Artifacts, part: &Partition, hv_cmdline: &str) -> Result<Kind> {
    let modules = crate::partition::modules(part)?;
    let multiboot = |accel| Kind::QemuMultiboot {
        accel,
        cpu_model: None,
        hypervisor: a.hypervisor.clone(),
        cmdline: hv_cmdline.to_string(),
        modules: modules.clone(),
    };
    let iso = || iso::build_with(&a.hypervisor, part, hv_cmdline);
    Ok(match choice {
        Choice::Auto => bail!("resolve the emulator choice first"),
        Choice::Bochs => Kind::BochsIso {
            iso: iso()?,
            cpu_model: DEFAULT_BOCHS_CPU.to_string(),
        },
        Choice::QemuKvm => multiboot(Accel::Kvm),
        Choice::QemuTcg => multiboot(Accel::Tcg),
        Choice::QemuKvmIso => Kind::QemuIso {
            accel: Accel::Kvm,
            cpu_model: None,
            iso: iso()?,
        },
    })
}

/// `cargo xtask run`: boots the built image and shows its console.
pub fn run_interactive(
    a: &Artifacts,
    part: &Partition,
    choice: Choice,
    cpus: u32,
    timeout: Option<u64>,
    batch: bool,
) -> Result<()> {
    let choice = resolve(choice);
    let kind = kind_for(choice, a, part, iso::HV_CMDLINE)?;
    if matches!(kind, Kind::BochsIso { .. }) && !batch {
        eprintln!("==> Bochs' serial console is output only; Ctrl-C stops it");
    }
    let boot = Boot {
        name: "run".to_string(),
        label: kind.program().to_string(),
        kind,
        cpus,
        megs: DEFAULT_MEGS,
        timeout: timeout
            .map(Duration::from_secs)
            .or(batch.then_some(BATCH_TIMEOUT)),
        console: if batch {
            Console::Stream
        } else {
            Console::Interactive
        },
        give_up: None,
    };
    let cap = self::boot(&boot)?;
    eprintln!(
        "==> {} ({:.1}s); console log: {}",
        cap.outcome,
        cap.elapsed.as_secs_f64(),
        cap.serial_log.display()
    );
    match &cap.outcome {
        Outcome::Halted(s) if s == "ok" => Ok(()),
        Outcome::Interrupted => bail!("interrupted"),
        o if batch => {
            if let Outcome::Exited(_) = o {
                for (path, tail) in cap.emulator_log_tails(15) {
                    eprintln!("    {} (last lines):", path.display());
                    for l in tail {
                        eprintln!("    ! {l}");
                    }
                }
            }
            bail!("{o}")
        }
        _ => Ok(()),
    }
}

impl Kind {
    /// The emulator, in words.
    pub fn program(&self) -> &'static str {
        match self {
            Kind::BochsIso { .. } => "bochs",
            Kind::QemuMultiboot {
                accel: Accel::Kvm, ..
            }
            | Kind::QemuIso {
                accel: Accel::Kvm, ..
            }
            | Kind::QemuLinux {
                accel: Accel::Kvm, ..
            } => "qemu-kvm",
            _ => "qemu-tcg",
        }
    }
}

/// The Bochs configuration for one run.
pub struct BochsConfig<'a> {
    pub iso: &'a Path,
    pub cpu_model: &'a str,
    pub cpus: u32,
    pub megs: u32,
    pub ips: u64,
    pub com1: &'a Path,
    pub log: &'a Path,
}

pub fn bochsrc(template: &str, c: &BochsConfig) -> Result<String> {
    for p in [c.iso, c.com1, c.log] {
        let s = p.to_string_lossy();
        if s.contains(['"', ',', ' ', '#', '\n']) {
            bail!("Bochs cannot take the path {s:?}");
        }
    }
    if !c
        .cpu_model
        .chars()
        .all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
    {
        bail!("bad Bochs CPU model {:?}", c.cpu_model);
    }
    if c.cpus == 0 {
        bail!("a machine needs at least one CPU");
    }
    template::fill(
        template,
        &[
            ("ISO", c.iso.display().to_string()),
            ("CPU_MODEL", c.cpu_model.to_string()),
            ("CPUS", c.cpus.to_string()),
            ("MEGS", c.megs.to_string()),
            ("IPS", c.ips.to_string()),
            ("COM1", c.com1.display().to_string()),
            ("LOG", c.log.display().to_string()),
        ],
    )
}

/// QEMU's arguments for `boot`, except where the serial port goes.
pub fn qemu_args(kind: &Kind, cpus: u32, megs: u32) -> Result<Vec<String>> {
    let mut a: Vec<String> = [
        "-machine",
        "pc",
        "-m",
        &megs.to_string(),
        "-smp",
        &cpus.to_string(),
        "-display",
        "none",
        "-no-reboot",
        "-device",
        "isa-debug-exit,iobase=0xf4,iosize=0x04",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (accel, cpu_model) = match kind {
        Kind::BochsIso { .. } => bail!("not a QEMU boot"),
        Kind::QemuMultiboot {
            accel, cpu_model, ..
        }
        | Kind::QemuIso {
            accel, cpu_model, ..
        }
        | Kind::QemuLinux {
            accel, cpu_model, ..
        } => (*accel, cpu_model.as_deref()),
    };
    match accel {
        Accel::Tcg => {
            a.extend(["-accel".into(), "tcg".into()]);
            if let Some(m) = cpu_model {
                a.extend(["-cpu".into(), m.to_string()]);
            }
        }
        Accel::Kvm => {
            let base = cpu_model.unwrap_or("host");
            a.extend([
                "-accel".into(),
                "kvm".into(),
                "-cpu".into(),
                format!("{base},{KVM_CPU_FLAGS}"),
            ]);
        }
    }
    let path = |p: &Path| -> Result<String> {
        let s = p.to_string_lossy().into_owned();
        if s.contains([',', ' ']) {
            bail!("QEMU's -initrd cannot take the path {s:?} (comma or space)");
        }
        Ok(s)
    };
    match kind {
        Kind::BochsIso { .. } => unreachable!(),
        Kind::QemuMultiboot {
            hypervisor,
            cmdline,
            modules,
            ..
        } => {
            a.extend(["-kernel".into(), path(hypervisor)?]);
            if !cmdline.is_empty() {
                a.extend(["-append".into(), cmdline.clone()]);
            }
            if !modules.is_empty() {
                let mut list = Vec::new();
                for m in modules {
                    if m.cmdline.contains(',') {
                        bail!("a module command line cannot hold a comma: {m:?}");
                    }
                    list.push(format!("{} {}", path(&m.source)?, m.cmdline));
                }
                a.extend(["-initrd".into(), list.join(",")]);
            }
        }
        Kind::QemuIso { iso, .. } => {
            a.extend(["-cdrom".into(), path(iso)?, "-boot".into(), "d".into()]);
        }
        Kind::QemuLinux {
            kernel,
            initramfs,
            append,
            ..
        } => {
            a.extend([
                "-kernel".into(),
                path(kernel)?,
                "-initrd".into(),
                path(initramfs)?,
                "-append".into(),
                append.clone(),
            ]);
        }
    }
    Ok(a)
}

/// Quotes `s` for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    let safe = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-+=/.,:@%".contains(c));
    if safe {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Whether SIGINT/SIGTERM/SIGHUP arrived during a boot.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Emulators run in their own sessions and process groups, out of reach
/// of the terminal's Ctrl-C; catch it here so they are stopped, not
/// orphaned.
fn catch_signals() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic.
        unsafe {
            libc::signal(sig, handler);
        }
    }
}

/// Boots `b` and follows its console until it halts, exits or times out.
pub fn boot(b: &Boot) -> Result<Capture> {
    let dir = out_dir().join("run").join(&b.name);
    fs::create_dir_all(&dir)?;
    let com1 = dir.join("com1.log");
    let _ = fs::remove_file(&com1);
    File::create(&com1)?;
    let is_bochs = matches!(b.kind, Kind::BochsIso { .. });
    let interactive = b.console == Console::Interactive && !is_bochs;

    let tty_out = dir.join("tty.out");
    let (mut cmd, emulator_logs) = match &b.kind {
        Kind::BochsIso { iso, cpu_model } => {
            let log = dir.join("bochs.log");
            let _ = fs::remove_file(&log);
            let template_path = root().join("qemu/bochsrc.in");
            let template = fs::read_to_string(&template_path)
                .with_context(|| format!("reading {}", template_path.display()))?;
            let rc = bochsrc(
                &template,
                &BochsConfig {
                    iso,
                    cpu_model,
                    cpus: b.cpus,
                    megs: b.megs,
                    ips: BOCHS_IPS,
                    com1: &com1,
                    log: &log,
                },
            )?;
            let rc_path = dir.join("bochsrc");
            fs::write(&rc_path, rc)?;
            // The debugger compiled into Debian's Bochs stops before the
            // first instruction: continue, and quit should it ever stop.
            let cont = dir.join("continue.rc");
            fs::write(&cont, "c\nq\n")?;
            let inner = [
                "bochs".to_string(),
                "-q".into(),
                "-f".into(),
                rc_path.display().to_string(),
                "-rc".into(),
                cont.display().to_string(),
            ]
            .iter()
            .map(|s| shell_quote(s))
            .collect::<Vec<_>>()
            .join(" ");
            let mut cmd = Command::new("script");
            cmd.args(["-qefc", &inner, "/dev/null"]);
            // The term display needs a terminal type; CI may have none.
            cmd.env("TERM", "xterm").env("SHELL", "/bin/sh");
            (cmd, vec![log, tty_out.clone()])
        }
        kind => {
            let mut args = qemu_args(kind, b.cpus, b.megs)?;
            if interactive {
                args.extend([
                    "-chardev".into(),
                    format!("stdio,id=con,mux=on,logfile={}", com1.display()),
                    "-serial".into(),
                    "chardev:con".into(),
                    "-mon".into(),
                    "chardev=con,mode=readline".into(),
                ]);
            } else {
                args.extend(["-serial".into(), format!("file:{}", com1.display())]);
            }
            let mut cmd = Command::new("qemu-system-x86_64");
            cmd.args(args);
            (cmd, vec![dir.join("emulator.out")])
        }
    };

    if interactive {
        // QEMU owns the terminal: it must stay in the foreground group.
        eprintln!("==> Ctrl-A X quits QEMU, Ctrl-A C switches to its monitor");
    } else {
        let out = File::create(if is_bochs {
            &tty_out
        } else {
            &emulator_logs[0]
        })?;
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .process_group(0);
    }
    let shown = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|s| shell_quote(&s.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ");
    fs::write(dir.join("command"), format!("{shown}\n"))?;
    eprintln!("==> {}: {shown}", b.label);

    catch_signals();
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {:?}", cmd.get_program()))?;
    let mut tail = Tail::new(&com1);
    let mut screen = is_bochs.then(|| ScreenDrain::new(&tty_out));
    let mut lines = Vec::new();
    let mut halted: Option<(String, Instant)> = None;
    let mut exited = None;
    let mut timed_out = false;
    let mut was_interrupted = false;
    let mut gave_up = None;
    let echo = |lines: &[String]| {
        if b.console == Console::Quiet || interactive {
            return;
        }
        let mut out = std::io::stdout().lock();
        let dim = out.is_terminal();
        for l in lines {
            let _ = if dim {
                writeln!(out, "\x1b[2m{} |\x1b[0m {l}", b.label)
            } else {
                writeln!(out, "{} | {l}", b.label)
            };
        }
        let _ = out.flush();
    };
    loop {
        if let Some(d) = screen.as_mut() {
            d.poll();
        }
        let status = child.try_wait()?;
        let new = if status.is_some() {
            tail.finish()
        } else {
            tail.poll()
        };
        echo(&new);
        for l in &new {
            if halted.is_none() {
                if let Some(s) = serial::halt_status(l) {
                    halted = Some((s, Instant::now()));
                }
            }
            if gave_up.is_none() {
                gave_up = b.give_up.and_then(|f| f(l));
            }
        }
        lines.extend(new);
        if let Some(st) = status {
            exited = Some(st.code());
            break;
        }
        if INTERRUPTED.load(Ordering::SeqCst) {
            was_interrupted = true;
            break;
        }
        if gave_up.is_some() && halted.is_none() {
            break;
        }
        if let Some((_, at)) = &halted {
            // Bochs has no exit device: the halt line is the end. QEMU
            // leaves through the exit port right after it.
            if is_bochs || at.elapsed() > Duration::from_secs(3) {
                break;
            }
        }
        if b.timeout.is_some_and(|t| start.elapsed() > t) {
            timed_out = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let elapsed = start.elapsed();
    if exited.is_none() {
        stop(&mut child, !interactive);
        let rest = tail.finish();
        echo(&rest);
        lines.extend(rest);
    }
    let outcome = if was_interrupted {
        Outcome::Interrupted
    } else if let Some(why) = gave_up.filter(|_| halted.is_none()) {
        Outcome::GaveUp(why)
    } else if let Some((s, _)) = halted {
        Outcome::Halted(s)
    } else if let Some(code) = exited {
        Outcome::Exited(code)
    } else {
        debug_assert!(timed_out);
        Outcome::TimedOut(elapsed)
    };
    Ok(Capture {
        lines,
        outcome,
        elapsed,
        serial_log: com1,
        emulator_logs,
    })
}

/// Reads and discards what Bochs's `term` display draws.
///
/// The Bochs in Debian has its debugger built in, so the term display does
/// not draw on Bochs's own terminal: it opens a new pseudo-terminal and
/// says "Bochs connected to screen /dev/pts/N". Nobody reads that screen in
/// a batch run, and once its buffer fills (after tens of seconds of guest
/// time: the VGA cursor is redrawn periodically) Bochs blocks in write()
/// and the whole emulated machine stops. This opens the screen, puts it in
/// raw mode (so nothing is echoed back to Bochs as keystrokes) and drains it
/// on a thread until Bochs closes it.
struct ScreenDrain {
    tty_out: PathBuf,
    started: bool,
}

impl ScreenDrain {
    fn new(tty_out: &Path) -> Self {
        ScreenDrain {
            tty_out: tty_out.to_path_buf(),
            started: false,
        }
    }

    fn poll(&mut self) {
        if self.started {
            return;
        }
        let Ok(text) = fs::read_to_string(&self.tty_out) else {
            return;
        };
        let Some(path) = screen_path(&text) else {
            return;
        };
        self.started = true;
        match drain_screen(&path) {
            Ok(()) => {}
            Err(e) => eprintln!("==> warning: cannot drain Bochs's screen {path}: {e}"),
        }
    }
}

/// The pseudo-terminal the term display announced in Bochs's output.
fn screen_path(tty_out: &str) -> Option<String> {
    let rest = tty_out.split("Bochs connected to screen \"").nth(1)?;
    let path = rest.split('"').next()?;
    path.starts_with("/dev/").then(|| path.to_string())
}

fn drain_screen(path: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    use std::os::unix::io::AsRawFd;
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(path)?;
    // SAFETY: `t` is a plain C struct that tcgetattr fills in; the fd is
    // open for the duration of both calls.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(f.as_raw_fd(), &mut t) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        libc::cfmakeraw(&mut t);
        if libc::tcsetattr(f.as_raw_fd(), libc::TCSANOW, &t) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while matches!(f.read(&mut buf), Ok(n) if n > 0) {}
    });
    Ok(())
}

/// Stops `child` and everything it started (`script` puts Bochs in a
/// session of its own, so the process group alone would miss it): SIGTERM
/// first so QEMU can restore the terminal, SIGKILL after two seconds.
fn stop(child: &mut Child, own_group: bool) {
    let root_pid = child.id() as i32;
    let tree = process_tree(root_pid);
    let signal_all = |sig| {
        for &p in &tree {
            // SAFETY: plain kill(2) on processes this run started.
            unsafe {
                libc::kill(p, sig);
            }
        }
        if own_group {
            // SAFETY: the child leads its own process group.
            unsafe {
                libc::kill(-root_pid, sig);
            }
        }
    };
    signal_all(libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut reaped = false;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            reaped = true;
            if tree[1..].iter().all(|&p| !alive(p)) {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    signal_all(libc::SIGKILL);
    if !reaped {
        let _ = child.wait();
    }
}

fn alive(pid: i32) -> bool {
    // A zombie still has a /proc entry; it is dead for our purposes.
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => parse_stat(&s).is_some_and(|(state, _)| state != 'Z'),
        Err(_) => false,
    }
}

/// `pid` and all its descendants, parents before children.
fn process_tree(pid: i32) -> Vec<i32> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
                continue;
            };
            if let Some((_, ppid)) = fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .as_deref()
                .and_then(parse_stat)
            {
                children.entry(ppid).or_default().push(p);
            }
        }
    }
    let mut out = vec![pid];
    let mut seen: HashSet<i32> = out.iter().copied().collect();
    let mut i = 0;
    while i < out.len() {
        for &c in children.get(&out[i]).map(Vec::as_slice).unwrap_or(&[]) {
            if seen.insert(c) {
                out.push(c);
            }
        }
        i += 1;
    }
    out
}

/// State and parent pid from a /proc/<pid>/stat line
/// (`pid (comm) state ppid ...`; comm may hold spaces and parentheses).
fn parse_stat(stat: &str) -> Option<(char, i32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_whitespace();
    let state = f.next()?.chars().next()?;
    let ppid = f.next()?.parse().ok()?;
    Some((state, ppid))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CPUINFO_VMX: &str = "processor\t: 0\nvendor_id\t: GenuineIntel\n\
        flags\t\t: fpu vme de pse msr vmx smx est\nbugs\t\t: spectre_v1\n";
    const CPUINFO_NOVMX: &str = "processor\t: 0\nflags\t\t: fpu vme de pse msr hypervisor\n\
        vmx flags\t: vnmi preemption_timer\n";

    #[test]
    fn auto_picks_kvm_only_with_vmx_and_dev_kvm() {
        assert_eq!(auto_choice(true, CPUINFO_VMX).0, Choice::QemuKvm);
        assert_eq!(auto_choice(false, CPUINFO_VMX).0, Choice::Bochs);
        assert_eq!(auto_choice(true, CPUINFO_NOVMX).0, Choice::Bochs);
        assert_eq!(auto_choice(true, "").0, Choice::Bochs);
    }

    #[test]
    fn bochsrc_from_the_template() {
        let t = fs::read_to_string(root().join("qemu/bochsrc.in")).unwrap();
        let rc = bochsrc(
            &t,
            &BochsConfig {
                iso: Path::new("/t/vmlink.iso"),
                cpu_model: "corei7_skylake_x",
                cpus: 2,
                megs: 512,
                ips: BOCHS_IPS,
                com1: Path::new("/t/com1.log"),
                log: Path::new("/t/bochs.log"),
            },
        )
        .unwrap();
        let has = |l: &str| rc.lines().any(|x| x == l);
        assert!(has("megs: 512"));
        assert!(has(
            "cpu: model=corei7_skylake_x, count=2, ips=200000000, reset_on_triple_fault=0"
        ));
        assert!(has(
            r#"ata0-master: type=cdrom, path="/t/vmlink.iso", status=inserted"#
        ));
        assert!(has("com1: enabled=1, mode=file, dev=/t/com1.log"));
        assert!(has("log: /t/bochs.log"));
        assert!(has("display_library: term"));
        assert!(has("clock: sync=none, time0=local"));
        assert!(has("panic: action=fatal"));
        assert!(!rc.contains('@'));
    }

    #[test]
    fn bochsrc_refuses_odd_input() {
        let c = |model, iso| BochsConfig {
            iso: Path::new(iso),
            cpu_model: model,
            cpus: 1,
            megs: 64,
            ips: 1,
            com1: Path::new("/c"),
            log: Path::new("/l"),
        };
        assert!(bochsrc("@ISO@", &c("x, count=9", "/a")).is_err());
        assert!(bochsrc("@ISO@", &c("corei7", "/a\"b")).is_err());
    }

    #[test]
    fn qemu_multiboot_args() {
        let kind = Kind::QemuMultiboot {
            accel: Accel::Kvm,
            cpu_model: None,
            hypervisor: "/o/vmlink.elf".into(),
            cmdline: String::new(),
            modules: vec![
                BootModule {
                    source: "/c/bzImage".into(),
                    iso_name: "vm0-kernel".into(),
                    cmdline: "vm0.kernel".into(),
                },
                BootModule {
                    source: "/c/initramfs.cpio".into(),
                    iso_name: "vm0-initramfs".into(),
                    cmdline: "vm0.initrd".into(),
                },
            ],
        };
        let a = qemu_args(&kind, 2, 1024).unwrap().join(" ");
        assert_eq!(
            a,
            "-machine pc -m 1024 -smp 2 -display none -no-reboot \
             -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
             -accel kvm -cpu host,-kvmclock,-kvm-pv-eoi,-kvm-pv-ipi,-kvm-asyncpf,\
             -kvm-asyncpf-int,-kvm-steal-time \
             -kernel /o/vmlink.elf \
             -initrd /c/bzImage vm0.kernel,/c/initramfs.cpio vm0.initrd"
        );
    }

    #[test]
    fn qemu_linux_args() {
        let kind = Kind::QemuLinux {
            accel: Accel::Tcg,
            cpu_model: Some("max".into()),
            kernel: "/c/bzImage".into(),
            initramfs: "/c/i.cpio".into(),
            append: LINUX_APPEND.into(),
        };
        let a = qemu_args(&kind, 1, 256).unwrap();
        let s = a.join(" ");
        assert!(s.contains("-accel tcg -cpu max -kernel /c/bzImage -initrd /c/i.cpio"));
        assert_eq!(a.last().unwrap(), "console=ttyS0 panic=-1");
    }

    #[test]
    fn qemu_refuses_commas_in_module_paths() {
        let kind = Kind::QemuMultiboot {
            accel: Accel::Tcg,
            cpu_model: None,
            hypervisor: "/o/vmlink.elf".into(),
            cmdline: String::new(),
            modules: vec![BootModule {
                source: "/c/a,b".into(),
                iso_name: "x".into(),
                cmdline: "x".into(),
            }],
        };
        assert!(qemu_args(&kind, 1, 64).is_err());
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("/a/b.rc"), "/a/b.rc");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn stat_lines() {
        assert_eq!(
            parse_stat("42 (my (odd) name) S 7 42 42 0 -1"),
            Some(('S', 7))
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn outcome_words() {
        assert_eq!(
            Outcome::Halted("ok".into()).to_string(),
            "halted with status=ok"
        );
        assert_eq!(
            Outcome::Exited(Some(0x21)).to_string(),
            "emulator exited with code 33 (exit port status ok, but no halt line)"
        );
        assert_eq!(
            Outcome::TimedOut(Duration::from_secs(5)).to_string(),
            "timed out after 5s"
        );
    }

    #[test]
    fn finds_the_screen_bochs_announces() {
        let out = "! lt_dlhandle is 0x1\nBochs connected to screen \"/dev/pts/7\"\nNext at t=0\n";
        assert_eq!(screen_path(out).as_deref(), Some("/dev/pts/7"));
        assert_eq!(screen_path("Next at t=0\n"), None);
        assert_eq!(screen_path("Bochs connected to screen \"x\""), None);
    }
}
