//! Billing period arithmetic (pure, no I/O), as BILLING.md "Period arithmetic" specifies.
//!
//! - Periods are half-open `[start, end)` instants. They are computed on the local wall clock of the
//!   customer's IANA time zone ([`Zone`], default UTC) and handed out as UTC `OffsetDateTime`s.
//! - Boundary `k` is derived from the anchor, never from the previous boundary: the anchor's local
//!   date plus `k x count` units, with the day of month clamped to the target month's length (Jan 31
//!   gives Feb 29/28, then Mar 31, Apr 30; a yearly Feb 29 gives Feb 28 in common years and Feb 29
//!   again in leap years), at the anchor's local time of day. `QUARTER` is 3 months, `WEEK` is 7 local
//!   days, `DAY` is one local calendar day. Across DST the local time holds, so a period may be an
//!   hour shorter or longer than its nominal length (a New York midnight is 05:00Z in winter, 04:00Z
//!   in summer).
//! - A local time that does not exist (spring-forward gap) resolves to the later instant, i.e. it is
//!   shifted forward by the gap (New York 02:30 on a spring-forward day is 03:30 EDT); an ambiguous
//!   local time (fall-back fold) resolves to the earlier instant (01:30 EDT, not 01:30 EST). This is
//!   RFC 5545 / Temporal / java.time "compatible" disambiguation, as most billing systems do.
//! - `ANNIVERSARY`: the anchor is the start, or the trial end when there is a trial.
//! - `CALENDAR`: the anchor is the first calendar boundary at or after the start (or trial end):
//!   local midnight (`DAY`), Monday 00:00 (`WEEK`, ISO weeks), the 1st of the month (`MONTH`),
//!   Jan/Apr/Jul/Oct 1 (`QUARTER`), Jan 1 (`YEAR`). A start strictly between boundaries gets a stub
//!   period up to the anchor; a start exactly on a boundary has none. Full periods of
//!   `count x unit` follow from the anchor.
//! - An end date cuts the last period; nothing starts at or after it.
//! - [`prorate`] is to the second, integers only, rounded half to even.

use jiff::civil::{Date as LocalDate, DateTime as LocalDateTime};
use jiff::tz::TimeZone;
use jiff::{Span, Timestamp as Instant};
use time::OffsetDateTime;

use super::price::Interval;
use super::subscription::BillingCycle;
use super::wire_enum;

wire_enum!(PeriodUnit {
    Day => "DAY",
    Week => "WEEK",
    Month => "MONTH",
    Quarter => "QUARTER",
    Year => "YEAR",
});

impl PeriodUnit {
    pub fn from_interval(interval: Interval) -> PeriodUnit {
        match interval {
            Interval::Daily => PeriodUnit::Day,
            Interval::Weekly => PeriodUnit::Week,
            Interval::Monthly => PeriodUnit::Month,
            Interval::Quarterly => PeriodUnit::Quarter,
            Interval::Yearly => PeriodUnit::Year,
        }
    }

    /// Average length in seconds, only used to guess a period index before checking it exactly.
    fn approx_seconds(self) -> i64 {
        match self {
            PeriodUnit::Day => 86_400,
            PeriodUnit::Week => 7 * 86_400,
            PeriodUnit::Month => 2_629_746,
            PeriodUnit::Quarter => 3 * 2_629_746,
            PeriodUnit::Year => 31_556_952,
        }
    }
}

/// An IANA time zone with its DST rules (from the tz database bundled into the binary).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Zone(TimeZone);

impl Zone {
    pub fn utc() -> Zone {
        Zone(TimeZone::UTC)
    }

    /// The zone with this IANA name (`America/New_York`, `Asia/Kolkata`, `UTC`), or `None` when the
    /// tz database has no such zone. Look-up is case-insensitive.
    pub fn named(name: &str) -> Option<Zone> {
        if name.is_empty() {
            return None;
        }
        TimeZone::get(name).ok().map(Zone)
    }

    /// The zone's canonical IANA name as the tz database spells it.
    pub fn name(&self) -> &str {
        self.0.iana_name().unwrap_or("UTC")
    }

    fn local(&self, at: Instant) -> LocalDateTime {
        self.0.to_datetime(at)
    }

    /// Gap: the later instant (shifted forward by the gap). Fold: the earlier instant.
    fn resolve(&self, local: LocalDateTime) -> Option<Instant> {
        self.0.to_ambiguous_timestamp(local).compatible().ok()
    }
}

impl Default for Zone {
    fn default() -> Zone {
        Zone::utc()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("billing_period_count must be at least 1")]
    ZeroCount,
    #[error("trial_end must not be before start_date")]
    TrialBeforeStart,
    #[error("end_date must be after start_date")]
    EndNotAfterStart,
    #[error("dates are out of the supported range")]
    OutOfRange,
}

/// What a [`Schedule`] is built from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduleSpec {
    pub start: OffsetDateTime,
    pub unit: PeriodUnit,
    pub count: u32,
    pub cycle: BillingCycle,
    pub zone: Zone,
    pub trial_end: Option<OffsetDateTime>,
    pub end: Option<OffsetDateTime>,
}

