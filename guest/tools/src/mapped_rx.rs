//! TCP_ZEROCOPY_RECEIVE (Linux 4.18+, `getsockopt` on a TCP socket): the
//! stack maps the pages holding received payload into an area the
//! receiver mmap()ed on its socket, instead of copying them. Only whole
//! pages at page offset 0 of an skb's fragments can be mapped; what cannot
//! (headers' neighbours, a segment's tail) the receiver copies as usual.
//!
//! On vmlink's zero-copy path those pages are the sender's channel buffers,
//! so a message reaches the application with no copy on the receiving side
//! at all. On a copying path (`rx_mode=copy`) received data sits in skbs'
//! linear parts, nothing is mappable, and everything is copied: the same
//! program measures both.

use std::io::{self, IoSlice, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;

const PAGE: usize = 4096;
/// `TCP_ZEROCOPY_RECEIVE` from `linux/tcp.h`.
const TCP_ZEROCOPY_RECEIVE: libc::c_int = 35;

/// `struct tcp_zerocopy_receive` as Linux 5.11+ has it (older kernels take
/// a prefix of it: the option length says how much the caller knows).
#[repr(C)]
#[derive(Default)]
struct ZcReceive {
    address: u64,
    length: u32,
    recv_skip_hint: u32,
    inq: u32,
    err: i32,
    copybuf_address: u64,
    copybuf_len: i32,
    flags: u32,
    msg_control: u64,
    msg_controllen: u64,
    msg_flags: u32,
    reserved: u32,
}

/// One run of a received message: mapped (offset into the mapping) or
/// copied (offset into the copy buffer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Piece {
    Mapped(usize, usize),
    Copied(usize, usize),
}

/// A socket receiving into pages the kernel maps, and what the last
/// message was made of.
pub struct MappedReceiver<'s> {
    sock: &'s TcpStream,
    base: *mut u8,
    len: usize,
    copy: Vec<u8>,
    pieces: Vec<Piece>,
}

impl<'s> MappedReceiver<'s> {
    /// Maps `len` bytes (whole pages) of `sock` for received data.
    pub fn new(sock: &'s TcpStream, len: usize) -> io::Result<Self> {
        let len = len.next_multiple_of(PAGE);
        // SAFETY: a fresh shared, read-only mapping of a valid socket; the
        // kernel picks the address. Nothing aliases it: only the kernel
        // writes there (by mapping pages), and we read it through slices
        // tied to &self (see `slices`).
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                sock.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(MappedReceiver {
            sock,
            base: base.cast(),
            len,
            copy: Vec::new(),
            pieces: Vec::new(),
        })
    }

