//! Where audit events of requests that write nothing go, before the request is answered (a
//! request whose events cannot be written fails).
//!
//! A server writes them to its journal ([`crate::audit::journal`]), from which they move
//! into the trail every tenth of a second. Without a journal (the command-line tools) they
//! are appended to the trail at once, each request's in a unit of work of its own (the
//! store groups concurrent units into one commit).

use std::sync::Arc;

use parking_lot::Mutex;
use sijill_store::{AuditEntry, Store, StoreError};

use crate::audit::journal::{Journal, Mover};

/// Refused credentials recorded one by one per second, server-wide; beyond that they are
/// counted, and the count goes into the next one recorded (the trail is append-only: an
/// attacker must not be able to fill it).
const REFUSALS_PER_SECOND: u32 = 20;

/// The budget of refused-credential events in the current second.
#[derive(Default)]
struct RefusalBudget {
    second: u64,
    used: u32,
    counted: u64,
}

/// The audit trail of one store, as requests that write nothing reach it.
pub struct AuditTrail {
    store: Arc<dyn Store>,
    enabled: bool,
    /// A server's journal, when events go there first (see [`crate::audit::journal`]).
    journal: Option<(Arc<Journal>, Mover)>,
    refusals: Mutex<RefusalBudget>,
}

impl AuditTrail {
    /// The trail of `store`; `enabled: false` records nothing (for measurements only).
    pub fn new(store: Arc<dyn Store>, enabled: bool) -> AuditTrail {
        AuditTrail {
            store,
            enabled,
            journal: None,
            refusals: Mutex::default(),
        }
    }

    /// Whether the event of one more refused credential is recorded: Some(number counted
    /// but not recorded since the last one), or None when this second's budget is spent.
    pub fn admit_refusal(&self) -> Option<u64> {
        let second = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut b = self.refusals.lock();
        if b.second != second {
            b.second = second;
            b.used = 0;
        }
        if b.used >= REFUSALS_PER_SECOND {
            b.counted += 1;
            return None;
        }
        b.used += 1;
        Some(std::mem::take(&mut b.counted))
    }

    /// The trail of a server: events of requests that write nothing are written to the
    /// journal in `dir` and moved into the trail in batches (after moving what an earlier
    /// process left there). `sync_each`: each request waits until its events are on disk.
    pub fn journaled(store: Arc<dyn Store>, dir: &std::path::Path, sync_each: bool) -> Result<AuditTrail, StoreError> {
        let journal = Arc::new(Journal::open(store.clone(), dir, sync_each)?);
        let mover = Mover::start(journal.clone())?;
        let mut trail = AuditTrail::new(store, true);
        trail.journal = Some((journal, mover));
        Ok(trail)
    }

    /// Makes every event recorded so far part of the trail (readers of the trail call it
    /// first); nothing to do without a journal.
    pub fn flush(&self) -> Result<(), StoreError> {
        match &self.journal {
            Some((journal, _)) if self.enabled => journal.move_pending(),
            _ => Ok(()),
        }
    }

    /// Whether events are recorded at all.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Records `entries`: in the journal, or appended to the trail; returns once they are
    /// written (or could not be).
    pub fn record(&self, entries: Vec<AuditEntry>) -> Result<(), StoreError> {
        if !self.enabled || entries.is_empty() {
            return Ok(());
        }
        match &self.journal {
            Some((journal, _)) => journal.append(entries),
            None => self.store.append_audit(&entries),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_beyond_the_budget_are_counted_into_the_next_recorded_one() {
        let data = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(sijill_store::sqlite::SqliteStore::open(data.path()).unwrap());
        let trail = AuditTrail::new(store, true);
        let mut admitted = 0;
        let mut counted = 0;
        // Two budgets at most if a second ends during the loop.
        for _ in 0..(2 * REFUSALS_PER_SECOND + 5) {
            match trail.admit_refusal() {
                Some(_) => admitted += 1,
                None => counted += 1,
            }
        }
        assert!(
            admitted <= 2 * REFUSALS_PER_SECOND && counted >= 5,
            "{admitted} {counted}"
        );
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let carried = trail.admit_refusal().expect("a new second has a new budget");
        assert!(carried >= 5, "{carried}");
        assert_eq!(trail.admit_refusal(), Some(0), "the count is carried once");
    }
}
