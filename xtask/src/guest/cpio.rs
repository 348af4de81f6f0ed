//! A small writer for the "newc" cpio format the kernel unpacks its
//! initramfs from (Documentation/driver-api/early-userspace/buffer-format.rst).
//!
//! Written here rather than shelling out to `cpio` so that the archive can
//! hold device nodes (`/dev/console` must exist before `/init` runs, or init
//! starts without stdout) and root-owned files without the build running as
//! root, and so that the output is reproducible: entries are sorted, owned by
//! 0:0 and dated 1970.

use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;

/// One archive member. `mode` holds permission bits only (0o7777).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    Dir { mode: u32 },
    File { mode: u32, data: Vec<u8> },
    Symlink { target: String },
    CharDev { mode: u32, major: u32, minor: u32 },
}

/// An in-memory file tree, keyed by path relative to the root (no leading
/// `/`). Sorted order puts every directory before its contents.
#[derive(Default, Debug)]
pub struct Archive {
    nodes: BTreeMap<String, Node>,
}

/// `"/a//b/"` → `"a/b"`; rejects empty paths and `.`/`..` components.
fn normalize(path: &str) -> Result<String> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    if parts.is_empty() {
        bail!("empty path in initramfs: {path:?}");
    }
    if parts.iter().any(|p| *p == "." || *p == "..") {
        bail!("'.' or '..' in initramfs path {path:?}");
    }
    Ok(parts.join("/"))
}

impl Archive {
    /// Adds or replaces `path`, creating missing parent directories (0755).
    /// Replacing a directory by anything else drops what was under it.
    pub fn insert(&mut self, path: &str, node: Node) -> Result<()> {
        let path = normalize(path)?;
        let mut parent = String::new();
        for part in path.split('/').collect::<Vec<_>>().split_last().unwrap().1 {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(part);
            match self.nodes.get(&parent) {
                None => {
                    self.nodes.insert(parent.clone(), Node::Dir { mode: 0o755 });
                }
                Some(Node::Dir { .. }) => {}
                Some(_) => bail!("initramfs: {parent} is not a directory, cannot add {path}"),
            }
        }
        if !matches!(node, Node::Dir { .. }) {
            let prefix = format!("{path}/");
            self.nodes.retain(|k, _| !k.starts_with(&prefix));
        }
        self.nodes.insert(path, node);
        Ok(())
    }

    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(normalize(path).ok()?.as_str())
    }

    pub fn get_mut(&mut self, path: &str) -> Option<&mut Node> {
        self.nodes.get_mut(normalize(path).ok()?.as_str())
    }

    /// Copies a host folder's tree over `at` ("" for the root): files keep
    /// their permission bits, symbolic links are stored as links.
    pub fn add_host_tree(&mut self, host: &Path, at: &str) -> Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(host)
            .with_context(|| format!("cannot read {}", host.display()))?
            .collect::<io::Result<_>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name();
            let name = name
                .to_str()
                .with_context(|| format!("non-UTF-8 name in {}", host.display()))?;
            let dest = if at.is_empty() {
                name.to_string()
            } else {
                format!("{at}/{name}")
            };
            let src = e.path();
            let meta = std::fs::symlink_metadata(&src)?;
            let mode = meta.permissions().mode() & 0o7777;
            let ft = meta.file_type();
            if ft.is_dir() {
                self.insert(&dest, Node::Dir { mode })?;
                self.add_host_tree(&src, &dest)?;
            } else if ft.is_file() {
                let data = std::fs::read(&src)
                    .with_context(|| format!("cannot read {}", src.display()))?;
                self.insert(&dest, Node::File { mode, data })?;
            } else if ft.is_symlink() {
                let target = std::fs::read_link(&src)?;
                let target = target
                    .to_str()
                    .with_context(|| format!("non-UTF-8 link target in {}", src.display()))?
                    .to_string();
                self.insert(&dest, Node::Symlink { target })?;
            } else {
                bail!(
                    "{}: only folders, files and symbolic links can go into the initramfs",
                    src.display()
                );
            }
        }
        Ok(())
    }

    /// Writes the archive in newc format, ending with the trailer.
    pub fn write(&self, w: &mut impl Write) -> io::Result<()> {
        let mut off = 0u64;
        for (ino, (path, node)) in self.nodes.iter().enumerate() {
            let ino = ino as u32 + 1;
            let (mode, nlink, data, rdev): (u32, u32, &[u8], (u32, u32)) = match node {
                Node::Dir { mode } => (S_IFDIR | mode, 2, &[], (0, 0)),
                Node::File { mode, data } => (S_IFREG | mode, 1, data, (0, 0)),
                Node::Symlink { target } => (S_IFLNK | 0o777, 1, target.as_bytes(), (0, 0)),
                Node::CharDev { mode, major, minor } => (S_IFCHR | mode, 1, &[], (*major, *minor)),
            };
            off += entry(w, off, ino, mode, nlink, path, data, rdev)?;
        }
        entry(w, off, 0, 0, 1, "TRAILER!!!", &[], (0, 0))?;
        Ok(())
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.write(&mut v).expect("writing to a Vec cannot fail");
        v
    }
}

