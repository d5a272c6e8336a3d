//! Values read back from a service's own database, decoded loudly: a stored enum number
//! or date that does not decode is a fault (the row was written by a bug, or by a newer
//! version), reported as a decode error naming the column, never turned into a default
//! that would quietly change what the service decides.

use chrono::NaiveDate;

/// The enum `E` stored as its number in `column`.
pub fn enum_value<E: TryFrom<i32>>(stored: i64, column: &str) -> Result<E, sqlx::Error> {
    i32::try_from(stored)
        .ok()
        .and_then(|number| E::try_from(number).ok())
        .ok_or_else(|| {
            decode_error(format!(
                "{column} holds {stored}, which is no {}",
                std::any::type_name::<E>()
            ))
        })
}

/// A date stored as `YYYY-MM-DD` text in `column`.
pub fn date(stored: &str, column: &str) -> Result<NaiveDate, sqlx::Error> {
    NaiveDate::parse_from_str(stored, "%Y-%m-%d").map_err(|error| {
        decode_error(format!(
            "{column} holds {}, which is no YYYY-MM-DD date: {error}",
            crate::error::shown(stored)
        ))
    })
}

fn decode_error(message: String) -> sqlx::Error {
    sqlx::Error::Decode(message.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use agilepm_proto::task::v1::TaskStatus;

    #[test]
    fn stored_values_that_do_not_decode_are_errors_naming_the_column() {
        assert_eq!(
            enum_value::<TaskStatus>(TaskStatus::Done as i64, "tasks.status").unwrap(),
            TaskStatus::Done
        );
        for bad in [99, -1, i64::from(i32::MAX) + 1] {
            let error = enum_value::<TaskStatus>(bad, "tasks.status").unwrap_err();
            assert!(error.to_string().contains("tasks.status holds"), "{error}");
        }
        assert_eq!(
            date("2026-12-02", "log.day").unwrap(),
            NaiveDate::from_ymd_opt(2026, 12, 2).unwrap()
        );
        assert!(
            date("2026-13-02", "log.day")
                .unwrap_err()
                .to_string()
                .contains("log.day")
        );
    }
}
