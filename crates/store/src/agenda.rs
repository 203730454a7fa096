//! The agenda of free slots: every free Slot's schedule and start, kept in the same
//! transaction as the Slot itself, in start order.
//!
//! It serves one question that the general search answers slowly at national scale —
//! "the earliest free slots of these schedules from this moment" (`Appointment/$find`):
//! a search sorted by `start` must gather and sort every match before it can return the
//! first ten, while the agenda is read in start order and stops as soon as enough are
//! found. It is derived from the index rows of a Slot (`status`, `schedule`, `start`), so
//! it is rebuilt with the rest of the index and can never say more than the Slots do.

use crate::index::IndexRow;
use crate::sql::Arg;

/// The agenda's table.
pub const TABLE: &str = "free_slots";

/// One free slot in the agenda.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FreeSlot {
    /// The Slot's id.
    pub id: String,
    /// The id of its Schedule.
    pub schedule: String,
    /// Its start, in the stored instant format (UTC, fixed width).
    pub start: String,
    /// The store's row id of the Slot: breaks ties between slots that start together.
    pub rid: i64,
}

/// A page of the agenda, in (start, row id) order.
#[derive(Debug, Clone, Default)]
pub struct AgendaQuery {
    /// Only this schedule's slots (None: every schedule's).
    pub schedule: Option<String>,
    /// Slots starting at or after this instant (stored format).
    pub from: String,
    /// Slots starting before this instant (stored format).
    pub until: String,
    /// Resume after this (start, row id): the last slot of the previous page.
    pub after: Option<(String, i64)>,
    /// Most slots returned.
    pub limit: usize,
}

/// The agenda row of a resource, from its index rows: (schedule id, start) when it is a
/// free Slot of a Schedule with a start.
pub fn free_slot(resource_type: &str, rows: &[IndexRow]) -> Option<(String, String)> {
    if resource_type != "Slot" {
        return None;
    }
    let free = rows
        .iter()
        .any(|r| r.param == "status" && r.range.is_none() && r.value == "free");
    if !free {
        return None;
    }
    let schedule = rows
        .iter()
        .find(|r| r.param == "schedule" && r.system.as_deref() == Some("Schedule"))?;
    let start = rows.iter().find(|r| r.param == "start")?.range.as_ref()?;
    Some((schedule.value.clone(), start.0.clone()))
}

/// The statement reading one page of the agenda (placeholders `?`), and its values. Its
/// columns: Slot id, schedule id, start, row id.
pub fn page_statement(q: &AgendaQuery) -> (String, Vec<Arg>) {
    let mut sql = String::from(
        "SELECT r.id, f.schedule, f.start, f.rid FROM free_slots f JOIN resources r ON r.rid = f.rid \
         WHERE f.start >= ? AND f.start < ?",
    );
    let mut args = vec![Arg::Text(q.from.clone()), Arg::Text(q.until.clone())];
    if let Some(schedule) = &q.schedule {
        sql.push_str(" AND f.schedule = ?");
        args.push(Arg::Text(schedule.clone()));
    }
    if let Some((start, rid)) = &q.after {
        sql.push_str(" AND (f.start > ? OR (f.start = ? AND f.rid > ?))");
        args.extend([Arg::Text(start.clone()), Arg::Text(start.clone()), Arg::Int(*rid)]);
    }
    sql.push_str(&format!(" ORDER BY f.start, f.rid LIMIT {}", q.limit));
    (sql, args)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn slot(status: &str) -> serde_json::Value {
        json!({
            "resourceType": "Slot",
            "schedule": {"reference": "Schedule/s1"},
            "status": status,
            "start": "2026-12-01T09:00:00+01:00",
            "end": "2026-12-01T09:20:00+01:00"
        })
    }

    #[test]
    fn a_free_slot_is_in_the_agenda_in_utc() {
        let rows = crate::index::extract("Slot", &slot("free"));
        let (schedule, start) = free_slot("Slot", &rows).expect("a free slot");
        assert_eq!(schedule, "s1");
        assert!(start.starts_with("2026-12-01T08:00:00"), "{start}");
    }

    #[test]
    fn a_taken_slot_or_another_type_is_not() {
        let rows = crate::index::extract("Slot", &slot("busy"));
        assert_eq!(free_slot("Slot", &rows), None);
        let rows = crate::index::extract("Slot", &slot("free"));
        assert_eq!(free_slot("Appointment", &rows), None);
    }

    #[test]
    fn pages_resume_after_the_last_slot_and_narrow_to_a_schedule() {
        let (sql, args) = page_statement(&AgendaQuery {
            schedule: Some("s1".into()),
            from: "a".into(),
            until: "b".into(),
            after: Some(("t".into(), 7)),
            limit: 5,
        });
        assert!(sql.contains("f.schedule = ?") && sql.contains("f.rid > ?") && sql.ends_with("LIMIT 5"));
        assert_eq!(args.len(), 6);
        assert_eq!(sql.matches('?').count(), args.len());
    }
}
