//! Hypercalls: VMCALL with the number in RAX and arguments in RDI, RSI,
//! RDX (`vmlink_abi::hypercall`). Everything a guest passes is checked
//! here; a bad call gets an error code in RAX and changes nothing.

use crate::channel::Channel;
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
}

impl ChannelOps for Channel {
    fn set_attached(&self, side: usize, attached: bool) -> i64 {
        Channel::set_attached(self, side, attached)
    }
    fn doorbell(&self, side: usize) -> i64 {
        Channel::doorbell(self, side)
    }
}

/// Answers `call` for a VM on `side` of `channel` (or without one).
pub fn dispatch(call: Call, channel: Option<(&dyn ChannelOps, usize)>) -> i64 {
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
        nr::DOORBELL => 1,
        nr::MEDIATED_SEND => 2,
        _ => 0,
    };
    if call.args[used..].iter().any(|&a| a != 0) {
        return HC_ERR_INVALID;
    }
    if call.nr == nr::VERSION {
        return i64::from(vmlink_abi::ABI_VERSION);
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
        // The mediated path arrives with the benchmarks (issue 6).
        _ => HC_ERR_UNKNOWN,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[derive(Default)]
    struct Recorder(RefCell<Vec<(usize, &'static str)>>);

    impl ChannelOps for Recorder {
        fn set_attached(&self, side: usize, attached: bool) -> i64 {
            let what = if attached { "attach" } else { "detach" };
            self.0.borrow_mut().push((side, what));
            0
        }
        fn doorbell(&self, side: usize) -> i64 {
            self.0.borrow_mut().push((side, "doorbell"));
            0
        }
    }

    fn call(nr: u64, args: [u64; 3]) -> Call {
        Call { nr, args, cpl: 0 }
    }

    #[test]
    fn good_calls_reach_the_channel() {
        let r = Recorder::default();
        let ch = Some((&r as &dyn ChannelOps, 1));
        assert_eq!(
            dispatch(call(nr::VERSION, [0; 3]), ch),
            i64::from(vmlink_abi::ABI_VERSION)
        );
        assert_eq!(dispatch(call(nr::CHANNEL_ATTACH, [0; 3]), ch), 0);
        assert_eq!(dispatch(call(nr::DOORBELL, [0; 3]), ch), 0);
        assert_eq!(dispatch(call(nr::CHANNEL_DETACH, [0; 3]), ch), 0);
        assert_eq!(
            *r.0.borrow(),
            vec![(1, "attach"), (1, "doorbell"), (1, "detach")]
        );
    }

    #[test]
    fn bad_calls_get_an_error_and_change_nothing() {
        let r = Recorder::default();
        let ch = Some((&r as &dyn ChannelOps, 0));
        for n in [nr::MAX + 1, 12345, u64::MAX] {
            assert_eq!(dispatch(call(n, [0; 3]), ch), HC_ERR_UNKNOWN);
        }
        // Another channel number, stray arguments.
        assert_eq!(dispatch(call(nr::DOORBELL, [1, 0, 0]), ch), HC_ERR_INVALID);
        assert_eq!(
            dispatch(call(nr::DOORBELL, [u64::MAX, 0, 0]), ch),
            HC_ERR_INVALID
        );
        assert_eq!(dispatch(call(nr::DOORBELL, [0, 0, 9]), ch), HC_ERR_INVALID);
        assert_eq!(
            dispatch(call(nr::CHANNEL_ATTACH, [0, 1, 0]), ch),
            HC_ERR_INVALID
        );
        assert_eq!(dispatch(call(nr::VERSION, [7, 0, 0]), ch), HC_ERR_INVALID);
        // User mode.
        for n in [nr::VERSION, nr::CHANNEL_ATTACH, nr::DOORBELL] {
            let c = Call {
                nr: n,
                args: [0; 3],
                cpl: 3,
            };
            assert_eq!(dispatch(c, ch), HC_ERR_PRIVILEGE);
        }
        // Not implemented yet: refused, not crashed.
        assert_eq!(
            dispatch(call(nr::MEDIATED_SEND, [0x1000, 64, 0]), ch),
            HC_ERR_UNKNOWN
        );
        assert!(r.0.borrow().is_empty());
        // No channel in this VM.
        assert_eq!(
            dispatch(call(nr::DOORBELL, [0; 3]), None),
            HC_ERR_NO_CHANNEL
        );
        assert_eq!(
            dispatch(call(nr::VERSION, [0; 3]), None),
            i64::from(vmlink_abi::ABI_VERSION)
        );
    }
}
