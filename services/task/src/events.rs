//! Every event the task service emits, built here and nowhere else: the code that
//! changes a task decides *that* something happened; this module says what its event
//! carries. (Estimates used to build `TaskHoursRemainingEstimated` and
//! `TaskStatusChanged` once in the single-task path and again in the batch writer.)

use agilepm_platform::storage::outbox::Subject;
use agilepm_proto::task::v1::{
    TaskDefined, TaskDescribed, TaskHoursRemainingEstimated, TaskRemoved, TaskRenamed,
    TaskStatusChanged, TaskVolunteerAssigned,
};
use chrono::NaiveDate;

use crate::domain::{LogEntry, Status, Task, Totals};
use crate::mapping::{task_message, totals_message};

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
    /// `task`, by id.
    pub fn task(task: &'a Task) -> About<'a> {
        About {
            task_id: &task.id,
            tenant_id: &task.tenant_id,
            backlog_item_id: &task.backlog_item_id,
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

/// `task` was defined with `log`; `totals` are its item's right after.
pub fn defined(task: &Task, log: &[LogEntry], totals: &Totals) -> TaskDefined {
    TaskDefined {
        task: Some(task_message(task, log)),
        totals: Some(totals_message(totals)),
    }
}

/// The task (as `task` now is) was renamed.
pub fn renamed(task: &Task) -> TaskRenamed {
    let (task_id, tenant_id, backlog_item_id) = About::task(task).ids();
    TaskRenamed {
        task_id,
        tenant_id,
        backlog_item_id,
        name: task.name.clone(),
    }
}

/// The task (as `task` now is) was described.
pub fn described(task: &Task) -> TaskDescribed {
    let (task_id, tenant_id, backlog_item_id) = About::task(task).ids();
    TaskDescribed {
        task_id,
        tenant_id,
        backlog_item_id,
        description: task.description.clone(),
    }
}

/// The task (as `task` now is) has a new volunteer.
pub fn volunteer_assigned(task: &Task) -> TaskVolunteerAssigned {
    let (task_id, tenant_id, backlog_item_id) = About::task(task).ids();
    TaskVolunteerAssigned {
        task_id,
        tenant_id,
        backlog_item_id,
        volunteer_id: task.volunteer_id.clone(),
    }
}

/// The task's status moved from `old_status` to `new_status`.
pub fn status_changed(
    about: About<'_>,
    old_status: Status,
    new_status: Status,
) -> TaskStatusChanged {
    let (task_id, tenant_id, backlog_item_id) = about.ids();
    TaskStatusChanged {
        task_id,
        tenant_id,
        backlog_item_id,
        old_status: old_status.number(),
        new_status: new_status.number(),
    }
}

/// `hours` were estimated for `day`; `totals` are the item's right after.
pub fn hours_estimated(
    about: About<'_>,
    day: NaiveDate,
    hours: i32,
    totals: &Totals,
) -> TaskHoursRemainingEstimated {
    let (task_id, tenant_id, backlog_item_id) = about.ids();
    TaskHoursRemainingEstimated {
        task_id,
        tenant_id,
        backlog_item_id,
        hours_remaining: hours,
        date: day.format("%Y-%m-%d").to_string(),
        totals: Some(totals_message(totals)),
    }
}

/// The task was removed; `totals` are its item's right after.
pub fn removed(about: About<'_>, totals: &Totals) -> TaskRemoved {
    let (task_id, tenant_id, backlog_item_id) = about.ids();
    TaskRemoved {
        task_id,
        tenant_id,
        backlog_item_id,
        totals: Some(totals_message(totals)),
    }
}
