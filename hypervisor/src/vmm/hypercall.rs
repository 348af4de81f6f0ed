//! Hypercalls: VMCALL with the number in RAX and arguments in RDI, RSI,
//! RDX (`vmlink_abi::hypercall`). Everything a guest passes is checked
//! here; a bad call gets an error code in RAX and changes nothing.

use crate::channel::Channel;
use crate::vm::ram::GuestRam;
use vmlink_abi::hypercall as nr;
use vmlink_abi::{HC_ERR_INVALID, HC_ERR_NO_CHANNEL, HC_ERR_PRIVILEGE, HC_ERR_UNKNOWN};

/// One VMCALL as the guest made it.
#[derive(Clone, Copy, Debug)]
pub struct Call {
    pub nr: u64,
    pub args: [u64; 3],
    pub cpl: u8,
}

/// What the channel calls act on (the real [`Channel`], or a test double).
pub trait ChannelOps {
    fn set_attached(&self, side: usize, attached: bool) -> i64;
    fn doorbell(&self, side: usize) -> i64;
    fn mediated_send(&self, side: usize, frame: &[u8], buf: u64) -> i64;
}

impl ChannelOps for Channel {
    fn set_attached(&self, side: usize, attached: bool) -> i64 {
        Channel::set_attached(self, side, attached)
    }
    fn doorbell(&self, side: usize) -> i64 {
        Channel::doorbell(self, side)
    }
    fn mediated_send(&self, side: usize, frame: &[u8], buf: u64) -> i64 {
        Channel::mediated_send(self, side, frame, buf)
    }
}

/// What the calling VM has: its RAM for the mediated path's
/// frames, its counters for STATS (read only by STATS, since gathering them
/// is not free and doorbells are the fast path), and its side of the
/// channel.
pub struct Caller<'a> {
    pub ram: GuestRam<'a>,
    pub counter: &'a dyn Fn(usize) -> Option<u64>,
    pub channel: Option<(&'a dyn ChannelOps, usize)>,
}

