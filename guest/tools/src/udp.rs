//! UDP datagrams of an exact size, for checking that the channel carries
//! them whole: busybox's nc cannot choose datagram sizes. The payload is a
//! pattern derived from the sequence number, so the receiver checks every
//! byte of every datagram.

use std::net::UdpSocket;
use std::time::Duration;

/// Byte `i` of datagram `seq`.
pub fn pattern(seq: u32, i: usize) -> u8 {
    (seq as usize).wrapping_mul(31).wrapping_add(i * 7) as u8
}

pub fn fill(seq: u32, buf: &mut [u8]) {
    buf[..4].copy_from_slice(&seq.to_le_bytes());
    for (i, b) in buf.iter_mut().enumerate().skip(4) {
        *b = pattern(seq, i);
    }
}

/// Why a received datagram is wrong, if it is.
pub fn check(buf: &[u8], size: usize) -> Result<u32, String> {
    if buf.len() != size {
        return Err(format!("{} bytes instead of {size}", buf.len()));
    }
    let seq = u32::from_le_bytes(buf[..4].try_into().unwrap());
    match buf
        .iter()
        .enumerate()
        .skip(4)
        .find(|(i, b)| **b != pattern(seq, *i))
    {
        Some((i, _)) => Err(format!("datagram {seq}: byte {i} differs")),
        None => Ok(seq),
    }
}

/// `udp-send ADDR:PORT SIZE COUNT`
pub fn send(to: &str, size: usize, count: u32) -> Result<String, String> {
    let s = UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; size.max(4)];
    for seq in 0..count {
        fill(seq, &mut buf);
        let n = s
            .send_to(&buf, to)
            .map_err(|e| format!("send to {to}: {e}"))?;
        if n != buf.len() {
            return Err(format!("sent {n} of {} bytes", buf.len()));
        }
    }
    Ok(format!("sent {count} datagrams of {size} bytes to {to}"))
}

/// `udp-recv PORT SIZE COUNT`: waits (up to a minute of guest time per
/// datagram) for COUNT datagrams and checks each.
pub fn recv(port: u16, size: usize, count: u32) -> Result<String, String> {
    let s = UdpSocket::bind(("0.0.0.0", port)).map_err(|e| format!("bind {port}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 65536];
    let mut seen = vec![false; count as usize];
    for _ in 0..count {
        let n = s.recv(&mut buf).map_err(|e| format!("receive: {e}"))?;
        let seq = check(&buf[..n], size)?;
        match seen.get_mut(seq as usize) {
            Some(s) if !*s => *s = true,
            _ => return Err(format!("unexpected datagram {seq}")),
        }
    }
    Ok(format!(
        "received {count} datagrams of {size} bytes, every byte as sent"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filled_datagrams_check_and_damage_is_found() {
        let mut b = vec![0u8; 1472];
        fill(9, &mut b);
        assert_eq!(check(&b, 1472), Ok(9));
        assert!(check(&b[..1000], 1472).is_err());
        b[700] ^= 1;
        assert_eq!(check(&b, 1472), Err("datagram 9: byte 700 differs".into()));
    }

    #[test]
    fn over_loopback() {
        let r = std::thread::spawn(|| recv(47001, 4000, 5));
        std::thread::sleep(Duration::from_millis(100));
        send("127.0.0.1:47001", 4000, 5).unwrap();
        assert!(r.join().unwrap().unwrap().starts_with("received 5"));
    }
}
