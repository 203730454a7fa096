//! A Schedule's weekly availability and the slot times it yields.
//!
//! FHIR R4 has no element for recurring availability (R5 adds the `Availability` data
//! type), so a Schedule carries it in two extensions modelled on R5's:
//!
//! - `availability` (repeating): `daysOfWeek` (code, repeating: mon…sun),
//!   `availableStartTime` and `availableEndTime` (time, local), `slotMinutes`
//!   (positiveInt), `capacity` (positiveInt: patients seen in parallel, default 1) and
//!   `mode` (code: `in-person`, default, or `virtual` for teleconsultation);
//! - `not-available` (repeating): `during` (Period) and an optional `description` — a
//!   closure, an absence, a local holiday.
//!
//! National public holidays come from the country profile and close every schedule.

use serde_json::Value;
use time::{Date, Duration, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset, Weekday};

/// The extension with one weekly availability pattern.
pub const AVAILABILITY_URL: &str = "https://sijill.health/fhir/StructureDefinition/availability";

/// The extension with one period in which a schedule has no slots.
pub const NOT_AVAILABLE_URL: &str = "https://sijill.health/fhir/StructureDefinition/not-available";

/// The most patients one slot time may take in parallel (slot ids end in the seat number).
pub const MAX_CAPACITY: u16 = 99;

/// The longest Schedule id that slot ids can be made from (64 minus `-YYYYMMDDhhmm-NN`).
pub const MAX_SCHEDULE_ID: usize = 48;

/// In person or by video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// At the facility.
    InPerson,
    /// A teleconsultation.
    Virtual,
}

impl Mode {
    /// The code, as written in the availability and on slots.
    pub fn code(self) -> &'static str {
        match self {
            Mode::InPerson => "in-person",
            Mode::Virtual => "virtual",
        }
    }

    /// The mode of a code.
    pub fn parse(code: &str) -> Option<Mode> {
        match code {
            "in-person" => Some(Mode::InPerson),
            "virtual" => Some(Mode::Virtual),
            _ => None,
        }
    }
}

/// One weekly pattern: on these days, from start to end, slots of this length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    /// The days it applies to.
    pub days: Vec<Weekday>,
    /// The first slot's local start time.
    pub start: Time,
    /// No slot ends after this local time.
    pub end: Time,
    /// The length of a slot.
    pub minutes: u16,
    /// Patients per slot time.
    pub capacity: u16,
    /// In person or by video.
    pub mode: Mode,
}

/// A period without slots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closure {
    /// Start (inclusive).
    pub start: OffsetDateTime,
    /// End (exclusive).
    pub end: OffsetDateTime,
}

/// A schedule's availability: its weekly patterns and closures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Availability {
    /// Weekly patterns.
    pub patterns: Vec<Pattern>,
    /// Periods without slots.
    pub closures: Vec<Closure>,
}

/// One slot the availability yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedSlot {
    /// Start.
    pub start: OffsetDateTime,
    /// End.
    pub end: OffsetDateTime,
    /// Which of the parallel places at this time (1-based).
    pub seat: u16,
    /// In person or by video.
    pub mode: Mode,
}

impl PlannedSlot {
    /// The slot's id: the schedule's, the local start time and the seat, so that
    /// generating twice makes the same slots.
    pub fn id(&self, schedule: &str) -> String {
        let s = self.start;
        format!(
            "{schedule}-{:04}{:02}{:02}{:02}{:02}-{}",
            s.year(),
            s.month() as u8,
            s.day(),
            s.hour(),
            s.minute(),
            self.seat
        )
    }
}

/// National public holidays on fixed dates (month, day).
#[derive(Debug, Clone, Default)]
pub struct Holidays(pub Vec<(Month, u8)>);

