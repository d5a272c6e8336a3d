//! Time as stored (microseconds since the Unix epoch, an `i64` both engines index well)
//! and as sent (`google.protobuf.Timestamp`).

use chrono::{NaiveDate, Utc};

/// Now, in microseconds since the epoch.
pub fn now_micros() -> i64 {
    Utc::now().timestamp_micros()
}

/// Today's date in UTC.
pub fn today_utc() -> NaiveDate {
    Utc::now().date_naive()
}

/// The UTC day of stored microseconds (the epoch's day for values chrono cannot hold).
pub fn day_of(micros: i64) -> NaiveDate {
    chrono::DateTime::from_timestamp_micros(micros)
        .unwrap_or_default()
        .date_naive()
}

/// Stored microseconds to a protobuf timestamp.
pub fn timestamp(micros: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1000) as i32,
    }
}

/// A protobuf timestamp to microseconds (for comparisons in tests and lag measurement).
pub fn micros(timestamp: &prost_types::Timestamp) -> i64 {
    timestamp.seconds * 1_000_000 + i64::from(timestamp.nanos) / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_day_of_a_moment_is_its_utc_date() {
        assert_eq!(day_of(0).to_string(), "1970-01-01");
        assert_eq!(day_of(1_764_633_599_999_999).to_string(), "2025-12-01");
        assert_eq!(day_of(1_764_633_600_000_000).to_string(), "2025-12-02");
        assert_eq!(day_of(i64::MAX).to_string(), "1970-01-01");
    }

    #[test]
    fn timestamps_round_trip_including_before_the_epoch() {
        for value in [0, 1, 1_700_000_000_123_456, -1, -1_500_001] {
            assert_eq!(micros(&timestamp(value)), value);
        }
    }
}
