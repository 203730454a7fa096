//! The audit journal: where a running server writes the events of requests that write
//! nothing (reads, searches, refusals) before it answers them, and from where a mover
//! thread carries them into the sealed trail in batches.
//!
//! Appending to the journal is one `write` to a file in the data directory (and an fsync
//! with `serve --audit-sync-reads`) — no database transaction — so a read no longer pays
//! for a commit, and the database's readers are not
//! disturbed by thousands of tiny commits a second (every SQLite commit makes the other
//! connections drop their page caches). The mover takes what was written, starts a new
//! journal file, appends the events to the trail with a marker (the file's number) in one
//! synced transaction, and only then deletes the file. At start, files the marker does not
//! cover are appended again; files it covers are deleted. So a crash of the process loses
//! nothing, and nothing is appended twice. A read is refused (fail closed) when its events
//! cannot be written to the journal, or while the trail refuses the mover's appends.
//!
//! Readers of the trail (AuditEvent search, the access log, the review queue) call
//! [`Journal::move_pending`] first, so they see every event written before their request.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sijill_store::{AuditEntry, Store, StoreError};

/// The store-state kind of the number of the last journal file moved; its key is the
/// journal's own id (several servers, each with its own journal, may share one database).
const MARKER_KIND: &str = "audit-journal";

/// Most events waiting in the journal; beyond it the trail is too far behind, and reads are
/// refused until it catches up.
const MAX_PENDING: usize = 100_000;

/// How often the mover carries the journal into the trail.
pub const MOVE_EVERY: Duration = Duration::from_millis(100);

/// One event as a journal line.
#[derive(Serialize, Deserialize)]
struct Line {
    recorded: String,
    patient: Option<String>,
    agent: String,
    flag: Option<String>,
    /// The AuditEvent JSON, as text.
    body: String,
}

impl Line {
    fn of(e: &AuditEntry) -> Line {
        Line {
            recorded: e.recorded.clone(),
            patient: e.patient.clone(),
            agent: e.agent.clone(),
            flag: e.flag.clone(),
            body: String::from_utf8_lossy(&e.body).into_owned(),
        }
    }

    fn entry(self) -> AuditEntry {
        AuditEntry {
            recorded: self.recorded,
            patient: self.patient,
            agent: self.agent,
            flag: self.flag,
            body: self.body.into_bytes(),
        }
    }
}

/// What appenders and the mover share.
struct Open {
    /// The journal file being appended to, and its number.
    file: File,
    number: u64,
    /// Its events, not yet moved.
    pending: Vec<AuditEntry>,
    /// Earlier files whose events the trail refused (oldest first), to move again.
    unmoved: VecDeque<(u64, Vec<AuditEntry>)>,
    /// Why new events are refused, when the journal or the trail is failing.
    failing: Option<String>,
    /// A write to the file failed (it may end in half a line): the next round starts a new
    /// one.
    broken: bool,
}

/// A server's audit journal (one per data directory and process).
pub struct Journal {
    store: Arc<dyn Store>,
    dir: PathBuf,
    /// This journal's id: the key of its marker.
    id: String,
    /// Held for the journal's life: one process per journal directory.
    _lock: File,
    /// Each append waits until the journal file is on disk.
    sync_each: bool,
    open: Mutex<Open>,
    /// Held while moving: one mover at a time, in file order.
    moving: Mutex<()>,
}

fn file_name(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:012}.ndjson"))
}

fn failed(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Database(format!("the audit journal {what}: {e}"))
}

/// The events of one journal file; a line that cannot be read (the last one, cut short
/// by a crash in the middle of a write) is skipped with a warning.
fn read_file(path: &Path) -> Result<Vec<AuditEntry>, StoreError> {
    let text = std::fs::read(path).map_err(|e| failed(&format!("{} cannot be read", path.display()), e))?;
    let mut entries = Vec::new();
    for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        match serde_json::from_slice::<Line>(line) {
            Ok(l) => entries.push(l.entry()),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "an unreadable audit journal line was skipped")
            }
        }
    }
    Ok(entries)
}

