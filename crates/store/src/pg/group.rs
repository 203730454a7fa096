//! Group commit for PostgreSQL: units of work that arrive while another runs share its
//! transaction, and one commit ends them all.
//!
//! A booking's own work in the database is small (a row lock, three versions, a few
//! index rows, an audit event); its transaction's fixed costs — BEGIN, the batch and audit
//! statements, COMMIT, each a round trip and a statement to plan and start — were most of
//! what the database did for it. So writers go through a few *lanes*, each a connection
//! with a group transaction: a unit takes a free lane (or queues on the least busy one),
//! runs in the lane's open transaction, and the unit that finds nobody queued behind it
//! (or the [`MAX_UNITS`]th) writes the group's versions and audit events in one batch and
//! commits for all. Every unit returns only after the commit that holds it, with its
//! outcome: nothing is reported written before it is durable.
//!
//! Units must stay as independent as in a transaction of their own:
//! - a unit that fails leaves nothing: its pending versions and audit events are dropped,
//!   and whatever it wrote directly (a state record, a claimed id, versions written early
//!   for a read or a search) was written under a savepoint, which is rolled back;
//! - a unit sharing the transaction never waits for a lock another transaction holds (a
//!   group holding rows while waiting for another group that waits for them would be a
//!   deadlock): it takes rows `SKIP LOCKED` and advisory locks with `pg_try_…`, and when
//!   one is held it first commits the earlier units (see `PgTx::settle_early`), then waits
//!   alone, as the first unit of a new group;
//! - a failure the database reports aborts the transaction for everyone in it: then the
//!   whole group fails, and every unit of it is told.

use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;

use super::pool::Manager;
use super::{CurrentRow, Pending};
use crate::audit::AuditEntry;
use crate::group_commit::{OpenGroup, Outcomes};
use crate::StoreError;

/// Lanes per server process: how many group transactions may be open at once.
pub const LANES: usize = 2;

/// Most units in one group (each one sharing the transaction may hold a subtransaction,
/// of which PostgreSQL keeps 64 per backend in shared memory).
pub const MAX_UNITS: usize = 32;

/// What one unit of work did so far in its group's transaction.
#[derive(Default)]
pub struct UnitMarks {
    /// Where its own pending versions begin (earlier units' come before).
    pub pending_from: usize,
    /// Where its own audit events begin.
    pub audit_from: usize,
    /// Whether it opened a savepoint (before writing directly).
    pub savepoint: bool,
    /// Rows it locked, with the version it saw.
    pub locks: Vec<(String, String, i64)>,
    /// Whether it took advisory locks.
    pub advisory: bool,
    /// Set when versions of earlier units were taken to be written and the writing failed:
    /// they are lost to the transaction, so the whole group must fail.
    pub poisoned: bool,
}

/// How a unit sharing its transaction with earlier ones reaches its group: to commit them
/// early and begin a new group (see `PgTx::settle_early`).
pub struct Shared<'a> {
    /// Where the lane's units learn their group's outcome.
    pub outcomes: &'a Outcomes,
    /// The lane's open group.
    pub open: &'a mut OpenGroup,
    /// The settings a group transaction begins with.
    pub begin: &'a str,
    /// The newest lastUpdated the process committed.
    pub last_stamp: &'a Mutex<String>,
}

/// A group's transaction state between its units.
pub struct TxParts {
    /// The newest stamp committed before the group began or taken by one of its units.
    pub floor: String,
    /// Versions not written yet.
    pub pending: Vec<Pending>,
    /// The audit chain the group appends to.
    pub chain: i64,
    /// Audit events to seal at the end of the group.
    pub audit: Vec<AuditEntry>,
    /// Rows locked by reading them for update, until written.
    pub locked: std::collections::HashMap<(String, String), CurrentRow>,
}

/// A lane's connection with its group transaction open.
pub struct GroupTx {
    /// The settings it began with (`SET LOCAL …`), for the next one begun on it.
    pub begin: String,
    /// The pooled connection.
    pub conn: r2d2::PooledConnection<Manager>,
    /// The transaction's state between units.
    pub parts: TxParts,
    /// Whether the transaction is still open (rolled back when dropped).
    pub open: bool,
}

impl Drop for GroupTx {
    fn drop(&mut self) {
        if self.open {
            // A broken connection is noticed by the pool and not reused.
            let _ = self.conn.batch_execute("ROLLBACK");
        }
    }
}

/// One lane: a group transaction and the units queued for it.
#[derive(Default)]
pub struct Lane {
    /// Units waiting for the lane.
    pub queued: AtomicUsize,
    /// The open group and its transaction.
    pub state: Mutex<LaneState>,
    /// The outcomes of the lane's groups.
    pub outcomes: Outcomes,
}

/// A lane's open group, if any.
#[derive(Default)]
pub struct LaneState {
    /// The group's numbering and counts.
    pub open: OpenGroup,
    /// Its transaction, while one is open.
    pub tx: Option<GroupTx>,
}

/// The lanes of a store.
pub struct Lanes {
    lanes: Vec<Lane>,
    next: AtomicUsize,
}

impl Lanes {
    /// `n` lanes (at least one).
    pub fn new(n: usize) -> Lanes {
        Lanes {
            lanes: (0..n.max(1)).map(|_| Lane::default()).collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// The lane for the next unit, locked: a free one, in turn, or else the one with the
    /// fewest units queued.
    pub fn enter(&self) -> (&Lane, parking_lot::MutexGuard<'_, LaneState>) {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for k in 0..self.lanes.len() {
            let lane = &self.lanes[(start + k) % self.lanes.len()];
            if let Some(state) = lane.state.try_lock() {
                return (lane, state);
            }
        }
        let lane = self
            .lanes
            .iter()
            .min_by_key(|l| l.queued.load(Ordering::SeqCst))
            .unwrap_or(&self.lanes[0]);
        lane.queued.fetch_add(1, Ordering::SeqCst);
        let state = lane.state.lock();
        lane.queued.fetch_sub(1, Ordering::SeqCst);
        (lane, state)
    }
}

impl Lane {
    /// Whether the unit that just ran should end its group: nobody queued behind it, or
    /// the group is full.
    pub fn ends_group(&self, state: &LaneState) -> bool {
        self.queued.load(Ordering::SeqCst) == 0 || state.open.units >= MAX_UNITS
    }
}

/// The error every unit of a group abandoned because of `why` is told.
pub fn abandoned(why: &str) -> StoreError {
    StoreError::Database(format!("the transaction was abandoned: {why}"))
}