impl ScheduleSpec {
    /// Anniversary billing in UTC with no trial and no end.
    pub fn new(start: OffsetDateTime, unit: PeriodUnit, count: u32) -> ScheduleSpec {
        ScheduleSpec {
            start,
            unit,
            count,
            cycle: BillingCycle::Anniversary,
            zone: Zone::utc(),
            trial_end: None,
            end: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PeriodKind {
    /// `[start, trial_end)`.
    Trial,
    /// The partial period before a `CALENDAR` anchor.
    Stub,
    /// Full period `k`: `[boundary k, boundary k + 1)` (the last one possibly cut at the end date).
    Full(u32),
}

/// A billing period `[start, end)`. `full_start`/`full_end` are the nominal period it is part of
/// (they differ from `start`/`end` for a stub or a period cut at the end date); prorate against it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Period {
    pub kind: PeriodKind,
    pub start: OffsetDateTime,
    pub end: OffsetDateTime,
    pub full_start: OffsetDateTime,
    pub full_end: OffsetDateTime,
}

impl Period {
    pub fn contains(&self, at: OffsetDateTime) -> bool {
        self.start <= at && at < self.end
    }

    /// Whole seconds in `[start, end)`.
    pub fn seconds(&self) -> i64 {
        (self.end - self.start).whole_seconds()
    }

    /// Whole seconds in the nominal period `[full_start, full_end)`.
    pub fn full_seconds(&self) -> i64 {
        (self.full_end - self.full_start).whole_seconds()
    }

    pub fn is_partial(&self) -> bool {
        self.start != self.full_start || self.end != self.full_end
    }

    /// `amount_minor` for a full period, prorated to this period's share of it.
    pub fn prorate(&self, amount_minor: i64) -> i64 {
        prorate(amount_minor, self.seconds(), self.full_seconds())
    }
}

/// A subscription's billing calendar.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    unit: PeriodUnit,
    count: u32,
    cycle: BillingCycle,
    zone: Zone,
    start: OffsetDateTime,
    trial_end: Option<OffsetDateTime>,
    end: Option<OffsetDateTime>,
    anchor: OffsetDateTime,
    anchor_local: LocalDateTime,
}

impl Schedule {
    pub fn new(spec: ScheduleSpec) -> Result<Schedule, ScheduleError> {
        let ScheduleSpec { start, unit, count, cycle, zone, trial_end, end } = spec;
        if count == 0 {
            return Err(ScheduleError::ZeroCount);
        }
        let start = to_utc(start);
        let trial_end = trial_end.map(to_utc).filter(|t| *t != start);
        if trial_end.is_some_and(|t| t < start) {
            return Err(ScheduleError::TrialBeforeStart);
        }
        let end = end.map(to_utc);
        if end.is_some_and(|e| e <= start) {
            return Err(ScheduleError::EndNotAfterStart);
        }
        let from = to_instant(trial_end.unwrap_or(start)).ok_or(ScheduleError::OutOfRange)?;
        let anchor = match cycle {
            BillingCycle::Anniversary => from,
            BillingCycle::Calendar => calendar_anchor(&zone, unit, from).ok_or(ScheduleError::OutOfRange)?,
        };
        let anchor_local = zone.local(anchor);
        let anchor = to_offset(anchor).ok_or(ScheduleError::OutOfRange)?;
        Ok(Schedule { unit, count, cycle, zone, start, trial_end, end, anchor, anchor_local })
    }

    pub fn unit(&self) -> PeriodUnit {
        self.unit
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    pub fn cycle(&self) -> BillingCycle {
        self.cycle
    }

    pub fn zone(&self) -> &Zone {
        &self.zone
    }

    pub fn start(&self) -> OffsetDateTime {
        self.start
    }

    pub fn trial_end(&self) -> Option<OffsetDateTime> {
        self.trial_end
    }

    pub fn end(&self) -> Option<OffsetDateTime> {
        self.end
    }

    /// Boundary 0: where full periods start (the `billing_anchor`).
    pub fn anchor(&self) -> OffsetDateTime {
        self.anchor
    }

    /// Boundary `k` (0 = the anchor; negative = before it), ignoring the end date. `None` out of range.
    pub fn boundary(&self, k: i64) -> Option<OffsetDateTime> {
        if k == 0 {
            return Some(self.anchor);
        }
        let n = k.checked_mul(i64::from(self.count))?;
        let date = add_units(self.anchor_local.date(), self.unit, n)?;
        to_offset(self.zone.resolve(date.to_datetime(self.anchor_local.time()))?)
    }

    /// The trial `[start, trial_end)`, cut at the end date.
    pub fn trial(&self) -> Option<Period> {
        let trial_end = self.trial_end?;
        let end = self.cut(trial_end);
        Some(Period { kind: PeriodKind::Trial, start: self.start, end, full_start: self.start, full_end: trial_end })
    }

    /// The `CALENDAR` stub `[start or trial end, anchor)`, when the start is not on a boundary.
    pub fn stub(&self) -> Option<Period> {
        let start = self.trial_end.unwrap_or(self.start);
        if start >= self.anchor || self.end.is_some_and(|e| start >= e) {
            return None;
        }
        Some(Period {
            kind: PeriodKind::Stub,
            start,
            end: self.cut(self.anchor),
            full_start: self.boundary(-1)?,
            full_end: self.anchor,
        })
    }

    /// Full period `k` (cut at the end date), or `None` when it starts at or after the end date.
    pub fn period(&self, k: u32) -> Option<Period> {
        let start = self.boundary(i64::from(k))?;
        if self.end.is_some_and(|e| start >= e) {
            return None;
        }
        let full_end = self.boundary(i64::from(k) + 1)?;
        Some(Period { kind: PeriodKind::Full(k), start, end: self.cut(full_end), full_start: start, full_end })
    }

    /// The first period to bill: the stub if any, else full period 0 (after any trial).
    pub fn first_billed_period(&self) -> Option<Period> {
        self.stub().or_else(|| self.period(0))
    }

    /// Trial (if any), stub (if any), then full periods until the end date (or year 9999).
    pub fn periods(&self) -> Periods<'_> {
        Periods { schedule: self, next: Some(PeriodKind::Trial) }
    }

    /// The period containing `at`; `None` before the start or at/after the end date.
    pub fn period_containing(&self, at: OffsetDateTime) -> Option<Period> {
        let at = to_utc(at);
        if at < self.start || self.end.is_some_and(|e| at >= e) {
            return None;
        }
        if self.trial_end.is_some_and(|t| at < t) {
            return self.trial();
        }
        if at < self.anchor {
            return self.stub();
        }
        let approx = self.unit.approx_seconds() * i64::from(self.count);
        let guess = ((at - self.anchor).whole_seconds() / approx).clamp(0, i64::from(u32::MAX - 1));
        let mut k = u32::try_from(guess).ok()?;
        while k > 0 && self.boundary(i64::from(k))? > at {
            k -= 1;
        }
        while self.boundary(i64::from(k) + 1)? <= at {
            k = k.checked_add(1)?;
        }
        self.period(k)
    }