/// A new journal file; `durable`: its directory entry is on disk before it is used (so
/// that lines synced into it cannot vanish with the file).
fn create(dir: &Path, number: u64, durable: bool) -> Result<File, StoreError> {
    let file = File::options()
        .create(true)
        .append(true)
        .open(file_name(dir, number))
        .map_err(|e| failed("file cannot be created", e))?;
    if durable {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| failed("directory cannot be synced", e))?;
    }
    Ok(file)
}

impl Journal {
    /// Opens the journal in `dir` (creating it), first appending to the trail whatever an
    /// earlier process left in it. `sync_each`: every append waits for the disk (otherwise
    /// events reach it with the mover's next round, a tenth of a second later).
    pub fn open(store: Arc<dyn Store>, dir: &Path, sync_each: bool) -> Result<Journal, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| failed("directory cannot be created", e))?;
        let lock = File::create(dir.join("lock")).map_err(|e| failed("lock cannot be created", e))?;
        lock.try_lock()
            .map_err(|e| failed("is in use by another server process (one data directory per server)", e))?;
        let id = journal_id(dir)?;
        let mut moved: u64 = 0;
        store.write(&mut |tx| {
            moved = marker(tx, &id)?;
            Ok(())
        })?;
        let mut files: Vec<u64> = std::fs::read_dir(dir)
            .map_err(|e| failed("directory cannot be read", e))?
            .filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".ndjson")?.parse().ok())
            .collect();
        files.sort_unstable();
        let mut last = moved;
        for number in files {
            let path = file_name(dir, number);
            if number > moved {
                let entries = read_file(&path)?;
                move_file(&*store, &id, number, &entries)?;
                tracing::info!(events = entries.len(), file = %path.display(), "audit events left in the journal were appended to the trail");
            }
            std::fs::remove_file(&path).map_err(|e| failed("file cannot be removed", e))?;
            last = last.max(number);
        }
        let number = last + 1;
        Ok(Journal {
            open: Mutex::new(Open {
                file: create(dir, number, sync_each)?,
                number,
                pending: Vec::new(),
                unmoved: VecDeque::new(),
                failing: None,
                broken: false,
            }),
            store,
            dir: dir.to_path_buf(),
            id,
            _lock: lock,
            sync_each,
            moving: Mutex::new(()),
        })
    }

    /// Writes events to the journal; an error when they cannot be written, or while the
    /// trail refuses them (the request must then fail).
    pub fn append(&self, entries: Vec<AuditEntry>) -> Result<(), StoreError> {
        let mut text = Vec::new();
        for e in &entries {
            serde_json::to_writer(&mut text, &Line::of(e)).map_err(|e| failed("line cannot be written", e))?;
            text.push(b'\n');
        }
        let mut open = self.open.lock();
        if let Some(why) = &open.failing {
            return Err(StoreError::Database(format!(
                "the audit trail cannot be written: {why}"
            )));
        }
        if open.pending.len() + entries.len() > MAX_PENDING {
            return Err(StoreError::Database(
                "the audit trail is too far behind its journal; try again shortly".into(),
            ));
        }
        let written = open.file.write_all(&text);
        let written = match written {
            Ok(()) if self.sync_each => open.file.sync_data(),
            other => other,
        };
        if let Err(e) = written {
            // The file may end in half a line now: nothing more goes into it.
            open.failing = Some(format!("the journal file cannot be written: {e}"));
            open.broken = true;
            return Err(failed("file cannot be written", e));
        }
        open.pending.extend(entries);
        Ok(())
    }

    /// Carries every event written so far into the trail (the mover's round, and what a
    /// reader of the trail does first). On failure, the events stay to be moved again and
    /// new events are refused until a round succeeds.
    pub fn move_pending(&self) -> Result<(), StoreError> {
        let _one = self.moving.lock();
        let work: Vec<(u64, Vec<AuditEntry>)> = {
            let mut open = self.open.lock();
            if !open.pending.is_empty() || open.broken {
                let next = open.number + 1;
                match create(&self.dir, next, self.sync_each) {
                    Ok(file) => {
                        let taken = (open.number, std::mem::take(&mut open.pending));
                        open.unmoved.push_back(taken);
                        open.file = file;
                        open.number = next;
                        open.broken = false;
                    }
                    Err(e) => {
                        open.failing = Some(e.to_string());
                        return Err(e);
                    }
                }
            }
            open.unmoved.drain(..).collect()
        };
        let mut work = work.into_iter();
        while let Some((number, entries)) = work.next() {
            // A panic below must not drop the events taken out of `unmoved`.
            let moved = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                move_file(&*self.store, &self.id, number, &entries)
            }))
            .unwrap_or_else(|_| {
                Err(StoreError::Database(
                    "moving the audit journal failed unexpectedly".into(),
                ))
            });
            if let Err(e) = moved {
                let mut open = self.open.lock();
                open.failing = Some(e.to_string());
                // Only a round (holding `moving`) fills `unmoved`: it is empty now.
                open.unmoved = std::iter::once((number, entries)).chain(work).collect();
                return Err(e);
            }
            if let Err(e) = std::fs::remove_file(file_name(&self.dir, number)) {
                // Moved and marked: at the next start it is only deleted.
                tracing::warn!(error = %e, "a moved audit journal file could not be removed");
            }
        }
        let mut open = self.open.lock();
        if !open.broken {
            open.failing = None;
        }
        Ok(())
    }
}

