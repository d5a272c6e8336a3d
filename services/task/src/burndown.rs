//! The burndown: per day, the summed remaining hours of a set of tasks, where a task's
//! value on a day is its latest estimation log entry on or before that day. Built from
//! the log, so history stays right whatever happens later.

use std::collections::HashMap;

use chrono::NaiveDate;

/// One estimation log entry as the burndown reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The task's backlog item.
    pub backlog_item_id: String,
    /// The task.
    pub task_id: String,
    /// The day estimated.
    pub day: NaiveDate,
    /// Hours remaining that day.
    pub hours: i64,
}

/// Sums per day from `start` to `end` (inclusive). `entries` are ordered by task, then
/// day, with no day after `end`.
pub fn burndown<'a>(
    entries: impl IntoIterator<Item = &'a Entry>,
    start: NaiveDate,
    end: NaiveDate,
) -> Vec<(NaiveDate, i64)> {
    let days = usize::try_from((end - start).num_days() + 1).unwrap_or(0);
    // A difference array: each log entry changes the task's value from its day until the
    // task's next entry, so it adds (hours - previous hours) from its day onward.
    let mut delta = vec![0i64; days + 1];
    let mut before_start = 0i64;
    let mut previous: Option<(&str, i64)> = None;
    for Entry {
        task_id: task,
        day,
        hours,
        ..
    } in entries
    {
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

/// Each of `items`' own burndown, in that order (an item without entries burns zeros).
pub fn per_item(
    entries: &[Entry],
    items: &[String],
    start: NaiveDate,
    end: NaiveDate,
) -> Vec<(String, Vec<i64>)> {
    let mut by_item: HashMap<&str, Vec<&Entry>> = HashMap::new();
    for entry in entries {
        by_item
            .entry(&entry.backlog_item_id)
            .or_default()
            .push(entry);
    }
    items
        .iter()
        .map(|item| {
            let of_item = by_item.remove(item.as_str()).unwrap_or_default();
            let days = burndown(of_item, start, end);
            (
                item.clone(),
                days.into_iter().map(|(_, hours)| hours).collect(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, day).unwrap()
    }

    fn entry(item: &str, task: &str, day: u32, hours: i64) -> Entry {
        Entry {
            backlog_item_id: item.into(),
            task_id: task.into(),
            day: d(day),
            hours,
        }
    }

    #[test]
    fn each_day_sums_every_tasks_latest_entry() {
        let entries = vec![
            entry("x", "a", 1, 10),
            entry("x", "a", 3, 6),
            entry("x", "a", 4, 0),
            entry("y", "b", 2, 5),
            entry("y", "b", 5, 2),
        ];
        let days = burndown(&entries, d(1), d(6));
        let sums: Vec<i64> = days.iter().map(|(_, h)| *h).collect();
        assert_eq!(sums, vec![10, 15, 11, 5, 2, 2]);
        assert_eq!(days[0].0, d(1));
        let items = per_item(&entries, &["y".into(), "x".into(), "z".into()], d(1), d(6));
        assert_eq!(
            items,
            vec![
                ("y".into(), vec![0, 5, 5, 5, 2, 2]),
                ("x".into(), vec![10, 10, 6, 0, 0, 0]),
                ("z".into(), vec![0; 6]),
            ]
        );
    }

    #[test]
    fn entries_before_the_range_carry_in() {
        let entries = vec![entry("x", "a", 1, 8), entry("x", "a", 4, 3)];
        let sums: Vec<i64> = burndown(&entries, d(3), d(5))
            .iter()
            .map(|(_, h)| *h)
            .collect();
        assert_eq!(sums, vec![8, 3, 3]);
    }
}
