//! The test runner: host unit tests, then the emulator scenarios in `tests/`.
//!
//! A scenario is a TOML file, `tests/<name>.toml`:
//!
//! ```toml
//! name = "hypervisor-boot-bochs"     # must match the file name
//! description = "..."                 # optional
//! boot = "bochs-iso"                  # or qemu-tcg-multiboot, qemu-tcg-linux
//! cpus = 2                            # default 1
//! cpu_model = "corei7_skylake_x"      # Bochs model, or QEMU -cpu; optional
//! megs = 1024                         # guest memory, MiB; optional
//! timeout = 300                       # seconds, wall clock
//! expect = ['regex', ...]             # each must match some console line
//! reject = ['regex', ...]             # none may match any console line
//! expect_halt = "ok"                  # the halt line's status word, or
//! expect_exit = 0                     # the emulator's exit code
//! overlay = "tests/overlays/x"        # extra files for the guest initramfs
//! ```
//!
//! Without `expect_halt` and `expect_exit` a run passes when it ends by
//! itself (halt status ok, or the emulator exiting) before the timeout.

use crate::emulator::{self, Accel, Boot, Capture, Console, Kind, Outcome};
use crate::util::{out_dir, root, Step};
use crate::{iso, partition, Artifacts, BuildOpts};
use anyhow::{bail, Context, Result};
use regex::Regex;
use serde::Deserialize;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Longest timeout a scenario may ask for: CI as a whole must stay well
/// under 90 minutes.
pub const MAX_TIMEOUT: u64 = 30 * 60;

/// The benchmark's smoke run, which `run_all` runs after the scenario
/// files (a filter selects it by this name too).
const BENCH_SMOKE: &str = "bench-smoke-bochs";
/// Console lines shown when a scenario fails.
const TAIL_LINES: usize = 30;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BootKind {
    /// The GRUB ISO under Bochs (emulated VT-x).
    BochsIso,
    /// The hypervisor as a multiboot kernel under QEMU TCG (no VT-x).
    QemuTcgMultiboot,
    /// The guest Linux alone under QEMU TCG, no hypervisor.
    QemuTcgLinux,
}

impl BootKind {
    fn word(self) -> &'static str {
        match self {
            BootKind::BochsIso => "bochs-iso",
            BootKind::QemuTcgMultiboot => "qemu-tcg-multiboot",
            BootKind::QemuTcgLinux => "qemu-tcg-linux",
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    pub boot: BootKind,
    #[serde(default = "one")]
    pub cpus: u32,
    #[serde(default)]
    pub cpu_model: Option<String>,
    #[serde(default)]
    pub megs: Option<u32>,
    /// Seconds.
    pub timeout: u64,
    #[serde(default)]
    pub expect: Vec<String>,
    #[serde(default)]
    pub reject: Vec<String>,
    #[serde(default)]
    pub expect_halt: Option<String>,
    #[serde(default)]
    pub expect_exit: Option<i32>,
    /// Relative to the repository root.
    #[serde(default)]
    pub overlay: Option<PathBuf>,
    /// Command line for the hypervisor (e.g. "selftest").
    #[serde(default)]
    pub hv_cmdline: Option<String>,
    /// Partition configuration, from the repository root (default:
    /// config/default.toml).
    #[serde(default)]
    pub config: Option<PathBuf>,
    /// Hand the configuration to the hypervisor without xtask's checks, to
    /// test that the hypervisor refuses what xtask would have.
    #[serde(default)]
    pub unchecked_config: bool,
}

fn one() -> u32 {
    1
}

/// A scenario with its regexes compiled.
pub struct Checked {
    pub s: Scenario,
    expect: Vec<Regex>,
    reject: Vec<Regex>,
}

const HALT_WORDS: &[&str] = &["ok", "fail", "panic", "novmx"];

/// Parses and checks one scenario file's text; `stem` is its file name
/// without `.toml`.
pub fn parse(stem: &str, text: &str) -> Result<Checked> {
    let s: Scenario = toml::from_str(text)?;
    if s.name != stem {
        bail!("name {:?} does not match the file name {stem:?}", s.name);
    }
    if s.name.is_empty()
        || !s
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        bail!("name {:?}: use letters, digits, - and _", s.name);
    }
    if s.timeout == 0 || s.timeout > MAX_TIMEOUT {
        bail!("timeout must be 1..={MAX_TIMEOUT} seconds");
    }
    if s.cpus == 0 || s.cpus > 64 {
        bail!("cpus must be 1..=64");
    }
    if s.megs == Some(0) {
        bail!("megs must be positive");
    }
    if let Some(h) = &s.expect_halt {
        if !HALT_WORDS.contains(&h.as_str()) {
            bail!("expect_halt must be one of {HALT_WORDS:?}");
        }
    }
    if s.expect_halt.is_some() && s.expect_exit.is_some() {
        bail!("give expect_halt or expect_exit, not both");
    }
    if s.expect_halt.is_some() && s.boot == BootKind::QemuTcgLinux {
        bail!("qemu-tcg-linux runs no hypervisor: it cannot halt; use expect_exit");
    }
    let compile = |list: &[String]| -> Result<Vec<Regex>> {
        list.iter()
            .map(|r| Regex::new(r).with_context(|| format!("bad regex {r:?}")))
            .collect()
    };
    Ok(Checked {
        expect: compile(&s.expect)?,
        reject: compile(&s.reject)?,
        s,
    })
}

