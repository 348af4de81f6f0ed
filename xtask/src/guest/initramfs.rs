//! The guest initramfs (uncompressed newc cpio): busybox-static with its
//! applet links, the guest driver, the base tree guest/initramfs/ (holding
//! /init), and an optional user overlay copied over the root last.

use super::cpio::{Archive, Node};
use crate::util::{out_dir, root, Step};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where Debian's busybox-static puts the binary (both exist on Debian 12).
const BUSYBOX: [&str; 2] = ["/bin/busybox", "/usr/bin/busybox"];
/// The base tree, in the repository.
pub const BASE: &str = "guest/initramfs";
/// Where /init loads the driver from.
pub const DRIVER_PATH: &str = "lib/modules/vmlink_net.ko";
/// The guest tools (guest/tools).
pub const TOOLS_PATH: &str = "bin/vmlink-guest";

/// Debian's ethtool (package `ethtool`): `ethtool -S vml0` shows the
/// driver's counters, and busybox has no ethtool applet.
const ETHTOOL: &str = "/usr/sbin/ethtool";

/// A dynamically linked host program with the shared libraries `ldd` says
/// it loads (the guest runs the same Debian userland's ABI), as archive
/// paths and contents.
fn host_program(program: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let out = Command::new("ldd")
        .arg(program)
        .output()
        .with_context(|| format!("ldd {}", program.display()))?;
    if !out.status.success() {
        bail!(
            "{} is missing or not a program: run `cargo xtask setup`",
            program.display()
        );
    }
    let mut files = vec![program.to_path_buf()];
    files.extend(ldd_paths(&String::from_utf8_lossy(&out.stdout)));
    files
        .into_iter()
        .map(|f| {
            let data = std::fs::read(&f).with_context(|| f.display().to_string())?;
            let rel = f.to_string_lossy().trim_start_matches('/').to_string();
            Ok((rel, data))
        })
        .collect()
}

/// The absolute paths in `ldd` output ("libx.so => /lib/.. (0x..)" and
/// "/lib64/ld-linux-x86-64.so.2 (0x..)").
fn ldd_paths(ldd: &str) -> Vec<PathBuf> {
    ldd.lines()
        .filter_map(|l| {
            let l = l.split(" (0x").next()?.trim();
            let p = l.rsplit("=> ").next()?.trim();
            p.starts_with('/').then(|| PathBuf::from(p))
        })
        .collect()
}

/// `overlay` is a folder [`find_overlay`] returned.
pub fn build(driver: &Path, tools: &Path, overlay: Option<&Path>) -> Result<PathBuf> {
    let _s = Step::new("build initramfs");
    let busybox = BUSYBOX
        .into_iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .context("busybox is not installed: run `cargo xtask setup` (package busybox-static)")?;
    let applets = Command::new(busybox)
        .arg("--list-full")
        .output()
        .with_context(|| format!("cannot run {}", busybox.display()))?;
    if !applets.status.success() {
        bail!("{} --list-full failed", busybox.display());
    }
    let mut archive = assemble(
        std::fs::read(busybox)?,
        &String::from_utf8_lossy(&applets.stdout),
        std::fs::read(driver).with_context(|| driver.display().to_string())?,
        std::fs::read(tools).with_context(|| tools.display().to_string())?,
        &root().join(BASE),
        overlay,
    )?;
    for (path, data) in host_program(Path::new(ETHTOOL))? {
        if archive.get(&path).is_none() {
            archive.insert(&path, Node::File { mode: 0o755, data })?;
        }
    }
    let out = out_dir().join("initramfs.cpio");
    let tmp = out.with_extension("cpio.tmp");
    std::fs::write(&tmp, archive.to_bytes())?;
    std::fs::rename(&tmp, &out)?;
    Ok(out)
}

/// The overlay folder: as given (relative to the current directory), else
/// relative to the workspace root.
pub fn find_overlay(o: &Path) -> Result<PathBuf> {
    if o.is_dir() {
        return Ok(o.to_path_buf());
    }
    let in_root = root().join(o);
    if o.is_relative() && in_root.is_dir() {
        return Ok(in_root);
    }
    bail!(
        "--overlay {}: no such folder (it should hold files to copy over the initramfs \
         root, e.g. autorun.sh)",
        o.display()
    )
}

