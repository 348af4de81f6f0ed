//! Reading a serial console an emulator writes to a file, line by line, as
//! it grows; and recognising the hypervisor's last line.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use vmlink_abi::HALT_MARKER;

/// Follows a file another process appends to.
pub struct Tail {
    path: PathBuf,
    pos: u64,
    partial: Vec<u8>,
}

impl Tail {
    pub fn new(path: &Path) -> Self {
        Tail {
            path: path.to_path_buf(),
            pos: 0,
            partial: Vec::new(),
        }
    }

    /// The complete lines written since the last call. A file that does not
    /// exist yet reads as empty.
    pub fn poll(&mut self) -> Vec<String> {
        let mut buf = Vec::new();
        if let Ok(mut f) = File::open(&self.path) {
            if f.seek(SeekFrom::Start(self.pos)).is_ok() {
                if let Ok(n) = f.read_to_end(&mut buf) {
                    self.pos += n as u64;
                }
            }
        }
        self.push(&buf)
    }

    /// Like [`poll`](Self::poll), then also the last line if it has no
    /// newline: for when the writer has gone.
    pub fn finish(&mut self) -> Vec<String> {
        let mut lines = self.poll();
        if !self.partial.is_empty() {
            lines.push(clean_line(&std::mem::take(&mut self.partial)));
        }
        lines
    }

    fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.partial.extend_from_slice(bytes);
        let mut lines = Vec::new();
        while let Some(nl) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=nl).collect();
            lines.push(clean_line(&line[..nl]));
        }
        lines
    }
}

/// One console line as text: carriage returns, other control characters
/// and ANSI escape sequences removed, invalid UTF-8 replaced.
pub fn clean_line(raw: &[u8]) -> String {
    let s = String::from_utf8_lossy(raw);
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI: ESC [ params final-byte; otherwise drop ESC and one char.
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            } else {
                chars.next();
            }
        } else if c == '\t' || !c.is_control() {
            out.push(c);
        }
    }
    out
}

/// The status word of the hypervisor's halt line
/// (`vmlink: system halted status=<word>`), if `line` is that line.
pub fn halt_status(line: &str) -> Option<String> {
    let rest = &line[line.find(HALT_MARKER)? + HALT_MARKER.len()..];
    let word = match rest.find("status=") {
        Some(i) => rest[i + "status=".len()..]
            .split(|c: char| c.is_whitespace() || c == ',')
            .next()
            .unwrap_or(""),
        None => "",
    };
    Some(if word.is_empty() { "unknown" } else { word }.to_string())
}

/// The guest and its fate, if `line` says the hypervisor stopped a guest
/// (it crashed, reset or faulted): a run with two guests has then failed,
/// and the other would wait for it until the run's timeout. Fate lines
/// are `[cpuN] NAME: FATE` (hypervisor `vmm::Fate`); powering off is the
/// normal end.
pub fn guest_lost(line: &str) -> Option<String> {
    let (_, msg) = line.strip_prefix("[cpu")?.split_once("] ")?;
    let (vm, fate) = msg.split_once(": ")?;
    const LOST: [&str; 4] = [
        "requested a reset",
        "triple fault",
        "halted with interrupts disabled",
        "stopped: ",
    ];
    LOST.iter()
        .any(|f| fate.starts_with(f))
        .then(|| format!("{vm} {fate}"))
}

/// The status word a QEMU exit code stands for when the hypervisor wrote
/// it to the isa-debug-exit port (QEMU exits with `(status << 1) | 1`).
pub fn qemu_exit_status(code: i32) -> Option<&'static str> {
    use vmlink_abi::exit_status::*;
    if code & 1 == 0 {
        return None;
    }
    let status = u8::try_from(code >> 1).ok()?;
    Some(match status {
        OK => "ok",
        FAIL => "fail",
        PANIC => "panic",
        NO_VMX => "novmx",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_lines_across_reads() {
        let mut t = Tail::new(Path::new("/nonexistent/vmlink-test"));
        assert!(t.poll().is_empty());
        assert!(t.push(b"[cpu0] hel").is_empty());
        assert_eq!(t.push(b"lo\r\nsecond\nthi"), vec!["[cpu0] hello", "second"]);
        assert_eq!(t.finish(), vec!["thi"]);
        assert!(t.finish().is_empty());
    }

    #[test]
    fn follows_a_growing_file() {
        let path = std::env::temp_dir().join(format!("vmlink-tail-{}", std::process::id()));
        std::fs::write(&path, "one\ntw").unwrap();
        let mut t = Tail::new(&path);
        assert_eq!(t.poll(), vec!["one"]);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        std::io::Write::write_all(&mut f, b"o\n").unwrap();
        assert_eq!(t.poll(), vec!["two"]);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn cleans_escapes() {
        assert_eq!(clean_line(b"\x1b[2J\x1b[1;1Hok\x07 go\r"), "ok go");
        assert_eq!(clean_line(b"a\xffb"), "a\u{fffd}b");
    }

    #[test]
    fn halt_lines() {
        assert_eq!(
            halt_status("vmlink: system halted status=ok").as_deref(),
            Some("ok")
        );
        assert_eq!(
            halt_status("[cpu0] vmlink: system halted status=novmx extra").as_deref(),
            Some("novmx")
        );
        assert_eq!(
            halt_status("vmlink: system halted").as_deref(),
            Some("unknown")
        );
        assert_eq!(halt_status("[cpu0] all 2 CPUs online"), None);
    }

    #[test]
    fn lost_guests() {
        assert_eq!(
            guest_lost("[cpu1] vm1: requested a reset (treated as stop)").as_deref(),
            Some("vm1 requested a reset (treated as stop)")
        );
        assert!(guest_lost("[cpu0] vm0: stopped: EPT violation at 0x1000").is_some());
        assert!(guest_lost("[cpu0] vm0: triple fault").is_some());
        assert_eq!(guest_lost("[cpu0] vm0: powered off"), None);
        assert_eq!(guest_lost("[cpu1] vm1: channel: doorbells rung=0"), None);
        assert_eq!(guest_lost("[vm1] bench: stopped: by the peer"), None);
    }

    #[test]
    fn qemu_codes() {
        assert_eq!(qemu_exit_status(0x21), Some("ok"));
        assert_eq!(qemu_exit_status(39), Some("novmx"));
        assert_eq!(qemu_exit_status(0), None);
        assert_eq!(qemu_exit_status(1), None);
    }
}
