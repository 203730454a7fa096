//! Turns on a slot within one server. When several citizens race for one slot, their
//! bookings take turns here before reading it: the first books it and each of the others
//! then reads it taken and is refused (409) at the cost of one read, instead of opening a
//! transaction that waits on the slot's row lock and fails after it. Only work is spared:
//! across servers, and whenever a turn is not taken, the database's row lock and the
//! version check still decide who gets the slot.
//!
//! A turn-holder whose booking or hold committed leaves a [`Taken`] mark for the bookings
//! that were already waiting: they are refused without reading the slot at all. Only those
//! that arrived before the mark was made see it, so each refusal is true of a moment while
//! its request was in flight; a booking that arrives later reads the slot as before.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// Longest a booking waits for its turn; after that it goes on without one (the database
/// still keeps two people out of one slot).
const LONGEST_WAIT: Duration = Duration::from_secs(10);

/// The slots whose turn is taken or awaited.
#[derive(Default)]
pub struct SlotTurns {
    slots: Mutex<HashMap<String, Turns>>,
}

/// One slot's turn.
#[derive(Default)]
struct Turns {
    /// Whether a booking has it.
    held: bool,
    /// Bookings waiting for it.
    waiting: usize,
    /// Wakes one of them when it is given back.
    given_back: Arc<Condvar>,
    /// The last mark left by a holder whose booking or hold committed.
    taken: Option<Taken>,
}

/// What a turn-holder left behind when the slot became someone's: kept for the bookings
/// that were waiting then.
#[derive(Clone, Debug)]
pub struct Taken {
    /// When the slot's booking or hold committed.
    at: Instant,
    /// Why the slot can no longer be taken, for the refusal.
    pub why: &'static str,
    /// The facility of the slot's schedule (the refused actor's rights are checked against it).
    pub organization: Option<String>,
}

/// A slot's turn, held until dropped.
pub struct Turn<'a> {
    turns: &'a SlotTurns,
    slot: Option<String>,
    /// The mark seen on taking the turn, when it was made after this booking arrived.
    seen: Option<Taken>,
    /// The mark this holder leaves when it gives the turn back.
    leaves: Option<Taken>,
}

impl SlotTurns {
    /// Waits for the slot's turn (at most [`LONGEST_WAIT`]) and takes it.
    pub fn take(&self, slot: &str) -> Turn<'_> {
        let arrived = Instant::now();
        let deadline = arrived + LONGEST_WAIT;
        let mut slots = self.slots.lock();
        loop {
            let turns = slots.entry(slot.to_string()).or_default();
            if !turns.held {
                turns.held = true;
                return Turn {
                    turns: self,
                    slot: Some(slot.to_string()),
                    seen: turns.taken.clone().filter(|t| t.at >= arrived),
                    leaves: None,
                };
            }
            turns.waiting += 1;
            let given_back = turns.given_back.clone();
            let timed_out = given_back.wait_until(&mut slots, deadline).timed_out();
            // Still there: an entry with bookings waiting is never removed.
            let turns = slots.entry(slot.to_string()).or_default();
            turns.waiting -= 1;
            if timed_out && turns.held {
                // Goes on without a turn; the holder gives it back to the others.
                return Turn {
                    turns: self,
                    slot: None,
                    seen: None,
                    leaves: None,
                };
            }
        }
    }

    /// Slots whose turn is taken or awaited.
    #[cfg(test)]
    fn busy(&self) -> usize {
        self.slots.lock().len()
    }
}

impl Turn<'_> {
    /// The slot became someone's while this booking waited for its turn: it can be
    /// refused at once.
    pub fn taken_meanwhile(&self) -> Option<&Taken> {
        self.seen.as_ref()
    }

    /// Notes that this holder's booking or hold of the slot committed: the bookings waiting
    /// now are refused with `why` when their turn comes.
    pub fn leave_taken(&mut self, why: &'static str, organization: Option<String>) {
        self.leaves = Some(Taken {
            at: Instant::now(),
            why,
            organization,
        });
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let Some(slot) = self.slot.take() else {
            return;
        };
        let mut slots = self.turns.slots.lock();
        if let Some(turns) = slots.get_mut(&slot) {
            turns.held = false;
            if let Some(mark) = self.leaves.take() {
                turns.taken = Some(mark);
            }
            if turns.waiting == 0 {
                slots.remove(&slot);
            } else {
                turns.given_back.notify_one();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn bookings_of_one_slot_take_turns_and_leave_nothing_behind() {
        let turns = SlotTurns::default();
        let inside = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    for _ in 0..50 {
                        let _turn = turns.take("slot-1");
                        let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::yield_now();
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                });
            }
        });
        assert_eq!(most.load(Ordering::SeqCst), 1, "two bookings of one slot at once");
        assert_eq!(turns.busy(), 0, "a turn left taken");
    }

    /// Waits (bounded) until `n` bookings wait for the slot's turn.
    fn until_waiting(turns: &SlotTurns, slot: &str, n: usize) {
        let until = Instant::now() + Duration::from_secs(10);
        while turns.slots.lock().get(slot).map_or(0, |t| t.waiting) < n {
            assert!(Instant::now() < until, "nobody came to wait");
            std::thread::yield_now();
        }
    }

    #[test]
    fn a_taken_mark_reaches_only_the_bookings_that_were_waiting_when_it_was_made() {
        let turns = SlotTurns::default();
        let mut winner = turns.take("slot-1");
        assert!(winner.taken_meanwhile().is_none(), "the first booking reads the slot");
        let turns = &turns;
        std::thread::scope(|scope| {
            let (tx, rx) = std::sync::mpsc::channel::<()>();
            let early = scope.spawn(move || {
                let turn = turns.take("slot-1");
                let seen = turn.taken_meanwhile().map(|t| (t.why, t.organization.clone()));
                // Keep the turn until a later booking waits behind it.
                rx.recv().unwrap();
                seen
            });
            until_waiting(turns, "slot-1", 1);
            winner.leave_taken("booked", Some("org-1".into()));
            drop(winner);
            // The early booking now holds the turn; a late one arrives after the mark.
            let late = scope.spawn(move || turns.take("slot-1").taken_meanwhile().is_some());
            until_waiting(turns, "slot-1", 1);
            tx.send(()).unwrap();
            assert_eq!(early.join().unwrap(), Some(("booked", Some("org-1".into()))));
            assert!(
                !late.join().unwrap(),
                "a booking that came after the mark must read the slot"
            );
        });
        assert_eq!(turns.busy(), 0, "a turn left taken");
    }

    #[test]
    fn a_holder_that_leaves_no_mark_lets_the_next_read_the_slot() {
        let turns = SlotTurns::default();
        let loser = turns.take("slot-1");
        std::thread::scope(|scope| {
            let next = scope.spawn(|| turns.take("slot-1").taken_meanwhile().is_some());
            until_waiting(&turns, "slot-1", 1);
            drop(loser);
            assert!(!next.join().unwrap());
        });
    }

    #[test]
    fn other_slots_do_not_wait() {
        let turns = SlotTurns::default();
        let _a = turns.take("a");
        let started = Instant::now();
        let _b = turns.take("b");
        assert!(started.elapsed() < LONGEST_WAIT);
        assert_eq!(turns.busy(), 2);
    }
}
