//! Time as stored (microseconds since the Unix epoch, an `i64` both engines index well)
//! and as sent (`google.protobuf.Timestamp`).

use chrono::{NaiveDate, Utc};

/// Now, in microseconds since the epoch.
pub fn now_micros() -> i64 {
    Utc::now().timestamp_micros()
}

/// Today's date in UTC: for what is not a team's (a team's today is its zone's:
/// [`super::team_zone::TeamZone::today`]).
pub fn today_utc() -> NaiveDate {
    Utc::now().date_naive()
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
    fn timestamps_round_trip_including_before_the_epoch() {
        for value in [0, 1, 1_700_000_000_123_456, -1, -1_500_001] {
            assert_eq!(micros(&timestamp(value)), value);
        }
    }
}