/// What is wrong with a run's console and outcome; empty when it passed.
pub fn evaluate(c: &Checked, lines: &[String], outcome: &Outcome) -> Vec<String> {
    let mut problems = Vec::new();
    for (re, src) in c.expect.iter().zip(&c.s.expect) {
        if !lines.iter().any(|l| re.is_match(l)) {
            problems.push(format!("missing: no line matches /{src}/"));
        }
    }
    for (re, src) in c.reject.iter().zip(&c.s.reject) {
        if let Some(l) = lines.iter().find(|l| re.is_match(l)) {
            problems.push(format!("rejected line (matches /{src}/): {l}"));
        }
    }
    let outcome_ok = match (&c.s.expect_halt, c.s.expect_exit, outcome) {
        (Some(want), _, Outcome::Halted(got)) => want == got,
        (Some(_), _, _) => false,
        (None, Some(want), Outcome::Exited(got)) => *got == Some(want),
        (None, Some(_), _) => false,
        (None, None, Outcome::Halted(got)) => got == "ok",
        (None, None, Outcome::Exited(_)) => true,
        (None, None, _) => false,
    };
    if !outcome_ok {
        let want = match (&c.s.expect_halt, c.s.expect_exit) {
            (Some(h), _) => format!("halt with status={h}"),
            (None, Some(e)) => format!("emulator exit code {e}"),
            (None, None) => "an end before the timeout".to_string(),
        };
        problems.push(format!("outcome: {outcome}; expected {want}"));
    }
    problems
}

/// Passed and failed counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub passed: u64,
    pub failed: u64,
}

impl Tally {
    pub fn add(&mut self, other: Tally) {
        self.passed += other.passed;
        self.failed += other.failed;
    }

    /// The runner's closing line.
    pub fn closing_line(&self) -> String {
        format!("{} passed, {} failed", self.passed, self.failed)
    }
}

/// The counts in a libtest summary line
/// (`test result: ok. 12 passed; 0 failed; 1 ignored; ...`).
pub fn parse_test_result(line: &str) -> Option<Tally> {
    let rest = line.trim().strip_prefix("test result:")?;
    let mut t = Tally::default();
    let mut seen = false;
    for part in rest.split([';', '.']) {
        let mut words = part.split_whitespace();
        let (Some(n), Some(what)) = (words.next(), words.next()) else {
            continue;
        };
        let Ok(n) = n.parse::<u64>() else { continue };
        match what {
            "passed" => {
                t.passed = n;
                seen = true;
            }
            "failed" => {
                t.failed = n;
                seen = true;
            }
            _ => {}
        }
    }
    seen.then_some(t)
}