    /// Asks the kernel to map up to `want` bytes (a page multiple) at
    /// `off` and to copy up to `copy_room` straggling bytes into the copy
    /// buffer at `copy_at`.
    fn zerocopy(
        &mut self,
        off: usize,
        want: usize,
        copy_at: usize,
        copy_room: usize,
    ) -> io::Result<ZcReceive> {
        let mut zc = ZcReceive {
            // Mapping addresses are user pointers: the kernel takes them
            // as u64.
            address: self.base as u64 + off as u64,
            length: want as u32,
            ..Default::default()
        };
        if copy_room > 0 {
            zc.copybuf_address = self.copy[copy_at..].as_mut_ptr() as u64;
            zc.copybuf_len = copy_room as i32;
        }
        let mut optlen = std::mem::size_of::<ZcReceive>() as libc::socklen_t;
        // SAFETY: `zc` is a valid, writable tcp_zerocopy_receive of the
        // length passed; its address lies inside our mapping of this
        // socket and its copy buffer inside `self.copy` (at least
        // `copy_room` bytes from `copy_at`), both alive across the call.
        let r = unsafe {
            libc::getsockopt(
                self.sock.as_raw_fd(),
                libc::IPPROTO_TCP,
                TCP_ZEROCOPY_RECEIVE,
                (&mut zc as *mut ZcReceive).cast(),
                &mut optlen,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        if zc.err != 0 {
            return Err(io::Error::from_raw_os_error(-zc.err));
        }
        if zc.copybuf_len < 0 {
            return Err(io::Error::from_raw_os_error(-zc.copybuf_len));
        }
        Ok(zc)
    }

    /// Notes what one receive brought: `mapped` bytes at `off` in the
    /// mapping, then `copied` bytes at `copy_at` in the copy buffer.
    /// Returns how many bytes that is.
    fn record(&mut self, off: usize, mapped: usize, copy_at: usize, copied: usize) -> usize {
        if mapped > 0 {
            self.pieces.push(Piece::Mapped(off, mapped));
        }
        if copied > 0 {
            self.pieces.push(Piece::Copied(copy_at, copied));
        }
        mapped + copied
    }

    /// Waits until the socket has data queued (or its end, or an error),
    /// sleeping meanwhile. Not with poll(): a socket with MSG_ZEROCOPY
    /// completions in its error queue polls as ready (POLLERR) until they
    /// are read, so the wait would spin. A spinning guest is a running
    /// one, and a running receiver is rung by the channel only once a
    /// batch of ring entries is in: a small frame then waited for the
    /// guest's next tick (tcp-zc round trips at 4 KiB took 4 emulated ms).
    fn wait_readable(&self) -> io::Result<()> {
        let mut b = 0u8;
        loop {
            // SAFETY: a one-byte writable buffer, alive across the call.
            // MSG_PEEK leaves the byte queued.
            let r = unsafe {
                libc::recv(
                    self.sock.as_raw_fd(),
                    (&mut b as *mut u8).cast(),
                    1,
                    libc::MSG_PEEK,
                )
            };
            if r >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// Receives exactly `n` bytes, mapping whole pages where the stack
    /// allows. The peer must send nothing past them before it is answered
    /// (request-response): the kernel maps no more than asked, but copies
    /// a segment's straggling tail (under a page) whole.
    pub fn recv_exact(&mut self, n: usize) -> io::Result<()> {
        self.pieces.clear();
        if self.copy.len() < n {
            self.copy.resize(n, 0);
        }
        if n == 0 {
            return Ok(());
        }
        let (mut got, mut off, mut copied) = (0, 0, 0);
        // In request-response the message is rarely queued yet when the
        // receiver asks: wait first, rather than ask twice.
        self.wait_readable()?;
        while got < n {
            let left = n - got;
            let want = (left / PAGE * PAGE).min(self.len - off);
            let mut skip = left;
            if want > 0 {
                // Stragglers (a segment's tail past its last whole page)
                // come in the same call. Under a page of room: with room
                // for everything queued the kernel copies it all instead
                // of mapping.
                let room = left.min(PAGE - 1);
                let zc = self.zerocopy(off, want, copied, room)?;
                let mapped = zc.length as usize;
                let straggled = zc.copybuf_len.max(0) as usize;
                got += self.record(off, mapped, copied, straggled);
                off += mapped;
                copied += straggled;
                if got > n {
                    // Only a peer that broke request-response gets here.
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "the peer sent past the message before it was answered",
                    ));
                }
                skip = (zc.recv_skip_hint as usize).min(n - got);
                if skip == 0 {
                    if mapped + straggled == 0 {
                        self.wait_readable()?;
                    }
                    continue;
                }
            }
            // Bytes that cannot be mapped (queued, or for a short rest
            // still to come): copy them. `read` blocks until some arrive
            // and never takes more than asked.
            let k = (&*self.sock).read(&mut self.copy[copied..copied + skip])?;
            if k == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            got += self.record(off, 0, copied, k);
            copied += k;
        }
        Ok(())
    }

    /// Receives what a byte stream has queued, waiting for some: up to
    /// `max` bytes mapped (whole pages) or copied, and a segment's
    /// straggling tail past them (under a page). Returns how many bytes
    /// came, 0 at the end of the stream. For a byte stream, where every
    /// queued byte is the receiver's (`recv_exact` is for messages).
    pub fn recv_some(&mut self, max: usize) -> io::Result<usize> {
        self.pieces.clear();
        if self.copy.len() < max + PAGE {
            self.copy.resize(max + PAGE, 0);
        }
        loop {
            let want = (max / PAGE * PAGE).min(self.len);
            let mut skip = max;
            if want > 0 {
                let zc = match self.zerocopy(0, want, 0, PAGE - 1) {
                    // The end of the stream, with nothing queued.
                    Err(e) if e.raw_os_error() == Some(libc::EIO) => return Ok(0),
                    r => r?,
                };
                let got = self.record(0, zc.length as usize, 0, zc.copybuf_len.max(0) as usize);
                if got > 0 {
                    return Ok(got);
                }
                skip = (zc.recv_skip_hint as usize).min(max);
                if skip == 0 {
                    self.wait_readable()?;
                    continue;
                }
            }
            let k = (&*self.sock).read(&mut self.copy[..skip])?;
            return Ok(self.record(0, 0, 0, k));
        }
    }

    /// The last message, in order, as slices of the mapping and the copy
    /// buffer. They live until the next receive (which may unmap pages).
    pub fn slices(&self) -> Vec<&[u8]> {
        self.pieces
            .iter()
            .map(|p| match *p {
                // SAFETY: the kernel mapped these `len` bytes at `off`
                // inside our mapping, read-only for us; they stay mapped
                // until the next getsockopt, which needs &mut self.
                Piece::Mapped(off, len) => unsafe {
                    std::slice::from_raw_parts(self.base.add(off), len)
                },
                Piece::Copied(off, len) => &self.copy[off..off + len],
            })
            .collect()
    }

    /// The same, ready for a vectored send.
    pub fn io_slices(&self) -> Vec<IoSlice<'_>> {
        self.slices().into_iter().map(IoSlice::new).collect()
    }

    /// Bytes of the last message that came mapped.
    pub fn mapped(&self) -> usize {
        self.pieces
            .iter()
            .map(|p| match *p {
                Piece::Mapped(_, len) => len,
                Piece::Copied(..) => 0,
            })
            .sum()
    }

    /// Sends the last message back on the socket.
    pub fn echo(&self) -> io::Result<()> {
        let mut iov = self.io_slices();
        let mut bufs = &mut iov[..];
        while !bufs.is_empty() {
            let k = (&*self.sock).write_vectored(bufs)?;
            if k == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            IoSlice::advance_slices(&mut bufs, k);
        }
        Ok(())
    }

    /// Whether any of the last message was copied (into the buffer the
    /// next receive reuses) rather than mapped.
    pub fn copied_any(&self) -> bool {
        self.pieces.iter().any(|p| matches!(p, Piece::Copied(..)))
    }

    /// Whether the last message equals `want`.
    pub fn equals(&self, want: &[u8]) -> bool {
        let mut at = 0;
        for s in self.slices() {
            if want.get(at..at + s.len()) != Some(s) {
                return false;
            }
            at += s.len();
        }
        at == want.len()
    }
}

impl Drop for MappedReceiver<'_> {
    fn drop(&mut self) {
        // SAFETY: our own mapping, of the length mapped; no slice of it
        // outlives self.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::time::{Duration, Instant};

    /// Over loopback nothing is mappable (the sender's pages are not whole
    /// received pages), so this checks the fallback and the bookkeeping:
    /// every byte arrives, in order, through copies.
    #[test]
    fn messages_arrive_whole_and_in_order_over_loopback() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let msg: Vec<u8> = (0..70_001u32).map(|i| (i * 7 + 3) as u8).collect();
        let sent = msg.clone();
        let t = std::thread::spawn(move || {
            let mut c = TcpStream::connect(addr).unwrap();
            for _ in 0..3 {
                c.write_all(&sent).unwrap();
                let mut back = vec![0u8; sent.len()];
                c.read_exact(&mut back).unwrap();
                assert_eq!(back, sent);
            }
        });
        let (s, _) = l.accept().unwrap();
        let mut rx = MappedReceiver::new(&s, 128 << 10).unwrap();
        // An empty message is there at once, and empty.
        rx.recv_exact(0).unwrap();
        assert!(rx.equals(&[]));
        for _ in 0..3 {
            rx.recv_exact(msg.len()).unwrap();
            assert!(rx.equals(&msg));
            assert!(!rx.equals(&msg[1..]));
            rx.echo().unwrap();
        }
        t.join().unwrap();
    }