/// Answers `call` from `caller`.
pub fn dispatch(call: Call, caller: &Caller) -> i64 {
    let channel = caller.channel;
    if call.nr > nr::MAX {
        return HC_ERR_UNKNOWN;
    }
    // Guest user space must not ring doorbells or detach the driver.
    if call.cpl != 0 {
        return HC_ERR_PRIVILEGE;
    }
    // Every call in this ABI takes fewer than three arguments; the unused
    // ones must be zero so they can be given a meaning later.
    let used = match call.nr {
        nr::DOORBELL | nr::STATS => 1,
        nr::MEDIATED_SEND => 3,
        _ => 0,
    };
    if call.args[used..].iter().any(|&a| a != 0) {
        return HC_ERR_INVALID;
    }
    match call.nr {
        nr::VERSION => return i64::from(vmlink_abi::ABI_VERSION),
        nr::STATS => {
            return usize::try_from(call.args[0])
                .ok()
                .and_then(|i| (caller.counter)(i))
                .map_or(HC_ERR_INVALID, |v| v.min(i64::MAX as u64) as i64)
        }
        _ => {}
    }
    let Some((ch, side)) = channel else {
        return HC_ERR_NO_CHANNEL;
    };
    match call.nr {
        nr::CHANNEL_ATTACH => ch.set_attached(side, true),
        nr::CHANNEL_DETACH => ch.set_attached(side, false),
        // One channel per VM: its number is 0.
        nr::DOORBELL if call.args[0] != 0 => HC_ERR_INVALID,
        nr::DOORBELL => ch.doorbell(side),
        nr::MEDIATED_SEND => {
            let [gpa, len, buf] = call.args;
            match caller.ram.get(gpa, len) {
                Some(f) => ch.mediated_send(side, f, buf),
                None => HC_ERR_INVALID,
            }
        }
        _ => HC_ERR_UNKNOWN,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use vmlink_abi::hypercall::stat;

    #[derive(Default)]
    struct Recorder(RefCell<Vec<(usize, String)>>);

    impl ChannelOps for Recorder {
        fn set_attached(&self, side: usize, attached: bool) -> i64 {
            let what = if attached { "attach" } else { "detach" };
            self.0.borrow_mut().push((side, what.into()));
            0
        }
        fn doorbell(&self, side: usize) -> i64 {
            self.0.borrow_mut().push((side, "doorbell".into()));
            0
        }
        fn mediated_send(&self, side: usize, frame: &[u8], buf: u64) -> i64 {
            let what = format!("send {:?} into {buf}", frame);
            self.0.borrow_mut().push((side, what));
            0
        }
    }

    fn call(nr: u64, args: [u64; 3]) -> Call {
        Call { nr, args, cpl: 0 }
    }

    const COUNTERS: [u64; stat::COUNT as usize] = [
        100,
        20,
        3,
        4,
        u64::MAX,
        7_000_000,
        60,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        40,
    ];

    const RAM: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];

    fn caller(r: &Recorder, side: usize) -> Caller<'_> {
        Caller {
            ram: GuestRam::flat(&RAM),
            counter: &|i| COUNTERS.get(i).copied(),
            channel: Some((r as &dyn ChannelOps, side)),
        }
    }

    #[test]
    fn mediated_frames_are_read_from_either_piece_of_ram() {
        let r = Recorder::default();
        let high = [40u8, 41, 42, 43];
        let c = Caller {
            ram: GuestRam::split(&RAM, 0x1000, &high),
            ..caller(&r, 0)
        };
        assert_eq!(dispatch(call(nr::MEDIATED_SEND, [0x1001, 2, 5]), &c), 0);
        // Across the gap, past the high piece.
        assert_eq!(
            dispatch(call(nr::MEDIATED_SEND, [15, 2, 5]), &c),
            HC_ERR_INVALID
        );
        assert_eq!(
            dispatch(call(nr::MEDIATED_SEND, [0x1003, 2, 5]), &c),
            HC_ERR_INVALID
        );
        assert_eq!(
            r.0.borrow().clone(),
            vec![(0, "send [41, 42] into 5".to_string())]
        );
    }

    #[test]
    fn good_calls_reach_the_channel() {
        let r = Recorder::default();
        let c = caller(&r, 1);
        assert_eq!(
            dispatch(call(nr::VERSION, [0; 3]), &c),
            i64::from(vmlink_abi::ABI_VERSION)
        );
        assert_eq!(dispatch(call(nr::CHANNEL_ATTACH, [0; 3]), &c), 0);
        assert_eq!(dispatch(call(nr::DOORBELL, [0; 3]), &c), 0);
        assert_eq!(dispatch(call(nr::MEDIATED_SEND, [13, 3, 9]), &c), 0);
        assert_eq!(dispatch(call(nr::CHANNEL_DETACH, [0; 3]), &c), 0);
        let got: Vec<_> = r.0.borrow().clone();
        assert_eq!(
            got,
            vec![
                (1, "attach".to_string()),
                (1, "doorbell".to_string()),
                (1, "send [13, 14, 15] into 9".to_string()),
                (1, "detach".to_string())
            ]
        );
        assert_eq!(dispatch(call(nr::STATS, [stat::EXITS, 0, 0]), &c), 100);
        assert_eq!(dispatch(call(nr::STATS, [stat::DOORBELLS, 0, 0]), &c), 4);
        assert_eq!(
            dispatch(call(nr::STATS, [stat::MEDIATED_SENDS, 0, 0]), &c),
            i64::MAX
        );
        assert_eq!(
            dispatch(call(nr::STATS, [stat::HALTED_CYCLES, 0, 0]), &c),
            7_000_000
        );
        assert_eq!(dispatch(call(nr::STATS, [stat::EXITS_OTHER, 0, 0]), &c), 40);
    }

    #[test]
    fn bad_calls_get_an_error_and_change_nothing() {
        let r = Recorder::default();
        let c = caller(&r, 0);
        for n in [nr::MAX + 1, 12345, u64::MAX] {
            assert_eq!(dispatch(call(n, [0; 3]), &c), HC_ERR_UNKNOWN);
        }
        // Another channel number, stray arguments.
        assert_eq!(dispatch(call(nr::DOORBELL, [1, 0, 0]), &c), HC_ERR_INVALID);
        assert_eq!(
            dispatch(call(nr::DOORBELL, [u64::MAX, 0, 0]), &c),
            HC_ERR_INVALID
        );
        assert_eq!(dispatch(call(nr::DOORBELL, [0, 0, 9]), &c), HC_ERR_INVALID);
        assert_eq!(
            dispatch(call(nr::CHANNEL_ATTACH, [0, 1, 0]), &c),
            HC_ERR_INVALID
        );
        assert_eq!(dispatch(call(nr::VERSION, [7, 0, 0]), &c), HC_ERR_INVALID);
        assert_eq!(dispatch(call(nr::STATS, [0, 1, 0]), &c), HC_ERR_INVALID);
        for which in [stat::COUNT, u64::MAX] {
            assert_eq!(dispatch(call(nr::STATS, [which, 0, 0]), &c), HC_ERR_INVALID);
        }
        // Frames outside RAM, overflowing ranges.
        for (gpa, len) in [(14, 3), (16, 1), (u64::MAX, 2), (1 << 40, 1), (8, u64::MAX)] {
            assert_eq!(
                dispatch(call(nr::MEDIATED_SEND, [gpa, len, 0]), &c),
                HC_ERR_INVALID,
                "{gpa:#x}+{len:#x}"
            );
        }
        // User mode.
        for n in [nr::VERSION, nr::CHANNEL_ATTACH, nr::DOORBELL, nr::STATS] {
            let u = Call {
                nr: n,
                args: [0; 3],
                cpl: 3,
            };
            assert_eq!(dispatch(u, &c), HC_ERR_PRIVILEGE);
        }
        assert!(r.0.borrow().is_empty());
        // No channel in this VM.
        let none = Caller {
            ram: GuestRam::flat(&RAM),
            counter: &|_| Some(0),
            channel: None,
        };
        assert_eq!(
            dispatch(call(nr::DOORBELL, [0; 3]), &none),
            HC_ERR_NO_CHANNEL
        );
        assert_eq!(
            dispatch(call(nr::MEDIATED_SEND, [0, 1, 0]), &none),
            HC_ERR_NO_CHANNEL
        );
        assert_eq!(
            dispatch(call(nr::VERSION, [0; 3]), &none),
            i64::from(vmlink_abi::ABI_VERSION)
        );
    }
}