/// The archive's content, from its inputs.
pub fn assemble(
    busybox: Vec<u8>,
    applet_list: &str,
    driver: Vec<u8>,
    tools: Vec<u8>,
    base: &Path,
    overlay: Option<&Path>,
) -> Result<Archive> {
    let mut a = Archive::default();
    for d in [
        "bin", "sbin", "usr/bin", "usr/sbin", "etc", "root", "proc", "sys", "dev", "run",
    ] {
        a.insert(d, Node::Dir { mode: 0o755 })?;
    }
    a.insert("tmp", Node::Dir { mode: 0o1777 })?;
    // The kernel opens /dev/console for init's stdin/out/err before /init
    // runs (devtmpfs is not mounted yet), so the node must be in the archive.
    a.insert(
        "dev/console",
        Node::CharDev {
            mode: 0o600,
            major: 5,
            minor: 1,
        },
    )?;
    a.insert(
        "dev/null",
        Node::CharDev {
            mode: 0o666,
            major: 1,
            minor: 3,
        },
    )?;
    a.insert(
        "bin/busybox",
        Node::File {
            mode: 0o755,
            data: busybox,
        },
    )?;
    for applet in applet_list.lines().map(str::trim) {
        if applet.is_empty() || applet == "bin/busybox" || a.get(applet).is_some() {
            continue;
        }
        a.insert(
            applet,
            Node::Symlink {
                target: "/bin/busybox".into(),
            },
        )?;
    }
    a.insert(
        DRIVER_PATH,
        Node::File {
            mode: 0o644,
            data: driver,
        },
    )?;
    a.insert(
        TOOLS_PATH,
        Node::File {
            mode: 0o755,
            data: tools,
        },
    )?;
    a.add_host_tree(base, "")
        .with_context(|| format!("initramfs base tree {}", base.display()))?;
    // Executable whatever the checkout did to the file mode.
    match a.get_mut("init") {
        Some(Node::File { mode, .. }) => *mode |= 0o755,
        _ => bail!("{}/init is missing", base.display()),
    }
    if let Some(o) = overlay {
        a.add_host_tree(o, "")
            .with_context(|| format!("overlay {}", o.display()))?;
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_library_paths() {
        let out = "\tlinux-vdso.so.1 (0x00007ffc)\n\tlibmnl.so.0 => /lib/x86_64-linux-gnu/libmnl.so.0 (0x00007f)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            ldd_paths(out),
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libmnl.so.0"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
    }

    #[test]
    fn missing_overlay_is_a_clear_error() {
        let e = find_overlay(Path::new("no/such/overlay-dir")).unwrap_err();
        assert!(e.to_string().contains("no such folder"), "{e}");
        assert_eq!(
            find_overlay(Path::new("guest")).unwrap(),
            root().join("guest")
        );
    }

    #[test]
    fn assembles_the_guest_root() {
        let tmp =
            std::env::temp_dir().join(format!("vmlink-initramfs-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let overlay = tmp.join("overlay");
        std::fs::create_dir_all(&overlay).unwrap();
        std::fs::write(overlay.join("autorun.sh"), "echo hello\n").unwrap();
        let a = assemble(
            b"BB".to_vec(),
            "bin/busybox\nbin/sh\nsbin/insmod\nusr/bin/setsid\n",
            b"KO".to_vec(),
            b"TOOLS".to_vec(),
            &root().join(BASE),
            Some(&overlay),
        )
        .unwrap();
        std::fs::remove_dir_all(&tmp).unwrap();
        let link = Node::Symlink {
            target: "/bin/busybox".into(),
        };
        assert_eq!(a.get("bin/sh"), Some(&link));
        assert_eq!(a.get("sbin/insmod"), Some(&link));
        assert_eq!(a.get("usr/bin/setsid"), Some(&link));
        assert!(matches!(
            a.get("bin/busybox"),
            Some(Node::File { mode: 0o755, .. })
        ));
        assert!(matches!(a.get(DRIVER_PATH), Some(Node::File { data, .. }) if data == b"KO"));
        assert!(matches!(
            a.get("dev/console"),
            Some(Node::CharDev {
                major: 5,
                minor: 1,
                ..
            })
        ));
        assert!(
            matches!(a.get("autorun.sh"), Some(Node::File { data, .. }) if data == b"echo hello\n")
        );
        let Some(Node::File { mode, data }) = a.get("init") else {
            panic!("no /init");
        };
        assert_eq!(mode & 0o755, 0o755);
        let init = String::from_utf8_lossy(data);
        assert!(init.starts_with("#!/bin/sh"));
        for marker in [
            "vmlink-guest: init started",
            "vmlink-guest: kernel",
            "vmlink-guest: poweroff",
            "/autorun.sh",
            DRIVER_PATH,
        ] {
            assert!(init.contains(marker), "init lacks {marker:?}");
        }
        let code = init.lines().filter(|l| !l.trim_start().starts_with('#'));
        assert!(
            !code
                .clone()
                .any(|l| l.split_whitespace().any(|w| w == "sleep")),
            "init must not sleep"
        );
    }
}