/// Adds up the summary lines of a `cargo test` run; a run that failed
/// without a failed test (it did not build, say) counts as one failure.
pub fn tally_cargo_test(output: &str, success: bool) -> Tally {
    let mut t = Tally::default();
    for l in output.lines() {
        if let Some(r) = parse_test_result(l) {
            t.add(r);
        }
    }
    if !success && t.failed == 0 {
        t.failed = 1;
    }
    t
}

fn unit_tests() -> Result<Tally> {
    let _step = Step::new("host unit tests (cargo test --workspace)");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut child = Command::new(cargo)
        .args(["test", "--workspace"])
        .current_dir(root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run cargo test")?;
    let mut all = String::new();
    let stdout = child.stdout.take().expect("piped");
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        all.push_str(&line);
        all.push('\n');
    }
    let status = child.wait()?;
    let t = tally_cargo_test(&all, status.success());
    if !status.success() {
        eprintln!("==> cargo test failed: {status}");
    }
    Ok(t)
}

/// The scenario files in `tests/`, sorted by name, each parsed or with why
/// it could not be.
fn load(dir: &Path) -> Result<Vec<(String, Result<Checked>)>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    Ok(files
        .into_iter()
        .map(|p| {
            let stem = p
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let parsed = std::fs::read_to_string(&p)
                .map_err(anyhow::Error::from)
                .and_then(|t| parse(&stem, &t))
                .with_context(|| format!("{}", p.display()));
            (stem, parsed)
        })
        .collect())
}

fn boot_for(c: &Checked, a: &Artifacts) -> Result<Boot> {
    let s = &c.s;
    let hv_cmdline = s.hv_cmdline.as_deref().unwrap_or(iso::HV_CMDLINE);
    let machine = partition::Machine {
        cpus: s.cpus,
        megs: s.megs.unwrap_or(emulator::DEFAULT_MEGS),
    };
    let config = s
        .config
        .clone()
        .unwrap_or_else(|| partition::DEFAULT.into());
    let part = partition::load(&config, machine, &a.payloads, !s.unchecked_config)?;
    let kind = match s.boot {
        BootKind::BochsIso => Kind::BochsIso {
            iso: iso::build_with(&a.hypervisor, &part, hv_cmdline)?,
            cpu_model: s
                .cpu_model
                .clone()
                .unwrap_or_else(|| emulator::DEFAULT_BOCHS_CPU.to_string()),
        },
        BootKind::QemuTcgMultiboot => Kind::QemuMultiboot {
            accel: Accel::Tcg,
            cpu_model: s.cpu_model.clone(),
            hypervisor: a.hypervisor.clone(),
            cmdline: hv_cmdline.to_string(),
            modules: partition::modules(&part)?,
        },
        BootKind::QemuTcgLinux => Kind::QemuLinux {
            accel: Accel::Tcg,
            cpu_model: s.cpu_model.clone(),
            kernel: a.payloads.kernel.clone(),
            initramfs: a.payloads.initramfs.clone(),
            append: emulator::LINUX_APPEND.to_string(),
        },
    };
    Ok(Boot {
        name: s.name.clone(),
        label: s.name.clone(),
        kind,
        cpus: s.cpus,
        megs: s.megs.unwrap_or(emulator::DEFAULT_MEGS),
        timeout: Some(Duration::from_secs(s.timeout)),
        console: Console::Stream,
        give_up: None,
    })
}

struct Result1 {
    name: String,
    passed: bool,
    secs: f64,
    note: String,
}

