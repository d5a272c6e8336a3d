//! Every event the task service emits, built here and nowhere else: the code that
//! changes a task decides *that* something happened; this module says what its event
//! carries. (Estimates used to build `TaskHoursRemainingEstimated` and
//! `TaskStatusChanged` once in the single-task path and again in the batch writer.)

use agilepm_platform::outbox::Subject;
use agilepm_proto::task::v1::{
    BacklogItemTaskTotals, Task, TaskDefined, TaskDescribed, TaskHoursRemainingEstimated,
    TaskRemoved, TaskRenamed, TaskStatusChanged, TaskVolunteerAssigned,
};
use chrono::NaiveDate;

use crate::store::TaskRow;

/// The task an event is about, by id.
#[derive(Clone, Copy)]
pub struct About<'a> {
    /// The task.
    pub task_id: &'a str,
    /// Its tenant.
    pub tenant_id: &'a str,
    /// Its backlog item.
    pub backlog_item_id: &'a str,
}

impl<'a> About<'a> {
    /// The task `row` is.
    pub fn task(row: &'a TaskRow) -> About<'a> {
        About {
            task_id: &row.id,
            tenant_id: &row.tenant_id,
            backlog_item_id: &row.backlog_item_id,
        }
    }

    /// Where its events go in the outbox.
    pub fn subject(self) -> Subject<'a> {
        subject(self.task_id, self.tenant_id)
    }

    fn ids(self) -> (String, String, String) {
        (
            self.task_id.to_owned(),
            self.tenant_id.to_owned(),
            self.backlog_item_id.to_owned(),
        )
    }
}

/// Where the events of task `task_id` of `tenant_id` go in the outbox.
pub fn subject<'a>(task_id: &'a str, tenant_id: &'a str) -> Subject<'a> {
    Subject {
        aggregate_type: "Task",
        aggregate_id: task_id,
        tenant_id,
    }
}

/// A task was defined: the task as the response shows it, and its item's totals after.
pub fn defined(task: Task, totals: BacklogItemTaskTotals) -> TaskDefined {
    TaskDefined {
        task: Some(task),
        totals: Some(totals),
    }
}

/// The task (as `row` now is) was renamed.
pub fn renamed(row: &TaskRow) -> TaskRenamed {
    let (task_id, tenant_id, backlog_item_id) = About::task(row).ids();
    TaskRenamed {
        task_id,
        tenant_id,
        backlog_item_id,
        name: row.name.clone(),
    }
}

/// The task (as `row` now is) was described.
pub fn described(row: &TaskRow) -> TaskDescribed {
    let (task_id, tenant_id, backlog_item_id) = About::task(row).ids();
    TaskDescribed {
        task_id,
        tenant_id,
        backlog_item_id,
        description: row.description.clone(),
    }
}

/// The task (as `row` now is) has a new volunteer.
pub fn volunteer_assigned(row: &TaskRow) -> TaskVolunteerAssigned {
    let (task_id, tenant_id, backlog_item_id) = About::task(row).ids();
    TaskVolunteerAssigned {
        task_id,
        tenant_id,
        backlog_item_id,
        volunteer_id: row.volunteer_id.clone(),
    }
}

/// The task's status moved from `old_status` to `new_status`.
pub fn status_changed(about: About<'_>, old_status: i32, new_status: i32) -> TaskStatusChanged {
    let (task_id, tenant_id, backlog_item_id) = about.ids();
    TaskStatusChanged {
        task_id,
        tenant_id,
        backlog_item_id,
        old_status,
        new_status,
    }
}

/// `hours` were estimated for `day`; `totals` are the item's right after.
pub fn hours_estimated(
    about: About<'_>,
    day: NaiveDate,
    hours: i32,
    totals: &BacklogItemTaskTotals,
) -> TaskHoursRemainingEstimated {
    let (task_id, tenant_id, backlog_item_id) = about.ids();
    TaskHoursRemainingEstimated {
        task_id,
        tenant_id,
        backlog_item_id,
        hours_remaining: hours,
        date: day.format("%Y-%m-%d").to_string(),
        totals: Some(totals.clone()),
    }
}

/// The task was removed; `totals` are its item's right after.
pub fn removed(about: About<'_>, totals: &BacklogItemTaskTotals) -> TaskRemoved {
    let (task_id, tenant_id, backlog_item_id) = about.ids();
    TaskRemoved {
        task_id,
        tenant_id,
        backlog_item_id,
        totals: Some(totals.clone()),
    }
}
