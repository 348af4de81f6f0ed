//! The guest kernel: Debian's linux-source-6.1, `make tinyconfig` plus
//! guest/kernel.config. The whole build tree is cached in the per-user
//! cache under a hash of its inputs (it is also what the guest driver
//! builds against), so fresh clones and CI reuse it.

use crate::util::{cache_dir, root, run, Step};
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

/// The Debian package version the project is pinned to.
pub const PINNED_VERSION: &str = "6.1.192-3";
const PACKAGE: &str = "linux-source-6.1";
const TARBALL: &str = "/usr/src/linux-source-6.1.tar.xz";
const FRAGMENT: &str = "guest/kernel.config";
/// Bump when the build recipe below changes in a way that changes output.
const RECIPE: u32 = 2;
/// Complete cache entries kept (each is a ~1.6 GB build tree).
const KEEP_ENTRIES: usize = 3;
/// Entries used this recently are never pruned (another build may use them).
const PRUNE_GRACE: Duration = Duration::from_secs(3600);
/// Touched on every use of an entry: the LRU order for pruning.
const USED_STAMP: &str = ".vmlink-last-used";
/// The build's output, kept in the tree (in the temporary one on failure).
const LOG: &str = "vmlink-build.log";

pub struct Kernel {
    /// The configured and built source tree (KDIR for the driver).
    pub tree: PathBuf,
    /// `uname -r` of the guest kernel.
    pub release: String,
}

pub fn installed_version() -> Result<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f", "${Version}", PACKAGE])
        .output()
        .context("cannot run dpkg-query")?;
    let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || v.is_empty() || !Path::new(TARBALL).exists() {
        bail!("{PACKAGE} is not installed ({TARBALL} missing): run `cargo xtask setup`");
    }
    Ok(v)
}