    /// CPU time this thread has used.
    fn thread_cpu() -> Duration {
        let mut t = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a valid timespec to write.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
        Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
    }

    /// A MSG_ZEROCOPY completion waiting in the error queue makes the
    /// socket poll as ready; the receiver must still sleep until data
    /// comes, not spin (it did, and a spinning guest is not rung for a
    /// small frame).
    #[test]
    fn waiting_for_a_message_sleeps_with_completions_pending() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let late = Duration::from_millis(300);
        let t = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let mut req = [0u8; 4096];
            c.read_exact(&mut req).unwrap();
            std::thread::sleep(late);
            c.write_all(&req).unwrap();
        });
        let s = TcpStream::connect(addr).unwrap();
        let mut tx = crate::zerocopy::Sender::new(&s).unwrap();
        let msg = vec![7u8; 4096];
        tx.send_all(&mut [IoSlice::new(&msg)]).unwrap();
        let mut p = libc::pollfd {
            fd: s.as_raw_fd(),
            events: 0,
            revents: 0,
        };
        // The completion arrives once the peer has the data (ACK).
        // SAFETY: one valid pollfd, writable, for the length passed.
        unsafe { libc::poll(&mut p, 1, 5000) };
        assert!(p.revents & libc::POLLERR != 0, "no completion queued");
        let mut rx = MappedReceiver::new(&s, 64 << 10).unwrap();
        let (t0, cpu0) = (Instant::now(), thread_cpu());
        rx.recv_exact(4096).unwrap();
        let (waited, busy) = (t0.elapsed(), thread_cpu() - cpu0);
        assert!(rx.equals(&msg));
        assert!(waited >= late / 2, "came back after {waited:?}");
        assert!(
            busy < waited / 4,
            "busy {busy:?} of the {waited:?} waited for the message"
        );
        tx.finish(Duration::from_secs(5)).unwrap();
        t.join().unwrap();
    }

    #[test]
    fn a_stream_arrives_whole_and_ends() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let data: Vec<u8> = (0..300_007u32).map(|i| (i * 13 + 5) as u8).collect();
        let sent = data.clone();
        let t = std::thread::spawn(move || {
            let mut c = TcpStream::connect(addr).unwrap();
            c.write_all(&sent).unwrap();
        });
        let (s, _) = l.accept().unwrap();
        let mut rx = MappedReceiver::new(&s, 64 << 10).unwrap();
        let mut got = Vec::new();
        loop {
            let n = rx.recv_some(64 << 10).unwrap();
            if n == 0 {
                break;
            }
            let before = got.len();
            for sl in rx.slices() {
                got.extend_from_slice(sl);
            }
            assert_eq!(got.len() - before, n);
        }
        t.join().unwrap();
        assert!(got == data, "{} bytes of {}", got.len(), data.len());
    }
}
