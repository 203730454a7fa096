//! Instants as the store keeps them: UTC, millisecond precision, fixed width
//! (`2026-11-23T19:35:00.123Z`), so that text order is time order.

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, UtcOffset};

const STORED: &[time::format_description::FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

fn format(t: OffsetDateTime) -> String {
    // Beyond the years the calendar can hold in UTC, clamp to the ends of the stored range.
    match t.checked_to_offset(UtcOffset::UTC) {
        Some(utc) => utc
            .format(STORED)
            .unwrap_or_else(|_| "1970-01-01T00:00:00.000Z".to_string()),
        None if t.year() < 0 => "0000-01-01T00:00:00.000Z".to_string(),
        None => "9999-12-31T23:59:59.999Z".to_string(),
    }
}

/// The current time in the stored format.
pub fn now_instant() -> String {
    format(OffsetDateTime::now_utc())
}

/// The time `seconds` from now (negative: ago) in the stored format.
pub fn instant_in(seconds: i64) -> String {
    format(OffsetDateTime::now_utc() + time::Duration::seconds(seconds))
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

/// The first and last millisecond (stored format) of the period a FHIR date, dateTime or
/// instant denotes, at its precision: `2024` is the whole year, `2024-02` the month,
/// `2024-02-10` the day, `2024-02-10T08:30` the minute, seconds the second, and a value
/// with fractions that exact millisecond. A time without zone is taken as UTC.
pub fn date_range(s: &str) -> Option<(String, String)> {
    use time::{Date, Month, PrimitiveDateTime, Time};
    let (date_part, time_part) = match s.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let mut fields = date_part.split('-');
    let year: i32 = fields.next().filter(|y| y.len() == 4)?.parse().ok()?;
    let month: Option<u8> = match fields.next() {
        Some(m) if m.len() == 2 => Some(m.parse().ok()?),
        Some(_) => return None,
        None => None,
    };
    let day: Option<u8> = match fields.next() {
        Some(d) if d.len() == 2 => Some(d.parse().ok()?),
        Some(_) => return None,
        None => None,
    };
    if fields.next().is_some() || (time_part.is_some() && day.is_none()) {
        return None;
    }
    let start_month = Month::try_from(month.unwrap_or(1)).ok()?;
    let start = Date::from_calendar_date(year, start_month, day.unwrap_or(1)).ok()?;
    let Some(time_text) = time_part else {
        let end = match (month, day) {
            (_, Some(_)) => start,
            (Some(_), None) => Date::from_calendar_date(year, start_month, start_month.length(year)).ok()?,
            (None, None) => Date::from_calendar_date(year, Month::December, 31).ok()?,
        };
        let low = PrimitiveDateTime::new(start, Time::MIDNIGHT).assume_utc();
        let high = PrimitiveDateTime::new(end, Time::from_hms_milli(23, 59, 59, 999).ok()?).assume_utc();
        return Some((format(low), format(high)));
    };
    // Split the zone off: Z, +hh:mm or -hh:mm.
    let (clock, zone) = if let Some(c) = time_text.strip_suffix('Z') {
        (c, "+00:00")
    } else if time_text.len() > 6 && matches!(time_text.as_bytes()[time_text.len() - 6], b'+' | b'-') {
        time_text.split_at(time_text.len() - 6)
    } else {
        (time_text, "+00:00")
    };
    let zone_sign = if zone.starts_with('-') { -1 } else { 1 };
    let (zh, zm) = zone.get(1..)?.split_once(':')?;
    let (zh, zm): (i8, i8) = (
        zh.parse().ok().filter(|h| (0..=23).contains(h))?,
        zm.parse().ok().filter(|m| (0..=59).contains(m))?,
    );
    let offset = time::UtcOffset::from_hms(zone_sign * zh, zone_sign * zm, 0).ok()?;
    let mut parts = clock.split(':');
    let hour: u8 = parts.next()?.parse().ok()?;
    let minute: u8 = parts.next()?.parse().ok()?;
    let (second, millis, span_ms): (u8, u16, i64) = match parts.next() {
        None => (0, 0, 60_000 - 1),
        Some(sec) => match sec.split_once('.') {
            None => (sec.parse().ok()?, 0, 999),
            Some((whole, frac)) if !frac.is_empty() && frac.chars().all(|c| c.is_ascii_digit()) => {
                let ms: u16 = format!("{frac:0<3}")[..3].parse().ok()?;
                (whole.parse().ok()?, ms, 0)
            }
            Some(_) => return None,
        },
    };
    if parts.next().is_some() {
        return None;
    }
    let low =
        PrimitiveDateTime::new(start, Time::from_hms_milli(hour, minute, second, millis).ok()?).assume_offset(offset);
    let high = low.checked_add(time::Duration::milliseconds(span_ms)).unwrap_or(low);
    Some((format(low), format(high)))
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
