//! The guest kernel: Debian's linux-source-6.1, `make tinyconfig` plus
//! guest/kernel.config. The whole build tree is cached in the per-user
//! cache under a hash of its inputs (it is also what the guest driver
//! builds against), so fresh clones and CI reuse it.

use crate::util::{cache_dir, root, run, Step};
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The Debian package version the project is pinned to.
pub const PINNED_VERSION: &str = "6.1.192-2";
const PACKAGE: &str = "linux-source-6.1";
const TARBALL: &str = "/usr/src/linux-source-6.1.tar.xz";
const FRAGMENT: &str = "guest/kernel.config";
/// Bump when the build recipe below changes in a way that changes output.
const RECIPE: u32 = 1;

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
        .context("dpkg-query")?;
    if !out.status.success() {
        bail!("{PACKAGE} is not installed (cargo xtask setup installs it)");
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The cache key: package version, fragment and recipe.
pub fn cache_key(version: &str, fragment: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(format!("recipe {RECIPE}\nversion {version}\n"));
    h.update(fragment);
    let d = h.finalize();
    d.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Options the fragment turns on (`CONFIG_X=y` or `=m` lines).
pub fn wanted_options(fragment: &str) -> Vec<&str> {
    fragment
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("CONFIG_") && (l.ends_with("=y") || l.ends_with("=m")))
        .collect()
}

/// The wanted options that `make olddefconfig` dropped.
pub fn dropped<'a>(wanted: &[&'a str], config: &str) -> Vec<&'a str> {
    wanted
        .iter()
        .filter(|w| !config.lines().any(|l| l.trim() == **w))
        .copied()
        .collect()
}

pub fn build() -> Result<Kernel> {
    let version = installed_version()?;
    if version != PINNED_VERSION {
        eprintln!(
            "==> WARNING: {PACKAGE} is {version}, vmlink is pinned to {PINNED_VERSION}; \
             building with {version} (the cache key includes it)"
        );
    }
    let fragment = std::fs::read(root().join(FRAGMENT)).context(FRAGMENT)?;
    let key = cache_key(&version, &fragment);
    let tree = cache_dir().join(format!("linux-{key}"));
    if tree.join("arch/x86/boot/bzImage").exists() && tree.join("Module.symvers").exists() {
        eprintln!("==> guest kernel: cache hit {}", tree.display());
    } else {
        let _s = Step::new(format!(
            "build guest kernel {version} (cache miss, ~6 min on 2 cores)"
        ));
        build_into(&tree, &fragment)?;
    }
    let release = std::fs::read_to_string(tree.join("include/config/kernel.release"))
        .context("kernel.release")?
        .trim()
        .to_string();
    Ok(Kernel { tree, release })
}

/// Builds in a temporary folder and renames it into place only on
/// success, so an interrupted build never leaves a half cache entry.
fn build_into(tree: &Path, fragment: &[u8]) -> Result<()> {
    let tmp = tree.with_extension("tmp");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    std::fs::create_dir_all(&tmp)?;
    run(Command::new("tar")
        .args(["-xf", TARBALL, "--strip-components=1", "-C"])
        .arg(&tmp))?;
    let frag_path = tmp.join("vmlink.config");
    std::fs::write(&frag_path, fragment)?;
    let make = |args: &[&str]| -> Result<()> {
        run(Command::new("make")
            .arg("-s")
            .arg("-C")
            .arg(&tmp)
            .args(args))
    };
    make(&["tinyconfig"])?;
    run(Command::new("scripts/kconfig/merge_config.sh")
        .current_dir(&tmp)
        .args(["-m", ".config", "vmlink.config"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null()))?;
    make(&["olddefconfig"])?;
    let config = std::fs::read_to_string(tmp.join(".config"))?;
    let frag = String::from_utf8_lossy(fragment);
    let lost = dropped(&wanted_options(&frag), &config);
    if !lost.is_empty() {
        bail!(
            "{FRAGMENT}: make olddefconfig dropped {} (a dependency is missing): {}",
            lost.len(),
            lost.join(" ")
        );
    }
    let jobs = format!(
        "-j{}",
        std::thread::available_parallelism().map_or(2, |n| n.get())
    );
    make(&[&jobs, "bzImage", "modules"])?;
    if tree.exists() {
        std::fs::remove_dir_all(tree)?;
    }
    std::fs::rename(&tmp, tree)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_depends_on_every_input() {
        let a = cache_key("6.1.192-2", b"CONFIG_A=y\n");
        assert_eq!(a, cache_key("6.1.192-2", b"CONFIG_A=y\n"));
        assert_eq!(a.len(), 16);
        assert_ne!(a, cache_key("6.1.193-1", b"CONFIG_A=y\n"));
        assert_ne!(a, cache_key("6.1.192-2", b"CONFIG_A=m\n"));
    }

    #[test]
    fn dropped_options_are_found() {
        let frag = "# comment\nCONFIG_A=y\nCONFIG_B=m\n# CONFIG_C is not set\nCONFIG_D=y\n";
        let wanted = wanted_options(frag);
        assert_eq!(wanted, ["CONFIG_A=y", "CONFIG_B=m", "CONFIG_D=y"]);
        let config = "CONFIG_A=y\nCONFIG_B=y\n# CONFIG_D is not set\n";
        assert_eq!(dropped(&wanted, config), ["CONFIG_B=m", "CONFIG_D=y"]);
    }

    #[test]
    fn repo_fragment_has_what_the_guests_need() {
        let frag = std::fs::read_to_string(root().join(FRAGMENT)).unwrap();
        let w = wanted_options(&frag);
        for o in [
            "CONFIG_SERIAL_8250_CONSOLE=y",
            "CONFIG_BLK_DEV_INITRD=y",
            "CONFIG_MODULES=y",
        ] {
            assert!(w.contains(&o), "{o}");
        }
    }
}
