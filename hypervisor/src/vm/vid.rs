//! Which pending vectors a CPU that delivers interrupts itself (VT-x
//! virtual-interrupt delivery) is shown before an entry.
//!
//! The architecture lets the CPU hold any number of pending vectors and
//! deliver each once the guest can take it. vmlink shows it less: nothing
//! while the guest cannot take an interrupt (RFLAGS.IF clear, an STI or
//! MOV SS shadow, an event being injected), and at most one vector when it
//! can. A vector left pending inside the guest gets re-evaluated there
//! whenever the guest ends another (EOI virtualization), most often in a
//! handler with IF clear; Bochs 2.7 then delivers it, IF clear or not, as
//! soon as a host interrupt arrives (its `InterruptAcknowledge` asks only
//! whether a virtual interrupt is pending, not whether it is masked), and a
//! vector delivered at the IRETQ of Linux's return path is taken for a
//! faulting IRET and kills the guest. Showing nothing that could be left
//! pending closes that window on every CPU, at the price of an exit where
//! a real CPU would have delivered on its own: an interrupt window for
//! every vector that arrives while IF is clear (common: a guest spends
//! much of its time so, about 190 windows in a Linux boot and 2000 per
//! 16 MiB on the benchmarks' path 1), and the EOI of the vector shown when
//! more were waiting (rare: a second vector must arrive while the first is
//! being handled).

use crate::devices::vectors::VectorSet;
use crate::vcpu::ApicState;

/// What the next entry shows the CPU, and what brings the rest in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Exposure {
    /// Vectors for the virtual IRR (and the highest for RVI).
    pub shown: VectorSet,
    /// Pending vectors kept out of the page until the next exit.
    pub withheld: VectorSet,
    /// Exit as soon as the guest can take an interrupt.
    pub window: bool,
    /// A vector whose EOI must exit, so that what waits behind it goes in.
    pub eoi_exit: Option<u8>,
}

/// `open`: the guest can take an external interrupt at its next
/// instruction.
pub fn expose(s: &ApicState, open: bool) -> Exposure {
    let Some(top) = s.irr.highest() else {
        return Exposure::default();
    };
    let hold_all = |window, eoi_exit| Exposure {
        shown: VectorSet::EMPTY,
        withheld: s.irr,
        window,
        eoi_exit,
    };
    // A software-disabled APIC delivers nothing; the vectors wait for it
    // to be enabled, which is a register write the caller sees.
    if !s.enabled {
        return hold_all(false, None);
    }
    if !open {
        return hold_all(true, None);
    }
    // A vector in service of the same or a higher class holds `top` back
    // until its EOI, which usually comes with IF clear: have that EOI exit
    // instead. (A window would be no use: IF is already set.)
    if let Some(busy) = s.isr.highest().filter(|&v| v >> 4 >= top >> 4) {
        return hold_all(false, Some(busy));
    }
    let mut withheld = s.irr;
    withheld.remove(top);
    Exposure {
        shown: VectorSet::of(&[top]),
        withheld,
        window: false,
        eoi_exit: (!withheld.is_empty()).then_some(top),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(irr: &[u8], isr: &[u8]) -> ApicState {
        ApicState {
            irr: VectorSet::of(irr),
            isr: VectorSet::of(isr),
            enabled: true,
            ..ApicState::default()
        }
    }

    #[test]
    fn nothing_pending_shows_nothing_and_asks_for_nothing() {
        assert_eq!(expose(&state(&[], &[0x40]), false), Exposure::default());
        assert_eq!(expose(&state(&[], &[]), true), Exposure::default());
    }

    #[test]
    fn a_guest_that_cannot_take_an_interrupt_is_shown_none_and_watched() {
        let e = expose(&state(&[0xec, 0x41], &[]), false);
        assert_eq!(e.shown, VectorSet::EMPTY);
        assert_eq!(e.withheld, VectorSet::of(&[0xec, 0x41]));
        assert!(e.window);
        assert_eq!(e.eoi_exit, None);
    }

    #[test]
    fn an_open_guest_is_shown_one_vector_and_its_eoi_brings_the_next() {
        let e = expose(&state(&[0xec, 0x41], &[]), true);
        assert_eq!(e.shown, VectorSet::of(&[0xec]));
        assert_eq!(e.withheld, VectorSet::of(&[0x41]));
        assert!(!e.window);
        assert_eq!(e.eoi_exit, Some(0xec));

        let alone = expose(&state(&[0x41], &[]), true);
        assert_eq!(alone.shown, VectorSet::of(&[0x41]));
        assert_eq!(alone.withheld, VectorSet::EMPTY);
        assert_eq!(alone.eoi_exit, None, "a lone vector costs no exit");
    }

    #[test]
    fn a_vector_behind_one_in_service_waits_for_that_eoi() {
        // Same class (0xe_) as the vector in service: not deliverable.
        let e = expose(&state(&[0xe1], &[0xec]), true);
        assert_eq!(e.shown, VectorSet::EMPTY);
        assert_eq!(e.withheld, VectorSet::of(&[0xe1]));
        assert!(!e.window);
        assert_eq!(e.eoi_exit, Some(0xec));
        // A higher class nests as the architecture allows.
        let nested = expose(&state(&[0xfb], &[0xec]), true);
        assert_eq!(nested.shown, VectorSet::of(&[0xfb]));
        assert_eq!(nested.eoi_exit, None);
    }

    #[test]
    fn a_disabled_apic_holds_everything_without_a_window() {
        let mut s = state(&[0xec], &[]);
        s.enabled = false;
        for open in [false, true] {
            let e = expose(&s, open);
            assert_eq!(e.shown, VectorSet::EMPTY);
            assert_eq!(e.withheld, VectorSet::of(&[0xec]));
            assert!(!e.window, "a window would exit at once, forever");
        }
    }
}