pub fn run_all(filter: Option<&str>, unit_only: bool) -> Result<()> {
    let scenarios = load(&root().join("tests"))?;
    let mut total = Tally::default();
    let mut results: Vec<Result1> = Vec::new();

    let unit_start = Instant::now();
    let unit = unit_tests().unwrap_or_else(|e| {
        println!("FAIL host unit tests: {e:#}");
        Tally {
            passed: 0,
            failed: 1,
        }
    });
    total.add(unit);
    results.push(Result1 {
        name: "host unit tests".into(),
        passed: unit.failed == 0,
        secs: unit_start.elapsed().as_secs_f64(),
        note: format!("{} passed, {} failed", unit.passed, unit.failed),
    });

    let mut selected: Vec<(String, Result<Checked>)> = if unit_only {
        Vec::new()
    } else {
        scenarios
            .into_iter()
            .filter(|(name, _)| filter.is_none_or(|f| name.contains(f)))
            .collect()
    };
    if !unit_only && selected.is_empty() && filter.is_some_and(|f| !BENCH_SMOKE.contains(f)) {
        eprintln!("==> no scenario matches {filter:?}");
    }
    // Scenarios sharing an overlay run together: each overlay is built once.
    selected.sort_by_key(|(name, c)| {
        let overlay = c.as_ref().ok().and_then(|c| c.s.overlay.clone());
        (overlay, name.clone())
    });

    // The artifacts for one overlay, or why they could not be built.
    let mut built: Option<(Option<PathBuf>, Result<Artifacts, String>)> = None;
    let count = selected.len();
    for (i, (name, checked)) in selected.into_iter().enumerate() {
        if emulator::interrupted() {
            break;
        }
        println!();
        let checked = match checked {
            Ok(c) => c,
            Err(e) => {
                println!("FAIL {name}: bad scenario file: {e:#}");
                total.failed += 1;
                results.push(Result1 {
                    name,
                    passed: false,
                    secs: 0.0,
                    note: "bad scenario file".into(),
                });
                continue;
            }
        };
        let s = &checked.s;
        println!(
            "==> scenario {}/{count}: {name} ({}, {} CPU{}{})",
            i + 1,
            s.boot.word(),
            s.cpus,
            if s.cpus == 1 { "" } else { "s" },
            s.cpu_model
                .as_deref()
                .map(|m| format!(", {m}"))
                .unwrap_or_default(),
        );
        if let Some(d) = &s.description {
            println!("    {d}");
        }
        if built.as_ref().is_none_or(|(o, _)| *o != s.overlay) {
            let opts = BuildOpts {
                overlay: s.overlay.as_ref().map(|o| root().join(o)),
                config: None,
            };
            let a = crate::build_all(&opts).map_err(|e| format!("{e:#}"));
            built = Some((s.overlay.clone(), a));
        }
        let artifacts = match &built {
            Some((_, Ok(a))) => a,
            Some((_, Err(e))) => {
                println!("FAIL {name}: build failed: {e}");
                total.failed += 1;
                results.push(Result1 {
                    name,
                    passed: false,
                    secs: 0.0,
                    note: "build failed".into(),
                });
                continue;
            }
            None => unreachable!(),
        };
        let start = Instant::now();
        let (problems, capture) =
            match boot_for(&checked, artifacts).and_then(|b| emulator::boot(&b)) {
                Ok(cap) => (evaluate(&checked, &cap.lines, &cap.outcome), Some(cap)),
                Err(e) => (vec![format!("cannot boot: {e:#}")], None),
            };
        let secs = start.elapsed().as_secs_f64();
        let log = save_log(&name, capture.as_ref());
        let outcome = capture
            .as_ref()
            .map(|c| c.outcome.to_string())
            .unwrap_or_else(|| "not booted".into());
        if problems.is_empty() {
            println!("PASS {name}: {outcome} ({secs:.1}s)");
            total.passed += 1;
        } else {
            println!("FAIL {name}: {outcome} ({secs:.1}s)");
            for p in &problems {
                println!("    {p}");
            }
            if let Some(cap) = &capture {
                report_failure(cap);
            }
            total.failed += 1;
        }
        if let Some(log) = log {
            println!("    console log: {}", log.display());
        }
        results.push(Result1 {
            name,
            passed: problems.is_empty(),
            secs,
            note: outcome,
        });
    }

    // The benchmark's smoke run (one size, one repetition, every path):
    // it must complete with every byte checked.
    let smoke = BENCH_SMOKE;
    if !unit_only && !emulator::interrupted() && filter.is_none_or(|f| smoke.contains(f)) {
        println!();
        println!("==> scenario {smoke}: cargo xtask bench --smoke (every path, no data lost)");
        let start = Instant::now();
        let r = crate::bench::run(
            emulator::Choice::Bochs,
            &crate::bench::Options {
                smoke: true,
                ..Default::default()
            },
        );
        let secs = start.elapsed().as_secs_f64();
        let note = match &r {
            Ok(()) => "every path completed, all data checked".to_string(),
            Err(e) => format!("{e:#}"),
        };
        println!(
            "{} {smoke}: {note} ({secs:.1}s)",
            if r.is_ok() { "PASS" } else { "FAIL" }
        );
        if r.is_ok() {
            total.passed += 1;
        } else {
            total.failed += 1;
        }
        results.push(Result1 {
            name: smoke.into(),
            passed: r.is_ok(),
            secs,
            note,
        });
    }

    let interrupted = emulator::interrupted();
    println!();
    println!("==> results");
    let width = results.iter().map(|r| r.name.len()).max().unwrap_or(0);
    for r in &results {
        println!(
            "    {} {:width$} {:7.1}s  {}",
            if r.passed { "PASS" } else { "FAIL" },
            r.name,
            r.secs,
            r.note
        );
    }
    if interrupted {
        println!("    (interrupted: the remaining scenarios did not run)");
    }
    let _ = std::io::stderr().flush();
    println!("{}", total.closing_line());
    let _ = std::io::stdout().flush();
    if interrupted {
        std::process::exit(130);
    }
    if total.failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}

