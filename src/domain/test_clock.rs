//! Test clocks as the API shows them, and the rules for their time: a frozen instant inside the
//! years billing can compute with, moved only forward and at most two years per advance.

use serde::Serialize;
use time::{Date, Month, OffsetDateTime};

use super::ids::TestClockId;
use super::timestamp::Timestamp;
use super::{text, wire_enum, FieldError};

pub const NAME_MAX: usize = 300;
/// One advance runs every renewal, retry and reminder that came due, in order, inside one request:
/// the cap keeps that work (and the request) bounded.
pub const MAX_ADVANCE_YEARS: i32 = 2;
/// Frozen times stay inside these years so that periods, trials and end dates computed from them
/// (years ahead, on local calendars) never leave the range the time crates handle.
pub const FIRST_YEAR: i32 = 2000;
pub const LAST_YEAR: i32 = 2199;

wire_enum!(
    /// `advancing` while one request runs what came due; every other request sees `ready` again once
    /// it has finished.
    TestClockStatus {
        Ready => "ready",
        Advancing => "advancing",
    }
);

#[derive(Clone, Debug, Serialize)]
pub struct TestClock {
    pub test_clock_id: TestClockId,
    pub name: Option<String>,
    pub frozen_time: Timestamp,
    pub status: TestClockStatus,
    pub created_at: Timestamp,
    pub test_mode: bool,
    /// Only in the answer to a delete.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    /// When the running advance began (system time), while `advancing`.
    #[serde(skip)]
    pub advancing_since: Option<Timestamp>,
}

/// An advance that has held its clock this long (system time) belonged to a process that died:
/// the clock may be advanced again (what the dead advance did stays done, exactly once).
pub const STUCK_ADVANCE_SECONDS: i64 = 600;

impl TestClock {
    /// Whether another advance is running now (not one that died holding the clock).
    pub fn is_being_advanced(&self, now: Timestamp) -> bool {
        self.status == TestClockStatus::Advancing
            && self.advancing_since.is_none_or(|t| t.plus_seconds(STUCK_ADVANCE_SECONDS) > now)
    }
}

pub fn name(raw: &str, param: &str) -> Result<Option<String>, FieldError> {
    text::optional_text(raw, param, NAME_MAX)
}

/// An RFC 3339 instant inside the supported years.
pub fn frozen_time(raw: &str, param: &str) -> Result<Timestamp, FieldError> {
    let t = Timestamp::parse_rfc3339(raw.trim()).ok_or_else(|| {
        FieldError::new(param, format!("{param} must be an RFC 3339 timestamp like 2024-03-20T00:00:00Z"))
    })?;
    let year = t.to_datetime().year();
    if !(FIRST_YEAR..=LAST_YEAR).contains(&year) {
        return Err(FieldError::new(param, format!("{param} must be in the years {FIRST_YEAR} to {LAST_YEAR}")));
    }
    Ok(t)
}

/// Where an advance from `current` may go: `to`, when it is after `current` and at most two
/// calendar years later.
pub fn advance_target(current: Timestamp, to: Timestamp, param: &str) -> Result<Timestamp, FieldError> {
    if to <= current {
        return Err(FieldError::new(
            param,
            format!(
                "{param} must be after the clock's current frozen_time ({}): clocks only move forward",
                current.rfc3339()
            ),
        ));
    }
    let limit = years_after(current, MAX_ADVANCE_YEARS);
    if to > limit {
        return Err(FieldError::new(
            param,
            format!(
                "a clock moves at most {MAX_ADVANCE_YEARS} years per advance: {param} can be at most {}",
                limit.rfc3339()
            ),
        ));
    }
    Ok(to)
}

/// The same wall time `years` later in UTC; 29 February becomes 28 February in a common year.
fn years_after(t: Timestamp, years: i32) -> Timestamp {
    let dt = t.to_datetime();
    let year = dt.year() + years;
    let date = Date::from_calendar_date(year, dt.month(), dt.day())
        .or_else(|_| Date::from_calendar_date(year, Month::February, 28))
        .unwrap_or(dt.date());
    Timestamp::from_datetime(OffsetDateTime::new_utc(date, dt.time()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(raw: &str) -> Timestamp {
        Timestamp::parse_rfc3339(raw).unwrap()
    }

    #[test]
    fn frozen_times_are_rfc3339_inside_the_supported_years() {
        assert_eq!(frozen_time("2024-03-20T05:30:00+05:30", "p").unwrap(), at("2024-03-20T00:00:00Z"));
        for bad in
            ["", "2024-03-20", "1710892800", "2024-02-30T00:00:00Z", "1999-12-31T23:59:59Z", "2200-01-01T00:00:00Z"]
        {
            assert_eq!(
                frozen_time(bad, "test_clock.frozen_time").unwrap_err().param,
                "test_clock.frozen_time",
                "{bad}"
            );
        }
        assert!(frozen_time("2000-01-01T00:00:00Z", "p").is_ok());
        assert!(frozen_time("2199-12-31T23:59:59.999999Z", "p").is_ok());
    }

    #[test]
    fn advances_go_forward_and_at_most_two_calendar_years() {
        let now = at("2024-01-01T00:00:00Z");
        assert!(advance_target(now, now, "p").is_err());
        assert!(advance_target(now, at("2023-12-31T23:59:59Z"), "p").is_err());
        assert!(advance_target(now, Timestamp::from_micros(now.micros() + 1), "p").is_ok());
        assert!(advance_target(now, at("2026-01-01T00:00:00Z"), "p").is_ok());
        assert!(advance_target(now, Timestamp::from_micros(at("2026-01-01T00:00:00Z").micros() + 1), "p").is_err());
        // Two years from a leap day end on 28 February.
        let leap = at("2024-02-29T12:00:00Z");
        assert!(advance_target(leap, at("2026-02-28T12:00:00Z"), "p").is_ok());
        assert!(advance_target(leap, at("2026-02-28T12:00:01Z"), "p").is_err());
    }
}
