//! The audit trail as the stores keep it: append-only rows sealed in hash chains.
//!
//! Each row belongs to a chain and has a position in it; it keeps the seal of the row
//! before it, and its own seal is the SHA-256 of that previous seal, the chain and every
//! column of the row but its place (`seq`, `position`). Changing a row breaks its own
//! seal, removing one leaves a gap in the positions, and moving one (renumbering
//! positions) leaves a row whose previous seal is not the seal of the row above it. [`verify`] re-walks every chain and reports the first
//! such break.
//!
//! A chain only proves that its rows hang together. Someone able to rewrite the whole table
//! could re-seal it, and cutting off the newest rows leaves a shorter valid chain: the heads
//! that [`verify`] reports are the anchors an operator records outside the database (and
//! checks against with `--anchor`).
//!
//! The embedded store has one chain (one writer); PostgreSQL has [`PG_CHAINS`], so that
//! concurrent writers do not all wait for one chain's lock.

use sha2::{Digest, Sha256};

use crate::sql::Arg;
use crate::{Result, Store};

/// How many chains the PostgreSQL store spreads its audit rows over.
pub const PG_CHAINS: i64 = 8;

/// What `flag` says of a break-glass access.
pub const FLAG_BREAK_GLASS: &str = "break-glass";

/// The prefix of the flag of a review of a flagged row (followed by the reviewed `seq`).
pub const FLAG_REVIEW_OF: &str = "review:";

/// One audit event to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// When it happened (a FHIR instant).
    pub recorded: String,
    /// The patient it is about, when one.
    pub patient: Option<String>,
    /// Who acted (a user's reference or subject, or a client's id).
    pub agent: String,
    /// A mark for rows that need attention (`break-glass`, `review:<seq>`), else None.
    pub flag: Option<String>,
    /// The AuditEvent resource, as JSON bytes (its `id` is the row's `seq`, filled on read).
    pub body: Vec<u8>,
}

/// A row of the audit trail, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedAudit {
    /// Insertion order across all chains: the AuditEvent's id.
    pub seq: i64,
    /// The chain.
    pub chain: i64,
    /// The position in the chain, from 1.
    pub position: i64,
    /// The event.
    pub entry: AuditEntry,
    /// The seal of the row before it in the chain (empty for the first).
    pub previous: Vec<u8>,
    /// The seal.
    pub hash: Vec<u8>,
}

/// Which audit rows a search wants, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// About this patient.
    pub patient: Option<String>,
    /// By this agent.
    pub agent: Option<String>,
    /// Recorded at or after (a FHIR instant, compared as text: stamps are UTC).
    pub since: Option<String>,
    /// Recorded before.
    pub until: Option<String>,
    /// Only flagged rows with this flag.
    pub flag: Option<String>,
    /// Only flagged rows that no later row reviews.
    pub unreviewed: bool,
    /// Only rows older than this seq (paging).
    pub before_seq: Option<i64>,
    /// At most this many.
    pub limit: usize,
}

/// The seal of a row of `chain` that follows a row sealed `previous` (empty for the first
/// row of a chain).
pub fn seal(previous: &[u8], chain: i64, entry: &AuditEntry) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(previous);
    h.update(chain.to_be_bytes());
    for field in [
        entry.recorded.as_str(),
        entry.patient.as_deref().unwrap_or(""),
        entry.agent.as_str(),
        entry.flag.as_deref().unwrap_or(""),
    ] {
        h.update((field.len() as u64).to_be_bytes());
        h.update(field.as_bytes());
    }
    h.update(&entry.body);
    h.finalize().to_vec()
}

/// A row's place in its chain: position, the previous seal and its own.
pub type Link = (i64, Vec<u8>, Vec<u8>);

/// The links of `entries` appended, in order, to a chain whose last row is `head`
/// (position and seal).
pub fn seal_after(head: Option<(i64, Vec<u8>)>, chain: i64, entries: &[AuditEntry]) -> Vec<Link> {
    let (mut position, mut previous) = head.unwrap_or((0, Vec::new()));
    entries
        .iter()
        .map(|e| {
            position += 1;
            let hash = seal(&previous, chain, e);
            (position, std::mem::replace(&mut previous, hash.clone()), hash)
        })
        .collect()
}

/// The columns of an audit row, in [`SealedAudit`] order.
pub(crate) const AUDIT_COLUMNS: &str = "seq, chain, position, recorded, patient, agent, flag, body, previous, hash";