/// The cache key: first 16 hex digits of SHA-256 over the recipe version,
/// the package version and the fragment's bytes.
pub fn cache_key(version: &str, fragment: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(format!("recipe {RECIPE}\nversion {version}\n"));
    h.update(fragment);
    let d = h.finalize();
    d.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// What the fragment asks of one option.
#[derive(Debug, PartialEq, Eq)]
pub enum Want<'a> {
    /// `CONFIG_X=v`: the final .config must have exactly this line.
    Set(&'a str),
    /// `# CONFIG_X is not set`: X must not be `=y`/`=m` (or set at all).
    Unset(&'a str),
}

/// The options the fragment sets or unsets, in order.
pub fn wanted_options(fragment: &str) -> Vec<Want<'_>> {
    fragment
        .lines()
        .map(str::trim)
        .filter_map(|l| {
            if l.starts_with("CONFIG_") && l.contains('=') {
                Some(Want::Set(l))
            } else {
                l.strip_prefix("# ")
                    .and_then(|r| r.strip_suffix(" is not set"))
                    .filter(|n| n.starts_with("CONFIG_") && !n.contains(' '))
                    .map(Want::Unset)
            }
        })
        .collect()
}

/// The wanted options the final .config does not honour, as
/// human-readable strings ("CONFIG_X=y", "CONFIG_Y off").
pub fn dropped(wanted: &[Want], config: &str) -> Vec<String> {
    wanted
        .iter()
        .filter_map(|w| match w {
            Want::Set(line) => (!config.lines().any(|l| l.trim() == *line)).then(|| {
                let name = line.split('=').next().unwrap_or(line);
                let now = config
                    .lines()
                    .find(|l| l.starts_with(&format!("{name}=")))
                    .map_or("unset", |l| &l[name.len() + 1..]);
                format!("{line} (now {now})")
            }),
            Want::Unset(name) => {
                let prefix = format!("{name}=");
                config
                    .lines()
                    .find(|l| l.starts_with(&prefix))
                    .map(|l| format!("{name} off (now {})", &l[prefix.len()..]))
            }
        })
        .collect()
}

pub fn build() -> Result<Kernel> {
    let version = installed_version()?;
    if version != PINNED_VERSION {
        eprintln!(
            "\n==> WARNING: {PACKAGE} is {version}, but vmlink is pinned to {PINNED_VERSION}.\n\
             ==> WARNING: building the guest kernel from {version} anyway (the cache key \
             includes the version); results may differ from CI.\n"
        );
    }
    let fragment = std::fs::read(root().join(FRAGMENT)).context(FRAGMENT)?;
    let key = cache_key(&version, &fragment);
    let cache = cache_dir();
    let tree = cache.join(format!("linux-{key}"));
    let _lock = lock(&cache.join(format!("linux-{key}.lock")))?;
    if tree.join("arch/x86/boot/bzImage").exists() && tree.join("Module.symvers").exists() {
        eprintln!("==> guest kernel {version}: cache hit, {}", tree.display());
    } else {
        let _s = Step::new(format!(
            "build guest kernel {version} into {} (cache miss; several minutes)",
            tree.display()
        ));
        build_into(&tree, &fragment)?;
    }
    std::fs::write(tree.join(USED_STAMP), "")?;
    prune(&cache, &tree);
    let release = std::fs::read_to_string(tree.join("include/config/kernel.release"))
        .context("kernel.release")?
        .trim()
        .to_string();
    Ok(Kernel { tree, release })
}

/// An exclusive lock (flock) on `path`, held until the file is dropped:
/// two builds wanting the same kernel take turns, the second one then
/// finds the cache filled.
fn lock(path: &Path) -> Result<File> {
    use std::os::fd::AsRawFd;
    let f = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    // SAFETY: flock on a file descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        eprintln!("==> another build holds {}; waiting for it", path.display());
        // SAFETY: as above.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            bail!(
                "cannot lock {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(f)
}

/// Builds in a temporary folder and renames it into place only on
/// success, so an interrupted build never leaves a half cache entry.
fn build_into(tree: &Path, fragment: &[u8]) -> Result<()> {
    let tmp = tree.with_extension("tmp");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)
            .with_context(|| format!("cannot remove {}", tmp.display()))?;
    }
    std::fs::create_dir_all(&tmp)?;
    let log_path = tmp.join(LOG);
    let log = File::create(&log_path)?;
    let logged = |cmd: &mut Command| -> Result<()> {
        let r = run(cmd
            .current_dir(&tmp)
            .stdout(log.try_clone()?)
            .stderr(log.try_clone()?));
        if r.is_err() {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!("---- last lines of {}:", log_path.display());
            for l in &lines[lines.len().saturating_sub(40)..] {
                eprintln!("{l}");
            }
            eprintln!("----");
        }
        r
    };
    logged(Command::new("tar").args(["-xf", TARBALL, "--strip-components=1"]))?;
    std::fs::write(tmp.join("vmlink.config"), fragment)?;
    logged(Command::new("make").arg("tinyconfig"))?;
    logged(Command::new("scripts/kconfig/merge_config.sh").args([
        "-m",
        ".config",
        "vmlink.config",
    ]))?;
    logged(Command::new("make").arg("olddefconfig"))?;
    let config = std::fs::read_to_string(tmp.join(".config"))?;
    let lost = dropped(&wanted_options(&String::from_utf8_lossy(fragment)), &config);
    if !lost.is_empty() {
        bail!(
            "{FRAGMENT}: `make olddefconfig` did not keep {} option(s) (a dependency is \
             missing or off; see {}):\n  {}",
            lost.len(),
            tmp.join(".config").display(),
            lost.join("\n  ")
        );
    }
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
    // `modules` as well as bzImage: it writes Module.symvers, which
    // external module builds (the guest driver) need.
    logged(
        Command::new("make")
            .arg(format!("-j{jobs}"))
            .args(["bzImage", "modules"]),
    )?;
    for f in ["arch/x86/boot/bzImage", "Module.symvers"] {
        if !tmp.join(f).exists() {
            bail!(
                "the kernel build produced no {f} (see {})",
                log_path.display()
            );
        }
    }
    if tree.exists() {
        std::fs::remove_dir_all(tree)?;
    }
    std::fs::rename(&tmp, tree)?;
    Ok(())
}

/// Deletes the least recently used complete cache entries beyond
/// [`KEEP_ENTRIES`], sparing `current` and anything used lately. Best effort.
fn prune(cache: &Path, current: &Path) {
    let Ok(rd) = std::fs::read_dir(cache) else {
        return;
    };
    let mut entries: Vec<(SystemTime, PathBuf)> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p != current && is_entry_name(p))
        .map(|p| {
            let used = std::fs::metadata(p.join(USED_STAMP))
                .or_else(|_| std::fs::metadata(&p))
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            (used, p)
        })
        .collect();
    entries.sort_by_key(|e| std::cmp::Reverse(e.0));
    let now = SystemTime::now();
    for (used, p) in entries.into_iter().skip(KEEP_ENTRIES.saturating_sub(1)) {
        if now.duration_since(used).unwrap_or_default() > PRUNE_GRACE {
            eprintln!("==> removing old guest kernel cache entry {}", p.display());
            let _ = std::fs::remove_dir_all(&p);
            let _ = std::fs::remove_file(p.with_extension("lock"));
        }
    }
}

