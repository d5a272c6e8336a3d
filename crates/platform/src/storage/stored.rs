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
            crate::domain::error::shown(stored)
        ))
    })
}

/// Declares a domain enum whose values carry the numbers they are stored and sent as.
///
/// A service's domain types are its own (no protobuf in `domain.rs`), but an enum keeps
/// one numbering everywhere: the database column, the wire and the domain agree, so
/// mapping is `number()` one way and `TryFrom<i32>` (for [`enum_value`] and request
/// parsing) the other, and a stored or sent number no variant has is refused, never
/// defaulted.
#[macro_export]
macro_rules! numbered_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $($(#[$variant_meta:meta])* $variant:ident = $number:literal),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$variant_meta])* $variant = $number),+
        }

        impl $name {
            /// Every value, in numbering order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The number this value is stored and sent as.
            pub fn number(self) -> i32 {
                self as i32
            }
        }

        impl TryFrom<i32> for $name {
            type Error = i32;

            fn try_from(number: i32) -> Result<$name, i32> {
                match number {
                    $($number => Ok($name::$variant),)+
                    other => Err(other),
                }
            }
        }
    };
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