fn report_failure(cap: &Capture) {
    let tail = cap.tail(TAIL_LINES);
    if tail.is_empty() {
        println!("    (no console output)");
    } else {
        println!("    last {} console lines:", tail.len());
        for l in tail {
            println!("    | {l}");
        }
    }
    if matches!(cap.outcome, Outcome::Exited(_) | Outcome::TimedOut(_)) {
        for (path, tail) in cap.emulator_log_tails(15) {
            println!("    {} (last lines):", path.display());
            for l in tail {
                println!("    ! {l}");
            }
        }
    }
}

/// Writes the console to target/vmlink/logs/<name>.log.
fn save_log(name: &str, cap: Option<&Capture>) -> Option<PathBuf> {
    let cap = cap?;
    let dir = out_dir().join("logs");
    std::fs::create_dir_all(&dir).ok()?;
    let path = dir.join(format!("{name}.log"));
    let mut text = cap.lines.join("\n");
    text.push('\n');
    std::fs::write(&path, text).ok()?;
    Some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(s: &[&str]) -> Vec<String> {
        s.iter().map(|l| l.to_string()).collect()
    }

    #[test]
    fn the_repository_scenarios_parse() {
        let all = load(&root().join("tests")).unwrap();
        assert!(all.len() >= 3);
        for (name, c) in all {
            if let Err(e) = c {
                panic!("{name}: {e:#}");
            }
        }
    }

    #[test]
    fn parse_fields_and_defaults() {
        let c = parse(
            "x",
            r#"
            name = "x"
            boot = "qemu-tcg-multiboot"
            timeout = 60
            expect = ['VT-x not available']
            expect_halt = "novmx"
            "#,
        )
        .unwrap();
        assert_eq!(c.s.boot, BootKind::QemuTcgMultiboot);
        assert_eq!(c.s.cpus, 1);
        assert_eq!(c.s.megs, None);
        assert_eq!(c.s.expect_halt.as_deref(), Some("novmx"));
        assert!(c.s.overlay.is_none());
    }

    #[test]
    fn parse_refusals() {
        let base = "boot = \"bochs-iso\"\ntimeout = 10\n";
        assert!(parse("x", &format!("name = \"y\"\n{base}")).is_err());
        assert!(parse("x", &format!("name = \"x\"\n{base}expect = ['(']\n")).is_err());
        assert!(parse(
            "x",
            &format!("name = \"x\"\n{base}expect_halt = \"fine\"\n")
        )
        .is_err());
        assert!(parse("x", &format!("name = \"x\"\n{base}colour = 1\n")).is_err());
        assert!(parse("x", "name = \"x\"\nboot = \"vbox\"\ntimeout = 10\n").is_err());
        assert!(parse("x", "name = \"x\"\nboot = \"bochs-iso\"\ntimeout = 0\n").is_err());
        assert!(parse(
            "x",
            "name = \"x\"\nboot = \"qemu-tcg-linux\"\ntimeout = 9\nexpect_halt = \"ok\"\n"
        )
        .is_err());
    }

    fn scenario(extra: &str) -> Checked {
        parse(
            "s",
            &format!(
                "name = \"s\"\nboot = \"bochs-iso\"\ntimeout = 10\n\
                 expect = ['all 2 CPUs online', '^\\[cpu1\\] online: apic_id=\\d+ vmx:']\n{extra}"
            ),
        )
        .unwrap()
    }

    #[test]
    fn evaluation() {
        let c = scenario("expect_halt = \"ok\"\nreject = ['PANIC']\n");
        let good = lines(&[
            "[cpu1] online: apic_id=1 vmx: ept vpid",
            "[cpu0] vmlink: all 2 CPUs online",
            "vmlink: system halted status=ok",
        ]);
        let ok = Outcome::Halted("ok".into());
        assert!(evaluate(&c, &good, &ok).is_empty());

        let p = evaluate(&c, &good[..1], &Outcome::TimedOut(Duration::from_secs(10)));
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].contains("all 2 CPUs online"));
        assert!(p[1].contains("timed out"));

        let mut bad = good.clone();
        bad.push("PANIC at foo".into());
        assert_eq!(evaluate(&c, &bad, &ok).len(), 1);
        assert_eq!(
            evaluate(&c, &good, &Outcome::Halted("fail".into())).len(),
            1
        );
    }

    #[test]
    fn evaluation_of_exits() {
        let c = scenario("expect_exit = 0\n");
        let l = lines(&[
            "[cpu0] vmlink: all 2 CPUs online",
            "[cpu1] online: apic_id=1 vmx:",
        ]);
        assert!(evaluate(&c, &l, &Outcome::Exited(Some(0))).is_empty());
        assert_eq!(evaluate(&c, &l, &Outcome::Exited(Some(1))).len(), 1);
        assert_eq!(evaluate(&c, &l, &Outcome::Exited(None)).len(), 1);
        let any = scenario("");
        assert!(evaluate(&any, &l, &Outcome::Exited(Some(3))).is_empty());
        assert!(evaluate(&any, &l, &Outcome::Halted("ok".into())).is_empty());
        assert_eq!(
            evaluate(&any, &l, &Outcome::Halted("panic".into())).len(),
            1
        );
        assert_eq!(
            evaluate(&any, &l, &Outcome::TimedOut(Duration::ZERO)).len(),
            1
        );
    }

    #[test]
    fn test_result_lines() {
        assert_eq!(
            parse_test_result(
                "test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s"
            ),
            Some(Tally { passed: 12, failed: 0 })
        );
        assert_eq!(
            parse_test_result("test result: FAILED. 3 passed; 2 failed; 0 ignored"),
            Some(Tally {
                passed: 3,
                failed: 2
            })
        );
        assert_eq!(parse_test_result("running 12 tests"), None);
        assert_eq!(parse_test_result("test foo ... ok"), None);
    }

    #[test]
    fn cargo_test_totals() {
        let out = "running 2 tests\ntest a ... ok\n\
            test result: ok. 2 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s\n\
            \n   Doc-tests x\n\
            test result: FAILED. 4 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out\n\
            test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out\n";
        assert_eq!(
            tally_cargo_test(out, false),
            Tally {
                passed: 6,
                failed: 1
            }
        );
        // Did not build: no summary lines, still a failure.
        assert_eq!(
            tally_cargo_test("error[E0425]: cannot find value", false),
            Tally {
                passed: 0,
                failed: 1
            }
        );
        assert_eq!(tally_cargo_test("", true), Tally::default());
    }

    #[test]
    fn closing_line_adds_units_and_scenarios() {
        let mut t = tally_cargo_test(
            "test result: ok. 40 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out\n",
            true,
        );
        t.add(Tally {
            passed: 2,
            failed: 1,
        });
        assert_eq!(t.closing_line(), "42 passed, 1 failed");
    }
}
