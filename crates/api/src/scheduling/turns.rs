//! Turns on a slot within one server. When several citizens race for one slot, their
//! bookings take turns here before reading it: the first books it and each of the others
//! then reads it taken and is refused (409) at the cost of one read, instead of opening a
//! transaction that waits on the slot's row lock and fails after it. Only work is spared:
//! across servers, and whenever a turn is not taken, the database's row lock and the
//! version check still decide who gets the slot.

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
}

/// A slot's turn, held until dropped.
pub struct Turn<'a> {
    turns: &'a SlotTurns,
    slot: Option<String>,
}

impl SlotTurns {
    /// Waits for the slot's turn (at most [`LONGEST_WAIT`]) and takes it.
    pub fn take(&self, slot: &str) -> Turn<'_> {
        let deadline = Instant::now() + LONGEST_WAIT;
        let mut slots = self.slots.lock();
        loop {
            let turns = slots.entry(slot.to_string()).or_default();
            if !turns.held {
                turns.held = true;
                return Turn {
                    turns: self,
                    slot: Some(slot.to_string()),
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

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let Some(slot) = self.slot.take() else {
            return;
        };
        let mut slots = self.turns.slots.lock();
        if let Some(turns) = slots.get_mut(&slot) {
            turns.held = false;
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