    fn cut(&self, at: OffsetDateTime) -> OffsetDateTime {
        match self.end {
            Some(end) if end < at => end,
            _ => at,
        }
    }
}

/// See [`Schedule::periods`].
#[derive(Clone, Debug)]
pub struct Periods<'a> {
    schedule: &'a Schedule,
    next: Option<PeriodKind>,
}

impl Iterator for Periods<'_> {
    type Item = Period;

    fn next(&mut self) -> Option<Period> {
        loop {
            let kind = self.next?;
            let (next, got) = match kind {
                PeriodKind::Trial => (Some(PeriodKind::Stub), self.schedule.trial()),
                PeriodKind::Stub => (Some(PeriodKind::Full(0)), self.schedule.stub()),
                PeriodKind::Full(k) => {
                    let got = self.schedule.period(k);
                    (if got.is_some() { k.checked_add(1).map(PeriodKind::Full) } else { None }, got)
                }
            };
            self.next = next;
            if got.is_some() {
                return got;
            }
            if matches!(kind, PeriodKind::Full(_)) {
                return None;
            }
        }
    }
}

/// `amount_minor x used_seconds / period_seconds`, rounded half to even, with integers only.
/// `used_seconds` is clamped to `0..=period_seconds`; a non-positive `period_seconds` gives 0.
pub fn prorate(amount_minor: i64, used_seconds: i64, period_seconds: i64) -> i64 {
    if period_seconds <= 0 {
        return 0;
    }
    let used = used_seconds.clamp(0, period_seconds);
    let num = i128::from(amount_minor) * i128::from(used);
    let den = i128::from(period_seconds);
    let (q, r) = (num.div_euclid(den), num.rem_euclid(den));
    let q = match (2 * r).cmp(&den) {
        std::cmp::Ordering::Greater => q + 1,
        std::cmp::Ordering::Equal if q % 2 != 0 => q + 1,
        _ => q,
    };
    // |q| <= |amount_minor| because used <= period.
    i64::try_from(q).expect("a prorated amount is within the full amount")
}

/// Boundary `k` (0 = the anchor itself) of anniversary periods of `count` units from `anchor`, on the
/// UTC wall clock. Returns `None` out of range or for a zero count.
pub fn boundary(anchor: OffsetDateTime, unit: PeriodUnit, count: u32, k: u32) -> Option<OffsetDateTime> {
    Schedule::new(ScheduleSpec::new(anchor, unit, count)).ok()?.boundary(i64::from(k))
}

/// The anniversary period `[start, end)` (UTC wall clock) that contains `at` (or the first period when
/// `at` is before the anchor), with its index.
pub fn period_containing(
    anchor: OffsetDateTime,
    unit: PeriodUnit,
    count: u32,
    at: OffsetDateTime,
) -> Option<(u32, OffsetDateTime, OffsetDateTime)> {
    let schedule = Schedule::new(ScheduleSpec::new(anchor, unit, count)).ok()?;
    let period = schedule.period_containing(at.max(schedule.anchor()))?;
    match period.kind {
        PeriodKind::Full(k) => Some((k, period.start, period.end)),
        PeriodKind::Trial | PeriodKind::Stub => None,
    }
}

fn to_utc(at: OffsetDateTime) -> OffsetDateTime {
    at.to_offset(time::UtcOffset::UTC)
}

fn to_instant(at: OffsetDateTime) -> Option<Instant> {
    Instant::new(at.unix_timestamp(), i32::try_from(at.nanosecond()).ok()?).ok()
}

fn to_offset(at: Instant) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(at.as_nanosecond()).ok()
}

fn add_days(date: LocalDate, days: i64) -> Option<LocalDate> {
    date.checked_add(Span::new().try_days(days).ok()?).ok()
}

/// `months` calendar months after `date`, its day clamped to the target month's length.
fn add_months(date: LocalDate, months: i64) -> Option<LocalDate> {
    let total = i64::from(date.year()) * 12 + i64::from(date.month()) - 1 + months;
    let year = i16::try_from(total.div_euclid(12)).ok()?;
    let month = i8::try_from(total.rem_euclid(12) + 1).ok()?;
    let first = LocalDate::new(year, month, 1).ok()?;
    LocalDate::new(year, month, date.day().min(first.days_in_month())).ok()
}

fn add_units(date: LocalDate, unit: PeriodUnit, n: i64) -> Option<LocalDate> {
    match unit {
        PeriodUnit::Day => add_days(date, n),
        PeriodUnit::Week => add_days(date, n.checked_mul(7)?),
        PeriodUnit::Month => add_months(date, n),
        PeriodUnit::Quarter => add_months(date, n.checked_mul(3)?),
        PeriodUnit::Year => add_months(date, n.checked_mul(12)?),
    }
}

/// The first day of the calendar unit containing `date` (ISO weeks start on Monday).
fn calendar_floor(date: LocalDate, unit: PeriodUnit) -> Option<LocalDate> {
    match unit {
        PeriodUnit::Day => Some(date),
        PeriodUnit::Week => add_days(date, -i64::from(date.weekday().to_monday_zero_offset())),
        PeriodUnit::Month => Some(date.first_of_month()),
        PeriodUnit::Quarter => LocalDate::new(date.year(), (date.month() - 1) / 3 * 3 + 1, 1).ok(),
        PeriodUnit::Year => LocalDate::new(date.year(), 1, 1).ok(),
    }
}

