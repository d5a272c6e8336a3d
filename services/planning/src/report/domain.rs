//! The reports' arithmetic, free of I/O and of protobuf.

use chrono::NaiveDate;

/// One day of a sprint burndown.
#[derive(Debug, Clone, PartialEq)]
pub struct BurndownDay {
    /// The day.
    pub date: String,
    /// Hours remaining that day.
    pub hours_remaining: i64,
    /// The ideal line's hours that day.
    pub ideal_hours_remaining: f64,
}

/// The ideal line: `first` hours on day 0 falling linearly to zero on the last day.
pub fn ideal(first: i64, days: usize) -> Vec<f64> {
    if days <= 1 {
        return vec![0.0; days];
    }
    (0..days)
        .map(|d| first as f64 * (1.0 - d as f64 / (days - 1) as f64))
        .collect()
}

/// A burndown of `days` (date, hours remaining) with its ideal line, which starts from
/// the first day's hours.
pub fn burndown(days: Vec<(String, i64)>) -> Vec<BurndownDay> {
    let first = days.first().map_or(0, |d| d.1);
    let ideal = ideal(first, days.len());
    days.into_iter()
        .zip(ideal)
        .map(
            |((date, hours_remaining), ideal_hours_remaining)| BurndownDay {
                date,
                hours_remaining,
                ideal_hours_remaining,
            },
        )
        .collect()
}

/// Every day from `begin` to `end` with zero hours: the burndown of a sprint without
/// items.
pub fn empty_days(begin: NaiveDate, end: NaiveDate) -> Vec<(String, i64)> {
    begin
        .iter_days()
        .take_while(|d| *d <= end)
        .map(|d| (d.to_string(), 0))
        .collect()
}

/// The average of `points` (zero for none).
pub fn average(points: &[i32]) -> f64 {
    if points.is_empty() {
        return 0.0;
    }
    points.iter().map(|p| f64::from(*p)).sum::<f64>() / points.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ideal_line_falls_linearly_to_zero() {
        assert_eq!(ideal(100, 5), vec![100.0, 75.0, 50.0, 25.0, 0.0]);
        assert_eq!(ideal(7, 1), vec![0.0]);
        assert!(ideal(7, 0).is_empty());
    }

    #[test]
    fn a_burndown_pairs_each_day_with_the_ideal() {
        let days = burndown(vec![("d1".into(), 10), ("d2".into(), 8), ("d3".into(), 1)]);
        let ideal: Vec<f64> = days.iter().map(|d| d.ideal_hours_remaining).collect();
        assert_eq!(ideal, [10.0, 5.0, 0.0]);
        assert_eq!(days[1].hours_remaining, 8);
        assert!(burndown(Vec::new()).is_empty());
    }

    #[test]
    fn an_empty_sprint_burns_down_from_zero_on_every_day() {
        let day = |d| NaiveDate::from_ymd_opt(2026, 11, d).unwrap();
        let days = empty_days(day(29), day(30));
        assert_eq!(days, [("2026-11-29".into(), 0), ("2026-11-30".into(), 0)]);
        assert!(empty_days(day(2), day(1)).is_empty());
    }

    #[test]
    fn velocity_averages_the_sprints_it_has() {
        assert_eq!(average(&[]), 0.0);
        assert_eq!(average(&[3, 5, 13]), 7.0);
    }
}