/// This journal's id, made at its first opening and kept in the directory.
fn journal_id(dir: &Path) -> Result<String, StoreError> {
    let path = dir.join("id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_string()),
        _ => {
            let id = uuid::Uuid::new_v4().to_string();
            std::fs::write(&path, &id).map_err(|e| failed("id cannot be written", e))?;
            Ok(id)
        }
    }
}

/// The number of the last file of journal `id` moved into the trail (0: none).
fn marker(tx: &mut dyn sijill_store::StoreTx, id: &str) -> Result<u64, StoreError> {
    Ok(tx.state_get(MARKER_KIND, id)?.and_then(|v| v.parse().ok()).unwrap_or(0))
}

/// Appends one journal file's events to the trail with its number as journal `id`'s marker,
/// in one synced transaction — unless the marker says it was moved already (a commit whose
/// outcome was unclear, tried again).
fn move_file(store: &dyn Store, id: &str, number: u64, entries: &[AuditEntry]) -> Result<(), StoreError> {
    store.write(&mut |tx| {
        if marker(tx, id)? >= number {
            return Ok(());
        }
        if !entries.is_empty() {
            tx.append_audit(entries.to_vec())?;
        }
        tx.state_put(MARKER_KIND, id, &number.to_string())
    })
}

/// The mover thread: a round every [`MOVE_EVERY`], and a last one when it is stopped
/// (dropping the handle stops it and waits).
pub struct Mover {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Mover {
    /// Starts moving `journal` into the trail.
    pub fn start(journal: Arc<Journal>) -> Result<Mover, StoreError> {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("audit-journal".into())
            .spawn(move || loop {
                let last = !matches!(
                    stopped.recv_timeout(MOVE_EVERY),
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout)
                );
                if let Err(e) = journal.move_pending() {
                    tracing::error!(error = %e, "audit events could not be moved into the trail; reads are refused until they are");
                }
                if last {
                    break;
                }
            })
            .map_err(|e| failed("mover cannot start", e))?;
        Ok(Mover {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Mover {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sijill_store::sqlite::SqliteStore;

    fn event(n: u32) -> AuditEntry {
        AuditEntry {
            recorded: format!("2026-11-24T10:00:{n:02}.000Z"),
            patient: Some(format!("p{n}")),
            agent: "Practitioner/1".into(),
            flag: None,
            body: format!(r#"{{"resourceType":"AuditEvent","n":{n}}}"#).into_bytes(),
        }
    }

    fn trail(store: &dyn Store) -> Vec<AuditEntry> {
        store
            .audit_rows(None, 1000)
            .unwrap()
            .into_iter()
            .map(|r| r.entry)
            .collect()
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".ndjson"))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn appended_events_reach_the_trail_whole_and_in_order_and_their_file_goes() {
        let data = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(data.path()).unwrap());
        let dir = data.path().join("journal");
        let journal = Journal::open(store.clone(), &dir, false).unwrap();
        journal.append(vec![event(1), event(2)]).unwrap();
        journal.append(vec![event(3)]).unwrap();
        assert!(trail(&*store).is_empty(), "not moved yet");
        journal.move_pending().unwrap();
        assert_eq!(trail(&*store), vec![event(1), event(2), event(3)]);
        assert_eq!(
            files(&dir),
            vec!["000000000002.ndjson"],
            "only the new, empty file is left"
        );
        // A round with nothing written moves nothing.
        journal.move_pending().unwrap();
        assert_eq!(trail(&*store).len(), 3);
    }

    #[test]
    fn a_restart_moves_what_was_left_once_and_skips_a_line_cut_short() {
        let data = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(data.path()).unwrap());
        let dir = data.path().join("journal");
        {
            let journal = Journal::open(store.clone(), &dir, true).unwrap();
            journal.append(vec![event(1)]).unwrap();
            journal.move_pending().unwrap();
            journal.append(vec![event(2), event(3)]).unwrap();
            // The process dies here: event 2 and 3 are only in file 2.
        }
        // A write cut short in the middle of a line, as a crash leaves it.
        let mut torn = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.join("000000000002.ndjson"))
            .unwrap();
        torn.write_all(br#"{"recorded":"2026-11-24T10:00:04.000Z","pat"#)
            .unwrap();
        // A file the marker already covers (moved, then the process died before deleting it).
        std::fs::write(
            dir.join("000000000001.ndjson"),
            serde_json::to_string(&Line::of(&event(9))).unwrap() + "\n",
        )
        .unwrap();
        let journal = Journal::open(store.clone(), &dir, false).unwrap();
        assert_eq!(trail(&*store), vec![event(1), event(2), event(3)]);
        assert_eq!(files(&dir), vec!["000000000003.ndjson"]);
        journal.append(vec![event(4)]).unwrap();
        journal.move_pending().unwrap();
        assert_eq!(trail(&*store).len(), 4);
        // The chain the moves built holds.
        let check = sijill_store::audit::verify(&*store, &mut |_| {}).unwrap();
        assert!(check.first_break.is_none(), "{:?}", check.first_break);
    }

    #[test]
    fn journals_sharing_a_database_keep_their_own_marks_and_a_directory_has_one_owner() {
        let data = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(data.path()).unwrap());
        let (a_dir, b_dir) = (data.path().join("a"), data.path().join("b"));
        let a = Journal::open(store.clone(), &a_dir, false).unwrap();
        for n in 0..3 {
            a.append(vec![event(n)]).unwrap();
            a.move_pending().unwrap();
        }
        {
            let b = Journal::open(store.clone(), &b_dir, false).unwrap();
            b.append(vec![event(7)]).unwrap();
            // Server B dies with its event only in its journal file 1; A's marker is at 3.
            assert!(
                Journal::open(store.clone(), &b_dir, false).is_err(),
                "a second process on B's journal is refused"
            );
        }
        Journal::open(store.clone(), &b_dir, false).unwrap();
        assert!(trail(&*store).contains(&event(7)), "B's event is moved at its restart");
        assert_eq!(trail(&*store).len(), 4);
    }
}
