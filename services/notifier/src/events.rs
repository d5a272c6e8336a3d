//! The events the notifier follows, decoded here and nowhere else, and what each means
//! to it: a notification to record, or a fact sprint health needs.

use agilepm_platform::domain::time::micros;
use agilepm_proto::EventType;
use agilepm_proto::backlog::v1::{BacklogItemStatus, BacklogItemStatusChanged, StatusChangeCause};
use agilepm_proto::events::v1::Event;
use agilepm_proto::planning::v1::{SprintCompleted, SprintStarted};
use agilepm_proto::task::v1::{TaskHoursRemainingEstimated, TaskStatus, TaskStatusChanged};
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use prost::Message as _;
use serde_json::{Value, json};

use crate::domain::{Kind, Notification};

/// The feeds the notifier follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Item status changes.
    BacklogItem,
    /// Sprints starting and completing.
    Planning,
    /// Tasks impeded, and estimates (which may put a sprint at risk).
    Task,
}

impl Source {
    /// Every followed feed.
    pub const ALL: [Source; 3] = [Source::BacklogItem, Source::Planning, Source::Task];

    /// The checkpoint (and retention registration) of this feed in the notifier.
    pub fn checkpoint(self) -> &'static str {
        match self {
            Source::BacklogItem => "notifier-backlog-item",
            Source::Planning => "notifier-planning",
            Source::Task => "notifier-task",
        }
    }

    /// The event types followed on this feed (the feed filters out the rest).
    pub fn event_types(self) -> Vec<String> {
        match self {
            Source::BacklogItem => vec![BacklogItemStatusChanged::EVENT_TYPE.into()],
            Source::Planning => vec![
                SprintStarted::EVENT_TYPE.into(),
                SprintCompleted::EVENT_TYPE.into(),
            ],
            Source::Task => vec![
                TaskStatusChanged::EVENT_TYPE.into(),
                TaskHoursRemainingEstimated::EVENT_TYPE.into(),
            ],
        }
    }
}

/// What one followed event means to the notifier.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Tell subscribers.
    Notify(Notification),
    /// A sprint started: watch it (and tell subscribers, a separate effect).
    SprintStarted {
        /// The sprint.
        sprint_id: String,
        /// Its tenant.
        tenant_id: String,
        /// Its product.
        product_id: String,
    },
    /// A sprint completed: stop watching it.
    SprintCompleted {
        /// The sprint.
        sprint_id: String,
    },
    /// A team estimated for `day`: its sprints' health may have changed.
    Estimated {
        /// The tenant.
        tenant_id: String,
        /// The day estimated for.
        day: NaiveDate,
    },
}

/// What `event` means; nothing for events the notifier does not act on, or that do not
/// decode (the feed's producer is ours, so that is a version skew, not the tenant's doing;
/// the effects it would have had are lost to this event alone).
pub fn effects(event: &Event) -> Vec<Effect> {
    let Some(payload) = event.payload.as_ref() else {
        return Vec::new();
    };
    let bytes = payload.value.as_slice();
    let kind_of = event.event_type.as_str();
    let mut effects = Vec::new();
    if kind_of == BacklogItemStatusChanged::EVENT_TYPE {
        let Ok(changed) = BacklogItemStatusChanged::decode(bytes) else {
            return effects;
        };
        let done = BacklogItemStatus::Done as i32;
        let kind = if changed.new_status == done && changed.old_status != done {
            Kind::BacklogItemDone
        } else if changed.old_status == done && changed.new_status != done {
            Kind::BacklogItemRegressed
        } else {
            return effects;
        };
        let data = json!({
            "backlog_item_id": changed.backlog_item_id,
            "product_id": changed.product_id,
            "old_status": status_name(changed.old_status),
            "new_status": status_name(changed.new_status),
            "cause": StatusChangeCause::try_from(changed.cause)
                .map_or("UNKNOWN", |c| c.as_str_name()),
            "task_hours_remaining": changed.task_hours_remaining,
        });
        effects.push(notify(event, kind, data));
    } else if kind_of == TaskStatusChanged::EVENT_TYPE {
        let Ok(changed) = TaskStatusChanged::decode(bytes) else {
            return effects;
        };
        let impeded = TaskStatus::Impeded as i32;
        if changed.new_status == impeded && changed.old_status != impeded {
            let data = json!({
                "task_id": changed.task_id,
                "backlog_item_id": changed.backlog_item_id,
                "old_status": TaskStatus::try_from(changed.old_status)
                    .map_or("UNKNOWN", |s| s.as_str_name()),
            });
            effects.push(notify(event, Kind::TaskImpeded, data));
        }
    } else if kind_of == TaskHoursRemainingEstimated::EVENT_TYPE {
        if let Ok(estimated) = TaskHoursRemainingEstimated::decode(bytes)
            && let Ok(day) = estimated.date.parse()
        {
            effects.push(Effect::Estimated {
                tenant_id: event.tenant_id.clone(),
                day,
            });
        }
    } else if kind_of == SprintStarted::EVENT_TYPE {
        let Ok(started) = SprintStarted::decode(bytes) else {
            return effects;
        };
        let data = json!({
            "sprint_id": started.sprint_id,
            "product_id": started.product_id,
        });
        effects.push(notify(event, Kind::SprintStarted, data));
        effects.push(Effect::SprintStarted {
            sprint_id: started.sprint_id,
            tenant_id: event.tenant_id.clone(),
            product_id: started.product_id,
        });
    } else if kind_of == SprintCompleted::EVENT_TYPE {
        let Ok(SprintCompleted {
            sprint: Some(sprint),
        }) = SprintCompleted::decode(bytes)
        else {
            return effects;
        };
        let summary = sprint.summary.clone().unwrap_or_default();
        let data = json!({
            "sprint_id": sprint.id,
            "product_id": sprint.product_id,
            "name": sprint.name,
            "begin_date": sprint.begin_date,
            "end_date": sprint.end_date,
            "done_backlog_item_ids": summary.done_backlog_item_ids,
            "unfinished_backlog_item_ids": summary.unfinished_backlog_item_ids,
            "story_points_done": summary.story_points_done,
        });
        effects.push(notify(event, Kind::SprintCompleted, data));
        effects.push(Effect::SprintCompleted {
            sprint_id: sprint.id,
        });
    }
    effects
}