impl Holidays {
    /// Parses `MM-DD` dates.
    pub fn parse(dates: &[String]) -> Result<Holidays, String> {
        let mut out = Vec::new();
        for d in dates {
            let parsed = d.split_once('-').and_then(|(m, day)| {
                let month = Month::try_from(m.parse::<u8>().ok()?).ok()?;
                let day = day.parse::<u8>().ok()?;
                Date::from_calendar_date(2024, month, day).ok()?;
                Some((month, day))
            });
            out.push(parsed.ok_or_else(|| format!("'{d}' is not a holiday date (MM-DD)"))?);
        }
        Ok(Holidays(out))
    }

    /// Whether a date is a public holiday.
    pub fn contains(&self, date: Date) -> bool {
        self.0.iter().any(|(m, d)| date.month() == *m && date.day() == *d)
    }
}

/// The sub-extensions of a complex extension with this url.
fn sub<'a>(ext: &'a Value, url: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    ext["extension"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(move |e| e["url"] == url)
}

fn weekday(code: &str) -> Option<Weekday> {
    Some(match code {
        "mon" => Weekday::Monday,
        "tue" => Weekday::Tuesday,
        "wed" => Weekday::Wednesday,
        "thu" => Weekday::Thursday,
        "fri" => Weekday::Friday,
        "sat" => Weekday::Saturday,
        "sun" => Weekday::Sunday,
        _ => return None,
    })
}

fn time_of(value: Option<&Value>, name: &str) -> Result<Time, String> {
    let text = value
        .and_then(|v| v["valueTime"].as_str())
        .ok_or_else(|| format!("availability: '{name}' (valueTime hh:mm:ss) is missing"))?;
    let format = time::macros::format_description!("[hour]:[minute]:[second]");
    Time::parse(text, &format).map_err(|_| format!("availability: '{name}' = '{text}' is not a time hh:mm:ss"))
}

fn positive(value: Option<&Value>, name: &str, default: Option<u16>, max: u16) -> Result<u16, String> {
    match value {
        None => default.ok_or_else(|| format!("availability: '{name}' (valuePositiveInt) is missing")),
        Some(v) => v["valuePositiveInt"]
            .as_u64()
            .filter(|n| (1..=max as u64).contains(n))
            .map(|n| n as u16)
            .ok_or_else(|| format!("availability: '{name}' must be a whole number from 1 to {max}")),
    }
}

fn pattern(ext: &Value) -> Result<Pattern, String> {
    let mut days = Vec::new();
    for d in sub(ext, "daysOfWeek") {
        let code = d["valueCode"].as_str().unwrap_or("");
        days.push(weekday(code).ok_or_else(|| format!("availability: '{code}' is not a day (mon…sun)"))?);
    }
    if days.is_empty() {
        return Err("availability: at least one 'daysOfWeek' is needed".into());
    }
    let start = time_of(sub(ext, "availableStartTime").next(), "availableStartTime")?;
    let end = time_of(sub(ext, "availableEndTime").next(), "availableEndTime")?;
    if end <= start {
        return Err("availability: 'availableEndTime' must be after 'availableStartTime'".into());
    }
    let minutes = positive(sub(ext, "slotMinutes").next(), "slotMinutes", None, 24 * 60)?;
    let capacity = positive(sub(ext, "capacity").next(), "capacity", Some(1), MAX_CAPACITY)?;
    let mode = match sub(ext, "mode").next() {
        None => Mode::InPerson,
        Some(m) => {
            let code = m["valueCode"].as_str().unwrap_or("");
            Mode::parse(code).ok_or_else(|| format!("availability: mode '{code}' is neither in-person nor virtual"))?
        }
    };
    Ok(Pattern {
        days,
        start,
        end,
        minutes,
        capacity,
        mode,
    })
}