/// The first calendar boundary (local midnight starting a unit) at or after `from`.
fn calendar_anchor(zone: &Zone, unit: PeriodUnit, from: Instant) -> Option<Instant> {
    let floor = calendar_floor(zone.local(from).date(), unit)?;
    let here = zone.resolve(floor.to_datetime(jiff::civil::Time::midnight()))?;
    if here >= from {
        return Some(here);
    }
    zone.resolve(add_units(floor, unit, 1)?.to_datetime(jiff::civil::Time::midnight()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;
    use time::Duration;
    use PeriodUnit::{Day, Month, Quarter, Week, Year};

    fn zone(name: &str) -> Zone {
        Zone::named(name).unwrap()
    }

    fn schedule(start: OffsetDateTime, unit: PeriodUnit, count: u32, cycle: BillingCycle, tz: &str) -> Schedule {
        Schedule::new(ScheduleSpec { cycle, zone: zone(tz), ..ScheduleSpec::new(start, unit, count) }).unwrap()
    }

    fn anniversary(start: OffsetDateTime, unit: PeriodUnit, count: u32, tz: &str) -> Schedule {
        schedule(start, unit, count, BillingCycle::Anniversary, tz)
    }

    fn calendar(start: OffsetDateTime, unit: PeriodUnit, count: u32, tz: &str) -> Schedule {
        schedule(start, unit, count, BillingCycle::Calendar, tz)
    }

    fn boundaries(s: &Schedule, n: i64) -> Vec<OffsetDateTime> {
        (0..n).map(|k| s.boundary(k).unwrap()).collect()
    }

    fn spans(s: &Schedule) -> Vec<(PeriodKind, OffsetDateTime, OffsetDateTime)> {
        s.periods().map(|p| (p.kind, p.start, p.end)).collect()
    }

    #[test]
    fn anchor_derived_boundaries_table() {
        // (anchor, unit, count, zone, expected boundaries 0..)
        let table: Vec<(OffsetDateTime, PeriodUnit, u32, &str, Vec<OffsetDateTime>)> = vec![
            // Jan 31 monthly through a leap year: never drifts to the 29th.
            (
                datetime!(2024-01-31 10:00 UTC),
                Month,
                1,
                "UTC",
                vec![
                    datetime!(2024-01-31 10:00 UTC),
                    datetime!(2024-02-29 10:00 UTC),
                    datetime!(2024-03-31 10:00 UTC),
                    datetime!(2024-04-30 10:00 UTC),
                    datetime!(2024-05-31 10:00 UTC),
                    datetime!(2024-06-30 10:00 UTC),
                ],
            ),
            // ... and through a common year.
            (
                datetime!(2023-01-31 00:00 UTC),
                Month,
                1,
                "UTC",
                vec![
                    datetime!(2023-01-31 00:00 UTC),
                    datetime!(2023-02-28 00:00 UTC),
                    datetime!(2023-03-31 00:00 UTC),
                    datetime!(2023-04-30 00:00 UTC),
                ],
            ),
            // Feb 29 yearly: Feb 28 in common years, Feb 29 again in the next leap year.
            (
                datetime!(2024-02-29 12:00 UTC),
                Year,
                1,
                "UTC",
                vec![
                    datetime!(2024-02-29 12:00 UTC),
                    datetime!(2025-02-28 12:00 UTC),
                    datetime!(2026-02-28 12:00 UTC),
                    datetime!(2027-02-28 12:00 UTC),
                    datetime!(2028-02-29 12:00 UTC),
                ],
            ),
            // Quarters (3 months) from Nov 30.
            (
                datetime!(2024-11-30 08:00 UTC),
                Quarter,
                1,
                "UTC",
                vec![
                    datetime!(2024-11-30 08:00 UTC),
                    datetime!(2025-02-28 08:00 UTC),
                    datetime!(2025-05-30 08:00 UTC),
                    datetime!(2025-08-30 08:00 UTC),
                    datetime!(2025-11-30 08:00 UTC),
                ],
            ),
            (
                datetime!(2023-11-30 00:00 UTC),
                Quarter,
                1,
                "UTC",
                vec![datetime!(2023-11-30 00:00 UTC), datetime!(2024-02-29 00:00 UTC), datetime!(2024-05-30 00:00 UTC)],
            ),
            // Count > 1: every 2 months from Dec 31.
            (
                datetime!(2023-12-31 00:00 UTC),
                Month,
                2,
                "UTC",
                vec![datetime!(2023-12-31 00:00 UTC), datetime!(2024-02-29 00:00 UTC), datetime!(2024-04-30 00:00 UTC)],
            ),
            // Weeks and days.
            (
                datetime!(2024-11-30 08:00 UTC),
                Week,
                2,
                "UTC",
                vec![datetime!(2024-11-30 08:00 UTC), datetime!(2024-12-14 08:00 UTC), datetime!(2024-12-28 08:00 UTC)],
            ),
            (
                datetime!(2024-02-28 23:00 UTC),
                Day,
                1,
                "UTC",
                vec![datetime!(2024-02-28 23:00 UTC), datetime!(2024-02-29 23:00 UTC), datetime!(2024-03-01 23:00 UTC)],
            ),
            // New York midnight, monthly, across the March (Mar 9) and November (Nov 2) 2025 changes:
            // local midnight holds, 05:00Z in winter, 04:00Z in summer.
            (
                datetime!(2025-01-15 05:00 UTC),
                Month,
                1,
                "America/New_York",
                vec![
                    datetime!(2025-01-15 05:00 UTC),
                    datetime!(2025-02-15 05:00 UTC),
                    datetime!(2025-03-15 04:00 UTC),
                    datetime!(2025-04-15 04:00 UTC),
                    datetime!(2025-05-15 04:00 UTC),
                    datetime!(2025-06-15 04:00 UTC),
                    datetime!(2025-07-15 04:00 UTC),
                    datetime!(2025-08-15 04:00 UTC),
                    datetime!(2025-09-15 04:00 UTC),
                    datetime!(2025-10-15 04:00 UTC),
                    datetime!(2025-11-15 05:00 UTC),
                    datetime!(2025-12-15 05:00 UTC),
                ],
            ),
            // New York month-end midnight anchor: clamping happens on the local date.
            (
                datetime!(2025-01-31 05:00 UTC),
                Month,
                1,
                "America/New_York",
                vec![
                    datetime!(2025-01-31 05:00 UTC),
                    datetime!(2025-02-28 05:00 UTC),
                    datetime!(2025-03-31 04:00 UTC),
                    datetime!(2025-04-30 04:00 UTC),
                ],
            ),
            // Kolkata (+05:30, no DST) midnight, monthly across March and November: always 18:30Z the
            // previous UTC day.
            (
                datetime!(2025-01-14 18:30 UTC),
                Month,
                1,
                "Asia/Kolkata",
                vec![
                    datetime!(2025-01-14 18:30 UTC),
                    datetime!(2025-02-14 18:30 UTC),
                    datetime!(2025-03-14 18:30 UTC),
                    datetime!(2025-04-14 18:30 UTC),
                ],
            ),
            (
                datetime!(2025-10-30 18:30 UTC),
                Month,
                1,
                "Asia/Kolkata",
                vec![
                    datetime!(2025-10-30 18:30 UTC),
                    datetime!(2025-11-29 18:30 UTC),
                    datetime!(2025-12-30 18:30 UTC),
                    datetime!(2026-01-30 18:30 UTC),
                    datetime!(2026-02-27 18:30 UTC),
                ],
            ),
            // Spring-forward gap: 02:30 does not exist on 2025-03-09 in New York; the later instant
            // (03:30 EDT = 07:30Z) is taken, and April is back at 02:30 EDT.
            (
                datetime!(2025-02-09 07:30 UTC),
                Month,
                1,
                "America/New_York",
                vec![datetime!(2025-02-09 07:30 UTC), datetime!(2025-03-09 07:30 UTC), datetime!(2025-04-09 06:30 UTC)],
            ),
            // Fall-back fold: 01:30 happens twice on 2025-11-02; the earlier (EDT) instant is taken.
            (
                datetime!(2025-10-02 05:30 UTC),
                Month,
                1,
                "America/New_York",
                vec![datetime!(2025-10-02 05:30 UTC), datetime!(2025-11-02 05:30 UTC), datetime!(2025-12-02 06:30 UTC)],
            ),
        ];
        for (anchor, unit, count, tz, expected) in table {
            let s = anniversary(anchor, unit, count, tz);
            assert_eq!(boundaries(&s, expected.len() as i64), expected, "{anchor} {unit:?} x{count} in {tz}");
        }
    }

    #[test]
    fn daily_periods_on_dst_days_are_23_and_25_hours() {
        let s = anniversary(datetime!(2025-03-08 05:00 UTC), Day, 1, "America/New_York");
        assert_eq!(s.period(1).unwrap().seconds(), 23 * 3600);
        assert_eq!(s.period(1).unwrap().start, datetime!(2025-03-09 05:00 UTC));
        assert_eq!(s.period(1).unwrap().end, datetime!(2025-03-10 04:00 UTC));
        let s = anniversary(datetime!(2025-11-01 04:00 UTC), Day, 1, "America/New_York");
        assert_eq!(s.period(1).unwrap().seconds(), 25 * 3600);
        assert_eq!(s.period(2).unwrap().start, datetime!(2025-11-03 05:00 UTC));
        // Kolkata days are always 24 hours.
        let s = anniversary(datetime!(2025-03-08 18:30 UTC), Day, 1, "Asia/Kolkata");
        assert!((0..400).all(|k| s.period(k).unwrap().seconds() == 86_400));
    }

    #[test]
    fn calendar_stubs_table() {
        // (start, unit, zone, expected anchor, expected stub (start, full_start) or None)
        type Row = (OffsetDateTime, PeriodUnit, &'static str, OffsetDateTime, Option<OffsetDateTime>);
        let table: Vec<Row> = vec![
            // Weekly from a Wednesday: next Monday 00:00; stub's full week starts the Monday before.
            (
                datetime!(2025-01-01 15:00 UTC),
                Week,
                "UTC",
                datetime!(2025-01-06 00:00 UTC),
                Some(datetime!(2024-12-30 00:00 UTC)),
            ),
            // Monday 00:00 exactly: no stub.
            (datetime!(2025-01-06 00:00 UTC), Week, "UTC", datetime!(2025-01-06 00:00 UTC), None),
            // A Sunday evening in New York is already Monday in UTC: the local week counts.
            (
                datetime!(2025-01-06 02:00 UTC),
                Week,
                "America/New_York",
                datetime!(2025-01-06 05:00 UTC),
                Some(datetime!(2024-12-30 05:00 UTC)),
            ),
            (
                datetime!(2025-01-15 12:00 UTC),
                Day,
                "UTC",
                datetime!(2025-01-16 00:00 UTC),
                Some(datetime!(2025-01-15 00:00 UTC)),
            ),
            (
                datetime!(2025-01-15 12:00 UTC),
                Month,
                "UTC",
                datetime!(2025-02-01 00:00 UTC),
                Some(datetime!(2025-01-01 00:00 UTC)),
            ),
            (datetime!(2025-02-01 00:00 UTC), Month, "UTC", datetime!(2025-02-01 00:00 UTC), None),
            // One second after the boundary: a stub to the next month.
            (
                datetime!(2025-02-01 00:00:01 UTC),
                Month,
                "UTC",
                datetime!(2025-03-01 00:00 UTC),
                Some(datetime!(2025-02-01 00:00 UTC)),
            ),
            // New York month across spring-forward: stub's full month starts at 05:00Z, anchor 04:00Z.
            (
                datetime!(2025-03-05 12:00 UTC),
                Month,
                "America/New_York",
                datetime!(2025-04-01 04:00 UTC),
                Some(datetime!(2025-03-01 05:00 UTC)),
            ),
            (
                datetime!(2025-10-20 00:00 UTC),
                Month,
                "Asia/Kolkata",
                datetime!(2025-10-31 18:30 UTC),
                Some(datetime!(2025-09-30 18:30 UTC)),
            ),
            (
                datetime!(2025-05-10 00:00 UTC),
                Quarter,
                "UTC",
                datetime!(2025-07-01 00:00 UTC),
                Some(datetime!(2025-04-01 00:00 UTC)),
            ),
            (
                datetime!(2025-11-30 00:00 UTC),
                Quarter,
                "UTC",
                datetime!(2026-01-01 00:00 UTC),
                Some(datetime!(2025-10-01 00:00 UTC)),
            ),
            (datetime!(2025-10-01 00:00 UTC), Quarter, "UTC", datetime!(2025-10-01 00:00 UTC), None),
            (
                datetime!(2025-03-03 09:00 UTC),
                Year,
                "UTC",
                datetime!(2026-01-01 00:00 UTC),
                Some(datetime!(2025-01-01 00:00 UTC)),
            ),
        ];
        for (start, unit, tz, anchor, stub_full_start) in table {
            let s = calendar(start, unit, 1, tz);
            assert_eq!(s.anchor(), anchor, "{start} {unit:?} in {tz}");
            let stub = s.stub();
            assert_eq!(
                stub.map(|p| (p.start, p.end, p.full_start, p.full_end)),
                stub_full_start.map(|f| (start, anchor, f, anchor))
            );
            let first = s.periods().next().unwrap();
            assert_eq!(first.start, start);
            assert_eq!(first.kind, if stub.is_some() { PeriodKind::Stub } else { PeriodKind::Full(0) });
        }
    }

    #[test]
    fn calendar_full_periods_follow_the_anchor() {
        let s = calendar(datetime!(2025-01-01 15:00 UTC), Week, 1, "UTC");
        assert_eq!(
            spans(&s).into_iter().take(3).collect::<Vec<_>>(),
            vec![
                (PeriodKind::Stub, datetime!(2025-01-01 15:00 UTC), datetime!(2025-01-06 00:00 UTC)),
                (PeriodKind::Full(0), datetime!(2025-01-06 00:00 UTC), datetime!(2025-01-13 00:00 UTC)),
                (PeriodKind::Full(1), datetime!(2025-01-13 00:00 UTC), datetime!(2025-01-20 00:00 UTC)),
            ]
        );
        // Calendar months in New York: local midnight on the 1st, across both DST changes.
        let s = calendar(datetime!(2025-01-20 17:00 UTC), Month, 1, "America/New_York");
        assert_eq!(
            boundaries(&s, 11)[1..].iter().map(|b| b.hour()).collect::<Vec<_>>(),
            vec![5, 4, 4, 4, 4, 4, 4, 4, 4, 5] // Mar 1 .. Dec 1
        );
        assert_eq!(s.boundary(10).unwrap(), datetime!(2025-12-01 05:00 UTC));
    }

    #[test]
    fn trials_move_anniversary_anchors_and_keep_calendar_alignment() {
        let trial = |cycle| {
            Schedule::new(ScheduleSpec {
                cycle,
                trial_end: Some(datetime!(2025-01-24 00:00 UTC)),
                ..ScheduleSpec::new(datetime!(2025-01-10 00:00 UTC), Month, 1)
            })
            .unwrap()
        };
        let s = trial(BillingCycle::Anniversary);
        assert_eq!(s.anchor(), datetime!(2025-01-24 00:00 UTC));
        assert_eq!(
            spans(&s).into_iter().take(3).collect::<Vec<_>>(),
            vec![
                (PeriodKind::Trial, datetime!(2025-01-10 00:00 UTC), datetime!(2025-01-24 00:00 UTC)),
                (PeriodKind::Full(0), datetime!(2025-01-24 00:00 UTC), datetime!(2025-02-24 00:00 UTC)),
                (PeriodKind::Full(1), datetime!(2025-02-24 00:00 UTC), datetime!(2025-03-24 00:00 UTC)),
            ]
        );
        let s = trial(BillingCycle::Calendar);
        assert_eq!(s.anchor(), datetime!(2025-02-01 00:00 UTC));
        assert_eq!(
            spans(&s).into_iter().take(3).collect::<Vec<_>>(),
            vec![
                (PeriodKind::Trial, datetime!(2025-01-10 00:00 UTC), datetime!(2025-01-24 00:00 UTC)),
                (PeriodKind::Stub, datetime!(2025-01-24 00:00 UTC), datetime!(2025-02-01 00:00 UTC)),
                (PeriodKind::Full(0), datetime!(2025-02-01 00:00 UTC), datetime!(2025-03-01 00:00 UTC)),
            ]
        );
        assert_eq!(s.first_billed_period().unwrap().kind, PeriodKind::Stub);
        assert_eq!(s.period_containing(datetime!(2025-01-20 00:00 UTC)).unwrap().kind, PeriodKind::Trial);
        // A trial ending on a calendar boundary leaves no stub.
        let s = Schedule::new(ScheduleSpec {
            cycle: BillingCycle::Calendar,
            trial_end: Some(datetime!(2025-02-01 00:00 UTC)),
            ..ScheduleSpec::new(datetime!(2025-01-10 00:00 UTC), Month, 1)
        })
        .unwrap();
        assert_eq!(s.stub(), None);
        assert_eq!(s.first_billed_period().unwrap().kind, PeriodKind::Full(0));
    }

    #[test]
    fn end_dates_cut_the_last_period() {
        let with_end = |end| {
            Schedule::new(ScheduleSpec {
                end: Some(end),
                ..ScheduleSpec::new(datetime!(2025-01-31 00:00 UTC), Month, 1)
            })
            .unwrap()
        };
        let s = with_end(datetime!(2025-04-15 00:00 UTC));
        assert_eq!(
            spans(&s),
            vec![
                (PeriodKind::Full(0), datetime!(2025-01-31 00:00 UTC), datetime!(2025-02-28 00:00 UTC)),
                (PeriodKind::Full(1), datetime!(2025-02-28 00:00 UTC), datetime!(2025-03-31 00:00 UTC)),
                (PeriodKind::Full(2), datetime!(2025-03-31 00:00 UTC), datetime!(2025-04-15 00:00 UTC)),
            ]
        );
        let last = s.period(2).unwrap();
        assert_eq!(last.full_end, datetime!(2025-04-30 00:00 UTC));
        assert!(last.is_partial());
        assert_eq!(last.prorate(3000), 1500); // 15 of 30 days
        assert_eq!(s.period(3), None);
        assert_eq!(s.period_containing(datetime!(2025-04-15 00:00 UTC)), None);
        assert_eq!(s.period_containing(datetime!(2025-04-14 23:59:59 UTC)).unwrap().kind, PeriodKind::Full(2));
        // An end exactly on a boundary: the last period is whole.
        let s = with_end(datetime!(2025-03-31 00:00 UTC));
        assert_eq!(s.periods().count(), 2);
        assert!(!s.period(1).unwrap().is_partial());
        // An end inside a calendar stub cuts the stub.
        let s = Schedule::new(ScheduleSpec {
            cycle: BillingCycle::Calendar,
            end: Some(datetime!(2025-01-20 00:00 UTC)),
            ..ScheduleSpec::new(datetime!(2025-01-10 00:00 UTC), Month, 1)
        })
        .unwrap();
        assert_eq!(
            spans(&s),
            vec![(PeriodKind::Stub, datetime!(2025-01-10 00:00 UTC), datetime!(2025-01-20 00:00 UTC))]
        );
    }

    #[test]
    fn period_containing_table() {
        let s = anniversary(datetime!(2024-03-20 00:00 UTC), Month, 1, "UTC");
        let cases = [
            (datetime!(2024-03-19 23:59:59 UTC), None),
            (datetime!(2024-03-20 00:00 UTC), Some(0)),
            (datetime!(2024-05-01 00:00 UTC), Some(1)),
            (datetime!(2024-05-20 00:00 UTC), Some(2)),
            (datetime!(2034-03-19 23:59:59 UTC), Some(119)),
            (datetime!(2034-03-20 00:00 UTC), Some(120)),
        ];
        for (at, k) in cases {
            assert_eq!(s.period_containing(at).map(|p| p.kind), k.map(PeriodKind::Full), "{at}");
        }
        let p = s.period_containing(datetime!(2024-05-01 00:00 UTC)).unwrap();
        assert_eq!((p.start, p.end), (datetime!(2024-04-20 00:00 UTC), datetime!(2024-05-20 00:00 UTC)));
    }

    #[test]
    fn proration_rounds_half_to_even() {
        let cases = [
            // (amount, used, period, expected)
            (1, 1, 2, 0), // 0.5 -> 0
            (3, 1, 2, 2), // 1.5 -> 2
            (5, 1, 2, 2), // 2.5 -> 2
            (7, 1, 2, 4), // 3.5 -> 4
            (-1, 1, 2, 0),
            (-3, 1, 2, -2),
            (-5, 1, 2, -2),
            (100, 1, 3, 33),
            (200, 1, 3, 67),
            (4999, 15, 30, 2500), // 2499.5 -> 2500
            (4997, 15, 30, 2498), // 2498.5 -> 2498
            (4999, 0, 30, 0),
            (4999, 30, 30, 4999),
            (4999, 40, 30, 4999), // clamped
            (4999, -5, 30, 0),    // clamped
            (4999, 5, 0, 0),
            (i64::MAX, 2_678_400, 2_678_400, i64::MAX),
            (i64::MAX, 1, 2, i64::MAX / 2 + 1), // (2^63-1)/2 = ...x.5, even is 2^62
            (i64::MIN, 1, 2, i64::MIN / 2),
        ];
        for (amount, used, period, expected) in cases {
            assert_eq!(prorate(amount, used, period), expected, "prorate({amount}, {used}, {period})");
        }
        // A January stub from the 15th at noon: 16.5 of 31 days.
        let s = calendar(datetime!(2025-01-15 12:00 UTC), Month, 1, "UTC");
        assert_eq!(s.stub().unwrap().prorate(4999), 2661); // 2660.758...
    }

    #[test]
    fn zones_and_errors() {
        assert_eq!(Zone::named("America/New_York").unwrap().name(), "America/New_York");
        assert_eq!(Zone::named("UTC").unwrap().name(), "UTC");
        assert_eq!(Zone::default(), Zone::utc());
        assert!(Zone::named("Asia/Kolkata").is_some());
        assert!(Zone::named("Mars/Olympus_Mons").is_none());
        assert!(Zone::named("").is_none());
        let start = datetime!(2025-01-01 00:00 UTC);
        assert_eq!(Schedule::new(ScheduleSpec::new(start, Month, 0)).unwrap_err(), ScheduleError::ZeroCount);
        assert_eq!(
            Schedule::new(ScheduleSpec { end: Some(start), ..ScheduleSpec::new(start, Month, 1) }).unwrap_err(),
            ScheduleError::EndNotAfterStart
        );
        assert_eq!(
            Schedule::new(ScheduleSpec {
                trial_end: Some(start - Duration::DAY),
                ..ScheduleSpec::new(start, Month, 1)
            })
            .unwrap_err(),
            ScheduleError::TrialBeforeStart
        );
        // Non-UTC offsets in, UTC out.
        let s = Schedule::new(ScheduleSpec::new(datetime!(2025-01-01 01:00 +01:00), Day, 1)).unwrap();
        assert_eq!(s.anchor(), datetime!(2025-01-01 00:00 UTC));
        assert_eq!(s.boundary(1).unwrap(), datetime!(2025-01-02 00:00 UTC));
        assert!(s.boundary(1).unwrap().offset().is_utc());
    }

    #[test]
    fn legacy_wrappers() {
        let anchor = datetime!(2024-01-31 10:00 UTC);
        let got: Vec<_> = (0..5).map(|k| boundary(anchor, Month, 1, k).unwrap()).collect();
        assert_eq!(
            got,
            vec![
                datetime!(2024-01-31 10:00 UTC),
                datetime!(2024-02-29 10:00 UTC),
                datetime!(2024-03-31 10:00 UTC),
                datetime!(2024-04-30 10:00 UTC),
                datetime!(2024-05-31 10:00 UTC),
            ]
        );
        assert_eq!(boundary(anchor, Month, 0, 1), None);
        let anchor = datetime!(2024-03-20 00:00 UTC);
        let got = period_containing(anchor, Month, 1, datetime!(2024-05-01 00:00 UTC)).unwrap();
        assert_eq!(got, (1, datetime!(2024-04-20 00:00 UTC), datetime!(2024-05-20 00:00 UTC)));
        let (k, _, end) = period_containing(anchor, Month, 1, datetime!(2024-01-01 00:00 UTC)).unwrap();
        assert_eq!((k, end), (0, datetime!(2024-04-20 00:00 UTC)));
    }

    // ---- property tests: a hand-rolled, deterministic generator over many anchors ----

    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            // splitmix64
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
            &items[self.below(items.len() as u64) as usize]
        }
    }

    const ZONES: &[&str] = &[
        "UTC",
        "America/New_York",
        "Asia/Kolkata",
        "Europe/London",
        "Europe/Berlin",
        "Australia/Sydney",
        "Australia/Lord_Howe",
        "America/Sao_Paulo",
        "America/Santiago",
        "Pacific/Auckland",
        "America/St_Johns",
    ];

    /// A random schedule: anchors 1995..2045, local times biased to midnight and DST hours.
    fn arbitrary_schedule(rng: &mut Rng) -> Schedule {
        let tz = *rng.pick(ZONES);
        let unit = *rng.pick(PeriodUnit::ALL);
        let count = 1 + rng.below(3) as u32;
        let cycle = *rng.pick(BillingCycle::ALL);
        let zone = zone(tz);
        let date = LocalDate::new(1995 + rng.below(50) as i16, 1 + rng.below(12) as i8, 1).unwrap();
        let date = LocalDate::new(date.year(), date.month(), 1 + rng.below(date.days_in_month() as u64) as i8).unwrap();
        let hour = *rng.pick(&[0, 0, 1, 2, 2, 3, 12, 23]);
        let minute = *rng.pick(&[0, 30, 45]);
        let local = date.at(hour, minute, 0, 0);
        let start = to_offset(zone.resolve(local).unwrap()).unwrap();
        let trial_end = (rng.below(4) == 0).then(|| start + Duration::seconds(rng.below(40 * 86_400) as i64));
        let end = (rng.below(3) == 0).then(|| start + Duration::seconds(1 + rng.below(800 * 86_400) as i64));
        Schedule::new(ScheduleSpec { start, unit, count, cycle, zone, trial_end, end }).unwrap()
    }

    fn local_date(s: &Schedule, at: OffsetDateTime) -> LocalDate {
        s.zone.local(to_instant(at).unwrap()).date()
    }

    #[test]
    fn property_boundaries_increase_and_keep_the_anchor_day() {
        let mut rng = Rng(0x5EED_0001);
        for _ in 0..3000 {
            let s = arbitrary_schedule(&mut rng);
            let anchor_day = s.anchor_local.day();
            let mut prev = s.boundary(-1).unwrap();
            for k in 0..60 {
                let b = s.boundary(k).unwrap();
                assert!(b > prev, "{s:?}: boundary {k} = {b} not after {prev}");
                prev = b;
                let day = local_date(&s, b);
                if matches!(s.unit, Month | Quarter | Year) {
                    assert!(
                        day.day() == anchor_day || (day.day() < anchor_day && day.day() == day.days_in_month()),
                        "{s:?}: boundary {k} on {day}"
                    );
                }
                if s.cycle == BillingCycle::Calendar {
                    assert_eq!(calendar_floor(day, s.unit).unwrap(), day, "{s:?}: boundary {k} on {day}");
                    assert!(s.zone.local(to_instant(b).unwrap()).hour() <= 1, "{s:?}: boundary {k}");
                }
            }
        }
    }

    #[test]
    fn property_periods_are_nominal_length_within_one_dst_hour() {
        let mut rng = Rng(0x5EED_0002);
        let mut across_dst = 0;
        for _ in 0..3000 {
            let s = arbitrary_schedule(&mut rng);
            for k in 0..60u32 {
                let (Some(a), Some(b)) = (s.boundary(i64::from(k)), s.boundary(i64::from(k) + 1)) else { panic!() };
                let nominal_days = (local_date(&s, b) - local_date(&s, a)).get_days();
                let nominal = i64::from(nominal_days) * 86_400;
                let actual = (b - a).whole_seconds();
                assert!((actual - nominal).abs() <= 3600, "{s:?}: period {k} is {actual}s, nominal {nominal}s");
                across_dst += usize::from(actual != nominal);
                let (lo, hi) = match s.unit {
                    Day => (1, 1),
                    Week => (7, 7),
                    Month => (28, 31),
                    Quarter => (89, 92),
                    Year => (365, 366),
                };
                let count = i64::from(s.count);
                assert!(
                    (lo * count - 3..=hi * count).contains(&i64::from(nominal_days)),
                    "{s:?}: period {k} has {nominal_days} days"
                );
            }
        }
        // The generator does reach DST changes (so the bound above is exercised).
        assert!(across_dst > 1000, "only {across_dst} periods crossed a DST change");
    }

    #[test]
    fn property_periods_tile_without_gaps() {
        let mut rng = Rng(0x5EED_0003);
        for _ in 0..3000 {
            let s = arbitrary_schedule(&mut rng);
            let periods: Vec<Period> = s.periods().take(80).collect();
            assert_eq!(periods[0].start, s.start(), "{s:?}");
            for pair in periods.windows(2) {
                assert_eq!(pair[0].end, pair[1].start, "{s:?}");
            }
            for p in &periods {
                assert!(p.start < p.end, "{s:?}: empty {p:?}");
                assert!(p.full_start <= p.start && p.end <= p.full_end, "{s:?}: {p:?}");
                // Any instant inside belongs to this period and no other.
                let span = (p.end - p.start).whole_seconds().max(1);
                let at = p.start + Duration::seconds(rng.below(span as u64) as i64);
                assert_eq!(s.period_containing(at), Some(*p), "{s:?} at {at}");
                assert_eq!(s.period_containing(p.start), Some(*p), "{s:?} at {}", p.start);
            }
            if let Some(end) = s.end() {
                let last = periods.last().unwrap();
                if periods.len() < 80 {
                    assert_eq!(last.end, end, "{s:?}");
                    assert_eq!(s.period_containing(end), None);
                }
            }
            assert_eq!(s.period_containing(s.start() - Duration::SECOND), None);
        }
    }
}
