//! Billing period arithmetic: boundary k of a subscription is derived from its anchor, never from
//! the previous boundary, with the day of month clamped to the target month's length.

use time::{Date, Duration, Month, OffsetDateTime};

use super::price::Interval;
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
}

/// Boundary `k` (0 = the anchor itself) of periods of `count` units from `anchor`, on the UTC wall
/// clock. Returns `None` past year 9999.
pub fn boundary(anchor: OffsetDateTime, unit: PeriodUnit, count: u32, k: u32) -> Option<OffsetDateTime> {
    let steps = i64::from(count) * i64::from(k);
    match unit {
        PeriodUnit::Day => anchor.checked_add(Duration::days(steps)),
        PeriodUnit::Week => anchor.checked_add(Duration::weeks(steps)),
        PeriodUnit::Month => add_months(anchor, steps),
        PeriodUnit::Quarter => add_months(anchor, steps.checked_mul(3)?),
        PeriodUnit::Year => add_months(anchor, steps.checked_mul(12)?),
    }
}

/// The period `[start, end)` that contains `at` (or the first period when `at` is before the
/// anchor), with its index.
pub fn period_containing(
    anchor: OffsetDateTime,
    unit: PeriodUnit,
    count: u32,
    at: OffsetDateTime,
) -> Option<(u32, OffsetDateTime, OffsetDateTime)> {
    let mut k = 0u32;
    loop {
        let start = boundary(anchor, unit, count, k)?;
        let end = boundary(anchor, unit, count, k.checked_add(1)?)?;
        if at < end {
            return Some((k, start, end));
        }
        k = k.checked_add(1)?;
    }
}

fn add_months(at: OffsetDateTime, months: i64) -> Option<OffsetDateTime> {
    let date = at.date();
    let total = i64::from(date.year()) * 12 + i64::from(u8::from(date.month())) - 1 + months;
    let year = i32::try_from(total.div_euclid(12)).ok()?;
    let month = Month::try_from(u8::try_from(total.rem_euclid(12) + 1).ok()?).ok()?;
    let day = date.day().min(time::util::days_in_month(month, year));
    let date = Date::from_calendar_date(year, month, day).ok()?;
    Some(at.replace_date(date))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn month_ends_clamp_without_drifting() {
        let anchor = datetime!(2024-01-31 10:00 UTC);
        let got: Vec<_> = (0..5).map(|k| boundary(anchor, PeriodUnit::Month, 1, k).unwrap()).collect();
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
    }

    #[test]
    fn a_leap_day_anchor_comes_back_in_leap_years() {
        let anchor = datetime!(2024-02-29 00:00 UTC);
        assert_eq!(boundary(anchor, PeriodUnit::Year, 1, 1).unwrap(), datetime!(2025-02-28 00:00 UTC));
        assert_eq!(boundary(anchor, PeriodUnit::Year, 1, 4).unwrap(), datetime!(2028-02-29 00:00 UTC));
    }

    #[test]
    fn quarters_weeks_and_days() {
        let anchor = datetime!(2024-11-30 08:00 UTC);
        assert_eq!(boundary(anchor, PeriodUnit::Quarter, 1, 1).unwrap(), datetime!(2025-02-28 08:00 UTC));
        assert_eq!(boundary(anchor, PeriodUnit::Quarter, 1, 2).unwrap(), datetime!(2025-05-30 08:00 UTC));
        assert_eq!(boundary(anchor, PeriodUnit::Week, 2, 1).unwrap(), datetime!(2024-12-14 08:00 UTC));
        assert_eq!(boundary(anchor, PeriodUnit::Day, 1, 2).unwrap(), datetime!(2024-12-02 08:00 UTC));
    }

    #[test]
    fn the_period_containing_an_instant() {
        let anchor = datetime!(2024-03-20 00:00 UTC);
        let (k, start, end) = period_containing(anchor, PeriodUnit::Month, 1, datetime!(2024-05-01 00:00 UTC)).unwrap();
        assert_eq!((k, start, end), (1, datetime!(2024-04-20 00:00 UTC), datetime!(2024-05-20 00:00 UTC)));
        let (k, _, end) = period_containing(anchor, PeriodUnit::Month, 1, anchor).unwrap();
        assert_eq!((k, end), (0, datetime!(2024-04-20 00:00 UTC)));
    }
}
