//! Between the task service's domain types and its protobuf messages: the task, its log
//! and its item's totals as responses and events carry them, and the status a request
//! names, checked on the way in.

use agilepm_platform::domain::error::{AppError, AppResult};
use agilepm_platform::domain::time::timestamp;
use agilepm_proto::task::v1 as proto;

use crate::domain::{LogEntry, Status, Task, Totals};

/// How much of a task a response carries (`TaskView`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// Without the estimation log.
    Basic,
    /// With the whole estimation log.
    Full,
}

/// The view a request names in `view`; unset means the method's `default`.
pub fn view(value: i32, default: View) -> AppResult<View> {
    match proto::TaskView::try_from(value) {
        Ok(proto::TaskView::Unspecified) => Ok(default),
        Ok(proto::TaskView::Basic) => Ok(View::Basic),
        Ok(proto::TaskView::Full) => Ok(View::Full),
        Err(_) => Err(AppError::invalid("view", format!("unknown view {value}"))),
    }
}

/// `task` with `log` (oldest day first), as responses and events show it.
pub fn task_message(task: &Task, log: &[LogEntry]) -> proto::Task {
    proto::Task {
        id: task.id.clone(),
        tenant_id: task.tenant_id.clone(),
        backlog_item_id: task.backlog_item_id.clone(),
        name: task.name.clone(),
        description: task.description.clone(),
        volunteer_id: task.volunteer_id.clone(),
        status: task.status.number(),
        hours_remaining: task.hours,
        estimation_log: log.iter().map(log_entry_message).collect(),
        version: task.version,
        create_time: Some(timestamp(task.create_time_us)),
        update_time: Some(timestamp(task.update_time_us)),
    }
}

/// One day of an estimation log.
pub fn log_entry_message(entry: &LogEntry) -> proto::EstimationLogEntry {
    proto::EstimationLogEntry {
        date: entry.day.format("%Y-%m-%d").to_string(),
        hours_remaining: entry.hours,
        record_time: Some(timestamp(entry.record_time_us)),
        estimated_by: entry.estimated_by.clone(),
    }
}

/// An item's totals.
pub fn totals_message(totals: &Totals) -> proto::BacklogItemTaskTotals {
    proto::BacklogItemTaskTotals {
        backlog_item_id: totals.backlog_item_id.clone(),
        hours_remaining: totals.hours_remaining,
        task_count: totals.task_count,
        revision: totals.revision,
    }
}

/// The status a request names in `field` (required).
pub fn status(field: &str, value: i32) -> AppResult<Status> {
    match value {
        0 => Err(AppError::invalid(field, "required")),
        _ => Status::try_from(value)
            .map_err(|_| AppError::invalid(field, format!("unknown status {value}"))),
    }
}