fn closure(ext: &Value) -> Result<Closure, String> {
    let during = sub(ext, "during")
        .next()
        .map(|d| &d["valuePeriod"])
        .ok_or_else(|| "not-available: 'during' (valuePeriod) is missing".to_string())?;
    let bound = |name: &str| -> Result<OffsetDateTime, String> {
        let text = during[name]
            .as_str()
            .ok_or_else(|| format!("not-available: the period needs a {name}"))?;
        parse_moment(text).ok_or_else(|| format!("not-available: '{text}' is not a dateTime with a time zone"))
    };
    let (start, end) = (bound("start")?, bound("end")?);
    if end <= start {
        return Err("not-available: the period must end after it starts".into());
    }
    Ok(Closure { start, end })
}

/// Parses an instant (a dateTime with a time and a zone).
pub fn parse_moment(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()
}

/// Formats a moment as a FHIR instant in its own offset (`2026-12-01T08:30:00+01:00`).
pub fn format_moment(moment: OffsetDateTime) -> String {
    moment
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

impl Availability {
    /// The availability written on a Schedule; an unreadable extension is an error that
    /// says which.
    pub fn of_schedule(schedule: &Value) -> Result<Availability, String> {
        let mut out = Availability::default();
        for ext in schedule["extension"].as_array().into_iter().flatten() {
            match ext["url"].as_str() {
                Some(AVAILABILITY_URL) => out.patterns.push(pattern(ext)?),
                Some(NOT_AVAILABLE_URL) => out.closures.push(closure(ext)?),
                _ => {}
            }
        }
        Ok(out)
    }

    /// The slots from the date `from` up to (not including) `until`, local time at
    /// `offset`, leaving out public holidays and closures, in start order.
    pub fn slots(&self, from: Date, until: Date, offset: UtcOffset, holidays: &Holidays) -> Vec<PlannedSlot> {
        let mut out = Vec::new();
        let mut day = from;
        while day < until {
            if !holidays.contains(day) {
                for p in self.patterns.iter().filter(|p| p.days.contains(&day.weekday())) {
                    self.day_of(p, day, offset, &mut out);
                }
            }
            day = day.next_day().unwrap_or(until);
        }
        out.sort_by(|a, b| a.start.cmp(&b.start).then(a.seat.cmp(&b.seat)));
        out
    }

    fn day_of(&self, p: &Pattern, day: Date, offset: UtcOffset, out: &mut Vec<PlannedSlot>) {
        let length = Duration::minutes(p.minutes as i64);
        let last = PrimitiveDateTime::new(day, p.end).assume_offset(offset);
        let mut start = PrimitiveDateTime::new(day, p.start).assume_offset(offset);
        while start + length <= last {
            let end = start + length;
            if !self.closures.iter().any(|c| start < c.end && c.start < end) {
                for seat in 1..=p.capacity {
                    out.push(PlannedSlot {
                        start,
                        end,
                        seat,
                        mode: p.mode,
                    });
                }
            }
            start = end;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use time::macros::{date, offset};

    fn schedule(patterns: Value, closures: Value) -> Value {
        let mut ext: Vec<Value> = patterns.as_array().cloned().unwrap_or_default();
        ext.extend(closures.as_array().cloned().unwrap_or_default());
        json!({"resourceType": "Schedule", "extension": ext})
    }

    fn weekly(days: &[&str], from: &str, to: &str, minutes: u64, capacity: u64) -> Value {
        let mut ext: Vec<Value> = days
            .iter()
            .map(|d| json!({"url": "daysOfWeek", "valueCode": d}))
            .collect();
        ext.push(json!({"url": "availableStartTime", "valueTime": from}));
        ext.push(json!({"url": "availableEndTime", "valueTime": to}));
        ext.push(json!({"url": "slotMinutes", "valuePositiveInt": minutes}));
        ext.push(json!({"url": "capacity", "valuePositiveInt": capacity}));
        json!({"url": AVAILABILITY_URL, "extension": ext})
    }

    #[test]
    fn a_week_of_mornings_leaves_out_other_days_holidays_and_closures() {
        let s = schedule(
            json!([weekly(&["mon", "wed"], "08:30:00", "10:00:00", 20, 1)]),
            json!([{"url": NOT_AVAILABLE_URL, "extension": [
                {"url": "during", "valuePeriod": {"start": "2026-12-09T09:00:00+01:00", "end": "2026-12-09T12:00:00+01:00"}}]}]),
        );
        let a = Availability::of_schedule(&s).unwrap();
        // Monday 2026-11-30 to Sunday 2026-12-13; 2026-12-07 (a Monday) is a holiday.
        let holidays = Holidays::parse(&["12-07".to_string()]).unwrap();
        let slots = a.slots(date!(2026 - 11 - 30), date!(2026 - 12 - 14), offset!(+1), &holidays);
        let starts: Vec<String> = slots.iter().map(|s| format_moment(s.start)).collect();
        // 08:30, 08:50, 09:10 (09:30 would end at 09:50 ≤ 10:00: also), then 09:50 would end after 10:00.
        let day = |d: &str| -> Vec<String> {
            ["08:30", "08:50", "09:10", "09:30"]
                .iter()
                .map(|t| format!("{d}T{t}:00+01:00"))
                .collect()
        };
        let mut expected = day("2026-11-30");
        expected.extend(day("2026-12-02"));
        // 2026-12-09: the closure from 09:00 removes 08:50 (ends 09:10) and later.
        expected.push("2026-12-09T08:30:00+01:00".into());
        assert_eq!(starts, expected);
        assert_eq!(slots[0].id("sch"), "sch-202611300830-1");
        assert_eq!(slots[0].end - slots[0].start, Duration::minutes(20));
    }

    #[test]
    fn capacity_makes_parallel_seats_and_mode_is_kept() {
        let mut p = weekly(&["tue"], "14:00:00", "15:00:00", 30, 3);
        p["extension"]
            .as_array_mut()
            .unwrap()
            .push(json!({"url": "mode", "valueCode": "virtual"}));
        let a = Availability::of_schedule(&schedule(json!([p]), json!([]))).unwrap();
        let slots = a.slots(
            date!(2026 - 12 - 01),
            date!(2026 - 12 - 02),
            offset!(+1),
            &Holidays::default(),
        );
        let ids: Vec<String> = slots.iter().map(|s| s.id("x")).collect();
        assert_eq!(
            ids,
            [
                "x-202612011400-1",
                "x-202612011400-2",
                "x-202612011400-3",
                "x-202612011430-1",
                "x-202612011430-2",
                "x-202612011430-3"
            ]
        );
        assert!(slots.iter().all(|s| s.mode == Mode::Virtual));
    }

    #[test]
    fn bad_availability_says_what_is_wrong() {
        let cases = [
            (weekly(&["mon"], "10:00:00", "09:00:00", 20, 1), "after"),
            (weekly(&["xyz"], "08:00:00", "09:00:00", 20, 1), "not a day"),
            (weekly(&[], "08:00:00", "09:00:00", 20, 1), "daysOfWeek"),
            (weekly(&["mon"], "8h", "09:00:00", 20, 1), "not a time"),
            (weekly(&["mon"], "08:00:00", "09:00:00", 0, 1), "slotMinutes"),
            (weekly(&["mon"], "08:00:00", "09:00:00", 20, 500), "capacity"),
        ];
        for (ext, needle) in cases {
            let err = Availability::of_schedule(&schedule(json!([ext]), json!([]))).unwrap_err();
            assert!(err.contains(needle), "{err} should mention {needle}");
        }
        let closure = json!([{"url": NOT_AVAILABLE_URL, "extension": [
            {"url": "during", "valuePeriod": {"start": "2026-12-09", "end": "2026-12-10"}}]}]);
        assert!(Availability::of_schedule(&schedule(json!([]), closure))
            .unwrap_err()
            .contains("time zone"));
        assert!(Holidays::parse(&["02-30".to_string()]).is_err());
    }
}
