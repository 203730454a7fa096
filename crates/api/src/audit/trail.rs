//! Where audit events of requests that write nothing go: appended by group commit, so
//! that many concurrent reads share one transaction, and the read waits until its event is
//! committed (a read whose event cannot be written fails).
//!
//! By default the commit does not wait for the disk ([`Store::append_audit_unsynced`]): the
//! events are in the database before the answer leaves, and on disk within about half a
//! second; only a crash of the machine in that window can lose them. `synced` makes every
//! such commit wait for the disk, at about half the read throughput (BENCHMARKS.md).

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};
use sijill_store::{AuditEntry, Store, StoreError};

/// How many failed batches are remembered for the requests waiting on them.
const REMEMBERED_FAILURES: usize = 64;

/// The group-commit queue of one store.
pub struct AuditTrail {
    store: Arc<dyn Store>,
    queue: Mutex<Queue>,
    done: Condvar,
    enabled: bool,
    synced: bool,
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
                let result = if self.synced {
                    self.store.append_audit(&batch)
                } else {
                    self.store.append_audit_unsynced(&batch)
                };
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