/// The last position and seal of a chain (`?`: the chain).
pub(crate) const CHAIN_HEAD: &str =
    "SELECT position, hash FROM audit_log WHERE chain = ? ORDER BY position DESC LIMIT 1";

/// One row by seq (`?`: the seq).
pub(crate) fn row_statement() -> String {
    format!("SELECT {AUDIT_COLUMNS} FROM audit_log WHERE seq = ?")
}

/// Rows in chain order after (chain, position).
pub(crate) fn rows_statement(after: Option<(i64, i64)>, limit: usize) -> (String, Vec<Arg>) {
    let (clause, args) = match after {
        // A row-value comparison, so that both databases seek into (chain, position).
        Some((chain, position)) => (
            "WHERE (chain, position) > (?, ?)",
            vec![Arg::Int(chain), Arg::Int(position)],
        ),
        None => ("", Vec::new()),
    };
    (
        format!("SELECT {AUDIT_COLUMNS} FROM audit_log {clause} ORDER BY chain, position LIMIT {limit}"),
        args,
    )
}

/// Rows matching a query, newest first.
pub(crate) fn search_statement(q: &AuditQuery) -> (String, Vec<Arg>) {
    let mut conditions = Vec::new();
    let mut args = Vec::new();
    let mut text = |condition: &'static str, value: &Option<String>, conditions: &mut Vec<&str>| {
        if let Some(v) = value {
            conditions.push(condition);
            args.push(Arg::Text(v.clone()));
        }
    };
    text("a.patient = ?", &q.patient, &mut conditions);
    text("a.agent = ?", &q.agent, &mut conditions);
    text("a.recorded >= ?", &q.since, &mut conditions);
    text("a.recorded < ?", &q.until, &mut conditions);
    text("a.flag = ?", &q.flag, &mut conditions);
    if q.unreviewed {
        conditions.push("NOT EXISTS (SELECT 1 FROM audit_log r WHERE r.flag = 'review:' || a.seq)");
    }
    if let Some(seq) = q.before_seq {
        conditions.push("a.seq < ?");
        args.push(Arg::Int(seq));
    }
    let clause = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    };
    // The outer query reads one table: its unqualified columns are `a`'s.
    (
        format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_log a {clause} ORDER BY a.seq DESC LIMIT {}",
            q.limit
        ),
        args,
    )
}

/// Lower-case hexadecimal.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The first place a chain does not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    /// The chain.
    pub chain: i64,
    /// The position where it breaks.
    pub position: i64,
    /// The row's seq, when there is a row there.
    pub seq: Option<i64>,
    /// What is wrong, in words.
    pub what: String,
}

/// The last row of a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// The chain.
    pub chain: i64,
    /// Its last position.
    pub position: i64,
    /// That row's seal, in hexadecimal.
    pub hash: String,
}

/// What a walk over the whole trail found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// Rows checked.
    pub checked: u64,
    /// The last row of every chain.
    pub heads: Vec<Head>,
    /// The first break, in chain order; None when every chain holds.
    pub first_break: Option<Break>,
}

/// Rows read per round trip while verifying.
const VERIFY_BATCH: usize = 2000;

/// Re-walks every chain from its first row, checking positions, seals and order;
/// `progress` hears the rows checked so far.
pub fn verify(store: &dyn Store, progress: &mut dyn FnMut(u64)) -> Result<Verification> {
    let mut checked = 0u64;
    let mut heads: Vec<Head> = Vec::new();
    let mut first_break: Option<Break> = None;
    // The chain being walked: (chain, last position, last seal).
    let mut walking: Option<(i64, i64, Vec<u8>)> = None;
    let mut after: Option<(i64, i64)> = None;
    loop {
        let rows = store.audit_rows(after, VERIFY_BATCH)?;
        for row in &rows {
            checked += 1;
            let (position, previous) = match &walking {
                Some((chain, position, hash)) if *chain == row.chain => (*position, hash.clone()),
                other => {
                    if let Some((chain, position, hash)) = other {
                        heads.push(Head {
                            chain: *chain,
                            position: *position,
                            hash: hex(hash),
                        });
                    }
                    (0, Vec::new())
                }
            };
            if first_break.is_none() {
                first_break = check_row(row, position, &previous);
            }
            walking = Some((row.chain, row.position, row.hash.clone()));
        }
        progress(checked);
        match rows.last() {
            Some(last) if rows.len() == VERIFY_BATCH => after = Some((last.chain, last.position)),
            _ => break,
        }
    }
    if let Some((chain, position, hash)) = walking {
        heads.push(Head {
            chain,
            position,
            hash: hex(&hash),
        });
    }
    Ok(Verification {
        checked,
        heads,
        first_break,
    })
}

