//! What goes on a subscription's invoice for a period, and when collection happens: lines with
//! their periods and prorations, phase prices, commitment true-ups and overage, due dates from
//! payment terms, and the dunning schedule. Pure: the engine (`flows::billing`) brings the data.

use time::OffsetDateTime;

use super::billing_period::{Period, PeriodKind, PeriodUnit, Schedule, ScheduleSpec, Zone};
use super::money::Currency;
use super::price::MAX_UNIT_AMOUNT;
use super::subscription::{BillingCycle, Commitment, InvoiceLine, ItemKind, LineKind, Subscription};
use super::subscription_request::{minor_units, Decimal, PaymentTerms, ProrationBehavior};
use super::timestamp::Timestamp;

/// Attempts to collect an automatically charged invoice before it is given up.
pub const MAX_ATTEMPTS: i64 = 5;
/// Days after the first failure at which attempts 2, 3, 4 and 5 are made (BILLING.md).
pub const RETRY_DAYS: [i64; 4] = [1, 3, 5, 7];
/// Reminders (`invoice.upcoming`, `customer.subscription.trial_will_end`) go out this long before.
pub const REMINDER_SECONDS: i64 = 3 * 86_400;
/// An `INCOMPLETE` subscription whose first invoice is unpaid this long expires.
pub const INCOMPLETE_SECONDS: i64 = 23 * 3_600;
/// Net days of a `SEND_INVOICE` invoice when no `payment_terms` were given.
pub const DEFAULT_NET_DAYS: u32 = 30;

/// The schedule of a subscription's periods, from its stored terms; `None` only for stored data
/// the period arithmetic refuses (which creation never stores).
pub fn schedule(sub: &Subscription) -> Option<Schedule> {
    let end = match (sub.end_date, sub.cancel_at) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    Schedule::new(ScheduleSpec {
        start: sub.start_date.to_datetime(),
        unit: sub.billing_period,
        count: sub.billing_period_count,
        cycle: sub.billing_cycle,
        zone: Zone::named(&sub.customer_timezone).unwrap_or_else(Zone::utc),
        trial_end: sub.trial_end.map(Timestamp::to_datetime),
        end: end.map(Timestamp::to_datetime),
    })
    .ok()
}

fn ts(at: OffsetDateTime) -> Timestamp {
    Timestamp::from_datetime(at)
}

/// Unit amount and quantity of `item` for a period starting at `at`, after the phase in force.
fn priced(sub: &Subscription, price: &super::ids::PriceId, unit: i64, quantity: i64, at: Timestamp) -> (i64, i64) {
    let phase = sub.phases.iter().find(|p| p.contains(at));
    let o = phase.and_then(|p| p.override_line_items.iter().find(|o| &o.price_id == price));
    match o {
        Some(o) => (o.unit_amount.unwrap_or(unit), o.quantity.unwrap_or(quantity)),
        None => (unit, quantity),
    }
}

/// The recurring lines of `period`: full amounts, or prorated to the second when the period is
/// partial (a calendar stub, a period cut at the end date) and the subscription prorates. A trial
/// bills nothing.
pub fn period_lines(sub: &Subscription, period: &Period) -> Vec<InvoiceLine> {
    let trial = period.kind == PeriodKind::Trial;
    let partial = !trial && period.is_partial();
    let prorate = partial && sub.proration_behavior == ProrationBehavior::CreateProrations;
    sub.items
        .iter()
        .filter(|i| i.kind != ItemKind::OneTime)
        .map(|item| {
            let (unit, quantity) = priced(sub, &item.price_id, item.unit_amount, item.quantity, ts(period.start));
            let full = unit.saturating_mul(quantity).min(MAX_UNIT_AMOUNT.saturating_mul(1_000));
            let (amount, description) = if trial {
                (0, format!("Trial period for {}", item.description))
            } else if prorate {
                (period.prorate(full), format!("{} (prorated)", item.description))
            } else {
                (full, item.description.clone())
            };
            InvoiceLine {
                kind: LineKind::Item,
                description,
                price: Some(item.price_id.clone()),
                quantity,
                amount,
                period_start: ts(period.start),
                period_end: ts(period.end),
                proration: prorate,
            }
        })
        .collect()
}

/// The one-time extra items, billed once on the first invoice.
pub fn one_time_lines(sub: &Subscription, at: Timestamp) -> Vec<InvoiceLine> {
    sub.items
        .iter()
        .filter(|i| i.kind == ItemKind::OneTime)
        .map(|item| InvoiceLine {
            kind: LineKind::Item,
            description: item.description.clone(),
            price: Some(item.price_id.clone()),
            quantity: item.quantity,
            amount: item.unit_amount.saturating_mul(item.quantity),
            period_start: at,
            period_end: at,
            proration: false,
        })
        .collect()
}

