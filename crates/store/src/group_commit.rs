//! Group commit for the embedded store: units of work that arrive while another one runs
//! share its transaction, and one commit — one `fsync` of the write-ahead log — makes
//! them all durable.
//!
//! SQLite has one writer, and with `synchronous = FULL` each commit waits for the disk;
//! under many concurrent writers (a booking rush) that wait, not the work, bounds
//! throughput. So the writer lock is passed on with the transaction still open: each unit
//! runs in the open transaction (a unit that fails leaves nothing and the others
//! untouched: see `sqlite::run_unit`), and the unit that finds nobody waiting
//! behind it (or the [`MAX_UNITS`]th) commits for all. Every unit returns only after the
//! commit that holds it, with that commit's outcome: nothing is reported written before
//! it is durable, and a failed commit fails every unit of its group.

use std::collections::HashMap;

use parking_lot::{Condvar, Mutex};

use crate::{Result, StoreError};

/// Most units in one group.
pub const MAX_UNITS: usize = 64;

/// The outcome of each group's commit, kept until every unit of it has read it.
#[derive(Default)]
pub struct Outcomes {
    settled: Mutex<HashMap<u64, (Option<String>, usize)>>,
    changed: Condvar,
}

/// The open group of the writer connection.
#[derive(Debug, Default)]
pub struct OpenGroup {
    /// The number of the group whose transaction is open, if one is.
    pub group: Option<u64>,
    /// The last group number given.
    pub last: u64,
    /// Units of the open group that succeeded and wait for its commit.
    pub waiting: usize,
    /// Units of the open group so far.
    pub units: usize,
}

impl OpenGroup {
    /// Joins the open group, or opens one (`begin` starts its transaction).
    pub fn join(&mut self, begin: impl FnOnce() -> Result<()>) -> Result<u64> {
        if let Some(g) = self.group {
            self.units += 1;
            return Ok(g);
        }
        begin()?;
        self.last += 1;
        self.group = Some(self.last);
        self.units = 1;
        self.waiting = 0;
        Ok(self.last)
    }
}

impl Outcomes {
    /// Ends the open group with its commit's outcome (`commit` runs it) and wakes its
    /// waiting units; returns the outcome. Does nothing when no group is open.
    pub fn settle(&self, open: &mut OpenGroup, commit: impl FnOnce() -> Result<()>) -> Result<()> {
        let Some(group) = open.group.take() else {
            return Ok(());
        };
        // A panic in the commit fails the group rather than leave its units waiting.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(commit))
            .unwrap_or_else(|_| Err(StoreError::Database("the commit panicked".into())));
        if open.waiting > 0 {
            let error = outcome.as_ref().err().map(|e| e.to_string());
            self.settled.lock().insert(group, (error, open.waiting));
            self.changed.notify_all();
        }
        open.waiting = 0;
        open.units = 0;
        outcome
    }

    /// Waits until `group` is settled and returns its outcome.
    pub fn wait(&self, group: u64) -> Result<()> {
        let mut settled = self.settled.lock();
        loop {
            if let Some((error, readers)) = settled.get_mut(&group) {
                let error = error.clone();
                *readers -= 1;
                if *readers == 0 {
                    settled.remove(&group);
                }
                return match error {
                    None => Ok(()),
                    Some(e) => Err(StoreError::Database(format!("the commit failed: {e}"))),
                };
            }
            self.changed.wait(&mut settled);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_settles_once_for_all_its_waiting_units() {
        let outcomes = std::sync::Arc::new(Outcomes::default());
        let mut open = OpenGroup::default();
        let g = open.join(|| Ok(())).unwrap();
        assert_eq!(open.join(|| panic!("the group is open")).unwrap(), g);
        open.waiting = 2;
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let o = outcomes.clone();
                std::thread::spawn(move || o.wait(g))
            })
            .collect();
        let mut commits = 0;
        outcomes
            .settle(&mut open, || {
                commits += 1;
                Err(StoreError::Database("disk full".into()))
            })
            .unwrap_err();
        for w in waiters {
            assert!(w.join().unwrap().unwrap_err().to_string().contains("disk full"));
        }
        assert_eq!(commits, 1);
        assert!(open.group.is_none());
        assert!(outcomes.settled.lock().is_empty(), "outcomes are dropped once read");
        // Settling with no open group commits nothing.
        outcomes.settle(&mut open, || panic!("nothing to commit")).unwrap();
    }
}
