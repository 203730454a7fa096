//! Instants as the store keeps them: UTC, millisecond precision, fixed width
//! (`2026-11-23T19:35:00.123Z`), so that text order is time order.

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, UtcOffset};

const STORED: &[time::format_description::FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

fn format(t: OffsetDateTime) -> String {
    t.to_offset(UtcOffset::UTC)
        .format(STORED)
        .unwrap_or_else(|_| "1970-01-01T00:00:00.000Z".to_string())
}

/// The current time in the stored format.
pub fn now_instant() -> String {
    format(OffsetDateTime::now_utc())
}

/// Parses a FHIR instant/dateTime (`2024-01-02T03:04:05+02:00`, or a date `2024-01-02`,
/// `2024-01`, `2024`, taken as the start of that period in UTC) into the stored format.
pub fn parse_instant(s: &str) -> Option<String> {
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Some(format(t));
    }
    let padded = match s.len() {
        4 => format!("{s}-01-01T00:00:00Z"),
        7 => format!("{s}-01T00:00:00Z"),
        10 => format!("{s}T00:00:00Z"),
        _ => return None,
    };
    OffsetDateTime::parse(&padded, &Rfc3339).ok().map(format)
}

/// Converts a stored instant to the RFC 7231 form used by `Last-Modified`.
pub fn to_http_date(stored: &str) -> Option<String> {
    let t = OffsetDateTime::parse(stored, &Rfc3339).ok()?;
    let f = format_description!("[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT");
    t.format(f).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_sort_as_time() {
        let a = now_instant();
        assert_eq!(a.len(), 24);
        assert!(a.ends_with('Z'));
        assert_eq!(
            parse_instant("2024-01-02T03:04:05+02:00").unwrap(),
            "2024-01-02T01:04:05.000Z"
        );
        assert_eq!(parse_instant("2024").unwrap(), "2024-01-01T00:00:00.000Z");
        assert!(parse_instant("yesterday").is_none());
        assert_eq!(
            to_http_date("2024-01-02T01:04:05.000Z").unwrap(),
            "Tue, 02 Jan 2024 01:04:05 GMT"
        );
    }
}
