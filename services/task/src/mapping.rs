//! Between the task service's stored rows and its protobuf messages.

use agilepm_platform::time::timestamp;
use agilepm_proto::task::v1::{EstimationLogEntry, Task};

use crate::store::TaskRow;

/// The task `row` is, as responses and events show it, with `estimation_log`.
pub fn task_message(row: TaskRow, estimation_log: Vec<EstimationLogEntry>) -> Task {
    Task {
        id: row.id,
        tenant_id: row.tenant_id,
        backlog_item_id: row.backlog_item_id,
        name: row.name,
        description: row.description,
        volunteer_id: row.volunteer_id,
        status: row.status as i32,
        hours_remaining: row.hours,
        estimation_log,
        version: row.version,
        create_time: Some(timestamp(row.create_time_us)),
        update_time: Some(timestamp(row.update_time_us)),
    }
}
