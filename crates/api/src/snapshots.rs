//! Result snapshots for sorted searches: the ordered ids of a search are kept for a while,
//! and its pages are read from them, so `next` links stay correct while data changes
//! (a resource deleted meanwhile is left out of its page; nothing shifts). A snapshot
//! only serves pages of the search that made it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// How long a snapshot can be paged through.
const TTL: Duration = Duration::from_secs(15 * 60);
/// Most snapshots kept at once (the oldest goes first).
const MAX_SNAPSHOTS: usize = 200;

/// When a snapshot was taken, the search it belongs to, and its ordered ids.
type Snapshot = (Instant, String, Arc<Vec<String>>);

/// The ordered ids of searches, by snapshot key.
#[derive(Default)]
pub struct Snapshots {
    entries: Mutex<HashMap<String, Snapshot>>,
}

impl Snapshots {
    /// Keeps the ids of the search `scope` and returns the key to page through them.
    pub fn insert(&self, scope: String, ids: Vec<String>) -> String {
        let key = uuid::Uuid::new_v4().simple().to_string();
        let mut entries = self.entries.lock();
        let now = Instant::now();
        entries.retain(|_, (at, _, _)| now.duration_since(*at) < TTL);
        if entries.len() >= MAX_SNAPSHOTS {
            if let Some(oldest) = entries.iter().min_by_key(|(_, (at, _, _))| *at).map(|(k, _)| k.clone()) {
                entries.remove(&oldest);
            }
        }
        entries.insert(key.clone(), (now, scope, Arc::new(ids)));
        key
    }

    /// The ids of a snapshot of the search `scope` that has not expired.
    pub fn get(&self, key: &str, scope: &str) -> Option<Arc<Vec<String>>> {
        let entries = self.entries.lock();
        entries
            .get(key)
            .filter(|(at, s, _)| at.elapsed() < TTL && s == scope)
            .map(|(_, _, ids)| ids.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_ids_for_their_own_search_only() {
        let s = Snapshots::default();
        let k = s.insert("Patient|x".into(), vec!["a".into(), "b".into()]);
        assert_eq!(s.get(&k, "Patient|x").unwrap().as_slice(), ["a", "b"]);
        assert!(s.get(&k, "Patient|y").is_none());
        assert!(s.get("nope", "Patient|x").is_none());
    }
}