/// `linux-` followed by 16 hex digits: a complete cache entry.
fn is_entry_name(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("linux-"))
        .is_some_and(|h| h.len() == 16 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_stable_and_depends_on_every_input() {
        let a = cache_key("6.1.192-2", b"CONFIG_A=y\n");
        assert_eq!(a, cache_key("6.1.192-2", b"CONFIG_A=y\n"));
        assert_eq!(a.len(), 16);
        assert!(is_entry_name(Path::new(&format!("/x/linux-{a}"))));
        assert_ne!(a, cache_key("6.1.193-1", b"CONFIG_A=y\n"));
        assert_ne!(a, cache_key("6.1.192-2", b"CONFIG_A=m\n"));
        // Pinned: SHA-256("recipe 2\nversion 6.1.192-2\nCONFIG_A=y\n").
        // If this fails after a deliberate recipe change, update it.
        assert_eq!(a, "f5a54166b148e2e4");
    }

    #[test]
    fn entry_names() {
        assert!(!is_entry_name(Path::new("linux-0123456789abcdef.tmp")));
        assert!(!is_entry_name(Path::new("linux-0123456789abcdef.lock")));
        assert!(!is_entry_name(Path::new("linux-xyz")));
        assert!(is_entry_name(Path::new("linux-0123456789abcdef")));
    }

    #[test]
    fn fragment_parsing() {
        let frag = "# comment\nCONFIG_A=y\nCONFIG_B=m\n# CONFIG_C is not set\n\
                    CONFIG_S=\"x y\"\n# CONFIG_D is set to something\n  CONFIG_E=y  \n";
        assert_eq!(
            wanted_options(frag),
            [
                Want::Set("CONFIG_A=y"),
                Want::Set("CONFIG_B=m"),
                Want::Unset("CONFIG_C"),
                Want::Set("CONFIG_S=\"x y\""),
                Want::Set("CONFIG_E=y"),
            ]
        );
    }

    #[test]
    fn dropped_options_are_named() {
        let wanted = wanted_options(
            "CONFIG_A=y\nCONFIG_B=m\n# CONFIG_C is not set\nCONFIG_D=y\n\
             # CONFIG_E is not set\n# CONFIG_F is not set\n",
        );
        let config = "CONFIG_A=y\nCONFIG_B=y\nCONFIG_C=y\n# CONFIG_D is not set\n\
                      # CONFIG_E is not set\n";
        assert_eq!(
            dropped(&wanted, config),
            [
                "CONFIG_B=m (now y)",
                "CONFIG_C off (now y)",
                "CONFIG_D=y (now unset)"
            ]
        );
        assert!(dropped(&wanted[..1], config).is_empty());
    }

    #[test]
    fn repo_fragment_has_what_the_guests_need() {
        let frag = std::fs::read_to_string(root().join(FRAGMENT)).unwrap();
        let w = wanted_options(&frag);
        for o in [
            "64BIT",
            "SMP",
            "PRINTK",
            "PRINTK_TIME",
            "EARLY_PRINTK",
            "TTY",
            "SERIAL_8250",
            "SERIAL_8250_CONSOLE",
            "BLK_DEV_INITRD",
            "BINFMT_ELF",
            "BINFMT_SCRIPT",
            "PROC_FS",
            "PROC_SYSCTL",
            "SYSFS",
            "DEVTMPFS",
            "DEVTMPFS_MOUNT",
            "TMPFS",
            "MODULES",
            "MODULE_UNLOAD",
            "ACPI",
            "PCI",
            "PCI_MSI",
            "HYPERVISOR_GUEST",
            "PARAVIRT",
            "X86_X2APIC",
            "X86_LOCAL_APIC",
            "HIGH_RES_TIMERS",
            "NET",
            "INET",
            "PACKET",
            "UNIX",
            "NETDEVICES",
            "ETHTOOL_NETLINK",
            "DEVMEM",
            "MAGIC_SYSRQ",
            "MULTIUSER",
            "FUTEX",
            "EPOLL",
            "SHMEM",
            "ZONE_DEVICE",
        ] {
            let line = format!("CONFIG_{o}=y");
            assert!(w.contains(&Want::Set(&line)), "{FRAGMENT} lacks {line}");
        }
        assert!(w.contains(&Want::Unset("CONFIG_STRICT_DEVMEM")));
    }
}
