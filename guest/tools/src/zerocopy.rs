//! MSG_ZEROCOPY sends (Linux 4.14+, `Documentation/networking/msg_zerocopy.rst`):
//! the stack references the sender's pages instead of copying them into
//! socket buffers, so a frame's only copy on the sending side is the one
//! the driver makes into the channel region. Each send is completed later
//! by a notification on the socket's error queue, which also says whether
//! the kernel had to copy after all (a device without scatter-gather, or
//! delivery to a local socket).

use std::io::{self, IoSlice};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// `SO_EE_ORIGIN_ZEROCOPY` and `SO_EE_CODE_ZEROCOPY_COPIED` from
/// `linux/errqueue.h` (the libc crate does not export the code).
const ORIGIN_ZEROCOPY: u8 = 5;
const CODE_COPIED: u8 = 1;

/// A socket sending with MSG_ZEROCOPY, and what its completions said.
pub struct Sender<'a> {
    sock: &'a TcpStream,
    /// Sends issued (each gets one completion number, in order).
    pub sends: u32,
    /// Sends whose completion has arrived.
    pub completed: u32,
    /// Completed sends the kernel copied anyway.
    pub copied: u32,
}

impl<'a> Sender<'a> {
    /// Turns SO_ZEROCOPY on; the error says why the kernel refused.
    pub fn new(sock: &'a TcpStream) -> io::Result<Self> {
        let one: libc::c_int = 1;
        // SAFETY: a valid socket descriptor, and an option value that is a
        // c_int living across the call with its size passed alongside.
        let r = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ZEROCOPY,
                (&one as *const libc::c_int).cast(),
                core::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Sender {
            sock,
            sends: 0,
            completed: 0,
            copied: 0,
        })
    }

    /// Sends some of `data`, blocking; returns how much went. `data` is
    /// 'static and shared, so it never changes: pages the stack still
    /// references after the call keep the bytes that were sent.
    pub fn send(&mut self, data: &'static [u8]) -> io::Result<usize> {
        self.reap(false)?;
        self.send_once(&mut [IoSlice::new(data)])
    }

    /// Sends all of `bufs` with MSG_ZEROCOPY, blocking. The stack reads
    /// the bytes until the sends complete (retransmissions included): the
    /// caller keeps them unchanged until [`finish`](Self::finish).
    pub fn send_all(&mut self, bufs: &mut [IoSlice<'_>]) -> io::Result<()> {
        let mut bufs = bufs;
        while !bufs.is_empty() {
            let k = self.send_once(&mut *bufs)?;
            IoSlice::advance_slices(&mut bufs, k);
        }
        Ok(())
    }

    /// One MSG_ZEROCOPY `sendmsg` of `bufs`, blocking, retried after an
    /// interruption and after running out of locked memory; returns how
    /// much went.
    fn send_once(&mut self, bufs: &mut [IoSlice<'_>]) -> io::Result<usize> {
        loop {
            // SAFETY: IoSlice is ABI-compatible with iovec; the msghdr
            // points at `bufs`, live slices, for the call's duration. Pages
            // the stack keeps after it returns are pinned by the kernel.
            let r = unsafe {
                let mut m: libc::msghdr = core::mem::zeroed();
                m.msg_iov = bufs.as_mut_ptr().cast();
                m.msg_iovlen = bufs.len() as _;
                libc::sendmsg(self.sock.as_raw_fd(), &m, libc::MSG_ZEROCOPY)
            };
            if r >= 0 {
                self.sends += 1;
                return Ok(r as usize);
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                // Out of locked-memory budget for pinned pages: wait for
                // completions, which release it.
                Some(libc::ENOBUFS) => self.reap(true)?,
                Some(libc::EINTR) => {}
                _ => return Err(e),
            }
        }
    }

    /// Reads the completions already queued, without waiting.
    pub fn reap_queued(&mut self) -> io::Result<()> {
        self.reap(false)
    }

    /// Waits (at most `limit`) until every send has completed.
    pub fn finish(&mut self, limit: Duration) -> io::Result<()> {
        let t0 = Instant::now();
        while self.completed < self.sends {
            if t0.elapsed() > limit {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "{} of {} zero-copy sends never completed",
                        self.sends - self.completed,
                        self.sends
                    ),
                ));
            }
            self.reap(true)?;
        }
        Ok(())
    }

    /// Reads the completions waiting on the error queue; with `wait`,
    /// blocks briefly for one first.
    fn reap(&mut self, wait: bool) -> io::Result<()> {
        if wait {
            let mut p = libc::pollfd {
                fd: self.sock.as_raw_fd(),
                events: 0,
                revents: 0,
            };
            // SAFETY: one valid pollfd; POLLERR is always reported.
            unsafe { libc::poll(&mut p, 1, 100) };
        }
        loop {
            let mut control = [0u64; 32];
            // SAFETY: a zeroed msghdr (no data buffers) pointed at a local,
            // 8-byte aligned control buffer that outlives the call.
            let r = unsafe {
                let mut m: libc::msghdr = core::mem::zeroed();
                m.msg_control = control.as_mut_ptr().cast();
                m.msg_controllen = core::mem::size_of_val(&control) as _;
                let r = libc::recvmsg(
                    self.sock.as_raw_fd(),
                    &mut m,
                    libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT,
                );
                if r >= 0 {
                    self.account(&m);
                }
                r
            };
            if r < 0 {
                let e = io::Error::last_os_error();
                return match e.raw_os_error() {
                    Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(()),
                    _ => Err(e),
                };
            }
        }
    }

    /// Counts the completion ranges in one error-queue message.
    ///
    /// # Safety
    /// `m` was filled by a successful `recvmsg`, so its control buffer
    /// holds `msg_controllen` bytes of well-formed control messages.
    unsafe fn account(&mut self, m: &libc::msghdr) {
        let mut c = libc::CMSG_FIRSTHDR(m);
        while !c.is_null() {
            let ip = ((*c).cmsg_level == libc::SOL_IP && (*c).cmsg_type == libc::IP_RECVERR)
                || ((*c).cmsg_level == libc::SOL_IPV6 && (*c).cmsg_type == libc::IPV6_RECVERR);
            if ip {
                let e: libc::sock_extended_err =
                    core::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                if e.ee_errno == 0 && e.ee_origin == ORIGIN_ZEROCOPY {
                    // ee_info..=ee_data is the range of send numbers done.
                    let n = e.ee_data.wrapping_sub(e.ee_info).wrapping_add(1);
                    self.completed += n;
                    if e.ee_code & CODE_COPIED != 0 {
                        self.copied += n;
                    }
                }
            }
            c = libc::CMSG_NXTHDR(m, c);
        }
    }
}
