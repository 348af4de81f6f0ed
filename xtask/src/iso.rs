//! The GRUB rescue ISO holding the hypervisor and the guest payloads.
//!
//! `boot/grub.cfg.in` is the menu template; the modules GRUB loads come from
//! [`modules`], which the QEMU multiboot boot uses too, so both boot paths
//! hand the hypervisor the same files with the same command lines.

use crate::partition::{self, Partition};
use crate::template;
use crate::util::{out_dir, root, Step};
use anyhow::{bail, Context, Result};
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::UNIX_EPOCH;

/// The hypervisor's command line (after the image path).
pub const HV_CMDLINE: &str = "";

/// One multiboot module: a file and the command line that names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootModule {
    /// The file on this machine.
    pub source: PathBuf,
    /// Its name under /boot on the ISO.
    pub iso_name: String,
    /// What the module is, as the hypervisor reads it from the module's
    /// command line. GRUB passes exactly this; QEMU's `-kernel` passes
    /// "<path> <cmdline>", so the hypervisor should read the last word.
    pub cmdline: String,
}

/// The grub.cfg for the given modules.
/// `vmlink-<config>` for the default command line, else
/// `vmlink-<config>-<words>`.
pub fn iso_base_name(config: &str, hv_cmdline: &str) -> String {
    let tag: String = hv_cmdline
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let tag = tag.trim_matches('-');
    if tag.is_empty() {
        format!("vmlink-{config}")
    } else {
        format!("vmlink-{config}-{tag}")
    }
}

pub fn grub_cfg(template: &str, hv_cmdline: &str, modules: &[BootModule]) -> Result<String> {
    let mut lines = String::new();
    for m in modules {
        if m.iso_name.contains(['/', ' ']) || m.cmdline.contains('\n') {
            bail!("bad boot module {m:?}");
        }
        writeln!(lines, "    module2 /boot/{} {}", m.iso_name, m.cmdline)?;
    }
    template::fill(
        template,
        &[
            ("HV_CMDLINE", hv_cmdline.to_string()),
            ("MODULES", lines.trim_end().to_string()),
        ],
    )
}

/// An ISO whose GRUB entry passes `hv_cmdline` to the hypervisor; each
/// distinct command line gets its own file.
pub fn build_with(hypervisor: &Path, part: &Partition, hv_cmdline: &str) -> Result<PathBuf> {
    let template_path = root().join("boot/grub.cfg.in");
    let template = fs::read_to_string(&template_path)
        .with_context(|| format!("reading {}", template_path.display()))?;
    let modules = partition::modules(part)?;
    let cfg = grub_cfg(&template, hv_cmdline, &modules)?;

    let out = out_dir();
    let base = iso_base_name(&part.stem, hv_cmdline);
    let iso = out.join(format!("{base}.iso"));
    let stamp_path = out.join(format!("{base}.iso.inputs"));
    let mut inputs: Vec<(&Path, &str)> = vec![(hypervisor, "vmlink.elf")];
    inputs.extend(
        modules
            .iter()
            .map(|m| (m.source.as_path(), m.iso_name.as_str())),
    );
    let stamp = stamp(&cfg, &inputs)?;
    if iso.exists() && fs::read_to_string(&stamp_path).ok().as_deref() == Some(stamp.as_str()) {
        return Ok(iso);
    }

    let _step = Step::new("building the boot ISO");
    let staging = out.join(format!("{base}-root"));
    if staging.exists() {
        fs::remove_dir_all(&staging)?;
    }
    fs::create_dir_all(staging.join("boot/grub"))?;
    fs::write(staging.join("boot/grub/grub.cfg"), &cfg)?;
    for (src, name) in &inputs {
        let dst = staging.join("boot").join(name);
        // A hard link is free; copy when the file is on another filesystem.
        if fs::hard_link(src, &dst).is_err() {
            fs::copy(src, &dst).with_context(|| format!("copying {}", src.display()))?;
        }
    }
    let _ = fs::remove_file(&stamp_path);
    let tmp = out.join(format!("{base}.iso.tmp"));
    let output = Command::new("grub-mkrescue")
        .arg("-o")
        .arg(&tmp)
        .arg(&staging)
        .output()
        .context("cannot run grub-mkrescue (run `cargo xtask setup`)")?;
    if !output.status.success() {
        bail!(
            "grub-mkrescue failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    fs::rename(&tmp, &iso)?;
    fs::write(&stamp_path, stamp)?;
    Ok(iso)
}

/// What the ISO was built from: the menu and each input's path, size and
/// modification time. The ISO is rebuilt when this changes.
fn stamp(cfg: &str, inputs: &[(&Path, &str)]) -> Result<String> {
    let mut s = format!("xtask {}\n{cfg}\n", env!("CARGO_PKG_VERSION"));
    for (path, name) in inputs {
        let meta = fs::metadata(path).with_context(|| format!("{} is missing", path.display()))?;
        let mtime = meta
            .modified()?
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        writeln!(s, "{name} {} {} {mtime}", path.display(), meta.len())?;
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm0() -> Vec<BootModule> {
        let m = |source: &str, iso_name: &str, cmdline: &str| BootModule {
            source: source.into(),
            iso_name: iso_name.into(),
            cmdline: cmdline.into(),
        };
        vec![
            m("/c/bzImage", "vm0-kernel", "vm0.kernel"),
            m("/c/initramfs.cpio", "vm0-initramfs", "vm0.initrd"),
        ]
    }

    #[test]
    fn menu_lists_the_modules() {
        let t = fs::read_to_string(root().join("boot/grub.cfg.in")).unwrap();
        let cfg = grub_cfg(&t, "log=debug", &vm0()).unwrap();
        assert!(cfg.contains("set timeout=0"));
        assert!(cfg.contains("multiboot2 /boot/vmlink.elf log=debug\n"));
        let k = cfg.find("module2 /boot/vm0-kernel vm0.kernel\n").unwrap();
        let i = cfg
            .find("module2 /boot/vm0-initramfs vm0.initrd\n")
            .unwrap();
        assert!(k < i);
        assert!(!cfg.contains('@'));
    }

    #[test]
    fn bad_module_names_are_refused() {
        let mut m = vm0();
        m[0].iso_name = "a b".into();
        assert!(grub_cfg("@HV_CMDLINE@ @MODULES@", "", &m).is_err());
    }

    #[test]
    fn stamp_changes_with_the_menu() {
        let me = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
        let a = stamp("a", &[(&me, "x")]).unwrap();
        assert_eq!(a, stamp("a", &[(&me, "x")]).unwrap());
        assert_ne!(a, stamp("b", &[(&me, "x")]).unwrap());
    }
}
