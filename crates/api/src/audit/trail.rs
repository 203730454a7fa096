//! Where audit events of requests that write nothing go, before the request is answered (a
//! request whose events cannot be written fails).
//!
//! A server writes them to its journal ([`crate::audit::journal`]), from which they move
//! into the trail every tenth of a second. Without a journal (the command-line tools) they
//! are appended by group commit, so that concurrent requests share one transaction, and
//! the request waits until its events are committed; that commit does not wait for the
//! disk ([`Store::append_audit_unsynced`]) unless the trail is `synced`.

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};
use sijill_store::{AuditEntry, Store, StoreError};

use crate::audit::journal::{Journal, Mover};

/// How many failed batches are remembered for the requests waiting on them.
const REMEMBERED_FAILURES: usize = 64;

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

/// The group-commit queue of one store.
pub struct AuditTrail {
    store: Arc<dyn Store>,
    queue: Mutex<Queue>,
    done: Condvar,
    enabled: bool,
    synced: bool,
    /// A server's journal, when events go there first (see [`crate::audit::journal`]).
    journal: Option<(Arc<Journal>, Mover)>,
    refusals: Mutex<RefusalBudget>,
}

#[derive(Default)]
struct Queue {
    /// Events waiting for the next batch.
    pending: Vec<AuditEntry>,
    /// The number of the batch that `pending` will be written in.
    next_batch: u64,
    /// Whether a request is writing a batch now.
    writing: bool,
    /// Batches up to this one are finished.
    finished: u64,
    /// Recent batches that failed, with the reason.
    failures: VecDeque<(u64, String)>,
}

impl AuditTrail {
    /// The trail of `store`; `enabled: false` records nothing (for measurements only);
    /// `synced`: each batch waits for the disk before its requests are answered.
    pub fn new(store: Arc<dyn Store>, enabled: bool, synced: bool) -> AuditTrail {
        AuditTrail {
            store,
            queue: Mutex::new(Queue {
                next_batch: 1,
                ..Queue::default()
            }),
            done: Condvar::new(),
            enabled,
            synced,
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
    /// process left there).
    /// `sync_each`: each request waits until its events are on disk.
    pub fn journaled(store: Arc<dyn Store>, dir: &std::path::Path, sync_each: bool) -> Result<AuditTrail, StoreError> {
        let journal = Arc::new(Journal::open(store.clone(), dir, sync_each)?);
        let mover = Mover::start(journal.clone())?;
        let mut trail = AuditTrail::new(store, true, true);
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

    /// Appends `entries` and returns once they are committed (or failed). The first
    /// request to find no batch being written writes everything queued so far; the others
    /// wait for it.
    pub fn record(&self, entries: Vec<AuditEntry>) -> Result<(), StoreError> {
        if !self.enabled || entries.is_empty() {
            return Ok(());
        }
        if let Some((journal, _)) = &self.journal {
            return journal.append(entries);
        }
        let mut q = self.queue.lock();
        q.pending.extend(entries);
        let mine = q.next_batch;
        loop {
            if q.finished >= mine {
                return match q.failures.iter().find(|(b, _)| *b == mine) {
                    Some((_, why)) => Err(StoreError::Database(why.clone())),
                    None => Ok(()),
                };
            }
            if !q.writing {
                q.writing = true;
                let batch = std::mem::take(&mut q.pending);
                let number = q.next_batch;
                q.next_batch += 1;
                drop(q);
                // A panic in the append must not leave the batch marked as being written
                // (every later request would wait for it forever).
                let writing = WritingFlag(self);
                let result = if self.synced {
                    self.store.append_audit(&batch)
                } else {
                    self.store.append_audit_unsynced(&batch)
                };
                std::mem::forget(writing);
                q = self.queue.lock();
                q.writing = false;
                q.finished = number;
                if let Err(e) = result {
                    tracing::error!(error = %e, events = batch.len(), "audit events could not be written");
                    q.failures.push_back((number, e.to_string()));
                    if q.failures.len() > REMEMBERED_FAILURES {
                        q.failures.pop_front();
                    }
                }
                self.done.notify_all();
                continue;
            }
            self.done.wait(&mut q);
        }
    }
}

/// Clears the trail's "writing" mark if the append panics, failing the waiting requests.
struct WritingFlag<'t>(&'t AuditTrail);

impl Drop for WritingFlag<'_> {
    fn drop(&mut self) {
        let mut q = self.0.queue.lock();
        q.writing = false;
        let failed = q.next_batch - 1;
        q.finished = failed;
        q.failures
            .push_back((failed, "the audit append failed unexpectedly".into()));
        self.0.done.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_beyond_the_budget_are_counted_into_the_next_recorded_one() {
        let data = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(sijill_store::sqlite::SqliteStore::open(data.path()).unwrap());
        let trail = AuditTrail::new(store, true, false);
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