/// The commitment window containing the period that starts at `at`: `[start, end)` on the
/// customer's calendar, aligned to the billing anchor. Without a duration the window is the
/// billing period itself.
pub fn commitment_window(sub: &Subscription, c: &Commitment, period: &Period) -> Option<(Timestamp, Timestamp)> {
    let Some(duration) = c.commitment_duration else {
        return Some((ts(period.full_start), ts(period.full_end)));
    };
    let windows = Schedule::new(ScheduleSpec {
        start: sub.billing_anchor.to_datetime(),
        unit: duration.period_unit(),
        count: 1,
        cycle: BillingCycle::Anniversary,
        zone: Zone::named(&sub.customer_timezone).unwrap_or_else(Zone::utc),
        trial_end: None,
        end: None,
    })
    .ok()?;
    let at = period.start;
    let mut k: i64 = if at < windows.anchor() { -1 } else { 0 };
    while windows.boundary(k)? > at {
        k -= 1;
    }
    while windows.boundary(k + 1)? <= at {
        k += 1;
    }
    Some((ts(windows.boundary(k)?), ts(windows.boundary(k + 1)?)))
}

/// Commitment lines for an invoice whose item lines total `this_total`, in a window where
/// `billed_before` was already billed: the part above the commitment is multiplied by the overage
/// factor (the extra is its own line), and the window's last invoice tops a shortfall up to the
/// commitment when true-up is on. Amounts in minor units; rounding half to even.
pub fn commitment_lines(
    c: &Commitment,
    currency: Currency,
    billed_before: i64,
    this_total: i64,
    last_in_window: bool,
    period: (Timestamp, Timestamp),
) -> Vec<InvoiceLine> {
    let Ok(commitment) = minor_units(c.commitment_amount, currency, "commitment_amount") else {
        return Vec::new();
    };
    let mut lines = Vec::new();
    let after = billed_before.saturating_add(this_total);
    let above = after - commitment.max(billed_before);
    if above > 0 && c.overage_factor.cmp_whole(1).is_gt() {
        // The extra is its own line: (factor - 1) x what is above, rounded once.
        let one = 10_i128.pow(c.overage_factor.scale());
        let extra_factor = i64::try_from(c.overage_factor.units() - one)
            .map(|u| Decimal::from_minor(u, c.overage_factor.scale()))
            .ok();
        let extra = extra_factor.and_then(|f| f.mul_round_half_even(above)).unwrap_or(0);
        if extra > 0 {
            lines.push(InvoiceLine {
                kind: LineKind::Overage,
                description: format!("Overage above the commitment (x{})", c.overage_factor),
                price: None,
                quantity: 1,
                amount: extra,
                period_start: period.0,
                period_end: period.1,
                proration: false,
            });
        }
    }
    if c.enable_true_up && last_in_window && after < commitment {
        lines.push(InvoiceLine {
            kind: LineKind::TrueUp,
            description: "Commitment true-up".into(),
            price: None,
            quantity: 1,
            amount: commitment - after,
            period_start: period.0,
            period_end: period.1,
            proration: false,
        });
    }
    lines
}

/// `at` plus `days` local calendar days on `zone`, at the same local time of day.
pub fn plus_local_days(zone: &Zone, at: Timestamp, days: u32) -> Timestamp {
    if days == 0 {
        return at;
    }
    let spec = ScheduleSpec {
        start: at.to_datetime(),
        unit: PeriodUnit::Day,
        count: days,
        cycle: BillingCycle::Anniversary,
        zone: zone.clone(),
        trial_end: None,
        end: None,
    };
    Schedule::new(spec)
        .ok()
        .and_then(|s| s.boundary(1))
        .map(ts)
        .unwrap_or_else(|| at.plus_seconds(i64::from(days) * 86_400))
}

/// Due date of a `SEND_INVOICE` invoice made at `at`.
pub fn due_date(zone: &Zone, at: Timestamp, terms: Option<PaymentTerms>) -> Timestamp {
    plus_local_days(zone, at, terms.map_or(DEFAULT_NET_DAYS, PaymentTerms::days))
}

/// When attempt `failed_attempt + 1` is made after attempt `failed_attempt` failed, the first
/// failure having been at `first_failed_at`; `None` after the last attempt.
pub fn next_retry(first_failed_at: Timestamp, failed_attempt: i64) -> Option<Timestamp> {
    let index = usize::try_from(failed_attempt - 1).ok()?;
    RETRY_DAYS.get(index).map(|days| first_failed_at.plus_seconds(days * 86_400))
}