/// Checks one row against the row before it in its chain.
fn check_row(row: &SealedAudit, previous_position: i64, previous: &[u8]) -> Option<Break> {
    let broken = |what: String| {
        Some(Break {
            chain: row.chain,
            position: row.position,
            seq: Some(row.seq),
            what,
        })
    };
    if row.position != previous_position + 1 {
        return Some(Break {
            chain: row.chain,
            position: previous_position + 1,
            seq: None,
            what: format!(
                "rows removed: positions {} to {} are missing",
                previous_position + 1,
                row.position - 1
            ),
        });
    }
    if seal(&row.previous, row.chain, &row.entry) != row.hash {
        return broken(format!("row changed: seq {} does not match its seal", row.seq));
    }
    if row.previous != previous {
        return broken(format!(
            "rows reordered: seq {} was not written after the row above it",
            row.seq
        ));
    }
    None
}

/// Checks recorded heads (lines `chain position hash`, as `sijill audit verify` prints
/// them) against the trail: each recorded position must still carry the recorded seal.
pub fn check_anchors(store: &dyn Store, anchors: &[Head]) -> Result<Option<Break>> {
    for anchor in anchors {
        let rows = store.audit_rows(Some((anchor.chain, anchor.position - 1)), 1)?;
        let found = rows
            .first()
            .filter(|r| r.chain == anchor.chain && r.position == anchor.position);
        match found {
            Some(row) if hex(&row.hash) == anchor.hash => {}
            Some(row) => {
                return Ok(Some(Break {
                    chain: anchor.chain,
                    position: anchor.position,
                    seq: Some(row.seq),
                    what: "the row at a recorded anchor has another seal: the chain was rewritten".into(),
                }))
            }
            None => {
                return Ok(Some(Break {
                    chain: anchor.chain,
                    position: anchor.position,
                    seq: None,
                    what: "a recorded anchor is gone: the newest rows were cut off".into(),
                }))
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u8) -> AuditEntry {
        AuditEntry {
            recorded: format!("2026-11-24T10:00:0{n}Z"),
            patient: Some("p".into()),
            agent: "a".into(),
            flag: None,
            body: vec![n],
        }
    }

    fn rows(entries: &[AuditEntry]) -> Vec<SealedAudit> {
        seal_after(None, 0, entries)
            .into_iter()
            .zip(entries)
            .enumerate()
            .map(|(i, ((position, previous, hash), e))| SealedAudit {
                seq: i as i64 + 1,
                chain: 0,
                position,
                entry: e.clone(),
                previous,
                hash,
            })
            .collect()
    }

    fn first_break(rows: &[SealedAudit]) -> Option<Break> {
        let mut previous = (0, Vec::new());
        for row in rows {
            if let Some(b) = check_row(row, previous.0, &previous.1) {
                return Some(b);
            }
            previous = (row.position, row.hash.clone());
        }
        None
    }

    #[test]
    fn a_sealed_chain_holds_and_each_kind_of_tampering_breaks_it() {
        let good = rows(&[entry(1), entry(2), entry(3), entry(4)]);
        assert_eq!(first_break(&good), None);

        let mut changed = good.clone();
        changed[1].entry.agent = "someone else".into();
        let b = first_break(&changed).expect("changed");
        assert_eq!((b.position, b.what.starts_with("row changed")), (2, true));

        let mut removed = good.clone();
        removed.remove(2);
        let b = first_break(&removed).expect("removed");
        assert_eq!((b.position, b.what.starts_with("rows removed")), (3, true));

        let mut reordered = good.clone();
        reordered.swap(1, 2);
        reordered[1].position = 2;
        reordered[2].position = 3;
        let b = first_break(&reordered).expect("reordered");
        assert_eq!((b.position, b.what.starts_with("rows reordered")), (2, true));
    }

    #[test]
    fn every_column_is_under_the_seal() {
        let e = entry(1);
        let base = seal(&[], 0, &e);
        assert_ne!(base, seal(&[], 1, &e));
        assert_ne!(base, seal(&[9], 0, &e));
        for changed in [
            AuditEntry {
                recorded: "x".into(),
                ..e.clone()
            },
            AuditEntry {
                patient: None,
                ..e.clone()
            },
            AuditEntry {
                flag: Some("break-glass".into()),
                ..e.clone()
            },
            AuditEntry {
                body: vec![2],
                ..e.clone()
            },
        ] {
            assert_ne!(base, seal(&[], 0, &changed));
        }
    }
}