fn pad(w: &mut impl Write, len: u64) -> io::Result<u64> {
    let n = (4 - len % 4) % 4;
    w.write_all(&[0u8; 3][..n as usize])?;
    Ok(n)
}

/// One header + name + data, each padded to 4 bytes; returns bytes written.
#[allow(clippy::too_many_arguments)]
fn entry(
    w: &mut impl Write,
    off: u64,
    ino: u32,
    mode: u32,
    nlink: u32,
    name: &str,
    data: &[u8],
    rdev: (u32, u32),
) -> io::Result<u64> {
    let size = u32::try_from(data.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("{name}: too big")))?;
    let namesize = name.len() as u32 + 1;
    // magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor,
    // devminor, rdevmajor, rdevminor, namesize, check
    let header = format!(
        "070701{ino:08X}{mode:08X}{:08X}{:08X}{nlink:08X}{:08X}{size:08X}{:08X}{:08X}{:08X}{:08X}{namesize:08X}{:08X}",
        0, 0, 0, 0, 0, rdev.0, rdev.1, 0
    );
    debug_assert_eq!(header.len(), 110);
    w.write_all(header.as_bytes())?;
    w.write_all(name.as_bytes())?;
    w.write_all(&[0])?;
    let mut n = off + 110 + namesize as u64;
    n += pad(w, n)?;
    w.write_all(data)?;
    n += data.len() as u64;
    n += pad(w, n)?;
    Ok(n - off)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (name, mode, (rdevmajor, rdevminor), data)
    type Entry = (String, u32, (u32, u32), Vec<u8>);

    /// A minimal newc reader.
    fn parse(mut b: &[u8]) -> Vec<Entry> {
        let total = b.len();
        let mut out = Vec::new();
        loop {
            assert_eq!((total - b.len()) % 4, 0, "header not 4-aligned");
            assert_eq!(&b[..6], b"070701");
            let field = |i: usize| {
                u32::from_str_radix(std::str::from_utf8(&b[6 + 8 * i..14 + 8 * i]).unwrap(), 16)
                    .unwrap()
            };
            let (mode, size, namesize) = (field(1), field(6) as usize, field(11) as usize);
            let rdev = (field(9), field(10));
            assert_eq!((field(2), field(3), field(5)), (0, 0, 0), "uid, gid, mtime");
            let name = std::str::from_utf8(&b[110..110 + namesize - 1])
                .unwrap()
                .to_string();
            assert_eq!(b[110 + namesize - 1], 0);
            let data_at = (110 + namesize).next_multiple_of(4);
            let data = b[data_at..data_at + size].to_vec();
            b = &b[(data_at + size).next_multiple_of(4).min(b.len())..];
            if name == "TRAILER!!!" {
                assert!(b.is_empty(), "bytes after the trailer");
                return out;
            }
            out.push((name, mode, rdev, data));
        }
    }

    #[test]
    fn single_file_layout() {
        let mut a = Archive::default();
        a.insert(
            "/init",
            Node::File {
                mode: 0o755,
                data: b"hi\n".to_vec(),
            },
        )
        .unwrap();
        let b = a.to_bytes();
        let h = "070701\
                 00000001000081ED00000000000000000000000100000000\
                 00000003000000000000000000000000000000000000000500000000";
        assert_eq!(&b[..110], h.as_bytes());
        assert_eq!(&b[110..116], b"init\0\0");
        assert_eq!(&b[116..120], b"hi\n\0");
        assert_eq!(b.len() % 4, 0);
        assert_eq!(parse(&b).len(), 1);
    }

    #[test]
    fn round_trip_with_parents_links_and_devices() {
        let mut a = Archive::default();
        a.insert("bin/busybox", file(0o755, b"ELF")).unwrap();
        a.insert(
            "bin/sh",
            Node::Symlink {
                target: "/bin/busybox".into(),
            },
        )
        .unwrap();
        a.insert(
            "dev/console",
            Node::CharDev {
                mode: 0o600,
                major: 5,
                minor: 1,
            },
        )
        .unwrap();
        a.insert("tmp", Node::Dir { mode: 0o1777 }).unwrap();
        let got = parse(&a.to_bytes());
        let names: Vec<_> = got.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            names,
            ["bin", "bin/busybox", "bin/sh", "dev", "dev/console", "tmp"]
        );
        assert_eq!(got[0].1, 0o040_755);
        assert_eq!(got[1].1, 0o100_755);
        assert_eq!(got[1].3, b"ELF");
        assert_eq!(got[2].1, 0o120_777);
        assert_eq!(got[2].3, b"/bin/busybox");
        assert_eq!((got[4].1, got[4].2), (0o020_600, (5, 1)));
        assert_eq!(got[5].1, 0o041_777);
    }

    #[test]
    fn later_inserts_replace_and_bad_paths_fail() {
        let mut a = Archive::default();
        a.insert("etc/x/y", file(0o644, b"1")).unwrap();
        a.insert("etc/x", file(0o600, b"2")).unwrap();
        assert!(a.get("etc/x/y").is_none());
        assert_eq!(a.get("/etc/x"), Some(&file(0o600, b"2")));
        assert!(a.insert("etc/x/z", file(0o644, b"")).is_err());
        assert!(a.insert("../evil", file(0o644, b"")).is_err());
        assert!(a.insert("/", Node::Dir { mode: 0o755 }).is_err());
        // A directory over a directory keeps its contents.
        a.insert("etc/y/z", file(0o644, b"")).unwrap();
        a.insert("etc/y", Node::Dir { mode: 0o700 }).unwrap();
        assert!(a.get("etc/y/z").is_some());
    }

    #[test]
    fn host_tree_overlays() {
        let dir = std::env::temp_dir().join(format!("vmlink-cpio-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("etc")).unwrap();
        std::fs::write(dir.join("autorun.sh"), "echo hi\n").unwrap();
        std::fs::write(dir.join("etc/motd"), "x").unwrap();
        std::fs::set_permissions(
            dir.join("autorun.sh"),
            std::fs::Permissions::from_mode(0o750),
        )
        .unwrap();
        std::os::unix::fs::symlink("motd", dir.join("etc/link")).unwrap();
        let mut a = Archive::default();
        a.insert("etc/motd", file(0o644, b"old")).unwrap();
        a.add_host_tree(&dir, "").unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(a.get("autorun.sh"), Some(&file(0o750, b"echo hi\n")));
        assert_eq!(a.get("etc/motd"), Some(&file(0o644, b"x")));
        assert_eq!(
            a.get("etc/link"),
            Some(&Node::Symlink {
                target: "motd".into()
            })
        );
    }

    fn file(mode: u32, data: &[u8]) -> Node {
        Node::File {
            mode,
            data: data.to_vec(),
        }
    }
}
