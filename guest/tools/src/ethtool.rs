//! A network device's `ethtool -S` counters, read with the SIOCETHTOOL
//! ioctl in this process.
//!
//! The benchmark reads the hypervisor's counters before and after each
//! transfer. Running the `ethtool` program for that started a glibc
//! process inside the measured interval, and glibc's start-up CPUIDs cost
//! 55 VM exits per reading: about 0.3 exits per bulk packet, on every
//! path, that the channel did not cause.

use std::io;
use std::os::fd::AsRawFd;

const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_GSTRINGS: u32 = 0x1b;
const ETHTOOL_GSTATS: u32 = 0x1d;
const ETHTOOL_GSSET_INFO: u32 = 0x37;
const ETHTOOL_GPFLAGS: u32 = 0x27;
const ETHTOOL_SPFLAGS: u32 = 0x28;
const ETH_SS_STATS: u32 = 1;
const ETH_SS_PRIV_FLAGS: u32 = 2;
const ETH_GSTRING_LEN: usize = 32;

/// `struct ifreq` as SIOCETHTOOL reads it: the name, then a pointer to the
/// ethtool command (the rest of the union is padding here).
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    data: *mut libc::c_void,
    _pad: [u8; 16],
}

/// A device and the socket its ethtool commands go through.
struct Device<'a> {
    name: &'a str,
    sock: std::net::UdpSocket,
}

impl Device<'_> {
    fn open(name: &str) -> io::Result<Device<'_>> {
        if name.len() >= libc::IFNAMSIZ {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "device name too long",
            ));
        }
        Ok(Device {
            name,
            sock: std::net::UdpSocket::bind("0.0.0.0:0")?,
        })
    }

    /// Runs one ethtool command; `cmd` is the command's buffer, starting
    /// with its `u32` command number as the kernel's structs do.
    fn ioctl(&self, cmd: &mut [u64]) -> io::Result<()> {
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            data: cmd.as_mut_ptr().cast(),
            _pad: [0; 16],
        };
        req.name[..self.name.len()].copy_from_slice(self.name.as_bytes());
        // SAFETY: `req` is a complete ifreq naming the device (`open`
        // checked the name fits with its NUL), and its data pointer is
        // `cmd`, a live, writable, 8-byte-aligned buffer that the callers
        // size for what the command returns (the counts come from the
        // driver's own ETHTOOL_GSSET_INFO answer).
        let r = unsafe { libc::ioctl(self.sock.as_raw_fd(), SIOCETHTOOL as _, &mut req) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// How many strings the device has in `set` (statistics, private
    /// flags).
    fn count(&self, set: u32) -> io::Result<usize> {
        // struct ethtool_sset_info: cmd, reserved, sset_mask, data[1].
        let mut b = [0u64; 3];
        b[0] = u64::from(ETHTOOL_GSSET_INFO);
        b[1] = 1 << set;
        self.ioctl(&mut b)?;
        if b[1] & (1 << set) == 0 {
            return Ok(0);
        }
        Ok((b[2] & 0xffff_ffff) as usize)
    }

    /// The `n` names of `set`.
    fn names(&self, set: u32, n: usize) -> io::Result<Vec<String>> {
        // struct ethtool_gstrings: cmd, string_set, len, then the strings.
        let mut b = vec![0u64; 2 + n * ETH_GSTRING_LEN / 8];
        b[0] = u64::from(ETHTOOL_GSTRINGS) | u64::from(set) << 32;
        b[1] = n as u64;
        self.ioctl(&mut b)?;
        let bytes: Vec<u8> = b[1..].iter().flat_map(|w| w.to_ne_bytes()).collect();
        // The strings start after the 4-byte `len`.
        Ok(bytes[4..4 + n * ETH_GSTRING_LEN]
            .chunks_exact(ETH_GSTRING_LEN)
            .map(|s| {
                let end = s.iter().position(|&c| c == 0).unwrap_or(s.len());
                String::from_utf8_lossy(&s[..end]).into_owned()
            })
            .collect())
    }

    /// The values of the device's `n` statistics, in [`Self::names`] order.
    fn values(&self, n: usize) -> io::Result<Vec<u64>> {
        // struct ethtool_stats: cmd, n_stats, then the u64 values.
        let mut b = vec![0u64; 1 + n];
        b[0] = u64::from(ETHTOOL_GSTATS) | (n as u64) << 32;
        self.ioctl(&mut b)?;
        Ok(b[1..].to_vec())
    }
}

/// The statistics' names and values: one socket and one count for both.
pub fn stats(dev: &str) -> io::Result<Vec<(String, u64)>> {
    let d = Device::open(dev)?;
    let n = d.count(ETH_SS_STATS)?;
    Ok(d.names(ETH_SS_STATS, n)?
        .into_iter()
        .zip(d.values(n)?)
        .collect())
}

/// The bit of the private flag `flag` in the device's flag word.
fn flag_bit(d: &Device, flag: &str) -> io::Result<u32> {
    let n = d.count(ETH_SS_PRIV_FLAGS)?;
    let names = d.names(ETH_SS_PRIV_FLAGS, n)?;
    match names.iter().position(|f| f == flag) {
        Some(i) if i < 32 => Ok(1 << i),
        _ => Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "{} has no private flag {flag} (it has: {})",
                d.name,
                names.join(", ")
            ),
        )),
    }
}

/// `struct ethtool_value` for GPFLAGS/SPFLAGS: cmd, then the flag word.
fn flags_word(d: &Device) -> io::Result<u32> {
    let mut b = [u64::from(ETHTOOL_GPFLAGS)];
    d.ioctl(&mut b)?;
    Ok((b[0] >> 32) as u32)
}

/// Whether the device's private flag `flag` is on (`ethtool
/// --show-priv-flags`).
pub fn flag(dev: &str, flag: &str) -> io::Result<bool> {
    let d = Device::open(dev)?;
    let bit = flag_bit(&d, flag)?;
    Ok(flags_word(&d)? & bit != 0)
}

/// Turns the device's private flag `flag` on or off (`ethtool
/// --set-priv-flags DEV FLAG on|off`); the driver may refuse. Returns
/// whether the flag is on afterwards, read back from the driver.
pub fn set_flag(dev: &str, flag: &str, on: bool) -> io::Result<bool> {
    let d = Device::open(dev)?;
    let bit = flag_bit(&d, flag)?;
    let word = flags_word(&d)?;
    let word = if on { word | bit } else { word & !bit };
    let mut b = [u64::from(ETHTOOL_SPFLAGS) | u64::from(word) << 32];
    d.ioctl(&mut b)?;
    Ok(flags_word(&d)? & bit != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_device_is_an_error() {
        assert!(stats("no-such-dev0").is_err());
        assert!(stats("a-name-longer-than-ifnamsiz").is_err());
        assert!(flag("no-such-dev0", "rx-copy").is_err());
        assert!(set_flag("no-such-dev0", "rx-copy", true).is_err());
    }
}
