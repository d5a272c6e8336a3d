//! The burndown: per day, the summed remaining hours of a set of tasks, where a task's
//! value on a day is its latest estimation log entry on or before that day. Built from
//! the log, so history stays right whatever happens later.

use chrono::NaiveDate;

/// Sums per day from `start` to `end` (inclusive). `entries` are `(task, day, hours)`
/// ordered by task, then day, with no day after `end`.
pub fn burndown(
    entries: &[(String, NaiveDate, i64)],
    start: NaiveDate,
    end: NaiveDate,
) -> Vec<(NaiveDate, i64)> {
    let days = usize::try_from((end - start).num_days() + 1).unwrap_or(0);
    // A difference array: each log entry changes the task's value from its day until the
    // task's next entry, so it adds (hours - previous hours) from its day onward.
    let mut delta = vec![0i64; days + 1];
    let mut before_start = 0i64;
    let mut previous: Option<(&str, i64)> = None;
    for (task, day, hours) in entries {
        let last = match previous {
            Some((t, h)) if t == task => h,
            _ => 0,
        };
        let change = hours - last;
        if *day < start {
            before_start += change;
        } else {
            delta[(*day - start).num_days() as usize] += change;
        }
        previous = Some((task, *hours));
    }
    let mut running = before_start;
    (0..days)
        .map(|i| {
            running += delta[i];
            (start + chrono::Days::new(i as u64), running)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, day).unwrap()
    }

    #[test]
    fn each_day_sums_every_tasks_latest_entry() {
        let entries = vec![
            ("a".to_owned(), d(1), 10),
            ("a".to_owned(), d(3), 6),
            ("a".to_owned(), d(4), 0),
            ("b".to_owned(), d(2), 5),
            ("b".to_owned(), d(5), 2),
        ];
        let days = burndown(&entries, d(1), d(6));
        let sums: Vec<i64> = days.iter().map(|(_, h)| *h).collect();
        assert_eq!(sums, vec![10, 15, 11, 5, 2, 2]);
        assert_eq!(days[0].0, d(1));
    }

    #[test]
    fn entries_before_the_range_carry_in() {
        let entries = vec![("a".to_owned(), d(1), 8), ("a".to_owned(), d(4), 3)];
        let sums: Vec<i64> = burndown(&entries, d(3), d(5))
            .iter()
            .map(|(_, h)| *h)
            .collect();
        assert_eq!(sums, vec![8, 3, 3]);
    }
}
