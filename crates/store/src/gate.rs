//! A counting gate: at most a fixed number of holders at once, the others wait. The stores
//! use it to bound their readers (SQLite) and their units of work (PostgreSQL).

use parking_lot::{Condvar, Mutex};

/// At most `limit` holders at once.
pub(crate) struct Gate {
    held: Mutex<usize>,
    freed: Condvar,
    limit: usize,
}

impl Gate {
    /// A gate for `limit` holders.
    pub(crate) fn new(limit: usize) -> Gate {
        Gate {
            held: Mutex::new(0),
            freed: Condvar::new(),
            limit,
        }
    }

    /// Waits for a place; dropping the pass gives it back (however the holder ends).
    pub(crate) fn enter(&self) -> Pass<'_> {
        let mut held = self.held.lock();
        while *held >= self.limit {
            self.freed.wait(&mut held);
        }
        *held += 1;
        Pass(self)
    }
}

/// A held place at a [`Gate`].
pub(crate) struct Pass<'a>(&'a Gate);

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        *self.0.held.lock() -= 1;
        self.0.freed.notify_one();
    }
}
