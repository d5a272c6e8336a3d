//! The Release aggregate, free of I/O and of protobuf.

use agilepm_platform::domain::error::{AppError, AppResult};
use chrono::NaiveDate;

/// A release of a product.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// Id (UUID).
    pub id: String,
    /// Owning tenant.
    pub tenant_id: String,
    /// Product.
    pub product_id: String,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// First day.
    pub begin_date: NaiveDate,
    /// Last day (after the first).
    pub end_date: NaiveDate,
    /// Optimistic concurrency version.
    pub version: i64,
    /// Created (µs).
    pub create_time_us: i64,
}

/// A release's days: it ends after it begins (`end_field` names the end in a refusal).
pub fn period(begin: NaiveDate, end: NaiveDate, end_field: &str) -> AppResult<()> {
    if end <= begin {
        return Err(AppError::invalid(
            end_field,
            "a release ends after it begins",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_release_spans_at_least_two_days() {
        let day = |d| NaiveDate::from_ymd_opt(2026, 12, d).unwrap();
        assert!(period(day(1), day(2), "release.end_date").is_ok());
        let error = period(day(2), day(2), "release.end_date").unwrap_err();
        assert!(error.to_string().contains("release.end_date"), "{error}");
        assert!(period(day(3), day(2), "release.end_date").is_err());
    }
}
