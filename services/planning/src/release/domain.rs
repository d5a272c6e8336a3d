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
    /// Last changed (µs).
    pub update_time_us: i64,
    /// When it was archived (µs); none while it is in planning.
    pub archive_time_us: Option<i64>,
}

impl Release {
    /// Archived: history, closed to changes and to new items.
    pub fn archived(&self) -> bool {
        self.archive_time_us.is_some()
    }

    /// Refuses `what` (e.g. "scheduling items for it") on an archived release.
    pub fn require_in_planning(&self, what: &str) -> AppResult<()> {
        if self.archived() {
            return Err(AppError::precondition(format!(
                "release {} is archived: {what} needs it unarchived first",
                self.id
            )));
        }
        Ok(())
    }
}

/// A checked change of one field (an update mask's path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// New name.
    Name(String),
    /// New description.
    Description(String),
    /// New first day.
    BeginDate(NaiveDate),
    /// New last day.
    EndDate(NaiveDate),
}

/// `before` renamed, described or rescheduled by `changes`; still ending after it begins.
pub fn update(before: &Release, changes: &[Change]) -> AppResult<Release> {
    before.require_in_planning("changing it")?;
    let mut after = before.clone();
    for change in changes {
        match change.clone() {
            Change::Name(name) => after.name = name,
            Change::Description(description) => after.description = description,
            Change::BeginDate(day) => after.begin_date = day,
            Change::EndDate(day) => after.end_date = day,
        }
    }
    period(after.begin_date, after.end_date, "release.end_date")?;
    Ok(after)
}

/// `before` archived at `now_us`; an archived release stays as it is.
pub fn archive(before: &Release, now_us: i64) -> Release {
    Release {
        archive_time_us: before.archive_time_us.or(Some(now_us)),
        ..before.clone()
    }
}

/// `before` back in planning.
pub fn unarchive(before: &Release) -> Release {
    Release {
        archive_time_us: None,
        ..before.clone()
    }
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

    fn release() -> Release {
        let day = |d| NaiveDate::from_ymd_opt(2026, 12, d).unwrap();
        Release {
            id: "r".into(),
            tenant_id: "t".into(),
            product_id: "p".into(),
            name: "R1".into(),
            description: String::new(),
            begin_date: day(1),
            end_date: day(20),
            version: 1,
            create_time_us: 0,
            update_time_us: 0,
            archive_time_us: None,
        }
    }

    #[test]
    fn a_rescheduled_release_still_ends_after_it_begins() {
        let day = |d| NaiveDate::from_ymd_opt(2026, 12, d).unwrap();
        let moved = update(&release(), &[Change::EndDate(day(28))]).unwrap();
        assert_eq!(moved.end_date, day(28));
        let error = update(&release(), &[Change::BeginDate(day(25))]).unwrap_err();
        assert!(error.to_string().contains("release.end_date"), "{error}");
    }

    #[test]
    fn an_archived_release_is_closed_until_unarchived() {
        let archived = archive(&release(), 7);
        assert_eq!(
            archive(&archived, 9).archive_time_us,
            Some(7),
            "archiving twice keeps the first time"
        );
        let error = update(&archived, &[Change::Name("R2".into())]).unwrap_err();
        assert!(error.to_string().contains("archived"), "{error}");
        assert!(update(&unarchive(&archived), &[Change::Name("R2".into())]).is_ok());
    }

    #[test]
    fn a_release_spans_at_least_two_days() {
        let day = |d| NaiveDate::from_ymd_opt(2026, 12, d).unwrap();
        assert!(period(day(1), day(2), "release.end_date").is_ok());
        let error = period(day(2), day(2), "release.end_date").unwrap_err();
        assert!(error.to_string().contains("release.end_date"), "{error}");
        assert!(period(day(3), day(2), "release.end_date").is_err());
    }
}
