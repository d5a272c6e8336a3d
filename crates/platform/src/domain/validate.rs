//! Parsing request fields into domain values ("parse, don't validate").
//!
//! Each function takes the request field's name so that a rejection is an
//! `INVALID_ARGUMENT` naming exactly that field.

use chrono::NaiveDate;
use uuid::Uuid;

use crate::domain::error::{AppError, AppResult, shown};

/// A required UUID field.
pub fn uuid(field: &str, value: &str) -> AppResult<Uuid> {
    if value.is_empty() {
        return Err(AppError::invalid(field, "required"));
    }
    Uuid::parse_str(value)
        .map_err(|_| AppError::invalid(field, format!("not a UUID: {}", shown(value))))
}

/// An optional UUID field: empty means `None`.
pub fn optional_uuid(field: &str, value: &str) -> AppResult<Option<Uuid>> {
    if value.is_empty() {
        Ok(None)
    } else {
        uuid(field, value).map(Some)
    }
}

/// Text of `min..=max` characters (Unicode scalar values), with no control characters
/// other than newlines and tabs.
pub fn text(field: &str, value: &str, min: usize, max: usize) -> AppResult<String> {
    let length = value.chars().count();
    if length < min {
        return Err(if min == 1 {
            AppError::invalid(field, "required")
        } else {
            AppError::invalid(field, format!("must be at least {min} characters"))
        });
    }
    if length > max {
        return Err(AppError::invalid(
            field,
            format!("must be at most {max} characters, got {length}"),
        ));
    }
    if value
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r')
    {
        return Err(AppError::invalid(
            field,
            "must not contain control characters",
        ));
    }
    Ok(value.to_owned())
}

/// A one-line name: 1-200 characters, not blank.
pub fn name(field: &str, value: &str) -> AppResult<String> {
    if value.trim().is_empty() {
        return Err(AppError::invalid(field, "required"));
    }
    if value.contains('\n') {
        return Err(AppError::invalid(field, "must be a single line"));
    }
    text(field, value, 1, 200)
}

/// A long description: up to 8000 characters.
pub fn description(field: &str, value: &str) -> AppResult<String> {
    text(field, value, 0, 8000)
}

/// An idempotency key: 1-128 printable ASCII characters.
pub fn request_id(field: &str, value: &str) -> AppResult<String> {
    if value.is_empty() {
        return Err(AppError::invalid(
            field,
            "required: a client-chosen idempotency key",
        ));
    }
    if value.len() > 128 || !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(AppError::invalid(
            field,
            "must be 1-128 printable ASCII characters",
        ));
    }
    Ok(value.to_owned())
}

/// A team member or other external id: optional, at most 128 printable characters.
pub fn member_id(field: &str, value: &str) -> AppResult<Option<String>> {
    if value.is_empty() {
        return Ok(None);
    }
    if value.len() > 128 || value.chars().any(char::is_control) {
        return Err(AppError::invalid(
            field,
            "must be at most 128 printable characters",
        ));
    }
    Ok(Some(value.to_owned()))
}

/// A calendar date `YYYY-MM-DD`.
pub fn date(field: &str, value: &str) -> AppResult<NaiveDate> {
    NaiveDate::parse_from_str(value, "%Y-%m-%d")
        .map_err(|_| AppError::invalid(field, format!("not a YYYY-MM-DD date: {}", shown(value))))
}

/// A page size: 0 means `default`; otherwise 1..=`max`.
pub fn page_size(field: &str, value: i32, default: u32, max: u32) -> AppResult<u32> {
    match value {
        0 => Ok(default),
        v if v < 0 => Err(AppError::invalid(field, "must not be negative")),
        v if v as u32 > max => Err(AppError::invalid(field, format!("must be at most {max}"))),
        v => Ok(v as u32),
    }
}

/// An `expected_version`: must be positive when present.
pub fn expected_version(field: &str, value: Option<i64>) -> AppResult<Option<i64>> {
    match value {
        Some(v) if v < 1 => Err(AppError::invalid(
            field,
            "must be a version seen before (>= 1)",
        )),
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_bounded() {
        assert!(name("name", "").is_err());
        assert!(name("name", "   ").is_err());
        assert!(name("name", &"x".repeat(201)).is_err());
        assert!(name("name", &"é".repeat(200)).is_ok());
        assert!(name("name", "a\nb").is_err());
        let AppError::InvalidArgument { field, .. } =
            name("task.name", &"x".repeat(10_000)).unwrap_err()
        else {
            panic!("wrong error kind");
        };
        assert_eq!(field, "task.name");
    }

    #[test]
    fn uuids_and_dates_are_parsed() {
        assert!(uuid("id", "not-a-uuid").is_err());
        assert!(uuid("id", "").is_err());
        assert!(uuid("id", "0190c3b4-5f1e-7cc0-a000-000000000001").is_ok());
        assert!(date("date", "2026-02-30").is_err());
        assert_eq!(
            date("date", "2026-02-28").unwrap().to_string(),
            "2026-02-28"
        );
    }

    #[test]
    fn page_sizes_have_defaults_and_limits() {
        assert_eq!(page_size("page_size", 0, 100, 1000).unwrap(), 100);
        assert!(page_size("page_size", -1, 100, 1000).is_err());
        assert!(page_size("page_size", 1001, 100, 1000).is_err());
    }
}
