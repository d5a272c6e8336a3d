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

/// An item's membership span of a sprint, as the team's days: it counts from `first_day` on, up
/// to the day before `left_day` (the day it left no longer counts it, as the burndown is
/// the hours at the end of each day).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    /// The item.
    pub item: String,
    /// The day it was committed.
    pub first_day: NaiveDate,
    /// The day it left, if it did.
    pub left_day: Option<NaiveDate>,
}

impl Membership {
    /// Whether the item counts at the end of `day`.
    pub fn counts_on(&self, day: NaiveDate) -> bool {
        self.first_day <= day && self.left_day.is_none_or(|left| day < left)
    }
}

/// The sprint's hours per day from `begin`: each day sums the hours of the items that
/// were members at its end. `item_hours` holds each item's hours per day from `begin`.
pub fn member_hours(
    begin: NaiveDate,
    days: usize,
    item_hours: &[(String, Vec<i64>)],
    memberships: &[Membership],
) -> Vec<(String, i64)> {
    (0..days)
        .map(|d| {
            let day = begin + chrono::Days::new(d as u64);
            let hours = item_hours
                .iter()
                .filter(|(item, _)| {
                    memberships
                        .iter()
                        .any(|m| &m.item == item && m.counts_on(day))
                })
                .map(|(_, hours)| hours.get(d).copied().unwrap_or(0))
                .sum();
            (day.to_string(), hours)
        })
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
    fn a_day_counts_the_members_at_its_end() {
        let day = |d| NaiveDate::from_ymd_opt(2026, 11, d).unwrap();
        let member = |item: &str, first, left: Option<u32>| Membership {
            item: item.into(),
            first_day: day(first),
            left_day: left.map(day),
        };
        let memberships = [
            member("stays", 1, None),
            member("leaves", 1, Some(3)),
            member("joins", 2, None),
            // Out, back in: two spans.
            member("returns", 1, Some(2)),
            member("returns", 4, None),
        ];
        let hours = vec![
            ("stays".to_owned(), vec![8, 8, 8, 8]),
            ("leaves".to_owned(), vec![4, 4, 4, 4]),
            ("joins".to_owned(), vec![2, 2, 2, 2]),
            ("returns".to_owned(), vec![1, 1, 1, 1]),
        ];
        let got: Vec<i64> = member_hours(day(1), 4, &hours, &memberships)
            .into_iter()
            .map(|(_, h)| h)
            .collect();
        assert_eq!(got, vec![8 + 4 + 1, 8 + 4 + 2, 8 + 2, 8 + 2 + 1]);
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