fn status_name(status: i32) -> &'static str {
    BacklogItemStatus::try_from(status).map_or("UNKNOWN", |s| s.as_str_name())
}

/// The notification of `kind` an event causes, its `data` completed with the event's
/// envelope.
fn notify(event: &Event, kind: Kind, mut data: Value) -> Effect {
    let occur_time_us = event.occur_time.as_ref().map_or(0, micros);
    if let Value::Object(fields) = &mut data {
        for (name, value) in [
            ("tenant_id", &event.tenant_id),
            ("event_id", &event.event_id),
            ("event_type", &event.event_type),
            ("aggregate_type", &event.aggregate_type),
            ("aggregate_id", &event.aggregate_id),
            ("actor", &event.actor),
            ("feed_position", &event.position),
        ] {
            fields.insert(name.into(), Value::String(value.clone()));
        }
    }
    Effect::Notify(Notification {
        id: event.event_id.clone(),
        tenant_id: event.tenant_id.clone(),
        kind,
        payload: body(kind, occur_time_us, data),
        trace_parent: event.trace_parent.clone(),
        occur_time_us,
    })
}

/// The JSON body of a notification, in the shape Standard Webhooks suggests:
/// `{"type", "timestamp", "data"}`.
pub fn body(kind: Kind, occur_time_us: i64, data: Value) -> String {
    json!({
        "type": kind.webhook_type(),
        "timestamp": rfc3339(occur_time_us),
        "data": data,
    })
    .to_string()
}

/// Microseconds since the epoch as RFC 3339 UTC.
pub fn rfc3339(micros: i64) -> String {
    DateTime::<Utc>::from_timestamp_micros(micros)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Micros, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    fn event<M: EventType>(message: M) -> Event {
        Event {
            event_id: "e1".into(),
            event_type: M::EVENT_TYPE.into(),
            aggregate_type: "BacklogItem".into(),
            aggregate_id: "i1".into(),
            tenant_id: "acme".into(),
            occur_time: Some(agilepm_platform::domain::time::timestamp(1_000_000)),
            position: "f.0.1".into(),
            payload: Some(prost_types::Any {
                type_url: format!("type.googleapis.com/{}", M::EVENT_TYPE),
                value: message.encode_to_vec(),
            }),
            actor: "ann".into(),
            trace_parent: String::new(),
        }
    }

    #[test]
    fn done_and_regressed_items_notify_other_status_changes_do_not() {
        let changed = |old: BacklogItemStatus, new: BacklogItemStatus| BacklogItemStatusChanged {
            backlog_item_id: "i1".into(),
            tenant_id: "acme".into(),
            old_status: old as i32,
            new_status: new as i32,
            ..Default::default()
        };
        let done = effects(&event(changed(
            BacklogItemStatus::Committed,
            BacklogItemStatus::Done,
        )));
        let [Effect::Notify(notification)] = done.as_slice() else {
            panic!("{done:?}");
        };
        assert_eq!(notification.kind, Kind::BacklogItemDone);
        assert_eq!(notification.id, "e1");
        let body: Value = serde_json::from_str(&notification.payload).unwrap();
        assert_eq!(body["type"], "backlog_item.done");
        assert_eq!(body["timestamp"], "1970-01-01T00:00:01.000000Z");
        assert_eq!(body["data"]["new_status"], "BACKLOG_ITEM_STATUS_DONE");
        assert_eq!(body["data"]["tenant_id"], "acme");
        let regressed = effects(&event(changed(
            BacklogItemStatus::Done,
            BacklogItemStatus::Committed,
        )));
        assert!(
            matches!(regressed.as_slice(), [Effect::Notify(n)] if n.kind == Kind::BacklogItemRegressed)
        );
        assert!(
            effects(&event(changed(
                BacklogItemStatus::Planned,
                BacklogItemStatus::Scheduled
            )))
            .is_empty()
        );
    }

    #[test]
    fn an_estimate_names_its_day_and_an_undecodable_event_does_nothing() {
        let estimated = effects(&event(TaskHoursRemainingEstimated {
            date: "2026-12-03".into(),
            ..Default::default()
        }));
        assert_eq!(
            estimated,
            vec![Effect::Estimated {
                tenant_id: "acme".into(),
                day: "2026-12-03".parse().unwrap()
            }]
        );
        let mut broken = event(TaskStatusChanged::default());
        broken.payload.as_mut().unwrap().value = vec![0xff, 0xff, 0xff];
        assert!(effects(&broken).is_empty());
    }
}