/// The last day of dunning for an invoice that first failed at `first_failed_at` (the day of its last
/// retry): a hard-declined invoice, retried by nobody, is given up on then.
pub fn dunning_ends(first_failed_at: Timestamp) -> Timestamp {
    let last = RETRY_DAYS.last().copied().unwrap_or(0);
    first_failed_at.plus_seconds(last * 86_400)
}

/// Sum of the invoice's lines, exactly.
pub fn total(lines: &[InvoiceLine]) -> i64 {
    lines.iter().map(|l| l.amount).sum()
}

/// Decimal written back in a currency's major units, for stored commitment amounts.
pub fn major(minor: i64, currency: Currency) -> Decimal {
    Decimal::from_minor(minor, currency.exponent())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commitment(amount: &str, factor: &str, true_up: bool) -> Commitment {
        Commitment {
            commitment_amount: Decimal::parse(amount).unwrap(),
            commitment_duration: None,
            overage_factor: Decimal::parse(factor).unwrap(),
            enable_true_up: true_up,
        }
    }

    fn at(s: &str) -> Timestamp {
        Timestamp::parse_rfc3339(s).unwrap()
    }

    #[test]
    fn true_up_tops_the_last_invoice_of_a_window_up_to_the_commitment() {
        let c = commitment("100.00", "1", true);
        let p = (at("2024-01-01T00:00:00Z"), at("2024-02-01T00:00:00Z"));
        let lines = commitment_lines(&c, Currency::USD, 2_000, 3_000, true, p);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].kind, LineKind::TrueUp);
        assert_eq!(lines[0].amount, 5_000);
        assert!(commitment_lines(&c, Currency::USD, 2_000, 3_000, false, p).is_empty(), "not the window's last");
        assert!(commitment_lines(&commitment("100.00", "1", false), Currency::USD, 0, 0, true, p).is_empty());
        assert!(commitment_lines(&c, Currency::USD, 6_000, 4_000, true, p).is_empty(), "met exactly");
    }

    #[test]
    fn overage_multiplies_only_what_is_above_the_commitment_half_to_even() {
        let c = commitment("100.00", "1.5", false);
        let p = (at("2024-01-01T00:00:00Z"), at("2024-02-01T00:00:00Z"));
        // 80 before + 30 now: 10.00 above -> 5.00 extra.
        let lines = commitment_lines(&c, Currency::USD, 8_000, 3_000, false, p);
        assert_eq!(lines.len(), 1);
        assert_eq!((lines[0].kind, lines[0].amount), (LineKind::Overage, 500));
        // Already above: all of this invoice is overage, its extra rounded half to even:
        // 0.01 x 0.5 = 0.005 -> 0.00, 0.03 x 0.5 = 0.015 -> 0.02, 0.05 x 0.5 = 0.025 -> 0.02.
        assert!(commitment_lines(&c, Currency::USD, 10_000, 1, false, p).is_empty());
        assert_eq!(commitment_lines(&c, Currency::USD, 10_000, 3, false, p)[0].amount, 2);
        assert_eq!(commitment_lines(&c, Currency::USD, 10_000, 5, false, p)[0].amount, 2);
        // Factor 1: no surcharge.
        assert!(commitment_lines(&commitment("1", "1", false), Currency::USD, 0, 9_999, false, p).is_empty());
        // Zero-decimal currency.
        let yen = commitment("1000", "2", false);
        assert_eq!(commitment_lines(&yen, Currency::parse("jpy").unwrap(), 0, 1_500, false, p)[0].amount, 500);
    }

    #[test]
    fn dunning_retries_one_three_five_and_seven_days_after_the_first_failure() {
        let first = at("2024-01-31T10:00:00Z");
        assert_eq!(next_retry(first, 1), Some(at("2024-02-01T10:00:00Z")));
        assert_eq!(next_retry(first, 2), Some(at("2024-02-03T10:00:00Z")));
        assert_eq!(next_retry(first, 3), Some(at("2024-02-05T10:00:00Z")));
        assert_eq!(next_retry(first, 4), Some(at("2024-02-07T10:00:00Z")));
        assert_eq!(next_retry(first, MAX_ATTEMPTS), None);
    }

    #[test]
    fn payment_terms_count_local_calendar_days_across_dst() {
        let ny = Zone::named("America/New_York").unwrap();
        // Midnight in New York on 1 March 2024 (EST) + 15 days = midnight 16 March (EDT).
        let due = due_date(&ny, at("2024-03-01T05:00:00Z"), Some(PaymentTerms::Net15));
        assert_eq!(due, at("2024-03-16T04:00:00Z"));
        assert_eq!(due_date(&Zone::utc(), at("2024-01-01T00:00:00Z"), None), at("2024-01-31T00:00:00Z"));
    }
}
