//! A team's time zone: which day it is for the team. Days belong to the team, not to UTC:
//! a team in UTC-8 estimating at 17:00 local time logs the estimate on its own day, its
//! burndown counts an item from the day the team committed it, and its sprint's health is
//! judged on the team's today. Every service that decides a day from a moment asks the
//! tenant's zone (planning keeps it and records it in its peers; UTC until set).
//!
//! The zone table is chrono-tz's compiled copy of the IANA database: names are exact
//! (`America/Los_Angeles`, `Etc/GMT+8`, `UTC`), and no host tzdata is read.

use chrono::{DateTime, NaiveDate};
use chrono_tz::Tz;

use super::error::{AppError, AppResult, shown};
use super::time::now_micros;

/// Longest zone name accepted (the longest IANA name has 32 characters).
pub const MAX_NAME_CHARS: usize = 64;

/// An IANA time zone, as a team's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TeamZone(Tz);

impl Default for TeamZone {
    fn default() -> Self {
        TeamZone::UTC
    }
}

impl TeamZone {
    /// A team's zone until it sets one.
    pub const UTC: TeamZone = TeamZone(Tz::UTC);

    /// The zone a request's `field` names: an IANA name, exactly as the database spells it.
    pub fn parse(field: &str, value: &str) -> AppResult<TeamZone> {
        if value.is_empty() {
            return Err(AppError::invalid(
                field,
                "required: an IANA time zone name such as \"America/Los_Angeles\" or \"UTC\"",
            ));
        }
        if value.chars().count() > MAX_NAME_CHARS {
            return Err(AppError::invalid(
                field,
                format!("at most {MAX_NAME_CHARS} characters, not {}", shown(value)),
            ));
        }
        value.parse::<Tz>().map(TeamZone).map_err(|_| {
            AppError::invalid(
                field,
                format!(
                    "{} is not an IANA time zone name (such as \"America/Los_Angeles\" or \
                     \"UTC\"; names are case-sensitive)",
                    shown(value)
                ),
            )
        })
    }

    /// A zone as stored by this service (`what` names the column in the error): a name
    /// this build does not know is an internal error, never a silent UTC.
    pub fn stored(value: &str, what: &str) -> AppResult<TeamZone> {
        value
            .parse::<Tz>()
            .map(TeamZone)
            .map_err(|_| AppError::Internal(format!("{what}: unknown time zone {value:?}")))
    }

    /// Its IANA name.
    pub fn name(&self) -> &'static str {
        self.0.name()
    }

    /// The team's date at `micros` (microseconds since the epoch; the epoch's day for
    /// values chrono cannot hold).
    pub fn day_of(&self, micros: i64) -> NaiveDate {
        DateTime::from_timestamp_micros(micros)
            .unwrap_or_default()
            .with_timezone(&self.0)
            .date_naive()
    }

    /// The team's date now.
    pub fn today(&self) -> NaiveDate {
        self.day_of(now_micros())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-12-08 01:00 UTC: 17:00 on 2026-12-07 in Los Angeles (UTC-8 in winter),
    /// 14:00 on 2026-12-08 in Auckland (UTC+13 in summer).
    const EVENING_IN_LOS_ANGELES: i64 = 1_796_691_600_000_000;

    fn zone(name: &str) -> TeamZone {
        TeamZone::parse("time_zone", name).unwrap()
    }

    #[test]
    fn a_moment_falls_on_the_team_s_own_day() {
        let date = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        assert_eq!(
            TeamZone::UTC.day_of(EVENING_IN_LOS_ANGELES),
            date("2026-12-08")
        );
        assert_eq!(
            zone("America/Los_Angeles").day_of(EVENING_IN_LOS_ANGELES),
            date("2026-12-07")
        );
        assert_eq!(
            zone("Pacific/Auckland").day_of(EVENING_IN_LOS_ANGELES),
            date("2026-12-08")
        );
        // Etc/GMT+8 is UTC-8 (POSIX signs): 2026-12-07 17:00.
        assert_eq!(
            zone("Etc/GMT+8").day_of(EVENING_IN_LOS_ANGELES),
            date("2026-12-07")
        );
        // The last microsecond before the team's midnight is still the old day.
        let midnight_in_la = EVENING_IN_LOS_ANGELES + 7 * 3_600_000_000;
        let la = zone("America/Los_Angeles");
        assert_eq!(la.day_of(midnight_in_la - 1), date("2026-12-07"));
        assert_eq!(la.day_of(midnight_in_la), date("2026-12-08"));
    }

    #[test]
    fn the_day_of_a_moment_in_utc_is_its_utc_date() {
        let utc = |micros| TeamZone::UTC.day_of(micros).to_string();
        assert_eq!(utc(0), "1970-01-01");
        assert_eq!(utc(1_764_633_599_999_999), "2025-12-01");
        assert_eq!(utc(1_764_633_600_000_000), "2025-12-02");
        assert_eq!(utc(i64::MAX), "1970-01-01");
    }

    #[test]
    fn names_are_exact_iana_names_and_refusals_name_the_field() {
        assert_eq!(zone("UTC").name(), "UTC");
        assert_eq!(zone("America/Los_Angeles").name(), "America/Los_Angeles");
        for bad in ["", "america/los_angeles", "PST-8", "Mars/Olympus", "UTC+8"] {
            let error = TeamZone::parse("settings.time_zone", bad).unwrap_err();
            assert!(
                matches!(&error, AppError::InvalidArgument { field, .. } if field == "settings.time_zone"),
                "{bad:?}: {error}"
            );
        }
        let long = "A".repeat(10_000);
        let error = TeamZone::parse("time_zone", &long).unwrap_err().to_string();
        assert!(
            error.len() < 300,
            "the refusal echoes a bounded value: {error}"
        );
    }

    #[test]
    fn a_stored_name_this_build_does_not_know_is_internal() {
        assert_eq!(
            TeamZone::stored("Europe/Paris", "team_zones.time_zone")
                .unwrap()
                .name(),
            "Europe/Paris"
        );
        assert!(matches!(
            TeamZone::stored("Nowhere/Else", "team_zones.time_zone"),
            Err(AppError::Internal(_))
        ));
    }
}
