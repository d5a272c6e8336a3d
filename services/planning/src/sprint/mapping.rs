//! Between sprints and their protobuf messages, and from the backlog-item service's
//! items to what a sprint's summary counts.

use agilepm_platform::domain::time::{micros, timestamp};
use agilepm_proto::backlog::v1::{BacklogItem, BacklogItemStatus, StoryPoints};
use agilepm_proto::planning::v1 as proto;

use super::domain::{CommittedItem, Sprint, Summary};

/// `sprint` as responses and events carry it.
pub fn sprint_message(sprint: &Sprint) -> proto::Sprint {
    proto::Sprint {
        id: sprint.id.clone(),
        tenant_id: sprint.tenant_id.clone(),
        product_id: sprint.product_id.clone(),
        name: sprint.name.clone(),
        goal: sprint.goal.clone(),
        begin_date: sprint.begin_date.to_string(),
        end_date: sprint.end_date.to_string(),
        retrospective: sprint.retrospective.clone(),
        state: sprint.state.number(),
        version: sprint.version,
        create_time: Some(timestamp(sprint.create_time_us)),
        summary: sprint.summary.as_ref().map(summary_message),
    }
}

/// A completion summary as messages (and the database column) carry it.
pub fn summary_message(summary: &Summary) -> proto::SprintSummary {
    proto::SprintSummary {
        done_backlog_item_ids: summary.done_backlog_item_ids.clone(),
        unfinished_backlog_item_ids: summary.unfinished_backlog_item_ids.clone(),
        story_points_done: summary.story_points_done,
        complete_time: Some(timestamp(summary.complete_time_us)),
    }
}

/// A completion summary from its message.
pub fn summary_from(message: proto::SprintSummary) -> Summary {
    Summary {
        done_backlog_item_ids: message.done_backlog_item_ids,
        unfinished_backlog_item_ids: message.unfinished_backlog_item_ids,
        story_points_done: message.story_points_done,
        complete_time_us: message.complete_time.as_ref().map_or(0, micros),
    }
}

/// Story points as a number (UNESTIMABLE and unspecified count as zero).
pub fn points(value: i32) -> i32 {
    match StoryPoints::try_from(value).unwrap_or(StoryPoints::Unspecified) {
        StoryPoints::One => 1,
        StoryPoints::Two => 2,
        StoryPoints::Three => 3,
        StoryPoints::Five => 5,
        StoryPoints::Eight => 8,
        StoryPoints::Thirteen => 13,
        StoryPoints::Twenty => 20,
        StoryPoints::Forty => 40,
        StoryPoints::OneHundred => 100,
        StoryPoints::Zero | StoryPoints::Unspecified | StoryPoints::Unestimable => 0,
    }
}

/// What the summary counts of an item the backlog-item service lists in the sprint.
pub fn committed_item(item: &BacklogItem) -> CommittedItem {
    CommittedItem {
        id: item.id.clone(),
        done: item.status == BacklogItemStatus::Done as i32,
        unfinished: item.status == BacklogItemStatus::Committed as i32,
        points: points(item.story_points),
    }
}
