//! Instants as integer microseconds since the Unix epoch, shown as RFC 3339 UTC or Unix seconds.

use serde::{Serialize, Serializer};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    pub const MICROS_PER_SECOND: i64 = 1_000_000;

    pub fn from_micros(micros: i64) -> Timestamp {
        Timestamp(micros)
    }

    pub fn from_unix_seconds(seconds: i64) -> Timestamp {
        Timestamp(seconds.saturating_mul(Self::MICROS_PER_SECOND))
    }

    pub fn from_datetime(dt: OffsetDateTime) -> Timestamp {
        Timestamp((dt.unix_timestamp_nanos() / 1_000) as i64)
    }

    pub fn micros(self) -> i64 {
        self.0
    }

    /// Whole seconds, rounded down (as Stripe shows `created`).
    pub fn unix_seconds(self) -> i64 {
        self.0.div_euclid(Self::MICROS_PER_SECOND)
    }

    pub fn to_datetime(self) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000).unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }

    pub fn plus_seconds(self, seconds: i64) -> Timestamp {
        Timestamp(self.0.saturating_add(seconds.saturating_mul(Self::MICROS_PER_SECOND)))
    }

    /// RFC 3339 in UTC with as many fractional digits as needed: `2024-04-26T18:39:43.93664Z`.
    pub fn rfc3339(self) -> String {
        self.to_datetime().format(&Rfc3339).unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_string())
    }

    /// Parses an RFC 3339 timestamp with any offset; the instant is kept, the offset is not.
    pub fn parse_rfc3339(raw: &str) -> Option<Timestamp> {
        OffsetDateTime::parse(raw, &Rfc3339).ok().map(Timestamp::from_datetime)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.rfc3339())
    }
}

/// Serializes a timestamp as Unix seconds (checkout sessions use them, as in the seed).
pub mod unix_seconds {
    use super::Timestamp;
    use serde::Serializer;

    pub fn serialize<S: Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(t.unix_seconds())
    }

    pub mod option {
        use super::Timestamp;
        use serde::Serializer;

        pub fn serialize<S: Serializer>(t: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => s.serialize_i64(t.unix_seconds()),
                None => s.serialize_none(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_keeps_microseconds_and_trims_trailing_zeros() {
        let t = Timestamp::parse_rfc3339("2024-04-26T18:39:43.936640Z").unwrap();
        assert_eq!(t.rfc3339(), "2024-04-26T18:39:43.93664Z");
        let whole = Timestamp::parse_rfc3339("2024-03-20T00:00:00Z").unwrap();
        assert_eq!(whole.rfc3339(), "2024-03-20T00:00:00Z");
    }

    #[test]
    fn offsets_are_converted_to_utc() {
        let t = Timestamp::parse_rfc3339("2024-03-20T05:30:00+05:30").unwrap();
        assert_eq!(t.rfc3339(), "2024-03-20T00:00:00Z");
    }

    #[test]
    fn unix_seconds_round_down_before_the_epoch_too() {
        assert_eq!(Timestamp::from_micros(1_500_000).unix_seconds(), 1);
        assert_eq!(Timestamp::from_micros(-1).unix_seconds(), -1);
    }

    #[test]
    fn garbage_is_not_a_timestamp() {
        assert!(Timestamp::parse_rfc3339("2024-02-30T00:00:00Z").is_none());
        assert!(Timestamp::parse_rfc3339("yesterday").is_none());
    }
}
