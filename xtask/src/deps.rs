//! Installs the Debian packages the build and the emulators need.
//!
//! The check is one `dpkg-query` call (no network); only when something is
//! missing does it run `apt-get` (as root) or stop with the exact command to
//! run (otherwise).

use crate::util::{run, Step};
use anyhow::{bail, Context, Result};
use std::process::Command;

/// Debian packages the harness needs, with what each is for.
pub const PACKAGES: &[(&str, &str)] = &[
    ("bochs", "the emulator with VT-x"),
    // Not pulled in by `bochs`: its display plugins are separate packages.
    ("bochs-term", "Bochs' terminal display (runs headless)"),
    ("bochsbios", "Bochs' BIOS"),
    ("vgabios", "Bochs' VGA BIOS"),
    ("qemu-system-x86", "QEMU (TCG and KVM)"),
    ("grub-pc-bin", "GRUB's BIOS modules for grub-mkrescue"),
    ("grub-common", "grub-mkrescue"),
    ("xorriso", "ISO writer used by grub-mkrescue"),
    ("mtools", "FAT image tools used by grub-mkrescue"),
    ("cpio", "the guest initramfs"),
    ("busybox-static", "the guest userland"),
    (
        "ethtool",
        "`ethtool -S vml0` in the guests (busybox has none)",
    ),
    ("flex", "guest kernel build"),
    ("bison", "guest kernel build"),
    ("bc", "guest kernel build"),
    ("libelf-dev", "guest kernel build"),
    ("libssl-dev", "guest kernel build"),
    ("linux-source-6.1", "the guest kernel sources"),
    ("gcc", "guest kernel and driver build"),
    ("make", "guest kernel and driver build"),
    ("bsdutils", "`script`, the tty Bochs' term display needs"),
    (
        "fonts-dejavu-core",
        "the text of `cargo xtask bench`'s plot",
    ),
];

pub fn ensure() -> Result<()> {
    let names: Vec<&str> = PACKAGES.iter().map(|(n, _)| *n).collect();
    let out = match Command::new("dpkg-query")
        .args(["-W", "-f=${Package}\\t${db:Status-Abbrev}\\n"])
        .args(&names)
        .output()
    {
        Ok(out) => out,
        Err(_) => {
            eprintln!(
                "warning: dpkg-query not found: cannot check prerequisites; \
                 this tool expects Debian 12 with: {}",
                names.join(" ")
            );
            return Ok(());
        }
    };
    // dpkg-query exits 1 when some package is unknown; its stdout still
    // lists the known ones.
    let missing = missing_packages(&names, &String::from_utf8_lossy(&out.stdout));
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing.join(" ");
    if !is_root() {
        bail!(
            "missing Debian packages: {list}\n\
             install them with:\n    \
             sudo apt-get install -y --no-install-recommends {list}"
        );
    }
    let _step = Step::new(format!("installing {list}"));
    run(Command::new("apt-get")
        .arg("update")
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
    .context("apt-get install failed")?;
    Ok(())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The packages of `wanted` that `dpkg-query -W -f='${Package}\t${db:Status-Abbrev}\n'`
/// does not report as installed (`ii`).
pub fn missing_packages<'a>(wanted: &[&'a str], dpkg_output: &str) -> Vec<&'a str> {
    let installed: Vec<&str> = dpkg_output
        .lines()
        .filter_map(|l| {
            let (name, status) = l.split_once('\t')?;
            // Multi-arch packages print as name:arch.
            let name = name.split(':').next().unwrap_or(name);
            status.starts_with("ii").then_some(name)
        })
        .collect();
    wanted
        .iter()
        .copied()
        .filter(|w| !installed.contains(w))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_ones_are_found() {
        let out = "bochs\tii \nxorriso\trc \nlibssl-dev:amd64\tii \n";
        assert_eq!(
            missing_packages(&["bochs", "xorriso", "mtools", "libssl-dev"], out),
            vec!["xorriso", "mtools"]
        );
    }

    #[test]
    fn all_present() {
        let out = "a\tii \nb\tii \n";
        assert!(missing_packages(&["a", "b"], out).is_empty());
    }

    #[test]
    fn package_list_has_no_duplicates() {
        let mut names: Vec<_> = PACKAGES.iter().map(|p| p.0).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), PACKAGES.len());
    }
}
