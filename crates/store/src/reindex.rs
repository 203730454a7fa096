//! Rebuilding the search index from the current versions, the same way for every store: in
//! short batches of row ids, so that writers go on between them (`sijill reindex` runs
//! beside a serving server), and on open when the extraction rules changed.

use crate::Result;

/// Resources whose index rows one batch replaces.
pub(crate) const REINDEX_BATCH: i64 = 500;

/// What a store provides for a rebuild.
pub(crate) trait IndexRebuild {
    /// How many current, not deleted resources there are.
    fn live_resources(&self) -> Result<u64>;
    /// Replaces, in one transaction, the index rows of the current versions with row ids in
    /// `(after, after + REINDEX_BATCH]`. Returns the highest row id looked at and how many
    /// resources were indexed, or None past the last row id.
    fn rebuild_batch(&self, after: i64) -> Result<Option<(i64, u64)>>;
    /// The fingerprint of the extraction rules that built the index, if recorded.
    fn recorded_fingerprint(&self) -> Result<Option<String>>;
    /// Records the current rules' fingerprint.
    fn record_fingerprint(&self) -> Result<()>;
}

/// Rebuilds the whole index, batch after batch, reporting (done, total).
pub(crate) fn reindex(store: &impl IndexRebuild, progress: &mut dyn FnMut(u64, u64)) -> Result<()> {
    let total = store.live_resources()?;
    progress(0, total);
    let mut after = 0i64;
    let mut done = 0u64;
    while let Some((upto, count)) = store.rebuild_batch(after)? {
        after = upto;
        done += count;
        progress(done.min(total), total.max(done));
    }
    store.record_fingerprint()
}

/// Rebuilds the index when the extraction rules differ from those that built it (or none
/// were recorded), with a warning.
pub(crate) fn reindex_if_rules_changed(store: &impl IndexRebuild) -> Result<()> {
    if store.recorded_fingerprint()?.as_deref() == Some(crate::index::fingerprint().as_str()) {
        return Ok(());
    }
    reindex(store, &mut |done, total| {
        if done == 0 && total > 0 {
            tracing::warn!(resources = total, "search index rules changed: rebuilding the index");
        }
    })
}
