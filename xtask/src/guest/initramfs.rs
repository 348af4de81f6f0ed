//! The guest initramfs: busybox-static, the guest driver, guest/init, and
//! an optional user overlay copied over the root.

use crate::util::{out_dir, root, run, Step};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const BUSYBOX: &str = "/bin/busybox";

pub fn build(driver: &Path, overlay: Option<&Path>) -> Result<PathBuf> {
    let _s = Step::new("build initramfs");
    if let Some(o) = overlay {
        if !o.is_dir() {
            bail!("--overlay {}: no such folder", o.display());
        }
    }
    let stage = out_dir().join("initramfs");
    if stage.exists() {
        std::fs::remove_dir_all(&stage)?;
    }
    for d in [
        "bin",
        "sbin",
        "usr/bin",
        "usr/sbin",
        "proc",
        "sys",
        "dev",
        "tmp",
        "lib/modules",
        "etc",
        "root",
    ] {
        std::fs::create_dir_all(stage.join(d))?;
    }
    let busybox = [BUSYBOX, "/usr/bin/busybox"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists())
        .context("busybox-static is not installed (cargo xtask setup installs it)")?;
    std::fs::copy(busybox, stage.join("bin/busybox"))?;
    let list = Command::new(busybox).arg("--list-full").output()?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let link = stage.join(applet);
        if applet.is_empty() || applet == "bin/busybox" || link.exists() {
            continue;
        }
        let depth = applet.matches('/').count();
        let target = format!("{}bin/busybox", "../".repeat(depth));
        std::os::unix::fs::symlink(target, link)?;
    }
    copy_exec(&root().join("guest/init"), &stage.join("init"))?;
    std::fs::copy(driver, stage.join("lib/modules/vmlink_net.ko"))?;
    if let Some(o) = overlay {
        run(Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", o.display()))
            .arg(&stage))?;
    }
    let out = out_dir().join("initramfs.cpio");
    let file = std::fs::File::create(&out)?;
    let find = Command::new("find")
        .arg(".")
        .current_dir(&stage)
        .stdout(Stdio::piped())
        .spawn()?;
    let status = Command::new("cpio")
        .args(["--quiet", "-o", "-H", "newc", "--owner", "0:0"])
        .current_dir(&stage)
        .stdin(find.stdout.context("find pipe")?)
        .stdout(file)
        .status()?;
    if !status.success() {
        bail!("cpio failed: {status}");
    }
    Ok(out)
}

fn copy_exec(from: &Path, to: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::copy(from, to).with_context(|| from.display().to_string())?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}
